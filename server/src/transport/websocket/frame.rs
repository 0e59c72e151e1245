//! RFC 6455 framing, server side, without I/O: [`FrameReader`] turns the
//! bytes a client sent into whole messages and control frames, and the
//! `append_*` functions write unmasked frames into a buffer.
//!
//! The server speaks only what the protocol needs: no extensions (a frame with
//! a reserved bit set is refused), text and binary messages (fragmented or
//! not), ping, pong and close. Its buffers stay small between messages: an
//! unfragmented message is handed on where it lies in the read buffer
//! (unmasked in place), and a buffer grown for a large message is let go
//! once the message is done, so an idle session keeps about
//! [`KEPT_BUFFER`] bytes for reading.

use std::ops::Range;

/// The read buffer an idle connection keeps, and the least a read asks for.
pub const KEPT_BUFFER: usize = 1024;

/// Frame opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// What a client sent: a whole message, or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A text message (valid UTF-8).
    Text(&'a [u8]),
    Binary(&'a [u8]),
    /// A message over the reader's limit but within the hard cap: its bytes
    /// were read and dropped as they came, never kept; `size` in all.
    Skipped {
        size: u64,
    },
    /// A ping, with its payload (to be echoed in a pong).
    Ping(&'a [u8]),
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// A client broke the WebSocket protocol: the connection is closed with
/// [`Violation::close_code`] and the message as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("a WebSocket message of {size} bytes exceeds the limit of {max}")]
    TooBig { size: u64, max: usize },
    #[error("a WebSocket text message or close reason is not valid UTF-8")]
    InvalidUtf8,
}

impl Violation {
    /// The close status code (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            Violation::Protocol(_) => 1002,
            Violation::TooBig { .. } => 1009,
            Violation::InvalidUtf8 => 1007,
        }
    }
}

/// The most a read buffer grows by ahead of the bytes that arrived: a header
/// that declares a large frame buys no memory until its payload comes.
const GROW_STEP: usize = 16 * 1024;

/// One frame's header, parsed.
struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    /// The header's own length (with the mask).
    size: usize,
    mask: [u8; 4],
}

/// Splits the bytes a client sends into messages and control frames.
///
/// Fill [`FrameReader::spare`] with what the socket gives, then take
/// [`FrameReader::next`] until it is `None`. Messages over `max_message` are
/// dropped as they arrive ([`Incoming::Skipped`]); a message over `hard_max`
/// is a violation as soon as a header says so.
#[derive(Debug)]
pub struct FrameReader {
    /// Bytes read; `buf[start..]` are not parsed yet.
    buf: Vec<u8>,
    start: usize,
    /// A fragmented message's payload so far, and its opcode.
    message: Vec<u8>,
    fragmented: Option<u8>,
    /// The size of the message being read, skipped fragments included.
    message_size: u64,
    /// The message being read is over `max_message`: its payload is dropped.
    skipping: bool,
    /// Payload bytes of the current frame still to drop, and whether that
    /// frame ends the message.
    skip_left: u64,
    skip_fin: bool,
    /// The message taken last time lives in `message`: cleared on the next call.
    taken: bool,
    /// The bytes the frame being read needs in all (header and payload).
    want: usize,
    max_message: usize,
    hard_max: usize,
}

