package lkgo

// The SDK's Go logic against fakeHost, meant for `go test -race` (cargo
// xtask test runs it so): context cancellation, hooks exactly once, the
// pumps closing their channels once, panics reported, host memory copied.

import (
	"context"
	"errors"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// limit is a safety net, never the thing measured.
const limit = 10 * time.Second

// startJob runs run as the host would (on a goroutine of its own) and
// returns a channel with run's result.
func startJob(h host, run func(*JobContext) int) <-chan int32 {
	out := make(chan int32, 1)
	go func() { out <- runJob(h, run) }()
	return out
}

func result(t *testing.T, ch <-chan int32) int32 {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(limit):
		t.Fatal("run did not return")
		return 0
	}
}

func TestCtxIsCancelledWhenTheHostBeginsShutdown(t *testing.T) {
	f := newFakeHost()
	entered := make(chan *JobContext)
	res := startJob(f, func(jc *JobContext) int {
		entered <- jc
		<-jc.Ctx.Done()
		return 3
	})
	jc := <-entered
	if jc.Job != (Job{ID: "AJ_test", RoomName: "room", Metadata: "md", Identity: "agent",
		ParticipantIdentity: "user1", AgentName: "echo-agent"}) {
		t.Fatalf("job %+v", jc.Job)
	}
	f.shutdown("signal_sigterm") // the host's own reason, not the plugin's
	if c := result(t, res); c != 3 {
		t.Fatalf("run returned %d", c)
	}
	if !errors.Is(context.Cause(jc.Ctx), ErrShuttingDown) {
		t.Fatalf("cause %v", context.Cause(jc.Ctx))
	}
	if !jc.IsShuttingDown() {
		t.Fatal("IsShuttingDown false after shutdown")
	}
}

func TestCtxIsCancelledWhenRunReturns(t *testing.T) {
	f := newFakeHost()
	var jc *JobContext
	if c := runJob(f, func(j *JobContext) int { jc = j; return 0 }); c != 0 {
		t.Fatalf("run returned %d", c)
	}
	select {
	case <-jc.Ctx.Done():
	case <-time.After(limit):
		t.Fatal("Ctx not cancelled after run returned")
	}
}

func TestShutdownFromManyGoroutinesIsIdempotentAndFirstReasonWins(t *testing.T) {
	f := newFakeHost()
	res := startJob(f, func(jc *JobContext) int {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < 64; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				jc.Shutdown("from a goroutine")
				if jc.Ctx.Err() == nil {
					t.Error("Ctx not cancelled when Shutdown returned")
				}
			}()
		}
		jc.Shutdown("first")
		close(start)
		wg.Wait()
		return 0
	})
	result(t, res)
	if f.reason != "first" {
		t.Fatalf("reason %q", f.reason)
	}
}

func TestOnShutdownHooksRunExactlyOnceFromManyGoroutines(t *testing.T) {
	for _, faulty := range []bool{false, true} {
		f := newFakeHost()
		f.hookTwice = faulty
		const n = 200
		var counts [n]atomic.Int32
		var reasons sync.Map
		release := make(chan struct{})
		res := startJob(f, func(jc *JobContext) int {
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					jc.OnShutdown(func(info ShutdownInfo) {
						counts[i].Add(1)
						reasons.Store(i, info.Reason)
					})
				}()
			}
			// The host's cascade races the registrations.
			jc.Shutdown("requested")
			cascaded := make(chan struct{})
			go func() { <-release; f.cascade(); close(cascaded) }()
			close(release)
			wg.Wait()
			<-cascaded
			return 0
		})
		result(t, res)
		for i := range counts {
			if c := counts[i].Load(); c != 1 {
				t.Fatalf("faulty host %v: hook %d ran %d times", faulty, i, c)
			}
			if r, _ := reasons.Load(i); r != "requested" {
				t.Fatalf("hook %d saw reason %v", i, r)
			}
		}
	}
}

