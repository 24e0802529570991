//! Running one job from start to exit code: the function the CLI's
//! `job run-script` and every job process of the worker call.
//!
//! Owns: the order of things, [`run_job`]'s stages — load the plugin
//! (before connecting anything), join the room, run the plugin on a thread
//! of its own, wait for a reason to shut down (plugin returned, room
//! disconnected, participant left, deadline, or an outside `shutdown` such
//! as a signal), report the verdict (the worker's), the shutdown cascade in
//! the seed's order room → tracks → plugins (leave the room, close tracks,
//! run hooks, wait for `run` within the grace period), and the exit code.
//! Each cascade stage has a deadline and its duration is logged.
//!
//! Must not touch: process-wide state (signals, exit, logging setup): that is
//! the CLI's. The runner reports an outcome and an exit code, it never exits.

use crate::events::{DisconnectReason, Event, Received, Subscription};
use crate::exit;
use crate::job::{HookReport, Job, JobConfigError, ShutdownInfo, ShutdownReason};
use crate::plugin::handle::JobHandle;
use crate::plugin::table::HOST_API;
use crate::plugin::{LoadError, LoadedPlugin};
use crate::room::{ConnectError, JoinRequest, Room, RoomConnector};
use lk_plugin_api::abi::LK_RUN_PANICKED;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deadlines of the cascade and the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CascadeTimeouts {
    /// Stage 1: leaving the room.
    pub room_leave: Duration,
    /// Stage 2: closing tracks.
    pub tracks_close: Duration,
    /// Stage 4: how long `run` may take to return once shutdown began
    /// (`--shutdown-grace`).
    pub plugin_grace: Duration,
}

impl Default for CascadeTimeouts {
    fn default() -> Self {
        CascadeTimeouts {
            room_leave: Duration::from_secs(5),
            tracks_close: Duration::from_secs(2),
            plugin_grace: Duration::from_secs(10),
        }
    }
}

/// Everything `run_job` needs besides the job and the connector.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub plugin_path: PathBuf,
    pub cascade: CascadeTimeouts,
    /// Shut down with `deadline_exceeded` after this long.
    pub max_duration: Option<Duration>,
    /// Told the job's [`Verdict`] once shutdown has begun and before the
    /// job leaves the room (the worker reports it to the server then);
    /// `None` for a job run by hand.
    pub before_leave: Option<Arc<dyn BeforeLeave>>,
    /// How much incoming data-stream content the job keeps.
    pub stream_limits: crate::datastream::StreamLimits,
}

/// A job's outcome as LiveKit's agent dispatch records it
/// (`UpdateJobStatus`: `JS_SUCCESS`, or `JS_FAILED` with an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub success: bool,
    /// One line saying what failed; empty on success.
    pub error: String,
}

/// Receives the job's verdict before the job leaves the room.
///
/// Why before: livekit-server v1.13.5 records a job whose agent participant
/// leaves the room before the worker reported a final status as `JS_FAILED`
/// ("agent worker left the room"), whatever the worker says afterwards.
#[async_trait::async_trait]
pub trait BeforeLeave: Send + Sync + std::fmt::Debug {
    /// The job's participant joined the room (called once, on the job's
    /// runtime, before the plugin runs; must not wait for an answer).
    async fn joined(&self) {}

    /// Called once per job, on the job's runtime; the cascade waits for it
    /// at most [`VERDICT_REPORT_DEADLINE`].
    async fn report(&self, verdict: Verdict);
}

/// With a [`BeforeLeave`] reporter, how long the runner waits for `run` to
/// return once shutdown began before it decides the verdict without the
/// plugin's code. A plugin that calls `shutdown` and then returns its code
/// is judged by that code; one still running after this long is a failure.
pub const VERDICT_RUN_WAIT: Duration = Duration::from_secs(2);
/// How long after its participant left a participant job checks that
/// the identity did not come straight back (a page reload leaves and joins
/// again) before it ends with `participant_left`.
pub const LINKED_REJOIN_GRACE: Duration = Duration::from_millis(300);
/// Longest the cascade waits for the verdict to be reported.
pub const VERDICT_REPORT_DEADLINE: Duration = Duration::from_secs(2);

