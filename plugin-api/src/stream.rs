//! The safe Rust side of ABI 1.4's data streams and transcriptions: what
//! LiveKit frontends send as chat and read as transcripts.
//!
//! Owns: [`StreamReader`] (an incoming text or byte stream: its
//! [`StreamInfo`], then its content through [`std::io::Read`] or
//! [`StreamReader::read_all`]), [`StreamWriter`] (an outgoing stream:
//! [`std::io::Write`], then [`StreamWriter::close`] with trailer
//! attributes), [`StreamOptions`], [`AgentTranscript`] (an agent-speech
//! segment the way components-js `useTranscriptions` reads it) and the
//! [`JobContext`] methods that open them. Names follow the official SDKs
//! (`register_text_stream_handler`, `send_text`, `stream_text`,
//! `send_file`).
//!
//! Threads: every type is `Send`; a reader or writer is used by one thread
//! at a time. [`JobContext::stream_channel`] hands incoming streams to a
//! `crossbeam_channel`, so they can be `select!`ed with audio, events and
//! data.
//!
//! Must not touch: the host's implementation (everything goes through the
//! table). On a host older than ABI 1.4 every call is
//! [`MediaError::HostTooOld`].

use crate::abi::*;
use crate::media::{check, lk, millis, MediaError};
use crate::sdk::JobContext;
use std::time::Duration;

/// Text or bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Text,
    Bytes,
}

/// An incoming stream's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub stream_id: String,
    pub kind: StreamKind,
    pub topic: String,
    pub mime_type: String,
    /// Who the header says sent it (an agent may send a user's transcript
    /// on the user's behalf).
    pub sender_identity: String,
    /// Byte streams: the file name.
    pub name: String,
    pub total_length: Option<u64>,
    /// Ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Sorted by key; after the end, with the trailer's merged in.
    pub attributes: Vec<(String, String)>,
}

impl StreamInfo {
    /// The value of attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text(s: LkStr) -> String {
    // SAFETY: host-owned, valid for the call (the reader's life).
    unsafe { s.to_string_lossy() }
}

/// An incoming data stream. Reads block up to the reader's timeout
/// ([`StreamReader::set_timeout`], default 30 s). Closed on drop.
pub struct StreamReader {
    ctx: JobContext,
    raw: *mut LkStreamReader,
    info: StreamInfo,
    timeout: Duration,
    error: Option<String>,
}

// SAFETY: the host documents reader calls as callable from any thread.
unsafe impl Send for StreamReader {}

/// Result of [`JobContext::next_stream`].
pub enum NextStream {
    Stream(Box<StreamReader>),
    Timeout,
    /// This many streams were dropped because nobody took them in time.
    Missed(u64),
    ShuttingDown,
}

impl StreamReader {
    fn fetch_info(ctx: JobContext, raw: *mut LkStreamReader) -> Result<StreamInfo, MediaError> {
        let mut i = LkStreamInfo::zeroed();
        check(unsafe { (ctx.api().stream_reader_info)(raw, &mut i) })?;
        let n = i.n_attributes as usize;
        let attributes = if n == 0 {
            Vec::new()
        } else {
            // SAFETY: n entries each, valid until the reader is closed.
            let keys = unsafe { std::slice::from_raw_parts(i.attribute_keys, n) };
            let values = unsafe { std::slice::from_raw_parts(i.attribute_values, n) };
            keys.iter()
                .zip(values)
                .map(|(k, v)| (text(*k), text(*v)))
                .collect()
        };
        Ok(StreamInfo {
            stream_id: text(i.stream_id),
            kind: if i.kind == LK_STREAM_BYTES {
                StreamKind::Bytes
            } else {
                StreamKind::Text
            },
            topic: text(i.topic),
            mime_type: text(i.mime_type),
            sender_identity: text(i.sender_identity),
            name: text(i.name),
            total_length: (i.flags & LK_STREAM_HAS_TOTAL_LENGTH != 0).then_some(i.total_length),
            timestamp_ms: i.timestamp_ms,
            attributes,
        })
    }

    /// The header as it arrived.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// The header again, with the trailer's attributes once the stream
    /// ended (e.g. `lk.transcription_final`).
    pub fn final_info(&self) -> Result<StreamInfo, MediaError> {
        Self::fetch_info(self.ctx, self.raw)
    }

