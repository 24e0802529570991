//! The send side: PCM from a plugin, queued in milliseconds, drained and
//! Opus-encoded 20 ms at a time by the track's send clock.
//!
//! Owns: [`SourceQueue`] (the bounded PCM queue: `capture` blocks while
//! more than `queue_ms` is queued, `clear` drops it all for barge-in,
//! `queued_ms` is the playout position) and [`OpusSender`] (20 ms of the
//! queue → one Opus packet: VOIP mode, in-band FEC on; rates Opus cannot
//! encode from are resampled to 48 kHz first).
//!
//! Must not touch: RTP, tracks, the peer connection: the room's feeder task
//! calls [`OpusSender::next_tick`] once per tick and sends what it says.

use super::bell::Waitable;
use super::decode::{is_opus_native, Resampler};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Why a capture copied nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureEnd {
    Timeout,
    Closed,
    Stopped,
    /// The queue was cleared (barge-in) while the capture waited for
    /// room: its audio was handed in before the clear, so it is dropped
    /// with the rest instead of playing after it.
    Cleared,
}

struct QueueState {
    samples: VecDeque<i16>,
    closed: bool,
    /// The track has (had) a subscriber (the server's TrackSubscribed).
    subscribed: bool,
}

/// The PCM queue between a plugin's `capture` and the send clock.
pub struct SourceQueue {
    pub(crate) rate: u32,
    pub(crate) channels: u32,
    /// `capture` waits while more than this many samples (all channels) are queued.
    limit: usize,
    /// The queue and the condvar captures wait on (shared with the stop bell).
    state: Arc<Waitable<QueueState>>,
    /// Bumped by every clear: the encoder drops what its resampler holds.
    clears: std::sync::atomic::AtomicU64,
}

impl SourceQueue {
    /// A queue for `rate` Hz × `channels` PCM; `capture` blocks above `queue_ms`.
    pub fn new(rate: u32, channels: u32, queue_ms: u32) -> SourceQueue {
        SourceQueue {
            rate,
            channels,
            limit: (rate as usize * queue_ms as usize / 1000) * channels as usize,
            state: Waitable::new(QueueState {
                samples: VecDeque::new(),
                closed: false,
                subscribed: false,
            }),
            clears: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock()
    }

    /// Copies all of `pcm` (interleaved) once no more than the limit is
    /// queued, waiting until `deadline`; `stop` is checked before waiting
    /// and after every wake-up (the stop bell wakes it when shutdown
    /// begins). Nothing is copied unless everything is.
    pub fn capture(
        &self,
        pcm: &[i16],
        deadline: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), CaptureEnd> {
        let mut st = self.lock();
        // Read under the lock `clear` takes: a clear that returned before
        // this call started is not this call's.
        let clears_at_start = self.clears.load(std::sync::atomic::Ordering::Acquire);
        let mut parked = None;
        loop {
            // Shutdown wins over a close it caused (the cascade ends the
            // session, which closes its sources): the caller learns the
            // job is ending.
            if stop() {
                return Err(CaptureEnd::Stopped);
            }
            if st.closed {
                return Err(CaptureEnd::Closed);
            }
            if self.clears.load(std::sync::atomic::Ordering::Acquire) != clears_at_start {
                return Err(CaptureEnd::Cleared);
            }
            if st.samples.len() <= self.limit {
                st.samples.extend(pcm.iter().copied());
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CaptureEnd::Timeout);
            }
            st = self.state.park_or_wait(st, deadline, &mut parked);
        }
    }

    fn samples_to_ms(&self, n: usize) -> u32 {
        (n as u64 * 1000 / (self.rate as u64 * self.channels as u64)) as u32
    }

    /// Drops everything queued; returns how many ms that was.
    pub(crate) fn clear(&self) -> u32 {
        let mut st = self.lock();
        let n = st.samples.len();
        st.samples.clear();
        self.clears
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        drop(st);
        self.state.notify_all();
        self.samples_to_ms(n)
    }

    /// The server says the track has its first subscriber.
    pub(crate) fn mark_subscribed(&self) {
        self.lock().subscribed = true;
        self.state.notify_all();
    }

    /// Waits until the track has a subscriber ([`Self::mark_subscribed`]),
    /// `deadline` or `stop()` (checked before waiting and after every
    /// wake-up, the stop bell's included).
    pub(crate) fn wait_subscribed(
        &self,
        deadline: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), CaptureEnd> {
        let mut st = self.lock();
        let mut parked = None;
        loop {
            if st.subscribed {
                return Ok(());
            }
            if stop() {
                return Err(CaptureEnd::Stopped);
            }
            if st.closed {
                return Err(CaptureEnd::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CaptureEnd::Timeout);
            }
            st = self.state.park_or_wait(st, deadline, &mut parked);
        }
    }

