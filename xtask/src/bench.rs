//! `cargo xtask bench`: lk-go side by side with the official LiveKit Python
//! SDK and a Python LiveKit Agents job, in one run, on one machine and server.
//!
//! Owns: the five session scenarios (job start, publish → track_subscribed,
//! server killed → noticed, peak RSS, CPU; the echo scenarios 6-7 and the
//! scale run live in `echo_bench`), running each contender in alternation
//! (A B C A B C …) or at the same time in the same room where the scenario
//! compares reactions to one event, and the report: a table of medians, p95
//! and lk-go / anchor ratios on stdout, `target/bench/results.json` and a bar
//! chart `target/bench/results.svg`. Benchmarks, not tests: no thresholds.

use crate::bench_kit::*;
use anyhow::{bail, Result};
use lk_go_tests::{dev_token, target_dir, workspace_root, LiveKitServer};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The agents version the Python agent contender runs (its own venv: it pins
/// an older `livekit` than the SDK contender).
pub const AGENTS_PIN: &str = "livekit-agents==1.8.9";

pub struct Settings {
    pub runs: usize,
    pub steady_seconds: u64,
    pub memory_seconds: u64,
    /// Only the echo scenarios (6, 7, scale): `--echo-only`.
    pub echo_only: bool,
    /// Concurrent echo job counts of the scale run (`--scale 1,10,50,100`).
    pub scale_counts: Vec<usize>,
    /// Only the worker scenarios (W1-W5): `--worker-only`.
    pub worker_only: bool,
    /// Concurrent dispatched job counts of W5 (`--worker-scale 10,50`).
    pub worker_scale_counts: Vec<usize>,
    /// Only the frontend scenarios (F1-F4): `--frontend-only`.
    pub frontend_only: bool,
}

fn python_peer(tools: &Tools, url: &str, room: &str, identity: &str) -> Command {
    let mut c = Command::new(&tools.python_sdk);
    c.arg(workspace_root().join("xtask/bench/py_sdk_peer.py"))
        .args([url, &dev_token(room, identity)]);
    c
}

fn agent_job(tools: &Tools, url: &str, room: &str) -> Command {
    let mut c = Command::new(&tools.python_agents);
    c.arg(workspace_root().join("xtask/bench/agent_job.py"))
        .args(["connect", "--room", room])
        .env("LIVEKIT_URL", url)
        .env("LIVEKIT_API_KEY", "devkey")
        .env("LIVEKIT_API_SECRET", "secret");
    c
}

async fn publisher(url: &str, room: &str, identity: &str) -> Result<lk_go::room::Room> {
    Ok(lk_go_tests::join_dev_room(url, room, identity).await?)
}

/// Scenario 1: exec → plugin run entered / Room.connect returned / agent
/// entrypoint connected. Contenders alternate A B C A B C …
fn job_start(tools: &Tools, server: &LiveKitServer, s: &Settings, r: &mut Results) -> Result<()> {
    const SC: &str = "1 job start (exec -> media connected, ms)";
    const SC_SIGNAL: &str = "1b lk-go exec -> signal joined (ms)";
    for i in 0..s.runs {
        let room = format!("start-{i}");
        // lk-go
        let t0 = now_us();
        let mut p = Proc::spawn(&mut lk_go_job(tools, "libnoop.so", &room, &server.url))?;
        // Two instants: the JoinResponse (signal joined), and `run`
        // entered, which comes after the subscriber connection is up (ICE +
        // DTLS): the instant Python's Room.connect returns at, compared.
        let signal = p
            .wait_for("signal_joined", READY)
            .and_then(|(_, l)| field(&l, "unix_us"))
            .map(|t| (t.saturating_sub(t0)) as f64 / 1000.0);
        r.add(SC_SIGNAL, "ms", "lk-go", signal);
        let v = p
            .wait_for("plugin_run_entered", READY)
            .and_then(|(_, l)| field(&l, "unix_us"))
            .map(|t| (t.saturating_sub(t0)) as f64 / 1000.0);
        r.add(SC, "ms", "lk-go", v);
        p.interrupt_and_wait();
        // Python SDK
        let t0 = now_us();
        let mut p = Proc::spawn(&mut python_peer(tools, &server.url, &room, "py-sdk"))?;
        let v = p
            .wait_for("connected ", READY)
            .and_then(|(_, l)| field(&l, "connected"))
            .map(|t| (t.saturating_sub(t0)) as f64 / 1000.0);
        r.add(SC, "ms", "python-sdk", v);
        p.kill();
        // Python agent
        let t0 = now_us();
        let mut p = Proc::spawn(&mut agent_job(tools, &server.url, &room))?;
        let v = p
            .wait_for("LKBENCH connected", Duration::from_secs(60))
            .and_then(|(_, l)| field(&l, "LKBENCH connected"))
            .map(|t| (t.saturating_sub(t0)) as f64 / 1000.0);
        r.add(SC, "ms", "python-agents", v);
        p.kill();
        eprint!(".");
    }
    eprintln!();
    Ok(())
}

/// Scenario 2: a third participant publishes; time to each contender's
/// track_subscribed, both in the room at once.
fn publish_to_subscribed(
    tools: &Tools,
    server: &LiveKitServer,
    s: &Settings,
    r: &mut Results,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    const SC: &str = "2 publish -> track_subscribed (ms)";
    for i in 0..s.runs {
        let room = format!("pub-{i}");
        // --reconnect-window 0: end the job as soon as the server is gone
        // (with the default 20 s window lk-go keeps trying to resume, as the
        // Python SDK does, and this would measure the window instead).
        let mut lk = Proc::spawn(
            lk_go_job(tools, "libevent_logger.so", &room, &server.url)
                .args(["--reconnect-window", "0"]),
        )?;
        let mut py = Proc::spawn(&mut python_peer(tools, &server.url, &room, "py-sdk"))?;
        if lk.wait_for("plugin_run_entered", READY).is_none()
            || py.wait_for("connected ", READY).is_none()
        {
            bail!("contenders did not join room {room}");
        }
        let publishing = rt.block_on(publisher(&server.url, &room, "speaker"))?;
        let t0 = Instant::now();
        rt.block_on(publishing.publish_silent_audio("bench-mic"))?;
        let lk_at = lk
            .wait_for("\"event\":\"track_subscribed\"", READY)
            .map(|(at, _)| at);
        let py_at = py.wait_for("track_subscribed", READY).map(|(at, _)| at);
        r.add(
            SC,
            "ms",
            "lk-go",
            lk_at.map(|at| at.duration_since(t0).as_secs_f64() * 1000.0),
        );
        r.add(
            SC,
            "ms",
            "python-sdk",
            py_at.map(|at| at.duration_since(t0).as_secs_f64() * 1000.0),
        );
        rt.block_on(async {
            publishing.leave().await;
            publishing.close_tracks().await;
        });
        lk.interrupt_and_wait();
        py.kill();
        eprint!(".");
    }
    eprintln!();
    Ok(())
}

/// Scenario 3: SIGKILL the server; time to lk-go's shutdown hook and to the
/// Python SDK's `disconnected`, both in the room at once.
fn server_killed(tools: &Tools, s: &Settings, r: &mut Results) -> Result<()> {
    const SC: &str = "3 server killed -> noticed (ms)";
    for i in 0..s.runs {
        let mut server = LiveKitServer::start();
        let room = format!("kill-{i}");
        // --reconnect-window 0: end the job as soon as the server is gone
        // (with the default 20 s window lk-go keeps trying to resume, as the
        // Python SDK does, and this would measure the window instead).
        let mut lk = Proc::spawn(
            lk_go_job(tools, "libevent_logger.so", &room, &server.url)
                .args(["--reconnect-window", "0"]),
        )?;
        let mut py = Proc::spawn(&mut python_peer(tools, &server.url, &room, "py-sdk"))?;
        if lk.wait_for("plugin_run_entered", READY).is_none()
            || py.wait_for("connected ", READY).is_none()
        {
            bail!("contenders did not join room {room}");
        }
        // Let both peer connections come up, as in a real job.
        std::thread::sleep(Duration::from_millis(1500));
        let t0 = Instant::now();
        server.kill();
        let lk_at = lk
            .wait_for("\"event\":\"shutdown\"", Duration::from_secs(20))
            .map(|(at, _)| at);
        // The Python SDK retries the signal connection before it reports
        // `disconnected` (about 23 s here), so its window is longer.
        let py_at = py
            .wait_for("disconnected", Duration::from_secs(40))
            .map(|(at, _)| at);
        r.add(
            SC,
            "ms",
            "lk-go",
            lk_at.map(|at| at.duration_since(t0).as_secs_f64() * 1000.0),
        );
        r.add(
            SC,
            "ms",
            "python-sdk",
            py_at.map(|at| at.duration_since(t0).as_secs_f64() * 1000.0),
        );
        lk.kill();
        py.kill();
        eprint!(".");
    }
    eprintln!();
    Ok(())
}

/// Scenarios 4 and 5: all three contenders in one room with one subscribed
/// audio track; peak RSS after `memory_seconds`, CPU over `steady_seconds`.
fn steady_state(
    tools: &Tools,
    server: &LiveKitServer,
    s: &Settings,
    r: &mut Results,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    const MEM: &str = "4 peak RSS, one subscribed track (MiB)";
    const CPU: &str = "5 CPU user+sys while receiving (s)";
    for i in 0..s.runs {
        let room = format!("steady-{i}");
        let publishing = rt.block_on(publisher(&server.url, &room, "speaker"))?;
        rt.block_on(publishing.publish_silent_audio("bench-mic"))?;
        let mut lk = Proc::spawn(&mut lk_go_job(
            tools,
            "libevent_logger.so",
            &room,
            &server.url,
        ))?;
        let mut py = Proc::spawn(&mut python_peer(tools, &server.url, &room, "py-sdk"))?;
        let mut ag = Proc::spawn(&mut agent_job(tools, &server.url, &room))?;
        let lk_pid = lk.pid();
        let py_pid = py.pid();
        let ag_pid = ag
            .wait_for("LKBENCH connected", Duration::from_secs(60))
            .and_then(|(_, l)| {
                l.split_whitespace()
                    .last()
                    .and_then(|p| p.parse::<u32>().ok())
            });
        let lk_ok = lk
            .wait_for("\"event\":\"track_subscribed\"", READY)
            .is_some();
        let py_ok = py.wait_for("track_subscribed", READY).is_some();
        let ag_ok = ag.wait_for("LKBENCH track_subscribed", READY).is_some();
        let cpu0 = (
            cpu_seconds(lk_pid),
            cpu_seconds(py_pid),
            ag_pid.and_then(cpu_seconds),
        );
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(s.memory_seconds));
        let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
        r.add(
            MEM,
            "MiB",
            "lk-go",
            if lk_ok {
                mib(peak_rss_kib(lk_pid))
            } else {
                None
            },
        );
        r.add(
            MEM,
            "MiB",
            "python-sdk",
            if py_ok {
                mib(peak_rss_kib(py_pid))
            } else {
                None
            },
        );
        r.add(
            MEM,
            "MiB",
            "python-agents",
            if ag_ok {
                mib(ag_pid.and_then(peak_rss_kib))
            } else {
                None
            },
        );
        let rest = Duration::from_secs(s.steady_seconds).saturating_sub(started.elapsed());
        std::thread::sleep(rest);
        let cpu = |before: Option<f64>, pid: Option<u32>, ok: bool| -> Option<f64> {
            let after = pid.and_then(cpu_seconds)?;
            if ok {
                Some(after - before?)
            } else {
                None
            }
        };
        r.add(CPU, "s", "lk-go", cpu(cpu0.0, Some(lk_pid), lk_ok));
        r.add(CPU, "s", "python-sdk", cpu(cpu0.1, Some(py_pid), py_ok));
        r.add(CPU, "s", "python-agents", cpu(cpu0.2, ag_pid, ag_ok));
        rt.block_on(async {
            publishing.leave().await;
            publishing.close_tracks().await;
        });
        lk.interrupt_and_wait();
        py.kill();
        ag.kill();
        eprint!(".");
    }
    eprintln!();
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|k| format!("{:.0} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}")
}

