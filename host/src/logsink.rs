//! The process's stderr: non-blocking, lossy, redacted.
//!
//! Owns: one writer thread (`lk-go-log`) that owns stderr, a bounded queue
//! in front of it, and [`flush`]. Every log line and every `lk-go: error:`
//! line goes through here. Architecture invariant: **no thread of the job
//! ever blocks on stderr or fails because of it.** A full queue (nobody
//! reads the pipe: a paused pager, a stuck `tee`, a terminal stopped with
//! Ctrl-S) drops the line and counts it ([`dropped_lines`]); a write error
//! (closed pipe, `/dev/full`) is counted the same way. Each line is passed
//! through [`crate::secrets::redact`] first.
//!
//! Why not `tracing-appender`'s non-blocking writer: its guard `println!`s
//! to stdout when its queue is full at shutdown, which writes into the
//! plugin's stdout, or panics when stdout is closed.
//!
//! Must not touch: the log format or filter (`crate::cli`).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Sender, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

/// Lines the queue holds while stderr is not being read.
pub const QUEUE_LINES: usize = 4096;

enum Msg {
    Line(Vec<u8>),
    Flush(Sender<()>),
}

static QUEUE: OnceLock<SyncSender<Msg>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn queue() -> Option<&'static SyncSender<Msg>> {
    if let Some(q) = QUEUE.get() {
        return Some(q);
    }
    let (tx, rx) = sync_channel::<Msg>(QUEUE_LINES);
    let spawned = std::thread::Builder::new()
        .name("lk-go-log".into())
        .spawn(move || {
            let stderr = std::io::stderr();
            for msg in rx {
                match msg {
                    Msg::Line(bytes) => {
                        let mut e = stderr.lock();
                        if e.write_all(&bytes).is_err() {
                            DROPPED.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Msg::Flush(ack) => {
                        let _ = stderr.lock().flush();
                        let _ = ack.send(());
                    }
                }
            }
        });
    match spawned {
        Ok(_) => {
            let _ = QUEUE.set(tx);
            QUEUE.get()
        }
        // No thread: nothing can be written without risking a block.
        Err(_) => None,
    }
}

/// Queues `bytes` (one or more whole lines) for stderr, redacted. Never
/// blocks; drops and counts when the queue is full.
pub fn write(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let line = crate::secrets::redact(&text).into_owned().into_bytes();
    let sent = match queue() {
        Some(q) => q.try_send(Msg::Line(line)),
        None => Err(TrySendError::Disconnected(Msg::Line(Vec::new()))),
    };
    if sent.is_err() {
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

/// Waits up to `timeout` for what is queued so far to reach stderr. Returns
/// false when stderr did not take it in time (the process may exit anyway).
pub fn flush(timeout: Duration) -> bool {
    let Some(q) = queue() else { return false };
    let (ack_tx, ack_rx) = std::sync::mpsc::channel();
    if q.try_send(Msg::Flush(ack_tx)).is_err() {
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
