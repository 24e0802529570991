//! The job model: [`Job`], [`JobContext`], [`ShutdownInfo`].
//!
//! Owns: job configuration and its validation, the cancellation token, the
//! idempotent `shutdown(reason)`, and shutdown hooks (registration, exactly-once
//! delivery, reverse order, per-hook deadline, overall budget, panic isolation).
//!
//! Must not touch: rooms, WebRTC, plugins or the process. The runner
//! (`crate::runner`) decides *when* to shut down and drives the cascade; this
//! module only guarantees *how* shutdown and hooks behave. The pure state
//! machine lives in [`state`] so that loom can model-check it.

mod hooks;
pub(crate) mod state;

use state::{Registered, ShutdownState};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pub use hooks::HookReport;

/// How long a worker has to answer a job assignment (used by the worker mode;
/// LiveKit Agents uses the same 7.5 s).
pub const ASSIGNMENT_TIMEOUT: Duration = Duration::from_millis(7500);

/// LiveKit server's default `limit.max_room_name_length`.
pub const MAX_ROOM_NAME_LEN: usize = 256;
/// LiveKit server's default `limit.max_participant_identity_length`.
pub const MAX_IDENTITY_LEN: usize = 256;
/// LiveKit server's default `limit.max_metadata_size` (512 KiB).
pub const MAX_METADATA_LEN: usize = 512 * 1024;

/// Why a job shuts down. `Display` gives the stable snake_case string that
/// plugins see (`lk_shutdown_info.reason_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShutdownReason {
    /// The plugin called `shutdown(reason)`.
    RequestedByPlugin,
    /// The plugin's `run` returned.
    PluginReturned,
    /// The plugin's `run` panicked (reported `LK_RUN_PANICKED`).
    PluginPanicked,
    /// The room's natural end: the room was deleted or closed (emptied),
    /// or this participant was removed. The plugin's code is the outcome.
    RoomDisconnected,
    /// The server went away or asked the job to come back: connection lost,
    /// liveness timeout, server shutting down, leave with action
    /// RESUME/RECONNECT — each only after resuming and rejoining failed.
    ServerUnreachable,
    SignalSigint,
    SignalSigterm,
    /// The job ran past its `--max-duration`.
    DeadlineExceeded,
    /// SIGHUP (terminal closed, ssh session dropped). ABI 1.2; plugins of
    /// ABI <= 1.1 see it as `signal_sigterm`.
    SignalSighup,
    /// Another participant joined with this job's identity and the server
    /// dropped the job's session. Plugins of ABI <= 1.1 see
    /// `room_disconnected`.
    DuplicateIdentity,
    /// The media connection (ICE/DTLS) could not be established or failed
    /// mid-job. Plugins of ABI <= 1.1 see `server_unreachable`.
    MediaFailed,
    /// The server ended the session for a reason that is neither the room's
    /// natural end nor an outage (state mismatch, join failure, unknown).
    /// Plugins of ABI <= 1.1 see `room_disconnected`.
    ServerError,
    /// The participant a participant/publisher job is for left the room
    /// (and the plugin did not opt out). The plugin's code is the outcome.
    /// ABI 1.4; older plugins see `room_disconnected`.
    ParticipantLeft,
    /// The server ended the job (DeleteDispatch → JobTermination). The
    /// plugin's code is the outcome. ABI 1.4; older plugins see
    /// `room_disconnected`.
    JobTerminated,
    /// The worker that started the job is stopping (drain over, second
    /// signal). ABI 1.4; older plugins see `signal_sigterm`.
    WorkerStopping,
    /// The worker that started the job went away (its pipe closed). ABI
    /// 1.4; older plugins see `signal_sigterm`.
    WorkerLost,
    /// The job's memory went over the worker's `--job-memory-limit`. ABI
    /// 1.4; older plugins see `signal_sigterm`.
    MemoryLimit,
}

