/*
 * lk_plugin.h -- the lk-go plugin ABI, version 1.4.
 *
 * This header is the contract between the lk-go host and a plugin written in
 * C, Go (cgo) or any language that can export a C function. The Rust SDK in
 * plugin-api/src mirrors it; a C plugin compiled against this header is run by
 * the test suite, so the two cannot drift apart silently.
 *
 * Versioning (modelled on GStreamer's plugin descriptor, OBS's module version
 * and SQLite's append-only API routines):
 *   - A plugin records the ABI it was compiled against in its descriptor.
 *   - The host loads it when plugin major == host major and plugin minor <=
 *     host minor. A plugin newer than the host is refused, naming both versions.
 *   - Within one major, lk_host_api only grows at its end. A plugin may call a
 *     function added in minor N only if api->abi_minor >= N (or, equivalently,
 *     api->size covers the field). A plugin built against an older minor
 *     simply never looks at the newer fields.
 *
 *   - A plugin never receives a value its header does not define: an event
 *     kind, shutdown reason or result code added in a later minor is shown
 *     to an older plugin as the closest value its minor defines (or not at
 *     all, for events). Newer values are documented with the minor that
 *     added them.
 *
 * Memory: strings cross as UTF-8 pointer + length (lk_str), never
 * NUL-terminated on the way out. Whoever allocates frees: strings the host
 * hands out are owned by the host, strings the plugin passes in are only
 * read during the call.
 *
 * Lifetime: the lk_job pointer and the job strings (job_id, room_name,
 * job_metadata, participant_identity) stay valid for the life of the
 * process, even after run returned and the job ended (the library is never
 * unloaded). After the job ended every function still works and answers as
 * after shutdown: next_event returns LK_NEXT_SHUTTING_DOWN, shutdown does
 * nothing, is_shutting_down returns 1, on_shutdown runs the hook at once.
 * Event strings live until lk_host_api.event_release.
 *
 * Lengths: a length above LK_MAX_BELIEVED_LEN (e.g. LK_STR_NUL_TERMINATED,
 * the C habit of (size_t)-1) means "read up to the NUL", and the host never
 * reads more than LK_MAX_LOG_LEN bytes of a log message or LK_MAX_REASON_LEN
 * of a shutdown reason (longer ones are cut); invalid UTF-8 is replaced. A
 * smaller length must be true: the host reads that many bytes (as any C
 * API would, it cannot check a pointer's extent).
 *
 * Threads: every lk_host_api function may be called from any thread, at
 * any time, concurrently. Each call that waits (next_event) waits at most
 * its own timeout, whatever other threads do, and returns within ~100 ms of
 * shutdown beginning.
 *
 * Signals and output: the host owns SIGINT, SIGTERM and SIGHUP (they start
 * the shutdown cascade) and ignores SIGPIPE: a write to a closed stdout or
 * stderr fails with EPIPE. A Go plugin must keep it so: in a c-shared
 * library the Go runtime kills the process on such a write unless SIGPIPE
 * is passed to signal.Notify (the Go SDK, plugin-api/go, does).
 */
#ifndef LK_PLUGIN_H
#define LK_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LK_PLUGIN_MAGIC 0x4C4B474Fu /* "LKGO" */
#define LK_ABI_MAJOR 1
#define LK_ABI_MINOR 4

/* A length the host does not believe; it reads a NUL-terminated string. */
#define LK_STR_NUL_TERMINATED ((size_t)-1)
#define LK_MAX_BELIEVED_LEN ((size_t)1 << 30)
/* Longest log message / shutdown reason the host keeps, in bytes. */
#define LK_MAX_LOG_LEN (64 * 1024)
#define LK_MAX_REASON_LEN 1024

/* The one symbol a plugin exports. A function, not a data symbol, so that Go's
 * -buildmode=c-shared and other toolchains can provide it. */
#define LK_PLUGIN_ENTRY_SYMBOL "lk_plugin_entry"

/* `run` returns this when it caught a panic / unrecoverable error of its own
 * language instead of letting it cross the C boundary. The host reports
 * "plugin panicked" (exit code 70). */
#define LK_RUN_PANICKED (-1070)

typedef struct lk_str {
    const char *ptr; /* UTF-8, not NUL-terminated; may be NULL when len == 0 */
    size_t len;
} lk_str;

/* Opaque per-job handle, owned by the host. */
typedef struct lk_job lk_job;

/* Log levels for lk_host_api.log. */
enum {
    LK_LOG_ERROR = 1,
    LK_LOG_WARN = 2,
    LK_LOG_INFO = 3,
    LK_LOG_DEBUG = 4,
    LK_LOG_TRACE = 5
};

/* Why a job shuts down (lk_shutdown_info.reason). reason_str holds the same
 * value as a stable snake_case string; lk_shutdown_info.detail says more. */
