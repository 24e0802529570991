//! Running shutdown hooks with deadlines.
//!
//! Owns: how one hook runs (a thread of its own, `catch_unwind`, a deadline)
//! and how the hook stage runs them all: strictly one after the other in the
//! order given (newest first), within an overall budget. Must not decide
//! which hooks exist or when to run them: `JobContext` does.
//!
//! The promises, each visible in [`HookReport`] and as an ERROR line:
//! - **Order is kept**: a hook starts only after the one before it returned.
//!   A hook past its per-hook deadline is reported as overrun, and the stage
//!   keeps waiting for it (within the budget) rather than start an older
//!   hook beside it: teardown in reverse order must not run concurrently.
//! - **No hook is started that will not be waited for**: once the budget is
//!   spent, the hooks not yet started are not started at all; they are
//!   dropped, which for a C hook calls its `free_user_data`.
//! - A hook that panics is reported and the next one runs.
//!
//! Why a thread per hook: a hook may be foreign code (a C or Go callback) that
//! cannot be cancelled. Waiting on a thread with a timeout is the only way to
//! keep the budget without trusting the hook. A hook still running at the end
//! of the budget keeps its thread; the process ends soon after (one job per
//! process).

use super::{NamedHook, ShutdownInfo};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the hook stage did. Names are the hooks' registration names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookReport {
    /// Hooks that returned (within their deadline or late).
    pub completed: usize,
    /// Hooks that panicked.
    pub panicked: Vec<String>,
    /// Hooks that ran past the per-hook deadline (they may have returned
    /// late, within the budget).
    pub overran: Vec<String>,
    /// Hooks still running when the budget ran out: abandoned mid-run.
    pub abandoned: Vec<String>,
    /// Hooks never started because the budget was spent before their turn.
    pub not_run: Vec<String>,
    pub elapsed: Duration,
}

impl HookReport {
    /// True when every hook ran to completion, in time, without panicking.
    pub fn is_clean(&self) -> bool {
        self.panicked.is_empty()
            && self.overran.is_empty()
            && self.abandoned.is_empty()
            && self.not_run.is_empty()
    }
}

enum Outcome {
    Completed,
    Panicked(String),
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Starts `hook` on its own thread; the receiver yields its outcome.
fn spawn(hook: NamedHook, info: &ShutdownInfo) -> (String, Option<mpsc::Receiver<Outcome>>) {
    let (tx, rx) = mpsc::channel();
    let name = hook.name.clone();
    let info = info.clone();
    let run = hook.run;
    let spawned = std::thread::Builder::new()
        .name("lk-hook".into())
        .spawn(move || {
            let outcome = match catch_unwind(AssertUnwindSafe(|| run(&info))) {
                Ok(()) => Outcome::Completed,
                Err(p) => Outcome::Panicked(panic_message(p.as_ref())),
            };
            let _ = tx.send(outcome);
        });
    match spawned {
        Ok(_) => (name, Some(rx)),
        Err(e) => {
            // The closure (and the hook) were dropped unrun; say so loudly.
            tracing::error!(hook = %name, error = %e, "could not start a thread for the shutdown hook");
            (name, None)
        }
    }
}

/// Waits for one started hook: up to `per_hook`, then (overrun) on until
/// `budget_end`. Logs and records what happened.
fn wait(
    name: String,
    rx: Option<mpsc::Receiver<Outcome>>,
    per_hook: Duration,
    budget_end: Instant,
    report: &mut HookReport,
) {
    let started = Instant::now();
    let Some(rx) = rx else {
        report.panicked.push(name);
        return;
    };
    let first = per_hook.min(budget_end.saturating_duration_since(started));
    let outcome = match rx.recv_timeout(first) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let remaining = budget_end.saturating_duration_since(Instant::now());
            if started.elapsed() >= per_hook {
                tracing::error!(hook = %name, deadline_ms = per_hook.as_millis() as u64, remaining_budget_ms = remaining.as_millis() as u64, "shutdown hook overran its deadline; waiting for it within the hook budget before starting older hooks");
                report.overran.push(name.clone());
            }
            rx.recv_timeout(remaining)
        }
        other => other,
    };
    match outcome {
        Ok(Outcome::Completed) => {
            tracing::debug!(hook = %name, elapsed_ms = started.elapsed().as_millis() as u64, "shutdown hook done");
            report.completed += 1;
        }
        Ok(Outcome::Panicked(msg)) => {
            tracing::error!(hook = %name, panic = %msg, "shutdown hook panicked; running the others");
            report.panicked.push(name);
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            tracing::error!(hook = %name, "shutdown hook still running when the hook budget ran out; abandoned (raise --hook-budget or make the hook return)");
            report.abandoned.push(name);
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The thread ended without sending: only possible if the panic
            // machinery itself failed. Count it as a panic.
            tracing::error!(hook = %name, "shutdown hook thread ended abnormally");
            report.panicked.push(name);
        }
    }
}

/// Runs one hook on the calling thread, to completion (a hook registered
/// after shutdown began: the header promises it runs before `on_shutdown`
/// returns). A panic is caught and logged.
pub(crate) fn run_here(hook: NamedHook, info: &ShutdownInfo) -> HookReport {
    let started = Instant::now();
    let mut report = HookReport::default();
    let run = hook.run;
    match catch_unwind(AssertUnwindSafe(|| run(info))) {
        Ok(()) => report.completed = 1,
        Err(p) => {
            let msg = panic_message(p.as_ref());
            tracing::error!(hook = %hook.name, panic = %msg, "shutdown hook panicked");
            report.panicked.push(hook.name);
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Runs `hooks` strictly one after the other in the given order, each
/// expected within `timeouts.per_hook`, all within `timeouts.budget` (see the
/// module doc for what happens to those that do not fit).
pub(crate) fn run_all(
    hooks: Vec<NamedHook>,
    info: &ShutdownInfo,
    timeouts: super::HookTimeouts,
) -> HookReport {
    let started = Instant::now();
    let budget_end = started + timeouts.budget;
    let mut report = HookReport::default();
    for hook in hooks {
        // (A hook is only abandoned at the budget's end, so this also covers
        // "the one before is still running".)
        if Instant::now() >= budget_end {
            tracing::error!(hook = %hook.name, budget_ms = timeouts.budget.as_millis() as u64, "hook budget spent before this hook's turn; not started (raise --hook-budget)");
            report.not_run.push(hook.name);
            // Dropping the hook unrun releases what it owns (for a C hook:
            // its free_user_data).
            continue;
        }
        let (name, rx) = spawn(hook, info);
        wait(name, rx, timeouts.per_hook, budget_end, &mut report);
    }
    report.elapsed = started.elapsed();
    report
}
