package lkgo

// The real host: every lk_host_api function behind the package's host
// interface. Owns the cgo calls and the copies between host and Go memory.
// Must not touch: job logic (job.go, events.go, media.go, data.go decide;
// this file only translates). Go cannot call a C function pointer, so each
// table entry has a static inline trampoline below.
//
// cgo rules kept here: Go memory handed to C holds no Go pointers and is
// only used during the call (PCM, payloads, string bytes, out-parameters
// the host fills with its own pointers); host memory (event strings, data
// packets, track sids) is copied into Go memory before it is released.

/*
#cgo CFLAGS: -I${SRCDIR}/../include -std=c11
#include <stdlib.h>
#include <string.h>
#include "lk_plugin.h"

void lkgo_set_descriptor(const char *name, size_t name_len, const char *version,
                         size_t version_len);
int32_t lkgo_on_shutdown(const lk_host_api *api, const lk_job *job, uintptr_t handle);

static inline lk_str lkgo_str(_GoString_ s) {
	lk_str out = {_GoStringPtr(s), _GoStringLen(s)};
	return out;
}

// 1 when the table has every field up to and including set_metadata (1.3).
static inline int lkgo_has_media(const lk_host_api *api) {
	return api->abi_minor >= 3 &&
	       api->size >= offsetof(lk_host_api, set_metadata) + sizeof api->set_metadata;
}

static inline lk_str lkgo_job_id(const lk_host_api *api, const lk_job *job) { return api->job_id(job); }
static inline lk_str lkgo_room_name(const lk_host_api *api, const lk_job *job) { return api->room_name(job); }
static inline lk_str lkgo_job_metadata(const lk_host_api *api, const lk_job *job) { return api->job_metadata(job); }
static inline lk_str lkgo_identity(const lk_host_api *api, const lk_job *job) {
	lk_str none = {NULL, 0};
	if (api->abi_minor < 1) return none;
	return api->participant_identity(job);
}
static inline void lkgo_shutdown(const lk_host_api *api, const lk_job *job, _GoString_ reason) {
	api->shutdown(job, _GoStringPtr(reason), _GoStringLen(reason));
}
static inline int32_t lkgo_is_shutting_down(const lk_host_api *api, const lk_job *job) {
	return api->is_shutting_down(job);
}
static inline int32_t lkgo_next_event(const lk_host_api *api, const lk_job *job, uint32_t timeout_ms,
                                      lk_event *out, uint64_t *missed) {
	return api->next_event(job, timeout_ms, out, missed);
}
static inline void lkgo_event_release(const lk_host_api *api, const lk_job *job, lk_event *ev) {
	api->event_release(job, ev);
}
static inline void lkgo_log(const lk_host_api *api, const lk_job *job, int32_t level, _GoString_ msg) {
	api->log(job, level, _GoStringPtr(msg), _GoStringLen(msg));
}

static inline int32_t lkgo_audio_stream_open(const lk_host_api *api, const lk_job *job, _GoString_ sid,
                                             const lk_audio_format *fmt, lk_audio_stream **out) {
	return api->audio_stream_open(job, lkgo_str(sid), fmt, out);
}
static inline int32_t lkgo_audio_stream_read(const lk_host_api *api, lk_audio_stream *s, int16_t *pcm,
                                             size_t cap, uint32_t timeout_ms, lk_audio_frame_info *info) {
	return api->audio_stream_read(s, pcm, cap, timeout_ms, info);
}
static inline void lkgo_audio_stream_close(const lk_host_api *api, lk_audio_stream *s) {
	api->audio_stream_close(s);
}
static inline int32_t lkgo_audio_source_publish(const lk_host_api *api, const lk_job *job, _GoString_ name,
                                                const lk_audio_format *fmt, lk_audio_source **out,
                                                lk_str *sid) {
	return api->audio_source_publish(job, lkgo_str(name), fmt, out, sid);
}
static inline int32_t lkgo_audio_source_capture(const lk_host_api *api, lk_audio_source *s,
                                                const int16_t *pcm, size_t spc, uint32_t timeout_ms) {
	return api->audio_source_capture(s, pcm, spc, timeout_ms);
}
static inline uint32_t lkgo_audio_source_clear(const lk_host_api *api, lk_audio_source *s) {
	return api->audio_source_clear(s);
}
static inline uint32_t lkgo_audio_source_queued_ms(const lk_host_api *api, lk_audio_source *s) {
	return api->audio_source_queued_ms(s);
}
static inline void lkgo_audio_source_close(const lk_host_api *api, lk_audio_source *s) {
	api->audio_source_close(s);
}

// n strings packed back to back in buf (lens[i] bytes each) as lk_str
// pointing into buf, in C memory the caller frees. NULL when n == 0 or on
// allocation failure (*failed set).
static inline lk_str *lkgo_unpack(const char *buf, const size_t *lens, size_t n, int *failed) {
	*failed = 0;
	if (n == 0) return NULL;
	lk_str *out = malloc(n * sizeof(lk_str));
	if (out == NULL) { *failed = 1; return NULL; }
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		out[i].ptr = buf + off;
		out[i].len = lens[i];
		off += lens[i];
	}
	return out;
}

static inline int32_t lkgo_publish_data(const lk_host_api *api, const lk_job *job, const uint8_t *data,
                                        size_t len, _GoString_ topic, const char *dest_buf,
                                        const size_t *dest_lens, size_t n_dest, uint32_t flags,
                                        uint32_t timeout_ms) {
	int failed;
	lk_str *dests = lkgo_unpack(dest_buf, dest_lens, n_dest, &failed);
	if (failed) return LK_ERR_INVALID;
	int32_t rc = api->publish_data(job, data, len, lkgo_str(topic), dests, n_dest, flags, timeout_ms);
	free(dests);
	return rc;
}
static inline int32_t lkgo_next_data(const lk_host_api *api, const lk_job *job, uint32_t timeout_ms,
                                     lk_data_packet *out, uint64_t *missed) {
	memset(out, 0, sizeof *out);
	out->struct_size = (uint32_t)sizeof *out;
	return api->next_data(job, timeout_ms, out, missed);
}
static inline void lkgo_data_release(const lk_host_api *api, const lk_job *job, lk_data_packet *p) {
	api->data_release(job, p);
}
// keys then values, 2n strings packed in buf.
static inline int32_t lkgo_set_attributes(const lk_host_api *api, const lk_job *job, const char *buf,
                                          const size_t *lens, size_t n, uint32_t timeout_ms) {
	int failed;
	lk_str *all = lkgo_unpack(buf, lens, 2 * n, &failed);
	if (failed) return LK_ERR_INVALID;
	int32_t rc = api->set_attributes(job, all, all == NULL ? NULL : all + n, n, timeout_ms);
	free(all);
	return rc;
}
static inline int32_t lkgo_set_metadata(const lk_host_api *api, const lk_job *job, _GoString_ md,
                                        uint32_t timeout_ms) {
	return api->set_metadata(job, lkgo_str(md), timeout_ms);
}

// ---- 1.4 ----
//
// Reader and writer handles are host-owned ids, not pointers (lk-go hands
// out small integers): they cross into Go as uintptr_t, never as a pointer
// type, so the Go runtime never sees a junk pointer on a stack.

// 1 when the table has every field up to and including publish_transcription (1.4).
static inline int lkgo_has_streams(const lk_host_api *api) {
	return api->abi_minor >= 4 &&
	       api->size >= offsetof(lk_host_api, publish_transcription) + sizeof api->publish_transcription;
}
static inline lk_str lkgo_job_participant_identity(const lk_host_api *api, const lk_job *job) {
	return api->job_participant_identity(job);
}
static inline lk_str lkgo_agent_name(const lk_host_api *api, const lk_job *job) { return api->agent_name(job); }
static inline size_t lkgo_job_attributes(const lk_host_api *api, const lk_job *job, lk_str *keys,
                                         lk_str *values, size_t cap) {
	return api->job_attributes(job, keys, values, cap);
}
static inline void lkgo_set_close_on_participant_left(const lk_host_api *api, const lk_job *job, int32_t close) {
	api->set_close_on_participant_left(job, close);
}
static inline int32_t lkgo_audio_source_wait_subscribed(const lk_host_api *api, lk_audio_source *s,
                                                        uint32_t timeout_ms) {
	return api->audio_source_wait_subscribed(s, timeout_ms);
}

static inline int32_t lkgo_stream_accept_topic(const lk_host_api *api, const lk_job *job, _GoString_ topic) {
	return api->stream_accept_topic(job, lkgo_str(topic));
}
static inline int32_t lkgo_next_stream(const lk_host_api *api, const lk_job *job, uint32_t timeout_ms,
                                       uintptr_t *out, uint64_t *missed) {
	lk_stream_reader *r = NULL;
	int32_t rc = api->next_stream(job, timeout_ms, &r, missed);
	*out = (uintptr_t)r;
	return rc;
}
static inline int32_t lkgo_stream_reader_info(const lk_host_api *api, uintptr_t r, lk_stream_info *info) {
	memset(info, 0, sizeof *info);
	info->struct_size = (uint32_t)sizeof *info;
	return api->stream_reader_info((lk_stream_reader *)r, info);
}
static inline int32_t lkgo_stream_read(const lk_host_api *api, uintptr_t r, uint8_t *buf, size_t cap,
                                       size_t *len, uint32_t timeout_ms) {
	return api->stream_read((lk_stream_reader *)r, buf, cap, len, timeout_ms);
}
static inline lk_str lkgo_stream_reader_error(const lk_host_api *api, uintptr_t r) {
	return api->stream_reader_error((lk_stream_reader *)r);
}
static inline void lkgo_stream_reader_close(const lk_host_api *api, uintptr_t r) {
	api->stream_reader_close((lk_stream_reader *)r);
}
// buf packs n_attr keys, n_attr values, then n_dest destination identities.
// The options (and the lk_str arrays, in C memory) live only for the call.
static inline int32_t lkgo_stream_open(const lk_host_api *api, const lk_job *job, uint32_t kind,
                                       uint32_t flags, uint64_t total_length, _GoString_ topic,
                                       _GoString_ mime_type, _GoString_ name, _GoString_ sender,
                                       _GoString_ stream_id, const char *buf, const size_t *lens,
                                       size_t n_attr, size_t n_dest, uint32_t timeout_ms,
                                       uintptr_t *out, lk_str *out_id) {
	int failed;
	lk_str *all = lkgo_unpack(buf, lens, 2 * n_attr + n_dest, &failed);
	if (failed) return LK_ERR_INVALID;
	lk_stream_options o;
	memset(&o, 0, sizeof o);
	o.struct_size = (uint32_t)sizeof o;
	o.kind = kind;
	o.flags = flags;
	o.n_attributes = (uint32_t)n_attr;
	o.topic = lkgo_str(topic);
	o.mime_type = lkgo_str(mime_type);
	o.name = lkgo_str(name);
	o.sender_identity = lkgo_str(sender);
	o.stream_id = lkgo_str(stream_id);
	o.total_length = total_length;
	o.attribute_keys = n_attr > 0 ? all : NULL;
	o.attribute_values = n_attr > 0 ? all + n_attr : NULL;
	o.destination_identities = n_dest > 0 ? all + 2 * n_attr : NULL;
	o.n_destinations = n_dest;
	lk_stream_writer *w = NULL;
	int32_t rc = api->stream_open(job, &o, timeout_ms, &w, out_id);
	*out = (uintptr_t)w;
	free(all);
	return rc;
}
static inline int32_t lkgo_stream_write(const lk_host_api *api, uintptr_t w, const uint8_t *data,
                                        size_t len, uint32_t timeout_ms) {
	return api->stream_write((lk_stream_writer *)w, data, len, timeout_ms);
}
// keys then values, 2n strings packed in buf. The writer is freed in every
// case, as the header says: without memory for the trailer it is aborted.
static inline int32_t lkgo_stream_close(const lk_host_api *api, uintptr_t w, _GoString_ reason,
                                        const char *buf, const size_t *lens, size_t n,
                                        uint32_t timeout_ms) {
	int failed;
	lk_str *all = lkgo_unpack(buf, lens, 2 * n, &failed);
	if (failed) {
		lk_str oom = {"lkgo: out of memory for the trailer", 35};
		api->stream_close((lk_stream_writer *)w, oom, NULL, NULL, 0, timeout_ms);
		return LK_ERR_INVALID;
	}
	int32_t rc = api->stream_close((lk_stream_writer *)w, lkgo_str(reason), all,
	                               all == NULL ? NULL : all + n, n, timeout_ms);
	free(all);
	return rc;
}

static inline int32_t lkgo_rpc_register(const lk_host_api *api, const lk_job *job, _GoString_ method) {
	return api->rpc_register(job, lkgo_str(method));
}
static inline int32_t lkgo_rpc_unregister(const lk_host_api *api, const lk_job *job, _GoString_ method) {
	return api->rpc_unregister(job, lkgo_str(method));
}
static inline int32_t lkgo_next_rpc(const lk_host_api *api, const lk_job *job, uint32_t timeout_ms,
                                    lk_rpc_invocation *out) {
	memset(out, 0, sizeof *out);
	out->struct_size = (uint32_t)sizeof *out;
	return api->next_rpc(job, timeout_ms, out);
}
static inline int32_t lkgo_rpc_respond(const lk_host_api *api, const lk_job *job, lk_rpc_invocation *inv,
                                       int32_t code, _GoString_ payload, _GoString_ data) {
	return api->rpc_respond(job, inv, code, lkgo_str(payload), lkgo_str(data));
}
static inline int32_t lkgo_perform_rpc(const lk_host_api *api, const lk_job *job, _GoString_ dest,
                                       _GoString_ method, _GoString_ payload, uint32_t timeout_ms,
                                       lk_rpc_result *out) {
	memset(out, 0, sizeof *out);
	out->struct_size = (uint32_t)sizeof *out;
	return api->perform_rpc(job, lkgo_str(dest), lkgo_str(method), lkgo_str(payload), timeout_ms, out);
}
static inline void lkgo_rpc_result_release(const lk_host_api *api, const lk_job *job, lk_rpc_result *r) {
	api->rpc_result_release(job, r);
}
static inline int32_t lkgo_publish_transcription(const lk_host_api *api, const lk_job *job, uint32_t flags,
                                                 _GoString_ identity, _GoString_ track_sid,
                                                 _GoString_ segment_id, _GoString_ text,
                                                 _GoString_ language, uint64_t start_ms, uint64_t end_ms,
                                                 uint32_t timeout_ms) {
	lk_transcription t;
	memset(&t, 0, sizeof t);
	t.struct_size = (uint32_t)sizeof t;
	t.flags = flags;
	t.participant_identity = lkgo_str(identity);
	t.track_sid = lkgo_str(track_sid);
	t.segment_id = lkgo_str(segment_id);
	t.text = lkgo_str(text);
	t.language = lkgo_str(language);
	t.start_ms = start_ms;
	t.end_ms = end_ms;
	return api->publish_transcription(job, &t, timeout_ms);
}
*/
import "C"

