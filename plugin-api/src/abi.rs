//! The raw C ABI, a field-for-field mirror of `include/lk_plugin.h`.
//!
//! Owns: the `#[repr(C)]` types and constants both sides agree on. Must not
//! contain behaviour: the host's implementation of the API table lives in the
//! host crate, the safe plugin-side wrapper in [`crate::sdk`].
//!
//! Compatibility rules (see the header for the full text): plugin major must
//! equal host major, plugin minor must be <= host minor, and [`LkHostApi`] only
//! grows at its end within a major.

use std::ffi::{c_char, c_void};

/// `"LKGO"`: first field of every descriptor.
pub const LK_PLUGIN_MAGIC: u32 = 0x4C4B_474F;
/// ABI major this crate speaks. A plugin of another major is refused.
pub const LK_ABI_MAJOR: u16 = 1;
/// ABI minor this crate speaks. Plugins of this minor or older load.
pub const LK_ABI_MINOR: u16 = 4;
/// Name of the exported entry function (without NUL).
pub const LK_PLUGIN_ENTRY_SYMBOL: &str = "lk_plugin_entry";
/// `run` returns this after catching a panic of its own.
pub const LK_RUN_PANICKED: i32 = -1070;

/// A length the host does not believe: it reads a NUL-terminated string.
pub const LK_STR_NUL_TERMINATED: usize = usize::MAX;
/// Lengths above this are read as NUL-terminated.
pub const LK_MAX_BELIEVED_LEN: usize = 1 << 30;
/// Longest log message the host keeps, in bytes.
pub const LK_MAX_LOG_LEN: usize = 64 * 1024;
/// Longest shutdown reason the host keeps, in bytes.
pub const LK_MAX_REASON_LEN: usize = 1024;

pub const LK_LOG_ERROR: i32 = 1;
pub const LK_LOG_WARN: i32 = 2;
pub const LK_LOG_INFO: i32 = 3;
pub const LK_LOG_DEBUG: i32 = 4;
pub const LK_LOG_TRACE: i32 = 5;

pub const LK_SHUTDOWN_REQUESTED_BY_PLUGIN: u32 = 1;
pub const LK_SHUTDOWN_PLUGIN_RETURNED: u32 = 2;
pub const LK_SHUTDOWN_PLUGIN_PANICKED: u32 = 3;
pub const LK_SHUTDOWN_ROOM_DISCONNECTED: u32 = 4;
pub const LK_SHUTDOWN_SERVER_UNREACHABLE: u32 = 5;
pub const LK_SHUTDOWN_SIGNAL_SIGINT: u32 = 6;
pub const LK_SHUTDOWN_SIGNAL_SIGTERM: u32 = 7;
pub const LK_SHUTDOWN_DEADLINE_EXCEEDED: u32 = 8;
/// ABI 1.2; older plugins see [`LK_SHUTDOWN_SIGNAL_SIGTERM`].
pub const LK_SHUTDOWN_SIGNAL_SIGHUP: u32 = 9;
/// ABI 1.2; older plugins see [`LK_SHUTDOWN_ROOM_DISCONNECTED`].
pub const LK_SHUTDOWN_DUPLICATE_IDENTITY: u32 = 10;
/// ABI 1.2; older plugins see [`LK_SHUTDOWN_SERVER_UNREACHABLE`].
pub const LK_SHUTDOWN_MEDIA_FAILED: u32 = 11;
/// ABI 1.2; older plugins see [`LK_SHUTDOWN_ROOM_DISCONNECTED`].
pub const LK_SHUTDOWN_SERVER_ERROR: u32 = 12;
/// ABI 1.4; older plugins see [`LK_SHUTDOWN_ROOM_DISCONNECTED`].
pub const LK_SHUTDOWN_PARTICIPANT_LEFT: u32 = 13;
/// ABI 1.4; older plugins see [`LK_SHUTDOWN_ROOM_DISCONNECTED`].
pub const LK_SHUTDOWN_JOB_TERMINATED: u32 = 14;
/// ABI 1.4; older plugins see [`LK_SHUTDOWN_SIGNAL_SIGTERM`].
pub const LK_SHUTDOWN_WORKER_STOPPING: u32 = 15;
/// ABI 1.4; older plugins see [`LK_SHUTDOWN_SIGNAL_SIGTERM`].
pub const LK_SHUTDOWN_WORKER_LOST: u32 = 16;
/// ABI 1.4; older plugins see [`LK_SHUTDOWN_SIGNAL_SIGTERM`].
pub const LK_SHUTDOWN_MEMORY_LIMIT: u32 = 17;

