//! Faults a plugin, the terminal or the user can cause, without a server:
//! memory safety across the C boundary (under valgrind), lengths no host
//! should believe, broken stdout/stderr, hook promises, signals and flags.
//! Each test here failed on the code before the fix it names.
//!
//! Needs `cargo xtask build-plugins` and valgrind (`cargo xtask test`
//! provides both).

use lk_go_tests::{
    error_lines, lk_go_bin, plugin, run_lk_go, target_dir, valgrind_bin, wait_output, LkGoProcess,
};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn probe() -> String {
    plugin("probe").to_str().unwrap().to_string()
}

/// `lk-go job run-script <plugin> --room r --detached <extra>`.
fn detached(plugin_path: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "job",
        "run-script",
        plugin_path,
        "--room",
        "r",
        "--detached",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_lk_go(&refs, &[], LIMIT)
}

/// Positions of each needle in `text`, asserting each is there.
fn positions(text: &str, needles: &[&str]) -> Vec<usize> {
    needles
        .iter()
        .map(|n| {
            text.find(n)
                .unwrap_or_else(|| panic!("missing {n:?} in:\n{text}"))
        })
        .collect()
}

// ---- 1. memory safety across the C boundary --------------------------------

/// Runs the probe plugin detached under valgrind (`--error-exitcode=99`:
/// any memory error changes the exit code) with `metadata` as its mode.
fn probe_under_valgrind(metadata: &str) -> Output {
    let mut args = vec![
        "--quiet".to_string(),
        "--error-exitcode=99".to_string(),
        lk_go_bin().to_str().unwrap().to_string(),
    ];
    args.extend(detached(&probe(), &["--metadata", metadata]));
    Command::new(valgrind_bin())
        .args(&args)
        .env("NO_COLOR", "1")
        .env_remove("LK_GO_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|c| wait_output(c, Duration::from_secs(240)))
        .expect("run valgrind")
}

/// A plugin thread keeps calling the host API after `run` returned and the
/// job ended. The handle used to be freed when run_job returned: valgrind
/// reported invalid reads in api_room_name. Now it lives for the process.
#[test]
fn plugin_thread_outliving_the_job_is_valgrind_clean() {
    let out = probe_under_valgrind("linger");
    let err = stderr(&out);
    assert!(!err.contains("Invalid read"), "{err}");
    assert!(!err.contains("CORRUPT"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("job finished"), "{err}");
}

/// `log(job, level, "hello", (size_t)-1)` — the C habit for
/// "NUL-terminated" — used to abort the host (exit 134). Every length is
/// survivable; (size_t)-1 reads up to the NUL; oversize messages are cut.
#[test]
fn lengths_no_host_should_believe_never_crash_it() {
    let out = probe_under_valgrind("lengths");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("lengths survived"), "{err}");
    assert!(err.contains(" hello"), "the NUL-terminated message: {err}");
    assert!(
        err.contains("[cut: message longer than 65536 bytes]"),
        "{err}"
    );
    assert!(
        err.contains("detail=bye"),
        "the NUL-terminated reason: {err}"
    );
    assert!(
        err.contains("probe: free refused"),
        "a refused hook's data is freed: {err}"
    );
    assert!(
        !err.lines().any(|l| l.starts_with("lk-go: error: forged")),
        "a plugin's newline cannot forge a line: {err}"
    );
    assert!(!err.contains("Invalid read"), "{err}");
}

/// ABI 1.3 misused from C (NULL handles and outputs, bad formats,
/// `(size_t)-1` lengths, oversized payloads, a short `struct_size`, double
/// releases) in a detached job: every call answers its documented code and
/// valgrind sees no invalid access.
#[test]
fn media_calls_misused_from_c_answer_their_codes_valgrind_clean() {
    let out = probe_under_valgrind("media");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("media survived"), "{err}");
    assert!(!err.contains("MISMATCH"), "{err}");
    assert!(
        !err.contains("Invalid read") && !err.contains("Invalid write"),
        "{err}"
    );
}