import (
	"math"
	"runtime/cgo"
	"time"
	"unsafe"
)

// Internal results and constants, from lk_plugin.h (one source of truth:
// the header).
const (
	abiMajor = C.LK_ABI_MAJOR
	abiMinor = C.LK_ABI_MINOR

	runPanicked = int32(C.LK_RUN_PANICKED)

	nextEvent        = int32(C.LK_NEXT_EVENT)
	nextTimeout      = int32(C.LK_NEXT_TIMEOUT)
	nextShuttingDown = int32(C.LK_NEXT_SHUTTING_DOWN)
	nextMissed       = int32(C.LK_NEXT_MISSED)

	codeOK           = int32(C.LK_OK)
	codeTimeout      = int32(C.LK_TIMEOUT)
	codeShuttingDown = int32(C.LK_SHUTTING_DOWN)
	codeMissed       = int32(C.LK_MISSED)
	codeEnded        = int32(C.LK_ENDED)
	codeInvalid      = int32(C.LK_ERR_INVALID)
	codeUnsupported  = int32(C.LK_ERR_UNSUPPORTED)
	codeNotFound     = int32(C.LK_ERR_NOT_FOUND)
	codeTooLarge     = int32(C.LK_ERR_TOO_LARGE)
	codeNotConnected = int32(C.LK_ERR_NOT_CONNECTED)
	codeClosed       = int32(C.LK_ERR_CLOSED)
	codeRefused      = int32(C.LK_ERR_REFUSED)
	codeCleared      = int32(C.LK_CLEARED)
	codeAborted      = int32(C.LK_ERR_ABORTED)

	flagConcealed = uint32(C.LK_AUDIO_FRAME_CONCEALED)
	flagSilence   = uint32(C.LK_AUDIO_FRAME_SILENCE)
	dataReliable  = uint32(C.LK_DATA_RELIABLE)

	streamHasTotalLength = uint32(C.LK_STREAM_HAS_TOTAL_LENGTH)
	transcriptionFinal   = uint32(C.LK_TRANSCRIPTION_FINAL)
)

