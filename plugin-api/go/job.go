package lkgo

// The job lifecycle as Go sees it: registration, run, the JobContext, its
// Ctx, Shutdown and OnShutdown, logging and panic reporting. Owns the
// Go-side state of one job. Must not touch: cgo (every host call goes
// through the host interface, so the tests can use a fake host).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
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

	// ABI 1.4. Reader and writer handles are opaque (any), as audio
	// handles are.
	hasStreams() bool
	jobAttributes() map[string]string
	setCloseOnParticipantLeft(close bool)
	audioSourceWaitSubscribed(s any, timeoutMs uint32) int32
	streamAcceptTopic(topic string) int32
	nextStream(timeoutMs uint32) (any, int32, uint64)
	streamReaderInfo(r any) (StreamInfo, int32)
	streamRead(r any, buf []byte, timeoutMs uint32) (int, int32)
	streamReaderError(r any) string
	streamReaderClose(r any)
	streamOpen(o streamOpen, timeoutMs uint32) (any, string, int32)
	streamWrite(w any, data []byte, timeoutMs uint32) int32
	streamClose(w any, reason string, keys, values []string, timeoutMs uint32) int32
	rpcRegister(method string) int32
	rpcUnregister(method string) int32
	nextRPC(timeoutMs uint32) (rpcCall, int32)
	rpcRespond(token any, code int32, payload, data string) int32
	performRPC(destination, method, payload string, timeoutMs uint32) (rpcOutcome, int32)
	publishTranscription(t Transcription, timeoutMs uint32) int32
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
// runs. A missing or second call, a nil Run, or a Name or Version that is
// empty (Version may be: it becomes "0.0.0"), over 256 bytes or holds a
// control character makes lk-go refuse the library at load time (exit
// 84, invalid descriptor), with this package's reason on stderr. Register
// never panics: a panic in init would kill the host while it loads the
// plugin.
func Register(p Plugin) {
	registration.mu.Lock()
	defer registration.mu.Unlock()
	switch {
	case registration.plugin != nil || registration.err != nil:
		registration.err = errors.New("Register was called more than once; call it once, from one init function")
	case p.Name == "" || p.Run == nil:
		registration.err = errors.New("Register needs a Plugin with a Name and a Run function")
	case !descriptorString(p.Name):
		registration.err = fmt.Errorf("Register: the Name %.40q (%d bytes) must be at most 256 bytes of UTF-8 without control characters", p.Name, len(p.Name))
	case !descriptorString(p.Version):
		registration.err = fmt.Errorf("Register: the Version %.40q (%d bytes) must be at most 256 bytes of UTF-8 without control characters", p.Version, len(p.Version))
	default:
		if p.Version == "" {
			p.Version = "0.0.0"
		}
		registration.plugin = &p
		setDescriptor(p.Name, p.Version)
	}
}

// descriptorString is lk-go's rule for a descriptor's name and version.
func descriptorString(s string) bool {
	if len(s) > 256 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
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
	// ParticipantIdentity is the participant a participant or publisher
	// job is for (the dispatch's Job.participant, or lk-go's
	// --participant-identity); empty for a room job and on a host older
	// than ABI 1.4. It is someone else's identity, not Identity. When that
	// participant leaves, the job ends with ShutdownParticipantLeft unless
	// JobContext.SetCloseOnParticipantLeft(false) was called.
	ParticipantIdentity string
	// AgentName is the agent name the job was dispatched to; empty for
	// automatic dispatch, for `lk-go job run-script` and on a host older
	// than ABI 1.4. The dispatch's attributes are JobContext.JobAttributes.
	AgentName string
}

// ShutdownCode is why a job shut down (LK_SHUTDOWN_* in lk_plugin.h).
type ShutdownCode uint32