/// The verdict for a job that shut down for `info` and whose `run`
/// returned `plugin_code` (`None`: not yet). Success exactly when the job's
/// exit code would be 0 (hooks aside: they run after the job left the
/// room); a panic is never a success.
pub fn verdict_for(info: &ShutdownInfo, plugin_code: Option<i32>) -> Verdict {
    let code = exit::for_job(info.reason, plugin_code);
    if code == exit::OK {
        return Verdict {
            success: true,
            error: String::new(),
        };
    }
    let reason = info.reason;
    let detail = &info.detail;
    let what = match plugin_code {
        _ if code == exit::PLUGIN_PANICKED => "the plugin panicked".to_string(),
        // Its code is not known yet: no exit code can be named.
        None => {
            return Verdict {
                success: false,
                error: format!(
                    "the plugin's run had not returned {} s after shutdown began ({reason}: {detail}); make run return promptly on shutdown (slow cleanup belongs in shutdown hooks)",
                    VERDICT_RUN_WAIT.as_secs()
                ),
            }
        }
        Some(c)
            if matches!(
                reason,
                ShutdownReason::PluginReturned
                    | ShutdownReason::RequestedByPlugin
                    | ShutdownReason::RoomDisconnected
                    | ShutdownReason::ParticipantLeft
                    | ShutdownReason::JobTerminated
            ) =>
        {
            format!("the plugin's run returned {c}")
        }
        Some(_) => format!("{reason}: {detail}"),
    };
    Verdict {
        success: false,
        error: format!("{what} (exit {code})"),
    }
}

/// How long each cascade stage took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageTimes {
    pub room_leave: Duration,
    pub tracks_close: Duration,
    pub hooks: Duration,
    pub plugin_wait: Duration,
}

/// How a job that ran ended.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    pub job_id: String,
    pub plugin: LoadedPlugin,
    pub shutdown: ShutdownInfo,
    /// What `run` returned, if it returned within the grace period.
    pub plugin_code: Option<i32>,
    pub hooks: HookReport,
    pub stages: StageTimes,
    /// When the plugin's `run` was entered, relative to the start of
    /// `run_job` (the room was connected by then).
    pub run_entered_after: Duration,
    pub exit_code: i32,
}

impl JobOutcome {
    /// One line saying what went wrong and what to do, when the job failed
    /// for a reason the host saw: the server lost, media failed, a duplicate
    /// identity, a server-ended session, a plugin that panicked or ignored
    /// shutdown, incomplete hooks. `None` when the outcome is the plugin's
    /// own code, or a signal or deadline the operator asked for. The CLI
    /// prints it as `lk-go: error: …`; the worker will report it as the job's
    /// error.
    pub fn failure(&self) -> Option<String> {
        let detail = &self.shutdown.detail;
        let reason = self.shutdown.reason;
        if self.plugin_code.is_none() {
            return Some(format!(
                "the plugin's run did not return within the shutdown grace period after shutdown ({reason}); make run return when next_event says shutting down (or is_shutting_down is 1), or raise --shutdown-grace"
            ));
        }
        if self.exit_code == exit::PLUGIN_PANICKED {
            return Some(
                "the plugin crashed (a panic caught at the C boundary; its message is logged above); fix the plugin".to_string(),
            );
        }
        let line = match reason {
            ShutdownReason::ServerUnreachable => format!(
                "lost the LiveKit server mid-job ({detail}); check the server and the network to it (to ride out a server restart, raise --unreachable-timeout and --reconnect-window)"
            ),
            ShutdownReason::MediaFailed => format!(
                "the media connection failed mid-job ({detail}); check that this host reaches the server's ICE ports"
            ),
            ShutdownReason::ServerError => {
                format!("the server ended the session ({detail}); its log says why")
            }
            ShutdownReason::DuplicateIdentity => format!(
                "another participant joined the room with this job's identity, and the server dropped the job ({detail}); give each job its own --identity"
            ),
            _ if self.exit_code == exit::HOOKS_INCOMPLETE => format!(
                "shutdown hooks did not all complete (panicked {:?}, overran {:?}, abandoned {:?}, not run {:?}); make hooks return within --hook-timeout, or raise --hook-budget",
                self.hooks.panicked, self.hooks.overran, self.hooks.abandoned, self.hooks.not_run
            ),
            _ => return None,
        };
        Some(line)
    }
}

/// Why a job could not run at all. `exit_code` gives its documented code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] JobConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(e) => exit::for_config_error(e),
            RunError::Load(e) => exit::for_load_error(e),
            RunError::Connect(e) => exit::for_connect_error(e),
            RunError::Internal(_) => exit::INTERNAL,
        }
    }
}