func TestEventsArriveInOrderWithMissedAsAValueAndTheChannelClosesOnce(t *testing.T) {
	f := newFakeHost()
	for i := 0; i < 10; i++ {
		f.push(rawEvent{kind: kindParticipantJoined, participantIdentity: string(rune('a' + i))})
	}
	f.push(rawEvent{kind: kindTrackSubscribed, participantIdentity: "a", trackSID: "TR_mic",
		trackKind: trackKindAudio, trackSource: trackSourceMicrophone})
	f.push(rawEvent{kind: 99, name: "from_the_future"})
	f.missedAfter, f.missedCount = 4, 7
	got := make(chan []Event)
	res := startJob(f, func(jc *JobContext) int {
		// Many goroutines ask for the channel at once: one pump, one channel.
		chans := make(chan (<-chan Event), 16)
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); chans <- jc.Events() }()
		}
		wg.Wait()
		close(chans)
		first := <-chans
		for c := range chans {
			if c != first {
				t.Error("Events returned different channels")
			}
		}
		var evs []Event
		for ev := range first {
			evs = append(evs, ev)
			if len(evs) == 13 {
				jc.Shutdown("done") // pending: none; the pump must close
			}
		}
		got <- evs
		return 0
	})
	evs := <-got
	result(t, res)
	if len(evs) != 13 {
		t.Fatalf("%d events: %#v", len(evs), evs)
	}
	if m, ok := evs[4].(EventsMissed); !ok || m.Count != 7 {
		t.Fatalf("event 4 is %#v, want EventsMissed{7}", evs[4])
	}
	if j, ok := evs[5].(ParticipantJoined); !ok || j.Participant.Identity != "e" {
		t.Fatalf("event 5 is %#v", evs[5])
	}
	sub, ok := evs[11].(TrackSubscribed)
	if !ok || sub.Track.SID != "TR_mic" || sub.Track.Kind != TrackKindAudio ||
		sub.Track.Source != TrackSourceMicrophone || sub.EventName() != "track_subscribed" {
		t.Fatalf("event 11 is %#v", evs[11])
	}
	if u, ok := evs[12].(UnknownEvent); !ok || u.EventName() != "from_the_future" {
		t.Fatalf("event 12 is %#v", evs[12])
	}
}

func TestEventsQueuedAtShutdownAreDeliveredBeforeTheChannelCloses(t *testing.T) {
	f := newFakeHost()
	res := startJob(f, func(jc *JobContext) int {
		for i := 0; i < 100; i++ {
			f.push(rawEvent{kind: kindParticipantLeft})
		}
		f.shutdown("signal_sigint")
		n := 0
		for range jc.Events() {
			n++
		}
		return n
	})
	if c := result(t, res); c != 100 {
		t.Fatalf("%d of 100 events delivered", c)
	}
}

func TestAnUnreadEventChannelStillSeesShutdownAndReportsWhatDidNotFit(t *testing.T) {
	f := newFakeHost()
	const pushed = eventBuffer + 476
	for i := 0; i < pushed; i++ {
		f.push(rawEvent{kind: kindParticipantJoined, participantIdentity: "p"})
	}
	got := make(chan []Event, 1)
	res := startJob(f, func(jc *JobContext) int {
		f.shutdown("signal_sigterm")
		<-jc.Ctx.Done() // nobody has read an event: the pump must not block
		var evs []Event
		for ev := range jc.Events() {
			evs = append(evs, ev)
		}
		got <- evs
		return 0
	})
	result(t, res)
	evs := <-got
	if len(evs) != eventBuffer+1 {
		t.Fatalf("%d values, want %d events and one EventsMissed", len(evs), eventBuffer)
	}
	if m, ok := evs[eventBuffer].(EventsMissed); !ok || m.Count != 476 {
		t.Fatalf("last value %#v, want EventsMissed{476}", evs[eventBuffer])
	}
}

func TestThePumpStopsWhenRunReturnsWithNobodyReading(t *testing.T) {
	f := newFakeHost()
	for i := 0; i < eventBuffer*3; i++ {
		f.push(rawEvent{kind: kindParticipantJoined})
	}
	var ch <-chan Event
	result(t, startJob(f, func(jc *JobContext) int {
		ch = jc.Events()
		return 0
	}))
	// The pump was blocked on a full channel; run's return releases it
	// and it closes the channel.
	deadline := time.After(limit)
	for {
		select {
		case _, open := <-ch:
			if !open {
				return
			}
		case <-deadline:
			t.Fatal("the event channel was never closed")
		}
	}
}

func TestAPanicInRunIsOneLogLineAndLKRunPanicked(t *testing.T) {
	f := newFakeHost()
	res := startJob(f, func(jc *JobContext) int {
		var empty []int
		return empty[len(jc.Job.ID)] // a runtime panic: index out of range
	})
	if c := result(t, res); c != runPanicked {
		t.Fatalf("run returned %d, want LK_RUN_PANICKED", c)
	}
	lines := f.logged("panicked")
	if len(lines) != 1 || !strings.Contains(lines[0], "run panicked: runtime error: index out of range [7] with length 0") ||
		!strings.Contains(lines[0], "job_test.go:") || strings.Contains(lines[0], "\n") {
		t.Fatalf("panic lines %q", lines)
	}
}

