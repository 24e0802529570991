//! The echo scenarios of `cargo xtask bench`: what a voice agent costs.
//!
//! Owns: scenario 6 (mouth-to-ear latency through an echo agent), 7 (CPU
//! and peak RSS of one echo job while it echoes 440 Hz) and the scale run
//! (1, 10, 50, 100 concurrent echo jobs: CPU, RSS per job, frames dropped,
//! latency p95; Python SDK echo processes at the counts they survive),
//! with its table and `target/bench/scale.svg`. lk-go's contender is
//! `plugins/echo` (release build), and beside it `plugins/go-echo` (the
//! Go SDK: the price of cgo, contender `lk-go (Go)`); the Python one is
//! `tests/python/python_echo.py`, an echo written with the official SDK
//! (`AudioStream` → `AudioSource`). Latency is measured by
//! `tests/python/latency_probe.py` for both.
//!
//! Must not touch: the other scenarios or the report's shape (samples go
//! into the shared [`Results`]).

use crate::bench_kit::{
    cpu_seconds, field, median, peak_rss_kib, percentile, Proc, Results, Tools, READY,
};
use anyhow::{bail, Context, Result};
use lk_go_tests::{dev_token, python_script, LiveKitServer};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LK_GO: &str = "lk-go";
/// lk-go running `plugins/go-echo` (the Go SDK) instead of the Rust echo.
pub(crate) const LK_GO_GO: &str = "lk-go (Go)";
const PY: &str = "python-sdk";

fn lk_go_echo(tools: &Tools, server: &LiveKitServer, room: &str, go: bool) -> Result<Proc> {
    let plugin = if go {
        tools.plugins.join("libgo_echo.so")
    } else {
        tools.echo.clone()
    };
    let mut p = Proc::spawn(
        Command::new(&tools.lk_go)
            .args(["job", "run-script"])
            .arg(&plugin)
            .args([
                "--room",
                room,
                "--url",
                &server.url,
                "--identity",
                "echo-agent",
            ])
            .env("LK_GO_LOG", "warn,plugin=info,lk_go::runner=info"),
    )?;
    if p.wait_for("plugin_run_entered", READY).is_none() {
        bail!("lk-go echo did not start in room {room}: {:?}", p.seen);
    }
    Ok(p)
}

fn python_echo(tools: &Tools, server: &LiveKitServer, room: &str) -> Result<Proc> {
    let mut p = Proc::spawn(
        Command::new(&tools.python_sdk)
            .arg(python_script("python_echo.py"))
            .args([&server.url, &dev_token(room, "echo-agent")]),
    )?;
    if p.wait_for("echo ready", READY).is_none() {
        bail!("python echo did not start in room {room}: {:?}", p.seen);
    }
    Ok(p)
}

/// A contender's name as part of a room name ("lk-go (Go)" -> "lk-goGo").
fn room_tag(who: &str) -> String {
    who.replace([' ', '(', ')'], "")
}

fn start_echo(tools: &Tools, server: &LiveKitServer, who: &str, room: &str) -> Result<Proc> {
    if who == LK_GO || who == LK_GO_GO {
        lk_go_echo(tools, server, room, who == LK_GO_GO)
    } else {
        python_echo(tools, server, room)
    }
}

/// Runs the latency probe against `echo-agent` in `room`; the latencies.
fn probe(tools: &Tools, server: &LiveKitServer, room: &str, bursts: u32) -> Option<Vec<f64>> {
    let mut p = Proc::spawn(
        Command::new(&tools.python_sdk)
            .arg(python_script("latency_probe.py"))
            .args([
                &server.url,
                &dev_token(room, "prober"),
                "echo-agent",
                "--bursts",
                &bursts.to_string(),
            ]),
    )
    .ok()?;
    let (_, line) = p.wait_for("\"latencies_ms\"", Duration::from_secs(90))?;
    // Let it leave the room (it disconnects after printing): a killed
    // participant's track lingers until the server times it out.
    p.wait_exit(Duration::from_secs(10));
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    Some(
        v["latencies_ms"]
            .as_array()?
            .iter()
            .filter_map(|x| x.as_f64())
            .collect(),
    )
}

