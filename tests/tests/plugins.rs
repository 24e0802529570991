//! Plugins, the loader and the CLI without a LiveKit server: the loader
//! failure matrix, the ABI compatibility test, the C and Go plugins, exit code
//! mirroring through `run_job` (the function the CLI calls), signals, grace.
//!
//! Needs `cargo xtask build-plugins` first (the README's test command does it).

use lk_go::job::{HookTimeouts, Job, JobConfig};
use lk_go::room::DetachedConnector;
use lk_go::runner::{run_job, CascadeTimeouts, RunOptions};
use lk_go_tests::{lk_go_bin, plugin, plugin_dir, run_lk_go, target_dir, LkGoProcess};
use lk_plugin_api::abi::LK_ABI_MINOR;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts `lk-go plugin inspect <path>` and `lk-go job run-script <path>`
/// both fail with `code` and exactly one line that contains `needle`.
fn assert_load_failure(path: &Path, code: i32, needle: &str) {
    let p = path.to_str().unwrap();
    for args in [
        vec!["plugin", "inspect", p],
        vec!["job", "run-script", p, "--room", "r", "--detached"],
    ] {
        let out = run_lk_go(&args, &[], LIMIT);
        let err = stderr(&out);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("lk-go: error:"))
            .collect();
        assert_eq!(out.status.code(), Some(code), "{args:?}: stderr: {err}");
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one error line expected, got: {err}"
        );
        assert!(
            lines[0].contains(needle),
            "{args:?}: {:?} lacks {needle:?}",
            lines[0]
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
}

/// The ABI every example plugin is built against: this header's, e.g. "1.3".
fn current_abi() -> String {
    format!("1.{LK_ABI_MINOR}")
}

#[test]
fn inspect_accepts_every_example_plugin() {
    let current = current_abi();
    let now = current.as_str();
    for (file, name, abi) in [
        ("noop", "noop", now),
        ("exit_code", "exit-code", now),
        ("event_logger", "event-logger", now),
        ("panic", "panic", now),
        ("echo", "echo", now),
        ("c_noop", "c-noop", now),
        ("c_echo", "c-echo", now),
        ("go_noop", "go-noop", now),
        ("go_echo", "go-echo", now),
        ("abi_1_0", "abi-1.0", "1.0"),
        ("abi_1_1", "abi-1.1", "1.1"),
        ("abi_1_2", "abi-1.2", "1.2"),
        ("abi_1_3", "abi-1.3", "1.3"),
    ] {
        let out = run_lk_go(
            &["plugin", "inspect", plugin(file).to_str().unwrap()],
            &[],
            LIMIT,
        );
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", stderr(&out));
        assert!(text.contains(&format!("name: {name}\n")), "{text}");
        assert!(text.contains(&format!("abi: {abi}\n")), "{text}");
        assert!(text.contains(&format!("host abi: {now}\n")), "{text}");
    }
}

#[test]
fn loader_failure_matrix_one_line_each_with_its_code() {
    let scratch = target_dir().join("tmp").join("loader-matrix");
    std::fs::create_dir_all(&scratch).unwrap();
    let empty = scratch.join("libempty.so");
    std::fs::write(&empty, b"").unwrap();
    let fixtures = lk_go_tests::workspace_root().join("tests").join("fixtures");

    assert_load_failure(&scratch.join("libmissing.so"), 66, "plugin not found");
    assert_load_failure(&fixtures.join("not-a-plugin.txt"), 65, "text file");
    assert_load_failure(&empty, 65, "is empty");
    assert_load_failure(&fixtures, 65, "is a directory");
    assert_load_failure(&lk_go_bin(), 65, "not a shared library");
    assert_load_failure(
        &plugin("broken_missing_entry"),
        80,
        "missing entry symbol `lk_plugin_entry`",
    );
    assert_load_failure(&plugin("broken_bad_magic"), 81, "bad magic 0xdeadbeef");
    assert_load_failure(
        &plugin("broken_major"),
        82,
        &format!("plugin ABI 2.{LK_ABI_MINOR}, host ABI {}", current_abi()),
    );
    assert_load_failure(
        &plugin("broken_too_new"),
        83,
        &format!("plugin ABI 1.99, host ABI {}", current_abi()),
    );
    assert_load_failure(&plugin("broken_null_run"), 84, "run entrypoint is NULL");
    assert_load_failure(&plugin("broken_null_desc"), 84, "returned NULL");
}

