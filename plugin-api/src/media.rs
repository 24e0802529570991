//! The safe Rust side of ABI 1.3: hear, speak, exchange data.
//!
//! Owns: [`AudioStream`] (PCM frames of a subscribed track: `read` with a
//! timeout, an `Iterator`, or a channel), [`AudioSource`] (a published
//! microphone fed with `capture`, with `clear` and `queued` for barge-in),
//! [`DataPacket`] / [`DataOptions`], and the [`JobContext`] methods that
//! open them. Names follow the official SDKs (Python `AudioStream`,
//! `AudioSource.capture_frame` / `clear_queue` / `queued_duration`,
//! `publish_data`, `set_attributes`).
//!
//! Channels: [`AudioStream::into_channel`], [`JobContext::event_channel`],
//! [`JobContext::data_channel`] and [`JobContext::shutdown_channel`] return
//! `crossbeam_channel` receivers, so one plugin thread can `select!` over
//! audio, events, data and shutdown. Each is fed by a small pump thread that
//! ends (disconnecting the channel) when the job shuts down or the source
//! ends.
//!
//! Must not touch: the host's implementation; everything goes through the
//! table. On a host older than 1.3 every call returns
//! [`MediaError::HostTooOld`].

use crate::abi::*;
use crate::sdk::{Event, JobContext, NextEvent, ShutdownInfo};
use std::time::Duration;

/// Why a media or data call did not do what was asked. Mirrors the
/// header's `LK_*` results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaError {
    /// Nothing within the timeout (`LK_TIMEOUT`); nothing was copied.
    Timeout,
    /// The job is shutting down (`LK_SHUTTING_DOWN`).
    ShuttingDown,
    /// The track went away and every frame was read (`LK_ENDED`).
    Ended,
    /// The handle was closed (`LK_ERR_CLOSED`).
    Closed,
    /// A bad argument; the host logged which (`LK_ERR_INVALID`).
    Invalid,
    /// E.g. a video track (`LK_ERR_UNSUPPORTED`).
    Unsupported,
    /// No subscribed track with that sid (`LK_ERR_NOT_FOUND`).
    NotFound,
    /// Payload over [`LK_MAX_RELIABLE_DATA`] (`LK_ERR_TOO_LARGE`).
    TooLarge,
    /// No server session (`LK_ERR_NOT_CONNECTED`).
    NotConnected,
    /// The server refused; the host logged why (`LK_ERR_REFUSED`).
    Refused,
    /// A capture waited for room while the queue was cleared: its audio
    /// was dropped with the rest (`LK_CLEARED`, ABI 1.4).
    Cleared,
    /// A data stream ended abnormally (`LK_ERR_ABORTED`, ABI 1.4).
    Aborted,
    /// The host speaks an ABI too old for the call (< 1.3 for media and
    /// data, < 1.4 for streams, RPC and transcriptions).
    HostTooOld,
    /// A result code this SDK does not know.
    Other(i32),
}

impl MediaError {
    pub(crate) fn from_code(rc: i32) -> MediaError {
        match rc {
            LK_TIMEOUT => MediaError::Timeout,
            LK_SHUTTING_DOWN => MediaError::ShuttingDown,
            LK_ENDED => MediaError::Ended,
            LK_ERR_CLOSED => MediaError::Closed,
            LK_ERR_INVALID => MediaError::Invalid,
            LK_ERR_UNSUPPORTED => MediaError::Unsupported,
            LK_ERR_NOT_FOUND => MediaError::NotFound,
            LK_ERR_TOO_LARGE => MediaError::TooLarge,
            LK_ERR_NOT_CONNECTED => MediaError::NotConnected,
            LK_ERR_REFUSED => MediaError::Refused,
            LK_CLEARED => MediaError::Cleared,
            LK_ERR_ABORTED => MediaError::Aborted,
            other => MediaError::Other(other),
        }
    }
}

impl std::fmt::Display for MediaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for MediaError {}

pub(crate) fn check(rc: i32) -> Result<(), MediaError> {
    if rc == LK_OK {
        Ok(())
    } else {
        Err(MediaError::from_code(rc))
    }
}

pub(crate) fn millis(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

/// PCM format of a stream or source: int16 interleaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioFormat {
    /// Hz: 8000, 12000, 16000, 24000, 48000 (Opus-native) or 11025, 22050,
    /// 32000, 44100 (resampled).
    pub sample_rate: u32,
    /// 1 or 2.
    pub num_channels: u32,
    /// Streams: frame length, 10..=100 ms in steps of 10 (0 = 10).
    pub frame_ms: u32,
    /// Streams: ring length (0 = 500 ms). Sources: capture blocks above
    /// this (0 = 200 ms).
    pub queue_ms: u32,
}

