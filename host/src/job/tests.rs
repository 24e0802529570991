use super::*;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::Instant;

fn ctx() -> JobContext {
    JobContext::new(HookTimeouts::default())
}

fn cfg(room: &str) -> JobConfig {
    JobConfig {
        room_name: room.into(),
        ..Default::default()
    }
}

#[test]
fn two_hooks_each_run_once_after_shutdown() {
    let ctx = ctx();
    let a = Arc::new(AtomicUsize::new(0));
    let b = Arc::new(AtomicUsize::new(0));
    let (a2, b2) = (a.clone(), b.clone());
    ctx.on_shutdown("a", move |_| {
        a2.fetch_add(1, Ordering::SeqCst);
    });
    ctx.on_shutdown("b", move |_| {
        b2.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(
        a.load(Ordering::SeqCst) + b.load(Ordering::SeqCst),
        0,
        "hooks wait for shutdown"
    );

    assert!(ctx.shutdown(ShutdownReason::RequestedByPlugin, "done"));
    let report = ctx.run_hooks();
    // A second cascade or a second shutdown must not run them again.
    assert!(!ctx.shutdown(ShutdownReason::SignalSigint, ""));
    let again = ctx.run_hooks();

    assert_eq!(a.load(Ordering::SeqCst), 1);
    assert_eq!(b.load(Ordering::SeqCst), 1);
    assert_eq!(report.completed, 2);
    assert_eq!(again.completed, 0);
}

#[test]
fn first_reason_wins_and_token_is_cancelled() {
    let ctx = ctx();
    let token = ctx.token();
    assert!(!ctx.is_shutting_down());
    assert!(ctx.shutdown(ShutdownReason::SignalSigterm, "SIGTERM"));
    assert!(!ctx.shutdown(ShutdownReason::PluginReturned, "later"));
    assert!(token.is_cancelled());
    let info = ctx.shutdown_info().unwrap();
    assert_eq!(info.reason, ShutdownReason::SignalSigterm);
    assert_eq!(info.detail, "SIGTERM");
    assert_eq!(info.to_string(), "signal_sigterm");
}

#[test]
fn hooks_run_in_reverse_registration_order_with_the_info() {
    let ctx = ctx();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for i in 0..4 {
        let s = seen.clone();
        ctx.on_shutdown(format!("h{i}"), move |info: &ShutdownInfo| {
            s.lock().unwrap().push((i, info.reason));
        });
    }
    ctx.shutdown(ShutdownReason::RoomDisconnected, "room deleted");
    ctx.run_hooks();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (3, ShutdownReason::RoomDisconnected),
            (2, ShutdownReason::RoomDisconnected),
            (1, ShutdownReason::RoomDisconnected),
            (0, ShutdownReason::RoomDisconnected)
        ]
    );
}

