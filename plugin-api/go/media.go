package lkgo

// Audio in and out (ABI 1.3): AudioStream reads a subscribed track as PCM
// frames, AudioSource publishes a track fed from PCM. Owns the Go shape
// of those handles and the result codes' errors. Must not touch: room
// events or data packets.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Errors of the media and data calls. Each is one host result code
// (lk_plugin.h, LK_*); compare with errors.Is. The host logs the detail
// of an invalid or refused call.
var (
	ErrTimeout      = errors.New("lkgo: timed out")
	ErrShuttingDown = errors.New("lkgo: the job is shutting down")
	ErrEnded        = errors.New("lkgo: the track ended and every frame was read")
	ErrInvalid      = errors.New("lkgo: invalid argument (lk-go's log says which)")
	ErrUnsupported  = errors.New("lkgo: not supported (e.g. a video track)")
	ErrNotFound     = errors.New("lkgo: no subscribed track with that sid")
	ErrTooLarge     = errors.New("lkgo: too large")
	ErrNotConnected = errors.New("lkgo: not connected to the room")
	ErrClosed       = errors.New("lkgo: closed")
	ErrRefused      = errors.New("lkgo: refused by the server (lk-go's log says why)")
	// ErrCleared (ABI 1.4): AudioSource.Clear ran while Capture waited for
	// room in the queue; nothing of that call was queued (LK_CLEARED).
	ErrCleared = errors.New("lkgo: the source was cleared while this capture waited; nothing was queued")
	// ErrAborted (ABI 1.4): a data stream ended abnormally
	// (LK_ERR_ABORTED). StreamReader calls return it wrapped in a
	// *StreamAbortedError, which says why.
	ErrAborted = errors.New("lkgo: the data stream was aborted")
	// ErrHostTooOld: the host lacks the ABI minor the call needs: 1.3 for
	// media and data, 1.4 for streams, RPC, transcriptions, the dispatch's
	// details and WaitSubscribed. lk-go refuses to load this package into
	// an older lk-go, so this is only seen with a foreign host.
	ErrHostTooOld = errors.New("lkgo: the host's ABI is too old for this call (media needs 1.3; streams and RPC 1.4); use a newer lk-go")
)

func codeErr(rc int32) error {
	switch rc {
	case codeOK:
		return nil
	case codeTimeout:
		return ErrTimeout
	case codeShuttingDown:
		return ErrShuttingDown
	case codeEnded:
		return ErrEnded
	case codeInvalid:
		return ErrInvalid
	case codeUnsupported:
		return ErrUnsupported
	case codeNotFound:
		return ErrNotFound
	case codeTooLarge:
		return ErrTooLarge
	case codeNotConnected:
		return ErrNotConnected
	case codeClosed:
		return ErrClosed
	case codeRefused:
		return ErrRefused
	case codeCleared:
		return ErrCleared
	case codeAborted:
		return ErrAborted
	}
	return fmt.Errorf("lkgo: unknown host result %d", rc)
}

// check maps rc to an error and cancels Ctx when it says shutdown began.
func (jc *JobContext) check(rc int32) error {
	if rc == codeShuttingDown {
		jc.sawShutdown()
	}
	return codeErr(rc)
}

// HasMedia reports whether the host has the media and data calls (ABI 1.3).
func (jc *JobContext) HasMedia() bool { return jc.h.hasMedia() }

// AudioFormat is a PCM format: int16 samples, channels interleaved.
type AudioFormat struct {
	// SampleRate in Hz: 8000, 12000, 16000, 24000, 48000 (Opus-native) or
	// 11025, 22050, 32000, 44100 (resampled by the host, a few ms more).
	SampleRate int
	// NumChannels is 1 or 2.
	NumChannels int
	// FrameDuration (streams only) is each frame's length: 10 to 100 ms,
	// a multiple of 10 ms; 0 means 10 ms.
	FrameDuration time.Duration
	// QueueDuration: for a stream, the ring of frames kept for a slow
	// reader (the oldest is dropped when full; 0 means 500 ms); for a
	// source, how much Capture queues before it waits (0 means 200 ms).
	// At most 10 s.
	QueueDuration time.Duration
}

