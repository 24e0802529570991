package lkgo

// ABI 1.4 against fakeHost, meant for `go test -race`: the dispatch's
// details, data streams both ways (io.Reader / io.Writer, characters never
// split, trailers, aborts, timeouts), RPC (handlers on a bounded set of
// goroutines, errors as codes, panics answered, calls with a context),
// transcripts, the new events and media results, and a 1.3 host.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"
)

func TestTheDispatchsDetailsAreCopiedAndCloseOnParticipantLeftReachesTheHost(t *testing.T) {
	f := newFakeHost()
	result(t, startJob(f, func(jc *JobContext) int {
		if !jc.HasStreams() {
			t.Error("HasStreams false on a 1.4 host")
		}
		if jc.Job.ParticipantIdentity != "user1" || jc.Job.AgentName != "echo-agent" {
			t.Errorf("job %+v", jc.Job)
		}
		a := jc.JobAttributes()
		if len(a) != 2 || a["tier"] != "gold" || a["lang"] != "fr" {
			t.Errorf("attributes %v", a)
		}
		a["tier"] = "changed" // the caller's copy
		if jc.JobAttributes()["tier"] != "gold" {
			t.Error("JobAttributes returned the SDK's own map")
		}
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); jc.SetCloseOnParticipantLeft(i%2 == 0); _ = jc.JobAttributes() }()
		}
		wg.Wait()
		return 0
	}))
	if len(f.closeOnLeft) != 8 {
		t.Fatalf("close on participant left: %v", f.closeOnLeft)
	}
}

func TestIncomingStreamsArriveWholeThroughAnyBufferWithTheirTrailer(t *testing.T) {
	f := newFakeHost()
	const text = "héllo wörld ✓ 𝄞 — the end"
	f.mu.Lock()
	f.streamsMissed = 3
	f.mu.Unlock()
	r := f.offer(StreamInfo{StreamID: "s1", Kind: StreamText, Topic: ChatTopic, SenderIdentity: "u1",
		TotalLength: int64(len(text)), Attributes: map[string]string{"a": "1"}})
	result(t, startJob(f, func(jc *JobContext) int {
		if err := jc.AcceptStreams(ChatTopic, "echo.bytes"); err != nil {
			t.Fatal(err)
		}
		if err := jc.AcceptStreams(strings.Repeat("x", 257)); !errors.Is(err, ErrInvalid) {
			t.Errorf("a 257-byte topic: %v", err)
		}
		// The sender sends while the plugin reads, one byte at a time.
		go func() {
			for i := 0; i < len(text); i++ {
				f.feed(r, []byte{text[i]}, false, nil, "")
				time.Sleep(100 * time.Microsecond)
			}
			f.feed(r, nil, true, map[string]string{AttrTranscriptionFinal: "true"}, "")
		}()
		ch := jc.Streams()
		if ch != jc.Streams() {
			t.Error("Streams returned two channels")
		}
		if m, ok := (<-ch).(StreamsMissed); !ok || m.Count != 3 {
			t.Fatalf("first value %#v, want StreamsMissed{3}", m)
		}
		sr, ok := (<-ch).(*StreamReader)
		if !ok {
			t.Fatal("no reader")
		}
		info := sr.Info()
		if info.StreamID != "s1" || info.Kind != StreamText || info.Topic != ChatTopic ||
			info.SenderIdentity != "u1" || info.TotalLength != int64(len(text)) || info.Attributes["a"] != "1" {
			t.Errorf("info %+v", info)
		}
		// 1-byte reads: the SDK reads whole characters and hands them out
		// in pieces (the host cannot fill a buffer under 4 bytes).
		got, err := io.ReadAll(iotest.OneByteReader(sr))
		if err != nil || string(got) != text {
			t.Fatalf("read %q, %v", got, err)
		}
		fin, err := sr.FinalInfo()
		if err != nil || fin.Attributes[AttrTranscriptionFinal] != "true" || fin.Attributes["a"] != "1" {
			t.Errorf("final info %+v %v", fin, err)
		}
		if n, err := sr.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Errorf("read after the end: %d %v", n, err)
		}
		_ = sr.Close()
		_ = sr.Close() // idempotent
		if _, err := sr.Read(make([]byte, 8)); !errors.Is(err, ErrClosed) {
			t.Errorf("read after close: %v", err)
		}
		if _, err := sr.FinalInfo(); !errors.Is(err, ErrClosed) {
			t.Errorf("info after close: %v", err)
		}
		return 0
	}))
	if len(f.accepted) != 2 || f.accepted[0] != ChatTopic {
		t.Fatalf("accepted %v", f.accepted)
	}
}

