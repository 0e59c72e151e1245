//! The bodies of the fuzz targets for the server's own parsers of untrusted
//! bytes (`fuzz/`, cargo-fuzz on nightly), also replayed over their corpus by
//! `server/tests/fuzz_corpus.rs` on stable. Each panics on purpose when a
//! property fails: that is how a fuzzer learns of a bug.
//!
//! - [`websocket_frames`]: the WebSocket frame reader, whatever the bytes and
//!   however they are cut, gives the same messages and the same violation as
//!   when it reads them at once, and never keeps more than it may.
//! - [`websocket_upgrade`]: the upgrade request's headers, any of them.
//! - [`http3_handshake`]: the HTTP/3 frames of a WebTransport handshake
//!   (SETTINGS, the CONNECT request) as the server reads them.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::transport::websocket::frame::{FrameReader, Incoming};
use crate::transport::websocket::handshake;

/// Small limits, so that short inputs reach the skipping and the hard cap.
const MAX_MESSAGE: usize = 256;
const HARD_MAX: usize = 4096;

/// What a reader handed on, as comparable text, and how it ended.
fn read_in_pieces(data: &[u8], step: usize) -> (Vec<String>, Option<String>) {
    let mut reader = FrameReader::new(MAX_MESSAGE, HARD_MAX);
    let mut seen = Vec::new();
    for piece in data.chunks(step.max(1)) {
        reader.spare().extend_from_slice(piece);
        loop {
            match reader.next() {
                Ok(Some(incoming)) => seen.push(match incoming {
                    Incoming::Text(t) => {
                        assert!(t.len() <= MAX_MESSAGE, "a text message over the limit was handed on");
                        format!("text {t:?}")
                    }
                    Incoming::Binary(b) => {
                        assert!(b.len() <= MAX_MESSAGE, "a binary message over the limit was handed on");
                        format!("binary {b:?}")
                    }
                    Incoming::Skipped { size } => {
                        assert!(
                            size as usize > MAX_MESSAGE && size as usize <= HARD_MAX,
                            "skipped {size}"
                        );
                        format!("skipped {size}")
                    }
                    Incoming::Ping(p) => format!("ping {p:?}"),
                    Incoming::Pong => "pong".into(),
                    Incoming::Close(code) => format!("close {code:?}"),
                }),
                Ok(None) => break,
                Err(violation) => return (seen, Some(violation.to_string())),
            }
        }
    }
    (seen, None)
}

/// The first byte picks how the rest is cut; the rest is what a client sent.
pub fn websocket_frames(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let whole = read_in_pieces(stream, stream.len());
    let cut = read_in_pieces(stream, usize::from(step % 64) + 1);
    assert_eq!(whole, cut, "the messages depend on how the bytes were cut");
}

/// Any bytes as an upgrade request's header lines.
pub fn websocket_upgrade(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in String::from_utf8_lossy(data).lines() {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_bytes(value.trim().as_bytes()),
            )
        {
            headers.append(name, value);
        }
    }
    if let Ok(accept) = handshake::accept(&headers) {
        // The accept value is base64 of a SHA-1: 28 characters.
        assert_eq!(accept.len(), 28);
    }
}

/// Any bytes as the start of a peer's control stream and of a CONNECT stream.
pub fn http3_handshake(data: &[u8]) {
    let _ = web_transport_proto::Settings::decode(&mut &data[..]);
    let _ = web_transport_proto::ConnectRequest::decode(&mut &data[..]);
    let _ = proto::h3::frame_len(data);
}
