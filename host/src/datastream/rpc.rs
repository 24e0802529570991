//! RPC's vocabulary: LiveKit's built-in error codes and messages, the v2
//! attribute names, and the limits every official SDK shares (facts from
//! livekit-client 2.23 `rpc/utils.ts`, rust-sdks `room/rpc`, python-sdks
//! `rpc.py`; the codes and messages are identical in all of them).
//!
//! Owns: [`RpcFailure`] and the constants. Must not touch: state or
//! packets (the hub, `super::DataHub`, runs the state machines).

use std::time::Duration;

pub const APPLICATION_ERROR: u32 = 1500;
pub const CONNECTION_TIMEOUT: u32 = 1501;
pub const RESPONSE_TIMEOUT: u32 = 1502;
pub const RECIPIENT_DISCONNECTED: u32 = 1503;
pub const RESPONSE_PAYLOAD_TOO_LARGE: u32 = 1504;
pub const SEND_FAILED: u32 = 1505;
pub const UNSUPPORTED_METHOD: u32 = 1400;
pub const RECIPIENT_NOT_FOUND: u32 = 1401;
pub const REQUEST_PAYLOAD_TOO_LARGE: u32 = 1402;
pub const UNSUPPORTED_SERVER: u32 = 1403;
pub const UNSUPPORTED_VERSION: u32 = 1404;

/// The built-in message of a built-in code.
pub fn message(code: u32) -> &'static str {
    match code {
        APPLICATION_ERROR => "Application error in method handler",
        CONNECTION_TIMEOUT => "Connection timeout",
        RESPONSE_TIMEOUT => "Response timeout",
        RECIPIENT_DISCONNECTED => "Recipient disconnected",
        RESPONSE_PAYLOAD_TOO_LARGE => "Response payload too large",
        SEND_FAILED => "Failed to send",
        UNSUPPORTED_METHOD => "Method not supported at destination",
        RECIPIENT_NOT_FOUND => "Recipient not found",
        REQUEST_PAYLOAD_TOO_LARGE => "Request payload too large",
        UNSUPPORTED_SERVER => "RPC not supported by server",
        UNSUPPORTED_VERSION => "Unsupported RPC version",
        _ => "",
    }
}

/// Largest payload of a v1 request or response, bytes (15 KiB).
pub const MAX_V1_PAYLOAD: usize = 15 * 1024;
/// An error's message and data are cut to these, bytes.
pub const MAX_MESSAGE: usize = 256;
pub const MAX_DATA: usize = 15 * 1024;
/// How long a caller waits for the ack (livekit-client: 7 000 ms).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(7);
/// A caller's default response timeout (every SDK: 15 s).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// The request's `response_timeout_ms` is at least this (livekit-client
/// sends max(timeout, 8000)).
pub const MIN_ANNOUNCED_TIMEOUT_MS: u32 = 8_000;
/// Invocations waiting for `next_rpc` at most; more are answered 1500.
pub const MAX_WAITING_INVOCATIONS: usize = 1024;
/// Methods a job may register at most.
pub const MAX_METHODS: usize = 16_384;
/// Longest method name, bytes.
pub const MAX_METHOD_LEN: usize = 256;

/// Topics of RPC v2 (requests and responses as text streams).
pub const REQUEST_TOPIC: &str = "lk.rpc_request";
pub const RESPONSE_TOPIC: &str = "lk.rpc_response";
/// Attributes of a v2 request stream, and of its response.
pub const ATTR_REQUEST_ID: &str = "lk.rpc_request_id";
pub const ATTR_METHOD: &str = "lk.rpc_request_method";
pub const ATTR_TIMEOUT_MS: &str = "lk.rpc_request_response_timeout_ms";
pub const ATTR_VERSION: &str = "lk.rpc_request_version";

/// An RPC that ended in an error: LiveKit's `RpcError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcFailure {
    pub code: u32,
    pub message: String,
    pub data: String,
}

impl RpcFailure {
    /// A built-in error with its built-in message.
    pub fn builtin(code: u32) -> RpcFailure {
        RpcFailure {
            code,
            message: message(code).to_string(),
            data: String::new(),
        }
    }

    /// A built-in error with detail in its data (e.g. why sending failed).
    pub fn builtin_with(code: u32, data: impl Into<String>) -> RpcFailure {
        RpcFailure {
            data: data.into(),
            ..RpcFailure::builtin(code)
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut n = max;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    s[..n].to_string()
}
