//! The safe Rust side of ABI 1.4's RPC: methods other participants call
//! on the agent, and calls the agent makes.
//!
//! Owns: [`RpcInvocation`], [`RpcError`] (LiveKit's error: code, message,
//! data; the built-in codes as constants), [`JobContext::register_rpc`]
//! (a handler closure per method, run on a pool of [`RPC_WORKERS`] plugin
//! threads fed by one dispatcher thread, so a slow handler holds up
//! neither the room nor, up to the pool's size, the other methods) and
//! [`JobContext::perform_rpc`]. Names follow the official SDKs
//! (`register_rpc_method`, `perform_rpc`, `RpcInvocationData`).
//!
//! A handler's panic is caught and answered 1500 (as the SDKs answer a
//! handler's exception). Must not touch: the host's implementation.

use crate::abi::*;
use crate::media::{check, lk, millis, MediaError};
use crate::sdk::JobContext;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Handler threads (invocations beyond this many in flight wait in the
/// host, up to its limit, within their callers' timeouts).
pub const RPC_WORKERS: usize = 8;

/// A call of one of the job's methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcInvocation {
    pub request_id: String,
    pub caller_identity: String,
    pub method: String,
    pub payload: String,
    /// How long the caller waits for the answer.
    pub response_timeout: Duration,
}

/// An RPC error (LiveKit's `RpcError`): what a handler answers with, and
/// what a call can end in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
    pub data: String,
}

impl RpcError {
    pub const APPLICATION_ERROR: i32 = LK_RPC_APPLICATION_ERROR;
    pub const CONNECTION_TIMEOUT: i32 = LK_RPC_CONNECTION_TIMEOUT;
    pub const RESPONSE_TIMEOUT: i32 = LK_RPC_RESPONSE_TIMEOUT;
    pub const RECIPIENT_DISCONNECTED: i32 = LK_RPC_RECIPIENT_DISCONNECTED;
    pub const RESPONSE_PAYLOAD_TOO_LARGE: i32 = LK_RPC_RESPONSE_PAYLOAD_TOO_LARGE;
    pub const SEND_FAILED: i32 = LK_RPC_SEND_FAILED;
    pub const UNSUPPORTED_METHOD: i32 = LK_RPC_UNSUPPORTED_METHOD;
    pub const RECIPIENT_NOT_FOUND: i32 = LK_RPC_RECIPIENT_NOT_FOUND;
    pub const REQUEST_PAYLOAD_TOO_LARGE: i32 = LK_RPC_REQUEST_PAYLOAD_TOO_LARGE;
    pub const UNSUPPORTED_SERVER: i32 = LK_RPC_UNSUPPORTED_SERVER;
    pub const UNSUPPORTED_VERSION: i32 = LK_RPC_UNSUPPORTED_VERSION;

    /// An error of the application's own (codes 1001-1999 are LiveKit's).
    pub fn new(code: i32, message: &str) -> RpcError {
        RpcError {
            code,
            message: message.to_string(),
            data: String::new(),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RPC error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

/// Why [`JobContext::perform_rpc`] did not get an answer of the callee's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The call ended in an RPC error (the callee's, or a built-in one:
    /// 1501 no ack, 1502 no response, 1503 the callee left, ...).
    Rpc(RpcError),
    /// The host could not make the call (shutting down, not connected,
    /// too old).
    Host(MediaError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rpc(e) => e.fmt(f),
            CallError::Host(e) => write!(f, "RPC not made: {e}"),
        }
    }
}

impl std::error::Error for CallError {}

/// The invocation as the worker thread gets it.
struct Sendable(LkRpcInvocation);
// SAFETY: the invocation's strings are host-owned and callable from any thread.
unsafe impl Send for Sendable {}

type Handler = Arc<dyn Fn(&RpcInvocation) -> Result<String, RpcError> + Send + Sync>;

struct Dispatch {
    handlers: Mutex<HashMap<String, Handler>>,
    work: crossbeam_channel::Sender<(Sendable, Handler)>,
}

static DISPATCH: OnceLock<Dispatch> = OnceLock::new();

fn text(s: LkStr) -> String {
    // SAFETY: host-owned until rpc_respond / rpc_result_release.
    unsafe { s.to_string_lossy() }
}

fn dispatch(ctx: JobContext) -> &'static Dispatch {
    DISPATCH.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded::<(Sendable, Handler)>(RPC_WORKERS);
        let rx = Arc::new(rx);
        for _ in 0..RPC_WORKERS {
            let rx = rx.clone();
            std::thread::spawn(move || {
                while let Ok((inv, handler)) = rx.recv() {
                    answer(ctx, inv, &handler);
                }
            });
        }
        std::thread::spawn(move || loop {
            let mut inv = LkRpcInvocation::zeroed();
            let rc = unsafe { (ctx.api().next_rpc)(ctx.raw_job(), 200, &mut inv) };
            match rc {
                LK_OK => {
                    let method = text(inv.method);
                    let handler = DISPATCH
                        .get()
                        .and_then(|d| d.handlers.lock().ok()?.get(&method).cloned());
                    match handler {
                        Some(h) => {
                            let work = &DISPATCH.get().expect("initialised").work;
                            let _ = work.send((Sendable(inv), h));
                        }
                        None => unsafe {
                            // Unregistered between the request and now.
                            let msg = "Method not supported at destination";
                            (ctx.api().rpc_respond)(
                                ctx.raw_job(),
                                &mut inv,
                                LK_RPC_UNSUPPORTED_METHOD,
                                lk(msg),
                                LkStr::EMPTY,
                            );
                        },
                    }
                }
                LK_TIMEOUT => {}
                _ => return, // shutting down
            }
        });
        Dispatch {
            handlers: Mutex::new(HashMap::new()),
            work: tx,
        }
    })
}

