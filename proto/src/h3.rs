//! The HTTP/3 that a WebTransport session needs, for both sides of a quinn
//! connection: SETTINGS, the extended CONNECT and its answer, the header of a
//! WebTransport stream, and the capsule that closes a session.
//!
//! Only this much HTTP/3 is spoken (RFC 9114, RFC 9220, draft-ietf-webtrans-http3):
//! no requests other than the one CONNECT, no QPACK dynamic table (we announce
//! none and never use the peer's), no datagrams. The codecs that are not ours
//! to get wrong (QPACK decoding with Huffman, SETTINGS, capsules) come from
//! `web-transport-proto`; the reading is ours, and every read keeps its bytes
//! in a buffer owned by the caller's future, never in a future that a `select!`
//! could drop halfway (the flaw of wtransport 0.7.2 this module replaced, which
//! lost a SETTINGS frame split over two packets).

use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream};
use web_transport_proto::{Capsule, ConnectRequest, Frame, Settings, StreamUni, VarInt};

/// The ALPN of HTTP/3.
pub const ALPN: &[u8] = b"h3";

/// The largest HTTP/3 frame read during the handshake (a CONNECT request's
/// HEADERS, a SETTINGS frame, a refusal's body).
pub const MAX_HANDSHAKE_FRAME: usize = 16 * 1024;

/// How many unidirectional streams a peer may open before its control stream
/// arrives (its QPACK streams, and streams of types we do not use).
const MAX_EARLY_UNI_STREAMS: usize = 8;

/// The signal value that starts a client-initiated bidirectional WebTransport stream.
const WEBTRANSPORT_STREAM: u64 = 0x41;

/// HTTP/3 error codes (RFC 9114, 8.1) this module closes or stops with.
pub mod code {
    pub const NO_ERROR: u32 = 0x100;
    pub const GENERAL_PROTOCOL_ERROR: u32 = 0x101;
    pub const STREAM_CREATION_ERROR: u32 = 0x103;
    pub const CLOSED_CRITICAL_STREAM: u32 = 0x104;
    pub const FRAME_UNEXPECTED: u32 = 0x105;
    pub const EXCESSIVE_LOAD: u32 = 0x107;
    pub const SETTINGS_ERROR: u32 = 0x109;
    pub const MESSAGE_ERROR: u32 = 0x10e;
    pub const REQUEST_REJECTED: u32 = 0x10b;
}

