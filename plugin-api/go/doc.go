// Package lkgo is the Go SDK for lk-go plugins: a LiveKit agent job written
// in Go, built as a c-shared library and run by the lk-go host.
//
// A plugin registers itself from an init function and gets a JobContext
// per job:
//
//	package main
//
//	import "lkgo.example/lkgo"
//
//	func init() {
//		lkgo.Register(lkgo.Plugin{Name: "hello", Version: "0.1.0", Run: run})
//	}
//
//	func run(jc *lkgo.JobContext) int {
//		jc.Infof("job %s in room %s", jc.Job.ID, jc.Job.RoomName)
//		for ev := range jc.Events() { // closed when the job shuts down
//			if p, ok := ev.(lkgo.ParticipantJoined); ok {
//				jc.Infof("%s joined", p.Participant.Identity)
//			}
//		}
//		return 0
//	}
//
//	func main() {} // required by -buildmode=c-shared, never run
//
// Build it with `go build -buildmode=c-shared -o libhello.so .` and run it
// with `lk-go job run-script ./libhello.so --room test`, or serve it with
// `lk-go worker ./libhello.so`.
//
// # The module
//
// The module path is lkgo.example/lkgo. It is not published to a module
// proxy: it lives in the lk-go repository (plugin-api/go) and compiles
// against the C header beside it (plugin-api/include/lk_plugin.h), so a
// plugin's go.mod points at a checkout:
//
//	require lkgo.example/lkgo v0.0.0
//	replace lkgo.example/lkgo => ../lk-go/plugin-api/go
//
// It needs cgo (CGO_ENABLED=1 and a C compiler) and Go 1.22 or newer. It
// speaks plugin ABI 1.4: an older lk-go refuses it.
//
// # Lifecycle
//
// Run is called once per process, on a host thread. JobContext.Ctx is
// cancelled when shutdown begins (a signal to lk-go, the room ending, the
// server's termination, Shutdown, …) and Run should then return. lk-go
// meanwhile leaves the room, closes the tracks, runs the OnShutdown hooks
// (exactly once each, newest first) and then waits for Run up to its
// grace period (--shutdown-grace; exit 75 when Run is later). Every blocking call
// (Events, Data, AudioStream.Read, AudioSource.Capture) returns within
// ~100 ms of shutdown beginning. One lk-go process runs one job, so a
// library holds one Go runtime and sees one Run.
//
// # Memory and threads
//
// Everything the host hands out (event strings, PCM, payloads) is copied
// into Go memory; the host keeps no Go pointer after a call returns (cgo's
// pointer rules hold; lk-go's tests run a plugin built with
// GOEXPERIMENT=cgocheck2). Every method may be called from any goroutine.
// Run and hooks are called on host threads and run on goroutines of
// their own, so a runtime.Goexit in them ends only that function.
//
// # Panics, signals, output
//
// A panic in Run, in an OnShutdown hook or in a goroutine started with
// JobContext.Go is recovered and logged as one ERROR line; the job then
// exits 70 (LK_RUN_PANICKED) — except for hooks, whose panic ends only
// that hook. A panic on a goroutine started with a plain go statement
// cannot be recovered by anyone and ends the whole process, lk-go
// included: use JobContext.Go. The package keeps the Go runtime from
// killing lk-go when a write to a closed stdout fails (it gets EPIPE),
// and leaves SIGINT, SIGTERM and SIGHUP to lk-go. Never call signal.Notify
// for them (lk-go would stop seeing them), signal.Ignore, os.Exit or
// log.Fatal (the process is lk-go's), nor use a library that does.
//
// A -race c-shared build cannot be loaded into lk-go (ThreadSanitizer
// cannot map its shadow memory in a non-Go process): race-test a plugin's
// logic with go test -race.
package lkgo
