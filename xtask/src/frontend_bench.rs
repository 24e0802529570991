//! The frontend scenarios of `cargo xtask bench`: what a LiveKit frontend
//! (livekit-client 2.23 in headless Chromium, `tests/browser/peer.mjs`)
//! measures talking to an agent — lk-go's echo (`plugins/echo`, release)
//! against the official Python SDK running the same contract
//! (`tests/browser/py_agent.py`), in alternation, same server.
//!
//! Owns: F1 RPC round trip (the browser calls `echo` 300 times, one at a
//! time: p50 and p95 per run), F2 and F3 stream throughput frontend →
//! agent and agent → frontend (5 MB, MB/s), F4 the agent's peak RSS under a
//! flood of 2 000 streams of 15 kB on a topic it does not read (sent by
//! lk-go's room client from the bench process). Benchmarks, not tests.

use crate::bench_kit::{peak_rss_kib, Proc, Results, Tools, READY};
use anyhow::{Context, Result};
use livekit_protocol as proto;
use lk_go_tests::{dev_token, workspace_root, LiveKitServer};
use std::process::Command;
use std::time::Duration;

const LK_GO: &str = "lk-go";
const PY: &str = "python-sdk";

/// One agent of the contract in `room` as identity `agent`.
fn start_agent(tools: &Tools, server: &LiveKitServer, who: &str, room: &str) -> Result<Proc> {
    let mut p = match who {
        LK_GO => {
            let mut c = Command::new(&tools.lk_go);
            c.args(["job", "run-script"]).arg(&tools.echo).args([
                "--room",
                room,
                "--identity",
                "agent",
                "--url",
                &server.url,
            ]);
            Proc::spawn(&mut c)?
        }
        _ => Proc::spawn(
            Command::new(&tools.python_sdk)
                .arg(workspace_root().join("tests/browser/py_agent.py"))
                .args([&server.url, &dev_token(room, "agent"), "--audio", "none"]),
        )?,
    };
    let ready = if who == LK_GO {
        "plugin_run_entered"
    } else {
        "\"ready\""
    };
    p.wait_for(ready, READY)
        .with_context(|| format!("{who} agent did not start: {:?}", p.seen))?;
    Ok(p)
}

fn browser(server: &LiveKitServer, room: &str, args: &[&str]) -> Option<serde_json::Value> {
    let dir = workspace_root().join("tests/browser");
    let out = Command::new("node")
        .arg(dir.join("peer.mjs"))
        .args([args[0], &server.url, &dev_token(room, "browser"), "agent"])
        .args(&args[1..])
        .current_dir(&dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{'))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["ok"] != true {
        eprintln!("bench: browser {} failed: {}", args[0], v["error"]);
        return None;
    }
    Some(v)
}

pub(crate) fn run(
    tools: &Tools,
    server: &LiveKitServer,
    runs: usize,
    r: &mut Results,
) -> Result<()> {
    const F1: &str = "F1 RPC round trip, browser caller, p50 (ms)";
    const F1B: &str = "F1b RPC round trip, browser caller, p95 (ms)";
    const F2: &str = "F2 stream frontend -> agent, 5 MB (MB/s)";
    const F3: &str = "F3 stream agent -> frontend, 5 MB (MB/s)";
    const F4: &str = "F4 agent peak RSS under a stream flood (MiB)";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for i in 0..runs {
        for who in [LK_GO, PY] {
            let room = format!("front-{}-{i}", if who == LK_GO { "lkgo" } else { "py" });
            let agent = start_agent(tools, server, who, &room)?;
            let rpc = browser(
                server,
                &room,
                &["rpc", "--count", "300", "--concurrency", "1"],
            );
            r.add(
                F1,
                "ms",
                who,
                rpc.as_ref().and_then(|v| v["bench"]["p50_ms"].as_f64()),
            );
            r.add(
                F1B,
                "ms",
                who,
                rpc.as_ref().and_then(|v| v["bench"]["p95_ms"].as_f64()),
            );
            for (sc, dir) in [(F2, "to-agent"), (F3, "from-agent")] {
                let v = browser(
                    server,
                    &room,
                    &[
                        "throughput",
                        "--direction",
                        dir,
                        "--size",
                        "5000000",
                        "--timeout-ms",
                        "60000",
                    ],
                );
                r.add(
                    sc,
                    "MB/s",
                    who,
                    v.as_ref().and_then(|v| v["mb_per_s"].as_f64()),
                );
            }
            // The flood: lk-go's client in the bench process as the sender.
            let flooded = rt.block_on(async {
                let peer = lk_go_tests::join_dev_room_as_user(&server.url, &room, "flooder")
                    .await
                    .ok()?;
                let hub = peer.data();
                let block = vec![7u8; 15_000];
                for n in 0..2_000 {
                    let id = format!("flood-{n}");
                    use proto::data_packet::Value;
                    let header = Value::StreamHeader(proto::data_stream::Header {
                        stream_id: id.clone(),
                        topic: "nobody.reads".into(),
                        content_header: Some(
                            proto::data_stream::header::ContentHeader::ByteHeader(
                                proto::data_stream::ByteHeader { name: "x".into() },
                            ),
                        ),
                        ..Default::default()
                    });
                    let chunk = Value::StreamChunk(proto::data_stream::Chunk {
                        stream_id: id.clone(),
                        chunk_index: 0,
                        content: block.clone(),
                        ..Default::default()
                    });
                    let trailer = Value::StreamTrailer(proto::data_stream::Trailer {
                        stream_id: id,
                        ..Default::default()
                    });
                    for v in [header, chunk, trailer] {
                        hub.send_raw(v, vec!["agent".into()]).await.ok()?;
                    }
                }
                // Let the agent take what is in flight.
                tokio::time::sleep(Duration::from_secs(2)).await;
                peer.leave().await;
                peer.close_tracks().await;
                Some(())
            });
            let rss = flooded.and_then(|()| peak_rss_kib(agent.pid()));
            r.add(F4, "MiB", who, rss.map(|k| k as f64 / 1024.0));
            drop(agent);
        }
        eprint!(".");
    }
    eprintln!();
    Ok(())
}
