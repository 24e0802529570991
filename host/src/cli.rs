//! The `lk-go` command line: a thin layer over [`crate::runner::run_job`].
//!
//! Owns: argument parsing (clap derive, env fallbacks, defaults for a local
//! `livekit-server --dev`), logging setup, signal handling (first
//! SIGINT/SIGTERM/SIGHUP → `shutdown(signal)` and the cascade; a second →
//! exit at once), and turning every error into one line on stderr plus its
//! documented exit code. Must not contain job logic.
//!
//! Architecture invariant: **a broken, full or unread stdout or stderr
//! never changes the outcome.** Nothing here uses `println!`/`eprintln!`
//! (they panic when the stream is closed or full, and block when nobody
//! reads); logs and error lines go through [`crate::logsink`], which never
//! blocks and drops (and counts) what cannot be written; the exit code is
//! the documented one whether or not anyone reads the output.
//!
//! The API secret is only ever read from `--api-secret` or
//! `LIVEKIT_API_SECRET`; it is never logged, echoed in `--help`, or printed in
//! an error.

use crate::exit;
use crate::job::{HookTimeouts, Job, JobConfig, JobContext, ShutdownReason};
use crate::logsink::one_printable_line;
use crate::room::signal::{AutoSubscribe, Credentials, LiveKitConnector, LiveKitSettings};
use crate::room::{DetachedConnector, RoomConnector};
use crate::runner::{run_job, CascadeTimeouts, RunOptions};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
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
    /// Inspect plugins, or start a new plugin project.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Register with LiveKit's agent dispatch and run every job it hands
    /// out, each in its own process, up to --max-jobs at once. The first
    /// SIGINT/SIGTERM drains (declines new jobs, waits up to
    /// --drain-timeout for running ones); a second stops now.
    Worker(Box<WorkerArgs>),
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Join a room, run one plugin in it, exit with the plugin's code.
    RunScript(Box<RunScriptArgs>),
    /// A job process started by `lk-go worker` (reads its assignment from
    /// the worker's pipe); not for direct use.
    #[command(hide = true)]
    RunAssigned(Box<RunAssignedArgs>),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobTypeArg {
    /// One job per room (JT_ROOM).
    Room,
    /// One job per publishing participant (JT_PUBLISHER).
    Publisher,
    /// One job per joining participant (JT_PARTICIPANT).
    Participant,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Path to the plugin shared library every job runs.
    pub plugin: PathBuf,
    /// Serve only dispatches naming this agent (explicit dispatch). Empty:
    /// automatic dispatch, one job for every new room.
    #[arg(long, env = "LIVEKIT_AGENT_NAME", default_value = "")]
    pub agent_name: String,
    /// Which jobs to take.
    #[arg(long, value_enum, default_value_t = JobTypeArg::Room)]
    pub job_type: JobTypeArg,
    /// Jobs run at once, at most; more are declined (the server offers them
    /// to another worker).
    #[arg(long, default_value_t = 8)]
    pub max_jobs: u32,
    #[command(flatten)]
    pub server: ServerFlags,
    /// After the first SIGINT/SIGTERM, how long running jobs may take to end
    /// on their own before they are shut down.
    #[arg(long, value_parser = parse_duration, default_value = "60m")]
    pub drain_timeout: Duration,
    /// Give up (exit 69) when the first attempt to reach the server and this
    /// many retries in a row have failed; running jobs are waited for as in
    /// a drain. Default: retry forever (0, 2, 4 … 10 s apart).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Serve health (`/`), the worker's state as JSON (`/worker`) and
    /// Prometheus metrics (`/metrics`) on ADDR:PORT, or on 127.0.0.1:PORT
    /// when only a port is given. Off by default.
    #[arg(long, env = "LIVEKIT_WORKER_HTTP", value_parser = parse_http_addr, value_name = "[ADDR:]PORT")]
    pub http: Option<std::net::SocketAddr>,
    /// Log a warning (once per job) when a job process's resident memory
    /// goes over this many MB (livekit-agents' default too); 0: never.
    #[arg(long, default_value_t = 1000, value_name = "MB")]
    pub job_memory_warn: u64,
    /// Shut a job down (reason memory_limit, exit 85, JS_FAILED) when its
    /// resident memory goes over this many MB; it is killed if it has not
    /// ended within its cascade budget. 0: no limit.
    #[arg(long, default_value_t = 0, value_name = "MB")]
    pub job_memory_limit: u64,
    #[command(flatten)]
    pub permissions: PermissionFlags,
    #[command(flatten)]
    pub job: JobFlags,
    /// Log format on stderr (job processes use it too).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// What the worker's jobs may do in their rooms: the registration's
/// `allowed_permissions`, which the server writes into every job token
/// (as livekit-agents' `WorkerPermissions`). Default: publish, subscribe,
/// publish data and update their own metadata; not hidden.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct PermissionFlags {
    /// Jobs may not publish tracks.
    #[arg(long)]
    pub no_publish: bool,
    /// Jobs may not subscribe to tracks.
    #[arg(long)]
    pub no_subscribe: bool,
    /// Jobs may not send data packets, streams or RPC.
    #[arg(long)]
    pub no_publish_data: bool,
    /// Jobs may not update their own name, metadata or attributes.
    #[arg(long)]
    pub no_update_metadata: bool,
    /// Jobs join hidden: other participants do not see them.
    #[arg(long)]
    pub hidden: bool,
}

impl PermissionFlags {
    pub fn to_permission(self) -> livekit_protocol::ParticipantPermission {
        livekit_protocol::ParticipantPermission {
            can_publish: !self.no_publish,
            can_subscribe: !self.no_subscribe,
            can_publish_data: !self.no_publish_data,
            can_update_metadata: !self.no_update_metadata,
            hidden: self.hidden,
            ..Default::default()
        }
    }
}

/// `--http`: `ADDR:PORT`, or `PORT` alone for loopback.
fn parse_http_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!("{s:?} is not [ADDR:]PORT (e.g. 8081, 127.0.0.1:8081 or 0.0.0.0:8081)")
    })
}

