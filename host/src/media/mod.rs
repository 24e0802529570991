//! Audio and data for plugins: what a job hears, says and exchanges.
//!
//! Owns: the receive pipeline of each subscribed audio track ([`TrackTap`]:
//! packets → [`jitter`] → [`decode`] → one ring per reader, see [`lane`]),
//! the send queue and encoder of each published audio source
//! ([`source`]), the inbox of user data packets, and [`MediaHub`], the
//! room-wide registry the session feeds and the plugin API reads.
//!
//! Architecture invariant: **a slow or absent reader never slows the
//! room.** Media reaches plugins only through drop-oldest rings that count
//! what they drop; the host never calls plugin code for media; a plugin
//! thread waits only on its own ring or queue.
//!
//! API boundary: the session (`room::rtc`) calls [`MediaHub::attach_track`]
//! / [`TrackTap::on_packet`] / [`MediaHub::detach_track`] and pushes data
//! packets; the plugin API (`plugin::media_api`) opens readers and sources.
//! Must not touch: WebRTC, signalling, the job (shutdown reaches waiting
//! calls through a predicate the caller passes).

pub(crate) mod bell;
pub mod decode;
pub mod jitter;
pub(crate) mod lane;
pub mod source;

use crate::events::{ParticipantRef, TrackKind, TrackRef};
use bytes::Bytes;
use decode::{Frame, Framer, PcmDecoder};
use jitter::Jitter;
use lane::Lane;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Sample rates a reader or source may ask for, Hz: Opus's own (8, 12,
/// 16, 24, 48 kHz) and the usual others (11.025, 22.05, 32, 44.1 kHz),
/// whose ratio to 48 kHz keeps the resampler's block at 10 ms or less
/// (an odd rate such as 44 101 Hz would need a 1 s block).
pub const SAMPLE_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];
/// Default ring of a reader, ms (the header's `queue_ms = 0`).
pub const DEFAULT_STREAM_QUEUE_MS: u32 = 500;
/// Default send queue of a source, ms (as the agents' AudioSource uses 200).
pub const DEFAULT_SOURCE_QUEUE_MS: u32 = 200;
/// Longest queue either may ask for, ms.
pub const MAX_QUEUE_MS: u32 = 10_000;
/// User data packets kept for a plugin that does not read them (at most
/// 1024 × 15 KiB; nothing is kept for a plugin older than ABI 1.3, which
/// cannot read them).
pub const DATA_INBOX_CAPACITY: usize = 1024;