/// Scenario 6: the Python SDK sends tone bursts through an echo agent and
/// times each one's return. lk-go's Rust echo, lk-go's Go echo and the
/// Python SDK echo alternate.
pub(crate) fn echo_latency(
    tools: &Tools,
    server: &LiveKitServer,
    runs: usize,
    r: &mut Results,
) -> Result<()> {
    const SC: &str = "6 echo mouth-to-ear latency (ms)";
    for i in 0..runs {
        for who in [LK_GO, LK_GO_GO, PY] {
            let room = format!("latency-{}-{i}", room_tag(who));
            let agent = start_echo(tools, server, who, &room)?;
            match probe(tools, server, &room, 5) {
                Some(v) => v.into_iter().for_each(|x| r.add(SC, "ms", who, Some(x))),
                None => r.add(SC, "ms", who, None),
            }
            drop(agent);
        }
        eprint!(".");
    }
    eprintln!();
    Ok(())
}

/// Scenario 7: one echo job echoing a Python SDK publisher's 440 Hz: CPU
/// over `seconds` and peak RSS; the Rust and the Go echo plugin in lk-go,
/// and the Python SDK echo.
pub(crate) fn echo_cpu(
    tools: &Tools,
    server: &LiveKitServer,
    runs: usize,
    seconds: u64,
    r: &mut Results,
) -> Result<()> {
    let cpu_sc = format!("7 CPU per echo job, {seconds} s of 440 Hz (s)");
    let cpu_sc: &'static str = Box::leak(cpu_sc.into_boxed_str());
    const MEM: &str = "8 peak RSS per echo job (MiB)";
    for i in 0..runs {
        for who in [LK_GO, LK_GO_GO, PY] {
            let room = format!("cpu-{}-{i}", room_tag(who));
            let mut agent = start_echo(tools, server, who, &room)?;
            let mut speaker = Proc::spawn(
                Command::new(&tools.python_sdk)
                    .arg(python_script("publish_sine.py"))
                    .args([
                        &server.url,
                        &dev_token(&room, "speaker"),
                        &(seconds + 15).to_string(),
                    ]),
            )?;
            let echoing = agent.wait_for("echoing", READY).is_some()
                && speaker.wait_for("published", READY).is_some();
            // Past the start-up transients.
            std::thread::sleep(Duration::from_secs(3));
            let pid = agent.pid();
            let before = cpu_seconds(pid);
            std::thread::sleep(Duration::from_secs(seconds));
            let after = cpu_seconds(pid);
            let ok = echoing && before.is_some() && after.is_some();
            r.add(
                cpu_sc,
                "s",
                who,
                ok.then(|| after.unwrap_or(0.0) - before.unwrap_or(0.0)),
            );
            r.add(
                MEM,
                "MiB",
                who,
                if ok {
                    peak_rss_kib(pid).map(|k| k as f64 / 1024.0)
                } else {
                    None
                },
            );
            drop(speaker);
            drop(agent);
        }
        eprint!(".");
    }
    eprintln!();
    Ok(())
}

/// One point of the scale run.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct ScalePoint {
    pub contender: String,
    pub jobs: usize,
    /// Jobs that joined and started echoing.
    pub started: usize,
    /// CPU of all echo jobs together, % of one core, over the window.
    pub cpu_total_pct: f64,
    pub cpu_per_job_pct: f64,
    /// Mean peak RSS per job, MiB.
    pub rss_per_job_mib: f64,
    /// Frames the jobs' rings dropped (lk-go only; the SDK does not say).
    pub frames_dropped: Option<u64>,
    pub latency_median_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

/// In-process publishers (lk-go's own room client) feeding 440 Hz to
/// rooms, 20 ms every 20 ms, from one thread: cheap enough to feed 100
/// rooms from the machine under test.
struct Feeders {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    rooms: Vec<lk_go::room::Room>,
}