// Hand-written so that a stray `{:?}` can never print the secret.
impl std::fmt::Debug for WorkerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerArgs")
            .field("plugin", &self.plugin)
            .field("agent_name", &self.agent_name)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

#[derive(Args, Debug)]
pub struct RunAssignedArgs {
    pub plugin: PathBuf,
    #[command(flatten)]
    pub job: JobFlags,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Load and validate a plugin and print its descriptor. Needs no server.
    Inspect {
        /// Path to the plugin shared library.
        plugin: PathBuf,
    },
    /// Write a minimal plugin project (build file, source, a README) that
    /// builds outside this repository against the SDK.
    New {
        /// The plugin's language.
        #[arg(long, value_enum)]
        lang: LangArg,
        /// The plugin's name (a-z, 0-9, '-', '_'; starts with a letter).
        name: String,
        /// Where to write it (created; must be empty). Default: ./NAME.
        dir: Option<PathBuf>,
        /// The lk-go checkout to build against (Rust and Go). Default: the
        /// one this lk-go was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LangArg {
    Rust,
    C,
    Go,
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
// ServerFlags' --api-key text is the worker's; a job mints its own token.
#[command(mut_arg("api_key", |a| a.help(
    "API key; with --api-secret, lk-go mints the job's access token (not used with --token)"
)))]
pub struct RunScriptArgs {
    /// Path to the plugin shared library (.so / .dylib).
    pub plugin: PathBuf,
    /// Room to join. Optional with --token (the token names the room); if
    /// both are given they must agree.
    #[arg(long)]
    pub room: Option<String>,
    #[command(flatten)]
    pub server: ServerFlags,
    /// A ready access token; overrides --api-key/--api-secret.
    #[arg(long, env = "LIVEKIT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Participant identity of the job (default: lk-go-<job id>, or the
    /// token's identity with --token; if both are given they must agree).
    #[arg(long)]
    pub identity: Option<String>,
    /// Job metadata handed to the plugin (at most 512 KiB; a command line
    /// holds about 128 KiB per argument: use --metadata-file for more).
    #[arg(long, default_value = "", conflicts_with = "metadata_file")]
    pub metadata: String,
    /// Read the job metadata from this file (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub metadata_file: Option<PathBuf>,
    /// Job id (default: generated).
    #[arg(long)]
    pub job_id: Option<String>,
    /// Make it a participant job for this participant, as a dispatch of
    /// type participant does: the plugin is told the identity, and the job
    /// ends (participant_left) when that participant leaves the room,
    /// unless the plugin opts out.
    #[arg(long, value_name = "IDENTITY")]
    pub participant_identity: Option<String>,
    /// The agent name the plugin is told (as a dispatch would).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub agent_name: String,
    /// A dispatch attribute the plugin is told (repeatable).
    #[arg(long = "attribute", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub attributes: Vec<(String, String)>,
    #[command(flatten)]
    pub job: JobFlags,
    /// Run the plugin without joining a room (no server needed, no events).
    /// It still needs --room (or a --token naming one): the room name the
    /// plugin is told.
    #[arg(long)]
    pub detached: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The name clap parses back as `value` (a flag's value for a job process).
fn value_name<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// Where the LiveKit server is and the credentials for it, shared by
/// `job run-script` and `worker`. Defaults: a local `livekit-server --dev`.
#[derive(Args, Clone)]
pub struct ServerFlags {
    /// LiveKit server URL; repeat it (or give a comma list) for the nodes
    /// of one deployment: the first that answers is used, the next ones
    /// when it is lost.
    #[arg(long, env = "LIVEKIT_URL", value_delimiter = ',', default_value = DEFAULT_URL)]
    pub url: Vec<String>,
    /// API key (with --api-secret: the worker's and every job's credentials).
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = DEV_API_KEY)]
    pub api_key: String,
    /// API secret. Prefer the LIVEKIT_API_SECRET environment variable.
    #[arg(long, env = "LIVEKIT_API_SECRET", hide_env_values = true, hide_default_value = true, default_value = DEV_API_SECRET)]
    pub api_secret: String,
}

// Hand-written so that a stray `{:?}` can never print the secret.
impl std::fmt::Debug for ServerFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFlags")
            .field("url", &self.url)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .finish()
    }
}

/// The flags that shape one job, shared by `job run-script`, `worker` (which
/// hands them to every job process) and the hidden `job run-assigned`.
#[derive(Args, Clone, Debug)]
pub struct JobFlags {
    /// Which remote tracks to subscribe to.
    #[arg(long, value_enum, default_value_t = AutoSubscribeArg::All)]
    pub auto_subscribe: AutoSubscribeArg,
    /// How long the plugin's run may take to return once shutdown began (e.g. 10s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
    /// Shut down if the server sends nothing (not even a pong) for this long
    /// (1s to 15s: the server's ping timeout bounds it).
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub liveness_timeout: Duration,
    /// How long to try to resume, then rejoin, an interrupted session before
    /// ending the job with server_unreachable (69); 0 ends it at once.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub reconnect_window: Duration,
    /// Once the server connection is lost: how long every attempt may fail
    /// without reaching the server (connection refused or reset, no answer)
    /// before the job ends with server_unreachable (69). A server that
    /// answers gets the whole --reconnect-window. Raise it (up to the
    /// window) to ride out server restarts.
    #[arg(long, value_parser = parse_duration, default_value = "1500ms")]
    pub unreachable_timeout: Duration,
    /// Largest incoming data stream kept, bytes (a bigger one is aborted).
    #[arg(long, value_name = "BYTES", default_value_t = crate::datastream::DEFAULT_MAX_STREAM_BYTES)]
    pub stream_max_bytes: u64,
    /// Unread incoming data-stream content kept across all streams, bytes
    /// (the stream that would go over it is aborted).
    #[arg(long, value_name = "BYTES", default_value_t = crate::datastream::DEFAULT_MAX_BUFFERED)]
    pub streams_max_bytes: usize,
    /// Shut down with reason deadline_exceeded (exit 124) after this long.
    #[arg(long, value_parser = parse_duration)]
    pub max_duration: Option<Duration>,
    /// A shutdown hook running longer than this is reported as overrun
    /// (default: 5s, or --hook-budget if shorter).
    #[arg(long, value_parser = parse_duration)]
    pub hook_timeout: Option<Duration>,
    /// Longest the whole hook stage may take (default: 10s, or
    /// --hook-timeout if longer). Hooks not started by then are not started.
    #[arg(long, value_parser = parse_duration)]
    pub hook_budget: Option<Duration>,
}

