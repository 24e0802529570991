//! What an operator of many workers relies on, against a real
//! livekit-server: the HTTP endpoint (health, `/worker`, `/metrics`) and
//! that no client of it delays dispatch; per-job memory limits (a plugin
//! that leaks on purpose, its sibling untouched); the registration's
//! permissions in the job token; a plugin file replaced under a running
//! worker. Jobs run `dispatch-probe` (metadata says what each does).
//!
//! Readiness is a log line or a server query, never a sleep.

use lk_go_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

fn start_worker(server: &LiveKitServer, plugin_path: &str, extra: &[&str]) -> LkGoProcess {
    let mut args = vec![
        "worker",
        plugin_path,
        "--url",
        server.url.as_str(),
        "--agent-name",
        "fleet",
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

/// The endpoint's address from the worker's `http_listening` line.
fn endpoint(w: &LkGoProcess) -> String {
    let line = w.wait_line("http_listening", LIMIT);
    let at = line.find("addr=").expect("addr field") + 5;
    line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .to_string()
}

/// `GET path` → (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: lk-go\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn worker_json(addr: &str) -> serde_json::Value {
    let (status, body) = get(addr, "/worker");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("/worker is JSON")
}

/// The value of a metric line `name{labels} value` (labels as written).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn probe_started(w: &LkGoProcess, room: &str) -> serde_json::Value {
    let needle = format!("\"room\":\"{room}\"");
    let line = w
        .wait_lines(&format!("the probe in {room}"), 1, LIMIT, |l| {
            l.contains("\"probe\":\"started\"") && l.contains(&needle)
        })
        .remove(0);
    serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap()
}

