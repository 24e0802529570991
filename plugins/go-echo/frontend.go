package main

// What the echo does for a LiveKit frontend besides audio (ABI 1.4): the
// contract every example echo keeps, in Rust (plugins/echo), C and Go:
//   - RPC method "echo" returns its payload unchanged (any other method is
//     1400: the host answers it);
//   - each text stream on lk.chat is answered with an agent transcript
//     segment on lk.transcription whose final text is "echo: " and the
//     message, for the agent's microphone track;
//   - a byte stream on echo.bytes is answered, to its sender only, by a
//     text stream on echo.bytes.sha256 holding the lowercase hex SHA-256 of
//     the bytes, with attribute name = the byte stream's name;
//   - when a participant joins, it calls RPC frontend.hello on them with
//     its own identity as the payload and logs the answer or error code;
//   - the benchmark's protocol (cargo xtask bench): a stream on bench.sink
//     is answered on bench.sink.done with its byte count; RPC bench.source
//     with payload N returns, then sends the caller N bytes on
//     bench.source.data.
//
// For the tests, job metadata rpc=hang also registers "hang" (a handler
// that does not return for 60 s, or until the job shuts down) and
// rpc=many 10 000 methods m0 ... m9999 (each returns its own name).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"lkgo.example/lkgo"
)

// sendTimeout bounds each send of an answer.
const sendTimeout = 10 * time.Second

// hasFlag reports whether metadata holds the key=value pair kv.
func hasFlag(metadata, kv string) bool {
	for _, f := range strings.Fields(metadata) {
		if f == kv {
			return true
		}
	}
	return false
}

// startFrontend registers the RPC methods and the stream topics and starts
// answering streams; false on a host older than ABI 1.4 (the echo then
// only echoes).
func startFrontend(jc *lkgo.JobContext, micSID, metadata string) bool {
	if !jc.HasStreams() {
		jc.Warnf("go-echo: the host is older than ABI 1.4: no RPC, chat or byte streams")
		return false
	}
	register := func(method string, h lkgo.RPCHandler) error {
		err := jc.RegisterRPC(method, h)
		if err != nil {
			jc.Warnf("go-echo: could not register RPC method %s: %v", method, err)
		}
		return err
	}
	_ = register("echo", func(_ context.Context, inv lkgo.RPCInvocation) (string, error) {
		return inv.Payload, nil
	})
	_ = register("bench.source", func(_ context.Context, inv lkgo.RPCInvocation) (string, error) {
		n, err := strconv.Atoi(strings.TrimSpace(inv.Payload))
		if err != nil || n < 0 {
			return "", &lkgo.RPCError{Code: lkgo.RPCApplicationError, Message: "payload is not a byte count"}
		}
		caller := inv.CallerIdentity
		// After the response: the handler returns at once.
		jc.Go(func() {
			err := jc.SendBytes(bytes.Repeat([]byte{'x'}, n), lkgo.StreamOptions{
				Topic: "bench.source.data", Name: "bench.bin",
				DestinationIdentities: []string{caller}, Timeout: sendTimeout,
			})
			if err != nil {
				jc.Warnf("go-echo: bench.source: %v", err)
			}
		})
		return strconv.Itoa(n), nil
	})
	if hasFlag(metadata, "rpc=hang") {
		_ = register("hang", func(context.Context, lkgo.RPCInvocation) (string, error) {
			select {
			case <-time.After(60 * time.Second):
			case <-jc.Ctx.Done():
			}
			return "too late", nil
		})
	}
	if hasFlag(metadata, "rpc=many") {
		for i := 0; i < 10_000; i++ {
			name := "m" + strconv.Itoa(i)
			err := register(name, func(context.Context, lkgo.RPCInvocation) (string, error) { return name, nil })
			if err != nil {
				break
			}
		}
		jc.Infof("go-echo: 10000 methods registered")
	}
	if err := jc.AcceptStreams(lkgo.ChatTopic, "echo.bytes", "bench.sink"); err != nil {
		jc.Warnf("go-echo: cannot accept streams: %v", err)
	}
	jc.Go(func() {
		for ev := range jc.Streams() {
			switch ev := ev.(type) {
			case *lkgo.StreamReader:
				// A goroutine per stream: a large one never holds up a chat.
				jc.Go(func() { answerStream(jc, ev, micSID) })
			case lkgo.StreamsMissed:
				jc.Warnf("go-echo: %d incoming streams dropped", ev.Count)
			}
		}
	})
	return true
}

// answerStream reads one incoming stream and answers it as its topic says.
func answerStream(jc *lkgo.JobContext, r *lkgo.StreamReader, micSID string) {
	defer r.Close()
	info := r.Info()
	failed := func(err error) {
		jc.Infof("go-echo: stream %s on %s from %s failed: %v", info.StreamID, info.Topic, info.SenderIdentity, err)
	}
	var err error
	switch {
	case info.Topic == lkgo.ChatTopic && info.Kind == lkgo.StreamText:
		message, rerr := r.ReadText(jc.Ctx)
		if rerr != nil {
			failed(rerr)
			return
		}
		jc.Infof("go-echo: chat from %s: %s", info.SenderIdentity, message)
		err = say(jc, micSID, "echo: ", message)
	case info.Topic == "echo.bytes":
		h := sha256.New()
		n, rerr := io.Copy(h, r)
		if rerr != nil {
			failed(rerr)
			return
		}
		digest := hex.EncodeToString(h.Sum(nil))
		jc.Infof("go-echo: %d bytes named %s from %s: sha256 %s", n, info.Name, info.SenderIdentity, digest)
		err = jc.SendText(digest, lkgo.StreamOptions{
			Topic: "echo.bytes.sha256", Attributes: map[string]string{"name": info.Name},
			DestinationIdentities: []string{info.SenderIdentity}, Timeout: sendTimeout,
		})
	case info.Topic == "bench.sink":
		n, rerr := io.Copy(io.Discard, r)
		if rerr != nil {
			failed(rerr)
			return
		}
		err = jc.SendText(strconv.FormatInt(n, 10), lkgo.StreamOptions{
			Topic: "bench.sink.done", DestinationIdentities: []string{info.SenderIdentity}, Timeout: sendTimeout,
		})
	default:
		return
	}
	if err != nil {
		jc.Warnf("go-echo: answering %s failed: %v", info.Topic, err)
	}
}

// say sends the pieces as one segment of the agent's transcript for its
// microphone track.
func say(jc *lkgo.JobContext, micSID string, pieces ...string) error {
	t, err := jc.AgentTranscript(micSID, sendTimeout)
	if err != nil {
		return err
	}
	for _, p := range pieces {
		if err := t.Push(p); err != nil {
			_ = t.Abort("go-echo: " + err.Error())
			return err
		}
	}
	return t.Finish()
}

// greet calls frontend.hello on a participant who joined, on a goroutine
// of its own (the call may take the ack and response timeouts).
func greet(jc *lkgo.JobContext, identity string) {
	if !jc.HasStreams() {
		return
	}
	jc.Go(func() {
		answer, err := jc.PerformRPC(jc.Ctx, identity, "frontend.hello", jc.Job.Identity, 10*time.Second)
		var re *lkgo.RPCError
		switch {
		case err == nil:
			jc.Infof("go-echo: frontend.hello to %s answered: %s", identity, answer)
		case errors.As(err, &re):
			jc.Infof("go-echo: frontend.hello to %s failed with code %d: %s", identity, re.Code, re.Message)
		default:
			jc.Infof("go-echo: frontend.hello to %s not made: %v", identity, err)
		}
	})
}