impl JobFlags {
    /// The flags as arguments again, for a job process started by the
    /// worker (durations in milliseconds: exact, and parsed back as given).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let mut args: Vec<String> = vec![
            "--auto-subscribe".into(),
            value_name(self.auto_subscribe),
            "--shutdown-grace".into(),
            ms(self.shutdown_grace),
            "--liveness-timeout".into(),
            ms(self.liveness_timeout),
            "--reconnect-window".into(),
            ms(self.reconnect_window),
            "--unreachable-timeout".into(),
            ms(self.unreachable_timeout),
            "--stream-max-bytes".into(),
            self.stream_max_bytes.to_string(),
            "--streams-max-bytes".into(),
            self.streams_max_bytes.to_string(),
        ];
        for (flag, value) in [
            ("--max-duration", self.max_duration),
            ("--hook-timeout", self.hook_timeout),
            ("--hook-budget", self.hook_budget),
        ] {
            if let Some(d) = value {
                args.push(flag.into());
                args.push(ms(d));
            }
        }
        args.into_iter().map(Into::into).collect()
    }

    /// Refuses liveness timeouts the session cannot honour (64).
    fn check(&self) -> Result<(), String> {
        if self.liveness_timeout < MIN_LIVENESS_TIMEOUT {
            return Err("--liveness-timeout must be at least 1s; use 1s to 15s".into());
        }
        if self.liveness_timeout > MAX_LIVENESS_TIMEOUT {
            return Err("--liveness-timeout may be at most 15s: the server's ping timeout (15 s) ends a silent connection first; use 15s or less".into());
        }
        Ok(())
    }

    fn auto_subscribe(&self) -> AutoSubscribe {
        match self.auto_subscribe {
            AutoSubscribeArg::All => AutoSubscribe::All,
            AutoSubscribeArg::None => AutoSubscribe::None,
            AutoSubscribeArg::Audio => AutoSubscribe::Audio,
            AutoSubscribeArg::Video => AutoSubscribe::Video,
        }
    }

    fn run_options(&self, plugin: PathBuf) -> RunOptions {
        RunOptions {
            plugin_path: plugin,
            cascade: CascadeTimeouts {
                plugin_grace: self.shutdown_grace,
                ..CascadeTimeouts::default()
            },
            max_duration: self.max_duration,
            before_leave: None,
            stream_limits: crate::datastream::StreamLimits {
                max_stream_bytes: self.stream_max_bytes,
                max_buffered: self.streams_max_bytes,
            },
        }
    }
}

// Hand-written so that a stray `{:?}` can never print the secret or token.
impl std::fmt::Debug for RunScriptArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunScriptArgs")
            .field("plugin", &self.plugin)
            .field("room", &self.room)
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Parses `KEY=VALUE` (the value may be empty or contain `=`; the key not).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?} is not KEY=VALUE; write it as e.g. tier=gold"
        )),
    }
}

/// Longest duration any flag accepts: a year. Larger values are typos, and
/// `Duration` arithmetic on them would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `250ms`, `10s`, `2m`, or a bare number of seconds (`1.5`), from 0
/// to [`MAX_DURATION`]. Never panics: every other input is an error message.
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
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "duration {s:?} is too large; the limit is {} days",
            MAX_DURATION.as_secs() / 86400
        )),
    }
}

/// Default log filter: lk-go at info. `LK_GO_LOG` replaces it (tracing
/// filter syntax).
pub const DEFAULT_LOG_FILTER: &str = "info";

/// The WebRTC stack's log targets (webrtc-rs crates log through `log`, with
/// targets such as `webrtc_ice::agent` and `rtc::peer_connection::handler`).
/// They warn about conditions that are normal during setup — unanswered
/// ICE pings, "conn.remote_addr is empty", a DTLS packet before its config,
/// a short SRTP packet — so they are kept at `error` whatever `LK_GO_LOG`
/// says, unless `LK_GO_LOG` names the target itself (`LK_GO_LOG=info,rtc_ice=debug`).
/// A healthy job prints no WARN.
pub const QUIET_WEBRTC_TARGETS: [&str; 17] = [
    // The signal client warns when it drops a message after the server
    // closed the room, and on each fallback while joining; lk-go reports
    // what matters itself.
    "livekit_signaling",
    "rtc",
    "rtc_dtls",
    "rtc_ice",
    "rtc_sctp",
    "rtc_srtp",
    "webrtc",
    "webrtc_ice",
    "webrtc_dtls",
    "webrtc_sctp",
    "webrtc_srtp",
    "webrtc_data",
    "webrtc_mdns",
    "webrtc_util",
    "interceptor",
    "turn",
    "stun",
];

/// Targets whose trace output carries credentials in a form no redaction
/// can match: tungstenite hex-dumps every WebSocket frame at trace level,
/// including the server's `RefreshToken`. They are capped at `debug`,
/// whatever `LK_GO_LOG` says.
pub const CAPPED_AT_DEBUG: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// Verbosity rank of a level name (`off` 0 … `trace` 5); `None` if not one.
fn level_rank(level: &str) -> Option<u8> {
    match level.trim().to_ascii_lowercase().as_str() {
        "off" => Some(0),
        "error" => Some(1),
        "warn" => Some(2),
        "info" => Some(3),
        "debug" => Some(4),
        "trace" => Some(5),
        _ => None,
    }
}

