//! `cargo xtask …`: the project's build and test automation, instead of
//! shell scripts.
//!
//! Owns: building the C and Go plugins and test fixtures into
//! `target/plugins/`, provisioning livekit-server (env, PATH, cache, or
//! `go install` at the pinned version), and the composite commands:
//! `test` (the README's test command and CI's), `go-check` (the Go SDK's
//! vet, staticcheck and race tests), `itest`, `loom`, `livekit`, `demo`. Every missing prerequisite is a one-line error, never a skip.

mod bench;
mod bench_kit;
mod echo_bench;
mod frontend_bench;
mod worker_bench;

use anyhow::{bail, Context, Result};
use lk_go_tests::{
    target_dir, workspace_root, LiveKitServer, LIVEKIT_SERVER_VERSION, PYTHON_LIVEKIT_PIN,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test            everything CI runs: build, plugins, Go SDK checks, unit + integration tests, loom, itest
  build-plugins   build the Rust, C and Go plugins and test fixtures into target/plugins/
  go-check        the Go SDK and Go plugins: gofmt, go vet, staticcheck, go test -race
  itest           provision livekit-server and run the tests against it
  loom            run the loom models of the JobContext state machine
  livekit         provision and run a local livekit-server (foreground; Ctrl-C stops it)
  demo            the echo plugin in a room with the Python SDK: tone, echo, latency, data
  bench [--runs N] [--steady-seconds S] [--echo-only] [--scale 1,10,50,100]
        [--worker-only] [--worker-scale 10,50] [--frontend-only]
                  lk-go vs the LiveKit Python SDK and Python agents (default 20 runs, 30 s);
                  echo latency, CPU and the 1/10/50/100-job scale run included;
                  the worker: dispatch latency, idle and per-job RSS, jobs per machine";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test_all(),
        Some("build-plugins") => build_plugins().map(|_| ()),
        Some("itest") => build_plugins().and_then(|_| itest()),
        Some("loom") => loom(),
        Some("go-check") => go_sdk_checks(),
        Some("livekit") => livekit(),
        Some("demo") => build_plugins().and_then(|_| demo()),
        Some("bench") => build_plugins().and_then(|_| bench_cmd(&args[1..])),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(64);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Builds every plugin into target/plugins/ and returns that directory.
fn build_plugins() -> Result<PathBuf> {
    let root = workspace_root();
    let out = target_dir().join("plugins");
    std::fs::create_dir_all(&out)?;

    step("build lk-go and the Rust plugins");
    run(cargo().args(["build", "-j2", "--workspace"]), "cargo build")?;
    let debug = target_dir().join("debug");
    for lib in [
        "noop",
        "exit_code",
        "event_logger",
        "panic",
        "echo",
        "dispatch_probe",
    ] {
        let name = format!("lib{lib}.so");
        std::fs::copy(debug.join(&name), out.join(&name))
            .with_context(|| format!("copy {name} (did the cargo build produce it?)"))?;
    }

    step("build the C plugin and fixtures");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if !have(&cc) {
        bail!("C compiler `{cc}` not found; install gcc (apt-get install gcc) or set CC");
    }
    let include = root.join("plugin-api").join("include");
    let fixtures = root.join("tests").join("fixtures");
    let mut c_builds: Vec<(PathBuf, PathBuf, Vec<String>, &str)> = vec![
        (
            root.join("plugins/c-noop/c_noop.c"),
            include.clone(),
            vec![],
            "c_noop",
        ),
        (
            fixtures.join("abi_1_0_plugin.c"),
            fixtures.join("abi-1.0"),
            vec![],
            "abi_1_0",
        ),
        (
            fixtures.join("stubborn_plugin.c"),
            include.clone(),
            vec![],
            "stubborn",
        ),
        (
            fixtures.join("abi_1_1_plugin.c"),
            fixtures.join("abi-1.1"),
            vec![],
            "abi_1_1",
        ),
        (
            fixtures.join("abi_1_2_plugin.c"),
            fixtures.join("abi-1.2"),
            vec![],
            "abi_1_2",
        ),
        (
            fixtures.join("abi_1_3_plugin.c"),
            fixtures.join("abi-1.3"),
            vec!["-pthread".to_string()],
            "abi_1_3",
        ),
        (
            root.join("plugins/c-echo/c_echo.c"),
            include.clone(),
            vec!["-pthread".to_string()],
            "c_echo",
        ),
        (
            fixtures.join("probe_plugin.c"),
            include.clone(),
            vec!["-pthread".to_string()],
            "probe",
        ),
        (
            fixtures.join("undefined_symbol_plugin.c"),
            include.clone(),
            vec![],
            "undefined_symbol",
        ),
    ];
    for variant in [
        "MISSING_ENTRY",
        "BAD_MAGIC",
        "MAJOR",
        "TOO_NEW",
        "NULL_RUN",
        "NULL_DESC",
    ] {
        let name: &'static str =
            Box::leak(format!("broken_{}", variant.to_lowercase()).into_boxed_str());
        c_builds.push((
            fixtures.join("broken_plugin.c"),
            include.clone(),
            vec![format!("-DBROKEN_{variant}")],
            name,
        ));
    }
    for (src, inc, defines, name) in c_builds {
        let target = out.join(format!("lib{name}.so"));
        run(
            Command::new(&cc)
                .args([
                    "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-O2",
                ])
                .arg("-I")
                .arg(&inc)
                .args(&defines)
                .arg("-o")
                .arg(&target)
                .arg(&src),
            &format!("{cc} {}", src.display()),
        )?;
    }

    step("build the Go plugins on the Go SDK (go build -buildmode=c-shared)");
    require_go()?;
    for (dir, lib, tags, experiment) in GO_BUILDS {
        let so = out.join(format!("lib{lib}.so"));
        let mut go = Command::new("go");
        go.args(["build", "-buildmode=c-shared", "-tags", tags, "-o"])
            .arg(&so)
            .arg(".")
            .current_dir(root.join(dir))
            .env("CGO_ENABLED", "1");
        if !experiment.is_empty() {
            go.env("GOEXPERIMENT", experiment);
        }
        run(
            &mut go,
            &format!("go build of {dir} (tags {tags:?}, GOEXPERIMENT {experiment:?})"),
        )?;
        // cgo writes the exports' C header beside the library; nobody needs it.
        let _ = std::fs::remove_file(so.with_extension("h"));
    }
    eprintln!("plugins in {}", out.display());
    Ok(out)
}

/// The Go plugins and fixtures: directory, library name in target/plugins/,
/// build tags, GOEXPERIMENT. `go_echo_cgocheck2` is the Go echo with the
/// runtime's full cgo pointer checks (GOEXPERIMENT=cgocheck2: every write
/// of a Go pointer into C memory is a fatal error); the interop test runs
/// it, so a pointer the SDK leaves with C cannot pass.
const GO_BUILDS: [(&str, &str, &str, &str); 6] = [
    ("plugins/go-noop", "go_noop", "", ""),
    ("plugins/go-echo", "go_echo", "", ""),
    ("plugins/go-echo", "go_echo_cgocheck2", "", "cgocheck2"),
    ("tests/fixtures/go-probe", "go_probe", "", ""),
    // No SDK, no SIGPIPE handling: the host's stdio pipes keep it alive.
    ("tests/fixtures/go-raw", "go_raw", "", ""),
    (
        "tests/fixtures/go-probe",
        "go_unregistered",
        "noregister",
        "",
    ),
];

/// staticcheck, pinned: the newest release the Go module proxy served here
/// that builds with Go 1.26 (honnef.co/go/tools v0.8.2).
const STATICCHECK: &str = "honnef.co/go/tools/cmd/staticcheck@v0.8.2";

fn require_go() -> Result<()> {
    if !have_go() {
        bail!("`go` not found; install Go 1.22+ with cgo (the Go SDK, the Go plugins and livekit-server need it)");
    }
    Ok(())
}

/// The Go SDK's own checks: gofmt, `go vet` and staticcheck on the SDK and the Go
/// plugins, then `go test -race` on the SDK (its Go logic against a fake
/// host). staticcheck is installed once into target/go-tools.
fn go_sdk_checks() -> Result<()> {
    require_go()?;
    let root = workspace_root();
    let sdk = root.join("plugin-api").join("go");
    let mut dirs = vec![sdk.clone()];
    for (dir, _, _, _) in GO_BUILDS {
        if !dirs.contains(&root.join(dir)) {
            dirs.push(root.join(dir));
        }
    }
    step("Go SDK: gofmt, go vet and staticcheck (SDK and Go plugins)");
    let tools = target_dir().join("go-tools");
    let staticcheck = tools.join("staticcheck");
    let version = STATICCHECK.rsplit('@').next().unwrap_or_default();
    let installed = Command::new(&staticcheck)
        .arg("-version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&version[1..]))
        .unwrap_or(false);
    if !installed {
        step(&format!(
            "install {STATICCHECK} into target/go-tools (first time: about a minute)"
        ));
        run(
            Command::new("go")
                .args(["install", STATICCHECK])
                .env("GOBIN", &tools),
            &format!("go install {STATICCHECK} (needs the Go module proxy)"),
        )?;
    }
    for dir in &dirs {
        let name = dir.strip_prefix(&root).unwrap_or(dir).display().to_string();
        let unformatted = Command::new("gofmt")
            .arg("-l")
            .arg(".")
            .current_dir(dir)
            .output()
            .with_context(|| format!("could not start gofmt in {name}"))?;
        let files = String::from_utf8_lossy(&unformatted.stdout);
        if !unformatted.status.success() || !files.trim().is_empty() {
            bail!(
                "gofmt: {name} is not formatted ({}); run `gofmt -w .` there",
                files.split_whitespace().collect::<Vec<_>>().join(", ")
            );
        }
        run(
            Command::new("go")
                .args(["vet", "./..."])
                .current_dir(dir)
                .env("CGO_ENABLED", "1"),
            &format!("go vet in {name}"),
        )?;
        run(
            Command::new(&staticcheck)
                .arg("./...")
                .current_dir(dir)
                .env("CGO_ENABLED", "1"),
            &format!("staticcheck in {name}"),
        )?;
    }
    step("Go SDK: go test -race (JobContext, hooks, pumps, media and data against a fake host)");
    run(
        Command::new("go")
            .args(["test", "-race", "-count=1", "./..."])
            .current_dir(&sdk)
            .env("CGO_ENABLED", "1"),
        "go test -race in plugin-api/go",
    )
}

fn have_go() -> bool {
    Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Finds or installs livekit-server; returns its path.
fn provision_livekit() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LIVEKIT_SERVER_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("LIVEKIT_SERVER_BIN={} does not exist", p.display());
        }
        return Ok(p);
    }
    let bin_dir = target_dir().join("livekit").join("bin");
    let cached = bin_dir.join("livekit-server");
    if cached.is_file() && server_version(&cached).as_deref() == Some(&LIVEKIT_SERVER_VERSION[1..])
    {
        return Ok(cached);
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("livekit-server");
            if c.is_file() && server_version(&c).as_deref() == Some(&LIVEKIT_SERVER_VERSION[1..]) {
                return Ok(c);
            }
        }
    }
    if have_go() {
        step(&format!("install livekit-server {LIVEKIT_SERVER_VERSION} with go install (first time: a few minutes)"));
        std::fs::create_dir_all(&bin_dir)?;
        let started = Instant::now();
        run(
            Command::new("go")
                .args([
                    "install",
                    &format!(
                        "github.com/livekit/livekit-server/cmd/server@{LIVEKIT_SERVER_VERSION}"
                    ),
                ])
                .env("GOBIN", &bin_dir)
                .env("CGO_ENABLED", "0"),
            "go install livekit-server",
        )?;
        std::fs::rename(bin_dir.join("server"), &cached)
            .context("rename server -> livekit-server")?;
        eprintln!(
            "livekit-server installed in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(cached);
    }
    if have("docker") {
        bail!("livekit-server not found and Go is missing; run `docker compose up -d` and point LIVEKIT_URL at it, or install Go 1.26 and re-run");
    }
    bail!("livekit-server {LIVEKIT_SERVER_VERSION} not found; install Go (then this command installs it), set LIVEKIT_SERVER_BIN, or use docker-compose.yml")
}

