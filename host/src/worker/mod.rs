//! `lk-go worker`: registers with livekit-server's agent dispatch, accepts
//! jobs up to `--max-jobs`, runs each in its own `lk-go` process, reports
//! each job's status truthfully, drains on the first signal.
//!
//! Owns: the job table (accepted → assigned → running → ended), the load
//! and status the server sees, the decisions (accept or decline, terminate,
//! drain, kill), and the worker's exit code. Must not touch: a job's
//! lifecycle itself — each job process runs [`crate::runner::run_job`],
//! exactly as `lk-go job run-script` does — nor the wire formats
//! ([`agent_ws`] speaks to the server, [`ipc`] to the job processes).
//!
//! Architecture invariant: **a job's final status is sent at most once, and
//! a job that crashed, was killed or failed to start is never reported as a
//! success.** The status comes from the job process's [`crate::runner::Verdict`]
//! (sent before it leaves the room), or, when none arrived, from how the
//! process ended (always `JS_FAILED`).
//!
//! Load: the server weighs workers by `1 − load` and a node claims a job
//! only while `Σ max(0, 0.7 − load)` over its available workers is > 0
//! (livekit-server v1.13.5 `agents.target_load` default 0.7). lk-go reports
//! `LOAD_AT_CAPACITY × used / max_jobs` (always below 0.7 while a slot is
//! free) and `WS_FULL` with load 1 when full or draining, so `--max-jobs`,
//! not machine CPU, is what limits a worker.

pub mod agent_ws;
pub mod child;
pub mod http;
pub mod ipc;
pub mod job_side;
pub mod metrics;
pub mod plugin_file;
pub mod usage;

use crate::exit;
use crate::runner::Verdict;
use agent_ws::{AgentEndpoint, ConnEvent, Outgoing, Registration};
use child::{ChildEvent, ChildHandle, ChildSpec};
use http::{JobView, PluginView, WorkerState, WorkerView};
use ipc::{JobStats, ShutdownCause};
use livekit_protocol as proto;
use metrics::{EndLabels, JobLabels, OfferLabels, ReconnectLabels, WorkerMetrics};
use plugin_file::{PluginChange, PluginFile, PluginState};
use proto::{server_message, worker_message};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The load reported with one slot short of full: below the server's
/// default `target_load` (0.7), so a worker with a free slot always gets
/// jobs.
pub const LOAD_AT_CAPACITY: f32 = 0.6;
/// How often the worker reports its status when nothing changes (LiveKit
/// Agents: 2.5 s, `UPDATE_STATUS_INTERVAL`).
pub const STATUS_INTERVAL: Duration = Duration::from_millis(2500);
/// How often each job process's memory and CPU are sampled (one O(1)
/// procfs read each: see [`usage`]).
pub const USAGE_INTERVAL: Duration = Duration::from_secs(1);
const MB: u64 = 1024 * 1024;

/// Everything the worker needs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The plugin every job runs (validated before the worker starts; a job
    /// is only accepted while the file is still there).
    pub plugin: std::path::PathBuf,
    pub endpoint: AgentEndpoint,
    pub registration: Registration,
    /// Jobs run at once, at most (≥ 1).
    pub max_jobs: u32,
    /// After the first signal, how long running jobs may take to end on
    /// their own before they are shut down.
    pub drain_timeout: Duration,
    /// How a job process is started.
    pub child: ChildSpec,
    /// After a job was asked to shut down, how long until its process group
    /// is killed: its whole cascade (grace, hooks, leave) plus a margin.
    pub kill_after: Duration,
    /// A job whose resident memory goes over this many bytes is logged
    /// once (`--job-memory-warn`); `None`: never.
    pub job_memory_warn: Option<u64>,
    /// A job whose resident memory goes over this many bytes is shut down
    /// with reason `memory_limit` (exit 85, `JS_FAILED`) and killed if it
    /// does not end within `kill_after` (`--job-memory-limit`); `None`: no
    /// limit.
    pub job_memory_limit: Option<u64>,
}

/// A signal, as the CLI forwards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
    Hangup,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        })
    }
}

impl Signal {
    fn exit_code(self) -> i32 {
        match self {
            Signal::Interrupt => exit::SIGINT,
            Signal::Terminate => exit::SIGTERM,
            Signal::Hangup => exit::SIGHUP,
        }
    }
}

struct RunningJob {
    handle: ChildHandle,
    room: String,
    participant_identity: String,
    started: Instant,
    started_unix_ms: u64,
    /// When its offer arrived (dispatch → joined).
    offered_at: Option<Instant>,
    /// The verdict reported to the server, once sent.
    reported: Option<Verdict>,
    /// Asked to shut down; killed at this instant if still running.
    kill_at: Option<Instant>,
    killed: bool,
    /// Why the worker itself asked it to shut down (memory limit), for the
    /// status sent when it ends without a verdict.
    worker_cause: Option<String>,
    usage: usage::ProcessUsage,
    memory_warned: bool,
    /// The job's counters as last reported.
    stats: JobStats,
}

impl RunningJob {
    fn new(
        handle: ChildHandle,
        room: String,
        participant_identity: String,
        offered_at: Option<Instant>,
    ) -> RunningJob {
        RunningJob {
            handle,
            room,
            participant_identity,
            started: Instant::now(),
            started_unix_ms: http::unix_ms(),
            offered_at,
            reported: None,
            kill_at: None,
            killed: false,
            worker_cause: None,
            usage: usage::ProcessUsage::default(),
            memory_warned: false,
            stats: JobStats::default(),
        }
    }
}

/// A job accepted and waiting for its assignment.
struct Pending {
    /// Its slot is released at this instant.
    deadline: Instant,
    offered_at: Instant,
}

