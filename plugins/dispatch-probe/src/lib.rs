//! `dispatch-probe`: the worker tests' plugin. On `run` it prints one JSON
//! line on stdout with what the job was given —
//! `{"probe":"started","job_id":…,"room":…,"identity":…,"metadata":…}` —
//! then acts on the job metadata (the dispatch's metadata):
//! - `exit:N` returns N at once;
//! - `panic` panics (the host reports exit 70);
//! - `leak:N` allocates (and touches) N MiB every 100 ms until shutdown,
//!   for the worker's memory limits;
//! - anything else (e.g. `hold`) waits for shutdown, prints
//!   `{"probe":"shutdown","reason":…,"detail":…}` and returns 0; room
//!   events on the way that matter to the tests (`reconnecting`,
//!   `reconnected`) are printed as `{"probe":"event",…}`.
//!
//! The `started` line also carries what the dispatch said (ABI 1.4):
//! `agent_name`, `participant` (a participant job's), `attributes`.

use lk_plugin_api::sdk::{EventKind, JobContext, NextEvent};
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
        "agent_name": ctx.agent_name(),
        "participant": ctx.job_participant_identity(),
        "attributes": ctx.job_attributes().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
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
    let leak_mib: usize = metadata
        .strip_prefix("leak:")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut leaked: Vec<Vec<u8>> = Vec::new();
    loop {
        let wait = if leak_mib > 0 { 100 } else { 500 };
        match ctx.next_event(Duration::from_millis(wait)) {
            NextEvent::ShuttingDown => return 0,
            NextEvent::Event(ev)
                if matches!(ev.kind, EventKind::Reconnecting | EventKind::Reconnected) =>
            {
                print_line(
                    json!({"probe": "event", "event": ev.name, "reason": ev.reason, "room": ctx.room_name()}),
                );
            }
            _ => {}
        }
        if leak_mib > 0 {
            // Touched, so it is resident, not just reserved.
            leaked.push(vec![1u8; leak_mib * 1024 * 1024]);
        }
    }
}

lk_plugin_api::export_plugin!(name: "dispatch-probe", version: env!("CARGO_PKG_VERSION"), run: run);