fn report(r: &Results, s: &Settings, out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let mut json_scenarios = serde_json::Map::new();
    let mut table = String::new();
    table.push_str(&format!(
        "{:<42} {:<14} {:>10} {:>10} {:>4} {:>14}\n",
        "scenario", "contender", "median", "p95", "n", "lk-go/anchor"
    ));
    let mut scenarios: Vec<&String> = r.samples.keys().chain(r.missing.keys()).collect();
    scenarios.sort();
    scenarios.dedup();
    let empty = BTreeMap::new();
    for scenario in scenarios {
        let by = r.samples.get(scenario).unwrap_or(&empty);
        let unit = r.units.get(scenario).copied().unwrap_or("");
        let lk = by.get("lk-go").map(|v| median(v));
        let mut js = serde_json::Map::new();
        for contender in [
            "lk-go",
            crate::echo_bench::LK_GO_GO,
            "python-sdk",
            "python-agents",
            "python-agents-warm",
        ] {
            let missing = r
                .missing
                .get(scenario)
                .and_then(|m| m.get(contender))
                .copied()
                .unwrap_or(0);
            let Some(v) = by.get(contender) else {
                if missing > 0 {
                    table.push_str(&format!(
                        "{scenario:<42} {contender:<14} {:>10} {:>10} {:>4} {:>14}  ({missing} runs without a result)\n",
                        "-", "-", 0, "n/a"
                    ));
                    js.insert(
                        contender.into(),
                        serde_json::json!({"unit": unit, "n": 0, "missing": missing}),
                    );
                }
                continue;
            };
            let med = median(v);
            let p95 = percentile(v, 95.0);
            let ratio = match (contender, lk) {
                // Compared with the Rust plugin below the table instead.
                ("lk-go", _) | (crate::echo_bench::LK_GO_GO, _) => "".to_string(),
                (_, Some(l)) if med > 0.0 => format!("{:.3}", l / med),
                _ => "n/a".into(),
            };
            table.push_str(&format!(
                "{:<42} {:<14} {:>8.2}{:<2} {:>8.2}{:<2} {:>4} {:>14}{}\n",
                scenario,
                contender,
                med,
                unit_short(unit),
                p95,
                unit_short(unit),
                v.len(),
                ratio,
                if missing > 0 {
                    format!("  ({missing} runs without a result)")
                } else {
                    String::new()
                }
            ));
            js.insert(
                contender.into(),
                serde_json::json!({"unit": unit, "median": med, "p95": p95, "n": v.len(), "missing": missing, "samples": v}),
            );
        }
        json_scenarios.insert(scenario.to_string(), serde_json::Value::Object(js));
    }
    let go_vs_rust = go_vs_rust(r);
    table.push_str(&go_vs_rust);
    println!("\n{table}");
    let json = serde_json::json!({
        "machine": machine(),
        "livekit_server": lk_go_tests::LIVEKIT_SERVER_VERSION,
        "python_sdk": lk_go_tests::PYTHON_LIVEKIT_PIN,
        "python_agents": AGENTS_PIN,
        "runs": s.runs,
        "steady_seconds": s.steady_seconds,
        "memory_seconds": s.memory_seconds,
        "scenarios": json_scenarios,
    });
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(out_dir.join("results.txt"), &table)?;
    std::fs::write(out_dir.join("results.svg"), svg(r))?;
    println!(
        "machine: {}\nwrote {}/results.json, results.txt and results.svg",
        machine(),
        out_dir.display()
    );
    Ok(())
}

