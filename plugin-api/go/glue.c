/*
 * The C side of package lkgo: the plugin descriptor, lk_plugin_entry and the
 * two callbacks the host calls into (run and shutdown hooks). Everything else
 * the package needs from C is a static inline trampoline in cgo_host.go.
 *
 * Owns: the one exported symbol (lk_plugin_entry) and the descriptor it
 * returns. Must not touch: Go memory (every pointer handed to the host here
 * is C memory or a cgo.Handle value).
 */
#include "lk_plugin.h"
#include "_cgo_export.h"

static lk_plugin_descriptor lkgo_descriptor;

static int32_t lkgo_run(const lk_host_api *api, const lk_job *job) {
    return lkgoRun((lk_host_api *)api, (lk_job *)job);
}

/* Called from Register (package init, on a Go thread) before any host
 * thread can read the descriptor: lk_plugin_entry first calls a Go export,
 * which waits until every package init has run. */
void lkgo_set_descriptor(const char *name, size_t name_len, const char *version,
                         size_t version_len) {
    lkgo_descriptor.magic = LK_PLUGIN_MAGIC;
    lkgo_descriptor.abi_major = LK_ABI_MAJOR;
    lkgo_descriptor.abi_minor = LK_ABI_MINOR;
    lkgo_descriptor.name.ptr = name;
    lkgo_descriptor.name.len = name_len;
    lkgo_descriptor.version.ptr = version;
    lkgo_descriptor.version.len = version_len;
    lkgo_descriptor.run = lkgo_run;
}

/* NULL when the plugin never called lkgo.Register (lkgoRegistered says why
 * on stderr); the host then refuses the library with its own message. */
const lk_plugin_descriptor *lk_plugin_entry(void) {
    return lkgoRegistered() ? &lkgo_descriptor : NULL;
}

static void lkgo_hook(void *user_data, const lk_shutdown_info *info) {
    lkgoHook((uintptr_t)user_data, (lk_shutdown_info *)info);
}

static void lkgo_hook_free(void *user_data) { lkgoHookFree((uintptr_t)user_data); }

int32_t lkgo_on_shutdown(const lk_host_api *api, const lk_job *job, uintptr_t handle) {
    return api->on_shutdown(job, lkgo_hook, (void *)handle, lkgo_hook_free);
}
