package lkgo

// Data streams and transcriptions (ABI 1.4): what LiveKit frontends send
// as chat and read as transcripts. Owns StreamReader (an incoming stream:
// its StreamInfo, then its content as an io.Reader), the Streams pump,
// StreamWriter (an outgoing stream as an io.Writer, then its trailer),
// and AgentTranscript. Names follow the official SDKs (StreamText,
// SendText, StreamBytes, SendFile). Must not touch: RPC (rpc.go), data
// packets (data.go).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Topics and attributes LiveKit's frontends (components-js, livekit-agents)
// use for chat and transcripts.
const (
	// ChatTopic is the topic chat arrives on (components-js useChat).
	ChatTopic = "lk.chat"
	// TranscriptionTopic is the topic transcripts go on (livekit-agents).
	TranscriptionTopic = "lk.transcription"
	// AttrSegmentID names the transcript segment a stream belongs to.
	AttrSegmentID = "lk.segment_id"
	// AttrTranscribedTrackID is the sid of the track a transcript is of.
	AttrTranscribedTrackID = "lk.transcribed_track_id"
	// AttrTranscriptionFinal is "true" on a segment's final text (in the
	// trailer of an agent transcript), else "false".
	AttrTranscriptionFinal = "lk.transcription_final"
)

// StreamKind says whether a data stream carries text or bytes
// (LK_STREAM_* in lk_plugin.h).
type StreamKind uint32

// Stream kinds.
const (
	// StreamText: UTF-8 text; reads and writes never split a character.
	StreamText StreamKind = 1
	// StreamBytes: any bytes, with a file name (StreamInfo.Name).
	StreamBytes StreamKind = 2
)

func (k StreamKind) String() string {
	switch k {
	case StreamText:
		return "text"
	case StreamBytes:
		return "bytes"
	}
	return fmt.Sprintf("StreamKind(%d)", uint32(k))
}

// StreamInfo is an incoming stream's header, copied into Go memory.
type StreamInfo struct {
	// StreamID is the sender's id for the stream (a UUID from the SDKs).
	StreamID string
	Kind     StreamKind
	Topic    string
	// MimeType is what the sender declared, e.g. "text/plain".
	MimeType string
	// SenderIdentity is who the header says sent it: an agent may send a
	// user's transcript on the user's behalf; empty: the server.
	SenderIdentity string
	// Name is a byte stream's file name; empty for text.
	Name string
	// TotalLength is the length in bytes the header announced, -1 when it
	// announced none.
	TotalLength int64
	// Timestamp is the header's creation time.
	Timestamp time.Time
	// Attributes are the header's (never nil); in FinalInfo, after the
	// end, with the trailer's merged in (e.g. AttrTranscriptionFinal).
	Attributes map[string]string
}

// StreamAbortedError is how a read of an aborted stream fails: the
// sender's trailer gave a reason, the sender left, a chunk went missing
// or came out of order, the length disagreed with TotalLength, a text
// stream held invalid UTF-8, or the stream went over lk-go's size limits
// (--stream-max-bytes, --streams-max-bytes). Content before the fault may
// already have been read. errors.Is(err, ErrAborted) holds.
type StreamAbortedError struct {
	StreamID string
	// Reason is the host's explanation, e.g. "chunk 1 is missing".
	Reason string
}

func (e *StreamAbortedError) Error() string {
	return fmt.Sprintf("lkgo: stream %s was aborted: %s", e.StreamID, e.Reason)
}

// Unwrap returns ErrAborted.
func (e *StreamAbortedError) Unwrap() error { return ErrAborted }

// DefaultStreamReadTimeout is how long one StreamReader read waits for
// content unless SetTimeout says otherwise.
const DefaultStreamReadTimeout = 30 * time.Second

// minStreamRead is the smallest buffer handed to stream_read: a text
// stream's content is cut only between characters, so 4 bytes (one UTF-8
// character at most) always make progress.
const minStreamRead = utf8.UTFMax

// StreamReader is one incoming data stream on a topic the job accepts
// (AcceptStreams). Info is its header; Read (io.Reader) and ReadContext
// give its content in order, then io.EOF. Reads are serialised: use one
// goroutine at a time. Close (any goroutine, idempotent) drops the rest;
// the host closes readers left open when the job ends.
type StreamReader struct {
	jc      *JobContext
	handle  any
	info    StreamInfo
	timeout atomic.Int64 // ns; <= 0: no limit

	mu      sync.Mutex // serialises reads; guards pending
	pending []byte     // content read for a caller whose buffer was too small

	closeOnce sync.Once
}