impl ShutdownReason {
    pub const ALL: [ShutdownReason; 17] = [
        ShutdownReason::RequestedByPlugin,
        ShutdownReason::PluginReturned,
        ShutdownReason::PluginPanicked,
        ShutdownReason::RoomDisconnected,
        ShutdownReason::ServerUnreachable,
        ShutdownReason::SignalSigint,
        ShutdownReason::SignalSigterm,
        ShutdownReason::DeadlineExceeded,
        ShutdownReason::SignalSighup,
        ShutdownReason::DuplicateIdentity,
        ShutdownReason::MediaFailed,
        ShutdownReason::ServerError,
        ShutdownReason::ParticipantLeft,
        ShutdownReason::JobTerminated,
        ShutdownReason::WorkerStopping,
        ShutdownReason::WorkerLost,
        ShutdownReason::MemoryLimit,
    ];

    /// The reason a plugin built against ABI `1.<minor>` is shown: a reason
    /// its header does not define becomes the closest one it does (the
    /// header's rule "a plugin never receives a value its header does not
    /// define"). SIGHUP, duplicate identity, media failed and server error
    /// exist since ABI 1.2.
    pub fn as_seen_by_abi_minor(self, minor: u16) -> ShutdownReason {
        if minor >= 4 {
            return self;
        }
        let before_1_4 = match self {
            ShutdownReason::ParticipantLeft | ShutdownReason::JobTerminated => {
                ShutdownReason::RoomDisconnected
            }
            ShutdownReason::WorkerStopping
            | ShutdownReason::WorkerLost
            | ShutdownReason::MemoryLimit => ShutdownReason::SignalSigterm,
            other => other,
        };
        if minor >= 2 {
            return before_1_4;
        }
        match before_1_4 {
            ShutdownReason::SignalSighup => ShutdownReason::SignalSigterm,
            ShutdownReason::DuplicateIdentity | ShutdownReason::ServerError => {
                ShutdownReason::RoomDisconnected
            }
            ShutdownReason::MediaFailed => ShutdownReason::ServerUnreachable,
            other => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownReason::RequestedByPlugin => "requested_by_plugin",
            ShutdownReason::PluginReturned => "plugin_returned",
            ShutdownReason::PluginPanicked => "plugin_panicked",
            ShutdownReason::RoomDisconnected => "room_disconnected",
            ShutdownReason::ServerUnreachable => "server_unreachable",
            ShutdownReason::SignalSigint => "signal_sigint",
            ShutdownReason::SignalSigterm => "signal_sigterm",
            ShutdownReason::DeadlineExceeded => "deadline_exceeded",
            ShutdownReason::SignalSighup => "signal_sighup",
            ShutdownReason::DuplicateIdentity => "duplicate_identity",
            ShutdownReason::MediaFailed => "media_failed",
            ShutdownReason::ServerError => "server_error",
            ShutdownReason::ParticipantLeft => "participant_left",
            ShutdownReason::JobTerminated => "job_terminated",
            ShutdownReason::WorkerStopping => "worker_stopping",
            ShutdownReason::WorkerLost => "worker_lost",
            ShutdownReason::MemoryLimit => "memory_limit",
        }
    }

