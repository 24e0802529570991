//! The `lk-go` command line: a thin layer over [`crate::runner::run_job`].
//!
//! Owns: argument parsing (clap derive, env fallbacks, defaults for a local
//! `livekit-server --dev`), logging setup, signal handling (first
//! SIGINT/SIGTERM → `shutdown(signal)` and the cascade; a second → exit at
//! once), and turning every error into one line on stderr plus its documented
//! exit code. Must not contain job logic.
//!
//! The API secret is only ever read from `--api-secret` or
//! `LIVEKIT_API_SECRET`; it is never logged, echoed in `--help`, or printed in
//! an error.

use crate::exit;
use crate::job::{HookTimeouts, Job, JobConfig, JobContext, ShutdownReason};
use crate::room::signal::{AutoSubscribe, Credentials, LiveKitConnector, LiveKitSettings};
use crate::room::{DetachedConnector, RoomConnector};
use crate::runner::{run_job, CascadeTimeouts, RunOptions};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Default URL: a local `livekit-server --dev`.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:7880";
/// `livekit-server --dev`'s API key.
pub const DEV_API_KEY: &str = "devkey";
/// `livekit-server --dev`'s API secret (public knowledge, dev only).
pub const DEV_API_SECRET: &str = "secret";

#[derive(Parser, Debug)]
#[command(
    name = "lk-go",
    version,
    about = "Run LiveKit agent jobs as native plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Inspect plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Join a room, run one plugin in it, exit with the plugin's code.
    RunScript(Box<RunScriptArgs>),
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Load and validate a plugin and print its descriptor. Needs no server.
    Inspect {
        /// Path to the plugin shared library.
        plugin: PathBuf,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoSubscribeArg {
    All,
    None,
    Audio,
    Video,
}

#[derive(Args)]
pub struct RunScriptArgs {
    /// Path to the plugin shared library (.so / .dylib).
    pub plugin: PathBuf,
    /// Room to join.
    #[arg(long)]
    pub room: String,
    /// LiveKit server URL.
    #[arg(long, env = "LIVEKIT_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// API key (used with --api-secret to mint a token).
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = DEV_API_KEY)]
    pub api_key: String,
    /// API secret. Prefer the LIVEKIT_API_SECRET environment variable.
    #[arg(long, env = "LIVEKIT_API_SECRET", hide_env_values = true, hide_default_value = true, default_value = DEV_API_SECRET)]
    pub api_secret: String,
    /// A ready access token; overrides --api-key/--api-secret.
    #[arg(long, env = "LIVEKIT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Participant identity of the job (default: lk-go-<job id>).
    #[arg(long)]
    pub identity: Option<String>,
    /// Job metadata handed to the plugin.
    #[arg(long, default_value = "")]
    pub metadata: String,
    /// Job id (default: generated).
    #[arg(long)]
    pub job_id: Option<String>,
    /// Which remote tracks to subscribe to.
    #[arg(long, value_enum, default_value_t = AutoSubscribeArg::All)]
    pub auto_subscribe: AutoSubscribeArg,
    /// How long the plugin's run may take to return once shutdown began (e.g. 10s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
    /// Shut down if the server sends nothing (not even a pong) for this long.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub liveness_timeout: Duration,
    /// Shut down with reason deadline_exceeded (exit 124) after this long.
    #[arg(long, value_parser = parse_duration)]
    pub max_duration: Option<Duration>,
    /// Per-hook deadline during shutdown.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub hook_timeout: Duration,
    /// Run the plugin without joining a room (no server needed, no events).
    #[arg(long)]
    pub detached: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

// Hand-written so that a stray `{:?}` can never print the secret or token.
impl std::fmt::Debug for RunScriptArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunScriptArgs")
            .field("plugin", &self.plugin)
            .field("room", &self.room)
            .field("url", &self.url)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Parses `250ms`, `10s`, `2m`, or a bare number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?}; use e.g. 500ms, 10s or 2m"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("invalid duration {s:?}; it must be positive"));
    }
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?}; use ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Default log filter: lk-go at info; the WebRTC stack's internals (which
/// warn about benign conditions such as unanswered ICE pings during setup)
/// only when they report errors. `LK_GO_LOG` overrides it.
pub const DEFAULT_LOG_FILTER: &str =
    "info,rtc=error,rtc_dtls=error,rtc_ice=error,rtc_sctp=error,rtc_srtp=error,webrtc=error";

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("LK_GO_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Prints `lk-go: error: <message>` as one line.
fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    let one_line = message.to_string().replace('\n', " ");
    eprintln!("lk-go: error: {one_line}");
    code
}

/// The binary's entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    exit::USAGE
                } else {
                    exit::OK
                };
            }
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            return fail(exit::USAGE, format!("{first} (see lk-go --help)"));
        }
    };
    match cli.command {
        Command::Plugin(PluginCommand::Inspect { plugin }) => inspect(&plugin),
        Command::Job(JobCommand::RunScript(args)) => run_script(*args),
    }
}