/// The filter for `LK_GO_LOG` (or the default): the user's directives plus
/// `<target>=error` for each WebRTC target they do not mention, and the
/// [`CAPPED_AT_DEBUG`] targets at the level the user gave them (or the
/// bare default level), but never above `debug`: capped, never raised
/// (`LK_GO_LOG=warn` keeps them at warn).
pub fn log_filter(user: Option<&str>) -> String {
    let user = user
        .filter(|u| !u.trim().is_empty())
        .unwrap_or(DEFAULT_LOG_FILTER);
    // The bare level (a directive without `=`) applies to every target the
    // user did not name; the last one wins, as in EnvFilter.
    let bare = user
        .split(',')
        .filter(|d| !d.contains('='))
        .filter_map(level_rank)
        .next_back()
        .unwrap_or(1);
    let named_rank = |target: &str| {
        user.split(',')
            .filter_map(|d| d.split_once('='))
            .filter(|(t, _)| t.trim() == target)
            .filter_map(|(_, l)| level_rank(l))
            .next_back()
    };
    const NAMES: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let capped_levels: Vec<(&str, &str)> = CAPPED_AT_DEBUG
        .iter()
        .map(|c| (*c, NAMES[named_rank(c).unwrap_or(bare).min(4) as usize]))
        .collect();
    let mut filter = user
        .split(',')
        .filter(|d| {
            let t = d.split('=').next().unwrap_or("").trim();
            !CAPPED_AT_DEBUG
                .iter()
                .any(|c| t == *c || t.starts_with(&format!("{c}::")))
        })
        .collect::<Vec<_>>()
        .join(",");
    if filter.is_empty() {
        filter = DEFAULT_LOG_FILTER.to_string();
    }
    for (capped, level) in capped_levels {
        filter.push_str(&format!(",{capped}={level}"));
    }
    for target in QUIET_WEBRTC_TARGETS {
        let named = filter.split(',').any(|d| {
            let t = d.split('=').next().unwrap_or("").trim();
            t == target || t.starts_with(&format!("{target}::"))
        });
        if !named {
            filter.push_str(&format!(",{target}=error"));
        }
    }
    filter
}

/// Colour only for a terminal, and never with `NO_COLOR` set (no-color.org).
fn use_ansi() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let user = std::env::var("LK_GO_LOG").ok();
    let filter = EnvFilter::try_new(log_filter(user.as_deref()))
        .unwrap_or_else(|_| EnvFilter::new(log_filter(None)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_ansi())
        // Its own fallback for a failed write is eprintln!, which panics on
        // a closed stderr; the sink never fails, and this stays quiet.
        .log_internal_errors(false)
        .with_writer(|| crate::logsink::SinkWriter);
    crate::logsink::set_json(format == LogFormat::Json);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Prints `lk-go: error: <message>` as one line (through the log sink:
/// redacted, never blocking).
fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    let one_line = one_printable_line(&message.to_string());
    crate::logsink::line_always(&format!("lk-go: error: {one_line}"));
    code
}

/// The binary's entry point; returns the process exit code. What is still
/// queued for stderr gets up to half a second to be written.
pub fn main() -> i32 {
    let code = dispatch();
    let dropped = crate::logsink::dropped_lines();
    if dropped > 0 {
        crate::logsink::line_always(&format!(
            "lk-go: note: {dropped} log lines were dropped (stderr was full, closed or not read fast enough)"
        ));
    }
    crate::logsink::flush(Duration::from_millis(500));
    code
}

/// Ends the process with `code` without ever blocking on output: C stdio
/// buffers (a plugin's `printf`) get up to a second to be flushed, then the
/// process leaves with `_exit`. `std::process::exit` would flush them in
/// `exit(3)` itself, which blocks forever on a full pipe nobody reads.
pub fn exit(code: i32) -> ! {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let flushing = std::thread::Builder::new()
        .name("lk-go-exit-flush".into())
        .spawn(move || {
            // SAFETY: fflush(NULL) flushes every open output stream.
            unsafe { libc::fflush(std::ptr::null_mut()) };
            let _ = done_tx.send(());
        });
    if flushing.is_ok() {
        let _ = done_rx.recv_timeout(Duration::from_secs(1));
    }
    // What the plugin wrote is passed on, within a bound of its own.
    crate::stdio::drain(Duration::from_millis(500));
    // SAFETY: _exit ends the process at once; nothing after it runs.
    unsafe { libc::_exit(code) }
}

/// Registers every secret the command line or environment may carry before
/// anything can print it, clap's own errors included (`unexpected argument
/// '<token>'` when a flag name is forgotten): the values of `--token` and
/// `--api-secret`, their environment variables, and any argument that looks
/// like a JWT.
fn register_secrets_from_args_and_env() {
    let args: Vec<String> = std::env::args().collect();
    for (i, arg) in args.iter().enumerate() {
        for flag in ["--token", "--api-secret"] {
            if arg == flag {
                if let Some(value) = args.get(i + 1) {
                    crate::secrets::register(value);
                }
            } else if let Some(value) = arg.strip_prefix(&format!("{flag}=")) {
                crate::secrets::register(value);
            }
        }
        if looks_like_jwt(arg) {
            crate::secrets::register(arg);
        }
    }
    for var in ["LIVEKIT_TOKEN", "LIVEKIT_API_SECRET"] {
        if let Ok(value) = std::env::var(var) {
            crate::secrets::register(&value);
        }
    }
}

/// Three dot-separated base64url segments, the first a JSON header.
fn looks_like_jwt(s: &str) -> bool {
    let s = s.trim();
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && s.starts_with("eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        })
}

fn dispatch() -> i32 {
    register_secrets_from_args_and_env();
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
                // print() writes to stdout and reports failure; ignore it.
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    exit::USAGE
                } else {
                    exit::OK
                };
            }
            return fail(exit::USAGE, clap_error_line(&e.render().to_string()));
        }
    };
    // A job's plugin writes into pipes the host owns (see crate::stdio): a
    // language runtime that dies on EPIPE cannot take the job with it.
    let stdio = match &cli.command {
        Command::Job(_) => crate::stdio::own_plugin_stdio().err(),
        _ => None,
    };
    if let Some(e) = stdio {
        // Not fatal: the plugin then writes to the real stdout and stderr.
        crate::logsink::line_always(&format!(
            "lk-go: note: the plugin writes straight to stdout/stderr (could not set up the forwarding pipes: {e})"
        ));
    }
    match cli.command {
        Command::Plugin(PluginCommand::Inspect { plugin }) => inspect(&plugin),
        Command::Plugin(PluginCommand::New {
            lang,
            name,
            dir,
            sdk,
        }) => new_plugin(lang, &name, dir, sdk),
        Command::Job(JobCommand::RunScript(args)) => run_script(*args),
        Command::Job(JobCommand::RunAssigned(args)) => run_assigned(*args),
        Command::Worker(args) => worker(*args),
    }
}