func TestReadAllReadTextAbortsTimeoutsAndContexts(t *testing.T) {
	f := newFakeHost()
	whole := f.offer(StreamInfo{StreamID: "whole", Kind: StreamBytes, Topic: "echo.bytes", Name: "b.bin", TotalLength: 70000})
	blob := make([]byte, 70000)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	f.feed(whole, blob, true, nil, "")
	broken := f.offer(StreamInfo{StreamID: "broken", Kind: StreamBytes, Topic: "echo.bytes", TotalLength: -1})
	f.feed(broken, []byte("abc"), false, nil, "")
	f.offer(StreamInfo{StreamID: "quiet", Kind: StreamText, Topic: ChatTopic, TotalLength: -1})
	result(t, startJob(f, func(jc *JobContext) int {
		next := func() *StreamReader {
			r, ok := (<-jc.Streams()).(*StreamReader)
			if !ok {
				t.Fatal("no reader")
			}
			return r
		}
		r := next()
		b, err := r.ReadAll(jc.Ctx)
		if err != nil || len(b) != len(blob) || b[69999] != blob[69999] || b[1] != 7 {
			t.Errorf("ReadAll: %d bytes, %v", len(b), err)
		}
		r.Close()

		r = next()
		var got [3]byte
		if n, err := io.ReadFull(r, got[:]); n != 3 || err != nil {
			t.Fatalf("before the fault: %d %v", n, err)
		}
		f.feed(broken, nil, false, nil, "chunk 1 is missing")
		_, err = r.Read(got[:])
		var ae *StreamAbortedError
		if !errors.As(err, &ae) || !errors.Is(err, ErrAborted) || ae.Reason != "chunk 1 is missing" || ae.StreamID != "broken" {
			t.Errorf("aborted read: %v", err)
		}
		if r.AbortReason() != "chunk 1 is missing" {
			t.Errorf("AbortReason %q", r.AbortReason())
		}
		r.Close()

		r = next()
		r.SetTimeout(50 * time.Millisecond)
		began := time.Now()
		if _, err := r.Read(got[:]); !errors.Is(err, ErrTimeout) {
			t.Errorf("quiet stream: %v", err)
		}
		if d := time.Since(began); d < 50*time.Millisecond || d > 2*time.Second {
			t.Errorf("the 50 ms timeout took %v", d)
		}
		r.SetTimeout(0) // no limit: the context ends it
		ctx, cancel := context.WithTimeout(jc.Ctx, 150*time.Millisecond)
		defer cancel()
		if _, err := r.ReadText(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("ReadText with a context: %v", err)
		}
		// Close from another goroutine wakes a waiting read.
		errs := make(chan error, 1)
		go func() { _, err := r.Read(got[:]); errs <- err }()
		time.Sleep(20 * time.Millisecond)
		r.Close()
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Errorf("read woken by Close: %v", err)
		}
		return 0
	}))
}

func TestTheStreamsChannelClosesAtShutdownAfterWhatWasQueued(t *testing.T) {
	f := newFakeHost()
	result(t, startJob(f, func(jc *JobContext) int {
		ch := jc.Streams()
		f.offer(StreamInfo{StreamID: "late", Kind: StreamText, Topic: ChatTopic})
		f.shutdown("signal_sigterm")
		n := 0
		for ev := range ch {
			if r, ok := ev.(*StreamReader); ok {
				n++
				r.Close()
			}
		}
		if n != 1 {
			t.Errorf("%d streams delivered, want the one queued before shutdown", n)
		}
		if jc.Ctx.Err() == nil {
			t.Error("Ctx not cancelled")
		}
		return 0
	}))
}

