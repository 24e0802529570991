//! The safe Rust plugin SDK: what a plugin author writes against.
//!
//! Owns: [`JobContext`] (a safe view of the host API table and job handle),
//! the owned [`Event`] / [`ShutdownInfo`] types, and the panic barrier that
//! [`crate::export_plugin!`] puts around `run` and every callback. Must not
//! know anything about how the host implements the table.
//!
//! Panics never cross the C boundary: `run` and every shutdown hook go through
//! `catch_unwind`. A panic in `run` is logged through the host (one line with
//! the message and location) and becomes [`crate::abi::LK_RUN_PANICKED`],
//! which the host reports as "plugin panicked".

use crate::abi::*;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Once, OnceLock};
use std::time::Duration;

/// Log level for [`JobContext::log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    fn as_abi(self) -> i32 {
        match self {
            Level::Error => LK_LOG_ERROR,
            Level::Warn => LK_LOG_WARN,
            Level::Info => LK_LOG_INFO,
            Level::Debug => LK_LOG_DEBUG,
            Level::Trace => LK_LOG_TRACE,
        }
    }
}

/// Kind of a room event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    ParticipantJoined,
    ParticipantLeft,
    TrackPublished,
    TrackUnpublished,
    TrackSubscribed,
    TrackUnsubscribed,
    Disconnected,
    /// ABI 1.2: the session is being resumed (`reason` says why).
    Reconnecting,
    /// ABI 1.2: the session is back (`reason`: "resumed" or "rejoined").
    Reconnected,
    /// ABI 1.4: a remote publication was muted by its publisher (readers of
    /// it get frames flagged silence).
    TrackMuted,
    /// ABI 1.4: a muted remote publication was unmuted.
    TrackUnmuted,
    /// ABI 1.4: a track this job published has its first subscriber
    /// (`track_sid` is the job's own; see
    /// [`crate::media::AudioSource::wait_subscribed`]).
    LocalTrackSubscribed,
    /// A kind added by a newer host; the raw value is kept.
    Unknown(u32),
}

impl EventKind {
    fn from_abi(v: u32) -> EventKind {
        match v {
            LK_EVENT_PARTICIPANT_JOINED => EventKind::ParticipantJoined,
            LK_EVENT_PARTICIPANT_LEFT => EventKind::ParticipantLeft,
            LK_EVENT_TRACK_PUBLISHED => EventKind::TrackPublished,
            LK_EVENT_TRACK_UNPUBLISHED => EventKind::TrackUnpublished,
            LK_EVENT_TRACK_SUBSCRIBED => EventKind::TrackSubscribed,
            LK_EVENT_TRACK_UNSUBSCRIBED => EventKind::TrackUnsubscribed,
            LK_EVENT_DISCONNECTED => EventKind::Disconnected,
            LK_EVENT_RECONNECTING => EventKind::Reconnecting,
            LK_EVENT_RECONNECTED => EventKind::Reconnected,
            LK_EVENT_TRACK_MUTED => EventKind::TrackMuted,
            LK_EVENT_TRACK_UNMUTED => EventKind::TrackUnmuted,
            LK_EVENT_LOCAL_TRACK_SUBSCRIBED => EventKind::LocalTrackSubscribed,
            other => EventKind::Unknown(other),
        }
    }