/// How the worker's loop ends.
enum Stop {
    /// Drain: accept nothing, let jobs end (until `deadline`, then shut
    /// them down).
    Draining { deadline: Instant },
    /// Fatal connection error: accept nothing; running jobs (which have
    /// sessions and reconnect windows of their own) end on their own until
    /// `deadline` (the drain timeout), then are shut down; exit with `code`.
    Failing {
        code: i32,
        error: String,
        deadline: Instant,
    },
}

struct Worker {
    options: WorkerOptions,
    to_server: mpsc::UnboundedSender<Outgoing>,
    child_events: mpsc::UnboundedSender<ChildEvent>,
    /// Accepted, waiting for the assignment.
    pending: HashMap<String, Pending>,
    jobs: HashMap<String, RunningJob>,
    stop: Option<Stop>,
    /// The plugin file new jobs load, and whether they may.
    plugin: PluginFile,
    registered: bool,
    ever_registered: bool,
    /// The id of the current registration (`AW_…`).
    worker_id: String,
    /// The URL of the node the worker is registered with (jobs join
    /// through it first).
    registered_url: Option<String>,
    jobs_started: u64,
    metrics: Arc<WorkerMetrics>,
    /// What the HTTP endpoint shows (published when something changed).
    view: watch::Sender<WorkerView>,
    last_usage_sample: Option<Instant>,
    /// The worker's own dropped log lines already counted.
    own_dropped_logs: u64,
}

impl Worker {
    fn used(&self) -> u32 {
        (self.jobs.len() + self.pending.len()) as u32
    }

    fn full(&self) -> bool {
        self.stop.is_some()
            || self.used() >= self.options.max_jobs
            || *self.plugin.state() != PluginState::Ok
    }

    /// Notices (every tick) that the plugin file went away, was replaced
    /// (validated before any job loads it), or came back; says so once each
    /// time, and reports the new status at once.
    fn check_plugin(&mut self) {
        let Some(change) = self.plugin.poll() else {
            return;
        };
        let path = self.plugin.path().display().to_string();
        // The status goes out before the line: whoever reads the line (an
        // operator's deploy script, a test) and dispatches at once must
        // find the server already knowing. A dispatch the server thinks
        // nobody can take is dropped for good (no re-dispatch in OSS).
        self.send_status();
        self.publish();
        match change {
            PluginChange::Validating => {
                tracing::info!(plugin = %path, event = "plugin_changed", "the plugin file changed; validating it (lk-go plugin inspect) before any job loads it; reporting full meanwhile")
            }
            PluginChange::Validated(what) => {
                tracing::info!(plugin = %path, event = "plugin_validated", "the plugin file is valid ({what}); new jobs load it, running jobs keep theirs")
            }
            PluginChange::Missing => {
                tracing::error!(plugin = %path, event = "plugin_missing", "the plugin file is gone or unreadable; reporting full and declining jobs until it is back")
            }
            PluginChange::Invalid(why) => {
                tracing::error!(plugin = %path, event = "plugin_invalid", "the new plugin file does not load: {why}; reporting full and declining jobs until a good file is in place")
            }
        }
    }

    fn send(&self, msg: worker_message::Message) {
        if self.registered {
            let _ = self.to_server.send(Outgoing::new(msg));
        }
    }

    /// The load reported to the server: see the module doc.
    fn load(&self) -> f32 {
        if self.full() {
            1.0
        } else {
            LOAD_AT_CAPACITY * self.used() as f32 / self.options.max_jobs as f32
        }
    }

    fn send_status(&self) {
        let full = self.full();
        let load = self.load();
        let status = if full {
            proto::WorkerStatus::WsFull
        } else {
            proto::WorkerStatus::WsAvailable
        };
        self.send(worker_message::Message::UpdateWorker(
            proto::UpdateWorkerStatus {
                status: Some(status as i32),
                load,
                job_count: self.jobs.len() as u32,
                ..Default::default()
            },
        ));
    }

    fn send_job_status(&self, job_id: &str, status: proto::JobStatus, error: &str) {
        self.send(job_status_message(job_id, status, error));
    }

    fn on_server_message(&mut self, msg: server_message::Message) {
        match msg {
            server_message::Message::Availability(req) => self.on_availability(req),
            server_message::Message::Assignment(a) => self.on_assignment(a),
            server_message::Message::Termination(t) => self.on_termination(&t.job_id),
            _ => {}
        }
    }

    /// Answered at once: the server's request times out after about 2.8 s
    /// and a late answer loses the job for good (no re-dispatch in OSS).
    fn on_availability(&mut self, req: proto::AvailabilityRequest) {
        let Some(job) = req.job else { return };
        let room = job.room.as_ref().map(|r| r.name.as_str()).unwrap_or("");
        let decline = match &self.stop {
            Some(Stop::Draining { .. }) => Some(("draining", "draining".to_string())),
            Some(Stop::Failing { .. }) => Some(("shutting_down", "shutting down".to_string())),
            None if self.used() >= self.options.max_jobs => Some((
                "full",
                format!(
                    "full ({} of --max-jobs {})",
                    self.used(),
                    self.options.max_jobs
                ),
            )),
            // Checked now, not only at the last tick: a job accepted in
            // between would fail with 65/66/80-84.
            None if !self.plugin.usable_now() => Some((
                "plugin_unavailable",
                format!(
                    "the plugin file is {} (not the file that validated last)",
                    self.plugin.state().name()
                ),
            )),
            None => None,
        };
        self.metrics
            .offers
            .get_or_create(&OfferLabels {
                decision: if decline.is_none() {
                    "accepted"
                } else {
                    "declined"
                },
                reason: decline.as_ref().map(|d| d.0).unwrap_or(""),
            })
            .inc();
        let available = decline.is_none();
        let name = if self.options.registration.agent_name.is_empty() {
            "lk-go".to_string()
        } else {
            self.options.registration.agent_name.clone()
        };
        self.send(worker_message::Message::Availability(
            proto::AvailabilityResponse {
                job_id: job.id.clone(),
                available,
                participant_identity: if available {
                    agent_identity(&job.id)
                } else {
                    String::new()
                },
                participant_name: if available { name } else { String::new() },
                // As livekit-agents does: frontends read which agent this is.
                participant_attributes: if available
                    && !self.options.registration.agent_name.is_empty()
                {
                    [(
                        "lk.agent.name".to_string(),
                        self.options.registration.agent_name.clone(),
                    )]
                    .into()
                } else {
                    Default::default()
                },
                ..Default::default()
            },
        ));
        match decline {
            Some((_, why)) => tracing::info!(job_id = %job.id, room, "declined job: {why}"),
            None => {
                tracing::info!(job_id = %job.id, room, dispatch_id = %job.dispatch_id, "accepted job; waiting for its assignment");
                let now = Instant::now();
                self.pending.insert(
                    job.id.clone(),
                    Pending {
                        deadline: now + crate::ASSIGNMENT_TIMEOUT,
                        offered_at: now,
                    },
                );
                self.send_status();
            }
        }
    }

