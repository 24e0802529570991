//! `lk-go worker` against a real livekit-server: dispatch (explicit and
//! automatic), capacity across two workers, a crashing job, termination,
//! drain, and a server restart. Each test starts its own server; jobs run
//! the `dispatch-probe` plugin, whose metadata says what each job does.
//!
//! Readiness is a log line (`worker_registered`, the probe's `started`
//! line, `job status sent`), never a sleep.

use lk_go_tests::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn probe() -> String {
    plugin("dispatch_probe").display().to_string()
}

/// Starts a worker for `agent_name` with extra flags; waits until the
/// server made it routable.
fn start_worker(server: &LiveKitServer, agent_name: &str, extra: &[&str]) -> LkGoProcess {
    let probe = probe();
    let mut args = vec![
        "worker",
        probe.as_str(),
        "--url",
        server.url.as_str(),
        "--agent-name",
        agent_name,
    ];
    args.extend_from_slice(extra);
    let worker = LkGoProcess::start(
        &args,
        &[
            ("LIVEKIT_API_KEY", "devkey"),
            ("LIVEKIT_API_SECRET", "secret"),
        ],
    );
    worker.wait_line("worker_registered", LIMIT);
    worker
}

/// The probe's `started` JSON line for `room`, as the worker forwarded it
/// (`[AJ_…] {...}`).
fn probe_started(worker: &LkGoProcess, room: &str) -> serde_json::Value {
    let needle = format!("\"room\":\"{room}\"");
    let line = worker
        .wait_lines(&format!("the probe starting in {room}"), 1, LIMIT, |l| {
            l.contains("\"probe\":\"started\"") && l.contains(&needle)
        })
        .remove(0);
    let json = &line[line.find('{').expect("a JSON object")..];
    serde_json::from_str(json).expect("the probe's line is JSON")
}

