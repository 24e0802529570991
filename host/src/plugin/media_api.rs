//! The host's implementation of the ABI 1.3 functions: audio streams,
//! audio sources, user data packets, attributes and metadata.
//!
//! Owns: the `api_*` functions the table ([`super::table`]) points at
//! for ABI 1.3. Every function tolerates NULL and out-of-range arguments
//! (`LK_ERR_INVALID`, with a log line saying which), any thread, and never
//! unwinds into the plugin. The handles they hand out ([`JobMedia`],
//! [`StreamHandle`], [`SourceHandle`]) and why their memory outlives every
//! call live in [`super::handle`].
//!
//! Must not touch: WebRTC or the session's state: async room work (publish,
//! send, update) is spawned on the job's runtime and awaited with the
//! caller's deadline through `wait::until`, so a plugin thread never blocks
//! a runtime thread and survives the runtime's end.

use super::handle::{
    bad_str, deadline_after, handle, plugin_text, read_strs, warn_invalid, JobHandle, SourceHandle,
    StreamHandle,
};
use super::wait::{self, ignore, lock_within, run_on_room, Ran};
use crate::media::decode::Frame;
use crate::media::lane::PopEnd;
use crate::media::source::{CaptureEnd, SourceQueue};
use crate::media::{AudioFormat, DataIn, OpenError};
use crate::room::{rtc::DataError, rtc::PublishError, OutgoingData};
use lk_plugin_api::abi::*;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use super::handle::{MAX_ITEMS, MAX_TEXT_LEN};
/// Longest data topic, bytes.
pub const MAX_TOPIC_LEN: usize = 256;
/// Longest destination identity, bytes (the job's own identity limit).
pub const MAX_IDENTITY_LEN: usize = 256;
/// How long `audio_source_publish` waits for the server, at most.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

/// # Safety
/// `fmt` is NULL or points at a readable `lk_audio_format`.
unsafe fn read_format(fmt: *const LkAudioFormat) -> Option<LkAudioFormat> {
    fmt.as_ref().copied()
}

pub(crate) unsafe extern "C" fn api_audio_stream_open(
    job: *const LkJob,
    track_sid: LkStr,
    fmt: *const LkAudioFormat,
    out: *mut *mut LkAudioStream,
) -> i32 {
    let Some(h) = handle(job) else {
        return LK_ERR_INVALID;
    };
    let h: &'static JobHandle = &*(h as *const JobHandle);
    if out.is_null() {
        return warn_invalid(h, "audio_stream_open", "out is NULL");
    }
    *out = std::ptr::null_mut();
    let Some(f) = read_format(fmt) else {
        return warn_invalid(h, "audio_stream_open", "fmt is NULL");
    };
    if bad_str(&track_sid) {
        return warn_invalid(h, "audio_stream_open", "track_sid is NULL with a length");
    }
    let format =
        match AudioFormat::for_stream(f.sample_rate, f.num_channels, f.frame_ms, f.queue_ms) {
            Ok(format) => format,
            Err(why) => return warn_invalid(h, "audio_stream_open", &why),
        };
    if h.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    let Some(access) = &h.media.access else {
        return LK_ERR_NOT_FOUND;
    };
    let (sid, _) = plugin_text(track_sid.ptr, track_sid.len, MAX_TEXT_LEN);
    match access.hub.open_stream(&sid, format) {
        Ok(lane) => {
            let stream: &'static StreamHandle = Box::leak(Box::new(StreamHandle {
                job: h,
                lane: Mutex::new(Some(lane)),
                reading: Mutex::new(()),
            }));
            h.media
                .open_streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(stream);
            tracing::info!(target: "plugin", plugin = %h.plugin_name, track_sid = %sid, rate = format.sample_rate, channels = format.num_channels, frame_ms = format.frame_ms, "audio stream opened");
            *out = stream as *const StreamHandle as *mut LkAudioStream;
            LK_OK
        }
        Err(OpenError::NotFound) => LK_ERR_NOT_FOUND,
        Err(OpenError::Unsupported(why)) => {
            tracing::warn!(target: "plugin", plugin = %h.plugin_name, "audio_stream_open: {why}");
            LK_ERR_UNSUPPORTED
        }
        Err(OpenError::Invalid(why)) => warn_invalid(h, "audio_stream_open", &why),
    }
}