    fn on_assignment(&mut self, a: proto::JobAssignment) {
        let Some(job) = a.job else { return };
        crate::secrets::register(&a.token);
        let Some(pending) = self.pending.remove(&job.id) else {
            // Python and JS agents do the same: the slot was released when
            // the assignment timed out, and the job may not fit any more.
            tracing::warn!(job_id = %job.id, "assignment for a job this worker is not waiting for (it arrived after {} s?); ignored", crate::ASSIGNMENT_TIMEOUT.as_secs_f64());
            return;
        };
        let room = job
            .room
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        // The job joins where the server said (LiveKit Cloud), or through
        // the node this worker is registered with, the others after it.
        let mut urls: Vec<String> = match a.url.filter(|u| !u.trim().is_empty()) {
            Some(u) => vec![u],
            None => self.registered_url.iter().cloned().collect(),
        };
        for u in &self.options.endpoint.urls {
            if !urls.contains(u) {
                urls.push(u.clone());
            }
        }
        let participant_identity = job
            .participant
            .as_ref()
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        let assignment = ipc::ToJob::Assignment {
            urls,
            token: a.token,
            job_id: job.id.clone(),
            room: room.clone(),
            identity: agent_identity(&job.id),
            metadata: job.metadata.clone(),
            participant_identity: participant_identity.clone(),
            agent_name: job.agent_name.clone(),
            attributes: {
                let mut a: Vec<(String, String)> = job.attributes.clone().into_iter().collect();
                a.sort();
                a
            },
        };
        match child::spawn(
            &self.options.child,
            &job.id,
            assignment,
            self.child_events.clone(),
        ) {
            Ok(handle) => {
                tracing::info!(job_id = %job.id, room = %room, pid = handle.pid, event = "job_started", "job process started");
                self.send_job_status(&job.id, proto::JobStatus::JsRunning, "");
                self.jobs_started += 1;
                self.metrics.jobs_started.inc();
                self.jobs.insert(
                    job.id.clone(),
                    RunningJob::new(handle, room, participant_identity, Some(pending.offered_at)),
                );
                self.metrics.running_jobs.set(self.jobs.len() as i64);
            }
            Err(e) => {
                let error = format!(
                    "could not start the job process {}: {e}",
                    self.options.child.exe.display()
                );
                tracing::error!(job_id = %job.id, "{error}");
                self.send_job_status(&job.id, proto::JobStatus::JsFailed, &error);
                self.metrics
                    .jobs_ended
                    .get_or_create(&EndLabels {
                        status: "JS_FAILED",
                        exit_code: "not_started".into(),
                    })
                    .inc();
            }
        }
        self.send_status();
    }

    /// Idempotent: a job already shutting down keeps its kill deadline.
    fn on_termination(&mut self, job_id: &str) {
        if self.pending.remove(job_id).is_some() {
            tracing::info!(job_id, "the server terminated a job before assigning it");
            self.send_status();
            return;
        }
        match self.jobs.get_mut(job_id) {
            Some(job) if job.kill_at.is_none() => {
                tracing::info!(job_id, "the server terminated the job; shutting it down");
                job.kill_at = Some(Instant::now() + self.options.kill_after);
                job.handle.shutdown(
                    ShutdownCause::Terminated,
                    "the server terminated the job (JobTermination: dispatch deleted, or the agent left the room)",
                );
            }
            Some(_) => tracing::debug!(job_id, "termination for a job already shutting down"),
            None => tracing::debug!(job_id, "termination for a job that already ended"),
        }
    }