/// Waits until the server's log has a line for `job_id` containing
/// `needle`; returns the `{...}` fields of the first such line.
fn wait_server_log(server: &LiveKitServer, job_id: &str, needle: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let log = std::fs::read_to_string(&server.log_path).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains(needle) && l.contains(job_id))
        {
            let json = &line[line.find('{').expect("fields")..];
            return serde_json::from_str(json).expect("the server's fields are JSON");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never logged {needle:?} for {job_id}; log: {}",
            server.log_path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status livekit-server recorded for a job (its "job ended" line:
/// ListDispatch keeps saying JS_RUNNING in v1.13.5).
fn server_job_status(server: &LiveKitServer, job_id: &str) -> (String, String) {
    let fields = wait_server_log(server, job_id, "job ended");
    (
        fields["status"].as_str().unwrap_or("").to_string(),
        fields["error"].as_str().unwrap_or("").to_string(),
    )
}

/// The job id of the probe's `started` line.
fn job_id_of(started: &serde_json::Value) -> String {
    started["job_id"].as_str().expect("a job id").to_string()
}

/// Count of the worker's lines containing every needle.
fn count_lines(worker: &LkGoProcess, needles: &[&str]) -> usize {
    worker
        .lines()
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[test]
fn explicit_dispatch_runs_the_job_and_the_server_records_success() {
    let server = LiveKitServer::start();
    let mut worker = start_worker(&server, "probe", &["--max-jobs", "2"]);
    create_dispatch(server.http_port, "probe", "explicit-room", "exit:0");
    let started = probe_started(&worker, "explicit-room");
    let job_id = job_id_of(&started);
    assert!(job_id.starts_with("AJ_"), "{started}");
    assert_eq!(started["identity"], format!("agent-{job_id}"), "{started}");
    assert_eq!(started["metadata"], "exit:0", "{started}");
    // The plugin's exit ends the job; the server records what the worker
    // said, before the agent left the room (else: JS_FAILED "agent worker
    // left the room").
    assert_eq!(
        server_job_status(&server, &job_id),
        ("JS_SUCCESS".into(), String::new())
    );
    worker.wait_lines("the job's end", 1, LIMIT, |l| {
        l.contains("job_ended") && l.contains(&job_id) && l.contains("exited 0")
    });
    worker.signal(libc::SIGTERM);
    assert_eq!(worker.wait_exit(LIMIT), 0, "{}", worker.lines().join("\n"));
}

#[test]
fn a_failing_plugin_code_is_recorded_as_failed_with_the_code() {
    let server = LiveKitServer::start();
    let worker = start_worker(&server, "probe", &[]);
    create_dispatch(server.http_port, "probe", "code-room", "exit:3");
    let job_id = job_id_of(&probe_started(&worker, "code-room"));
    let (status, error) = server_job_status(&server, &job_id);
    assert_eq!(status, "JS_FAILED");
    assert_eq!(error, "the plugin's run returned 3 (exit 3)");
}

#[test]
fn automatic_dispatch_starts_a_job_for_a_new_room() {
    let server = LiveKitServer::start();
    let mut worker = start_worker(&server, "", &["--drain-timeout", "0s"]);
    create_room(server.http_port, "auto-room");
    let started = probe_started(&worker, "auto-room");
    assert_eq!(started["metadata"], "", "{started}");
    let job_id = job_id_of(&started);
    wait_for_participant(
        server.http_port,
        "auto-room",
        &format!("agent-{job_id}"),
        LIMIT,
    );
    // Drain with a zero timeout: the job is shut down at once, gracefully.
    worker.signal(libc::SIGTERM);
    worker.wait_lines("the probe's hook", 1, LIMIT, |l| {
        l.contains("\"probe\":\"shutdown\"") && l.contains("drain timeout")
    });
    assert_eq!(worker.wait_exit(LIMIT), 0, "{}", worker.lines().join("\n"));
    let (status, error) = server_job_status(&server, &job_id);
    assert_eq!(
        status, "JS_FAILED",
        "a job cut short by the worker's shutdown did not finish"
    );
    // Its own reason (ABI 1.4), no longer signal_sigterm with a detail.
    assert!(error.contains("worker_stopping"), "{error}");
}

#[test]
fn two_workers_share_ten_jobs_and_max_jobs_is_never_exceeded() {
    let server = LiveKitServer::start();
    let mut small = start_worker(
        &server,
        "shared",
        &["--max-jobs", "2", "--drain-timeout", "0s"],
    );
    let mut large = start_worker(
        &server,
        "shared",
        &["--max-jobs", "20", "--drain-timeout", "0s"],
    );
    for i in 0..10 {
        create_dispatch(server.http_port, "shared", &format!("shared-{i}"), "hold");
    }
    let started = |w: &LkGoProcess| count_lines(w, &["\"probe\":\"started\""]);
    let deadline = std::time::Instant::now() + LIMIT;
    while started(&small) + started(&large) < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "10 jobs did not start; small:\n{}\nlarge:\n{}",
            small.lines().join("\n"),
            large.lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every job holds until shutdown: what started is what runs.
    assert!(
        started(&small) >= 1,
        "the small worker got no job:\n{}",
        small.lines().join("\n")
    );
    assert_eq!(
        started(&small),
        2,
        "--max-jobs 2 exceeded or unused:\n{}",
        small.lines().join("\n")
    );
    assert_eq!(started(&large), 8);
    // The small worker is full: the 11th job goes to the one with room.
    create_dispatch(server.http_port, "shared", "shared-10", "hold");
    probe_started(&large, "shared-10");
    assert_eq!(started(&small), 2);
    for w in [&mut small, &mut large] {
        w.signal(libc::SIGTERM);
    }
    assert_eq!(small.wait_exit(LIMIT), 0);
    assert_eq!(large.wait_exit(LIMIT), 0);
}

#[test]
fn a_panicking_job_is_reported_failed_and_the_others_keep_running() {
    let server = LiveKitServer::start();
    let mut worker = start_worker(
        &server,
        "probe",
        &["--max-jobs", "4", "--drain-timeout", "0s"],
    );
    create_dispatch(server.http_port, "probe", "steady-room", "hold");
    let steady = job_id_of(&probe_started(&worker, "steady-room"));
    create_dispatch(server.http_port, "probe", "panic-room", "panic");
    let crashed = job_id_of(&probe_started(&worker, "panic-room"));
    let (status, error) = server_job_status(&server, &crashed);
    assert_eq!(status, "JS_FAILED");
    assert_eq!(error, "the plugin panicked (exit 70)");
    worker.wait_lines("the crashed job's end", 1, LIMIT, |l| {
        l.contains("job_ended") && l.contains(&crashed) && l.contains("exited 70")
    });
    // The worker and the other job are unaffected, and new jobs run.
    create_dispatch(server.http_port, "probe", "after-room", "exit:0");
    let after = job_id_of(&probe_started(&worker, "after-room"));
    assert_eq!(server_job_status(&server, &after).0, "JS_SUCCESS");
    assert_eq!(
        count_lines(&worker, &["job_ended", &steady]),
        0,
        "the steady job ended:\n{}",
        worker.lines().join("\n")
    );
    assert!(participant_identities(server.http_port, "steady-room")
        .contains(&format!("agent-{steady}")));
    worker.signal(libc::SIGTERM);
    assert_eq!(worker.wait_exit(LIMIT), 0);
}

#[test]
fn deleting_the_dispatch_terminates_the_job_through_its_cascade() {
    let server = LiveKitServer::start();
    let mut worker = start_worker(&server, "probe", &[]);
    let dispatch = create_dispatch(server.http_port, "probe", "term-room", "hold");
    let job_id = job_id_of(&probe_started(&worker, "term-room"));
    // The job process carries no secret: not on its argv (the token came
    // over its pipe), not in its environment.
    let started = worker
        .wait_lines("the job process", 1, LIMIT, |l| {
            l.contains("job_started") && l.contains(&job_id)
        })
        .remove(0);
    let pid: u32 = started
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("the worker logs the job's pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the job process runs");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the job process runs");
    let (cmdline, environ) = (
        String::from_utf8_lossy(&cmdline),
        String::from_utf8_lossy(&environ),
    );
    assert!(
        cmdline.contains("run-assigned") && !cmdline.contains("eyJ") && !cmdline.contains("secret"),
        "{cmdline}"
    );
    assert!(
        !environ.contains("LIVEKIT_API_SECRET") && !environ.contains("eyJ"),
        "the job's environment carries a secret"
    );
    delete_dispatch(server.http_port, &dispatch, "term-room");
    // The plugin's hook ran with the termination as its reason.
    let hook = worker.wait_line("\"probe\":\"shutdown\"", LIMIT);
    // Its own reason (ABI 1.4), no longer room_disconnected with a detail.
    assert!(
        hook.contains("\"reason\":\"job_terminated\"") && hook.contains("terminated the job"),
        "{hook}"
    );
    worker.wait_lines("the job's end", 1, LIMIT, |l| {
        l.contains("job_ended") && l.contains(&job_id) && l.contains("exited 0")
    });
    assert_eq!(
        count_lines(&worker, &["job status sent", &job_id]),
        1,
        "status sent once:\n{}",
        worker.lines().join("\n")
    );
    // DeleteDispatch itself records the job as a success.
    assert_eq!(server_job_status(&server, &job_id).0, "JS_SUCCESS");
    worker.signal(libc::SIGTERM);
    assert_eq!(worker.wait_exit(LIMIT), 0);
}

#[test]
fn sigterm_drains_declines_new_jobs_and_exits_when_jobs_end() {
    let server = LiveKitServer::start();
    let mut worker = start_worker(&server, "probe", &[]);
    let dispatch = create_dispatch(server.http_port, "probe", "drain-room", "hold");
    let job_id = job_id_of(&probe_started(&worker, "drain-room"));
    worker.signal(libc::SIGTERM);
    worker.wait_line("draining", LIMIT);
    // A new dispatch finds no available worker (WS_FULL), or is declined.
    create_dispatch(server.http_port, "probe", "late-room", "exit:0");
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let log = std::fs::read_to_string(&server.log_path).unwrap_or_default();
        // v1.13.5 logs the refusal without the room; only this dispatch
        // for agent "probe" can fail here.
        let refused_by_server = log.lines().any(|l| {
            l.contains("failed to send job request") && l.contains("\"agentName\": \"probe\"")
        });
        if refused_by_server || count_lines(&worker, &["declined job: draining"]) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the late dispatch was neither refused nor declined; worker:\n{}",
            worker.lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count_lines(&worker, &["\"probe\":\"started\""]), 1);
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker must wait for its job"
    );
    // The running job ends on its own (here: its dispatch is deleted); the
    // drained worker then exits 0.
    delete_dispatch(server.http_port, &dispatch, "drain-room");
    worker.wait_lines("the job's end", 1, LIMIT, |l| {
        l.contains("job_ended") && l.contains(&job_id)
    });
    assert_eq!(worker.wait_exit(LIMIT), 0, "{}", worker.lines().join("\n"));
}

#[test]
fn a_second_signal_stops_the_worker_at_once_and_its_jobs_still_run_their_cascade() {
    let server = LiveKitServer::start();
    let mut worker = start_worker(&server, "probe", &[]);
    create_dispatch(server.http_port, "probe", "stop-room", "hold");
    let job_id = job_id_of(&probe_started(&worker, "stop-room"));
    worker.signal(libc::SIGINT);
    worker.wait_line("draining", LIMIT);
    worker.signal(libc::SIGINT);
    assert_eq!(worker.wait_exit(LIMIT), 130);
    // The job process, told to stop (or seeing its pipe close), leaves
    // the room on its own.
    let identity = format!("agent-{job_id}");
    let deadline = std::time::Instant::now() + LIMIT;
    while participant_identities(server.http_port, "stop-room").contains(&identity) {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned job never left the room"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_worker_registers_again_after_a_server_restart() {
    let mut server = LiveKitServer::start();
    let worker = start_worker(&server, "probe", &[]);
    let (http, (tcp, udp)) = (server.http_port, server.rtc_ports);
    server.kill();
    worker.wait_line("lost the LiveKit server", LIMIT);
    let server = LiveKitServer::start_with_ports(http, tcp, udp);
    worker.wait_lines("a second registration", 2, LIMIT, |l| {
        l.contains("worker_registered")
    });
    create_dispatch(server.http_port, "probe", "restart-room", "exit:0");
    let job_id = job_id_of(&probe_started(&worker, "restart-room"));
    assert_eq!(server_job_status(&server, &job_id).0, "JS_SUCCESS");
}

#[test]
fn wrong_credentials_end_the_worker_with_77_and_one_line() {
    let server = LiveKitServer::start();
    let out = run_lk_go(
        &[
            "worker",
            &probe(),
            "--url",
            &server.url,
            "--api-secret",
            "not-the-secret-at-all",
        ],
        &[],
        LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("refused the worker's credentials"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-secret-at-all"),
        "the secret was printed: {err}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_and_job_lines_carry_the_job_id() {
    let server = LiveKitServer::start();
    let worker = start_worker(&server, "probe", &["--log-format", "json"]);
    create_dispatch(server.http_port, "probe", "json-room", "exit:0");
    let job_id = job_id_of(&probe_started(&worker, "json-room"));
    worker.wait_lines("the job's end", 1, LIMIT, |l| {
        l.contains("job_ended") && l.contains(&job_id)
    });
    let mut from_job = 0;
    for line in worker.lines() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if line.contains("plugin_run_entered") || line.contains("\"probe\":\"started\"") {
            assert_eq!(v["job_id"], job_id.as_str(), "{line}");
            from_job += 1;
        }
    }
    assert!(
        from_job >= 2,
        "the job's run line and the probe's line: {from_job}"
    );
}

/// The status must be *processed* by the server before the job leaves the
/// room over its own connection. Acknowledging it once merely queued
/// recorded about 1 job in 6 as `JS_FAILED "agent worker left the room"`
/// (found in review); 12 jobs at once catch that nearly always.
#[test]
fn every_successful_job_of_a_burst_is_recorded_as_a_success() {
    let server = LiveKitServer::start();
    let worker = start_worker(&server, "burst", &["--max-jobs", "12"]);
    for i in 0..12 {
        create_dispatch(server.http_port, "burst", &format!("burst-{i}"), "exit:0");
    }
    let ended = worker.wait_lines("12 job ends", 12, LIMIT, |l| l.contains("job_ended"));
    let mut job_ids = Vec::new();
    for line in &ended {
        let id = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("job_id="))
            .expect("job_id on the job_ended line")
            .to_string();
        job_ids.push(id);
    }
    for id in &job_ids {
        assert_eq!(
            server_job_status(&server, id),
            ("JS_SUCCESS".into(), String::new()),
            "job {id}"
        );
    }
}