pub(crate) unsafe extern "C" fn api_audio_stream_read(
    stream: *mut LkAudioStream,
    pcm: *mut i16,
    pcm_cap: usize,
    timeout_ms: u32,
    info: *mut LkAudioFrameInfo,
) -> i32 {
    let Some(s) = (stream as *const StreamHandle).as_ref() else {
        return LK_ERR_INVALID;
    };
    if pcm.is_null() {
        return warn_invalid(s.job, "audio_stream_read", "pcm is NULL");
    }
    let deadline = deadline_after(timeout_ms);
    let job = s.job;
    let stop = || job.ctx.is_shutting_down();
    // Shutdown first, as capture does: after the job every call says so.
    if stop() {
        return LK_SHUTTING_DOWN;
    }
    let Some(lane) = s.lane.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return LK_ERR_CLOSED;
    };
    // One reader at a time; a second waits for the first within its own timeout.
    let _reading = match lock_within(&s.reading, deadline, &stop) {
        Ok(g) => g,
        Err(rc) => return rc,
    };
    let fits = |f: &Frame| f.pcm.len() <= pcm_cap;
    match lane.pop(deadline, &stop, &fits) {
        Ok((frame, dropped)) => {
            std::ptr::copy_nonoverlapping(frame.pcm.as_ptr(), pcm, frame.pcm.len());
            if let Some(info) = info.as_mut() {
                *info = LkAudioFrameInfo {
                    samples_per_channel: frame.samples_per_channel,
                    flags: frame.flags,
                    pts_us: frame.pts_us,
                    dropped_frames: dropped,
                };
            }
            LK_OK
        }
        Err(PopEnd::Timeout) => LK_TIMEOUT,
        Err(PopEnd::Ended) => LK_ENDED,
        Err(PopEnd::Closed) => LK_ERR_CLOSED,
        Err(PopEnd::Stopped) => LK_SHUTTING_DOWN,
        Err(PopEnd::Refused) => LK_ERR_TOO_LARGE,
    }
}

pub(crate) unsafe extern "C" fn api_audio_stream_close(stream: *mut LkAudioStream) {
    if let Some(s) = (stream as *const StreamHandle).as_ref() {
        s.close();
    }
}

pub(crate) unsafe extern "C" fn api_audio_source_publish(
    job: *const LkJob,
    track_name: LkStr,
    fmt: *const LkAudioFormat,
    out: *mut *mut LkAudioSource,
    track_sid: *mut LkStr,
) -> i32 {
    let Some(h) = handle(job) else {
        return LK_ERR_INVALID;
    };
    let h: &'static JobHandle = &*(h as *const JobHandle);
    if out.is_null() {
        return warn_invalid(h, "audio_source_publish", "out is NULL");
    }
    *out = std::ptr::null_mut();
    if let Some(sid) = track_sid.as_mut() {
        *sid = LkStr::EMPTY;
    }
    let Some(f) = read_format(fmt) else {
        return warn_invalid(h, "audio_source_publish", "fmt is NULL");
    };
    let format = match AudioFormat::for_source(f.sample_rate, f.num_channels, f.queue_ms) {
        Ok(format) => format,
        Err(why) => return warn_invalid(h, "audio_source_publish", &why),
    };
    if h.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    let Some(access) = h.media.access.clone() else {
        return LK_ERR_NOT_CONNECTED;
    };
    let (mut name, _) = plugin_text(track_name.ptr, track_name.len, 256);
    if name.is_empty() {
        name = "microphone".into();
    }
    let queue = Arc::new(SourceQueue::new(
        format.sample_rate,
        format.num_channels,
        format.queue_ms,
    ));
    let q = queue.clone();
    let link = access.link.clone();
    let late_q = queue.clone();
    let published = run_on_room(
        h.media.rt.as_ref(),
        &h.ctx,
        Instant::now() + PUBLISH_TIMEOUT,
        async move { access.link.publish_audio(&name, q).await },
        move |late: Result<crate::events::TrackRef, PublishError>| {
            // The plugin gave up (timeout, shutdown): nobody holds this
            // track, so it must not stay published as a silent microphone.
            late_q.close();
            if let Ok(track) = late {
                tokio::spawn(async move { link.unpublish_track(&track.sid).await });
            }
        },
    );
    let track = match published {
        Ran::Done(Ok(track)) => track,
        Ran::Done(Err(PublishError::NotConnected)) => return LK_ERR_NOT_CONNECTED,
        Ran::Done(Err(e)) => {
            tracing::warn!(target: "plugin", plugin = %h.plugin_name, error = %e, "audio_source_publish failed");
            return LK_ERR_REFUSED;
        }
        Ran::Timeout => {
            queue.close();
            tracing::warn!(target: "plugin", plugin = %h.plugin_name, "audio_source_publish: no answer from the server within {PUBLISH_TIMEOUT:?}");
            return LK_ERR_REFUSED;
        }
        Ran::ShuttingDown => {
            queue.close();
            return LK_SHUTTING_DOWN;
        }
    };
    let source: &'static SourceHandle = Box::leak(Box::new(SourceHandle {
        job: h,
        queue,
        track_sid: track.sid,
        closed: std::sync::atomic::AtomicBool::new(false),
    }));
    h.media
        .open_sources
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(source);
    if let Some(sid) = track_sid.as_mut() {
        *sid = LkStr::borrow(&source.track_sid);
    }
    *out = source as *const SourceHandle as *mut LkAudioSource;
    LK_OK
}

