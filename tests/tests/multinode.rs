//! Two livekit-server nodes sharing one Redis (a multi-node LiveKit on one
//! host: `RedisServer`, `LiveKitServer::start_node`), with `lk-go worker`s
//! on each: dispatch across nodes, media across nodes, and a node dying
//! under a worker that knows both URLs. Facts: ../shared notes'
//! multinode-facts (a job request goes to the node whose workers have the
//! most spare capacity, wherever the room is; a participant may connect to
//! any node; a dead node's rooms are re-created on another once it is
//! marked dead). Run with `cargo xtask itest` (it installs redis-server).

use lk_go_tests::*;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn worker(
    urls: &[&LiveKitServer],
    plugin_file: &str,
    agent_name: &str,
    extra: &[&str],
) -> LkGoProcess {
    let p = plugin(plugin_file).display().to_string();
    let url = urls
        .iter()
        .map(|s| s.url.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec![
        "worker",
        p.as_str(),
        "--url",
        url.as_str(),
        "--agent-name",
        agent_name,
    ];
    args.extend_from_slice(extra);
    let w = LkGoProcess::start(
        &args,
        &[
            ("LIVEKIT_API_KEY", "devkey"),
            ("LIVEKIT_API_SECRET", "secret"),
        ],
    );
    w.wait_line("worker_registered", LIMIT);
    w
}

fn started(w: &LkGoProcess, room: &str) -> serde_json::Value {
    let needle = format!("\"room\":\"{room}\"");
    let line = w
        .wait_lines(&format!("the probe in {room}"), 1, LIMIT, |l| {
            l.contains("\"probe\":\"started\"") && l.contains(&needle)
        })
        .remove(0);
    serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap()
}

/// The "job ended" status a node recorded for `job_id`, from whichever
/// node's log has it.
fn job_status(nodes: &[&LiveKitServer], job_id: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        for n in nodes {
            let log = std::fs::read_to_string(&n.log_path).unwrap_or_default();
            if let Some(l) = log
                .lines()
                .find(|l| l.contains("job ended") && l.contains(job_id))
            {
                let v: serde_json::Value =
                    serde_json::from_str(&l[l.find('{').unwrap()..]).unwrap();
                return v["status"].as_str().unwrap_or("").to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no node recorded the end of {job_id}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Workers on both nodes under one agent name; six rooms placed A A B B B
/// A (CreateRoom with node_id), dispatched alternately through both nodes'
/// APIs: every job joins its room, whichever node its worker registered
/// with, and every status is recorded.
#[test]
fn dispatches_through_both_nodes_reach_rooms_on_both_nodes() {
    let redis = RedisServer::start();
    let a = LiveKitServer::start_node(redis.port);
    let b = LiveKitServer::start_node(redis.port);
    let (na, nb) = (a.node_id(), b.node_id());
    assert!(
        na.starts_with("ND_") && nb.starts_with("ND_") && na != nb,
        "{na} {nb}"
    );
    let mut wa = worker(&[&a], "dispatch_probe", "probe", &[]);
    let mut wb = worker(&[&b], "dispatch_probe", "probe", &[]);
    let placement = [&na, &na, &nb, &nb, &nb, &na];
    let mut jobs = Vec::new();
    for (i, node) in placement.iter().enumerate() {
        let room = format!("mn-{i}");
        let api = if i % 2 == 0 { &a } else { &b };
        create_room_on(api.http_port, &room, node);
        create_dispatch(api.http_port, "probe", &room, "exit:0");
        jobs.push(room);
    }
    let mut ran_on = (0, 0);
    for room in &jobs {
        let line = wa.lines().into_iter().chain(wb.lines()).find(|l| {
            l.contains("\"probe\":\"started\"") && l.contains(&format!("\"room\":\"{room}\""))
        });
        let (who, v) = match line {
            Some(l) => {
                let on_a = wa.lines().contains(&l);
                (
                    on_a,
                    serde_json::from_str::<serde_json::Value>(&l[l.find('{').unwrap()..]).unwrap(),
                )
            }
            None => {
                // Not yet: wait on whichever runs it.
                let deadline = Instant::now() + LIMIT;
                loop {
                    let found = [(true, &wa), (false, &wb)]
                        .into_iter()
                        .find_map(|(on_a, w)| {
                            w.lines()
                                .into_iter()
                                .find(|l| {
                                    l.contains("\"probe\":\"started\"")
                                        && l.contains(&format!("\"room\":\"{room}\""))
                                })
                                .map(|l| (on_a, l))
                        });
                    if let Some((on_a, l)) = found {
                        break (
                            on_a,
                            serde_json::from_str::<serde_json::Value>(&l[l.find('{').unwrap()..])
                                .unwrap(),
                        );
                    }
                    assert!(Instant::now() < deadline, "no job started in {room}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        if who {
            ran_on.0 += 1
        } else {
            ran_on.1 += 1
        }
        let job_id = v["job_id"].as_str().unwrap().to_string();
        assert_eq!(job_status(&[&a, &b], &job_id), "JS_SUCCESS", "{room}");
    }
    eprintln!("MEASURED six jobs in rooms A A B B B A ran on workers (A, B) = {ran_on:?}");
    assert_eq!(ran_on.0 + ran_on.1, 6);
    wa.signal(libc::SIGTERM);
    wb.signal(libc::SIGTERM);
    assert_eq!(wa.wait_exit(LIMIT), 0);
    assert_eq!(wb.wait_exit(LIMIT), 0);
}

/// Media across nodes: the room lives on node B, the only worker is on
/// node A; the echo job (joined through A) sends the Python SDK's 440 Hz
/// (connected through B) back at its pitch.
#[test]
fn an_echo_across_nodes_comes_back_at_its_pitch() {
    let redis = RedisServer::start();
    let a = LiveKitServer::start_node(redis.port);
    let b = LiveKitServer::start_node(redis.port);
    let _w = worker(&[&a], "echo", "echo", &[]);
    create_room_on(b.http_port, "across", &b.node_id());
    create_dispatch(b.http_port, "echo", "across", "");
    let out = wait_output(
        std::process::Command::new(python_bin())
            .arg(python_script("echo_check.py"))
            .args([&b.url, &dev_token("across", "speaker"), "*", "25"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(
        text.lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("{}"),
    )
    .unwrap();
    eprintln!("MEASURED cross-node echo: {v}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{v} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = v["freq_hz"].as_f64().unwrap_or(0.0);
    assert!((f - 440.0).abs() <= 5.0, "{v}");
}

/// Node A is killed under a worker that knows both URLs: the worker
/// registers with node B at once (it used to retry node A forever, and a
/// second --url was refused); its job in a room on node B rejoins through
/// B and keeps running; its job in a room on node A rejoins through B once
/// node A is marked dead and the room re-created on B (it used to end with
/// server_unreachable after 1.5 s: node B answered nothing, which counted
/// as no server).
#[test]
fn a_worker_and_its_jobs_fail_over_when_a_node_dies() {
    let redis = RedisServer::start();
    let mut a = LiveKitServer::start_node(redis.port);
    let b = LiveKitServer::start_node(redis.port);
    let w = worker(
        &[&a, &b],
        "dispatch_probe",
        "probe",
        &["--drain-timeout", "1s"],
    );
    assert!(w
        .lines()
        .iter()
        .any(|l| l.contains("worker_registered") && l.contains(&a.url)));
    create_room_on(b.http_port, "on-b", &b.node_id());
    create_dispatch(b.http_port, "probe", "on-b", "hold");
    create_room_on(b.http_port, "on-a", &a.node_id());
    create_dispatch(b.http_port, "probe", "on-a", "hold");
    started(&w, "on-b");
    started(&w, "on-a");
    let killed = Instant::now();
    a.kill();
    w.wait_lines("re-registered with node B", 1, LIMIT, |l| {
        l.contains("worker_registered") && l.contains(&b.url)
    });
    let registered = killed.elapsed();
    w.wait_lines("the job on B back", 1, LIMIT, |l| {
        l.contains("\"event\":\"reconnected\"") && l.contains("\"room\":\"on-b\"")
    });
    let resumed = killed.elapsed();
    eprintln!("MEASURED node A killed -> worker registered with B {registered:?}, job in a room on B back {resumed:?}");
    // The job whose room was on A: node B accepts its rejoin but cannot
    // answer until node A is marked dead and the room re-created on B; an
    // answering node gets the whole reconnect window, so the job rejoins.
    w.wait_lines("the job on A back", 1, Duration::from_secs(40), |l| {
        (l.contains("\"event\":\"reconnected\"") && l.contains("\"room\":\"on-a\""))
            || (l.contains("\"probe\":\"shutdown\"") && l.contains("on-a"))
    });
    let rejoined = killed.elapsed();
    let lines = w.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"event\":\"reconnected\"") && l.contains("\"room\":\"on-a\"")),
        "the job in a room on node A ended instead of rejoining through node B: {}",
        lines.join("\n")
    );
    eprintln!("MEASURED the job in a room on A rejoined through B {rejoined:?} after the kill");
    w.signal(libc::SIGTERM);
    let mut w = w;
    let stopping = Instant::now();
    assert_eq!(
        w.wait_exit(Duration::from_secs(60)),
        0,
        "{}",
        w.lines().join("\n")
    );
    eprintln!(
        "MEASURED worker stopped {:?} after SIGTERM",
        stopping.elapsed()
    );
}