impl FrameReader {
    /// A reader that hands on messages (whole, after reassembly) of up to
    /// `max_message` bytes, drops larger ones up to `hard_max`, and refuses
    /// anything larger.
    pub fn new(max_message: usize, hard_max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(KEPT_BUFFER),
            start: 0,
            message: Vec::new(),
            fragmented: None,
            message_size: 0,
            skipping: false,
            skip_left: 0,
            skip_fin: false,
            taken: false,
            want: 0,
            max_message: max_message.min(hard_max),
            hard_max,
        }
    }

    /// Room for the next read: at least half of [`KEPT_BUFFER`], and what the
    /// frame being read still needs, but never more than [`GROW_STEP`] ahead
    /// of what arrived. Bytes already parsed are dropped first.
    pub fn spare(&mut self) -> &mut Vec<u8> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            // An idle connection does not keep the buffer of its largest message.
            if self.buf.capacity() > KEPT_BUFFER && self.want <= KEPT_BUFFER {
                self.buf = Vec::with_capacity(KEPT_BUFFER);
            }
        } else if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let need = self
            .want
            .saturating_sub(self.buf.len())
            .clamp(KEPT_BUFFER / 2, GROW_STEP);
        self.buf.reserve(need);
        &mut self.buf
    }

    /// The next message or control frame among the bytes read, `None` when more
    /// bytes are needed. (Not an `Iterator`: what it returns borrows the reader.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Incoming<'_>>, Violation> {
        if self.taken {
            self.taken = false;
            self.message = Vec::new();
        }
        loop {
            if self.skip_left > 0 {
                // Drop what has arrived of a skipped payload.
                let here = (self.buf.len() - self.start) as u64;
                let n = self.skip_left.min(here);
                self.start += n as usize;
                self.skip_left -= n;
                if self.skip_left > 0 {
                    self.want = 0;
                    return Ok(None);
                }
            }
            if self.skipping && self.skip_fin {
                let size = self.message_size;
                self.end_message();
                return Ok(Some(Incoming::Skipped { size }));
            }
            let Some(header) = self.header()? else {
                return Ok(None);
            };
            if matches!(header.opcode, CLOSE | PING | PONG) {
                let Some(payload) = self.payload(&header) else {
                    return Ok(None);
                };
                return match header.opcode {
                    CLOSE => close(&self.buf[payload]).map(Some),
                    PING => Ok(Some(Incoming::Ping(&self.buf[payload]))),
                    _ => Ok(Some(Incoming::Pong)),
                };
            }
            let kind = match (header.opcode, self.fragmented) {
                (CONTINUATION, None) => return Err(Violation::Protocol("a continuation frame outside a message")),
                (CONTINUATION, Some(kind)) => kind,
                (_, Some(_)) => return Err(Violation::Protocol("a new message inside a fragmented one")),
                (kind, None) => kind,
            };
            let size = self.message_size.saturating_add(header.len);
            if size > self.hard_max as u64 {
                return Err(Violation::TooBig {
                    size,
                    max: self.hard_max,
                });
            }
            if self.skipping || size > self.max_message as u64 {
                // Over the limit: this frame's payload (and the rest of the
                // message) is dropped as it arrives, what was kept let go.
                self.skipping = true;
                self.message = Vec::new();
                self.message_size = size;
                self.fragmented = (!header.fin).then_some(kind);
                self.start += header.size;
                self.skip_left = header.len;
                self.skip_fin = header.fin;
                self.want = 0;
                continue;
            }
            let Some(payload) = self.payload(&header) else {
                return Ok(None);
            };
            self.message_size = size;
            if self.fragmented.is_none() && header.fin {
                // The common case: a whole message in one frame, handed on where it lies.
                self.message_size = 0;
                return message(kind, &self.buf[payload]).map(Some);
            }
            self.message.extend_from_slice(&self.buf[payload]);
            if !header.fin {
                self.fragmented = Some(kind);
                continue;
            }
            self.end_message();
            self.taken = true;
            return message(kind, &self.message).map(Some);
        }
    }

    /// Forgets the message that just ended (its bytes stay in `message` until
    /// the next call, when it was handed on from there).
    fn end_message(&mut self) {
        self.fragmented = None;
        self.message_size = 0;
        self.skipping = false;
        self.skip_fin = false;
    }

    /// Parses the header of the frame at `start`, once it has all arrived.
    fn header(&mut self) -> Result<Option<Header>, Violation> {
        let bytes = &self.buf[self.start..];
        if bytes.len() < 2 {
            self.want = 2;
            return Ok(None);
        }
        let (b0, b1) = (bytes[0], bytes[1]);
        if b0 & 0x70 != 0 {
            return Err(Violation::Protocol("a reserved bit is set (no extension was agreed)"));
        }
        let opcode = b0 & 0x0F;
        let fin = b0 & 0x80 != 0;
        if b1 & 0x80 == 0 {
            return Err(Violation::Protocol("a client's frame must be masked"));
        }
        let size = header_len(b1);
        if bytes.len() < size {
            self.want = size;
            return Ok(None);
        }
        let len = match b1 & 0x7F {
            126 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            127 => u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")),
            len => u64::from(len),
        };
        if len >> 63 != 0 {
            return Err(Violation::Protocol("a 64-bit length with its most significant bit set"));
        }
        match opcode {
            CLOSE | PING | PONG => {
                if !fin || len > 125 {
                    return Err(Violation::Protocol(
                        "a control frame must be whole and at most 125 bytes",
                    ));
                }
            }
            CONTINUATION | TEXT | BINARY => {}
            _ => return Err(Violation::Protocol("an unknown opcode")),
        }
        let mask: [u8; 4] = bytes[size - 4..size].try_into().expect("4 bytes");
        Ok(Some(Header {
            fin,
            opcode,
            len,
            size,
            mask,
        }))
    }

    /// The frame's payload, unmasked in place, once it has all arrived (the
    /// frame is then consumed); its length is within `max_message` or 125.
    fn payload(&mut self, header: &Header) -> Option<Range<usize>> {
        // Within max_message (or 125), so it fits in usize.
        let whole = header.size + header.len as usize;
        if self.buf.len() - self.start < whole {
            self.want = whole;
            return None;
        }
        self.want = 0;
        let payload = self.start + header.size..self.start + whole;
        unmask(&mut self.buf[payload.clone()], header.mask);
        self.start = payload.end;
        Some(payload)
    }
}

