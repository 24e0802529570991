package lkgo

// RPC (ABI 1.4): methods other participants call on the job
// (RegisterRPC; handlers run on goroutines, at most RPCConcurrency at
// once, fed by one dispatcher goroutine that pulls invocations from the
// host), and calls the job makes (PerformRPC). Names follow the official
// SDKs (registerRpcMethod, performRpc, RpcError, RpcInvocationData). Must
// not touch: streams (stream.go), though lk-go carries large RPC payloads
// as streams itself.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// LiveKit's built-in RPC error codes (the same in every official SDK;
// LK_RPC_* in lk_plugin.h). Codes 1001-1999 are reserved for them;
// applications use their own outside that range.
const (
	RPCApplicationError        = 1500 // the handler failed
	RPCConnectionTimeout       = 1501 // no ack within 7 s
	RPCResponseTimeout         = 1502 // no response within the response timeout
	RPCRecipientDisconnected   = 1503 // the callee left during the call
	RPCResponsePayloadTooLarge = 1504
	RPCSendFailed              = 1505
	RPCUnsupportedMethod       = 1400 // no such method registered at the callee
	RPCRecipientNotFound       = 1401
	RPCRequestPayloadTooLarge  = 1402
	RPCUnsupportedServer       = 1403
	RPCUnsupportedVersion      = 1404
)

// RPCConcurrency is how many RPC handlers run at once. Invocations beyond
// it wait in lk-go (up to 1024, each within its caller's response
// timeout: the host answers 1502 for one that waits longer), so a slow
// handler holds up neither the room nor, up to this many, the other
// methods.
const RPCConcurrency = 32

// RPCInvocation is one call of a registered method, copied into Go memory.
type RPCInvocation struct {
	// RequestID is the caller's id for the call.
	RequestID string
	// CallerIdentity is the calling participant.
	CallerIdentity string
	Method         string
	// Payload is the caller's payload (UTF-8, up to 15 KiB for an SDK
	// speaking RPC v1, larger over v2).
	Payload string
	// ResponseTimeout is how long the caller waits for the answer.
	ResponseTimeout time.Duration
	// Deadline is when the caller gives up (with 1502); an answer after it
	// is not sent. Zero if the host gave none.
	Deadline time.Time
}

// RPCError is LiveKit's RPC error: what a handler returns to fail a call
// with a code of its own, and what PerformRPC returns when the call ended
// in an error (the callee's, or a built-in one such as RPCResponseTimeout).
// Test with errors.As.
type RPCError struct {
	// Code: RPCApplicationError, ... or the application's own (> 0).
	Code int
	// Message is sent cut to 256 bytes.
	Message string
	// Data (may be empty) is sent cut to 15 360 bytes.
	Data string
}

func (e *RPCError) Error() string {
	if e.Data != "" {
		return fmt.Sprintf("lkgo: RPC error %d: %s (%s)", e.Code, e.Message, e.Data)
	}
	return fmt.Sprintf("lkgo: RPC error %d: %s", e.Code, e.Message)
}

// RPCHandler answers one invocation: the string it returns is the
// response. An *RPCError it returns (errors.As) goes to the caller as
// that error; any other error, and a panic, become RPCApplicationError
// ("Application error in method handler", as the official SDKs answer an
// exception) and are logged. ctx is cancelled at inv.Deadline (the caller
// gave up) and when the job shuts down.
type RPCHandler func(ctx context.Context, inv RPCInvocation) (string, error)

// rpcCall is an invocation as the host handed it out: the Go copy and the
// host's own record (token), which the answer must be given.
type rpcCall struct {
	inv   RPCInvocation
	token any
}

// rpcOutcome is perform_rpc's result, copied.
type rpcOutcome struct {
	code          int32
	payload, data string
}

type rpcState struct {
	once     sync.Once
	mu       sync.Mutex
	handlers map[string]RPCHandler
}

func (jc *JobContext) rpcHandler(method string) RPCHandler {
	jc.rpc.mu.Lock()
	defer jc.rpc.mu.Unlock()
	return jc.rpc.handlers[method]
}

// RegisterRPC makes handler answer other participants' performRpc calls
// of method (1 to 256 bytes): registering a method again replaces its
// handler. Handlers run on goroutines of their own, at most RPCConcurrency
// at once; calls of methods nobody registered are answered 1400 by lk-go.
// Any goroutine. Errors: ErrInvalid (method), ErrTooLarge (over 16 384
// methods), ErrHostTooOld.
func (jc *JobContext) RegisterRPC(method string, handler RPCHandler) error {
	if !jc.h.hasStreams() {
		return ErrHostTooOld
	}
	if handler == nil {
		return jc.invalid("RegisterRPC", "a nil handler for "+method)
	}
	jc.rpc.once.Do(func() { go jc.dispatchRPC() })
	// The handler goes in first: a call arriving right after the host
	// registered the method finds it.
	jc.rpc.mu.Lock()
	if jc.rpc.handlers == nil {
		jc.rpc.handlers = map[string]RPCHandler{}
	}
	previous, had := jc.rpc.handlers[method]
	jc.rpc.handlers[method] = handler
	jc.rpc.mu.Unlock()
	err := jc.check(jc.h.rpcRegister(method))
	if err != nil {
		jc.rpc.mu.Lock()
		if had {
			jc.rpc.handlers[method] = previous
		} else {
			delete(jc.rpc.handlers, method)
		}
		jc.rpc.mu.Unlock()
	}
	return err
}

