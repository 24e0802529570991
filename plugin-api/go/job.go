package lkgo

// The job lifecycle as Go sees it: registration, run, the JobContext, its
// Ctx, Shutdown and OnShutdown, logging and panic reporting. Owns the
// Go-side state of one job. Must not touch: cgo (every host call goes
// through the host interface, so the tests can use a fake host).

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
)

// host is everything the package needs from lk-go, one method per
// lk_host_api function (cgo_host.go has the real one; the tests a fake).
// Every method may be called from any goroutine.
type host interface {
	abi() (major, minor uint16)
	hasMedia() bool
	describeJob() Job
	shutdown(reason string)
	isShuttingDown() bool
	onShutdown(hook func(ShutdownInfo))
	nextEvent(timeoutMs uint32) (rawEvent, int32, uint64)
	log(level int32, msg string)

	audioStreamOpen(trackSID string, f AudioFormat) (any, int32)
	audioStreamRead(s any, pcm []int16, timeoutMs uint32) (frameInfo, int32)
	audioStreamClose(s any)
	audioSourcePublish(name string, f AudioFormat) (any, string, int32)
	audioSourceCapture(s any, pcm []int16, samplesPerChannel int, timeoutMs uint32) int32
	audioSourceClear(s any) uint32
	audioSourceQueuedMs(s any) uint32
	audioSourceClose(s any)
	publishData(payload []byte, topic string, to []string, flags, timeoutMs uint32) int32
	nextData(timeoutMs uint32) (DataPacket, int32, uint64)
	setAttributes(keys, values []string, timeoutMs uint32) int32
	setMetadata(md string, timeoutMs uint32) int32
}

// Plugin describes a plugin to the host. Pass it to Register.
type Plugin struct {
	// Name and Version identify the plugin in lk-go's logs
	// (e.g. "go-echo", "0.1.0").
	Name, Version string
	// Run runs one job and returns the process's exit code (0-255; lk-go
	// documents how a signal or a server failure overrides it). It is
	// called once, on a thread of its own; it should return promptly once
	// jc.Ctx is done. A panic in Run is recovered and reported: the job
	// exits 70 (LK_RUN_PANICKED).
	Run func(jc *JobContext) int
}

var registration struct {
	mu     sync.Mutex
	plugin *Plugin
	err    error
}

// Register makes p the plugin this library provides. Call it exactly once,
// from an init function of package main: a c-shared library's main never
// runs. A missing or second call, an empty Name or a nil Run makes lk-go
// refuse the library at load time, with this package's reason on stderr
// (lk-go exit code 80: invalid plugin). Register never panics: a panic in
// init would kill the host while it loads the plugin.
func Register(p Plugin) {
	registration.mu.Lock()
	defer registration.mu.Unlock()
	switch {
	case registration.plugin != nil || registration.err != nil:
		registration.err = errors.New("Register was called more than once; call it once, from one init function")
	case p.Name == "" || p.Run == nil:
		registration.err = errors.New("Register needs a Plugin with a Name and a Run function")
	default:
		if p.Version == "" {
			p.Version = "0.0.0"
		}
		registration.plugin = &p
		setDescriptor(p.Name, p.Version)
	}
}

func registrationError() error {
	registration.mu.Lock()
	defer registration.mu.Unlock()
	if registration.err != nil {
		return registration.err
	}
	if registration.plugin == nil {
		return errors.New("the plugin never called lkgo.Register; call it from an init function of package main")
	}
	return nil
}

func registeredRun() func(*JobContext) int {
	registration.mu.Lock()
	defer registration.mu.Unlock()
	if registration.plugin == nil {
		return nil
	}
	return registration.plugin.Run
}

// Job is what the job was given, copied into Go strings.
type Job struct {
	// ID is the job id (LiveKit's AJ_… for dispatched jobs).
	ID string
	// RoomName is the room the job joined.
	RoomName string
	// Metadata is the job metadata (a dispatch's metadata, or
	// `lk-go job run-script --metadata`); may be empty.
	Metadata string
	// Identity is the participant identity the job joined the room as.
	Identity string
}

// ShutdownInfo says why and when the job shut down.
type ShutdownInfo struct {
	// Code is the LK_SHUTDOWN_* value from lk_plugin.h.
	Code uint32
	// Reason is the same value as a stable snake_case string, e.g.
	// "signal_sigterm", "room_disconnected", "requested_by_plugin".
	Reason string
	// Detail says more; free text, may be empty.
	Detail string
	// UnixMs is when shutdown began, in milliseconds since the Unix epoch.
	UnixMs int64
}

// ErrJobShutdown is the cause (context.Cause) of a JobContext's Ctx once
// shutdown began. The reason arrives in OnShutdown hooks.
var ErrJobShutdown = errors.New("lkgo: the job is shutting down")

// JobContext is the plugin's handle on its job. All methods may be called
// from any goroutine, at any time, also after Run returned (they then
// answer as after shutdown).
type JobContext struct {
	// Job is what the job was given.
	Job Job
	// Ctx is cancelled when shutdown begins, or when Run returns. Its
	// cause is ErrJobShutdown. Pass it to anything that should stop with
	// the job. (The event pump learns of shutdown from the host at once;
	// lk_plugin.h bounds it at ~100 ms.)
	Ctx context.Context

	h      host
	cancel context.CancelCauseFunc
	// done is closed when Run returned (or panicked).
	done     chan struct{}
	panicked atomic.Bool

	events   chan Event
	dataOnce sync.Once
	data     chan DataEvent
}

func newJobContext(h host) *JobContext {
	ctx, cancel := context.WithCancelCause(context.Background())
	jc := &JobContext{Job: h.describeJob(), Ctx: ctx, h: h, cancel: cancel, done: make(chan struct{}),
		events: make(chan Event, eventBuffer)}
	go jc.pumpEvents()
	return jc
}