/// The length of a client frame's header (masked) from its second byte.
fn header_len(b1: u8) -> usize {
    match b1 & 0x7F {
        126 => 2 + 2 + 4,
        127 => 2 + 8 + 4,
        _ => 2 + 4,
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mut chunks = payload.chunks_exact_mut(4);
    let word = u32::from_ne_bytes(mask);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes(chunk.try_into().expect("4 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

fn message(kind: u8, payload: &[u8]) -> Result<Incoming<'_>, Violation> {
    if kind == TEXT {
        std::str::from_utf8(payload).map_err(|_| Violation::InvalidUtf8)?;
        Ok(Incoming::Text(payload))
    } else {
        Ok(Incoming::Binary(payload))
    }
}

fn close(payload: &[u8]) -> Result<Incoming<'_>, Violation> {
    match payload {
        [] => Ok(Incoming::Close(None)),
        [_] => Err(Violation::Protocol("a close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !may_be_sent(code) {
                return Err(Violation::Protocol(
                    "a close frame with a status code that may not be sent",
                ));
            }
            std::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
            Ok(Incoming::Close(Some(code)))
        }
    }
}

/// Whether an endpoint may put `code` in a close frame (RFC 6455 §7.4): the
/// protocol's own codes (1004 is reserved; 1005, 1006 and 1015 only report a
/// close that had no code or frame, or failed TLS), the IANA-registered
/// 1012-1014, and the ranges for libraries and applications (3000-4999).
/// Anything else is answered with 1002, never echoed.
fn may_be_sent(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Where a frame started by [`begin_frame`] lies in the output buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameStart(usize);

/// The most a server frame's header takes (no mask).
const MAX_HEADER: usize = 10;

/// Starts a frame at the end of `out`: append its payload, then [`end_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> FrameStart {
    let start = out.len();
    out.extend_from_slice(&[0; MAX_HEADER]);
    FrameStart(start)
}

/// Ends the frame started at `start` as a whole text (`text`) or binary
/// message: writes its header and moves the payload up to it.
pub fn end_frame(out: &mut Vec<u8>, start: FrameStart, text: bool) {
    let payload = start.0 + MAX_HEADER;
    let len = out.len() - payload;
    let mut header = [0u8; MAX_HEADER];
    let used = write_header(&mut header, if text { TEXT } else { BINARY }, len);
    let at = payload - used;
    out[at..payload].copy_from_slice(&header[..used]);
    if at > start.0 {
        out.copy_within(at.., start.0);
        out.truncate(out.len() - (at - start.0));
    }
}

/// Appends a pong echoing `payload` (at most 125 bytes, as the ping's).
pub fn append_pong(out: &mut Vec<u8>, payload: &[u8]) {
    append_control(out, PONG, payload);
}

/// Appends a close frame with `code` and as much of `reason` as fits (123 bytes,
/// cut at a character boundary).
pub fn append_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    append_control(out, CLOSE, &payload);
}

fn append_control(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= 125);
    let mut header = [0u8; MAX_HEADER];
    let used = write_header(&mut header, opcode, payload.len());
    out.extend_from_slice(&header[..used]);
    out.extend_from_slice(payload);
}

