//! One job process per job: spawning `lk-go job run-assigned`, the pipe to
//! it, its output, and its end.
//!
//! Owns: the child's process (its own process group, so a terminal's Ctrl-C
//! reaches the worker, which decides, and not every job at once), the
//! worker's end of the [`super::ipc`] socket, and forwarding the child's
//! stdout and stderr line by line, each marked with its job id. Must not
//! touch: the agent connection or the job table (`worker::mod` acts on the
//! [`ChildEvent`]s).
//!
//! Secrets: the child's argv holds only the plugin path and job flags; the
//! job token travels over the socket; `LIVEKIT_API_SECRET` and
//! `LIVEKIT_TOKEN` are removed from its environment (a job needs neither).

use super::ipc::{self, FromJob, JobStats, ShutdownCause, ToJob};
use crate::runner::Verdict;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// How to start a job process.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    /// The `lk-go` executable (normally `std::env::current_exe()`).
    pub exe: PathBuf,
    /// Everything after `lk-go job run-assigned`: the plugin and job flags.
    pub args: Vec<OsString>,
    /// JSON: forward lines that are JSON objects as they are.
    pub json_logs: bool,
}

/// What a job process did.
#[derive(Debug)]
pub enum ChildEvent {
    /// The job's verdict; answer on `ack` once it was sent to the server.
    Verdict {
        job_id: String,
        verdict: Verdict,
        ack: oneshot::Sender<()>,
    },
    /// The job's participant joined the room.
    Joined { job_id: String },
    /// The job's counters (cumulative).
    Stats { job_id: String, stats: JobStats },
    /// The process ended: its exit code, or the signal that killed it.
    Exited {
        job_id: String,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// The worker's handle on a running job process.
#[derive(Debug)]
pub struct ChildHandle {
    pub pid: u32,
    to_job: mpsc::UnboundedSender<ToJob>,
}

impl ChildHandle {
    /// Asks the job to run its shutdown cascade. Idempotent on the job's
    /// side (the first reason wins); a no-op once the process is gone.
    pub fn shutdown(&self, cause: ShutdownCause, detail: &str) {
        let _ = self.to_job.send(ToJob::Shutdown {
            cause,
            detail: detail.to_string(),
        });
    }

    /// SIGKILL to the job's process group: the last resort after the grace
    /// period.
    pub fn kill(&self) {
        // pid 0 would be this worker's own group: never signal it.
        if self.pid == 0 {
            return;
        }
        // SAFETY: kill(2) with a negative pid signals the group the child
        // leads (it called setpgid(0, 0)); no memory is involved.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
    }
}

/// Starts a job process for `assignment` (a [`ToJob::Assignment`]).
///
/// Errors: the executable could not be started (the caller reports the job
/// as failed).
pub fn spawn(
    spec: &ChildSpec,
    job_id: &str,
    assignment: ToJob,
    events: mpsc::UnboundedSender<ChildEvent>,
) -> std::io::Result<ChildHandle> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&spec.exe);
    cmd.arg("job")
        .arg("run-assigned")
        .args(&spec.args)
        .env_remove("LIVEKIT_API_SECRET")
        .env_remove("LIVEKIT_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls (setpgid, dup2, fcntl) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if theirs_fd == ipc::CHILD_FD {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                let flags = libc::fcntl(theirs_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(theirs_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(theirs_fd, ipc::CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(theirs);
    let pid = child.id().unwrap_or(0);
    ours.set_nonblocking(true)?;
    let sock = tokio::net::UnixStream::from_std(ours)?;
    let (read_half, mut write_half) = sock.into_split();

    let (to_job, mut to_job_rx) = mpsc::unbounded_channel::<ToJob>();
    let _ = to_job.send(assignment);
    tokio::spawn(async move {
        while let Some(msg) = to_job_rx.recv().await {
            if write_half.write_all(&ipc::encode(&msg)).await.is_err() {
                break;
            }
        }
    });

    let reader_events = events.clone();
    let reader_job = job_id.to_string();
    let ack_to_job = to_job.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(read_half);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_bounded_line(&mut reader, &mut line).await {
                Ok(true) => {}
                _ => break,
            }
            match ipc::decode::<FromJob>(&line) {
                Ok(FromJob::Verdict { success, error }) => {
                    let (ack, acked) = oneshot::channel();
                    let sent = reader_events.send(ChildEvent::Verdict {
                        job_id: reader_job.clone(),
                        verdict: Verdict { success, error },
                        ack,
                    });
                    if sent.is_ok() {
                        let _ = acked.await;
                    }
                    let _ = ack_to_job.send(ToJob::VerdictSent);
                }
                Ok(FromJob::Joined) => {
                    let _ = reader_events.send(ChildEvent::Joined {
                        job_id: reader_job.clone(),
                    });
                }
                Ok(FromJob::Stats(stats)) => {
                    let _ = reader_events.send(ChildEvent::Stats {
                        job_id: reader_job.clone(),
                        stats,
                    });
                }
                Err(e) => tracing::warn!(job_id = %reader_job, "{e}"),
            }
        }
    });

    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_output(
            out,
            job_id.to_string(),
            "stdout",
            spec.json_logs,
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_output(
            err,
            job_id.to_string(),
            "stderr",
            spec.json_logs,
        ));
    }
    let waiter_job = job_id.to_string();
    tokio::spawn(async move {
        use std::os::unix::process::ExitStatusExt;
        let (code, signal) = match child.wait().await {
            Ok(status) => (status.code(), status.signal()),
            Err(_) => (None, None),
        };
        let _ = events.send(ChildEvent::Exited {
            job_id: waiter_job,
            code,
            signal,
        });
    });
    Ok(ChildHandle { pid, to_job })
}

