package lkgo

// Room events: the typed Event values and the one goroutine that pumps the
// host's next_event into the Events channel. Must not touch: media or data
// (data.go has its own pump).

import "fmt"

// Participant names a participant of the room.
type Participant struct {
	// Identity is the participant identity (as in its token).
	Identity string
	// SID is the participant sid the server gave this session (PA_…).
	SID string
}

// TrackKind is a track's media kind.
type TrackKind uint32

// Track kinds, as in lk_plugin.h.
const (
	TrackKindUnknown TrackKind = 0
	TrackKindAudio   TrackKind = 1
	TrackKindVideo   TrackKind = 2
)

func (k TrackKind) String() string {
	switch k {
	case TrackKindAudio:
		return "audio"
	case TrackKindVideo:
		return "video"
	}
	return "unknown"
}

// TrackSource is where a track comes from, as its publisher declared it.
type TrackSource uint32

// Track sources, as in lk_plugin.h.
const (
	TrackSourceUnknown          TrackSource = 0
	TrackSourceCamera           TrackSource = 1
	TrackSourceMicrophone       TrackSource = 2
	TrackSourceScreenShare      TrackSource = 3
	TrackSourceScreenShareAudio TrackSource = 4
)

func (s TrackSource) String() string {
	switch s {
	case TrackSourceCamera:
		return "camera"
	case TrackSourceMicrophone:
		return "microphone"
	case TrackSourceScreenShare:
		return "screen_share"
	case TrackSourceScreenShareAudio:
		return "screen_share_audio"
	}
	return "unknown"
}

// Track describes a remote track publication.
type Track struct {
	// SID is the track sid (TR_…); OpenAudioStream takes it.
	SID string
	// Name is the name its publisher gave it; may be empty.
	Name   string
	Kind   TrackKind
	Source TrackSource
}

// Event is a room event from Events: one of ParticipantJoined,
// ParticipantLeft, TrackPublished, TrackUnpublished, TrackSubscribed,
// TrackUnsubscribed, TrackMuted, TrackUnmuted, LocalTrackSubscribed,
// Disconnected, Reconnecting, Reconnected, EventsMissed or UnknownEvent.
// Use a type switch.
type Event interface {
	// EventName is the host's stable snake_case name, e.g.
	// "track_subscribed" ("events_missed" for EventsMissed).
	EventName() string
	isEvent()
}

// ParticipantJoined: a participant is in the room. The first events of a
// job describe the room as joined: one per participant already there.
type ParticipantJoined struct{ Participant Participant }

// ParticipantLeft: a participant left the room.
type ParticipantLeft struct{ Participant Participant }

// TrackPublished: a participant published a track.
type TrackPublished struct {
	Participant Participant
	Track       Track
}

// TrackUnpublished: a participant unpublished a track.
type TrackUnpublished struct {
	Participant Participant
	Track       Track
}

// TrackSubscribed: the job now receives the track; for an audio track,
// OpenAudioStream(ev.Track.SID, …) reads it.
type TrackSubscribed struct {
	Participant Participant
	Track       Track
}

// TrackUnsubscribed: the job no longer receives the track; its audio
// streams end (ErrEnded once drained).
type TrackUnsubscribed struct {
	Participant Participant
	Track       Track
}

// TrackMuted (ABI 1.4): the publisher muted a remote track. The server
// then forwards no media: an AudioStream of it delivers frames with
// Silence set, in real time. A track published muted is announced
// TrackPublished, then TrackMuted.
type TrackMuted struct {
	Participant Participant
	Track       Track
}

// TrackUnmuted (ABI 1.4): the publisher unmuted a remote track.
type TrackUnmuted struct {
	Participant Participant
	Track       Track
}

// LocalTrackSubscribed (ABI 1.4): a track this job published (TrackSID is
// its AudioSource.TrackSID) has its first subscriber. livekit-server says
// so once per publication and nothing of later subscribers. An agent that
// speaks first waits for this, or calls AudioSource.WaitSubscribed.
type LocalTrackSubscribed struct{ TrackSID string }

// Disconnected: the job lost the room for good; shutdown follows.
type Disconnected struct{ Reason string }

// Reconnecting: the session was interrupted and lk-go is resuming it;
// Reason says why (e.g. "connection_lost"). Reconnected or Disconnected
// follows.
type Reconnecting struct{ Reason string }

// Reconnected: the session is back. Reason is "resumed" (same participant
// session) or "rejoined" (a new one: participant and track events describe
// what changed, and audio sources must be published again).
type Reconnected struct{ Reason string }

// EventsMissed: the plugin fell behind and the host dropped Count events
// (its queue is bounded). The channel goes on with the next event.
type EventsMissed struct{ Count uint64 }

// UnknownEvent is an event kind this package does not know (a newer host
// never sends one to an older plugin; kept so that nothing is dropped
// silently).
type UnknownEvent struct {
	Kind uint32
	Name string
}

func (ParticipantJoined) EventName() string    { return "participant_joined" }
func (ParticipantLeft) EventName() string      { return "participant_left" }
func (TrackPublished) EventName() string       { return "track_published" }
func (TrackUnpublished) EventName() string     { return "track_unpublished" }
func (TrackSubscribed) EventName() string      { return "track_subscribed" }
func (TrackUnsubscribed) EventName() string    { return "track_unsubscribed" }
func (TrackMuted) EventName() string           { return "track_muted" }
func (TrackUnmuted) EventName() string         { return "track_unmuted" }
func (LocalTrackSubscribed) EventName() string { return "local_track_subscribed" }
func (Disconnected) EventName() string         { return "disconnected" }
func (Reconnecting) EventName() string         { return "reconnecting" }
func (Reconnected) EventName() string          { return "reconnected" }
func (EventsMissed) EventName() string         { return "events_missed" }
func (e UnknownEvent) EventName() string       { return e.Name }

