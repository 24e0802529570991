//! The host's implementation of the ABI 1.0-1.2 functions of
//! `lk_host_api` (the table is [`super::table`]; 1.3 is
//! [`super::media_api`], 1.4 [`super::job_api`] and [`super::stream_api`]).
//!
//! Owns: job info, shutdown and hooks, events and logging, and the
//! conversions between host types and their C mirrors. Every function tolerates NULL arguments, any length, and any
//! thread, and never unwinds into the plugin.
//!
//! The handle behind `lk_job*` and its lifetime rules live in
//! [`super::handle`].
//!
//! Must not touch: the cascade or exit codes (`crate::runner`).

use super::handle::{as_log_line, handle, plugin_text, MAX_LOG_LEN, MAX_REASON_LEN};
use super::wait;
use crate::events::{Event, Received, Subscription, TrackKind, TrackSource};
use crate::job::{ShutdownInfo, ShutdownReason};
use lk_plugin_api::abi::*;
use std::ffi::{c_char, c_void};
use std::time::{Duration, Instant};

pub(crate) unsafe extern "C" fn api_job_id(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| LkStr::borrow(&h.job_id))
}

pub(crate) unsafe extern "C" fn api_room_name(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| LkStr::borrow(&h.room_name))
}

pub(crate) unsafe extern "C" fn api_job_metadata(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| LkStr::borrow(&h.metadata))
}

pub(crate) unsafe extern "C" fn api_participant_identity(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| LkStr::borrow(&h.identity))
}

pub(crate) unsafe extern "C" fn api_shutdown(job: *const LkJob, reason: *const c_char, len: usize) {
    if let Some(h) = handle(job) {
        let (detail, _) = plugin_text(reason, len, MAX_REASON_LEN);
        // The reason is logged, sent to the server as the job's error and
        // printed in the final error line: one line, like a log message.
        h.ctx
            .shutdown(ShutdownReason::RequestedByPlugin, as_log_line(&detail));
    }
}

pub(crate) unsafe extern "C" fn api_is_shutting_down(job: *const LkJob) -> i32 {
    handle(job).map_or(1, |h| h.ctx.is_shutting_down() as i32)
}

/// A plugin's hook and its user data. Dropping it unrun (the hook stage's
/// budget was spent before its turn) still calls `free_user_data`, so the
/// header's "called after the hook ran or was dropped" holds on every path.
struct ForeignHook {
    hook: LkShutdownFn,
    user_data: *mut c_void,
    free_user_data: Option<LkFreeFn>,
    plugin_abi_minor: u16,
}

// SAFETY: lk_plugin.h states that hooks run on host threads; plugins must
// give user_data that tolerates it.
unsafe impl Send for ForeignHook {}

impl ForeignHook {
    fn call(self, info: &ShutdownInfo) {
        let c_info = abi_info(info, self.plugin_abi_minor);
        // SAFETY: the plugin registered this function for exactly this call.
        unsafe { (self.hook)(self.user_data, &c_info) };
        // `self` drops here: free_user_data runs after the hook.
    }
}

impl Drop for ForeignHook {
    fn drop(&mut self) {
        if let Some(free) = self.free_user_data.take() {
            // SAFETY: called once, with the pointer the plugin gave.
            unsafe { free(self.user_data) };
        }
    }
}

/// The C view of `info` for a plugin built against `plugin_abi_minor`,
/// borrowing its strings for the duration of a call. A reason newer than
/// the plugin's header is shown as the closest one it knows.
fn abi_info(info: &ShutdownInfo, plugin_abi_minor: u16) -> LkShutdownInfo {
    let shown = info.reason.as_seen_by_abi_minor(plugin_abi_minor);
    LkShutdownInfo {
        reason: shown.abi_code(),
        reserved: 0,
        reason_str: LkStr::from_static(shown.as_str()),
        detail: LkStr::borrow(&info.detail),
        unix_ms: info.unix_ms(),
    }
}