impl AudioFormat {
    /// Mono at `sample_rate`, 10 ms frames, default queues.
    pub const fn mono(sample_rate: u32) -> AudioFormat {
        AudioFormat {
            sample_rate,
            num_channels: 1,
            frame_ms: 10,
            queue_ms: 0,
        }
    }

    fn as_abi(&self) -> LkAudioFormat {
        LkAudioFormat {
            sample_rate: self.sample_rate,
            num_channels: self.num_channels,
            frame_ms: self.frame_ms,
            queue_ms: self.queue_ms,
        }
    }
}

/// One frame read from an [`AudioStream`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioFrame {
    /// Interleaved samples, `samples_per_channel * num_channels` of them.
    pub data: Vec<i16>,
    pub sample_rate: u32,
    pub num_channels: u32,
    pub samples_per_channel: u32,
    /// `LK_AUDIO_FRAME_CONCEALED` / `LK_AUDIO_FRAME_SILENCE` bits.
    pub flags: u32,
    /// Media time of the first sample since the stream opened, µs.
    pub pts_us: u64,
    /// Frames the ring dropped before this one (the reader fell behind).
    pub dropped_frames: u64,
}

impl AudioFrame {
    /// Some samples were reconstructed (Opus FEC / PLC).
    pub fn is_concealed(&self) -> bool {
        self.flags & LK_AUDIO_FRAME_CONCEALED != 0
    }
    /// Some samples are gap fill (nothing was sent: DTX, mute, long loss).
    pub fn is_silence(&self) -> bool {
        self.flags & LK_AUDIO_FRAME_SILENCE != 0
    }
}

/// A PCM reader on a subscribed remote audio track. Closed on drop.
/// `Send + Sync`: reads may come from any thread (one at a time).
pub struct AudioStream {
    ctx: JobContext,
    raw: *mut LkAudioStream,
    format: AudioFormat,
}

// SAFETY: the host documents stream calls as callable from any thread.
unsafe impl Send for AudioStream {}
unsafe impl Sync for AudioStream {}

impl AudioStream {
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Waits up to `timeout` for the next frame.
    pub fn read(&self, timeout: Duration) -> Result<AudioFrame, MediaError> {
        let frame_ms = if self.format.frame_ms == 0 {
            10
        } else {
            self.format.frame_ms
        };
        let spc = (self.format.sample_rate * frame_ms / 1000) as usize;
        let mut data = vec![0i16; spc * self.format.num_channels as usize];
        let mut info = LkAudioFrameInfo::default();
        let rc = unsafe {
            (self.ctx.api().audio_stream_read)(
                self.raw,
                data.as_mut_ptr(),
                data.len(),
                millis(timeout),
                &mut info,
            )
        };
        check(rc)?;
        data.truncate(info.samples_per_channel as usize * self.format.num_channels as usize);
        Ok(AudioFrame {
            data,
            sample_rate: self.format.sample_rate,
            num_channels: self.format.num_channels,
            samples_per_channel: info.samples_per_channel,
            flags: info.flags,
            pts_us: info.pts_us,
            dropped_frames: info.dropped_frames,
        })
    }

    /// Moves the stream to a pump thread; frames arrive on the returned
    /// channel (bounded by `capacity`; a full channel blocks the pump, and
    /// the host's ring then drops and counts the oldest frames). The channel
    /// disconnects when the track ends, the job shuts down, or the receiver
    /// is dropped.
    pub fn into_channel(self, capacity: usize) -> crossbeam_channel::Receiver<AudioFrame> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        std::thread::spawn(move || loop {
            match self.read(Duration::from_millis(200)) {
                Ok(frame) => {
                    if tx.send(frame).is_err() {
                        return;
                    }
                }
                Err(MediaError::Timeout) => {}
                Err(_) => return,
            }
        });
        rx
    }
}

