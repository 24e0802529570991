// go-noop: an lk-go plugin written in Go, built with
// `go build -buildmode=c-shared` against plugin-api/include/lk_plugin.h.
// It prints a line on stdout, logs through the host and returns 0. A Go
// panic is recovered and reported as LK_RUN_PANICKED so it never crosses
// the C boundary.
//
// Every Go plugin needs the init below. In a c-shared library the Go
// runtime installs its own SIGPIPE handler, and a Go write to a closed
// stdout or stderr (fd 1 or 2) makes it kill the whole process with SIGPIPE
// (exit 141: no cascade, no leave, a ghost participant). Once SIGPIPE is
// delivered to a channel instead, such a write just returns EPIPE.
// It does not take SIGINT/SIGTERM/SIGHUP from the host: the runtime of a
// c-shared library handles only synchronous signals and SIGPIPE.
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
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

func init() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

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
	if _, err := fmt.Fprintf(os.Stdout, "go-noop: job %s in room %s\n", id, room); err != nil {
		logInfo(api, job, "go-noop: stdout write failed: "+err.Error())
	}
	logInfo(api, job, fmt.Sprintf("go-noop plugin running job %s in room %s", id, room))
	return 0
}

func main() {}
