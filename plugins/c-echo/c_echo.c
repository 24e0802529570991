/*
 * c-echo: an lk-go echo agent in plain C against the raw lk_host_api table.
 *
 * Media and data (ABI 1.3):
 * - sets its attribute lk.agent.state=listening;
 * - publishes an audio source "c-echo" (48 kHz mono);
 * - echoes the first subscribed remote microphone track into that source,
 *   10 ms at a time; when the track ends it echoes the next one;
 * - a second thread answers data packets on topic "lk.ping" with the same
 *   payload on topic "lk.pong", sent reliably to the sender only.
 *
 * The frontend contract (ABI 1.4; the same as plugins/echo/src/frontend.rs):
 * - RPC "echo" returns its payload unchanged (other methods: the host
 *   answers 1400);
 * - each text stream on "lk.chat" is answered with an agent transcript
 *   segment on "lk.transcription" reading "echo: " + the message, for this
 *   agent's microphone track, plus the legacy Transcription packets;
 * - a byte stream on "echo.bytes" is answered, to its sender only, by a text
 *   stream on "echo.bytes.sha256" holding the lowercase hex SHA-256 of the
 *   bytes, with attribute name = the byte stream's name;
 * - when a participant joins it calls RPC "frontend.hello" on them with its
 *   own identity as payload and logs the answer or the error code;
 * - the bench protocol: a stream on "bench.sink" is answered on
 *   "bench.sink.done" with its byte count; RPC "bench.source" with payload N
 *   returns N, then sends the caller N bytes on "bench.source.data".
 * A host older than 1.4 gets only the media and data part.
 *
 * Threads: the main thread runs the room events and the audio; one thread
 * each takes data packets, incoming streams and RPC invocations; each
 * incoming stream, frontend.hello call and bench.source send runs on a
 * detached worker of its own, so a slow peer never stalls the event loop or
 * another stream. run waits for the workers (every host call returns
 * within ~100 ms of shutdown) before it returns.
 *
 * It stops when any call reports LK_SHUTTING_DOWN, joins its threads,
 * closes the stream and the source and returns 0. A host older than ABI 1.3
 * is refused with exit code 69 (EX_UNAVAILABLE). Every event, packet,
 * invocation, result, reader and writer is released exactly once and no
 * host string is used after its release. tests/media.rs runs it against a
 * real server and the Python SDK (echo and ping/pong), tests/frontend.rs
 * against the Python SDK and livekit-client in Chromium; the 1.3 calls'
 * C-boundary misuse cases run under valgrind in tests/faults.rs
 * (tests/fixtures/probe_plugin.c, mode "media").
 *
 * Build: cc -std=c11 -shared -fPIC -pthread \
 *           -I plugin-api/include -o libc_echo.so c_echo.c
 */
/* clock_gettime, getpid, pthread_cond_timedwait under -std=c11. */
#define _POSIX_C_SOURCE 200809L

#include "lk_plugin.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_OLD_HOST 69
#define SAMPLE_RATE 48000
/* 20 ms frames: one per Opus packet, half the wake-ups of 10 ms frames,
 * no added delay (the host decodes 20 ms at a time). */
#define FRAME_MS 20
/* Room for 100 ms of mono 48 kHz: a 10 ms frame needs 480 samples. */
#define PCM_CAP (SAMPLE_RATE / 10)
#define SID_CAP 256
#define WAIT_MS 200
#define CAPTURE_TIMEOUT_MS 1000
#define CONTROL_TIMEOUT_MS 5000
/* Events drained per echoed frame; the rest wait for the next frame. */
#define DRAIN_MAX 32

/* Frontend (1.4) limits. */
#define SEND_TIMEOUT_MS 10000   /* each stream / transcription send */
#define READ_TIMEOUT_MS 30000   /* each read of an incoming stream */
#define HELLO_TIMEOUT_MS 10000  /* frontend.hello response */
#define READ_CAP (64 * 1024)    /* bytes per stream_read */
#define WRITE_PIECE (1024 * 1024) /* bytes per stream_write (the host takes <= 16 MiB) */
/* Workers alive at once; past it a stream or call is dropped with a log
 * line (threads and buffers stay bounded under a flood). */
#define MAX_WORKERS 128
/* How long run waits for workers once the job shuts down. */
#define WORKERS_WAIT_MS 5000
/* Longest host string shown in a log line. */
#define SHOW_MAX 300

static const char PING_TOPIC[] = "lk.ping";
static const char PONG_TOPIC[] = "lk.pong";

/* A track sid copied out of an event, which the host frees on release. */
typedef struct sid_buf {
    char buf[SID_CAP];
    size_t len; /* 0: empty */
} sid_buf;

typedef struct echo_ctx {
    const lk_host_api *api;
    const lk_job *job;
    atomic_int stop; /* set by the main thread to end the helper threads */
    int frontend;    /* the host has the 1.4 functions (streams, RPC) */
    pthread_mutex_t lock; /* guards mic and workers */
    pthread_cond_t idle;  /* signalled when workers drops to 0 */
    int workers;          /* detached worker threads alive */
    sid_buf mic;          /* the sid of our own published track */
} echo_ctx;

/* Static, not on run's stack: a worker that outlived run's bounded wait
 * (it should not, see WORKERS_WAIT_MS) still finds valid memory. run is
 * called once per process. */
static echo_ctx CTX;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void logf_(const echo_ctx *c, int32_t level, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    c->api->log(c->job, level, line, len);
}

static int str_eq(lk_str s, const char *lit, size_t lit_len) {
    return s.len == lit_len && (lit_len == 0 || memcmp(s.ptr, lit, lit_len) == 0);
}

static lk_str cstr(const char *s) {
    lk_str out = {s, strlen(s)};
    return out;
}

static int is(lk_str s, const char *lit) { return str_eq(s, lit, strlen(lit)); }

/* For "%.*s" with a host string: its length (capped) and a non-NULL pointer. */
static int show_len(lk_str s) {
    return s.ptr == NULL ? 0 : (int)(s.len < SHOW_MAX ? s.len : SHOW_MAX);
}
#define SHOW(s) show_len(s), ((s).ptr != NULL ? (s).ptr : "")

