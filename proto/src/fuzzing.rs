//! The fuzz targets' body, also replayed by the tests over the corpus.
//!
//! [`client_frames`] feeds arbitrary bytes through both ways the server decodes
//! what a client sends, exactly as the transports do: as a WebTransport stream
//! ([`read_frame`] until the stream ends, each frame [`codec::decode`]d) and as
//! one WebSocket frame ([`codec::decode_enveloped`]). Whatever the bytes, none
//! of that may panic; every message that does decode must survive a round trip.
//!
//! The `fuzz/` project at the workspace root (cargo-fuzz, nightly) calls this on
//! every input; `proto/tests/fuzz_corpus.rs` replays its corpus on stable. This
//! module panics on purpose when a property fails: that is how a fuzzer learns
//! of a bug. Nothing else calls it.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::codec::{self, Encoding};
use crate::frame::{FrameError, encode_frame, read_frame};
use crate::{ChannelId, ClientMessage};

/// The server's default `max_frame_bytes` (`SIGNAL_MAX_FRAME_BYTES`, 64 KiB).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Runs `data` through the server's decoding of client frames in `encoding`.
///
/// Panics if a decoded message does not come back equal from a round trip (see
/// [`check_round_trip`]); never panics otherwise, or that is the bug.
pub fn client_frames(encoding: Encoding, data: &[u8]) {
    // WebTransport: a stream of length-prefixed frames, read like the server's
    // `read_channel` does: an oversized frame is skipped, anything else that is
    // not a frame ends the stream.
    let mut stream = data;
    let mut buf = Vec::new();
    loop {
        match read_frame_now(&mut stream, &mut buf, DEFAULT_MAX_FRAME) {
            Ok(true) => {
                if let Ok(msg) = codec::decode::<ClientMessage>(encoding, &buf) {
                    check_round_trip(encoding, None, &msg);
                }
            }
            Err(FrameError::TooLarge { .. }) => {}
            Ok(false) | Err(_) => break,
        }
    }
    // WebSocket: the whole input is one frame, enveloped with its channel.
    if let Ok((channel, msg)) = codec::decode_enveloped::<ClientMessage>(encoding, data) {
        check_round_trip(encoding, Some(channel), &msg);
    }
}

/// Asserts that `msg` encodes and decodes back to itself, bare and as a
/// WebTransport frame, or enveloped with `channel` when it came from one.
///
/// The comparison is of values, not bytes: a decoder accepts more spellings than
/// the encoder writes (JSON whitespace, escapes, field order, unknown fields,
/// `null` for an absent id, explicit `"ch":0`; bincode varints longer than
/// needed), so the input bytes need not come back. What must hold instead is
/// that re-encoding is stable: the encoding of the decoded copy is the same
/// bytes again. Messages hold no floats, so JSON loses no precision.
pub fn check_round_trip(encoding: Encoding, channel: Option<ChannelId>, msg: &ClientMessage) {
    let bytes = codec::encode(encoding, msg);
    let again: ClientMessage = codec::decode(encoding, &bytes).expect("an encoded message decodes");
    assert_eq!(&again, msg, "bare {encoding:?} round trip");
    assert_eq!(codec::encode(encoding, &again), bytes, "bare {encoding:?} re-encoding");

    let frame = encode_frame(encoding, msg);
    let mut stream = &frame[..];
    let mut buf = Vec::new();
    assert!(
        read_frame_now(&mut stream, &mut buf, frame.len()).expect("an encoded frame reads back"),
        "an encoded frame is a frame"
    );
    assert!(stream.is_empty(), "a frame is read whole");
    assert_eq!(buf, bytes, "a frame holds the bare encoding");

    if let Some(channel) = channel {
        let bytes = codec::encode_enveloped(encoding, channel, msg);
        let (ch, again) =
            codec::decode_enveloped::<ClientMessage>(encoding, &bytes).expect("an enveloped message decodes");
        assert_eq!((ch, &again), (channel, msg), "enveloped {encoding:?} round trip");
        assert_eq!(
            codec::encode_enveloped(encoding, ch, &again),
            bytes,
            "enveloped {encoding:?} re-encoding"
        );
    }
}

/// [`read_frame`] over an in-memory stream, which never has to wait.
pub fn read_frame_now(stream: &mut &[u8], buf: &mut Vec<u8>, max: usize) -> Result<bool, FrameError> {
    let mut read = pin!(read_frame(stream, buf, max));
    match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => unreachable!("reading from a byte slice never waits"),
    }
}
