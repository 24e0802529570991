//! The pipe between a worker and one job process: newline-delimited JSON
//! over a Unix socket pair the child inherits as file descriptor
//! [`CHILD_FD`].
//!
//! Owns: the message vocabulary and its encoding, for both ends. Must not
//! touch: processes, the agent connection or the job itself; the worker
//! (`worker::child`) and the job process (`cli`'s hidden `job run-assigned`)
//! act on the messages.
//!
//! Why a socket and not argv, env or logs: the job's access token is a
//! credential (never on argv, where `ps` shows it); the status the worker
//! reports to the server must not depend on parsing log lines; and EOF on
//! the socket tells the job that its worker is gone (chosen over
//! `PR_SET_PDEATHSIG`, which fires when the *thread* that forked exits and
//! is Linux-only).
//!
//! The conversation, in order:
//! 1. worker → job: one [`ToJob::Assignment`] line.
//! 2. job → worker: one [`FromJob::Verdict`] line, sent once shutdown has
//!    begun and **before the job leaves the room** (the server records a job
//!    whose participant leaves first as failed); the job waits for
//!    [`ToJob::VerdictSent`] (or a short deadline) before leaving. A job that
//!    fails before joining sends its verdict and exits.
//! 3. job → worker, any time before the verdict: [`FromJob::Joined`] once
//!    the job's participant joined the room, [`FromJob::Stats`] every few
//!    seconds (the worker's metrics).
//! 4. worker → job, at any time: [`ToJob::Shutdown`] (idempotent).
//!    EOF from the worker means the worker is gone: the job shuts down.

use serde::{Deserialize, Serialize};

/// The descriptor number at which the job process finds its end of the
/// socket (the first one after stdin, stdout and stderr).
pub const CHILD_FD: i32 = 3;

/// Longest line either end accepts, in bytes: an assignment carries the job
/// metadata (at most 512 KiB, LiveKit's limit) plus a token and room names.
pub const MAX_LINE: usize = 1024 * 1024;

/// Worker → job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToJob {
    /// What to run: sent once, first. `token` is the server-minted job
    /// token (a credential: never logged).
    Assignment {
        /// The server's URLs, the one the worker is registered with first.
        urls: Vec<String>,
        token: String,
        job_id: String,
        room: String,
        identity: String,
        metadata: String,
        /// The participant a participant/publisher job is for (empty for
        /// a room job).
        #[serde(default)]
        participant_identity: String,
        #[serde(default)]
        agent_name: String,
        /// The dispatch's attributes, sorted by key.
        #[serde(default)]
        attributes: Vec<(String, String)>,
    },
    /// The worker sent the verdict to the server; the job may leave.
    VerdictSent,
    /// Shut the job down (the cascade), with this reason and detail.
    Shutdown {
        cause: ShutdownCause,
        detail: String,
    },
}

/// Why the worker asks a job to shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownCause {
    /// The server sent `JobTermination` (e.g. the dispatch was deleted).
    Terminated,
    /// The worker is shutting down (drain timeout, or a second signal).
    WorkerStopping,
    /// The job's memory is over the worker's `--job-memory-limit`.
    MemoryLimit,
}

/// Job → worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromJob {
    /// The job's outcome as the server should record it: success, or
    /// failure with a one-line error.
    Verdict { success: bool, error: String },
    /// The job's participant joined the room.
    Joined,
    /// Counters since the job process started (cumulative).
    Stats(JobStats),
}

/// What a job process counts, for the worker's metrics. Cumulative since
/// the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// Audio frames dropped because the plugin read too slowly.
    pub audio_frames_dropped: u64,
    /// Log lines the job dropped (output blocked or failed).
    pub log_lines_dropped: u64,
    /// Times the room session resumed or rejoined.
    pub reconnects: u64,
}

/// One message as a line (with its newline).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising these enums of strings and bools cannot fail.
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// One line (without its newline) as a message.
pub fn decode<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(line).map_err(|e| format!("malformed worker pipe message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_single_lines() {
        let msgs = [
            ToJob::Assignment {
                urls: vec!["ws://h:1".into(), "ws://h:2".into()],
                token: "t".into(),
                job_id: "AJ_x".into(),
                room: "r".into(),
                identity: "agent-AJ_x".into(),
                metadata: "line1\nline2 {\"json\": true}".into(),
                participant_identity: "alice".into(),
                agent_name: "echo".into(),
                attributes: vec![("k".into(), "v".into())],
            },
            ToJob::VerdictSent,
            ToJob::Shutdown {
                cause: ShutdownCause::Terminated,
                detail: "d".into(),
            },
        ];
        for m in msgs {
            let line = encode(&m);
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            let back: ToJob = decode(&line[..line.len() - 1]).unwrap();
            assert_eq!(back, m);
        }
        let v = FromJob::Verdict {
            success: false,
            error: "e".into(),
        };
        let line = encode(&v);
        assert_eq!(decode::<FromJob>(&line[..line.len() - 1]).unwrap(), v);
        for v in [
            FromJob::Joined,
            FromJob::Stats(JobStats {
                audio_frames_dropped: 1,
                log_lines_dropped: 2,
                reconnects: 3,
            }),
        ] {
            let line = encode(&v);
            assert_eq!(decode::<FromJob>(&line[..line.len() - 1]).unwrap(), v);
        }
        assert!(decode::<ToJob>(b"{\"type\":\"bogus\"}").is_err());
    }
}
