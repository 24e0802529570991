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
pub mod ipc;
pub mod job_side;

use crate::exit;
use crate::runner::Verdict;
use agent_ws::{AgentEndpoint, ConnEvent, Outgoing, Registration};
use child::{ChildEvent, ChildHandle, ChildSpec};
use ipc::ShutdownCause;
use livekit_protocol as proto;
use proto::{server_message, worker_message};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The load reported with one slot short of full: below the server's
/// default `target_load` (0.7), so a worker with a free slot always gets
/// jobs.
pub const LOAD_AT_CAPACITY: f32 = 0.6;
/// How often the worker reports its status when nothing changes (LiveKit
/// Agents: 2.5 s, `UPDATE_STATUS_INTERVAL`).
pub const STATUS_INTERVAL: Duration = Duration::from_millis(2500);

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
    started: Instant,
    /// The verdict reported to the server, once sent.
    reported: Option<Verdict>,
    /// Asked to shut down; killed at this instant if still running.
    kill_at: Option<Instant>,
    killed: bool,
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
    /// Accepted, waiting for the assignment until the instant.
    pending: HashMap<String, Instant>,
    jobs: HashMap<String, RunningJob>,
    stop: Option<Stop>,
    /// The plugin file was found gone at the last check.
    plugin_missing: bool,
    registered: bool,
    ever_registered: bool,
    /// The URL of the node the worker is registered with (jobs join
    /// through it first).
    registered_url: Option<String>,
    jobs_started: u64,
}

impl Worker {
    fn used(&self) -> u32 {
        (self.jobs.len() + self.pending.len()) as u32
    }

    fn full(&self) -> bool {
        self.stop.is_some() || self.used() >= self.options.max_jobs || self.plugin_missing
    }

    /// Notices (every tick) that the plugin file went away or came back,
    /// says so once each time, and reports the new status at once.
    fn check_plugin(&mut self) {
        let missing = !self.plugin_available();
        if missing == self.plugin_missing {
            return;
        }
        self.plugin_missing = missing;
        if missing {
            tracing::error!(plugin = %self.options.plugin.display(), "the plugin file is gone or unreadable; reporting full and declining jobs until it is back");
        } else {
            tracing::info!(plugin = %self.options.plugin.display(), "the plugin file is back; taking jobs again");
        }
        self.send_status();
    }

    fn send(&self, msg: worker_message::Message) {
        if self.registered {
            let _ = self.to_server.send(Outgoing::new(msg));
        }
    }

    /// The plugin file is still there to start jobs with (a deploy may
    /// replace or remove it under a running worker).
    fn plugin_available(&self) -> bool {
        std::fs::File::open(&self.options.plugin).is_ok()
    }

