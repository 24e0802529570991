//! The host's implementation of `lk_host_api` (ABI 1.1).
//!
//! Owns: the static function table handed to `run`, the [`JobHandle`] behind
//! the opaque `lk_job*`, and the conversions between host types and their C
//! mirrors. Every function tolerates NULL arguments and never unwinds into
//! the plugin (they cannot panic on any input the header allows).
//!
//! Must not touch: the cascade or exit codes (`crate::runner`).

use crate::events::{Event, Received, Subscription, TrackKind, TrackSource};
use crate::job::{JobContext, ShutdownInfo, ShutdownReason};
use lk_plugin_api::abi::*;
use std::ffi::{c_char, c_void};
use std::sync::Mutex;
use std::time::Duration;

/// What `lk_job*` points at. Lives (in an `Arc`) until `run` has returned and
/// the cascade is over; a plugin thread that overruns keeps it alive.
pub(crate) struct JobHandle {
    pub(crate) job_id: String,
    pub(crate) room_name: String,
    pub(crate) metadata: String,
    pub(crate) identity: String,
    pub(crate) plugin_name: String,
    pub(crate) ctx: JobContext,
    pub(crate) events: Mutex<Subscription>,
    pub(crate) rt: tokio::runtime::Handle,
}

impl JobHandle {
    pub(crate) fn as_abi(&self) -> *const LkJob {
        self as *const JobHandle as *const LkJob
    }
}

/// The table every plugin receives.
pub(crate) static HOST_API: LkHostApi = LkHostApi {
    size: std::mem::size_of::<LkHostApi>() as u32,
    abi_major: LK_ABI_MAJOR,
    abi_minor: LK_ABI_MINOR,
    job_id: api_job_id,
    room_name: api_room_name,
    job_metadata: api_job_metadata,
    shutdown: api_shutdown,
    is_shutting_down: api_is_shutting_down,
    on_shutdown: api_on_shutdown,
    next_event: api_next_event,
    event_release: api_event_release,
    log: api_log,
    participant_identity: api_participant_identity,
};

/// # Safety
/// `job` is NULL or the pointer the host passed to `run`.
unsafe fn handle<'a>(job: *const LkJob) -> Option<&'a JobHandle> {
    (job as *const JobHandle).as_ref()
}

/// # Safety
/// `ptr` is NULL or points at `len` readable bytes.
unsafe fn read_str(ptr: *const c_char, len: usize) -> String {
    LkStr { ptr, len }.to_string_lossy()
}

unsafe extern "C" fn api_job_id(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| LkStr::borrow(&h.job_id))
}

unsafe extern "C" fn api_room_name(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| LkStr::borrow(&h.room_name))
}

unsafe extern "C" fn api_job_metadata(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| LkStr::borrow(&h.metadata))
}

unsafe extern "C" fn api_participant_identity(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| LkStr::borrow(&h.identity))
}

unsafe extern "C" fn api_shutdown(job: *const LkJob, reason: *const c_char, len: usize) {
    if let Some(h) = handle(job) {
        let detail = read_str(reason, len);
        h.ctx.shutdown(ShutdownReason::RequestedByPlugin, detail);
    }
}

unsafe extern "C" fn api_is_shutting_down(job: *const LkJob) -> i32 {
    handle(job).map_or(1, |h| h.ctx.is_shutting_down() as i32)
}

/// A raw pointer the plugin promised may be used from any thread.
struct ForeignPtr(*mut c_void);
// SAFETY: lk_plugin.h states that hooks run on host threads; plugins must
// give user_data that tolerates it.
unsafe impl Send for ForeignPtr {}

/// The C view of `info`, borrowing its strings for the duration of a call.
fn abi_info(info: &ShutdownInfo) -> LkShutdownInfo {
    LkShutdownInfo {
        reason: info.reason.abi_code(),
        reserved: 0,
        reason_str: LkStr::from_static(info.reason.as_str()),
        detail: LkStr::borrow(&info.detail),
        unix_ms: info.unix_ms(),
    }
}

unsafe extern "C" fn api_on_shutdown(
    job: *const LkJob,
    hook: Option<LkShutdownFn>,
    user_data: *mut c_void,
    free_user_data: Option<LkFreeFn>,
) -> i32 {
    let (Some(h), Some(hook)) = (handle(job), hook) else {
        return -1;
    };
    let data = ForeignPtr(user_data);
    let name = format!("{} plugin hook", h.plugin_name);
    h.ctx.on_shutdown(name, move |info: &ShutdownInfo| {
        let data = data;
        let c_info = abi_info(info);
        // SAFETY: the plugin registered this function for exactly this call.
        unsafe {
            hook(data.0, &c_info);
            if let Some(free) = free_user_data {
                free(data.0);
            }
        }
    });
    0
}

/// Strings of one event handed to the plugin, freed by `event_release`.
struct OwnedEvent {
    name: &'static str,
    identity: String,
    sid: String,
    track_sid: String,
    track_name: String,
    reason: String,
}

fn kind_code(ev: &Event) -> u32 {
    match ev {
        Event::ParticipantJoined { .. } => LK_EVENT_PARTICIPANT_JOINED,
        Event::ParticipantLeft { .. } => LK_EVENT_PARTICIPANT_LEFT,
        Event::TrackPublished { .. } => LK_EVENT_TRACK_PUBLISHED,
        Event::TrackUnpublished { .. } => LK_EVENT_TRACK_UNPUBLISHED,
        Event::TrackSubscribed { .. } => LK_EVENT_TRACK_SUBSCRIBED,
        Event::TrackUnsubscribed { .. } => LK_EVENT_TRACK_UNSUBSCRIBED,
        Event::Disconnected { .. } => LK_EVENT_DISCONNECTED,
    }
}