/// A plugin with an undefined symbol used to pass `plugin inspect` and die
/// mid-job with 127 (lazy binding). Now it is refused at load with 65.
#[test]
fn undefined_symbol_is_refused_at_load_with_65() {
    let p = plugin("undefined_symbol");
    let p = p.to_str().unwrap();
    for args in [
        vec!["plugin", "inspect", p],
        vec!["job", "run-script", p, "--room", "r", "--detached"],
    ] {
        let out = run_lk_go(&args, &[], LIMIT);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(65), "{args:?}: {err}");
        assert!(
            err.contains("lk_go_fixture_function_nobody_defines"),
            "names the symbol: {err}"
        );
    }
}

// ---- 2. broken stdout / stderr ----------------------------------------------

/// A pipe whose reader is already gone: writes fail with EPIPE.
fn broken_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

fn run_with(args: &[String], out: Stdio, err: Stdio) -> Output {
    let child = Command::new(lk_go_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn lk-go");
    wait_output(child, LIMIT)
}

/// stderr on /dev/full used to exit 101 (tracing's fallback eprintln!
/// panicked); `| head` used to turn 124 into 101 and the C plugin's log into
/// an abort (134). The outcome is now the documented one, whatever happens
/// to the output.
#[test]
fn broken_stderr_or_stdout_never_changes_the_exit_code() {
    let full = || Stdio::from(std::fs::File::create("/dev/full").expect("/dev/full"));
    let exit3 = detached(plugin("exit_code").to_str().unwrap(), &["--metadata", "3"]);
    assert_eq!(
        run_with(&exit3, Stdio::null(), full()).status.code(),
        Some(3)
    );
    assert_eq!(run_with(&exit3, full(), full()).status.code(), Some(3));

    let deadline = detached(&probe(), &["--metadata", "wait", "--max-duration", "1s"]);
    assert_eq!(
        run_with(&deadline, Stdio::null(), broken_pipe())
            .status
            .code(),
        Some(124)
    );

    let c_noop = detached(plugin("c_noop").to_str().unwrap(), &[]);
    assert_eq!(
        run_with(&c_noop, broken_pipe(), broken_pipe())
            .status
            .code(),
        Some(0)
    );
    let logger = detached(
        plugin("event_logger").to_str().unwrap(),
        &["--max-duration", "500ms"],
    );
    assert_eq!(
        run_with(&logger, broken_pipe(), broken_pipe())
            .status
            .code(),
        Some(124)
    );
}

/// Nobody reads stderr (a paused pager, a stuck `tee`): the log writes used
/// to block every thread that logged, so the job hung past --max-duration
/// and ignored signals. Now lines are dropped and the outcome stands.
#[test]
fn unread_stderr_never_blocks_the_job() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let args = detached(&probe(), &["--metadata", "chatty", "--max-duration", "1s"]);
    let out = run_with(&args, Stdio::null(), Stdio::from(writer));
    drop(reader); // held, unread, until the job is over
    assert_eq!(out.status.code(), Some(124));
}

/// A C plugin's stdio buffer and a stdout nobody reads: `exit(3)` used to
/// block forever flushing it, after `job finished` was logged, deaf to
/// signals. The host now gives stdio a second, then leaves with `_exit`.
#[test]
fn unread_stdout_never_blocks_the_exit() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let args = detached(
        &probe(),
        &[
            "--metadata",
            "spew",
            "--max-duration",
            "500ms",
            "--shutdown-grace",
            "500ms",
        ],
    );
    let out = run_with(&args, Stdio::from(writer), Stdio::piped());
    drop(reader); // held, unread, until the job is over
                  // The plugin is stuck in fwrite, so it cannot return: 75.
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
}