    fn send_status(&self) {
        let full = self.full();
        let load = if full {
            1.0
        } else {
            LOAD_AT_CAPACITY * self.used() as f32 / self.options.max_jobs as f32
        };
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
            Some(Stop::Draining { .. }) => Some("draining".to_string()),
            Some(Stop::Failing { .. }) => Some("shutting down".to_string()),
            None if self.used() >= self.options.max_jobs => Some(format!(
                "full ({} of --max-jobs {})",
                self.used(),
                self.options.max_jobs
            )),
            // Checked now, not only at the last tick: a job accepted in
            // between would fail with 66.
            None if !self.plugin_available() => {
                Some("the plugin file is gone or unreadable".to_string())
            }
            None => None,
        };
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
            Some(why) => tracing::info!(job_id = %job.id, room, "declined job: {why}"),
            None => {
                tracing::info!(job_id = %job.id, room, dispatch_id = %job.dispatch_id, "accepted job; waiting for its assignment");
                self.pending
                    .insert(job.id.clone(), Instant::now() + crate::ASSIGNMENT_TIMEOUT);
                self.send_status();
            }
        }
    }

    fn on_assignment(&mut self, a: proto::JobAssignment) {
        let Some(job) = a.job else { return };
        crate::secrets::register(&a.token);
        if self.pending.remove(&job.id).is_none() {
            // Python and JS agents do the same: the slot was released when
            // the assignment timed out, and the job may not fit any more.
            tracing::warn!(job_id = %job.id, "assignment for a job this worker is not waiting for (it arrived after {} s?); ignored", crate::ASSIGNMENT_TIMEOUT.as_secs_f64());
            return;
        }
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
        let assignment = ipc::ToJob::Assignment {
            urls,
            token: a.token,
            job_id: job.id.clone(),
            room: room.clone(),
            identity: agent_identity(&job.id),
            metadata: job.metadata.clone(),
            participant_identity: job
                .participant
                .as_ref()
                .map(|p| p.identity.clone())
                .unwrap_or_default(),
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
                self.jobs.insert(
                    job.id.clone(),
                    RunningJob {
                        handle,
                        room,
                        started: Instant::now(),
                        reported: None,
                        kill_at: None,
                        killed: false,
                    },
                );
            }
            Err(e) => {
                let error = format!(
                    "could not start the job process {}: {e}",
                    self.options.child.exe.display()
                );
                tracing::error!(job_id = %job.id, "{error}");
                self.send_job_status(&job.id, proto::JobStatus::JsFailed, &error);
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
                match &job.reported {
                    None => {
                        let error = format!("the job process {how} without reporting an outcome");
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
                self.send_status();
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

    /// Periodic duties: assignments that never came, jobs past their kill
    /// deadline, the drain deadline.
    fn tick(&mut self) {
        self.check_plugin();
        let now = Instant::now();
        let before = self.pending.len();
        self.pending.retain(|job_id, deadline| {
            let keep = *deadline > now;
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
pub async fn run_worker(
    options: WorkerOptions,
    mut signals: mpsc::UnboundedReceiver<Signal>,
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
    let mut worker = Worker {
        options,
        to_server,
        child_events: child_tx,
        pending: HashMap::new(),
        jobs: HashMap::new(),
        stop: None,
        plugin_missing: false,
        registered: false,
        ever_registered: false,
        registered_url: None,
        jobs_started: 0,
    };
    let mut status_timer = tokio::time::interval(STATUS_INTERVAL);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut first_signal: Option<Signal> = None;
    let code = loop {
        if worker.done() {
            break match &worker.stop {
                Some(Stop::Failing { code, error, .. }) => {
                    crate::logsink::line_always(&format!(
                        "lk-go: error: {}",
                        crate::cli::one_printable_line(error)
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
                    worker.registered = true;
                    worker.ever_registered = true;
                    tracing::info!(event = "worker_registered", worker_id = %worker_id, server_version = %server_version, url = %url, "worker registered; waiting for jobs");
                    worker.registered_url = Some(url);
                    worker.send_status();
                }
                Some(ConnEvent::Message(msg)) => worker.on_server_message(*msg),
                Some(ConnEvent::Lost { error, retry_in }) => {
                    worker.registered = false;
                    // Nothing the server knew of this registration survives:
                    // pending assignments will not come.
                    worker.pending.clear();
                    let what = if worker.ever_registered { "lost the LiveKit server" } else { "could not register with the LiveKit server" };
                    tracing::warn!(jobs = worker.jobs.len(), "{what} ({error}); running jobs keep running; retrying in {} s", retry_in.as_secs());
                }
                Some(ConnEvent::Fatal { code, error }) => {
                    worker.registered = false;
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
    };
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
            },
            max_jobs,
            drain_timeout: Duration::from_secs(60),
            child: ChildSpec {
                exe: "/nonexistent/lk-go".into(),
                args: vec![],
                json_logs: false,
            },
            kill_after: Duration::from_secs(30),
        }
    }

    fn worker(max_jobs: u32) -> (Worker, mpsc::UnboundedReceiver<Outgoing>) {
        let (to_server, rx) = mpsc::unbounded_channel();
        let (child_events, _) = mpsc::unbounded_channel();
        let w = Worker {
            options: options(max_jobs),
            to_server,
            child_events,
            pending: HashMap::new(),
            jobs: HashMap::new(),
            stop: None,
            plugin_missing: false,
            registered: true,
            ever_registered: true,
            registered_url: None,
            jobs_started: 0,
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
            RunningJob {
                handle,
                room: "r".into(),
                started: Instant::now(),
                reported: None,
                kill_at: None,
                killed: false,
            },
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
        for deadline in w.pending.values_mut() {
            *deadline = Instant::now();
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
        let path = std::env::temp_dir().join(format!("lk-go-plugin-{}.so", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        let (mut w, mut rx) = worker(4);
        w.options.plugin = path.clone();
        w.tick();
        assert!(drain(&mut rx).is_empty(), "nothing changed, nothing sent");
        std::fs::remove_file(&path).unwrap();
        w.tick();
        w.on_availability(request("AJ_1"));
        let msgs = drain(&mut rx);
        assert_eq!(statuses(&msgs)[0].0, proto::WorkerStatus::WsFull as i32);
        assert_eq!(answers(&msgs), [("AJ_1".into(), false)]);
        std::fs::write(&path, b"x").unwrap();
        w.tick();
        w.on_availability(request("AJ_2"));
        let msgs = drain(&mut rx);
        assert_eq!(
            statuses(&msgs)[0].0,
            proto::WorkerStatus::WsAvailable as i32
        );
        assert_eq!(answers(&msgs), [("AJ_2".into(), true)]);
        let _ = std::fs::remove_file(&path);
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