// StreamsMissed: Count incoming streams were dropped because nobody took
// them in time (lk-go holds 64 waiting streams). The channel goes on with
// the next stream.
type StreamsMissed struct{ Count uint64 }

// StreamEvent is what Streams delivers: a *StreamReader or a
// StreamsMissed.
type StreamEvent interface{ isStreamEvent() }

func (*StreamReader) isStreamEvent() {}
func (StreamsMissed) isStreamEvent() {}

// streamBuffer is the Streams channel's capacity; behind it lk-go holds 64
// more and reports what it drops as StreamsMissed.
const streamBuffer = 16

// AcceptStreams makes the host keep incoming streams on each topic ("" for
// every topic; lk.rpc_request and lk.rpc_response stay the host's): a
// stream on a topic nobody accepted is dropped and counted in lk-go's log.
// Call it before the peers send, typically at the start of Run. Errors:
// ErrInvalid (a topic over 256 bytes; the topics before it are accepted),
// ErrHostTooOld.
func (jc *JobContext) AcceptStreams(topics ...string) error {
	if !jc.h.hasStreams() {
		return ErrHostTooOld
	}
	for _, t := range topics {
		if err := jc.check(jc.h.streamAcceptTopic(t)); err != nil {
			return err
		}
	}
	return nil
}

// Streams returns the incoming streams of the accepted topics, in arrival
// order, as *StreamReader values the receiver owns (Close each), and
// StreamsMissed values for streams lk-go had to drop. One goroutine
// (started by the first call; later calls return the same channel) takes
// them from the host. The channel is closed once shutdown began, or once
// Run returned; readers not yet delivered then are closed. On a host older
// than ABI 1.4 it is closed at once. A slow handler should get a
// goroutine per stream (JobContext.Go), so that a large one does not hold
// up a chat.
func (jc *JobContext) Streams() <-chan StreamEvent {
	jc.streamsOnce.Do(func() {
		jc.streams = make(chan StreamEvent, streamBuffer)
		if !jc.h.hasStreams() {
			close(jc.streams)
			return
		}
		go jc.pumpStreams(jc.streams)
	})
	return jc.streams
}

func (jc *JobContext) pumpStreams(out chan<- StreamEvent) {
	defer close(out)
	defer jc.recoverAs("lkgo stream pump")
	for {
		handle, rc, missed := jc.h.nextStream(pumpWaitMs)
		var ev StreamEvent
		switch rc {
		case codeOK:
			info, irc := jc.h.streamReaderInfo(handle)
			if irc != codeOK {
				// Closed under us (the job ended): nothing to read.
				jc.h.streamReaderClose(handle)
				continue
			}
			r := &StreamReader{jc: jc, handle: handle, info: info}
			r.timeout.Store(int64(DefaultStreamReadTimeout))
			ev = r
		case codeMissed:
			ev = StreamsMissed{Count: missed}
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
			jc.h.log(logError, fmt.Sprintf("lkgo: next_stream returned %d; the Streams channel closes", rc))
			return
		}
		select {
		case out <- ev:
		case <-jc.done:
			if r, ok := ev.(*StreamReader); ok {
				r.Close()
			}
			return
		}
	}
}

// Info is the stream's header as it arrived. The returned value shares its
// Attributes map with the reader: do not modify it.
func (r *StreamReader) Info() StreamInfo { return r.info }

// FinalInfo fetches the header again: once the stream ended (Read returned
// io.EOF), its Attributes include the trailer's (e.g.
// AttrTranscriptionFinal "true"). Errors: ErrClosed. Any goroutine.
func (r *StreamReader) FinalInfo() (StreamInfo, error) {
	info, rc := r.jc.h.streamReaderInfo(r.handle)
	if rc != codeOK {
		return StreamInfo{}, r.jc.check(rc)
	}
	return info, nil
}

// SetTimeout sets how long each Read or ReadContext waits for content
// before it returns ErrTimeout (d <= 0: no limit; the read still ends with
// the stream, at Close and at shutdown). The default is
// DefaultStreamReadTimeout. Any goroutine; a read already waiting keeps
// its own limit.
func (r *StreamReader) SetTimeout(d time.Duration) { r.timeout.Store(int64(d)) }