/// A Go plugin printing to a closed stdout used to kill the host with
/// SIGPIPE (141): the Go runtime installs its own SIGPIPE handler in a
/// c-shared library. The plugin template asks the runtime to deliver
/// SIGPIPE to a channel instead, so the write just fails.
#[test]
fn go_plugin_writing_to_a_closed_stdout_does_not_kill_the_host() {
    let args = detached(plugin("go_noop").to_str().unwrap(), &[]);
    let out = run_with(&args, broken_pipe(), Stdio::piped());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// The kind, closed for every plugin: a Go c-shared plugin written without
/// the SDK (its own glue, no SIGPIPE handling) that prints to a closed
/// stdout used to kill lk-go with 141. Plugins write into pipes the host
/// owns and forwards (`host::stdio`), so the write cannot fail with EPIPE;
/// the forwarder drops what the closed stdout cannot take.
#[test]
fn a_go_plugin_without_the_sdk_writing_to_a_closed_stdout_does_not_kill_the_host() {
    let args = detached(plugin("go_raw").to_str().unwrap(), &[]);
    let out = run_with(&args, broken_pipe(), Stdio::piped());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // With a stdout that reads, every line arrives.
    let out = run_with(&args, Stdio::piped(), Stdio::piped());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("go-raw line"))
            .count(),
        200,
        "{text}"
    );
}

