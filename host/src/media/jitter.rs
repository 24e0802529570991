//! The receive side's packet stage: from Opus RTP packets as they arrive
//! (late, duplicated, reordered, lost, wrapping) to an in-order list of
//! decode [`Step`]s whose durations add up to the wall-clock time the
//! stream ran, so a reader gets frames at 1.00x real time through speech,
//! losses, DTX and mute alike.
//!
//! Owns: [`Jitter`] — sequence and timestamp extension to 64 bits, a small
//! reorder window (a packet is held at most [`REORDER_DEPTH`], or until
//! [`REORDER_PACKETS`] newer ones wait behind it), gap detection by RTP
//! timestamp (Opus's RTP clock is always 48 kHz, RFC 7587), and a
//! clock-driven silence fill while nothing arrives (DTX, mute, a stalled
//! network, a track subscribed while muted: the clock starts when the
//! first reader does, [`Jitter::start_clock`]), so a reader keeps
//! receiving frames in real time like the official SDKs' NetEq-driven
//! streams do. Losses while audio flows are concealed sample for sample.
//! The fill runs [`FILL_LAG`] behind the clock, so a packet arriving after
//! a pause usually lands ahead of it: the rest of the pause is then owed
//! and emitted as silence before the packet (a burst of at most FILL_LAG,
//! which restores real time: skipping it instead made a DTX stream, a
//! packet every 400 ms, run at 0.84x). A packet the fill already covered
//! (it came later than FILL_LAG) is played, not dropped: the timestamp
//! mapping moves by the overlap, and the frame count keeps following the
//! wall clock. Only a jump of the sender's timestamps beyond
//! [`MAX_CATCH_UP_48K`] (a new sender clock, not a pause the fill ran
//! through) is skipped, and counted.
//!
//! Must not touch: decoding (the steps name what to decode; `decode` does
//! it), time (every method takes `now`, so the tests drive a virtual clock).
//!
//! Why not webrtc-rs's `SampleBuilder` or jitter-buffer interceptor: the
//! former preallocates ~11.5 MiB per track and reports a loss only as a
//! count on the next sample; the latter applies to every inbound stream of
//! the peer connection (see ../../../docs/ARCHITECTURE.md, "media").

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Samples of one 20 ms Opus frame at the 48 kHz RTP clock.
pub(crate) const SAMPLES_20MS_48K: u32 = 960;
/// Longest a packet waits for an earlier one that is missing.
pub(crate) const REORDER_DEPTH: Duration = Duration::from_millis(60);
/// Packets held behind a missing one before it is declared lost.
pub(crate) const REORDER_PACKETS: usize = 3;
/// A gap up to this long (48 kHz samples, 200 ms) after real audio is
/// concealed (FEC + PLC). A longer one, or one after a pause, was already
/// filled with silence by the clock; the stream re-anchors on the packet.
pub(crate) const MAX_CONCEALED_48K: u64 = 10 * SAMPLES_20MS_48K as u64;
/// How far behind the wall clock the media may fall, with nothing held,
/// before silence is filled in (20 ms at a time). Losses shorter than this
/// are concealed (PLC, FEC) when the next packet arrives; longer ones were
/// filled with silence.
pub(crate) const FILL_LAG: Duration = Duration::from_millis(120);
/// The longest gap (48 kHz samples, 400 ms) emitted as silence when a
/// packet resumes a pause: what the fill still owes (at most FILL_LAG plus
/// a frame or two of arrival jitter). A longer jump is the sender's clock
/// moving, not time passing here: it is skipped and counted.
pub(crate) const MAX_CATCH_UP_48K: u64 = 20 * SAMPLES_20MS_48K as u64;

/// What the decoder does next, in media order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Decode this packet (`samples_48k` long at 48 kHz).
    Decode { payload: Bytes, samples_48k: u32 },
    /// `samples_48k` were lost just before `next`: conceal them, using
    /// `next`'s in-band FEC for the last frame when it has some.
    Conceal { samples_48k: u32, next: Bytes },
    /// Nothing was sent for `samples_48k`: emit silence.
    Silence { samples_48k: u32 },
}