/// Audio frames dropped in this process because a reader fell behind
/// (its ring was full), over every track and reader.
static AUDIO_FRAMES_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Audio frames this process has dropped so far: a reader (the plugin's
/// audio stream) read too slowly and its ring overwrote the oldest frames.
/// Monotonic; one job per process, so the job's figure.
pub fn audio_frames_dropped() -> u64 {
    AUDIO_FRAMES_DROPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A PCM format asked for by a plugin, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioFormat {
    pub sample_rate: u32,
    pub num_channels: u32,
    /// Frame length of a reader, ms (10..=100, a multiple of 10).
    pub frame_ms: u32,
    pub queue_ms: u32,
}

impl AudioFormat {
    /// Checks and completes a reader's format (0 means the default).
    pub fn for_stream(
        rate: u32,
        channels: u32,
        frame_ms: u32,
        queue_ms: u32,
    ) -> Result<AudioFormat, String> {
        let frame_ms = if frame_ms == 0 { 10 } else { frame_ms };
        if !(10..=100).contains(&frame_ms) || frame_ms % 10 != 0 {
            return Err(format!("frame_ms {frame_ms} is not 10..100 in steps of 10"));
        }
        let queue_ms = if queue_ms == 0 {
            DEFAULT_STREAM_QUEUE_MS
        } else {
            queue_ms
        };
        Self::common(rate, channels, frame_ms, queue_ms)
    }

    /// Checks and completes a source's format (`frame_ms` is ignored).
    pub fn for_source(rate: u32, channels: u32, queue_ms: u32) -> Result<AudioFormat, String> {
        let queue_ms = if queue_ms == 0 {
            DEFAULT_SOURCE_QUEUE_MS
        } else {
            queue_ms
        };
        Self::common(rate, channels, 20, queue_ms)
    }

    fn common(
        rate: u32,
        channels: u32,
        frame_ms: u32,
        queue_ms: u32,
    ) -> Result<AudioFormat, String> {
        if !SAMPLE_RATES.contains(&rate) {
            return Err(format!(
                "sample_rate {rate} is not one of {SAMPLE_RATES:?} Hz"
            ));
        }
        if !(1..=2).contains(&channels) {
            return Err(format!("num_channels {channels} is not 1 or 2"));
        }
        if queue_ms > MAX_QUEUE_MS {
            return Err(format!("queue_ms {queue_ms} is above {MAX_QUEUE_MS}"));
        }
        Ok(AudioFormat {
            sample_rate: rate,
            num_channels: channels,
            frame_ms,
            queue_ms,
        })
    }

    /// Interleaved samples in one frame.
    pub fn frame_len(&self) -> usize {
        (self.sample_rate as usize * self.frame_ms as usize / 1000) * self.num_channels as usize
    }
}

/// A user data packet received for the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataIn {
    pub payload: Bytes,
    pub topic: String,
    /// The sender; empty when the server API sent it.
    pub participant_identity: String,
    pub reliable: bool,
}

struct Reader {
    decoder: usize,
    framer: Framer,
    lane: Arc<Lane<Frame>>,
}

#[derive(Default)]
struct TapState {
    jitter: Jitter,
    decoders: Vec<PcmDecoder>,
    readers: Vec<Reader>,
    ended: bool,
    pcm: Vec<i16>,
}

/// One subscribed audio track's receive pipeline. Fed by the track's
/// follower task; read by any number of readers, each through its own
/// ring. Runs only while a reader is open.
pub struct TrackTap {
    pub participant: ParticipantRef,
    pub track: TrackRef,
    state: Mutex<TapState>,
}

impl TrackTap {
    fn lock(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a reader; its first frame is audio that arrives after this.
    fn add_reader(&self, fmt: AudioFormat) -> Result<Arc<Lane<Frame>>, String> {
        let mut st = self.lock();
        if st.ended {
            return Err("the track was unsubscribed".into());
        }
        if st.readers.is_empty() {
            // Nobody listened: start the packet stage afresh, its clock
            // from now, so a reader of a muted (or not yet sending) track
            // gets silence in real time until audio comes.
            st.jitter = Jitter::new();
            st.jitter.start_clock(Instant::now());
            st.decoders.clear();
        }
        let decoder = match st
            .decoders
            .iter()
            .position(|d| d.rate == fmt.sample_rate && d.channels == fmt.num_channels)
        {
            Some(i) => i,
            None => {
                st.decoders
                    .push(PcmDecoder::new(fmt.sample_rate, fmt.num_channels)?);
                st.decoders.len() - 1
            }
        };
        let frames = (fmt.queue_ms / fmt.frame_ms).max(1) as usize;
        let lane = Arc::new(Lane::counted(frames, &AUDIO_FRAMES_DROPPED));
        st.readers.push(Reader {
            decoder,
            framer: Framer::new(fmt.sample_rate, fmt.num_channels, fmt.frame_ms),
            lane: lane.clone(),
        });
        Ok(lane)
    }

    /// One RTP packet of the track.
    pub fn on_packet(&self, seq: u16, ts: u32, payload: Bytes, now: Instant) {
        let mut st = self.lock();
        if st.readers.is_empty() {
            return;
        }
        let steps = st.jitter.push(seq, ts, payload, now);
        run_steps(&mut st, &steps);
    }

    /// Releases what is due at `now` (reorder deadlines, silence fill).
    pub fn on_tick(&self, now: Instant) {
        let mut st = self.lock();
        if st.readers.is_empty() {
            return;
        }
        let steps = st.jitter.poll(now);
        run_steps(&mut st, &steps);
    }

    /// When [`TrackTap::on_tick`] next has work; `None` without readers.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let st = self.lock();
        if st.readers.is_empty() {
            return None;
        }
        st.jitter.next_wakeup()
    }

    /// What the packet stage saw so far (for the end-of-track log).
    pub fn stats(&self) -> jitter::JitterStats {
        self.lock().jitter.stats
    }

    fn end(&self) {
        let mut st = self.lock();
        st.ended = true;
        for r in st.readers.drain(..) {
            r.lane.end();
        }
    }
}

fn run_steps(st: &mut TapState, steps: &[jitter::Step]) {
    // Readers whose plugin closed them go first.
    st.readers.retain(|r| !r.lane.is_closed());
    if steps.is_empty() || st.readers.is_empty() {
        return;
    }
    let TapState {
        decoders,
        readers,
        pcm,
        ..
    } = st;
    for (i, dec) in decoders.iter_mut().enumerate() {
        if !readers.iter().any(|r| r.decoder == i) {
            continue;
        }
        for step in steps {
            pcm.clear();
            let flags = dec.apply(step, pcm);
            for r in readers.iter_mut().filter(|r| r.decoder == i) {
                let lane = &r.lane;
                r.framer.push(pcm, flags, |f| {
                    lane.push(f);
                });
            }
        }
    }
}

/// The room-wide registry of media (see the module doc). Lives as long as
/// the room, across reconnects.
pub struct MediaHub {
    tracks: Mutex<HashMap<String, Arc<TrackTap>>>,
    data: Lane<DataIn>,
    /// Off for plugins older than ABI 1.3 (they have no next_data).
    data_wanted: std::sync::atomic::AtomicBool,
}

impl Default for MediaHub {
    fn default() -> Self {
        MediaHub {
            tracks: Mutex::new(HashMap::new()),
            data: Lane::new(DATA_INBOX_CAPACITY),
            data_wanted: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl std::fmt::Debug for MediaHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaHub").finish_non_exhaustive()
    }
}

/// Why a reader could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    NotFound,
    Unsupported(String),
    Invalid(String),
}

impl MediaHub {
    /// The session reports a subscription whose media arrived, *before*
    /// emitting its track_subscribed (so a reader opened on that event finds
    /// the tap). Each subscription gets a fresh tap: one it replaces (the
    /// same track subscribed again) ends, as its track_unsubscribed says.
    pub fn attach_track(&self, participant: &ParticipantRef, track: &TrackRef) -> Arc<TrackTap> {
        let tap = Arc::new(TrackTap {
            participant: participant.clone(),
            track: track.clone(),
            state: Mutex::new(TapState::default()),
        });
        let replaced = self
            .tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(track.sid.clone(), tap.clone());
        if let Some(old) = replaced {
            old.end();
        }
        tap
    }

    /// The session reports the track's media ended: its readers drain what
    /// is queued, then see the end.
    pub fn detach_track(&self, tap: &Arc<TrackTap>) {
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        if tracks
            .get(&tap.track.sid)
            .is_some_and(|t| Arc::ptr_eq(t, tap))
        {
            tracks.remove(&tap.track.sid);
        }
        drop(tracks);
        tap.end();
    }

    /// The subscription of `track_sid` ended (whatever the follower does
    /// next): its readers drain, then see the end.
    pub fn end_track(&self, track_sid: &str) {
        let tap = self
            .tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(track_sid);
        if let Some(tap) = tap {
            tap.end();
        }
    }

    /// Opens a reader on a subscribed track.
    pub(crate) fn open_stream(
        &self,
        track_sid: &str,
        fmt: AudioFormat,
    ) -> Result<Arc<Lane<Frame>>, OpenError> {
        let tap = self
            .tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(track_sid)
            .cloned()
            .ok_or(OpenError::NotFound)?;
        if tap.track.kind == TrackKind::Video {
            return Err(OpenError::Unsupported(format!(
                "track {track_sid} is a video track"
            )));
        }
        tap.add_reader(fmt).map_err(|e| {
            if e.contains("unsubscribed") {
                OpenError::NotFound
            } else {
                OpenError::Invalid(e)
            }
        })
    }

    /// A user data packet arrived (never blocks; the oldest is dropped
    /// when the inbox is full).
    pub fn push_data(&self, packet: DataIn) {
        if self.data_wanted.load(std::sync::atomic::Ordering::Relaxed) {
            self.data.push(packet);
        }
    }

    /// Whether the plugin can read user data packets (ABI 1.3 and later);
    /// when not, they are not kept.
    pub fn set_data_wanted(&self, wanted: bool) {
        self.data_wanted
            .store(wanted, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn data_inbox(&self) -> &Lane<DataIn> {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TrackSource;
    use std::time::Duration;

    fn mic() -> (ParticipantRef, TrackRef) {
        (
            ParticipantRef {
                identity: "alice".into(),
                sid: "PA_a".into(),
            },
            TrackRef {
                sid: "TR_mic".into(),
                name: "mic".into(),
                kind: TrackKind::Audio,
                source: TrackSource::Microphone,
            },
        )
    }

    fn never() -> bool {
        false
    }

    fn any<T>(_: &T) -> bool {
        true
    }

    /// Two readers on one track, each with its own format, both get the
    /// whole tone; a ring too small for a slow reader reports its drops;
    /// the end of the track ends both after they drained.
    #[test]
    fn readers_with_their_own_formats_and_rings() {
        let hub = MediaHub::default();
        let (p, t) = mic();
        let tap = hub.attach_track(&p, &t);
        let a = hub
            .open_stream(
                "TR_mic",
                AudioFormat::for_stream(48_000, 1, 10, 5_000).unwrap(),
            )
            .unwrap();
        let b = hub
            .open_stream(
                "TR_mic",
                AudioFormat::for_stream(16_000, 2, 20, 100).unwrap(),
            )
            .unwrap();
        assert_eq!(
            hub.open_stream("TR_x", AudioFormat::for_stream(48_000, 1, 10, 0).unwrap())
                .err(),
            Some(OpenError::NotFound)
        );
        let t0 = Instant::now();
        let packets = decode::tests::encoded_tone(1);
        for (i, pk) in packets.iter().enumerate() {
            tap.on_packet(
                i as u16,
                i as u32 * 960,
                pk.clone(),
                t0 + Duration::from_millis(20 * i as u64),
            );
        }
        tap.on_tick(t0 + Duration::from_secs(2));
        hub.detach_track(&tap);
        let far = Instant::now() + Duration::from_secs(1);
        let mut n = 0;
        let mut pcm = Vec::new();
        loop {
            match a.pop(far, &never, &any) {
                Ok((f, dropped)) => {
                    assert_eq!(dropped, 0);
                    assert_eq!(f.samples_per_channel, 480);
                    assert_eq!(f.pts_us, n * 10_000);
                    pcm.extend(f.pcm);
                    n += 1;
                }
                Err(e) => {
                    assert_eq!(e, lane::PopEnd::Ended);
                    break;
                }
            }
        }
        // 1 s of packets, plus the silence filled up to 2 s - FILL_LAG.
        assert!(n >= 100, "{n}");
        let (f, _) = decode::tests::freq_and_rms(&pcm[4800..48_000], 48_000);
        assert!((f - 440.0).abs() <= 5.0, "{f}");
        // b: 100 ms ring of 20 ms frames = 5 kept, the rest dropped and counted.
        let (first, dropped) = b.pop(far, &never, &any).unwrap();
        assert_eq!(first.pcm.len(), 640);
        assert!(dropped > 40, "{dropped}");
        assert_eq!(b.len(), 4);
        assert!(hub
            .open_stream("TR_mic", AudioFormat::for_stream(48_000, 1, 10, 0).unwrap())
            .is_err());
    }

    #[test]
    fn formats_are_checked() {
        assert!(AudioFormat::for_stream(48_000, 1, 0, 0).is_ok());
        assert!(AudioFormat::for_stream(44_100, 2, 100, 10_000).is_ok());
        assert!(AudioFormat::for_stream(7_999, 1, 10, 0).is_err());
        assert!(
            AudioFormat::for_stream(44_101, 1, 10, 0).is_err(),
            "a 1 s resampler block"
        );
        assert!(AudioFormat::for_source(22_050, 2, 0).is_ok());
        assert!(AudioFormat::for_stream(48_000, 3, 10, 0).is_err());
        assert!(AudioFormat::for_stream(48_000, 1, 15, 0).is_err());
        assert!(AudioFormat::for_stream(48_000, 1, 110, 0).is_err());
        assert!(AudioFormat::for_source(48_000, 1, 10_001).is_err());
        assert_eq!(AudioFormat::for_source(24_000, 1, 0).unwrap().queue_ms, 200);
    }
}