// Mono is sampleRate Hz, one channel, 10 ms frames, default queues.
func Mono(sampleRate int) AudioFormat { return AudioFormat{SampleRate: sampleRate, NumChannels: 1} }

// maxSampleRate bounds what the SDK passes on (the host accepts a fixed
// list up to 48 kHz); it keeps an int from wrapping in the C uint32_t.
const maxSampleRate = 384_000

// check says why f cannot be passed to the host, or "" when it can (the
// host then checks the rate list and the multiples of 10 ms).
func (f AudioFormat) check() string {
	switch {
	case f.SampleRate < 1 || f.SampleRate > maxSampleRate:
		return fmt.Sprintf("sample rate %d Hz (8000, 12000, 16000, 24000, 48000, 11025, 22050, 32000 or 44100)", f.SampleRate)
	case f.NumChannels < 1 || f.NumChannels > 2:
		return fmt.Sprintf("%d channels (1 or 2)", f.NumChannels)
	case f.FrameDuration < 0 || f.FrameDuration > 100*time.Millisecond ||
		f.FrameDuration%(10*time.Millisecond) != 0:
		return fmt.Sprintf("frame duration %v (10 to 100 ms, a multiple of 10 ms)", f.FrameDuration)
	case f.QueueDuration < 0 || f.QueueDuration > 10*time.Second:
		return fmt.Sprintf("queue duration %v (0 to 10 s)", f.QueueDuration)
	}
	return ""
}

// samplesPerFrame is samples per frame over all channels of a format that
// passed check.
func (f AudioFormat) samplesPerFrame() int {
	ms := int(f.FrameDuration / time.Millisecond)
	if ms == 0 {
		ms = 10
	}
	return f.SampleRate * ms / 1000 * f.NumChannels
}

// invalid logs why the SDK itself refused a call (the host logs its own
// refusals) and returns ErrInvalid.
func (jc *JobContext) invalid(call, why string) error {
	jc.h.log(logWarn, "lkgo: "+call+": "+why+"; returning ErrInvalid")
	return ErrInvalid
}

// AudioFrame is one frame of a stream, in Go memory.
type AudioFrame struct {
	// Data is SamplesPerChannel × NumChannels int16 samples, interleaved.
	Data              []int16
	SampleRate        int
	NumChannels       int
	SamplesPerChannel int
	// PTS is the media time of the first sample: the audio this stream
	// delivered before it (pauses the host skipped to stay real-time are
	// not counted).
	PTS time.Duration
	// Concealed: some samples were reconstructed (Opus FEC or PLC).
	Concealed bool
	// Silence: some samples are gap fill (nothing was sent: DTX, mute,
	// loss over 200 ms).
	Silence bool
	// DroppedFrames is how many frames the ring dropped since the
	// previous read (the reader was too slow).
	DroppedFrames uint64
}

type frameInfo struct {
	samplesPerChannel int
	flags             uint32
	ptsMicros         uint64
	dropped           uint64
}

// sliceMs is how long one blocking host call waits before the Go side
// looks at its context again.
const sliceMs = 100

// AudioStream reads one subscribed remote audio track as PCM frames in
// its own format and ring. Read from one goroutine at a time (reads are
// serialised); Close may be called from any goroutine.
type AudioStream struct {
	jc       *JobContext
	handle   any
	format   AudioFormat
	capacity int

	closeOnce  sync.Once
	closed     chan struct{} // closed by Close: releases the Frames pump
	framesOnce sync.Once
	frames     chan AudioFrame
	errMu      sync.Mutex
	err        error // why Frames closed
}

