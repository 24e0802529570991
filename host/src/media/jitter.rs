//! The receive side's packet stage: from Opus RTP packets as they arrive
//! (late, duplicated, reordered, lost, wrapping) to an in-order list of
//! decode [`Step`]s whose durations add up to the media time.
//!
//! Owns: [`Jitter`] — sequence and timestamp extension to 64 bits, a small
//! reorder window (a packet is held at most [`REORDER_DEPTH`], or until
//! [`REORDER_PACKETS`] newer ones wait behind it), gap detection by RTP
//! timestamp (Opus's RTP clock is always 48 kHz, RFC 7587), and a
//! clock-driven silence fill while nothing arrives (DTX, mute, a stalled
//! network), so a reader keeps receiving frames in real time like the
//! official SDKs' NetEq-driven streams do. Losses while audio flows are
//! concealed sample for sample (frame count = media duration); after a
//! pause the stream re-anchors on the next packet instead, so silence never
//! turns into latency.
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
/// before silence is filled in (20 ms at a time). Real packets arriving
/// after a pause land ahead of the fill, so none is dropped as late.
pub(crate) const FILL_LAG: Duration = Duration::from_millis(120);

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
    /// Media time skipped when speech resumed after a pause (re-anchoring).
    pub skipped_48k: u64,
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
        let late_seq = self.released_seq.is_some_and(|r| seq <= r);
        let covered = self
            .next_ts
            .is_some_and(|n| ts + opus_samples_48k(&payload) as u64 <= n);
        if late_seq || covered || self.held.contains_key(&seq) {
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
            if let (Some(due), Some(next_ts)) = (self.due, self.next_ts.as_mut()) {
                let mut due = due;
                while now > due + FILL_LAG {
                    steps.push(Step::Silence {
                        samples_48k: SAMPLES_20MS_48K,
                    });
                    self.stats.silence_48k += SAMPLES_20MS_48K as u64;
                    *next_ts += SAMPLES_20MS_48K as u64;
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

    fn release(&mut self, seq: u64, held: Held, now: Instant, steps: &mut Vec<Step>) {
        let samples = opus_samples_48k(&held.payload);
        if let Some(next_ts) = self.next_ts {
            if held.ts + samples as u64 <= next_ts {
                // Filled with silence meanwhile: too late to play.
                self.stats.late_or_duplicate += 1;
                self.released_seq = Some(seq);
                return;
            }
            // Consecutive sequence numbers across a timestamp jump: the
            // sender paused (DTX, RFC 7587 §3.1.3), nothing was lost.
            let lost = self.released_seq.is_some_and(|r| seq > r + 1);
            if held.ts > next_ts {
                let gap = held.ts - next_ts;
                if lost && self.after_audio && gap <= MAX_CONCEALED_48K {
                    steps.push(Step::Conceal {
                        samples_48k: gap as u32,
                        next: held.payload.clone(),
                    });
                    self.stats.concealed_48k += gap;
                } else {
                    // A pause (DTX), or a loss after one: the clock filled
                    // what it had to in real time, FILL_LAG behind;
                    // emitting the rest now would only queue that much
                    // silence ahead of the speech (an echo would carry it
                    // as latency for good). Re-anchor instead.
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
        self.next_ts = Some(held.ts.max(self.next_ts.unwrap_or(0)) + samples as u64);
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
    /// timestamp jump. Nothing was lost, so nothing is concealed, and the
    /// gap is not emitted as a burst ahead of the speech.
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
        assert_eq!(total(&steps), 2 * 960);
        assert_eq!(j.stats.skipped_48k, 3 * 960);
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
        // The next packet is media time 1000 ms (48000): it plays at once;
        // the rest of the gap (FILL_LAG's worth) is skipped, not queued
        // ahead of it, and never concealed.
        steps.extend(j.push(1, 48_000, pkt(1), t0 + Duration::from_millis(1000)));
        assert!(matches!(steps.last(), Some(Step::Decode { .. })));
        assert!(!steps.iter().any(|s| matches!(s, Step::Conceal { .. })));
        assert_eq!(j.stats.skipped_48k, 48_000 - 960 - 860 * 48);
        assert_eq!(total(&steps), 960 + 860 * 48 + 960);
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
