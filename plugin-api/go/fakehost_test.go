package lkgo

// fakeHost keeps lk_plugin.h's contract in Go, so that the SDK's own logic
// runs under `go test -race` without lk-go: shutdown is idempotent (the
// first reason wins), hooks registered before shutdown run once from the
// cascade (newest first), hooks registered after run at once on the
// caller, waiting calls return within ~1 ms of shutdown, and next_event /
// next_data hand out what is queued before they say LK_SHUTTING_DOWN.
// ABI 1.4 as lk-go keeps it: streams are pulled (next_stream) and read in
// pieces that never split a character of a text stream, writers refuse
// invalid UTF-8 in text, RPC calls of unregistered methods are answered
// 1400 by the host itself, and an invocation is answered at most once.

import (
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// fakeReader is an incoming stream: content arrives by feed.
type fakeReader struct {
	info     StreamInfo
	unread   []byte
	complete bool
	abort    string
	closed   bool
	trailer  map[string]string
}

// fakeWriter is an outgoing stream as the host saw it.
type fakeWriter struct {
	open    streamOpen
	id      string
	chunks  [][]byte
	closed  bool
	reason  string
	trailer map[string]string
}

// fakeCall is an invocation the host handed out.
type fakeCall struct {
	inv      RPCInvocation
	answered bool
}

// fakeAnswer is what rpc_respond (or the host itself) answered.
type fakeAnswer struct {
	code          int32
	payload, data string
}

type fakeStream struct {
	frames [][]int16 // left to deliver; then LK_ENDED
	closed bool
}

type fakeSource struct {
	captured [][]int16
	closed   bool
	// full makes capture time out this many times first.
	full int
	// cleared makes the next capture return LK_CLEARED.
	cleared bool
	// subscribed: the track has a subscriber (wait_subscribed returns).
	subscribed bool
}

type fakeHost struct {
	mu   sync.Mutex
	cond *sync.Cond

	shuttingDown bool
	reason       string
	shutdownAt   time.Time
	hooks        []func(ShutdownInfo)
	hooksRan     bool
	// hookTwice makes the cascade call every hook twice (a faulty host).
	hookTwice bool

	events      []rawEvent
	missedAfter int // report LK_NEXT_MISSED once after this many events (0: never)
	missedCount uint64
	delivered   int
	nextCalls   int

	data []DataPacket

	streams map[*fakeStream]bool
	sources []*fakeSource

	logs []string
	sent []DataPacket // publish_data: payload, topic, first destination as Sender
	dest [][]string
	attr map[string]string

	// old makes it an ABI 1.3 host (no 1.4 functions).
	old         bool
	closeOnLeft []bool

	accepted      []string
	incoming      []*fakeReader
	streamsMissed uint64
	writers       []*fakeWriter

	registered  map[string]bool
	invocations []*fakeCall
	answers     map[string]fakeAnswer
	// perform answers perform_rpc (nil: the payload comes back); called
	// without the lock.
	perform        func(dest, method, payload string, timeoutMs uint32) (rpcOutcome, int32)
	transcriptions []Transcription
}

func newFakeHost() *fakeHost {
	f := &fakeHost{streams: map[*fakeStream]bool{}, attr: map[string]string{},
		registered: map[string]bool{}, answers: map[string]fakeAnswer{}}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *fakeHost) abi() (uint16, uint16) {
	if f.old {
		return abiMajor, 3
	}
	return abiMajor, abiMinor
}
func (f *fakeHost) hasMedia() bool   { return true }
func (f *fakeHost) hasStreams() bool { return !f.old }
func (f *fakeHost) describeJob() Job {
	j := Job{ID: "AJ_test", RoomName: "room", Metadata: "md", Identity: "agent"}
	if !f.old {
		j.ParticipantIdentity, j.AgentName = "user1", "echo-agent"
	}
	return j
}

func (f *fakeHost) jobAttributes() map[string]string {
	if f.old {
		return map[string]string{}
	}
	return map[string]string{"tier": "gold", "lang": "fr"}
}

func (f *fakeHost) setCloseOnParticipantLeft(close bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closeOnLeft = append(f.closeOnLeft, close)
}

// shutdown begins shutdown (the plugin's request or, from a test, the
// host's own reason such as "signal_sigterm").
func (f *fakeHost) shutdown(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shuttingDown {
		return
	}
	f.shuttingDown, f.reason, f.shutdownAt = true, reason, time.Now()
	f.cond.Broadcast()
}

func (f *fakeHost) isShuttingDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shuttingDown
}