#[test]
fn hook_registered_after_shutdown_runs_at_once() {
    let ctx = ctx();
    ctx.shutdown(ShutdownReason::PluginReturned, "");
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    ctx.on_shutdown("late", move |info| {
        assert_eq!(info.reason, ShutdownReason::PluginReturned);
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "ran before on_shutdown returned"
    );
    assert_eq!(
        ctx.run_hooks().completed,
        0,
        "and is not run again by the cascade"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn panicking_hook_is_reported_and_others_still_run() {
    let ctx = ctx();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    ctx.on_shutdown("survivor", move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    ctx.on_shutdown("bomb", |_| panic!("hook exploded"));
    ctx.shutdown(ShutdownReason::PluginReturned, "");
    let report = ctx.run_hooks();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(report.completed, 1);
    assert_eq!(report.panicked.len(), 1);
    assert!(report.panicked[0].starts_with("bomb"));
}

/// Order is kept even when a hook overruns: the older hook starts only after
/// the newer one returned (it used to start beside it at the deadline).
#[test]
fn overrunning_hook_delays_older_hooks_instead_of_running_beside_them() {
    let ctx = JobContext::new(HookTimeouts {
        per_hook: Duration::from_millis(100),
        budget: Duration::from_secs(10),
    });
    let log = Arc::new(Mutex::new(Vec::<&str>::new()));
    let l = log.clone();
    ctx.on_shutdown("older", move |_| l.lock().unwrap().push("older start"));
    let l = log.clone();
    ctx.on_shutdown("sleepy", move |_| {
        l.lock().unwrap().push("sleepy start");
        std::thread::sleep(Duration::from_millis(400));
        l.lock().unwrap().push("sleepy end");
    });
    ctx.shutdown(ShutdownReason::PluginReturned, "");
    let report = ctx.run_hooks();
    assert_eq!(
        *log.lock().unwrap(),
        ["sleepy start", "sleepy end", "older start"]
    );
    assert_eq!(report.overran.len(), 1, "{report:?}");
    assert!(report.overran[0].starts_with("sleepy"));
    assert_eq!(report.completed, 2);
    assert!(!report.is_clean());
}

/// Once the budget is spent, hooks are not started (they used to be started
/// unwaited, then killed by the process exit); each is reported.
#[test]
fn spent_budget_starts_no_more_hooks_and_reports_them() {
    let ctx = JobContext::new(HookTimeouts {
        per_hook: Duration::from_millis(100),
        budget: Duration::from_millis(150),
    });
    let started = Arc::new(AtomicUsize::new(0));
    let dropped_unrun = Arc::new(AtomicUsize::new(0));
    struct DropCount(Arc<AtomicUsize>);
    impl Drop for DropCount {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    for i in 0..3 {
        let s = started.clone();
        let guard = DropCount(dropped_unrun.clone());
        ctx.on_shutdown(format!("slow{i}"), move |_| {
            s.fetch_add(1, Ordering::SeqCst);
            std::mem::forget(guard);
            std::thread::sleep(Duration::from_millis(600));
        });
    }
    ctx.shutdown(ShutdownReason::PluginReturned, "");
    let t = Instant::now();
    let report = ctx.run_hooks();
    assert!(t.elapsed() < Duration::from_secs(2));
    // Give any wrongly started hook time to show itself.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(started.load(Ordering::SeqCst), 1, "only the newest started");
    assert_eq!(report.abandoned.len(), 1, "{report:?}");
    assert!(report.abandoned[0].starts_with("slow2"));
    assert_eq!(report.not_run.len(), 2, "{report:?}");
    assert_eq!(
        dropped_unrun.load(Ordering::SeqCst),
        2,
        "hooks not run are dropped (their resources released)"
    );
}

/// A hook registered after shutdown began runs on the calling thread, to
/// completion, even past --hook-timeout (it used to run on another thread
/// and be cut off).
#[test]
fn late_hook_runs_on_the_calling_thread_to_completion() {
    let ctx = JobContext::new(HookTimeouts {
        per_hook: Duration::from_millis(50),
        budget: Duration::from_millis(100),
    });
    ctx.shutdown(ShutdownReason::PluginReturned, "");
    let caller = std::thread::current().id();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    ctx.on_shutdown("late", move |info| {
        std::thread::sleep(Duration::from_millis(200));
        *s.lock().unwrap() = Some((std::thread::current().id(), info.reason));
    });
    assert_eq!(
        *seen.lock().unwrap(),
        Some((caller, ShutdownReason::PluginReturned)),
        "ran here, before on_shutdown returned"
    );
}

#[test]
fn hook_timeout_longer_than_the_budget_is_refused() {
    let mut c = cfg("ok");
    c.hook_timeouts = HookTimeouts {
        per_hook: Duration::from_secs(30),
        budget: Duration::from_secs(10),
    };
    assert!(matches!(
        Job::new(c).unwrap_err(),
        JobConfigError::HookTimeoutOverBudget { .. }
    ));
}

#[test]
fn shutdown_and_registration_from_inside_a_hook() {
    let ctx = ctx();
    let inner_ran = Arc::new(AtomicUsize::new(0));
    let c = ctx.clone();
    let r = inner_ran.clone();
    ctx.on_shutdown("reentrant", move |_| {
        assert!(!c.shutdown(ShutdownReason::RequestedByPlugin, "again"));
        let r2 = r.clone();
        c.on_shutdown("nested", move |_| {
            r2.fetch_add(1, Ordering::SeqCst);
        });
    });
    ctx.shutdown(ShutdownReason::PluginReturned, "");
    let report = ctx.run_hooks();
    assert_eq!(report.completed, 1);
    assert_eq!(inner_ran.load(Ordering::SeqCst), 1);
}

/// Many threads racing shutdown against hook registration: every hook runs
/// exactly once, exactly one shutdown call wins.
#[test]
fn stress_shutdown_vs_registration_many_threads() {
    for round in 0..50 {
        let ctx = ctx();
        let runs = Arc::new((0..64).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
        let winners = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(9));
        let mut threads = Vec::new();
        for t in 0..8 {
            let (ctx, runs, barrier) = (ctx.clone(), runs.clone(), barrier.clone());
            threads.push(std::thread::spawn(move || {
                barrier.wait();
                for k in 0..8 {
                    let idx = t * 8 + k;
                    let runs = runs.clone();
                    ctx.on_shutdown(format!("h{idx}"), move |_| {
                        runs[idx].fetch_add(1, Ordering::SeqCst);
                    });
                }
            }));
        }
        let (c, w, b) = (ctx.clone(), winners.clone(), barrier.clone());
        let shutter = std::thread::spawn(move || {
            b.wait();
            if round % 2 == 0 {
                std::thread::yield_now();
            }
            for reason in ShutdownReason::ALL {
                if c.shutdown(reason, "") {
                    w.fetch_add(1, Ordering::SeqCst);
                }
            }
            c.run_hooks();
        });
        for t in threads {
            t.join().unwrap();
        }
        shutter.join().unwrap();
        assert_eq!(winners.load(Ordering::SeqCst), 1);
        for (i, r) in runs.iter().enumerate() {
            assert_eq!(
                r.load(Ordering::SeqCst),
                1,
                "round {round}: hook {i} ran wrong number of times"
            );
        }
    }
}

#[test]
fn job_new_validates_the_config() {
    assert_eq!(
        Job::new(cfg("")).unwrap_err(),
        JobConfigError::EmptyRoomName
    );
    assert_eq!(
        Job::new(cfg("   ")).unwrap_err(),
        JobConfigError::EmptyRoomName
    );
    assert_eq!(
        Job::new(cfg(&"r".repeat(257))).unwrap_err(),
        JobConfigError::RoomNameTooLong(257)
    );
    assert!(Job::new(cfg(&"r".repeat(256))).is_ok());
    assert_eq!(
        Job::new(cfg("a\nb")).unwrap_err(),
        JobConfigError::RoomNameControlChar
    );
    let mut c = cfg("ok");
    c.metadata = "x".repeat(MAX_METADATA_LEN + 1);
    assert!(matches!(
        Job::new(c).unwrap_err(),
        JobConfigError::MetadataTooLong(_)
    ));
    let mut c = cfg("ok");
    c.identity = Some(String::new());
    assert_eq!(Job::new(c).unwrap_err(), JobConfigError::EmptyIdentity);
    let mut c = cfg("ok");
    c.identity = Some("a\nb".into());
    assert_eq!(
        Job::new(c).unwrap_err(),
        JobConfigError::IdentityControlChar
    );
    let mut c = cfg("ok");
    c.id = Some("j\x1bx".into());
    assert_eq!(Job::new(c).unwrap_err(), JobConfigError::JobIdControlChar);
    let job = Job::new(cfg("test")).unwrap();
    assert!(job.id.starts_with("job-"));
    assert_eq!(job.identity, format!("lk-go-{}", job.id));
    assert!(!job.context.is_shutting_down());
}

#[test]
fn reasons_have_stable_distinct_snake_case_names() {
    let names: std::collections::HashSet<_> =
        ShutdownReason::ALL.iter().map(|r| r.to_string()).collect();
    assert_eq!(names.len(), ShutdownReason::ALL.len());
    for n in &names {
        assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
    }
    assert_eq!(
        ShutdownReason::ServerUnreachable.to_string(),
        "server_unreachable"
    );
    assert_eq!(ASSIGNMENT_TIMEOUT, Duration::from_millis(7500));
}

/// A plugin never receives a reason its header does not define: every
/// reason, shown to every older minor, is one that minor's header has
/// (1.0/1.1: codes 1-8; 1.2/1.3: 1-12), and the closest one.
#[test]
fn older_plugins_see_the_closest_reason_their_header_defines() {
    for reason in ShutdownReason::ALL {
        for (minor, max_code) in [(0u16, 8u32), (1, 8), (2, 12), (3, 12), (4, 17)] {
            let shown = reason.as_seen_by_abi_minor(minor);
            assert!(
                shown.abi_code() <= max_code,
                "{reason} shown to 1.{minor} as {shown}"
            );
        }
    }
    use ShutdownReason as R;
    assert_eq!(
        R::ParticipantLeft.as_seen_by_abi_minor(3),
        R::RoomDisconnected
    );
    assert_eq!(
        R::JobTerminated.as_seen_by_abi_minor(3),
        R::RoomDisconnected
    );
    assert_eq!(R::WorkerStopping.as_seen_by_abi_minor(3), R::SignalSigterm);
    assert_eq!(R::WorkerLost.as_seen_by_abi_minor(1), R::SignalSigterm);
    assert_eq!(R::MemoryLimit.as_seen_by_abi_minor(2), R::SignalSigterm);
    assert_eq!(R::MediaFailed.as_seen_by_abi_minor(1), R::ServerUnreachable);
    assert_eq!(R::JobTerminated.as_seen_by_abi_minor(4), R::JobTerminated);
}

/// A wake-up registered before shutdown runs once when it begins, on the
/// thread that began it; one registered after runs at once; none runs twice
/// (also with shutdown raced from many threads).
#[test]
fn shutdown_began_wake_ups_run_exactly_once() {
    for _ in 0..50 {
        let ctx = ctx();
        let before = Arc::new(AtomicUsize::new(0));
        let b = before.clone();
        ctx.on_shutdown_began(move || {
            b.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(before.load(Ordering::SeqCst), 0);
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let c = ctx.clone();
                std::thread::spawn(move || c.shutdown(ShutdownReason::RequestedByPlugin, "race"))
            })
            .collect();
        let firsts = racers
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&first| first)
            .count();
        assert_eq!(firsts, 1);
        assert_eq!(before.load(Ordering::SeqCst), 1);
        let after = Arc::new(AtomicUsize::new(0));
        let a = after.clone();
        ctx.on_shutdown_began(move || {
            a.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(after.load(Ordering::SeqCst), 1);
        ctx.shutdown(ShutdownReason::RequestedByPlugin, "again");
        assert_eq!(
            (before.load(Ordering::SeqCst), after.load(Ordering::SeqCst)),
            (1, 1)
        );
    }
}
