//! Integration tests against a real livekit-server (each test starts its own
//! on free loopback ports). Run with `cargo xtask itest`, which installs the
//! server; without it these tests fail, they never skip.
//!
//! Every test is bounded by a 30 s safety net.

use lk_go_tests::{error_lines, plugin, run_lk_go, wait_output, LiveKitServer};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn run_in(
    server: &LiveKitServer,
    plugin_file: &str,
    room: &str,
    extra: &[&str],
) -> std::process::Output {
    let p = plugin(plugin_file);
    let mut args = vec![
        "job",
        "run-script",
        p.to_str().unwrap(),
        "--room",
        room,
        "--url",
        &server.url,
    ];
    args.extend_from_slice(extra);
    run_lk_go(&args, &[], LIMIT)
}

/// A running event-logger job whose stdout lines arrive on a channel.
struct LoggerJob {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// The job's log (stderr), line by line as it arrives.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LoggerJob {
    fn start(server: &LiveKitServer, room: &str, extra: &[&str]) -> LoggerJob {
        Self::start_plugin(&server.url, "event_logger", room, extra, &[])
    }

    /// Like `start` with another plugin and URL (e.g. a proxy): its stdout
    /// lines are the events only if it prints them; its log is kept.
    fn start_plugin(
        url: &str,
        plugin_file: &str,
        room: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> LoggerJob {
        let mut child = Command::new(lk_go_tests::lk_go_bin())
            .args(["job", "run-script"])
            .arg(plugin(plugin_file))
            .args(["--room", room, "--url", url])
            .args(extra)
            .env("NO_COLOR", "1")
            // The default log filter unless a person debugging asks for more
            // (LK_GO_TEST_LOG=debug): tests check what users see.
            .env_remove("LK_GO_LOG")
            .envs(std::env::var("LK_GO_TEST_LOG").map(|v| ("LK_GO_LOG", v)))
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lk-go");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Keep stderr (the log) for assertions; draining it also keeps the
        // pipe from filling.
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let job = LoggerJob {
            child,
            lines: rx,
            seen: Vec::new(),
            log,
        };
        // Readiness, not a sleep: run() is entered once the room is joined
        // (signal and media).
        job.expect_log("plugin_run_entered", LIMIT);
        job
    }

    /// Waits for a stdout line containing all of `needles`; returns it.
    fn expect_line(&mut self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                Err(_) => {
                    let log = self.log.lock().unwrap();
                    let tail = &log[log.len().saturating_sub(40)..];
                    panic!(
                        "no line with {needles:?} within {within:?}; saw: {:#?}\nlog tail:\n{}",
                        self.seen,
                        tail.join("\n")
                    )
                }
            }
        }
    }

    /// Asserts that no stdout line contains `needle` for `window`.
    fn expect_no_line(&mut self, needle: &str, window: Duration) {
        let deadline = Instant::now() + window;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(line) = self.lines.recv_timeout(left) {
                assert!(!line.contains(needle), "unexpected {needle:?}: {line}");
                self.seen.push(line);
            }
        }
    }

    /// Waits until the job's log has a line containing `needle`.
    fn expect_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {needle:?} within {within:?}; log: {:#?}",
                    self.log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exit_code(mut self, within: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "lk-go did not exit within {within:?}; saw: {:#?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        (status.code(), self.seen)
    }
}

#[test]
fn noop_job_joins_a_room_and_exits_0() {
    let server = LiveKitServer::start();
    let out = run_in(&server, "noop", "test", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("signal connection established"), "{err}");
    assert!(err.contains("noop plugin running job"), "{err}");
}

#[test]
fn plugin_exit_code_is_the_process_exit_code() {
    let server = LiveKitServer::start();
    let out = run_in(&server, "exit_code", "codes", &["--metadata", "42"]);
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
}

#[test]
fn c_and_go_plugins_run_in_a_real_room() {
    let server = LiveKitServer::start();
    for (p, needle) in [
        ("c_noop", "c-noop plugin running job"),
        ("go_noop", "go-noop plugin running job"),
    ] {
        let out = run_in(&server, p, "polyglot", &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{p}: {err}");
        assert!(err.contains(needle), "{p}: {err}");
    }
}

#[test]
fn participant_joined_and_left_are_seen_then_sigint_cascades() {
    let server = LiveKitServer::start();
    let mut job = LoggerJob::start(&server, "lobby", &[]);
    let visitor = run_in(
        &server,
        "event_logger",
        "lobby",
        &["--identity", "visitor", "--max-duration", "3s"],
    );
    assert_eq!(visitor.status.code(), Some(124), "{}", stderr(&visitor));
    job.expect_line(
        &[
            "\"event\":\"participant_joined\"",
            "\"participant_identity\":\"visitor\"",
        ],
        Duration::from_secs(10),
    );
    job.expect_line(
        &[
            "\"event\":\"participant_left\"",
            "\"participant_identity\":\"visitor\"",
        ],
        Duration::from_secs(10),
    );
    let ok = Command::new("kill")
        .args(["-INT", &job.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let (code, lines) = job.exit_code(LIMIT);
    assert_eq!(code, Some(130), "{lines:#?}");
    let hooks: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"event\":\"shutdown\""))
        .collect();
    assert_eq!(hooks.len(), 1, "{lines:#?}");
    assert!(hooks[0].contains("signal_sigint"));
}

#[test]
fn server_killed_mid_job_shuts_down_within_2s_hooks_once() {
    let mut server = LiveKitServer::start();
    // --reconnect-window 0: end at once; recovery has tests of its own.
    let mut job = LoggerJob::start(&server, "doomed", &["--reconnect-window", "0"]);
    let killed = Instant::now();
    server.kill();
    let hook = job.expect_line(&["\"event\":\"shutdown\""], Duration::from_secs(10));
    let hook_after = killed.elapsed();
    let (code, lines) = job.exit_code(LIMIT);
    let exited_after = killed.elapsed();
    eprintln!(
        "MEASURED server SIGKILL -> shutdown hook ran: {} ms; -> process exited: {} ms",
        hook_after.as_millis(),
        exited_after.as_millis()
    );
    assert!(hook.contains("server_unreachable"), "{hook}");
    assert!(
        hook_after < Duration::from_secs(2),
        "hook ran {hook_after:?} after the kill"
    );
    assert_eq!(code, Some(69), "{lines:#?}");
    let hooks = lines
        .iter()
        .filter(|l| l.contains("\"event\":\"shutdown\""))
        .count();
    assert_eq!(hooks, 1, "hooks ran exactly once: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"event\":\"disconnected\"")),
        "{lines:#?}"
    );
}

