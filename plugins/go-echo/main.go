// go-echo: the echo agent of plugins/echo (Rust) and plugins/c-echo (C),
// in Go on the lkgo SDK. It sets lk.agent.state=listening, publishes an
// audio track "go-echo", echoes the first subscribed remote microphone
// into it (then the next one, when that ends), and answers each data
// packet on topic "lk.ping" with the same payload on "lk.pong", reliably,
// to the sender only.
//
// With a host of ABI 1.4 it also keeps the echoes' frontend contract
// (frontend.go): RPC "echo", chat answered as an agent transcript, byte
// streams answered with their SHA-256, "frontend.hello" to every
// participant who joins, and the benchmark's bench.sink / bench.source.
//
// Job metadata (space-separated key=value) selects what the tests use:
// rate=N (Hz, default 48000), exit=N (Run's result, default 0), rpc=hang
// and rpc=many (frontend.go), and mode=block: goroutines wait in
// Events(), an audio Read, Data() and <-Ctx.Done() until the job is
// stopped from outside (e.g. SIGTERM); each logs the unix ms at which it
// returned, and a shutdown hook logs when shutdown began.
//
// Build: go build -buildmode=c-shared -o libgo_echo.so .
package main

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"lkgo.example/lkgo"
)

func init() {
	lkgo.Register(lkgo.Plugin{Name: "go-echo", Version: "0.1.0", Run: run})
}

func main() {}

