// go-noop: an lk-go plugin written in Go, built with
// `go build -buildmode=c-shared` against plugin-api/include/lk_plugin.h.
// It logs through the host and returns 0. A Go panic is recovered and
// reported as LK_RUN_PANICKED so it never crosses the C boundary.
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../../plugin-api/include
#include <stdlib.h>
#include "lk_plugin.h"

lk_str go_noop_room_name(const lk_host_api *api, const lk_job *job);
lk_str go_noop_job_id(const lk_host_api *api, const lk_job *job);
void go_noop_log(const lk_host_api *api, const lk_job *job, int32_t level, const char *msg, size_t len);
*/
import "C"

import (
	"fmt"
	"unsafe"
)

func goString(s C.lk_str) string {
	if s.len == 0 || s.ptr == nil {
		return ""
	}
	return C.GoStringN(s.ptr, C.int(s.len))
}

func logInfo(api *C.lk_host_api, job *C.lk_job, msg string) {
	cs := C.CString(msg)
	defer C.free(unsafe.Pointer(cs))
	C.go_noop_log(api, job, C.LK_LOG_INFO, cs, C.size_t(len(msg)))
}

//export goNoopRun
func goNoopRun(api *C.lk_host_api, job *C.lk_job) (code C.int32_t) {
	defer func() {
		if r := recover(); r != nil {
			code = C.LK_RUN_PANICKED
		}
	}()
	room := goString(C.go_noop_room_name(api, job))
	id := goString(C.go_noop_job_id(api, job))
	logInfo(api, job, fmt.Sprintf("go-noop plugin running job %s in room %s", id, room))
	return 0
}

func main() {}