    fn on_child_event(&mut self, event: ChildEvent) {
        match event {
            ChildEvent::Joined { job_id } => {
                if let Some(at) = self.jobs.get(&job_id).and_then(|j| j.offered_at) {
                    let latency = at.elapsed();
                    self.metrics
                        .dispatch_to_joined
                        .observe(latency.as_secs_f64());
                    tracing::debug!(job_id = %job_id, dispatch_to_joined_ms = latency.as_millis() as u64, "the job joined its room");
                }
            }
            ChildEvent::Stats { job_id, stats } => {
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    let d = |now: u64, before: u64| now.saturating_sub(before);
                    self.metrics.audio_frames_dropped.inc_by(d(
                        stats.audio_frames_dropped,
                        job.stats.audio_frames_dropped,
                    ));
                    self.metrics
                        .log_lines_dropped
                        .inc_by(d(stats.log_lines_dropped, job.stats.log_lines_dropped));
                    self.metrics
                        .reconnects
                        .get_or_create(&ReconnectLabels { scope: "job" })
                        .inc_by(d(stats.reconnects, job.stats.reconnects));
                    job.stats = stats;
                }
            }
            ChildEvent::Verdict {
                job_id,
                verdict,
                ack,
            } => {
                // The first verdict is the job's final status; any other is
                // only acknowledged.
                let first = match self.jobs.get_mut(&job_id) {
                    Some(job) if job.reported.is_none() => {
                        job.reported = Some(verdict.clone());
                        true
                    }
                    _ => false,
                };
                if !first {
                    let _ = ack.send(());
                    return;
                }
                if !self.registered {
                    tracing::warn!(job_id = %job_id, success = verdict.success, error = %verdict.error, "not connected to the LiveKit server: this job's status cannot be delivered");
                    let _ = ack.send(());
                    return;
                }
                let status = job_status_of(&verdict);
                tracing::info!(job_id = %job_id, status = status.as_str_name(), error = %verdict.error, "job status sent");
                // The job may leave the room once the server has processed
                // the status (the pong to the ping sent right after it), not
                // merely once it is queued: the job leaves over its own
                // connection, which the server handles in no fixed order
                // with this one.
                let _ = self.to_server.send(Outgoing {
                    msg: job_status_message(&job_id, status, &verdict.error),
                    processed: Some(ack),
                });
            }
            ChildEvent::Exited {
                job_id,
                code,
                signal,
            } => {
                let Some(job) = self.jobs.remove(&job_id) else {
                    return;
                };
                let how = match (code, signal) {
                    (Some(c), _) => format!("exited {c}"),
                    (None, Some(s)) => format!("was killed by signal {s}"),
                    _ => "ended".to_string(),
                };
                let ran_ms = job.started.elapsed().as_millis() as u64;
                self.metrics
                    .job_duration
                    .observe(job.started.elapsed().as_secs_f64());
                self.metrics
                    .jobs_ended
                    .get_or_create(&EndLabels {
                        status: match &job.reported {
                            Some(v) if v.success => "JS_SUCCESS",
                            _ => "JS_FAILED",
                        },
                        exit_code: match (code, signal) {
                            (Some(c), _) => c.to_string(),
                            (None, Some(s)) => format!("signal_{s}"),
                            _ => "unknown".into(),
                        },
                    })
                    .inc();
                self.metrics.remove_job(&job_id);
                self.metrics.running_jobs.set(self.jobs.len() as i64);
                // The freed slot is reported before `job_ended` is logged
                // (see check_plugin).
                self.send_status();
                self.publish();
                match &job.reported {
                    None => {
                        let error = match &job.worker_cause {
                            Some(cause) => format!(
                                "{cause}; the job process {how} without reporting an outcome"
                            ),
                            None => format!("the job process {how} without reporting an outcome"),
                        };
                        tracing::warn!(job_id = %job_id, room = %job.room, ran_ms, event = "job_ended", "{error}; reported as failed");
                        self.send_job_status(&job_id, proto::JobStatus::JsFailed, &error);
                    }
                    Some(v) if v.success && code != Some(0) => tracing::warn!(
                        job_id = %job_id, room = %job.room, ran_ms, event = "job_ended",
                        "the job process {how} after it was reported successful (its shutdown hooks or plugin failed after it left the room; see its log)"
                    ),
                    Some(v) if !v.success && code == Some(0) => tracing::warn!(
                        job_id = %job_id, room = %job.room, ran_ms, event = "job_ended",
                        "the job process {how} after it was reported failed ({}); its run returned only after the job left the room", v.error
                    ),
                    Some(_) => {
                        tracing::info!(job_id = %job_id, room = %job.room, ran_ms, event = "job_ended", "job process {how}")
                    }
                }
            }
        }
    }

    /// Asks every running job not yet asked to shut down.
    fn shut_down_all(&mut self, detail: &str) {
        let kill_at = Instant::now() + self.options.kill_after;
        for job in self.jobs.values_mut() {
            if job.kill_at.is_none() {
                job.kill_at = Some(kill_at);
                job.handle.shutdown(ShutdownCause::WorkerStopping, detail);
            }
        }
    }

    /// Samples each job's memory and CPU; warns once per job over
    /// `--job-memory-warn`, shuts a job over `--job-memory-limit` down.
    fn sample_jobs(&mut self) {
        let now = Instant::now();
        let kill_after = self.options.kill_after;
        for (job_id, job) in self.jobs.iter_mut() {
            let Some(u) = usage::sample(job.handle.pid) else {
                continue;
            };
            job.usage = u;
            let labels = JobLabels {
                job_id: job_id.clone(),
            };
            self.metrics
                .job_rss
                .get_or_create(&labels)
                .set(u.rss_bytes as i64);
            self.metrics
                .job_cpu
                .get_or_create(&labels)
                .set(u.cpu_seconds);
            let rss_mb = u.rss_bytes / MB;
            if let Some(limit) = self.options.job_memory_limit {
                if u.rss_bytes > limit && job.kill_at.is_none() {
                    let detail = format!(
                        "the job's memory (RSS {rss_mb} MB) went over --job-memory-limit {} MB",
                        limit / MB
                    );
                    tracing::error!(job_id = %job_id, pid = job.handle.pid, rss_mb, limit_mb = limit / MB, event = "job_memory_limit", "{detail}; shutting the job down (killed if it has not ended in {} s)", kill_after.as_secs());
                    job.kill_at = Some(now + kill_after);
                    job.handle.shutdown(ShutdownCause::MemoryLimit, &detail);
                    job.worker_cause = Some(detail);
                    self.metrics.memory_shutdowns.inc();
                    continue;
                }
            }
            if let Some(warn) = self.options.job_memory_warn {
                if u.rss_bytes > warn && !job.memory_warned {
                    job.memory_warned = true;
                    let what = if self.options.job_memory_limit.is_some() {
                        ""
                    } else {
                        " (a warning only: no --job-memory-limit is set)"
                    };
                    tracing::warn!(job_id = %job_id, pid = job.handle.pid, rss_mb, warn_mb = warn / MB, event = "job_memory_warn", "the job's memory (RSS {rss_mb} MB) is over --job-memory-warn {} MB{what}", warn / MB);
                }
            }
        }
        let own = crate::logsink::dropped_lines();
        self.metrics
            .log_lines_dropped
            .inc_by(own.saturating_sub(self.own_dropped_logs));
        self.own_dropped_logs = own;
    }

    /// Publishes what the endpoint shows (only when it is being served).
    fn publish(&self) {
        if self.view.receiver_count() == 0 {
            return;
        }
        let full = self.full();
        let state = match &self.stop {
            Some(Stop::Failing { .. }) => WorkerState::Failed,
            Some(Stop::Draining { .. }) => WorkerState::Draining,
            None if self.registered => WorkerState::Registered,
            None => WorkerState::Connecting,
        };
        let mut jobs: Vec<JobView> = self
            .jobs
            .iter()
            .map(|(id, j)| JobView {
                job_id: id.clone(),
                room: j.room.clone(),
                participant_identity: j.participant_identity.clone(),
                started_unix_ms: j.started_unix_ms,
                age_s: 0.0,
                pid: j.handle.pid,
                rss_bytes: j.usage.rss_bytes,
                cpu_seconds: j.usage.cpu_seconds,
                shutting_down: j.kill_at.is_some(),
            })
            .collect();
        jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        let plugin_state = self.plugin.state();
        self.view.send_replace(WorkerView {
            worker_id: self.worker_id.clone(),
            agent_name: self.options.registration.agent_name.clone(),
            state,
            registered: self.registered,
            draining: matches!(self.stop, Some(Stop::Draining { .. })),
            url: self.registered_url.clone().filter(|_| self.registered),
            error: match &self.stop {
                Some(Stop::Failing { error, .. }) => Some(error.clone()),
                _ => None,
            },
            max_jobs: self.options.max_jobs,
            load: self.load(),
            full,
            plugin: PluginView {
                path: self.plugin.path().display().to_string(),
                state: plugin_state.name(),
                error: match plugin_state {
                    PluginState::Invalid(e) => Some(e.clone()),
                    PluginState::Missing => Some("the file is gone or unreadable".into()),
                    _ => None,
                },
            },
            jobs,
        });
    }

    /// Periodic duties: assignments that never came, jobs past their kill
    /// deadline, the drain deadline, memory.
    fn tick(&mut self) {
        self.check_plugin();
        let now = Instant::now();
        if self
            .last_usage_sample
            .is_none_or(|at| now.duration_since(at) >= USAGE_INTERVAL)
        {
            self.last_usage_sample = Some(now);
            self.sample_jobs();
        }
        let before = self.pending.len();
        self.pending.retain(|job_id, p| {
            let keep = p.deadline > now;
            if !keep {
                tracing::warn!(job_id = %job_id, "no assignment within {} s of accepting the job; slot released", crate::ASSIGNMENT_TIMEOUT.as_secs_f64());
            }
            keep
        });
        if self.pending.len() != before {
            self.send_status();
        }
        for (job_id, job) in self.jobs.iter_mut() {
            if !job.killed && job.kill_at.is_some_and(|at| at <= now) {
                job.killed = true;
                tracing::error!(job_id = %job_id, pid = job.handle.pid, "the job did not end within {} s of being asked to shut down; killing it", self.options.kill_after.as_secs());
                job.handle.kill();
            }
        }
        if let Some(Stop::Draining { deadline } | Stop::Failing { deadline, .. }) = self.stop {
            if deadline <= now && self.jobs.values().any(|j| j.kill_at.is_none()) {
                tracing::warn!(
                    jobs = self.jobs.len(),
                    "drain timeout ({} s) ran out; shutting the remaining jobs down",
                    self.options.drain_timeout.as_secs()
                );
                self.shut_down_all("the worker is shutting down (its drain timeout ran out)");
            }
        }
    }

    fn done(&self) -> bool {
        self.stop.is_some() && self.jobs.is_empty() && self.pending.is_empty()
    }
}

