//! The receive side's sample stage: decode [`Step`]s into PCM at a reader's
//! rate and channel count, and cut it into frames.
//!
//! Owns: [`PcmDecoder`] (one `opus::Decoder` per distinct rate × channels
//! on a track; libopus decodes natively to 8, 12, 16, 24 and 48 kHz, other
//! rates are decoded at 48 kHz and resampled), [`Resampler`] (a streaming
//! wrapper of rubato's synchronous FFT resampler for interleaved i16), and
//! [`Framer`] (cuts a sample stream into `frame_ms` frames, carrying the
//! concealed/silence flags and the media timestamp).
//!
//! Must not touch: packets, timing, rings: it is pure computation on one
//! task's data.

use super::jitter::{opus_samples_48k, Step};
use lk_plugin_api::abi::{LK_AUDIO_FRAME_CONCEALED, LK_AUDIO_FRAME_SILENCE};

/// Sample rates libopus encodes from and decodes to without resampling
/// (RFC 6716 §2).
pub const OPUS_NATIVE_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

pub(crate) fn is_opus_native(rate: u32) -> bool {
    OPUS_NATIVE_RATES.contains(&rate)
}

fn opus_channels(channels: u32) -> opus::Channels {
    if channels == 2 {
        opus::Channels::Stereo
    } else {
        opus::Channels::Mono
    }
}

/// Streaming sample-rate conversion of interleaved i16, any chunk size in,
/// whatever is ready out. Wraps rubato's `Fft` (synchronous, fixed input
/// chunk of 10 ms); its delay is about half a chunk plus the filter.
pub(crate) struct Resampler {
    inner: rubato::Fft<f32>,
    channels: usize,
    /// Interleaved input not yet processed.
    pending: Vec<f32>,
    out: Vec<f32>,
}