func TestAPanicOnAGoroutineStartedWithGoShutsTheJobDownAsPanicked(t *testing.T) {
	f := newFakeHost()
	res := startJob(f, func(jc *JobContext) int {
		jc.Go(func() { panic("worker broke") })
		<-jc.Ctx.Done()
		return 0
	})
	if c := result(t, res); c != runPanicked {
		t.Fatalf("run returned %d", c)
	}
	if lines := f.logged("goroutine panicked: worker broke"); len(lines) != 1 {
		t.Fatalf("%q", f.logs)
	}
	if !strings.Contains(f.reason, "worker broke") {
		t.Fatalf("shutdown reason %q", f.reason)
	}
}

func TestAPanickingHookIsLoggedAndTheOthersStillRun(t *testing.T) {
	f := newFakeHost()
	var ran atomic.Int32
	result(t, startJob(f, func(jc *JobContext) int {
		jc.OnShutdown(func(ShutdownInfo) { ran.Add(1) })
		jc.OnShutdown(func(ShutdownInfo) { panic("hook broke") })
		jc.OnShutdown(func(ShutdownInfo) { ran.Add(1) })
		return 0
	}))
	f.cascade()
	if ran.Load() != 2 {
		t.Fatalf("%d hooks ran", ran.Load())
	}
	if lines := f.logged("shutdown hook panicked: hook broke"); len(lines) != 1 {
		t.Fatalf("%q", f.logs)
	}
}

func TestAudioFramesAreCopiedAndTheChannelEndsWithErrEnded(t *testing.T) {
	f := newFakeHost()
	result(t, startJob(f, func(jc *JobContext) int {
		if _, err := jc.OpenAudioStream("TR_gone", Mono(48000)); !errors.Is(err, ErrNotFound) {
			t.Errorf("open of an unknown sid: %v", err)
		}
		if _, err := jc.OpenAudioStream("TR_mic", AudioFormat{SampleRate: 48000, NumChannels: 3}); !errors.Is(err, ErrInvalid) {
			t.Errorf("three channels: %v", err)
		}
		s, err := jc.OpenAudioStream("TR_mic", Mono(48000))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var frames []AudioFrame
		for fr := range s.Frames() {
			frames = append(frames, fr)
		}
		if !errors.Is(s.Err(), ErrEnded) {
			t.Errorf("Err %v", s.Err())
		}
		if len(frames) != 5 {
			t.Fatalf("%d frames", len(frames))
		}
		for i, fr := range frames {
			if len(fr.Data) != 480 || fr.SamplesPerChannel != 480 || fr.Data[0] != int16(i) ||
				fr.Data[479] != int16(i) || fr.PTS != 10*time.Millisecond || fr.DroppedFrames != 1 {
				t.Fatalf("frame %d: len %d first %d pts %v", i, len(fr.Data), fr.Data[0], fr.PTS)
			}
		}
		return 0
	}))
}

func TestReadReturnsErrClosedAfterCloseAndCtxErrOnATimeout(t *testing.T) {
	f := newFakeHost()
	result(t, startJob(f, func(jc *JobContext) int {
		s, _ := jc.OpenAudioStream("TR_mic", Mono(48000))
		s.Close()
		s.Close() // idempotent
		if _, err := s.Read(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("read after close: %v", err)
		}
		src, _ := jc.PublishAudio("out", Mono(48000))
		f.mu.Lock()
		f.sources[0].full = 1 << 30
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := src.Capture(ctx, make([]int16, 480)); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("capture on a full queue: %v", err)
		}
		return 0
	}))
}

func TestCaptureCopiesAndReportsShutdown(t *testing.T) {
	f := newFakeHost()
	result(t, startJob(f, func(jc *JobContext) int {
		src, err := jc.PublishAudio("out", AudioFormat{SampleRate: 48000, NumChannels: 2})
		if err != nil || src.TrackSID() != "TR_out" {
			t.Fatalf("publish: %v %q", err, src.TrackSID())
		}
		if err := src.Capture(jc.Ctx, make([]int16, 3)); !errors.Is(err, ErrInvalid) {
			t.Errorf("odd sample count in stereo: %v", err)
		}
		pcm := []int16{1, 2, 3, 4}
		if err := src.Capture(jc.Ctx, pcm); err != nil {
			t.Fatal(err)
		}
		pcm[0] = 99
		if got := f.sources[0].captured[0]; len(got) != 2 || got[0] != 1 {
			t.Errorf("captured %v", got)
		}
		f.shutdown("signal_sigterm")
		if err := src.Capture(context.Background(), pcm); !errors.Is(err, ErrShuttingDown) {
			t.Errorf("capture after shutdown: %v", err)
		}
		if jc.Ctx.Err() == nil {
			t.Error("Ctx not cancelled by a call that saw LK_SHUTTING_DOWN")
		}
		return 0
	}))
}