fn job_status_message(
    job_id: &str,
    status: proto::JobStatus,
    error: &str,
) -> worker_message::Message {
    worker_message::Message::UpdateJob(proto::UpdateJobStatus {
        job_id: job_id.to_string(),
        status: status as i32,
        error: error.to_string(),
    })
}

fn job_status_of(verdict: &Verdict) -> proto::JobStatus {
    if verdict.success {
        proto::JobStatus::JsSuccess
    } else {
        proto::JobStatus::JsFailed
    }
}

/// The identity a job joins as: `agent-<job id>`, as LiveKit Agents does.
pub fn agent_identity(job_id: &str) -> String {
    format!("agent-{job_id}")
}

/// Runs the worker until it has drained (0), a second signal (128 + n), or
/// a fatal connection error (77 wrong credentials, 69 server unreachable
/// after `--max-retries`). Running jobs outlive a lost connection.
///
/// `http`: the endpoint's listener (see [`http`]), bound by the caller so
/// that a taken port is refused before the worker registers.
pub async fn run_worker(
    options: WorkerOptions,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    http: Option<std::net::TcpListener>,
) -> i32 {
    let (to_server, outgoing) = mpsc::unbounded_channel();
    let (conn_tx, mut conn_events) = mpsc::unbounded_channel();
    let (child_tx, mut child_events) = mpsc::unbounded_channel();
    let connection = tokio::spawn(agent_ws::run_connection(
        options.endpoint.clone(),
        options.registration.clone(),
        outgoing,
        conn_tx,
    ));
    tracing::info!(
        agent_name = %options.registration.agent_name,
        job_type = options.registration.job_type.as_str_name(),
        max_jobs = options.max_jobs,
        url = %options.endpoint.urls.join(","),
        "worker starting"
    );
    let metrics = Arc::new(WorkerMetrics::new());
    let (view, view_rx) = watch::channel(WorkerView::default());
    let mut endpoint = None;
    if let Some(listener) = http {
        let served = listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(listener));
        match served {
            Ok(l) => {
                tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), event = "http_listening", "serving health (/), the worker's state (/worker) and metrics (/metrics)");
                endpoint = Some(tokio::spawn(http::serve(
                    l,
                    view_rx,
                    metrics.clone(),
                    http::Limits::default(),
                )));
            }
            Err(e) => tracing::error!("could not serve the HTTP endpoint: {e}"),
        }
    } else {
        drop(view_rx);
    }
    let plugin = PluginFile::validated(options.plugin.clone(), options.child.exe.clone());
    let mut worker = Worker {
        options,
        to_server,
        child_events: child_tx,
        pending: HashMap::new(),
        jobs: HashMap::new(),
        stop: None,
        plugin,
        registered: false,
        ever_registered: false,
        worker_id: String::new(),
        registered_url: None,
        jobs_started: 0,
        metrics,
        view,
        last_usage_sample: None,
        own_dropped_logs: 0,
    };
    worker.publish();
    let mut status_timer = tokio::time::interval(STATUS_INTERVAL);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut first_signal: Option<Signal> = None;
    let code = loop {
        if worker.done() {
            break match &worker.stop {
                Some(Stop::Failing { code, error, .. }) => {
                    crate::logsink::line_always(&format!(
                        "lk-go: error: {}",
                        crate::logsink::one_printable_line(error)
                    ));
                    *code
                }
                _ => {
                    tracing::info!(jobs_run = worker.jobs_started, "worker drained; exiting");
                    exit::OK
                }
            };
        }
        tokio::select! {
            event = conn_events.recv() => match event {
                Some(ConnEvent::Ready { worker_id, server_version, url }) => {
                    if worker.ever_registered {
                        worker.metrics.reconnects.get_or_create(&ReconnectLabels { scope: "worker" }).inc();
                    }
                    worker.registered = true;
                    worker.ever_registered = true;
                    worker.metrics.registered.set(1);
                    worker.worker_id = worker_id.clone();
                    worker.registered_url = Some(url.clone());
                    // The endpoint shows the state before the line says it:
                    // whoever reads `worker_registered` and asks `GET /` sees
                    // `registered`, not the previous `connecting`.
                    worker.publish();
                    worker.send_status();
                    tracing::info!(event = "worker_registered", worker_id = %worker_id, server_version = %server_version, url = %url, "worker registered; waiting for jobs");
                }
                Some(ConnEvent::Message(msg)) => worker.on_server_message(*msg),
                Some(ConnEvent::Lost { error, retry_in }) => {
                    worker.registered = false;
                    worker.metrics.registered.set(0);
                    // Nothing the server knew of this registration survives:
                    // pending assignments will not come.
                    worker.pending.clear();
                    let what = if worker.ever_registered { "lost the LiveKit server" } else { "could not register with the LiveKit server" };
                    tracing::warn!(jobs = worker.jobs.len(), "{what} ({error}); running jobs keep running; retrying in {} s", retry_in.as_secs());
                }
                Some(ConnEvent::Fatal { code, error }) => {
                    worker.registered = false;
                    worker.metrics.registered.set(0);
                    worker.pending.clear();
                    if !worker.jobs.is_empty() {
                        tracing::error!(jobs = worker.jobs.len(), "{error}; waiting up to --drain-timeout for the running jobs to end before exiting");
                    }
                    worker.stop = Some(Stop::Failing { code, error, deadline: Instant::now() + worker.options.drain_timeout });
                }
                None => {}
            },
            Some(event) = child_events.recv() => worker.on_child_event(event),
            Some(signal) = signals.recv() => {
                match first_signal {
                    None => {
                        first_signal = Some(signal);
                        tracing::info!(jobs = worker.jobs.len(), drain_timeout_s = worker.options.drain_timeout.as_secs(), "{signal}: draining (declining new jobs, waiting for running jobs to end); send it again to stop now");
                        if worker.stop.is_none() {
                            worker.stop = Some(Stop::Draining { deadline: Instant::now() + worker.options.drain_timeout });
                        }
                        worker.send_status();
                    }
                    Some(_) => {
                        crate::logsink::line_always(&format!(
                            "lk-go: {signal} during drain; asking {} job(s) to shut down and exiting now (their status cannot reach the server any more)",
                            worker.jobs.len()
                        ));
                        worker.shut_down_all("the worker was told to stop now (second signal)");
                        // The jobs see the request, or EOF on their pipe when
                        // this process exits: either way they run their cascade.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        break signal.exit_code();
                    }
                }
            }
            _ = status_timer.tick() => worker.send_status(),
            _ = tick.tick() => worker.tick(),
        }
        worker.publish();
    };
    if let Some(e) = endpoint {
        e.abort();
    }
    // Closing the outgoing channel ends the connection task, which closes
    // the socket (the server then forgets the worker).
    drop(worker);
    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_jobs: u32) -> WorkerOptions {
        WorkerOptions {
            // Any file that exists: the worker only checks it is there.
            plugin: std::env::current_exe().unwrap(),
            endpoint: AgentEndpoint {
                urls: vec!["ws://127.0.0.1:1".into()],
                api_key: "k".into(),
                api_secret: "s".into(),
                max_retries: None,
            },
            registration: Registration {
                agent_name: "a".into(),
                job_type: proto::JobType::JtRoom,
                version: "t".into(),
                permissions: Default::default(),
            },
            max_jobs,
            drain_timeout: Duration::from_secs(60),
            child: ChildSpec {
                exe: "/nonexistent/lk-go".into(),
                args: vec![],
                json_logs: false,
            },
            kill_after: Duration::from_secs(30),
            job_memory_warn: None,
            job_memory_limit: None,
        }
    }

    fn worker(max_jobs: u32) -> (Worker, mpsc::UnboundedReceiver<Outgoing>) {
        let (to_server, rx) = mpsc::unbounded_channel();
        let (child_events, _) = mpsc::unbounded_channel();
        let options = options(max_jobs);
        let plugin = PluginFile::validated(options.plugin.clone(), options.child.exe.clone());
        let w = Worker {
            options,
            to_server,
            child_events,
            pending: HashMap::new(),
            jobs: HashMap::new(),
            stop: None,
            plugin,
            registered: true,
            ever_registered: true,
            worker_id: String::new(),
            registered_url: None,
            jobs_started: 0,
            metrics: Arc::new(WorkerMetrics::new()),
            view: watch::channel(WorkerView::default()).0,
            last_usage_sample: None,
            own_dropped_logs: 0,
        };
        (w, rx)
    }

    fn request(job_id: &str) -> proto::AvailabilityRequest {
        proto::AvailabilityRequest {
            job: Some(proto::Job {
                id: job_id.into(),
                ..Default::default()
            }),
            resuming: false,
        }
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<worker_message::Message> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|o| {
                // What waits for the server's processing is let go, as the
                // pong would.
                if let Some(p) = o.processed {
                    let _ = p.send(());
                }
                o.msg
            })
            .collect()
    }

    fn answers(msgs: &[worker_message::Message]) -> Vec<(String, bool)> {
        msgs.iter()
            .filter_map(|m| match m {
                worker_message::Message::Availability(a) => Some((a.job_id.clone(), a.available)),
                _ => None,
            })
            .collect()
    }

    fn statuses(msgs: &[worker_message::Message]) -> Vec<(i32, f32)> {
        msgs.iter()
            .filter_map(|m| match m {
                worker_message::Message::UpdateWorker(u) => Some((u.status.unwrap(), u.load)),
                _ => None,
            })
            .collect()
    }

    fn job_updates(msgs: &[worker_message::Message]) -> Vec<(String, i32, String)> {
        msgs.iter()
            .filter_map(|m| match m {
                worker_message::Message::UpdateJob(u) => {
                    Some((u.job_id.clone(), u.status, u.error.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn running(w: &mut Worker, job_id: &str) -> mpsc::UnboundedReceiver<ipc::ToJob> {
        let (handle, rx) = ChildHandle::fake();
        w.jobs.insert(
            job_id.to_string(),
            RunningJob::new(handle, "r".into(), String::new(), None),
        );
        rx
    }

    #[test]
    fn max_jobs_is_what_limits_and_load_stays_below_the_servers_target() {
        let (mut w, mut rx) = worker(2);
        w.on_availability(request("AJ_1"));
        w.on_availability(request("AJ_2"));
        w.on_availability(request("AJ_3"));
        let msgs = drain(&mut rx);
        assert_eq!(
            answers(&msgs),
            [
                ("AJ_1".into(), true),
                ("AJ_2".into(), true),
                ("AJ_3".into(), false)
            ]
        );
        let st = statuses(&msgs);
        // After the first accept: available, load under 0.7 (the server's
        // target_load); after the second: full.
        assert_eq!(st[0].0, proto::WorkerStatus::WsAvailable as i32);
        assert!(st[0].1 < 0.7, "{st:?}");
        assert_eq!(st[1], (proto::WorkerStatus::WsFull as i32, 1.0));
        // An assignment that never comes releases its slot.
        for p in w.pending.values_mut() {
            p.deadline = Instant::now();
        }
        w.tick();
        assert_eq!(w.used(), 0);
        w.on_availability(request("AJ_4"));
        assert_eq!(answers(&drain(&mut rx)), [("AJ_4".into(), true)]);
    }

    #[test]
    fn a_draining_worker_declines_and_reports_full() {
        let (mut w, mut rx) = worker(4);
        w.stop = Some(Stop::Draining {
            deadline: Instant::now() + Duration::from_secs(60),
        });
        w.send_status();
        w.on_availability(request("AJ_1"));
        let msgs = drain(&mut rx);
        assert_eq!(answers(&msgs), [("AJ_1".into(), false)]);
        assert_eq!(statuses(&msgs)[0].0, proto::WorkerStatus::WsFull as i32);
    }

    #[test]
    fn an_assignment_nobody_waits_for_starts_nothing() {
        let (mut w, mut rx) = worker(1);
        w.on_assignment(proto::JobAssignment {
            job: Some(proto::Job {
                id: "AJ_late".into(),
                ..Default::default()
            }),
            url: None,
            token: "t".into(),
        });
        assert!(w.jobs.is_empty());
        assert!(job_updates(&drain(&mut rx)).is_empty());
    }

    #[test]
    fn a_job_process_that_cannot_start_is_a_failed_job() {
        let (mut w, mut rx) = worker(1);
        w.on_availability(request("AJ_1"));
        w.on_assignment(proto::JobAssignment {
            job: Some(proto::Job {
                id: "AJ_1".into(),
                ..Default::default()
            }),
            url: None,
            token: "t".into(),
        });
        let ups = job_updates(&drain(&mut rx));
        assert_eq!(ups.len(), 1, "{ups:?}");
        assert_eq!(ups[0].1, proto::JobStatus::JsFailed as i32);
        assert!(
            ups[0].2.contains("could not start the job process"),
            "{ups:?}"
        );
    }

    #[test]
    fn the_final_status_is_sent_once_and_a_crash_is_never_a_success() {
        let (mut w, mut rx) = worker(4);
        // Verdict, then exit: one final status (the verdict's).
        let _a = running(&mut w, "AJ_ok");
        let (ack, acked) = tokio::sync::oneshot::channel();
        w.on_child_event(ChildEvent::Verdict {
            job_id: "AJ_ok".into(),
            verdict: Verdict {
                success: true,
                error: String::new(),
            },
            ack,
        });
        let sent = drain(&mut rx);
        assert!(
            acked.blocking_recv().is_ok(),
            "the job is let go once the server processed its status"
        );
        w.on_child_event(ChildEvent::Exited {
            job_id: "AJ_ok".into(),
            code: Some(0),
            signal: None,
        });
        // No verdict, killed: failed, with how it ended.
        let _b = running(&mut w, "AJ_killed");
        w.on_child_event(ChildEvent::Exited {
            job_id: "AJ_killed".into(),
            code: None,
            signal: Some(9),
        });
        // No verdict, exited 0 (e.g. died before joining): still failed.
        let _c = running(&mut w, "AJ_silent");
        w.on_child_event(ChildEvent::Exited {
            job_id: "AJ_silent".into(),
            code: Some(0),
            signal: None,
        });
        let ups: Vec<_> = job_updates(&sent)
            .into_iter()
            .chain(job_updates(&drain(&mut rx)))
            .collect();
        let ok = proto::JobStatus::JsSuccess as i32;
        let failed = proto::JobStatus::JsFailed as i32;
        assert_eq!(ups.len(), 3, "{ups:?}");
        assert_eq!((ups[0].0.as_str(), ups[0].1), ("AJ_ok", ok));
        assert_eq!((ups[1].0.as_str(), ups[1].1), ("AJ_killed", failed));
        assert!(ups[1].2.contains("killed by signal 9"), "{ups:?}");
        assert_eq!((ups[2].0.as_str(), ups[2].1), ("AJ_silent", failed));
        assert!(w.jobs.is_empty());
    }

    #[test]
    fn a_worker_whose_plugin_file_is_gone_reports_full_until_it_is_back() {
        let dir = std::env::temp_dir().join(format!("lk-go-gone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plugin.so");
        let away = dir.join("away.so");
        std::fs::write(&path, b"x").unwrap();
        let (mut w, mut rx) = worker(4);
        w.options.plugin = path.clone();
        w.plugin = PluginFile::validated(path.clone(), w.options.child.exe.clone());
        w.tick();
        assert!(drain(&mut rx).is_empty(), "nothing changed, nothing sent");
        std::fs::rename(&path, &away).unwrap();
        w.tick();
        w.on_availability(request("AJ_1"));
        let msgs = drain(&mut rx);
        assert_eq!(statuses(&msgs)[0].0, proto::WorkerStatus::WsFull as i32);
        assert_eq!(answers(&msgs), [("AJ_1".into(), false)]);
        // The same file back (a rollback): no validation needed.
        std::fs::rename(&away, &path).unwrap();
        w.tick();
        w.on_availability(request("AJ_2"));
        let msgs = drain(&mut rx);
        assert_eq!(
            statuses(&msgs)[0].0,
            proto::WorkerStatus::WsAvailable as i32
        );
        assert_eq!(answers(&msgs), [("AJ_2".into(), true)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A deploy renames a new build over the plugin: no job starts from it
    /// until it validated; a broken one keeps the worker full until a good
    /// file is in place. The validator here stands in for `lk-go plugin
    /// inspect` (same arguments, same exit codes).
    #[tokio::test]
    async fn a_replaced_plugin_file_is_validated_before_jobs_load_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lk-go-swap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let validator = dir.join("inspect.sh");
        std::fs::write(
            &validator,
            "#!/bin/sh\ngrep -q good \"$3\" && { echo 'name: p'; echo 'version: 2'; echo 'abi: 1.4'; exit 0; }\necho \"lk-go: error: $3 is not a loadable shared library\" >&2; exit 65\n",
        )
        .unwrap();
        std::fs::set_permissions(&validator, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("plugin.so");
        std::fs::write(&path, b"good 1").unwrap();
        let (mut w, mut rx) = worker(4);
        w.options.plugin = path.clone();
        w.plugin = PluginFile::validated(path.clone(), validator.clone());
        let swap = |content: &[u8]| {
            let next = dir.join("next.so");
            std::fs::write(&next, content).unwrap();
            std::fs::rename(&next, &path).unwrap();
        };
        async fn settle(w: &mut Worker) -> PluginState {
            for _ in 0..250 {
                w.tick();
                if *w.plugin.state() != PluginState::Validating {
                    return w.plugin.state().clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("validation never finished");
        }
        swap(b"broken");
        w.tick();
        assert_eq!(*w.plugin.state(), PluginState::Validating);
        w.on_availability(request("AJ_1"));
        assert_eq!(answers(&drain(&mut rx)), [("AJ_1".into(), false)]);
        let state = settle(&mut w).await;
        assert!(
            matches!(&state, PluginState::Invalid(e) if e.contains("not a loadable shared library") && e.contains("exit 65")),
            "{state:?}"
        );
        w.on_availability(request("AJ_2"));
        let msgs = drain(&mut rx);
        assert_eq!(answers(&msgs), [("AJ_2".into(), false)]);
        assert!(statuses(&msgs)
            .iter()
            .all(|s| s.0 == proto::WorkerStatus::WsFull as i32));
        swap(b"good 2");
        assert_eq!(settle(&mut w).await, PluginState::Ok);
        w.on_availability(request("AJ_3"));
        assert_eq!(answers(&drain(&mut rx)), [("AJ_3".into(), true)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn termination_is_idempotent() {
        let (mut w, _rx) = worker(4);
        let mut to_job = running(&mut w, "AJ_1");
        w.on_termination("AJ_1");
        w.on_termination("AJ_1");
        w.on_termination("AJ_unknown");
        let sent: Vec<_> = std::iter::from_fn(|| to_job.try_recv().ok()).collect();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(matches!(
            sent[0],
            ipc::ToJob::Shutdown {
                cause: ShutdownCause::Terminated,
                ..
            }
        ));
        // The drain deadline does not ask a job already shutting down again.
        w.stop = Some(Stop::Draining {
            deadline: Instant::now(),
        });
        w.tick();
        assert!(to_job.try_recv().is_err());
    }
}
