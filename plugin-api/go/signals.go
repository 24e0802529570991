package lkgo

// The process-wide settings a Go runtime inside lk-go needs. Must not
// touch: SIGINT, SIGTERM and SIGHUP, which belong to the host.

import (
	"os"
	"os/signal"
	"syscall"
)

// In a c-shared library the Go runtime installs its own SIGPIPE handler,
// and a Go write to a closed stdout or stderr (fd 1 or 2) then makes it
// kill the whole process: exit 141, no cascade, a ghost participant.
// With SIGPIPE delivered to a channel, such a write just fails with EPIPE.
// The runtime of a c-shared library handles no other asynchronous signal
// unless asked, so SIGINT, SIGTERM and SIGHUP stay with lk-go, which turns
// them into the shutdown cascade. A plugin must not call signal.Notify
// for them (or signal.Ignore, or os.Exit: the process is the host's).
func init() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}
