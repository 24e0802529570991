//! The host's implementation of the ABI 1.4 functions for data streams,
//! RPC and transcriptions, over the room's [`crate::datastream::DataHub`].
//!
//! Owns: the `api_*` functions (the table is [`super::table`]) and the
//! views they hand out: a reader's header strings and error, a writer's
//! stream id, an invocation's and a result's strings. Reader and writer
//! handles are ids the hub gives out, registered here with their job
//! ([`OWNERS`]), so a call on a closed or unknown handle answers
//! `LK_ERR_CLOSED` and nothing is leaked once it is closed. Every function
//! tolerates NULL and out-of-range arguments (`LK_ERR_INVALID`, with a log
//! line saying which), any thread, and never unwinds into the plugin.
//!
//! Must not touch: packets or protocol rules (the hub's), WebRTC. Room
//! work is spawned on the job's runtime and awaited with the caller's
//! deadline (`wait::run_on_room`).

use super::handle::{
    bad_str, deadline_after, handle, plugin_text, read_strs, warn_invalid, JobHandle,
};
use super::wait::{self, run_on_room, Ran};
use crate::datastream::incoming::{ReadEnd, StreamKind};
use crate::datastream::rpc::{self, RpcFailure};
use crate::datastream::{DataHub, HubError};
use lk_plugin_api::abi::*;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest topic, name, MIME type or identity read, bytes.
const MAX_SHORT: usize = 256;
/// Longest attribute value, error message or payload read in one string,
/// bytes (RPC v2 payloads may be large; streams are written in pieces).
const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// How long a respond or a release waits for the room, at most.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// What each open reader or writer id belongs to, with its views.
struct Owner {
    job: &'static JobHandle,
    /// The writer's stream id, or the reader's last error, for the LkStr
    /// handed out.
    text: Option<String>,
}

static OWNERS: Mutex<Option<HashMap<u64, Owner>>> = Mutex::new(None);

fn owners() -> std::sync::MutexGuard<'static, Option<HashMap<u64, Owner>>> {
    OWNERS.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(id: u64, job: &'static JobHandle, text: Option<String>) {
    owners()
        .get_or_insert_with(HashMap::new)
        .insert(id, Owner { job, text });
}

fn owner_of(id: u64) -> Option<&'static JobHandle> {
    owners().as_ref()?.get(&id).map(|o| o.job)
}

fn forget(id: u64) {
    if let Some(map) = owners().as_mut() {
        map.remove(&id);
    }
}

fn data_hub(job: &JobHandle) -> Option<Arc<DataHub>> {
    job.media.access.as_ref().map(|a| a.data.clone())
}

fn hub_code(job: &JobHandle, call: &str, e: HubError) -> i32 {
    match e {
        HubError::NotConnected => LK_ERR_NOT_CONNECTED,
        HubError::Timeout => LK_TIMEOUT,
        HubError::Stopped => LK_SHUTTING_DOWN,
        HubError::Closed => LK_ERR_CLOSED,
        HubError::Invalid(why) => warn_invalid(job, call, &why),
        HubError::TooLarge(why) => {
            tracing::warn!(target: "plugin", plugin = %job.plugin_name, "{call}: {why}; returning LK_ERR_TOO_LARGE");
            LK_ERR_TOO_LARGE
        }
        HubError::Send(why) => {
            tracing::warn!(target: "plugin", plugin = %job.plugin_name, "{call}: not sent: {why}");
            LK_ERR_NOT_CONNECTED
        }
    }
}

/// Runs hub work on the room and maps the outcome.
fn on_room<T: Send + 'static>(
    job: &'static JobHandle,
    call: &str,
    timeout_ms: u32,
    fut: impl std::future::Future<Output = Result<T, HubError>> + Send + 'static,
    unclaimed: impl FnOnce(Result<T, HubError>) + Send + 'static,
) -> Result<T, i32> {
    match run_on_room(
        job.media.rt.as_ref(),
        &job.ctx,
        deadline_after(timeout_ms),
        fut,
        unclaimed,
    ) {
        Ran::Done(Ok(v)) => Ok(v),
        Ran::Done(Err(e)) => Err(hub_code(job, call, e)),
        Ran::Timeout => Err(LK_TIMEOUT),
        Ran::ShuttingDown => Err(LK_SHUTTING_DOWN),
    }
}