    /// How long each read waits for content.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Why the stream was aborted (after [`MediaError::Aborted`]).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The next piece of content (at most `max` bytes; a text stream's
    /// pieces never split a character), `Ok(None)` at the end.
    pub fn read_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, MediaError> {
        let mut buf = vec![0u8; max.max(4)];
        let mut len = 0usize;
        let rc = unsafe {
            (self.ctx.api().stream_read)(
                self.raw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
                millis(self.timeout),
            )
        };
        match rc {
            LK_OK => {
                buf.truncate(len);
                Ok(Some(buf))
            }
            LK_ENDED => Ok(None),
            LK_ERR_ABORTED => {
                let why = text(unsafe { (self.ctx.api().stream_reader_error)(self.raw) });
                self.error = Some(why);
                Err(MediaError::Aborted)
            }
            other => Err(MediaError::from_code(other)),
        }
    }

    /// The whole content (each read waiting up to the timeout).
    pub fn read_all(&mut self) -> Result<Vec<u8>, MediaError> {
        let mut out = Vec::new();
        while let Some(part) = self.read_chunk(64 * 1024)? {
            out.extend(part);
        }
        Ok(out)
    }

    /// The whole content of a text stream.
    pub fn read_text(&mut self) -> Result<String, MediaError> {
        String::from_utf8(self.read_all()?).map_err(|_| MediaError::Invalid)
    }
}

impl std::io::Read for StreamReader {
    /// `Ok(0)` at the end; a timeout is `ErrorKind::TimedOut`, an abort
    /// `ErrorKind::Other` with the reason.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut len = 0usize;
        // A text stream needs room for one whole character.
        if buf.len() < 4 {
            return match self.read_chunk(4) {
                Ok(Some(part)) if part.len() <= buf.len() => {
                    buf[..part.len()].copy_from_slice(&part);
                    Ok(part.len())
                }
                Ok(Some(_)) => Err(std::io::Error::other("buffer smaller than a character")),
                Ok(None) => Ok(0),
                Err(e) => Err(io_error(e, self.error.as_deref())),
            };
        }
        let rc = unsafe {
            (self.ctx.api().stream_read)(
                self.raw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
                millis(self.timeout),
            )
        };
        match rc {
            LK_OK => Ok(len),
            LK_ENDED => Ok(0),
            LK_ERR_ABORTED => {
                let why = text(unsafe { (self.ctx.api().stream_reader_error)(self.raw) });
                let e = std::io::Error::other(format!("stream aborted: {why}"));
                self.error = Some(why);
                Err(e)
            }
            other => Err(io_error(MediaError::from_code(other), None)),
        }
    }
}

fn io_error(e: MediaError, why: Option<&str>) -> std::io::Error {
    match e {
        MediaError::Timeout => {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no content in time")
        }
        MediaError::Aborted => {
            std::io::Error::other(format!("stream aborted: {}", why.unwrap_or("")))
        }
        other => std::io::Error::other(other.to_string()),
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        unsafe { (self.ctx.api().stream_reader_close)(self.raw) }
    }
}

/// What an outgoing stream says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    pub kind: StreamKind,
    pub topic: String,
    /// Empty: `text/plain` or `application/octet-stream`.
    pub mime_type: String,
    /// Byte streams: the file name.
    pub name: String,
    /// Text streams: send on behalf of this participant (a user's
    /// transcript); empty: the job itself.
    pub sender_identity: String,
    /// Empty: a new UUID.
    pub stream_id: String,
    pub total_length: Option<u64>,
    pub attributes: Vec<(String, String)>,
    /// Empty: everyone.
    pub destinations: Vec<String>,
}

impl StreamOptions {
    pub fn text(topic: &str) -> StreamOptions {
        StreamOptions {
            kind: StreamKind::Text,
            topic: topic.to_string(),
            mime_type: String::new(),
            name: String::new(),
            sender_identity: String::new(),
            stream_id: String::new(),
            total_length: None,
            attributes: Vec::new(),
            destinations: Vec::new(),
        }
    }

    pub fn bytes(topic: &str, name: &str) -> StreamOptions {
        StreamOptions {
            kind: StreamKind::Bytes,
            name: name.to_string(),
            ..StreamOptions::text(topic)
        }
    }