pub const LK_EVENT_PARTICIPANT_JOINED: u32 = 1;
pub const LK_EVENT_PARTICIPANT_LEFT: u32 = 2;
pub const LK_EVENT_TRACK_PUBLISHED: u32 = 3;
pub const LK_EVENT_TRACK_UNPUBLISHED: u32 = 4;
pub const LK_EVENT_TRACK_SUBSCRIBED: u32 = 5;
pub const LK_EVENT_TRACK_UNSUBSCRIBED: u32 = 6;
pub const LK_EVENT_DISCONNECTED: u32 = 7;
/// ABI 1.2: the session is being resumed. Never delivered to older plugins.
pub const LK_EVENT_RECONNECTING: u32 = 8;
/// ABI 1.2: the session is back. Never delivered to older plugins.
pub const LK_EVENT_RECONNECTED: u32 = 9;
/// ABI 1.4: a remote publication was muted. Never delivered to older plugins.
pub const LK_EVENT_TRACK_MUTED: u32 = 10;
/// ABI 1.4: a remote publication was unmuted.
pub const LK_EVENT_TRACK_UNMUTED: u32 = 11;
/// ABI 1.4: a track this job published has its first subscriber.
pub const LK_EVENT_LOCAL_TRACK_SUBSCRIBED: u32 = 12;

pub const LK_TRACK_KIND_UNKNOWN: u32 = 0;
pub const LK_TRACK_KIND_AUDIO: u32 = 1;
pub const LK_TRACK_KIND_VIDEO: u32 = 2;

pub const LK_TRACK_SOURCE_UNKNOWN: u32 = 0;
pub const LK_TRACK_SOURCE_CAMERA: u32 = 1;
pub const LK_TRACK_SOURCE_MICROPHONE: u32 = 2;
pub const LK_TRACK_SOURCE_SCREEN_SHARE: u32 = 3;
pub const LK_TRACK_SOURCE_SCREEN_SHARE_AUDIO: u32 = 4;

pub const LK_NEXT_EVENT: i32 = 0;
pub const LK_NEXT_TIMEOUT: i32 = 1;
pub const LK_NEXT_SHUTTING_DOWN: i32 = 2;
pub const LK_NEXT_MISSED: i32 = 3;
pub const LK_NEXT_INVALID: i32 = -1;

// ---- 1.3: results of the media and data functions ----
pub const LK_OK: i32 = 0;
pub const LK_TIMEOUT: i32 = 1;
pub const LK_SHUTTING_DOWN: i32 = 2;
pub const LK_MISSED: i32 = 3;
pub const LK_ENDED: i32 = 4;
pub const LK_ERR_INVALID: i32 = -1;
pub const LK_ERR_UNSUPPORTED: i32 = -2;
pub const LK_ERR_NOT_FOUND: i32 = -3;
pub const LK_ERR_TOO_LARGE: i32 = -4;
pub const LK_ERR_NOT_CONNECTED: i32 = -5;
pub const LK_ERR_CLOSED: i32 = -6;
pub const LK_ERR_REFUSED: i32 = -7;
/// ABI 1.4: a capture waited across a clear; nothing was queued (1.3
/// plugins get [`LK_TIMEOUT`]).
pub const LK_CLEARED: i32 = 5;
/// ABI 1.4: a data stream ended abnormally.
pub const LK_ERR_ABORTED: i32 = -8;