// AbortReason is why the stream was aborted, once a read failed with a
// *StreamAbortedError; "" otherwise.
func (r *StreamReader) AbortReason() string { return r.jc.h.streamReaderError(r.handle) }

// Read reads up to len(p) bytes of content, as io.Reader: it waits up to
// the reader's timeout (SetTimeout) for content and returns io.EOF once
// the stream is complete and everything was read. A text stream's pieces
// never split a character when len(p) >= 4. Errors: *StreamAbortedError
// (errors.Is ErrAborted), ErrTimeout (nothing within the timeout; the
// stream may still go on), ErrShuttingDown, ErrClosed.
func (r *StreamReader) Read(p []byte) (int, error) {
	return r.ReadContext(context.Background(), p)
}

// ReadContext is Read that also returns ctx's error once ctx is done
// (looked at every 100 ms while nothing arrives).
func (r *StreamReader) ReadContext(ctx context.Context, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	dst := p
	if len(p) < minStreamRead {
		dst = make([]byte, minStreamRead)
	}
	limit := time.Duration(r.timeout.Load())
	deadline := time.Now().Add(limit)
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		wait := uint32(sliceMs)
		if limit > 0 {
			left := time.Until(deadline)
			if left <= 0 {
				return 0, ErrTimeout
			}
			wait = uint32(min(left.Milliseconds()+1, sliceMs))
		}
		n, rc := r.jc.h.streamRead(r.handle, dst, wait)
		switch rc {
		case codeOK:
			if len(dst) != len(p) {
				c := copy(p, dst[:n])
				r.pending = append(r.pending[:0], dst[c:n]...)
				return c, nil
			}
			return n, nil
		case codeEnded:
			return 0, io.EOF
		case codeTimeout:
		case codeAborted:
			return 0, &StreamAbortedError{StreamID: r.info.StreamID, Reason: r.jc.h.streamReaderError(r.handle)}
		default:
			return 0, r.jc.check(rc)
		}
	}
}