#[test]
fn bare_plugin_name_is_resolved_against_the_current_directory() {
    // dlopen("libnoop.so") would search the library path; lk-go canonicalizes.
    let out = Command::new(lk_go_bin())
        .args(["plugin", "inspect", "libnoop.so"])
        .current_dir(plugin_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

async fn run_detached(plugin_file: &str, metadata: &str) -> lk_go::JobOutcome {
    let job = Job::new(JobConfig {
        room_name: "mirror".into(),
        metadata: metadata.into(),
        hook_timeouts: HookTimeouts::default(),
        ..Default::default()
    })
    .unwrap();
    let options = RunOptions {
        plugin_path: plugin(plugin_file),
        cascade: CascadeTimeouts::default(),
        max_duration: None,
        before_leave: None,
        stream_limits: Default::default(),
    };
    run_job(job, &DetachedConnector, &options)
        .await
        .expect("job runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_job_mirrors_the_plugin_exit_code() {
    for (metadata, expected) in [
        ("0", 0),
        ("42", 42),
        ("255", 255),
        ("256", 1),
        ("-3", 1),
        ("oops", 1),
    ] {
        let outcome = run_detached("exit_code", metadata).await;
        assert_eq!(outcome.exit_code, expected, "metadata {metadata}");
        assert_eq!(outcome.shutdown.reason.to_string(), "plugin_returned");
    }
    let panicked = run_detached("panic", "").await;
    assert_eq!(panicked.exit_code, 70);
    assert_eq!(panicked.shutdown.reason.to_string(), "plugin_panicked");
    assert_eq!(run_detached("c_noop", "").await.exit_code, 0);
    assert_eq!(run_detached("go_noop", "").await.exit_code, 0);
    // ABI compatibility: built against the frozen 1.0 header, run on 1.1.
    let old = run_detached("abi_1_0", "7").await;
    assert_eq!((old.plugin.abi_major, old.plugin.abi_minor), (1, 0));
    assert_eq!(old.exit_code, 7);
}

#[test]
fn cli_mirrors_codes_and_reports_panics_in_one_line() {
    let code = run_lk_go(
        &[
            "job",
            "run-script",
            plugin("exit_code").to_str().unwrap(),
            "--room",
            "r",
            "--detached",
            "--metadata",
            "42",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(code.status.code(), Some(42), "{}", stderr(&code));

    let out = run_lk_go(
        &[
            "job",
            "run-script",
            plugin("panic").to_str().unwrap(),
            "--room",
            "r",
            "--detached",
        ],
        &[],
        LIMIT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(70), "{err}");
    let panic_lines: Vec<&str> = err.lines().filter(|l| l.contains("run panicked")).collect();
    assert_eq!(panic_lines.len(), 1, "{err}");
    assert!(panic_lines[0].contains("panics on purpose"), "{err}");
    assert!(
        !err.contains("RUST_BACKTRACE"),
        "no default panic output: {err}"
    );

    let abi10 = run_lk_go(
        &[
            "job",
            "run-script",
            plugin("abi_1_0").to_str().unwrap(),
            "--room",
            "r",
            "--detached",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(abi10.status.code(), Some(0), "{}", stderr(&abi10));
    assert!(stderr(&abi10).contains("abi-1.0 plugin ran on a newer host"));
}

#[test]
fn usage_errors_are_one_line_with_code_64() {
    let noop = plugin("noop");
    let p = noop.to_str().unwrap();
    for args in [
        vec!["job", "run-script", p],               // no --room
        vec!["job", "run-script", p, "--room", ""], // empty room
        vec![
            "job",
            "run-script",
            p,
            "--room",
            "r",
            "--shutdown-grace",
            "x",
        ], // bad duration
        vec![
            "job",
            "run-script",
            p,
            "--room",
            "r",
            "--url",
            "127.0.0.1:7880",
        ], // no scheme
        vec!["job", "frobnicate"],
    ] {
        let out = run_lk_go(&args, &[], LIMIT);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("lk-go: error:"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
    }
}

#[test]
fn deadline_exceeded_is_124_and_hooks_run_once() {
    let out = run_lk_go(
        &[
            "job",
            "run-script",
            plugin("event_logger").to_str().unwrap(),
            "--room",
            "r",
            "--detached",
            "--max-duration",
            "300ms",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let text = stdout(&out);
    let hooks: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"event\":\"shutdown\""))
        .collect();
    assert_eq!(hooks.len(), 1, "{text}");
    assert!(hooks[0].contains("deadline_exceeded"), "{text}");
}

#[test]
fn plugin_ignoring_shutdown_gets_the_grace_code_75() {
    let t = Instant::now();
    let out = run_lk_go(
        &[
            "job",
            "run-script",
            plugin("stubborn").to_str().unwrap(),
            "--room",
            "r",
            "--detached",
            "--max-duration",
            "200ms",
            "--shutdown-grace",
            "500ms",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "did not wait for the 60 s sleep"
    );
    assert!(stderr(&out).contains("did not return within the shutdown grace period"));
}

/// The event-logger plugin, detached, with `run` entered.
fn detached_logger_ready() -> LkGoProcess {
    let logger = plugin("event_logger");
    let logger = logger.to_str().unwrap();
    LkGoProcess::start_ready(
        &["job", "run-script", logger, "--room", "r", "--detached"],
        LIMIT,
    )
}

#[test]
fn sigint_runs_the_cascade_and_exits_130() {
    let job = detached_logger_ready();
    job.signal(libc::SIGINT);
    let (code, text, err) = job.finish(LIMIT);
    assert_eq!(code, Some(130), "{err}");
    let hooks: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"event\":\"shutdown\""))
        .collect();
    assert_eq!(hooks.len(), 1, "{text}");
    assert!(hooks[0].contains("signal_sigint"), "{text}");
    assert!(
        err.contains("stage=\"room_leave\""),
        "cascade logged: {err}"
    );
}

#[test]
fn sigterm_exits_143_and_a_second_signal_exits_at_once() {
    let job = detached_logger_ready();
    job.signal(libc::SIGTERM);
    let (code, _, err) = job.finish(LIMIT);
    assert_eq!(code, Some(143), "{err}");

    // The stubborn plugin ignores shutdown; the grace is 20 s, but a second
    // SIGINT must end the process at once.
    let stubborn = plugin("stubborn");
    let job = LkGoProcess::start_ready(
        &[
            "job",
            "run-script",
            stubborn.to_str().unwrap(),
            "--room",
            "r",
            "--detached",
            "--shutdown-grace",
            "20s",
        ],
        LIMIT,
    );
    job.signal(libc::SIGINT);
    // Readiness for the second signal: the first one began the shutdown.
    job.wait_line("job shutdown requested", LIMIT);
    let t = Instant::now();
    job.signal(libc::SIGINT);
    let (code, _, err) = job.finish(LIMIT);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "second signal took {:?}",
        t.elapsed()
    );
    assert!(err.contains("exiting at once"));
}

#[test]
fn nothing_listening_is_server_unavailable_within_10s() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let t = Instant::now();
    let out = run_lk_go(
        &[
            "job",
            "run-script",
            plugin("noop").to_str().unwrap(),
            "--room",
            "r",
            "--url",
            &url,
        ],
        &[],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("lk-go: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("unreachable"), "{err}");
}

/// README's "Writing a plugin → Go" is the Go SDK: its example is a whole
/// plugin in under 30 lines, and it builds as the README says (go.mod with
/// a replace to `plugin-api/go`, `-buildmode=c-shared`) and runs its hook.
#[test]
fn readme_go_example_is_a_complete_plugin_under_30_lines() {
    let root = lk_go_tests::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("read README.md");
    let section = &readme[readme
        .find("\n### Go\n")
        .expect("README has a ### Go section")..];
    let code = section
        .split("```go\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a ```go block in the Go section");
    let lines = code.lines().count();
    assert!(lines < 30, "the README's Go plugin has {lines} lines");
    assert!(code.contains("lkgo.Register"), "{code}");

    let dir = target_dir().join("readme-go-plugin");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.go"), format!("{code}\n")).unwrap();
    std::fs::write(
        dir.join("go.mod"),
        format!(
            "module example.com/readme-go\n\ngo 1.22\n\nrequire lkgo.example/lkgo v0.0.0\n\nreplace lkgo.example/lkgo => {}\n",
            root.join("plugin-api").join("go").display()
        ),
    )
    .unwrap();
    let lib = dir.join("libreadme_go.so");
    let build = Command::new("go")
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&lib)
        .arg(".")
        .current_dir(&dir)
        .env("CGO_ENABLED", "1")
        .output()
        .expect("run go (Go 1.22+ is a prerequisite of the test suite)");
    assert!(build.status.success(), "go build: {}", stderr(&build));
    let out = run_lk_go(
        &[
            "job",
            "run-script",
            lib.to_str().unwrap(),
            "--room",
            "r",
            "--detached",
            "--max-duration",
            "1s",
        ],
        &[],
        LIMIT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(124), "{err}");
    assert!(err.contains("bye: deadline_exceeded"), "{err}");
}

/// With `--log-format json` every stderr line is a JSON object, the final
/// `lk-go: error:` line too (it used to be plain text: a JSON consumer got
/// one unparsable line exactly when something failed).
#[test]
fn json_logs_end_with_a_json_error_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let out = run_lk_go(
        &[
            "job",
            "run-script",
            plugin("noop").to_str().unwrap(),
            "--room",
            "r",
            "--url",
            &url,
            "--log-format",
            "json",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    let mut errors = Vec::new();
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        if message.starts_with("lk-go: error:") {
            assert_eq!(v["level"], "ERROR", "{line}");
            errors.push(message.to_string());
        }
    }
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("unreachable"), "{err}");
}

/// `lk-go plugin new` writes a project per language that builds outside
/// this repository (a temp dir) with its own tool, and runs detached.
#[test]
fn plugin_new_writes_projects_that_build_outside_the_repo_and_run() {
    let root = std::env::temp_dir().join(format!("lk-go-plugin-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    for (lang, name, build, lib) in [
        ("c", "hello-c", vec!["make"], "libhello_c.so"),
        (
            "go",
            "hello-go",
            vec![
                "go",
                "build",
                "-buildmode=c-shared",
                "-o",
                "libhello_go.so",
                ".",
            ],
            "libhello_go.so",
        ),
        (
            "rust",
            "hello-rust",
            vec!["cargo", "build", "--release", "-j2"],
            "target/release/libhello_rust.so",
        ),
    ] {
        let dir = root.join(name);
        let out = run_lk_go(
            &["plugin", "new", "--lang", lang, name, dir.to_str().unwrap()],
            &[],
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(0), "{lang}: {}", stderr(&out));
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.lines().count() <= 3, "{readme}");
        let t = std::time::Instant::now();
        let built = std::process::Command::new(build[0])
            .args(&build[1..])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("{lang}: could not run {}: {e}", build[0]));
        assert!(
            built.status.success(),
            "{lang}: {:?} failed: {}",
            build,
            String::from_utf8_lossy(&built.stderr)
        );
        eprintln!(
            "MEASURED plugin new --lang {lang}: built in {:?}",
            t.elapsed()
        );
        let lib = dir.join(lib);
        let job = LkGoProcess::start_ready(
            &[
                "job",
                "run-script",
                lib.to_str().unwrap(),
                "--room",
                "r",
                "--detached",
            ],
            LIMIT,
        );
        job.wait_line(&format!("{name}: job"), LIMIT);
        job.signal(libc::SIGINT);
        let (code, _, log) = job.finish(LIMIT);
        assert_eq!(code, Some(130), "{lang}: {log}");
    }
    // A second run into the same, now non-empty, directory is refused.
    let again = run_lk_go(
        &[
            "plugin",
            "new",
            "--lang",
            "c",
            "hello-c",
            root.join("hello-c").to_str().unwrap(),
        ],
        &[],
        LIMIT,
    );
    assert_eq!(again.status.code(), Some(64));
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
    let bad = run_lk_go(&["plugin", "new", "--lang", "c", "Bad Name"], &[], LIMIT);
    assert_eq!(bad.status.code(), Some(64), "{}", stderr(&bad));
    let _ = std::fs::remove_dir_all(&root);
}