// The exported constants are literals, so godoc shows their values; these
// fail to compile when one differs from lk_plugin.h (a constant index out
// of range is a compile error).
var (
	_ = [1]struct{}{}[MaxReliableData-int(C.LK_MAX_RELIABLE_DATA)]
	_ = [1]struct{}{}[int(LevelError)-int(C.LK_LOG_ERROR)]
	_ = [1]struct{}{}[int(LevelWarn)-int(C.LK_LOG_WARN)]
	_ = [1]struct{}{}[int(LevelInfo)-int(C.LK_LOG_INFO)]
	_ = [1]struct{}{}[int(LevelDebug)-int(C.LK_LOG_DEBUG)]
	_ = [1]struct{}{}[int(LevelTrace)-int(C.LK_LOG_TRACE)]
	_ = [1]struct{}{}[int(ShutdownRequestedByPlugin)-int(C.LK_SHUTDOWN_REQUESTED_BY_PLUGIN)]
	_ = [1]struct{}{}[int(ShutdownPluginReturned)-int(C.LK_SHUTDOWN_PLUGIN_RETURNED)]
	_ = [1]struct{}{}[int(ShutdownPluginPanicked)-int(C.LK_SHUTDOWN_PLUGIN_PANICKED)]
	_ = [1]struct{}{}[int(ShutdownRoomDisconnected)-int(C.LK_SHUTDOWN_ROOM_DISCONNECTED)]
	_ = [1]struct{}{}[int(ShutdownServerUnreachable)-int(C.LK_SHUTDOWN_SERVER_UNREACHABLE)]
	_ = [1]struct{}{}[int(ShutdownSignalSIGINT)-int(C.LK_SHUTDOWN_SIGNAL_SIGINT)]
	_ = [1]struct{}{}[int(ShutdownSignalSIGTERM)-int(C.LK_SHUTDOWN_SIGNAL_SIGTERM)]
	_ = [1]struct{}{}[int(ShutdownDeadlineExceeded)-int(C.LK_SHUTDOWN_DEADLINE_EXCEEDED)]
	_ = [1]struct{}{}[int(ShutdownSignalSIGHUP)-int(C.LK_SHUTDOWN_SIGNAL_SIGHUP)]
	_ = [1]struct{}{}[int(ShutdownDuplicateIdentity)-int(C.LK_SHUTDOWN_DUPLICATE_IDENTITY)]
	_ = [1]struct{}{}[int(ShutdownMediaFailed)-int(C.LK_SHUTDOWN_MEDIA_FAILED)]
	_ = [1]struct{}{}[int(ShutdownServerError)-int(C.LK_SHUTDOWN_SERVER_ERROR)]
	_ = [1]struct{}{}[int(ShutdownParticipantLeft)-int(C.LK_SHUTDOWN_PARTICIPANT_LEFT)]
	_ = [1]struct{}{}[int(ShutdownJobTerminated)-int(C.LK_SHUTDOWN_JOB_TERMINATED)]
	_ = [1]struct{}{}[int(ShutdownWorkerStopping)-int(C.LK_SHUTDOWN_WORKER_STOPPING)]
	_ = [1]struct{}{}[int(ShutdownWorkerLost)-int(C.LK_SHUTDOWN_WORKER_LOST)]
	_ = [1]struct{}{}[int(ShutdownMemoryLimit)-int(C.LK_SHUTDOWN_MEMORY_LIMIT)]
	_ = [1]struct{}{}[int(StreamText)-int(C.LK_STREAM_TEXT)]
	_ = [1]struct{}{}[int(StreamBytes)-int(C.LK_STREAM_BYTES)]
	_ = [1]struct{}{}[RPCApplicationError-int(C.LK_RPC_APPLICATION_ERROR)]
	_ = [1]struct{}{}[RPCConnectionTimeout-int(C.LK_RPC_CONNECTION_TIMEOUT)]
	_ = [1]struct{}{}[RPCResponseTimeout-int(C.LK_RPC_RESPONSE_TIMEOUT)]
	_ = [1]struct{}{}[RPCRecipientDisconnected-int(C.LK_RPC_RECIPIENT_DISCONNECTED)]
	_ = [1]struct{}{}[RPCResponsePayloadTooLarge-int(C.LK_RPC_RESPONSE_PAYLOAD_TOO_LARGE)]
	_ = [1]struct{}{}[RPCSendFailed-int(C.LK_RPC_SEND_FAILED)]
	_ = [1]struct{}{}[RPCUnsupportedMethod-int(C.LK_RPC_UNSUPPORTED_METHOD)]
	_ = [1]struct{}{}[RPCRecipientNotFound-int(C.LK_RPC_RECIPIENT_NOT_FOUND)]
	_ = [1]struct{}{}[RPCRequestPayloadTooLarge-int(C.LK_RPC_REQUEST_PAYLOAD_TOO_LARGE)]
	_ = [1]struct{}{}[RPCUnsupportedServer-int(C.LK_RPC_UNSUPPORTED_SERVER)]
	_ = [1]struct{}{}[RPCUnsupportedVersion-int(C.LK_RPC_UNSUPPORTED_VERSION)]
	_ = [1]struct{}{}[int(TrackKindUnknown)-int(C.LK_TRACK_KIND_UNKNOWN)]
	_ = [1]struct{}{}[int(TrackKindAudio)-int(C.LK_TRACK_KIND_AUDIO)]
	_ = [1]struct{}{}[int(TrackKindVideo)-int(C.LK_TRACK_KIND_VIDEO)]
	_ = [1]struct{}{}[int(TrackSourceUnknown)-int(C.LK_TRACK_SOURCE_UNKNOWN)]
	_ = [1]struct{}{}[int(TrackSourceCamera)-int(C.LK_TRACK_SOURCE_CAMERA)]
	_ = [1]struct{}{}[int(TrackSourceMicrophone)-int(C.LK_TRACK_SOURCE_MICROPHONE)]
	_ = [1]struct{}{}[int(TrackSourceScreenShare)-int(C.LK_TRACK_SOURCE_SCREEN_SHARE)]
	_ = [1]struct{}{}[int(TrackSourceScreenShareAudio)-int(C.LK_TRACK_SOURCE_SCREEN_SHARE_AUDIO)]
)

