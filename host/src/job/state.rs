//! The JobContext shutdown state machine, small enough to model-check.
//!
//! Owns: "has shutdown begun, with which info" and the list of hooks not yet
//! handed out. Guarantees, under one mutex:
//! - the first `begin` wins; later ones are no-ops that report `false`;
//! - a hook is either queued (before shutdown began) and later handed to the
//!   cascade by `take_hooks`, or handed straight back to its registrant to run
//!   at once (after shutdown began) — never both, never neither;
//! - `take_hooks` hands each queued hook out once, newest first.
//!
//! Must not run hooks, block, or know about time: callers do that outside the
//! lock, so a hook may call back into the context without deadlocking.
//! The loom models at the bottom run with `cargo xtask loom`.

use super::ShutdownInfo;
use crate::sync::Mutex;

pub(crate) struct ShutdownState<H> {
    inner: Mutex<Inner<H>>,
}

struct Inner<H> {
    info: Option<ShutdownInfo>,
    hooks: Vec<H>,
}

/// What `register` did with a hook.
pub(crate) enum Registered<H> {
    /// Queued; the cascade will run it.
    Queued,
    /// Shutdown has already begun: the caller runs it now with this info.
    RunNow(H, ShutdownInfo),
}

impl<H> ShutdownState<H> {
    pub(crate) fn new() -> Self {
        ShutdownState {
            inner: Mutex::new(Inner {
                info: None,
                hooks: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Inner<H>> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // state itself is always consistent (every mutation is one step).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the shutdown info if none is recorded yet. Returns true for
    /// the call that began shutdown.
    pub(crate) fn begin(&self, info: ShutdownInfo) -> bool {
        let mut g = self.lock();
        if g.info.is_some() {
            return false;
        }
        g.info = Some(info);
        true
    }

    pub(crate) fn info(&self) -> Option<ShutdownInfo> {
        self.lock().info.clone()
    }

    pub(crate) fn register(&self, hook: H) -> Registered<H> {
        let mut g = self.lock();
        match &g.info {
            Some(info) => Registered::RunNow(hook, info.clone()),
            None => {
                g.hooks.push(hook);
                Registered::Queued
            }
        }
    }

    /// Hands out every queued hook, newest first. Hooks registered after
    /// shutdown began are never queued, so after `begin` one call empties the
    /// list for good.
    pub(crate) fn take_hooks(&self) -> Vec<H> {
        let mut hooks = std::mem::take(&mut self.lock().hooks);
        hooks.reverse();
        hooks
    }
}

#[cfg(all(test, feature = "loom-model"))]
mod loom_models {
    use super::*;
    use crate::job::ShutdownReason;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    type Hook = Box<dyn FnOnce() + Send>;

    fn info(reason: ShutdownReason) -> ShutdownInfo {
        ShutdownInfo::new(reason, "")
    }

    /// Runs what a caller of `register` must run itself.
    fn register(state: &ShutdownState<Hook>, hook: Hook) {
        if let Registered::RunNow(h, _) = state.register(hook) {
            h();
        }
    }

    /// Plays the cascade: begin shutdown, then run every queued hook.
    fn shutdown_and_run(state: &ShutdownState<Hook>, reason: ShutdownReason) -> bool {
        let first = state.begin(info(reason));
        if first {
            for h in state.take_hooks() {
                h();
            }
        }
        first
    }

    fn counting_hook(counter: &Arc<AtomicUsize>) -> Hook {
        let c = counter.clone();
        Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn loom_shutdown_vs_shutdown_first_reason_wins_once() {
        loom::model(|| {
            let state = Arc::new(ShutdownState::<Hook>::new());
            let ran = Arc::new(AtomicUsize::new(0));
            register(&state, counting_hook(&ran));

            let s1 = state.clone();
            let t1 = thread::spawn(move || shutdown_and_run(&s1, ShutdownReason::SignalSigint));
            let s2 = state.clone();
            let t2 =
                thread::spawn(move || shutdown_and_run(&s2, ShutdownReason::RequestedByPlugin));
            let first1 = t1.join().unwrap();
            let first2 = t2.join().unwrap();

            assert!(first1 ^ first2, "exactly one shutdown call begins shutdown");
            let recorded = state.info().unwrap().reason;
            let expected = if first1 {
                ShutdownReason::SignalSigint
            } else {
                ShutdownReason::RequestedByPlugin
            };
            assert_eq!(recorded, expected, "the first reason wins");
            assert_eq!(ran.load(Ordering::SeqCst), 1, "the hook ran exactly once");
        });
    }

    #[test]
    fn loom_shutdown_vs_registration_hook_runs_exactly_once() {
        loom::model(|| {
            let state = Arc::new(ShutdownState::<Hook>::new());
            let early = Arc::new(AtomicUsize::new(0));
            let racing = Arc::new(AtomicUsize::new(0));
            register(&state, counting_hook(&early));

            let s1 = state.clone();
            let t1 = thread::spawn(move || {
                shutdown_and_run(&s1, ShutdownReason::RoomDisconnected);
            });
            let s2 = state.clone();
            let hook = counting_hook(&racing);
            let t2 = thread::spawn(move || register(&s2, hook));
            t1.join().unwrap();
            t2.join().unwrap();

            assert_eq!(early.load(Ordering::SeqCst), 1);
            assert_eq!(racing.load(Ordering::SeqCst), 1, "never zero, never twice");
        });
    }

    #[test]
    fn loom_shutdown_from_inside_a_hook_does_not_deadlock() {
        loom::model(|| {
            let state = Arc::new(ShutdownState::<Hook>::new());
            let ran = Arc::new(AtomicUsize::new(0));
            let s = state.clone();
            let r = ran.clone();
            register(
                &state,
                Box::new(move || {
                    // A hook calling shutdown again, and registering another hook.
                    assert!(!s.begin(info(ShutdownReason::RequestedByPlugin)));
                    let r2 = r.clone();
                    register(
                        &s,
                        Box::new(move || {
                            r2.fetch_add(1, Ordering::SeqCst);
                        }),
                    );
                    r.fetch_add(1, Ordering::SeqCst);
                }),
            );
            let s1 = state.clone();
            let t = thread::spawn(move || shutdown_and_run(&s1, ShutdownReason::PluginReturned));
            assert!(t.join().unwrap());
            assert_eq!(ran.load(Ordering::SeqCst), 2);
        });
    }
}
