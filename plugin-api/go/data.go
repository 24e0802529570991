package lkgo

// User data packets and the job participant's attributes and metadata
// (ABI 1.3). Owns the Data pump. Must not touch: room events or audio.

import (
	"fmt"
	"time"
)

// DataOptions says how PublishData sends a packet.
type DataOptions struct {
	// Topic (at most 256 bytes; may be empty) lets receivers tell
	// packets apart, as in the LiveKit SDKs.
	Topic string
	// Reliable: ordered and retransmitted. Otherwise lossy (keep lossy
	// payloads under ~1300 bytes, one MTU).
	Reliable bool
	// DestinationIdentities are the participants to send to (at most
	// 1024, each 1 to 256 bytes); empty means everyone in the room.
	DestinationIdentities []string
	// Timeout is how long PublishData waits for the packet to be handed
	// to its data channel (the first send negotiates the publisher
	// connection); 0 means 5 s.
	Timeout time.Duration
}

// MaxReliableData is the largest data packet payload, in bytes: 15 KiB,
// LiveKit's documented limit for reliable packets (LK_MAX_RELIABLE_DATA).
// PublishData refuses more with ErrTooLarge, lossy packets too (keep
// those under ~1300 bytes).
const MaxReliableData = 15 * 1024

const defaultControlTimeout = 5 * time.Second

// dataBuffer is the Data channel's capacity; behind it the host queues
// 1024 packets and reports what it drops as DataMissed.
const dataBuffer = 64

func millis(d, fallback time.Duration) uint32 {
	if d <= 0 {
		d = fallback
	}
	ms := d.Milliseconds()
	if ms > int64(^uint32(0)) {
		ms = int64(^uint32(0))
	}
	return uint32(ms)
}

// PublishData sends payload (copied during the call; at most
// MaxReliableData bytes) as a user data packet. Errors: ErrTooLarge
// (payload, a topic or an identity too long), ErrTimeout (not handed over
// in time; it still goes out once the channel is ready),
// ErrNotConnected, ErrShuttingDown, ErrInvalid, ErrHostTooOld.
func (jc *JobContext) PublishData(payload []byte, opts DataOptions) error {
	if !jc.h.hasMedia() {
		return ErrHostTooOld
	}
	for _, id := range opts.DestinationIdentities {
		if id == "" {
			return jc.invalid("PublishData", "an empty destination identity (leave DestinationIdentities empty to send to everyone)")
		}
	}
	var flags uint32
	if opts.Reliable {
		flags = dataReliable
	}
	return jc.check(jc.h.publishData(payload, opts.Topic, opts.DestinationIdentities, flags,
		millis(opts.Timeout, defaultControlTimeout)))
}

// DataPacket is a user data packet another participant (or the server
// API) sent to this job, copied into Go memory.
type DataPacket struct {
	Payload []byte
	// Topic is the sender's topic; may be empty.
	Topic string
	// Sender is the sender's participant identity; empty when the server
	// API sent it.
	Sender string
	// Reliable: sent reliable (ordered, retransmitted).
	Reliable bool
}

// DataMissed: the host's queue of 1024 packets was full and Count packets
// were dropped; the channel goes on with the next packet.
type DataMissed struct{ Count uint64 }

// DataEvent is what Data delivers: a DataPacket or a DataMissed.
type DataEvent interface{ isDataEvent() }

func (DataPacket) isDataEvent() {}
func (DataMissed) isDataEvent() {}

// Data returns the data packets sent to this job, in arrival order, and
// DataMissed values for packets the host had to drop. One goroutine
// (started by the first call; later calls return the same channel) moves
// them from the host. The channel is closed once shutdown began and every
// queued packet was delivered, or once Run returned. A job without a
// server session (lk-go --detached) receives nothing until shutdown.
// Without a host that has data (ErrHostTooOld) it is closed at once.
func (jc *JobContext) Data() <-chan DataEvent {
	jc.dataOnce.Do(func() {
		jc.data = make(chan DataEvent, dataBuffer)
		if !jc.h.hasMedia() {
			close(jc.data)
			return
		}
		go jc.pumpData(jc.data)
	})
	return jc.data
}

func (jc *JobContext) pumpData(out chan<- DataEvent) {
	defer close(out)
	defer jc.recoverAs("lkgo data pump")
	for {
		p, rc, missed := jc.h.nextData(pumpWaitMs)
		var ev DataEvent
		switch rc {
		case codeOK:
			ev = p
		case codeMissed:
			ev = DataMissed{Count: missed}
		case codeTimeout:
			select {
			case <-jc.done:
				return
			default:
				continue
			}
		case codeShuttingDown:
			jc.sawShutdown()
			return
		default:
			jc.h.log(logError, fmt.Sprintf("lkgo: next_data returned %d; the Data channel closes", rc))
			return
		}
		select {
		case out <- ev:
		case <-jc.done:
			return
		}
	}
}

// SetAttributes merges attrs into the job participant's attributes (an
// empty value deletes the key), as the LiveKit SDKs' set_attributes does,
// and waits up to timeout (0 means 5 s) for the server to confirm.
// Errors: ErrTimeout (sent, not confirmed in time: it may still apply),
// ErrRefused (e.g. the token lacks canUpdateOwnMetadata), ErrNotConnected,
// ErrShuttingDown, ErrInvalid (an empty key), ErrHostTooOld.
func (jc *JobContext) SetAttributes(attrs map[string]string, timeout time.Duration) error {
	if !jc.h.hasMedia() {
		return ErrHostTooOld
	}
	keys := make([]string, 0, len(attrs))
	values := make([]string, 0, len(attrs))
	for k, v := range attrs {
		keys = append(keys, k)
		values = append(values, v)
	}
	return jc.check(jc.h.setAttributes(keys, values, millis(timeout, defaultControlTimeout)))
}

// SetMetadata replaces the job participant's metadata (non-empty:
// livekit-server reads "" as "unchanged", so "" is ErrInvalid); otherwise
// as SetAttributes.
func (jc *JobContext) SetMetadata(metadata string, timeout time.Duration) error {
	if !jc.h.hasMedia() {
		return ErrHostTooOld
	}
	return jc.check(jc.h.setMetadata(metadata, millis(timeout, defaultControlTimeout)))
}