/// Why an HTTP/3 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H3Error {
    #[error("the connection closed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("reading a stream failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("writing a stream failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("a stream ended in the middle of the handshake")]
    UnexpectedEnd,
    #[error("a frame of {len} bytes during the handshake (at most {MAX_HANDSHAKE_FRAME})")]
    FrameTooLarge { len: u64 },
    #[error("an HTTP/3 frame of type 0x{0:x} where it may not be")]
    UnexpectedFrame(u64),
    #[error("too many unidirectional streams before the control stream")]
    TooManyStreams,
    #[error("the peer's SETTINGS do not enable WebTransport")]
    NoWebTransport,
    #[error("invalid SETTINGS: {0}")]
    Settings(#[from] web_transport_proto::SettingsError),
    #[error("invalid CONNECT: {0}")]
    Connect(#[from] web_transport_proto::ConnectError),
    #[error("not a WebTransport stream of this session")]
    NotOurStream,
    /// The server answered the CONNECT with a status other than 2xx (the client's side).
    #[error("the server refused the session with status {status}")]
    Refused { status: u16, body: Vec<u8> },
}

impl H3Error {
    /// The HTTP/3 error code to close the connection with when this ends the handshake.
    pub fn code(&self) -> u32 {
        match self {
            H3Error::Connection(_) | H3Error::Read(_) | H3Error::Write(_) | H3Error::UnexpectedEnd => {
                code::CLOSED_CRITICAL_STREAM
            }
            H3Error::FrameTooLarge { .. } | H3Error::TooManyStreams => code::EXCESSIVE_LOAD,
            H3Error::UnexpectedFrame(_) => code::FRAME_UNEXPECTED,
            H3Error::NoWebTransport | H3Error::Settings(_) => code::SETTINGS_ERROR,
            H3Error::Connect(_) | H3Error::NotOurStream => code::MESSAGE_ERROR,
            H3Error::Refused { .. } => code::REQUEST_REJECTED,
        }
    }
}

/// The bytes of one stream read so far and not yet taken: reads append to it,
/// frames are taken from its front. Kept by the caller, so nothing read is
/// lost if the reading future is dropped.
#[derive(Default)]
pub struct StreamBuf {
    buf: Vec<u8>,
}

impl StreamBuf {
    /// Reads more of `recv` into the buffer; false at the end of the stream.
    async fn fill(&mut self, recv: &mut RecvStream) -> Result<bool, H3Error> {
        match recv.read_chunk(MAX_HANDSHAKE_FRAME, true).await? {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk.bytes);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Takes a QUIC variable-length integer off the front of the stream.
    async fn varint(&mut self, recv: &mut RecvStream) -> Result<u64, H3Error> {
        loop {
            let mut view = &self.buf[..];
            if let Ok(v) = VarInt::decode(&mut view) {
                let used = self.buf.len() - view.len();
                self.buf.drain(..used);
                return Ok(v.into_inner());
            }
            if !self.fill(recv).await? {
                return Err(H3Error::UnexpectedEnd);
            }
        }
    }

    /// Takes the next HTTP/3 frame (header and payload) off the front of the
    /// stream, skipping reserved (grease) frames; `None` at a clean end of stream.
    pub async fn frame(&mut self, recv: &mut RecvStream) -> Result<Option<(Frame, Vec<u8>)>, H3Error> {
        loop {
            if let Some((frame, len)) = frame_len(&self.buf)? {
                let whole: Vec<u8> = self.buf.drain(..len).collect();
                if frame.is_grease() {
                    continue;
                }
                return Ok(Some((frame, whole)));
            }
            if !self.fill(recv).await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(H3Error::UnexpectedEnd)
                };
            }
        }
    }
}

/// The type of the HTTP/3 frame at the front of `buf` and its whole length, once it
/// has all arrived.
pub fn frame_len(buf: &[u8]) -> Result<Option<(Frame, usize)>, H3Error> {
    let mut view = buf;
    let Ok(frame) = Frame::decode(&mut view) else {
        return Ok(None);
    };
    let Ok(len) = VarInt::decode(&mut view) else {
        return Ok(None);
    };
    let len = len.into_inner();
    if len > MAX_HANDSHAKE_FRAME as u64 {
        return Err(H3Error::FrameTooLarge { len });
    }
    let whole = (buf.len() - view.len()) + len as usize;
    Ok((buf.len() >= whole).then_some((frame, whole)))
}

/// Our control stream's opening: the stream type and a SETTINGS frame that
/// enables WebTransport (one session per connection), the extended CONNECT
/// and HTTP datagrams (which Chromium requires announced), with no QPACK
/// dynamic table.
pub fn settings() -> Vec<u8> {
    let mut settings = Settings::default();
    settings.enable_webtransport(1);
    let mut buf = Vec::new();
    settings.encode(&mut buf);
    buf
}

/// Opens our control stream and sends our SETTINGS. The stream must stay open
/// for the connection's life (closing it is a connection error): keep it.
pub async fn open_control(conn: &Connection) -> Result<SendStream, H3Error> {
    let mut send = conn.open_uni().await?;
    send.write_all(&settings()).await?;
    Ok(send)
}

/// The peer's unidirectional streams the connection must keep open: its
/// control stream and its QPACK streams. Dropping one would stop it, which the
/// peer takes as a connection error.
#[derive(Default)]
pub struct PeerStreams {
    streams: Vec<RecvStream>,
}

impl PeerStreams {
    /// Keeps a stream the peer opened after the handshake. Nothing is read from
    /// it: with no QPACK dynamic table its QPACK streams carry nothing we need,
    /// and their flow-control windows bound what they can send.
    pub fn keep(&mut self, stream: RecvStream) {
        self.streams.push(stream);
    }
}