pub(crate) unsafe extern "C" fn api_audio_source_capture(
    source: *mut LkAudioSource,
    pcm: *const i16,
    samples_per_channel: usize,
    timeout_ms: u32,
) -> i32 {
    let Some(s) = (source as *const SourceHandle).as_ref() else {
        return LK_ERR_INVALID;
    };
    if s.job.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    if s.queue.is_closed() {
        return LK_ERR_CLOSED;
    }
    if samples_per_channel == 0 {
        return LK_OK;
    }
    // At most 10 s in one call: a larger count is a bug, not audio.
    if pcm.is_null() || samples_per_channel > s.queue.rate as usize * 10 {
        return warn_invalid(
            s.job,
            "audio_source_capture",
            "pcm is NULL or longer than 10 s",
        );
    }
    let n = samples_per_channel * s.queue.channels as usize;
    let samples = std::slice::from_raw_parts(pcm, n);
    let job = s.job;
    let stop = || job.ctx.is_shutting_down();
    match s.queue.capture(samples, deadline_after(timeout_ms), &stop) {
        Ok(()) => LK_OK,
        Err(CaptureEnd::Timeout) => LK_TIMEOUT,
        Err(CaptureEnd::Closed) => LK_ERR_CLOSED,
        Err(CaptureEnd::Stopped) => LK_SHUTTING_DOWN,
        // 1.3 has no LK_CLEARED: nothing was copied, as after a timeout.
        Err(CaptureEnd::Cleared) if job.plugin_abi_minor < 4 => LK_TIMEOUT,
        Err(CaptureEnd::Cleared) => LK_CLEARED,
    }
}

pub(crate) unsafe extern "C" fn api_audio_source_clear(source: *mut LkAudioSource) -> u32 {
    match (source as *const SourceHandle).as_ref() {
        Some(s) => {
            let ms = s.queue.clear();
            tracing::debug!(target: "plugin", plugin = %s.job.plugin_name, track_sid = %s.track_sid, dropped_ms = ms, "audio source cleared");
            ms
        }
        None => 0,
    }
}

pub(crate) unsafe extern "C" fn api_audio_source_queued_ms(source: *const LkAudioSource) -> u32 {
    (source as *const SourceHandle)
        .as_ref()
        .map_or(0, |s| s.queue.queued_ms())
}

pub(crate) unsafe extern "C" fn api_audio_source_close(source: *mut LkAudioSource) {
    if let Some(s) = (source as *const SourceHandle).as_ref() {
        s.close();
    }
}

