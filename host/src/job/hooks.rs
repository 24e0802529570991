//! Running shutdown hooks with deadlines.
//!
//! Owns: how one hook runs (a thread of its own, `catch_unwind`, a deadline)
//! and how the hook stage runs them all (in the order given, within an overall
//! budget). A hook that panics or overruns is logged and the others still run.
//! Must not decide which hooks exist or when to run them: `JobContext` does.
//!
//! Why a thread per hook: a hook may be foreign code (a C or Go callback) that
//! cannot be cancelled. Waiting on a thread with a timeout is the only way to
//! keep the cascade's deadline without trusting the hook. A hook that overruns
//! keeps its thread; the process ends soon after anyway (one job per process).

use super::{NamedHook, ShutdownInfo};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the hook stage did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookReport {
    /// Hooks that returned within their deadline.
    pub completed: usize,
    /// Hooks that panicked (names).
    pub panicked: Vec<String>,
    /// Hooks still running at their deadline or at the end of the budget.
    pub overran: Vec<String>,
    pub elapsed: Duration,
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

/// Waits for one started hook up to `deadline`, logging what happened.
fn wait(
    name: String,
    rx: Option<mpsc::Receiver<Outcome>>,
    deadline: Duration,
    report: &mut HookReport,
) {
    let started = Instant::now();
    let Some(rx) = rx else {
        report.panicked.push(name);
        return;
    };
    match rx.recv_timeout(deadline) {
        Ok(Outcome::Completed) => {
            tracing::debug!(hook = %name, elapsed_ms = started.elapsed().as_millis() as u64, "shutdown hook done");
            report.completed += 1;
        }
        Ok(Outcome::Panicked(msg)) => {
            tracing::error!(hook = %name, panic = %msg, "shutdown hook panicked; running the others");
            report.panicked.push(name);
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            tracing::warn!(hook = %name, deadline_ms = deadline.as_millis() as u64, "shutdown hook overran its deadline; moving on");
            report.overran.push(name);
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The thread ended without sending: only possible if the panic
            // machinery itself failed. Count it as a panic.
            tracing::error!(hook = %name, "shutdown hook thread ended abnormally");
            report.panicked.push(name);
        }
    }
}

/// Runs one hook with a deadline, blocking the caller at most `deadline`.
pub(crate) fn run_one(hook: NamedHook, info: &ShutdownInfo, deadline: Duration) -> HookReport {
    let started = Instant::now();
    let mut report = HookReport::default();
    let (name, rx) = spawn(hook, info);
    wait(name, rx, deadline, &mut report);
    report.elapsed = started.elapsed();
    report
}

/// Runs `hooks` one after the other in the given order, each within
/// `timeouts.per_hook`, all within `timeouts.budget`. Once the budget is
/// spent, the remaining hooks are still started (each runs exactly once) but
/// no longer waited for.
pub(crate) fn run_all(
    hooks: Vec<NamedHook>,
    info: &ShutdownInfo,
    timeouts: super::HookTimeouts,
) -> HookReport {
    let started = Instant::now();
    let mut report = HookReport::default();
    for hook in hooks {
        let remaining = timeouts.budget.saturating_sub(started.elapsed());
        let (name, rx) = spawn(hook, info);
        if remaining.is_zero() {
            tracing::warn!(hook = %name, budget_ms = timeouts.budget.as_millis() as u64, "hook budget spent; hook started without waiting for it");
            report.overran.push(name);
            continue;
        }
        wait(name, rx, timeouts.per_hook.min(remaining), &mut report);
    }
    report.elapsed = started.elapsed();
    report
}