/// clap's error as one line: everything before its first blank line (the
/// message, the missing arguments, the possible values), without the usage
/// block.
fn clap_error_line(rendered: &str) -> String {
    let text: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
        .map(str::trim)
        .collect();
    let text = text.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let text = if text.is_empty() {
        "invalid arguments"
    } else {
        text
    };
    format!("{text} (see lk-go --help)")
}

fn new_plugin(lang: LangArg, name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> i32 {
    let lang = match lang {
        LangArg::Rust => crate::scaffold::Lang::Rust,
        LangArg::C => crate::scaffold::Lang::C,
        LangArg::Go => crate::scaffold::Lang::Go,
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    match crate::scaffold::write(lang, name, &dir, sdk.as_deref()) {
        Ok(p) => {
            // Absolute: pasted in order, the run line still finds the
            // library after the build line's `cd`, and both work from any
            // directory.
            let dir = std::path::absolute(&p.dir).unwrap_or_else(|_| p.dir.clone());
            let dir = shell_word(&dir.display().to_string());
            let text = format!(
                "wrote {dir}\nbuild: cd {dir} && {}\nrun:   lk-go job run-script {dir}/{} --room test\n",
                p.build, p.library
            );
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            exit::OK
        }
        Err(e) => fail(exit::USAGE, e),
    }
}

/// `s` as one shell word: as it is when it needs no quoting, else in
/// single quotes (a `'` in it as `'\''`).
fn shell_word(s: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/._-+,:".contains(&b);
    if !s.is_empty() && s.bytes().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn inspect(path: &std::path::Path) -> i32 {
    match crate::plugin::load(path) {
        Ok(p) => {
            let text = format!(
                "name: {}\nversion: {}\nabi: {}.{}\nhost abi: {}.{}\npath: {}\n",
                p.name,
                p.version,
                p.abi_major,
                p.abi_minor,
                lk_plugin_api::abi::LK_ABI_MAJOR,
                lk_plugin_api::abi::LK_ABI_MINOR,
                p.path.display()
            );
            // A closed stdout does not change the verdict on the plugin.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            exit::OK
        }
        Err(e) => fail(exit::for_load_error(&e), e),
    }
}

/// Shortest `--liveness-timeout` accepted: the session pings three times per
/// window, and a loopback round trip must fit comfortably in a third of it.
pub const MIN_LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest `--liveness-timeout` accepted: livekit-server v1.13.5 announces
/// `ping_timeout` 15 s in its JoinResponse, and the signal client
/// (livekit-signaling 0.1.8) closes the connection after that long without a
/// pong, whatever lk-go would wait. A longer flag could not be honoured.
pub const MAX_LIVENESS_TIMEOUT: Duration = Duration::from_secs(15);

/// `--hook-timeout` and `--hook-budget`: whichever is given bends the
/// other's default (5 s and 10 s) to fit, so neither alone is refused; both
/// given and contradictory is left to `Job::new` to refuse (64).
pub fn hook_timeouts(per_hook: Option<Duration>, budget: Option<Duration>) -> HookTimeouts {
    let defaults = HookTimeouts::default();
    let per_hook =
        per_hook.unwrap_or_else(|| budget.map_or(defaults.per_hook, |b| b.min(defaults.per_hook)));
    let budget = budget.unwrap_or_else(|| defaults.budget.max(per_hook));
    HookTimeouts { per_hook, budget }
}

/// Reads `--metadata-file` (`-`: standard input), at most one byte more than
/// the limit so that an oversized file is refused, not read whole.
fn read_metadata_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let limit = crate::job::MAX_METADATA_LEN as u64 + 1;
    let mut buf = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut buf))
    };
    read.map_err(|e| {
        format!(
            "could not read --metadata-file {}: {e}; check the path and that it is readable",
            path.display()
        )
    })?;
    String::from_utf8(buf).map_err(|_| {
        format!(
            "--metadata-file {} is not UTF-8 text; convert it to UTF-8 (job metadata is text)",
            path.display()
        )
    })
}

/// Room and identity from the flags and, with `--token`, from the token:
/// the token decides, and a flag that contradicts it is an error.
fn room_and_identity(args: &RunScriptArgs) -> Result<(String, Option<String>), i32> {
    let claims = match &args.token {
        Some(token) => match crate::room::signal::token_claims(token) {
            Ok(c) => Some(c),
            Err(e) => return Err(fail(exit::for_connect_error(&e), e)),
        },
        None => None,
    };
    let mut room = args.room.clone();
    let mut identity = args.identity.clone();
    if let Some(c) = claims {
        for (what, flag, in_token, given) in [
            ("room", "--room", &c.room, &mut room),
            ("identity", "--identity", &c.identity, &mut identity),
        ] {
            match (in_token.is_empty(), given.as_ref()) {
                (false, Some(g)) if g != in_token => {
                    let e = crate::room::ConnectError::TokenMismatch {
                        what,
                        flag,
                        in_token: in_token.clone(),
                        given: g.clone(),
                    };
                    return Err(fail(exit::for_connect_error(&e), e));
                }
                (false, None) => *given = Some(in_token.clone()),
                _ => {}
            }
        }
    }
    match room {
        Some(room) => Ok((room, identity)),
        None => Err(fail(
            exit::USAGE,
            "no room: pass --room <name> (or a --token that names one)",
        )),
    }
}