func TestDataInAndOut(t *testing.T) {
	f := newFakeHost()
	f.data = []DataPacket{{Payload: []byte("ping"), Topic: "lk.ping", Sender: "u1", Reliable: true}}
	result(t, startJob(f, func(jc *JobContext) int {
		ev := <-jc.Data()
		p, ok := ev.(DataPacket)
		if !ok || string(p.Payload) != "ping" || p.Sender != "u1" {
			t.Fatalf("got %#v", ev)
		}
		err := jc.PublishData(p.Payload, DataOptions{Topic: "lk.pong", Reliable: true,
			DestinationIdentities: []string{p.Sender}})
		if err != nil {
			t.Fatal(err)
		}
		if err := jc.SetAttributes(map[string]string{"lk.agent.state": "listening", "x": ""}, 0); err != nil {
			t.Fatal(err)
		}
		if err := jc.SetAttributes(map[string]string{"": "v"}, 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("empty key: %v", err)
		}
		if err := jc.SetMetadata("", 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("empty metadata: %v", err)
		}
		jc.Shutdown("done")
		if _, open := <-jc.Data(); open {
			t.Error("Data still open after shutdown with nothing queued")
		}
		return 0
	}))
	if len(f.sent) != 1 || f.sent[0].Topic != "lk.pong" || !f.sent[0].Reliable || f.dest[0][0] != "u1" {
		t.Fatalf("sent %#v to %v", f.sent, f.dest)
	}
	if f.attr["lk.agent.state"] != "listening" {
		t.Fatalf("attributes %v", f.attr)
	}
}

func TestPackLaysStringsBackToBack(t *testing.T) {
	buf, lens := pack([]string{"ab", ""}, []string{"cde"})
	if string(buf) != "abcde" || len(lens) != 4 || lens[0] != 2 || lens[1] != 0 || lens[2] != 3 {
		t.Fatalf("%q %v", buf, lens)
	}
	if _, lens := pack(nil); len(lens) != 1 {
		t.Fatal("pack of nothing must still give a valid &lens[0]")
	}
}

func TestGoexitInRunOrAHookEndsOnlyThatFunction(t *testing.T) {
	f := newFakeHost()
	var later atomic.Int32
	res := startJob(f, func(jc *JobContext) int {
		jc.OnShutdown(func(ShutdownInfo) { later.Add(1) })
		jc.OnShutdown(func(ShutdownInfo) { runtime.Goexit() })
		runtime.Goexit()
		return 0
	})
	if c := result(t, res); c != runPanicked {
		t.Fatalf("run returned %d", c)
	}
	f.cascade()
	if later.Load() != 1 {
		t.Fatal("the hook after a Goexit hook did not run")
	}
	if n := len(f.logged("run panicked: runtime.Goexit was called")); n != 1 {
		t.Fatalf("%q", f.logs)
	}
	if n := len(f.logged("shutdown hook panicked: runtime.Goexit was called")); n != 1 {
		t.Fatalf("%q", f.logs)
	}
}

func TestFramesClosesOnCloseWithNobodyDrainingAndErrIsRaceFree(t *testing.T) {
	f := newFakeHost()
	result(t, startJob(f, func(jc *JobContext) int {
		s, err := jc.OpenAudioStream("TR_mic", Mono(48000))
		if err != nil {
			t.Fatal(err)
		}
		ch := s.Frames()
		stop := make(chan struct{})
		go func() { // Err from another goroutine while the pump runs
			for {
				select {
				case <-stop:
					return
				default:
					_ = s.Err()
				}
			}
		}()
		time.Sleep(20 * time.Millisecond) // let the pump fill the channel
		s.Close()
		n := 0
		for range ch {
			n++
		}
		close(stop)
		if err := s.Err(); !errors.Is(err, ErrClosed) && !errors.Is(err, ErrEnded) {
			t.Errorf("Err %v", err)
		}
		return 0
	}))
}

