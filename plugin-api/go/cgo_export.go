package lkgo

// The Go functions the host reaches through glue.c: registration check,
// run and shutdown hooks. Owns the recover that keeps a Go panic from
// crossing into C. Must not touch: the host table (cgo_host.go does).

/*
#include "lk_plugin.h"
*/
import "C"

import (
	"fmt"
	"os"
	"runtime/cgo"
)

// lkgoRegistered answers lk_plugin_entry. Being a cgo export, its call waits
// until every package init ran, so a Register in init is always seen.
//
//export lkgoRegistered
func lkgoRegistered() C.int {
	if err := registrationError(); err != nil {
		fmt.Fprintf(os.Stderr, "lkgo: %v\n", err)
		return 0
	}
	return 1
}

//export lkgoRun
func lkgoRun(api *C.lk_host_api, job *C.lk_job) C.int32_t {
	return C.int32_t(runJob(cHost{api: api, job: job}, registeredRun()))
}

// lkgoHook runs one OnShutdown hook on the host's hook thread.
//
//export lkgoHook
func lkgoHook(handle C.uintptr_t, info *C.lk_shutdown_info) {
	hook, ok := cgo.Handle(handle).Value().(func(ShutdownInfo))
	if !ok {
		return
	}
	hook(shutdownInfoFromC(info))
}

// lkgoHookFree is the host's free_user_data: called once per registered
// hook, after it ran or when the host drops it unrun.
//
//export lkgoHookFree
func lkgoHookFree(handle C.uintptr_t) {
	cgo.Handle(handle).Delete()
}