// ---- 1.4: data streams, RPC, transcriptions ----
pub const LK_STREAM_TEXT: u32 = 1;
pub const LK_STREAM_BYTES: u32 = 2;
pub const LK_STREAM_HAS_TOTAL_LENGTH: u32 = 1;
pub const LK_RPC_APPLICATION_ERROR: i32 = 1500;
pub const LK_RPC_CONNECTION_TIMEOUT: i32 = 1501;
pub const LK_RPC_RESPONSE_TIMEOUT: i32 = 1502;
pub const LK_RPC_RECIPIENT_DISCONNECTED: i32 = 1503;
pub const LK_RPC_RESPONSE_PAYLOAD_TOO_LARGE: i32 = 1504;
pub const LK_RPC_SEND_FAILED: i32 = 1505;
pub const LK_RPC_UNSUPPORTED_METHOD: i32 = 1400;
pub const LK_RPC_RECIPIENT_NOT_FOUND: i32 = 1401;
pub const LK_RPC_REQUEST_PAYLOAD_TOO_LARGE: i32 = 1402;
pub const LK_RPC_UNSUPPORTED_SERVER: i32 = 1403;
pub const LK_RPC_UNSUPPORTED_VERSION: i32 = 1404;
pub const LK_TRANSCRIPTION_FINAL: u32 = 1;

/// Some samples were reconstructed (Opus FEC or PLC).
pub const LK_AUDIO_FRAME_CONCEALED: u32 = 1;
/// Some samples are gap fill (DTX, mute, loss over 200 ms).
pub const LK_AUDIO_FRAME_SILENCE: u32 = 2;
/// `publish_data` / `lk_data_packet.flags`: ordered, retransmitted.
pub const LK_DATA_RELIABLE: u32 = 1;
/// Largest data payload, bytes (LiveKit's limit for reliable packets).
pub const LK_MAX_RELIABLE_DATA: usize = 15 * 1024;

/// Opaque audio reader handle (host-owned).
#[repr(C)]
pub struct LkAudioStream {
    _private: [u8; 0],
}

/// Opaque audio source handle (host-owned).
#[repr(C)]
pub struct LkAudioSource {
    _private: [u8; 0],
}

/// PCM format of a stream or source (`lk_audio_format`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LkAudioFormat {
    pub sample_rate: u32,
    pub num_channels: u32,
    pub frame_ms: u32,
    pub queue_ms: u32,
}

/// What `audio_stream_read` says about the frame it copied.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LkAudioFrameInfo {
    pub samples_per_channel: u32,
    pub flags: u32,
    pub pts_us: u64,
    pub dropped_frames: u64,
}

/// A received user data packet (`lk_data_packet`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LkDataPacket {
    pub struct_size: u32,
    pub flags: u32,
    pub data: *const u8,
    pub len: usize,
    pub topic: LkStr,
    pub participant_identity: LkStr,
    pub host_private: *mut c_void,
}

impl LkDataPacket {
    pub const fn zeroed() -> LkDataPacket {
        LkDataPacket {
            struct_size: std::mem::size_of::<LkDataPacket>() as u32,
            flags: 0,
            data: std::ptr::null(),
            len: 0,
            topic: LkStr::EMPTY,
            participant_identity: LkStr::EMPTY,
            host_private: std::ptr::null_mut(),
        }
    }
}

/// Opaque incoming data stream (a host-owned id, not memory).
#[repr(C)]
pub struct LkStreamReader {
    _private: [u8; 0],
}

/// Opaque outgoing data stream (a host-owned id, not memory).
#[repr(C)]
pub struct LkStreamWriter {
    _private: [u8; 0],
}

/// An incoming stream's header (`lk_stream_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LkStreamInfo {
    pub struct_size: u32,
    pub kind: u32,
    pub flags: u32,
    pub n_attributes: u32,
    pub stream_id: LkStr,
    pub topic: LkStr,
    pub mime_type: LkStr,
    pub sender_identity: LkStr,
    pub name: LkStr,
    pub total_length: u64,
    pub timestamp_ms: i64,
    pub attribute_keys: *const LkStr,
    pub attribute_values: *const LkStr,
}

impl LkStreamInfo {
    pub const fn zeroed() -> LkStreamInfo {
        LkStreamInfo {
            struct_size: std::mem::size_of::<LkStreamInfo>() as u32,
            kind: 0,
            flags: 0,
            n_attributes: 0,
            stream_id: LkStr::EMPTY,
            topic: LkStr::EMPTY,
            mime_type: LkStr::EMPTY,
            sender_identity: LkStr::EMPTY,
            name: LkStr::EMPTY,
            total_length: 0,
            timestamp_ms: 0,
            attribute_keys: std::ptr::null(),
            attribute_values: std::ptr::null(),
        }
    }
}

