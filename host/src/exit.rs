//! Process exit codes: the one table docs/reference/exit-codes.md documents.
//!
//! Owns: the numbers, and the mapping from host failures and shutdown reasons
//! to them. sysexits(3) style for the host's own failures; the plugin's code
//! is mirrored when the plugin ended the job.

use crate::job::{JobConfigError, ShutdownReason};
use crate::plugin::LoadError;
use crate::room::ConnectError;

/// The job ran; the plugin returned 0.
pub const OK: i32 = 0;
/// The plugin returned a value outside 0–255 (other than `LK_RUN_PANICKED`).
pub const PLUGIN_CODE_OUT_OF_RANGE: i32 = 1;
/// Command line or job configuration is invalid (EX_USAGE).
pub const USAGE: i32 = 64;
/// The plugin file is not a loadable shared library (EX_DATAERR).
pub const NOT_SHARED_LIBRARY: i32 = 65;
/// The plugin file does not exist (EX_NOINPUT).
pub const PLUGIN_NOT_FOUND: i32 = 66;
/// The LiveKit server is unreachable, or went away mid-job (EX_UNAVAILABLE).
pub const SERVER_UNAVAILABLE: i32 = 69;
/// The plugin panicked (EX_SOFTWARE).
pub const PLUGIN_PANICKED: i32 = 70;
/// The host itself failed (thread or runtime creation) (EX_OSERR).
pub const INTERNAL: i32 = 71;
/// The media connection (ICE/DTLS) could not be established within
/// [`crate::room::rtc::MEDIA_CONNECT_TIMEOUT`] of joining, or failed
/// mid-job (EX_IOERR).
pub const MEDIA_FAILED: i32 = 74;
/// The plugin did not return within the shutdown grace period (EX_TEMPFAIL).
pub const PLUGIN_GRACE_EXCEEDED: i32 = 75;
/// The server answered with an error other than an auth refusal (EX_PROTOCOL).
pub const SERVER_ERROR: i32 = 76;
/// The server refused the credentials: wrong key/secret, expired token (EX_NOPERM).
pub const AUTH_REFUSED: i32 = 77;
/// Another participant joined with the job's identity; the server dropped
/// the job's session (EX_CONFIG: give each job its own identity).
pub const DUPLICATE_IDENTITY: i32 = 78;
/// The job would have exited 0, but a shutdown hook panicked, overran its
/// deadline, was abandoned or was never run (the teardown is incomplete).
pub const HOOKS_INCOMPLETE: i32 = 79;
/// The plugin has no `lk_plugin_entry` symbol.
pub const MISSING_ENTRY: i32 = 80;
/// The descriptor's magic is wrong.
pub const BAD_MAGIC: i32 = 81;
/// The plugin's ABI major differs from the host's.
pub const ABI_MAJOR_MISMATCH: i32 = 82;
/// The plugin's ABI minor is newer than the host's.
pub const PLUGIN_TOO_NEW: i32 = 83;
/// The descriptor is invalid (NULL descriptor, NULL `run`, empty name).
pub const INVALID_DESCRIPTOR: i32 = 84;
/// The job's memory went over the worker's `--job-memory-limit`; the job
/// was shut down through its cascade (or killed when it did not end).
pub const MEMORY_LIMIT: i32 = 85;
/// The job ran past `--max-duration` (as `timeout(1)`).
pub const DEADLINE_EXCEEDED: i32 = 124;
/// Shut down by SIGHUP (128 + 1).
pub const SIGHUP: i32 = 129;
/// Shut down by SIGINT (128 + 2).
pub const SIGINT: i32 = 130;
/// Shut down by SIGTERM (128 + 15).
pub const SIGTERM: i32 = 143;

pub fn for_load_error(e: &LoadError) -> i32 {
    match e {
        LoadError::NotFound { .. } => PLUGIN_NOT_FOUND,
        LoadError::NotSharedLibrary { .. } => NOT_SHARED_LIBRARY,
        LoadError::MissingEntry { .. } => MISSING_ENTRY,
        LoadError::BadMagic { .. } => BAD_MAGIC,
        LoadError::AbiMajorMismatch { .. } => ABI_MAJOR_MISMATCH,
        LoadError::PluginTooNew { .. } => PLUGIN_TOO_NEW,
        LoadError::InvalidDescriptor { .. } => INVALID_DESCRIPTOR,
    }
}

pub fn for_connect_error(e: &ConnectError) -> i32 {
    match e {
        ConnectError::InvalidUrl { .. } | ConnectError::Token(_) => USAGE,
        ConnectError::Unreachable { .. } => SERVER_UNAVAILABLE,
        ConnectError::Unauthorized { .. } => AUTH_REFUSED,
        ConnectError::Server { .. } => SERVER_ERROR,
        ConnectError::MediaFailed { .. } => MEDIA_FAILED,
        ConnectError::DuplicateIdentity { .. } => DUPLICATE_IDENTITY,
        ConnectError::TokenMismatch { .. } => USAGE,
    }
}

pub fn for_config_error(_: &JobConfigError) -> i32 {
    USAGE
}