#[test]
fn frozen_server_is_detected_by_the_liveness_timeout() {
    let server = LiveKitServer::start();
    let job = LoggerJob::start(
        &server,
        "frozen",
        &["--liveness-timeout", "2s", "--reconnect-window", "0"],
    );
    let pid = server.pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let frozen = Instant::now();
    let (code, lines) = job.exit_code(LIMIT);
    let took = frozen.elapsed();
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    eprintln!(
        "MEASURED server SIGSTOP -> job exited: {} ms (liveness timeout 2 s)",
        took.as_millis()
    );
    assert_eq!(code, Some(69), "{lines:#?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        took >= Duration::from_millis(500),
        "detected before the server could be missed: {took:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"event\":\"shutdown\"") && l.contains("server_unreachable")),
        "{lines:#?}"
    );
}

#[test]
fn healthy_server_is_not_mistaken_for_a_dead_one() {
    // A liveness timeout shorter than the server's 5 s ping interval must not
    // fire while the server is fine: the job runs until its deadline (124).
    let server = LiveKitServer::start();
    let out = run_in(
        &server,
        "event_logger",
        "healthy",
        &["--liveness-timeout", "2s", "--max-duration", "7s"],
    );
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
}

#[test]
fn wrong_api_secret_is_auth_refused_77_and_secret_not_printed() {
    let server = LiveKitServer::start();
    let secret = "definitely-not-the-secret-0123456789";
    let out = run_in(&server, "noop", "auth", &["--api-secret", secret]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(77), "{err}");
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!err.contains(secret), "the secret leaked: {err}");
    assert!(!err.contains("eyJ"), "a token leaked: {err}");

    // The same through the environment, as documented.
    let p = plugin("noop");
    let out = run_lk_go(
        &[
            "job",
            "run-script",
            p.to_str().unwrap(),
            "--room",
            "auth",
            "--url",
            &server.url,
        ],
        &[("LIVEKIT_API_SECRET", secret)],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(!stderr(&out).contains(secret));
}