    /// The `LK_SHUTDOWN_*` code of the C ABI (current minor). Older plugins
    /// see [`ShutdownReason::as_seen_by_abi_minor`]'s reason's code.
    pub fn abi_code(self) -> u32 {
        use lk_plugin_api::abi::*;
        match self {
            ShutdownReason::RequestedByPlugin => LK_SHUTDOWN_REQUESTED_BY_PLUGIN,
            ShutdownReason::PluginReturned => LK_SHUTDOWN_PLUGIN_RETURNED,
            ShutdownReason::PluginPanicked => LK_SHUTDOWN_PLUGIN_PANICKED,
            ShutdownReason::RoomDisconnected => LK_SHUTDOWN_ROOM_DISCONNECTED,
            ShutdownReason::ServerUnreachable => LK_SHUTDOWN_SERVER_UNREACHABLE,
            ShutdownReason::SignalSigint => LK_SHUTDOWN_SIGNAL_SIGINT,
            ShutdownReason::SignalSigterm => LK_SHUTDOWN_SIGNAL_SIGTERM,
            ShutdownReason::DeadlineExceeded => LK_SHUTDOWN_DEADLINE_EXCEEDED,
            ShutdownReason::SignalSighup => LK_SHUTDOWN_SIGNAL_SIGHUP,
            ShutdownReason::DuplicateIdentity => LK_SHUTDOWN_DUPLICATE_IDENTITY,
            ShutdownReason::MediaFailed => LK_SHUTDOWN_MEDIA_FAILED,
            ShutdownReason::ServerError => LK_SHUTDOWN_SERVER_ERROR,
            ShutdownReason::ParticipantLeft => LK_SHUTDOWN_PARTICIPANT_LEFT,
            ShutdownReason::JobTerminated => LK_SHUTDOWN_JOB_TERMINATED,
            ShutdownReason::WorkerStopping => LK_SHUTDOWN_WORKER_STOPPING,
            ShutdownReason::WorkerLost => LK_SHUTDOWN_WORKER_LOST,
            ShutdownReason::MemoryLimit => LK_SHUTDOWN_MEMORY_LIMIT,
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why and when a job began shutting down. `Display` is the reason's stable
/// snake_case string; the free-text detail is separate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownInfo {
    pub reason: ShutdownReason,
    pub detail: String,
    pub at: SystemTime,
}

impl ShutdownInfo {
    pub fn new(reason: ShutdownReason, detail: impl Into<String>) -> Self {
        ShutdownInfo {
            reason,
            detail: detail.into(),
            at: SystemTime::now(),
        }
    }

    /// Milliseconds since the Unix epoch (what the C ABI carries).
    pub fn unix_ms(&self) -> i64 {
        self.at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

impl fmt::Display for ShutdownInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.reason, f)
    }
}

/// Deadlines for the hook stage of the cascade (`--hook-timeout`,
/// `--hook-budget`). See `hooks` for what happens at each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookTimeouts {
    /// A hook running longer than this is reported as overrun (ERROR). The
    /// stage still waits for it, within the budget, so that older hooks
    /// never start beside it.
    pub per_hook: Duration,
    /// Longest the whole hook stage may take. Hooks not started by then are
    /// not started at all; a hook still running then is abandoned. Must be
    /// at least `per_hook`.
    pub budget: Duration,
}

impl Default for HookTimeouts {
    fn default() -> Self {
        HookTimeouts {
            per_hook: Duration::from_secs(5),
            budget: Duration::from_secs(10),
        }
    }
}

/// A shutdown hook: runs exactly once with the shutdown info.
pub type HookFn = Box<dyn FnOnce(&ShutdownInfo) + Send + 'static>;

pub(crate) struct NamedHook {
    pub(crate) name: String,
    pub(crate) run: HookFn,
}

/// What a job is asked to do. Validated by [`Job::new`].
#[derive(Clone, Debug, Default)]
pub struct JobConfig {
    /// Job id; generated (`job-…`) when `None`.
    pub id: Option<String>,
    pub room_name: String,
    /// Identity the job joins as; `lk-go-<job id>` when `None`.
    pub identity: Option<String>,
    /// Free text handed to the plugin (often JSON).
    pub metadata: String,
    pub hook_timeouts: HookTimeouts,
    /// What the dispatch says about the job (empty when run by hand).
    pub dispatch: Dispatch,
}

/// What LiveKit's agent dispatch says about a job (`livekit_agent.proto`
/// `Job`), beyond its room and metadata. Empty for `job run-script`
/// (except `--participant-identity`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dispatch {
    /// The participant a JT_PARTICIPANT / JT_PUBLISHER job is for
    /// (`Job.participant.identity`); empty for a room job.
    pub participant_identity: String,
    /// The agent name dispatched to (`Job.agent_name`); empty for
    /// automatic dispatch.
    pub agent_name: String,
    /// The dispatch's attributes (`Job.attributes`), sorted by key.
    pub attributes: Vec<(String, String)>,
}