/// The job's shutdown reason for a room session that ended: the room's
/// natural end is `room_disconnected` (the plugin's code is the outcome);
/// everything else names the failure, so its exit code differs from success.
pub fn shutdown_reason_for(reason: DisconnectReason) -> ShutdownReason {
    match reason {
        DisconnectReason::DuplicateIdentity => ShutdownReason::DuplicateIdentity,
        DisconnectReason::MediaFailed => ShutdownReason::MediaFailed,
        r if r.is_server_unreachable() => ShutdownReason::ServerUnreachable,
        r if r.is_natural_end() => ShutdownReason::RoomDisconnected,
        _ => ShutdownReason::ServerError,
    }
}

fn non_empty_or(value: String, fallback: &str) -> String {
    if value.is_empty() {
        fallback.to_string()
    } else {
        value
    }
}

/// The job pointer, moved to the plugin thread. It points at a leaked
/// `JobHandle`, which every host function may use from any thread.
struct SendPtr(*const lk_plugin_api::abi::LkJob);
// SAFETY: see above; the pointee is 'static and Sync.
unsafe impl Send for SendPtr {}

/// Runs `fut` with a deadline, logging the stage's duration.
async fn stage<F: Future<Output = ()>>(name: &str, deadline: Duration, fut: F) -> Duration {
    let started = Instant::now();
    let done = tokio::time::timeout(deadline, fut).await.is_ok();
    let took = started.elapsed();
    if done {
        tracing::info!(
            stage = name,
            elapsed_ms = took.as_millis() as u64,
            "cascade stage done"
        );
    } else {
        tracing::warn!(
            stage = name,
            deadline_ms = deadline.as_millis() as u64,
            "cascade stage hit its deadline; moving on"
        );
    }
    took
}

/// Runs one job: load and validate the plugin (before connecting anything),
/// join the room, run the plugin, run the cascade, compute the exit code.
///
/// The job's context may be shut down from outside at any time (the CLI does
/// it on SIGINT/SIGTERM); the cascade then runs as for any other reason.
/// The stages, in order, each a function below.
pub async fn run_job(
    job: Job,
    connector: &dyn RoomConnector,
    options: &RunOptions,
) -> Result<JobOutcome, RunError> {
    let started = Instant::now();
    let plugin = crate::plugin::load(&options.plugin_path)?;
    tracing::info!(plugin = %plugin.describe(), "plugin loaded");
    let mut joined = join(&job, &plugin, connector, options, started).await?;
    let mut run = start_plugin(&job, &plugin, &joined, started)?;
    wait_for_reason(&job, &mut joined, &mut run, options).await;
    let info = job
        .context
        .shutdown_info()
        .ok_or_else(|| RunError::Internal("shutdown info missing after shutdown".into()))?;
    report(options, &info, &mut run).await;
    let cascade_started = Instant::now();
    let (stages, hooks) = cascade(&job, &joined.room, &info, &mut run, options).await?;
    // The job is over for the plugin: from now on its API answers as after
    // shutdown, and the room's events are released.
    crate::plugin::retire_job(run.handle);
    let exit_code = final_exit_code(&info, run.code, &hooks);
    tracing::info!(reason = %info.reason, exit_code, cascade_ms = cascade_started.elapsed().as_millis() as u64, "job finished");
    Ok(JobOutcome {
        job_id: job.id,
        plugin,
        shutdown: info,
        plugin_code: run.code,
        hooks,
        stages,
        run_entered_after: run.entered_after,
        exit_code,
    })
}

/// The room as joined, and what the runner watches in it.
struct JoinedRoom {
    room: Room,
    /// Subscribed before joining, so no `Disconnected` is missed.
    events: Subscription,
    /// What the server joined (the truth even when a token named another
    /// room or identity).
    room_name: String,
    identity: String,
}