func (f *fakeHost) info() ShutdownInfo {
	return ShutdownInfo{Code: 1, Reason: f.reason, UnixMs: f.shutdownAt.UnixMilli()}
}

func (f *fakeHost) onShutdown(hook func(ShutdownInfo)) {
	f.mu.Lock()
	if f.hooksRan {
		info := f.info()
		f.mu.Unlock()
		hook(info)
		return
	}
	f.hooks = append(f.hooks, hook)
	f.mu.Unlock()
}

// cascade runs the hooks as lk-go does after the job left the room:
// newest first, one at a time, on the calling goroutine.
func (f *fakeHost) cascade() {
	f.mu.Lock()
	if !f.shuttingDown {
		f.shuttingDown, f.reason, f.shutdownAt = true, "plugin_returned", time.Now()
		f.cond.Broadcast()
	}
	hooks := f.hooks
	f.hooks = nil
	f.hooksRan = true
	info := f.info()
	twice := f.hookTwice
	f.mu.Unlock()
	for i := len(hooks) - 1; i >= 0; i-- {
		hooks[i](info)
		if twice {
			hooks[i](info)
		}
	}
}

// wait blocks until ready() or shutdown, at most timeoutMs; f.mu held.
func (f *fakeHost) wait(timeoutMs uint32, ready func() bool) {
	deadline := time.Now().Add(time.Duration(timeoutMs) * time.Millisecond)
	for !ready() && !f.shuttingDown && time.Now().Before(deadline) {
		// sync.Cond has no timed wait: a ticker wakes the waiters.
		t := time.AfterFunc(time.Millisecond, func() {
			f.mu.Lock()
			f.cond.Broadcast()
			f.mu.Unlock()
		})
		f.cond.Wait()
		t.Stop()
	}
}

func (f *fakeHost) push(ev rawEvent) {
	f.mu.Lock()
	f.events = append(f.events, ev)
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *fakeHost) nextEvent(timeoutMs uint32) (rawEvent, int32, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextCalls++
	if f.missedAfter > 0 && f.delivered == f.missedAfter && f.missedCount > 0 {
		n := f.missedCount
		f.missedCount = 0
		return rawEvent{}, nextMissed, n
	}
	f.wait(timeoutMs, func() bool { return len(f.events) > 0 })
	if len(f.events) > 0 {
		ev := f.events[0]
		f.events = f.events[1:]
		f.delivered++
		return ev, nextEvent, 0
	}
	if f.shuttingDown {
		return rawEvent{}, nextShuttingDown, 0
	}
	return rawEvent{}, nextTimeout, 0
}

func (f *fakeHost) log(level int32, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprintf("%d %s", level, msg))
}