// Shutdown codes; ShutdownInfo.Reason carries the same as a string.
const (
	ShutdownRequestedByPlugin ShutdownCode = 1  // "requested_by_plugin": Shutdown was called
	ShutdownPluginReturned    ShutdownCode = 2  // "plugin_returned": Run returned
	ShutdownPluginPanicked    ShutdownCode = 3  // "plugin_panicked"
	ShutdownRoomDisconnected  ShutdownCode = 4  // "room_disconnected": the room ended or the server removed the job
	ShutdownServerUnreachable ShutdownCode = 5  // "server_unreachable"
	ShutdownSignalSIGINT      ShutdownCode = 6  // "signal_sigint"
	ShutdownSignalSIGTERM     ShutdownCode = 7  // "signal_sigterm"
	ShutdownDeadlineExceeded  ShutdownCode = 8  // "deadline_exceeded": --max-duration
	ShutdownSignalSIGHUP      ShutdownCode = 9  // "signal_sighup"
	ShutdownDuplicateIdentity ShutdownCode = 10 // "duplicate_identity": another participant joined as this identity
	ShutdownMediaFailed       ShutdownCode = 11 // "media_failed"
	ShutdownServerError       ShutdownCode = 12 // "server_error"
	// ABI 1.4. The plugin's own exit code is the outcome of the first two.
	ShutdownParticipantLeft ShutdownCode = 13 // "participant_left": Job.ParticipantIdentity left the room
	ShutdownJobTerminated   ShutdownCode = 14 // "job_terminated": the server ended the job (DeleteDispatch)
	ShutdownWorkerStopping  ShutdownCode = 15 // "worker_stopping": the worker's drain ran out, or it was told to stop at once
	ShutdownWorkerLost      ShutdownCode = 16 // "worker_lost": the worker that started the job went away
	ShutdownMemoryLimit     ShutdownCode = 17 // "memory_limit": over the worker's --job-memory-limit
)

// ShutdownInfo says why and when the job shut down.
type ShutdownInfo struct {
	// Code is the reason as a number.
	Code ShutdownCode
	// Reason is the same value as a stable snake_case string, e.g.
	// "signal_sigterm", "room_disconnected", "requested_by_plugin".
	Reason string
	// Detail says more; free text, may be empty.
	Detail string
	// UnixMs is when shutdown began, in milliseconds since the Unix epoch.
	UnixMs int64
}

// JobContext is the plugin's handle on its job. All methods may be called
// from any goroutine, at any time, also after Run returned (they then
// answer as after shutdown).
type JobContext struct {
	// Job is what the job was given.
	Job Job
	// Ctx is cancelled when shutdown begins, or when Run returns. Its
	// cause is ErrShuttingDown. Pass it to anything that should stop with
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

	// attributes is the dispatch's (ABI 1.4), copied at the start.
	attributes  map[string]string
	streamsOnce sync.Once
	streams     chan StreamEvent
	rpc         rpcState
}

func newJobContext(h host) *JobContext {
	ctx, cancel := context.WithCancelCause(context.Background())
	jc := &JobContext{Job: h.describeJob(), Ctx: ctx, h: h, cancel: cancel, done: make(chan struct{}),
		events: make(chan Event, eventBuffer), attributes: h.jobAttributes()}
	go jc.pumpEvents()
	return jc
}

// runJob is the whole life of one job on the Go side.
func runJob(h host, run func(*JobContext) int) (code int32) {
	jc := newJobContext(h)
	defer func() {
		close(jc.done)
		jc.cancel(ErrShuttingDown)
	}()
	if run == nil {
		h.log(logError, "lkgo: no run function registered")
		return 1
	}
	var c int
	if failure, site := call(func() { c = run(jc) }); failure != nil {
		// The host records plugin_panicked when run returns this.
		jc.reportPanic("run", failure, site, false)
		return runPanicked
	}
	if jc.panicked.Load() {
		return runPanicked
	}
	// A Go int is 64 bits: 1<<32 must not wrap to 0 (a success). Clamped,
	// it stays outside 0-255, which lk-go reports as such.
	return int32(max(math.MinInt32, min(c, math.MaxInt32)))
}

// describe formats a panic value on a goroutine of its own: it may be
// called on a host thread, where an Error or String method that calls
// runtime.Goexit would be fatal to the process (fmt already turns a
// panicking method into text).
func describe(r any) string {
	out := make(chan string, 1)
	go func() {
		defer close(out)
		out <- fmt.Sprint(r)
	}()
	if msg, ok := <-out; ok {
		return msg
	}
	return fmt.Sprintf("a %T whose Error or String method called runtime.Goexit", r)
}

// errGoexit is what call reports when f called runtime.Goexit.
var errGoexit = errors.New("runtime.Goexit was called (it ends a goroutine, not a job: return instead)")

// call runs f on a goroutine of its own and waits for it. Run and hooks
// are called on host threads, where a runtime.Goexit would be fatal to
// the whole process and a panic must not unwind into C; on a goroutine
// both just end f. It returns what f panicked with (errGoexit for a
// Goexit) and where, or nil when f returned.
func call(f func()) (failure any, site string) {
	type outcome struct {
		failure any
		site    string
	}
	done := make(chan outcome, 1)
	go func() {
		returned := false
		defer func() {
			if returned {
				done <- outcome{}
				return
			}
			if r := recover(); r != nil {
				done <- outcome{r, panicSite()}
				return
			}
			done <- outcome{errGoexit, ""}
		}()
		f()
		returned = true
	}()
	o := <-done
	return o.failure, o.site
}