/// Stage 1, join: the room, with the limits the job asked for. A shutdown
/// while joining (a signal) is not an error: the job then runs its cascade
/// without the plugin ever running.
async fn join(
    job: &Job,
    plugin: &LoadedPlugin,
    connector: &dyn RoomConnector,
    options: &RunOptions,
    started: Instant,
) -> Result<JoinedRoom, RunError> {
    let mut room = Room::new(job.room_name.clone());
    // A plugin older than ABI 1.3 has no next_data: keep no packets for it.
    room.emitter()
        .media()
        .set_data_wanted(plugin.abi_minor >= 3);
    room.emitter().data().set_limits(options.stream_limits);
    // The plugin subscribes later: it gets the room as joined as a
    // snapshot (unbounded, however many are present), then every event.
    let events = room.subscribe();
    let request = JoinRequest {
        room_name: job.room_name.clone(),
        identity: job.identity.clone(),
        job_id: job.id.clone(),
    };
    tokio::select! {
        joined = room.connect(connector, &request) => joined?,
        _ = job.context.cancelled() => {
            tracing::info!("shutdown requested while joining the room");
        }
    }
    let (room_name, identity) = match room.joined() {
        Some(j) => {
            let room_name = non_empty_or(j.room_name, &job.room_name);
            let identity = non_empty_or(j.participant_identity, &job.identity);
            tracing::info!(room = %room_name, identity = %identity, participant_sid = %j.participant_sid, elapsed_ms = started.elapsed().as_millis() as u64, "joined room");
            if let Some(reporter) = &options.before_leave {
                reporter.joined().await;
            }
            (room_name, identity)
        }
        None => (job.room_name.clone(), job.identity.clone()),
    };
    Ok(JoinedRoom {
        room,
        events,
        room_name,
        identity,
    })
}

/// The plugin's `run`, on a thread of its own.
struct PluginRun {
    handle: &'static JobHandle,
    /// `run`'s return value, once it returns.
    returned: tokio::sync::oneshot::Receiver<i32>,
    /// What it returned, once known.
    code: Option<i32>,
    /// When `run` was entered, from the start of `run_job`.
    entered_after: Duration,
}

impl PluginRun {
    /// Waits up to `limit` for `run` to return (no-op once it did).
    async fn wait_returned(&mut self, limit: Duration) -> bool {
        if self.code.is_none() {
            if let Ok(code) = tokio::time::timeout(limit, &mut self.returned).await {
                self.code = Some(code.unwrap_or(LK_RUN_PANICKED));
            }
        }
        self.code.is_some()
    }
}

/// Stage 2, run: the job handle the plugin sees (leaked: it and its
/// strings stay valid for the life of the process, whatever plugin threads
/// do), and `run` on its own thread. Not called when shutdown came first:
/// then `run` is never entered and counts as having returned 0.
fn start_plugin(
    job: &Job,
    plugin: &LoadedPlugin,
    joined: &JoinedRoom,
    started: Instant,
) -> Result<PluginRun, RunError> {
    let handle: &'static JobHandle = JobHandle::new(
        job.id.clone(),
        joined.room_name.clone(),
        job.metadata.clone(),
        joined.identity.clone(),
        plugin.name.clone(),
        plugin.abi_minor,
        job.context.clone(),
        Some(joined.room.subscribe_with_snapshot()),
        crate::plugin::handle::JobMedia::new(
            joined.room.media_access(),
            Some(tokio::runtime::Handle::current()),
        ),
        job.dispatch.clone(),
    )
    .leak();
    let (code_tx, returned) = tokio::sync::oneshot::channel::<i32>();
    let entered_after = started.elapsed();
    if job.context.is_shutting_down() {
        // Shut down before the plugin started (e.g. SIGINT while joining).
        let _ = code_tx.send(0);
    } else {
        let run = plugin.run;
        let job_ptr = SendPtr(handle.as_abi());
        // unix_us lets `cargo xtask bench` measure exec -> run entered.
        let unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        tracing::info!(
            event = "plugin_run_entered",
            elapsed_us = entered_after.as_micros() as u64,
            unix_us,
            "calling plugin run"
        );
        std::thread::Builder::new()
            .name("lk-plugin-run".into())
            .spawn(move || {
                let job_ptr = job_ptr;
                // SAFETY: the table is static and the handle is leaked.
                let code = unsafe { run(&HOST_API, job_ptr.0) };
                let _ = code_tx.send(code);
            })
            .map_err(|e| RunError::Internal(format!("could not start the plugin thread: {e}")))?;
    }
    Ok(PluginRun {
        handle,
        returned,
        code: None,
        entered_after,
    })
}