/// # Safety
/// `job` is NULL or the job pointer given to `run`.
unsafe fn job_of(job: *const LkJob) -> Option<&'static JobHandle> {
    handle(job).map(|h| &*(h as *const JobHandle))
}

/// # Safety
/// `keys` and `values` are NULL or point at `n` readable `LkStr`s.
unsafe fn read_pairs(
    job: &JobHandle,
    call: &str,
    keys: *const LkStr,
    values: *const LkStr,
    n: usize,
) -> Result<Vec<(String, String)>, i32> {
    if n > super::handle::MAX_ITEMS || (n > 0 && (keys.is_null() || values.is_null())) {
        return Err(warn_invalid(
            job,
            call,
            "attribute keys or values NULL with a count, or over 1024",
        ));
    }
    if n > 0
        && (std::slice::from_raw_parts(keys, n).iter().any(bad_str)
            || std::slice::from_raw_parts(values, n).iter().any(bad_str))
    {
        return Err(warn_invalid(
            job,
            call,
            "an attribute key or value is NULL with a length",
        ));
    }
    let keys = read_strs(keys, n);
    let values: Vec<String> = if n == 0 {
        Vec::new()
    } else {
        std::slice::from_raw_parts(values, n)
            .iter()
            .map(|s| plugin_text(s.ptr, s.len, MAX_PAYLOAD).0)
            .collect()
    };
    if keys.iter().any(String::is_empty) {
        return Err(warn_invalid(job, call, "an attribute key is empty"));
    }
    Ok(keys.into_iter().zip(values).collect())
}

// ---- incoming streams ---------------------------------------------------

pub(crate) unsafe extern "C" fn api_stream_accept_topic(job: *const LkJob, topic: LkStr) -> i32 {
    let Some(h) = job_of(job) else {
        return LK_ERR_INVALID;
    };
    if bad_str(&topic) || (topic.len > MAX_SHORT && topic.len <= LK_MAX_BELIEVED_LEN) {
        return warn_invalid(
            h,
            "stream_accept_topic",
            "topic is NULL with a length, or over 256 bytes",
        );
    }
    let (topic, cut) = plugin_text(topic.ptr, topic.len, MAX_SHORT);
    if cut > 0 {
        return warn_invalid(h, "stream_accept_topic", "topic is over 256 bytes");
    }
    if let Some(hub) = data_hub(h) {
        hub.accept_topic(&topic);
    }
    tracing::info!(target: "plugin", plugin = %h.plugin_name, topic = %topic, "accepting data streams");
    LK_OK
}

pub(crate) unsafe extern "C" fn api_next_stream(
    job: *const LkJob,
    timeout_ms: u32,
    out: *mut *mut LkStreamReader,
    missed: *mut u64,
) -> i32 {
    let (Some(h), false) = (job_of(job), out.is_null()) else {
        return LK_ERR_INVALID;
    };
    *out = std::ptr::null_mut();
    let deadline = deadline_after(timeout_ms);
    let Some(hub) = data_hub(h) else {
        // Never connected: nothing will arrive.
        return match wait::until(deadline, h.ctx.cancelled()) {
            Some(()) => LK_SHUTTING_DOWN,
            None => LK_TIMEOUT,
        };
    };
    let stop = || h.ctx.is_shutting_down();
    match hub.next_stream(deadline, &stop) {
        Ok((0, n)) => {
            if let Some(m) = missed.as_mut() {
                *m = n;
            }
            LK_MISSED
        }
        Ok((id, _)) => {
            register(id, h, None);
            *out = id as usize as *mut LkStreamReader;
            LK_OK
        }
        Err(HubError::Stopped) => LK_SHUTTING_DOWN,
        Err(_) => LK_TIMEOUT,
    }
}