/// Blocking iteration: `None` once the track ended, the stream closed or
/// the job is shutting down.
impl Iterator for AudioStream {
    type Item = AudioFrame;
    fn next(&mut self) -> Option<AudioFrame> {
        loop {
            match self.read(Duration::from_millis(200)) {
                Ok(frame) => return Some(frame),
                Err(MediaError::Timeout) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Drop for AudioStream {
    fn drop(&mut self) {
        unsafe { (self.ctx.api().audio_stream_close)(self.raw) }
    }
}

/// A published microphone track fed from PCM. Unpublished on drop (or
/// [`AudioSource::close`]). `Send + Sync`.
pub struct AudioSource {
    ctx: JobContext,
    raw: *mut LkAudioSource,
    track_sid: &'static str,
    format: AudioFormat,
}

// SAFETY: the host documents source calls as callable from any thread.
unsafe impl Send for AudioSource {}
unsafe impl Sync for AudioSource {}

impl AudioSource {
    /// The track sid the server gave the publication.
    pub fn track_sid(&self) -> &'static str {
        self.track_sid
    }

    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Queues interleaved PCM (any length up to 10 s), waiting up to
    /// `timeout` while more than `queue_ms` is queued. All or nothing.
    pub fn capture(&self, pcm: &[i16], timeout: Duration) -> Result<(), MediaError> {
        let channels = self.format.num_channels.max(1) as usize;
        if pcm.len() % channels != 0 {
            // Half a stereo frame cannot be sent; say so rather than drop it.
            return Err(MediaError::Invalid);
        }
        let spc = pcm.len() / channels;
        check(unsafe {
            (self.ctx.api().audio_source_capture)(self.raw, pcm.as_ptr(), spc, millis(timeout))
        })
    }

    /// Drops everything queued (barge-in); returns how much that was.
    pub fn clear(&self) -> Duration {
        Duration::from_millis(unsafe { (self.ctx.api().audio_source_clear)(self.raw) } as u64)
    }

    /// Audio queued and not yet sent (zero once played out).
    pub fn queued(&self) -> Duration {
        Duration::from_millis(unsafe { (self.ctx.api().audio_source_queued_ms)(self.raw) } as u64)
    }

    /// Waits up to `timeout` until the track has a subscriber (the
    /// server's first `TrackSubscribed` for it): audio captured before that
    /// reaches nobody, so an agent that speaks first waits here (as
    /// livekit-agents' `wait_for_subscription`). ABI 1.4; on an older host
    /// [`MediaError::HostTooOld`].
    pub fn wait_subscribed(&self, timeout: Duration) -> Result<(), MediaError> {
        if !self.ctx.has_streams() {
            return Err(MediaError::HostTooOld);
        }
        check(unsafe { (self.ctx.api().audio_source_wait_subscribed)(self.raw, millis(timeout)) })
    }

    /// Unpublishes now (also done on drop).
    pub fn close(&self) {
        unsafe { (self.ctx.api().audio_source_close)(self.raw) }
    }
}

impl Drop for AudioSource {
    fn drop(&mut self) {
        self.close();
    }
}

/// A user data packet received by the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPacket {
    pub payload: Vec<u8>,
    pub topic: String,
    /// The sender; empty when the server API sent it.
    pub participant_identity: String,
    pub reliable: bool,
}

/// How to send a data packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataOptions {
    pub topic: String,
    /// Empty: everyone in the room.
    pub destination_identities: Vec<String>,
    /// Ordered and retransmitted (else lossy).
    pub reliable: bool,
}

impl DataOptions {
    /// Reliable, with a topic, to everyone.
    pub fn reliable(topic: &str) -> DataOptions {
        DataOptions {
            topic: topic.to_string(),
            destination_identities: Vec::new(),
            reliable: true,
        }
    }

    /// Only to these identities.
    pub fn to(mut self, identities: &[&str]) -> DataOptions {
        self.destination_identities = identities.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// What [`JobContext::next_data`] got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextData {
    Packet(DataPacket),
    Timeout,
    /// The plugin fell behind; this many packets were dropped.
    Missed(u64),
    ShuttingDown,
}

pub(crate) fn lk(s: &str) -> LkStr {
    LkStr::borrow(s)
}

impl JobContext {
    /// True when the host speaks ABI 1.3 (media and data).
    pub fn has_media(&self) -> bool {
        self.host_abi().1 >= 3 && self.api().size as usize >= LK_HOST_API_SIZE_1_3
    }

    fn media(&self) -> Result<&'static LkHostApi, MediaError> {
        if self.has_media() {
            Ok(self.api())
        } else {
            Err(MediaError::HostTooOld)
        }
    }

    /// Opens a PCM reader on a subscribed audio track (its sid from
    /// [`crate::sdk::EventKind::TrackSubscribed`]).
    pub fn audio_stream(
        &self,
        track_sid: &str,
        format: AudioFormat,
    ) -> Result<AudioStream, MediaError> {
        let api = self.media()?;
        let mut raw = std::ptr::null_mut();
        let abi = format.as_abi();
        check(unsafe { (api.audio_stream_open)(self.raw_job(), lk(track_sid), &abi, &mut raw) })?;
        Ok(AudioStream {
            ctx: *self,
            raw,
            format,
        })
    }

    /// Publishes a microphone track named `name` fed from PCM in `format`
    /// (waits for the server to accept it, at most 15 s). After a rejoin
    /// (`Reconnected` with reason "rejoined") the host closes sources:
    /// `capture` says [`MediaError::Closed`]; publish again.
    pub fn publish_audio(
        &self,
        name: &str,
        format: AudioFormat,
    ) -> Result<AudioSource, MediaError> {
        let api = self.media()?;
        let mut raw = std::ptr::null_mut();
        let mut sid = LkStr::EMPTY;
        let abi = format.as_abi();
        check(unsafe {
            (api.audio_source_publish)(self.raw_job(), lk(name), &abi, &mut raw, &mut sid)
        })?;
        // SAFETY: the host keeps the sid for the life of the process.
        let track_sid = std::str::from_utf8(unsafe { sid.as_bytes() }).unwrap_or("");
        Ok(AudioSource {
            ctx: *self,
            raw,
            track_sid,
            format,
        })
    }