/// Go SDK (plugin-api/go): a panic in `Run`, in a goroutine started with
/// `JobContext.Go` or in a shutdown hook never crosses into the host. Each
/// is one ERROR line naming where it happened; `Run` and `Go` panics end
/// the job as panicked (70); a hook's panic ends that hook only, and the
/// older hooks still run.
#[test]
fn go_sdk_panics_are_one_line_and_the_documented_code() {
    let go_probe = plugin("go_probe");
    for (metadata, code, needle) in [
        (
            "panic-run",
            70,
            "lkgo: run panicked: runtime error: index out of range",
        ),
        (
            "panic-goroutine",
            70,
            "lkgo: goroutine panicked: go-probe: goroutine failure",
        ),
        (
            "panic-hook",
            0,
            "lkgo: shutdown hook panicked: go-probe: hook failure",
        ),
    ] {
        let out = run(&detached(
            go_probe.to_str().unwrap(),
            &["--metadata", metadata],
        ));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{metadata}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("panicked")).collect();
        let errors: Vec<&&str> = lines.iter().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{metadata}: {err}");
        assert!(errors[0].contains(needle), "{metadata}: {err}");
        assert!(errors[0].contains("(at main.go:"), "{metadata}: {err}");
        assert!(
            !err.contains("goroutine 1 [") && !err.contains("panic: "),
            "{metadata}: a Go stack dump: {err}"
        );
        if metadata == "panic-hook" {
            assert!(
                err.contains("go-probe: older hook ran (plugin_returned)"),
                "{err}"
            );
        }
    }
    // Hooks run newest first, each once, with the reason.
    let out = run(&detached(
        go_probe.to_str().unwrap(),
        &["--metadata", "hooks"],
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let at = positions(
        &err,
        &[
            "go-probe: second hook: plugin_returned",
            "go-probe: first hook: plugin_returned",
        ],
    );
    assert!(at[0] < at[1], "{err}");
    assert_eq!(err.matches("go-probe: first hook").count(), 1, "{err}");
}

/// The Go runtime inside a Go plugin leaves SIGINT, SIGTERM and SIGHUP to
/// lk-go: each starts the cascade (the plugin's `Ctx` is cancelled, its
/// hook sees the signal) and the job exits with lk-go's code for it.
#[test]
fn go_plugin_leaves_sigint_sigterm_and_sighup_to_the_host() {
    let go_probe = plugin("go_probe");
    for (sig, code, reason) in [
        (libc::SIGINT, 130, "signal_sigint"),
        (libc::SIGTERM, 143, "signal_sigterm"),
        (libc::SIGHUP, 129, "signal_sighup"),
    ] {
        let job = start_ready(&detached(
            go_probe.to_str().unwrap(),
            &["--metadata", "wait"],
        ));
        job.wait_line("go-probe: waiting for Ctx", LIMIT);
        job.signal(sig);
        let (status, _, log) = job.finish(LIMIT);
        assert_eq!(status, Some(code), "{sig}: {log}");
        assert!(
            log.contains(&format!("go-probe: hook saw {reason}")),
            "{sig}: {log}"
        );
    }
}

/// A Go library that never calls `lkgo.Register` is refused at load time
/// (84, invalid descriptor), and the SDK says what is missing.
#[test]
fn go_plugin_that_never_registers_is_refused_with_the_reason() {
    let out = run(&detached(plugin("go_unregistered").to_str().unwrap(), &[]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(84), "{err}");
    assert!(
        err.contains("lkgo: the plugin never called lkgo.Register; call it from an init function"),
        "{err}"
    );
    assert_eq!(error_lines(&err).len(), 1, "{err}");
}

/// Colour escapes used to be written to files and pipes too.
#[test]
fn logs_carry_no_colour_when_stderr_is_not_a_terminal() {
    let args = detached(plugin("noop").to_str().unwrap(), &[]);
    let out = Command::new(lk_go_bin())
        .args(&args)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run lk-go");
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("job finished"), "{err}");
    assert!(!err.contains('\x1b'), "ANSI escapes in a pipe: {err:?}");
}

// ---- 5. flags and signals ---------------------------------------------------

/// `lk-go <args>` started and ready (`plugin_run_entered` logged).
fn start_ready(args: &[String]) -> LkGoProcess {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    LkGoProcess::start_ready(&refs, LIMIT)
}

/// SIGHUP (terminal closed, ssh dropped) used to kill the job with no
/// cascade (129 from the default action). Now it runs the cascade, hooks
/// newest first, each hook's user data freed after it, and exits 129.
#[test]
fn sighup_runs_the_cascade_and_exits_129() {
    let job = start_ready(&detached(&probe(), &["--metadata", "hooks"]));
    // Readiness is the plugin's registrations, not `run` entered: a SIGHUP
    // in between made the hooks late (run at once, in order), which failed
    // the order check about once in twenty runs.
    job.wait_line("probe: hooks registered", LIMIT);
    job.signal(libc::SIGHUP);
    let (code, _, log) = job.finish(LIMIT);
    assert_eq!(code, Some(129), "{log}");
    let at = positions(
        &log,
        &[
            "hook h3 start reason=signal_sighup",
            "hook h3 end",
            "free h3",
            "hook h2 start",
            "free h2",
            "hook h1 start",
            "free h1",
        ],
    );
    assert!(at.windows(2).all(|w| w[0] < w[1]), "order: {log}");
    assert!(log.contains("received SIGHUP"), "{log}");
}

/// A plugin built against ABI 1.1 is shown the 1.1 reason for a SIGHUP
/// (signal_sigterm, code 7), never the 1.2 code it does not define.
#[test]
fn older_plugins_see_only_reasons_their_header_defines() {
    let old = plugin("abi_1_1");
    let job = start_ready(&detached(old.to_str().unwrap(), &[]));
    job.signal(libc::SIGHUP);
    let (code, _, log) = job.finish(LIMIT);
    assert_eq!(code, Some(129), "{log}");
    assert!(
        log.contains("abi-1.1: shutdown reason 7 signal_sigterm"),
        "{log}"
    );
    assert!(!log.contains("UNDEFINED"), "{log}");

    // A 1.2 plugin (frozen header) on the 1.3 host: it defines SIGHUP.
    let v12 = plugin("abi_1_2");
    let job = start_ready(&detached(v12.to_str().unwrap(), &[]));
    job.signal(libc::SIGHUP);
    let (code, _, log) = job.finish(LIMIT);
    assert_eq!(code, Some(129), "{log}");
    assert!(
        log.contains("abi-1.2: shutdown reason 9 signal_sighup"),
        "{log}"
    );
    assert!(!log.contains("UNDEFINED"), "{log}");
}

/// Bad values are usage errors (64) in one line: an enormous duration used to
/// panic (101); a liveness timeout the signal client cannot honour used to
/// be silently capped at 15 s; a hook timeout over the budget used to be
/// silently capped by it.
#[test]
fn flags_it_cannot_honour_are_usage_errors() {
    let noop = plugin("noop");
    let noop = noop.to_str().unwrap();
    for extra in [
        vec!["--shutdown-grace", "99999999999999999999999"],
        vec!["--max-duration", "1e300"],
        vec!["--liveness-timeout", "60s"],
        vec!["--hook-timeout", "30s", "--hook-budget", "10s"],
    ] {
        let out = run(&detached(noop, &extra));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{extra:?}: {err}");
        assert_eq!(
            err.lines()
                .filter(|l| l.starts_with("lk-go: error:"))
                .count(),
            1,
            "{extra:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // Either hook flag alone bends the other's default to fit.
    for extra in [["--hook-timeout", "30s"], ["--hook-budget", "2s"]] {
        let out = run(&detached(noop, &extra));
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {}", stderr(&out));
    }
    // Control characters would split log lines.
    for extra in [["--identity", "a\nb"], ["--job-id", "j\u{1b}x"]] {
        let out = run(&detached(noop, &extra));
        assert_eq!(out.status.code(), Some(64), "{extra:?}: {}", stderr(&out));
    }
    // A token given without its flag name is still never echoed.
    let token = lk_go_tests::dev_token("room-a", "alice");
    let out = run_lk_go(
        &["job", "run-script", noop, "--room", "r", &token],
        &[],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(!stderr(&out).contains(&token), "{}", stderr(&out));
    // A missing argument is named, on one line.
    let out = run_lk_go(&["job", "run-script", "--room", "r"], &[], LIMIT);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("<PLUGIN>"), "{err}");
}

/// Metadata over ~128 KiB cannot be passed as one argument (E2BIG), though
/// 512 KiB is allowed: --metadata-file reads a file or standard input.
#[test]
fn metadata_file_carries_what_a_command_line_cannot() {
    let dir = target_dir().join("faults");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("meta-300k.txt");
    let meta = format!("wait {}", "m".repeat(300 * 1024));
    std::fs::write(&path, &meta).unwrap();
    let p = path.to_str().unwrap();
    let out = run(&detached(
        &probe(),
        &["--metadata-file", p, "--max-duration", "200ms"],
    ));
    assert!(
        stderr(&out).contains(&format!("metadata bytes {}", meta.len())),
        "{}",
        stderr(&out)
    );

    // From standard input.
    let mut child = Command::new(lk_go_bin())
        .args(detached(
            &probe(),
            &["--metadata-file", "-", "--max-duration", "200ms"],
        ))
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(meta.as_bytes())
        .unwrap();
    let out = wait_output(child, LIMIT);
    assert!(
        stderr(&out).contains(&format!("metadata bytes {}", meta.len())),
        "{}",
        stderr(&out)
    );

    // Over the limit: a usage error, not a truncation.
    let big = dir.join("meta-600k.txt");
    std::fs::write(&big, "x".repeat(600 * 1024)).unwrap();
    let out = run(&detached(
        &probe(),
        &["--metadata-file", big.to_str().unwrap()],
    ));
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}

/// A token for room A with --room B used to join A while telling the plugin
/// (and the logs) B and identity lk-go-<job id>. The token decides; a flag
/// that contradicts it is a usage error; --room is optional with --token.
#[test]
fn token_decides_room_and_identity_and_contradictions_are_refused() {
    let token = lk_go_tests::dev_token("room-a", "alice");
    let c_noop = plugin("c_noop");
    let c_noop = c_noop.to_str().unwrap();
    for (flag, value) in [("--room", "room-b"), ("--identity", "bob")] {
        let out = run_lk_go(
            &[
                "job",
                "run-script",
                c_noop,
                "--detached",
                "--token",
                &token,
                flag,
                value,
            ],
            &[],
            LIMIT,
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(err.contains("room-a") || err.contains("alice"), "{err}");
        assert!(!err.contains(&token), "never print the token: {err}");
    }
    let out = run_lk_go(
        &["job", "run-script", c_noop, "--detached", "--token", &token],
        &[],
        LIMIT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("in room room-a as alice"), "{err}");
}

// ---- 6. hooks keep their promises -------------------------------------------

/// A hook that overruns: the older hook used to start beside it at the
/// deadline, and once the budget was spent the rest were started unwaited
/// and killed by the exit (exit 0). Now order is kept, the hook that does
/// not fit is not started (its user data is still freed), every failure is
/// an ERROR line, and a job that would exit 0 exits 79.
#[test]
fn overrunning_hook_keeps_order_skips_what_does_not_fit_and_exits_79() {
    let out = run(&detached(
        &probe(),
        &[
            "--metadata",
            "hooks slow self",
            "--hook-timeout",
            "200ms",
            "--hook-budget",
            "1s",
        ],
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(79), "{err}");
    let failures = error_lines(&err);
    assert_eq!(failures.len(), 1, "{err}");
    assert!(
        failures[0].contains("--hook-budget"),
        "says what to do: {err}"
    );
    positions(&err, &["hook h3 end", "hook h2 start", "free h1"]);
    assert!(!err.contains("hook h1 start"), "h1 must not start: {err}");
    assert!(!err.contains("hook h2 end"), "h2 was abandoned: {err}");
    assert!(err.contains("overran its deadline"), "{err}");
    assert!(err.contains("not started"), "{err}");
    assert!(err.contains("ERROR"), "{err}");

    // The same plugin without the slow hook: clean, 0, all three in order.
    let out = run(&detached(&probe(), &["--metadata", "hooks self"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let at = positions(
        &err,
        &[
            "hook h3 end",
            "free h3",
            "hook h2 end",
            "hook h1 end",
            "free h1",
        ],
    );
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{err}");
}

/// A hook registered after shutdown began used to run on another thread, be
/// cut off at --hook-timeout and never have its free_user_data called.
#[test]
fn late_hook_runs_before_on_shutdown_returns_and_is_freed() {
    let out = run(&detached(
        &probe(),
        &[
            "--metadata",
            "late",
            "--hook-timeout",
            "100ms",
            "--hook-budget",
            "100ms",
        ],
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    positions(
        &err,
        &["late free", "late hook ran before on_shutdown returned"],
    );
}

/// `lk-go worker` refuses what cannot work before it registers: a broken
/// plugin (with the loader's own code), a name LiveKit refuses, no
/// capacity; a server that never answers ends it with 69 after
/// `--max-retries`. Each is one line on stderr. A job process started by
/// hand says what to run instead.
#[test]
fn the_worker_refuses_broken_setups_with_one_line_and_a_documented_code() {
    let broken = plugin("broken_missing_entry").display().to_string();
    let noop = plugin("noop").display().to_string();
    // A port nothing listens on.
    let dead_url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ws://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["worker", &broken], 80, "lk_plugin_entry"),
        (vec!["worker", "/nonexistent/libx.so"], 66, "not found"),
        (
            vec!["worker", &noop, "--agent-name", "my_agent"],
            64,
            "--agent-name",
        ),
        (vec!["worker", &noop, "--max-jobs", "0"], 64, "--max-jobs"),
        (vec!["worker", &noop, "--url", "ftp://x"], 64, "scheme"),
        (
            vec!["worker", &noop, "--url", &dead_url, "--max-retries", "1"],
            69,
            "in 2 attempts",
        ),
        (
            vec!["job", "run-assigned", &noop],
            64,
            "lk-go job run-script",
        ),
    ];
    for (args, code, needle) in cases {
        let out = run_lk_go(&args, &[], Duration::from_secs(30));
        let err = stderr(&out);
        let errors = error_lines(&err);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(errors.len(), 1, "{args:?}: {err}");
        assert!(errors[0].contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