// Event kinds, from lk_plugin.h.
const (
	kindParticipantJoined    = uint32(C.LK_EVENT_PARTICIPANT_JOINED)
	kindParticipantLeft      = uint32(C.LK_EVENT_PARTICIPANT_LEFT)
	kindTrackPublished       = uint32(C.LK_EVENT_TRACK_PUBLISHED)
	kindTrackUnpublished     = uint32(C.LK_EVENT_TRACK_UNPUBLISHED)
	kindTrackSubscribed      = uint32(C.LK_EVENT_TRACK_SUBSCRIBED)
	kindTrackUnsubscribed    = uint32(C.LK_EVENT_TRACK_UNSUBSCRIBED)
	kindDisconnected         = uint32(C.LK_EVENT_DISCONNECTED)
	kindReconnecting         = uint32(C.LK_EVENT_RECONNECTING)
	kindReconnected          = uint32(C.LK_EVENT_RECONNECTED)
	kindTrackMuted           = uint32(C.LK_EVENT_TRACK_MUTED)
	kindTrackUnmuted         = uint32(C.LK_EVENT_TRACK_UNMUTED)
	kindLocalTrackSubscribed = uint32(C.LK_EVENT_LOCAL_TRACK_SUBSCRIBED)
	trackKindAudio           = uint32(TrackKindAudio)
	trackSourceMicrophone    = uint32(TrackSourceMicrophone)
)