impl Step {
    #[cfg(test)]
    pub(crate) fn samples_48k(&self) -> u32 {
        match self {
            Step::Decode { samples_48k, .. }
            | Step::Conceal { samples_48k, .. }
            | Step::Silence { samples_48k } => *samples_48k,
        }
    }
}

/// Extends a wrapping RTP counter (16-bit sequence or 32-bit timestamp) to
/// 64 bits by choosing the value closest to the previous one.
#[derive(Clone, Copy, Debug, Default)]
struct Extender {
    last: Option<u64>,
    bits: u32,
}

impl Extender {
    fn new(bits: u32) -> Extender {
        Extender { last: None, bits }
    }

    fn extend(&mut self, v: u64) -> u64 {
        let span = 1u64 << self.bits;
        let Some(last) = self.last else {
            // Start one cycle up so an early reordered packet can go below.
            let e = span + v;
            self.last = Some(e);
            return e;
        };
        let base = last & !(span - 1);
        let candidates = [base.wrapping_sub(span) + v, base + v, base + span + v];
        let e = candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(last))
            .expect("three candidates");
        if e > last {
            self.last = Some(e);
        }
        e
    }
}

struct Held {
    ts: u64,
    payload: Bytes,
    release_at: Instant,
}

/// Per-track packet stage; see the module doc.
pub(crate) struct Jitter {
    seq: Extender,
    ts: Extender,
    held: BTreeMap<u64, Held>,
    /// Highest sequence number released (or given up on).
    released_seq: Option<u64>,
    /// RTP time (48 kHz, extended) of the next sample owed to the decoder.
    next_ts: Option<u64>,
    /// Wall time at which the media at `next_ts` is due.
    due: Option<Instant>,
    /// The last step was real audio (a gap after it may be concealed).
    after_audio: bool,
    /// Counters for logs and tests.
    pub(crate) stats: JitterStats,
}

/// What the packet stage saw, for logs and tests (48 kHz sample counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub packets: u64,
    pub late_or_duplicate: u64,
    pub reordered: u64,
    pub concealed_48k: u64,
    pub silence_48k: u64,
    /// Sender timestamps skipped: a jump larger than a pause could explain
    /// (see [`MAX_CATCH_UP_48K`]).
    pub skipped_48k: u64,
    /// Packets the silence fill had already covered (they came more than
    /// FILL_LAG late) that were played anyway: media time the stream
    /// shifted by to keep them.
    pub overlapped_48k: u64,
}

/// Opus packet duration at 48 kHz (TOC byte and frame count, RFC 6716
/// §3.1); 20 ms when the packet cannot be parsed.
pub(crate) fn opus_samples_48k(payload: &[u8]) -> u32 {
    match opus::packet::get_nb_samples(payload, 48_000) {
        Ok(n) if n > 0 && n <= 5760 => n as u32,
        _ => SAMPLES_20MS_48K,
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::new()
    }
}

impl Jitter {
    pub(crate) fn new() -> Jitter {
        Jitter {
            seq: Extender::new(16),
            ts: Extender::new(32),
            held: BTreeMap::new(),
            released_seq: None,
            next_ts: None,
            due: None,
            after_audio: false,
            stats: JitterStats::default(),
        }
    }

    /// Takes one RTP packet; returns the steps it makes ready.
    pub(crate) fn push(&mut self, seq: u16, ts: u32, payload: Bytes, now: Instant) -> Vec<Step> {
        self.stats.packets += 1;
        let seq = self.seq.extend(seq as u64);
        let ts = self.ts.extend(ts as u64);
        // Late and duplicate packets are told by their sequence number: a
        // timestamp the silence fill already covered may still be new
        // audio (see the module doc).
        let late_seq = self.released_seq.is_some_and(|r| seq <= r);
        if late_seq || self.held.contains_key(&seq) {
            self.stats.late_or_duplicate += 1;
            return self.poll(now);
        }
        if self.held.keys().next_back().is_some_and(|&last| seq < last) {
            self.stats.reordered += 1;
        }
        self.held.insert(
            seq,
            Held {
                ts,
                payload,
                release_at: now + REORDER_DEPTH,
            },
        );
        self.poll(now)
    }

