//! The host-owned state behind the ABI's opaque pointers, and reading what
//! a plugin passes in.
//!
//! Owns: [`JobHandle`] (what `lk_job*` points at) with its media state
//! ([`JobMedia`], [`StreamHandle`], [`SourceHandle`]), and the helpers
//! every `*_api` module uses to read a plugin's arguments without trusting
//! them ([`plugin_text`], [`read_strs`], [`bad_str`], [`warn_invalid`]).
//!
//! Architecture invariant: **a `lk_job*` and every string the host returned
//! for it stay valid for the life of the process.** A handle is leaked when
//! the job starts ([`JobHandle::leak`]); when the job ends it is *retired*:
//! its event subscription is dropped (so the room's events are freed) and
//! every function answers as after shutdown (`next_event` → shutting down,
//! `shutdown` a no-op, `on_shutdown` runs the hook at once). A plugin thread
//! that outlives `run` therefore never reads freed memory. The cost is one
//! small allocation per job (ids and names, well under 1 KiB with default
//! limits); the worker runs one job per process, so nothing accumulates.
//! Stream and source handles are leaked the same way (a few dozen bytes
//! each); close only empties them, so a call racing a close answers
//! `LK_ERR_CLOSED` instead of reading freed memory.
//!
//! API boundary: the layer under the `*_api` modules (which implement the
//! table's functions) and the table itself (`super::table`); it calls none
//! of them. Must not touch: the cascade or exit codes (`crate::runner`).

use super::wait;
use crate::events::Subscription;
use crate::job::JobContext;
use crate::media::decode::Frame;
use crate::media::lane::Lane;
use crate::media::source::SourceQueue;
use crate::media::DataIn;
use crate::room::MediaAccess;
use lk_plugin_api::abi::*;
use std::ffi::c_char;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest log message the host keeps, in bytes; longer ones are cut and
/// say so (`LK_MAX_LOG_LEN` in the header).
pub const MAX_LOG_LEN: usize = LK_MAX_LOG_LEN;
/// Longest shutdown reason the host keeps, in bytes (`LK_MAX_REASON_LEN`).
pub const MAX_REASON_LEN: usize = LK_MAX_REASON_LEN;
/// A length above this is not believed: the host reads the string as
/// NUL-terminated instead (`LK_STR_NUL_TERMINATED`, i.e. `(size_t)-1`, is
/// the usual C way to say so). See the header's "Lengths" paragraph.
pub const MAX_BELIEVED_LEN: usize = LK_MAX_BELIEVED_LEN;

/// Longest topic, attribute key/value and metadata the host reads, bytes.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Most destination identities / attributes in one call.
pub const MAX_ITEMS: usize = 1024;

/// What `lk_job*` points at. Leaked for the life of the process (see the
/// module doc); all fields are immutable except the event subscription.
pub(crate) struct JobHandle {
    pub(crate) job_id: String,
    pub(crate) room_name: String,
    pub(crate) metadata: String,
    pub(crate) identity: String,
    pub(crate) plugin_name: String,
    /// The ABI minor the plugin was built against: it never sees a value its
    /// header does not define.
    pub(crate) plugin_abi_minor: u16,
    pub(crate) ctx: JobContext,
    /// `None` once the job is retired. An async mutex so that a waiting
    /// `next_event` can give up on the lock at its own deadline.
    pub(crate) events: tokio::sync::Mutex<Option<Subscription>>,
    /// ABI 1.3: the room's media as this job sees it.
    pub(crate) media: JobMedia,
    /// ABI 1.4: what the dispatch says about the job; its strings are
    /// handed out for the life of the process.
    pub(crate) dispatch: crate::job::Dispatch,
    /// ABI 1.4: `set_close_on_participant_left` (default on).
    pub(crate) close_on_participant_left: std::sync::atomic::AtomicBool,
}