enum {
    LK_SHUTDOWN_REQUESTED_BY_PLUGIN = 1, /* "requested_by_plugin" */
    LK_SHUTDOWN_PLUGIN_RETURNED = 2,     /* "plugin_returned" */
    LK_SHUTDOWN_PLUGIN_PANICKED = 3,     /* "plugin_panicked" */
    LK_SHUTDOWN_ROOM_DISCONNECTED = 4,   /* "room_disconnected" */
    LK_SHUTDOWN_SERVER_UNREACHABLE = 5,  /* "server_unreachable" */
    LK_SHUTDOWN_SIGNAL_SIGINT = 6,       /* "signal_sigint" */
    LK_SHUTDOWN_SIGNAL_SIGTERM = 7,      /* "signal_sigterm" */
    LK_SHUTDOWN_DEADLINE_EXCEEDED = 8,   /* "deadline_exceeded" */
    /* ---- 1.2 (a 1.0/1.1 plugin sees the value in brackets instead) ---- */
    LK_SHUTDOWN_SIGNAL_SIGHUP = 9,       /* "signal_sighup" [SIGNAL_SIGTERM] */
    LK_SHUTDOWN_DUPLICATE_IDENTITY = 10, /* "duplicate_identity" [ROOM_DISCONNECTED] */
    LK_SHUTDOWN_MEDIA_FAILED = 11,       /* "media_failed" [SERVER_UNREACHABLE] */
    LK_SHUTDOWN_SERVER_ERROR = 12,       /* "server_error" [ROOM_DISCONNECTED] */
    /* ---- 1.4 (a 1.0-1.3 plugin sees the value in brackets instead) ---- */
    /* The participant a participant or publisher job is for
     * (job_participant_identity) left the room; see
     * set_close_on_participant_left. The plugin's code is the outcome. */
    LK_SHUTDOWN_PARTICIPANT_LEFT = 13,   /* "participant_left" [ROOM_DISCONNECTED] */
    /* The server ended the job (AgentDispatchService.DeleteDispatch). The
     * plugin's code is the outcome. */
    LK_SHUTDOWN_JOB_TERMINATED = 14,     /* "job_terminated" [ROOM_DISCONNECTED] */
    /* The worker that started the job is stopping (its drain ran out, or
     * it was told to stop at once). */
    LK_SHUTDOWN_WORKER_STOPPING = 15,    /* "worker_stopping" [SIGNAL_SIGTERM] */
    /* The worker that started the job went away (its pipe closed). */
    LK_SHUTDOWN_WORKER_LOST = 16,        /* "worker_lost" [SIGNAL_SIGTERM] */
    /* The job's memory went over the worker's --job-memory-limit. */
    LK_SHUTDOWN_MEMORY_LIMIT = 17        /* "memory_limit" [SIGNAL_SIGTERM] */
};

typedef struct lk_shutdown_info {
    uint32_t reason;     /* LK_SHUTDOWN_* */
    uint32_t reserved;
    lk_str reason_str;   /* snake_case, e.g. "signal_sigterm" */
    lk_str detail;       /* free text, may be empty */
    int64_t unix_ms;     /* when shutdown began, ms since the Unix epoch */
} lk_shutdown_info;

/* Event kinds (lk_event.kind). */
enum {
    LK_EVENT_PARTICIPANT_JOINED = 1,
    LK_EVENT_PARTICIPANT_LEFT = 2,
    LK_EVENT_TRACK_PUBLISHED = 3,
    LK_EVENT_TRACK_UNPUBLISHED = 4,
    LK_EVENT_TRACK_SUBSCRIBED = 5,
    LK_EVENT_TRACK_UNSUBSCRIBED = 6,
    LK_EVENT_DISCONNECTED = 7,
    /* ---- 1.2 (never delivered to a 1.0/1.1 plugin) ---- */
    /* The session was interrupted and is being resumed; reason is why
     * (e.g. "connection_lost"). Followed by RECONNECTED, or by DISCONNECTED
     * when the host's reconnect window passes. */
    LK_EVENT_RECONNECTING = 8,
    /* The session is back; reason is "resumed" (same participant) or
     * "rejoined" (a new participant session: participant and track events
     * describe what changed meanwhile). */
    LK_EVENT_RECONNECTED = 9,
    /* ---- 1.4 (never delivered to a 1.0-1.3 plugin) ---- */
    /* A remote publication was muted / unmuted by its publisher (the
     * server then forwards no media: a reader gets frames flagged
     * LK_AUDIO_FRAME_SILENCE in real time). A track published muted is
     * announced TRACK_PUBLISHED, then TRACK_MUTED; it is subscribed when
     * the server offers it, muted or not. */
    LK_EVENT_TRACK_MUTED = 10,
    LK_EVENT_TRACK_UNMUTED = 11,
    /* A track this job published has its first subscriber (track_sid is
     * the job's own; participant fields are empty). livekit-server sends
     * this once per publication and says nothing of later subscribers,
     * so no count is given. See audio_source_wait_subscribed. */
    LK_EVENT_LOCAL_TRACK_SUBSCRIBED = 12
};

/* lk_event.track_kind */
enum { LK_TRACK_KIND_UNKNOWN = 0, LK_TRACK_KIND_AUDIO = 1, LK_TRACK_KIND_VIDEO = 2 };

/* lk_event.track_source */
enum {
    LK_TRACK_SOURCE_UNKNOWN = 0,
    LK_TRACK_SOURCE_CAMERA = 1,
    LK_TRACK_SOURCE_MICROPHONE = 2,
    LK_TRACK_SOURCE_SCREEN_SHARE = 3,
    LK_TRACK_SOURCE_SCREEN_SHARE_AUDIO = 4
};