/* The name of a result code, as the Rust SDK's MediaError prints it. */
static const char *rc_name(int32_t rc) {
    switch (rc) {
    case LK_OK: return "Ok";
    case LK_TIMEOUT: return "Timeout";
    case LK_SHUTTING_DOWN: return "ShuttingDown";
    case LK_MISSED: return "Missed";
    case LK_ENDED: return "Ended";
    case LK_CLEARED: return "Cleared";
    case LK_ERR_INVALID: return "Invalid";
    case LK_ERR_UNSUPPORTED: return "Unsupported";
    case LK_ERR_NOT_FOUND: return "NotFound";
    case LK_ERR_TOO_LARGE: return "TooLarge";
    case LK_ERR_NOT_CONNECTED: return "NotConnected";
    case LK_ERR_CLOSED: return "Closed";
    case LK_ERR_REFUSED: return "Refused";
    case LK_ERR_ABORTED: return "Aborted";
    default: return "Other";
    }
}

static int sid_set(sid_buf *dst, lk_str src) {
    if (src.len == 0 || src.len >= SID_CAP || src.ptr == NULL) return 0;
    memcpy(dst->buf, src.ptr, src.len);
    dst->buf[src.len] = '\0';
    dst->len = src.len;
    return 1;
}

static int sid_is(const sid_buf *s, lk_str other) {
    return s->len != 0 && str_eq(other, s->buf, s->len);
}

static lk_str sid_str(const sid_buf *s) {
    lk_str out = {s->buf, s->len};
    return out;
}

static int is_mic_subscribed(const lk_event *ev) {
    return ev->kind == LK_EVENT_TRACK_SUBSCRIBED && ev->track_kind == LK_TRACK_KIND_AUDIO &&
           ev->track_source == LK_TRACK_SOURCE_MICROPHONE;
}

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------- */

typedef struct sha256 {
    uint32_t h[8];
    uint8_t block[64];
    size_t fill;    /* bytes in block */
    uint64_t bytes; /* message length so far */
} sha256;

/* FIPS 180-4 4.2.2: the first 32 bits of the fractional parts of the cube
 * roots of the first 64 primes. */
static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

/* FIPS 180-4 6.2.2: one 512-bit block. */
static void sha256_block(sha256 *s, const uint8_t *p) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++) {
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    }
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = s1 + w[t - 7] + s0 + w[t - 16];
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                      SHA_K[t] + w[t];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_init(sha256 *s) {
    /* FIPS 180-4 5.3.3: the fractional parts of the square roots of the
     * first 8 primes. */
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, H0, sizeof H0);
    s->fill = 0;
    s->bytes = 0;
}

static void sha256_update(sha256 *s, const uint8_t *p, size_t len) {
    s->bytes += len;
    while (len > 0) {
        size_t take = 64 - s->fill < len ? 64 - s->fill : len;
        memcpy(s->block + s->fill, p, take);
        s->fill += take;
        p += take;
        len -= take;
        if (s->fill == 64) {
            sha256_block(s, s->block);
            s->fill = 0;
        }
    }
}

/* FIPS 180-4 5.1.1 padding, then the digest as 64 lowercase hex digits. */
static void sha256_hex(sha256 *s, char out[65]) {
    uint64_t bits = s->bytes * 8;
    uint8_t pad[72] = {0x80};
    /* 0x80, zeros up to 56 mod 64, then the 64-bit big-endian bit length. */
    size_t n = (s->fill < 56 ? 56 : 120) - s->fill;
    for (int i = 0; i < 8; i++) pad[n + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, pad, n + 8);
    static const char HEX[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        uint8_t byte = (uint8_t)(s->h[i / 4] >> (24 - 8 * (i % 4)));
        out[2 * i] = HEX[byte >> 4];
        out[2 * i + 1] = HEX[byte & 15];
    }
    out[64] = '\0';
}

/* The FIPS 180-2 appendix B vectors (one block, two blocks): run at start-up,
 * so a broken digest never goes out as an answer. */
static int sha256_self_test(void) {
    static const struct { const char *msg, *hex; } V[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof V / sizeof V[0]; i++) {
        sha256 s;
        char hex[65];
        sha256_init(&s);
        sha256_update(&s, (const uint8_t *)V[i].msg, strlen(V[i].msg));
        sha256_hex(&s, hex);
        if (strcmp(hex, V[i].hex) != 0) return 0;
    }
    return 1;
}

/* ---- workers: detached threads run joins waits for ---------------------- */

typedef void (*work_fn)(echo_ctx *c, void *arg);

typedef struct work {
    echo_ctx *c;
    work_fn fn;
    void *arg;
} work;

static void *work_main(void *p) {
    work w = *(work *)p;
    free(p);
    w.fn(w.c, w.arg);
    pthread_mutex_lock(&w.c->lock);
    if (--w.c->workers == 0) pthread_cond_broadcast(&w.c->idle);
    pthread_mutex_unlock(&w.c->lock);
    return NULL;
}

/* Runs fn(c, arg) on a detached thread. Returns 1, or 0 when it could not
 * (too many workers, no memory, no thread): the caller still owns arg. */
static int spawn(echo_ctx *c, work_fn fn, void *arg) {
    work *w = malloc(sizeof *w);
    if (w == NULL) return 0;
    w->c = c;
    w->fn = fn;
    w->arg = arg;
    pthread_mutex_lock(&c->lock);
    int room = c->workers < MAX_WORKERS;
    if (room) c->workers++;
    pthread_mutex_unlock(&c->lock);
    if (!room) {
        free(w);
        return 0;
    }
    pthread_attr_t attr;
    int err = pthread_attr_init(&attr);
    if (err == 0) {
        err = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        if (err == 0) err = pthread_create(&t, &attr, work_main, w);
        pthread_attr_destroy(&attr);
    }
    if (err != 0) {
        logf_(c, LK_LOG_WARN, "c-echo: cannot start a worker thread (%s)", strerror(err));
        free(w);
        pthread_mutex_lock(&c->lock);
        if (--c->workers == 0) pthread_cond_broadcast(&c->idle);
        pthread_mutex_unlock(&c->lock);
        return 0;
    }
    return 1;
}

/* Waits up to WORKERS_WAIT_MS for every worker to finish; returns how many
 * are still running. */
static int wait_workers(echo_ctx *c) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WORKERS_WAIT_MS / 1000;
    pthread_mutex_lock(&c->lock);
    while (c->workers > 0) {
        if (pthread_cond_timedwait(&c->idle, &c->lock, &until) != 0) break;
    }
    int left = c->workers;
    pthread_mutex_unlock(&c->lock);
    return left;
}

