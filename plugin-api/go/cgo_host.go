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
*/
import "C"

import (
	"runtime/cgo"
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

	flagConcealed = uint32(C.LK_AUDIO_FRAME_CONCEALED)
	flagSilence   = uint32(C.LK_AUDIO_FRAME_SILENCE)
	dataReliable  = uint32(C.LK_DATA_RELIABLE)
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
	kindParticipantJoined = uint32(C.LK_EVENT_PARTICIPANT_JOINED)
	kindParticipantLeft   = uint32(C.LK_EVENT_PARTICIPANT_LEFT)
	kindTrackPublished    = uint32(C.LK_EVENT_TRACK_PUBLISHED)
	kindTrackUnpublished  = uint32(C.LK_EVENT_TRACK_UNPUBLISHED)
	kindTrackSubscribed   = uint32(C.LK_EVENT_TRACK_SUBSCRIBED)
	kindTrackUnsubscribed = uint32(C.LK_EVENT_TRACK_UNSUBSCRIBED)
	kindDisconnected      = uint32(C.LK_EVENT_DISCONNECTED)
	kindReconnecting      = uint32(C.LK_EVENT_RECONNECTING)
	kindReconnected       = uint32(C.LK_EVENT_RECONNECTED)
	trackKindAudio        = uint32(TrackKindAudio)
	trackSourceMicrophone = uint32(TrackSourceMicrophone)
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

func (h cHost) describeJob() Job {
	return Job{
		ID:       goStr(C.lkgo_job_id(h.api, h.job)),
		RoomName: goStr(C.lkgo_room_name(h.api, h.job)),
		Metadata: goStr(C.lkgo_job_metadata(h.api, h.job)),
		Identity: goStr(C.lkgo_identity(h.api, h.job)),
	}
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