fn track_kind_code(k: TrackKind) -> u32 {
    match k {
        TrackKind::Unknown => LK_TRACK_KIND_UNKNOWN,
        TrackKind::Audio => LK_TRACK_KIND_AUDIO,
        TrackKind::Video => LK_TRACK_KIND_VIDEO,
    }
}

fn track_source_code(s: TrackSource) -> u32 {
    match s {
        TrackSource::Unknown => LK_TRACK_SOURCE_UNKNOWN,
        TrackSource::Camera => LK_TRACK_SOURCE_CAMERA,
        TrackSource::Microphone => LK_TRACK_SOURCE_MICROPHONE,
        TrackSource::ScreenShare => LK_TRACK_SOURCE_SCREEN_SHARE,
        TrackSource::ScreenShareAudio => LK_TRACK_SOURCE_SCREEN_SHARE_AUDIO,
    }
}

/// Fills `out` with `ev`; the strings live in a box owned via host_private.
fn fill_event(ev: &Event, out: &mut LkEvent) {
    let owned = Box::new(OwnedEvent {
        name: ev.name(),
        identity: ev
            .participant()
            .map(|p| p.identity.clone())
            .unwrap_or_default(),
        sid: ev.participant().map(|p| p.sid.clone()).unwrap_or_default(),
        track_sid: ev.track().map(|t| t.sid.clone()).unwrap_or_default(),
        track_name: ev.track().map(|t| t.name.clone()).unwrap_or_default(),
        reason: match ev {
            Event::Disconnected { reason, .. } => reason.as_str().to_string(),
            _ => String::new(),
        },
    });
    *out = LkEvent {
        kind: kind_code(ev),
        track_kind: ev
            .track()
            .map_or(LK_TRACK_KIND_UNKNOWN, |t| track_kind_code(t.kind)),
        track_source: ev
            .track()
            .map_or(LK_TRACK_SOURCE_UNKNOWN, |t| track_source_code(t.source)),
        reserved: 0,
        name: LkStr::from_static(owned.name),
        participant_identity: LkStr::borrow(&owned.identity),
        participant_sid: LkStr::borrow(&owned.sid),
        track_sid: LkStr::borrow(&owned.track_sid),
        track_name: LkStr::borrow(&owned.track_name),
        reason: LkStr::borrow(&owned.reason),
        host_private: Box::into_raw(owned) as *mut c_void,
    };
}

fn deliver(r: Received, out: &mut LkEvent, missed: *mut u64) -> i32 {
    match r {
        Received::Event(ev) => {
            fill_event(&ev, out);
            LK_NEXT_EVENT
        }
        Received::Missed(n) => {
            if !missed.is_null() {
                // SAFETY: non-null, the plugin passed it for us to write.
                unsafe { *missed = n };
            }
            LK_NEXT_MISSED
        }
        Received::Closed => LK_NEXT_SHUTTING_DOWN,
    }
}

unsafe extern "C" fn api_next_event(
    job: *const LkJob,
    timeout_ms: u32,
    out: *mut LkEvent,
    missed: *mut u64,
) -> i32 {
    let (Some(h), Some(out)) = (handle(job), out.as_mut()) else {
        return LK_NEXT_INVALID;
    };
    *out = LkEvent::zeroed();
    let mut sub = h.events.lock().unwrap_or_else(|e| e.into_inner());
    // Events already buffered come first, even during shutdown, so a plugin
    // sees e.g. the Disconnected event that caused the shutdown.
    if let Some(r) = sub.try_recv() {
        return deliver(r, out, missed);
    }
    if h.ctx.is_shutting_down() {
        return LK_NEXT_SHUTTING_DOWN;
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        // Called from a runtime thread (not a plugin thread): block_on would
        // panic, so answer without waiting.
        return LK_NEXT_TIMEOUT;
    }
    enum Waited {
        Got(Received),
        ShuttingDown,
        TimedOut,
    }
    let ctx = h.ctx.clone();
    let waited = h.rt.block_on(async {
        // Biased towards events: the event that caused a shutdown (e.g.
        // Disconnected) is published before the token is cancelled, so both
        // branches can be ready at once, and the event must win.
        tokio::select! {
            biased;
            r = sub.recv() => Waited::Got(r),
            _ = ctx.cancelled() => Waited::ShuttingDown,
            _ = tokio::time::sleep(Duration::from_millis(timeout_ms as u64)) => Waited::TimedOut,
        }
    });
    match waited {
        Waited::Got(r) => deliver(r, out, missed),
        Waited::ShuttingDown => match sub.try_recv() {
            Some(r) => deliver(r, out, missed),
            None => LK_NEXT_SHUTTING_DOWN,
        },
        Waited::TimedOut => LK_NEXT_TIMEOUT,
    }
}

unsafe extern "C" fn api_event_release(_job: *const LkJob, event: *mut LkEvent) {
    if let Some(ev) = event.as_mut() {
        if !ev.host_private.is_null() {
            drop(Box::from_raw(ev.host_private as *mut OwnedEvent));
        }
        *ev = LkEvent::zeroed();
    }
}

unsafe extern "C" fn api_log(job: *const LkJob, level: i32, msg: *const c_char, len: usize) {
    let plugin = handle(job).map_or("?", |h| h.plugin_name.as_str());
    let msg = read_str(msg, len);
    match level {
        LK_LOG_ERROR => tracing::error!(target: "plugin", plugin, "{msg}"),
        LK_LOG_WARN => tracing::warn!(target: "plugin", plugin, "{msg}"),
        LK_LOG_INFO => tracing::info!(target: "plugin", plugin, "{msg}"),
        LK_LOG_DEBUG => tracing::debug!(target: "plugin", plugin, "{msg}"),
        _ => tracing::trace!(target: "plugin", plugin, "{msg}"),
    }
}