impl JobHandle {
    /// A handle for one job (see the fields); leak it with [`JobHandle::leak`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        job_id: String,
        room_name: String,
        metadata: String,
        identity: String,
        plugin_name: String,
        plugin_abi_minor: u16,
        ctx: JobContext,
        events: Option<Subscription>,
        media: JobMedia,
        dispatch: crate::job::Dispatch,
    ) -> JobHandle {
        // Every waiting call of the plugin API parks on the stop bell
        // instead of polling for shutdown; this is what wakes them.
        ctx.on_shutdown_began(crate::media::bell::ring);
        JobHandle {
            job_id,
            room_name,
            metadata,
            identity,
            plugin_name,
            plugin_abi_minor,
            ctx,
            events: tokio::sync::Mutex::new(events),
            media,
            dispatch,
            close_on_participant_left: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Moves the handle to the heap for the rest of the process.
    pub(crate) fn leak(self) -> &'static JobHandle {
        Box::leak(Box::new(self))
    }

    pub(crate) fn as_abi(&'static self) -> *const LkJob {
        self as *const JobHandle as *const LkJob
    }

    /// Ends the job's view of the room: drops the event subscription. Called
    /// by the runner once the cascade is over (shutdown has begun, so a
    /// `next_event` holding the lock returns within its poll).
    pub(crate) fn retire(&self) {
        self.media.close_all();
        if let Some(access) = &self.media.access {
            access.data.close_all();
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        match wait::until(deadline, self.events.lock()) {
            Some(mut guard) => *guard = None,
            None => tracing::debug!("event subscription still in use at retirement; kept"),
        }
    }
}

/// # Safety
/// `job` is NULL or a pointer the host passed to `run` (valid forever).
pub(crate) unsafe fn handle<'a>(job: *const LkJob) -> Option<&'a JobHandle> {
    (job as *const JobHandle).as_ref()
}

/// Reads a string a plugin passed in, never trusting its length: a length
/// above [`MAX_BELIEVED_LEN`] (e.g. `(size_t)-1`) means "NUL-terminated";
/// at most `cap` bytes are read either way. Invalid UTF-8 is replaced.
/// Returns the text and how many bytes were cut.
///
/// # Safety
/// `ptr` is NULL or points at `min(len, cap)` readable bytes (or, for an
/// unbelievable length, at a NUL-terminated string).
pub(crate) unsafe fn plugin_text(ptr: *const c_char, len: usize, cap: usize) -> (String, usize) {
    if ptr.is_null() || len == 0 {
        return (String::new(), 0);
    }
    let bytes = ptr as *const u8;
    let (n, cut) = if len > MAX_BELIEVED_LEN {
        let mut n = 0;
        while n < cap && *bytes.add(n) != 0 {
            n += 1;
        }
        // Past the cap, the real length is unknown: report one byte cut.
        let cut = usize::from(n == cap && *bytes.add(n) != 0);
        (n, cut)
    } else {
        (len.min(cap), len.saturating_sub(cap))
    };
    let slice = std::slice::from_raw_parts(bytes, n);
    (String::from_utf8_lossy(slice).into_owned(), cut)
}

/// A plugin's text as one log line: a newline or escape sequence must not
/// start a line of its own (e.g. a fake `lk-go: error:`); tabs stay.
pub(crate) fn as_log_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

/// A job's media state; part of the leaked [`JobHandle`].
pub(crate) struct JobMedia {
    pub(crate) access: Option<MediaAccess>,
    pub(crate) rt: Option<tokio::runtime::Handle>,
    /// A packet held back while `next_data` reported LK_MISSED first.
    pub(crate) stash: Mutex<Option<DataIn>>,
    pub(crate) open_streams: Mutex<Vec<&'static StreamHandle>>,
    pub(crate) open_sources: Mutex<Vec<&'static SourceHandle>>,
}

impl JobMedia {
    pub(crate) fn new(access: Option<MediaAccess>, rt: Option<tokio::runtime::Handle>) -> JobMedia {
        JobMedia {
            access,
            rt,
            stash: Mutex::new(None),
            open_streams: Mutex::new(Vec::new()),
            open_sources: Mutex::new(Vec::new()),
        }
    }

    /// Closes every stream and source the plugin left open (the job ended).
    pub(crate) fn close_all(&self) {
        for s in std::mem::take(&mut *self.open_streams.lock().unwrap_or_else(|e| e.into_inner())) {
            s.close();
        }
        for s in std::mem::take(&mut *self.open_sources.lock().unwrap_or_else(|e| e.into_inner())) {
            s.close();
        }
    }
}

/// What `lk_audio_stream*` points at.
pub(crate) struct StreamHandle {
    pub(crate) job: &'static JobHandle,
    pub(crate) lane: Mutex<Option<Arc<Lane<Frame>>>>,
    /// One reader at a time.
    pub(crate) reading: Mutex<()>,
}

impl StreamHandle {
    pub(crate) fn close(&self) {
        if let Some(lane) = self.lane.lock().unwrap_or_else(|e| e.into_inner()).take() {
            lane.close();
        }
    }
}

/// What `lk_audio_source*` points at.
pub(crate) struct SourceHandle {
    pub(crate) job: &'static JobHandle,
    pub(crate) queue: Arc<SourceQueue>,
    pub(crate) track_sid: String,
    /// Set by the first close (the queue may also close on its own when
    /// the session ends or sending fails; the track is unpublished anyway).
    pub(crate) closed: std::sync::atomic::AtomicBool,
}

impl SourceHandle {
    pub(crate) fn close(&self) {
        if self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        self.queue.close();
        if let (Some(access), Some(rt)) = (&self.job.media.access, &self.job.media.rt) {
            let link = access.link.clone();
            let sid = self.track_sid.clone();
            rt.spawn(async move { link.unpublish_track(&sid).await });
        }
    }
}

pub(crate) fn warn_invalid(job: &JobHandle, call: &str, why: &str) -> i32 {
    tracing::warn!(target: "plugin", plugin = %job.plugin_name, "{call}: {why}; returning LK_ERR_INVALID");
    LK_ERR_INVALID
}

pub(crate) fn deadline_after(timeout_ms: u32) -> Instant {
    Instant::now() + Duration::from_millis(timeout_ms as u64)
}

/// A string a plugin passed that cannot be read: NULL with a length.
pub(crate) fn bad_str(s: &LkStr) -> bool {
    s.ptr.is_null() && s.len > 0
}

/// # Safety
/// `items` is NULL or points at `n` readable `LkStr`s.
pub(crate) unsafe fn read_strs(items: *const LkStr, n: usize) -> Vec<String> {
    if items.is_null() || n == 0 {
        return Vec::new();
    }
    std::slice::from_raw_parts(items, n)
        .iter()
        .map(|s| plugin_text(s.ptr, s.len, MAX_TEXT_LEN).0)
        .collect()
}