// ReadAll reads the rest of the stream into one new slice, each wait
// bounded by the reader's timeout and by ctx. Errors as ReadContext (never
// io.EOF); on an error it also returns what it had read.
func (r *StreamReader) ReadAll(ctx context.Context) ([]byte, error) {
	size := 512
	if t := r.info.TotalLength; t > 0 {
		// Bounded by lk-go's per-stream limit (16 MiB by default).
		size = int(min(t, 64<<20)) + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.ReadContext(ctx, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// ReadText reads the rest of the stream as a string (ReadAll). A byte
// stream whose content is not valid UTF-8 is an error wrapping ErrInvalid;
// lk-go aborts a text stream with invalid UTF-8 itself.
func (r *StreamReader) ReadText(ctx context.Context) (string, error) {
	b, err := r.ReadAll(ctx)
	if err != nil {
		return string(b), err
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: stream %s is not valid UTF-8", ErrInvalid, r.info.StreamID)
	}
	return string(b), nil
}

// Close drops the rest of the stream and frees the reader; idempotent, any
// goroutine. A read waiting on another goroutine returns ErrClosed. It
// always returns nil (io.Closer).
func (r *StreamReader) Close() error {
	r.closeOnce.Do(func() { r.jc.h.streamReaderClose(r.handle) })
	return nil
}

// StreamOptions says what an outgoing stream's header announces.
type StreamOptions struct {
	// Topic is required, at most 256 bytes (e.g. TranscriptionTopic).
	Topic string
	// MimeType; empty: text/plain or application/octet-stream.
	MimeType string
	// Name is a byte stream's file name (empty: "unknown"); ignored for
	// text.
	Name string
	// SenderIdentity (text streams only) sends on behalf of that
	// participant (a user's transcript); empty: the job itself.
	SenderIdentity string
	// StreamID; empty: a new UUID.
	StreamID string
	// TotalLength, when > 0, announces the stream's length in bytes
	// (SendText and SendBytes always announce it).
	TotalLength int64
	// Attributes go into the header (at most 1024).
	Attributes map[string]string
	// DestinationIdentities are the participants to send to (at most
	// 1024); empty means everyone in the room.
	DestinationIdentities []string
	// Timeout bounds each step of the stream (opening, each Write, the
	// close) waiting for the reliable channel; 0 means 10 s.
	Timeout time.Duration
}

// defaultStreamTimeout is StreamOptions.Timeout's 0.
const defaultStreamTimeout = 10 * time.Second

// streamOpen is what stream_open sends, as plain Go values.
type streamOpen struct {
	kind                                    StreamKind
	hasTotal                                bool
	total                                   uint64
	topic, mimeType, name, sender, streamID string
	attrKeys, attrValues, destinations      []string
}

func splitMap(m map[string]string) (keys, values []string) {
	keys = make([]string, 0, len(m))
	values = make([]string, 0, len(m))
	for k, v := range m {
		keys = append(keys, k)
		values = append(values, v)
	}
	return keys, values
}

// StreamWriter is an outgoing data stream: Write (io.Writer) sends content
// as the stream's next chunks, Close completes it, Abort ends it with a
// reason. Each Write is sent at once (15 000-byte chunks), so a text delta
// arrives as one piece. Writes and closes are serialised: use one
// goroutine at a time. A writer never closed is aborted by lk-go when the
// job ends; until then receivers wait for the rest, so always Close.
type StreamWriter struct {
	jc        *JobContext
	handle    any
	kind      StreamKind
	streamID  string
	timeoutMs uint32

	mu      sync.Mutex
	partial []byte // text: an incomplete UTF-8 character held for the next Write
	closed  bool
}

// StreamText opens an outgoing text stream (the SDKs' streamText) and
// sends its header. Errors: ErrInvalid (no topic, an empty destination),
// ErrTooLarge (the header over 15 000 bytes), ErrTimeout,
// ErrNotConnected, ErrShuttingDown, ErrHostTooOld.
func (jc *JobContext) StreamText(opts StreamOptions) (*StreamWriter, error) {
	return jc.openStream(StreamText, opts, opts.TotalLength > 0, uint64(max(opts.TotalLength, 0)))
}

// StreamBytes opens an outgoing byte stream (the SDKs' streamBytes) named
// opts.Name; otherwise as StreamText (a SenderIdentity is ErrInvalid).
func (jc *JobContext) StreamBytes(opts StreamOptions) (*StreamWriter, error) {
	return jc.openStream(StreamBytes, opts, opts.TotalLength > 0, uint64(max(opts.TotalLength, 0)))
}

func (jc *JobContext) openStream(kind StreamKind, opts StreamOptions, hasTotal bool, total uint64) (*StreamWriter, error) {
	if !jc.h.hasStreams() {
		return nil, ErrHostTooOld
	}
	for _, id := range opts.DestinationIdentities {
		if id == "" {
			return nil, jc.invalid("StreamText/StreamBytes", "an empty destination identity (leave DestinationIdentities empty to send to everyone)")
		}
	}
	keys, values := splitMap(opts.Attributes)
	o := streamOpen{kind: kind, hasTotal: hasTotal, total: total, topic: opts.Topic,
		mimeType: opts.MimeType, sender: opts.SenderIdentity, streamID: opts.StreamID,
		attrKeys: keys, attrValues: values, destinations: opts.DestinationIdentities}
	if kind == StreamBytes {
		o.name = opts.Name
	}
	ms := millis(opts.Timeout, defaultStreamTimeout)
	handle, id, rc := jc.h.streamOpen(o, ms)
	if err := jc.check(rc); err != nil {
		return nil, err
	}
	return &StreamWriter{jc: jc, handle: handle, kind: kind, streamID: id, timeoutMs: ms}, nil
}

// SendText sends text as one whole text stream (the SDKs' sendText):
// open, one write, close. Errors as StreamText and StreamWriter.Write.
func (jc *JobContext) SendText(text string, opts StreamOptions) error {
	w, err := jc.openStream(StreamText, opts, true, uint64(len(text)))
	if err != nil {
		return err
	}
	return w.sendWhole([]byte(text))
}

// SendBytes sends data as one whole byte stream named opts.Name (the
// SDKs' sendFile). data is copied during the call. Errors as StreamBytes
// and StreamWriter.Write.
func (jc *JobContext) SendBytes(data []byte, opts StreamOptions) error {
	w, err := jc.openStream(StreamBytes, opts, true, uint64(len(data)))
	if err != nil {
		return err
	}
	return w.sendWhole(data)
}

func (w *StreamWriter) sendWhole(data []byte) error {
	if _, err := w.Write(data); err != nil {
		_ = w.Abort("lkgo: the content could not be sent")
		return err
	}
	return w.Close()
}

// StreamID is the stream's id (the one in StreamOptions, or the UUID
// lk-go made).
func (w *StreamWriter) StreamID() string { return w.streamID }

// Write sends p (copied during the call) as the stream's next chunks and
// returns len(p), waiting up to the stream's Timeout for them to be handed
// to the reliable channel. For a text stream p must be UTF-8; a character
// cut at the end of p is held back and sent with the next Write, so
// io.Copy into a text stream works. Errors: ErrInvalid (invalid UTF-8 in a
// text stream), ErrTimeout (some chunks may have gone: Abort the stream),
// ErrClosed, ErrNotConnected, ErrShuttingDown.
func (w *StreamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, ErrClosed
	}
	data := p
	if w.kind == StreamText {
		if len(w.partial) > 0 {
			data = append(w.partial[:len(w.partial):len(w.partial)], p...)
		}
		var rest []byte
		data, rest = cutIncomplete(data)
		w.partial = append([]byte(nil), rest...)
	}
	if len(data) == 0 {
		return len(p), nil
	}
	if err := w.jc.check(w.jc.h.streamWrite(w.handle, data, w.timeoutMs)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteString is Write of s (io.StringWriter).
func (w *StreamWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

// cutIncomplete splits b before a UTF-8 character that b ends inside of.
// Invalid bytes are not held back: lk-go refuses them.
func cutIncomplete(b []byte) (whole, rest []byte) {
	for i := len(b) - 1; i >= 0 && i > len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i], b[i:]
			}
			break
		}
	}
	return b, nil
}

// Close completes the stream (sends its trailer) and frees the writer
// (io.Closer). Errors: ErrClosed (already closed), ErrInvalid (a text
// stream that ended inside a character: it is aborted instead),
// ErrTimeout, ErrNotConnected, ErrShuttingDown; the writer is freed in
// every case.
func (w *StreamWriter) Close() error { return w.CloseWithAttributes(nil) }

// CloseWithAttributes is Close with trailer attributes, which receivers
// merge into the header's (e.g. AttrTranscriptionFinal "true").
func (w *StreamWriter) CloseWithAttributes(trailer map[string]string) error {
	return w.finish("", trailer)
}

// Abort ends the stream abnormally with reason (non-empty; receivers get
// an error with it, never a silent truncation) and frees the writer.
// Errors as Close.
func (w *StreamWriter) Abort(reason string) error {
	if reason == "" {
		reason = "aborted"
	}
	return w.finish(reason, nil)
}

func (w *StreamWriter) finish(reason string, trailer map[string]string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	w.closed = true
	var cut error
	if reason == "" && len(w.partial) > 0 {
		reason = "the text ended inside a UTF-8 character"
		trailer = nil
		cut = fmt.Errorf("%w: stream %s ended inside a UTF-8 character; it was aborted", ErrInvalid, w.streamID)
	}
	keys, values := splitMap(trailer)
	err := w.jc.check(w.jc.h.streamClose(w.handle, reason, keys, values, w.timeoutMs))
	if cut != nil {
		return cut
	}
	return err
}

// Transcription is one segment of the legacy Transcription packet, what
// components-js useVoiceAssistant().agentTranscriptions reads.
type Transcription struct {
	// ParticipantIdentity is whose speech it is; empty: the job's own.
	ParticipantIdentity string
	// TrackSID is the transcribed track; required.
	TrackSID string
	// SegmentID is required, the same for every update of a segment.
	SegmentID string
	// Text is the segment's whole text so far.
	Text string
	// Language may be empty.
	Language string
	// Start and End (may be 0) are media times of the segment, sent in
	// whole milliseconds.
	Start, End time.Duration
	// Final marks the segment's last update.
	Final bool
}

// PublishTranscription sends t as one legacy Transcription packet
// (reliable, to everyone), waiting up to timeout (0 means 5 s) for it to be
// handed to the reliable channel. Streams on TranscriptionTopic are the
// newer form; AgentTranscript and UserTranscript send both. Errors:
// ErrInvalid (no TrackSID or SegmentID), ErrTooLarge (Text over ~14 KiB),
// ErrTimeout, ErrNotConnected, ErrShuttingDown, ErrHostTooOld.
func (jc *JobContext) PublishTranscription(t Transcription, timeout time.Duration) error {
	if !jc.h.hasStreams() {
		return ErrHostTooOld
	}
	return jc.check(jc.h.publishTranscription(t, millis(timeout, defaultControlTimeout)))
}

// newSegmentID is "SG_" and 12 random hex digits, as livekit-agents makes
// them.
func newSegmentID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		n := uint64(time.Now().UnixNano())
		for i := range b {
			b[i] = byte(n >> (8 * i))
		}
	}
	return "SG_" + hex.EncodeToString(b)
}