/// What `stream_open` sends (`lk_stream_options`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LkStreamOptions {
    pub struct_size: u32,
    pub kind: u32,
    pub flags: u32,
    pub n_attributes: u32,
    pub topic: LkStr,
    pub mime_type: LkStr,
    pub name: LkStr,
    pub sender_identity: LkStr,
    pub stream_id: LkStr,
    pub total_length: u64,
    pub attribute_keys: *const LkStr,
    pub attribute_values: *const LkStr,
    pub destination_identities: *const LkStr,
    pub n_destinations: usize,
}

/// A call of a registered RPC method (`lk_rpc_invocation`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LkRpcInvocation {
    pub struct_size: u32,
    pub response_timeout_ms: u32,
    pub request_id: LkStr,
    pub caller_identity: LkStr,
    pub method: LkStr,
    pub payload: LkStr,
    pub deadline_unix_ms: i64,
    pub host_private: *mut c_void,
}

impl LkRpcInvocation {
    pub const fn zeroed() -> LkRpcInvocation {
        LkRpcInvocation {
            struct_size: std::mem::size_of::<LkRpcInvocation>() as u32,
            response_timeout_ms: 0,
            request_id: LkStr::EMPTY,
            caller_identity: LkStr::EMPTY,
            method: LkStr::EMPTY,
            payload: LkStr::EMPTY,
            deadline_unix_ms: 0,
            host_private: std::ptr::null_mut(),
        }
    }
}

/// The outcome of `perform_rpc` (`lk_rpc_result`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LkRpcResult {
    pub struct_size: u32,
    pub error_code: i32,
    pub payload: LkStr,
    pub error_data: LkStr,
    pub host_private: *mut c_void,
}

impl LkRpcResult {
    pub const fn zeroed() -> LkRpcResult {
        LkRpcResult {
            struct_size: std::mem::size_of::<LkRpcResult>() as u32,
            error_code: 0,
            payload: LkStr::EMPTY,
            error_data: LkStr::EMPTY,
            host_private: std::ptr::null_mut(),
        }
    }
}

/// One legacy Transcription segment (`lk_transcription`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LkTranscription {
    pub struct_size: u32,
    pub flags: u32,
    pub participant_identity: LkStr,
    pub track_sid: LkStr,
    pub segment_id: LkStr,
    pub text: LkStr,
    pub language: LkStr,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// UTF-8 string slice crossing the boundary: pointer + length, no NUL.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LkStr {
    pub ptr: *const c_char,
    pub len: usize,
}

// SAFETY: an LkStr is a borrowed view; the descriptor's strings are 'static.
unsafe impl Sync for LkStr {}
unsafe impl Send for LkStr {}

impl LkStr {
    pub const EMPTY: LkStr = LkStr {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// A view of a `'static` string, usable in a `static` descriptor.
    pub const fn from_static(s: &'static str) -> LkStr {
        LkStr {
            ptr: s.as_ptr() as *const c_char,
            len: s.len(),
        }
    }

    /// A borrowed view of `s`; valid as long as `s` is.
    pub fn borrow(s: &str) -> LkStr {
        LkStr {
            ptr: s.as_ptr() as *const c_char,
            len: s.len(),
        }
    }

    /// The bytes behind the view.
    ///
    /// # Safety
    /// `ptr` must point at `len` readable bytes for the returned lifetime
    /// (or `len` must be 0).
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr as *const u8, self.len)
        }
    }

    /// The string behind the view, with invalid UTF-8 replaced.
    ///
    /// # Safety
    /// As for [`LkStr::as_bytes`].
    pub unsafe fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