func TestAGapIsReportedWhileTheRoomIsQuiet(t *testing.T) {
	f := newFakeHost()
	for i := 0; i < eventBuffer+10; i++ {
		f.push(rawEvent{kind: kindParticipantJoined})
	}
	result(t, startJob(f, func(jc *JobContext) int {
		// Readiness: the pump has taken every event from the host, so the
		// last 10 did not fit.
		for deadline := time.Now().Add(limit); ; time.Sleep(time.Millisecond) {
			f.mu.Lock()
			left := len(f.events)
			f.mu.Unlock()
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the pump never drained the host")
			}
		}
		for i := 0; i < eventBuffer; i++ {
			<-jc.Events()
		}
		select {
		case ev := <-jc.Events():
			if m, ok := ev.(EventsMissed); !ok || m.Count != 10 {
				t.Errorf("got %#v, want EventsMissed{10}", ev)
			}
		case <-time.After(limit):
			t.Error("the gap was not reported before shutdown")
		}
		return 0
	}))
}

func TestTheSDKRefusesWhatItCannotPassOnAndSaysWhy(t *testing.T) {
	f := newFakeHost()
	result(t, startJob(f, func(jc *JobContext) int {
		huge := AudioFormat{SampleRate: 1<<32 + 48000, NumChannels: 1}
		if _, err := jc.OpenAudioStream("TR_mic", huge); !errors.Is(err, ErrInvalid) {
			t.Errorf("open with a wrapping rate: %v", err)
		}
		if _, err := jc.PublishAudio("out", huge); !errors.Is(err, ErrInvalid) {
			t.Errorf("publish with a wrapping rate: %v", err)
		}
		if _, err := jc.OpenAudioStream("TR_mic", AudioFormat{SampleRate: 48000, NumChannels: 1,
			FrameDuration: -10 * time.Millisecond}); !errors.Is(err, ErrInvalid) {
			t.Errorf("negative frame duration: %v", err)
		}
		err := jc.PublishData([]byte("x"), DataOptions{DestinationIdentities: []string{"a", ""}})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("empty identity: %v", err)
		}
		src, _ := jc.PublishAudio("out", Mono(48000))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := src.Capture(ctx, make([]int16, 480)); !errors.Is(err, context.Canceled) {
			t.Errorf("capture with a cancelled ctx: %v", err)
		}
		if len(f.sources[0].captured) != 0 {
			t.Error("a cancelled ctx still queued audio")
		}
		return 0
	}))
	if n := len(f.logged("lkgo: OpenAudioStream: sample rate 4295015296 Hz")); n != 1 {
		t.Fatalf("%q", f.logs)
	}
	if n := len(f.logged("lkgo: PublishData: an empty destination identity")); n != 1 {
		t.Fatalf("%q", f.logs)
	}
}

func TestDescriptorStringsFollowLkGosRule(t *testing.T) {
	for s, ok := range map[string]bool{
		"go-echo": true, "0.1.0": true, "é": true,
		strings.Repeat("a", 256): true, strings.Repeat("a", 257): false,
		"a\nb": false, "a\x00b": false, "\xff": false,
	} {
		if descriptorString(s) != ok {
			t.Errorf("descriptorString(%q) = %v", s, !ok)
		}
	}
}

// goexitValue's String ends its goroutine: formatting it on a host thread
// used to abort lk-go.
type goexitValue struct{}

func (goexitValue) String() string { runtime.Goexit(); return "" }

func TestAPanicValueWhoseStringCallsGoexitIsStillReported(t *testing.T) {
	f := newFakeHost()
	res := startJob(f, func(jc *JobContext) int {
		jc.OnShutdown(func(ShutdownInfo) { panic(goexitValue{}) })
		panic(goexitValue{})
	})
	if c := result(t, res); c != runPanicked {
		t.Fatalf("run returned %d", c)
	}
	f.cascade()
	if n := len(f.logged("whose Error or String method called runtime.Goexit")); n != 2 {
		t.Fatalf("%q", f.logs)
	}
}

func TestAFrameDurationThatIsNotAMultipleOf10msIsRefused(t *testing.T) {
	f := newFakeHost()
	result(t, startJob(f, func(jc *JobContext) int {
		for _, d := range []time.Duration{10*time.Millisecond + 1, 500 * time.Microsecond, 15 * time.Millisecond} {
			_, err := jc.OpenAudioStream("TR_mic", AudioFormat{SampleRate: 48000, NumChannels: 1, FrameDuration: d})
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("frame duration %v: %v", d, err)
			}
		}
		return 0
	}))
}

func TestAnExitCodeBeyond32BitsIsNotASuccess(t *testing.T) {
	for in, want := range map[int]int32{1 << 32: math.MaxInt32, -(1 << 33): math.MinInt32, 7: 7} {
		if got := runJob(newFakeHost(), func(*JobContext) int { return in }); got != want {
			t.Errorf("Run returned %d: the host got %d, want %d", in, got, want)
		}
	}
}