/// A configuration the job refuses. Each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobConfigError {
    #[error("room name is empty; pass --room <name>")]
    EmptyRoomName,
    #[error("room name is {0} bytes; LiveKit allows at most {MAX_ROOM_NAME_LEN}")]
    RoomNameTooLong(usize),
    #[error("room name contains a control character; use printable characters only")]
    RoomNameControlChar,
    #[error("participant identity is empty; pass --identity <name> or leave it out")]
    EmptyIdentity,
    #[error("participant identity is {0} bytes; LiveKit allows at most {MAX_IDENTITY_LEN}")]
    IdentityTooLong(usize),
    #[error("job metadata is {0} bytes; LiveKit allows at most {MAX_METADATA_LEN}")]
    MetadataTooLong(usize),
    #[error("job id is empty")]
    EmptyJobId,
    #[error("participant identity contains a control character; use printable characters only")]
    IdentityControlChar,
    #[error("job id contains a control character; use printable characters only")]
    JobIdControlChar,
    #[error("hook timeouts must be non-zero")]
    ZeroHookTimeout,
    #[error("--hook-timeout ({per_hook:?}) is longer than --hook-budget ({budget:?}); raise --hook-budget")]
    HookTimeoutOverBudget {
        per_hook: Duration,
        budget: Duration,
    },
}

/// One job: a plugin run in one room.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub room_name: String,
    pub identity: String,
    pub metadata: String,
    pub dispatch: Dispatch,
    pub context: JobContext,
}

impl Job {
    pub fn new(cfg: JobConfig) -> Result<Job, JobConfigError> {
        let room = cfg.room_name;
        if room.trim().is_empty() {
            return Err(JobConfigError::EmptyRoomName);
        }
        if room.len() > MAX_ROOM_NAME_LEN {
            return Err(JobConfigError::RoomNameTooLong(room.len()));
        }
        if room.chars().any(char::is_control) {
            return Err(JobConfigError::RoomNameControlChar);
        }
        let id = match cfg.id {
            Some(id) if id.trim().is_empty() => return Err(JobConfigError::EmptyJobId),
            Some(id) if id.chars().any(char::is_control) => {
                return Err(JobConfigError::JobIdControlChar)
            }
            Some(id) => id,
            None => generate_job_id(),
        };
        let identity = cfg.identity.unwrap_or_else(|| format!("lk-go-{id}"));
        if identity.trim().is_empty() {
            return Err(JobConfigError::EmptyIdentity);
        }
        if identity.len() > MAX_IDENTITY_LEN {
            return Err(JobConfigError::IdentityTooLong(identity.len()));
        }
        if identity.chars().any(char::is_control) {
            return Err(JobConfigError::IdentityControlChar);
        }
        if cfg.metadata.len() > MAX_METADATA_LEN {
            return Err(JobConfigError::MetadataTooLong(cfg.metadata.len()));
        }
        if cfg.hook_timeouts.per_hook.is_zero() || cfg.hook_timeouts.budget.is_zero() {
            return Err(JobConfigError::ZeroHookTimeout);
        }
        if cfg.hook_timeouts.per_hook > cfg.hook_timeouts.budget {
            return Err(JobConfigError::HookTimeoutOverBudget {
                per_hook: cfg.hook_timeouts.per_hook,
                budget: cfg.hook_timeouts.budget,
            });
        }
        let linked = &cfg.dispatch.participant_identity;
        if linked.len() > MAX_IDENTITY_LEN {
            return Err(JobConfigError::IdentityTooLong(linked.len()));
        }
        if linked.chars().any(char::is_control) {
            return Err(JobConfigError::IdentityControlChar);
        }
        Ok(Job {
            id,
            room_name: room,
            identity,
            metadata: cfg.metadata,
            dispatch: cfg.dispatch,
            context: JobContext::new(cfg.hook_timeouts),
        })
    }
}

/// `job-` + 12 hex digits from the clock and the process id: unique enough
/// for one job per process, and needs no random source.
fn generate_job_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = (nanos as u64) ^ ((std::process::id() as u64) << 40);
    format!("job-{:012x}", mixed & 0xffff_ffff_ffff)
}

/// The job's shared control surface: cancellation, shutdown, hooks.
/// Cheap to clone; every method may be called from any thread, including
/// from inside a hook.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    state: ShutdownState<NamedHook>,
    cancel: CancellationToken,
    timeouts: HookTimeouts,
    hook_seq: AtomicUsize,
    /// Wake-ups to run once shutdown begins ([`JobContext::on_shutdown_began`]).
    began: std::sync::Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("shutdown", &self.shutdown_info())
            .finish()
    }
}