/// The process code for a plugin's `run` value (not `LK_RUN_PANICKED`).
pub fn mirror_plugin_code(code: i32) -> i32 {
    if (0..=255).contains(&code) {
        code
    } else {
        PLUGIN_CODE_OUT_OF_RANGE
    }
}

/// The exit code of a job whose plugin returned `plugin_code` within the
/// grace period (`None`: it did not), after shutting down for `reason`.
///
/// The plugin's code is mirrored when the plugin or the room's natural end
/// (deleted, closed, participant removed) ended the job; when something
/// outside did (signal, server loss, media failure, duplicate identity,
/// deadline), the code says that instead, so a supervisor can tell the cases
/// apart. Hook failures are applied on top by [`with_hooks`].
pub fn for_job(reason: ShutdownReason, plugin_code: Option<i32>) -> i32 {
    let Some(code) = plugin_code else {
        return PLUGIN_GRACE_EXCEEDED;
    };
    if code == lk_plugin_api::abi::LK_RUN_PANICKED {
        return PLUGIN_PANICKED;
    }
    match reason {
        ShutdownReason::PluginPanicked => PLUGIN_PANICKED,
        ShutdownReason::SignalSigint => SIGINT,
        ShutdownReason::SignalSigterm => SIGTERM,
        ShutdownReason::SignalSighup => SIGHUP,
        ShutdownReason::ServerUnreachable => SERVER_UNAVAILABLE,
        ShutdownReason::MediaFailed => MEDIA_FAILED,
        ShutdownReason::DuplicateIdentity => DUPLICATE_IDENTITY,
        ShutdownReason::ServerError => SERVER_ERROR,
        ShutdownReason::DeadlineExceeded => DEADLINE_EXCEEDED,
        // The worker's own stop is a SIGTERM as far as the job is concerned.
        ShutdownReason::WorkerStopping | ShutdownReason::WorkerLost => SIGTERM,
        ShutdownReason::MemoryLimit => MEMORY_LIMIT,
        ShutdownReason::PluginReturned
        | ShutdownReason::RequestedByPlugin
        | ShutdownReason::RoomDisconnected
        | ShutdownReason::ParticipantLeft
        | ShutdownReason::JobTerminated => mirror_plugin_code(code),
    }
}

/// A job that would exit 0 exits [`HOOKS_INCOMPLETE`] when its teardown
/// was not complete; any other code already says the job failed and wins.
pub fn with_hooks(code: i32, hooks_clean: bool) -> i32 {
    if code == OK && !hooks_clean {
        HOOKS_INCOMPLETE
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_codes_are_mirrored_or_clamped() {
        assert_eq!(for_job(ShutdownReason::PluginReturned, Some(0)), 0);
        assert_eq!(for_job(ShutdownReason::PluginReturned, Some(42)), 42);
        assert_eq!(for_job(ShutdownReason::PluginReturned, Some(255)), 255);
        assert_eq!(for_job(ShutdownReason::PluginReturned, Some(256)), 1);
        assert_eq!(for_job(ShutdownReason::PluginReturned, Some(-1)), 1);
        assert_eq!(for_job(ShutdownReason::RequestedByPlugin, Some(3)), 3);
        assert_eq!(for_job(ShutdownReason::RoomDisconnected, Some(0)), 0);
    }

    #[test]
    fn external_reasons_win_over_the_plugin_code() {
        assert_eq!(for_job(ShutdownReason::SignalSigint, Some(0)), 130);
        assert_eq!(for_job(ShutdownReason::SignalSigterm, Some(0)), 143);
        assert_eq!(for_job(ShutdownReason::ServerUnreachable, Some(0)), 69);
        assert_eq!(for_job(ShutdownReason::DeadlineExceeded, Some(0)), 124);
        assert_eq!(for_job(ShutdownReason::SignalSighup, Some(0)), 129);
        assert_eq!(for_job(ShutdownReason::MediaFailed, Some(0)), 74);
        assert_eq!(for_job(ShutdownReason::DuplicateIdentity, Some(0)), 78);
        assert_eq!(for_job(ShutdownReason::ServerError, Some(0)), 76);
        assert_eq!(for_job(ShutdownReason::WorkerStopping, Some(0)), 143);
        assert_eq!(for_job(ShutdownReason::WorkerLost, Some(0)), 143);
        assert_eq!(for_job(ShutdownReason::MemoryLimit, Some(0)), 85);
        assert_eq!(for_job(ShutdownReason::ParticipantLeft, Some(4)), 4);
        assert_eq!(for_job(ShutdownReason::JobTerminated, Some(0)), 0);
        assert_eq!(with_hooks(0, false), 79);
        assert_eq!(with_hooks(0, true), 0);
        assert_eq!(with_hooks(3, false), 3);
        assert_eq!(for_job(ShutdownReason::SignalSigint, None), 75);
        assert_eq!(
            for_job(
                ShutdownReason::SignalSigint,
                Some(lk_plugin_api::abi::LK_RUN_PANICKED)
            ),
            70
        );
    }
}
