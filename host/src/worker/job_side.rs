//! The job process's end of the worker pipe (`lk-go job run-assigned`).
//!
//! Owns: reading the assignment, turning the worker's requests and the
//! pipe's EOF into `JobContext::shutdown`, and sending the verdict before
//! the job leaves the room. Must not touch: the job's lifecycle (the runner
//! calls [`WorkerPipe`] as its [`BeforeLeave`] reporter).
//!
//! Reasons a plugin sees (ABI 1.4; a 1.3 plugin sees the closest older one,
//! `ShutdownReason::as_seen_by_abi_minor`):
//! - the server terminated the job → `job_terminated` (the server removes
//!   the agent participant 3 s later anyway);
//! - the worker stops (drain timeout, second signal) → `worker_stopping`;
//! - the worker shut the job down over `--job-memory-limit` → `memory_limit`;
//! - the worker process is gone (pipe EOF) → `worker_lost`.

use super::ipc::{self, FromJob, JobStats, ShutdownCause, ToJob};
use crate::job::{JobContext, ShutdownReason};
use crate::runner::{BeforeLeave, Verdict, VERDICT_REPORT_DEADLINE};
use std::io::BufRead;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Notify};

/// The pipe after its first line: the socket and whatever the worker sent
/// after the assignment that was already read.
#[derive(Debug)]
pub struct PipeStart {
    stream: std::os::unix::net::UnixStream,
    leftover: Vec<u8>,
}

/// How often a job sends its counters to the worker (when they changed).
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// How long a job process waits for its assignment.
pub const ASSIGNMENT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes fd [`ipc::CHILD_FD`] and reads the assignment from it. Errors
/// (one line each) when the process was not started by a worker.
pub fn read_assignment() -> Result<(PipeStart, ToJob), String> {
    const NOT_A_WORKER: &str = "`job run-assigned` is started by `lk-go worker`, which hands it a job over a pipe; to run a job by hand use `lk-go job run-script`";
    // SAFETY: fstat only fills the struct; an unopened fd returns -1.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(ipc::CHILD_FD, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if !is_socket {
        return Err(NOT_A_WORKER.to_string());
    }
    // SAFETY: fd 3 is an open socket this process owns from now on.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(ipc::CHILD_FD) };
    stream
        .set_read_timeout(Some(ASSIGNMENT_READ_TIMEOUT))
        .map_err(|e| format!("worker pipe: {e}"))?;
    let mut reader = std::io::BufReader::new(stream);
    let mut line = Vec::new();
    let read = std::io::Read::take(&mut reader, ipc::MAX_LINE as u64).read_until(b'\n', &mut line);
    match read {
        Ok(0) => return Err(NOT_A_WORKER.to_string()),
        Ok(_) if line.last() == Some(&b'\n') => {
            line.pop();
        }
        Ok(_) => return Err("the worker's assignment was cut short or too long".to_string()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(format!(
                "no assignment from the worker within {} s; {NOT_A_WORKER}",
                ASSIGNMENT_READ_TIMEOUT.as_secs()
            ))
        }
        Err(e) => {
            return Err(format!(
                "could not read the assignment from the worker: {e}"
            ))
        }
    }
    let assignment: ToJob = ipc::decode(&line)?;
    let leftover = reader.buffer().to_vec();
    let stream = reader.into_inner();
    stream
        .set_read_timeout(None)
        .map_err(|e| format!("worker pipe: {e}"))?;
    Ok((PipeStart { stream, leftover }, assignment))
}

impl PipeStart {
    /// Tells the worker the job failed before it could run (e.g. an
    /// assignment the job refuses); blocking, for a process about to exit.
    pub fn send_failure_now(&self, error: &str) {
        use std::io::Write;
        let line = ipc::encode(&FromJob::Verdict {
            success: false,
            error: crate::logsink::one_printable_line(error),
        });
        let _ = (&self.stream).write_all(&line);
    }
}