    /// Releases what is due at `now`: packets in order (the next expected
    /// one at once; others once their wait is over or too many are held),
    /// then clock-driven silence when nothing is held and the media fell
    /// more than [`FILL_LAG`] behind.
    pub(crate) fn poll(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some((&seq, held)) = self.held.iter().next() {
            // The very first packet plays at once: holding it would queue
            // the packets behind it as one burst, which a real-time
            // consumer (an echo) keeps as latency for good. An earlier
            // packet arriving after it is late.
            let in_order = self.released_seq.is_none_or(|r| seq == r + 1);
            if !(in_order || held.release_at <= now || self.held.len() > REORDER_PACKETS) {
                break;
            }
            let held = self.held.remove(&seq).expect("first key exists");
            self.release(seq, held, now, &mut steps);
        }
        if self.held.is_empty() {
            if let Some(mut due) = self.due {
                while now > due + FILL_LAG {
                    steps.push(Step::Silence {
                        samples_48k: SAMPLES_20MS_48K,
                    });
                    self.stats.silence_48k += SAMPLES_20MS_48K as u64;
                    if let Some(next_ts) = self.next_ts.as_mut() {
                        *next_ts += SAMPLES_20MS_48K as u64;
                    }
                    due += Duration::from_millis(20);
                    self.after_audio = false;
                }
                self.due = Some(due);
            }
        }
        steps
    }