/// A reader's header as handed to the plugin: the strings the
/// `lk_stream_info` points into, kept until the reader is closed.
struct InfoView {
    stream_id: String,
    topic: String,
    mime_type: String,
    sender_identity: String,
    name: String,
    attributes: Vec<(String, String)>,
    keys: Vec<LkStr>,
    values: Vec<LkStr>,
}

// SAFETY: the LkStr pointers point into this view's own Strings, which are
// never mutated after the view is built.
unsafe impl Send for InfoView {}

pub(crate) unsafe extern "C" fn api_stream_reader_info(
    reader: *mut LkStreamReader,
    info: *mut LkStreamInfo,
) -> i32 {
    let id = reader as usize as u64;
    let Some(h) = owner_of(id) else {
        return LK_ERR_CLOSED;
    };
    let Some(info) = info.as_mut() else {
        return warn_invalid(h, "stream_reader_info", "info is NULL");
    };
    if (info.struct_size as usize) < std::mem::size_of::<LkStreamInfo>() {
        return warn_invalid(
            h,
            "stream_reader_info",
            "info->struct_size is smaller than sizeof(lk_stream_info); set it first",
        );
    }
    let Some(hub) = data_hub(h) else {
        return LK_ERR_CLOSED;
    };
    let Some(stream) = hub.reader(id) else {
        return LK_ERR_CLOSED;
    };
    let hd = &stream.header;
    let mut view = Box::new(InfoView {
        stream_id: hd.stream_id.clone(),
        topic: hd.topic.clone(),
        mime_type: hd.mime_type.clone(),
        sender_identity: hd.sender_identity.clone(),
        name: hd.name.clone(),
        attributes: stream.attributes(),
        keys: Vec::new(),
        values: Vec::new(),
    });
    let (keys, values): (Vec<LkStr>, Vec<LkStr>) = view
        .attributes
        .iter()
        .map(|(k, v)| (LkStr::borrow(k), LkStr::borrow(v)))
        .unzip();
    view.keys = keys;
    view.values = values;
    *info = LkStreamInfo {
        struct_size: std::mem::size_of::<LkStreamInfo>() as u32,
        kind: match hd.kind {
            StreamKind::Text => LK_STREAM_TEXT,
            StreamKind::Bytes => LK_STREAM_BYTES,
        },
        flags: if hd.total_length.is_some() {
            LK_STREAM_HAS_TOTAL_LENGTH
        } else {
            0
        },
        n_attributes: view.attributes.len() as u32,
        stream_id: LkStr::borrow(&view.stream_id),
        topic: LkStr::borrow(&view.topic),
        mime_type: LkStr::borrow(&view.mime_type),
        sender_identity: LkStr::borrow(&view.sender_identity),
        name: LkStr::borrow(&view.name),
        total_length: hd.total_length.unwrap_or(0),
        timestamp_ms: hd.timestamp_ms,
        attribute_keys: if view.keys.is_empty() {
            std::ptr::null()
        } else {
            view.keys.as_ptr()
        },
        attribute_values: if view.values.is_empty() {
            std::ptr::null()
        } else {
            view.values.as_ptr()
        },
    };
    if !hub.keep_for_reader(id, view) {
        *info = LkStreamInfo::zeroed();
        return LK_ERR_CLOSED;
    }
    LK_OK
}

pub(crate) unsafe extern "C" fn api_stream_read(
    reader: *mut LkStreamReader,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    timeout_ms: u32,
) -> i32 {
    let id = reader as usize as u64;
    let Some(h) = owner_of(id) else {
        return LK_ERR_CLOSED;
    };
    if len.is_null() || buf.is_null() || cap == 0 {
        return warn_invalid(h, "stream_read", "buf or len is NULL, or cap is 0");
    }
    *len = 0;
    let Some(hub) = data_hub(h) else {
        return LK_ERR_CLOSED;
    };
    let stop = || h.ctx.is_shutting_down();
    match hub.read(id, cap, deadline_after(timeout_ms), &stop) {
        Ok(bytes) => {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
            *len = bytes.len();
            LK_OK
        }
        Err(ReadEnd::Timeout) => LK_TIMEOUT,
        Err(ReadEnd::Ended) => LK_ENDED,
        Err(ReadEnd::Aborted(_)) => LK_ERR_ABORTED,
        Err(ReadEnd::Closed) => LK_ERR_CLOSED,
        Err(ReadEnd::Stopped) => LK_SHUTTING_DOWN,
    }
}