typedef struct lk_event {
    uint32_t kind;          /* LK_EVENT_* */
    uint32_t track_kind;    /* LK_TRACK_KIND_*, track events only */
    uint32_t track_source;  /* LK_TRACK_SOURCE_*, track events only */
    uint32_t reserved;
    lk_str name;            /* snake_case event name, e.g. "track_subscribed" */
    lk_str participant_identity;
    lk_str participant_sid;
    lk_str track_sid;       /* track events only */
    lk_str track_name;      /* track events only */
    lk_str reason;          /* DISCONNECTED, RECONNECTING, RECONNECTED only */
    void *host_private;     /* owned by the host; pass the event to event_release */
} lk_event;

/* lk_host_api.next_event results. */
enum {
    LK_NEXT_EVENT = 0,         /* *out holds an event; release it with event_release */
    LK_NEXT_TIMEOUT = 1,       /* nothing arrived within timeout_ms */
    LK_NEXT_SHUTTING_DOWN = 2, /* the job is shutting down and no event is pending */
    LK_NEXT_MISSED = 3,        /* the plugin fell behind: *missed events were dropped */
    LK_NEXT_INVALID = -1       /* NULL argument */
};

/* ---- 1.3: media and data ----------------------------------------------
 *
 * Audio in (lk_audio_stream), audio out (lk_audio_source), user data packets
 * and the job participant's attributes/metadata. The names follow the
 * official SDKs (Python AudioStream / AudioSource / publish_data /
 * set_attributes).
 *
 * Ownership: PCM and payloads are copied during the call (into the plugin's
 * buffer on read, out of it on capture / publish_data); the host keeps no
 * plugin pointer after a call returns. A received data packet is host-owned
 * until data_release. Stream and source handles are host-owned; their
 * memory stays valid for the life of the process, so a call on a closed
 * handle is safe and returns LK_ERR_CLOSED (each open costs the host a few
 * dozen bytes until exit). Handles left open are closed when the job ends.
 *
 * Threads: every function may be called from any thread. A stream has one
 * reader at a time (concurrent reads are serialised). close from another
 * thread wakes a blocked read or capture, which returns LK_ERR_CLOSED. The
 * host never calls plugin code for media: decoding, encoding and
 * resampling run on host threads, so read and capture are a copy and a
 * wait. Once shutdown begins, read, capture and publish return
 * LK_SHUTTING_DOWN (a waiting call within 100 ms); next_data first hands
 * out packets already queued, as next_event does.
 *
 * A 1.0-1.2 plugin never sees any of this: its header has none of it.
 */

/* Results of the 1.3 functions. Where they overlap LK_NEXT_*, values agree. */
enum {
    LK_OK = 0,
    LK_TIMEOUT = 1,          /* nothing within timeout_ms; nothing was copied */
    LK_SHUTTING_DOWN = 2,    /* the job is shutting down */
    LK_MISSED = 3,           /* next_data: *missed packets were dropped (queue full) */
    LK_ENDED = 4,            /* audio stream: the track went away and every frame was read */
    LK_ERR_INVALID = -1,     /* NULL or out-of-range argument (the log says which) */
    LK_ERR_UNSUPPORTED = -2, /* e.g. a video track, a format the host cannot produce */
    LK_ERR_NOT_FOUND = -3,   /* no subscribed track with that sid */
    LK_ERR_TOO_LARGE = -4,   /* buffer too small (read) or payload too large (publish_data) */
    LK_ERR_NOT_CONNECTED = -5, /* no server session (detached job, or the room was left) */
    LK_ERR_CLOSED = -6,      /* the handle was closed (or closed while waiting) */
    LK_ERR_REFUSED = -7,     /* the server refused (e.g. the token lacks canUpdateOwnMetadata) */
    /* ---- 1.4 (a 1.3 plugin sees the value in brackets instead) ---- */
    LK_CLEARED = 5,          /* capture: audio_source_clear ran while this call waited for
                                room; nothing was queued [LK_TIMEOUT] */
    LK_ERR_ABORTED = -8      /* a data stream ended abnormally (stream_reader_error says why) */
};

/* lk_audio_frame_info.flags */
enum {
    LK_AUDIO_FRAME_CONCEALED = 1, /* some samples were reconstructed (Opus FEC or PLC) */
    LK_AUDIO_FRAME_SILENCE = 2    /* some samples are gap fill: nothing was sent (DTX, mute, loss > 200 ms) */
};

/* publish_data flags; lk_data_packet.flags */
enum { LK_DATA_RELIABLE = 1 };

/* Largest reliable payload, bytes (LiveKit's documented limit for reliable
 * data packets; larger is LK_ERR_TOO_LARGE, never a silent drop). Lossy
 * packets should stay under ~1300 bytes (one MTU); the host refuses them
 * above LK_MAX_RELIABLE_DATA too. */
#define LK_MAX_RELIABLE_DATA (15 * 1024)

typedef struct lk_audio_stream lk_audio_stream; /* opaque, host-owned */
typedef struct lk_audio_source lk_audio_source; /* opaque, host-owned */

typedef struct lk_audio_format {
    uint32_t sample_rate;  /* Hz: 8000, 12000, 16000, 24000, 48000 (Opus-native) or
                              11025, 22050, 32000, 44100 (resampled, + a few ms) */
    uint32_t num_channels; /* 1 or 2; PCM is int16 interleaved */
    uint32_t frame_ms;     /* streams: 10..100, a multiple of 10; 0 means 10. Sources: ignored */
    uint32_t queue_ms;     /* streams: ring length, oldest frame dropped when full; 0 = 500.
                              sources: capture blocks above this; 0 = 200. Max 10000 */
} lk_audio_format;