func (f *fakeHost) logged(substr string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.logs {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

func (f *fakeHost) audioStreamOpen(sid string, _ AudioFormat) (any, int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shuttingDown {
		return nil, codeShuttingDown
	}
	if sid != "TR_mic" {
		return nil, codeNotFound
	}
	s := &fakeStream{}
	for i := 0; i < 5; i++ {
		frame := make([]int16, 480)
		for j := range frame {
			frame[j] = int16(i)
		}
		s.frames = append(s.frames, frame)
	}
	f.streams[s] = true
	return s, codeOK
}

func (f *fakeHost) audioStreamRead(h any, pcm []int16, timeoutMs uint32) (frameInfo, int32) {
	s := h.(*fakeStream)
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.closed {
		return frameInfo{}, codeClosed
	}
	if f.shuttingDown {
		return frameInfo{}, codeShuttingDown
	}
	if len(s.frames) == 0 {
		return frameInfo{}, codeEnded
	}
	fr := s.frames[0]
	if len(pcm) < len(fr) {
		return frameInfo{}, codeTooLarge
	}
	s.frames = s.frames[1:]
	copy(pcm, fr)
	// The host reuses its memory: scribble over the frame it handed out.
	for i := range fr {
		fr[i] = -1
	}
	return frameInfo{samplesPerChannel: len(fr), ptsMicros: 10_000, dropped: 1}, codeOK
}

func (f *fakeHost) audioStreamClose(h any) {
	f.mu.Lock()
	h.(*fakeStream).closed = true
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *fakeHost) audioSourcePublish(string, AudioFormat) (any, string, int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &fakeSource{}
	f.sources = append(f.sources, s)
	return s, "TR_out", codeOK
}

func (f *fakeHost) audioSourceCapture(h any, pcm []int16, spc int, timeoutMs uint32) int32 {
	s := h.(*fakeSource)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case s.closed:
		return codeClosed
	case f.shuttingDown:
		return codeShuttingDown
	case s.cleared:
		s.cleared = false
		return codeCleared
	case s.full > 0:
		s.full--
		f.wait(timeoutMs, func() bool { return s.closed })
		return codeTimeout
	}
	s.captured = append(s.captured, append([]int16(nil), pcm[:spc]...))
	return codeOK
}

func (f *fakeHost) audioSourceClear(any) uint32    { return 40 }
func (f *fakeHost) audioSourceQueuedMs(any) uint32 { return 20 }
func (f *fakeHost) audioSourceClose(h any) {
	f.mu.Lock()
	h.(*fakeSource).closed = true
	f.mu.Unlock()
}

func (f *fakeHost) publishData(payload []byte, topic string, to []string, flags, _ uint32) int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shuttingDown {
		return codeShuttingDown
	}
	f.sent = append(f.sent, DataPacket{Payload: append([]byte(nil), payload...), Topic: topic,
		Reliable: flags&dataReliable != 0})
	f.dest = append(f.dest, append([]string(nil), to...))
	return codeOK
}

func (f *fakeHost) nextData(timeoutMs uint32) (DataPacket, int32, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wait(timeoutMs, func() bool { return len(f.data) > 0 })
	if len(f.data) > 0 {
		p := f.data[0]
		f.data = f.data[1:]
		return p, codeOK, 0
	}
	if f.shuttingDown {
		return DataPacket{}, codeShuttingDown, 0
	}
	return DataPacket{}, codeTimeout, 0
}

func (f *fakeHost) setAttributes(keys, values []string, _ uint32) int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, k := range keys {
		if k == "" {
			return codeInvalid
		}
		f.attr[k] = values[i]
	}
	return codeOK
}

func (f *fakeHost) setMetadata(md string, _ uint32) int32 {
	if md == "" {
		return codeInvalid
	}
	return codeOK
}

func (f *fakeHost) audioSourceWaitSubscribed(h any, timeoutMs uint32) int32 {
	s := h.(*fakeSource)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wait(timeoutMs, func() bool { return s.subscribed || s.closed })
	switch {
	case s.closed:
		return codeClosed
	case s.subscribed:
		return codeOK
	case f.shuttingDown:
		return codeShuttingDown
	}
	return codeTimeout
}

// ---- 1.4: streams -------------------------------------------------------

// offer queues an incoming stream and returns it for feed.
func (f *fakeHost) offer(info StreamInfo) *fakeReader {
	if info.Attributes == nil {
		info.Attributes = map[string]string{}
	}
	r := &fakeReader{info: info}
	f.mu.Lock()
	f.incoming = append(f.incoming, r)
	f.cond.Broadcast()
	f.mu.Unlock()
	return r
}