pub(crate) unsafe extern "C" fn api_stream_reader_error(reader: *mut LkStreamReader) -> LkStr {
    let id = reader as usize as u64;
    let Some(h) = owner_of(id) else {
        return LkStr::EMPTY;
    };
    let why = match data_hub(h).and_then(|hub| hub.reader(id)).map(|s| s.end()) {
        Some(crate::datastream::incoming::StreamEnd::Aborted(why)) => why,
        _ => return LkStr::EMPTY,
    };
    let mut owners = owners();
    let Some(owner) = owners.as_mut().and_then(|m| m.get_mut(&id)) else {
        return LkStr::EMPTY;
    };
    // Set once: a stream is aborted at most once, so the text never changes.
    let text = owner.text.get_or_insert(why);
    LkStr::borrow(text)
}

pub(crate) unsafe extern "C" fn api_stream_reader_close(reader: *mut LkStreamReader) {
    let id = reader as usize as u64;
    if let Some(h) = owner_of(id) {
        if let Some(hub) = data_hub(h) {
            hub.close_reader(id);
        }
        forget(id);
    }
}

// ---- outgoing streams ---------------------------------------------------

pub(crate) unsafe extern "C" fn api_stream_open(
    job: *const LkJob,
    opts: *const LkStreamOptions,
    timeout_ms: u32,
    out: *mut *mut LkStreamWriter,
    stream_id: *mut LkStr,
) -> i32 {
    let Some(h) = job_of(job) else {
        return LK_ERR_INVALID;
    };
    if out.is_null() {
        return warn_invalid(h, "stream_open", "out is NULL");
    }
    *out = std::ptr::null_mut();
    if let Some(sid) = stream_id.as_mut() {
        *sid = LkStr::EMPTY;
    }
    let Some(o) = opts.as_ref() else {
        return warn_invalid(h, "stream_open", "opts is NULL");
    };
    if (o.struct_size as usize) < std::mem::size_of::<LkStreamOptions>() {
        return warn_invalid(
            h,
            "stream_open",
            "opts->struct_size is smaller than sizeof(lk_stream_options); set it first",
        );
    }
    let kind = match o.kind {
        LK_STREAM_TEXT => StreamKind::Text,
        LK_STREAM_BYTES => StreamKind::Bytes,
        other => {
            return warn_invalid(
                h,
                "stream_open",
                &format!("kind {other} is not LK_STREAM_TEXT or LK_STREAM_BYTES"),
            )
        }
    };
    for (what, s) in [
        ("topic", &o.topic),
        ("mime_type", &o.mime_type),
        ("name", &o.name),
        ("sender_identity", &o.sender_identity),
        ("stream_id", &o.stream_id),
    ] {
        if bad_str(s) {
            return warn_invalid(h, "stream_open", &format!("{what} is NULL with a length"));
        }
    }
    let text = |s: &LkStr| plugin_text(s.ptr, s.len, MAX_SHORT);
    let (topic, topic_cut) = text(&o.topic);
    if topic.is_empty() || topic_cut > 0 {
        return warn_invalid(h, "stream_open", "topic is empty or over 256 bytes");
    }
    let sender = text(&o.sender_identity).0;
    if kind == StreamKind::Bytes && !sender.is_empty() {
        return warn_invalid(
            h,
            "stream_open",
            "sender_identity is for text streams only (the server ignores it on byte streams)",
        );
    }
    let attributes = match read_pairs(
        h,
        "stream_open",
        o.attribute_keys,
        o.attribute_values,
        o.n_attributes as usize,
    ) {
        Ok(a) => a,
        Err(rc) => return rc,
    };
    if o.n_destinations > super::handle::MAX_ITEMS
        || (o.n_destinations > 0 && o.destination_identities.is_null())
    {
        return warn_invalid(
            h,
            "stream_open",
            "destination_identities is NULL with a count, or over 1024",
        );
    }
    let destinations = read_strs(o.destination_identities, o.n_destinations);
    if h.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    let Some(hub) = data_hub(h) else {
        return LK_ERR_NOT_CONNECTED;
    };
    let id_wanted = text(&o.stream_id).0;
    let total = (o.flags & LK_STREAM_HAS_TOTAL_LENGTH != 0).then_some(o.total_length);
    let (mime, name) = (text(&o.mime_type).0, text(&o.name).0);
    let late_hub = hub.clone();
    let opened = on_room(
        h,
        "stream_open",
        timeout_ms,
        async move {
            hub.open_writer(
                kind,
                topic,
                mime,
                name,
                (!id_wanted.is_empty()).then_some(id_wanted),
                total,
                attributes,
                destinations,
                (!sender.is_empty()).then_some(sender),
            )
            .await
        },
        move |late| {
            // Nobody holds this writer: end the stream for its receivers.
            if let Ok((id, _)) = late {
                tokio::spawn(async move {
                    let _ = late_hub
                        .close_writer(id, "abandoned by the plugin".into(), Vec::new())
                        .await;
                });
            }
        },
    );
    match opened {
        Ok((id, sid)) => {
            register(id, h, Some(sid));
            if let Some(out_sid) = stream_id.as_mut() {
                if let Some(owner) = owners().as_ref().and_then(|m| m.get(&id)) {
                    if let Some(text) = &owner.text {
                        *out_sid = LkStr::borrow(text);
                    }
                }
            }
            *out = id as usize as *mut LkStreamWriter;
            LK_OK
        }
        Err(rc) => rc,
    }
}