fn inspect(path: &std::path::Path) -> i32 {
    match crate::plugin::load(path) {
        Ok(p) => {
            println!("name: {}", p.name);
            println!("version: {}", p.version);
            println!("abi: {}.{}", p.abi_major, p.abi_minor);
            println!(
                "host abi: {}.{}",
                lk_plugin_api::abi::LK_ABI_MAJOR,
                lk_plugin_api::abi::LK_ABI_MINOR
            );
            println!("path: {}", p.path.display());
            exit::OK
        }
        Err(e) => fail(exit::for_load_error(&e), e),
    }
}

/// Shortest `--liveness-timeout` accepted: the session pings three times per
/// window, and a loopback round trip must fit comfortably in a third of it.
pub const MIN_LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

fn run_script(args: RunScriptArgs) -> i32 {
    init_logging(args.log_format);
    if args.liveness_timeout < MIN_LIVENESS_TIMEOUT {
        return fail(exit::USAGE, "--liveness-timeout must be at least 1s");
    }
    let job = match Job::new(JobConfig {
        id: args.job_id.clone(),
        room_name: args.room.clone(),
        identity: args.identity.clone(),
        metadata: args.metadata.clone(),
        hook_timeouts: HookTimeouts {
            per_hook: args.hook_timeout,
            ..HookTimeouts::default()
        },
    }) {
        Ok(job) => job,
        Err(e) => return fail(exit::for_config_error(&e), e),
    };
    let connector: Box<dyn RoomConnector> = if args.detached {
        Box::new(DetachedConnector)
    } else {
        let credentials = match args.token {
            Some(token) => Credentials::Token(token),
            None => Credentials::KeySecret {
                key: args.api_key,
                secret: args.api_secret,
            },
        };
        let auto_subscribe = match args.auto_subscribe {
            AutoSubscribeArg::All => AutoSubscribe::All,
            AutoSubscribeArg::None => AutoSubscribe::None,
            AutoSubscribeArg::Audio => AutoSubscribe::Audio,
            AutoSubscribeArg::Video => AutoSubscribe::Video,
        };
        Box::new(LiveKitConnector::new(LiveKitSettings {
            url: args.url,
            credentials,
            auto_subscribe,
            liveness_timeout: args.liveness_timeout,
        }))
    };
    let options = RunOptions {
        plugin_path: args.plugin,
        cascade: CascadeTimeouts {
            plugin_grace: args.shutdown_grace,
            ..CascadeTimeouts::default()
        },
        max_duration: args.max_duration,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("lk-go-rt")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                exit::INTERNAL,
                format!("could not start the async runtime: {e}"),
            )
        }
    };
    let code = rt.block_on(async {
        if let Err(e) = install_signal_handlers(job.context.clone()) {
            return fail(
                exit::INTERNAL,
                format!("could not install signal handlers: {e}"),
            );
        }
        match run_job(job, connector.as_ref(), &options).await {
            Ok(outcome) => outcome.exit_code,
            Err(e) => fail(e.exit_code(), e),
        }
    });
    // Plugin or hook threads that overran must not keep the process alive.
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

/// First SIGINT/SIGTERM: shut the job down (cascade). Second: exit at once.
fn install_signal_handlers(ctx: JobContext) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let (reason, name) = tokio::select! {
            _ = int.recv() => (ShutdownReason::SignalSigint, "SIGINT"),
            _ = term.recv() => (ShutdownReason::SignalSigterm, "SIGTERM"),
        };
        ctx.shutdown(reason, format!("received {name}"));
        let second = tokio::select! {
            _ = int.recv() => ("SIGINT", exit::SIGINT),
            _ = term.recv() => ("SIGTERM", exit::SIGTERM),
        };
        eprintln!(
            "lk-go: received {} during shutdown; exiting at once",
            second.0
        );
        std::process::exit(second.1);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn secret_never_appears_in_debug_output() {
        let cli = Cli::try_parse_from([
            "lk-go",
            "job",
            "run-script",
            "./x.so",
            "--room",
            "r",
            "--api-secret",
            "hunter2-very-secret",
        ])
        .unwrap();
        let Command::Job(JobCommand::RunScript(args)) = cli.command else {
            panic!("wrong command")
        };
        assert_eq!(args.api_secret, "hunter2-very-secret");
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_target_a_local_dev_server() {
        let cli = Cli::try_parse_from([
            "lk-go",
            "job",
            "run-script",
            "./libnoop.so",
            "--room",
            "test",
        ])
        .unwrap();
        let Command::Job(JobCommand::RunScript(args)) = cli.command else {
            panic!("wrong command")
        };
        // Only meaningful when the environment does not override them.
        if std::env::var_os("LIVEKIT_URL").is_none() {
            assert_eq!(args.url, DEFAULT_URL);
        }
        assert_eq!(args.shutdown_grace, Duration::from_secs(10));
        assert_eq!(args.auto_subscribe, AutoSubscribeArg::All);
    }
}
