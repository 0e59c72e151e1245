//! Length-prefixed frames on WebTransport streams.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one
//! encoded message. The reader checks the length against its limit before it
//! allocates anything, so a hostile length costs the peer its own bandwidth and
//! the reader nothing.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame was longer than allowed. Its bytes were skipped: the stream is
    /// still in sync and the next frame can be read.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The length prefix claims more than [`crate::codec::HARD_MAX_FRAME`]: no
    /// reader will skip that much (a prefix of 4 GiB would hold the stream
    /// hostage), so the stream cannot be kept in sync and should be closed.
    #[error("frame of {len} bytes is beyond any limit; the stream cannot continue")]
    Unskippable { len: usize },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("stream read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends a frame holding `payload` to `out`.
pub fn write_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frames are far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Encodes `msg` as one frame into `buf`, replacing its contents.
pub fn encode_frame_into<M: serde::Serialize + bincode::Encode>(encoding: crate::Encoding, msg: &M, buf: &mut Vec<u8>) {
    buf.clear();
    append_frame(encoding, msg, buf);
}

/// Appends `msg` as one frame to `buf`, so that several frames can go out in
/// one write.
pub fn append_frame<M: serde::Serialize + bincode::Encode>(encoding: crate::Encoding, msg: &M, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; PREFIX_LEN]);
    crate::codec::encode_into(encoding, msg, buf);
    let len = u32::try_from(buf.len() - start - PREFIX_LEN).expect("frames are far below 4 GiB");
    buf[start..start + PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
}

/// Encodes `msg` as one frame in a fresh buffer.
pub fn encode_frame<M: serde::Serialize + bincode::Encode>(encoding: crate::Encoding, msg: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    encode_frame_into(encoding, msg, &mut buf);
    buf
}

/// Reads the next frame into `buf` (replacing its contents).
///
/// Returns `Ok(false)` at a clean end of stream (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<bool, FrameError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let mut got = 0;
    while got < PREFIX_LEN {
        match reader.read(&mut prefix[got..]).await? {
            0 if got == 0 => return Ok(false),
            0 => return Err(FrameError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    buf.clear();
    if len > max.max(crate::codec::HARD_MAX_FRAME) {
        return Err(FrameError::Unskippable { len });
    }
    if len > max {
        skip(reader, len).await?;
        return Err(FrameError::TooLarge { len, max });
    }
    buf.resize(len, 0);
    reader.read_exact(buf).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(true)
}

async fn skip<R: AsyncRead + Unpin>(reader: &mut R, mut len: usize) -> Result<(), FrameError> {
    // On the heap, and only while skipping: an array here would make every
    // reading future (one per stream, alive for the stream's life) 4 KiB larger.
    let mut scratch = vec![0u8; len.min(4096)];
    while len > 0 {
        let want = len.min(scratch.len());
        match reader.read(&mut scratch[..want]).await? {
            0 => return Err(FrameError::Truncated),
            n => len -= n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_back_in_order() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello");
        write_frame(&mut wire, b"");
        write_frame(&mut wire, b"world");
        let mut reader = &wire[..];
        let mut buf = Vec::new();
        for want in [&b"hello"[..], b"", b"world"] {
            assert!(read_frame(&mut reader, &mut buf, 16).await.unwrap());
            assert_eq!(buf, want);
        }
        assert!(!read_frame(&mut reader, &mut buf, 16).await.unwrap());
    }

    #[tokio::test]
    async fn appended_frames_are_read_back_one_by_one() {
        let mut wire = Vec::new();
        append_frame(crate::Encoding::Json, &"first", &mut wire);
        append_frame(crate::Encoding::Json, &"second", &mut wire);
        let mut reader = &wire[..];
        let mut buf = Vec::new();
        for want in [&b"\"first\""[..], b"\"second\""] {
            assert!(read_frame(&mut reader, &mut buf, 64).await.unwrap());
            assert_eq!(buf, want);
        }
        assert!(!read_frame(&mut reader, &mut buf, 64).await.unwrap());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_skipped_and_the_stream_stays_in_sync() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &[7u8; 100]);
        write_frame(&mut wire, b"next");
        let mut reader = &wire[..];
        let mut buf = Vec::new();
        let err = read_frame(&mut reader, &mut buf, 10).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: 100, max: 10 }));
        assert!(read_frame(&mut reader, &mut buf, 10).await.unwrap());
        assert_eq!(buf, b"next");
    }

    #[tokio::test]
    async fn a_length_beyond_the_hard_limit_is_not_skipped() {
        let wire = u32::MAX.to_be_bytes();
        let mut reader = &wire[..];
        let err = read_frame(&mut reader, &mut Vec::new(), 10).await.unwrap_err();
        assert!(matches!(err, FrameError::Unskippable { len } if len == u32::MAX as usize));
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_truncated() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello");
        wire.truncate(6);
        let mut reader = &wire[..];
        let err = read_frame(&mut reader, &mut Vec::new(), 16).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
    }
}