pub(crate) unsafe extern "C" fn api_stream_write(
    writer: *mut LkStreamWriter,
    data: *const u8,
    len: usize,
    timeout_ms: u32,
) -> i32 {
    let id = writer as usize as u64;
    let Some(h) = owner_of(id) else {
        return LK_ERR_CLOSED;
    };
    if data.is_null() && len > 0 {
        return warn_invalid(h, "stream_write", "data is NULL with a length");
    }
    if len > MAX_PAYLOAD {
        return warn_invalid(
            h,
            "stream_write",
            "over 16 MiB in one call; write in pieces",
        );
    }
    if h.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    if len == 0 {
        return LK_OK;
    }
    let Some(hub) = data_hub(h) else {
        return LK_ERR_NOT_CONNECTED;
    };
    let bytes = std::slice::from_raw_parts(data, len).to_vec();
    match on_room(
        h,
        "stream_write",
        timeout_ms,
        async move { hub.write(id, bytes).await },
        wait::ignore,
    ) {
        Ok(()) => LK_OK,
        Err(rc) => rc,
    }
}

pub(crate) unsafe extern "C" fn api_stream_close(
    writer: *mut LkStreamWriter,
    reason: LkStr,
    keys: *const LkStr,
    values: *const LkStr,
    n: usize,
    timeout_ms: u32,
) -> i32 {
    let id = writer as usize as u64;
    let Some(h) = owner_of(id) else {
        return LK_ERR_CLOSED;
    };
    let (reason, _) = plugin_text(reason.ptr, reason.len, rpc::MAX_MESSAGE);
    let attributes = match read_pairs(h, "stream_close", keys, values, n) {
        Ok(a) => a,
        Err(rc) => {
            // Closed anyway, as the header says: abort the stream.
            close_on_room(h, id, "invalid trailer attributes".into(), Vec::new());
            return rc;
        }
    };
    close_on_room_waiting(h, id, reason, attributes, timeout_ms)
}

fn close_on_room(
    h: &'static JobHandle,
    id: u64,
    reason: String,
    attributes: Vec<(String, String)>,
) {
    let _ = close_on_room_waiting(h, id, reason, attributes, 0);
}

