//! What LiveKit's frontends expect of an agent (ABI 1.4): data streams,
//! RPC, transcripts and chat, against the echo agents' contract
//! (`plugins/echo/src/frontend.rs`, and the C and Go echoes), with two real
//! peers: the official Python SDK (`tests/python/frontend_check.py`) and the
//! JavaScript SDK `livekit-client` in headless Chromium
//! (`tests/browser/peer.mjs`), plus malformed and hostile input from a peer
//! that sends raw packets (lk-go's own room client). Run with `cargo xtask
//! itest`, which provisions the server, the venv, Chromium and the npm
//! packages; without them these tests fail, they never skip.

use livekit_protocol as proto;
use lk_go_tests::{
    dev_token, plugin, python_bin, python_script, run_browser, wait_output, LiveKitServer,
    LkGoProcess,
};
use proto::data_packet::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
const ECHOES: [&str; 3] = ["echo", "c_echo", "go_echo"];

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

fn stop(job: LkGoProcess) -> String {
    job.signal(libc::SIGINT);
    let (code, _, log) = job.finish(LIMIT);
    assert_eq!(code, Some(130), "{log}");
    log
}

fn python(script: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let child = Command::new(python_bin())
        .arg(python_script(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let out = wait_output(child, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    (
        out.status.code(),
        serde_json::from_str(line).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Python SDK as the frontend, for each echo: RPC `echo` at 5 B, 15 000
/// B and 100 000 B (RPC v2 as a stream: lk-go advertises client protocol 2)
/// and 1000 calls at once, `nope` answered 1400, chat sent whole and
/// streamed answered as an agent transcript (stream and legacy packet),
/// bytes streamed and sent as a file answered with their SHA-256, and the
/// agent's `frontend.hello` call on join.
#[test]
fn the_python_sdk_talks_to_every_echo() {
    let server = LiveKitServer::start();
    for echo in ECHOES {
        let room = format!("py-{echo}");
        let agent = format!("{echo}-agent");
        let job = start_agent(&server, echo, &room, &agent, "");
        let (code, v, err) = python(
            "frontend_check.py",
            &[
                &server.url,
                &dev_token(&room, "pyfront"),
                &agent,
                "--concurrent",
                "1000",
            ],
        );
        let log = stop(job);
        eprintln!(
            "MEASURED {echo} python rpc {} concurrent {}",
            v["rpc"], v["concurrent"]
        );
        assert_eq!(code, Some(0), "{echo}: {v}\n{err}\n{log}");
        assert_eq!(v["ok"], true, "{echo}: {v}");
        assert!(
            log.contains("frontend.hello to pyfront answered: hello"),
            "{echo}: {log}"
        );
    }
}

/// livekit-client 2.23 in headless Chromium, the frontend users ship, for
/// each echo: every scenario of the browser peer passes (see
/// tests/browser/peer.mjs for what each checks).
#[test]
fn the_browser_talks_to_every_echo() {
    let server = LiveKitServer::start();
    for echo in ECHOES {
        for scenario in ["rpc", "chat", "bytes", "hello", "state", "audio"] {
            let room = format!("web-{echo}-{scenario}");
            let agent = format!("{echo}-agent");
            let job = start_agent(&server, echo, &room, &agent, "");
            let (code, v) = run_browser(
                scenario,
                &server.url,
                &dev_token(&room, "browser"),
                &agent,
                &["--timeout-ms", "40000"],
                LIMIT,
            );
            let log = stop(job);
            let mut shown = v.clone();
            for noisy in ["ice", "agent", "local", "browser", "wire"] {
                shown.as_object_mut().map(|o| o.remove(noisy));
            }
            eprintln!("MEASURED browser {echo} {scenario}: {shown}");
            assert_eq!(code, Some(0), "{echo} {scenario}: {v}\n{log}");
            assert_eq!(v["ok"], true, "{echo} {scenario}: {v}");
            match scenario {
                "rpc" => {
                    // RPC v2 (lk-go advertises protocol 2): the 100 000-byte call works.
                    assert_eq!(v["sizes"][2]["ok"], true, "{v}");
                    assert_eq!(v["nope"]["code"], 1400, "{v}");
                }
                "audio" => {
                    let f = v["freq_hz"].as_f64().unwrap_or(0.0);
                    assert!((f - 440.0).abs() <= 5.0, "{echo}: {v}");
                    assert_eq!(v["agent_state"], "listening", "{v}");
                }
                "hello" => assert_eq!(v["payload"], agent.as_str(), "{v}"),
                "state" => assert_eq!(v["agent_state"], "listening", "{v}"),
                _ => {}
            }
        }
    }
}

// ---- a peer that sends what the SDKs never would -------------------------

struct Raw {
    room: lk_go::room::Room,
    rt: tokio::runtime::Runtime,
}

impl Raw {
    fn join(server: &LiveKitServer, room: &str, identity: &str) -> Raw {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let room = rt
            .block_on(lk_go_tests::join_dev_room_as_user(
                &server.url,
                room,
                identity,
            ))
            .expect("join");
        Raw { room, rt }
    }

    fn send(&self, value: Value, to: &str) {
        let hub = self.room.data();
        self.rt
            .block_on(hub.send_raw(value, vec![to.to_string()]))
            .expect("send");
    }

    fn leave(self) {
        self.rt.block_on(async {
            self.room.leave().await;
            self.room.close_tracks().await;
        });
    }
}

fn header(id: &str, topic: &str, total: Option<u64>, bytes: bool) -> Value {
    use proto::data_stream::header::ContentHeader;
    Value::StreamHeader(proto::data_stream::Header {
        stream_id: id.into(),
        topic: topic.into(),
        total_length: total,
        content_header: Some(if bytes {
            ContentHeader::ByteHeader(proto::data_stream::ByteHeader {
                name: "x.bin".into(),
            })
        } else {
            ContentHeader::TextHeader(Default::default())
        }),
        ..Default::default()
    })
}

fn chunk(id: &str, index: u64, content: &[u8]) -> Value {
    Value::StreamChunk(proto::data_stream::Chunk {
        stream_id: id.into(),
        chunk_index: index,
        content: content.to_vec(),
        ..Default::default()
    })
}

fn trailer(id: &str) -> Value {
    Value::StreamTrailer(proto::data_stream::Trailer {
        stream_id: id.into(),
        ..Default::default()
    })
}

fn wait_log(job: &LkGoProcess, needle: &str) {
    job.wait_line(needle, Duration::from_secs(20));
}

/// Chunk gaps and reordering, invalid UTF-8, a header announcing a huge
/// total length, chunks for unknown ids, a stream whose sender leaves half
/// way: each ends that stream with an error saying which (the echo logs
/// it), never with wrong content; a 5 MB text arrives whole; the agent
/// keeps answering good streams in between.
#[test]
fn malformed_streams_end_with_an_error_never_wrong_content() {
    let server = LiveKitServer::start();
    let job = start_agent(&server, "echo", "raw", "echo-agent", "");
    // Keeps the room open when mallory leaves (a room with only agents
    // closes after departure_timeout).
    let keeper = Raw::join(&server, "raw", "keeper");
    let peer = Raw::join(&server, "raw", "mallory");
    let to = "echo-agent";
    // A gap: chunk 1 never comes.
    peer.send(header("gap", "echo.bytes", None, true), to);
    peer.send(chunk("gap", 0, b"a"), to);
    peer.send(chunk("gap", 2, b"c"), to);
    peer.send(trailer("gap"), to);
    wait_log(
        &job,
        "stream gap on echo.bytes from mallory failed: Aborted (chunk 1 is missing",
    );
    // Reordered: 1 before 0.
    peer.send(header("swap", "echo.bytes", None, true), to);
    peer.send(chunk("swap", 1, b"b"), to);
    peer.send(chunk("swap", 0, b"a"), to);
    wait_log(
        &job,
        "stream swap on echo.bytes from mallory failed: Aborted (chunk 0 is missing",
    );
    // Invalid UTF-8 in a text stream.
    peer.send(header("utf", "lk.chat", None, false), to);
    peer.send(chunk("utf", 0, &[0x68, 0xC3]), to);
    wait_log(
        &job,
        "stream utf on lk.chat from mallory failed: Aborted (chunk 0 is not valid UTF-8",
    );
    // A header announcing 10 TB.
    peer.send(header("huge", "echo.bytes", Some(10u64 << 40), true), to);
    wait_log(
        &job,
        "stream huge on echo.bytes from mallory failed: Aborted (its header announced",
    );
    // Chunks and a trailer for streams nobody opened: ignored.
    for i in 0..50 {
        peer.send(chunk("nobody", i, b"zzz"), to);
    }
    peer.send(trailer("nobody"), to);
    // A good 5 MB text in between: answered with its SHA-256.
    let text = "lk-go ".repeat(5 * 1024 * 1024 / 6);
    peer.send(
        header("big", "echo.bytes", Some(text.len() as u64), false),
        to,
    );
    for (i, part) in text.as_bytes().chunks(15_000).enumerate() {
        peer.send(chunk("big", i as u64, part), to);
    }
    peer.send(trailer("big"), to);
    use std::fmt::Write as _;
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(text.as_bytes())
            .iter()
            .fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    };
    wait_log(&job, &format!("sha256 {digest}"));
    // The sender leaves half way (once the agent knows her: livekit-server
    // announces a participant who publishes nothing in batches, every 3 s).
    wait_log(&job, "frontend.hello to mallory failed with code 1400");
    peer.send(header("half", "echo.bytes", Some(100), true), to);
    peer.send(chunk("half", 0, &[1; 50]), to);
    peer.leave();
    wait_log(
        &job,
        "stream half on echo.bytes from mallory failed: Aborted (the sender left the room)",
    );
    let log = stop(job);
    keeper.leave();
    assert!(
        !log.contains("nobody"),
        "chunks of unknown streams are not even logged: {log}"
    );
    assert!(!log.contains("panicked at"), "{log}");
}

/// RPC as no SDK sends it: a v1 request with version 0 is acked, then
/// answered 1404; a method nobody registered is acked, then 1400; a handler
/// that never returns costs the caller a 1502 (the host answers when the
/// timeout passes) and the agent keeps serving; 10 000 registered methods
/// all answer.
#[test]
fn rpc_misuse_gets_the_sdks_errors() {
    let server = LiveKitServer::start();
    let job = start_agent(&server, "echo", "rpcraw", "echo-agent", "rpc=hang rpc=many");
    wait_log(&job, "echo: 10000 methods registered");
    let peer = Raw::join(&server, "rpcraw", "mallory");
    let mut tap = peer.room.data().tap();
    let request = |id: &str, method: &str, version: u32, timeout_ms: u32| {
        Value::RpcRequest(proto::RpcRequest {
            id: id.into(),
            method: method.into(),
            payload: "p".into(),
            response_timeout_ms: timeout_ms,
            version,
            ..Default::default()
        })
    };
    peer.send(request("v0", "echo", 0, 5_000), "echo-agent");
    peer.send(request("unknown", "no.such.method", 1, 5_000), "echo-agent");
    peer.send(request("last", "m9999", 1, 5_000), "echo-agent");
    peer.send(request("slow", "hang", 1, 2_000), "echo-agent");
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let wanted = [
        "ack v0",
        "error v0 1404",
        "ack unknown",
        "error unknown 1400",
        "ack last",
        "payload last m9999",
        "ack slow",
        "error slow 1502",
    ];
    while !wanted.iter().all(|w| seen.iter().any(|s| s == w)) {
        assert!(started.elapsed() < Duration::from_secs(20), "saw {seen:?}");
        let p = peer
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), tap.recv()).await })
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no more packets; saw {seen:?}"));
        match p.value {
            Some(Value::RpcAck(a)) => seen.push(format!("ack {}", a.request_id)),
            Some(Value::RpcResponse(r)) => match r.value {
                Some(proto::rpc_response::Value::Error(e)) => {
                    seen.push(format!("error {} {}", r.request_id, e.code))
                }
                Some(proto::rpc_response::Value::Payload(p)) => {
                    seen.push(format!("payload {} {p}", r.request_id))
                }
                _ => {}
            },
            _ => {}
        }
    }
    let slow_answered = started.elapsed();
    eprintln!(
        "MEASURED RPC misuse answers: {seen:?} (the hung call answered after {slow_answered:?})"
    );
    // An ack comes before its request's answer.
    for id in ["v0", "unknown", "last", "slow"] {
        let ack = seen.iter().position(|s| s == &format!("ack {id}")).unwrap();
        let answer = seen
            .iter()
            .position(|s| {
                s.starts_with(&format!("error {id} ")) || s.starts_with(&format!("payload {id} "))
            })
            .unwrap();
        assert!(ack < answer, "{id}: {seen:?}");
    }
    peer.leave();
    stop(job);
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A flood of streams on a topic the plugin does not read (2 000 streams of
/// 15 kB) and an endless stream on one it does (16 MiB and more, never
/// read): the first are dropped and counted, the second is aborted at the
/// per-stream limit; the job's memory stays bounded.
#[test]
fn stream_floods_keep_memory_bounded() {
    let server = LiveKitServer::start();
    let job = start_agent(&server, "echo", "flood", "echo-agent", "");
    let peer = Raw::join(&server, "flood", "mallory");
    let before = rss_kib(job.pid());
    let block = vec![7u8; 15_000];
    for i in 0..2_000 {
        let id = format!("f{i}");
        peer.send(header(&id, "nobody.reads", None, true), "echo-agent");
        peer.send(chunk(&id, 0, &block), "echo-agent");
        peer.send(trailer(&id), "echo-agent");
    }
    // echo.bytes is read only at the end (read_all): an endless stream
    // there hits the per-stream limit (16 MiB) and is aborted.
    peer.send(header("endless", "echo.bytes", None, true), "echo-agent");
    for i in 0..1_400u64 {
        peer.send(chunk("endless", i, &block), "echo-agent");
    }
    wait_log(
        &job,
        "stream endless on echo.bytes from mallory failed: Aborted (over the 16777216-byte limit",
    );
    let after = rss_kib(job.pid());
    eprintln!(
        "MEASURED stream flood: job RSS {before} KiB -> {after} KiB (30 MB dropped, 21 MB endless)"
    );
    assert!(
        after < before + 48 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    peer.leave();
    let log = stop(job);
    assert!(
        log.contains("dropped a data stream: the plugin does not accept its topic"),
        "{log}"
    );
}
