/*
 * c-noop: an lk-go plugin in plain C, compiled against lk_plugin.h.
 *
 * Besides returning 0 it exercises the contract from the C side, so the
 * header and the host's Rust definitions cannot drift apart unnoticed: it
 * checks the table's size and version, reads every 1.0 and 1.1 string, and
 * registers a shutdown hook whose user_data is freed by the host. Any
 * mismatch is logged and returns 3. On LP64 it also asserts at compile time
 * the layout of every struct of ABI 1.0-1.4 and of the host table, with the
 * numbers plugin-api/src/abi.rs asserts from the Rust side.
 *
 * Build: cc -shared -fPIC -I plugin-api/include -o libc_noop.so c_noop.c
 * (`cargo xtask build-plugins` does this).
 */
#include "lk_plugin.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if UINTPTR_MAX == 0xffffffffffffffffu
/* The same LP64 layout plugin-api/src/abi.rs asserts from the Rust side. */
_Static_assert(sizeof(lk_str) == 16, "lk_str layout");
_Static_assert(offsetof(lk_host_api, job_id) == 8, "lk_host_api header");
_Static_assert(offsetof(lk_host_api, log) == 8 + 8 * 8, "lk_host_api 1.0 layout");
_Static_assert(offsetof(lk_host_api, participant_identity) == 8 + 9 * 8, "lk_host_api 1.1 layout");
_Static_assert(sizeof(lk_event) == 120, "lk_event layout");
_Static_assert(sizeof(lk_shutdown_info) == 48, "lk_shutdown_info layout");
_Static_assert(offsetof(lk_plugin_descriptor, run) == 40, "descriptor layout");
_Static_assert(offsetof(lk_host_api, audio_stream_open) == 8 + 10 * 8, "lk_host_api 1.3 start");
_Static_assert(offsetof(lk_host_api, set_metadata) == 8 + 22 * 8, "lk_host_api 1.3 layout");
/* A 1.3 table ended where the 1.4 functions begin; 1.4 adds 21 of them
 * (job_participant_identity .. publish_transcription), 44 in all. */
_Static_assert(offsetof(lk_host_api, job_participant_identity) == 8 + 23 * 8, "lk_host_api 1.4 start");
_Static_assert(offsetof(lk_host_api, publish_transcription) == 8 + 43 * 8, "lk_host_api 1.4 layout");
_Static_assert(sizeof(lk_host_api) == 8 + 44 * 8, "lk_host_api 1.4 size");
_Static_assert(sizeof(lk_audio_format) == 16, "lk_audio_format layout");
_Static_assert(sizeof(lk_audio_frame_info) == 24, "lk_audio_frame_info layout");
_Static_assert(offsetof(lk_audio_frame_info, dropped_frames) == 16, "lk_audio_frame_info layout");
_Static_assert(sizeof(lk_data_packet) == 64, "lk_data_packet layout");
_Static_assert(offsetof(lk_data_packet, topic) == 24, "lk_data_packet layout");
_Static_assert(offsetof(lk_data_packet, host_private) == 56, "lk_data_packet layout");
/* 1.4 structs (abi.rs asserts the sizes and the first offset of each line;
 * the other offsets follow from the header and are checked here too). */
_Static_assert(sizeof(lk_stream_info) == 16 + 5 * 16 + 32, "lk_stream_info layout");
_Static_assert(offsetof(lk_stream_info, stream_id) == 16, "lk_stream_info layout");
_Static_assert(offsetof(lk_stream_info, total_length) == 96, "lk_stream_info layout");
_Static_assert(offsetof(lk_stream_info, attribute_keys) == 112, "lk_stream_info layout");
_Static_assert(sizeof(lk_stream_options) == 16 + 5 * 16 + 8 + 4 * 8, "lk_stream_options layout");
_Static_assert(offsetof(lk_stream_options, total_length) == 96, "lk_stream_options layout");
_Static_assert(offsetof(lk_stream_options, destination_identities) == 120, "lk_stream_options layout");
_Static_assert(offsetof(lk_stream_options, n_destinations) == 128, "lk_stream_options layout");
_Static_assert(sizeof(lk_rpc_invocation) == 8 + 4 * 16 + 16, "lk_rpc_invocation layout");
_Static_assert(offsetof(lk_rpc_invocation, request_id) == 8, "lk_rpc_invocation layout");
_Static_assert(offsetof(lk_rpc_invocation, deadline_unix_ms) == 72, "lk_rpc_invocation layout");
_Static_assert(offsetof(lk_rpc_invocation, host_private) == 80, "lk_rpc_invocation layout");
_Static_assert(sizeof(lk_rpc_result) == 8 + 2 * 16 + 8, "lk_rpc_result layout");
_Static_assert(offsetof(lk_rpc_result, error_code) == 4, "lk_rpc_result layout");
_Static_assert(offsetof(lk_rpc_result, host_private) == 40, "lk_rpc_result layout");
_Static_assert(sizeof(lk_transcription) == 8 + 5 * 16 + 16, "lk_transcription layout");
_Static_assert(offsetof(lk_transcription, track_sid) == 24, "lk_transcription layout");
_Static_assert(offsetof(lk_transcription, start_ms) == 88, "lk_transcription layout");
#endif

static void log_msg(const lk_host_api *api, const lk_job *job, int32_t level, const char *msg) {
    api->log(job, level, msg, strlen(msg));
}

static void on_shutdown(void *user_data, const lk_shutdown_info *info) {
    /* Runs on a host thread during the cascade; user_data is ours. */
    char *tag = (char *)user_data;
    fprintf(stderr, "c-noop: shutdown hook (%s) reason=%.*s\n", tag, (int)info->reason_str.len,
            info->reason_str.ptr);
}

static void free_tag(void *user_data) { free(user_data); }

static int32_t run(const lk_host_api *api, const lk_job *job) {
    char line[512];
    if (api->abi_major != LK_ABI_MAJOR || api->size < sizeof(lk_host_api)) {
        snprintf(line, sizeof line, "c-noop: host table %u.%u size %u, header expects %d.x size >= %zu",
                 api->abi_major, api->abi_minor, api->size, LK_ABI_MAJOR, sizeof(lk_host_api));
        log_msg(api, job, LK_LOG_ERROR, line);
        return 3;
    }
    lk_str id = api->job_id(job);
    lk_str room = api->room_name(job);
    lk_str who = api->participant_identity(job); /* 1.1: size checked above */
    if (id.len == 0 || room.len == 0 || who.len == 0) {
        log_msg(api, job, LK_LOG_ERROR, "c-noop: empty job id, room name or identity");
        return 3;
    }
    char *tag = malloc(8);
    if (tag == NULL) return 3;
    memcpy(tag, "c-noop", 7);
    api->on_shutdown(job, on_shutdown, tag, free_tag);
    snprintf(line, sizeof line, "c-noop plugin running job %.*s in room %.*s as %.*s (host ABI %u.%u)",
             (int)id.len, id.ptr, (int)room.len, room.ptr, (int)who.len, who.ptr, api->abi_major,
             api->abi_minor);
    log_msg(api, job, LK_LOG_INFO, line);
    return 0;
}

static const lk_plugin_descriptor DESCRIPTOR = {
    LK_PLUGIN_MAGIC, LK_ABI_MAJOR, LK_ABI_MINOR, {"c-noop", 6}, {"0.1.0", 5}, run,
};

const lk_plugin_descriptor *lk_plugin_entry(void) { return &DESCRIPTOR; }