fn server_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .last()
        .map(|s| s.trim_start_matches('v').to_string())
}

/// Creates (or reuses) the venv `target/<dir>` with exactly `pin`
/// (`dist==version`) installed and `module` importable; returns its python.
fn provision_venv(dir: &str, pin: &str, module: &str) -> Result<PathBuf> {
    let venv = target_dir().join(dir);
    let python = venv.join("bin").join("python");
    let (dist, version) = pin.split_once("==").context("pin must be dist==version")?;
    let probe = format!("import importlib.metadata as m, {module}; print(m.version('{dist}'))");
    let installed = Command::new(&python)
        .args(["-c", &probe])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if installed.as_deref() == Some(version) {
        return Ok(python);
    }
    step(&format!("create the Python venv target/{dir} with {pin}"));
    let python3 = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if !have(&python3) {
        bail!("`{python3}` not found; install Python 3.9+ with venv (apt-get install python3-venv) or set PYTHON");
    }
    run(
        Command::new(&python3).args(["-m", "venv"]).arg(&venv),
        &format!("python3 -m venv target/{dir}"),
    )?;
    run(
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            pin,
        ]),
        &format!("pip install {pin}"),
    )?;
    Ok(python)
}

/// The pinned official LiveKit Python SDK: the interop peer.
fn provision_python() -> Result<PathBuf> {
    provision_venv("pyenv", PYTHON_LIVEKIT_PIN, "livekit.rtc")
}