/// Reads one line into `line` (without its newline), at most
/// [`ipc::MAX_LINE`] bytes (a longer line is an error). `Ok(false)` at EOF.
async fn read_bounded_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(!line.is_empty());
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if line.len() > ipc::MAX_LINE {
            return Err(std::io::Error::other("line too long"));
        }
        if done {
            line.pop();
            return Ok(true);
        }
    }
}

/// Longest line forwarded from a job's output, in bytes; longer lines are
/// forwarded in pieces of this size.
pub const MAX_OUTPUT_LINE: usize = 64 * 1024;

/// Copies a job's output to the worker's stderr (through the log sink:
/// never blocking the job, redacted), one line at a time, marked with the
/// job id: `[AJ_…] line` in text mode; in JSON mode, a JSON object gets a
/// `job_id` field and any other line is wrapped as
/// `{"job_id", "stream", "line"}`. Invalid UTF-8 is replaced.
async fn forward_output<R: AsyncRead + Unpin>(
    out: R,
    job_id: String,
    stream: &'static str,
    json: bool,
) {
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Reads up to a newline, or MAX_OUTPUT_LINE bytes, or EOF.
        let done = loop {
            let buf = match reader.fill_buf().await {
                Ok(b) => b,
                Err(_) => break true,
            };
            if buf.is_empty() {
                break true;
            }
            let room = MAX_OUTPUT_LINE - line.len();
            let (take, end) = match buf.iter().take(room).position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (
                    buf.len().min(room),
                    line.len() + buf.len() >= MAX_OUTPUT_LINE,
                ),
            };
            line.extend_from_slice(&buf[..take]);
            reader.consume(take);
            if end {
                break false;
            }
        };
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if !line.is_empty() {
            let text = String::from_utf8_lossy(&line);
            if json {
                let record = match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(mut fields)) => {
                        fields.insert("job_id".into(), job_id.clone().into());
                        serde_json::Value::Object(fields)
                    }
                    _ => serde_json::json!({"job_id": job_id, "stream": stream, "line": text}),
                };
                crate::logsink::line(&record.to_string());
            } else {
                crate::logsink::line(&format!("[{job_id}] {text}"));
            }
        }
        if done {
            break;
        }
    }
}

#[cfg(test)]
impl ChildHandle {
    /// A handle with no process behind it (pid 0 is never signalled by the
    /// tests that use it): what the worker sends the job is received here.
    pub(crate) fn fake() -> (ChildHandle, mpsc::UnboundedReceiver<ToJob>) {
        let (to_job, rx) = mpsc::unbounded_channel();
        (ChildHandle { pid: 0, to_job }, rx)
    }
}