/* ---- outgoing streams --------------------------------------------------- */

/* Options for a stream on topic, to one participant (to != NULL) or all. */
static lk_stream_options stream_options(uint32_t kind, const char *topic, const lk_str *to) {
    lk_stream_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = (uint32_t)sizeof o;
    o.kind = kind;
    o.topic = cstr(topic);
    if (to != NULL) {
        o.destination_identities = to;
        o.n_destinations = 1;
    }
    return o;
}

/* Writes len bytes in pieces the host takes (<= WRITE_PIECE, UTF-8 text cut
 * only before a character's first byte). */
static int32_t write_all(echo_ctx *c, lk_stream_writer *w, const uint8_t *p, size_t len) {
    while (len > 0) {
        size_t n = len < WRITE_PIECE ? len : WRITE_PIECE;
        while (n < len && n > 0 && (p[n] & 0xC0) == 0x80) n--; /* continuation byte */
        int32_t rc = c->api->stream_write(w, p, n, SEND_TIMEOUT_MS);
        if (rc != LK_OK) return rc;
        p += n;
        len -= n;
    }
    return LK_OK;
}

/* Closes w (stream_close frees it in every case): complete, with these
 * trailer attributes, when rc is LK_OK; else aborted, so the receiver sees
 * an error and never a silent truncation. Returns the first failure. */
static int32_t finish_stream(echo_ctx *c, lk_stream_writer *w, int32_t rc, const lk_str *keys,
                             const lk_str *values, size_t n) {
    char why[80];
    lk_str reason = {NULL, 0};
    if (rc != LK_OK) {
        int m = snprintf(why, sizeof why, "the agent's write failed (%s)", rc_name(rc));
        reason.ptr = why;
        reason.len = m > 0 ? (size_t)m : 0;
        keys = values = NULL;
        n = 0;
    }
    int32_t crc = c->api->stream_close(w, reason, keys, values, n, SEND_TIMEOUT_MS);
    return rc != LK_OK ? rc : crc;
}

/* Sends data as one whole stream, its total length in the header (the
 * SDKs' send_text / send_bytes). */
static int32_t send_whole(echo_ctx *c, lk_stream_options *o, const uint8_t *data, size_t len) {
    o->flags |= LK_STREAM_HAS_TOTAL_LENGTH;
    o->total_length = len;
    lk_stream_writer *w = NULL;
    int32_t rc = c->api->stream_open(c->job, o, SEND_TIMEOUT_MS, &w, NULL);
    if (rc != LK_OK) return rc;
    return finish_stream(c, w, write_all(c, w, data, len), NULL, NULL, 0);
}

/* ---- the agent transcript (as plugin-api/src/stream.rs AgentTranscript) --- */

/* "SG_" and 12 hex digits: time, a counter and the pid, so segments of this
 * and of other processes differ. */
static void segment_id(char out[32]) {
    static atomic_uint_fast64_t counter;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t nanos = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    uint64_t n = atomic_fetch_add(&counter, 1);
    uint64_t id = (nanos ^ (n << 48) ^ (uint64_t)getpid()) & 0xffffffffffffu;
    snprintf(out, 32, "SG_%012llx", (unsigned long long)id);
}

/* The legacy Transcription packet: the segment's whole text so far. */
static int32_t legacy_transcription(echo_ctx *c, lk_str track, const char *seg, const char *text,
                                    size_t len, int final) {
    lk_transcription t;
    memset(&t, 0, sizeof t);
    t.struct_size = (uint32_t)sizeof t;
    t.flags = final ? LK_TRANSCRIPTION_FINAL : 0;
    t.participant_identity = c->api->participant_identity(c->job);
    t.track_sid = track;
    t.segment_id = cstr(seg);
    t.text.ptr = text;
    t.text.len = len;
    return c->api->publish_transcription(c->job, &t, SEND_TIMEOUT_MS);
}

/* Speaks text as one segment of the agent's transcript on lk.transcription:
 * the header names the segment and our microphone track (not final yet),
 * each delta text[cuts[i-1]..cuts[i]) is a write followed by a legacy packet
 * with the text so far, and the trailer says lk.transcription_final "true",
 * followed by a final legacy packet. */
static int32_t agent_transcript(echo_ctx *c, const char *text, const size_t *cuts, size_t n_cuts) {
    char seg[32];
    segment_id(seg);
    sid_buf mic;
    pthread_mutex_lock(&c->lock);
    mic = c->mic; /* a copy: a republish may change it meanwhile */
    pthread_mutex_unlock(&c->lock);
    const lk_str keys[3] = {cstr("lk.segment_id"), cstr("lk.transcribed_track_id"),
                            cstr("lk.transcription_final")};
    const lk_str values[3] = {cstr(seg), sid_str(&mic), cstr("false")};
    lk_stream_options o = stream_options(LK_STREAM_TEXT, "lk.transcription", NULL);
    o.n_attributes = 3;
    o.attribute_keys = keys;
    o.attribute_values = values;
    lk_stream_writer *w = NULL;
    int32_t rc = c->api->stream_open(c->job, &o, SEND_TIMEOUT_MS, &w, NULL);
    if (rc != LK_OK) return rc;
    size_t from = 0;
    for (size_t i = 0; i < n_cuts && rc == LK_OK; i++) {
        rc = write_all(c, w, (const uint8_t *)text + from, cuts[i] - from);
        if (rc == LK_OK) rc = legacy_transcription(c, sid_str(&mic), seg, text, cuts[i], 0);
        from = cuts[i];
    }
    const lk_str final_key = cstr("lk.transcription_final"), final_value = cstr("true");
    rc = finish_stream(c, w, rc, &final_key, &final_value, 1);
    if (rc != LK_OK) return rc;
    return legacy_transcription(c, sid_str(&mic), seg, text, from, 1);
}

/* ---- incoming streams: one worker each ---------------------------------- */

enum { TOPIC_OTHER, TOPIC_CHAT, TOPIC_BYTES, TOPIC_SINK };
#define PREFIX 6 /* strlen("echo: "), what a chat answer starts with */

/* What a stream's content is gathered into while it is read. */
typedef struct gathered {
    char *text; /* chat: "echo: " and the message, as it arrives */
    size_t len, cap;
    sha256 sha;     /* echo.bytes */
    uint64_t bytes; /* every topic */
} gathered;