/// Stage 3, wait for a reason to shut down: `run` returned (or panicked),
/// an outside `shutdown` (signal, worker), the room's session ended, the
/// job's participant left for good, or `--max-duration`. Returns once the
/// job's context is shutting down.
async fn wait_for_reason(
    job: &Job,
    joined: &mut JoinedRoom,
    run: &mut PluginRun,
    options: &RunOptions,
) {
    let ctx = &job.context;
    let deadline = async {
        match options.max_duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    // The participant a participant job is for left: checked again a
    // moment later, since a page reload is a leave followed by a join of
    // the same identity.
    let linked = job.dispatch.participant_identity.clone();
    let mut linked_left_at: Option<tokio::time::Instant> = None;
    loop {
        let linked_check = async {
            match linked_left_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            code = &mut run.returned => {
                let code = code.unwrap_or(LK_RUN_PANICKED);
                run.code = Some(code);
                if code == LK_RUN_PANICKED {
                    ctx.shutdown(ShutdownReason::PluginPanicked, "run reported a panic");
                } else {
                    ctx.shutdown(ShutdownReason::PluginReturned, format!("run returned {code}"));
                }
                return;
            }
            _ = ctx.cancelled() => return,
            received = joined.events.recv() => match received {
                Received::Event(Event::Disconnected { reason, detail }) => {
                    let why = shutdown_reason_for(reason);
                    let detail = if detail.is_empty() { reason.to_string() } else { format!("{reason}: {detail}") };
                    ctx.shutdown(why, detail);
                    return;
                }
                Received::Event(Event::ParticipantLeft { participant })
                    if !linked.is_empty() && participant.identity == linked =>
                {
                    linked_left_at = Some(tokio::time::Instant::now() + LINKED_REJOIN_GRACE);
                }
                _ => {}
            },
            _ = linked_check => {
                linked_left_at = None;
                let back = joined.room.participants().iter().any(|p| p.identity == linked);
                let close = run.handle.close_on_participant_left.load(std::sync::atomic::Ordering::Acquire);
                if !back && close {
                    ctx.shutdown(
                        ShutdownReason::ParticipantLeft,
                        format!("{linked}, the participant this job is for, left the room"),
                    );
                    return;
                }
                if !back {
                    tracing::info!(participant = %linked, "the job's participant left; the plugin keeps the job running (set_close_on_participant_left 0)");
                }
            }
            _ = &mut deadline => {
                let d = options.max_duration.unwrap_or_default();
                ctx.shutdown(ShutdownReason::DeadlineExceeded, format!("job ran longer than {} s", d.as_secs_f64()));
                return;
            }
        }
    }
}

/// Stage 4, report: with a reporter (the worker), the verdict, before the
/// job leaves the room. A `run` that is still running gets
/// [`VERDICT_RUN_WAIT`] to return its code first.
async fn report(options: &RunOptions, info: &ShutdownInfo, run: &mut PluginRun) {
    let Some(reporter) = &options.before_leave else {
        return;
    };
    run.wait_returned(VERDICT_RUN_WAIT).await;
    let verdict = verdict_for(info, run.code);
    tracing::info!(success = verdict.success, error = %verdict.error, "job verdict");
    stage(
        "report_status",
        VERDICT_REPORT_DEADLINE,
        reporter.report(verdict),
    )
    .await;
}

/// Stage 5, the cascade, in the seed's order room → tracks → plugins:
/// leave the room, close tracks, run the shutdown hooks, wait for `run`
/// within the grace period. Each step has a deadline; each is logged.
async fn cascade(
    job: &Job,
    room: &Room,
    info: &ShutdownInfo,
    run: &mut PluginRun,
    options: &RunOptions,
) -> Result<(StageTimes, HookReport), RunError> {
    tracing::info!(reason = %info.reason, detail = %info.detail, "shutdown cascade: room -> tracks -> hooks -> plugin");
    let mut stages = StageTimes {
        room_leave: stage("room_leave", options.cascade.room_leave, room.leave()).await,
        ..Default::default()
    };
    stages.tracks_close = stage(
        "tracks_close",
        options.cascade.tracks_close,
        room.close_tracks(),
    )
    .await;

    let hook_ctx = job.context.clone();
    let hooks_started = Instant::now();
    let hooks = tokio::task::spawn_blocking(move || hook_ctx.run_hooks())
        .await
        .map_err(|e| RunError::Internal(format!("hook stage failed: {e}")))?;
    stages.hooks = hooks_started.elapsed();
    tracing::info!(
        stage = "hooks",
        elapsed_ms = stages.hooks.as_millis() as u64,
        completed = hooks.completed,
        panicked = hooks.panicked.len(),
        overran = hooks.overran.len(),
        abandoned = hooks.abandoned.len(),
        not_run = hooks.not_run.len(),
        "cascade stage done"
    );

    if run.code.is_none() {
        let waited = Instant::now();
        if !run.wait_returned(options.cascade.plugin_grace).await {
            tracing::error!(
                grace_ms = options.cascade.plugin_grace.as_millis() as u64,
                "plugin did not return within the shutdown grace period"
            );
        }
        stages.plugin_wait = waited.elapsed();
        tracing::info!(
            stage = "plugin_wait",
            elapsed_ms = stages.plugin_wait.as_millis() as u64,
            "cascade stage done"
        );
    }
    Ok((stages, hooks))
}

/// Stage 6, the exit code: the reason and the plugin's code (see
/// [`exit::for_job`]), then the hooks' completeness. Each hook that failed
/// was an ERROR line of its own; the summary is `JobOutcome::failure`.
fn final_exit_code(info: &ShutdownInfo, plugin_code: Option<i32>, hooks: &HookReport) -> i32 {
    if let Some(code) = plugin_code {
        if code != LK_RUN_PANICKED && !(0..=255).contains(&code) {
            tracing::warn!(
                code,
                "plugin returned a code outside 0-255; exiting with {}",
                exit::PLUGIN_CODE_OUT_OF_RANGE
            );
        }
    }
    exit::with_hooks(exit::for_job(info.reason, plugin_code), hooks.is_clean())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_never_call_a_crash_or_an_outage_a_success() {
        let info = |reason, detail: &str| ShutdownInfo::new(reason, detail);
        let ok = verdict_for(
            &info(ShutdownReason::PluginReturned, "run returned 0"),
            Some(0),
        );
        assert!(ok.success && ok.error.is_empty());
        let v = verdict_for(
            &info(ShutdownReason::PluginReturned, "run returned 3"),
            Some(3),
        );
        assert_eq!(v.error, "the plugin's run returned 3 (exit 3)");
        let v = verdict_for(
            &info(ShutdownReason::PluginPanicked, "run reported a panic"),
            Some(LK_RUN_PANICKED),
        );
        assert_eq!(v.error, "the plugin panicked (exit 70)");
        // Shut down for another reason, then the plugin panicked.
        let v = verdict_for(
            &info(ShutdownReason::RequestedByPlugin, "done"),
            Some(LK_RUN_PANICKED),
        );
        assert!(!v.success && v.error.starts_with("the plugin panicked"));
        let v = verdict_for(&info(ShutdownReason::ServerUnreachable, "lost"), Some(0));
        assert_eq!(v.error, "server_unreachable: lost (exit 69)");
        let v = verdict_for(&info(ShutdownReason::RequestedByPlugin, "done"), None);
        assert!(!v.success && v.error.contains("had not returned"), "{v:?}");
        assert!(
            verdict_for(
                &info(ShutdownReason::RoomDisconnected, "terminated"),
                Some(0)
            )
            .success
        );
    }

    /// Every way a session can end, classified: the room's natural end keeps
    /// the plugin's code; every other ending has a code distinct from 0.
    #[test]
    fn session_endings_are_classified_truthfully() {
        use DisconnectReason as D;
        let cases = [
            (D::RoomDeleted, ShutdownReason::RoomDisconnected, 0),
            (D::RoomClosed, ShutdownReason::RoomDisconnected, 0),
            (D::ParticipantRemoved, ShutdownReason::RoomDisconnected, 0),
            (D::ConnectionLost, ShutdownReason::ServerUnreachable, 69),
            (D::LivenessTimeout, ShutdownReason::ServerUnreachable, 69),
            (D::ServerShutdown, ShutdownReason::ServerUnreachable, 69),
            (D::ReconnectRequested, ShutdownReason::ServerUnreachable, 69),
            (D::MediaFailed, ShutdownReason::MediaFailed, 74),
            (D::ServerLeave, ShutdownReason::ServerError, 76),
            (D::DuplicateIdentity, ShutdownReason::DuplicateIdentity, 78),
        ];
        for (ending, reason, code) in cases {
            assert_eq!(shutdown_reason_for(ending), reason, "{ending}");
            assert_eq!(exit::for_job(reason, Some(0)), code, "{ending}");
        }
    }
}
