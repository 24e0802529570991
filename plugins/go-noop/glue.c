/*
 * C side of the go-noop plugin: the descriptor and small trampolines that
 * call lk_host_api function pointers (Go cannot call C function pointers).
 * cgo compiles this file together with main.go.
 */
#include "lk_plugin.h"
#include "_cgo_export.h"

static int32_t go_noop_run(const lk_host_api *api, const lk_job *job) {
    return goNoopRun((lk_host_api *)api, (lk_job *)job);
}

static const lk_plugin_descriptor DESCRIPTOR = {
    LK_PLUGIN_MAGIC, LK_ABI_MAJOR, LK_ABI_MINOR, {"go-noop", 7}, {"0.1.0", 5}, go_noop_run,
};

const lk_plugin_descriptor *lk_plugin_entry(void) { return &DESCRIPTOR; }

lk_str go_noop_room_name(const lk_host_api *api, const lk_job *job) { return api->room_name(job); }
lk_str go_noop_job_id(const lk_host_api *api, const lk_job *job) { return api->job_id(job); }
void go_noop_log(const lk_host_api *api, const lk_job *job, int32_t level, const char *msg, size_t len) {
    api->log(job, level, msg, len);
}