static int text_append(gathered *g, const uint8_t *p, size_t n) {
    if (g->len + n > g->cap) {
        size_t cap = g->cap * 2 > g->len + n ? g->cap * 2 : g->len + n;
        char *t = realloc(g->text, cap);
        if (t == NULL) return 0;
        g->text = t;
        g->cap = cap;
    }
    memcpy(g->text + g->len, p, n);
    g->len += n;
    return 1;
}

/* Takes in n bytes of the sender's content; 0 when out of memory. */
static int gather(gathered *g, int topic, const uint8_t *p, size_t n) {
    g->bytes += n;
    if (topic == TOPIC_BYTES) sha256_update(&g->sha, p, n);
    return topic == TOPIC_CHAT ? text_append(g, p, n) : 1;
}

/* Answers a complete stream according to its topic. */
static int32_t answer(echo_ctx *c, const lk_stream_info *info, int topic, gathered *g) {
    lk_str sender = info->sender_identity;
    switch (topic) {
    case TOPIC_CHAT: {
        const lk_str message = {g->text + PREFIX, g->len - PREFIX};
        logf_(c, LK_LOG_INFO, "c-echo: chat from %.*s: %.*s", SHOW(sender), SHOW(message));
        /* Two deltas, as the Rust echo pushes them: "echo: ", the message. */
        const size_t cuts[2] = {PREFIX, g->len};
        return agent_transcript(c, g->text, cuts, 2);
    }
    case TOPIC_BYTES: {
        char hex[65];
        sha256_hex(&g->sha, hex);
        logf_(c, LK_LOG_INFO, "c-echo: %llu bytes named %.*s from %.*s: sha256 %s",
              (unsigned long long)g->bytes, SHOW(info->name), SHOW(sender), hex);
        const lk_str key = cstr("name");
        lk_stream_options o = stream_options(LK_STREAM_TEXT, "echo.bytes.sha256", &sender);
        o.n_attributes = 1;
        o.attribute_keys = &key;
        o.attribute_values = &info->name;
        return send_whole(c, &o, (const uint8_t *)hex, 64);
    }
    case TOPIC_SINK: {
        char count[24];
        int n = snprintf(count, sizeof count, "%llu", (unsigned long long)g->bytes);
        lk_stream_options o = stream_options(LK_STREAM_TEXT, "bench.sink.done", &sender);
        return send_whole(c, &o, (const uint8_t *)count, n > 0 ? (size_t)n : 0);
    }
    default:
        return LK_OK;
    }
}

/* Reads one incoming stream to its end, answers it, closes the reader.
 * The header's strings stay valid until stream_reader_close, at the end. */
static void stream_worker(echo_ctx *c, void *arg) {
    const lk_host_api *api = c->api;
    lk_stream_reader *reader = arg;
    lk_stream_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = (uint32_t)sizeof info;
    int32_t rc = api->stream_reader_info(reader, &info);
    if (rc != LK_OK) {
        if (rc != LK_ERR_CLOSED) logf_(c, LK_LOG_WARN, "c-echo: stream_reader_info failed (%s)", rc_name(rc));
        api->stream_reader_close(reader);
        return;
    }
    int topic = is(info.topic, "lk.chat") && info.kind == LK_STREAM_TEXT ? TOPIC_CHAT
                : is(info.topic, "echo.bytes")                          ? TOPIC_BYTES
                : is(info.topic, "bench.sink")                          ? TOPIC_SINK
                                                                        : TOPIC_OTHER;
    gathered g;
    memset(&g, 0, sizeof g);
    sha256_init(&g.sha);
    uint8_t *buf = malloc(READ_CAP);
    int ok = buf != NULL && (topic != TOPIC_CHAT || text_append(&g, (const uint8_t *)"echo: ", PREFIX));
    if (!ok) {
        logf_(c, LK_LOG_WARN, "c-echo: out of memory for stream %.*s", SHOW(info.stream_id));
    }
    while (ok) {
        size_t n = 0;
        rc = api->stream_read(reader, buf, READ_CAP, &n, READ_TIMEOUT_MS);
        if (rc == LK_ENDED) break;
        if (rc == LK_OK) {
            if (!gather(&g, topic, buf, n)) {
                logf_(c, LK_LOG_WARN, "c-echo: out of memory for stream %.*s", SHOW(info.stream_id));
                ok = 0;
            }
            continue;
        }
        ok = 0;
        if (rc != LK_SHUTTING_DOWN) {
            lk_str why = api->stream_reader_error(reader); /* empty unless aborted */
            logf_(c, LK_LOG_INFO, "c-echo: stream %.*s on %.*s from %.*s failed: %s (%.*s)",
                  SHOW(info.stream_id), SHOW(info.topic), SHOW(info.sender_identity), rc_name(rc),
                  SHOW(why));
        }
    }
    if (ok) {
        rc = answer(c, &info, topic, &g);
        if (rc != LK_OK && rc != LK_SHUTTING_DOWN) {
            logf_(c, LK_LOG_WARN, "c-echo: answering %.*s failed: %s", SHOW(info.topic), rc_name(rc));
        }
    }
    free(g.text);
    free(buf);
    api->stream_reader_close(reader);
}

/* Takes incoming streams (of the accepted topics) and hands each to a
 * worker, so a large one never holds up a chat. */
static void *stream_thread(void *arg) {
    echo_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        lk_stream_reader *reader = NULL;
        uint64_t missed = 0;
        int32_t rc = c->api->next_stream(c->job, WAIT_MS, &reader, &missed);
        if (rc == LK_TIMEOUT) continue;
        if (rc == LK_MISSED) {
            logf_(c, LK_LOG_WARN, "c-echo: %llu incoming streams dropped (nobody took them in time)",
                  (unsigned long long)missed);
            continue;
        }
        if (rc == LK_SHUTTING_DOWN) break;
        if (rc != LK_OK) {
            logf_(c, LK_LOG_ERROR, "c-echo: next_stream failed (%s); streams are not answered",
                  rc_name(rc));
            break;
        }
        if (!spawn(c, stream_worker, reader)) {
            logf_(c, LK_LOG_WARN, "c-echo: too busy; an incoming stream was dropped");
            c->api->stream_reader_close(reader);
        }
    }
    return NULL;
}