func (ParticipantJoined) isEvent()    {}
func (ParticipantLeft) isEvent()      {}
func (TrackPublished) isEvent()       {}
func (TrackUnpublished) isEvent()     {}
func (TrackSubscribed) isEvent()      {}
func (TrackUnsubscribed) isEvent()    {}
func (TrackMuted) isEvent()           {}
func (TrackUnmuted) isEvent()         {}
func (LocalTrackSubscribed) isEvent() {}
func (Disconnected) isEvent()         {}
func (Reconnecting) isEvent()         {}
func (Reconnected) isEvent()          {}
func (EventsMissed) isEvent()         {}
func (UnknownEvent) isEvent()         {}

// rawEvent is an lk_event copied into Go memory.
type rawEvent struct {
	kind, trackKind, trackSource uint32
	name, participantIdentity    string
	participantSID, trackSID     string
	trackName, reason            string
}

func (r rawEvent) typed() Event {
	p := Participant{Identity: r.participantIdentity, SID: r.participantSID}
	t := Track{SID: r.trackSID, Name: r.trackName, Kind: TrackKind(r.trackKind), Source: TrackSource(r.trackSource)}
	switch r.kind {
	case kindParticipantJoined:
		return ParticipantJoined{p}
	case kindParticipantLeft:
		return ParticipantLeft{p}
	case kindTrackPublished:
		return TrackPublished{p, t}
	case kindTrackUnpublished:
		return TrackUnpublished{p, t}
	case kindTrackSubscribed:
		return TrackSubscribed{p, t}
	case kindTrackUnsubscribed:
		return TrackUnsubscribed{p, t}
	case kindTrackMuted:
		return TrackMuted{p, t}
	case kindTrackUnmuted:
		return TrackUnmuted{p, t}
	case kindLocalTrackSubscribed:
		return LocalTrackSubscribed{r.trackSID}
	case kindDisconnected:
		return Disconnected{r.reason}
	case kindReconnecting:
		return Reconnecting{r.reason}
	case kindReconnected:
		return Reconnected{r.reason}
	}
	return UnknownEvent{Kind: r.kind, Name: r.name}
}

// eventBuffer is the Events channel's capacity: as many events as the
// host itself queues for a plugin (lk-go 1024). Beyond it the pump counts
// what it drops and reports it as one EventsMissed value.
const eventBuffer = 1024

// pumpWaitMs is how long one pump call waits in the host; the host
// returns within ~100 ms of shutdown whatever the timeout.
const pumpWaitMs = 1000

// Events returns the job's room events, in order, on a channel buffered
// for 1024. The first events describe the room as joined. Events that did
// not fit because nobody read them (or the host had to drop) arrive as one
// EventsMissed value in their place. The channel is closed once shutdown
// began and every event before it was delivered, or once Run returned.
// Every call returns the same channel: read it from one goroutine, or from
// several that share the work (each event is delivered once).
func (jc *JobContext) Events() <-chan Event { return jc.events }

// pumpEvents runs from the job's start to its shutdown: it moves events
// from the host into the channel without ever blocking on it, so the
// host's LK_NEXT_SHUTTING_DOWN reaches it (and cancels Ctx) however far
// behind the reader is. Blocked in next_event it costs no CPU.
func (jc *JobContext) pumpEvents() {
	out := jc.events
	defer close(out)
	defer jc.recoverAs("lkgo event pump")
	var missed uint64
	// reportGap queues the pending EventsMissed, if any, unless the
	// channel is full; true when no gap is pending any more.
	reportGap := func() bool {
		if missed == 0 {
			return true
		}
		select {
		case out <- EventsMissed{Count: missed}:
			missed = 0
			return true
		default:
			return false
		}
	}
	// offer queues ev unless the channel is full; a pending gap goes
	// first, so every gap is reported where it happened.
	offer := func(ev Event) {
		if !reportGap() {
			missed++
			return
		}
		select {
		case out <- ev:
		default:
			missed++
		}
	}
	for {
		raw, rc, n := jc.h.nextEvent(pumpWaitMs)
		switch rc {
		case nextEvent:
			offer(raw.typed())
		case nextMissed:
			missed += n
		case nextTimeout:
			select {
			case <-jc.done:
				return
			default:
			}
			// A quiet room: report a gap now rather than before the
			// next event.
			reportGap()
		case nextShuttingDown:
			jc.sawShutdown()
			jc.flushMissed(out, missed)
			return
		default:
			// Only a NULL argument gets this; never leave Ctx waiting.
			msg := fmt.Sprintf("lkgo: next_event returned %d; the job shuts down", rc)
			jc.h.log(logError, msg)
			jc.Shutdown(msg)
			return
		}
	}
}

// flushMissed delivers a last EventsMissed before the channel closes,
// waiting for room unless Run already returned.
func (jc *JobContext) flushMissed(out chan<- Event, missed uint64) {
	if missed == 0 {
		return
	}
	select {
	case out <- EventsMissed{Count: missed}:
	case <-jc.done:
	}
}
