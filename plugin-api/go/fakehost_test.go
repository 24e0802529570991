package lkgo

// fakeHost keeps lk_plugin.h's contract in Go, so that the SDK's own logic
// runs under `go test -race` without lk-go: shutdown is idempotent (the
// first reason wins), hooks registered before shutdown run once from the
// cascade (newest first), hooks registered after run at once on the
// caller, waiting calls return within ~1 ms of shutdown, and next_event /
// next_data hand out what is queued before they say LK_SHUTTING_DOWN.

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

type fakeStream struct {
	frames [][]int16 // left to deliver; then LK_ENDED
	closed bool
}

type fakeSource struct {
	captured [][]int16
	closed   bool
	// full makes capture time out this many times first.
	full int
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
}

func newFakeHost() *fakeHost {
	f := &fakeHost{streams: map[*fakeStream]bool{}, attr: map[string]string{}}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *fakeHost) abi() (uint16, uint16) { return abiMajor, abiMinor }
func (f *fakeHost) hasMedia() bool        { return true }
func (f *fakeHost) describeJob() Job {
	return Job{ID: "AJ_test", RoomName: "room", Metadata: "md", Identity: "agent"}
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
