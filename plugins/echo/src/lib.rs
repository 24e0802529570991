//! `echo`: the smallest voice agent. It sets `lk.agent.state` to
//! `listening`, publishes a microphone track `echo`, reads the first
//! remote microphone it is subscribed to and captures every frame it hears
//! into its own track, and answers each data packet with topic `lk.ping`
//! with the same payload on topic `lk.pong`, to the sender only.
//!
//! With a host of ABI 1.4 it also talks to frontends ([`frontend`]): RPC
//! `echo`, chat answered as a transcript, byte streams answered with their
//! SHA-256, `frontend.hello` to every participant who joins.
//!
//! Job metadata (`key=value`, space-separated) selects variants the tests
//! use: `rate=24000` (the reader and source rate, default 48000),
//! `mode=bargein` (speaks 5 s of 440 Hz itself and clears the queue after
//! 1 s, logging when), `mode=greet` (speaks 10 beeps of 100 ms as soon as
//! someone subscribes to its track: nothing of it is lost on a late
//! listener), `mode=block` (three threads wait in read, capture
//! and next_data while the job shuts itself down; each logs how long its
//! call took to return), `exit=N` (run's return value, default 0).

mod frontend;

use crossbeam_channel::{select, Receiver};
use lk_plugin_api::media::{
    AudioFormat, AudioSource, AudioStream, DataOptions, MediaError, NextData,
};
use lk_plugin_api::sdk::{EventKind, JobContext, TrackKind, TrackSource};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn setting<'a>(metadata: &'a str, key: &str) -> Option<&'a str> {
    metadata
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