/// The job's side of the pipe once the job runs.
#[derive(Debug)]
pub struct WorkerPipe {
    /// Shared with the stats task; each message is written whole under it.
    writer: Arc<Mutex<tokio::net::unix::OwnedWriteHalf>>,
    acked: Arc<Notify>,
}

impl WorkerPipe {
    /// Starts reading the worker's requests: each `Shutdown` (and EOF)
    /// shuts `ctx` down. Must be called on the job's runtime.
    pub fn attach(start: PipeStart, ctx: JobContext) -> std::io::Result<WorkerPipe> {
        start.stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(start.stream)?;
        let (mut read_half, write_half) = stream.into_split();
        let acked = Arc::new(Notify::new());
        let reader_acked = acked.clone();
        let mut pending = start.leftover;
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            loop {
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    match ipc::decode::<ToJob>(&line[..line.len() - 1]) {
                        Ok(ToJob::VerdictSent) => reader_acked.notify_one(),
                        Ok(ToJob::Shutdown { cause, detail }) => {
                            let reason = match cause {
                                ShutdownCause::Terminated => ShutdownReason::JobTerminated,
                                ShutdownCause::WorkerStopping => ShutdownReason::WorkerStopping,
                                ShutdownCause::MemoryLimit => ShutdownReason::MemoryLimit,
                            };
                            ctx.shutdown(reason, detail);
                        }
                        Ok(ToJob::Assignment { .. }) => {
                            tracing::warn!("a second assignment on the worker pipe; ignored")
                        }
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
                if pending.len() > ipc::MAX_LINE {
                    pending.clear();
                }
                match read_half.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                }
            }
            ctx.shutdown(
                ShutdownReason::WorkerLost,
                "the lk-go worker that started this job is gone (its pipe closed)",
            );
            // Nobody will acknowledge a verdict any more.
            reader_acked.notify_one();
        });
        let pipe = WorkerPipe {
            writer: Arc::new(Mutex::new(write_half)),
            acked,
        };
        // The job's counters, for the worker's metrics; ends with the pipe.
        let writer = pipe.writer.clone();
        tokio::spawn(async move {
            let mut last = JobStats::default();
            let mut every = tokio::time::interval(STATS_INTERVAL);
            loop {
                every.tick().await;
                let now = JobStats {
                    audio_frames_dropped: crate::media::audio_frames_dropped(),
                    log_lines_dropped: crate::logsink::dropped_lines(),
                    reconnects: crate::room::recoveries(),
                };
                if now == last {
                    continue;
                }
                last = now;
                let line = ipc::encode(&FromJob::Stats(now));
                if writer.lock().await.write_all(&line).await.is_err() {
                    break;
                }
            }
        });
        Ok(pipe)
    }

    /// Tells the worker the job's participant joined (its dispatch to
    /// joined latency). Never waits for an answer.
    pub async fn joined(&self) {
        let line = ipc::encode(&FromJob::Joined);
        let _ = self.writer.lock().await.write_all(&line).await;
    }

    async fn send_verdict(&self, verdict: Verdict) {
        let line = ipc::encode(&FromJob::Verdict {
            success: verdict.success,
            error: verdict.error,
        });
        if self.writer.lock().await.write_all(&line).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(VERDICT_REPORT_DEADLINE, self.acked.notified()).await;
    }

    /// For a job that could not run (e.g. the server refused the join): the
    /// worker reports `error` as the job's failure.
    pub async fn report_failure_before_join(&self, error: &str) {
        self.send_verdict(Verdict {
            success: false,
            error: crate::logsink::one_printable_line(error),
        })
        .await;
    }
}

#[async_trait::async_trait]
impl BeforeLeave for WorkerPipe {
    async fn joined(&self) {
        WorkerPipe::joined(self).await;
    }

    async fn report(&self, verdict: Verdict) {
        self.send_verdict(verdict).await;
    }
}