fn answer(ctx: JobContext, inv: Sendable, handler: &Handler) {
    let mut raw = inv.0;
    let invocation = RpcInvocation {
        request_id: text(raw.request_id),
        caller_identity: text(raw.caller_identity),
        method: text(raw.method),
        payload: text(raw.payload),
        response_timeout: Duration::from_millis(raw.response_timeout_ms as u64),
    };
    let result = catch_unwind(AssertUnwindSafe(|| handler(&invocation))).unwrap_or_else(|_| {
        ctx.error(&format!("RPC handler for {} panicked", invocation.method));
        Err(RpcError::new(
            RpcError::APPLICATION_ERROR,
            "Application error in method handler",
        ))
    });
    let (code, payload, data) = match &result {
        Ok(p) => (0, p.as_str(), ""),
        Err(e) => (e.code, e.message.as_str(), e.data.as_str()),
    };
    let rc =
        unsafe { (ctx.api().rpc_respond)(ctx.raw_job(), &mut raw, code, lk(payload), lk(data)) };
    if rc != LK_OK && rc != LK_SHUTTING_DOWN {
        ctx.warn(&format!(
            "RPC {} from {}: the answer was not sent ({:?})",
            invocation.method,
            invocation.caller_identity,
            MediaError::from_code(rc)
        ));
    }
}

impl JobContext {
    /// Registers `handler` for `method`: other participants'
    /// `performRpc(method)` calls run it (on one of [`RPC_WORKERS`] plugin
    /// threads) with the caller's identity and payload; its `Ok` is the
    /// response, its `Err` the RPC error the caller gets. Registering a
    /// method again replaces its handler.
    pub fn register_rpc<F>(&self, method: &str, handler: F) -> Result<(), MediaError>
    where
        F: Fn(&RpcInvocation) -> Result<String, RpcError> + Send + Sync + 'static,
    {
        if !self.has_streams() {
            return Err(MediaError::HostTooOld);
        }
        let d = dispatch(*self);
        d.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(method.to_string(), Arc::new(handler));
        check(unsafe { (self.api().rpc_register)(self.raw_job(), lk(method)) })
    }

    /// Calls for `method` are answered 1400 from now on.
    pub fn unregister_rpc(&self, method: &str) -> Result<(), MediaError> {
        if !self.has_streams() {
            return Err(MediaError::HostTooOld);
        }
        if let Some(d) = DISPATCH.get() {
            d.handlers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(method);
        }
        check(unsafe { (self.api().rpc_unregister)(self.raw_job(), lk(method)) })
    }

    /// Calls `method` on participant `destination` and waits for the answer
    /// (the ack within 7 s, then the response within `timeout`; zero: 15 s).
    pub fn perform_rpc(
        &self,
        destination: &str,
        method: &str,
        payload: &str,
        timeout: Duration,
    ) -> Result<String, CallError> {
        if !self.has_streams() {
            return Err(CallError::Host(MediaError::HostTooOld));
        }
        let mut r = LkRpcResult::zeroed();
        let rc = unsafe {
            (self.api().perform_rpc)(
                self.raw_job(),
                lk(destination),
                lk(method),
                lk(payload),
                millis(timeout),
                &mut r,
            )
        };
        check(rc).map_err(CallError::Host)?;
        let out = if r.error_code == 0 {
            Ok(text(r.payload))
        } else {
            Err(CallError::Rpc(RpcError {
                code: r.error_code,
                message: text(r.payload),
                data: text(r.error_data),
            }))
        };
        unsafe { (self.api().rpc_result_release)(self.raw_job(), &mut r) };
        out
    }
}