typedef struct lk_audio_frame_info {
    uint32_t samples_per_channel; /* sample_rate * frame_ms / 1000 */
    uint32_t flags;               /* LK_AUDIO_FRAME_* */
    uint64_t pts_us;              /* media time of the first sample, us: the samples this
                                     stream delivered before it (pauses the host skipped to
                                     stay real-time are not counted) */
    uint64_t dropped_frames;      /* frames the ring dropped since the previous read */
} lk_audio_frame_info;

typedef struct lk_data_packet {
    uint32_t struct_size;          /* the plugin sets sizeof(lk_data_packet) */
    uint32_t flags;                /* LK_DATA_RELIABLE when sent reliable */
    const uint8_t *data;           /* host-owned until data_release; may be NULL when len == 0 */
    size_t len;
    lk_str topic;                  /* may be empty */
    lk_str participant_identity;   /* the sender; empty when sent by the server API */
    void *host_private;            /* owned by the host; pass the packet to data_release */
} lk_data_packet;

/* ---- 1.4: the job's dispatch, data streams, RPC, transcriptions -------
 *
 * What LiveKit's frontends (livekit-client, components-js) and agents
 * exchange besides audio: text and byte data streams (chat on "lk.chat",
 * transcripts on "lk.transcription"), RPC, and the legacy Transcription
 * packet. The wire formats are LiveKit's (DataPacket stream header /
 * chunk / trailer, RpcRequest / RpcAck / RpcResponse, and RPC requests and
 * responses as text streams on "lk.rpc_request" / "lk.rpc_response" for
 * peers that advertise client protocol 1); the host speaks them, the
 * plugin sees streams, invocations and results.
 *
 * Ownership: as for 1.3, everything the plugin passes in is copied during
 * the call. Reader and writer handles are host-owned ids, not pointers to
 * memory: a call on a closed or unknown one returns LK_ERR_CLOSED, and
 * they cost nothing once closed. Strings the host fills in a struct stay
 * valid until the handle or struct is closed or released, as each
 * function says.
 *
 * Threads: every function may be called from any thread; each that waits
 * waits at most its own timeout and returns within ~100 ms of shutdown
 * beginning. The host never calls plugin code for any of this: incoming
 * streams and RPC invocations are pulled (next_stream, next_rpc), so a
 * slow handler never stalls the room. Bounds: see each function.
 */

/* lk_stream_info.kind, lk_stream_options.kind */
enum { LK_STREAM_TEXT = 1, LK_STREAM_BYTES = 2 };
/* lk_stream_info.flags, lk_stream_options.flags */
enum { LK_STREAM_HAS_TOTAL_LENGTH = 1 };

typedef struct lk_stream_reader lk_stream_reader; /* opaque, host-owned id */
typedef struct lk_stream_writer lk_stream_writer; /* opaque, host-owned id */

/* An incoming data stream's header, filled by stream_reader_info. Strings
 * and arrays are host-owned and valid until stream_reader_close. */
typedef struct lk_stream_info {
    uint32_t struct_size;     /* the plugin sets sizeof(lk_stream_info) */
    uint32_t kind;            /* LK_STREAM_TEXT or LK_STREAM_BYTES */
    uint32_t flags;           /* LK_STREAM_HAS_TOTAL_LENGTH */
    uint32_t n_attributes;
    lk_str stream_id;
    lk_str topic;
    lk_str mime_type;
    lk_str sender_identity;   /* who the header says sent it (an agent may send a
                                 text stream on behalf of a user); empty: the server */
    lk_str name;              /* byte streams: the file name; text streams: empty */
    uint64_t total_length;    /* bytes, when LK_STREAM_HAS_TOTAL_LENGTH */
    int64_t timestamp_ms;     /* the header's, ms since the Unix epoch */
    const lk_str *attribute_keys;   /* n_attributes each: the header's attributes, */
    const lk_str *attribute_values; /* and the trailer's once the stream ended */
} lk_stream_info;

/* What stream_open sends in the header. */
typedef struct lk_stream_options {
    uint32_t struct_size;     /* the plugin sets sizeof(lk_stream_options) */
    uint32_t kind;            /* LK_STREAM_TEXT or LK_STREAM_BYTES */
    uint32_t flags;           /* LK_STREAM_HAS_TOTAL_LENGTH */
    uint32_t n_attributes;
    lk_str topic;             /* required, at most 256 bytes */
    lk_str mime_type;         /* empty: text/plain or application/octet-stream */
    lk_str name;              /* byte streams: the file name (empty: "unknown") */
    lk_str sender_identity;   /* text streams: send on behalf of this participant
                                 (a user's transcript); empty: the job itself */
    lk_str stream_id;         /* empty: a new UUID */
    uint64_t total_length;    /* bytes, when LK_STREAM_HAS_TOTAL_LENGTH */
    const lk_str *attribute_keys;   /* n_attributes each */
    const lk_str *attribute_values;
    const lk_str *destination_identities; /* NULL with 0: everyone */
    size_t n_destinations;
} lk_stream_options;

/* An RPC call to one of the job's registered methods, filled by
 * next_rpc. Host-owned until rpc_respond (which every invocation needs). */
typedef struct lk_rpc_invocation {
    uint32_t struct_size;         /* the plugin sets sizeof(lk_rpc_invocation) */
    uint32_t response_timeout_ms; /* what the caller waits for the response */
    lk_str request_id;
    lk_str caller_identity;
    lk_str method;
    lk_str payload;               /* UTF-8 */
    int64_t deadline_unix_ms;     /* answers after this are not sent (the caller
                                     has given up with 1502) */
    void *host_private;           /* owned by the host; pass it to rpc_respond */
} lk_rpc_invocation;