func TestAStreamWriterNeverSplitsACharacterAndSendsItsTrailer(t *testing.T) {
	f := newFakeHost()
	const text = "naïve café ✓ 𝄞!"
	result(t, startJob(f, func(jc *JobContext) int {
		w, err := jc.StreamText(StreamOptions{Topic: TranscriptionTopic, Attributes: map[string]string{"k": "v"},
			DestinationIdentities: []string{"u1", "u2"}})
		if err != nil {
			t.Fatal(err)
		}
		if w.StreamID() != "ST_0" {
			t.Errorf("stream id %q", w.StreamID())
		}
		// io.Copy one byte at a time: every multi-byte character is cut.
		if n, err := io.Copy(w, iotest.OneByteReader(strings.NewReader(text))); err != nil || n != int64(len(text)) {
			t.Fatalf("copy: %d %v", n, err)
		}
		if err := w.CloseWithAttributes(map[string]string{AttrTranscriptionFinal: "true"}); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("second close: %v", err)
		}
		if _, err := w.WriteString("more"); !errors.Is(err, ErrClosed) {
			t.Errorf("write after close: %v", err)
		}

		// A text that ends inside a character is aborted, not truncated.
		w2, _ := jc.StreamText(StreamOptions{Topic: "t"})
		_, _ = w2.Write([]byte("ok \xe2\x9c"))
		if err := w2.Close(); !errors.Is(err, ErrInvalid) {
			t.Errorf("close inside a character: %v", err)
		}
		// Invalid UTF-8 is the host's to refuse.
		w3, _ := jc.StreamText(StreamOptions{Topic: "t"})
		if _, err := w3.Write([]byte{0xff, 'a'}); !errors.Is(err, ErrInvalid) {
			t.Errorf("invalid UTF-8: %v", err)
		}
		if err := w3.Abort("gave up"); err != nil {
			t.Error(err)
		}

		blob := []byte{0, 1, 2, 0xff, 0xfe}
		if err := jc.SendBytes(blob, StreamOptions{Topic: "echo.bytes.sha256", Name: "x.bin",
			DestinationIdentities: []string{"u1"}}); err != nil {
			t.Fatal(err)
		}
		blob[0] = 9 // SendBytes copied it
		if err := jc.SendText("", StreamOptions{Topic: "empty"}); err != nil {
			t.Error(err)
		}
		if err := jc.SendBytes(blob, StreamOptions{Topic: "t", SenderIdentity: "u1"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("a byte stream on someone's behalf: %v", err)
		}
		if _, err := jc.StreamText(StreamOptions{Topic: "t", DestinationIdentities: []string{""}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("an empty destination: %v", err)
		}
		if _, err := jc.StreamText(StreamOptions{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("no topic: %v", err)
		}
		return 0
	}))
	w := f.writer(0)
	var whole strings.Builder
	for _, c := range w.chunks {
		if !utf8.Valid(c) {
			t.Fatalf("chunk %q splits a character", c)
		}
		whole.Write(c)
	}
	if whole.String() != text || !w.closed || w.reason != "" || w.trailer[AttrTranscriptionFinal] != "true" ||
		w.open.attrKeys[0] != "k" || w.open.attrValues[0] != "v" || len(w.open.destinations) != 2 ||
		w.open.kind != StreamText || w.open.hasTotal {
		t.Fatalf("writer %+v, text %q", w, whole.String())
	}
	if w := f.writer(1); !w.closed || w.reason != "the text ended inside a UTF-8 character" || string(w.chunks[0]) != "ok " {
		t.Fatalf("cut writer %+v", w)
	}
	if w := f.writer(2); w.reason != "gave up" {
		t.Fatalf("aborted writer %+v", w)
	}
	b := f.writer(3)
	if b.open.kind != StreamBytes || b.open.name != "x.bin" || !b.open.hasTotal || b.open.total != 5 ||
		string(b.chunks[0]) != "\x00\x01\x02\xff\xfe" || !b.closed || b.open.destinations[0] != "u1" {
		t.Fatalf("byte writer %+v", b)
	}
	if e := f.writer(4); !e.open.hasTotal || e.open.total != 0 || len(e.chunks) != 0 || !e.closed {
		t.Fatalf("empty text %+v", e)
	}
}

func TestAnAgentTranscriptIsOneStreamAndLegacyPacketsForTheWholeText(t *testing.T) {
	f := newFakeHost()
	result(t, startJob(f, func(jc *JobContext) int {
		tr, err := jc.AgentTranscript("TR_mine", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tr.SegmentID(), "SG_") || len(tr.SegmentID()) != 15 {
			t.Errorf("segment id %q", tr.SegmentID())
		}
		for _, d := range []string{"echo: ", "hello"} {
			if err := tr.Push(d); err != nil {
				t.Fatal(err)
			}
		}
		if err := tr.Finish(); err != nil {
			t.Fatal(err)
		}
		if err := tr.Push("late"); !errors.Is(err, ErrClosed) {
			t.Errorf("push after finish: %v", err)
		}
		if err := jc.UserTranscript("u1", "TR_user", "SG_u", "hi there", true, time.Second); err != nil {
			t.Fatal(err)
		}
		if err := jc.PublishTranscription(Transcription{Text: "x"}, 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("no track or segment: %v", err)
		}
		return 0
	}))
	w := f.writer(0)
	if w.open.topic != TranscriptionTopic || len(w.chunks) != 2 || string(w.chunks[1]) != "hello" ||
		w.trailer[AttrTranscriptionFinal] != "true" {
		t.Fatalf("transcript stream %+v", w)
	}
	attrs := map[string]string{}
	for i, k := range w.open.attrKeys {
		attrs[k] = w.open.attrValues[i]
	}
	if attrs[AttrTranscribedTrackID] != "TR_mine" || attrs[AttrTranscriptionFinal] != "false" || !strings.HasPrefix(attrs[AttrSegmentID], "SG_") {
		t.Fatalf("header attributes %v", attrs)
	}
	ts := f.transcriptions
	if len(ts) != 4 || ts[0].Text != "echo: " || ts[1].Text != "echo: hello" || ts[1].Final || !ts[2].Final ||
		ts[2].Text != "echo: hello" || ts[2].ParticipantIdentity != "agent" || ts[2].SegmentID != attrs[AttrSegmentID] {
		t.Fatalf("legacy packets %+v", ts)
	}
	if u := f.writer(1); u.open.sender != "u1" || string(u.chunks[0]) != "hi there" || !ts[3].Final || ts[3].ParticipantIdentity != "u1" {
		t.Fatalf("user transcript %+v %+v", u, ts[3])
	}
}

func TestRPCHandlersAnswerEveryCallAtMostRPCConcurrencyAtOnce(t *testing.T) {
	f := newFakeHost()
	const calls = 300
	var running, peak atomic.Int32
	result(t, startJob(f, func(jc *JobContext) int {
		err := jc.RegisterRPC("echo", func(ctx context.Context, inv RPCInvocation) (string, error) {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
			running.Add(-1)
			return inv.Payload + " from " + inv.CallerIdentity, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := 0; g < 6; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < calls; i += 6 {
					f.invoke(RPCInvocation{RequestID: fmt.Sprint("r", i), CallerIdentity: "u1", Method: "echo",
						Payload: fmt.Sprint("p", i), ResponseTimeout: 10 * time.Second})
				}
			}()
		}
		wg.Wait()
		for i := 0; i < calls; i++ {
			a, ok := f.answer(fmt.Sprint("r", i))
			if !ok || a.code != 0 || a.payload != fmt.Sprint("p", i, " from u1") {
				t.Fatalf("call %d: %+v %v", i, a, ok)
			}
		}
		return 0
	}))
	if p := peak.Load(); p < 2 || p > RPCConcurrency {
		t.Fatalf("%d handlers ran at once (1 < n <= %d expected)", p, RPCConcurrency)
	}
}

func TestRPCErrorsPanicsAndDeadlinesBecomeTheSDKsCodes(t *testing.T) {
	f := newFakeHost()
	sawDeadline := make(chan error, 1)
	result(t, startJob(f, func(jc *JobContext) int {
		handlers := map[string]RPCHandler{
			"own": func(context.Context, RPCInvocation) (string, error) {
				return "", fmt.Errorf("wrapped: %w", &RPCError{Code: 2001, Message: "no such order", Data: "42"})
			},
			"plain": func(context.Context, RPCInvocation) (string, error) { return "", errors.New("db down") },
			"panic": func(context.Context, RPCInvocation) (string, error) { panic("handler broke") },
			"zero":  func(context.Context, RPCInvocation) (string, error) { return "", &RPCError{Code: 0} },
			"slow": func(ctx context.Context, _ RPCInvocation) (string, error) {
				<-ctx.Done()
				sawDeadline <- ctx.Err()
				return "", ctx.Err()
			},
		}
		for m, h := range handlers {
			if err := jc.RegisterRPC(m, h); err != nil {
				t.Fatal(err)
			}
		}
		if err := jc.RegisterRPC("", handlers["own"]); !errors.Is(err, ErrInvalid) {
			t.Errorf("empty method: %v", err)
		}
		if err := jc.RegisterRPC("nil", nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("nil handler: %v", err)
		}
		for _, m := range []string{"own", "plain", "panic", "zero", "nope"} {
			f.invoke(RPCInvocation{RequestID: m, Method: m, CallerIdentity: "u1"})
		}
		f.invoke(RPCInvocation{RequestID: "slow", Method: "slow", Deadline: time.Now().Add(80 * time.Millisecond)})
		want := map[string]fakeAnswer{
			"own":   {code: 2001, payload: "no such order", data: "42"},
			"plain": {code: RPCApplicationError, payload: "Application error in method handler"},
			"panic": {code: RPCApplicationError, payload: "Application error in method handler"},
			"zero":  {code: RPCApplicationError, payload: "Application error in method handler"},
			"nope":  {code: RPCUnsupportedMethod, payload: "Method not supported at destination"},
			"slow":  {code: RPCApplicationError, payload: "Application error in method handler"},
		}
		for id, w := range want {
			if a, ok := f.answer(id); !ok || a != w {
				t.Errorf("%s: got %+v, want %+v", id, a, w)
			}
		}
		if err := <-sawDeadline; !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the slow handler's ctx: %v", err)
		}
		// Unregistered: the host answers 1400 from now on.
		if err := jc.UnregisterRPC("own"); err != nil {
			t.Fatal(err)
		}
		f.invoke(RPCInvocation{RequestID: "gone", Method: "own"})
		if a, _ := f.answer("gone"); a.code != RPCUnsupportedMethod {
			t.Errorf("after unregister: %+v", a)
		}
		return 0
	}))
	if n := len(f.logged("lkgo: RPC handler for panic panicked: handler broke")); n != 1 {
		t.Fatalf("%q", f.logs)
	}
	if n := len(f.logged("lkgo: RPC handler for plain from u1 failed: db down")); n != 1 {
		t.Fatalf("%q", f.logs)
	}
}

func TestRegisteringFromManyGoroutinesWhileCallsArrive(t *testing.T) {
	f := newFakeHost()
	const methods = 1000
	result(t, startJob(f, func(jc *JobContext) int {
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < methods; i += 8 {
					name := fmt.Sprint("m", i)
					if err := jc.RegisterRPC(name, func(context.Context, RPCInvocation) (string, error) { return name, nil }); err != nil {
						t.Error(err)
						return
					}
					f.invoke(RPCInvocation{RequestID: name, Method: name})
				}
			}()
		}
		wg.Wait()
		for i := 0; i < methods; i++ {
			name := fmt.Sprint("m", i)
			if a, ok := f.answer(name); !ok || a.code != 0 || a.payload != name {
				t.Fatalf("%s: %+v", name, a)
			}
		}
		return 0
	}))
}