// AgentTranscript is one segment of the agent's own speech transcript,
// sent the way livekit-agents sends it: a text stream on
// TranscriptionTopic whose chunks are the text's pieces, with
// AttrSegmentID, AttrTranscribedTrackID (the agent's microphone) and, in
// the trailer, AttrTranscriptionFinal "true" — and, for frontends that
// read only those, a legacy Transcription packet with the whole text after
// each piece. Use from one goroutine at a time.
type AgentTranscript struct {
	jc        *JobContext
	writer    *StreamWriter
	segmentID string
	trackSID  string
	text      []byte
	timeout   time.Duration
}

// AgentTranscript starts a segment of the agent's speech transcript for its
// published track trackSID (AudioSource.TrackSID), to everyone. timeout
// bounds each send (0 means 10 s for the stream, 5 s for a legacy packet).
// Errors as StreamText.
func (jc *JobContext) AgentTranscript(trackSID string, timeout time.Duration) (*AgentTranscript, error) {
	seg := newSegmentID()
	w, err := jc.StreamText(StreamOptions{
		Topic: TranscriptionTopic,
		Attributes: map[string]string{
			AttrSegmentID:          seg,
			AttrTranscribedTrackID: trackSID,
			AttrTranscriptionFinal: "false",
		},
		Timeout: timeout,
	})
	if err != nil {
		return nil, err
	}
	return &AgentTranscript{jc: jc, writer: w, segmentID: seg, trackSID: trackSID, timeout: timeout}, nil
}

