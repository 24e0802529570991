//! One incoming data stream, reassembled: a header, then chunks in order,
//! then a trailer (or its whole content inline in the header).
//!
//! Owns: [`IncomingStream`] — the header as the plugin sees it
//! ([`StreamHeader`]), the content not yet read, and how the stream ends:
//! complete, or aborted with a reason. Every fault ends the stream with an
//! error, never with wrong content: a chunk out of order or missing, more
//! or fewer bytes than `total_length`, invalid UTF-8 in a text stream, more
//! than the per-stream limit, a trailer with a reason, the sender leaving.
//! Duplicated chunks (an index already seen) are dropped, as livekit-client
//! 2.23 does.
//!
//! Must not touch: packets or topics (the hub routes them here), threads
//! (a reader waits on the stream's condvar with its own deadline and stop
//! predicate, woken by the stop bell, `crate::media::bell`).

use crate::media::bell::Waitable;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Text or bytes (`DataStream.Header.content_header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Text,
    Bytes,
}

/// An incoming stream's header, as the plugin sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    pub stream_id: String,
    pub kind: StreamKind,
    pub topic: String,
    pub mime_type: String,
    /// The header packet's sender identity: for a text stream an agent
    /// sends on behalf of a user, the user's.
    pub sender_identity: String,
    /// The sender's participant sid (set by the server on every packet):
    /// the stream is aborted when this participant leaves.
    pub sender_sid: String,
    /// Byte streams: the file name.
    pub name: String,
    pub total_length: Option<u64>,
    pub timestamp_ms: i64,
    /// Sorted by key.
    pub attributes: Vec<(String, String)>,
}

/// How a stream ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    Open,
    Complete,
    Aborted(String),
}

/// Why a read returned no content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    Timeout,
    /// Complete, and every byte was read.
    Ended,
    Aborted(String),
    /// The reader closed it.
    Closed,
    /// `stop()` said so (the job is shutting down).
    Stopped,
}

struct State {
    next_index: u64,
    received: u64,
    unread: VecDeque<u8>,
    end: StreamEnd,
    trailer_attributes: Vec<(String, String)>,
    last_packet: Instant,
    closed: bool,
}

/// One incoming stream (see the module doc). Shared between the hub, which
/// feeds it, and the reader that drains it.
pub struct IncomingStream {
    pub header: StreamHeader,
    /// The stream's state and the condvar its reader waits on (shared
    /// with the stop bell).
    state: Arc<Waitable<State>>,
}

/// Bytes of unread content held across every stream of the room, for the
/// total limit (`--streams-max-bytes`).
pub type Buffered = AtomicUsize;

impl IncomingStream {
    pub fn new(header: StreamHeader, now: Instant) -> IncomingStream {
        IncomingStream {
            header,
            state: Waitable::new(State {
                next_index: 0,
                received: 0,
                unread: VecDeque::new(),
                end: StreamEnd::Open,
                trailer_attributes: Vec::new(),
                last_packet: now,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock()
    }

    fn abort_locked(&self, st: &mut State, reason: String, buffered: &Buffered) {
        if st.end == StreamEnd::Open {
            st.end = StreamEnd::Aborted(reason);
        }
        // What was not read is of no use any more.
        buffered.fetch_sub(st.unread.len(), Ordering::AcqRel);
        st.unread = VecDeque::new();
        self.state.notify_all();
    }

    /// Content for the stream: chunk `index` (or the inline content, index
    /// 0). Aborts the stream on any fault (see the module doc); content
    /// after the end is ignored. `max_bytes` bounds the stream's content,
    /// `max_buffered` the unread content of every stream together.
    pub fn on_chunk(
        &self,
        index: u64,
        content: &[u8],
        now: Instant,
        max_bytes: u64,
        max_buffered: usize,
        buffered: &Buffered,
    ) {
        let mut st = self.lock();
        if st.end != StreamEnd::Open {
            return;
        }
        st.last_packet = now;
        if index < st.next_index {
            return; // a duplicate
        }
        if index > st.next_index {
            let why = format!(
                "chunk {} is missing (chunk {index} arrived next)",
                st.next_index
            );
            return self.abort_locked(&mut st, why, buffered);
        }
        st.next_index += 1;
        if content.is_empty() {
            return;
        }
        if self.header.kind == StreamKind::Text && std::str::from_utf8(content).is_err() {
            let why = format!("chunk {index} is not valid UTF-8");
            return self.abort_locked(&mut st, why, buffered);
        }
        let received = st.received + content.len() as u64;
        if let Some(total) = self.header.total_length {
            if received > total {
                let why = format!("more than the {total} bytes its header announced");
                return self.abort_locked(&mut st, why, buffered);
            }
        }
        if received > max_bytes {
            let why = format!("over the {max_bytes}-byte limit of one stream (--stream-max-bytes)");
            return self.abort_locked(&mut st, why, buffered);
        }
        if buffered.load(Ordering::Acquire) + content.len() > max_buffered {
            let why = format!(
                "the streams' unread content is over {max_buffered} bytes (--streams-max-bytes); read streams as they come"
            );
            return self.abort_locked(&mut st, why, buffered);
        }
        if st.closed {
            // Nobody will read it: count it, keep nothing.
            st.received = received;
            return;
        }
        buffered.fetch_add(content.len(), Ordering::AcqRel);
        st.received = received;
        st.unread.extend(content.iter().copied());
        self.state.notify_all();
    }

    /// The trailer: a non-empty `reason` aborts the stream; otherwise it is
    /// complete (if as long as its header said). Its attributes are merged
    /// into the header's.
    pub fn on_trailer(&self, reason: &str, attributes: Vec<(String, String)>, buffered: &Buffered) {
        let mut st = self.lock();
        if st.end != StreamEnd::Open {
            return;
        }
        st.trailer_attributes = attributes;
        if !reason.is_empty() {
            let why = format!("the sender ended it: {reason}");
            return self.abort_locked(&mut st, why, buffered);
        }
        if let Some(total) = self.header.total_length {
            if st.received != total {
                let why = format!(
                    "it ended after {} of the {total} bytes its header announced",
                    st.received
                );
                return self.abort_locked(&mut st, why, buffered);
            }
        }
        st.end = StreamEnd::Complete;
        self.state.notify_all();
    }

    /// Ends the stream abnormally (the sender left, it went idle, shutdown).
    pub fn abort(&self, reason: String, buffered: &Buffered) {
        let mut st = self.lock();
        self.abort_locked(&mut st, reason, buffered);
    }

    /// The reader is done: unread content is dropped, later content not
    /// kept, waiting reads return `Closed`.
    pub fn close(&self, buffered: &Buffered) {
        let mut st = self.lock();
        st.closed = true;
        buffered.fetch_sub(st.unread.len(), Ordering::AcqRel);
        st.unread = VecDeque::new();
        self.state.notify_all();
    }

    pub fn end(&self) -> StreamEnd {
        self.lock().end.clone()
    }

    /// When the last packet for it arrived (for the idle timeout).
    pub fn last_packet(&self) -> Instant {
        self.lock().last_packet
    }

    /// The header's attributes with the trailer's merged in (a trailer's
    /// value wins), sorted by key.
    pub fn attributes(&self) -> Vec<(String, String)> {
        let st = self.lock();
        let mut all: std::collections::BTreeMap<String, String> =
            self.header.attributes.iter().cloned().collect();
        all.extend(st.trailer_attributes.iter().cloned());
        all.into_iter().collect()
    }

    /// Every byte received so far, for a complete stream the host reads
    /// itself (RPC bodies); `None` while open or when aborted.
    pub fn take_all(&self, buffered: &Buffered) -> Option<Vec<u8>> {
        let mut st = self.lock();
        if st.end != StreamEnd::Complete {
            return None;
        }
        buffered.fetch_sub(st.unread.len(), Ordering::AcqRel);
        Some(std::mem::take(&mut st.unread).into())
    }

    /// Waits until `deadline` (or `stop()`) for content and takes up to
    /// `cap` bytes of it; a text stream's bytes never end inside a UTF-8
    /// character (given `cap >= 4`). An aborted stream reports the abort at
    /// once: its unread content was dropped (what arrived before a fault
    /// may belong to wrong content).
    pub fn read(
        &self,
        cap: usize,
        deadline: Instant,
        stop: &dyn Fn() -> bool,
        buffered: &Buffered,
    ) -> Result<Vec<u8>, ReadEnd> {
        let mut st = self.lock();
        let mut parked = None;
        loop {
            if st.closed {
                return Err(ReadEnd::Closed);
            }
            if let StreamEnd::Aborted(why) = &st.end {
                return Err(ReadEnd::Aborted(why.clone()));
            }
            if !st.unread.is_empty() {
                let mut n = cap.min(st.unread.len());
                if self.header.kind == StreamKind::Text {
                    // Back off to a character boundary: never split one.
                    while n > 0 && n < st.unread.len() && (st.unread[n] & 0xC0) == 0x80 {
                        n -= 1;
                    }
                }
                if n > 0 {
                    let out: Vec<u8> = st.unread.drain(..n).collect();
                    buffered.fetch_sub(n, Ordering::AcqRel);
                    return Ok(out);
                }
            } else if st.end == StreamEnd::Complete {
                return Err(ReadEnd::Ended);
            }
            if stop() {
                return Err(ReadEnd::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadEnd::Timeout);
            }
            st = self.state.park_or_wait(st, deadline, &mut parked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn header(kind: StreamKind, total: Option<u64>) -> StreamHeader {
        StreamHeader {
            stream_id: "s".into(),
            kind,
            topic: "t".into(),
            mime_type: "text/plain".into(),
            sender_identity: "alice".into(),
            sender_sid: "PA_a".into(),
            name: String::new(),
            total_length: total,
            timestamp_ms: 0,
            attributes: vec![("a".into(), "1".into())],
        }
    }

    fn never() -> bool {
        false
    }

    const BIG: u64 = 1 << 30;

    fn read_all(s: &IncomingStream, b: &Buffered) -> Result<Vec<u8>, ReadEnd> {
        let mut out = Vec::new();
        loop {
            match s.read(7, Instant::now() + Duration::from_millis(50), &never, b) {
                Ok(part) => out.extend(part),
                Err(ReadEnd::Ended) => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    #[test]
    fn chunks_in_order_then_a_trailer_make_the_content() {
        let b = Buffered::new(0);
        let s = IncomingStream::new(header(StreamKind::Text, Some(11)), Instant::now());
        s.on_chunk(0, b"hello ", Instant::now(), BIG, usize::MAX, &b);
        s.on_chunk(0, b"hello ", Instant::now(), BIG, usize::MAX, &b); // duplicate
        s.on_chunk(1, b"world", Instant::now(), BIG, usize::MAX, &b);
        s.on_trailer(
            "",
            vec![("a".into(), "2".into()), ("f".into(), "true".into())],
            &b,
        );
        assert_eq!(read_all(&s, &b).unwrap(), b"hello world");
        assert_eq!(b.load(Ordering::Acquire), 0);
        assert_eq!(
            s.attributes(),
            vec![("a".into(), "2".into()), ("f".into(), "true".into())]
        );
    }

    /// A gap, a short stream, a long one, bad UTF-8, a reason in the
    /// trailer, the per-stream and the total limit: each ends the stream
    /// with an error saying which, never with wrong content.
    #[test]
    fn every_fault_aborts_with_its_reason() {
        type Feed = Box<dyn Fn(&IncomingStream, &Buffered)>;
        let cases: Vec<(&str, Feed)> = vec![
            (
                "chunk 1 is missing",
                Box::new(|s, b| {
                    s.on_chunk(0, b"a", Instant::now(), BIG, usize::MAX, b);
                    s.on_chunk(2, b"c", Instant::now(), BIG, usize::MAX, b);
                    s.on_trailer("", vec![], b);
                }),
            ),
            (
                "after 1 of the 11 bytes",
                Box::new(|s, b| {
                    s.on_chunk(0, b"a", Instant::now(), BIG, usize::MAX, b);
                    s.on_trailer("", vec![], b);
                }),
            ),
            (
                "more than the 11 bytes",
                Box::new(|s, b| {
                    s.on_chunk(0, b"0123456789ab", Instant::now(), BIG, usize::MAX, b);
                }),
            ),
            (
                "not valid UTF-8",
                Box::new(|s, b| {
                    s.on_chunk(0, &[0xE2, 0x82], Instant::now(), BIG, usize::MAX, b);
                }),
            ),
            (
                "the sender ended it: cancelled",
                Box::new(|s, b| {
                    s.on_chunk(0, b"a", Instant::now(), BIG, usize::MAX, b);
                    s.on_trailer("cancelled", vec![], b);
                }),
            ),
            (
                "--stream-max-bytes",
                Box::new(|s, b| {
                    s.on_chunk(0, b"abcdef", Instant::now(), 5, usize::MAX, b);
                }),
            ),
            (
                "--streams-max-bytes",
                Box::new(|s, b| {
                    b.fetch_add(10, Ordering::AcqRel);
                    s.on_chunk(0, b"abcdef", Instant::now(), BIG, 12, b);
                    b.fetch_sub(10, Ordering::AcqRel);
                }),
            ),
        ];
        for (expect, feed) in cases {
            let b = Buffered::new(0);
            let s = IncomingStream::new(header(StreamKind::Text, Some(11)), Instant::now());
            feed(&s, &b);
            match read_all(&s, &b) {
                Err(ReadEnd::Aborted(why)) => assert!(why.contains(expect), "{expect}: {why}"),
                other => panic!("{expect}: {other:?}"),
            }
            assert_eq!(b.load(Ordering::Acquire), 0, "{expect}: nothing kept");
        }
    }

    /// A text stream read with a small buffer is never cut inside a
    /// character.
    #[test]
    fn text_reads_end_between_characters() {
        let b = Buffered::new(0);
        let s = IncomingStream::new(header(StreamKind::Text, None), Instant::now());
        let text = "é€😀".repeat(20);
        s.on_chunk(0, text.as_bytes(), Instant::now(), BIG, usize::MAX, &b);
        s.on_trailer("", vec![], &b);
        let mut out = Vec::new();
        while let Ok(part) = s.read(5, Instant::now(), &never, &b) {
            assert!(std::str::from_utf8(&part).is_ok(), "{part:?}");
            out.extend(part);
        }
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }

    #[test]
    fn close_and_stop_wake_a_waiting_read() {
        let b = std::sync::Arc::new(Buffered::new(0));
        let s = std::sync::Arc::new(IncomingStream::new(
            header(StreamKind::Bytes, None),
            Instant::now(),
        ));
        let (s2, b2) = (s.clone(), b.clone());
        let t = std::thread::spawn(move || {
            s2.read(16, Instant::now() + Duration::from_secs(30), &never, &b2)
        });
        std::thread::sleep(Duration::from_millis(50));
        s.close(&b);
        assert_eq!(t.join().unwrap(), Err(ReadEnd::Closed));
        let s = IncomingStream::new(header(StreamKind::Bytes, None), Instant::now());
        let started = Instant::now();
        assert_eq!(
            s.read(16, Instant::now() + Duration::from_secs(30), &|| true, &b),
            Err(ReadEnd::Stopped)
        );
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