    /// Ms queued and not yet taken by the send clock.
    pub(crate) fn queued_ms(&self) -> u32 {
        self.samples_to_ms(self.lock().samples.len())
    }

    /// Closes the queue: waiting and later captures return `Closed`.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        // Give the memory back: the handle may live on (leaked) forever.
        st.samples = VecDeque::new();
        drop(st);
        self.state.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Samples (all channels) queued now.
    fn len(&self) -> usize {
        self.lock().samples.len()
    }

    /// Drops up to `n` samples (all channels) from the front; returns how
    /// many.
    fn discard(&self, n: usize) -> usize {
        let mut st = self.lock();
        let k = n.min(st.samples.len());
        st.samples.drain(..k);
        drop(st);
        if k > 0 {
            self.state.notify_all();
        }
        k
    }

    /// Takes up to `n` samples (all channels) into `out`; returns how many.
    fn take(&self, n: usize, out: &mut Vec<i16>) -> usize {
        let mut st = self.lock();
        let k = n.min(st.samples.len());
        out.extend(st.samples.drain(..k));
        drop(st);
        if k > 0 {
            self.state.notify_all();
        }
        k
    }
}

/// What one tick of the send clock sends.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// 20 ms of the queue, Opus-encoded.
    Packet(Vec<u8>),
    /// Nothing is queued: send 20 ms of silence.
    Silence,
    /// Less than 20 ms is queued right after audio: the producer is a little
    /// late. Send nothing this tick (the stream shifts 20 ms later, once)
    /// rather than pad the frame or insert silence mid-speech: each padding
    /// or silence frame lengthened the audio (an echo fed 10 ms frames came
    /// back 0.8 % flat).
    Hold,
}

/// What a source's send clock did, for the end-of-track log (and the
/// tests): every way audio can be delayed, padded or lost is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    pub packets: u64,
    pub silence: u64,
    /// Ticks held (see [`Tick::Hold`]).
    pub holds: u64,
    /// Samples per channel of zero padding after a producer stopped
    /// mid-frame.
    pub padded: u64,
    /// Queued audio dropped because the send clock stalled longer than it
    /// may catch up (see `RtcSession`'s feeder), ms.
    pub stall_dropped_ms: u64,
}

/// Turns the queue into 20 ms Opus packets; see the module doc.
pub(crate) struct OpusSender {
    encoder: opus::Encoder,
    rate: u32,
    enc_rate: u32,
    channels: u32,
    /// The queue's clear count this sender has seen.
    clears_seen: u64,
    resampler: Option<Resampler>,
    /// Samples (all channels) taken per tick: 20 ms at the source rate.
    per_tick: usize,
    /// Samples (all channels) per packet at the encoder's rate.
    per_packet: usize,
    /// The last tick sent audio (an empty queue now is a late producer
    /// until proven otherwise).
    after_audio: bool,
    /// The last tick was held: this one sends whatever is there.
    held: bool,
    pub(crate) stats: SendStats,
    pcm: Vec<i16>,
    encode_buf: Vec<i16>,
    packet: Vec<u8>,
}

impl OpusSender {
    pub(crate) fn new(rate: u32, channels: u32) -> Result<OpusSender, String> {
        let enc_rate = if is_opus_native(rate) { rate } else { 48_000 };
        let ch = if channels == 2 {
            opus::Channels::Stereo
        } else {
            opus::Channels::Mono
        };
        let mut encoder = opus::Encoder::new(enc_rate, ch, opus::Application::Voip)
            .map_err(|e| format!("Opus encoder at {enc_rate} Hz: {e}"))?;
        // FEC on, as the SDP advertises useinbandfec=1; the bitrate the
        // official SDKs use for speech (32 kb/s mono).
        let _ = encoder.set_inband_fec(true);
        let _ = encoder.set_packet_loss_perc(5);
        let _ = encoder.set_bitrate(opus::Bitrate::Bits(32_000 * channels as i32));
        let resampler = if enc_rate != rate {
            Some(Resampler::new(rate, enc_rate, channels)?)
        } else {
            None
        };
        Ok(OpusSender {
            encoder,
            rate,
            enc_rate,
            channels,
            clears_seen: 0,
            resampler,
            per_tick: (rate as usize / 50) * channels as usize,
            per_packet: (enc_rate as usize / 50) * channels as usize,
            after_audio: false,
            held: false,
            stats: SendStats::default(),
            pcm: Vec::new(),
            encode_buf: Vec::new(),
            packet: vec![0; 4000],
        })
    }