/* ---- RPC ---------------------------------------------------------------- */

/* A bench.source send: n bytes to the caller (identity follows the struct). */
typedef struct source_send {
    unsigned long long n;
    size_t who_len;
    char who[];
} source_send;

static void bench_source_worker(echo_ctx *c, void *arg) {
    source_send *s = arg;
    const lk_str to = {s->who, s->who_len};
    lk_stream_options o = stream_options(LK_STREAM_BYTES, "bench.source.data", &to);
    o.name = cstr("bench.bin");
    o.flags = LK_STREAM_HAS_TOTAL_LENGTH;
    o.total_length = s->n;
    lk_stream_writer *w = NULL;
    int32_t rc = c->api->stream_open(c->job, &o, SEND_TIMEOUT_MS, &w, NULL);
    if (rc == LK_OK) {
        /* One piece of 'x' written again and again: no n-byte buffer. */
        size_t piece_len = s->n < WRITE_PIECE ? (size_t)s->n : WRITE_PIECE;
        uint8_t *piece = malloc(piece_len > 0 ? piece_len : 1);
        if (piece == NULL) {
            rc = LK_ERR_TOO_LARGE;
        } else {
            memset(piece, 'x', piece_len);
            for (unsigned long long left = s->n; left > 0 && rc == LK_OK;) {
                size_t n = left < piece_len ? (size_t)left : piece_len;
                rc = c->api->stream_write(w, piece, n, SEND_TIMEOUT_MS);
                left -= n;
            }
            free(piece);
        }
        rc = finish_stream(c, w, rc, NULL, NULL, 0);
    }
    if (rc != LK_OK && rc != LK_SHUTTING_DOWN) {
        logf_(c, LK_LOG_WARN, "c-echo: bench.source: %s", rc_name(rc));
    }
    free(s);
}

/* The decimal byte count in a bench.source payload (blanks around it
 * allowed); 0 when it is not one. */
static int parse_count(lk_str p, unsigned long long *out) {
    size_t i = 0, end = p.len;
    while (i < end && (p.ptr[i] == ' ' || p.ptr[i] == '\t' || p.ptr[i] == '\n' || p.ptr[i] == '\r')) i++;
    while (end > i && (p.ptr[end - 1] == ' ' || p.ptr[end - 1] == '\t' || p.ptr[end - 1] == '\n' ||
                       p.ptr[end - 1] == '\r'))
        end--;
    if (i == end || end - i > 18) return 0; /* 18 digits cannot overflow */
    unsigned long long n = 0;
    for (; i < end; i++) {
        if (p.ptr[i] < '0' || p.ptr[i] > '9') return 0;
        n = n * 10 + (unsigned long long)(p.ptr[i] - '0');
    }
    *out = n;
    return 1;
}

/* Answers one invocation; rpc_respond releases it, so nothing of it is
 * used afterwards. */
static void answer_rpc(echo_ctx *c, lk_rpc_invocation *inv) {
    const lk_host_api *api = c->api;
    const lk_str none = {NULL, 0};
    int32_t rc;
    if (is(inv->method, "echo")) {
        rc = api->rpc_respond(c->job, inv, 0, inv->payload, none);
    } else if (is(inv->method, "bench.source")) {
        unsigned long long n = 0;
        if (!parse_count(inv->payload, &n)) {
            rc = api->rpc_respond(c->job, inv, LK_RPC_APPLICATION_ERROR,
                                  cstr("payload is not a byte count"), none);
        } else {
            /* Copy the caller before rpc_respond frees the invocation. */
            source_send *s = malloc(sizeof *s + inv->caller_identity.len + 1);
            if (s == NULL) {
                rc = api->rpc_respond(c->job, inv, LK_RPC_APPLICATION_ERROR, cstr("out of memory"),
                                      none);
            } else {
                s->n = n;
                s->who_len = inv->caller_identity.len;
                if (s->who_len > 0) memcpy(s->who, inv->caller_identity.ptr, s->who_len);
                s->who[s->who_len] = '\0';
                char count[24];
                int m = snprintf(count, sizeof count, "%llu", n);
                const lk_str reply = {count, m > 0 ? (size_t)m : 0};
                rc = api->rpc_respond(c->job, inv, 0, reply, none);
                /* The data follows the answer, as the caller expects. */
                if (rc != LK_OK) {
                    free(s);
                } else if (!spawn(c, bench_source_worker, s)) {
                    logf_(c, LK_LOG_WARN, "c-echo: too busy; bench.source data not sent");
                    free(s);
                }
            }
        }
    } else {
        /* Only registered methods arrive; answer anything else as the host would. */
        rc = api->rpc_respond(c->job, inv, LK_RPC_UNSUPPORTED_METHOD, cstr("method not supported"),
                              none);
    }
    if (rc == LK_TIMEOUT) {
        logf_(c, LK_LOG_WARN, "c-echo: an RPC was answered after its caller gave up");
    } else if (rc == LK_ERR_TOO_LARGE) {
        logf_(c, LK_LOG_WARN, "c-echo: an RPC answer was too large for its caller (sent as 1504)");
    } else if (rc != LK_OK && rc != LK_SHUTTING_DOWN) {
        logf_(c, LK_LOG_WARN, "c-echo: rpc_respond failed (%s)", rc_name(rc));
    }
}

/* Takes RPC invocations and answers them at once (echo is a copy; the
 * bench.source data goes out on a worker). */
static void *rpc_thread(void *arg) {
    echo_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        lk_rpc_invocation inv;
        memset(&inv, 0, sizeof inv);
        inv.struct_size = (uint32_t)sizeof inv;
        int32_t rc = c->api->next_rpc(c->job, WAIT_MS, &inv);
        if (rc == LK_TIMEOUT) continue;
        if (rc == LK_SHUTTING_DOWN) break;
        if (rc != LK_OK) {
            logf_(c, LK_LOG_ERROR, "c-echo: next_rpc failed (%s); RPCs are not answered", rc_name(rc));
            break;
        }
        answer_rpc(c, &inv);
    }
    return NULL;
}

/* ---- frontend.hello ------------------------------------------------------ */

/* Calls frontend.hello on who (a NUL-terminated copy we own) with our own
 * identity; on a worker: the call may take the ack and response timeouts. */