fn run_script(args: RunScriptArgs) -> i32 {
    // Before anything can log: no line may carry these.
    crate::secrets::register(&args.server.api_secret);
    if let Some(token) = &args.token {
        crate::secrets::register(token);
    }
    init_logging(args.log_format);
    if let Err(e) = args.job.check() {
        return fail(exit::USAGE, e);
    }
    let (room_name, identity) = match room_and_identity(&args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let metadata = match &args.metadata_file {
        Some(path) => match read_metadata_file(path) {
            Ok(m) => m,
            Err(e) => return fail(exit::USAGE, e),
        },
        None => args.metadata.clone(),
    };
    let job = match Job::new(JobConfig {
        id: args.job_id.clone(),
        room_name,
        identity,
        metadata,
        hook_timeouts: hook_timeouts(args.job.hook_timeout, args.job.hook_budget),
        dispatch: crate::job::Dispatch {
            participant_identity: args.participant_identity.clone().unwrap_or_default(),
            agent_name: args.agent_name.clone(),
            attributes: {
                let mut a = args.attributes.clone();
                a.sort();
                a
            },
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
                key: args.server.api_key,
                secret: args.server.api_secret,
            },
        };
        Box::new(LiveKitConnector::new(LiveKitSettings {
            urls: args.server.url.clone(),
            credentials,
            auto_subscribe: args.job.auto_subscribe(),
            liveness_timeout: args.job.liveness_timeout,
            reconnect_window: args.job.reconnect_window,
            unreachable_timeout: args.job.unreachable_timeout,
        }))
    };
    let options = args.job.run_options(args.plugin);
    execute_job(job, connector.as_ref(), options, None)
}

/// The job's runtime: one worker thread (plus tokio's blocking pool; the
/// plugin's `run`, its own threads and the hooks have threads of their own).
/// Nothing in a job's async code blocks its thread. Measured on the 2-core
/// bench machine, three echo jobs at once: 2.9 % of a core per job with one
/// worker, 3.6 % with two — the second worker mostly woke up to steal a
/// task and went back to sleep (futex and epoll in `perf`).
fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("lk-go-rt")
        .build()
        .map_err(|e| {
            fail(
                exit::INTERNAL,
                format!("could not start the async runtime: {e}; check the limits on threads and memory (ulimit -u, the cgroup's pids.max)"),
            )
        })
}

/// Runs one job to its exit code, as `job run-script` and every job process
/// of `worker` do: signals, [`run_job`], one error line for a failure. With
/// a worker `pipe`, the verdict goes to the worker before the job leaves
/// the room, and the worker's requests and EOF shut the job down.
fn execute_job(
    job: Job,
    connector: &dyn RoomConnector,
    mut options: RunOptions,
    pipe: Option<crate::worker::job_side::PipeStart>,
) -> i32 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = rt.block_on(async {
        if let Err(e) = install_signal_handlers(job.context.clone()) {
            return fail(
                exit::INTERNAL,
                format!("could not install signal handlers: {e}; check the limit on open files (ulimit -n)"),
            );
        }
        let reporter = match pipe {
            Some(pipe) => {
                match crate::worker::job_side::WorkerPipe::attach(pipe, job.context.clone()) {
                    Ok(p) => Some(std::sync::Arc::new(p)),
                    Err(e) => {
                        return fail(
                            exit::INTERNAL,
                            format!("could not use the worker pipe: {e}; job processes are started by lk-go worker, which passes the pipe as fd 3 (run a job yourself with lk-go job run-script)"),
                        )
                    }
                }
            }
            None => None,
        };
        if let Some(r) = &reporter {
            options.before_leave = Some(r.clone());
        }
        match run_job(job, connector, &options).await {
            Ok(outcome) => match outcome.failure() {
                Some(what) => fail(outcome.exit_code, what),
                None => outcome.exit_code,
            },
            Err(e) => {
                if let Some(r) = &reporter {
                    // It never joined: the worker reports the failure.
                    r.report_failure_before_join(&e.to_string()).await;
                }
                fail(e.exit_code(), e)
            }
        }
    });
    // Plugin or hook threads that overran must not keep the process alive.
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

/// `job run-assigned`: a job process started by `lk-go worker`. Reads its
/// assignment from the worker pipe (fd [`crate::worker::ipc::CHILD_FD`]).
fn run_assigned(args: RunAssignedArgs) -> i32 {
    init_logging(args.log_format);
    if let Err(e) = args.job.check() {
        return fail(exit::USAGE, e);
    }
    let (pipe, assignment) = match crate::worker::job_side::read_assignment() {
        Ok(v) => v,
        Err(e) => return fail(exit::USAGE, e),
    };
    let crate::worker::ipc::ToJob::Assignment {
        urls,
        token,
        job_id,
        room,
        identity,
        metadata,
        participant_identity,
        agent_name,
        attributes,
    } = assignment
    else {
        return fail(
            exit::USAGE,
            "the worker pipe did not start with an assignment; job run-assigned is started by lk-go worker (run a job yourself with lk-go job run-script)",
        );
    };
    crate::secrets::register(&token);
    let job = match Job::new(JobConfig {
        id: Some(job_id),
        room_name: room,
        identity: Some(identity),
        metadata,
        hook_timeouts: hook_timeouts(args.job.hook_timeout, args.job.hook_budget),
        dispatch: crate::job::Dispatch {
            participant_identity,
            agent_name,
            attributes,
        },
    }) {
        Ok(job) => job,
        Err(e) => {
            // The worker reports it as the job's failure.
            pipe.send_failure_now(&e.to_string());
            return fail(exit::for_config_error(&e), e);
        }
    };
    let connector = LiveKitConnector::new(LiveKitSettings {
        urls,
        credentials: Credentials::Token(token),
        auto_subscribe: args.job.auto_subscribe(),
        liveness_timeout: args.job.liveness_timeout,
        reconnect_window: args.job.reconnect_window,
        unreachable_timeout: args.job.unreachable_timeout,
    });
    let options = args.job.run_options(args.plugin);
    execute_job(job, &connector, options, Some(pipe))
}