// feed adds content to r; complete ends it (with trailer attributes),
// abort aborts it.
func (f *fakeHost) feed(r *fakeReader, data []byte, complete bool, trailer map[string]string, abort string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.unread = append(r.unread, data...)
	r.complete = r.complete || complete
	if trailer != nil {
		r.trailer = trailer
	}
	if abort != "" {
		r.abort = abort
	}
	f.cond.Broadcast()
}

func (f *fakeHost) streamAcceptTopic(topic string) int32 {
	if len(topic) > 256 {
		return codeInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accepted = append(f.accepted, topic)
	return codeOK
}

func (f *fakeHost) nextStream(timeoutMs uint32) (any, int32, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wait(timeoutMs, func() bool { return len(f.incoming) > 0 || f.streamsMissed > 0 })
	if f.streamsMissed > 0 {
		n := f.streamsMissed
		f.streamsMissed = 0
		return nil, codeMissed, n
	}
	if len(f.incoming) > 0 {
		r := f.incoming[0]
		f.incoming = f.incoming[1:]
		return r, codeOK, 0
	}
	if f.shuttingDown {
		return nil, codeShuttingDown, 0
	}
	return nil, codeTimeout, 0
}

func (f *fakeHost) streamReaderInfo(h any) (StreamInfo, int32) {
	r := h.(*fakeReader)
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.closed {
		return StreamInfo{}, codeClosed
	}
	info := r.info
	info.Attributes = maps.Clone(r.info.Attributes)
	if r.complete {
		maps.Copy(info.Attributes, r.trailer)
	}
	return info, codeOK
}

func (f *fakeHost) streamRead(h any, buf []byte, timeoutMs uint32) (int, int32) {
	r := h.(*fakeReader)
	f.mu.Lock()
	defer f.mu.Unlock()
	deadline := time.Now().Add(time.Duration(timeoutMs) * time.Millisecond)
	for {
		switch {
		case r.closed:
			return 0, codeClosed
		case r.abort != "":
			return 0, codeAborted
		case len(r.unread) > 0:
			n := min(len(buf), len(r.unread))
			if r.info.Kind == StreamText {
				// As lk-go: back off to a character boundary.
				for n > 0 && n < len(r.unread) && !utf8.RuneStart(r.unread[n]) {
					n--
				}
			}
			if n > 0 {
				copy(buf, r.unread[:n])
				// The host reuses its memory: scribble over what it handed out.
				for i := range r.unread[:n] {
					r.unread[i] = '#'
				}
				r.unread = r.unread[n:]
				return n, codeOK
			}
		case r.complete:
			return 0, codeEnded
		}
		if f.shuttingDown {
			return 0, codeShuttingDown
		}
		if !time.Now().Before(deadline) {
			return 0, codeTimeout
		}
		f.wait(1, func() bool { return false })
	}
}

func (f *fakeHost) streamReaderError(h any) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return h.(*fakeReader).abort
}

func (f *fakeHost) streamReaderClose(h any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h.(*fakeReader).closed = true
	f.cond.Broadcast()
}

func (f *fakeHost) streamOpen(o streamOpen, _ uint32) (any, string, int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.shuttingDown:
		return nil, "", codeShuttingDown
	case o.topic == "" || len(o.topic) > 256:
		return nil, "", codeInvalid
	case o.kind == StreamBytes && o.sender != "":
		return nil, "", codeInvalid
	case o.kind != StreamText && o.kind != StreamBytes:
		return nil, "", codeInvalid
	}
	o.attrKeys = append([]string(nil), o.attrKeys...)
	o.attrValues = append([]string(nil), o.attrValues...)
	o.destinations = append([]string(nil), o.destinations...)
	w := &fakeWriter{open: o, id: o.streamID}
	if w.id == "" {
		w.id = fmt.Sprintf("ST_%d", len(f.writers))
	}
	f.writers = append(f.writers, w)
	return w, w.id, codeOK
}

func (f *fakeHost) streamWrite(h any, data []byte, _ uint32) int32 {
	w := h.(*fakeWriter)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case w.closed:
		return codeClosed
	case f.shuttingDown:
		return codeShuttingDown
	case w.open.kind == StreamText && !utf8.Valid(data):
		return codeInvalid
	}
	w.chunks = append(w.chunks, append([]byte(nil), data...))
	return codeOK
}