static void hello_worker(echo_ctx *c, void *arg) {
    char *who = arg;
    const lk_host_api *api = c->api;
    lk_rpc_result res;
    memset(&res, 0, sizeof res);
    res.struct_size = (uint32_t)sizeof res;
    int32_t rc = api->perform_rpc(c->job, cstr(who), cstr("frontend.hello"),
                                  api->participant_identity(c->job), HELLO_TIMEOUT_MS, &res);
    if (rc == LK_OK && res.error_code == 0) {
        logf_(c, LK_LOG_INFO, "c-echo: frontend.hello to %s answered: %.*s", who, SHOW(res.payload));
    } else if (rc == LK_OK) {
        logf_(c, LK_LOG_INFO, "c-echo: frontend.hello to %s failed with code %d: %.*s", who,
              (int)res.error_code, SHOW(res.payload));
    } else if (rc != LK_SHUTTING_DOWN) {
        logf_(c, LK_LOG_INFO, "c-echo: frontend.hello to %s not made: %s", who, rc_name(rc));
    }
    api->rpc_result_release(c->job, &res); /* idempotent on the zeroed result */
    free(who);
}

/* Greets a participant who joined (the event is released by the caller,
 * so the identity is copied). */
static void greet(echo_ctx *c, lk_str identity) {
    if (!c->frontend || identity.len == 0 || identity.ptr == NULL) return;
    char *who = malloc(identity.len + 1);
    if (who == NULL) return;
    memcpy(who, identity.ptr, identity.len);
    who[identity.len] = '\0';
    if (!spawn(c, hello_worker, who)) {
        logf_(c, LK_LOG_WARN, "c-echo: too busy; frontend.hello to %s not made", who);
        free(who);
    }
}

/* Registers the RPC methods and stream topics and starts the two threads
 * that take them; *have_streams / *have_rpcs say which started. */
static void frontend_start(echo_ctx *c, pthread_t *streams, int *have_streams, pthread_t *rpcs,
                           int *have_rpcs) {
    const lk_host_api *api = c->api;
    if (!sha256_self_test()) {
        logf_(c, LK_LOG_ERROR, "c-echo: SHA-256 self-test failed; no RPC, chat or byte streams");
        return;
    }
    static const char *const METHODS[] = {"echo", "bench.source"};
    static const char *const TOPICS[] = {"lk.chat", "echo.bytes", "bench.sink"};
    for (size_t i = 0; i < 2; i++) {
        int32_t rc = api->rpc_register(c->job, cstr(METHODS[i]));
        if (rc != LK_OK) {
            logf_(c, LK_LOG_WARN, "c-echo: could not register RPC %s (%s)", METHODS[i], rc_name(rc));
        }
    }
    for (size_t i = 0; i < 3; i++) {
        int32_t rc = api->stream_accept_topic(c->job, cstr(TOPICS[i]));
        if (rc != LK_OK) {
            logf_(c, LK_LOG_WARN, "c-echo: cannot accept streams on %s (%s)", TOPICS[i], rc_name(rc));
        }
    }
    int err = pthread_create(streams, NULL, stream_thread, c);
    *have_streams = err == 0;
    if (err != 0) logf_(c, LK_LOG_ERROR, "c-echo: pthread_create failed (%s); no streams", strerror(err));
    err = pthread_create(rpcs, NULL, rpc_thread, c);
    *have_rpcs = err == 0;
    if (err != 0) logf_(c, LK_LOG_ERROR, "c-echo: pthread_create failed (%s); no RPC", strerror(err));
    logf_(c, LK_LOG_INFO, "c-echo: answering RPC echo, chat on lk.chat, echo.bytes and bench.*");
}

/* ---- data thread: lk.ping -> lk.pong ----------------------------------- */

static void *data_thread(void *arg) {
    echo_ctx *c = (echo_ctx *)arg;
    const lk_host_api *api = c->api;
    const lk_str pong = {PONG_TOPIC, sizeof PONG_TOPIC - 1};
    uint64_t answered = 0;
    int warned_failure = 0;
    logf_(c, LK_LOG_INFO, "c-echo: answering %s with %s", PING_TOPIC, PONG_TOPIC);
    while (!atomic_load(&c->stop)) {
        lk_data_packet pkt;
        memset(&pkt, 0, sizeof pkt);
        pkt.struct_size = (uint32_t)sizeof pkt;
        uint64_t missed = 0;
        int32_t rc = api->next_data(c->job, WAIT_MS, &pkt, &missed);
        if (rc == LK_TIMEOUT) continue;
        if (rc == LK_MISSED) {
            logf_(c, LK_LOG_WARN, "c-echo: %llu data packets dropped (queue full)",
                  (unsigned long long)missed);
            continue;
        }
        if (rc == LK_SHUTTING_DOWN) break;
        if (rc != LK_OK) {
            logf_(c, LK_LOG_ERROR, "c-echo: next_data failed (%d); data thread stops", (int)rc);
            break;
        }
        int shutting_down = 0;
        if (str_eq(pkt.topic, PING_TOPIC, sizeof PING_TOPIC - 1)) {
            if (pkt.participant_identity.len == 0) {
                logf_(c, LK_LOG_WARN, "c-echo: %s without a sender identity, not answered",
                      PING_TOPIC);
            } else {
                /* pkt.data and the identity stay valid until data_release below. */
                lk_str dest = pkt.participant_identity;
                int32_t prc = api->publish_data(c->job, pkt.data, pkt.len, pong, &dest, 1,
                                                LK_DATA_RELIABLE, CONTROL_TIMEOUT_MS);
                if (prc == LK_OK) {
                    answered++;
                } else if (prc == LK_SHUTTING_DOWN) {
                    shutting_down = 1;
                } else if (!warned_failure) {
                    warned_failure = 1;
                    logf_(c, LK_LOG_WARN, "c-echo: publish_data failed (%d); further failures not logged",
                          (int)prc);
                }
            }
        }
        api->data_release(c->job, &pkt);
        if (shutting_down) break;
    }
    logf_(c, LK_LOG_INFO, "c-echo: data thread done, %llu pings answered",
          (unsigned long long)answered);
    return NULL;
}

/* ---- main thread: microphone -> source --------------------------------- */

enum { STEP_OK = 0, STEP_STOP = 1, STEP_FAIL = 2 };

/* Microphone tracks subscribed while another one is echoed (or not yet
 * opened), oldest first; a track unsubscribed meanwhile leaves the list. */