#[test]
fn sigterm_in_a_real_room_exits_143() {
    let server = LiveKitServer::start();
    let mut job = LoggerJob::start(&server, "term", &[]);
    assert!(Command::new("kill")
        .args(["-TERM", &job.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let hook = job.expect_line(&["\"event\":\"shutdown\""], Duration::from_secs(10));
    assert!(hook.contains("signal_sigterm"), "{hook}");
    let (code, lines) = job.exit_code(LIMIT);
    assert_eq!(code, Some(143), "{lines:#?}");
}

/// Joins `room` in this test process as `identity` through the library (the
/// same LiveKit session the CLI uses) and publishes a silent audio track.
async fn publisher(server: &LiveKitServer, room: &str, identity: &str) -> lk_go::room::Room {
    let r = lk_go_tests::join_dev_room(&server.url, room, identity)
        .await
        .expect("publisher joins");
    let track = r.publish_silent_audio("dummy-mic").await.expect("publish");
    assert!(track.sid.starts_with("TR_"), "{track:?}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_audio_track_reaches_the_job_as_track_subscribed() {
    let server = LiveKitServer::start();
    // LK_GO_LOG=info (what a user sets to see more) must not let the
    // WebRTC stack's setup warnings through either.
    let mut job = LoggerJob::start_plugin(
        &server.url,
        "event_logger",
        "media",
        &[],
        &[("LK_GO_LOG", "info")],
    );
    let room = publisher(&server, "media", "speaker").await;
    let line = tokio::task::block_in_place(|| {
        job.expect_line(
            &[
                "\"event\":\"track_published\"",
                "\"participant_identity\":\"speaker\"",
            ],
            Duration::from_secs(10),
        );
        job.expect_line(
            &[
                "\"event\":\"track_subscribed\"",
                "\"participant_identity\":\"speaker\"",
            ],
            Duration::from_secs(15),
        )
    });
    assert!(line.contains("\"kind\":\"audio\""), "{line}");
    assert!(line.contains("\"source\":\"microphone\""), "{line}");
    // Media really flows: the job's session logs the first RTP packet.
    tokio::task::block_in_place(|| {
        job.expect_log("first RTP packet received", Duration::from_secs(10))
    });
    room.leave().await;
    room.close_tracks().await;
    tokio::task::block_in_place(|| {
        job.expect_line(
            &[
                "\"event\":\"track_unsubscribed\"",
                "\"participant_identity\":\"speaker\"",
            ],
            Duration::from_secs(10),
        )
    });
    let line = tokio::task::block_in_place(|| {
        job.expect_line(
            &[
                "\"event\":\"participant_left\"",
                "\"participant_identity\":\"speaker\"",
            ],
            Duration::from_secs(10),
        )
    });
    assert!(line.contains("speaker"));
    assert!(Command::new("kill")
        .args(["-INT", &job.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let log = job.log.clone();
    let (code, lines) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
    assert_eq!(code, Some(130), "{lines:#?}");
    // A healthy join, a track and its end print no WARN: webrtc-rs's
    // warnings about normal setup (unanswered ICE pings, a DTLS packet
    // before its config, a short SRTP packet) used to.
    let log = log.lock().unwrap();
    let warns: Vec<&String> = log.iter().filter(|l| l.contains(" WARN ")).collect();
    assert!(warns.is_empty(), "{warns:#?}");
}

#[test]
fn python_sdk_publisher_reaches_the_job_with_rtp() {
    use lk_go_tests::{dev_token, python_bin, python_script};
    let server = LiveKitServer::start();
    let mut job = LoggerJob::start(&server, "interop", &[]);
    let python = Command::new(python_bin())
        .arg(python_script("publish_sine.py"))
        .args([&server.url, &dev_token("interop", "python-pub"), "8"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let line = job.expect_line(
        &[
            "\"event\":\"track_subscribed\"",
            "\"participant_identity\":\"python-pub\"",
        ],
        Duration::from_secs(20),
    );
    assert!(line.contains("\"kind\":\"audio\""), "{line}");
    job.expect_log("first RTP packet received", Duration::from_secs(10));
    let py = wait_output(python, LIMIT);
    assert_eq!(
        py.status.code(),
        Some(0),
        "python: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert!(String::from_utf8_lossy(&py.stdout).contains("published TR_"));
    job.expect_line(
        &[
            "\"event\":\"participant_left\"",
            "\"participant_identity\":\"python-pub\"",
        ],
        Duration::from_secs(10),
    );
    assert!(Command::new("kill")
        .args(["-INT", &job.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let (code, lines) = job.exit_code(LIMIT);
    assert_eq!(code, Some(130), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_subscriber_receives_frames_of_our_track() {
    use lk_go_tests::{dev_token, python_bin, python_script};
    let server = LiveKitServer::start();
    let room = publisher(&server, "interop-sub", "lkgo-speaker").await;
    let python = Command::new(python_bin())
        .arg(python_script("subscribe_count.py"))
        .args([
            &server.url,
            &dev_token("interop-sub", "python-sub"),
            "lkgo-speaker",
            "50",
            "20",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let py = tokio::task::block_in_place(|| wait_output(python, LIMIT));
    let out = String::from_utf8_lossy(&py.stdout).into_owned();
    assert_eq!(
        py.status.code(),
        Some(0),
        "python stdout: {out}; stderr: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert!(result["frames"].as_u64().unwrap_or(0) >= 50, "{result}");
    assert!(
        result["track_sid"]
            .as_str()
            .unwrap_or("")
            .starts_with("TR_"),
        "{result}"
    );
    room.leave().await;
    room.close_tracks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_subscribe_selects_which_tracks_arrive() {
    let server = LiveKitServer::start();
    let mut audio_only = LoggerJob::start(&server, "select", &["--auto-subscribe", "audio"]);
    let mut video_only = LoggerJob::start(&server, "select", &["--auto-subscribe", "video"]);
    let mut nothing = LoggerJob::start(&server, "select", &["--auto-subscribe", "none"]);
    let room = publisher(&server, "select", "speaker").await;
    tokio::task::block_in_place(|| {
        for job in [&mut audio_only, &mut video_only, &mut nothing] {
            job.expect_line(
                &["\"event\":\"track_published\"", "speaker"],
                Duration::from_secs(10),
            );
        }
        audio_only.expect_line(
            &["\"event\":\"track_subscribed\"", "speaker"],
            Duration::from_secs(15),
        );
        video_only.expect_no_line("track_subscribed", Duration::from_secs(3));
        nothing.expect_no_line("track_subscribed", Duration::from_millis(500));
    });
    room.leave().await;
    room.close_tracks().await;
    for job in [audio_only, video_only, nothing] {
        assert!(Command::new("kill")
            .args(["-INT", &job.child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let (code, lines) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
        assert_eq!(code, Some(130), "{lines:#?}");
    }
}

/// A token the server cannot verify (signed for an API key it does not
/// know) is refused like a wrong secret. (An expired token is not tested:
/// the server accepts tokens up to 60 s past expiry, go-jose's default leeway.)
#[test]
fn token_for_an_unknown_key_is_auth_refused_77() {
    use livekit_api::access_token::{AccessToken, VideoGrants};
    let server = LiveKitServer::start();
    let token = AccessToken::with_api_key("stranger", "a-secret-this-server-never-heard-of")
        .with_identity("stranger")
        .with_grants(VideoGrants {
            room_join: true,
            room: "locked".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let out = run_in(&server, "noop", "locked", &["--token", &token]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(77), "{err}");
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!err.contains(&token), "the token leaked: {err}");
}

// ---- Server-side endings (issue: every fault ends the job the documented way)

/// The value of `"reason"` in the job's shutdown-hook line.
fn shutdown_line(lines: &[String]) -> String {
    let hooks: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"event\":\"shutdown\""))
        .collect();
    assert_eq!(hooks.len(), 1, "the hook ran exactly once: {lines:#?}");
    hooks[0].clone()
}

fn disconnected_line(lines: &[String]) -> String {
    lines
        .iter()
        .find(|l| l.contains("\"event\":\"disconnected\""))
        .cloned()
        .unwrap_or_else(|| panic!("no disconnected event: {lines:#?}"))
}

/// RoomService DeleteRoom is the room's natural end: the plugin's code (0),
/// reason room_disconnected, the event says room_deleted.
#[test]
fn room_deleted_through_the_api_ends_with_the_plugin_code() {
    let server = LiveKitServer::start();
    let job = LoggerJob::start(&server, "to-delete", &["--identity", "agent-del"]);
    lk_go_tests::wait_for_participant(server.http_port, "to-delete", "agent-del", LIMIT);
    let (status, body) = lk_go_tests::room_service(
        server.http_port,
        "to-delete",
        "DeleteRoom",
        r#"{"room":"to-delete"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (code, lines) = job.exit_code(LIMIT);
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        shutdown_line(&lines).contains("room_disconnected"),
        "{lines:#?}"
    );
    assert!(
        disconnected_line(&lines).contains("room_deleted"),
        "{lines:#?}"
    );
}

/// RoomService RemoveParticipant is the room's natural end for this job.
#[test]
fn participant_removed_through_the_api_ends_with_the_plugin_code() {
    let server = LiveKitServer::start();
    let job = LoggerJob::start(&server, "kick", &["--identity", "agent-kick"]);
    lk_go_tests::wait_for_participant(server.http_port, "kick", "agent-kick", LIMIT);
    let (status, body) = lk_go_tests::room_service(
        server.http_port,
        "kick",
        "RemoveParticipant",
        r#"{"room":"kick","identity":"agent-kick"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (code, lines) = job.exit_code(LIMIT);
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        disconnected_line(&lines).contains("participant_removed"),
        "{lines:#?}"
    );
}

/// A second participant with the job's identity kicks the job: that used to
/// exit 0 (success); it is a configuration conflict, 78.
#[test]
fn duplicate_identity_exits_78() {
    let server = LiveKitServer::start();
    let first = LoggerJob::start(&server, "dup", &["--identity", "same-agent"]);
    let second = LoggerJob::start(&server, "dup", &["--identity", "same-agent"]);
    let log = first.log.clone();
    let (code, lines) = first.exit_code(LIMIT);
    assert_eq!(code, Some(78), "{lines:#?}");
    // The job's failure, and what to do, in one line.
    let log = log.lock().unwrap();
    let failures: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("lk-go: error:"))
        .collect();
    assert_eq!(failures.len(), 1, "{log:#?}");
    assert!(failures[0].contains("--identity"), "{log:#?}");
    // An ABI 1.2 plugin sees the 1.2 reason (1.1 plugins: room_disconnected).
    assert!(
        shutdown_line(&lines).contains("\"reason\":\"duplicate_identity\""),
        "{lines:#?}"
    );
    assert!(
        disconnected_line(&lines).contains("duplicate_identity"),
        "{lines:#?}"
    );
    let _ = Command::new("kill")
        .args(["-INT", &second.child.id().to_string()])
        .status();
    let (code, _) = second.exit_code(LIMIT);
    assert_eq!(code, Some(130));
}

/// When the last human leaves, the server closes the room after its
/// departure_timeout (5 s in xtask/livekit.yaml) with reason ROOM_CLOSED. It
/// used to be reported as room_deleted; it is the room's natural end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_closed_when_emptied_is_reported_as_room_closed() {
    let server = LiveKitServer::start();
    let human = lk_go_tests::join_dev_room_as_user(&server.url, "emptied", "human")
        .await
        .expect("human joins");
    let mut job = LoggerJob::start(&server, "emptied", &[]);
    tokio::task::block_in_place(|| {
        job.expect_line(&["participant_joined", "human"], Duration::from_secs(10))
    });
    human.leave().await;
    human.close_tracks().await;
    let (code, lines) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        disconnected_line(&lines).contains("room_closed"),
        "{lines:#?}"
    );
}

/// livekit-server shutting down (SIGTERM twice) used to end the job with
/// room_disconnected and exit 0: an outage reported as success. It is 69.
#[test]
fn server_shutting_down_is_an_outage_69() {
    let server = LiveKitServer::start();
    let job = LoggerJob::start(&server, "maintenance", &["--reconnect-window", "2s"]);
    let pid = server.pid().to_string();
    for _ in 0..2 {
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, lines) = job.exit_code(LIMIT);
    assert_eq!(code, Some(69), "{lines:#?}");
    assert!(
        shutdown_line(&lines).contains("server_unreachable"),
        "{lines:#?}"
    );
}

/// Alice reloads her page: a second session with the same identity. The
/// server drops the first without a DISCONNECTED update; the job used to
/// keep it as a ghost. Now the old session leaves before the new one joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_identity_rejoin_leaves_no_ghost() {
    let server = LiveKitServer::start();
    let mut job = LoggerJob::start(&server, "reload", &[]);
    let first = publisher(&server, "reload", "alice").await;
    let joined1 = tokio::task::block_in_place(|| {
        job.expect_line(&["participant_joined", "alice"], Duration::from_secs(10))
    });
    tokio::task::block_in_place(|| {
        job.expect_line(&["track_subscribed", "alice"], Duration::from_secs(15))
    });
    let second = lk_go_tests::join_dev_room(&server.url, "reload", "alice")
        .await
        .expect("alice joins again");
    let left = tokio::task::block_in_place(|| {
        job.expect_line(&["participant_left", "alice"], Duration::from_secs(10))
    });
    let sid = |line: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["participant_sid"].as_str().unwrap().to_string()
    };
    assert_eq!(sid(&left), sid(&joined1), "the old session left");
    let joined2 = tokio::task::block_in_place(|| {
        job.expect_line(&["participant_joined", "alice"], Duration::from_secs(10))
    });
    assert_ne!(sid(&joined2), sid(&joined1));
    // The old session's track ended with it, exactly once, before it left.
    let unsub = job
        .seen
        .iter()
        .filter(|l| l.contains("track_unsubscribed") && l.contains(&sid(&joined1)))
        .count();
    assert_eq!(unsub, 1, "{:#?}", job.seen);
    second.leave().await;
    first.close_tracks().await;
    second.close_tracks().await;
    let _ = Command::new("kill")
        .args(["-INT", &job.child.id().to_string()])
        .status();
    let (code, _) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
    assert_eq!(code, Some(130));
}

/// With --token the server's join is the truth: the plugin and the logs see
/// the token's room and identity; --room is not needed.
#[test]
fn token_names_the_room_the_plugin_sees() {
    let server = LiveKitServer::start();
    let token = lk_go_tests::dev_token("token-room", "token-agent");
    let p = plugin("c_noop");
    let out = run_lk_go(
        &[
            "job",
            "run-script",
            p.to_str().unwrap(),
            "--url",
            &server.url,
            "--token",
            &token,
        ],
        &[],
        LIMIT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("in room token-room as token-agent"), "{err}");
}

/// RoomService UpdateSubscriptions off, then on again: exactly one
/// track_unsubscribed per track_subscribed, in order (the subscribed state
/// was keyed by track sid alone, so the old and new media could pair up
/// wrongly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_unsubscribe_and_resubscribe_pair_up() {
    let server = LiveKitServer::start();
    let mut job = LoggerJob::start(&server, "resub", &["--identity", "agent-resub"]);
    let speaker = publisher(&server, "resub", "speaker").await;
    let subscribed = tokio::task::block_in_place(|| {
        job.expect_line(&["track_subscribed", "speaker"], Duration::from_secs(15))
    });
    let v: serde_json::Value = serde_json::from_str(&subscribed).unwrap();
    let track_sid = v["track_sid"].as_str().unwrap().to_string();
    let update = |subscribe: bool| {
        lk_go_tests::room_service(
            server.http_port,
            "resub",
            "UpdateSubscriptions",
            &format!(
                r#"{{"room":"resub","identity":"agent-resub","track_sids":["{track_sid}"],"subscribe":{subscribe}}}"#
            ),
        )
    };
    let (status, body) = update(false);
    assert_eq!(status, 200, "{body}");
    tokio::task::block_in_place(|| {
        job.expect_line(&["track_unsubscribed", &track_sid], Duration::from_secs(15))
    });
    let (status, body) = update(true);
    assert_eq!(status, 200, "{body}");
    tokio::task::block_in_place(|| {
        job.expect_line(&["track_subscribed", &track_sid], Duration::from_secs(15))
    });
    let kinds: Vec<&str> = job
        .seen
        .iter()
        .filter(|l| l.contains(&track_sid) && l.contains("subscribed"))
        .map(|l| {
            if l.contains("track_unsubscribed") {
                "unsubscribed"
            } else {
                "subscribed"
            }
        })
        .collect();
    assert_eq!(
        kinds,
        ["subscribed", "unsubscribed", "subscribed"],
        "{:#?}",
        job.seen
    );
    speaker.leave().await;
    speaker.close_tracks().await;
    tokio::task::block_in_place(|| {
        job.expect_line(&["track_unsubscribed", &track_sid], Duration::from_secs(15))
    });
    let _ = Command::new("kill")
        .args(["-INT", &job.child.id().to_string()])
        .status();
    let (code, lines) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
    assert_eq!(code, Some(130));
    let unsub = lines
        .iter()
        .filter(|l| l.contains("track_unsubscribed") && l.contains(&track_sid))
        .count();
    assert_eq!(unsub, 2, "one per subscription: {lines:#?}");
}

// ---- Resume and reconnect ----------------------------------------------------

/// A network blip: every signal connection through a proxy is cut once. The
/// job used to end at once (69). It resumes the same participant session:
/// reconnecting, then reconnected (resumed), and the room keeps working.
/// A plugin built against ABI 1.1 in the same room never sees the 1.2
/// events and keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_connection_cut_once_is_resumed() {
    let server = LiveKitServer::start();
    let proxy = lk_go_tests::TcpProxy::start(server.http_port);
    let mut job = LoggerJob::start_plugin(
        &proxy.url(),
        "event_logger",
        "blip",
        &["--identity", "agent-blip"],
        &[],
    );
    let old = LoggerJob::start_plugin(&proxy.url(), "abi_1_1", "blip", &[], &[]);
    proxy.cut();
    let reconnecting = tokio::task::block_in_place(|| {
        job.expect_line(&["\"event\":\"reconnecting\""], Duration::from_secs(10))
    });
    assert!(reconnecting.contains("connection_lost"), "{reconnecting}");
    let reconnected = tokio::task::block_in_place(|| {
        job.expect_line(&["\"event\":\"reconnected\""], Duration::from_secs(20))
    });
    assert!(
        reconnected.contains("\"reason\":\"resumed\""),
        "{reconnected}"
    );
    // Still the same participant, and the room still talks to us.
    assert_eq!(
        lk_go_tests::participant_identities(server.http_port, "blip")
            .iter()
            .filter(|i| *i == "agent-blip")
            .count(),
        1
    );
    let visitor = publisher(&server, "blip", "visitor").await;
    tokio::task::block_in_place(|| {
        job.expect_line(&["participant_joined", "visitor"], Duration::from_secs(10));
        job.expect_line(&["track_subscribed", "visitor"], Duration::from_secs(15));
    });
    visitor.leave().await;
    visitor.close_tracks().await;
    for j in [&job, &old] {
        let _ = Command::new("kill")
            .args(["-INT", &j.child.id().to_string()])
            .status();
    }
    let (code, lines) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
    assert_eq!(code, Some(130), "{lines:#?}");
    let log = old.log.lock().unwrap().join("\n");
    let (code, _) = tokio::task::block_in_place(|| old.exit_code(LIMIT));
    assert_eq!(code, Some(130), "{log}");
    assert!(!log.contains("UNDEFINED"), "{log}");
}

/// The server restarts (killed, then started again on the same ports): the
/// old session cannot be resumed, so the job rejoins as a new participant
/// session: reconnected (rejoined), and the room works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_is_rejoined_as_a_new_session() {
    let mut server = LiveKitServer::start();
    let (http, (tcp, udp)) = (server.http_port, server.rtc_ports);
    // A restart takes longer than the default --unreachable-timeout (1.5 s):
    // the operator's knob for riding one out.
    let mut job = LoggerJob::start(
        &server,
        "restart",
        &[
            "--identity",
            "agent-restart",
            "--unreachable-timeout",
            "20s",
        ],
    );
    server.kill();
    tokio::task::block_in_place(|| {
        job.expect_line(&["\"event\":\"reconnecting\""], Duration::from_secs(10))
    });
    let server = LiveKitServer::start_with_ports(http, tcp, udp);
    let reconnected = tokio::task::block_in_place(|| {
        job.expect_line(&["\"event\":\"reconnected\""], Duration::from_secs(25))
    });
    assert!(
        reconnected.contains("\"reason\":\"rejoined\""),
        "{reconnected}"
    );
    lk_go_tests::wait_for_participant(server.http_port, "restart", "agent-restart", LIMIT);
    let visitor = publisher(&server, "restart", "visitor").await;
    tokio::task::block_in_place(|| {
        job.expect_line(&["participant_joined", "visitor"], Duration::from_secs(10));
        job.expect_line(&["track_subscribed", "visitor"], Duration::from_secs(15));
    });
    visitor.leave().await;
    visitor.close_tracks().await;
    let _ = Command::new("kill")
        .args(["-INT", &job.child.id().to_string()])
        .status();
    let (code, lines) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
    assert_eq!(code, Some(130), "{lines:#?}");
}

/// The seed's promise with default flags: the server is killed (its port
/// then refuses connections) and `shutdown(server_unreachable)` begins
/// within 2 s of the loss. The job used to retry a closed port for the
/// whole 20 s reconnect window (measured: 20.0 s, exit 69).
#[test]
fn killed_server_shuts_the_job_down_within_2_s_by_default() {
    let mut server = LiveKitServer::start();
    let job = LoggerJob::start(&server, "killed", &[]);
    let killed = Instant::now();
    server.kill();
    let cascade = job.expect_log("shutdown cascade", Duration::from_secs(25));
    let took = killed.elapsed();
    eprintln!("MEASURED server killed -> shutdown began: {took:?}");
    assert!(cascade.contains("server_unreachable"), "{cascade}");
    assert!(cascade.contains("the server is gone"), "{cascade}");
    assert!(
        took < Duration::from_secs(2),
        "shutdown began after {took:?}"
    );
    let log = job.log.clone();
    let (code, lines) = job.exit_code(LIMIT);
    assert_eq!(code, Some(69), "{lines:#?}");
    let failure = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("lk-go: error:"))
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(failure.len(), 1, "one error line: {failure:#?}");
    assert!(failure[0].contains("--unreachable-timeout"), "{failure:#?}");
}

/// An operator who wants to ride out longer outages raises
/// --unreachable-timeout (within --reconnect-window): the job then tries
/// that long, and ends with server_unreachable (69) saying so.
#[test]
fn server_gone_for_good_ends_after_the_unreachable_timeout_asked_for() {
    let mut server = LiveKitServer::start();
    let mut job = LoggerJob::start(
        &server,
        "gone",
        &["--reconnect-window", "3s", "--unreachable-timeout", "3s"],
    );
    let killed = Instant::now();
    server.kill();
    job.expect_line(&["\"event\":\"reconnecting\""], Duration::from_secs(10));
    let (code, lines) = job.exit_code(LIMIT);
    let took = killed.elapsed();
    assert_eq!(code, Some(69), "{lines:#?}");
    assert!(took >= Duration::from_secs(3), "gave up after {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let disconnected = disconnected_line(&lines);
    assert!(disconnected.contains("connection_lost"), "{disconnected}");
    assert!(
        shutdown_line(&lines).contains("no attempt reached the server within 3 s"),
        "{lines:#?}"
    );
}

/// Dependencies log what they like: tungstenite prints its whole HTTP
/// request at trace level, `Authorization: Bearer <token>` included, and
/// hex-dumps every frame (the server's RefreshToken too). No token (given,
/// minted or refreshed) may reach the log, even at LK_GO_LOG=trace.
#[test]
fn tokens_never_reach_the_log_even_at_trace_level() {
    let server = LiveKitServer::start();
    let token = lk_go_tests::dev_token("traced", "traced-agent");
    let p = plugin("noop");
    for with_token in [true, false] {
        let mut args = vec![
            "job",
            "run-script",
            p.to_str().unwrap(),
            "--url",
            &server.url,
        ];
        if with_token {
            args.extend(["--token", &token]);
        } else {
            args.extend(["--room", "traced", "--api-secret", "a-longer-dev-secret"]);
        }
        let out = run_lk_go(&args, &[("LK_GO_LOG", "trace")], LIMIT);
        let err = stderr(&out);
        assert!(
            err.contains(" TRACE "),
            "trace logging was on: {} bytes",
            err.len()
        );
        assert!(!err.contains(&token), "token in the log");
        assert!(!err.contains("Bearer ey"), "a minted token in the log");
        assert!(!err.contains("a-longer-dev-secret"), "secret in the log");
    }
}

// ---- Mute, participant jobs ----------------------------------------------

/// A microphone published and muted before the job joins: the job used to
/// see track_subscribed only when she unmuted (its first RTP packet came
/// then; measured 4.7 s later), while the Python SDK agent is subscribed at
/// once. The track is subscribed when the server offers it, muted or not:
/// track_published, track_muted and track_subscribed arrive right after
/// the join, track_unmuted when she unmutes, and a reader gets real-time
/// frames flagged silence meanwhile.
#[test]
fn a_muted_microphone_is_subscribed_when_negotiated() {
    use lk_go_tests::{dev_token, python_bin, python_script};
    let server = LiveKitServer::start();
    let mut python = Command::new(python_bin())
        .arg(python_script("publish_muted.py"))
        .args([
            &server.url,
            &dev_token("muted", "alice"),
            "agent-muted",
            "4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut py_out = BufReader::new(python.stdout.take().unwrap()).lines();
    let muted = py_out.next().expect("a line").expect("stdout");
    assert!(muted.contains("\"muted\""), "{muted}");
    let mut job = LoggerJob::start(&server, "muted", &["--identity", "agent-muted"]);
    let joined = Instant::now();
    let published = job.expect_line(
        &["\"event\":\"track_published\"", "alice"],
        Duration::from_secs(10),
    );
    let track_sid = serde_json::from_str::<serde_json::Value>(&published).unwrap()["track_sid"]
        .as_str()
        .unwrap()
        .to_string();
    job.expect_line(
        &["\"event\":\"track_muted\"", &track_sid],
        Duration::from_secs(10),
    );
    job.expect_line(
        &["\"event\":\"track_subscribed\"", &track_sid],
        Duration::from_secs(10),
    );
    let took = joined.elapsed();
    eprintln!("MEASURED muted track subscribed {took:?} after the job started");
    assert!(
        took < Duration::from_secs(3),
        "subscribed only after {took:?} (she unmutes at 4 s)"
    );
    let unmuted_line = job.expect_line(
        &["\"event\":\"track_unmuted\"", &track_sid],
        Duration::from_secs(15),
    );
    assert!(unmuted_line.contains("alice"), "{unmuted_line}");
    let unmuted = py_out.next().expect("a line").expect("stdout");
    assert!(unmuted.contains("\"unmuted\""), "{unmuted}");
    job.expect_log("first RTP packet received", Duration::from_secs(10));
    let _ = python.wait();
    let _ = Command::new("kill")
        .args(["-INT", &job.child.id().to_string()])
        .status();
    let (code, lines) = job.exit_code(LIMIT);
    assert_eq!(code, Some(130), "{lines:#?}");
    // Subscribed once, not again when the media came.
    let subscribed = lines
        .iter()
        .filter(|l| l.contains("\"event\":\"track_subscribed\"") && l.contains(&track_sid))
        .count();
    assert_eq!(subscribed, 1, "{lines:#?}");
}

/// A participant job (`--participant-identity`, as a JT_PARTICIPANT
/// dispatch): the participant leaving 100 ms after joining used to leave
/// her agent in the room (8 s later it was still there). The job ends with
/// its own reason, participant_left, and the plugin's code (0). The plugin
/// is told who the job is for; one that opts out keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_job_ends_when_its_participant_leaves() {
    let server = LiveKitServer::start();
    let mut job = LoggerJob::start(
        &server,
        "linked",
        &[
            "--participant-identity",
            "alice",
            "--agent-name",
            "greeter",
            "--attribute",
            "lang=fr",
        ],
    );
    let info = tokio::task::block_in_place(|| job.expect_line(&["\"event\":\"job\""], LIMIT));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["participant_identity"], "alice", "{info}");
    assert_eq!(v["agent_name"], "greeter", "{info}");
    assert_eq!(v["attributes"]["lang"], "fr", "{info}");
    let alice = publisher(&server, "linked", "alice").await;
    tokio::task::block_in_place(|| job.expect_line(&["participant_joined", "alice"], LIMIT));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let left_at = Instant::now();
    alice.leave().await;
    alice.close_tracks().await;
    let (code, lines) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
    let took = left_at.elapsed();
    eprintln!("MEASURED participant left -> job ended: {took:?}");
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        shutdown_line(&lines).contains("participant_left"),
        "{lines:#?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Opting out: the job keeps running after she leaves.
    let mut job = LoggerJob::start(
        &server,
        "linked2",
        &[
            "--participant-identity",
            "bob",
            "--metadata",
            "keep_on_participant_left",
        ],
    );
    let bob = publisher(&server, "linked2", "bob").await;
    tokio::task::block_in_place(|| job.expect_line(&["participant_joined", "bob"], LIMIT));
    bob.leave().await;
    bob.close_tracks().await;
    tokio::task::block_in_place(|| {
        job.expect_line(&["participant_left", "bob"], LIMIT);
        job.expect_no_line("\"event\":\"shutdown\"", Duration::from_secs(2));
    });
    let _ = Command::new("kill")
        .args(["-INT", &job.child.id().to_string()])
        .status();
    let (code, _) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
    assert_eq!(code, Some(130));
}

/// `cargo xtask livekit` (the dev server on 7880) stops its server and
/// says so on a SIGTERM to it alone, and when its parent dies alone (a
/// signal to `cargo`, which forwards nothing: before, the server kept
/// running with nobody to stop it).
#[test]
fn xtask_livekit_stops_its_server_on_a_signal_to_it_alone() {
    let xtask = lk_go_tests::target_dir().join("debug").join("xtask");
    assert!(
        xtask.is_file(),
        "{} missing: run through `cargo xtask itest`",
        xtask.display()
    );
    let port_free = || std::net::TcpListener::bind(("127.0.0.1", 7880)).is_ok();
    assert!(
        port_free(),
        "port 7880 is taken: this test runs the dev server there"
    );
    let wait_free = || {
        let deadline = Instant::now() + LIMIT;
        while !port_free() {
            assert!(Instant::now() < deadline, "livekit-server still holds 7880");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Reads stdout lines until `needle` (or EOF); returns what was read.
    fn read_until(
        out: impl std::io::Read + Send + 'static,
        needle: &'static str,
    ) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let done = line.contains(needle);
                let _ = tx.send(line);
                if done {
                    break;
                }
            }
        });
        rx
    }
    let expect = |rx: &mpsc::Receiver<String>, needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(e) => panic!("no {needle:?} from xtask livekit ({e})"),
            }
        }
    };

    // A SIGTERM to xtask alone.
    let mut direct = Command::new(&xtask)
        .arg("livekit")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = read_until(direct.stdout.take().unwrap(), "livekit-server stopped");
    expect(&lines, "ready at ws://127.0.0.1:7880");
    unsafe { libc::kill(direct.id() as i32, libc::SIGTERM) };
    let stopped = expect(&lines, "livekit-server stopped");
    eprintln!("MEASURED SIGTERM to xtask alone -> {stopped}");
    assert!(stopped.contains("(SIGTERM)"), "{stopped}");
    assert_eq!(direct.wait().unwrap().code(), Some(0));
    wait_free();

    // Its parent killed alone, as a signal to cargo does.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" livekit & wait")
        .arg(&xtask)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = read_until(parent.stdout.take().unwrap(), "livekit-server stopped");
    expect(&lines, "ready at ws://127.0.0.1:7880");
    let killed = Instant::now();
    parent.kill().unwrap();
    let _ = parent.wait();
    let stopped = expect(&lines, "livekit-server stopped");
    eprintln!(
        "MEASURED parent killed -> {stopped} after {:?}",
        killed.elapsed()
    );
    wait_free();
}