func (f *fakeHost) streamClose(h any, reason string, keys, values []string, _ uint32) int32 {
	w := h.(*fakeWriter)
	f.mu.Lock()
	defer f.mu.Unlock()
	if w.closed {
		return codeClosed
	}
	w.closed, w.reason = true, reason
	w.trailer = map[string]string{}
	for i, k := range keys {
		w.trailer[k] = values[i]
	}
	return codeOK
}

// writer is the i-th stream opened, read under the lock.
func (f *fakeHost) writer(i int) fakeWriter {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := *f.writers[i]
	w.chunks = append([][]byte(nil), w.chunks...)
	return w
}

// ---- 1.4: RPC and transcriptions ----------------------------------------

func (f *fakeHost) rpcRegister(method string) int32 {
	if method == "" || len(method) > 256 {
		return codeInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.registered[method] && len(f.registered) >= 16384 {
		return codeTooLarge
	}
	f.registered[method] = true
	return codeOK
}

func (f *fakeHost) rpcUnregister(method string) int32 {
	if method == "" {
		return codeInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.registered, method)
	return codeOK
}

// invoke is a call from a participant: queued for next_rpc, or answered
// 1400 by the host when the method is not registered.
func (f *fakeHost) invoke(inv RPCInvocation) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.registered[inv.Method] {
		f.answers[inv.RequestID] = fakeAnswer{code: RPCUnsupportedMethod, payload: "Method not supported at destination"}
		f.cond.Broadcast()
		return
	}
	f.invocations = append(f.invocations, &fakeCall{inv: inv})
	f.cond.Broadcast()
}

// answer waits for the answer to request id.
func (f *fakeHost) answer(id string) (fakeAnswer, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	deadline := time.Now().Add(limit)
	for {
		if a, ok := f.answers[id]; ok {
			return a, true
		}
		if !time.Now().Before(deadline) {
			return fakeAnswer{}, false
		}
		f.wait(10, func() bool { _, ok := f.answers[id]; return ok })
	}
}

func (f *fakeHost) nextRPC(timeoutMs uint32) (rpcCall, int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wait(timeoutMs, func() bool { return len(f.invocations) > 0 })
	if f.shuttingDown {
		return rpcCall{}, codeShuttingDown
	}
	if len(f.invocations) == 0 {
		return rpcCall{}, codeTimeout
	}
	c := f.invocations[0]
	f.invocations = f.invocations[1:]
	return rpcCall{inv: c.inv, token: c}, codeOK
}

func (f *fakeHost) rpcRespond(token any, code int32, payload, data string) int32 {
	c := token.(*fakeCall)
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.answered {
		return codeClosed
	}
	c.answered = true
	if code < 0 {
		return codeInvalid
	}
	if f.shuttingDown {
		return codeShuttingDown
	}
	f.answers[c.inv.RequestID] = fakeAnswer{code: code, payload: payload, data: data}
	f.cond.Broadcast()
	return codeOK
}

func (f *fakeHost) performRPC(dest, method, payload string, timeoutMs uint32) (rpcOutcome, int32) {
	f.mu.Lock()
	perform, down := f.perform, f.shuttingDown
	f.mu.Unlock()
	switch {
	case down:
		return rpcOutcome{}, codeShuttingDown
	case dest == "" || method == "":
		return rpcOutcome{}, codeInvalid
	case perform != nil:
		return perform(dest, method, payload, timeoutMs)
	}
	return rpcOutcome{payload: payload}, codeOK
}

func (f *fakeHost) publishTranscription(t Transcription, _ uint32) int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.TrackSID == "" || t.SegmentID == "" {
		return codeInvalid
	}
	if f.shuttingDown {
		return codeShuttingDown
	}
	f.transcriptions = append(f.transcriptions, t)
	return codeOK
}