/// The agents contender gets a venv of its own: it pins an older `livekit`.
fn provision_python_agents() -> Result<PathBuf> {
    provision_venv("pyenv-agents", bench::AGENTS_PIN, "livekit.agents")
}

fn bench_cmd(args: &[String]) -> Result<()> {
    let mut settings = bench::Settings {
        runs: 20,
        steady_seconds: 30,
        memory_seconds: 10,
        echo_only: false,
        scale_counts: vec![1, 10, 50, 100],
        worker_only: false,
        worker_scale_counts: vec![10, 50],
        frontend_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} needs a whole number"))
        };
        match a.as_str() {
            "--runs" => settings.runs = value("--runs")?.max(1) as usize,
            "--echo-only" => settings.echo_only = true,
            "--worker-only" => settings.worker_only = true,
            "--frontend-only" => settings.frontend_only = true,
            "--worker-scale" => {
                settings.worker_scale_counts = it
                    .next()
                    .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                    .filter(|v: &Vec<usize>| !v.is_empty() && v.iter().all(|&n| n > 0))
                    .context("--worker-scale needs counts like 10,50,100")?
            }
            "--scale" => {
                settings.scale_counts = it
                    .next()
                    .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                    .filter(|v: &Vec<usize>| !v.is_empty() && v.iter().all(|&n| n > 0))
                    .context("--scale needs counts like 1,10,50,100")?
            }
            "--steady-seconds" => {
                settings.steady_seconds = value("--steady-seconds")?.max(settings.memory_seconds)
            }
            other => bail!("unknown bench option {other}; see `cargo xtask`"),
        }
    }
    let server_bin = provision_livekit()?;
    std::env::set_var("LIVEKIT_SERVER_BIN", &server_bin);
    step("build lk-go and the echo plugin in release mode (benchmarks measure what users run)");
    run(
        cargo().args(["build", "-j2", "--release", "-p", "lk-go", "--bin", "lk-go"]),
        "cargo build --release",
    )?;
    run(
        cargo().args(["build", "-j2", "--release", "-p", "lk-plugin-echo", "--lib"]),
        "cargo build --release (echo plugin)",
    )?;
    provision_browser()?;
    let tools = bench_kit::Tools {
        lk_go: target_dir().join("release").join("lk-go"),
        echo: target_dir().join("release").join("libecho.so"),
        plugins: target_dir().join("plugins"),
        python_sdk: provision_python()?,
        python_agents: provision_python_agents()?,
    };
    step("bench");
    bench::run(tools, settings)
}