impl Feeders {
    fn start(rt: &tokio::runtime::Runtime, url: &str, rooms: &[String]) -> Result<Feeders> {
        use lk_go::media::source::SourceQueue;
        let mut joined = Vec::new();
        let mut queues = Vec::new();
        for room in rooms {
            let r = rt.block_on(lk_go_tests::join_dev_room_as_user(url, room, "speaker"))?;
            let access = r
                .media_access()
                .context("joined room has no media access")?;
            let q = Arc::new(SourceQueue::new(48_000, 1, 100));
            let q2 = q.clone();
            rt.block_on(async move { access.link.publish_audio("tone", q2).await })
                .map_err(|e| anyhow::anyhow!("publish the feeder track: {e}"))?;
            queues.push(q);
            joined.push(r);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let chunk: Vec<i16> = (0..960)
                .map(|i| {
                    (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 48_000.0).sin())
                        as i16
                })
                .collect();
            let mut next = Instant::now();
            let never = || false;
            while !s2.load(Ordering::Relaxed) {
                for q in &queues {
                    let _ = q.capture(&chunk, Instant::now(), &never);
                }
                next += Duration::from_millis(20);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            for q in &queues {
                q.close();
            }
        });
        Ok(Feeders {
            stop,
            thread: Some(thread),
            rooms: joined,
        })
    }

    fn stop(mut self, rt: &tokio::runtime::Runtime) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for r in self.rooms.drain(..) {
            rt.block_on(async {
                r.leave().await;
                r.close_tracks().await;
            });
        }
    }
}

fn scale_point(
    tools: &Tools,
    server: &LiveKitServer,
    rt: &tokio::runtime::Runtime,
    who: &str,
    n: usize,
    window: u64,
) -> Result<ScalePoint> {
    let tag = room_tag(who);
    let rooms: Vec<String> = (0..n).map(|k| format!("scale-{tag}-{n}-{k}")).collect();
    // The people come first, as in production (agents are dispatched to
    // rooms with users): livekit-server closes a room in which no
    // non-agent participant arrives within empty_timeout (30 s here), and
    // starting 100 jobs takes longer than that. Room 0 gets the latency
    // probe (its own publisher) later and an idle participant meanwhile;
    // the others a feeder each.
    let anchor = rt.block_on(lk_go_tests::join_dev_room_as_user(
        &server.url,
        &rooms[0],
        "anchor",
    ))?;
    let feeders = Feeders::start(rt, &server.url, &rooms[1.min(n)..])?;
    let mut agents = Vec::new();
    for room in &rooms {
        match start_echo(tools, server, who, room) {
            Ok(p) => agents.push(p),
            Err(e) => {
                // The machine is past this contender's limit: starting the
                // rest would only take READY each.
                eprint!("\n    {e:#}; no more jobs started");
                break;
            }
        }
    }
    let started = agents.len();
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = agents.iter().map(|a| a.pid()).collect();
    let before: Vec<Option<f64>> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    let t0 = Instant::now();
    let latencies = probe(tools, server, &rooms[0], 5);
    let left = Duration::from_secs(window).saturating_sub(t0.elapsed());
    std::thread::sleep(left);
    let elapsed = t0.elapsed().as_secs_f64();
    let after: Vec<Option<f64>> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    let cpu: f64 = before
        .iter()
        .zip(&after)
        .filter_map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .sum();
    let rss: Vec<f64> = pids
        .iter()
        .filter_map(|&p| peak_rss_kib(p))
        .map(|k| k as f64 / 1024.0)
        .collect();
    if rss.len() < pids.len() {
        // Jobs that exited during the window: show why.
        for a in agents
            .iter_mut()
            .filter(|a| peak_rss_kib(a.pid()).is_none())
            .take(2)
        {
            let _ = a.wait_for("\u{0}", Duration::from_millis(200));
            eprint!(
                "\n    a job exited early; its last lines: {:?}",
                &a.seen[a.seen.len().saturating_sub(6)..]
            );
        }
    }
    feeders.stop(rt);
    rt.block_on(async {
        anchor.leave().await;
        anchor.close_tracks().await;
    });
    // Each lk-go echo logs the frames its ring dropped when its mic ends;
    // a job that does not say makes the count unknown, not zero.
    let dropped = if who == LK_GO || who == LK_GO_GO {
        let reports: Vec<Option<u64>> = agents
            .iter_mut()
            .map(|a| {
                a.wait_for("frames dropped", Duration::from_secs(10))
                    .and_then(|(_, l)| field(&l, "frames dropped"))
            })
            .collect();
        reports.into_iter().sum::<Option<u64>>()
    } else {
        None
    };
    for a in agents {
        a.interrupt_and_wait();
    }
    Ok(ScalePoint {
        contender: who.to_string(),
        jobs: n,
        started,
        cpu_total_pct: cpu / elapsed * 100.0,
        cpu_per_job_pct: cpu / elapsed * 100.0 / started.max(1) as f64,
        rss_per_job_mib: if rss.is_empty() {
            0.0
        } else {
            rss.iter().sum::<f64>() / rss.len() as f64
        },
        frames_dropped: dropped,
        latency_median_ms: latencies.as_ref().map(|v| median(v)),
        latency_p95_ms: latencies.as_ref().map(|v| percentile(v, 95.0)),
    })
}