// sawShutdown is called by every SDK call that got LK_SHUTTING_DOWN.
func (jc *JobContext) sawShutdown() { jc.cancel(ErrShuttingDown) }

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
// A panic (or runtime.Goexit) in hook ends that hook only: it is logged
// as one ERROR line and the exit code does not change (lk_plugin.h gives a
// hook no result to report; the Rust SDK's hooks behave the same).
func (jc *JobContext) OnShutdown(hook func(info ShutdownInfo)) {
	var once sync.Once
	jc.h.onShutdown(func(info ShutdownInfo) {
		once.Do(func() {
			if failure, site := call(func() { hook(info) }); failure != nil {
				jc.h.log(logError, "lkgo: shutdown hook panicked: "+describe(failure)+site)
			}
		})
	})
}

// Go runs f on a new goroutine that reports a panic instead of killing the
// host process: the panic is logged (one ERROR line), the job shuts down
// and Run's result becomes LK_RUN_PANICKED (exit 70). Use it for every
// goroutine of a plugin: a panic on a plain goroutine ends the whole
// process, lk-go included, with no cascade. A panic after Run returned is
// logged, but Run's result has already gone to lk-go and stays.
func (jc *JobContext) Go(f func()) {
	go func() {
		defer jc.recoverAs("goroutine")
		f()
	}()
}

// reportPanic logs one line, makes Run's result LK_RUN_PANICKED and, for
// a panic outside Run, shuts the job down. site is panicSite's answer.
func (jc *JobContext) reportPanic(where string, r any, site string, shutdown bool) {
	jc.panicked.Store(true)
	msg := "lkgo: " + where + " panicked: " + describe(r) + site
	jc.h.log(logError, msg)
	if shutdown {
		jc.Shutdown(msg)
	}
}

// recoverAs, deferred at the top of a goroutine (the plugin's, started by
// Go, or one of this package's own, named "lkgo …"), keeps its panic from
// killing the host: the panic is reported as where's and the job ends as
// panicked.
func (jc *JobContext) recoverAs(where string) {
	if r := recover(); r != nil {
		jc.reportPanic(where, r, panicSite(), true)
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

// Level is a level of lk-go's log (LK_LOG_* in lk_plugin.h).
type Level int32

// Log levels; lk-go shows INFO and above unless LK_GO_LOG says otherwise.
const (
	LevelError Level = 1
	LevelWarn  Level = 2
	LevelInfo  Level = 3
	LevelDebug Level = 4
	LevelTrace Level = 5
)

const (
	logError = int32(LevelError)
	logWarn  = int32(LevelWarn)
	logInfo  = int32(LevelInfo)
	logDebug = int32(LevelDebug)
)

// Log writes msg to lk-go's log at level, as one line (target "plugin";
// line breaks and control characters become spaces, 64 KiB at most). A
// level outside LevelError..LevelTrace is logged at TRACE. Prefer it to
// printing: lk-go's log carries the job and respects --log-format json.
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

// HasStreams reports whether the host has ABI 1.4: the dispatch's
// participant, agent name and attributes, data streams, RPC,
// transcriptions and AudioSource.WaitSubscribed. Without it those calls
// return ErrHostTooOld (lk-go refuses to load this package, which declares
// 1.4, into an older lk-go, so only a foreign host lacks them).
func (jc *JobContext) HasStreams() bool { return jc.h.hasStreams() }

// JobAttributes returns the dispatch's attributes (Job.attributes of
// LiveKit's agent dispatch) as a new map the caller owns; empty (never
// nil) for a job without any and on a host older than ABI 1.4.
func (jc *JobContext) JobAttributes() map[string]string {
	if jc.attributes == nil {
		return map[string]string{}
	}
	return maps.Clone(jc.attributes)
}

// SetCloseOnParticipantLeft says whether the job ends (ShutdownCode
// ShutdownParticipantLeft) when the participant it is for
// (Job.ParticipantIdentity) leaves the room: true, the default, as
// livekit-agents' close_on_disconnect; false keeps it running. Any
// goroutine, any time; a no-op for a room job and on a host older than
// ABI 1.4.
func (jc *JobContext) SetCloseOnParticipantLeft(close bool) {
	if jc.h.hasStreams() {
		jc.h.setCloseOnParticipantLeft(close)
	}
}