// setting is the value of key in "k=v k2=v2" metadata, or def.
func setting(metadata, key, def string) string {
	for _, kv := range strings.Fields(metadata) {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return def
}

func unixMs() int64 { return time.Now().UnixMilli() }

func run(jc *lkgo.JobContext) int {
	md := jc.Job.Metadata
	rate, _ := strconv.Atoi(setting(md, "rate", "48000"))
	exit, _ := strconv.Atoi(setting(md, "exit", "0"))
	if err := jc.SetAttributes(map[string]string{"lk.agent.state": "listening"}, 5*time.Second); err != nil {
		jc.Warnf("go-echo: set_attributes failed: %v; echoing anyway", err)
	}
	source, err := jc.PublishAudio("go-echo", lkgo.Mono(rate))
	if errors.Is(err, lkgo.ErrShuttingDown) {
		return exit
	} else if err != nil {
		jc.Errorf("go-echo: could not publish its track: %v", err)
		return 1
	}
	jc.Infof("go-echo: publishing %s at %d Hz", source.TrackSID(), rate)
	if setting(md, "mode", "echo") == "block" {
		block(jc, rate)
		jc.Infof("go-echo: run returns %d at unix_ms %d", exit, unixMs())
		return exit
	}
	startFrontend(jc, source.TrackSID(), md)
	pings := make(chan struct{})
	jc.Go(func() { defer close(pings); answerPings(jc) })
	echo(jc, source, rate, watchRoom(jc))
	jc.Shutdown("go-echo: the echo loop ended") // a no-op once shutdown began
	<-pings                                     // Data closes within ~100 ms of shutdown
	return exit
}

// microphone is a subscribed remote microphone.
type microphone struct{ sid, identity string }

// watchRoom reads the room's events on a goroutine of its own (so that a
// join is answered while audio is being echoed): it greets every
// participant who joins and hands each subscribed remote microphone to
// the echo loop. The channel closes when the job shuts down.
func watchRoom(jc *lkgo.JobContext) <-chan microphone {
	mics := make(chan microphone, 16)
	jc.Go(func() {
		defer close(mics)
		for ev := range jc.Events() {
			switch ev := ev.(type) {
			case lkgo.ParticipantJoined:
				greet(jc, ev.Participant.Identity)
			case lkgo.TrackSubscribed:
				if ev.Track.Kind != lkgo.TrackKindAudio || ev.Track.Source != lkgo.TrackSourceMicrophone {
					continue
				}
				select {
				case mics <- microphone{ev.Track.SID, ev.Participant.Identity}:
				default:
					jc.Warnf("go-echo: too many microphones waiting; %s is not echoed", ev.Track.SID)
				}
			case lkgo.EventsMissed:
				jc.Warnf("go-echo: %d room events missed", ev.Count)
			}
		}
	})
	return mics
}

// echo copies every frame of the current microphone into source, one
// microphone after the other.
func echo(jc *lkgo.JobContext, source *lkgo.AudioSource, rate int, mics <-chan microphone) {
	// 20 ms frames: one per Opus packet, half the wake-ups (and cgo calls)
	// of 10 ms frames, no added delay (the host decodes 20 ms at a time).
	format := lkgo.Mono(rate)
	format.FrameDuration = 20 * time.Millisecond
	for mic := range mics {
		stream, err := jc.OpenAudioStream(mic.sid, format)
		if err != nil {
			// Unsubscribed while an earlier one was echoed, typically.
			jc.Warnf("go-echo: cannot read %s: %v", mic.sid, err)
			continue
		}
		jc.Infof("go-echo: echoing %s of %s", mic.sid, mic.identity)
		var dropped uint64
		for {
			// Read on this goroutine: cheaper than ranging over
			// stream.Frames(), which hands every frame to another goroutine.
			var f lkgo.AudioFrame
			if f, err = stream.Read(jc.Ctx); err != nil {
				break
			}
			dropped += f.DroppedFrames
			cerr := source.Capture(jc.Ctx, f.Data)
			if errors.Is(cerr, lkgo.ErrClosed) {
				// The host closed it after a rejoin: publish again.
				jc.Infof("go-echo: the source was closed by the host; publishing again")
				if source, cerr = jc.PublishAudio("go-echo", source.Format()); cerr != nil {
					jc.Warnf("go-echo: could not publish again: %v", cerr)
					stream.Close()
					return
				}
			} else if cerr != nil && jc.Ctx.Err() == nil {
				jc.Warnf("go-echo: capture: %v", cerr)
			}
		}
		jc.Infof("go-echo: the microphone ended: %v (frames dropped: %d)", err, dropped)
		stream.Close()
		if jc.Ctx.Err() != nil {
			return
		}
	}
}

// nextMicrophone waits for a subscribed remote microphone and opens it
// (mode=block, which reads Events itself); nil once the job shuts down.
func nextMicrophone(jc *lkgo.JobContext, rate int) *lkgo.AudioStream {
	for ev := range jc.Events() {
		switch ev := ev.(type) {
		case lkgo.TrackSubscribed:
			if ev.Track.Kind != lkgo.TrackKindAudio || ev.Track.Source != lkgo.TrackSourceMicrophone {
				continue
			}
			stream, err := jc.OpenAudioStream(ev.Track.SID, lkgo.Mono(rate))
			if err != nil {
				jc.Warnf("go-echo: cannot read %s: %v", ev.Track.SID, err)
				continue
			}
			jc.Infof("go-echo: echoing %s of %s", ev.Track.SID, ev.Participant.Identity)
			return stream
		case lkgo.EventsMissed:
			jc.Warnf("go-echo: %d room events missed", ev.Count)
		}
	}
	return nil
}

// answerPings answers lk.ping with lk.pong, to the sender only.
func answerPings(jc *lkgo.JobContext) {
	answered := 0
	for ev := range jc.Data() {
		p, ok := ev.(lkgo.DataPacket)
		if !ok {
			jc.Warnf("go-echo: data packets dropped: %+v", ev)
			continue
		}
		if p.Topic != "lk.ping" || p.Sender == "" {
			continue
		}
		err := jc.PublishData(p.Payload, lkgo.DataOptions{
			Topic: "lk.pong", Reliable: true, DestinationIdentities: []string{p.Sender},
		})
		if err != nil {
			jc.Warnf("go-echo: pong failed: %v", err)
			continue
		}
		answered++
	}
	jc.Infof("go-echo: data done, %d pings answered", answered)
}

// block parks goroutines in every blocking call until the job is stopped
// from outside; each logs when its call returned.
func block(jc *lkgo.JobContext, rate int) {
	stream := nextMicrophone(jc, rate)
	if stream == nil {
		return
	}
	defer stream.Close()
	jc.OnShutdown(func(info lkgo.ShutdownInfo) {
		jc.Infof("go-echo: shutdown began at unix_ms %d (%s)", info.UnixMs, info.Reason)
	})
	var wg sync.WaitGroup
	waiting := func(what string, wait func() string) {
		wg.Add(1)
		jc.Go(func() {
			defer wg.Done()
			r := wait()
			jc.Infof("go-echo: %s returned (%s) at unix_ms %d", what, r, unixMs())
		})
	}
	waiting("events", func() string {
		for range jc.Events() {
		}
		return "closed"
	})
	waiting("read", func() string {
		for {
			if _, err := stream.Read(jc.Ctx); err != nil {
				return err.Error()
			}
		}
	})
	waiting("data", func() string {
		for range jc.Data() {
		}
		return "closed"
	})
	waiting("ctx", func() string {
		<-jc.Ctx.Done()
		return jc.Ctx.Err().Error()
	})
	jc.Infof("go-echo: all goroutines are waiting")
	wg.Wait()
}
