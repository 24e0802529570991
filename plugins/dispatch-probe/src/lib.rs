//! `dispatch-probe`: the worker tests' plugin. On `run` it prints one JSON
//! line on stdout with what the job was given —
//! `{"probe":"started","job_id":…,"room":…,"identity":…,"metadata":…}` —
//! then acts on the job metadata (the dispatch's metadata):
//! - `exit:N` returns N at once;
//! - `panic` panics (the host reports exit 70);
//! - anything else (e.g. `hold`) waits for shutdown, prints
//!   `{"probe":"shutdown","reason":…,"detail":…}` and returns 0.

use lk_plugin_api::sdk::{JobContext, NextEvent};
use serde_json::json;
use std::io::Write;
use std::time::Duration;

fn print_line(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not change what the job does.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn run(ctx: &JobContext) -> i32 {
    print_line(json!({
        "probe": "started",
        "job_id": ctx.job_id(),
        "room": ctx.room_name(),
        "identity": ctx.participant_identity(),
        "metadata": ctx.metadata(),
    }));
    let metadata = ctx.metadata().trim();
    if let Some(code) = metadata.strip_prefix("exit:") {
        return code.trim().parse().unwrap_or(1);
    }
    if metadata == "panic" {
        panic!("dispatch-probe panics on purpose (metadata \"panic\")");
    }
    ctx.on_shutdown(|info| {
        print_line(json!({"probe": "shutdown", "reason": info.reason, "detail": info.detail}));
    });
    loop {
        if let NextEvent::ShuttingDown = ctx.next_event(Duration::from_millis(500)) {
            return 0;
        }
    }
}

lk_plugin_api::export_plugin!(name: "dispatch-probe", version: env!("CARGO_PKG_VERSION"), run: run);