    /// When `poll` next has something to do.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        let held = self.held.values().map(|h| h.release_at).min();
        let fill = if self.held.is_empty() {
            self.due.map(|d| d + FILL_LAG + Duration::from_millis(1))
        } else {
            None
        };
        match (held, fill) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts the real-time clock before any packet arrived (a reader was
    /// opened on a track that is muted or not sending yet): silence is
    /// filled in from `now` on until the first packet. No-op once running.
    pub(crate) fn start_clock(&mut self, now: Instant) {
        if self.due.is_none() {
            self.due = Some(now);
        }
    }

    fn release(&mut self, seq: u64, held: Held, now: Instant, steps: &mut Vec<Step>) {
        let samples = opus_samples_48k(&held.payload);
        let mut ts = held.ts;
        if let (None, Some(due)) = (self.next_ts, self.due) {
            // The first packet of a stream whose clock ran before it (see
            // `start_clock`): the fill still owes the time since `due`.
            let owed = (now.saturating_duration_since(due).as_micros() as u64 * 48 / 1000)
                / SAMPLES_20MS_48K as u64
                * SAMPLES_20MS_48K as u64;
            if owed > 0 {
                let owed = owed.min(MAX_CATCH_UP_48K);
                steps.push(Step::Silence {
                    samples_48k: owed as u32,
                });
                self.stats.silence_48k += owed;
            }
        }
        if let Some(next_ts) = self.next_ts {
            // Consecutive sequence numbers across a timestamp jump: the
            // sender paused (DTX, RFC 7587 §3.1.3), nothing was lost.
            let lost = self.released_seq.is_some_and(|r| seq > r + 1);
            if ts < next_ts {
                // The silence fill already covered this packet's time (it
                // came over FILL_LAG late, or the sender's clock stepped
                // back): play it anyway, mapping its time to now.
                self.stats.overlapped_48k += next_ts - ts;
                ts = next_ts;
            } else if ts > next_ts {
                let gap = ts - next_ts;
                if lost && self.after_audio && gap <= MAX_CONCEALED_48K {
                    steps.push(Step::Conceal {
                        samples_48k: gap as u32,
                        next: held.payload.clone(),
                    });
                    self.stats.concealed_48k += gap;
                } else if gap <= MAX_CATCH_UP_48K {
                    // A pause (DTX, mute, a loss after one) the fill ran
                    // through FILL_LAG behind: the rest of it is owed.
                    steps.push(Step::Silence {
                        samples_48k: gap as u32,
                    });
                    self.stats.silence_48k += gap;
                } else {
                    self.stats.skipped_48k += gap;
                }
            }
        }
        steps.push(Step::Decode {
            payload: held.payload,
            samples_48k: samples,
        });
        self.after_audio = true;
        self.released_seq = Some(seq);
        self.next_ts = Some(ts + samples as u64);
        let media = Duration::from_micros(samples as u64 * 1_000_000 / 48_000);
        // The media just released plays until `now + media` at the earliest;
        // a burst after a stall does not push `due` into the future.
        self.due = Some(now + media);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20 ms SILK/CELT-free packet shape: TOC 0xF8 (CELT FB 20 ms mono, one
    /// frame) is enough for the duration parser.
    fn pkt(tag: u8) -> Bytes {
        Bytes::from(vec![0xF8, tag, tag])
    }

    fn total(steps: &[Step]) -> u64 {
        steps.iter().map(|s| s.samples_48k() as u64).sum()
    }

    #[test]
    fn extension_survives_wraps_and_reordering() {
        let mut e = Extender::new(16);
        let a = e.extend(65534);
        let b = e.extend(65535);
        let c = e.extend(1); // wrapped, skipping 0
        let d = e.extend(0); // reordered across the wrap
        assert_eq!((b - a, c - a, d - a), (1, 3, 2));
        let mut t = Extender::new(32);
        let x = t.extend(u32::MAX as u64 - 959);
        let y = t.extend(0);
        assert_eq!(y - x, 960);
    }

    /// In-order packets (the first included) are released at once, one
    /// decode each.
    #[test]
    fn in_order_packets_go_straight_through() {
        let mut j = Jitter::new();
        let t0 = Instant::now();
        let mut steps = Vec::new();
        for i in 0..50u16 {
            steps.extend(j.push(
                i,
                i as u32 * 960,
                pkt(i as u8),
                t0 + Duration::from_millis(20 * i as u64),
            ));
        }
        assert_eq!(steps.len(), 50);
        assert!(steps.iter().all(|s| matches!(s, Step::Decode { .. })));
        assert_eq!(total(&steps), 50 * 960);
    }

    /// 3 s of 20 ms packets with sequence and timestamp both wrapping,
    /// every 25th lost and every 7th swapped with its neighbour: the steps
    /// add up to exactly the media duration, each loss is concealed with the
    /// next packet's FEC, and nothing is played twice.
    #[test]
    fn reorder_loss_and_wrap_keep_media_time_exact() {
        let mut j = Jitter::new();
        let t0 = Instant::now();
        let n = 150u64;
        let seq0 = 65_500u16;
        let ts0 = u32::MAX - 960 * 40;
        let mut order: Vec<u64> = (0..n).filter(|i| i % 25 != 12).collect();
        // Swaps from the second packet on (the first is played at once).
        for k in (1..order.len() - 1).step_by(7) {
            order.swap(k, k + 1);
        }
        let mut steps = Vec::new();
        for (arrival, &i) in order.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * arrival as u64);
            steps.extend(j.push(
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add(i as u32 * 960),
                pkt(i as u8),
                now,
            ));
        }
        // Past the last packet's reorder wait, before any silence fill.
        let last_arrival = t0 + Duration::from_millis(20 * (order.len() as u64 - 1));
        steps.extend(j.poll(last_arrival + REORDER_DEPTH));
        let concealed: Vec<&Step> = steps
            .iter()
            .filter(|s| matches!(s, Step::Conceal { .. }))
            .collect();
        assert_eq!(concealed.len(), 6, "one per lost packet");
        assert!(concealed.iter().all(|s| s.samples_48k() == 960));
        // The last packet is at media time (n-1)*960; the steps cover up to its end.
        assert_eq!(total(&steps), n * 960);
        let decoded: Vec<u8> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Decode { payload, .. } => Some(payload[1]),
                _ => None,
            })
            .collect();
        let expect: Vec<u8> = (0..n).filter(|i| i % 25 != 12).map(|i| i as u8).collect();
        assert_eq!(decoded, expect, "in order, none twice");
        assert!(j.stats.reordered > 0);
    }

    /// DTX: the sender pauses with consecutive sequence numbers and a
    /// timestamp jump. Nothing was lost, so nothing is concealed; the pause
    /// is silence, so the steps still add up to the time that passed.
    #[test]
    fn a_dtx_pause_is_not_a_loss() {
        let mut j = Jitter::new();
        let t0 = Instant::now();
        let mut steps = j.push(0, 0, pkt(0), t0);
        // 80 ms later (less than FILL_LAG: no clock fill yet), seq 1 at ts 80 ms.
        steps.extend(j.push(1, 4 * 960, pkt(1), t0 + Duration::from_millis(80)));
        assert!(
            !steps.iter().any(|s| matches!(s, Step::Conceal { .. })),
            "{steps:?}"
        );
        assert_eq!(total(&steps), 5 * 960);
        assert_eq!(j.stats.silence_48k, 3 * 960);
        assert_eq!(j.stats.skipped_48k, 0);
    }

    /// The DTX publisher: 1 s of tone, then 4 s of digital silence
    /// with DTX on (one packet every 400 ms), for 30 s, polled every 10 ms
    /// as the track's follower does. Frames used to come at 0.84x real time
    /// (every pause lost the FILL_LAG the clock still owed it); now the
    /// steps add up to the time that passed, give or take the fill's lag.
    #[test]
    fn a_dtx_stream_runs_at_real_time() {
        let mut j = Jitter::new();
        let t0 = Instant::now();
        let mut packets = Vec::new(); // (arrival ms, ts)
        let mut ts = 0u64;
        let mut at = 0u64;
        while at < 30_000 {
            let cycle = at % 5_000;
            packets.push((at, ts));
            let step = if cycle < 1_000 { 20 } else { 400 };
            at += step;
            ts += step * 48;
        }
        let mut steps = Vec::new();
        let mut next = packets.iter().peekable();
        let mut seq: u16 = 0;
        for ms in (0..30_000u64).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            while let Some(&&(arrival, ts)) = next.peek() {
                if arrival > ms {
                    break;
                }
                steps.extend(j.push(seq, ts as u32, pkt(seq as u8), now));
                seq = seq.wrapping_add(1);
                next.next();
            }
            steps.extend(j.poll(now));
        }
        let emitted_ms = total(&steps) as f64 / 48.0;
        let ratio = emitted_ms / 30_000.0;
        eprintln!("MEASURED DTX stream: {emitted_ms:.0} ms of frames in 30 s ({ratio:.3}x)");
        assert!((0.99..=1.001).contains(&ratio), "{ratio}");
        assert!(!steps.iter().any(|s| matches!(s, Step::Conceal { .. })));
        assert_eq!(j.stats.skipped_48k, 0);
    }

    /// A packet later than the fill (FILL_LAG) is played, not dropped: the
    /// stream shifts by the overlap and keeps following the clock.
    #[test]
    fn a_packet_the_fill_overtook_is_played() {
        let mut j = Jitter::new();
        let t0 = Instant::now();
        let mut steps = j.push(0, 0, pkt(0), t0);
        for ms in (10..=400).step_by(10) {
            steps.extend(j.poll(t0 + Duration::from_millis(ms)));
        }
        // Silence was filled up to 400 - 120 = 280 ms; the packet for
        // media time 100 ms (seq 1: nothing lost) arrives only now.
        let late = j.push(1, 100 * 48, pkt(1), t0 + Duration::from_millis(400));
        assert!(
            matches!(late.last(), Some(Step::Decode { .. })),
            "played: {late:?}"
        );
        assert_eq!(j.stats.late_or_duplicate, 0);
        assert!(j.stats.overlapped_48k > 0);
    }

    /// A reader opened on a muted track (nothing sent yet) gets silence in
    /// real time from the start; the first packet then comes after the
    /// silence the clock still owed, at once.
    #[test]
    fn the_clock_runs_before_the_first_packet() {
        let mut j = Jitter::new();
        let t0 = Instant::now();
        j.start_clock(t0);
        let mut steps = Vec::new();
        for ms in (10..=1000).step_by(10) {
            steps.extend(j.poll(t0 + Duration::from_millis(ms)));
        }
        assert!(steps.iter().all(|s| matches!(s, Step::Silence { .. })));
        assert_eq!(total(&steps), 880 * 48, "filled up to 1000 - FILL_LAG ms");
        steps.extend(j.push(7, 123_456, pkt(1), t0 + Duration::from_millis(1000)));
        assert!(matches!(steps.last(), Some(Step::Decode { .. })));
        assert_eq!(total(&steps), 1000 * 48 + 960, "real time, then the packet");
    }

    #[test]
    fn duplicates_and_stale_packets_are_dropped() {
        let mut j = Jitter::new();
        let t0 = Instant::now();
        let mut steps = j.push(10, 9600, pkt(1), t0);
        steps.extend(j.push(10, 9600, pkt(1), t0));
        steps.extend(j.push(9, 8640, pkt(0), t0));
        assert_eq!(steps.len(), 1);
        assert_eq!(j.stats.late_or_duplicate, 2);
    }

    /// While nothing arrives (DTX, mute) silence is filled in real time,
    /// 20 ms at a time, FILL_LAG behind the clock; the packet after the
    /// pause is played, not dropped, and the total is the media duration.
    #[test]
    fn a_pause_is_filled_with_silence_in_real_time() {
        let mut j = Jitter::new();
        let t0 = Instant::now();
        let mut steps = j.push(0, 0, pkt(0), t0);
        // 1 s with nothing after the first packet, polled every 10 ms.
        for ms in (10..=1000).step_by(10) {
            steps.extend(j.poll(t0 + Duration::from_millis(ms)));
        }
        let silent = total(&steps) - 960;
        // Filled from 20 ms (its release + 20 ms) up to 1000 ms - FILL_LAG.
        assert_eq!(silent, 860 * 48);
        // The next packet is media time 1000 ms (48000): it plays at once,
        // after the rest of the pause the fill still owed (FILL_LAG's
        // worth), never concealed: the total is the time that passed.
        steps.extend(j.push(1, 48_000, pkt(1), t0 + Duration::from_millis(1000)));
        assert!(matches!(steps.last(), Some(Step::Decode { .. })));
        assert!(!steps.iter().any(|s| matches!(s, Step::Conceal { .. })));
        assert_eq!(j.stats.skipped_48k, 0);
        assert_eq!(total(&steps), 48_000 + 960);
    }

    /// A missing packet with nothing behind it is given up on after
    /// REORDER_DEPTH, not held forever.
    #[test]
    fn a_lone_gap_is_released_after_the_reorder_depth() {
        let mut j = Jitter::new();
        let t0 = Instant::now();
        assert_eq!(
            j.push(0, 0, pkt(0), t0).len(),
            1,
            "the first packet plays at once"
        );
        let arrival = t0 + Duration::from_millis(40);
        assert!(j.push(2, 1920, pkt(2), arrival).is_empty());
        let wake = j.next_wakeup().expect("a deadline");
        assert_eq!(wake, arrival + REORDER_DEPTH);
        let steps = j.poll(wake);
        assert_eq!(steps.len(), 2);
        assert!(matches!(
            steps[0],
            Step::Conceal {
                samples_48k: 960,
                ..
            }
        ));
    }
}