func TestPerformRPCReturnsTheAnswerTheErrorOrTheContextsError(t *testing.T) {
	f := newFakeHost()
	release := make(chan struct{})
	f.perform = func(dest, method, payload string, timeoutMs uint32) (rpcOutcome, int32) {
		switch method {
		case "frontend.hello":
			return rpcOutcome{payload: "hello " + payload + " (" + dest + fmt.Sprintf(", %d ms)", timeoutMs)}, codeOK
		case "gone":
			return rpcOutcome{code: RPCRecipientDisconnected, payload: "Recipient disconnected"}, codeOK
		case "block":
			<-release
			return rpcOutcome{payload: "late"}, codeOK
		}
		return rpcOutcome{code: RPCUnsupportedMethod, payload: "Method not supported at destination", data: "d"}, codeOK
	}
	result(t, startJob(f, func(jc *JobContext) int {
		got, err := jc.PerformRPC(context.Background(), "u1", "frontend.hello", "agent", 2*time.Second)
		if err != nil || got != "hello agent (u1, 2000 ms)" {
			t.Errorf("hello: %q %v", got, err)
		}
		if got, _ := jc.PerformRPC(jc.Ctx, "u1", "frontend.hello", "x", 0); got != "hello x (u1, 0 ms)" {
			t.Errorf("default timeout: %q", got)
		}
		var re *RPCError
		if _, err := jc.PerformRPC(jc.Ctx, "u1", "gone", "", 0); !errors.As(err, &re) || re.Code != RPCRecipientDisconnected {
			t.Errorf("gone: %v", err)
		}
		if _, err := jc.PerformRPC(jc.Ctx, "u1", "other", "", 0); !errors.As(err, &re) || re.Code != 1400 || re.Data != "d" ||
			re.Error() != "lkgo: RPC error 1400: Method not supported at destination (d)" {
			t.Errorf("other: %v", err)
		}
		if _, err := jc.PerformRPC(jc.Ctx, "", "m", "", 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("no destination: %v", err)
		}
		ctx, cancel := context.WithTimeout(jc.Ctx, 50*time.Millisecond)
		defer cancel()
		began := time.Now()
		if _, err := jc.PerformRPC(ctx, "u1", "block", "", 0); !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 2*time.Second {
			t.Errorf("blocked call with a context: %v after %v", err, time.Since(began))
		}
		close(release)
		// Many at once, from many goroutines.
		var wg sync.WaitGroup
		for i := 0; i < 32; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := fmt.Sprint(i)
				if got, err := jc.PerformRPC(jc.Ctx, "u1", "frontend.hello", p, time.Second); err != nil || !strings.HasPrefix(got, "hello "+p+" ") {
					t.Errorf("%d: %q %v", i, got, err)
				}
			}()
		}
		wg.Wait()
		f.shutdown("signal_sigterm")
		if _, err := jc.PerformRPC(context.Background(), "u1", "frontend.hello", "", 0); !errors.Is(err, ErrShuttingDown) {
			t.Errorf("after shutdown: %v", err)
		}
		if jc.Ctx.Err() == nil {
			t.Error("Ctx not cancelled by PerformRPC's LK_SHUTTING_DOWN")
		}
		return 0
	}))
}

