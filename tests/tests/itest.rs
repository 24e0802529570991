//! Integration tests against a real livekit-server (each test starts its own
//! on free loopback ports). Run with `cargo xtask itest`, which installs the
//! server; without it these tests fail, they never skip.
//!
//! Every test is bounded by a 30 s safety net.

use lk_go_tests::{plugin, run_lk_go, wait_output, LiveKitServer};
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
        let mut child = Command::new(lk_go_tests::lk_go_bin())
            .args(["job", "run-script"])
            .arg(plugin("event_logger"))
            .args(["--room", room, "--url", &server.url])
            .args(extra)
            .env("NO_COLOR", "1")
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
        LoggerJob {
            child,
            lines: rx,
            seen: Vec::new(),
            log,
        }
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
                Err(_) => panic!(
                    "no line with {needles:?} within {within:?}; saw: {:#?}",
                    self.seen
                ),
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
    std::thread::sleep(Duration::from_millis(500));
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
    let mut job = LoggerJob::start(&server, "doomed", &[]);
    // Wait until the job is in the room: a second participant sees it.
    std::thread::sleep(Duration::from_millis(1500));
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
    let job = LoggerJob::start(&server, "frozen", &["--liveness-timeout", "2s"]);
    std::thread::sleep(Duration::from_millis(1500));
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
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("lk-go: error:"))
        .collect();
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
    std::thread::sleep(Duration::from_millis(1000));
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
    let mut job = LoggerJob::start(&server, "media", &[]);
    tokio::time::sleep(Duration::from_millis(800)).await;
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
    let (code, lines) = tokio::task::block_in_place(|| job.exit_code(LIMIT));
    assert_eq!(code, Some(130), "{lines:#?}");
}

#[test]
fn python_sdk_publisher_reaches_the_job_with_rtp() {
    use lk_go_tests::{dev_token, python_bin, python_script};
    let server = LiveKitServer::start();
    let mut job = LoggerJob::start(&server, "interop", &[]);
    std::thread::sleep(Duration::from_millis(800));
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
    tokio::time::sleep(Duration::from_millis(800)).await;
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
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("lk-go: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!err.contains(&token), "the token leaked: {err}");
}