impl Resampler {
    pub(crate) fn new(from: u32, to: u32, channels: u32) -> Result<Resampler, String> {
        let chunk = (from / 100) as usize;
        let inner = rubato::Fft::<f32>::new(
            from as usize,
            to as usize,
            chunk,
            1,
            channels as usize,
            rubato::FixedSync::Input,
        )
        .map_err(|e| format!("resampler {from} -> {to} Hz: {e}"))?;
        Ok(Resampler {
            inner,
            channels: channels as usize,
            pending: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Feeds `input` and appends every sample that is ready to `output`.
    pub(crate) fn process(&mut self, input: &[i16], output: &mut Vec<i16>) {
        use audioadapter_buffers::direct::InterleavedSlice;
        use rubato::Resampler as _;
        self.pending
            .extend(input.iter().map(|&s| s as f32 / 32768.0));
        loop {
            let need = self.inner.input_frames_next();
            if self.pending.len() < need * self.channels {
                break;
            }
            let frames_out = self.inner.output_frames_next();
            self.out.resize(frames_out * self.channels, 0.0);
            let done = {
                let Ok(inp) = InterleavedSlice::new(
                    &self.pending[..need * self.channels],
                    self.channels,
                    need,
                ) else {
                    break;
                };
                let Ok(mut outp) =
                    InterleavedSlice::new_mut(&mut self.out[..], self.channels, frames_out)
                else {
                    break;
                };
                self.inner.process_into_buffer(&inp, &mut outp, None)
            };
            match done {
                Ok((used, produced)) => {
                    self.pending.drain(..used * self.channels);
                    output.extend(
                        self.out[..produced * self.channels]
                            .iter()
                            .map(|&s| (s * 32768.0).clamp(-32768.0, 32767.0) as i16),
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "resampler failed; chunk dropped");
                    self.pending.drain(..need * self.channels);
                }
            }
        }
    }
}

/// Opus decoder at one output format; see the module doc.
pub(crate) struct PcmDecoder {
    pub(crate) rate: u32,
    pub(crate) channels: u32,
    /// Rate the Opus decoder runs at (the output rate when native, else 48 kHz).
    decode_rate: u32,
    decoder: opus::Decoder,
    resampler: Option<Resampler>,
    scratch: Vec<i16>,
}

impl PcmDecoder {
    pub(crate) fn new(rate: u32, channels: u32) -> Result<PcmDecoder, String> {
        let decode_rate = if is_opus_native(rate) { rate } else { 48_000 };
        let decoder = opus::Decoder::new(decode_rate, opus_channels(channels))
            .map_err(|e| format!("Opus decoder at {decode_rate} Hz: {e}"))?;
        let resampler = if decode_rate != rate {
            Some(Resampler::new(decode_rate, rate, channels)?)
        } else {
            None
        };
        Ok(PcmDecoder {
            rate,
            channels,
            decode_rate,
            decoder,
            resampler,
            scratch: Vec::new(),
        })
    }

    fn at_decode_rate(&self, samples_48k: u32) -> usize {
        (samples_48k as u64 * self.decode_rate as u64 / 48_000) as usize
    }

    /// Decodes one step, appending interleaved PCM at the output format to
    /// `out`; returns its `LK_AUDIO_FRAME_*` flags. A packet libopus
    /// rejects is concealed instead (and flagged so).
    pub(crate) fn apply(&mut self, step: &Step, out: &mut Vec<i16>) -> u32 {
        let ch = self.channels as usize;
        let mut pcm = std::mem::take(&mut self.scratch);
        pcm.clear();
        let flags = match step {
            Step::Decode {
                payload,
                samples_48k,
            } => {
                let n = self.at_decode_rate(*samples_48k);
                pcm.resize(n * ch, 0);
                match self.decoder.decode(payload, &mut pcm, false) {
                    Ok(got) => {
                        pcm.truncate(got * ch);
                        0
                    }
                    Err(_) => {
                        self.conceal(n, &mut pcm);
                        LK_AUDIO_FRAME_CONCEALED
                    }
                }
            }
            Step::Conceal { samples_48k, next } => {
                let n = self.at_decode_rate(*samples_48k);
                let fec_len = self.at_decode_rate(opus_samples_48k(next)).min(n);
                self.conceal(n - fec_len, &mut pcm);
                if fec_len > 0 {
                    let start = pcm.len();
                    pcm.resize(start + fec_len * ch, 0);
                    if self.decoder.decode(next, &mut pcm[start..], true).is_err() {
                        pcm.truncate(start);
                        self.conceal(fec_len, &mut pcm);
                    }
                }
                LK_AUDIO_FRAME_CONCEALED
            }
            Step::Silence { samples_48k } => {
                let n = self.at_decode_rate(*samples_48k);
                pcm.resize(n * ch, 0);
                LK_AUDIO_FRAME_SILENCE
            }
        };
        match &mut self.resampler {
            Some(r) => r.process(&pcm, out),
            None => out.extend_from_slice(&pcm),
        }
        self.scratch = pcm;
        flags
    }

    /// Appends `n` samples per channel of packet-loss concealment, in
    /// chunks libopus accepts (multiples of 2.5 ms, at most 20 ms); a
    /// remainder below 2.5 ms is zeros.
    fn conceal(&mut self, n: usize, pcm: &mut Vec<i16>) {
        let ch = self.channels as usize;
        let unit = self.decode_rate as usize / 400; // 2.5 ms
        let max = self.decode_rate as usize / 50; // 20 ms
        let mut left = n;
        while left >= unit {
            let chunk = (left.min(max) / unit) * unit;
            let start = pcm.len();
            pcm.resize(start + chunk * ch, 0);
            if self.decoder.decode(&[], &mut pcm[start..], false).is_err() {
                // Leave zeros.
            }
            left -= chunk;
        }
        pcm.resize(pcm.len() + left * ch, 0);
    }
}

/// One frame for a reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) pcm: Vec<i16>,
    pub(crate) samples_per_channel: u32,
    pub(crate) flags: u32,
    pub(crate) pts_us: u64,
}

/// Cuts a sample stream into frames of a fixed length.
pub(crate) struct Framer {
    rate: u32,
    channels: u32,
    samples_per_frame: usize,
    pending: Vec<i16>,
    flags: u32,
    /// Samples per channel cut so far (the next frame's media time).
    emitted: u64,
}

impl Framer {
    pub(crate) fn new(rate: u32, channels: u32, frame_ms: u32) -> Framer {
        Framer {
            rate,
            channels,
            samples_per_frame: (rate as usize * frame_ms as usize / 1000) * channels as usize,
            pending: Vec::new(),
            flags: 0,
            emitted: 0,
        }
    }

    /// Appends samples carrying `flags`; calls `emit` for each full frame.
    pub(crate) fn push(&mut self, samples: &[i16], flags: u32, mut emit: impl FnMut(Frame)) {
        if samples.is_empty() {
            return;
        }
        self.flags |= flags;
        self.pending.extend_from_slice(samples);
        let mut start = 0;
        while self.pending.len() - start >= self.samples_per_frame {
            let pcm = self.pending[start..start + self.samples_per_frame].to_vec();
            start += self.samples_per_frame;
            let spc = (self.samples_per_frame / self.channels as usize) as u32;
            emit(Frame {
                pcm,
                samples_per_channel: spc,
                flags: self.flags,
                pts_us: self.emitted * 1_000_000 / self.rate as u64,
            });
            self.emitted += spc as u64;
            // Samples left over belong to the last run pushed.
            self.flags = if self.pending.len() - start > 0 {
                flags
            } else {
                0
            };
        }
        self.pending.drain(..start);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;

    /// Frequency by zero crossings (rising), and RMS, of mono PCM.
    pub(crate) fn freq_and_rms(pcm: &[i16], rate: u32) -> (f64, f64) {
        let mut rising = Vec::new();
        for i in 1..pcm.len() {
            if pcm[i - 1] < 0 && pcm[i] >= 0 {
                rising.push(i);
            }
        }
        let freq = if rising.len() >= 2 {
            (rising.len() - 1) as f64 * rate as f64 / (rising[rising.len() - 1] - rising[0]) as f64
        } else {
            0.0
        };
        let rms = (pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
        (freq, rms)
    }

    pub(crate) fn sine(rate: u32, freq: f64, amplitude: f64, n: usize, phase0: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amplitude
                    * (2.0 * std::f64::consts::PI * freq * (phase0 + i) as f64 / rate as f64).sin())
                    as i16
            })
            .collect()
    }

    /// 2 s of 440 Hz encoded at 48 kHz, as 20 ms packets.
    pub(crate) fn encoded_tone(seconds: usize) -> Vec<Bytes> {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        enc.set_inband_fec(true).unwrap();
        enc.set_packet_loss_perc(10).unwrap();
        (0..seconds * 50)
            .map(|k| {
                let pcm = sine(48_000, 440.0, 8000.0, 960, k * 960);
                Bytes::from(enc.encode_vec(&pcm, 4000).unwrap())
            })
            .collect()
    }

    /// The codec round trip at every rate a reader may ask for: 440 Hz
    /// survives (± 5 Hz), the level is kept (± 3 dB), and the sample count
    /// is the media duration (exactly for native rates; within the
    /// resampler's delay otherwise).
    #[test]
    fn round_trip_at_native_and_resampled_rates() {
        let packets = encoded_tone(2);
        let sent_rms = 8000.0 / 2f64.sqrt();
        for rate in [48_000u32, 24_000, 16_000, 8_000, 44_100, 22_050] {
            let mut d = PcmDecoder::new(rate, 1).unwrap();
            let mut out = Vec::new();
            for p in &packets {
                let flags = d.apply(
                    &Step::Decode {
                        payload: p.clone(),
                        samples_48k: 960,
                    },
                    &mut out,
                );
                assert_eq!(flags, 0);
            }
            let expect = rate as usize * 2;
            if is_opus_native(rate) {
                assert_eq!(out.len(), expect, "{rate}");
            } else {
                assert!(
                    out.len() <= expect && out.len() + rate as usize / 50 >= expect,
                    "{rate}: {}",
                    out.len()
                );
            }
            let (f, rms) = freq_and_rms(&out[rate as usize / 5..], rate);
            assert!((f - 440.0).abs() <= 5.0, "{rate}: {f} Hz");
            let db = 20.0 * (rms / sent_rms).log10();
            assert!(db.abs() <= 3.0, "{rate}: {db} dB");
        }
    }

    /// Losses (4 %) concealed with FEC + PLC keep the tone and the
    /// duration, and are flagged; silence is flagged and zero.
    #[test]
    fn conceal_and_silence_steps() {
        let packets = encoded_tone(2);
        let mut d = PcmDecoder::new(24_000, 1).unwrap();
        let mut out = Vec::new();
        let mut concealed = 0;
        for (i, p) in packets.iter().enumerate() {
            if i % 25 == 5 {
                continue; // lost
            }
            if i % 25 == 6 {
                let f = d.apply(
                    &Step::Conceal {
                        samples_48k: 960,
                        next: p.clone(),
                    },
                    &mut out,
                );
                assert_eq!(f, LK_AUDIO_FRAME_CONCEALED);
                concealed += 1;
            }
            d.apply(
                &Step::Decode {
                    payload: p.clone(),
                    samples_48k: 960,
                },
                &mut out,
            );
        }
        assert_eq!(concealed, 4);
        assert_eq!(out.len(), 48_000, "2 s at 24 kHz, losses included");
        let (f, _) = freq_and_rms(&out[4800..], 24_000);
        assert!((f - 440.0).abs() <= 5.0, "{f}");
        let before = out.len();
        let f = d.apply(
            &Step::Silence {
                samples_48k: 960 * 3,
            },
            &mut out,
        );
        assert_eq!(f, LK_AUDIO_FRAME_SILENCE);
        assert_eq!(out.len() - before, 1440);
        assert!(out[before..].iter().all(|&s| s == 0));
    }

    #[test]
    fn framer_cuts_exact_frames_with_flags_and_pts() {
        let mut fr = Framer::new(16_000, 2, 20); // 320 samples/ch, 640 total
        let mut frames = Vec::new();
        fr.push(&vec![1; 500], 0, |f| frames.push(f));
        assert!(frames.is_empty());
        fr.push(&vec![2; 800], LK_AUDIO_FRAME_CONCEALED, |f| frames.push(f));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].flags, LK_AUDIO_FRAME_CONCEALED);
        assert_eq!(frames[0].samples_per_channel, 320);
        assert_eq!((frames[0].pts_us, frames[1].pts_us), (0, 20_000));
        fr.push(&vec![3; 640], 0, |f| frames.push(f));
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames[2].flags, LK_AUDIO_FRAME_CONCEALED,
            "its samples include concealed ones"
        );
    }
}