/// Debian's Chromium (browser downloads do not work here; puppeteer-core
/// drives the system browser) and the browser peer's npm packages
/// (`npm ci` in tests/browser, pinned by its package-lock.json). Returns
/// the Chromium path. Installs chromium with apt-get when running as root.
fn provision_browser() -> Result<PathBuf> {
    let chromium = std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if !(is_root && have("apt-get")) {
            bail!("{} not found; install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH: the frontend tests run livekit-client in it", chromium.display());
        }
        step("install chromium (apt-get install chromium) for the browser frontend tests");
        run(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
        run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install chromium",
        )?;
        if !chromium.is_file() {
            bail!(
                "apt-get installed chromium, but {} is still missing; set CHROMIUM_PATH",
                chromium.display()
            );
        }
    }
    if !have("node") || !have("npm") {
        bail!("node and npm not found; install Node.js 20+ (the browser frontend tests drive Chromium from node)");
    }
    let dir = workspace_root().join("tests").join("browser");
    let lock = std::fs::read(dir.join("package-lock.json"))
        .context("read tests/browser/package-lock.json")?;
    let stamp = dir.join("node_modules").join(".lk-go-lock");
    if std::fs::read(&stamp).ok().as_deref() != Some(&lock[..]) {
        step("npm ci in tests/browser (livekit-client and puppeteer-core, pinned)");
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
            "npm ci in tests/browser (needs the npm registry)",
        )?;
        std::fs::write(&stamp, &lock)?;
    }
    Ok(chromium)
}