// OpenAudioStream opens a reader on the subscribed audio track trackSID
// (from TrackSubscribed). The first frame is audio that arrives after
// the call. Errors: ErrNotFound (not subscribed, or gone), ErrUnsupported
// (a video track), ErrInvalid (format), ErrShuttingDown, ErrHostTooOld.
// Close it when done; the host closes what is left when the job ends.
func (jc *JobContext) OpenAudioStream(trackSID string, f AudioFormat) (*AudioStream, error) {
	if !jc.h.hasMedia() {
		return nil, ErrHostTooOld
	}
	if why := f.check(); why != "" {
		return nil, jc.invalid("OpenAudioStream", why)
	}
	handle, rc := jc.h.audioStreamOpen(trackSID, f)
	if err := jc.check(rc); err != nil {
		return nil, err
	}
	return &AudioStream{jc: jc, handle: handle, format: f, capacity: f.samplesPerFrame(),
		closed: make(chan struct{})}, nil
}

// Format is the stream's format.
func (s *AudioStream) Format() AudioFormat { return s.format }

// Read waits for the next frame until ctx is done (ctx is looked at every
// 100 ms while nothing arrives). Each frame is a new slice. Errors:
// ErrEnded (the track went away and every frame was read),
// ErrShuttingDown, ErrClosed, or ctx's error.
func (s *AudioStream) Read(ctx context.Context) (AudioFrame, error) {
	if err := ctx.Err(); err != nil {
		return AudioFrame{}, err
	}
	pcm := make([]int16, s.capacity)
	for {
		info, rc := s.jc.h.audioStreamRead(s.handle, pcm, sliceMs)
		switch rc {
		case codeOK:
			n := info.samplesPerChannel * s.format.NumChannels
			return AudioFrame{
				Data:              pcm[:n:n],
				SampleRate:        s.format.SampleRate,
				NumChannels:       s.format.NumChannels,
				SamplesPerChannel: info.samplesPerChannel,
				PTS:               time.Duration(info.ptsMicros) * time.Microsecond,
				Concealed:         info.flags&flagConcealed != 0,
				Silence:           info.flags&flagSilence != 0,
				DroppedFrames:     info.dropped,
			}, nil
		case codeTimeout:
			if err := ctx.Err(); err != nil {
				return AudioFrame{}, err
			}
		default:
			return AudioFrame{}, s.jc.check(rc)
		}
	}
}

// Frames returns the stream's frames on a channel: one goroutine (started
// by the first call) reads them. The channel is closed when the stream
// ends, is closed, or the job shuts down; Err then says which. Frames
// the channel's reader is too slow for are dropped oldest first by the
// host's ring (AudioFrame.DroppedFrames counts them), so audio stays
// real-time. Handing each frame to another goroutine has a price: an echo
// ranging over Frames used ~1 % of a core more than one calling Read in
// its loop (10 ms frames, 2-core EPYC). Use Frames to select over it.
func (s *AudioStream) Frames() <-chan AudioFrame {
	s.framesOnce.Do(func() {
		s.frames = make(chan AudioFrame, 4)
		go s.pump()
	})
	return s.frames
}

func (s *AudioStream) pump() {
	defer close(s.frames)
	defer s.jc.recoverAs("lkgo audio stream reader")
	for {
		f, err := s.Read(context.Background())
		if err != nil {
			s.setErr(err)
			return
		}
		select {
		case s.frames <- f:
		case <-s.closed:
			s.setErr(ErrClosed)
			return
		case <-s.jc.done:
			s.setErr(ErrShuttingDown)
			return
		}
	}
}

func (s *AudioStream) setErr(err error) {
	s.errMu.Lock()
	s.err = err
	s.errMu.Unlock()
}

// Err is why the Frames channel closed (ErrEnded, ErrClosed,
// ErrShuttingDown); nil while it is open. Safe from any goroutine.
func (s *AudioStream) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// Close closes the reader; idempotent, any goroutine. A Read waiting on
// another goroutine returns ErrClosed, and the Frames channel closes even
// if nobody drains it.
func (s *AudioStream) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.jc.h.audioStreamClose(s.handle)
	})
}