/// Writes a final, unmasked frame header; returns its length.
fn write_header(header: &mut [u8; MAX_HEADER], opcode: u8, len: usize) -> usize {
    header[0] = 0x80 | opcode;
    if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Feeds `bytes` in pieces of `step` and collects what the reader hands on.
    fn read_all(reader: &mut FrameReader, bytes: &[u8], step: usize) -> Result<Vec<String>, Violation> {
        let mut seen = Vec::new();
        for piece in bytes.chunks(step) {
            reader.spare().extend_from_slice(piece);
            while let Some(incoming) = reader.next()? {
                seen.push(match incoming {
                    Incoming::Text(t) => format!("text {}", String::from_utf8_lossy(t)),
                    Incoming::Binary(b) => format!("binary {}", b.len()),
                    Incoming::Ping(p) => format!("ping {}", String::from_utf8_lossy(p)),
                    Incoming::Pong => "pong".into(),
                    Incoming::Close(code) => format!("close {code:?}"),
                    Incoming::Skipped { size } => format!("skipped {size}"),
                });
            }
        }
        Ok(seen)
    }

    #[test]
    fn the_example_frames_of_rfc_6455_are_read() {
        // §5.7: a single-frame masked text message "Hello".
        let hello = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let mut reader = FrameReader::new(1 << 20, 1 << 20);
        assert_eq!(read_all(&mut reader, &hello, 100).unwrap(), ["text Hello"]);
        // A fragmented text message "Hel" + "lo", masked.
        let mut bytes = client_frame(false, TEXT, b"Hel", MASK);
        bytes.extend(client_frame(true, CONTINUATION, b"lo", MASK));
        assert_eq!(read_all(&mut reader, &bytes, 100).unwrap(), ["text Hello"]);
    }

    #[test]
    fn a_message_over_the_limit_is_dropped_as_it_arrives_and_the_next_one_read() {
        let mut bytes = client_frame(true, TEXT, &[b'a'; 500], MASK);
        // Fragments adding up over the limit, a ping between them.
        bytes.extend(client_frame(false, BINARY, &[1; 60], MASK));
        bytes.extend(client_frame(true, PING, b"still there", MASK));
        bytes.extend(client_frame(false, CONTINUATION, &[2; 60], MASK));
        bytes.extend(client_frame(true, CONTINUATION, &[3; 5], MASK));
        bytes.extend(client_frame(true, TEXT, b"hi", MASK));
        let want = ["skipped 500", "ping still there", "skipped 125", "text hi"];
        for step in [1, 2, 7, 64, 1000, bytes.len()] {
            let mut reader = FrameReader::new(100, 1000);
            assert_eq!(read_all(&mut reader, &bytes, step).unwrap(), want, "step {step}");
        }
        // Over the hard cap it is still a violation, from the header on.
        let mut reader = FrameReader::new(100, 1000);
        let err = read_all(&mut reader, &client_frame(true, BINARY, &[0; 1001], MASK)[..20], 20).unwrap_err();
        assert_eq!(err.close_code(), 1009);
    }

    #[test]
    fn a_declared_frame_buys_no_memory_before_its_bytes_arrive() {
        let big = vec![9u8; 900_000];
        let frame = client_frame(true, BINARY, &big, MASK);
        // Within the limit: the buffer grows with what arrived, not with what was declared.
        let mut reader = FrameReader::new(1 << 20, 1 << 20);
        for piece in frame[..100_000].chunks(4096) {
            reader.spare().extend_from_slice(piece);
            assert!(reader.next().unwrap().is_none());
        }
        assert!(
            reader.buf.capacity() < 2 * 100_000 + GROW_STEP,
            "{}",
            reader.buf.capacity()
        );
        // Over the limit: nothing is kept at all while it is dropped.
        let mut reader = FrameReader::new(64 * 1024, 1 << 20);
        for piece in frame[..512 * 1024].chunks(4096) {
            reader.spare().extend_from_slice(piece);
            assert!(reader.next().unwrap().is_none());
            assert!(reader.buf.capacity() <= GROW_STEP, "{}", reader.buf.capacity());
        }
    }

    #[test]
    fn a_64_bit_length_with_its_top_bit_set_is_refused() {
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
        frame.extend_from_slice(&MASK);
        let err = read_all(&mut FrameReader::new(16, 16), &frame, 100).unwrap_err();
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn messages_arrive_whole_however_the_bytes_are_cut() {
        let offer = "v=0 ".repeat(1200); // 4,800 bytes: a 16-bit length
        let big = vec![7u8; 70_000]; // a 64-bit length
        let mut bytes = client_frame(true, TEXT, offer.as_bytes(), MASK);
        bytes.extend(client_frame(true, PING, b"are you there", MASK));
        bytes.extend(client_frame(false, BINARY, &big[..30_000], MASK));
        // Control frames may come between a message's fragments.
        bytes.extend(client_frame(true, PONG, b"", MASK));
        bytes.extend(client_frame(true, CONTINUATION, &big[30_000..], MASK));
        bytes.extend(client_frame(true, TEXT, "candidate ünïcode".as_bytes(), MASK));
        bytes.extend(client_frame(true, CLOSE, &[0x03, 0xe8, b'o', b'k'], MASK));
        let want = [
            format!("text {offer}"),
            "ping are you there".into(),
            "pong".into(),
            "binary 70000".into(),
            "text candidate ünïcode".into(),
            "close Some(1000)".into(),
        ];
        for step in [1, 2, 3, 7, 100, 1024, 5000, bytes.len()] {
            let mut reader = FrameReader::new(1 << 20, 1 << 20);
            assert_eq!(read_all(&mut reader, &bytes, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn an_idle_reader_lets_go_of_the_buffer_of_a_large_message() {
        let mut reader = FrameReader::new(1 << 20, 1 << 20);
        let bytes = client_frame(true, BINARY, &[1; 5000], MASK);
        assert_eq!(read_all(&mut reader, &bytes, 1000).unwrap(), ["binary 5000"]);
        assert!(reader.buf.capacity() >= 5000);
        reader.spare();
        assert_eq!(reader.buf.capacity(), KEPT_BUFFER);
        let mut fragmented = client_frame(false, TEXT, &[b'a'; 3000], MASK);
        fragmented.extend(client_frame(true, CONTINUATION, &[b'b'; 3000], MASK));
        read_all(&mut reader, &fragmented, 4096).unwrap();
        reader.spare();
        reader.next().unwrap();
        assert_eq!(reader.message.capacity(), 0);
        assert!(reader.buf.capacity() <= KEPT_BUFFER);
    }

    #[test]
    fn protocol_violations_are_refused_with_their_close_codes() {
        let cases: [(Vec<u8>, u16); 16] = [
            // Close codes that may not be sent (RFC 6455 §7.4): reserved, or only reported.
            (client_frame(true, CLOSE, &999u16.to_be_bytes(), MASK), 1002),
            (client_frame(true, CLOSE, &1004u16.to_be_bytes(), MASK), 1002),
            (client_frame(true, CLOSE, &1005u16.to_be_bytes(), MASK), 1002),
            (client_frame(true, CLOSE, &1006u16.to_be_bytes(), MASK), 1002),
            (client_frame(true, CLOSE, &1015u16.to_be_bytes(), MASK), 1002),
            (client_frame(true, CLOSE, &2999u16.to_be_bytes(), MASK), 1002),
            (client_frame(true, CLOSE, &5000u16.to_be_bytes(), MASK), 1002),
            // Unmasked.
            (vec![0x81, 0x02, b'h', b'i'], 1002),
            // RSV1 (compression was never agreed).
            (client_frame(true, 0x40 | TEXT, b"hi", MASK), 1002),
            // Opcode 3 is reserved.
            (client_frame(true, 0x3, b"hi", MASK), 1002),
            // A continuation with no message begun.
            (client_frame(true, CONTINUATION, b"hi", MASK), 1002),
            // A fragmented control frame, and one over 125 bytes.
            (client_frame(false, PING, b"hi", MASK), 1002),
            (client_frame(true, PING, &[0; 126], MASK), 1002),
            // A close frame with a one-byte payload.
            (client_frame(true, CLOSE, &[3], MASK), 1002),
            // Invalid UTF-8 in a text message.
            (client_frame(true, TEXT, &[0xff, 0xfe], MASK), 1007),
            // Over the message limit (16 here), declared in the header.
            (client_frame(true, BINARY, &[0; 17], MASK), 1009),
        ];
        for (bytes, code) in cases {
            let mut reader = FrameReader::new(16, 16);
            let err = read_all(&mut reader, &bytes, bytes.len()).unwrap_err();
            assert_eq!(err.close_code(), code, "{err} for {bytes:02x?}");
        }
        // A message begun and another begun before it ended.
        let mut bytes = client_frame(false, TEXT, b"a", MASK);
        bytes.extend(client_frame(true, BINARY, b"b", MASK));
        let err = read_all(&mut FrameReader::new(16, 16), &bytes, 100).unwrap_err();
        assert_eq!(err, Violation::Protocol("a new message inside a fragmented one"));
        // Fragments adding up over the limit.
        let mut bytes = client_frame(false, BINARY, &[0; 10], MASK);
        bytes.extend(client_frame(true, CONTINUATION, &[0; 10], MASK));
        let err = read_all(&mut FrameReader::new(16, 16), &bytes, 100).unwrap_err();
        assert_eq!(err, Violation::TooBig { size: 20, max: 16 });
        // A huge declared length is refused from the header, before any payload.
        let header = [0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let err = read_all(&mut FrameReader::new(16, 16), &header, 100).unwrap_err();
        assert_eq!(err.close_code(), 1009);
    }

    #[test]
    fn server_frames_have_the_shortest_header_and_no_mask() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let mut out = b"before".to_vec();
            let start = begin_frame(&mut out);
            out.extend(std::iter::repeat_n(b'x', len));
            end_frame(&mut out, start, true);
            let frame = &out[6..];
            assert_eq!(frame[0], 0x81);
            let (header, declared) = match frame[1] {
                126 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
                127 => (10, u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize),
                n => (2, n as usize),
            };
            assert_eq!(declared, len);
            assert_eq!(frame.len(), header + len, "len {len}");
            let expected_header = if len < 126 {
                2
            } else if len <= 65_535 {
                4
            } else {
                10
            };
            assert_eq!(header, expected_header);
        }
        let mut out = Vec::new();
        append_close(&mut out, 1008, &"é".repeat(100));
        assert_eq!(out[0], 0x88);
        assert_eq!(out[1], 2 + 122, "cut at a character boundary");
        assert_eq!(&out[2..4], &1008u16.to_be_bytes());
        let mut out = Vec::new();
        append_pong(&mut out, b"hi");
        assert_eq!(out, [0x8A, 2, b'h', b'i']);
    }
}