// cHost is the host behind one job: the table and the job handle the host
// passed to run. Both stay valid for the life of the process
// (lk_plugin.h, "Lifetime"), so a cHost may outlive run.
type cHost struct {
	api *C.lk_host_api
	job *C.lk_job
}

func goStr(s C.lk_str) string {
	if s.len == 0 || s.ptr == nil {
		return ""
	}
	return C.GoStringN(s.ptr, C.int(s.len))
}

// bytesPtr is b's first byte for the duration of a C call (nil when empty).
func bytesPtr(b []byte) *C.char {
	if len(b) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(&b[0]))
}

// pack puts strs back to back in one byte buffer plus their lengths: Go
// memory without Go pointers, so it may be passed to C for a call.
func pack(strs ...[]string) ([]byte, []C.size_t) {
	n, size := 0, 0
	for _, l := range strs {
		n += len(l)
		for _, s := range l {
			size += len(s)
		}
	}
	buf := make([]byte, 0, size)
	lens := make([]C.size_t, 0, n+1) // +1: never empty, so &lens[0] is valid
	for _, l := range strs {
		for _, s := range l {
			buf = append(buf, s...)
			lens = append(lens, C.size_t(len(s)))
		}
	}
	return buf, append(lens, 0)
}

func cFormat(f AudioFormat) C.lk_audio_format {
	return C.lk_audio_format{
		sample_rate:  C.uint32_t(f.SampleRate),
		num_channels: C.uint32_t(f.NumChannels),
		frame_ms:     C.uint32_t(f.FrameDuration.Milliseconds()),
		queue_ms:     C.uint32_t(f.QueueDuration.Milliseconds()),
	}
}