/// `worker`: validates the plugin, then runs [`crate::worker::run_worker`].
fn worker(args: WorkerArgs) -> i32 {
    crate::secrets::register(&args.server.api_secret);
    init_logging(args.log_format);
    if let Err(e) = args.job.check() {
        return fail(exit::USAGE, e);
    }
    if args.max_jobs == 0 {
        return fail(
            exit::USAGE,
            "--max-jobs must be at least 1; give how many jobs may run at once (default 8)",
        );
    }
    for url in &args.server.url {
        if let Err(e) = crate::room::signal::validate_url(url) {
            return fail(exit::for_connect_error(&e), e);
        }
    }
    if let Err(e) = validate_agent_name(&args.agent_name) {
        return fail(exit::USAGE, e);
    }
    // The same loader and codes as `job run-script`: a broken plugin is
    // refused before the worker registers, not discovered job by job.
    let plugin = match crate::plugin::load(&args.plugin) {
        Ok(p) => p,
        Err(e) => return fail(exit::for_load_error(&e), e),
    };
    tracing::info!(plugin = %plugin.describe(), "plugin validated");
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return fail(
                exit::INTERNAL,
                format!("could not find the lk-go executable to start jobs with: {e}; run lk-go from a file that still exists (it is read from /proc/self/exe: is /proc mounted?)"),
            )
        }
    };
    // Absolute but not resolved: a deploy that swaps a symlink (current ->
    // releases/v2/…) is seen as a new file, as a rename over the path is.
    let plugin_path = std::path::absolute(&args.plugin).unwrap_or(args.plugin.clone());
    let mut child_args = vec![plugin_path.clone().into_os_string()];
    child_args.extend(args.job.to_args());
    child_args.push("--log-format".into());
    child_args.push(value_name(args.log_format).into());
    let hooks = hook_timeouts(args.job.hook_timeout, args.job.hook_budget);
    let cascade = CascadeTimeouts::default();
    // The job's whole cascade, plus the verdict waits and a margin.
    let kill_after = args.job.shutdown_grace
        + hooks.budget
        + cascade.room_leave
        + cascade.tracks_close
        + crate::runner::VERDICT_RUN_WAIT
        + crate::runner::VERDICT_REPORT_DEADLINE
        + Duration::from_secs(5);
    let options = crate::worker::WorkerOptions {
        plugin: plugin_path.clone(),
        endpoint: crate::worker::agent_ws::AgentEndpoint {
            urls: args.server.url,
            api_key: args.server.api_key,
            api_secret: args.server.api_secret,
            max_retries: args.max_retries,
        },
        registration: crate::worker::agent_ws::Registration {
            agent_name: args.agent_name,
            job_type: match args.job_type {
                JobTypeArg::Room => livekit_protocol::JobType::JtRoom,
                JobTypeArg::Publisher => livekit_protocol::JobType::JtPublisher,
                JobTypeArg::Participant => livekit_protocol::JobType::JtParticipant,
            },
            version: format!("lk-go {}", env!("CARGO_PKG_VERSION")),
            permissions: args.permissions.to_permission(),
        },
        max_jobs: args.max_jobs,
        drain_timeout: args.drain_timeout,
        child: crate::worker::child::ChildSpec {
            exe,
            args: child_args,
            json_logs: args.log_format == LogFormat::Json,
        },
        kill_after,
        job_memory_warn: (args.job_memory_warn > 0).then(|| args.job_memory_warn * 1024 * 1024),
        job_memory_limit: (args.job_memory_limit > 0).then(|| args.job_memory_limit * 1024 * 1024),
    };
    let http = match args.http {
        None => None,
        Some(addr) => match std::net::TcpListener::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                return fail(
                    exit::USAGE,
                    format!("could not listen on --http {addr}: {e}; pick a free port (or stop what holds it)"),
                )
            }
        },
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = rt.block_on(async {
        let signals = match forward_signals() {
            Ok(rx) => rx,
            Err(e) => {
                return fail(
                    exit::INTERNAL,
                    format!("could not install signal handlers: {e}; check the limit on open files (ulimit -n)"),
                )
            }
        };
        crate::worker::run_worker(options, signals, http).await
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

/// LiveKit's rule for names that become part of a dispatch topic (agent
/// name, deployment): at most 64 bytes, no `_`, no whitespace
/// (livekit/protocol `agent/environment.go`, as livekit-server v1.13.5
/// checks a worker's registration).
pub fn validate_agent_name(name: &str) -> Result<(), String> {
    if name.len() > 64 {
        return Err(format!(
            "--agent-name (LIVEKIT_AGENT_NAME) is {} bytes; LiveKit allows at most 64: use a shorter name",
            name.len()
        ));
    }
    if name.contains('_') || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "--agent-name (LIVEKIT_AGENT_NAME) {name:?} contains '_', whitespace or a control character, which LiveKit refuses; use e.g. dashes"
        ));
    }
    Ok(())
}

/// Every SIGINT/SIGTERM/SIGHUP, forwarded to the worker (which drains on
/// the first and stops on the second).
fn forward_signals() -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<crate::worker::Signal>>
{
    use crate::worker::Signal;
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = int.recv() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
                _ = hup.recv() => Signal::Hangup,
            };
            if tx.send(s).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// First SIGINT/SIGTERM/SIGHUP: shut the job down (cascade). Second: exit