fn close_on_room_waiting(
    h: &'static JobHandle,
    id: u64,
    reason: String,
    attributes: Vec<(String, String)>,
    timeout_ms: u32,
) -> i32 {
    forget(id);
    let Some(hub) = data_hub(h) else {
        return LK_ERR_NOT_CONNECTED;
    };
    match on_room(
        h,
        "stream_close",
        timeout_ms,
        async move { hub.close_writer(id, reason, attributes).await },
        wait::ignore,
    ) {
        Ok(()) => LK_OK,
        Err(rc) => rc,
    }
}

// ---- RPC ------------------------------------------------------------------

unsafe fn method_name(h: &JobHandle, call: &str, method: &LkStr) -> Result<String, i32> {
    if bad_str(method) {
        return Err(warn_invalid(h, call, "method is NULL with a length"));
    }
    let (name, cut) = plugin_text(method.ptr, method.len, rpc::MAX_METHOD_LEN);
    if name.is_empty() || cut > 0 {
        return Err(warn_invalid(h, call, "method is empty or over 256 bytes"));
    }
    Ok(name)
}

pub(crate) unsafe extern "C" fn api_rpc_register(job: *const LkJob, method: LkStr) -> i32 {
    let Some(h) = job_of(job) else {
        return LK_ERR_INVALID;
    };
    let name = match method_name(h, "rpc_register", &method) {
        Ok(n) => n,
        Err(rc) => return rc,
    };
    let Some(hub) = data_hub(h) else {
        return LK_OK; // no room: nobody can call it
    };
    match hub.register_method(&name) {
        Ok(()) => LK_OK,
        Err(e) => hub_code(h, "rpc_register", e),
    }
}

pub(crate) unsafe extern "C" fn api_rpc_unregister(job: *const LkJob, method: LkStr) -> i32 {
    let Some(h) = job_of(job) else {
        return LK_ERR_INVALID;
    };
    let name = match method_name(h, "rpc_unregister", &method) {
        Ok(n) => n,
        Err(rc) => return rc,
    };
    if let Some(hub) = data_hub(h) {
        hub.unregister_method(&name);
    }
    LK_OK
}

/// An invocation's strings, behind `lk_rpc_invocation.host_private`.
struct InvocationView {
    request_id: String,
    caller: String,
    method: String,
    payload: String,
}

pub(crate) unsafe extern "C" fn api_next_rpc(
    job: *const LkJob,
    timeout_ms: u32,
    out: *mut LkRpcInvocation,
) -> i32 {
    let (Some(h), Some(out)) = (job_of(job), out.as_mut()) else {
        return LK_ERR_INVALID;
    };
    if (out.struct_size as usize) < std::mem::size_of::<LkRpcInvocation>() {
        return warn_invalid(
            h,
            "next_rpc",
            "out->struct_size is smaller than sizeof(lk_rpc_invocation); set it first",
        );
    }
    *out = LkRpcInvocation::zeroed();
    let deadline = deadline_after(timeout_ms);
    let Some(hub) = data_hub(h) else {
        return match wait::until(deadline, h.ctx.cancelled()) {
            Some(()) => LK_SHUTTING_DOWN,
            None => LK_TIMEOUT,
        };
    };
    let stop = || h.ctx.is_shutting_down();
    match hub.next_invocation(deadline, &stop) {
        Ok(inv) => {
            let deadline_ms = inv
                .deadline
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let raw = Box::into_raw(Box::new(InvocationView {
                request_id: inv.request_id,
                caller: inv.caller,
                method: inv.method,
                payload: inv.payload,
            }));
            let v = &*raw;
            *out = LkRpcInvocation {
                struct_size: std::mem::size_of::<LkRpcInvocation>() as u32,
                response_timeout_ms: inv.response_timeout_ms,
                request_id: LkStr::borrow(&v.request_id),
                caller_identity: LkStr::borrow(&v.caller),
                method: LkStr::borrow(&v.method),
                payload: LkStr::borrow(&v.payload),
                deadline_unix_ms: deadline_ms,
                host_private: raw as *mut c_void,
            };
            LK_OK
        }
        Err(HubError::Stopped) => LK_SHUTTING_DOWN,
        Err(_) => LK_TIMEOUT,
    }
}