    /// True for the events about a remote track.
    pub fn is_track_event(self) -> bool {
        matches!(
            self,
            EventKind::TrackPublished
                | EventKind::TrackUnpublished
                | EventKind::TrackSubscribed
                | EventKind::TrackUnsubscribed
                | EventKind::TrackMuted
                | EventKind::TrackUnmuted
        )
    }
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackKind {
    Unknown,
    Audio,
    Video,
}

impl TrackKind {
    fn from_abi(v: u32) -> TrackKind {
        match v {
            LK_TRACK_KIND_AUDIO => TrackKind::Audio,
            LK_TRACK_KIND_VIDEO => TrackKind::Video,
            _ => TrackKind::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Unknown => "unknown",
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

/// Where a track comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackSource {
    Unknown,
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
}

impl TrackSource {
    fn from_abi(v: u32) -> TrackSource {
        match v {
            LK_TRACK_SOURCE_CAMERA => TrackSource::Camera,
            LK_TRACK_SOURCE_MICROPHONE => TrackSource::Microphone,
            LK_TRACK_SOURCE_SCREEN_SHARE => TrackSource::ScreenShare,
            LK_TRACK_SOURCE_SCREEN_SHARE_AUDIO => TrackSource::ScreenShareAudio,
            _ => TrackSource::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Unknown => "unknown",
            TrackSource::Camera => "camera",
            TrackSource::Microphone => "microphone",
            TrackSource::ScreenShare => "screen_share",
            TrackSource::ScreenShareAudio => "screen_share_audio",
        }
    }
}

/// A room event, copied out of host memory.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    /// Stable snake_case name, e.g. `track_subscribed`.
    pub name: String,
    pub participant_identity: String,
    pub participant_sid: String,
    pub track_sid: String,
    pub track_name: String,
    pub track_kind: TrackKind,
    pub track_source: TrackSource,
    /// Why the room disconnected or is reconnecting; how it reconnected
    /// (`Disconnected`, `Reconnecting`, `Reconnected` only).
    pub reason: String,
}

/// Result of [`JobContext::next_event`].
#[derive(Debug)]
pub enum NextEvent {
    Event(Event),
    /// Nothing arrived within the timeout.
    Timeout,
    /// The job is shutting down and no event is pending: return from `run`.
    ShuttingDown,
    /// The plugin fell behind and this many events were dropped.
    Missed(u64),
}

/// Why and when the job shut down, as passed to shutdown hooks.
#[derive(Clone, Debug)]
pub struct ShutdownInfo {
    /// `LK_SHUTDOWN_*` code.
    pub code: u32,
    /// Stable snake_case reason, e.g. `signal_sigterm`.
    pub reason: String,
    pub detail: String,
    pub unix_ms: i64,
}

impl ShutdownInfo {
    /// # Safety
    /// `info` must point at a valid `LkShutdownInfo` for the call.
    unsafe fn from_abi(info: *const LkShutdownInfo) -> ShutdownInfo {
        let info = &*info;
        ShutdownInfo {
            code: info.reason,
            reason: info.reason_str.to_string_lossy(),
            detail: info.detail.to_string_lossy(),
            unix_ms: info.unix_ms,
        }
    }
}

/// The plugin's safe handle on its job. Cheap to copy, usable from any thread
/// at any time: the host keeps the job handle and its strings valid for the
/// life of the process (`lk_plugin.h`, "Lifetime"), so a copy kept by a
/// thread that outlives `run` stays sound; after the job ended it answers
/// as after shutdown (`next_event` → [`NextEvent::ShuttingDown`]).
#[derive(Clone, Copy)]
pub struct JobContext {
    api: &'static LkHostApi,
    job: *const LkJob,
}

// SAFETY: the host documents every API function as callable from any thread.
unsafe impl Send for JobContext {}
unsafe impl Sync for JobContext {}

impl JobContext {
    /// # Safety
    /// `api` and `job` must be the pointers the host passed to `run`, and the
    /// table must outlive the process (the host never unloads plugins).
    pub unsafe fn from_raw(api: *const LkHostApi, job: *const LkJob) -> JobContext {
        JobContext { api: &*api, job }
    }

    /// Host ABI version as (major, minor).
    pub fn host_abi(&self) -> (u16, u16) {
        (self.api.abi_major, self.api.abi_minor)
    }

    /// The host's function table (for the SDK's other modules).
    pub(crate) fn api(&self) -> &'static LkHostApi {
        self.api
    }

    /// The raw job pointer (for the SDK's other modules).
    pub(crate) fn raw_job(&self) -> *const LkJob {
        self.job
    }

    fn has_field(&self, end_offset: usize) -> bool {
        self.api.size as usize >= end_offset
    }

    fn host_str(&self, s: LkStr) -> &'static str {
        // SAFETY: job strings are owned by the host for the life of the
        // process (lk_plugin.h, "Lifetime").
        std::str::from_utf8(unsafe { s.as_bytes() }).unwrap_or("")
    }

