//! `cargo xtask bench` worker scenarios: `lk-go worker` side by side with a
//! LiveKit Agents worker (`xtask/bench/agent_worker.py`, `start` mode)
//! registered with the same server under another agent name.
//!
//! Owns: dispatch → job connected (the first job after a worker starts, and
//! steady state), idle worker RSS, per-job RSS, and jobs per machine (N
//! concurrent jobs until something gives). Contenders alternate; every
//! dispatch is an AgentDispatchService.CreateDispatch into a fresh room, and
//! the clock starts just before it, so the server's own claim wait (≥ 200 ms
//! in v1.13.5's psrpc affinity) is in every figure. Benchmarks, not tests.
//!
//! Contenders: `lk-go` (a process per job, started on assignment),
//! `python-agents` (LKBENCH_IDLE=0: a process per job, forked from its
//! forkserver) and `python-agents-warm` (one pre-started idle process, the
//! production shape).

use crate::bench_kit::{field, now_us, Proc, Results, Tools, READY};
use anyhow::{Context, Result};
use lk_go_tests::{create_dispatch, workspace_root, LiveKitServer};
use std::process::Command;
use std::time::{Duration, Instant};

pub const LK_GO: &str = "lk-go";
pub const PY_COLD: &str = "python-agents";
pub const PY_WARM: &str = "python-agents-warm";

/// The line each contender prints when its job is connected, and where its
/// microsecond timestamp is.
fn connected_marker(who: &str) -> (&'static str, &'static str) {
    match who {
        LK_GO => ("plugin_run_entered", "unix_us"),
        _ => ("LKBENCH connected", "LKBENCH connected"),
    }
}

fn agent_name(who: &str) -> String {
    format!("bench-{who}")
}

/// Starts a contender's worker and waits until it is registered (and, for
/// the warm one, its idle process is ready).
fn start_worker(tools: &Tools, server: &LiveKitServer, who: &str) -> Result<Proc> {
    let name = agent_name(who);
    let mut p = if who == LK_GO {
        let mut c = Command::new(&tools.lk_go);
        c.arg("worker")
            .arg(tools.plugins.join("libdispatch_probe.so"))
            .args(["--agent-name", &name, "--url", &server.url])
            .args([
                "--max-jobs",
                "1000",
                "--drain-timeout",
                "0s",
                "--log-format",
                "json",
            ])
            .env("LIVEKIT_API_KEY", "devkey")
            .env("LIVEKIT_API_SECRET", "secret");
        let mut p = Proc::spawn(&mut c)?;
        p.wait_for("worker_registered", READY)
            .with_context(|| format!("lk-go worker did not register: {:?}", p.seen))?;
        p
    } else {
        let mut c = Command::new(&tools.python_agents);
        c.arg(workspace_root().join("xtask/bench/agent_worker.py"))
            .args([
                "start",
                "--url",
                &server.url,
                "--api-key",
                "devkey",
                "--api-secret",
                "secret",
            ])
            .args(["--drain-timeout", "1"])
            .env("LKBENCH_AGENT", &name)
            .env("LKBENCH_IDLE", if who == PY_WARM { "1" } else { "0" });
        let mut p = Proc::spawn(&mut c)?;
        p.count_marker = Some(PREWARMED);
        p.wait_for("registered worker", Duration::from_secs(60))
            .with_context(|| format!("{who} did not register: {:?}", p.seen))?;
        p
    };
    if who == PY_WARM {
        wait_prewarmed(&mut p, 1)?;
    }
    Ok(p)
}

const PREWARMED: &str = "LKBENCH prewarmed";

/// Waits until the warm worker has announced `count` idle processes in all
/// (those seen in passing included).
fn wait_prewarmed(p: &mut Proc, count: usize) -> Result<()> {
    while p.counted < count {
        p.wait_for(PREWARMED, Duration::from_secs(30))
            .with_context(|| {
                format!(
                    "the warm worker's idle process #{count} never came up (saw {})",
                    p.counted
                )
            })?;
    }
    Ok(())
}

/// One dispatch into a fresh room; returns dispatch → connected in ms.
fn dispatch_once(
    p: &mut Proc,
    server: &LiveKitServer,
    who: &str,
    room: &str,
    metadata: &str,
) -> Option<f64> {
    let (marker, key) = connected_marker(who);
    let t0 = now_us();
    create_dispatch(server.http_port, &agent_name(who), room, metadata);
    p.wait_for(marker, READY)
        .and_then(|(_, line)| field(&line, key))
        .map(|t| t.saturating_sub(t0) as f64 / 1000.0)
}

/// Proportional set size (PSS: each shared page divided among the processes
/// sharing it, so forked job processes are not counted twice for what they
/// share with their forkserver) of every process in `pgid`'s process
/// group, in MiB.
fn group_pss_mib(pgid: u32) -> f64 {
    let mut kib = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        // Fields after the command: state ppid pgrp …
        if after
            .split_whitespace()
            .nth(2)
            .and_then(|g| g.parse::<u32>().ok())
            == Some(pgid)
        {
            kib += pss_kib(&pid).unwrap_or(0);
        }
    }
    kib as f64 / 1024.0
}

fn pss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The job process's pid: lk-go logs it when it starts the job; the Python
/// job prints it after its timestamp.
fn job_pid(who: &str, line: &str, worker_lines: &[String]) -> Option<String> {
    if who == LK_GO {
        worker_lines
            .iter()
            .rev()
            .find(|l| l.contains("job_started"))
            .and_then(|l| field(l, "\"pid\"").map(|p| p.to_string()))
    } else {
        line.split_whitespace().nth(3).map(str::to_string)
    }
}