/// Accepts the peer's unidirectional streams until its control stream and its
/// SETTINGS have arrived; QPACK streams are kept, streams of other types are
/// stopped (RFC 9114, 6.2). Fails if the SETTINGS do not enable WebTransport.
pub async fn accept_control(conn: &Connection) -> Result<PeerStreams, H3Error> {
    let mut kept = PeerStreams::default();
    for _ in 0..MAX_EARLY_UNI_STREAMS {
        let mut recv = conn.accept_uni().await?;
        let mut buf = StreamBuf::default();
        let kind = StreamUni(VarInt::try_from(buf.varint(&mut recv).await?).map_err(|_| H3Error::UnexpectedEnd)?);
        if kind == StreamUni::CONTROL {
            let Some((frame, bytes)) = buf.frame(&mut recv).await? else {
                return Err(H3Error::UnexpectedEnd);
            };
            if frame != Frame::SETTINGS {
                return Err(H3Error::UnexpectedFrame(frame.0.into_inner()));
            }
            // Settings::decode reads the stream type too.
            let mut whole = Vec::with_capacity(bytes.len() + 1);
            StreamUni::CONTROL.encode(&mut whole);
            whole.extend_from_slice(&bytes);
            let settings = Settings::decode(&mut &whole[..])?;
            if settings.supports_webtransport() == 0 {
                return Err(H3Error::NoWebTransport);
            }
            kept.keep(recv);
            return Ok(kept);
        } else if kind == StreamUni::QPACK_ENCODER || kind == StreamUni::QPACK_DECODER {
            kept.keep(recv);
        } else {
            let _ = recv.stop(quinn::VarInt::from_u32(code::STREAM_CREATION_ERROR));
        }
    }
    Err(H3Error::TooManyStreams)
}

/// A CONNECT request as the server received it, with the stream to answer on.
pub struct IncomingConnect {
    pub request: ConnectRequest,
    pub send: SendStream,
    pub recv: RecvStream,
}

/// Accepts the client's first bidirectional stream and reads the CONNECT
/// request on it (`:protocol webtransport`, `:scheme https`).
pub async fn accept_connect(conn: &Connection) -> Result<IncomingConnect, H3Error> {
    let (send, mut recv) = conn.accept_bi().await?;
    let mut buf = StreamBuf::default();
    let Some((frame, bytes)) = buf.frame(&mut recv).await? else {
        return Err(H3Error::UnexpectedEnd);
    };
    if frame != Frame::HEADERS {
        return Err(H3Error::UnexpectedFrame(frame.0.into_inner()));
    }
    let request = ConnectRequest::decode(&mut &bytes[..])?;
    Ok(IncomingConnect { request, send, recv })
}

/// A CONNECT response: the HEADERS frame for `status` and `headers`, and,
/// when `body` is not empty, a DATA frame with it.
///
/// QPACK without the dynamic table or Huffman: `:status` as an indexed field
/// when the static table has it (200), else a literal with the static name;
/// other fields as literals with literal names (names must be lowercase).
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut fields = vec![0, 0]; // Required Insert Count 0, Delta Base 0.
    if status == 200 {
        qpack_int(&mut fields, 6, 0b1100_0000, 25); // static 25: ":status: 200"
    } else {
        qpack_int(&mut fields, 4, 0b0101_0000, 24); // static 24: ":status" (name)
        qpack_string(&mut fields, 7, 0, status.to_string().as_bytes());
    }
    // Chromium still looks for the draft-02 header that older servers sent.
    let fixed = [("sec-webtransport-http3-draft", "draft02")];
    for (name, value) in fixed.iter().chain(headers) {
        qpack_string(&mut fields, 3, 0b0010_0000, name.as_bytes());
        qpack_string(&mut fields, 7, 0, value.as_bytes());
    }
    let mut out = Vec::with_capacity(fields.len() + body.len() + 16);
    Frame::HEADERS.encode(&mut out);
    VarInt::try_from(fields.len() as u64)
        .unwrap_or(VarInt::MAX)
        .encode(&mut out);
    out.extend_from_slice(&fields);
    if !body.is_empty() {
        Frame::DATA.encode(&mut out);
        VarInt::try_from(body.len() as u64)
            .unwrap_or(VarInt::MAX)
            .encode(&mut out);
        out.extend_from_slice(body);
    }
    out
}