pub(crate) unsafe extern "C" fn api_on_shutdown(
    job: *const LkJob,
    hook: Option<LkShutdownFn>,
    user_data: *mut c_void,
    free_user_data: Option<LkFreeFn>,
) -> i32 {
    let (Some(h), Some(hook)) = (handle(job), hook) else {
        // Refused (NULL job or hook): user_data is still released, once,
        // as the header promises.
        if let Some(free) = free_user_data {
            free(user_data);
        }
        return -1;
    };
    let foreign = ForeignHook {
        hook,
        user_data,
        free_user_data,
        plugin_abi_minor: h.plugin_abi_minor,
    };
    let name = format!("{} plugin hook", h.plugin_name);
    h.ctx
        .on_shutdown(name, move |info: &ShutdownInfo| foreign.call(info));
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

/// The `LK_EVENT_*` code of `ev`, and the ABI minor that defined it.
fn kind_code(ev: &Event) -> u32 {
    match ev {
        Event::ParticipantJoined { .. } => LK_EVENT_PARTICIPANT_JOINED,
        Event::ParticipantLeft { .. } => LK_EVENT_PARTICIPANT_LEFT,
        Event::TrackPublished { .. } => LK_EVENT_TRACK_PUBLISHED,
        Event::TrackUnpublished { .. } => LK_EVENT_TRACK_UNPUBLISHED,
        Event::TrackSubscribed { .. } => LK_EVENT_TRACK_SUBSCRIBED,
        Event::TrackUnsubscribed { .. } => LK_EVENT_TRACK_UNSUBSCRIBED,
        Event::Disconnected { .. } => LK_EVENT_DISCONNECTED,
        Event::Reconnecting { .. } => LK_EVENT_RECONNECTING,
        Event::Reconnected { .. } => LK_EVENT_RECONNECTED,
        Event::TrackMuted { .. } => LK_EVENT_TRACK_MUTED,
        Event::TrackUnmuted { .. } => LK_EVENT_TRACK_UNMUTED,
        Event::LocalTrackSubscribed { .. } => LK_EVENT_LOCAL_TRACK_SUBSCRIBED,
    }
}

/// The ABI minor whose header first defines `ev`'s kind: a plugin built
/// against an older minor never receives it (lk_plugin.h, "Versioning").
fn kind_minor(ev: &Event) -> u16 {
    match ev {
        Event::Reconnecting { .. } | Event::Reconnected { .. } => 2,
        Event::TrackMuted { .. }
        | Event::TrackUnmuted { .. }
        | Event::LocalTrackSubscribed { .. } => 4,
        _ => 0,
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
            Event::Disconnected { reason, .. } | Event::Reconnecting { reason, .. } => {
                reason.as_str().to_string()
            }
            Event::Reconnected { resumed: true, .. } => "resumed".to_string(),
            Event::Reconnected { resumed: false, .. } => "rejoined".to_string(),
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

/// Hands `r` to the plugin; `None` when the event is of a kind the
/// plugin's ABI minor does not define (it is skipped, not delivered).
fn deliver(r: Received, plugin_minor: u16, out: &mut LkEvent, missed: *mut u64) -> Option<i32> {
    Some(match r {
        Received::Event(ev) if kind_minor(&ev) > plugin_minor => return None,
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
    })
}

/// Hands the plugin the first event already buffered that its ABI minor
/// defines (skipping newer kinds); `None` when nothing deliverable is
/// buffered.
fn deliver_buffered(
    sub: &mut Subscription,
    minor: u16,
    out: &mut LkEvent,
    missed: *mut u64,
) -> Option<i32> {
    while let Some(r) = sub.try_recv() {
        if let Some(rc) = deliver(r, minor, out, missed) {
            return Some(rc);
        }
    }
    None
}

pub(crate) unsafe extern "C" fn api_next_event(
    job: *const LkJob,
    timeout_ms: u32,
    out: *mut LkEvent,
    missed: *mut u64,
) -> i32 {
    let (Some(h), Some(out)) = (handle(job), out.as_mut()) else {
        return LK_NEXT_INVALID;
    };
    *out = LkEvent::zeroed();
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    // The subscription has one reader at a time. A caller waits for it no
    // longer than its own timeout (or until shutdown), so a short
    // `next_event` is never held up by another thread's long one.
    let lock = wait::until(deadline, async {
        tokio::select! {
            biased;
            guard = h.events.lock() => Some(guard),
            _ = h.ctx.cancelled() => None,
        }
    });
    let mut guard = match lock {
        Some(Some(guard)) => guard,
        // Shutting down: take a buffered event if the lock is free at once.
        Some(None) => match h.events.try_lock() {
            Ok(guard) => guard,
            Err(_) => return LK_NEXT_SHUTTING_DOWN,
        },
        None => return LK_NEXT_TIMEOUT,
    };
    let Some(sub) = guard.as_mut() else {
        // Retired: the job is over.
        return LK_NEXT_SHUTTING_DOWN;
    };
    let minor = h.plugin_abi_minor;
    // Events already buffered come first, even during shutdown, so a plugin
    // sees e.g. the Disconnected event that caused the shutdown.
    if let Some(rc) = deliver_buffered(sub, minor, out, missed) {
        return rc;
    }
    if h.ctx.is_shutting_down() {
        return LK_NEXT_SHUTTING_DOWN;
    }
    enum Waited {
        Got(Received),
        ShuttingDown,
    }
    loop {
        let waited = wait::until(deadline, async {
            // Biased towards events: the event that caused a shutdown (e.g.
            // Disconnected) is published before the token is cancelled, so
            // both branches can be ready at once, and the event must win.
            tokio::select! {
                biased;
                r = sub.recv() => Waited::Got(r),
                _ = h.ctx.cancelled() => Waited::ShuttingDown,
            }
        });
        match waited {
            Some(Waited::Got(r)) => {
                if let Some(rc) = deliver(r, minor, out, missed) {
                    return rc;
                }
            }
            Some(Waited::ShuttingDown) => {
                return deliver_buffered(sub, minor, out, missed).unwrap_or(LK_NEXT_SHUTTING_DOWN);
            }
            None => return LK_NEXT_TIMEOUT,
        }
    }
}

pub(crate) unsafe extern "C" fn api_event_release(_job: *const LkJob, event: *mut LkEvent) {
    if let Some(ev) = event.as_mut() {
        if !ev.host_private.is_null() {
            drop(Box::from_raw(ev.host_private as *mut OwnedEvent));
        }
        *ev = LkEvent::zeroed();
    }
}

pub(crate) unsafe extern "C" fn api_log(
    job: *const LkJob,
    level: i32,
    msg: *const c_char,
    len: usize,
) {
    let plugin = handle(job).map_or("?", |h| h.plugin_name.as_str());
    let (msg, cut) = plugin_text(msg, len, MAX_LOG_LEN);
    let mut msg = as_log_line(&msg);
    if cut > 0 {
        use std::fmt::Write;
        let _ = write!(msg, " [cut: message longer than {MAX_LOG_LEN} bytes]");
    }
    match level {
        LK_LOG_ERROR => tracing::error!(target: "plugin", plugin, "{msg}"),
        LK_LOG_WARN => tracing::warn!(target: "plugin", plugin, "{msg}"),
        LK_LOG_INFO => tracing::info!(target: "plugin", plugin, "{msg}"),
        LK_LOG_DEBUG => tracing::debug!(target: "plugin", plugin, "{msg}"),
        _ => tracing::trace!(target: "plugin", plugin, "{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::handle::{JobHandle, MAX_BELIEVED_LEN};
    use super::*;
    use crate::events::{EventHub, ParticipantRef};
    use crate::job::{HookTimeouts, JobContext};

    fn leaked_handle(hub: &EventHub) -> &'static JobHandle {
        JobHandle::new(
            "job-1".into(),
            "room".into(),
            String::new(),
            "agent".into(),
            "test".into(),
            LK_ABI_MINOR,
            JobContext::new(HookTimeouts::default()),
            Some(hub.subscribe()),
            crate::plugin::handle::JobMedia::new(None, None),
            Default::default(),
        )
        .leak()
    }

    #[derive(Clone, Copy)]
    struct Job(*const LkJob);
    // SAFETY: points at a leaked JobHandle (Sync).
    unsafe impl Send for Job {}

    fn next(job: Job, timeout_ms: u32) -> i32 {
        let mut ev = LkEvent::zeroed();
        // SAFETY: a valid handle and out pointer.
        unsafe {
            let rc = api_next_event(job.0, timeout_ms, &mut ev, std::ptr::null_mut());
            api_event_release(job.0, &mut ev);
            rc
        }
    }

    /// `next_event(0)` used to block behind another thread's
    /// `next_event(3000)` for the whole 3 s (a mutex held across the wait).
    #[test]
    fn a_short_next_event_is_not_held_up_by_a_long_one() {
        let hub = EventHub::new(16);
        let h = leaked_handle(&hub);
        let job = Job(h.as_abi());
        let long = std::thread::spawn(move || next(job, 3000));
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.events.try_lock().is_ok() {
            assert!(Instant::now() < deadline, "the long call never waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        assert_eq!(next(job, 0), LK_NEXT_TIMEOUT);
        let took = t.elapsed();
        eprintln!("MEASURED next_event(0) beside a waiting next_event(3000): {took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
        hub.publish(Event::ParticipantJoined {
            participant: ParticipantRef {
                identity: "alice".into(),
                sid: "PA_a".into(),
            },
        });
        assert_eq!(long.join().unwrap(), LK_NEXT_EVENT);
    }

    /// A plugin's shutdown reason with a newline used to reach the log,
    /// the server's job status and the final error line as two lines.
    #[test]
    fn a_shutdown_reason_is_kept_on_one_line() {
        let hub = EventHub::new(16);
        let h = leaked_handle(&hub);
        let reason = "bye\nlk-go: error: fake\x1b[31m\tend";
        // SAFETY: a valid handle and a buffer of that length.
        unsafe { api_shutdown(h.as_abi(), reason.as_ptr() as *const c_char, reason.len()) };
        let info = h.ctx.shutdown_info().expect("shutdown began");
        assert_eq!(info.detail, "bye lk-go: error: fake [31m\tend");
    }

    /// Shutdown wakes every waiter within its poll, whoever holds the lock.
    #[test]
    fn shutdown_wakes_every_waiting_next_event() {
        let hub = EventHub::new(16);
        let h = leaked_handle(&hub);
        let job = Job(h.as_abi());
        let waiters: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || next(job, 30_000)))
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        h.ctx.shutdown(ShutdownReason::SignalSigterm, "");
        for w in waiters {
            assert_eq!(w.join().unwrap(), LK_NEXT_SHUTTING_DOWN);
        }
        // The header promises ~100 ms; 1 s is the safety net on a busy CI.
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    /// Many plugin threads reading one job's events with short timeouts
    /// while the room publishes: every event is delivered exactly once, and
    /// every reader returns "shutting down" after shutdown.
    #[test]
    fn stress_many_readers_get_each_event_exactly_once() {
        const EVENTS: usize = 2000;
        let hub = EventHub::new(4096);
        let h = leaked_handle(&hub);
        let job = Job(h.as_abi());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let readers: Vec<_> = (0..8u32)
            .map(|i| {
                let seen = seen.clone();
                std::thread::spawn(move || loop {
                    // The whole wrapper (Send), not its raw field.
                    let job = job;
                    let mut ev = LkEvent::zeroed();
                    // SAFETY: a valid handle and out pointer.
                    let rc = unsafe {
                        api_next_event(job.0, (i % 3) * 5, &mut ev, std::ptr::null_mut())
                    };
                    match rc {
                        LK_NEXT_EVENT => {
                            // SAFETY: filled by next_event, released below.
                            let sid = unsafe { ev.participant_sid.to_string_lossy() };
                            seen.lock().unwrap().push(sid);
                            unsafe { api_event_release(job.0, &mut ev) };
                        }
                        LK_NEXT_TIMEOUT => {}
                        LK_NEXT_SHUTTING_DOWN => return,
                        other => panic!("unexpected next_event result {other}"),
                    }
                })
            })
            .collect();
        for i in 0..EVENTS {
            hub.publish(Event::ParticipantJoined {
                participant: ParticipantRef {
                    identity: format!("p{i}"),
                    sid: format!("PA_{i:05}"),
                },
            });
            if i % 64 == 0 {
                std::thread::yield_now();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.lock().unwrap().len() < EVENTS && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        h.ctx.shutdown(ShutdownReason::PluginReturned, "");
        for r in readers {
            r.join().unwrap();
        }
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        let expected: Vec<String> = (0..EVENTS).map(|i| format!("PA_{i:05}")).collect();
        assert_eq!(got, expected, "each event exactly once");
    }

    /// After the job ended the handle answers as documented, and its
    /// strings are still the job's.
    #[test]
    fn a_retired_handle_answers_as_after_shutdown() {
        let hub = EventHub::new(16);
        let h = leaked_handle(&hub);
        let job = Job(h.as_abi());
        h.ctx.shutdown(ShutdownReason::PluginReturned, "");
        h.retire();
        drop(hub);
        assert_eq!(next(job, 1000), LK_NEXT_SHUTTING_DOWN);
        // SAFETY: a valid (leaked) handle.
        unsafe {
            assert_eq!(api_room_name(job.0).to_string_lossy(), "room");
            assert_eq!(api_is_shutting_down(job.0), 1);
            api_shutdown(job.0, std::ptr::null(), usize::MAX);
        }
    }

    #[test]
    fn unbelievable_lengths_are_read_as_nul_terminated() {
        let s = b"hello\0world";
        let p = s.as_ptr() as *const c_char;
        // SAFETY: `s` is NUL-terminated after "hello".
        unsafe {
            assert_eq!(plugin_text(p, usize::MAX, 64), ("hello".into(), 0));
            assert_eq!(
                plugin_text(p, MAX_BELIEVED_LEN + 1, 64),
                ("hello".into(), 0)
            );
            assert_eq!(plugin_text(p, usize::MAX, 3), ("hel".into(), 1));
            assert_eq!(plugin_text(p, 5, 64), ("hello".into(), 0));
            assert_eq!(plugin_text(p, 11, 4), ("hell".into(), 7));
            assert_eq!(
                plugin_text(std::ptr::null(), usize::MAX, 4),
                (String::new(), 0)
            );
        }
    }
}
