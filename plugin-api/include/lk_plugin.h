/*
 * lk_plugin.h -- the lk-go plugin ABI, version 1.2.
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
 * is passed to signal.Notify (see plugins/go-noop).
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
#define LK_ABI_MINOR 2

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