    /// Sends a user data packet (≤ 15 KiB), waiting up to `timeout` for the
    /// publisher connection on the first send.
    pub fn publish_data(
        &self,
        payload: &[u8],
        options: &DataOptions,
        timeout: Duration,
    ) -> Result<(), MediaError> {
        let api = self.media()?;
        let dests: Vec<LkStr> = options
            .destination_identities
            .iter()
            .map(|s| lk(s))
            .collect();
        let flags = if options.reliable {
            LK_DATA_RELIABLE
        } else {
            0
        };
        check(unsafe {
            (api.publish_data)(
                self.raw_job(),
                payload.as_ptr(),
                payload.len(),
                lk(&options.topic),
                dests.as_ptr(),
                dests.len(),
                flags,
                millis(timeout),
            )
        })
    }

    /// Waits up to `timeout` for the next user data packet.
    pub fn next_data(&self, timeout: Duration) -> NextData {
        let Ok(api) = self.media() else {
            std::thread::sleep(timeout.min(Duration::from_millis(100)));
            return if self.is_shutting_down() {
                NextData::ShuttingDown
            } else {
                NextData::Timeout
            };
        };
        let mut p = LkDataPacket::zeroed();
        let mut missed = 0u64;
        let rc = unsafe { (api.next_data)(self.raw_job(), millis(timeout), &mut p, &mut missed) };
        match rc {
            LK_OK => {
                // SAFETY: host-owned until data_release.
                let out = unsafe {
                    DataPacket {
                        payload: if p.data.is_null() {
                            Vec::new()
                        } else {
                            std::slice::from_raw_parts(p.data, p.len).to_vec()
                        },
                        topic: p.topic.to_string_lossy(),
                        participant_identity: p.participant_identity.to_string_lossy(),
                        reliable: p.flags & LK_DATA_RELIABLE != 0,
                    }
                };
                unsafe { (api.data_release)(self.raw_job(), &mut p) };
                NextData::Packet(out)
            }
            LK_TIMEOUT => NextData::Timeout,
            LK_MISSED => NextData::Missed(missed),
            _ => NextData::ShuttingDown,
        }
    }

    /// Sets attributes of the job's participant (merged; an empty value
    /// deletes the key) and waits up to `timeout` for the server.
    pub fn set_attributes(
        &self,
        attributes: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(), MediaError> {
        let api = self.media()?;
        let keys: Vec<LkStr> = attributes.iter().map(|(k, _)| lk(k)).collect();
        let values: Vec<LkStr> = attributes.iter().map(|(_, v)| lk(v)).collect();
        check(unsafe {
            (api.set_attributes)(
                self.raw_job(),
                keys.as_ptr(),
                values.as_ptr(),
                keys.len(),
                millis(timeout),
            )
        })
    }

    /// Replaces the job participant's metadata (non-empty).
    pub fn set_metadata(&self, metadata: &str, timeout: Duration) -> Result<(), MediaError> {
        let api = self.media()?;
        check(unsafe { (api.set_metadata)(self.raw_job(), lk(metadata), millis(timeout)) })
    }

    /// Room events on a channel (see the module doc). A `Missed(n)` from
    /// the host is logged as a warning; the channel disconnects at shutdown.
    pub fn event_channel(&self, capacity: usize) -> crossbeam_channel::Receiver<Event> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let ctx = *self;
        std::thread::spawn(move || loop {
            match ctx.next_event(Duration::from_millis(200)) {
                NextEvent::Event(ev) => {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
                NextEvent::Missed(n) => ctx.warn(&format!("event channel: {n} events missed")),
                NextEvent::Timeout => {}
                NextEvent::ShuttingDown => return,
            }
        });
        rx
    }

    /// User data packets on a channel; disconnects at shutdown.
    pub fn data_channel(&self, capacity: usize) -> crossbeam_channel::Receiver<DataPacket> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let ctx = *self;
        std::thread::spawn(move || loop {
            match ctx.next_data(Duration::from_millis(200)) {
                NextData::Packet(p) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                NextData::Missed(n) => ctx.warn(&format!("data channel: {n} packets missed")),
                NextData::Timeout => {}
                NextData::ShuttingDown => return,
            }
        });
        rx
    }

    /// Receives the shutdown info once shutdown begins (a hook that sends).
    pub fn shutdown_channel(&self) -> crossbeam_channel::Receiver<ShutdownInfo> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.on_shutdown(move |info| {
            let _ = tx.try_send(info.clone());
        });
        rx
    }
}