    /// One send-clock tick: what to send (see [`Tick`]).
    pub(crate) fn next_tick(&mut self, queue: &SourceQueue) -> Tick {
        let clears = queue.clears.load(std::sync::atomic::Ordering::Acquire);
        if clears != self.clears_seen {
            // Barge-in: what the resampler still holds is cleared audio too.
            self.clears_seen = clears;
            self.encode_buf.clear();
            self.after_audio = false;
            if self.resampler.is_some() {
                self.resampler = Resampler::new(self.rate, self.enc_rate, self.channels).ok();
            }
        }
        let queued = queue.len();
        // Less than a frame, mid-speech or at its start: wait one tick for
        // the rest rather than pad (or, mid-speech, insert silence).
        if queued < self.per_tick && (queued > 0 || self.after_audio) && !self.held {
            self.held = true;
            self.stats.holds += 1;
            return Tick::Hold;
        }
        self.held = false;
        self.pcm.clear();
        let got = queue.take(self.per_tick, &mut self.pcm);
        if got == 0 {
            // Played out: what the resampler still holds (< 20 ms) is the
            // tail of the last tick's zero padding.
            self.encode_buf.clear();
            self.after_audio = false;
            self.stats.silence += 1;
            return Tick::Silence;
        }
        if got < self.per_tick {
            // The producer stopped mid-frame (a tick was held for it).
            self.stats.padded += ((self.per_tick - got) / self.channels as usize) as u64;
            self.pcm.resize(self.per_tick, 0);
        }
        match &mut self.resampler {
            Some(r) => r.process(&self.pcm, &mut self.encode_buf),
            None => self.encode_buf.extend_from_slice(&self.pcm),
        }
        if self.encode_buf.len() < self.per_packet {
            // The resampler is still filling its first chunk.
            self.stats.silence += 1;
            return Tick::Silence;
        }
        let frame: Vec<i16> = self.encode_buf.drain(..self.per_packet).collect();
        self.after_audio = true;
        match self.encoder.encode(&frame, &mut self.packet) {
            Ok(n) => {
                self.stats.packets += 1;
                Tick::Packet(self.packet[..n].to_vec())
            }
            Err(e) => {
                tracing::debug!(error = %e, "Opus encode failed; silence sent instead");
                self.stats.silence += 1;
                Tick::Silence
            }
        }
    }

