/*
 * c-echo: an lk-go echo agent in plain C against the 1.3 media and data ABI.
 *
 * - sets its attribute lk.agent.state=listening;
 * - publishes an audio source "c-echo" (48 kHz mono);
 * - echoes the first subscribed remote microphone track into that source,
 *   10 ms at a time; when the track ends it echoes the next one;
 * - a second thread answers data packets on topic "lk.ping" with the same
 *   payload on topic "lk.pong", sent reliably to the sender only.
 *
 * It stops when any call reports LK_SHUTTING_DOWN, joins the data thread,
 * closes the stream and the source and returns 0. A host older than ABI 1.3
 * is refused with exit code 69 (EX_UNAVAILABLE). Every event and packet is
 * released exactly once and no host string is used after its release.
 * tests/media.rs runs it against a real server and the Python SDK (echo
 * and ping/pong); the 1.3 calls' C-boundary misuse cases run under valgrind
 * in tests/faults.rs (tests/fixtures/probe_plugin.c, mode "media").
 *
 * Build: cc -std=c11 -D_POSIX_C_SOURCE=200809L -shared -fPIC \
 *           -I plugin-api/include -o libc_echo.so c_echo.c -lpthread
 */
#include "lk_plugin.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define EXIT_OLD_HOST 69
#define SAMPLE_RATE 48000
#define FRAME_MS 10
/* Room for 100 ms of mono 48 kHz: a 10 ms frame needs 480 samples. */
#define PCM_CAP (SAMPLE_RATE / 10)
#define SID_CAP 256
#define WAIT_MS 200
#define CAPTURE_TIMEOUT_MS 1000
#define CONTROL_TIMEOUT_MS 5000
/* Events drained per echoed frame; the rest wait for the next frame. */
#define DRAIN_MAX 32

static const char PING_TOPIC[] = "lk.ping";
static const char PONG_TOPIC[] = "lk.pong";

typedef struct echo_ctx {
    const lk_host_api *api;
    const lk_job *job;
    atomic_int stop; /* set by the main thread to end the data thread */
} echo_ctx;

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

/* A track sid copied out of an event, which the host frees on release. */
typedef struct sid_buf {
    char buf[SID_CAP];
    size_t len; /* 0: empty */
} sid_buf;

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

/* Handles one event and releases it. */
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

/* Publishes the echo's track; on success *source and its sid are set. */
static int32_t publish(echo_ctx *c, lk_audio_source **source) {
    lk_audio_format fmt = {SAMPLE_RATE, 1, 0, 0};
    lk_str name = {"c-echo", 6};
    lk_str track_sid = {NULL, 0};
    int32_t rc = c->api->audio_source_publish(c->job, name, &fmt, source, &track_sid);
    if (rc == LK_OK) {
        logf_(c, LK_LOG_INFO, "c-echo: published c-echo as %.*s", (int)track_sid.len,
              track_sid.ptr != NULL ? track_sid.ptr : "");
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
            } else if (crc == LK_TIMEOUT) {
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

static int32_t run(const lk_host_api *api, const lk_job *job) {
    echo_ctx ctx;
    ctx.api = api;
    ctx.job = job;
    atomic_init(&ctx.stop, 0);

    /* The 1.3 fields exist only if the host says so. */
    if (api->abi_major != LK_ABI_MAJOR || api->abi_minor < 3 ||
        api->size < offsetof(lk_host_api, set_metadata) + sizeof api->set_metadata) {
        char line[160];
        int n = snprintf(line, sizeof line,
                         "c-echo: needs host ABI %d.3 or newer, host has %u.%u (table size %u)",
                         LK_ABI_MAJOR, api->abi_major, api->abi_minor, api->size);
        api->log(job, LK_LOG_ERROR, line, n > 0 ? (size_t)n : 0);
        return EXIT_OLD_HOST;
    }

    lk_str key = {"lk.agent.state", 14};
    lk_str value = {"listening", 9};
    int32_t rc = api->set_attributes(job, &key, &value, 1, CONTROL_TIMEOUT_MS);
    if (rc == LK_SHUTTING_DOWN) return 0;
    if (rc == LK_OK) {
        logf_(&ctx, LK_LOG_INFO, "c-echo: lk.agent.state=listening");
    } else {
        logf_(&ctx, LK_LOG_WARN, "c-echo: set_attributes failed (%d); echoing anyway", (int)rc);
    }

    lk_audio_source *source = NULL;
    rc = publish(&ctx, &source);
    if (rc == LK_SHUTTING_DOWN) return 0;
    if (rc != LK_OK) return 1;

    pthread_t data;
    int err = pthread_create(&data, NULL, data_thread, &ctx);
    if (err != 0) {
        logf_(&ctx, LK_LOG_ERROR, "c-echo: pthread_create failed (%s)", strerror(err));
        api->audio_source_close(source);
        return 1;
    }

    int32_t code = echo_loop(&ctx, &source);

    atomic_store(&ctx.stop, 1);
    pthread_join(data, NULL);
    if (source != NULL) api->audio_source_close(source);
    logf_(&ctx, LK_LOG_INFO, "c-echo: stopped");
    return code;
}

static const lk_plugin_descriptor DESCRIPTOR = {
    LK_PLUGIN_MAGIC, LK_ABI_MAJOR, LK_ABI_MINOR, {"c-echo", 6}, {"0.1.0", 5}, run,
};

const lk_plugin_descriptor *lk_plugin_entry(void) { return &DESCRIPTOR; }