fn itest() -> Result<()> {
    let bin = provision_livekit()?;
    let python = provision_python()?;
    let chromium = provision_browser()?;
    let redis = provision_redis()?;
    step("integration tests against livekit-server (and the Python SDK)");
    run(
        cargo()
            .args([
                "test",
                "-j2",
                "-p",
                "lk-go-tests",
                "--features",
                "itest",
                "--test",
                "itest",
                "--test",
                "media",
                "--test",
                "worker",
                "--test",
                "frontend",
                "--test",
                "multinode",
                "--test",
                "fleet",
                "--",
                "--test-threads=2",
            ])
            .env("LIVEKIT_SERVER_BIN", &bin)
            .env("LK_GO_PYTHON", &python)
            .env("CHROMIUM_PATH", &chromium)
            .env("LK_GO_REDIS", &redis),
        "integration tests",
    )
}

fn loom() -> Result<()> {
    step("loom models of the JobContext state machine");
    run(
        cargo()
            .args([
                "test",
                "-j2",
                "-p",
                "lk-go",
                "--features",
                "loom-model",
                "--lib",
                "loom_",
                "--",
                "--test-threads=1",
            ])
            .env("LOOM_MAX_PREEMPTIONS", "3"),
        "loom models",
    )
}

/// Finds valgrind (`LK_GO_VALGRIND`, or on PATH) or installs it; the
/// C-boundary memory tests need it and never skip.
fn provision_valgrind() -> Result<PathBuf> {
    provision_debian_tool(
        "valgrind",
        "valgrind",
        "LK_GO_VALGRIND",
        "the C-boundary memory tests",
    )
}

/// Finds redis-server (`LK_GO_REDIS`, or on PATH) or installs it; the
/// multi-node tests run two livekit-server nodes sharing one Redis.
fn provision_redis() -> Result<PathBuf> {
    provision_debian_tool(
        "redis-server",
        "redis-server",
        "LK_GO_REDIS",
        "the multi-node tests",
    )
}

/// A tool the tests need: the path in `env` if set, else `program` on
/// PATH, else Debian package `package` installed with apt-get when running
/// as root (CI's machine); otherwise a one-line error saying what to do.
/// `program --version` must succeed for a tool to count as found.
fn provision_debian_tool(program: &str, package: &str, env: &str, who: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let on_path = || {
        Command::new(program)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| PathBuf::from(program))
    };
    if let Some(p) = on_path() {
        return Ok(p);
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root && have("apt-get") {
        step(&format!(
            "install {program} (apt-get install {package}) for {who}"
        ));
        run(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
        run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &format!("apt-get install {package}"),
        )?;
        if let Some(p) = on_path() {
            return Ok(p);
        }
    }
    bail!("{program} not found; install it (apt-get install {package}) or set {env}: {who} need it")
}