    pub fn job_id(&self) -> &'static str {
        self.host_str(unsafe { (self.api.job_id)(self.job) })
    }

    pub fn room_name(&self) -> &'static str {
        self.host_str(unsafe { (self.api.room_name)(self.job) })
    }

    /// The job's metadata (free text, often JSON); empty if none.
    pub fn metadata(&self) -> &'static str {
        self.host_str(unsafe { (self.api.job_metadata)(self.job) })
    }

    /// The identity the job joined as; `None` on a host older than ABI 1.1.
    pub fn participant_identity(&self) -> Option<&'static str> {
        if !self.has_field(LK_HOST_API_SIZE_1_1) || self.api.abi_minor < 1 {
            return None;
        }
        Some(self.host_str(unsafe { (self.api.participant_identity)(self.job) }))
    }

    /// True when the host speaks ABI 1.4 (dispatch info, data streams,
    /// RPC, transcriptions).
    pub fn has_streams(&self) -> bool {
        self.api.abi_minor >= 4 && self.has_field(LK_HOST_API_SIZE_1_4)
    }

    /// The participant a participant or publisher job is for (the
    /// dispatch's `Job.participant`, or `--participant-identity`); `None`
    /// for a room job and on a host older than ABI 1.4.
    pub fn job_participant_identity(&self) -> Option<&'static str> {
        if !self.has_streams() {
            return None;
        }
        let id = self.host_str(unsafe { (self.api.job_participant_identity)(self.job) });
        (!id.is_empty()).then_some(id)
    }

    /// The agent name the job was dispatched to; empty for automatic
    /// dispatch, `job run-script`, and a host older than ABI 1.4.
    pub fn agent_name(&self) -> &'static str {
        if !self.has_streams() {
            return "";
        }
        self.host_str(unsafe { (self.api.agent_name)(self.job) })
    }

    /// The dispatch's attributes (`Job.attributes`), sorted by key; empty
    /// on a host older than ABI 1.4.
    pub fn job_attributes(&self) -> Vec<(&'static str, &'static str)> {
        if !self.has_streams() {
            return Vec::new();
        }
        let n = unsafe {
            (self.api.job_attributes)(self.job, std::ptr::null_mut(), std::ptr::null_mut(), 0)
        };
        let mut keys = vec![LkStr::EMPTY; n];
        let mut values = vec![LkStr::EMPTY; n];
        let got = unsafe {
            (self.api.job_attributes)(self.job, keys.as_mut_ptr(), values.as_mut_ptr(), n)
        };
        keys.into_iter()
            .zip(values)
            .take(got.min(n))
            .map(|(k, v)| (self.host_str(k), self.host_str(v)))
            .collect()
    }

    /// Whether the job ends (reason `participant_left`) when its
    /// participant ([`Self::job_participant_identity`]) leaves the room:
    /// on by default, as livekit-agents' `close_on_disconnect`. No-op on a
    /// host older than ABI 1.4 (which never ends the job for it).
    pub fn set_close_on_participant_left(&self, close: bool) {
        if self.has_streams() {
            unsafe { (self.api.set_close_on_participant_left)(self.job, close as i32) }
        }
    }

    /// Asks the host to end the job. Idempotent; the first reason wins.
    pub fn shutdown(&self, reason: &str) {
        unsafe { (self.api.shutdown)(self.job, reason.as_ptr() as *const c_char, reason.len()) }
    }

    pub fn is_shutting_down(&self) -> bool {
        unsafe { (self.api.is_shutting_down)(self.job) != 0 }
    }

    /// Registers a hook that runs exactly once when the job shuts down,
    /// newest first, one at a time (at once, on this thread, if shutdown has
    /// already begun). A panic inside the hook is caught and logged. A hook
    /// the host's budget leaves no time for is dropped unrun.
    pub fn on_shutdown<F>(&self, hook: F)
    where
        F: FnOnce(&ShutdownInfo) + Send + 'static,
    {
        let boxed: Box<BoxedHook> = Box::new(Box::new(hook));
        let user_data = Box::into_raw(boxed) as *mut c_void;
        unsafe {
            (self.api.on_shutdown)(self.job, Some(hook_trampoline), user_data, Some(hook_free));
        }
    }

    /// Waits up to `timeout` (clamped to u32 milliseconds) for the next event.
    pub fn next_event(&self, timeout: Duration) -> NextEvent {
        let ms = timeout.as_millis().min(u32::MAX as u128) as u32;
        let mut ev = LkEvent::zeroed();
        let mut missed = 0u64;
        let rc = unsafe { (self.api.next_event)(self.job, ms, &mut ev, &mut missed) };
        match rc {
            LK_NEXT_EVENT => {
                // SAFETY: the host filled `ev`; its strings live until release.
                let out = unsafe {
                    Event {
                        kind: EventKind::from_abi(ev.kind),
                        name: ev.name.to_string_lossy(),
                        participant_identity: ev.participant_identity.to_string_lossy(),
                        participant_sid: ev.participant_sid.to_string_lossy(),
                        track_sid: ev.track_sid.to_string_lossy(),
                        track_name: ev.track_name.to_string_lossy(),
                        track_kind: TrackKind::from_abi(ev.track_kind),
                        track_source: TrackSource::from_abi(ev.track_source),
                        reason: ev.reason.to_string_lossy(),
                    }
                };
                unsafe { (self.api.event_release)(self.job, &mut ev) };
                NextEvent::Event(out)
            }
            LK_NEXT_TIMEOUT => NextEvent::Timeout,
            LK_NEXT_MISSED => NextEvent::Missed(missed),
            _ => NextEvent::ShuttingDown,
        }
    }

    pub fn log(&self, level: Level, msg: &str) {
        unsafe {
            (self.api.log)(
                self.job,
                level.as_abi(),
                msg.as_ptr() as *const c_char,
                msg.len(),
            )
        }
    }

    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg)
    }

    pub fn warn(&self, msg: &str) {
        self.log(Level::Warn, msg)
    }

    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg)
    }
}

