//! The process's stderr: non-blocking, lossy, redacted.
//!
//! Owns: one writer thread (`lk-go-log`) that owns stderr, a queue in front
//! of it bounded in bytes ([`QUEUE_BYTES`]), and [`flush`]. Every log line
//! and every `lk-go: error:` line goes through here. Architecture invariant:
//! **no thread of the job ever blocks on stderr or fails because of it.** A
//! full queue (nobody reads the pipe: a paused pager, a stuck `tee`, a
//! terminal stopped with Ctrl-S) drops the line and counts it
//! ([`dropped_lines`]); a write error (closed pipe, `/dev/full`) is counted
//! the same way. The few lines that say how the job ended ([`line_always`])
//! are queued even when the log is over budget, so a late reader still sees
//! them. Each line is passed through [`crate::secrets::redact`] first.
//! Also what makes any message one printable line ([`one_printable_line`]),
//! used by the CLI and the worker alike.
//!
//! Why not `tracing-appender`'s non-blocking writer: its guard `println!`s
//! to stdout when its queue is full at shutdown, which writes into the
//! plugin's stdout, or panics when stdout is closed.
//!
//! Must not touch: the log format or filter (`crate::cli`).

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Bytes of log lines the queue holds while stderr is not being read (a
/// plugin may log 64 KiB per message; a line count alone would let the
/// queue grow to hundreds of MiB).
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;

enum Msg {
    /// A line; `budgeted` lines count against [`QUEUE_BYTES`] until written.
    Line {
        bytes: Vec<u8>,
        budgeted: bool,
    },
    Flush(Sender<()>),
}

static QUEUE: OnceLock<Mutex<Sender<Msg>>> = OnceLock::new();
static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn send(msg: Msg) -> bool {
    match queue() {
        Some(q) => q
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(msg)
            .is_ok(),
        None => false,
    }
}

fn queue() -> Option<&'static Mutex<Sender<Msg>>> {
    if let Some(q) = QUEUE.get() {
        return Some(q);
    }
    let (tx, rx) = channel::<Msg>();
    let spawned = std::thread::Builder::new()
        .name("lk-go-log".into())
        .spawn(move || {
            // The real stderr: past the pipe plugins write into (see
            // `crate::stdio`), so host lines keep their own accounting.
            // SAFETY: the descriptor stays open for the life of the process;
            // ManuallyDrop never closes it.
            let mut stderr = std::mem::ManuallyDrop::new(unsafe {
                <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(crate::stdio::real_stderr())
            });
            for msg in rx {
                match msg {
                    Msg::Line { bytes, budgeted } => {
                        if stderr.write_all(&bytes).is_err() {
                            DROPPED.fetch_add(1, Ordering::Relaxed);
                        }
                        if budgeted {
                            QUEUED_BYTES.fetch_sub(bytes.len(), Ordering::AcqRel);
                        }
                    }
                    Msg::Flush(ack) => {
                        let _ = stderr.flush();
                        let _ = ack.send(());
                    }
                }
            }
        });
    match spawned {
        Ok(_) => {
            let _ = QUEUE.set(Mutex::new(tx));
            QUEUE.get()
        }
        // No thread: nothing can be written without risking a block.
        Err(_) => None,
    }
}

/// Queues `bytes` (one or more whole lines) for stderr, redacted. Never
/// blocks; drops and counts when the queue is over [`QUEUE_BYTES`].
pub fn write(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let line = crate::secrets::redact(&text).into_owned().into_bytes();
    let len = line.len();
    if QUEUED_BYTES.fetch_add(len, Ordering::AcqRel) + len > QUEUE_BYTES {
        QUEUED_BYTES.fetch_sub(len, Ordering::AcqRel);
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if !send(Msg::Line {
        bytes: line,
        budgeted: true,
    }) {
        QUEUED_BYTES.fetch_sub(len, Ordering::AcqRel);
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes one line (a newline is added).
pub fn line(text: &str) {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    write(&bytes);
}

static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// With `--log-format json` every line is a JSON object, the final lines of
/// [`line_always`] too (set once by the CLI with the log format).
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// `text` as a JSON log object shaped like tracing-subscriber's JSON lines
/// (`timestamp`, `level`, `fields.message`, `target`), so a consumer
/// parsing the log reads the final line like any other. The message keeps
/// its `lk-go: error:` prefix.
fn as_json_line(text: &str) -> String {
    let level = if text.starts_with("lk-go: error:") {
        "ERROR"
    } else {
        "WARN"
    };
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({
        "timestamp": timestamp,
        "level": level,
        "fields": {"message": text},
        "target": "lk_go",
    })
    .to_string()
}

/// Like [`line`], but queued even when the log is over budget: for the few
/// lines that say how the job ended (`lk-go: error: …`). Still never
/// blocks. With `--log-format json` ([`set_json`]) the line is a JSON
/// object.
pub fn line_always(text: &str) {
    let text = crate::secrets::redact(text);
    let line = if JSON.load(Ordering::Relaxed) {
        format!("{}\n", as_json_line(&text))
    } else {
        format!("{text}\n")
    };
    if !send(Msg::Line {
        bytes: line.into_bytes(),
        budgeted: false,
    }) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits up to `timeout` for what is queued so far to reach stderr. Returns
/// false when stderr did not take it in time (the process may exit anyway).
pub fn flush(timeout: Duration) -> bool {
    let (ack_tx, ack_rx) = channel();
    if !send(Msg::Flush(ack_tx)) {
        return false;
    }
    ack_rx.recv_timeout(timeout).is_ok()
}

/// Lines dropped so far (queue full or write error).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// `io::Write` onto the sink, for tracing's fmt layer: each formatted event
/// arrives as one `write` of whole lines. Never fails.
pub struct SinkWriter;

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Longest error line printed, in characters: a server's error body can be
/// megabytes.
pub const MAX_ERROR_LINE: usize = 2000;

/// `message` as one printable line: control characters (newlines, ESC
/// sequences from a server's error body or a plugin's name) become spaces,
/// and the length is capped at [`MAX_ERROR_LINE`].
pub fn one_printable_line(message: &str) -> String {
    let mut out: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_LINE)
        .collect();
    if message.chars().count() > MAX_ERROR_LINE {
        out.push_str(" [cut]");
    }
    out
}