// UnregisterRPC removes method: later calls of it are answered 1400. A
// handler already running finishes. Any goroutine. Errors: ErrInvalid,
// ErrHostTooOld.
func (jc *JobContext) UnregisterRPC(method string) error {
	if !jc.h.hasStreams() {
		return ErrHostTooOld
	}
	jc.rpc.mu.Lock()
	delete(jc.rpc.handlers, method)
	jc.rpc.mu.Unlock()
	return jc.check(jc.h.rpcUnregister(method))
}

// dispatchRPC pulls invocations from the host while a handler slot is
// free, so that what waits, waits in the host, whose limits and 1502s
// apply; it runs until shutdown or until Run returned.
func (jc *JobContext) dispatchRPC() {
	defer jc.recoverAs("lkgo RPC dispatcher")
	slots := make(chan struct{}, RPCConcurrency)
	for {
		select {
		case slots <- struct{}{}:
		case <-jc.done:
			return
		}
		call, rc := jc.h.nextRPC(pumpWaitMs)
		switch rc {
		case codeOK:
			handler := jc.rpcHandler(call.inv.Method)
			if handler == nil {
				// Unregistered between the request and now.
				jc.respondRPC(call, RPCUnsupportedMethod, "Method not supported at destination", "")
				<-slots
				continue
			}
			go func() {
				defer func() { <-slots }()
				defer jc.recoverAs("lkgo RPC handler goroutine")
				jc.answerRPC(call, handler)
			}()
		case codeTimeout:
			<-slots
			select {
			case <-jc.done:
				return
			default:
			}
		case codeShuttingDown:
			jc.sawShutdown()
			return
		default:
			jc.h.log(logError, fmt.Sprintf("lkgo: next_rpc returned %d; RPC calls are no longer answered", rc))
			return
		}
	}
}

func (jc *JobContext) answerRPC(in rpcCall, handler RPCHandler) {
	inv := in.inv
	ctx, cancel := context.WithCancel(jc.Ctx)
	if !inv.Deadline.IsZero() {
		ctx, cancel = context.WithDeadline(jc.Ctx, inv.Deadline)
	}
	defer cancel()
	var payload string
	var err error
	// On a goroutine of its own: a panic or runtime.Goexit in the handler
	// ends only it, and the caller still gets an answer.
	if failure, site := call(func() { payload, err = handler(ctx, inv) }); failure != nil {
		jc.h.log(logError, "lkgo: RPC handler for "+inv.Method+" panicked: "+describe(failure)+site)
		jc.respondRPC(in, RPCApplicationError, "Application error in method handler", "")
		return
	}
	if err == nil {
		jc.respondRPC(in, 0, payload, "")
		return
	}
	var re *RPCError
	if errors.As(err, &re) && re.Code > 0 && re.Code <= math.MaxInt32 {
		jc.respondRPC(in, int32(re.Code), re.Message, re.Data)
		return
	}
	jc.h.log(logWarn, fmt.Sprintf("lkgo: RPC handler for %s from %s failed: %v; answering %d",
		inv.Method, inv.CallerIdentity, err, RPCApplicationError))
	jc.respondRPC(in, RPCApplicationError, "Application error in method handler", "")
}

func (jc *JobContext) respondRPC(call rpcCall, code int32, payload, data string) {
	rc := jc.h.rpcRespond(call.token, code, payload, data)
	switch rc {
	case codeOK:
	case codeShuttingDown:
		jc.sawShutdown()
	case codeTimeout:
		jc.h.log(logDebug, fmt.Sprintf("lkgo: RPC %s from %s answered after its deadline; not sent",
			call.inv.Method, call.inv.CallerIdentity))
	default:
		jc.h.log(logWarn, fmt.Sprintf("lkgo: RPC %s from %s: the answer was not sent (%v)",
			call.inv.Method, call.inv.CallerIdentity, codeErr(rc)))
	}
}

// PerformRPC calls method on the participant destination with payload
// (UTF-8) and returns the response. The callee must acknowledge within
// 7 s (else RPCConnectionTimeout) and answer within responseTimeout
// (0 means 15 s; else RPCResponseTimeout). Errors: *RPCError (errors.As)
// for a call that ended in an RPC error, the callee's or a built-in one
// (RPCRecipientDisconnected when it left, RPCUnsupportedMethod, ...);
// ErrShuttingDown (the call is abandoned), ErrNotConnected, ErrInvalid
// (an empty method or destination), ErrHostTooOld; ctx's error when ctx is
// done first (the call then goes on in lk-go and its answer is dropped).
// Any goroutine; calls run concurrently.
func (jc *JobContext) PerformRPC(ctx context.Context, destination, method, payload string, responseTimeout time.Duration) (string, error) {
	if !jc.h.hasStreams() {
		return "", ErrHostTooOld
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var ms uint32
	if responseTimeout > 0 {
		ms = max(millis(responseTimeout, responseTimeout), 1)
	}
	type answer struct {
		r  rpcOutcome
		rc int32
	}
	var a answer
	if ctx.Done() == nil {
		a.r, a.rc = jc.h.performRPC(destination, method, payload, ms)
	} else {
		done := make(chan answer, 1)
		go func() {
			defer jc.recoverAs("lkgo PerformRPC")
			r, rc := jc.h.performRPC(destination, method, payload, ms)
			done <- answer{r, rc}
		}()
		select {
		case a = <-done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if err := jc.check(a.rc); err != nil {
		return "", err
	}
	if a.r.code != 0 {
		return "", &RPCError{Code: int(a.r.code), Message: a.r.payload, Data: a.r.data}
	}
	return a.r.payload, nil
}
