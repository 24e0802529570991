//! What the echo agent does for a LiveKit frontend besides audio (ABI 1.4;
//! the contract every example echo keeps, in Rust, C and Go):
//! - RPC method `echo` returns its payload unchanged (any other method is
//!   1400: the host answers it);
//! - each text stream on `lk.chat` is answered with an agent transcript
//!   segment on `lk.transcription` whose final text is `echo: ` and the
//!   message, for the agent's microphone track;
//! - a byte stream on `echo.bytes` is answered, to its sender only, by a
//!   text stream on `echo.bytes.sha256` holding the lowercase hex SHA-256
//!   of the bytes, with attribute `name` = the byte stream's name;
//! - when a participant joins, it calls RPC `frontend.hello` on them with
//!   its own identity as the payload and logs the answer or error code;
//! - the benchmark's protocol (`cargo xtask bench`): a stream on
//!   `bench.sink` is answered on `bench.sink.done` with its byte count; RPC
//!   `bench.source` with payload N returns, then sends the caller N bytes
//!   on `bench.source.data`.
//!
//! For the tests, job metadata `rpc=hang` also registers `hang` (a handler
//! that does not return for 60 s) and `rpc=many` 10 000 methods `m0` ...
//! `m9999` (each returns its own name).

use lk_plugin_api::rpc::{RpcError, RpcInvocation};
use lk_plugin_api::sdk::JobContext;
use lk_plugin_api::stream::{StreamKind, StreamOptions, StreamReader, CHAT_TOPIC};
use sha2::{Digest, Sha256};
use std::time::Duration;

const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Registers the RPC methods and the stream topics; returns false on a
/// host older than ABI 1.4 (the echo then only echoes).
pub fn start(ctx: &JobContext, mic_track_sid: &str, metadata: &str) -> bool {
    if !ctx.has_streams() {
        ctx.warn("echo: the host is older than ABI 1.4: no RPC, chat or byte streams");
        return false;
    }
    let echoed = ctx.register_rpc("echo", |inv: &RpcInvocation| Ok(inv.payload.clone()));
    let c = *ctx;
    let source = ctx.register_rpc("bench.source", move |inv: &RpcInvocation| {
        let n: usize = inv.payload.trim().parse().map_err(|_| {
            RpcError::new(RpcError::APPLICATION_ERROR, "payload is not a byte count")
        })?;
        let caller = inv.caller_identity.clone();
        std::thread::spawn(move || {
            let data = vec![b'x'; n];
            let opts = StreamOptions::bytes("bench.source.data", "bench.bin").to(&[&caller]);
            if let Err(e) = c.send_bytes(&data, &opts, SEND_TIMEOUT) {
                c.warn(&format!("echo: bench.source: {e}"));
            }
        });
        Ok(n.to_string())
    });
    for r in [echoed, source] {
        if let Err(e) = r {
            ctx.warn(&format!("echo: could not register an RPC method: {e}"));
        }
    }
    if metadata.split_whitespace().any(|kv| kv == "rpc=hang") {
        let _ = ctx.register_rpc("hang", |_: &RpcInvocation| {
            std::thread::sleep(Duration::from_secs(60));
            Ok("too late".to_string())
        });
    }
    if metadata.split_whitespace().any(|kv| kv == "rpc=many") {
        for i in 0..10_000 {
            let name = format!("m{i}");
            let answer = name.clone();
            if let Err(e) = ctx.register_rpc(&name, move |_: &RpcInvocation| Ok(answer.clone())) {
                ctx.warn(&format!("echo: registering {name} failed: {e}"));
                break;
            }
        }
        ctx.info("echo: 10000 methods registered");
    }
    for topic in [CHAT_TOPIC, "echo.bytes", "bench.sink"] {
        if let Err(e) = ctx.accept_streams(topic) {
            ctx.warn(&format!("echo: cannot accept streams on {topic}: {e}"));
        }
    }
    let streams = ctx.stream_channel(64);
    let c = *ctx;
    let mic = mic_track_sid.to_string();
    std::thread::spawn(move || {
        for stream in streams {
            let mic = mic.clone();
            // One thread per stream: a large one never holds up a chat.
            std::thread::spawn(move || answer(&c, stream, &mic));
        }
    });
    true
}

fn answer(ctx: &JobContext, mut stream: Box<StreamReader>, mic: &str) {
    let info = stream.info().clone();
    let body = match stream.read_all() {
        Ok(b) => b,
        Err(e) => {
            ctx.info(&format!(
                "echo: stream {} on {} from {} failed: {e} ({})",
                info.stream_id,
                info.topic,
                info.sender_identity,
                stream.error().unwrap_or("")
            ));
            return;
        }
    };
    let result = match info.topic.as_str() {
        CHAT_TOPIC if info.kind == StreamKind::Text => {
            let message = String::from_utf8_lossy(&body);
            ctx.info(&format!(
                "echo: chat from {}: {message}",
                info.sender_identity
            ));
            ctx.agent_transcript(mic, SEND_TIMEOUT).and_then(|mut t| {
                t.push("echo: ")?;
                t.push(&message)?;
                t.finish()
            })
        }
        "echo.bytes" => {
            let digest: String = Sha256::digest(&body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            ctx.info(&format!(
                "echo: {} bytes named {} from {}: sha256 {digest}",
                body.len(),
                info.name,
                info.sender_identity
            ));
            let opts = StreamOptions::text("echo.bytes.sha256")
                .attribute("name", &info.name)
                .to(&[&info.sender_identity]);
            ctx.send_text(&digest, &opts, SEND_TIMEOUT)
        }
        "bench.sink" => {
            let opts = StreamOptions::text("bench.sink.done").to(&[&info.sender_identity]);
            ctx.send_text(&body.len().to_string(), &opts, SEND_TIMEOUT)
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        ctx.warn(&format!("echo: answering {} failed: {e}", info.topic));
    }
}

/// Calls `frontend.hello` on a participant who joined (on a thread of its
/// own: the call may take the ack and response timeouts).
pub fn greet(ctx: &JobContext, identity: &str) {
    if !ctx.has_streams() {
        return;
    }
    let c = *ctx;
    let who = identity.to_string();
    std::thread::spawn(move || {
        let me = c.participant_identity().unwrap_or("");
        match c.perform_rpc(&who, "frontend.hello", me, Duration::from_secs(10)) {
            Ok(answer) => c.info(&format!("echo: frontend.hello to {who} answered: {answer}")),
            Err(lk_plugin_api::rpc::CallError::Rpc(e)) => c.info(&format!(
                "echo: frontend.hello to {who} failed with code {}: {}",
                e.code, e.message
            )),
            Err(e) => c.info(&format!("echo: frontend.hello to {who} not made: {e}")),
        }
    });
}