fn run(ctx: &JobContext) -> i32 {
    let md = ctx.metadata();
    let rate: u32 = setting(md, "rate")
        .and_then(|v| v.parse().ok())
        .unwrap_or(48_000);
    let exit: i32 = setting(md, "exit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mode = setting(md, "mode").unwrap_or("echo");
    if !ctx.has_media() {
        ctx.error("echo: the host is older than ABI 1.3 (no media); use a newer lk-go");
        return 69;
    }
    let asked = Instant::now();
    ctx.info(&format!(
        "echo: setting lk.agent.state=listening at unix_ms {}",
        unix_ms()
    ));
    match ctx.set_attributes(&[("lk.agent.state", "listening")], Duration::from_secs(5)) {
        Ok(()) => ctx.info(&format!(
            "echo: lk.agent.state=listening confirmed by the server after {} ms",
            asked.elapsed().as_millis()
        )),
        Err(e) => ctx.warn(&format!("echo: set_attributes failed: {e}")),
    }
    let queue_ms = if mode == "bargein" { 10_000 } else { 0 };
    let source = match ctx.publish_audio(
        "echo",
        AudioFormat {
            queue_ms,
            ..AudioFormat::mono(rate)
        },
    ) {
        Ok(s) => s,
        Err(MediaError::ShuttingDown) => return exit,
        Err(e) => {
            ctx.error(&format!("echo: could not publish its track: {e}"));
            return 1;
        }
    };
    ctx.info(&format!(
        "echo: publishing {} at {rate} Hz",
        source.track_sid()
    ));
    let data = ctx.data_channel(256);
    let shutdown = ctx.shutdown_channel();
    if mode == "echo" {
        frontend::start(ctx, source.track_sid(), md);
    }
    match mode {
        "bargein" => barge_in(ctx, &source, rate, &shutdown),
        "greet" => greet(ctx, &source, rate, &shutdown),
        "block" => return block(ctx, source, rate, exit),
        _ => echo(ctx, source, rate, &data, &shutdown),
    }
    exit
}

/// Answers a ping; on the first one also checks the size limit (15 KiB is
/// sent, 16 KiB refused) and logs both results.
fn pong(ctx: &JobContext, p: &lk_plugin_api::media::DataPacket, first: &mut bool) {
    if p.topic == "lk.flood" {
        return flood(ctx, p);
    }
    if p.topic != "lk.ping" {
        return;
    }
    let to = [p.participant_identity.as_str()];
    if let Err(e) = ctx.publish_data(
        &p.payload,
        &DataOptions::reliable("lk.pong").to(&to),
        Duration::from_secs(5),
    ) {
        ctx.warn(&format!("echo: pong failed: {e}"));
    }
    if std::mem::take(first) {
        let nobody = DataOptions::reliable("lk.size").to(&["nobody"]);
        for len in [15 * 1024, 16 * 1024] {
            let r = ctx.publish_data(&vec![7u8; len], &nobody, Duration::from_secs(5));
            ctx.info(&format!("echo: publish_data {len} bytes: {r:?}"));
        }
    }
}

/// A test of reliable data from many threads: a packet on topic
/// `lk.flood` with payload "COUNT THREADS" is answered by COUNT reliable
/// packets (`flood T I`) on the same topic to its sender, sent by THREADS
/// threads at once; logs how many sends reported success.
fn flood(ctx: &JobContext, p: &lk_plugin_api::media::DataPacket) {
    let text = String::from_utf8_lossy(&p.payload);
    let mut it = text
        .split_whitespace()
        .filter_map(|n| n.parse::<usize>().ok());
    let (count, threads) = (it.next().unwrap_or(0), it.next().unwrap_or(1).max(1));
    let sender = p.participant_identity.clone();
    let c = *ctx;
    std::thread::spawn(move || {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    let to = [sender.as_str()];
                    let options = DataOptions::reliable("lk.flood").to(&to);
                    (0..count / threads)
                        .filter(|i| {
                            c.publish_data(
                                format!("flood {t} {i}").as_bytes(),
                                &options,
                                Duration::from_secs(5),
                            )
                            .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        let ok: usize = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
        c.info(&format!("echo: flood sent {ok} of {count} packets ok"));
    });
}

fn wait_for_microphone(
    ctx: &JobContext,
    events: &Receiver<lk_plugin_api::sdk::Event>,
    data: &Receiver<lk_plugin_api::media::DataPacket>,
    first: &mut bool,
    rate: u32,
    greet: bool,
) -> Option<AudioStream> {
    loop {
        select! {
            recv(events) -> ev => {
                let ev = ev.ok()?;
                if ev.kind == EventKind::ParticipantJoined && greet {
                    frontend::greet(ctx, &ev.participant_identity);
                }
                if ev.kind == EventKind::TrackSubscribed && ev.track_kind == TrackKind::Audio && ev.track_source == TrackSource::Microphone {
                    // 20 ms frames: one per Opus packet the track carries,
                    // half the wake-ups of 10 ms frames, no added delay (the
                    // host decodes 20 ms at a time either way).
                    let fmt = AudioFormat { frame_ms: 20, ..AudioFormat::mono(rate) };
                    match ctx.audio_stream(&ev.track_sid, fmt) {
                        Ok(s) => {
                            ctx.info(&format!("echo: echoing {} of {}", ev.track_sid, ev.participant_identity));
                            return Some(s);
                        }
                        Err(e) => ctx.warn(&format!("echo: cannot read {}: {e}", ev.track_sid)),
                    }
                }
            }
            recv(data) -> p => {
                if let Ok(p) = p { pong(ctx, &p, first) }
            }
        }
    }
}

fn echo(
    ctx: &JobContext,
    mut source: AudioSource,
    rate: u32,
    data: &Receiver<lk_plugin_api::media::DataPacket>,
    shutdown: &Receiver<lk_plugin_api::sdk::ShutdownInfo>,
) {
    let events = ctx.event_channel(256);
    let mut first = true;
    while let Some(stream) = wait_for_microphone(ctx, &events, data, &mut first, rate, true) {
        let frames = stream.into_channel(64);
        let mut dropped = 0u64;
        let mut frames_seen = 0u64;
        loop {
            select! {
                recv(frames) -> f => match f {
                    Ok(f) => {
                        dropped += f.dropped_frames;
                        frames_seen += 1;
                        if frames_seen.is_multiple_of(500) {
                            ctx.info(&format!("echo: {frames_seen} frames; {} ms queued to send; flags {}", source.queued().as_millis(), f.flags));
                        }
                        match source.capture(&f.data, Duration::from_secs(1)) {
                            Ok(()) => {}
                            Err(MediaError::ShuttingDown) => return,
                            Err(MediaError::Closed) => {
                                // The host closed it (the session was
                                // rejoined): publish again, as the header says.
                                ctx.info("echo: the source was closed by the host; publishing again");
                                match ctx.publish_audio("echo", source.format()) {
                                    Ok(s) => source = s,
                                    Err(e) => {
                                        ctx.warn(&format!("echo: could not publish again: {e}"));
                                        return;
                                    }
                                }
                            }
                            Err(e) => ctx.warn(&format!("echo: capture: {e}")),
                        }
                    }
                    Err(_) => {
                        ctx.info(&format!("echo: the microphone ended (frames dropped: {dropped})"));
                        break;
                    }
                },
                recv(data) -> p => if let Ok(p) = p { pong(ctx, &p, &mut first) },
                recv(events) -> ev => {
                    if let Ok(ev) = ev {
                        if ev.kind == EventKind::ParticipantJoined {
                            frontend::greet(ctx, &ev.participant_identity);
                        }
                    }
                }
                recv(shutdown) -> _ => return,
            }
        }
        if ctx.is_shutting_down() {
            return;
        }
    }
}

fn tone(rate: u32, seconds: f64) -> Vec<i16> {
    let n = (rate as f64 * seconds) as usize;
    (0..n)
        .map(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate as f64).sin()) as i16
        })
        .collect()
}

