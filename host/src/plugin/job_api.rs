//! The host's implementation of the ABI 1.4 functions about the job
//! itself: what its dispatch says, whether its participant leaving ends
//! it, and waiting for a subscriber of its own track.
//!
//! Owns: those `api_*` functions (the table is [`super::table`]). Each
//! tolerates NULL and any thread, and never unwinds into the plugin. Must
//! not touch: the room or the runner (the runner reads
//! `JobHandle::close_on_participant_left`).

use super::handle::{deadline_after, handle, SourceHandle};
use crate::media::source::CaptureEnd;
use lk_plugin_api::abi::*;
use std::sync::atomic::Ordering;

pub(crate) unsafe extern "C" fn api_job_participant_identity(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| {
        LkStr::borrow(&h.dispatch.participant_identity)
    })
}

pub(crate) unsafe extern "C" fn api_agent_name(job: *const LkJob) -> LkStr {
    handle(job).map_or(LkStr::EMPTY, |h| LkStr::borrow(&h.dispatch.agent_name))
}

pub(crate) unsafe extern "C" fn api_job_attributes(
    job: *const LkJob,
    keys: *mut LkStr,
    values: *mut LkStr,
    cap: usize,
) -> usize {
    let Some(h) = handle(job) else {
        return 0;
    };
    let attributes = &h.dispatch.attributes;
    if !keys.is_null() && !values.is_null() {
        for (i, (k, v)) in attributes.iter().take(cap).enumerate() {
            // The handle is leaked: these strings live as long as the process.
            *keys.add(i) = LkStr::borrow(k);
            *values.add(i) = LkStr::borrow(v);
        }
    }
    attributes.len()
}

pub(crate) unsafe extern "C" fn api_set_close_on_participant_left(job: *const LkJob, close: i32) {
    if let Some(h) = handle(job) {
        h.close_on_participant_left
            .store(close != 0, Ordering::Release);
        tracing::debug!(target: "plugin", plugin = %h.plugin_name, close = close != 0, "close on participant left");
    }
}

pub(crate) unsafe extern "C" fn api_audio_source_wait_subscribed(
    source: *mut LkAudioSource,
    timeout_ms: u32,
) -> i32 {
    let Some(s) = (source as *const SourceHandle).as_ref() else {
        return LK_ERR_INVALID;
    };
    let job = s.job;
    let stop = || job.ctx.is_shutting_down();
    match s.queue.wait_subscribed(deadline_after(timeout_ms), &stop) {
        Ok(()) => LK_OK,
        Err(CaptureEnd::Timeout) => LK_TIMEOUT,
        Err(CaptureEnd::Stopped) => LK_SHUTTING_DOWN,
        Err(CaptureEnd::Closed) | Err(CaptureEnd::Cleared) => LK_ERR_CLOSED,
    }
}