    /// Only to these participants.
    pub fn to(mut self, identities: &[&str]) -> StreamOptions {
        self.destinations = identities.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn attribute(mut self, key: &str, value: &str) -> StreamOptions {
        self.attributes.push((key.to_string(), value.to_string()));
        self
    }

    pub fn on_behalf_of(mut self, identity: &str) -> StreamOptions {
        self.sender_identity = identity.to_string();
        self
    }
}

/// An outgoing stream. Each write is sent as its own chunks (15 000 bytes
/// each; text cut between characters), so a text delta arrives as one
/// piece. [`StreamWriter::close`] completes it; dropping it unclosed
/// aborts it (receivers see an error, never a silent truncation).
pub struct StreamWriter {
    ctx: JobContext,
    raw: *mut LkStreamWriter,
    stream_id: String,
    timeout: Duration,
    open: bool,
}

// SAFETY: the host documents writer calls as callable from any thread.
unsafe impl Send for StreamWriter {}

impl StreamWriter {
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Sends `data` (valid UTF-8 for a text stream).
    pub fn send(&mut self, data: &[u8]) -> Result<(), MediaError> {
        check(unsafe {
            (self.ctx.api().stream_write)(self.raw, data.as_ptr(), data.len(), millis(self.timeout))
        })
    }

    /// Completes the stream with these trailer attributes.
    pub fn close(mut self, trailer: &[(&str, &str)]) -> Result<(), MediaError> {
        self.finish("", trailer)
    }

    /// Ends the stream abnormally with `reason`.
    pub fn abort(mut self, reason: &str) -> Result<(), MediaError> {
        self.finish(reason, &[])
    }

    fn finish(&mut self, reason: &str, trailer: &[(&str, &str)]) -> Result<(), MediaError> {
        self.open = false;
        let keys: Vec<LkStr> = trailer.iter().map(|(k, _)| lk(k)).collect();
        let values: Vec<LkStr> = trailer.iter().map(|(_, v)| lk(v)).collect();
        check(unsafe {
            (self.ctx.api().stream_close)(
                self.raw,
                lk(reason),
                keys.as_ptr(),
                values.as_ptr(),
                keys.len(),
                millis(self.timeout),
            )
        })
    }
}

impl std::io::Write for StreamWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.send(buf)
            .map(|()| buf.len())
            .map_err(|e| io_error(e, None))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if self.open {
            let _ = self.finish("the writer was dropped without close", &[]);
        }
    }
}