// AudioSource is a published microphone track fed from PCM. Capture from
// one goroutine at a time; the other methods may be called from any.
type AudioSource struct {
	jc        *JobContext
	handle    any
	format    AudioFormat
	trackSID  string
	closeOnce sync.Once
}

// PublishAudio publishes a microphone track named name, fed from PCM in
// format f (FrameDuration is ignored), and waits (at most 15 s) for the
// server to accept it. Until samples are captured, and whenever the queue
// runs dry, the track sends silence. Errors: ErrInvalid, ErrNotConnected,
// ErrRefused (the log says why), ErrShuttingDown, ErrHostTooOld.
func (jc *JobContext) PublishAudio(name string, f AudioFormat) (*AudioSource, error) {
	if !jc.h.hasMedia() {
		return nil, ErrHostTooOld
	}
	if why := f.check(); why != "" {
		return nil, jc.invalid("PublishAudio", why)
	}
	handle, sid, rc := jc.h.audioSourcePublish(name, f)
	if err := jc.check(rc); err != nil {
		return nil, err
	}
	return &AudioSource{jc: jc, handle: handle, format: f, trackSID: sid}, nil
}

// TrackSID is the sid the server gave the published track (TR_…).
func (s *AudioSource) TrackSID() string { return s.trackSID }

// Format is the source's format.
func (s *AudioSource) Format() AudioFormat { return s.format }

// Capture queues pcm (interleaved, a whole number of samples per channel,
// at most 10 s) to be sent, copying it. It waits while more than the
// source's QueueDuration is queued, until ctx is done (looked at every
// 100 ms; the send clock drains 20 ms every 20 ms, which paces a faster
// producer). Errors: ErrShuttingDown, ErrClosed (closed, or closed by the
// host after a rejoin: publish again), ErrCleared (Clear ran while this
// call waited: nothing of pcm was queued, as barge-in wants), ErrInvalid,
// or ctx's error (nothing was queued).
func (s *AudioSource) Capture(ctx context.Context, pcm []int16) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(pcm) == 0 {
		return nil
	}
	if len(pcm)%s.format.NumChannels != 0 {
		return s.jc.invalid("Capture", fmt.Sprintf("%d samples is not a whole number of frames of %d channels", len(pcm), s.format.NumChannels))
	}
	spc := len(pcm) / s.format.NumChannels
	for {
		rc := s.jc.h.audioSourceCapture(s.handle, pcm, spc, sliceMs)
		if rc != codeTimeout {
			return s.jc.check(rc)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// WaitSubscribed waits until the source's track has a subscriber (the
// server's first subscription of it, LocalTrackSubscribed): audio captured
// before that reaches nobody, so an agent that speaks first waits here, as
// livekit-agents' wait_for_subscription. It returns nil at once when the
// track already has one. It waits until ctx is done (looked at every
// 100 ms). Errors: ErrShuttingDown, ErrClosed, ctx's error, ErrHostTooOld
// (a host older than ABI 1.4). Any goroutine.
func (s *AudioSource) WaitSubscribed(ctx context.Context) error {
	if !s.jc.h.hasStreams() {
		return ErrHostTooOld
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rc := s.jc.h.audioSourceWaitSubscribed(s.handle, sliceMs)
		if rc != codeTimeout {
			return s.jc.check(rc)
		}
	}
}

// Clear drops everything queued (barge-in) and returns how many
// milliseconds of audio it dropped. A Capture waiting for room meanwhile
// returns ErrCleared.
func (s *AudioSource) Clear() (droppedMs uint32) { return s.jc.h.audioSourceClear(s.handle) }

// QueuedMs is how many milliseconds of audio are queued and not yet sent;
// 0 once everything played out.
func (s *AudioSource) QueuedMs() uint32 { return s.jc.h.audioSourceQueuedMs(s.handle) }

// Close unpublishes the track; idempotent, any goroutine. A Capture
// waiting on another goroutine returns ErrClosed.
func (s *AudioSource) Close() {
	s.closeOnce.Do(func() { s.jc.h.audioSourceClose(s.handle) })
}