/// Opaque job handle; only the host knows what is behind it.
#[repr(C)]
pub struct LkJob {
    _private: [u8; 0],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LkShutdownInfo {
    pub reason: u32,
    pub reserved: u32,
    pub reason_str: LkStr,
    pub detail: LkStr,
    pub unix_ms: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LkEvent {
    pub kind: u32,
    pub track_kind: u32,
    pub track_source: u32,
    pub reserved: u32,
    pub name: LkStr,
    pub participant_identity: LkStr,
    pub participant_sid: LkStr,
    pub track_sid: LkStr,
    pub track_name: LkStr,
    pub reason: LkStr,
    pub host_private: *mut c_void,
}

impl LkEvent {
    pub const fn zeroed() -> LkEvent {
        LkEvent {
            kind: 0,
            track_kind: 0,
            track_source: 0,
            reserved: 0,
            name: LkStr::EMPTY,
            participant_identity: LkStr::EMPTY,
            participant_sid: LkStr::EMPTY,
            track_sid: LkStr::EMPTY,
            track_name: LkStr::EMPTY,
            reason: LkStr::EMPTY,
            host_private: std::ptr::null_mut(),
        }
    }
}

pub type LkShutdownFn = unsafe extern "C" fn(user_data: *mut c_void, info: *const LkShutdownInfo);
pub type LkFreeFn = unsafe extern "C" fn(user_data: *mut c_void);

/// The host's function table (append-only within a major).
#[repr(C)]
pub struct LkHostApi {
    pub size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,

    // ---- 1.0 ----
    pub job_id: unsafe extern "C" fn(job: *const LkJob) -> LkStr,
    pub room_name: unsafe extern "C" fn(job: *const LkJob) -> LkStr,
    pub job_metadata: unsafe extern "C" fn(job: *const LkJob) -> LkStr,
    pub shutdown: unsafe extern "C" fn(job: *const LkJob, reason: *const c_char, reason_len: usize),
    pub is_shutting_down: unsafe extern "C" fn(job: *const LkJob) -> i32,
    pub on_shutdown: unsafe extern "C" fn(
        job: *const LkJob,
        hook: Option<LkShutdownFn>,
        user_data: *mut c_void,
        free_user_data: Option<LkFreeFn>,
    ) -> i32,
    pub next_event: unsafe extern "C" fn(
        job: *const LkJob,
        timeout_ms: u32,
        out: *mut LkEvent,
        missed: *mut u64,
    ) -> i32,
    pub event_release: unsafe extern "C" fn(job: *const LkJob, event: *mut LkEvent),
    pub log:
        unsafe extern "C" fn(job: *const LkJob, level: i32, msg: *const c_char, msg_len: usize),

    // ---- 1.1 ----
    pub participant_identity: unsafe extern "C" fn(job: *const LkJob) -> LkStr,

    // ---- 1.3 ----
    pub audio_stream_open: unsafe extern "C" fn(
        job: *const LkJob,
        track_sid: LkStr,
        fmt: *const LkAudioFormat,
        out: *mut *mut LkAudioStream,
    ) -> i32,
    pub audio_stream_read: unsafe extern "C" fn(
        stream: *mut LkAudioStream,
        pcm: *mut i16,
        pcm_cap: usize,
        timeout_ms: u32,
        info: *mut LkAudioFrameInfo,
    ) -> i32,
    pub audio_stream_close: unsafe extern "C" fn(stream: *mut LkAudioStream),
    pub audio_source_publish: unsafe extern "C" fn(
        job: *const LkJob,
        track_name: LkStr,
        fmt: *const LkAudioFormat,
        out: *mut *mut LkAudioSource,
        track_sid: *mut LkStr,
    ) -> i32,
    pub audio_source_capture: unsafe extern "C" fn(
        source: *mut LkAudioSource,
        pcm: *const i16,
        samples_per_channel: usize,
        timeout_ms: u32,
    ) -> i32,
    pub audio_source_clear: unsafe extern "C" fn(source: *mut LkAudioSource) -> u32,
    pub audio_source_queued_ms: unsafe extern "C" fn(source: *const LkAudioSource) -> u32,
    pub audio_source_close: unsafe extern "C" fn(source: *mut LkAudioSource),
    #[allow(clippy::type_complexity)]
    pub publish_data: unsafe extern "C" fn(
        job: *const LkJob,
        data: *const u8,
        len: usize,
        topic: LkStr,
        destination_identities: *const LkStr,
        n_destinations: usize,
        flags: u32,
        timeout_ms: u32,
    ) -> i32,
    pub next_data: unsafe extern "C" fn(
        job: *const LkJob,
        timeout_ms: u32,
        out: *mut LkDataPacket,
        missed: *mut u64,
    ) -> i32,
    pub data_release: unsafe extern "C" fn(job: *const LkJob, packet: *mut LkDataPacket),
    pub set_attributes: unsafe extern "C" fn(
        job: *const LkJob,
        keys: *const LkStr,
        values: *const LkStr,
        n: usize,
        timeout_ms: u32,
    ) -> i32,
    pub set_metadata:
        unsafe extern "C" fn(job: *const LkJob, metadata: LkStr, timeout_ms: u32) -> i32,

    // ---- 1.4 ----
    pub job_participant_identity: unsafe extern "C" fn(job: *const LkJob) -> LkStr,
    pub agent_name: unsafe extern "C" fn(job: *const LkJob) -> LkStr,
    pub job_attributes: unsafe extern "C" fn(
        job: *const LkJob,
        keys: *mut LkStr,
        values: *mut LkStr,
        cap: usize,
    ) -> usize,
    pub set_close_on_participant_left: unsafe extern "C" fn(job: *const LkJob, close: i32),
    pub audio_source_wait_subscribed:
        unsafe extern "C" fn(source: *mut LkAudioSource, timeout_ms: u32) -> i32,
    pub stream_accept_topic: unsafe extern "C" fn(job: *const LkJob, topic: LkStr) -> i32,
    pub next_stream: unsafe extern "C" fn(
        job: *const LkJob,
        timeout_ms: u32,
        out: *mut *mut LkStreamReader,
        missed: *mut u64,
    ) -> i32,
    pub stream_reader_info:
        unsafe extern "C" fn(reader: *mut LkStreamReader, info: *mut LkStreamInfo) -> i32,
    pub stream_read: unsafe extern "C" fn(
        reader: *mut LkStreamReader,
        buf: *mut u8,
        cap: usize,
        len: *mut usize,
        timeout_ms: u32,
    ) -> i32,
    pub stream_reader_error: unsafe extern "C" fn(reader: *mut LkStreamReader) -> LkStr,
    pub stream_reader_close: unsafe extern "C" fn(reader: *mut LkStreamReader),
    pub stream_open: unsafe extern "C" fn(
        job: *const LkJob,
        opts: *const LkStreamOptions,
        timeout_ms: u32,
        out: *mut *mut LkStreamWriter,
        stream_id: *mut LkStr,
    ) -> i32,
    pub stream_write: unsafe extern "C" fn(
        writer: *mut LkStreamWriter,
        data: *const u8,
        len: usize,
        timeout_ms: u32,
    ) -> i32,
    pub stream_close: unsafe extern "C" fn(
        writer: *mut LkStreamWriter,
        reason: LkStr,
        keys: *const LkStr,
        values: *const LkStr,
        n: usize,
        timeout_ms: u32,
    ) -> i32,
    pub rpc_register: unsafe extern "C" fn(job: *const LkJob, method: LkStr) -> i32,
    pub rpc_unregister: unsafe extern "C" fn(job: *const LkJob, method: LkStr) -> i32,
    pub next_rpc:
        unsafe extern "C" fn(job: *const LkJob, timeout_ms: u32, out: *mut LkRpcInvocation) -> i32,
    pub rpc_respond: unsafe extern "C" fn(
        job: *const LkJob,
        invocation: *mut LkRpcInvocation,
        error_code: i32,
        payload: LkStr,
        error_data: LkStr,
    ) -> i32,
    pub perform_rpc: unsafe extern "C" fn(
        job: *const LkJob,
        destination_identity: LkStr,
        method: LkStr,
        payload: LkStr,
        response_timeout_ms: u32,
        out: *mut LkRpcResult,
    ) -> i32,
    pub rpc_result_release: unsafe extern "C" fn(job: *const LkJob, result: *mut LkRpcResult),
    pub publish_transcription:
        unsafe extern "C" fn(job: *const LkJob, t: *const LkTranscription, timeout_ms: u32) -> i32,
}

/// Byte offset just past `participant_identity`, the last field of minor 1
/// (minor 2 added no function). A plugin checks `api.size >=
/// LK_HOST_API_SIZE_1_1` before using it.
pub const LK_HOST_API_SIZE_1_1: usize = std::mem::offset_of!(LkHostApi, audio_stream_open);
/// Size of the table with the 1.3 functions (through `set_metadata`).
pub const LK_HOST_API_SIZE_1_3: usize = std::mem::offset_of!(LkHostApi, job_participant_identity);
/// Size of the table with the 1.4 functions (through `publish_transcription`).
pub const LK_HOST_API_SIZE_1_4: usize = std::mem::size_of::<LkHostApi>();

pub type LkRunFn = unsafe extern "C" fn(api: *const LkHostApi, job: *const LkJob) -> i32;

#[repr(C)]
pub struct LkPluginDescriptor {
    pub magic: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub name: LkStr,
    pub version: LkStr,
    pub run: Option<LkRunFn>,
}

// SAFETY: descriptors are immutable statics holding 'static strings.
unsafe impl Sync for LkPluginDescriptor {}

/// Signature of the exported [`LK_PLUGIN_ENTRY_SYMBOL`].
pub type LkPluginEntryFn = unsafe extern "C" fn() -> *const LkPluginDescriptor;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    // The layout the header implies on LP64 targets (Linux/macOS x86_64 and
    // aarch64). The C plugin test checks the same contract from the C side.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layouts_match_the_header_on_lp64() {
        assert_eq!(size_of::<LkStr>(), 16);
        assert_eq!(size_of::<LkShutdownInfo>(), 48);
        assert_eq!(offset_of!(LkShutdownInfo, unix_ms), 40);
        assert_eq!(size_of::<LkEvent>(), 16 + 6 * 16 + 8);
        assert_eq!(offset_of!(LkEvent, host_private), 112);
        assert_eq!(offset_of!(LkHostApi, job_id), 8);
        assert_eq!(offset_of!(LkHostApi, log), 8 + 8 * 8);
        assert_eq!(offset_of!(LkHostApi, participant_identity), 8 + 9 * 8);
        assert_eq!(LK_HOST_API_SIZE_1_1, 8 + 10 * 8);
        assert_eq!(offset_of!(LkHostApi, audio_stream_open), 8 + 10 * 8);
        assert_eq!(offset_of!(LkHostApi, set_metadata), 8 + 22 * 8);
        assert_eq!(LK_HOST_API_SIZE_1_3, 8 + 23 * 8);
        assert_eq!(offset_of!(LkHostApi, job_participant_identity), 8 + 23 * 8);
        assert_eq!(offset_of!(LkHostApi, publish_transcription), 8 + 43 * 8);
        assert_eq!(size_of::<LkHostApi>(), 8 + 44 * 8);
        assert_eq!(size_of::<LkStreamInfo>(), 16 + 5 * 16 + 32);
        assert_eq!(offset_of!(LkStreamInfo, total_length), 96);
        assert_eq!(size_of::<LkStreamOptions>(), 16 + 5 * 16 + 8 + 4 * 8);
        assert_eq!(offset_of!(LkStreamOptions, destination_identities), 120);
        assert_eq!(size_of::<LkRpcInvocation>(), 8 + 4 * 16 + 16);
        assert_eq!(offset_of!(LkRpcInvocation, deadline_unix_ms), 72);
        assert_eq!(size_of::<LkRpcResult>(), 8 + 2 * 16 + 8);
        assert_eq!(size_of::<LkTranscription>(), 8 + 5 * 16 + 16);
        assert_eq!(size_of::<LkAudioFormat>(), 16);
        assert_eq!(size_of::<LkAudioFrameInfo>(), 24);
        assert_eq!(offset_of!(LkAudioFrameInfo, dropped_frames), 16);
        assert_eq!(size_of::<LkDataPacket>(), 8 + 16 + 32 + 8);
        assert_eq!(offset_of!(LkDataPacket, topic), 24);
        assert_eq!(offset_of!(LkDataPacket, host_private), 56);
        assert_eq!(offset_of!(LkPluginDescriptor, name), 8);
        assert_eq!(offset_of!(LkPluginDescriptor, run), 40);
        assert_eq!(align_of::<LkHostApi>(), 8);
    }
}