impl JobContext {
    fn streams(&self) -> Result<&'static LkHostApi, MediaError> {
        if self.has_streams() {
            Ok(self.api())
        } else {
            Err(MediaError::HostTooOld)
        }
    }

    /// Keeps incoming streams on `topic` ("" for every topic); streams on
    /// topics nobody accepts are dropped by the host.
    pub fn accept_streams(&self, topic: &str) -> Result<(), MediaError> {
        let api = self.streams()?;
        check(unsafe { (api.stream_accept_topic)(self.raw_job(), lk(topic)) })
    }

    /// Waits up to `timeout` for the next incoming stream.
    pub fn next_stream(&self, timeout: Duration) -> NextStream {
        let Ok(api) = self.streams() else {
            std::thread::sleep(timeout.min(Duration::from_millis(100)));
            return if self.is_shutting_down() {
                NextStream::ShuttingDown
            } else {
                NextStream::Timeout
            };
        };
        let mut raw = std::ptr::null_mut();
        let mut missed = 0u64;
        let rc =
            unsafe { (api.next_stream)(self.raw_job(), millis(timeout), &mut raw, &mut missed) };
        match rc {
            LK_OK => match StreamReader::fetch_info(*self, raw) {
                Ok(info) => NextStream::Stream(Box::new(StreamReader {
                    ctx: *self,
                    raw,
                    info,
                    timeout: Duration::from_secs(30),
                    error: None,
                })),
                // Closed under us (the job ended): nothing to read.
                Err(_) => NextStream::ShuttingDown,
            },
            LK_MISSED => NextStream::Missed(missed),
            LK_TIMEOUT => NextStream::Timeout,
            _ => NextStream::ShuttingDown,
        }
    }

    /// Incoming streams (of the accepted topics) on a channel; disconnects
    /// at shutdown. Streams missed because the channel was full are logged.
    pub fn stream_channel(
        &self,
        capacity: usize,
    ) -> crossbeam_channel::Receiver<Box<StreamReader>> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let ctx = *self;
        std::thread::spawn(move || loop {
            match ctx.next_stream(Duration::from_millis(200)) {
                NextStream::Stream(s) => {
                    if tx.send(s).is_err() {
                        return;
                    }
                }
                NextStream::Missed(n) => ctx.warn(&format!("stream channel: {n} streams missed")),
                NextStream::Timeout => {}
                NextStream::ShuttingDown => return,
            }
        });
        rx
    }

    /// Opens an outgoing stream (sends its header).
    pub fn open_stream(
        &self,
        options: &StreamOptions,
        timeout: Duration,
    ) -> Result<StreamWriter, MediaError> {
        let api = self.streams()?;
        let keys: Vec<LkStr> = options.attributes.iter().map(|(k, _)| lk(k)).collect();
        let values: Vec<LkStr> = options.attributes.iter().map(|(_, v)| lk(v)).collect();
        let dests: Vec<LkStr> = options.destinations.iter().map(|d| lk(d)).collect();
        let opts = LkStreamOptions {
            struct_size: std::mem::size_of::<LkStreamOptions>() as u32,
            kind: match options.kind {
                StreamKind::Text => LK_STREAM_TEXT,
                StreamKind::Bytes => LK_STREAM_BYTES,
            },
            flags: if options.total_length.is_some() {
                LK_STREAM_HAS_TOTAL_LENGTH
            } else {
                0
            },
            n_attributes: keys.len() as u32,
            topic: lk(&options.topic),
            mime_type: lk(&options.mime_type),
            name: lk(&options.name),
            sender_identity: lk(&options.sender_identity),
            stream_id: lk(&options.stream_id),
            total_length: options.total_length.unwrap_or(0),
            attribute_keys: keys.as_ptr(),
            attribute_values: values.as_ptr(),
            destination_identities: dests.as_ptr(),
            n_destinations: dests.len(),
        };
        let mut raw = std::ptr::null_mut();
        let mut sid = LkStr::EMPTY;
        check(unsafe {
            (api.stream_open)(self.raw_job(), &opts, millis(timeout), &mut raw, &mut sid)
        })?;
        Ok(StreamWriter {
            ctx: *self,
            raw,
            stream_id: text(sid),
            timeout,
            open: true,
        })
    }

    /// Sends a whole text as one stream (the SDKs' `send_text`).
    pub fn send_text(
        &self,
        text: &str,
        options: &StreamOptions,
        timeout: Duration,
    ) -> Result<(), MediaError> {
        let mut opts = options.clone();
        opts.kind = StreamKind::Text;
        opts.total_length = Some(text.len() as u64);
        let mut w = self.open_stream(&opts, timeout)?;
        w.send(text.as_bytes())?;
        w.close(&[])
    }

    /// Sends whole bytes as one stream (the SDKs' `send_file` /
    /// `send_bytes`).
    pub fn send_bytes(
        &self,
        bytes: &[u8],
        options: &StreamOptions,
        timeout: Duration,
    ) -> Result<(), MediaError> {
        let mut opts = options.clone();
        opts.kind = StreamKind::Bytes;
        opts.total_length = Some(bytes.len() as u64);
        let mut w = self.open_stream(&opts, timeout)?;
        w.send(bytes)?;
        w.close(&[])
    }

    /// Sends one legacy Transcription packet (what
    /// `useVoiceAssistant().agentTranscriptions` reads): the whole text so
    /// far of segment `segment_id` of `participant_identity`'s track.
    #[allow(clippy::too_many_arguments)]
    pub fn publish_transcription(
        &self,
        participant_identity: &str,
        track_sid: &str,
        segment_id: &str,
        text: &str,
        is_final: bool,
        timeout: Duration,
    ) -> Result<(), MediaError> {
        let api = self.streams()?;
        let t = LkTranscription {
            struct_size: std::mem::size_of::<LkTranscription>() as u32,
            flags: if is_final { LK_TRANSCRIPTION_FINAL } else { 0 },
            participant_identity: lk(participant_identity),
            track_sid: lk(track_sid),
            segment_id: lk(segment_id),
            text: lk(text),
            language: LkStr::EMPTY,
            start_ms: 0,
            end_ms: 0,
        };
        check(unsafe { (api.publish_transcription)(self.raw_job(), &t, millis(timeout)) })
    }

    /// Starts a segment of the agent's own speech transcript on
    /// `lk.transcription`, for its microphone `track_sid`, the way
    /// livekit-agents sends it (see [`AgentTranscript`]).
    pub fn agent_transcript(
        &self,
        track_sid: &str,
        timeout: Duration,
    ) -> Result<AgentTranscript, MediaError> {
        let segment_id = format!("SG_{}", short_id());
        let options = StreamOptions::text(TRANSCRIPTION_TOPIC)
            .attribute(ATTR_SEGMENT_ID, &segment_id)
            .attribute(ATTR_TRANSCRIBED_TRACK_ID, track_sid)
            .attribute(ATTR_TRANSCRIPTION_FINAL, "false");
        let writer = self.open_stream(&options, timeout)?;
        Ok(AgentTranscript {
            ctx: *self,
            writer: Some(writer),
            segment_id,
            track_sid: track_sid.to_string(),
            text: String::new(),
            timeout,
        })
    }

    /// Publishes a transcript of a user's speech on their behalf (the
    /// stream's header names them): each update (`is_final` false) is one
    /// stream with the whole text so far; the last one is final. Updates of
    /// one utterance share `segment_id`.
    pub fn user_transcript(
        &self,
        user_identity: &str,
        track_sid: &str,
        segment_id: &str,
        text: &str,
        is_final: bool,
        timeout: Duration,
    ) -> Result<(), MediaError> {
        let options = StreamOptions::text(TRANSCRIPTION_TOPIC)
            .on_behalf_of(user_identity)
            .attribute(ATTR_SEGMENT_ID, segment_id)
            .attribute(ATTR_TRANSCRIBED_TRACK_ID, track_sid)
            .attribute(
                ATTR_TRANSCRIPTION_FINAL,
                if is_final { "true" } else { "false" },
            );
        let mut w = self.open_stream(&options, timeout)?;
        w.send(text.as_bytes())?;
        w.close(&[])?;
        self.publish_transcription(
            user_identity,
            track_sid,
            segment_id,
            text,
            is_final,
            timeout,
        )
    }
}