#define PENDING_MAX 8
typedef struct pending_list {
    sid_buf sids[PENDING_MAX];
    int n;
} pending_list;

static int pending_find(const pending_list *p, lk_str sid) {
    for (int i = 0; i < p->n; i++) {
        if (sid_is(&p->sids[i], sid)) return i;
    }
    return -1;
}

static void pending_remove(pending_list *p, int i) {
    for (int k = i; k + 1 < p->n; k++) p->sids[k] = p->sids[k + 1];
    p->n--;
}

/* Handles one event and releases it. Kinds it does not act on (muted,
 * local_track_subscribed, ...) are only released. */
static void on_event(echo_ctx *c, lk_event *ev, const sid_buf *current, pending_list *pending) {
    if (is_mic_subscribed(ev)) {
        if (!sid_is(current, ev->track_sid) && pending_find(pending, ev->track_sid) < 0) {
            if (pending->n == PENDING_MAX) {
                logf_(c, LK_LOG_WARN, "c-echo: more than %d microphones waiting; %.*s ignored",
                      PENDING_MAX, (int)ev->track_sid.len, ev->track_sid.ptr);
            } else if (sid_set(&pending->sids[pending->n], ev->track_sid)) {
                pending->n++;
            } else {
                logf_(c, LK_LOG_WARN, "c-echo: track sid of %zu bytes ignored", ev->track_sid.len);
            }
        }
    } else if (ev->kind == LK_EVENT_TRACK_UNSUBSCRIBED) {
        int i = pending_find(pending, ev->track_sid);
        if (i >= 0) pending_remove(pending, i);
    } else if (ev->kind == LK_EVENT_PARTICIPANT_JOINED) {
        greet(c, ev->participant_identity); /* copies the identity; never blocks */
    }
    c->api->event_release(c->job, ev);
}

/* Handles up to max events, the first waited for up to timeout_ms. Returns
 * early once a microphone is pending and none is echoed. Returns STEP_*. */
static int pump_events(echo_ctx *c, uint32_t timeout_ms, int max, const sid_buf *current,
                       pending_list *pending) {
    for (int i = 0; i < max; i++) {
        lk_event ev;
        uint64_t missed = 0;
        int32_t rc = c->api->next_event(c->job, i == 0 ? timeout_ms : 0, &ev, &missed);
        switch (rc) {
        case LK_NEXT_EVENT:
            on_event(c, &ev, current, pending);
            if (current->len == 0 && pending->n > 0) return STEP_OK;
            break;
        case LK_NEXT_TIMEOUT:
            return STEP_OK;
        case LK_NEXT_MISSED:
            logf_(c, LK_LOG_WARN, "c-echo: %llu room events missed", (unsigned long long)missed);
            break;
        case LK_NEXT_SHUTTING_DOWN:
            return STEP_STOP;
        default:
            logf_(c, LK_LOG_ERROR, "c-echo: next_event failed (%d)", (int)rc);
            return STEP_FAIL;
        }
    }
    return STEP_OK;
}

/* Opens a stream on `sid`; returns STEP_OK with *out set (or NULL when the
 * track is already gone), or STEP_STOP / STEP_FAIL. */
static int open_stream(echo_ctx *c, const sid_buf *sid, lk_audio_stream **out) {
    lk_audio_format fmt = {SAMPLE_RATE, 1, FRAME_MS, 0};
    *out = NULL;
    int32_t rc = c->api->audio_stream_open(c->job, sid_str(sid), &fmt, out);
    if (rc == LK_OK) {
        logf_(c, LK_LOG_INFO, "c-echo: echoing %s", sid->buf);
        return STEP_OK;
    }
    *out = NULL;
    if (rc == LK_SHUTTING_DOWN) return STEP_STOP;
    if (rc == LK_ERR_NOT_FOUND) {
        logf_(c, LK_LOG_INFO, "c-echo: %s is gone before it could be opened", sid->buf);
        return STEP_OK;
    }
    logf_(c, LK_LOG_ERROR, "c-echo: audio_stream_open(%s) failed (%d)", sid->buf, (int)rc);
    return STEP_FAIL;
}

/* Publishes the echo's track; on success *source is set and its sid kept
 * in c->mic (transcripts name it). */
static int32_t publish(echo_ctx *c, lk_audio_source **source) {
    lk_audio_format fmt = {SAMPLE_RATE, 1, 0, 0};
    lk_str name = {"c-echo", 6};
    lk_str track_sid = {NULL, 0};
    int32_t rc = c->api->audio_source_publish(c->job, name, &fmt, source, &track_sid);
    if (rc == LK_OK) {
        logf_(c, LK_LOG_INFO, "c-echo: published c-echo as %.*s", (int)track_sid.len,
              track_sid.ptr != NULL ? track_sid.ptr : "");
        pthread_mutex_lock(&c->lock);
        if (!sid_set(&c->mic, track_sid)) c->mic.len = 0;
        pthread_mutex_unlock(&c->lock);
    } else if (rc != LK_SHUTTING_DOWN) {
        logf_(c, LK_LOG_ERROR, "c-echo: audio_source_publish failed (%d)", (int)rc);
    }
    return rc;
}

