//! What an outgoing data stream puts on the wire: the header, the content
//! cut into chunks, the trailer (LiveKit's `DataStream.Header`, `Chunk`,
//! `Trailer`, as livekit-client 2.23 and the Rust and Python SDKs send
//! them).
//!
//! Owns: [`split_chunks`] (15 000 content bytes per chunk; text cut only
//! between UTF-8 characters) and the message builders. Must not touch:
//! sending (the hub does it, in order, on the reliable channel).

use super::incoming::StreamKind;
use livekit_protocol as proto;

/// Content bytes per chunk: what every official SDK uses, leaving room for
/// the envelope (and E2EE) under the 16 KiB the data channel carries
/// (livekit-client `data-stream/constants.ts`, rust-sdks
/// `outgoing/constants.rs`, python-sdks `STREAM_CHUNK_SIZE`).
pub const CHUNK_BYTES: usize = 15_000;
/// Largest encoded header packet sent (livekit-client refuses bigger ones:
/// `HeaderTooLarge`).
pub const MAX_HEADER_BYTES: usize = 15_000;

/// Cuts `data` into chunks of at most `max` bytes; for text, a cut never
/// falls inside a UTF-8 character (the cut moves back over continuation
/// bytes, as the SDKs' `splitUtf8` does), so every chunk is valid UTF-8 on
/// its own when `data` is. Empty data gives no chunk.
pub fn split_chunks(kind: StreamKind, data: &[u8], max: usize) -> Vec<&[u8]> {
    let max = max.max(4);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let mut n = max.min(rest.len());
        if kind == StreamKind::Text {
            while n > 0 && n < rest.len() && (rest[n] & 0xC0) == 0x80 {
                n -= 1;
            }
            if n == 0 {
                n = max.min(rest.len()); // not UTF-8 after all: cut anyway
            }
        }
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// A new stream id (a UUID, as the SDKs use).
pub fn new_stream_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The header of a stream the job sends.
#[allow(clippy::too_many_arguments)]
pub fn header(
    stream_id: &str,
    kind: StreamKind,
    topic: &str,
    mime_type: &str,
    name: &str,
    total_length: Option<u64>,
    attributes: &[(String, String)],
    generated: bool,
) -> proto::data_stream::Header {
    use proto::data_stream::header::ContentHeader;
    let mime = match (mime_type.is_empty(), kind) {
        (false, _) => mime_type.to_string(),
        (true, StreamKind::Text) => "text/plain".to_string(),
        (true, StreamKind::Bytes) => "application/octet-stream".to_string(),
    };
    let content_header = match kind {
        StreamKind::Text => ContentHeader::TextHeader(proto::data_stream::TextHeader {
            operation_type: proto::data_stream::OperationType::Create as i32,
            generated,
            ..Default::default()
        }),
        StreamKind::Bytes => ContentHeader::ByteHeader(proto::data_stream::ByteHeader {
            name: if name.is_empty() {
                "unknown".to_string()
            } else {
                name.to_string()
            },
        }),
    };
    proto::data_stream::Header {
        stream_id: stream_id.to_string(),
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        topic: topic.to_string(),
        mime_type: mime,
        total_length,
        attributes: attributes.iter().cloned().collect(),
        content_header: Some(content_header),
        ..Default::default()
    }
}

pub fn chunk(stream_id: &str, index: u64, content: &[u8]) -> proto::data_stream::Chunk {
    proto::data_stream::Chunk {
        stream_id: stream_id.to_string(),
        chunk_index: index,
        content: content.to_vec(),
        ..Default::default()
    }
}

pub fn trailer(
    stream_id: &str,
    reason: &str,
    attributes: &[(String, String)],
) -> proto::data_stream::Trailer {
    proto::data_stream::Trailer {
        stream_id: stream_id.to_string(),
        reason: reason.to_string(),
        attributes: attributes.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 15 001 bytes of "é" (two bytes each) cut at 15 000: the cut falls
    /// inside a character, so it moves back one byte (the SDKs' pitfall 2).
    #[test]
    fn text_is_cut_between_characters() {
        let text = "é".repeat(7_501);
        let chunks = split_chunks(StreamKind::Text, text.as_bytes(), CHUNK_BYTES);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].len(), 15_000);
        for c in &chunks {
            assert!(std::str::from_utf8(c).is_ok());
        }
        let odd = format!("a{}", "é".repeat(7_500));
        let chunks = split_chunks(StreamKind::Text, odd.as_bytes(), CHUNK_BYTES);
        assert_eq!(
            chunks[0].len(),
            14_999,
            "moved back off a continuation byte"
        );
        assert!(chunks.iter().all(|c| std::str::from_utf8(c).is_ok()));
        let bytes = vec![0x80u8; 30_001];
        let chunks = split_chunks(StreamKind::Bytes, &bytes, CHUNK_BYTES);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [15_000, 15_000, 1]
        );
        assert!(split_chunks(StreamKind::Text, b"", CHUNK_BYTES).is_empty());
    }

    #[test]
    fn headers_default_their_mime_type_and_name() {
        let h = header("id", StreamKind::Bytes, "t", "", "", Some(3), &[], false);
        assert_eq!(h.mime_type, "application/octet-stream");
        match h.content_header {
            Some(proto::data_stream::header::ContentHeader::ByteHeader(b)) => {
                assert_eq!(b.name, "unknown")
            }
            other => panic!("{other:?}"),
        }
        let h = header("id", StreamKind::Text, "t", "", "", None, &[], true);
        assert_eq!(h.mime_type, "text/plain");
    }
}