func (h cHost) abi() (uint16, uint16) { return uint16(h.api.abi_major), uint16(h.api.abi_minor) }
func (h cHost) hasMedia() bool        { return C.lkgo_has_media(h.api) != 0 }

func (h cHost) hasStreams() bool { return C.lkgo_has_streams(h.api) != 0 }

func (h cHost) describeJob() Job {
	j := Job{
		ID:       goStr(C.lkgo_job_id(h.api, h.job)),
		RoomName: goStr(C.lkgo_room_name(h.api, h.job)),
		Metadata: goStr(C.lkgo_job_metadata(h.api, h.job)),
		Identity: goStr(C.lkgo_identity(h.api, h.job)),
	}
	if h.hasStreams() {
		j.ParticipantIdentity = goStr(C.lkgo_job_participant_identity(h.api, h.job))
		j.AgentName = goStr(C.lkgo_agent_name(h.api, h.job))
	}
	return j
}

func (h cHost) jobAttributes() map[string]string {
	out := map[string]string{}
	if !h.hasStreams() {
		return out
	}
	n := int(C.lkgo_job_attributes(h.api, h.job, nil, nil, 0))
	if n == 0 {
		return out
	}
	// Go memory the host fills with pointers to its own strings (valid
	// for the life of the process); copied before return.
	keys := make([]C.lk_str, n)
	values := make([]C.lk_str, n)
	got := int(C.lkgo_job_attributes(h.api, h.job, &keys[0], &values[0], C.size_t(n)))
	for i := 0; i < min(n, got); i++ {
		out[goStr(keys[i])] = goStr(values[i])
	}
	return out
}

func (h cHost) setCloseOnParticipantLeft(close bool) {
	var v C.int32_t
	if close {
		v = 1
	}
	C.lkgo_set_close_on_participant_left(h.api, h.job, v)
}

func (h cHost) shutdown(reason string) { C.lkgo_shutdown(h.api, h.job, reason) }
func (h cHost) isShuttingDown() bool   { return C.lkgo_is_shutting_down(h.api, h.job) != 0 }
func (h cHost) log(level int32, msg string) {
	C.lkgo_log(h.api, h.job, C.int32_t(level), msg)
}

func (h cHost) onShutdown(hook func(ShutdownInfo)) {
	handle := cgo.NewHandle(hook)
	// The host frees the handle through lkgoHookFree in every case,
	// including a refusal.
	C.lkgo_on_shutdown(h.api, h.job, C.uintptr_t(handle))
}

func (h cHost) nextEvent(timeoutMs uint32) (rawEvent, int32, uint64) {
	var ev C.lk_event
	var missed C.uint64_t
	rc := int32(C.lkgo_next_event(h.api, h.job, C.uint32_t(timeoutMs), &ev, &missed))
	if rc != nextEvent {
		return rawEvent{}, rc, uint64(missed)
	}
	out := rawEvent{
		kind:                uint32(ev.kind),
		trackKind:           uint32(ev.track_kind),
		trackSource:         uint32(ev.track_source),
		name:                goStr(ev.name),
		participantIdentity: goStr(ev.participant_identity),
		participantSID:      goStr(ev.participant_sid),
		trackSID:            goStr(ev.track_sid),
		trackName:           goStr(ev.track_name),
		reason:              goStr(ev.reason),
	}
	C.lkgo_event_release(h.api, h.job, &ev)
	return out, rc, 0
}

func (h cHost) audioStreamOpen(trackSID string, f AudioFormat) (any, int32) {
	cf := cFormat(f)
	var s *C.lk_audio_stream
	rc := int32(C.lkgo_audio_stream_open(h.api, h.job, trackSID, &cf, &s))
	if rc != codeOK {
		return nil, rc
	}
	return s, rc
}

func (h cHost) audioStreamRead(s any, pcm []int16, timeoutMs uint32) (frameInfo, int32) {
	var info C.lk_audio_frame_info
	rc := int32(C.lkgo_audio_stream_read(h.api, s.(*C.lk_audio_stream),
		(*C.int16_t)(unsafe.Pointer(&pcm[0])), C.size_t(len(pcm)), C.uint32_t(timeoutMs), &info))
	return frameInfo{
		samplesPerChannel: int(info.samples_per_channel),
		flags:             uint32(info.flags),
		ptsMicros:         uint64(info.pts_us),
		dropped:           uint64(info.dropped_frames),
	}, rc
}

func (h cHost) audioStreamClose(s any) { C.lkgo_audio_stream_close(h.api, s.(*C.lk_audio_stream)) }

func (h cHost) audioSourcePublish(name string, f AudioFormat) (any, string, int32) {
	cf := cFormat(f)
	var s *C.lk_audio_source
	var sid C.lk_str
	rc := int32(C.lkgo_audio_source_publish(h.api, h.job, name, &cf, &s, &sid))
	if rc != codeOK {
		return nil, "", rc
	}
	return s, goStr(sid), rc
}

func (h cHost) audioSourceCapture(s any, pcm []int16, samplesPerChannel int, timeoutMs uint32) int32 {
	return int32(C.lkgo_audio_source_capture(h.api, s.(*C.lk_audio_source),
		(*C.int16_t)(unsafe.Pointer(&pcm[0])), C.size_t(samplesPerChannel), C.uint32_t(timeoutMs)))
}