pub(crate) unsafe extern "C" fn api_rpc_respond(
    job: *const LkJob,
    invocation: *mut LkRpcInvocation,
    error_code: i32,
    payload: LkStr,
    error_data: LkStr,
) -> i32 {
    let (Some(h), Some(inv)) = (job_of(job), invocation.as_mut()) else {
        return LK_ERR_INVALID;
    };
    if inv.host_private.is_null() {
        return LK_ERR_CLOSED;
    }
    if error_code < 0 || bad_str(&payload) || bad_str(&error_data) {
        return warn_invalid(
            h,
            "rpc_respond",
            "a negative error_code, or payload / error_data NULL with a length",
        );
    }
    let view = Box::from_raw(inv.host_private as *mut InvocationView);
    *inv = LkRpcInvocation::zeroed();
    let (text, _) = plugin_text(payload.ptr, payload.len, MAX_PAYLOAD);
    let result = if error_code == 0 {
        Ok(text)
    } else {
        Err(RpcFailure {
            code: error_code as u32,
            message: rpc::cut(&text, rpc::MAX_MESSAGE),
            data: rpc::cut(
                &plugin_text(error_data.ptr, error_data.len, rpc::MAX_DATA).0,
                rpc::MAX_DATA,
            ),
        })
    };
    if h.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    let Some(hub) = data_hub(h) else {
        return LK_ERR_NOT_CONNECTED;
    };
    let request_id = view.request_id;
    match on_room(
        h,
        "rpc_respond",
        ANSWER_WAIT.as_millis() as u32,
        async move { hub.respond(&request_id, result).await },
        wait::ignore,
    ) {
        Ok(()) => LK_OK,
        Err(rc) => rc,
    }
}

/// A result's strings, behind `lk_rpc_result.host_private`.
struct ResultView {
    payload: String,
    data: String,
}

pub(crate) unsafe extern "C" fn api_perform_rpc(
    job: *const LkJob,
    destination_identity: LkStr,
    method: LkStr,
    payload: LkStr,
    response_timeout_ms: u32,
    out: *mut LkRpcResult,
) -> i32 {
    let (Some(h), Some(out)) = (job_of(job), out.as_mut()) else {
        return LK_ERR_INVALID;
    };
    if (out.struct_size as usize) < std::mem::size_of::<LkRpcResult>() {
        return warn_invalid(
            h,
            "perform_rpc",
            "out->struct_size is smaller than sizeof(lk_rpc_result); set it first",
        );
    }
    *out = LkRpcResult::zeroed();
    let method = match method_name(h, "perform_rpc", &method) {
        Ok(m) => m,
        Err(rc) => return rc,
    };
    if bad_str(&destination_identity) || bad_str(&payload) {
        return warn_invalid(
            h,
            "perform_rpc",
            "destination_identity or payload is NULL with a length",
        );
    }
    let (destination, _) = plugin_text(
        destination_identity.ptr,
        destination_identity.len,
        MAX_SHORT,
    );
    if destination.is_empty() {
        return warn_invalid(h, "perform_rpc", "destination_identity is empty");
    }
    let (payload, cut) = plugin_text(payload.ptr, payload.len, MAX_PAYLOAD);
    if cut > 0 {
        return warn_invalid(h, "perform_rpc", "payload is over 16 MiB");
    }
    if h.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    let Some(hub) = data_hub(h) else {
        return LK_ERR_NOT_CONNECTED;
    };
    let timeout = if response_timeout_ms == 0 {
        rpc::DEFAULT_RESPONSE_TIMEOUT
    } else {
        Duration::from_millis(response_timeout_ms as u64)
    };
    // The call ends by itself (answer, 1501, 1502, 1503); this is a net.
    let wait_ms = (timeout + rpc::ACK_TIMEOUT + Duration::from_secs(5)).as_millis() as u32;
    let answered = match run_on_room(
        h.media.rt.as_ref(),
        &h.ctx,
        deadline_after(wait_ms),
        async move { hub.call(destination, method, payload, timeout).await },
        wait::ignore,
    ) {
        Ran::Done(r) => r,
        Ran::Timeout => Err(RpcFailure::builtin(rpc::RESPONSE_TIMEOUT)),
        Ran::ShuttingDown => return LK_SHUTTING_DOWN,
    };
    let (code, text, data) = match answered {
        Ok(p) => (0, p, String::new()),
        Err(f) => (f.code as i32, f.message, f.data),
    };
    let raw = Box::into_raw(Box::new(ResultView {
        payload: text,
        data,
    }));
    let v = &*raw;
    *out = LkRpcResult {
        struct_size: std::mem::size_of::<LkRpcResult>() as u32,
        error_code: code,
        payload: LkStr::borrow(&v.payload),
        error_data: LkStr::borrow(&v.data),
        host_private: raw as *mut c_void,
    };
    LK_OK
}