/// The scale run: lk-go at every count; the Python SDK echo at each count
/// until it fails to start them all or saturates the machine.
pub(crate) fn scale(
    tools: &Tools,
    server: &LiveKitServer,
    rt: &tokio::runtime::Runtime,
    counts: &[usize],
    window: u64,
) -> Result<Vec<ScalePoint>> {
    let mut points = Vec::new();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    for who in [LK_GO, LK_GO_GO, PY] {
        for &n in counts {
            eprint!("\n  {who} x{n}: ");
            let p = match scale_point(tools, server, rt, who, n, window) {
                Ok(p) => p,
                Err(e) => {
                    // The machine (or the server on it) gave out: that is
                    // this contender's limit, not the bench's end.
                    eprint!("failed ({e:#}); no larger count");
                    points.push(ScalePoint {
                        contender: who.to_string(),
                        jobs: n,
                        started: 0,
                        cpu_total_pct: 0.0,
                        cpu_per_job_pct: 0.0,
                        rss_per_job_mib: 0.0,
                        frames_dropped: None,
                        latency_median_ms: None,
                        latency_p95_ms: None,
                    });
                    break;
                }
            };
            eprint!(
                "{} started, CPU {:.0} %, RSS {:.1} MiB/job, dropped {:?}, p95 {:?} ms",
                p.started, p.cpu_total_pct, p.rss_per_job_mib, p.frames_dropped, p.latency_p95_ms
            );
            let saturated =
                p.started < n || p.cpu_total_pct > 90.0 * cores || p.latency_p95_ms.is_none();
            points.push(p);
            if saturated {
                eprint!(" (saturated: no larger count)");
                break;
            }
            // Let the server forget the last count's rooms.
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    eprintln!();
    Ok(points)
}

/// The knee of a contender's curve: the first count whose latency p95 is
/// over twice the single job's, or that dropped frames or failed to start.
pub(crate) fn knee(points: &[ScalePoint], who: &str) -> Option<usize> {
    let mine: Vec<&ScalePoint> = points.iter().filter(|p| p.contender == who).collect();
    let base = mine.first()?.latency_p95_ms?;
    mine.iter()
        .find(|p| {
            p.started < p.jobs
                || p.frames_dropped.is_some_and(|d| d > 0)
                || p.latency_p95_ms.is_none_or(|l| l > 2.0 * base)
        })
        .map(|p| p.jobs)
}

pub(crate) fn scale_table(points: &[ScalePoint]) -> String {
    let mut t = format!(
        "{:<12} {:>5} {:>8} {:>10} {:>10} {:>10} {:>9} {:>10} {:>10}\n",
        "contender",
        "jobs",
        "started",
        "CPU %",
        "CPU %/job",
        "RSS MiB",
        "dropped",
        "lat p50",
        "lat p95"
    );
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
    for p in points {
        t.push_str(&format!(
            "{:<12} {:>5} {:>8} {:>10.0} {:>10.2} {:>10.1} {:>9} {:>10} {:>10}\n",
            p.contender,
            p.jobs,
            p.started,
            p.cpu_total_pct,
            p.cpu_per_job_pct,
            p.rss_per_job_mib,
            p.frames_dropped
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            opt(p.latency_median_ms),
            opt(p.latency_p95_ms),
        ));
    }
    for who in [LK_GO, LK_GO_GO, PY] {
        match knee(points, who) {
            Some(n) => t.push_str(&format!(
                "knee ({who}): {n} jobs (p95 latency over 2x one job's, drops, or failed starts)\n"
            )),
            None => t.push_str(&format!("knee ({who}): not reached at the counts run\n")),
        }
    }
    t
}

/// Two line charts side by side: CPU per job (% of a core) and latency p95
/// (ms) against the number of concurrent echo jobs (log-ish x: the counts
/// run, evenly spaced).
pub(crate) fn scale_svg(points: &[ScalePoint]) -> String {
    let mut counts: Vec<usize> = points.iter().map(|p| p.jobs).collect();
    counts.sort();
    counts.dedup();
    let (w, h, pw, ph) = (820.0, 360.0, 340.0, 240.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Concurrent echo jobs on one machine: lk-go vs the LiveKit Python SDK</text>\n"
    );
    let colors = [(LK_GO, "#2b7bb9"), (LK_GO_GO, "#1f9e89"), (PY, "#e08a1e")];
    type Metric = fn(&ScalePoint) -> Option<f64>;
    let panels: [(&str, Metric); 3] = [
        ("CPU per job (% of one core)", |p| Some(p.cpu_per_job_pct)),
        ("latency p95 (ms)", |p| p.latency_p95_ms),
        ("RSS per job (MiB)", |p| Some(p.rss_per_job_mib)),
    ];
    for (k, (title, metric)) in panels.iter().take(2).enumerate() {
        let x0 = 60.0 + k as f64 * (pw + 80.0);
        let y0 = 60.0;
        let max = points
            .iter()
            .filter_map(metric)
            .fold(0.0_f64, f64::max)
            .max(1e-9)
            * 1.1;
        out.push_str(&format!(
            "<text x=\"{x0}\" y=\"{:.0}\" font-weight=\"bold\">{title}</text>\n<line x1=\"{x0}\" y1=\"{:.0}\" x2=\"{x0}\" y2=\"{:.0}\" stroke=\"black\"/>\n<line x1=\"{x0}\" y1=\"{:.0}\" x2=\"{:.0}\" y2=\"{:.0}\" stroke=\"black\"/>\n<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{max:.1}</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">0</text>\n",
            y0 - 10.0, y0, y0 + ph, y0 + ph, x0 + pw, y0 + ph, x0 - 4.0, y0 + 4.0, x0 - 4.0, y0 + ph
        ));
        let xs = |n: usize| {
            let i = counts.iter().position(|&c| c == n).unwrap_or(0) as f64;
            x0 + 20.0 + i * (pw - 40.0) / (counts.len().max(2) - 1) as f64
        };
        for &c in &counts {
            out.push_str(&format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{c}</text>\n",
                xs(c),
                y0 + ph + 16.0
            ));
        }
        out.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">concurrent echo jobs</text>\n",
            x0 + pw / 2.0,
            y0 + ph + 32.0
        ));
        for (j, (who, color)) in colors.iter().enumerate() {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.contender == *who)
                .filter_map(|p| Some((xs(p.jobs), y0 + ph - metric(p)? / max * ph)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            out.push_str(&format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
                path.join(" ")
            ));
            for (x, y) in &pts {
                out.push_str(&format!(
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\"/>\n"
                ));
            }
            out.push_str(&format!(
                "<rect x=\"{:.0}\" y=\"{:.0}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.0}\" y=\"{:.0}\">{who}</text>\n",
                x0 + pw - 90.0,
                y0 + 4.0 + 16.0 * j as f64,
                x0 + pw - 76.0,
                y0 + 13.0 + 16.0 * j as f64
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}