/// W1–W3: latency (first job and steady), idle RSS, per-job RSS.
pub fn latency_and_memory(
    tools: &Tools,
    server: &LiveKitServer,
    runs: usize,
    r: &mut Results,
) -> Result<()> {
    const FIRST: &str = "W1 dispatch -> job connected, first job (ms)";
    const STEADY: &str = "W2 dispatch -> job connected (ms)";
    const IDLE: &str = "W3 idle worker PSS (MiB)";
    const PER_JOB: &str = "W4 PSS per running job (MiB)";
    let who_all = [LK_GO, PY_COLD, PY_WARM];
    // The first job after a worker starts: a fresh worker each run.
    for i in 0..runs.min(3) {
        for who in who_all {
            let mut p = start_worker(tools, server, who)?;
            r.add(IDLE, "MiB", who, Some(group_pss_mib(p.pid())));
            let v = dispatch_once(&mut p, server, who, &format!("wfirst-{who}-{i}"), "exit:0");
            r.add(FIRST, "ms", who, v);
            p.kill();
        }
        eprint!(".");
    }
    // Steady state: one worker each, jobs one after another.
    let mut workers = Vec::new();
    for who in who_all {
        let mut p = start_worker(tools, server, who)?;
        // Warm-up job, not counted (the first job is W1's).
        dispatch_once(&mut p, server, who, &format!("wwarm-{who}"), "exit:0");
        workers.push((who, p));
    }
    for i in 0..runs {
        for (who, p) in workers.iter_mut() {
            if *who == PY_WARM {
                // Each job takes the idle process (the start's, then the
                // warm-up's replacement, …); measure with a new one up.
                wait_prewarmed(p, i + 2)?;
            }
            let v = dispatch_once(p, server, who, &format!("wsteady-{who}-{i}"), "exit:0");
            r.add(STEADY, "ms", who, v);
        }
        eprint!(".");
    }
    // RSS of one running job process, right after it connected.
    for (who, p) in workers.iter_mut() {
        let (marker, _) = connected_marker(who);
        create_dispatch(
            server.http_port,
            &agent_name(who),
            &format!("wrss-{who}"),
            "hold",
        );
        let rss = p.wait_for(marker, READY).and_then(|(_, line)| {
            let pid = job_pid(who, &line, &p.seen)?;
            pss_kib(&pid).map(|k| k as f64 / 1024.0)
        });
        r.add(PER_JOB, "MiB", who, rss);
    }
    eprintln!();
    Ok(())
}

/// One jobs-per-machine point.
#[derive(Debug, serde::Serialize)]
pub struct JobsPoint {
    pub contender: String,
    pub jobs: usize,
    /// Jobs connected within the window.
    pub connected: usize,
    /// First dispatch → last job connected (ms), when all connected.
    pub all_connected_ms: Option<f64>,
    /// Worker + job processes at the end of the window: PSS, MiB.
    pub pss_mib: f64,
}

/// W5: N jobs dispatched at once (each into its own room), counted as they
/// connect within `window` (rooms with only an agent close after the
/// server's empty_timeout, 30 s in xtask/livekit.yaml: the window stays
/// under it).
pub fn jobs_per_machine(
    tools: &Tools,
    server: &LiveKitServer,
    counts: &[usize],
    window: Duration,
) -> Result<Vec<JobsPoint>> {
    let mut points = Vec::new();
    for &n in counts {
        for who in [LK_GO, PY_WARM] {
            let mut p = start_worker(tools, server, who)?;
            let (marker, _) = connected_marker(who);
            let started = Instant::now();
            for i in 0..n {
                create_dispatch(
                    server.http_port,
                    &agent_name(who),
                    &format!("wjobs-{who}-{n}-{i}"),
                    "hold",
                );
            }
            let deadline = started + window;
            let mut connected = 0;
            let mut all_connected_ms = None;
            while connected < n {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                if p.wait_for(marker, left).is_none() {
                    break;
                }
                connected += 1;
                if connected == n {
                    all_connected_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            // lk-go's job processes lead their own process groups: count
            // them through the worker's children.
            let rss = if who == LK_GO {
                group_pss_mib(p.pid()) + children_pss_mib(p.pid())
            } else {
                group_pss_mib(p.pid())
            };
            eprint!(" {who} {n}: {connected} connected");
            points.push(JobsPoint {
                contender: who.to_string(),
                jobs: n,
                connected,
                all_connected_ms,
                pss_mib: rss,
            });
            if who == LK_GO {
                // Drain with --drain-timeout 0s: every job runs its cascade.
                p.interrupt_and_wait();
            } else {
                p.kill();
            }
        }
    }
    eprintln!();
    Ok(points)
}

/// PSS of the direct children of `pid` (from every thread's `children`
/// list: tokio's threads spawn them), which lead process groups of their own.
fn children_pss_mib(pid: u32) -> f64 {
    let mut kib = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        kib += children.split_whitespace().filter_map(pss_kib).sum::<u64>();
    }
    kib as f64 / 1024.0
}

pub fn jobs_table(points: &[JobsPoint]) -> String {
    let mut t = format!(
        "{:<20} {:>6} {:>10} {:>16} {:>10}\n",
        "contender", "jobs", "connected", "all connected", "PSS"
    );
    for p in points {
        t.push_str(&format!(
            "{:<20} {:>6} {:>10} {:>16} {:>8.0} M\n",
            p.contender,
            p.jobs,
            p.connected,
            p.all_connected_ms
                .map(|ms| format!("{:.1} s", ms / 1000.0))
                .unwrap_or_else(|| "no".into()),
            p.pss_mib
        ));
    }
    t
}