/// `cargo package -p lk-plugin-api` as a third party would get the crate:
/// no warning, the C header in, nothing of the Go module.
fn package_check() -> Result<()> {
    step("cargo package -p lk-plugin-api (what a third party depends on)");
    let list = cargo()
        .args(["package", "-p", "lk-plugin-api", "--allow-dirty", "--list"])
        .output()
        .context("cargo package --list")?;
    let files = String::from_utf8_lossy(&list.stdout);
    if !list.status.success() {
        bail!(
            "cargo package --list failed: {}",
            String::from_utf8_lossy(&list.stderr)
        );
    }
    if !files.lines().any(|f| f == "include/lk_plugin.h")
        || files.lines().any(|f| f.starts_with("go/"))
    {
        bail!("lk-plugin-api packs the wrong files (want include/lk_plugin.h, no go/): {files}");
    }
    let out = cargo()
        .args(["package", "-j2", "-p", "lk-plugin-api", "--allow-dirty"])
        .output()
        .context("cargo package")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || err.contains("warning") {
        bail!("cargo package -p lk-plugin-api is not clean: {err}");
    }
    Ok(())
}

fn test_all() -> Result<()> {
    let started = Instant::now();
    build_plugins()?;
    go_sdk_checks()?;
    package_check()?;
    let valgrind = provision_valgrind()?;
    step("unit and integration tests (no server)");
    run(
        cargo()
            .args(["test", "-j2", "--workspace"])
            .env("LK_GO_VALGRIND", &valgrind),
        "cargo test",
    )?;
    loom()?;
    itest()?;
    eprintln!(
        "\nall test suites passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The dev server a person starts runs on the standard ports (7880 signal,
/// 7881 ICE/TCP, 7882 ICE/UDP), where `lk-go`'s default `--url` looks, so
/// the README's next command works as written. Tests use free ports instead.
///
/// Stops the server (SIGTERM, then SIGKILL after 5 s) and says so on
/// SIGINT, SIGTERM or SIGHUP to this process — and when its parent dies: a
/// signal sent to `cargo` alone (`cargo xtask livekit`) kills cargo, which
/// forwards nothing; PR_SET_PDEATHSIG turns that into a SIGTERM here.
fn livekit() -> Result<()> {
    provision_livekit().map(|p| std::env::set_var("LIVEKIT_SERVER_BIN", p))?;
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", 7880)) {
        bail!("port 7880 is taken ({e}): is a livekit-server already running? If it is, run lk-go against it as is; otherwise stop what holds the port (e.g. `ss -ltnp 'sport = :7880'`)");
    }
    let parent = stop_signal::install();
    let mut server = LiveKitServer::start_on_standard_ports();
    println!(
        "livekit-server {LIVEKIT_SERVER_VERSION} ready at {} (key devkey, secret secret); log: {}",
        server.url,
        server.log_path.display()
    );
    println!("try: target/debug/lk-go job run-script target/plugins/libnoop.so --room test");
    println!("stop: Ctrl-C (or SIGTERM to this process or to cargo)");
    loop {
        if let Some(status) = server.try_wait() {
            println!("livekit-server exited: {status}");
            return Ok(());
        }
        if let Some(why) = stop_signal::received(parent) {
            let status = server.stop(std::time::Duration::from_secs(5));
            let how = status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "gone".into());
            println!("livekit-server stopped ({why}): {how}");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Signals that stop `cargo xtask livekit`, recorded by a handler that only
/// stores the number (async-signal-safe), read by the loop.
mod stop_signal {
    use std::sync::atomic::{AtomicI32, Ordering};

    static RECEIVED: AtomicI32 = AtomicI32::new(0);

    extern "C" fn on_signal(sig: libc::c_int) {
        RECEIVED.store(sig, Ordering::SeqCst);
    }

    /// Installs the handlers and asks for SIGTERM when the parent dies;
    /// returns the parent's pid as it was.
    pub fn install() -> libc::pid_t {
        // SAFETY: getppid, prctl and signal(2) with a handler that only
        // stores into an atomic.
        unsafe {
            let parent = libc::getppid();
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            );
            let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, handler);
            }
            parent
        }
    }

    /// Why to stop, if a signal came or the parent died before the
    /// death signal was armed.
    pub fn received(parent: libc::pid_t) -> Option<String> {
        let sig = RECEIVED.load(Ordering::SeqCst);
        let name = match sig {
            0 => None,
            libc::SIGINT => Some("SIGINT"),
            libc::SIGTERM => Some("SIGTERM"),
            libc::SIGHUP => Some("SIGHUP"),
            _ => Some("a signal"),
        };
        if let Some(n) = name {
            return Some(n.to_string());
        }
        // SAFETY: getppid has no preconditions.
        (unsafe { libc::getppid() } != parent).then(|| "its parent exited".to_string())
    }
}