impl JobContext {
    pub fn new(timeouts: HookTimeouts) -> Self {
        JobContext {
            inner: Arc::new(ContextInner {
                state: ShutdownState::new(),
                cancel: CancellationToken::new(),
                timeouts,
                hook_seq: AtomicUsize::new(0),
                began: std::sync::Mutex::new(Vec::new()),
            }),
        }
    }

    /// A token cancelled when shutdown begins. Child tasks select on it.
    pub fn token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Resolves when shutdown begins.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }

    /// Begins shutdown. Idempotent: the first reason wins and later calls
    /// return false. Never blocks; the cascade runs elsewhere.
    pub fn shutdown(&self, reason: ShutdownReason, detail: impl Into<String>) -> bool {
        let info = ShutdownInfo::new(reason, detail);
        let first = self.inner.state.begin(info.clone());
        if first {
            tracing::info!(reason = %info.reason, detail = %info.detail, "job shutdown requested");
            self.inner.cancel.cancel();
            // After the cancel: a registration that finds the list taken
            // sees the token cancelled and runs its wake-up itself.
            let wake_ups = std::mem::take(&mut *self.began());
            for w in wake_ups {
                w();
            }
        } else {
            tracing::debug!(reason = %info.reason, "shutdown already in progress; reason ignored");
        }
        first
    }

    /// Calls `wake` once when shutdown begins: on the thread that began it,
    /// right after [`Self::is_shutting_down`] turned true and outside every
    /// lock of the job — or at once, here, if shutdown already began. For
    /// wake-ups (e.g. the plugin API's waiting calls), not for work: `wake`
    /// must not block. Unlike a hook it runs before the cascade.
    pub fn on_shutdown_began(&self, wake: impl FnOnce() + Send + 'static) {
        let mut began = self.began();
        if self.inner.cancel.is_cancelled() {
            drop(began);
            wake();
        } else {
            began.push(Box::new(wake));
        }
    }

    fn began(&self) -> std::sync::MutexGuard<'_, Vec<Box<dyn FnOnce() + Send>>> {
        self.inner.began.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The info of the shutdown in progress, if any.
    pub fn shutdown_info(&self) -> Option<ShutdownInfo> {
        self.inner.state.info()
    }

    pub fn hook_timeouts(&self) -> HookTimeouts {
        self.inner.timeouts
    }

    /// Registers a hook that runs exactly once with the [`ShutdownInfo`].
    ///
    /// Hooks run in reverse registration order during the cascade's hook
    /// stage, one at a time, each on a thread of its own, within the hook
    /// timeouts. A hook registered after shutdown has begun runs at once on
    /// the calling thread, to completion, before this call returns.
    pub fn on_shutdown<F>(&self, name: impl Into<String>, hook: F)
    where
        F: FnOnce(&ShutdownInfo) + Send + 'static,
    {
        let seq = self.inner.hook_seq.fetch_add(1, Ordering::Relaxed);
        let hook = NamedHook {
            name: format!("{} (#{seq})", name.into()),
            run: Box::new(hook),
        };
        if let Registered::RunNow(hook, info) = self.inner.state.register(hook) {
            tracing::debug!(hook = %hook.name, "shutdown already begun; running hook at once");
            hooks::run_here(hook, &info);
        }
    }

    /// Runs every queued hook (newest first) within the deadlines. Called by
    /// the cascade once shutdown has begun; blocking.
    pub fn run_hooks(&self) -> HookReport {
        let info = match self.shutdown_info() {
            Some(info) => info,
            None => {
                // Hooks only run after shutdown began; begin one so that no
                // hook registered later is queued and lost.
                self.shutdown(
                    ShutdownReason::PluginReturned,
                    "hooks run without a shutdown",
                );
                self.shutdown_info().expect("shutdown just began")
            }
        };
        hooks::run_all(self.inner.state.take_hooks(), &info, self.inner.timeouts)
    }
}

#[cfg(all(test, not(feature = "loom-model")))]
mod tests;