/* The outcome of perform_rpc. Host-owned until rpc_result_release. */
typedef struct lk_rpc_result {
    uint32_t struct_size;     /* the plugin sets sizeof(lk_rpc_result) */
    int32_t error_code;       /* 0: success; else LiveKit's RPC error code: 1400-1404,
                                 1500-1505 built in, others the callee's own */
    lk_str payload;           /* success: the response; error: the error message */
    lk_str error_data;        /* error: its data (may be empty) */
    void *host_private;       /* owned by the host; pass it to rpc_result_release */
} lk_rpc_result;

/* LiveKit's built-in RPC error codes (the same in every official SDK). */
enum {
    LK_RPC_APPLICATION_ERROR = 1500,   /* the handler failed */
    LK_RPC_CONNECTION_TIMEOUT = 1501,  /* no ack within 7 s */
    LK_RPC_RESPONSE_TIMEOUT = 1502,    /* no response within the timeout */
    LK_RPC_RECIPIENT_DISCONNECTED = 1503,
    LK_RPC_RESPONSE_PAYLOAD_TOO_LARGE = 1504,
    LK_RPC_SEND_FAILED = 1505,
    LK_RPC_UNSUPPORTED_METHOD = 1400,  /* no such method registered at the callee */
    LK_RPC_RECIPIENT_NOT_FOUND = 1401,
    LK_RPC_REQUEST_PAYLOAD_TOO_LARGE = 1402,
    LK_RPC_UNSUPPORTED_SERVER = 1403,
    LK_RPC_UNSUPPORTED_VERSION = 1404
};

/* lk_transcription.flags */
enum { LK_TRANSCRIPTION_FINAL = 1 };

/* One segment of the legacy Transcription packet (what components-js
 * useVoiceAssistant().agentTranscriptions reads). */
typedef struct lk_transcription {
    uint32_t struct_size;         /* the plugin sets sizeof(lk_transcription) */
    uint32_t flags;               /* LK_TRANSCRIPTION_FINAL */
    lk_str participant_identity;  /* whose speech (the job's own for the agent's) */
    lk_str track_sid;             /* the transcribed track; required */
    lk_str segment_id;            /* required; the same for every update of a segment */
    lk_str text;                  /* the segment's whole text so far */
    lk_str language;              /* may be empty */
    uint64_t start_ms;            /* may be 0 */
    uint64_t end_ms;              /* may be 0 */
} lk_transcription;

typedef void (*lk_shutdown_fn)(void *user_data, const lk_shutdown_info *info);
typedef void (*lk_free_fn)(void *user_data);