// SegmentID is the segment's id ("SG_…").
func (t *AgentTranscript) SegmentID() string { return t.segmentID }

// Push sends the next piece of text: a chunk of the stream, then a legacy
// packet with the whole text so far. Errors as StreamWriter.Write and
// PublishTranscription; ErrClosed after Finish.
func (t *AgentTranscript) Push(delta string) error {
	if _, err := t.writer.WriteString(delta); err != nil {
		return err
	}
	t.text = append(t.text, delta...)
	return t.jc.PublishTranscription(t.legacy(false), t.timeout)
}

// Finish ends the segment: the stream's trailer with
// AttrTranscriptionFinal "true", then the final legacy packet. Errors as
// StreamWriter.Close and PublishTranscription.
func (t *AgentTranscript) Finish() error {
	if err := t.writer.CloseWithAttributes(map[string]string{AttrTranscriptionFinal: "true"}); err != nil {
		return err
	}
	return t.jc.PublishTranscription(t.legacy(true), t.timeout)
}

// Abort ends the segment's stream abnormally with reason (receivers drop
// it); for a segment whose Push failed. No legacy packet is sent. Errors
// as StreamWriter.Abort.
func (t *AgentTranscript) Abort(reason string) error { return t.writer.Abort(reason) }

func (t *AgentTranscript) legacy(final bool) Transcription {
	return Transcription{ParticipantIdentity: t.jc.Job.Identity, TrackSID: t.trackSID,
		SegmentID: t.segmentID, Text: string(t.text), Final: final}
}

// UserTranscript publishes a transcript of a user's speech on their behalf
// (the stream's header names userIdentity as the sender): each update is
// one text stream on TranscriptionTopic with the whole text so far, plus a
// legacy packet; updates of one utterance share segmentID, and the last one
// has final true. trackSID is the user's transcribed track. Errors as
// SendText and PublishTranscription.
func (jc *JobContext) UserTranscript(userIdentity, trackSID, segmentID, text string, final bool, timeout time.Duration) error {
	fin := "false"
	if final {
		fin = "true"
	}
	err := jc.SendText(text, StreamOptions{
		Topic:          TranscriptionTopic,
		SenderIdentity: userIdentity,
		Attributes: map[string]string{
			AttrSegmentID:          segmentID,
			AttrTranscribedTrackID: trackSID,
			AttrTranscriptionFinal: fin,
		},
		Timeout: timeout,
	})
	if err != nil {
		return err
	}
	return jc.PublishTranscription(Transcription{ParticipantIdentity: userIdentity, TrackSID: trackSID,
		SegmentID: segmentID, Text: text, Final: final}, timeout)
}
