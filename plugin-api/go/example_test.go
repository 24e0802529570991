package lkgo_test

import (
	"errors"
	"time"

	"lkgo.example/lkgo"
)

// A plugin registers once, from init; main is required and never runs.
func ExampleRegister() {
	lkgo.Register(lkgo.Plugin{
		Name:    "greeter",
		Version: "1.0.0",
		Run: func(jc *lkgo.JobContext) int {
			jc.Infof("hello from job %s", jc.Job.ID)
			return 0
		},
	})
}

// Room events as a channel, with a type switch; the loop ends when the job
// shuts down.
func ExampleJobContext_Events() {
	run := func(jc *lkgo.JobContext) int {
		for ev := range jc.Events() {
			switch ev := ev.(type) {
			case lkgo.ParticipantJoined:
				jc.Infof("%s joined", ev.Participant.Identity)
			case lkgo.TrackSubscribed:
				jc.Infof("subscribed to %s (%s)", ev.Track.SID, ev.Track.Source)
			case lkgo.EventsMissed:
				jc.Warnf("fell behind: %d events dropped", ev.Count)
			}
		}
		return 0
	}
	_ = run
}

// An echo: every frame of a subscribed microphone goes back out.
func ExampleAudioStream_Frames() {
	echo := func(jc *lkgo.JobContext, trackSID string) error {
		out, err := jc.PublishAudio("echo", lkgo.Mono(48000))
		if err != nil {
			return err
		}
		defer out.Close()
		in, err := jc.OpenAudioStream(trackSID, lkgo.Mono(48000))
		if err != nil {
			return err
		}
		defer in.Close()
		for frame := range in.Frames() {
			if err := out.Capture(jc.Ctx, frame.Data); err != nil {
				return err
			}
		}
		if errors.Is(in.Err(), lkgo.ErrEnded) {
			return nil // the participant unpublished
		}
		return in.Err()
	}
	_ = echo
}

// Shutdown hooks run exactly once, after the job left the room.
func ExampleJobContext_OnShutdown() {
	run := func(jc *lkgo.JobContext) int {
		jc.OnShutdown(func(info lkgo.ShutdownInfo) {
			jc.Infof("shut down: %s (%s)", info.Reason, info.Detail)
		})
		<-jc.Ctx.Done()
		return 0
	}
	_ = run
}

// Data packets: answer a ping to its sender only.
func ExampleJobContext_Data() {
	run := func(jc *lkgo.JobContext) int {
		for ev := range jc.Data() {
			if p, ok := ev.(lkgo.DataPacket); ok && p.Topic == "lk.ping" {
				_ = jc.PublishData(p.Payload, lkgo.DataOptions{
					Topic: "lk.pong", Reliable: true,
					DestinationIdentities: []string{p.Sender}, Timeout: time.Second,
				})
			}
		}
		return 0
	}
	_ = run
}