fn demo() -> Result<()> {
    provision_livekit().map(|p| std::env::set_var("LIVEKIT_SERVER_BIN", p))?;
    let python = provision_python()?;
    let server = LiveKitServer::start();
    let lk_go = target_dir().join("debug").join("lk-go");
    let plugins = target_dir().join("plugins");
    eprintln!("livekit-server {LIVEKIT_SERVER_VERSION} at {}", server.url);
    eprintln!("\n--- lk-go runs the echo plugin (plugins/echo) in room `demo` as `echo-agent` ---");
    let mut job = Command::new(&lk_go)
        .args(["job", "run-script"])
        .arg(plugins.join("libecho.so"))
        .args([
            "--room",
            "demo",
            "--identity",
            "echo-agent",
            "--url",
            &server.url,
        ])
        // The plugin's own lines, and warnings.
        .env("LK_GO_LOG", "warn,plugin=info")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start lk-go")?;
    let peer = |script: &str, identity: &str, extra: &[&str]| -> Result<serde_json::Value> {
        let token = lk_go_tests::dev_token("demo", identity);
        let out = Command::new(&python)
            .arg(lk_go_tests::python_script(script))
            .args([server.url.as_str(), token.as_str()])
            .args(extra)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("run {script}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("{}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if !out.status.success() {
            bail!("{script} failed: {line}");
        }
        Ok(v)
    };
    let shown = (|| -> Result<()> {
        eprintln!("\n--- the Python SDK (participant `speaker`) publishes 440 Hz and listens to the agent ---");
        let v = peer("echo_check.py", "speaker", &["echo-agent", "20"])?;
        eprintln!(
            "sent 440 Hz at rms {:.0}; heard back {:.2} Hz at rms {:.0} ({:+.2} dB) over {} frames",
            v["sent_rms"].as_f64().unwrap_or(0.0),
            v["freq_hz"].as_f64().unwrap_or(0.0),
            v["rms"].as_f64().unwrap_or(0.0),
            v["level_db"].as_f64().unwrap_or(0.0),
            v["frames"]
        );
        eprintln!("\n--- mouth-to-ear: 5 tone bursts, time from sending to hearing the echo ---");
        let v = peer(
            "latency_probe.py",
            "prober",
            &["echo-agent", "--bursts", "5"],
        )?;
        eprintln!(
            "latencies {} ms: median {} ms, p95 {} ms",
            v["latencies_ms"], v["median_ms"], v["p95_ms"]
        );
        eprintln!(
            "\n--- data: 20 reliable lk.ping packets, answered with lk.pong to the sender only ---"
        );
        let observer = lk_go_tests::dev_token("demo", "observer");
        let v = peer(
            "data_check.py",
            "pinger",
            &["echo-agent", "--observer-token", &observer, "--count", "20"],
        )?;
        eprintln!(
            "{} pongs in order: {}; the observer received {}; {} ms for all",
            v["received"], v["in_order"], v["observer_received"], v["elapsed_ms"]
        );
        Ok(())
    })();
    eprintln!("\n--- SIGINT to the job: shutdown cascade (room -> tracks -> hooks -> plugin) ---");
    let _ = Command::new("kill")
        .args(["-INT", &job.id().to_string()])
        .status();
    let status = job.wait()?;
    eprintln!(
        "\nlk-go exited with code {} (130 = shut down by SIGINT)",
        status.code().unwrap_or(-1)
    );
    drop(server);
    shown
}
