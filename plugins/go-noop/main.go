// go-noop: the smallest lk-go plugin in Go, on the lkgo SDK
// (plugin-api/go). It prints a line on stdout, logs through the host and
// returns 0. Build: go build -buildmode=c-shared -o libgo_noop.so .
package main

import (
	"fmt"
	"os"

	"lkgo.example/lkgo"
)

func init() {
	lkgo.Register(lkgo.Plugin{Name: "go-noop", Version: "0.2.0", Run: run})
}

func run(jc *lkgo.JobContext) int {
	// With lk-go's stdout closed this write fails (EPIPE); it never
	// kills the host (the SDK keeps SIGPIPE from the Go runtime).
	if _, err := fmt.Fprintf(os.Stdout, "go-noop: job %s in room %s\n", jc.Job.ID, jc.Job.RoomName); err != nil {
		jc.Infof("go-noop: stdout write failed: %v", err)
	}
	jc.Infof("go-noop plugin running job %s in room %s", jc.Job.ID, jc.Job.RoomName)
	return 0
}

func main() {}