/// An integer with an N-bit prefix (RFC 7541, 5.1), the prefix's other bits `flags`.
fn qpack_int(out: &mut Vec<u8>, prefix_bits: u8, flags: u8, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A string literal, not Huffman-coded, its length with an N-bit prefix.
fn qpack_string(out: &mut Vec<u8>, prefix_bits: u8, flags: u8, bytes: &[u8]) {
    qpack_int(out, prefix_bits, flags, bytes.len());
    out.extend_from_slice(bytes);
}

/// Sends the CONNECT request (the client's side) and reads the answer: the
/// session's stream on a 2xx, [`H3Error::Refused`] with the status and the
/// body (at most [`MAX_HANDSHAKE_FRAME`] bytes, read for at most `body_wait`)
/// otherwise.
pub async fn connect(
    conn: &Connection,
    request: &ConnectRequest,
    body_wait: Duration,
) -> Result<(SendStream, RecvStream), H3Error> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut bytes = Vec::new();
    request.encode(&mut bytes)?;
    send.write_all(&bytes).await?;
    let mut buf = StreamBuf::default();
    let Some((frame, bytes)) = buf.frame(&mut recv).await? else {
        return Err(H3Error::UnexpectedEnd);
    };
    if frame != Frame::HEADERS {
        return Err(H3Error::UnexpectedFrame(frame.0.into_inner()));
    }
    match web_transport_proto::ConnectResponse::decode(&mut &bytes[..]) {
        Ok(_) => Ok((send, recv)),
        Err(web_transport_proto::ConnectError::WrongStatus(Some(status))) => {
            let body = tokio::time::timeout(body_wait, read_body(&mut buf, &mut recv))
                .await
                .unwrap_or_default();
            Err(H3Error::Refused {
                status: status.as_u16(),
                body,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The DATA frames of a response until its stream ends (empty on any error).
async fn read_body(buf: &mut StreamBuf, recv: &mut RecvStream) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some((frame, bytes))) = buf.frame(recv).await {
        if frame != Frame::DATA || body.len() + bytes.len() > MAX_HANDSHAKE_FRAME {
            break;
        }
        let mut view = &bytes[..];
        let _ = Frame::decode(&mut view).and_then(|_| VarInt::decode(&mut view));
        body.extend_from_slice(view);
    }
    body
}

/// The session id of a session: the id of the stream its CONNECT was sent on.
pub fn session_id(connect: &SendStream) -> u64 {
    quinn::VarInt::from(connect.id()).into_inner()
}

/// What a client writes first on each bidirectional stream it opens for a session.
pub fn stream_header(session_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    VarInt::from_u32(WEBTRANSPORT_STREAM as u32).encode(&mut out);
    VarInt::try_from(session_id).unwrap_or(VarInt::MAX).encode(&mut out);
    out
}

/// Reads a bidirectional stream's WebTransport header, exactly its bytes and
/// no more (what follows is the application's), and checks that it names
/// `session_id`. Reads a byte at a time: the header is 2 to 10 bytes, read
/// once per stream.
pub async fn read_stream_header(recv: &mut RecvStream, session_id: u64) -> Result<(), H3Error> {
    if read_varint_exact(recv).await? != WEBTRANSPORT_STREAM {
        return Err(H3Error::NotOurStream);
    }
    if read_varint_exact(recv).await? != session_id {
        return Err(H3Error::NotOurStream);
    }
    Ok(())
}

async fn read_varint_exact(recv: &mut RecvStream) -> Result<u64, H3Error> {
    let mut bytes = [0u8; 8];
    read_exact(recv, &mut bytes[..1]).await?;
    let len = 1usize << (bytes[0] >> 6);
    read_exact(recv, &mut bytes[1..len]).await?;
    Ok(VarInt::decode(&mut &bytes[..len])
        .map_err(|_| H3Error::UnexpectedEnd)?
        .into_inner())
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), H3Error> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => H3Error::UnexpectedEnd,
        quinn::ReadExactError::ReadError(e) => H3Error::Read(e),
    })
}