static int32_t echo_loop(echo_ctx *c, lk_audio_source **sourcep) {
    const lk_host_api *api = c->api;
    static const sid_buf none = {{0}, 0};
    sid_buf current = none;
    pending_list pending;
    pending.n = 0;
    lk_audio_stream *stream = NULL;
    int16_t pcm[PCM_CAP];
    uint64_t dropped_captures = 0;
    int step = STEP_OK;

    logf_(c, LK_LOG_INFO, "c-echo: waiting for a microphone track");
    while (step == STEP_OK) {
        if (api->is_shutting_down(c->job)) {
            step = STEP_STOP;
            break;
        }
        if (stream == NULL) {
            if (pending.n > 0) {
                current = pending.sids[0];
                pending_remove(&pending, 0);
                step = open_stream(c, &current, &stream);
                if (stream == NULL) current.len = 0;
                continue;
            }
            step = pump_events(c, WAIT_MS, DRAIN_MAX, &current, &pending);
            continue;
        }

        lk_audio_frame_info info;
        memset(&info, 0, sizeof info);
        int32_t rc = api->audio_stream_read(stream, pcm, PCM_CAP, WAIT_MS, &info);
        if (rc == LK_OK) {
            int32_t crc = api->audio_source_capture(*sourcep, pcm, info.samples_per_channel,
                                                    CAPTURE_TIMEOUT_MS);
            if (crc == LK_ERR_CLOSED) {
                /* The host closed the source (the session was rejoined):
                 * publish again, as the header says. */
                logf_(c, LK_LOG_INFO, "c-echo: the source was closed by the host; publishing again");
                api->audio_source_close(*sourcep);
                *sourcep = NULL;
                int32_t prc = publish(c, sourcep);
                if (prc != LK_OK) step = prc == LK_SHUTTING_DOWN ? STEP_STOP : STEP_FAIL;
            } else if (crc == LK_SHUTTING_DOWN) {
                step = STEP_STOP;
            } else if (crc == LK_TIMEOUT || crc == LK_CLEARED) {
                /* The frame was not queued (we never clear, so CLEARED is
                 * not expected; it is a dropped frame all the same). */
                if (dropped_captures++ == 0) {
                    logf_(c, LK_LOG_WARN, "c-echo: send queue full for 1 s, dropping frames");
                }
            } else if (crc != LK_OK) {
                logf_(c, LK_LOG_ERROR, "c-echo: audio_source_capture failed (%d)", (int)crc);
                step = STEP_FAIL;
            }
        } else if (rc == LK_TIMEOUT) {
            /* nothing this time; drain events below */
        } else if (rc == LK_ENDED || rc == LK_ERR_CLOSED) {
            logf_(c, LK_LOG_INFO, "c-echo: %s ended; waiting for a microphone track", current.buf);
            api->audio_stream_close(stream);
            stream = NULL;
            current.len = 0;
            continue;
        } else if (rc == LK_SHUTTING_DOWN) {
            step = STEP_STOP;
        } else {
            logf_(c, LK_LOG_ERROR, "c-echo: audio_stream_read failed (%d)", (int)rc);
            step = STEP_FAIL;
        }
        if (step == STEP_OK) step = pump_events(c, 0, DRAIN_MAX, &current, &pending);
    }

    if (stream != NULL) api->audio_stream_close(stream);
    if (dropped_captures > 0) {
        logf_(c, LK_LOG_WARN, "c-echo: %llu frames dropped on a full send queue",
              (unsigned long long)dropped_captures);
    }
    return step == STEP_FAIL ? 1 : 0;
}

/* Whether the host's table has every function of minor `minor` we use. */
static int host_has(const lk_host_api *api, int minor, size_t end) {
    return api->abi_major == LK_ABI_MAJOR && api->abi_minor >= minor && api->size >= end;
}

static int32_t run(const lk_host_api *api, const lk_job *job) {
    echo_ctx *c = &CTX;
    c->api = api;
    c->job = job;
    atomic_init(&c->stop, 0);
    c->workers = 0;
    c->mic.len = 0;
    if (pthread_mutex_init(&c->lock, NULL) != 0) return 1;
    if (pthread_cond_init(&c->idle, NULL) != 0) {
        pthread_mutex_destroy(&c->lock);
        return 1;
    }
    int32_t code = 1;

    /* The 1.3 fields exist only if the host says so. */
    if (!host_has(api, 3, offsetof(lk_host_api, set_metadata) + sizeof api->set_metadata)) {
        char line[160];
        int n = snprintf(line, sizeof line,
                         "c-echo: needs host ABI %d.3 or newer, host has %u.%u (table size %u)",
                         LK_ABI_MAJOR, api->abi_major, api->abi_minor, api->size);
        api->log(job, LK_LOG_ERROR, line, n > 0 ? (size_t)n : 0);
        code = EXIT_OLD_HOST;
        goto out;
    }
    /* The 1.4 ones likewise; without them it only echoes. */
    c->frontend = host_has(api, 4, offsetof(lk_host_api, publish_transcription) +
                                       sizeof api->publish_transcription);

    lk_str key = {"lk.agent.state", 14};
    lk_str value = {"listening", 9};
    int32_t rc = api->set_attributes(job, &key, &value, 1, CONTROL_TIMEOUT_MS);
    if (rc == LK_SHUTTING_DOWN) {
        code = 0;
        goto out;
    }
    if (rc == LK_OK) {
        logf_(c, LK_LOG_INFO, "c-echo: lk.agent.state=listening");
    } else {
        logf_(c, LK_LOG_WARN, "c-echo: set_attributes failed (%d); echoing anyway", (int)rc);
    }

    lk_audio_source *source = NULL;
    rc = publish(c, &source);
    if (rc != LK_OK) {
        code = rc == LK_SHUTTING_DOWN ? 0 : 1;
        goto out;
    }

    pthread_t data;
    int err = pthread_create(&data, NULL, data_thread, c);
    if (err != 0) {
        logf_(c, LK_LOG_ERROR, "c-echo: pthread_create failed (%s)", strerror(err));
        api->audio_source_close(source);
        goto out;
    }
    pthread_t streams, rpcs;
    int have_streams = 0, have_rpcs = 0;
    if (c->frontend) {
        frontend_start(c, &streams, &have_streams, &rpcs, &have_rpcs);
    } else {
        logf_(c, LK_LOG_WARN, "c-echo: the host is older than ABI 1.4: no RPC, chat or byte streams");
    }

    code = echo_loop(c, &source);

    atomic_store(&c->stop, 1);
    pthread_join(data, NULL);
    if (have_streams) pthread_join(streams, NULL);
    if (have_rpcs) pthread_join(rpcs, NULL);
    int left = wait_workers(c);
    if (left > 0) {
        /* CTX is static, so they still find it; the host ends them. */
        logf_(c, LK_LOG_WARN, "c-echo: %d workers still running after %d ms", left, WORKERS_WAIT_MS);
    }
    if (source != NULL) api->audio_source_close(source);
    logf_(c, LK_LOG_INFO, "c-echo: stopped");
    if (left > 0) return code; /* the lock and condvar stay: workers use them */
out:
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->lock);
    return code;
}

static const lk_plugin_descriptor DESCRIPTOR = {
    LK_PLUGIN_MAGIC, LK_ABI_MAJOR, LK_ABI_MINOR, {"c-echo", 6}, {"0.1.0", 5}, run,
};

const lk_plugin_descriptor *lk_plugin_entry(void) { return &DESCRIPTOR; }