/// at once. SIGHUP (terminal closed, ssh dropped) is treated like SIGTERM,
/// with its own code (129), instead of killing the job with no cascade.
fn install_signal_handlers(ctx: JobContext) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let (reason, name) = tokio::select! {
            _ = int.recv() => (ShutdownReason::SignalSigint, "SIGINT"),
            _ = term.recv() => (ShutdownReason::SignalSigterm, "SIGTERM"),
            _ = hup.recv() => (ShutdownReason::SignalSighup, "SIGHUP"),
        };
        ctx.shutdown(reason, format!("received {name}"));
        let second = tokio::select! {
            _ = int.recv() => ("SIGINT", exit::SIGINT),
            _ = term.recv() => ("SIGTERM", exit::SIGTERM),
            _ = hup.recv() => ("SIGHUP", exit::SIGHUP),
        };
        crate::logsink::line_always(&format!(
            "lk-go: received {} during shutdown; exiting at once",
            second.0
        ));
        crate::logsink::flush(Duration::from_millis(200));
        exit(second.1);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_flags_reach_a_job_process_as_given() {
        let cli = Cli::try_parse_from([
            "lk-go",
            "worker",
            "./x.so",
            "--auto-subscribe",
            "audio",
            "--shutdown-grace",
            "1.5",
            "--hook-budget",
            "250ms",
            "--log-format",
            "json",
        ])
        .unwrap();
        let Command::Worker(args) = cli.command else {
            panic!("wrong command")
        };
        let mut argv: Vec<std::ffi::OsString> = vec![
            "lk-go".into(),
            "job".into(),
            "run-assigned".into(),
            "./x.so".into(),
        ];
        argv.extend(args.job.to_args());
        argv.push("--log-format".into());
        argv.push(value_name(args.log_format).into());
        let Command::Job(JobCommand::RunAssigned(child)) =
            Cli::try_parse_from(argv).unwrap().command
        else {
            panic!("wrong command")
        };
        assert_eq!(format!("{:?}", child.job), format!("{:?}", args.job));
        assert_eq!(child.log_format, LogFormat::Json);
    }

    #[test]
    fn printed_paths_paste_as_one_shell_word() {
        assert_eq!(shell_word("/tmp/hello-c_2/x.1"), "/tmp/hello-c_2/x.1");
        assert_eq!(shell_word("/tmp/my dir"), "'/tmp/my dir'");
        assert_eq!(shell_word("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn run_script_and_worker_describe_api_key_in_their_own_words() {
        use clap::CommandFactory;
        fn api_key_help(cli: &clap::Command, path: &[&str]) -> String {
            let mut cmd = cli;
            for name in path {
                cmd = cmd.find_subcommand(name).unwrap();
            }
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == "api_key")
                .unwrap();
            arg.get_help().map(|h| h.to_string()).unwrap_or_default()
        }
        let cli = Cli::command();
        let job = api_key_help(&cli, &["job", "run-script"]);
        assert!(job.contains("the job's access token"), "{job}");
        let worker = api_key_help(&cli, &["worker"]);
        assert!(worker.contains("the worker's"), "{worker}");
    }

    #[test]
    fn jwts_are_recognised() {
        assert!(looks_like_jwt(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_x"
        ));
        assert!(!looks_like_jwt("my-room"));
        assert!(!looks_like_jwt("a.b.c"));
    }

    #[test]
    fn hook_timeouts_bend_to_the_one_given() {
        let d = |s| Duration::from_secs(s);
        assert_eq!(
            hook_timeouts(None, None),
            HookTimeouts {
                per_hook: d(5),
                budget: d(10)
            }
        );
        assert_eq!(
            hook_timeouts(Some(d(30)), None),
            HookTimeouts {
                per_hook: d(30),
                budget: d(30)
            }
        );
        assert_eq!(
            hook_timeouts(None, Some(d(2))),
            HookTimeouts {
                per_hook: d(2),
                budget: d(2)
            }
        );
        assert_eq!(
            hook_timeouts(Some(d(30)), Some(d(10))).per_hook,
            d(30),
            "left to Job::new"
        );
    }

    #[test]
    fn clap_errors_keep_what_is_missing_on_one_line() {
        let missing = "error: the following required arguments were not provided:\n  <PLUGIN>\n  --room <ROOM>\n\nUsage: lk-go job run-script\n";
        assert_eq!(
            clap_error_line(missing),
            "the following required arguments were not provided: <PLUGIN> --room <ROOM> (see lk-go --help)"
        );
        let invalid = "error: invalid value 'bogus' for '--auto-subscribe <X>'\n  [possible values: all, none]\n\nFor more information, try '--help'.\n";
        assert!(clap_error_line(invalid).contains("[possible values: all, none]"));
    }

    #[test]
    fn error_lines_are_printable_and_bounded() {
        let l = one_printable_line("a\nb\x1b[31mc");
        assert!(!l.chars().any(char::is_control), "{l:?}");
        let long = "x".repeat(crate::logsink::MAX_ERROR_LINE * 3);
        assert!(one_printable_line(&long).len() < crate::logsink::MAX_ERROR_LINE + 10);
    }

    #[test]
    fn webrtc_targets_stay_quiet_unless_named() {
        let f = log_filter(Some("debug"));
        assert!(f.starts_with("debug,"));
        assert!(f.contains(",webrtc_ice=error") && f.contains(",rtc=error"));
        assert!(f.contains(",livekit_signaling=error"), "{f}");
        let f = log_filter(Some("trace,tungstenite=trace"));
        assert!(!f.contains("tungstenite=trace"), "{f}");
        assert!(
            f.contains(",tungstenite=debug") && f.contains(",tokio_tungstenite=debug"),
            "{f}"
        );
        // Capped, never raised: a quieter level stays quiet (the demo's
        // `warn,plugin=info` used to show tungstenite's debug lines).
        let f = log_filter(Some("warn,plugin=info"));
        assert!(
            f.contains(",tungstenite=warn") && !f.contains("tungstenite=debug"),
            "{f}"
        );
        let f = log_filter(Some("info,tungstenite=error"));
        assert!(f.contains(",tungstenite=error"), "{f}");
        assert!(log_filter(None).contains(",tungstenite=info"));
        let f = log_filter(Some("info,rtc_ice=debug"));
        assert!(!f.contains(",rtc_ice=error"), "{f}");
        assert!(f.contains(",rtc=error"), "{f}");
        assert!(log_filter(None).starts_with("info,"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
        // Used to panic in Duration::from_secs_f64 (exit 101).
        assert!(parse_duration("99999999999999999999999").is_err());
        assert!(parse_duration("1e30ms").is_err());
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("inf").is_err());
        assert!(parse_duration("365d").is_err());
        assert_eq!(
            parse_duration(&format!("{}", MAX_DURATION.as_secs())).unwrap(),
            MAX_DURATION
        );
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
        assert_eq!(args.server.api_secret, "hunter2-very-secret");
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
            assert_eq!(args.server.url, [DEFAULT_URL]);
        }
        assert_eq!(args.job.shutdown_grace, Duration::from_secs(10));
        assert_eq!(
            args.job.reconnect_window,
            crate::room::signal::DEFAULT_RECONNECT_WINDOW,
            "the flag's default is the documented constant"
        );
        assert_eq!(
            args.job.unreachable_timeout,
            crate::room::signal::DEFAULT_UNREACHABLE_TIMEOUT,
            "the flag's default is the documented constant"
        );
        assert_eq!(args.job.auto_subscribe, AutoSubscribeArg::All);
    }
}