func TestTheNewEventsShutdownCodesAndMediaResults(t *testing.T) {
	f := newFakeHost()
	f.push(rawEvent{kind: kindTrackMuted, participantIdentity: "u1", trackSID: "TR_a", trackKind: trackKindAudio})
	f.push(rawEvent{kind: kindTrackUnmuted, participantIdentity: "u1", trackSID: "TR_a"})
	f.push(rawEvent{kind: kindLocalTrackSubscribed, trackSID: "TR_out"})
	result(t, startJob(f, func(jc *JobContext) int {
		evs := []Event{<-jc.Events(), <-jc.Events(), <-jc.Events()}
		if m, ok := evs[0].(TrackMuted); !ok || m.Participant.Identity != "u1" || m.Track.SID != "TR_a" ||
			m.Track.Kind != TrackKindAudio || m.EventName() != "track_muted" {
			t.Errorf("event 0 %#v", evs[0])
		}
		if u, ok := evs[1].(TrackUnmuted); !ok || u.Track.SID != "TR_a" || u.EventName() != "track_unmuted" {
			t.Errorf("event 1 %#v", evs[1])
		}
		if l, ok := evs[2].(LocalTrackSubscribed); !ok || l.TrackSID != "TR_out" || l.EventName() != "local_track_subscribed" {
			t.Errorf("event 2 %#v", evs[2])
		}
		src, err := jc.PublishAudio("out", Mono(48000))
		if err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		fs := f.sources[0]
		fs.cleared = true
		f.mu.Unlock()
		if err := src.Capture(jc.Ctx, make([]int16, 480)); !errors.Is(err, ErrCleared) {
			t.Errorf("capture across a clear: %v", err)
		}
		ctx, cancel := context.WithTimeout(jc.Ctx, 150*time.Millisecond)
		defer cancel()
		if err := src.WaitSubscribed(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("nobody subscribed: %v", err)
		}
		go func() {
			time.Sleep(30 * time.Millisecond)
			f.mu.Lock()
			fs.subscribed = true
			f.cond.Broadcast()
			f.mu.Unlock()
		}()
		if err := src.WaitSubscribed(jc.Ctx); err != nil {
			t.Errorf("a subscriber came: %v", err)
		}
		src.Close()
		if err := src.WaitSubscribed(jc.Ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("closed source: %v", err)
		}
		return 0
	}))
	if ShutdownMemoryLimit != 17 || ShutdownParticipantLeft != 13 {
		t.Fatal("shutdown codes")
	}
}