// runJob is the whole life of one job on the Go side.
func runJob(h host, run func(*JobContext) int) (code int32) {
	jc := newJobContext(h)
	defer func() {
		close(jc.done)
		jc.cancel(ErrJobShutdown)
	}()
	if run == nil {
		h.log(logError, "lkgo: no run function registered")
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			// The host records plugin_panicked when run returns this.
			jc.reportPanic("run", r, false)
			code = runPanicked
		}
	}()
	c := run(jc)
	if jc.panicked.Load() {
		return runPanicked
	}
	return int32(c)
}

// sawShutdown is called by every SDK call that got LK_SHUTTING_DOWN.
func (jc *JobContext) sawShutdown() { jc.cancel(ErrJobShutdown) }

// Shutdown asks the host to end the job; idempotent, any goroutine. The
// first reason wins (free text, may be empty; the host keeps 1024 bytes).
// Ctx is cancelled before Shutdown returns; Run should then return.
func (jc *JobContext) Shutdown(reason string) {
	jc.h.shutdown(reason)
	jc.sawShutdown()
}

// IsShuttingDown reports whether shutdown has begun.
func (jc *JobContext) IsShuttingDown() bool {
	if jc.Ctx.Err() != nil {
		return true
	}
	if jc.h.isShuttingDown() {
		jc.sawShutdown()
		return true
	}
	return false
}

// OnShutdown registers hook to run exactly once, with the shutdown info,
// on a host thread: after the job left the room and closed its tracks,
// newest hook first, one at a time, within lk-go's hook budget
// (--hook-budget; a hook the budget leaves no time for is not run). If
// shutdown already began, hook runs at once, before OnShutdown returns.
// A panic in hook is recovered and logged as one ERROR line.
func (jc *JobContext) OnShutdown(hook func(info ShutdownInfo)) {
	var once sync.Once
	jc.h.onShutdown(func(info ShutdownInfo) {
		once.Do(func() {
			defer jc.recoverHook()
			hook(info)
		})
	})
}

// Go runs f on a new goroutine that reports a panic instead of killing the
// host process: the panic is logged (one ERROR line), the job shuts down
// and Run's result becomes LK_RUN_PANICKED (exit 70). Use it for every
// goroutine of a plugin: a panic on a plain goroutine ends the whole
// process, lk-go included, with no cascade.
func (jc *JobContext) Go(f func()) {
	go func() {
		defer func() {
			if r := recover(); r != nil {
				jc.reportPanic("goroutine", r, true)
			}
		}()
		f()
	}()
}

// reportPanic logs one line, makes Run's result LK_RUN_PANICKED and, for
// a panic outside Run, shuts the job down.
func (jc *JobContext) reportPanic(where string, r any, shutdown bool) {
	jc.panicked.Store(true)
	msg := fmt.Sprintf("lkgo: %s panicked: %v%s", where, r, panicSite())
	jc.h.log(logError, msg)
	if shutdown {
		jc.Shutdown(msg)
	}
}

func (jc *JobContext) recoverHook() {
	if r := recover(); r != nil {
		jc.h.log(logError, fmt.Sprintf("lkgo: shutdown hook panicked: %v%s", r, panicSite()))
	}
}

// recoverSDK keeps a fault in one of this package's own goroutines from
// killing the host; the job then ends as panicked.
func (jc *JobContext) recoverSDK(what string) {
	if r := recover(); r != nil {
		jc.reportPanic("lkgo "+what, r, true)
	}
}

// panicSite is " (at file:line in func)" for the frame that panicked, read
// from inside a deferred recover; "" when it cannot be found.
func panicSite() string {
	pcs := make([]uintptr, 32)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	afterPanic := false
	for {
		f, more := frames.Next()
		if afterPanic && !strings.HasPrefix(f.Function, "runtime.") {
			file := f.File
			if i := strings.LastIndexByte(file, '/'); i >= 0 {
				file = file[i+1:]
			}
			return fmt.Sprintf(" (at %s:%d in %s)", file, f.Line, f.Function)
		}
		if f.Function == "runtime.gopanic" {
			afterPanic = true
		}
		if !more {
			return ""
		}
	}
}

// Level is a log level of lk-go's log.
type Level int32

// Log levels, as in lk_plugin.h.
const (
	LevelError Level = Level(logError)
	LevelWarn  Level = Level(logWarn)
	LevelInfo  Level = Level(logInfo)
	LevelDebug Level = Level(logDebug)
)

// Log writes msg to lk-go's log at level, as one line (target "plugin").
// Prefer it to printing: lk-go's log carries the job and respects
// --log-format json.
func (jc *JobContext) Log(level Level, msg string) { jc.h.log(int32(level), msg) }

// Infof logs at LevelInfo, formatting as fmt.Sprintf.
func (jc *JobContext) Infof(format string, args ...any) {
	jc.h.log(logInfo, fmt.Sprintf(format, args...))
}

// Warnf logs at LevelWarn, formatting as fmt.Sprintf.
func (jc *JobContext) Warnf(format string, args ...any) {
	jc.h.log(logWarn, fmt.Sprintf(format, args...))
}

// Errorf logs at LevelError, formatting as fmt.Sprintf.
func (jc *JobContext) Errorf(format string, args ...any) {
	jc.h.log(logError, fmt.Sprintf(format, args...))
}

// Debugf logs at LevelDebug, formatting as fmt.Sprintf.
func (jc *JobContext) Debugf(format string, args ...any) {
	jc.h.log(logDebug, fmt.Sprintf(format, args...))
}

// HostABI is the lk-go plugin ABI version of the running host.
func (jc *JobContext) HostABI() (major, minor uint16) { return jc.h.abi() }