fn server_job_ended(server: &LiveKitServer, job_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let log = std::fs::read_to_string(&server.log_path).unwrap_or_default();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("job ended") && l.contains(job_id))
        {
            return serde_json::from_str(&l[l.find('{').unwrap()..]).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the server never recorded the end of {job_id}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Health follows the worker (registered → 200, draining → 503); /worker
/// shows the running job with its pid and RSS; /metrics counts offers,
/// starts and dispatch → joined; answers stay fast under a stream of
/// requests; idle connections holding every slot delay neither dispatch
/// nor, once they time out, the endpoint.
#[test]
fn the_endpoint_tells_health_state_and_metrics_and_no_client_delays_dispatch() {
    let server = LiveKitServer::start();
    let probe = plugin("dispatch_probe").display().to_string();
    let mut w = start_worker(
        &server,
        &probe,
        &["--http", "127.0.0.1:0", "--max-jobs", "4"],
    );
    let addr = endpoint(&w);
    let (status, body) = get(&addr, "/");
    assert_eq!((status, body.as_str()), (200, "ok: registered\n"));

    create_dispatch(server.http_port, "fleet", "ep-1", "hold");
    let job_id = probe_started(&w, "ep-1")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The first usage sample lands within a second of the start.
    let deadline = Instant::now() + LIMIT;
    let job = loop {
        let v = worker_json(&addr);
        let j = v["jobs"].as_array().and_then(|js| js.first()).cloned();
        if let Some(j) = j.filter(|j| j["rss_bytes"].as_u64().unwrap_or(0) > 0) {
            assert_eq!(v["agent_name"], "fleet");
            assert_eq!(v["state"], "registered");
            assert!(v["worker_id"].as_str().unwrap().starts_with("AW_"), "{v}");
            assert_eq!(v["max_jobs"], 4);
            assert_eq!(v["plugin"]["state"], "ok");
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "no job with a usage sample in /worker: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(job["job_id"], job_id.as_str());
    assert_eq!(job["room"], "ep-1");
    assert!(job["pid"].as_u64().unwrap() > 0);
    eprintln!(
        "MEASURED a held probe job: RSS {} MB",
        job["rss_bytes"].as_u64().unwrap() / 1_000_000
    );

    let (status, text) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, "lk_go_worker_jobs_started_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "lk_go_worker_job_offers_total{decision=\"accepted\",reason=\"\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "lk_go_worker_dispatch_to_joined_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "lk_go_worker_running_jobs"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "lk_go_worker_registered"),
        Some(1.0),
        "{text}"
    );
    let joined_s = metric(&text, "lk_go_worker_dispatch_to_joined_seconds_sum").unwrap();
    eprintln!(
        "MEASURED dispatch (offer) -> joined: {:.0} ms",
        joined_s * 1000.0
    );
    assert!(text.contains(&format!(
        "lk_go_job_resident_memory_bytes{{job_id=\"{job_id}\"}}"
    )));

    // Latency under a stream of requests.
    let mut took: Vec<Duration> = (0..300)
        .map(|i| {
            let t = Instant::now();
            let path = ["/", "/worker", "/metrics"][i % 3];
            assert_eq!(get(&addr, path).0, 200);
            t.elapsed()
        })
        .collect();
    took.sort();
    eprintln!(
        "MEASURED endpoint latency over 300 requests: p50 {:?}, p95 {:?}, max {:?}",
        percentile(&took, 0.5),
        percentile(&took, 0.95),
        took[took.len() - 1]
    );

    // Hostile clients: connections that never send a request, more than
    // the endpoint serves at once. A dispatch meanwhile is not delayed.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let t = Instant::now();
    create_dispatch(server.http_port, "fleet", "ep-2", "hold");
    probe_started(&w, "ep-2");
    let dispatched = t.elapsed();
    eprintln!(
        "MEASURED dispatch -> probe started with 64 idle endpoint connections: {dispatched:?}"
    );
    // Once they time out (headers within 5 s), the endpoint answers again.
    let t = Instant::now();
    let answered = loop {
        if let Ok(mut s) = TcpStream::connect(&addr) {
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 64];
            if matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 200")) {
                break t.elapsed();
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the endpoint never answered again"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("MEASURED the endpoint answered again {answered:?} after 64 idle connections");
    drop(idle);

    w.signal(libc::SIGTERM);
    let deadline = Instant::now() + LIMIT;
    loop {
        let (status, body) = get(&addr, "/");
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert!(Instant::now() < deadline, "health never said draining");
        std::thread::sleep(Duration::from_millis(50));
    }
    w.signal(libc::SIGTERM);
    w.wait_exit(LIMIT);
}

/// A job that leaks 5 MiB every 100 ms is warned about once, then shut
/// down over `--job-memory-limit` with reason memory_limit: the server
/// records JS_FAILED, the process exits 85; its sibling keeps running.
#[test]
fn a_job_over_its_memory_limit_is_shut_down_and_its_sibling_keeps_running() {
    let server = LiveKitServer::start();
    let probe = plugin("dispatch_probe").display().to_string();
    let mut w = start_worker(
        &server,
        &probe,
        &[
            "--job-memory-warn",
            "150",
            "--job-memory-limit",
            "300",
            "--http",
            "0",
        ],
    );
    let addr = endpoint(&w);
    create_dispatch(server.http_port, "fleet", "steady", "hold");
    let steady = probe_started(&w, "steady")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    create_dispatch(server.http_port, "fleet", "leaky", "leak:5");
    let leaky = probe_started(&w, "leaky")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let warned = w.wait_lines("the memory warning", 1, LIMIT, |l| {
        l.contains("job_memory_warn") && l.contains(&leaky)
    });
    let warned_at = Instant::now();
    let limit_line = w
        .wait_lines("the memory limit", 1, LIMIT, |l| {
            l.contains("job_memory_limit") && l.contains(&leaky)
        })
        .remove(0);
    let limited_at = Instant::now();
    eprintln!(
        "MEASURED warn -> limit {:?}: {}",
        limited_at - warned_at,
        limit_line
    );
    let ended = server_job_ended(&server, &leaky);
    let shut = limited_at.elapsed();
    assert_eq!(ended["status"], "JS_FAILED", "{ended}");
    let error = ended["error"].as_str().unwrap_or("");
    assert!(
        error.contains("memory_limit") && error.contains("exit 85"),
        "{error}"
    );
    w.wait_lines("the leaky job's end", 1, LIMIT, |l| {
        l.contains("job_ended") && l.contains(&leaky) && l.contains("exited 85")
    });
    eprintln!("MEASURED limit line -> status JS_FAILED at the server {shut:?}; error: {error}");
    assert_eq!(warned.len(), 1);
    let lines = w.lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("job_memory_warn") && l.contains(&leaky))
            .count(),
        1,
        "one warning per job"
    );
    // The sibling: untouched, still listed, never warned about.
    assert!(!lines
        .iter()
        .any(|l| l.contains(&steady) && l.contains("\"probe\":\"shutdown\"")));
    assert!(!lines
        .iter()
        .any(|l| l.contains("job_memory") && l.contains(&steady)));
    let v = worker_json(&addr);
    let ids: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["job_id"].as_str())
        .collect();
    assert_eq!(ids, [steady.as_str()], "{v}");
    let (_, text) = get(&addr, "/metrics");
    assert_eq!(
        metric(&text, "lk_go_worker_memory_limit_shutdowns_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "lk_go_worker_jobs_ended_total{status=\"JS_FAILED\",exit_code=\"85\"}"
        ),
        Some(1.0),
        "{text}"
    );
    w.signal(libc::SIGTERM);
    w.wait_line("draining", LIMIT);
    w.signal(libc::SIGTERM);
    w.wait_exit(LIMIT);
}

/// `--no-publish --hidden`: the server writes the registration's
/// permissions into the job token; the agent is listed with them and with
/// `lk.agent.name`.
#[test]
fn the_worker_s_permissions_reach_its_jobs() {
    let server = LiveKitServer::start();
    let probe = plugin("dispatch_probe").display().to_string();
    let w = start_worker(&server, &probe, &["--no-publish", "--hidden"]);
    create_dispatch(server.http_port, "fleet", "perm", "hold");
    let identity = probe_started(&w, "perm")["identity"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + LIMIT;
    let agent = loop {
        let (status, body) = room_service(
            server.http_port,
            "perm",
            "ListParticipants",
            "{\"room\":\"perm\"}",
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(p) = v["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["identity"] == identity.as_str()))
        {
            break p.clone();
        }
        assert!(Instant::now() < deadline, "the agent never listed: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let perm = &agent["permission"];
    eprintln!("MEASURED the agent's permission as the server lists it: {perm}");
    assert!(!perm["can_publish"].as_bool().unwrap_or(false), "{agent}");
    assert_eq!(perm["can_subscribe"], true, "{agent}");
    assert_eq!(perm["can_publish_data"], true, "{agent}");
    assert_eq!(perm["hidden"], true, "{agent}");
    assert_eq!(agent["attributes"]["lk.agent.name"], "fleet", "{agent}");
}

/// A deploy renames builds over the plugin under a running worker: a
/// broken file makes the worker full (one line, /worker says why) and
/// nothing is dispatched to it; a good new build is validated and new
/// jobs run it while the job started before keeps its own.
#[test]
fn a_plugin_replaced_under_the_worker_is_validated_before_jobs_load_it() {
    let server = LiveKitServer::start();
    let dir = target_dir()
        .join("tmp")
        .join(format!("swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("agent.so");
    let swap_in = |from: &std::path::Path| {
        let next = dir.join("next.so");
        std::fs::copy(from, &next).unwrap();
        std::fs::rename(&next, &live).unwrap();
    };
    swap_in(&plugin("dispatch_probe"));
    let live_s = live.display().to_string();
    let w = start_worker(&server, &live_s, &["--http", "0"]);
    let addr = endpoint(&w);
    create_dispatch(server.http_port, "fleet", "before", "hold");
    probe_started(&w, "before");

    swap_in(&workspace_root().join("tests/fixtures/not-a-plugin.txt"));
    let t = Instant::now();
    let line = w.wait_line("plugin_invalid", LIMIT);
    eprintln!(
        "MEASURED broken build renamed in -> reported invalid {:?}: {line}",
        t.elapsed()
    );
    let v = worker_json(&addr);
    assert_eq!(v["plugin"]["state"], "invalid", "{v}");
    assert_eq!(v["full"], true, "{v}");
    assert!(
        v["plugin"]["error"].as_str().unwrap().contains("exit 65"),
        "{v}"
    );
    // A full worker is offered nothing: the server's worker view says so.
    assert_eq!(
        w.lines()
            .iter()
            .filter(|l| l.contains("plugin_invalid"))
            .count(),
        1,
        "one line until a good file is back"
    );

    swap_in(&plugin("event_logger"));
    let t = Instant::now();
    w.wait_line("plugin_validated", LIMIT);
    eprintln!(
        "MEASURED good build renamed in -> validated {:?}",
        t.elapsed()
    );
    // The line comes after the status went out: the endpoint already
    // says the worker takes jobs (a dispatch made while the server thinks
    // the worker full is dropped for good, which is what CI once saw).
    let v = worker_json(&addr);
    assert_eq!(v["plugin"]["state"], "ok", "{v}");
    assert_eq!(v["full"], false, "{v}");
    create_dispatch(server.http_port, "fleet", "after", "");
    // event-logger prints its dispatch info line: the new build runs.
    w.wait_lines("the new build's job", 1, LIMIT, |l| {
        l.contains("\"event\":\"job\"") && l.contains("\"agent_name\":\"fleet\"")
    });
    // The job started before still runs the old build (the probe).
    let v = worker_json(&addr);
    let rooms: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["room"].as_str())
        .collect();
    assert!(rooms.contains(&"before"), "{v}");
    assert!(!w
        .lines()
        .iter()
        .any(|l| l.contains("\"probe\":\"shutdown\"")));
    let _ = std::fs::remove_dir_all(&dir);
}