fn data_error_code(job: &JobHandle, call: &str, e: DataError) -> i32 {
    match e {
        DataError::NotConnected => LK_ERR_NOT_CONNECTED,
        DataError::TooLarge(_) => LK_ERR_TOO_LARGE,
        DataError::Timeout(_) => LK_TIMEOUT,
        other => {
            tracing::warn!(target: "plugin", plugin = %job.plugin_name, error = %other, "{call} failed");
            LK_ERR_REFUSED
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe extern "C" fn api_publish_data(
    job: *const LkJob,
    data: *const u8,
    len: usize,
    topic: LkStr,
    destination_identities: *const LkStr,
    n_destinations: usize,
    flags: u32,
    timeout_ms: u32,
) -> i32 {
    let Some(h) = handle(job) else {
        return LK_ERR_INVALID;
    };
    if len > LK_MAX_RELIABLE_DATA {
        return LK_ERR_TOO_LARGE;
    }
    if (data.is_null() && len > 0)
        || n_destinations > MAX_ITEMS
        || (n_destinations > 0 && destination_identities.is_null())
        || bad_str(&topic)
    {
        // A NULL destination list must never become "everyone".
        return warn_invalid(
            h,
            "publish_data",
            "data or destination_identities is NULL with a non-zero count, a NULL topic with a length, or over 1024 destinations",
        );
    }
    if n_destinations > 0
        && std::slice::from_raw_parts(destination_identities, n_destinations)
            .iter()
            .any(bad_str)
    {
        return warn_invalid(
            h,
            "publish_data",
            "a destination identity is NULL with a length",
        );
    }
    if h.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    let Some(access) = h.media.access.clone() else {
        return LK_ERR_NOT_CONNECTED;
    };
    let payload = if len == 0 {
        Vec::new()
    } else {
        std::slice::from_raw_parts(data, len).to_vec()
    };
    let packet = OutgoingData {
        payload,
        topic: plugin_text(topic.ptr, topic.len, MAX_TEXT_LEN).0,
        destination_identities: read_strs(destination_identities, n_destinations),
        reliable: flags & LK_DATA_RELIABLE != 0,
    };
    // The envelope must fit beside the payload (see MAX_DATA_MESSAGE).
    if packet.topic.len() > MAX_TOPIC_LEN
        || packet
            .destination_identities
            .iter()
            .any(|d| d.len() > MAX_IDENTITY_LEN)
    {
        return LK_ERR_TOO_LARGE;
    }
    match run_on_room(
        h.media.rt.as_ref(),
        &h.ctx,
        deadline_after(timeout_ms),
        async move { access.link.publish_data(packet).await },
        ignore,
    ) {
        Ran::Done(Ok(())) => LK_OK,
        Ran::Done(Err(e)) => data_error_code(h, "publish_data", e),
        Ran::Timeout => LK_TIMEOUT,
        Ran::ShuttingDown => LK_SHUTTING_DOWN,
    }
}

/// The packet behind `lk_data_packet.host_private`.
struct OwnedData {
    packet: DataIn,
}

fn fill_data(packet: DataIn, out: &mut LkDataPacket) {
    // Into a raw pointer first, then borrow through it: the views handed
    // out are derived from the allocation that lives until data_release.
    let raw = Box::into_raw(Box::new(OwnedData { packet }));
    // SAFETY: just allocated; freed only by api_data_release.
    let p = unsafe { &(*raw).packet };
    *out = LkDataPacket {
        struct_size: std::mem::size_of::<LkDataPacket>() as u32,
        flags: if p.reliable { LK_DATA_RELIABLE } else { 0 },
        data: if p.payload.is_empty() {
            std::ptr::null()
        } else {
            p.payload.as_ptr()
        },
        len: p.payload.len(),
        topic: LkStr::borrow(&p.topic),
        participant_identity: LkStr::borrow(&p.participant_identity),
        host_private: raw as *mut c_void,
    };
}

pub(crate) unsafe extern "C" fn api_next_data(
    job: *const LkJob,
    timeout_ms: u32,
    out: *mut LkDataPacket,
    missed: *mut u64,
) -> i32 {
    let (Some(h), Some(out)) = (handle(job), out.as_mut()) else {
        return LK_ERR_INVALID;
    };
    if (out.struct_size as usize) < std::mem::size_of::<LkDataPacket>() {
        return warn_invalid(
            h,
            "next_data",
            "out->struct_size is smaller than sizeof(lk_data_packet); set it first",
        );
    }
    *out = LkDataPacket::zeroed();
    let deadline = deadline_after(timeout_ms);
    // One reader at a time, holding the stash: a packet held back while
    // LK_MISSED was reported goes to the very next call, in order. A second
    // caller waits for the first no longer than its own timeout.
    let mut stash = match lock_within(&h.media.stash, deadline, &|| h.ctx.is_shutting_down()) {
        Ok(g) => g,
        Err(rc) => return rc,
    };
    if let Some(p) = stash.take() {
        fill_data(p, out);
        return LK_OK;
    }
    let Some(access) = &h.media.access else {
        // Never connected (shut down while joining): nothing will arrive.
        return match wait::until(deadline, h.ctx.cancelled()) {
            Some(()) => LK_SHUTTING_DOWN,
            None => LK_TIMEOUT,
        };
    };
    let stop = || h.ctx.is_shutting_down();
    match access.hub.data_inbox().pop(deadline, &stop, &|_| true) {
        Ok((packet, 0)) => {
            fill_data(packet, out);
            LK_OK
        }
        Ok((packet, dropped)) => {
            *stash = Some(packet);
            if let Some(m) = missed.as_mut() {
                *m = dropped;
            }
            LK_MISSED
        }
        Err(PopEnd::Stopped) | Err(PopEnd::Ended) | Err(PopEnd::Closed) => LK_SHUTTING_DOWN,
        Err(PopEnd::Timeout) | Err(PopEnd::Refused) => LK_TIMEOUT,
    }
}

pub(crate) unsafe extern "C" fn api_data_release(_job: *const LkJob, packet: *mut LkDataPacket) {
    if let Some(p) = packet.as_mut() {
        if !p.host_private.is_null() {
            drop(Box::from_raw(p.host_private as *mut OwnedData));
        }
        *p = LkDataPacket::zeroed();
    }
}

fn update(
    job: &JobHandle,
    call: &str,
    attributes: HashMap<String, String>,
    metadata: Option<String>,
    timeout_ms: u32,
) -> i32 {
    if job.ctx.is_shutting_down() {
        return LK_SHUTTING_DOWN;
    }
    let Some(access) = job.media.access.clone() else {
        return LK_ERR_NOT_CONNECTED;
    };
    match run_on_room(
        job.media.rt.as_ref(),
        &job.ctx,
        deadline_after(timeout_ms),
        async move { access.link.update_participant(attributes, metadata).await },
        ignore,
    ) {
        Ran::Done(Ok(())) => LK_OK,
        Ran::Done(Err(e)) => data_error_code(job, call, e),
        Ran::Timeout => LK_TIMEOUT,
        Ran::ShuttingDown => LK_SHUTTING_DOWN,
    }
}

pub(crate) unsafe extern "C" fn api_set_attributes(
    job: *const LkJob,
    keys: *const LkStr,
    values: *const LkStr,
    n: usize,
    timeout_ms: u32,
) -> i32 {
    let Some(h) = handle(job) else {
        return LK_ERR_INVALID;
    };
    if n > MAX_ITEMS || (n > 0 && (keys.is_null() || values.is_null())) {
        return warn_invalid(
            h,
            "set_attributes",
            "keys or values is NULL, or n is over 1024",
        );
    }
    if n > 0
        && (std::slice::from_raw_parts(keys, n).iter().any(bad_str)
            || std::slice::from_raw_parts(values, n).iter().any(bad_str))
    {
        return warn_invalid(h, "set_attributes", "a key or value is NULL with a length");
    }
    let keys = read_strs(keys, n);
    let values = read_strs(values, n);
    if keys.iter().any(String::is_empty) {
        return warn_invalid(h, "set_attributes", "an attribute key is empty");
    }
    update(
        h,
        "set_attributes",
        keys.into_iter().zip(values).collect(),
        None,
        timeout_ms,
    )
}

pub(crate) unsafe extern "C" fn api_set_metadata(
    job: *const LkJob,
    metadata: LkStr,
    timeout_ms: u32,
) -> i32 {
    let Some(h) = handle(job) else {
        return LK_ERR_INVALID;
    };
    let (metadata, _) = plugin_text(metadata.ptr, metadata.len, MAX_TEXT_LEN);
    if metadata.is_empty() {
        // livekit-server ignores an empty metadata field (it means "unchanged").
        return warn_invalid(
            h,
            "set_metadata",
            "metadata is empty (the server cannot clear it; set e.g. \"{}\")",
        );
    }
    update(
        h,
        "set_metadata",
        HashMap::new(),
        Some(metadata),
        timeout_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::super::handle::JobMedia;
    use super::*;
    use crate::events::{ParticipantRef, TrackKind, TrackRef, TrackSource};
    use crate::job::{HookTimeouts, JobContext, ShutdownReason};
    use crate::media::MediaHub;
    use crate::room::{DetachedConnector, JoinRequest, Room};

    /// A leaked job handle on a detached room with one subscribed audio
    /// track `TR_mic` fed a second of tone.
    fn job_with_track() -> (
        &'static JobHandle,
        Arc<MediaHub>,
        Arc<crate::media::TrackTap>,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut room = Room::new("r");
        rt.block_on(room.connect(
            &DetachedConnector,
            &JoinRequest {
                room_name: "r".into(),
                identity: "agent".into(),
                job_id: "j".into(),
            },
        ))
        .unwrap();
        let access = room.media_access().unwrap();
        let hub = access.hub.clone();
        let tap = hub.attach_track(
            &ParticipantRef {
                identity: "alice".into(),
                sid: "PA_a".into(),
            },
            &TrackRef {
                sid: "TR_mic".into(),
                name: "mic".into(),
                kind: TrackKind::Audio,
                source: TrackSource::Microphone,
            },
        );
        let handle = JobHandle::new(
            "j".into(),
            "r".into(),
            String::new(),
            "agent".into(),
            "test".into(),
            LK_ABI_MINOR,
            JobContext::new(HookTimeouts::default()),
            None,
            JobMedia::new(Some(access), None),
            Default::default(),
        )
        .leak();
        std::mem::forget(rt);
        (handle, hub, tap)
    }

    fn feed(tap: &crate::media::TrackTap, seconds: usize) {
        let t0 = Instant::now();
        for (i, p) in crate::media::decode::tests::encoded_tone(seconds)
            .into_iter()
            .enumerate()
        {
            tap.on_packet(
                i as u16,
                i as u32 * 960,
                p,
                t0 + Duration::from_millis(20 * i as u64),
            );
        }
        tap.on_tick(
            t0 + Duration::from_millis(20 * 50 * seconds as u64) + Duration::from_millis(60),
        );
    }

    fn fmt48() -> LkAudioFormat {
        LkAudioFormat {
            sample_rate: 48_000,
            num_channels: 1,
            frame_ms: 10,
            queue_ms: 2_000,
        }
    }

    unsafe fn open(h: &'static JobHandle, sid: &str) -> (i32, *mut LkAudioStream) {
        let mut s = std::ptr::null_mut();
        let rc = api_audio_stream_open(
            h as *const JobHandle as *const LkJob,
            LkStr::borrow(sid),
            &fmt48(),
            &mut s,
        );
        (rc, s)
    }

    /// Reads copy whole frames; a buffer too small is refused without
    /// losing the frame; a closed handle (even closed twice) answers
    /// LK_ERR_CLOSED instead of touching freed memory.
    #[test]
    fn read_close_and_misuse() {
        let (h, _hub, tap) = job_with_track();
        unsafe {
            assert_eq!(open(h, "TR_nope").0, LK_ERR_NOT_FOUND);
            let (rc, s) = open(h, "TR_mic");
            assert_eq!(rc, LK_OK);
            feed(&tap, 1);
            let mut small = [0i16; 100];
            let mut info = LkAudioFrameInfo::default();
            assert_eq!(
                api_audio_stream_read(s, small.as_mut_ptr(), small.len(), 0, &mut info),
                LK_ERR_TOO_LARGE
            );
            let mut pcm = [0i16; 480];
            assert_eq!(
                api_audio_stream_read(s, pcm.as_mut_ptr(), pcm.len(), 0, &mut info),
                LK_OK
            );
            assert_eq!(
                (info.samples_per_channel, info.pts_us, info.dropped_frames),
                (480, 0, 0)
            );
            assert_eq!(
                api_audio_stream_read(s, std::ptr::null_mut(), 480, 0, &mut info),
                LK_ERR_INVALID
            );
            api_audio_stream_close(s);
            api_audio_stream_close(s);
            assert_eq!(
                api_audio_stream_read(s, pcm.as_mut_ptr(), pcm.len(), 0, &mut info),
                LK_ERR_CLOSED
            );
            assert_eq!(
                api_audio_stream_read(std::ptr::null_mut(), pcm.as_mut_ptr(), 480, 0, &mut info),
                LK_ERR_INVALID
            );
            let bad = LkAudioFormat {
                frame_ms: 15,
                ..fmt48()
            };
            let mut out = std::ptr::null_mut();
            assert_eq!(
                api_audio_stream_open(
                    h as *const JobHandle as *const LkJob,
                    LkStr::borrow("TR_mic"),
                    &bad,
                    &mut out
                ),
                LK_ERR_INVALID
            );
            assert!(out.is_null());
        }
    }

    /// A read waiting on another thread returns LK_SHUTTING_DOWN within
    /// 100 ms of shutdown; a read after the track ended drains, then ends.
    #[test]
    fn shutdown_and_end_reach_waiting_reads() {
        let (h, hub, tap) = job_with_track();
        let (_, s) = unsafe { open(h, "TR_mic") };
        let s_addr = s as usize;
        let waiter = std::thread::spawn(move || {
            let mut pcm = [0i16; 480];
            let rc = unsafe {
                api_audio_stream_read(
                    s_addr as *mut LkAudioStream,
                    pcm.as_mut_ptr(),
                    480,
                    30_000,
                    std::ptr::null_mut(),
                )
            };
            (rc, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(100));
        let began = Instant::now();
        h.ctx.shutdown(ShutdownReason::RequestedByPlugin, "test");
        let (rc, returned) = waiter.join().unwrap();
        assert_eq!(rc, LK_SHUTTING_DOWN);
        assert!(
            returned.duration_since(began) <= Duration::from_millis(100),
            "{:?}",
            returned.duration_since(began)
        );

        let (h2, _hub2, tap2) = job_with_track();
        let (_, s2) = unsafe { open(h2, "TR_mic") };
        feed(&tap2, 1);
        _hub2.end_track("TR_mic");
        let mut n = 0;
        let mut pcm = [0i16; 480];
        loop {
            match unsafe {
                api_audio_stream_read(s2, pcm.as_mut_ptr(), 480, 1000, std::ptr::null_mut())
            } {
                LK_OK => n += 1,
                rc => {
                    assert_eq!(rc, LK_ENDED);
                    break;
                }
            }
        }
        assert!(n >= 100, "{n}");
        drop((hub, tap));
    }

    /// next_data reports a full inbox as LK_MISSED first, then hands out
    /// the packet it held back; a packet is freed by data_release exactly
    /// once (a second release of the zeroed packet does nothing).
    #[test]
    fn next_data_reports_missed_then_delivers() {
        let (h, hub, _tap) = job_with_track();
        let job = h as *const JobHandle as *const LkJob;
        for i in 0..(crate::media::DATA_INBOX_CAPACITY + 5) {
            hub.push_data(DataIn {
                payload: bytes::Bytes::from(format!("p{i}")),
                topic: "t".into(),
                participant_identity: "alice".into(),
                reliable: true,
            });
        }
        unsafe {
            let mut p = LkDataPacket::zeroed();
            let mut missed = 0u64;
            assert_eq!(api_next_data(job, 0, &mut p, &mut missed), LK_MISSED);
            assert_eq!(missed, 5);
            assert_eq!(api_next_data(job, 0, &mut p, &mut missed), LK_OK);
            assert_eq!(std::slice::from_raw_parts(p.data, p.len), b"p5");
            assert_eq!(p.topic.to_string_lossy(), "t");
            assert_eq!(p.participant_identity.to_string_lossy(), "alice");
            api_data_release(job, &mut p);
            api_data_release(job, &mut p);
            let mut short = LkDataPacket {
                struct_size: 8,
                ..LkDataPacket::zeroed()
            };
            assert_eq!(
                api_next_data(job, 0, &mut short, &mut missed),
                LK_ERR_INVALID
            );
        }
    }

    /// Limits are checked before anything is sent; a detached room has no
    /// server to send to.
    #[test]
    fn publish_data_limits() {
        let (h, _hub, _tap) = job_with_track();
        let job = h as *const JobHandle as *const LkJob;
        let big = vec![0u8; LK_MAX_RELIABLE_DATA + 1];
        unsafe {
            assert_eq!(
                api_publish_data(
                    job,
                    big.as_ptr(),
                    big.len(),
                    LkStr::EMPTY,
                    std::ptr::null(),
                    0,
                    LK_DATA_RELIABLE,
                    0
                ),
                LK_ERR_TOO_LARGE
            );
            assert_eq!(
                api_publish_data(
                    job,
                    std::ptr::null(),
                    10,
                    LkStr::EMPTY,
                    std::ptr::null(),
                    0,
                    0,
                    0
                ),
                LK_ERR_INVALID
            );
            let ok = vec![0u8; LK_MAX_RELIABLE_DATA];
            // A NULL destination list with a count must never mean "everyone".

            assert_eq!(
                api_publish_data(
                    job,
                    ok.as_ptr(),
                    10,
                    LkStr::EMPTY,
                    std::ptr::null(),
                    3,
                    LK_DATA_RELIABLE,
                    100
                ),
                LK_ERR_INVALID
            );

            let long_topic = "t".repeat(MAX_TOPIC_LEN + 1);

            assert_eq!(
                api_publish_data(
                    job,
                    ok.as_ptr(),
                    10,
                    LkStr::borrow(&long_topic),
                    std::ptr::null(),
                    0,
                    0,
                    100
                ),
                LK_ERR_TOO_LARGE
            );
            // No runtime in this handle: reported as shutting down / not connected, never a crash.
            let rc = api_publish_data(
                job,
                ok.as_ptr(),
                ok.len(),
                LkStr::EMPTY,
                std::ptr::null(),
                0,
                LK_DATA_RELIABLE,
                100,
            );
            assert!(rc == LK_SHUTTING_DOWN || rc == LK_ERR_NOT_CONNECTED, "{rc}");
            let key = LkStr::borrow("");
            assert_eq!(api_set_attributes(job, &key, &key, 1, 0), LK_ERR_INVALID);
            assert_eq!(api_set_metadata(job, LkStr::EMPTY, 0), LK_ERR_INVALID);
        }
    }

    /// Barge-in from another thread while a capture waits for room: the
    /// blocked capture used to return LK_OK and queue its 500 ms, which
    /// played after the clear. It returns LK_CLEARED (ABI 1.4) or, to a
    /// 1.3 plugin, LK_TIMEOUT (its header's "nothing copied"); either way
    /// nothing is queued.
    #[test]
    fn a_capture_blocked_across_a_clear_returns_cleared() {
        for (minor, expected) in [(4u16, LK_CLEARED), (3, LK_TIMEOUT)] {
            let job = JobHandle::new(
                "j".into(),
                "r".into(),
                String::new(),
                "agent".into(),
                "test".into(),
                minor,
                JobContext::new(HookTimeouts::default()),
                None,
                JobMedia::new(None, None),
                Default::default(),
            )
            .leak();
            let queue = Arc::new(SourceQueue::new(48_000, 1, 200));
            let source: &'static SourceHandle = Box::leak(Box::new(SourceHandle {
                job,
                queue: queue.clone(),
                track_sid: "TR_me".into(),
                closed: std::sync::atomic::AtomicBool::new(false),
            }));
            let raw = source as *const SourceHandle as usize;
            let full = vec![1i16; 9_600 + 480];
            // SAFETY: a valid source and buffer.
            assert_eq!(
                unsafe {
                    api_audio_source_capture(
                        raw as *mut LkAudioSource,
                        full.as_ptr(),
                        full.len(),
                        0,
                    )
                },
                LK_OK
            );
            let blocked = std::thread::spawn(move || {
                let chunk = vec![2i16; 24_000]; // 500 ms
                                                // SAFETY: a valid source and buffer.
                unsafe {
                    api_audio_source_capture(
                        raw as *mut LkAudioSource,
                        chunk.as_ptr(),
                        chunk.len(),
                        10_000,
                    )
                }
            });
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: a valid source.
            assert_eq!(
                unsafe { api_audio_source_clear(raw as *mut LkAudioSource) },
                210
            );
            assert_eq!(blocked.join().unwrap(), expected, "minor {minor}");
            assert_eq!(
                queue.queued_ms(),
                0,
                "minor {minor}: nothing queued after the clear"
            );
        }
    }
}