fn unit_short(u: &str) -> &str {
    match u {
        "ms" => "ms",
        "MiB" => "M",
        "s" => "s",
        _ => "",
    }
}

/// The Go echo plugin against the Rust one (same host, same run): the
/// ratio of medians per scenario both ran, as lines under the table.
fn go_vs_rust(r: &Results) -> String {
    let mut out = String::new();
    for (scenario, by) in &r.samples {
        let (Some(rust), Some(go)) = (by.get("lk-go"), by.get(crate::echo_bench::LK_GO_GO)) else {
            continue;
        };
        let (rust, go) = (median(rust), median(go));
        if rust > 0.0 {
            out.push_str(&format!(
                "Go plugin / Rust plugin, {scenario}: {go:.3} / {rust:.3} = {:.2}x\n",
                go / rust
            ));
        }
    }
    out
}

/// A bar chart: one panel per scenario, one bar per contender (median),
/// each panel scaled to its own maximum.
fn svg(r: &Results) -> String {
    let colors = [
        ("lk-go", "#2b7bb9"),
        (crate::echo_bench::LK_GO_GO, "#1f9e89"),
        ("python-sdk", "#e08a1e"),
        ("python-agents", "#6a9f3a"),
        ("python-agents-warm", "#9a5fb5"),
    ];
    let panel_h = 110.0;
    let width = 760.0;
    let height = 40.0 + panel_h * r.samples.len() as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">lk-go vs the LiveKit Python SDK and Python agents (median; shorter is better)</text>\n"
    );
    for (i, (scenario, by)) in r.samples.iter().enumerate() {
        let y0 = 40.0 + panel_h * i as f64;
        let unit = r.units.get(scenario).copied().unwrap_or("");
        out.push_str(&format!(
            "<text x=\"10\" y=\"{:.0}\" font-weight=\"bold\">{}</text>\n",
            y0 + 16.0,
            scenario
        ));
        let max = by
            .values()
            .map(|v| median(v))
            .fold(0.0_f64, f64::max)
            .max(1e-9);
        for (j, (name, color)) in colors.iter().enumerate() {
            let Some(v) = by.get(*name) else { continue };
            let m = median(v);
            let y = y0 + 26.0 + 24.0 * j as f64;
            let w = (m / max) * 480.0;
            out.push_str(&format!(
                "<text x=\"10\" y=\"{:.0}\">{}</text><rect x=\"120\" y=\"{:.0}\" width=\"{:.1}\" height=\"18\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.0}\">{:.2} {}</text>\n",
                y + 13.0,
                name,
                y,
                w.max(1.0),
                color,
                126.0 + w.max(1.0),
                y + 13.0,
                m,
                unit
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}

pub fn run(tools: Tools, settings: Settings) -> Result<()> {
    become_subreaper();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Results::default();
    let server = LiveKitServer::start();
    eprintln!(
        "bench: livekit-server at {}; {} runs per scenario",
        server.url, settings.runs
    );
    let started = Instant::now();
    let f = settings.frontend_only;
    if !f && !settings.echo_only && !settings.worker_only {
        eprint!("1/7 job start ");
        job_start(&tools, &server, &settings, &mut results)?;
        eprint!("2/7 publish -> track_subscribed ");
        publish_to_subscribed(&tools, &server, &settings, &mut results, &rt)?;
        eprint!("3/7 server killed -> noticed ");
        server_killed(&tools, &settings, &mut results)?;
        eprint!(
            "4+5/7 memory and CPU ({} s per run) ",
            settings.steady_seconds
        );
        steady_state(&tools, &server, &settings, &mut results, &rt)?;
    }
    let mut points = Vec::new();
    if !f && !settings.worker_only {
        eprint!("6/7 echo latency ");
        crate::echo_bench::echo_latency(&tools, &server, settings.runs.min(3), &mut results)?;
        eprint!(
            "7/7 echo CPU and RSS ({} s per run) ",
            settings.steady_seconds
        );
        crate::echo_bench::echo_cpu(
            &tools,
            &server,
            settings.runs.min(2),
            settings.steady_seconds,
            &mut results,
        )?;
        eprint!("scale: concurrent echo jobs");
        points = crate::echo_bench::scale(&tools, &server, &rt, &settings.scale_counts, 12)?;
    }
    if f || (!settings.echo_only && !settings.worker_only) {
        eprint!("frontend: RPC, streams, flood (livekit-client in Chromium) ");
        crate::frontend_bench::run(&tools, &server, settings.runs.min(5), &mut results)?;
    }
    // Last: the jobs-per-machine run leaves up to 100 agent rooms behind
    // (closed by the server after its empty_timeout), which would load the
    // server under the scenarios above.
    let mut worker_points = Vec::new();
    if !f && !settings.echo_only {
        eprint!("worker: dispatch latency and memory ");
        crate::worker_bench::latency_and_memory(&tools, &server, settings.runs, &mut results)?;
        eprint!("worker: jobs per machine");
        worker_points = crate::worker_bench::jobs_per_machine(
            &tools,
            &server,
            &settings.worker_scale_counts,
            Duration::from_secs(25),
        )?;
    }
    drop(server);
    let (spawned, left) = reap_all();
    eprintln!(
        "bench finished in {:.0} s; {spawned} contender process groups spawned, {left} left running (killed now)",
        started.elapsed().as_secs_f64()
    );
    let out_dir = target_dir().join("bench");
    report(&results, &settings, &out_dir)?;
    if !worker_points.is_empty() {
        let table = crate::worker_bench::jobs_table(&worker_points);
        println!("\nW5 jobs per machine: N jobs dispatched at once, each into its own room; connected within 25 s\n{table}");
        std::fs::write(
            out_dir.join("worker_jobs.json"),
            serde_json::to_string_pretty(&worker_points)?,
        )?;
    }
    if points.is_empty() {
        return Ok(());
    }
    let table = crate::echo_bench::scale_table(&points);
    println!("\nscale: concurrent echo jobs, each fed 440 Hz by its own publisher (lk-go's client, in the bench process), 12 s window\n{table}");
    std::fs::write(
        out_dir.join("scale.json"),
        serde_json::to_string_pretty(&points)?,
    )?;
    std::fs::write(
        out_dir.join("scale.svg"),
        crate::echo_bench::scale_svg(&points),
    )?;
    println!("wrote {}/scale.json and scale.svg", out_dir.display());
    Ok(())
}