pub(crate) unsafe extern "C" fn api_rpc_result_release(
    _job: *const LkJob,
    result: *mut LkRpcResult,
) {
    if let Some(r) = result.as_mut() {
        if !r.host_private.is_null() {
            drop(Box::from_raw(r.host_private as *mut ResultView));
        }
        *r = LkRpcResult::zeroed();
    }
}

// ---- transcriptions -------------------------------------------------------

pub(crate) unsafe extern "C" fn api_publish_transcription(
    job: *const LkJob,
    t: *const LkTranscription,
    timeout_ms: u32,
) -> i32 {
    let Some(h) = job_of(job) else {
        return LK_ERR_INVALID;
    };
    let Some(t) = t.as_ref() else {
        return warn_invalid(h, "publish_transcription", "t is NULL");
    };
    if (t.struct_size as usize) < std::mem::size_of::<LkTranscription>() {
        return warn_invalid(
            h,
            "publish_transcription",
            "t->struct_size is smaller than sizeof(lk_transcription); set it first",
        );
    }
    for s in [
        &t.participant_identity,
        &t.track_sid,
        &t.segment_id,
        &t.text,
        &t.language,
    ] {
        if bad_str(s) {
            return warn_invalid(h, "publish_transcription", "a string is NULL with a length");
        }
    }
    let short = |s: &LkStr| plugin_text(s.ptr, s.len, MAX_SHORT).0;
    let (identity, track_sid, segment_id, language) = (
        short(&t.participant_identity),
        short(&t.track_sid),
        short(&t.segment_id),
        short(&t.language),
    );
    if track_sid.is_empty() || segment_id.is_empty() {
        return warn_invalid(
            h,
            "publish_transcription",
            "track_sid and segment_id are required",
        );
    }
    let (text, _) = plugin_text(t.text.ptr, t.text.len, MAX_PAYLOAD);
    // One packet (no chunking for the legacy form): it must fit.
    if text.len() > LK_MAX_RELIABLE_DATA - 1024 {
        return LK_ERR_TOO_LARGE;
    }
    if h.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    let Some(hub) = data_hub(h) else {
        return LK_ERR_NOT_CONNECTED;
    };
    let identity = if identity.is_empty() {
        h.identity.clone()
    } else {
        identity
    };
    let (start, end, is_final) = (t.start_ms, t.end_ms, t.flags & LK_TRANSCRIPTION_FINAL != 0);
    match on_room(
        h,
        "publish_transcription",
        timeout_ms,
        async move {
            hub.publish_transcription(
                identity, track_sid, segment_id, text, language, start, end, is_final,
            )
            .await
        },
        wait::ignore,
    ) {
        Ok(()) => LK_OK,
        Err(rc) => rc,
    }
}

/// Closes every reader and writer the job left open (the job ended).
pub(crate) fn close_all(job: &JobHandle) {
    if let Some(hub) = data_hub(job) {
        hub.close_all();
    }
    let mine: Vec<u64> = owners()
        .as_ref()
        .map(|m| {
            m.iter()
                .filter(|(_, o)| std::ptr::eq(o.job, job))
                .map(|(id, _)| *id)
                .collect()
        })
        .unwrap_or_default();
    for id in mine {
        forget(id);
    }
    let _ = Instant::now();
}