/// Waits for a subscriber, then speaks 10 beeps (100 ms of 440 Hz, 100 ms
/// of silence each).
fn greet(
    ctx: &JobContext,
    source: &AudioSource,
    rate: u32,
    shutdown: &Receiver<lk_plugin_api::sdk::ShutdownInfo>,
) {
    let waited = Instant::now();
    if let Err(e) = source.wait_subscribed(Duration::from_secs(30)) {
        ctx.warn(&format!("echo: nobody subscribed to the track: {e}"));
        return;
    }
    ctx.info(&format!(
        "echo: first subscriber after {} ms; speaking 10 beeps",
        waited.elapsed().as_millis()
    ));
    let beep = tone(rate, 0.1);
    let gap = vec![0i16; rate as usize / 10];
    for _ in 0..10 {
        for part in [&beep, &gap] {
            if let Err(e) = source.capture(part, Duration::from_secs(2)) {
                ctx.warn(&format!("echo: capture: {e}"));
                return;
            }
        }
    }
    let _ = shutdown.recv();
}

fn barge_in(
    ctx: &JobContext,
    source: &AudioSource,
    rate: u32,
    shutdown: &Receiver<lk_plugin_api::sdk::ShutdownInfo>,
) {
    // Speak only once someone listens (a fixed wait lost the first words
    // of a late listener).
    match source.wait_subscribed(Duration::from_secs(20)) {
        Ok(()) => {}
        Err(MediaError::HostTooOld) => {
            if shutdown.recv_timeout(Duration::from_millis(500)).is_ok() {
                return;
            }
        }
        Err(e) => {
            ctx.warn(&format!("echo: nobody subscribed to the track: {e}"));
            return;
        }
    }
    if let Err(e) = source.capture(&tone(rate, 5.0), Duration::from_secs(1)) {
        ctx.warn(&format!("echo: capture: {e}"));
        return;
    }
    ctx.info(&format!(
        "echo: speaking 5000 ms of 440 Hz at unix_ms {}",
        unix_ms()
    ));
    if shutdown.recv_timeout(Duration::from_secs(1)).is_ok() {
        return;
    }
    let dropped = source.clear();
    ctx.info(&format!(
        "echo: cleared {} ms at unix_ms {} (queued now {} ms)",
        dropped.as_millis(),
        unix_ms(),
        source.queued().as_millis()
    ));
    let _ = shutdown.recv();
}

/// Three threads wait in the three blocking calls; the job then shuts
/// itself down. Each logs how long after shutdown began its call returned.
fn block(ctx: &JobContext, source: AudioSource, rate: u32, exit: i32) -> i32 {
    let events = ctx.event_channel(256);
    let mut first = false;
    let (_tx, no_data) = crossbeam_channel::bounded(1);
    let Some(stream) = wait_for_microphone(ctx, &events, &no_data, &mut first, rate, false) else {
        return exit;
    };
    let began = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let report = |call: &'static str,
                  began: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
                  ctx: JobContext,
                  r: String| {
        let after = began
            .lock()
            .unwrap()
            .map(|b| b.elapsed().as_millis())
            .unwrap_or(0);
        ctx.info(&format!(
            "echo: {call} returned {r} {after} ms after shutdown began"
        ));
    };
    let b = began.clone();
    ctx.on_shutdown(move |_| {
        *b.lock().unwrap() = Some(Instant::now());
    });
    let c = *ctx;
    let b = began.clone();
    let reader = std::thread::spawn(move || loop {
        match stream.read(Duration::from_secs(30)) {
            Ok(_) => {}
            Err(e) => return report("read", b, c, format!("{e:?}")),
        }
    });
    let b = began.clone();
    let capturer = std::thread::spawn(move || {
        let second = vec![0i16; rate as usize];
        loop {
            match source.capture(&second, Duration::from_secs(30)) {
                Ok(()) => {}
                Err(e) => return report("capture", b, c, format!("{e:?}")),
            }
        }
    });
    let b = began.clone();
    let receiver = std::thread::spawn(move || loop {
        if c.next_data(Duration::from_secs(30)) == NextData::ShuttingDown {
            return report("next_data", b, c, "ShuttingDown".into());
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    ctx.info("echo: all three calls are waiting; shutting the job down");
    ctx.shutdown("block test");
    for t in [reader, capturer, receiver] {
        let _ = t.join();
    }
    exit
}

lk_plugin_api::export_plugin!(name: "echo", version: "0.1.0", run: run);
