//! Media and data against a real livekit-server, with the official Python
//! SDK as the peer nobody here wrote (ABI 1.3: audio in/out, data packets,
//! attributes). Run with `cargo xtask itest`; without the server and the
//! venv these tests fail, they never skip.
//!
//! Each test starts its own server on free loopback ports. Limits are
//! generous safety nets; readiness comes from log lines and the scripts'
//! own verdicts, never from sleeps.

use lk_go_tests::{
    dev_token, plugin, python_bin, python_script, wait_output, LiveKitServer, LkGoProcess,
};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// Starts `lk-go job run-script <plugin>` in `room` as `identity` with
/// `metadata`, waiting until `run` was entered.
fn start_agent(
    server: &LiveKitServer,
    plugin_file: &str,
    room: &str,
    identity: &str,
    metadata: &str,
) -> LkGoProcess {
    let p = plugin(plugin_file);
    LkGoProcess::start_ready(
        &[
            "job",
            "run-script",
            p.to_str().unwrap(),
            "--room",
            room,
            "--url",
            &server.url,
            "--identity",
            identity,
            "--metadata",
            metadata,
        ],
        LIMIT,
    )
}

fn python(script: &str, args: &[&str]) -> Child {
    Command::new(python_bin())
        .arg(python_script(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python")
}

/// Runs a Python peer to completion; returns its JSON verdict and exit code.
fn verdict(child: Child) -> (Option<i32>, serde_json::Value) {
    let out = wait_output(child, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON verdict; stdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON verdict");
    (out.status.code(), v)
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Stops a job with SIGINT and checks the documented exit (130).
fn stop(job: LkGoProcess) -> String {
    job.signal(libc::SIGINT);
    let (code, _, log) = job.finish(LIMIT);
    assert_eq!(code, Some(130), "{log}");
    log
}

/// One echo round: the Python SDK publishes 440 Hz and measures what the
/// agent sends back over 2 s after warm-up.
fn echo_round(server: &LiveKitServer, plugin_file: &str, rate: u32) {
    let room = format!("echo-{plugin_file}-{rate}");
    let agent = format!("{plugin_file}-agent");
    let job = start_agent(server, plugin_file, &room, &agent, &format!("rate={rate}"));
    let (code, v) = verdict(python(
        "echo_check.py",
        &[&server.url, &dev_token(&room, "checker"), &agent, "25"],
    ));
    let log = stop(job);
    assert_eq!(code, Some(0), "{v}\n{log}");
    let f = num(&v, "freq_hz");
    let db = num(&v, "level_db");
    eprintln!("{plugin_file} at {rate} Hz: {f:.2} Hz, {db:+.2} dB");
    assert!(
        (f - 440.0).abs() <= 5.0,
        "{plugin_file} at {rate} Hz heard {f} Hz: {v}"
    );
    assert!(
        db.abs() <= 3.0,
        "{plugin_file} at {rate} Hz level {db} dB: {v}"
    );
    assert!(log.contains("audio stream opened"), "{log}");
}

/// The Rust echo reading at 48, 24 and 16 kHz (Opus-native) and 44.1 kHz
/// (decoded at 48 kHz and resampled) sends back 440 ± 5 Hz within ± 3 dB.
#[test]
fn rust_echo_returns_the_tone_at_every_rate() {
    let server = LiveKitServer::start();
    for rate in [48_000, 24_000, 16_000, 44_100] {
        echo_round(&server, "echo", rate);
    }
}

/// The C echo (plugins/c-echo, written against lk_plugin.h alone) does the
/// same at 48 kHz.
#[test]
fn c_echo_returns_the_tone() {
    let server = LiveKitServer::start();
    echo_round(&server, "c_echo", 48_000);
}

/// Barge-in: the plugin queues 5 s of tone and clears after 1 s; the
/// Python listener hears the tone stop within 250 ms of the clear.
#[test]
fn clear_stops_the_tone_within_250_ms() {
    let server = LiveKitServer::start();
    let room = "barge";
    let listener = python(
        "barge_check.py",
        &[&server.url, &dev_token(room, "listener"), "barger", "25"],
    );
    lk_go_tests::wait_for_participant(server.http_port, room, "listener", LIMIT);
    let job = start_agent(&server, "echo", room, "barger", "mode=bargein");
    let (code, v) = verdict(listener);
    let log = stop(job);
    assert_eq!(code, Some(0), "{v}\n{log}");
    let cleared = log
        .lines()
        .find_map(|l| l.split("echo: cleared ").nth(1))
        .unwrap_or_else(|| panic!("no clear logged: {log}"));
    let dropped_ms: u64 = cleared.split(' ').next().unwrap().parse().unwrap();
    let at: f64 = cleared
        .split("unix_ms ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let stop_ms = num(&v, "stop_unix_ms");
    eprintln!(
        "cleared {dropped_ms} ms; tone stopped {:.0} ms after the clear",
        stop_ms - at
    );
    assert!(dropped_ms >= 3_000, "clear should drop ~4 s: {cleared}");
    assert!(
        stop_ms - at <= 250.0,
        "tone stopped {} ms after the clear: {v}",
        stop_ms - at
    );
    assert!(
        stop_ms >= at - 50.0,
        "the tone stopped before the clear: {v} {cleared}"
    );
}

/// 100 numbered reliable packets from Python with topic lk.ping are all
/// answered, in order, with lk.pong, to the sender only (a third
/// participant receives nothing); 15 KiB is accepted, 16 KiB refused.
#[test]
fn data_ping_pong_to_the_sender_only() {
    let server = LiveKitServer::start();
    let (v, log) = ping_round(&server, "echo", "data", "ponger", 100);
    eprintln!("100 pings answered in {} ms", v["elapsed_ms"]);
    assert!(
        log.contains("echo: publish_data 15360 bytes: Ok(())"),
        "{log}"
    );
    assert!(
        log.contains("echo: publish_data 16384 bytes: Err(TooLarge)"),
        "{log}"
    );
}

/// `count` pings from a Python participant to `agent` (running
/// `plugin_file` in `room`), with a third participant listening: every
/// ping is answered, in order, to the sender only. Returns the Python
/// verdict and the agent's log.
fn ping_round(
    server: &LiveKitServer,
    plugin_file: &str,
    room: &str,
    agent: &str,
    count: u32,
) -> (serde_json::Value, String) {
    let job = start_agent(server, plugin_file, room, agent, "");
    let (code, v) = verdict(python(
        "data_check.py",
        &[
            &server.url,
            &dev_token(room, "pinger"),
            agent,
            "--observer-token",
            &dev_token(room, "observer"),
            "--count",
            &count.to_string(),
        ],
    ));
    let log = stop(job);
    assert_eq!(code, Some(0), "{plugin_file}: {v}\n{log}");
    assert_eq!(v["received"], count, "{plugin_file}: {v}");
    assert_eq!(v["in_order"], true, "{plugin_file}: {v}");
    assert_eq!(v["observer_received"], 0, "{plugin_file}: {v}");
    (v, log)
}

/// The Go echo (plugins/go-echo, on the Go SDK in plugin-api/go) passes
/// the same Python-SDK checks as the Rust and C ones: the tone comes back,
/// and pings are answered to the sender only. It runs built with
/// GOEXPERIMENT=cgocheck2 (`go_echo_cgocheck2`): a Go pointer the SDK left
/// in C memory would be a fatal error, not a silent pass.
#[test]
fn go_echo_returns_the_tone_and_answers_pings() {
    let server = LiveKitServer::start();
    echo_round(&server, "go_echo_cgocheck2", 48_000);
    let (_, log) = ping_round(&server, "go_echo_cgocheck2", "godata", "go-ponger", 20);
    assert!(
        log.contains("go-echo: data done, 20 pings answered"),
        "{log}"
    );
}

/// SIGTERM while Go goroutines wait in `Events()`, an audio `Read`,
/// `Data()` and `<-Ctx.Done()`: each returns within 100 ms of shutdown
/// beginning (the time the host records in the shutdown info), and so
/// does `Run`; the job exits 143, lk-go's code for SIGTERM once the
/// plugin returned (75 had it not). The plugin's own code (7) is logged.
#[test]
fn sigterm_ends_blocked_go_goroutines_within_100_ms() {
    let server = LiveKitServer::start();
    let room = "goblock";
    let job = start_agent(&server, "go_echo", room, "go-blocker", "mode=block exit=7");
    let publisher = python(
        "publish_sine.py",
        &[&server.url, &dev_token(room, "talker"), "30"],
    );
    job.wait_line("go-echo: all goroutines are waiting", LIMIT);
    job.signal(libc::SIGTERM);
    let (code, _, log) = job.finish(LIMIT);
    let mut publisher = publisher;
    let _ = publisher.kill();
    let _ = wait_output(publisher, LIMIT);
    assert_eq!(code, Some(143), "{log}");
    let unix_ms = |needle: &str| -> i64 {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}: {log}"));
        line.split("unix_ms ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unparsable: {line}"))
    };
    let began = unix_ms("go-echo: shutdown began at unix_ms");
    assert!(
        log.contains("shutdown began at unix_ms") && log.contains("(signal_sigterm)"),
        "{log}"
    );
    for what in [
        "events returned",
        "read returned",
        "data returned",
        "ctx returned",
        "run returns 7 at",
    ] {
        let after = unix_ms(&format!("go-echo: {what}")) - began;
        eprintln!("{what}: {after} ms after shutdown began");
        assert!(
            (0..=100).contains(&after),
            "{what} {after} ms after shutdown began: {log}"
        );
    }
    // Read(jc.Ctx) ends with the host's answer, or with the cancelled Ctx
    // when it was cancelled between two frames.
    assert!(
        log.contains("read returned (lkgo: the job is shutting down)")
            || log.contains("read returned (context canceled)"),
        "{log}"
    );
}

/// The C echo answers pings too (its data thread is independent of audio).
#[test]
fn c_echo_answers_pings() {
    let server = LiveKitServer::start();
    ping_round(&server, "c_echo", "cdata", "c-ponger", 20);
}

/// The plugin sets lk.agent.state=listening; a Python participant already
/// in the room sees it within 1 s of the call.
#[test]
fn agent_state_attribute_reaches_the_frontend_within_1_s() {
    let server = LiveKitServer::start();
    let room = "attrs";
    let watcher = python(
        "attributes_check.py",
        &[
            &server.url,
            &dev_token(room, "frontend"),
            "stateful",
            "lk.agent.state",
            "listening",
            "25",
        ],
    );
    lk_go_tests::wait_for_participant(server.http_port, room, "frontend", LIMIT);
    let job = start_agent(&server, "echo", room, "stateful", "");
    let (code, v) = verdict(watcher);
    let log = stop(job);
    assert_eq!(code, Some(0), "{v}\n{log}");
    let asked: f64 = log
        .lines()
        .find_map(|l| {
            l.split("setting lk.agent.state=listening at unix_ms ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no set_attributes logged: {log}"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let seen = num(&v, "seen_unix_ms");
    eprintln!(
        "lk.agent.state seen {:.0} ms after set_attributes",
        seen - asked
    );
    assert!(
        seen - asked <= 1000.0,
        "seen {} ms after the call: {v}",
        seen - asked
    );
    assert!(log.contains("confirmed by the server"), "{log}");
}

/// Shutdown while plugin threads wait in audio_stream_read,
/// audio_source_capture and next_data: each returns within 100 ms, and the
/// exit code is the plugin's.
#[test]
fn shutdown_wakes_read_capture_and_next_data_within_100_ms() {
    let server = LiveKitServer::start();
    let room = "block";
    let job = start_agent(&server, "echo", room, "blocker", "mode=block exit=7");
    let publisher = python(
        "publish_sine.py",
        &[&server.url, &dev_token(room, "talker"), "20"],
    );
    let (code, _, log) = job.finish(LIMIT);
    let _ = wait_output(publisher, LIMIT);
    assert_eq!(code, Some(7), "{log}");
    for call in ["read", "capture", "next_data"] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("echo: {call} returned")))
            .unwrap_or_else(|| panic!("{call} never returned: {log}"));
        let ms: u64 = line
            .split(" ms after shutdown began")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unparsable: {line}"));
        eprintln!("{call}: {ms} ms");
        assert!(line.contains("ShuttingDown"), "{line}");
        assert!(ms <= 100, "{call} took {ms} ms: {line}");
    }
}

/// 1000 reliable packets sent by four plugin threads at once all arrive
/// (the Python SDK counts them). The packet's number used to be taken
/// before the send was awaited, so concurrent senders reached the server
/// out of order and it dropped 6-11 % ("received out of order reliable
/// data packet") while every send returned LK_OK.
#[test]
fn reliable_data_from_four_threads_arrives_whole() {
    let server = LiveKitServer::start();
    let room = "flood";
    let job = start_agent(&server, "echo", room, "flooder", "");
    let (code, v) = verdict(python(
        "data_flood_check.py",
        &[
            &server.url,
            &dev_token(room, "counter"),
            "flooder",
            "--count",
            "1000",
            "--threads",
            "4",
        ],
    ));
    let log = stop(job);
    eprintln!("MEASURED flood of 1000 from 4 threads: {v}");
    assert!(
        log.contains("echo: flood sent 1000 of 1000 packets ok"),
        "{log}"
    );
    assert_eq!(code, Some(0), "{v}\n{log}");
    assert_eq!(v["unique"], 1000, "{v}");
}

/// A steady tone that is not 440 Hz comes back at its pitch through the
/// Rust, C and Go echoes, measured over 6 s. The send clock used to pad a
/// half-filled 20 ms tick with zeros (a 10 ms producer running a little
/// behind it: the Go echo came back 0.8 % flat on a quiet machine) and to
/// fall behind wall time after a late tick (the queue then filled, the
/// echo's reader dropped frames unseen, and the pitch rose 2 % on a busy
/// one). Ticks are now held, not padded, and a stalled clock catches up or
/// drops (counted, "the audio send clock stalled").
#[test]
fn echoes_keep_the_pitch_of_a_steady_tone() {
    let server = LiveKitServer::start();
    for plugin_file in ["echo", "c_echo", "go_echo"] {
        let room = format!("pitch-{plugin_file}");
        let agent = format!("{plugin_file}-pitch");
        let job = start_agent(&server, plugin_file, &room, &agent, "");
        let (code, v) = verdict(python(
            "echo_check.py",
            &[
                &server.url,
                &dev_token(&room, "checker"),
                &agent,
                "30",
                "--freq",
                "523.25",
                "--measure-seconds",
                "6",
            ],
        ));
        let log = stop(job);
        assert_eq!(code, Some(0), "{v}\n{log}");
        let f = num(&v, "freq_hz");
        eprintln!("MEASURED {plugin_file} echo of 523.25 Hz: {f:.3} Hz");
        assert!(
            (f - 523.25).abs() <= 523.25 * 0.01,
            "{plugin_file} heard {f} Hz: {v}\n{log}"
        );
        assert!(log.contains("local audio track stopped"), "{log}");
    }
}

/// An agent that speaks as soon as it starts, heard by a listener who
/// joins at once, 0.3 s or 1 s later: the beginning used to be lost for a
/// late listener (7-9 of 10 beeps heard; livekit/agents#3161), since the
/// ABI gave a plugin no way to learn that someone subscribed. The echo's
/// greet mode waits for `audio_source_wait_subscribed` (the server's first
/// TrackSubscribed for its track), so every listener hears all 10.
#[test]
fn a_late_listener_hears_the_first_words() {
    let server = LiveKitServer::start();
    for (i, delay_ms) in [0u64, 300, 1000].into_iter().enumerate() {
        let room = format!("greet-{i}");
        let job = start_agent(&server, "echo", &room, "greeter", "mode=greet");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let (code, v) = verdict(python(
            "beep_count.py",
            &[&server.url, &dev_token(&room, "late"), "greeter", "6"],
        ));
        let log = stop(job);
        eprintln!("MEASURED listener at +{delay_ms} ms: {v}");
        assert_eq!(code, Some(0), "{v}\n{log}");
        assert_eq!(v["beeps"], 10, "listener at +{delay_ms} ms: {v}\n{log}");
        assert!(log.contains("echo: first subscriber after"), "{log}");
    }
}

/// A plugin built against the frozen 1.3 header, in a room where a 1.4
/// plugin would see what 1.3 never defined: its participant publishes a
/// muted microphone, unmutes it and leaves (track_muted/unmuted, a
/// participant job ending with participant_left), and the fixture clears
/// its source while a capture waits (LK_CLEARED for 1.4). It must see only
/// 1.3's events, `room_disconnected`, and LK_TIMEOUT, and exit 0.
#[test]
fn a_1_3_plugin_sees_only_what_its_header_defines() {
    let server = LiveKitServer::start();
    let fixture = plugin("abi_1_3");
    let job = LkGoProcess::start_ready(
        &[
            "job",
            "run-script",
            fixture.to_str().unwrap(),
            "--room",
            "abi13",
            "--url",
            &server.url,
            "--identity",
            "agent13",
            "--participant-identity",
            "pub",
        ],
        LIMIT,
    );
    let (code, v) = verdict(python(
        "publish_muted.py",
        &[&server.url, &dev_token("abi13", "pub"), "agent13", "3.5"],
    ));
    assert_eq!(code, Some(0), "{v}");
    let (code, _, log) = job.finish(LIMIT);
    eprintln!(
        "MEASURED abi-1.3 lines: {}",
        log.lines().filter(|l| l.contains("abi-1.3:")).count()
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("UNDEFINED"), "{log}");
    assert!(log.contains("abi-1.3: capture returned 1 Timeout"), "{log}");
    assert!(
        log.contains("abi-1.3: shutdown reason 4 room_disconnected"),
        "{log}"
    );
    assert!(
        log.contains("reason=participant_left"),
        "the host ended it as participant_left: {log}"
    );
}
