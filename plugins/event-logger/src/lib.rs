//! `event-logger`: prints one JSON object per room event on stdout, e.g.
//! `{"event":"track_subscribed","participant_identity":"alice",...}`, and
//! returns 0 when the job shuts down. A shutdown hook prints
//! `{"event":"shutdown","reason":...}` so the hook's run is visible too.
//! First it prints `{"event":"job",...}`: what the dispatch says about the
//! job (ABI 1.4). Job metadata `keep_on_participant_left` makes it opt out
//! of ending when the job's participant leaves.

use lk_plugin_api::sdk::{Event, EventKind, JobContext, NextEvent};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::time::Duration;

fn print_line(v: Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not kill the job; the event is just not shown.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn event_json(ev: &Event) -> Value {
    let mut m = Map::new();
    m.insert("event".into(), json!(ev.name));
    m.insert(
        "participant_identity".into(),
        json!(ev.participant_identity),
    );
    m.insert("participant_sid".into(), json!(ev.participant_sid));
    if ev.kind.is_track_event() || ev.kind == EventKind::LocalTrackSubscribed {
        m.insert("track_sid".into(), json!(ev.track_sid));
        m.insert("track_name".into(), json!(ev.track_name));
        m.insert("kind".into(), json!(ev.track_kind.as_str()));
        m.insert("source".into(), json!(ev.track_source.as_str()));
    }
    if matches!(
        ev.kind,
        EventKind::Disconnected | EventKind::Reconnecting | EventKind::Reconnected
    ) {
        m.insert("reason".into(), json!(ev.reason));
    }
    Value::Object(m)
}

fn run(ctx: &JobContext) -> i32 {
    if ctx.metadata().contains("keep_on_participant_left") {
        ctx.set_close_on_participant_left(false);
    }
    let attributes: Map<String, Value> = ctx
        .job_attributes()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    print_line(json!({
        "event": "job",
        "participant_identity": ctx.job_participant_identity().unwrap_or(""),
        "agent_name": ctx.agent_name(),
        "attributes": attributes,
    }));
    ctx.on_shutdown(|info| {
        print_line(json!({"event": "shutdown", "reason": info.reason, "detail": info.detail}));
    });
    loop {
        match ctx.next_event(Duration::from_millis(500)) {
            NextEvent::Event(ev) => print_line(event_json(&ev)),
            NextEvent::Missed(n) => print_line(json!({"event": "missed", "count": n})),
            NextEvent::Timeout => continue,
            NextEvent::ShuttingDown => return 0,
        }
    }
}

lk_plugin_api::export_plugin!(name: "event-logger", version: env!("CARGO_PKG_VERSION"), run: run);