func (h cHost) audioSourceClear(s any) uint32 {
	return uint32(C.lkgo_audio_source_clear(h.api, s.(*C.lk_audio_source)))
}

func (h cHost) audioSourceQueuedMs(s any) uint32 {
	return uint32(C.lkgo_audio_source_queued_ms(h.api, s.(*C.lk_audio_source)))
}

func (h cHost) audioSourceClose(s any) { C.lkgo_audio_source_close(h.api, s.(*C.lk_audio_source)) }

func (h cHost) publishData(payload []byte, topic string, to []string, flags, timeoutMs uint32) int32 {
	buf, lens := pack(to)
	data := (*C.uint8_t)(unsafe.Pointer(bytesPtr(payload)))
	return int32(C.lkgo_publish_data(h.api, h.job, data, C.size_t(len(payload)), topic,
		bytesPtr(buf), &lens[0], C.size_t(len(to)), C.uint32_t(flags), C.uint32_t(timeoutMs)))
}

func (h cHost) nextData(timeoutMs uint32) (DataPacket, int32, uint64) {
	var p C.lk_data_packet
	var missed C.uint64_t
	rc := int32(C.lkgo_next_data(h.api, h.job, C.uint32_t(timeoutMs), &p, &missed))
	if rc != codeOK {
		return DataPacket{}, rc, uint64(missed)
	}
	out := DataPacket{
		Topic:    goStr(p.topic),
		Sender:   goStr(p.participant_identity),
		Reliable: uint32(p.flags)&dataReliable != 0,
	}
	if p.len > 0 && p.data != nil {
		out.Payload = C.GoBytes(unsafe.Pointer(p.data), C.int(p.len))
	} else {
		out.Payload = []byte{}
	}
	C.lkgo_data_release(h.api, h.job, &p)
	return out, rc, 0
}

func (h cHost) setAttributes(keys, values []string, timeoutMs uint32) int32 {
	buf, lens := pack(keys, values)
	return int32(C.lkgo_set_attributes(h.api, h.job, bytesPtr(buf), &lens[0], C.size_t(len(keys)),
		C.uint32_t(timeoutMs)))
}

func (h cHost) setMetadata(md string, timeoutMs uint32) int32 {
	return int32(C.lkgo_set_metadata(h.api, h.job, md, C.uint32_t(timeoutMs)))
}

func (h cHost) audioSourceWaitSubscribed(s any, timeoutMs uint32) int32 {
	return int32(C.lkgo_audio_source_wait_subscribed(h.api, s.(*C.lk_audio_source), C.uint32_t(timeoutMs)))
}

// ---- 1.4: data streams, RPC, transcriptions ----------------------------

// Reader and writer handles are host ids held as uintptr (see the C
// preamble); a handle of the fake host is anything else.

func (h cHost) streamAcceptTopic(topic string) int32 {
	return int32(C.lkgo_stream_accept_topic(h.api, h.job, topic))
}

func (h cHost) nextStream(timeoutMs uint32) (any, int32, uint64) {
	var r C.uintptr_t
	var missed C.uint64_t
	rc := int32(C.lkgo_next_stream(h.api, h.job, C.uint32_t(timeoutMs), &r, &missed))
	if rc != codeOK {
		return nil, rc, uint64(missed)
	}
	return uintptr(r), rc, 0
}

func (h cHost) streamReaderInfo(r any) (StreamInfo, int32) {
	var i C.lk_stream_info
	rc := int32(C.lkgo_stream_reader_info(h.api, C.uintptr_t(r.(uintptr)), &i))
	if rc != codeOK {
		return StreamInfo{}, rc
	}
	out := StreamInfo{
		StreamID:       goStr(i.stream_id),
		Kind:           StreamKind(i.kind),
		Topic:          goStr(i.topic),
		MimeType:       goStr(i.mime_type),
		SenderIdentity: goStr(i.sender_identity),
		Name:           goStr(i.name),
		TotalLength:    -1,
		Timestamp:      time.UnixMilli(int64(i.timestamp_ms)),
		Attributes:     map[string]string{},
	}
	if uint32(i.flags)&streamHasTotalLength != 0 && uint64(i.total_length) <= math.MaxInt64 {
		out.TotalLength = int64(i.total_length)
	}
	if n := int(i.n_attributes); n > 0 && i.attribute_keys != nil && i.attribute_values != nil {
		// Host memory, valid until the reader is closed; copied here.
		keys := unsafe.Slice(i.attribute_keys, n)
		values := unsafe.Slice(i.attribute_values, n)
		for j := range keys {
			out.Attributes[goStr(keys[j])] = goStr(values[j])
		}
	}
	return out, rc
}

func (h cHost) streamRead(r any, buf []byte, timeoutMs uint32) (int, int32) {
	var n C.size_t
	rc := int32(C.lkgo_stream_read(h.api, C.uintptr_t(r.(uintptr)), (*C.uint8_t)(unsafe.Pointer(&buf[0])),
		C.size_t(len(buf)), &n, C.uint32_t(timeoutMs)))
	if rc != codeOK {
		return 0, rc
	}
	return min(int(n), len(buf)), rc
}