type BoxedHook = Box<dyn FnOnce(&ShutdownInfo) + Send>;

unsafe extern "C" fn hook_trampoline(user_data: *mut c_void, info: *const LkShutdownInfo) {
    if user_data.is_null() || info.is_null() {
        return;
    }
    // Take the closure out, leaving a no-op, so hook_free only frees the box.
    let slot = &mut *(user_data as *mut BoxedHook);
    let hook = std::mem::replace(slot, Box::new(|_: &ShutdownInfo| {}));
    let info = ShutdownInfo::from_abi(info);
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| hook(&info))) {
        report_panic("shutdown hook", payload);
    }
}

unsafe extern "C" fn hook_free(user_data: *mut c_void) {
    if !user_data.is_null() {
        drop(Box::from_raw(user_data as *mut BoxedHook));
    }
}

/// The host context of the running job, for reporting panics from threads
/// the plugin spawned itself.
static HOST: OnceLock<JobContext> = OnceLock::new();
static PANIC_HOOK: Once = Once::new();

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Replaces the default panic hook (a cdylib has its own std, so this only
/// affects this plugin) with one that records the message and location for
/// the one-line log that the catch site writes.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_string()
            };
            let line = match info.location() {
                Some(loc) => format!("{msg} (at {}:{}:{})", loc.file(), loc.line(), loc.column()),
                None => msg,
            };
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(line));
        }));
    });
}

fn report_panic(place: &str, payload: Box<dyn std::any::Any + Send>) {
    let recorded = LAST_PANIC.with(|p| p.borrow_mut().take());
    let msg = recorded.unwrap_or_else(|| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string())
    });
    if let Some(ctx) = HOST.get() {
        ctx.error(&format!("{place} panicked: {msg}"));
    }
}

/// Called by the code [`crate::export_plugin!`] generates. Not public API.
#[doc(hidden)]
pub unsafe fn __run_plugin(
    api: *const LkHostApi,
    job: *const LkJob,
    run: fn(&JobContext) -> i32,
) -> i32 {
    if api.is_null() || (*api).abi_major != LK_ABI_MAJOR {
        return LK_RUN_PANICKED;
    }
    install_panic_hook();
    let ctx = JobContext::from_raw(api, job);
    let _ = HOST.set(ctx);
    match catch_unwind(AssertUnwindSafe(|| run(&ctx))) {
        Ok(code) => code,
        Err(payload) => {
            report_panic("run", payload);
            LK_RUN_PANICKED
        }
    }
}