    /// The send clock stalled for `ticks` ticks more than it may catch up:
    /// their audio is dropped from the queue (the receiver hears a loss,
    /// concealed, instead of a permanent delay) and counted.
    pub(crate) fn skip(&mut self, queue: &SourceQueue, ticks: u64) {
        let dropped = queue.discard(self.per_tick * ticks as usize);
        self.stats.stall_dropped_ms +=
            (dropped as u64 * 1000) / (self.rate as u64 * self.channels as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::decode::tests::{freq_and_rms, sine};
    use crate::media::decode::PcmDecoder;
    use crate::media::jitter::Step;
    use std::time::Duration;

    fn never() -> bool {
        false
    }

    /// A full queue makes capture wait; the timeout is honoured and nothing
    /// is copied; clear reports what it dropped and frees the space.
    #[test]
    fn full_queue_blocks_capture_until_timeout_or_clear() {
        let q = SourceQueue::new(48_000, 1, 100);
        let chunk = vec![1i16; 4800]; // 100 ms
        let far = Instant::now() + Duration::from_secs(5);
        q.capture(&chunk, far, &never).unwrap();
        q.capture(&chunk, far, &never).unwrap(); // at the limit: still accepted
        assert_eq!(q.queued_ms(), 200);
        let started = Instant::now();
        let r = q.capture(&chunk, started + Duration::from_millis(80), &never);
        let took = started.elapsed();
        assert_eq!(r, Err(CaptureEnd::Timeout));
        assert!(
            took >= Duration::from_millis(80) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(q.queued_ms(), 200, "nothing copied on timeout");
        assert_eq!(q.clear(), 200);
        assert_eq!(q.queued_ms(), 0);
        q.capture(&chunk, Instant::now(), &never).unwrap();
    }

    /// Barge-in from another thread while a capture waits for room: the
    /// blocked call used to wake up, find room and queue its whole 500 ms
    /// chunk, which then played after the clear. It returns Cleared and
    /// queues nothing; a capture after the clear queues as usual.
    #[test]
    fn a_capture_blocked_across_a_clear_queues_nothing() {
        let q = std::sync::Arc::new(SourceQueue::new(48_000, 1, 200));
        let far = Instant::now() + Duration::from_secs(5);
        q.capture(&vec![1i16; 9600], far, &never).unwrap(); // 200 ms: full
        q.capture(&vec![1i16; 480], far, &never).unwrap(); // over the limit now
        let q2 = q.clone();
        let blocked = std::thread::spawn(move || {
            q2.capture(&vec![2i16; 24_000], far, &never) // 500 ms
        });
        // The blocked capture is waiting once it holds no lock and the
        // queue is still full; give it time to get there.
        std::thread::sleep(Duration::from_millis(100));
        assert!(!blocked.is_finished(), "capture should be waiting for room");
        assert_eq!(q.clear(), 210);
        assert_eq!(blocked.join().unwrap(), Err(CaptureEnd::Cleared));
        assert_eq!(q.queued_ms(), 0, "nothing from before the clear is queued");
        q.capture(&vec![3i16; 480], far, &never).unwrap();
        assert_eq!(q.queued_ms(), 10);
    }

    /// A producer feeding 10 ms frames around the 20 ms send clock (one
    /// before each tick, one after, and now and then both after): the
    /// sender used to pad a half-filled tick with 10 ms of zeros, and send
    /// silence when a frame was late, lengthening the audio. It holds one
    /// tick instead: no sample is added, none is lost.
    #[test]
    fn a_late_producer_is_held_for_not_padded() {
        let q = SourceQueue::new(48_000, 1, 1_000);
        let mut s = OpusSender::new(48_000, 1).unwrap();
        let far = Instant::now() + Duration::from_secs(5);
        let frame = sine(48_000, 440.0, 8000.0, 480, 0); // 10 ms
        for tick in 0..200 {
            let late = tick % 7 == 3;
            if !late {
                q.capture(&frame, far, &never).unwrap();
            }
            let _ = s.next_tick(&q);
            q.capture(&frame, far, &never).unwrap();
            if late {
                q.capture(&frame, far, &never).unwrap();
            }
        }
        while s.next_tick(&q) != Tick::Silence {}
        assert_eq!(s.stats.padded, 0, "{:?}", s.stats);
        assert_eq!(
            s.stats.packets, 200,
            "4 s of audio, 20 ms each: {:?}",
            s.stats
        );
        // One at the start (then a frame is always in hand), one at the end
        // of the speech (the queue ran dry right after audio).
        assert_eq!(s.stats.holds, 2, "{:?}", s.stats);
        assert_eq!(q.queued_ms(), 0);
    }

    #[test]
    fn close_wakes_a_blocked_capture() {
        let q = std::sync::Arc::new(SourceQueue::new(16_000, 1, 10));
        q.capture(&vec![0; 1600], Instant::now(), &never).unwrap();
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            q2.capture(&[0; 160], Instant::now() + Duration::from_secs(30), &never)
        });
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        assert_eq!(t.join().unwrap(), Err(CaptureEnd::Closed));
    }

    /// PCM through the sender and back through a decoder keeps 440 Hz, at
    /// a native rate and at 44.1 kHz (resampled both ways).
    #[test]
    fn send_path_round_trip() {
        for rate in [48_000u32, 24_000, 44_100] {
            let q = SourceQueue::new(rate, 1, 10_000);
            q.capture(
                &sine(rate, 440.0, 8000.0, rate as usize * 2, 0),
                Instant::now(),
                &never,
            )
            .unwrap();
            let mut s = OpusSender::new(rate, 1).unwrap();
            let mut d = PcmDecoder::new(48_000, 1).unwrap();
            let mut out = Vec::new();
            let mut packets = 0;
            loop {
                let p = match s.next_tick(&q) {
                    Tick::Packet(p) => p,
                    Tick::Hold => continue,
                    Tick::Silence if packets < 5 => continue, // resampler warm-up
                    Tick::Silence => break,
                };
                d.apply(
                    &Step::Decode {
                        payload: p.into(),
                        samples_48k: 960,
                    },
                    &mut out,
                );
                packets += 1;
            }
            assert!(
                (98..=101).contains(&packets),
                "{rate}: {packets} packets for 2 s"
            );
            let (f, rms) = freq_and_rms(&out[9600..out.len() - 9600], 48_000);
            assert!((f - 440.0).abs() <= 5.0, "{rate}: {f}");
            assert!(rms > 4000.0, "{rate}: {rms}");
            assert_eq!(s.next_tick(&q), Tick::Silence, "empty queue: silence");
        }
    }
}