func (h cHost) streamReaderError(r any) string {
	return goStr(C.lkgo_stream_reader_error(h.api, C.uintptr_t(r.(uintptr))))
}

func (h cHost) streamReaderClose(r any) { C.lkgo_stream_reader_close(h.api, C.uintptr_t(r.(uintptr))) }

func (h cHost) streamOpen(o streamOpen, timeoutMs uint32) (any, string, int32) {
	buf, lens := pack(o.attrKeys, o.attrValues, o.destinations)
	var flags C.uint32_t
	if o.hasTotal {
		flags = C.uint32_t(streamHasTotalLength)
	}
	var w C.uintptr_t
	var id C.lk_str
	rc := int32(C.lkgo_stream_open(h.api, h.job, C.uint32_t(o.kind), flags, C.uint64_t(o.total),
		o.topic, o.mimeType, o.name, o.sender, o.streamID, bytesPtr(buf), &lens[0],
		C.size_t(len(o.attrKeys)), C.size_t(len(o.destinations)), C.uint32_t(timeoutMs), &w, &id))
	if rc != codeOK {
		return nil, "", rc
	}
	// The id is host memory until stream_close: copied now.
	return uintptr(w), goStr(id), rc
}

func (h cHost) streamWrite(w any, data []byte, timeoutMs uint32) int32 {
	return int32(C.lkgo_stream_write(h.api, C.uintptr_t(w.(uintptr)),
		(*C.uint8_t)(unsafe.Pointer(bytesPtr(data))), C.size_t(len(data)), C.uint32_t(timeoutMs)))
}

func (h cHost) streamClose(w any, reason string, keys, values []string, timeoutMs uint32) int32 {
	buf, lens := pack(keys, values)
	return int32(C.lkgo_stream_close(h.api, C.uintptr_t(w.(uintptr)), reason, bytesPtr(buf), &lens[0],
		C.size_t(len(keys)), C.uint32_t(timeoutMs)))
}

func (h cHost) rpcRegister(method string) int32 {
	return int32(C.lkgo_rpc_register(h.api, h.job, method))
}

func (h cHost) rpcUnregister(method string) int32 {
	return int32(C.lkgo_rpc_unregister(h.api, h.job, method))
}

func (h cHost) nextRPC(timeoutMs uint32) (rpcCall, int32) {
	// Go memory without Go pointers: the host fills it with pointers to
	// its own strings and its host_private, and reads it again in
	// rpc_respond. Nothing of it is Go's to free.
	inv := new(C.lk_rpc_invocation)
	rc := int32(C.lkgo_next_rpc(h.api, h.job, C.uint32_t(timeoutMs), inv))
	if rc != codeOK {
		return rpcCall{}, rc
	}
	call := rpcCall{
		inv: RPCInvocation{
			RequestID:       goStr(inv.request_id),
			CallerIdentity:  goStr(inv.caller_identity),
			Method:          goStr(inv.method),
			Payload:         goStr(inv.payload),
			ResponseTimeout: time.Duration(inv.response_timeout_ms) * time.Millisecond,
		},
		token: inv,
	}
	if ms := int64(inv.deadline_unix_ms); ms > 0 {
		call.inv.Deadline = time.UnixMilli(ms)
	}
	return call, rc
}

func (h cHost) rpcRespond(token any, code int32, payload, data string) int32 {
	return int32(C.lkgo_rpc_respond(h.api, h.job, token.(*C.lk_rpc_invocation), C.int32_t(code), payload, data))
}

func (h cHost) performRPC(destination, method, payload string, timeoutMs uint32) (rpcOutcome, int32) {
	var r C.lk_rpc_result
	rc := int32(C.lkgo_perform_rpc(h.api, h.job, destination, method, payload, C.uint32_t(timeoutMs), &r))
	if rc != codeOK {
		return rpcOutcome{}, rc
	}
	out := rpcOutcome{code: int32(r.error_code), payload: goStr(r.payload), data: goStr(r.error_data)}
	C.lkgo_rpc_result_release(h.api, h.job, &r)
	return out, rc
}

func (h cHost) publishTranscription(t Transcription, timeoutMs uint32) int32 {
	var flags C.uint32_t
	if t.Final {
		flags = C.uint32_t(transcriptionFinal)
	}
	return int32(C.lkgo_publish_transcription(h.api, h.job, flags, t.ParticipantIdentity, t.TrackSID,
		t.SegmentID, t.Text, t.Language, C.uint64_t(max(t.Start, 0).Milliseconds()),
		C.uint64_t(max(t.End, 0).Milliseconds()), C.uint32_t(timeoutMs)))
}

// setDescriptor hands the descriptor's strings to glue.c. They are C
// copies that are never freed: the descriptor must stay valid while the
// library is loaded, which is for the life of the process.
func setDescriptor(name, version string) {
	C.lkgo_set_descriptor(C.CString(name), C.size_t(len(name)), C.CString(version), C.size_t(len(version)))
}

func shutdownInfoFromC(info *C.lk_shutdown_info) ShutdownInfo {
	if info == nil {
		return ShutdownInfo{}
	}
	return ShutdownInfo{
		Code:   ShutdownCode(info.reason),
		Reason: goStr(info.reason_str),
		Detail: goStr(info.detail),
		UnixMs: int64(info.unix_ms),
	}
}
