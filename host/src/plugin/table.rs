//! The `lk_host_api` table every plugin receives.
//!
//! Owns: [`HOST_API`], the one static table, in the header's order (1.0,
//! 1.1, 1.3, 1.4: append-only within a major). API boundary: it points at
//! the functions of [`super::host_api`] (1.0-1.2), [`super::media_api`]
//! (1.3), [`super::job_api`] and [`super::stream_api`] (1.4); nothing
//! below it refers to it.

use super::{host_api, job_api, media_api, stream_api};
use lk_plugin_api::abi::*;

/// The table every plugin receives.
pub(crate) static HOST_API: LkHostApi = LkHostApi {
    size: std::mem::size_of::<LkHostApi>() as u32,
    abi_major: LK_ABI_MAJOR,
    abi_minor: LK_ABI_MINOR,
    job_id: host_api::api_job_id,
    room_name: host_api::api_room_name,
    job_metadata: host_api::api_job_metadata,
    shutdown: host_api::api_shutdown,
    is_shutting_down: host_api::api_is_shutting_down,
    on_shutdown: host_api::api_on_shutdown,
    next_event: host_api::api_next_event,
    event_release: host_api::api_event_release,
    log: host_api::api_log,
    participant_identity: host_api::api_participant_identity,
    audio_stream_open: media_api::api_audio_stream_open,
    audio_stream_read: media_api::api_audio_stream_read,
    audio_stream_close: media_api::api_audio_stream_close,
    audio_source_publish: media_api::api_audio_source_publish,
    audio_source_capture: media_api::api_audio_source_capture,
    audio_source_clear: media_api::api_audio_source_clear,
    audio_source_queued_ms: media_api::api_audio_source_queued_ms,
    audio_source_close: media_api::api_audio_source_close,
    publish_data: media_api::api_publish_data,
    next_data: media_api::api_next_data,
    data_release: media_api::api_data_release,
    set_attributes: media_api::api_set_attributes,
    set_metadata: media_api::api_set_metadata,
    job_participant_identity: job_api::api_job_participant_identity,
    agent_name: job_api::api_agent_name,
    job_attributes: job_api::api_job_attributes,
    set_close_on_participant_left: job_api::api_set_close_on_participant_left,
    audio_source_wait_subscribed: job_api::api_audio_source_wait_subscribed,
    stream_accept_topic: stream_api::api_stream_accept_topic,
    next_stream: stream_api::api_next_stream,
    stream_reader_info: stream_api::api_stream_reader_info,
    stream_read: stream_api::api_stream_read,
    stream_reader_error: stream_api::api_stream_reader_error,
    stream_reader_close: stream_api::api_stream_reader_close,
    stream_open: stream_api::api_stream_open,
    stream_write: stream_api::api_stream_write,
    stream_close: stream_api::api_stream_close,
    rpc_register: stream_api::api_rpc_register,
    rpc_unregister: stream_api::api_rpc_unregister,
    next_rpc: stream_api::api_next_rpc,
    rpc_respond: stream_api::api_rpc_respond,
    perform_rpc: stream_api::api_perform_rpc,
    rpc_result_release: stream_api::api_rpc_result_release,
    publish_transcription: stream_api::api_publish_transcription,
};