typedef struct lk_host_api {
    uint32_t size;      /* sizeof(lk_host_api) as the host compiled it */
    uint16_t abi_major;
    uint16_t abi_minor;

    /* ---- 1.0 ---- */
    lk_str (*job_id)(const lk_job *job);
    lk_str (*room_name)(const lk_job *job);
    lk_str (*job_metadata)(const lk_job *job);
    /* Idempotent: the first reason wins. reason may be empty. */
    void (*shutdown)(const lk_job *job, const char *reason, size_t reason_len);
    /* 1 once shutdown has begun, else 0. */
    int32_t (*is_shutting_down)(const lk_job *job);
    /* Registers a hook that runs exactly once, with the shutdown info, in
     * reverse registration order, one at a time (an older hook starts only
     * after the newer one returned), on a host thread, within the host's hook
     * budget (--hook-budget); a hook the budget leaves no time for is not
     * run. If shutdown has already begun the hook runs at once on the
     * calling thread, to completion, before on_shutdown returns.
     * free_user_data (may be NULL) is called with user_data once: after the
     * hook ran, when the host drops it unrun, or at once when the call is
     * refused. Returns 0, or -1 (refused) for a NULL job or hook. */
    int32_t (*on_shutdown)(const lk_job *job, lk_shutdown_fn hook, void *user_data,
                           lk_free_fn free_user_data);
    /* Waits up to timeout_ms for the next room event. Returns LK_NEXT_*.
     * *missed is set with LK_NEXT_MISSED (may be NULL otherwise). The first
     * events are the room as joined (participant_joined, track_published,
     * track_subscribed for everyone already there), however many. */
    int32_t (*next_event)(const lk_job *job, uint32_t timeout_ms, lk_event *out,
                          uint64_t *missed);
    /* Frees the strings of an event filled by next_event. */
    void (*event_release)(const lk_job *job, lk_event *event);
    void (*log)(const lk_job *job, int32_t level, const char *msg, size_t msg_len);

    /* ---- 1.1 ---- */
    /* The participant identity the job joined the room as. */
    lk_str (*participant_identity)(const lk_job *job);

    /* ---- 1.3 (check api->abi_minor >= 3) ---- */
    /* Opens a PCM reader on a subscribed remote audio track (track_sid from
     * LK_EVENT_TRACK_SUBSCRIBED). Several readers per track may be open, each
     * with its own format and ring. The first frame is the audio that arrives
     * after the call. Returns LK_OK and *out, LK_ERR_NOT_FOUND (not
     * subscribed, or already unsubscribed), LK_ERR_UNSUPPORTED (a video
     * track), LK_ERR_INVALID (format), LK_SHUTTING_DOWN. */
    int32_t (*audio_stream_open)(const lk_job *job, lk_str track_sid, const lk_audio_format *fmt,
                                 lk_audio_stream **out);
    /* Waits up to timeout_ms for the next frame and copies it into pcm
     * (room for pcm_cap int16 samples in total, i.e. samples_per_channel *
     * num_channels). Fills *info (may be NULL). Returns LK_OK, LK_TIMEOUT,
     * LK_ENDED (track gone, ring drained), LK_SHUTTING_DOWN, LK_ERR_CLOSED,
     * LK_ERR_TOO_LARGE (pcm_cap too small; the frame stays queued),
     * LK_ERR_INVALID. */
    int32_t (*audio_stream_read)(lk_audio_stream *stream, int16_t *pcm, size_t pcm_cap,
                                 uint32_t timeout_ms, lk_audio_frame_info *info);
    /* Closes the reader; idempotent. A read waiting on another thread
     * returns LK_ERR_CLOSED. */
    void (*audio_stream_close)(lk_audio_stream *stream);

    /* Publishes a microphone track fed from PCM in fmt (frame_ms ignored)
     * and waits (at most 15 s) for the server to accept it (a track the
     * server accepts after that is unpublished by the host). *track_sid is
     * host-owned and valid for the life of the process. Until samples are
     * captured, and whenever the queue runs dry, the track sends silence.
     * Returns LK_OK, LK_ERR_INVALID, LK_ERR_NOT_CONNECTED, LK_ERR_REFUSED
     * (the server did not accept the track; the log says why),
     * LK_SHUTTING_DOWN. */
    int32_t (*audio_source_publish)(const lk_job *job, lk_str track_name,
                                    const lk_audio_format *fmt, lk_audio_source **out,
                                    lk_str *track_sid);
    /* Copies samples_per_channel frames of interleaved PCM (up to 10 s per
     * call) into the send queue. Blocks while the queue holds more than
     * queue_ms, up to timeout_ms (0 = never blocks). LK_OK: all copied.
     * LK_TIMEOUT: nothing copied. Also LK_SHUTTING_DOWN, LK_ERR_CLOSED,
     * LK_ERR_INVALID (NULL pcm, over 10 s). The send clock drains 20 ms
     * every 20 ms, which paces a faster producer. */
    int32_t (*audio_source_capture)(lk_audio_source *source, const int16_t *pcm,
                                    size_t samples_per_channel, uint32_t timeout_ms);
    /* Drops everything queued (barge-in); returns how many ms it dropped. */
    uint32_t (*audio_source_clear)(lk_audio_source *source);
    /* Ms of audio queued and not yet sent; 0 once played out. */
    uint32_t (*audio_source_queued_ms)(const lk_audio_source *source);
    /* Unpublishes the track; idempotent. A capture waiting on another
     * thread returns LK_ERR_CLOSED. The host closes a source itself when its
     * session ends: a rejoin (LK_EVENT_RECONNECTED, reason "rejoined") does
     * not republish, so capture returns LK_ERR_CLOSED; publish again. */
    void (*audio_source_close)(lk_audio_source *source);

    /* Sends a user data packet (copied during the call) with a topic (may
     * be empty, at most 256 bytes) to destination_identities
     * (n_destinations == 0: everyone; a NULL array with a non-zero count is
     * LK_ERR_INVALID, never "everyone"). flags: LK_DATA_RELIABLE for
     * ordered, retransmitted delivery; else lossy. The first send
     * negotiates the publisher connection, which may take a round trip;
     * blocks up to timeout_ms for the packet to be handed to its data
     * channel. Returns LK_OK, LK_ERR_TOO_LARGE (len > LK_MAX_RELIABLE_DATA,
     * a topic or identity over 256 bytes), LK_TIMEOUT (not handed over in
     * time; it still goes out once the channel is ready), LK_ERR_NOT_CONNECTED,
     * LK_SHUTTING_DOWN, LK_ERR_INVALID. */
    int32_t (*publish_data)(const lk_job *job, const uint8_t *data, size_t len, lk_str topic,
                            const lk_str *destination_identities, size_t n_destinations,
                            uint32_t flags, uint32_t timeout_ms);
    /* Waits up to timeout_ms for the next user data packet sent to this
     * participant. Same contract as next_event: LK_OK (*out filled; release
     * it with data_release), LK_TIMEOUT, LK_SHUTTING_DOWN (once shutdown
     * began and no packet is queued), LK_MISSED (*missed packets were
     * dropped because the queue of 1024 was full; call again). Set
     * out->struct_size to sizeof(lk_data_packet) first: a smaller value is
     * LK_ERR_INVALID (a later minor that grows the struct will accept this
     * minor's size and fill only that much). */
    int32_t (*next_data)(const lk_job *job, uint32_t timeout_ms, lk_data_packet *out,
                         uint64_t *missed);
    /* Frees a packet filled by next_data; idempotent on a zeroed packet. */
    void (*data_release)(const lk_job *job, lk_data_packet *packet);

    /* Sets attributes of the job's own participant (merged into the
     * existing ones, like the SDKs' set_attributes; an empty value deletes
     * the key) and waits up to timeout_ms for the server to confirm.
     * Returns LK_OK, LK_TIMEOUT (not confirmed in time: the request was
     * sent and may still apply), LK_ERR_REFUSED (e.g. the token lacks
     * canUpdateOwnMetadata; the log says why), LK_ERR_NOT_CONNECTED,
     * LK_SHUTTING_DOWN, LK_ERR_INVALID (an empty key, NULL arrays). */
    int32_t (*set_attributes)(const lk_job *job, const lk_str *keys, const lk_str *values,
                              size_t n, uint32_t timeout_ms);
    /* Replaces the job participant's metadata; same results. An empty
     * metadata is LK_ERR_INVALID (livekit-server reads "" as "unchanged"). */
    int32_t (*set_metadata)(const lk_job *job, lk_str metadata, uint32_t timeout_ms);

    /* ---- 1.4 (check api->abi_minor >= 4) ---- */
    /* The participant a participant or publisher job is for (the
     * dispatch's Job.participant), or --participant-identity; empty for a
     * room job. Valid for the life of the process. */
    lk_str (*job_participant_identity)(const lk_job *job);
    /* The agent name the job was dispatched to; empty for automatic
     * dispatch and for job run-script. Valid for the life of the process. */
    lk_str (*agent_name)(const lk_job *job);
    /* The dispatch's attributes (Job.attributes): fills up to cap pairs of
     * keys/values (host-owned, valid for the life of the process; either
     * array may be NULL when cap is 0) and returns how many there are. */
    size_t (*job_attributes)(const lk_job *job, lk_str *keys, lk_str *values, size_t cap);
    /* Whether the job ends with LK_SHUTDOWN_PARTICIPANT_LEFT when its
     * participant (job_participant_identity) leaves the room: 1 (the
     * default, as livekit-agents' close_on_disconnect) or 0. */
    void (*set_close_on_participant_left)(const lk_job *job, int32_t close);

    /* Waits up to timeout_ms until the source's track has a subscriber
     * (see LK_EVENT_LOCAL_TRACK_SUBSCRIBED): audio captured before that is
     * heard by nobody. Returns LK_OK (at once when it already has one),
     * LK_TIMEOUT, LK_SHUTTING_DOWN, LK_ERR_CLOSED, LK_ERR_INVALID. */
    int32_t (*audio_source_wait_subscribed)(lk_audio_source *source, uint32_t timeout_ms);

    /* Incoming data streams are kept only on topics the plugin accepts:
     * accepts topic ("" accepts every topic; lk.rpc_request and
     * lk.rpc_response are the host's and never delivered). A stream on
     * another topic is dropped and counted (log line). Returns LK_OK or
     * LK_ERR_INVALID (topic over 256 bytes, NULL with a length). */
    int32_t (*stream_accept_topic)(const lk_job *job, lk_str topic);
    /* Waits up to timeout_ms for the next incoming stream on an accepted
     * topic; *out is its reader (close it). At most 64 streams wait to be
     * taken: more are dropped and reported as LK_MISSED with *missed.
     * Returns LK_OK, LK_TIMEOUT, LK_MISSED (call again), LK_SHUTTING_DOWN,
     * LK_ERR_INVALID. */
    int32_t (*next_stream)(const lk_job *job, uint32_t timeout_ms, lk_stream_reader **out,
                           uint64_t *missed);
    /* Fills *info (set info->struct_size first) with the stream's header;
     * after LK_ENDED the attributes include the trailer's. Strings valid
     * until stream_reader_close. Returns LK_OK, LK_ERR_CLOSED,
     * LK_ERR_INVALID. */
    int32_t (*stream_reader_info)(lk_stream_reader *reader, lk_stream_info *info);
    /* Waits up to timeout_ms for content and copies up to cap bytes into
     * buf, setting *len. A text stream's bytes never end inside a UTF-8
     * character (cap >= 4). Content is held per stream (--stream-max-bytes)
     * and across streams (--streams-max-bytes); a stream over either is
     * aborted. Returns LK_OK (*len > 0), LK_TIMEOUT, LK_ENDED (complete and
     * all read), LK_ERR_ABORTED (a trailer with a reason, the sender left,
     * a missing or out-of-order chunk, a length that disagrees with
     * total_length, invalid UTF-8 in a text stream, over a limit:
     * stream_reader_error says which; content before the fault may have
     * been read), LK_SHUTTING_DOWN, LK_ERR_CLOSED, LK_ERR_INVALID. */
    int32_t (*stream_read)(lk_stream_reader *reader, uint8_t *buf, size_t cap, size_t *len,
                           uint32_t timeout_ms);
    /* Why the stream was aborted; empty otherwise. Valid until close. */
    lk_str (*stream_reader_error)(lk_stream_reader *reader);
    /* Drops the rest of the stream and frees the reader; idempotent. A
     * read waiting on another thread returns LK_ERR_CLOSED. */
    void (*stream_reader_close)(lk_stream_reader *reader);

    /* Opens an outgoing stream and sends its header, reliably and in order
     * with every other reliable packet. *stream_id (may be NULL) is
     * host-owned until stream_close. Returns LK_OK, LK_ERR_INVALID
     * (kind, topic, a NULL array with a count; sender_identity on a byte
     * stream), LK_ERR_TOO_LARGE (the header over 15000 bytes), LK_TIMEOUT,
     * LK_ERR_NOT_CONNECTED, LK_SHUTTING_DOWN. */
    int32_t (*stream_open)(const lk_job *job, const lk_stream_options *opts,
                           uint32_t timeout_ms, lk_stream_writer **out, lk_str *stream_id);
    /* Sends len bytes as the stream's next chunks (15000 bytes each; text
     * cut only between UTF-8 characters: data must be valid UTF-8), waiting
     * up to timeout_ms for them to be handed to the reliable channel.
     * Returns LK_OK, LK_TIMEOUT (some chunks may have gone: close the
     * stream with a reason), LK_ERR_INVALID, LK_ERR_CLOSED,
     * LK_ERR_NOT_CONNECTED, LK_SHUTTING_DOWN. */
    int32_t (*stream_write)(lk_stream_writer *writer, const uint8_t *data, size_t len,
                            uint32_t timeout_ms);
    /* Sends the trailer and frees the writer (also on error). reason
     * empty: the stream is complete; else it is aborted with that reason.
     * The n attributes (keys/values) are the trailer's: receivers merge
     * them into the header's (e.g. lk.transcription_final = "true").
     * Returns LK_OK, LK_TIMEOUT, LK_ERR_INVALID, LK_ERR_CLOSED,
     * LK_ERR_NOT_CONNECTED, LK_SHUTTING_DOWN. A writer left open when the
     * job ends is aborted. */
    int32_t (*stream_close)(lk_stream_writer *writer, lk_str reason, const lk_str *keys,
                            const lk_str *values, size_t n, uint32_t timeout_ms);

    /* Registers an RPC method (at most 256 bytes; a name registered twice
     * stays registered once). The host acknowledges every request at once;
     * a request for a method not registered is answered 1400, one that
     * waits more than its response timeout, or finds 1024 invocations
     * waiting, is answered by the host (1502, 1500). Returns LK_OK,
     * LK_ERR_INVALID, LK_ERR_TOO_LARGE (over 16384 methods). */
    int32_t (*rpc_register)(const lk_job *job, lk_str method);
    /* Unregisters a method; later requests for it are 1400. */
    int32_t (*rpc_unregister)(const lk_job *job, lk_str method);
    /* Waits up to timeout_ms for the next call of a registered method
     * (set out->struct_size first). Returns LK_OK (answer it with
     * rpc_respond), LK_TIMEOUT, LK_SHUTTING_DOWN, LK_ERR_INVALID. */
    int32_t (*next_rpc)(const lk_job *job, uint32_t timeout_ms, lk_rpc_invocation *out);
    /* Answers an invocation and releases it: error_code 0 sends payload as
     * the response; otherwise an RPC error with that code, payload as its
     * message (cut to 256 bytes) and error_data (cut to 15360 bytes).
     * A response too large for the caller's protocol (over 15360 bytes to a
     * protocol-0 caller) is sent as error 1504 instead. Returns LK_OK,
     * LK_TIMEOUT (past the deadline: nothing was sent), LK_ERR_TOO_LARGE
     * (sent as 1504), LK_ERR_CLOSED (already answered or released),
     * LK_ERR_NOT_CONNECTED, LK_SHUTTING_DOWN, LK_ERR_INVALID. */
    int32_t (*rpc_respond)(const lk_job *job, lk_rpc_invocation *invocation, int32_t error_code,
                           lk_str payload, lk_str error_data);
    /* Calls method on the participant destination_identity and waits for
     * its answer: the ack within 7 s (else 1501), then the response within
     * response_timeout_ms (0: 15000; else 1502). Sent as v1 packets to a
     * callee at client protocol 0 (payload at most 15360 bytes, else 1402)
     * and as a stream to one at protocol 1 or more. A callee that leaves
     * fails the call with 1503. Set out->struct_size first. Returns LK_OK
     * (out->error_code says how the call went), LK_SHUTTING_DOWN (the
     * call is abandoned), LK_ERR_NOT_CONNECTED, LK_ERR_INVALID. */
    int32_t (*perform_rpc)(const lk_job *job, lk_str destination_identity, lk_str method,
                           lk_str payload, uint32_t response_timeout_ms, lk_rpc_result *out);
    /* Frees a result filled by perform_rpc; idempotent on a zeroed one. */
    void (*rpc_result_release)(const lk_job *job, lk_rpc_result *result);

    /* Sends one legacy Transcription packet (reliable, to everyone):
     * frontends show it beside the track it names. Streams on
     * lk.transcription are the newer form; agents send both. Returns LK_OK,
     * LK_TIMEOUT, LK_ERR_INVALID (no track_sid or segment_id, struct_size),
     * LK_ERR_TOO_LARGE, LK_ERR_NOT_CONNECTED, LK_SHUTTING_DOWN. */
    int32_t (*publish_transcription)(const lk_job *job, const lk_transcription *t,
                                     uint32_t timeout_ms);
} lk_host_api;

typedef int32_t (*lk_run_fn)(const lk_host_api *api, const lk_job *job);

typedef struct lk_plugin_descriptor {
    uint32_t magic;      /* LK_PLUGIN_MAGIC */
    uint16_t abi_major;  /* LK_ABI_MAJOR the plugin was compiled against */
    uint16_t abi_minor;  /* LK_ABI_MINOR the plugin was compiled against */
    lk_str name;
    lk_str version;
    /* Runs the job; returns the process exit code (0-255) or LK_RUN_PANICKED.
     * Called once, on a thread of its own. */
    lk_run_fn run;
} lk_plugin_descriptor;

/* Every plugin defines this function (see LK_PLUGIN_ENTRY_SYMBOL). It returns
 * a pointer to a descriptor that stays valid while the library is loaded. */
const lk_plugin_descriptor *lk_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* LK_PLUGIN_H */