/// Closes a WebTransport session and its connection, from either side: the
/// close capsule on the CONNECT stream (`connect`; not awaited, quinn sends
/// what was written before the close, if the stream could take it at once),
/// then the QUIC CONNECTION_CLOSE with the same code and reason.
pub fn close_session(conn: &Connection, connect: &mut SendStream, code: u32, reason: &str) {
    use futures_util::FutureExt as _;
    if conn.close_reason().is_none() {
        let capsule = close_capsule(code, reason);
        if matches!(connect.write_all(&capsule).now_or_never(), Some(Ok(()))) {
            let _ = connect.finish();
        }
    }
    conn.close(quinn::VarInt::from_u32(code), reason.as_bytes());
}

/// The capsule that closes a WebTransport session with an application code
/// and reason (at most 1024 bytes of it are sent), written on the CONNECT
/// stream before it is finished.
pub fn close_capsule(code: u32, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(1024);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::new();
    Capsule::CloseWebTransportSession {
        code,
        reason: reason[..end].to_owned(),
    }
    .encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_with_a_prefix_match_rfc_7541() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        qpack_int(&mut out, 5, 0, 10);
        assert_eq!(out, [10]);
        out.clear();
        qpack_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        qpack_int(&mut out, 5, 0b1110_0000, 31);
        assert_eq!(out, [0xff, 0]);
    }

    #[test]
    fn an_accepting_response_decodes_as_200() {
        let bytes = response(200, &[], b"");
        let decoded = web_transport_proto::ConnectResponse::decode(&mut &bytes[..]).expect("decodes");
        assert_eq!(decoded.status.as_u16(), 200);
    }

    #[test]
    fn a_refusal_carries_its_status_and_a_body() {
        for status in [401u16, 403, 404, 429, 503] {
            let bytes = response(
                status,
                &[("retry-after", "7"), ("content-type", "application/json")],
                b"{}",
            );
            let mut view = &bytes[..];
            match web_transport_proto::ConnectResponse::decode(&mut view) {
                Err(web_transport_proto::ConnectError::WrongStatus(Some(s))) => assert_eq!(s.as_u16(), status),
                other => panic!("{status}: {other:?}"),
            }
            let (frame, len) = frame_len(&bytes).expect("ok").expect("whole");
            assert_eq!(frame, Frame::HEADERS);
            let (data, rest) = frame_len(&bytes[len..]).expect("ok").expect("whole");
            assert_eq!(data, Frame::DATA);
            assert_eq!(&bytes[len + rest - 2..], b"{}");
        }
    }

    #[test]
    fn a_frame_is_taken_only_once_it_has_all_arrived() {
        let bytes = response(404, &[], b"");
        for cut in 0..bytes.len() {
            assert!(frame_len(&bytes[..cut]).expect("ok").is_none(), "cut at {cut}");
        }
        assert!(frame_len(&bytes).expect("ok").is_some());
        // A declared length beyond the cap is refused before its bytes arrive.
        let mut huge = Vec::new();
        Frame::HEADERS.encode(&mut huge);
        VarInt::from_u32(1 << 20).encode(&mut huge);
        assert!(matches!(frame_len(&huge), Err(H3Error::FrameTooLarge { .. })));
    }

    #[test]
    fn our_settings_enable_webtransport() {
        let bytes = settings();
        let settings = Settings::decode(&mut &bytes[..]).expect("decodes");
        assert_eq!(settings.supports_webtransport(), 1);
    }

    #[test]
    fn the_close_capsule_keeps_a_reason_within_1024_bytes() {
        let reason = "é".repeat(600);
        let bytes = close_capsule(4001, &reason);
        match Capsule::decode(&mut &bytes[..]).expect("decodes") {
            Capsule::CloseWebTransportSession { code, reason } => {
                assert_eq!(code, 4001);
                assert!(reason.len() <= 1024);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_stream_header_names_the_session() {
        let bytes = stream_header(4);
        assert_eq!(bytes, [0x40, 0x41, 0x04]);
    }
}