func TestOnAnABI13HostEvery14CallSaysHostTooOld(t *testing.T) {
	f := newFakeHost()
	f.old = true
	result(t, startJob(f, func(jc *JobContext) int {
		if jc.HasStreams() || jc.Job.ParticipantIdentity != "" || jc.Job.AgentName != "" {
			t.Errorf("1.3 host: %v %+v", jc.HasStreams(), jc.Job)
		}
		if a := jc.JobAttributes(); a == nil || len(a) != 0 {
			t.Errorf("attributes %v", a)
		}
		jc.SetCloseOnParticipantLeft(false)
		if _, open := <-jc.Streams(); open {
			t.Error("Streams open on a 1.3 host")
		}
		src, _ := jc.PublishAudio("out", Mono(48000))
		h := func(context.Context, RPCInvocation) (string, error) { return "", nil }
		_, perr := jc.PerformRPC(jc.Ctx, "u", "m", "", 0)
		_, serr := jc.StreamText(StreamOptions{Topic: "t"})
		_, aerr := jc.AgentTranscript("TR", 0)
		for i, err := range []error{jc.AcceptStreams("x"), jc.RegisterRPC("m", h), jc.UnregisterRPC("m"), perr, serr,
			jc.SendText("x", StreamOptions{Topic: "t"}), jc.SendBytes(nil, StreamOptions{Topic: "t"}), aerr,
			jc.PublishTranscription(Transcription{TrackSID: "T", SegmentID: "S"}, 0), src.WaitSubscribed(jc.Ctx)} {
			if !errors.Is(err, ErrHostTooOld) {
				t.Errorf("call %d: %v", i, err)
			}
		}
		return 0
	}))
	if len(f.closeOnLeft) != 0 {
		t.Fatal("set_close_on_participant_left called on a 1.3 host")
	}
}