/// The topic transcripts go on (livekit-agents `room_io`).
pub const TRANSCRIPTION_TOPIC: &str = "lk.transcription";
/// The topic chat comes on (components-js `useChat`).
pub const CHAT_TOPIC: &str = "lk.chat";
pub const ATTR_SEGMENT_ID: &str = "lk.segment_id";
pub const ATTR_TRANSCRIBED_TRACK_ID: &str = "lk.transcribed_track_id";
pub const ATTR_TRANSCRIPTION_FINAL: &str = "lk.transcription_final";

fn short_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:012x}",
        (nanos ^ (n << 48) ^ std::process::id() as u64) & 0xffff_ffff_ffff
    )
}

/// One segment of the agent's speech transcript: a stream on
/// `lk.transcription` whose chunks are the text deltas, with
/// `lk.segment_id`, `lk.transcribed_track_id` (the agent's microphone) and
/// `lk.transcription_final` "true" in the trailer — plus, for frontends
/// that read only those, the legacy Transcription packet with the whole
/// text after each delta.
pub struct AgentTranscript {
    ctx: JobContext,
    writer: Option<StreamWriter>,
    segment_id: String,
    track_sid: String,
    text: String,
    timeout: Duration,
}

impl AgentTranscript {
    pub fn segment_id(&self) -> &str {
        &self.segment_id
    }

    /// Sends the next piece of text.
    pub fn push(&mut self, delta: &str) -> Result<(), MediaError> {
        let w = self.writer.as_mut().ok_or(MediaError::Closed)?;
        w.send(delta.as_bytes())?;
        self.text.push_str(delta);
        let me = self.ctx.participant_identity().unwrap_or("");
        self.ctx.publish_transcription(
            me,
            &self.track_sid,
            &self.segment_id,
            &self.text,
            false,
            self.timeout,
        )
    }

    /// Ends the segment: the final trailer and the final legacy packet.
    pub fn finish(mut self) -> Result<(), MediaError> {
        let w = self.writer.take().ok_or(MediaError::Closed)?;
        w.close(&[(ATTR_TRANSCRIPTION_FINAL, "true")])?;
        let me = self.ctx.participant_identity().unwrap_or("");
        self.ctx.publish_transcription(
            me,
            &self.track_sid,
            &self.segment_id,
            &self.text,
            true,
            self.timeout,
        )
    }
}
