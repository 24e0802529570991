/*
 * lk_plugin.h -- the lk-go plugin ABI, version 1.3.
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
#define LK_ABI_MINOR 3

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
    LK_SHUTDOWN_SERVER_ERROR = 12        /* "server_error" [ROOM_DISCONNECTED] */
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
    LK_EVENT_RECONNECTED = 9
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
    LK_ERR_REFUSED = -7      /* the server refused (e.g. the token lacks canUpdateOwnMetadata) */
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
