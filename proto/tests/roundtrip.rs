//! Property tests: every message survives both encodings, bare and enveloped,
//! and framing; garbage is refused without panicking.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proto::codec::{self, DecodeError, Encoding, HARD_MAX_FRAME};
use proto::frame::{FrameError, PREFIX_LEN, encode_frame, read_frame, write_frame};
use proto::{
    ChannelId, ClientMessage, ErrorCode, IceServer, Member, PeerId, ServerMessage, SessionLimits, Signal, Token,
};

// ---------------------------------------------------------------------------
// Strategies

/// Any string: empty, ASCII, control characters, and any Unicode scalar value.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        "\\PC{0,20}",
        Just(String::new()),
        Just("\u{0}\"\\\n\r\t\u{7f}\u{feff}😀".to_owned()),
    ]
}

fn peer_id() -> impl Strategy<Value = PeerId> {
    prop_oneof![
        any::<u64>(),
        Just(0u64),
        Just(u64::MAX),
        0u64..300,
        // Around each varint boundary.
        prop::sample::select(vec![250u64, 251, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_0000_0000]),
    ]
    .prop_map(PeerId)
}

fn request_id() -> impl Strategy<Value = Option<u32>> {
    option::of(any::<u32>())
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL)
}

fn signal() -> impl Strategy<Value = Signal> {
    prop_oneof![
        text().prop_map(|sdp| Signal::Offer { sdp }),
        text().prop_map(|sdp| Signal::Answer { sdp }),
        (text(), option::of(text()), option::of(any::<u16>()), option::of(text())).prop_map(
            |(candidate, sdp_mid, sdp_m_line_index, username_fragment)| {
                Signal::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_m_line_index,
                    username_fragment,
                }
            }
        ),
        text().prop_map(|data| Signal::Custom { data }),
    ]
}

fn member() -> impl Strategy<Value = Member> {
    (peer_id(), text()).prop_map(|(peer_id, user_id)| Member { peer_id, user_id })
}

fn ice_server() -> impl Strategy<Value = IceServer> {
    (vec(text(), 1..3), option::of(text()), option::of(text())).prop_map(|(urls, username, credential)| IceServer {
        urls,
        username,
        credential,
    })
}

fn limits() -> impl Strategy<Value = SessionLimits> {
    any::<[u32; 8]>().prop_map(|v| SessionLimits {
        max_frame_bytes: v[0],
        messages_per_sec: v[1],
        message_burst: v[2],
        bytes_per_sec: v[3],
        byte_burst: v[4],
        max_rooms: v[5],
        max_room_members: v[6],
        idle_timeout_ms: v[7],
    })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (
            request_id(),
            any::<u16>(),
            option::of(text().prop_map(Token)),
            option::of(text().prop_map(Token))
        )
            .prop_map(|(id, version, token, resume)| ClientMessage::Hello {
                id,
                version,
                token,
                resume
            }),
        (request_id(), text(), option::of(any::<u64>())).prop_map(|(id, room, resume_after)| ClientMessage::Join {
            id,
            room,
            resume_after
        }),
        any::<u64>().prop_map(|upto| ClientMessage::Received { upto }),
        request_id().prop_map(|id| ClientMessage::Leave { id }),
        (request_id(), option::of(any::<u64>()), peer_id(), signal())
            .prop_map(|(id, seq, to, signal)| ClientMessage::Signal { id, seq, to, signal }),
        (request_id(), option::of(any::<u64>()), text()).prop_map(|(id, seq, data)| ClientMessage::Broadcast {
            id,
            seq,
            data
        }),
        (request_id(), any::<u32>()).prop_map(|(id, nonce)| ClientMessage::Ping { id, nonce }),
        (request_id(), text().prop_map(Token)).prop_map(|(id, token)| ClientMessage::Refresh { id, token }),
        request_id().prop_map(|id| ClientMessage::IceServers { id }),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (
            (request_id(), any::<u16>(), text(), peer_id(), text(), limits()),
            (
                option::of(text().prop_map(Token)),
                any::<bool>(),
                vec(ice_server(), 0..3),
                option::of(any::<u64>())
            )
        )
            .prop_map(
                |(
                    (id, version, session_id, peer_id, user_id, limits),
                    (resume_token, resumed, ice_servers, ice_servers_expire_at),
                )| {
                    ServerMessage::Welcome {
                        id,
                        version,
                        session_id,
                        peer_id,
                        user_id,
                        limits,
                        resume_token,
                        resumed,
                        ice_servers,
                        ice_servers_expire_at,
                    }
                }
            ),
        (request_id(), text(), any::<u64>()).prop_map(|(id, room, last_seq)| ServerMessage::Rejoined {
            id,
            room,
            last_seq
        }),
        (request_id(), text(), vec(member(), 0..5)).prop_map(|(id, room, members)| ServerMessage::Joined {
            id,
            room,
            members
        }),
        (request_id(), text()).prop_map(|(id, room)| ServerMessage::Left { id, room }),
        member().prop_map(|peer| ServerMessage::PeerJoined { peer }),
        peer_id().prop_map(|peer_id| ServerMessage::PeerLeft { peer_id }),
        (peer_id(), signal()).prop_map(|(from, signal)| ServerMessage::Signal { from, signal }),
        (peer_id(), text()).prop_map(|(from, data)| ServerMessage::Broadcast { from, data }),
        any::<u32>().prop_map(|id| ServerMessage::Ack { id }),
        (request_id(), any::<u32>()).prop_map(|(id, nonce)| ServerMessage::Pong { id, nonce }),
        (request_id(), error_code(), text()).prop_map(|(id, code, message)| ServerMessage::Error { id, code, message }),
        any::<u64>().prop_map(|expires_in_ms| ServerMessage::TokenExpiring { expires_in_ms }),
        (error_code(), text()).prop_map(|(code, message)| ServerMessage::Goodbye { code, message }),
        (request_id(), vec(ice_server(), 0..3), option::of(any::<u64>())).prop_map(|(id, ice_servers, expires_at)| {
            ServerMessage::IceServers {
                id,
                ice_servers,
                expires_at,
            }
        }),
    ]
}

fn channel() -> impl Strategy<Value = ChannelId> {
    prop_oneof![
        Just(proto::CONTROL_CHANNEL),
        0u32..300,
        any::<u32>(),
        prop::sample::select(vec![250u32, 251, 0xffff, 0x1_0000, u32::MAX]),
    ]
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Json), Just(Encoding::Bincode)]
}

// ---------------------------------------------------------------------------
// Helpers

const ENCODINGS: [Encoding; 2] = [Encoding::Json, Encoding::Bincode];

/// Runs a future that never waits (reading from a byte slice) to completion.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("reading from a byte slice never waits"),
    }
}

/// Reads every frame of `wire` with the real reader.
fn read_all_frames(wire: &[u8], max: usize) -> Result<Vec<Vec<u8>>, FrameError> {
    block_on(async {
        let mut reader = wire;
        let mut frames = Vec::new();
        let mut buf = Vec::new();
        while read_frame(&mut reader, &mut buf, max).await? {
            frames.push(buf.clone());
        }
        Ok(frames)
    })
}

/// A few messages of every variant, with awkward values.
fn samples() -> (Vec<ClientMessage>, Vec<ServerMessage>) {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let client = (0..64)
        .map(|_| client_message().new_tree(&mut runner).unwrap().current())
        .collect();
    let server = (0..64)
        .map(|_| server_message().new_tree(&mut runner).unwrap().current())
        .collect();
    (client, server)
}

/// Decodes `bytes` in every way; the results do not matter, only that nothing panics.
fn decode_every_way(bytes: &[u8]) {
    for encoding in ENCODINGS {
        let _ = codec::decode::<ClientMessage>(encoding, bytes);
        let _ = codec::decode::<ServerMessage>(encoding, bytes);
        let _ = codec::decode_enveloped::<ClientMessage>(encoding, bytes);
        let _ = codec::decode_enveloped::<ServerMessage>(encoding, bytes);
    }
}

/// Whether `bytes` decodes in any way at all.
fn decodes_any_way(encoding: Encoding, bytes: &[u8]) -> bool {
    codec::decode::<ClientMessage>(encoding, bytes).is_ok()
        || codec::decode::<ServerMessage>(encoding, bytes).is_ok()
        || codec::decode_enveloped::<ClientMessage>(encoding, bytes).is_ok()
        || codec::decode_enveloped::<ServerMessage>(encoding, bytes).is_ok()
}

/// A small deterministic generator (xorshift64*), so that garbage is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------
// Round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_messages_round_trip(m in client_message(), encoding in encoding()) {
        let bytes = codec::encode(encoding, &m);
        prop_assert_eq!(codec::decode::<ClientMessage>(encoding, &bytes).unwrap(), m);
    }

    #[test]
    fn server_messages_round_trip(m in server_message(), encoding in encoding()) {
        let bytes = codec::encode(encoding, &m);
        prop_assert_eq!(codec::decode::<ServerMessage>(encoding, &bytes).unwrap(), m);
    }

    #[test]
    fn enveloped_client_messages_round_trip(
        m in client_message(),
        ch in channel(),
        encoding in encoding(),
    ) {
        let bytes = codec::encode_enveloped(encoding, ch, &m);
        let decoded = codec::decode_enveloped::<ClientMessage>(encoding, &bytes).unwrap();
        prop_assert_eq!(decoded, (ch, m));
    }

    #[test]
    fn enveloped_server_messages_round_trip(
        m in server_message(),
        ch in channel(),
        encoding in encoding(),
    ) {
        let bytes = codec::encode_enveloped(encoding, ch, &m);
        let decoded = codec::decode_enveloped::<ServerMessage>(encoding, &bytes).unwrap();
        prop_assert_eq!(decoded, (ch, m));
    }

    /// A bare message is also an enveloped one on the control channel: in JSON
    /// `ch` is omitted for channel 0, in bincode the envelope adds one zero byte.
    #[test]
    fn the_control_envelope_is_the_bare_message(m in client_message()) {
        let json = codec::encode(Encoding::Json, &m);
        prop_assert_eq!(codec::encode_enveloped(Encoding::Json, 0, &m), json);
        let bincode = codec::encode(Encoding::Bincode, &m);
        let mut enveloped = vec![0u8];
        enveloped.extend_from_slice(&bincode);
        prop_assert_eq!(codec::encode_enveloped(Encoding::Bincode, 0, &m), enveloped);
    }

    #[test]
    fn encode_into_appends_what_encode_returns(
        m in server_message(),
        ch in channel(),
        encoding in encoding(),
        prefix in vec(any::<u8>(), 0..8),
    ) {
        let mut buf = prefix.clone();
        codec::encode_into(encoding, &m, &mut buf);
        prop_assert_eq!(&buf[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&buf[prefix.len()..], &codec::encode(encoding, &m)[..]);
        let mut buf = prefix.clone();
        codec::encode_enveloped_into(encoding, ch, &m, &mut buf);
        prop_assert_eq!(&buf[prefix.len()..], &codec::encode_enveloped(encoding, ch, &m)[..]);
    }

    #[test]
    fn message_frames_round_trip(
        client in vec(client_message(), 0..4),
        server in vec(server_message(), 0..4),
        encoding in encoding(),
    ) {
        let mut wire = Vec::new();
        for m in &client {
            wire.extend(encode_frame(encoding, m));
        }
        for m in &server {
            let mut frame = Vec::new();
            proto::frame::encode_frame_into(encoding, m, &mut frame);
            prop_assert_eq!(&frame, &encode_frame(encoding, m));
            wire.extend(frame);
        }
        let frames = read_all_frames(&wire, HARD_MAX_FRAME).unwrap();
        prop_assert_eq!(frames.len(), client.len() + server.len());
        for (frame, m) in frames.iter().zip(&client) {
            prop_assert_eq!(&codec::decode::<ClientMessage>(encoding, frame).unwrap(), m);
        }
        for (frame, m) in frames[client.len()..].iter().zip(&server) {
            prop_assert_eq!(&codec::decode::<ServerMessage>(encoding, frame).unwrap(), m);
        }
    }

    #[test]
    fn raw_frames_round_trip(payloads in vec(vec(any::<u8>(), 0..300), 0..6)) {
        let mut wire = Vec::new();
        for p in &payloads {
            let before = wire.len();
            write_frame(&mut wire, p);
            prop_assert_eq!(&wire[before..before + PREFIX_LEN], &(p.len() as u32).to_be_bytes()[..]);
        }
        prop_assert_eq!(read_all_frames(&wire, 300).unwrap(), payloads);
    }

    #[test]
    fn a_frame_over_the_limit_is_skipped_and_the_next_one_is_read(
        big in vec(any::<u8>(), 11..200),
        next in vec(any::<u8>(), 0..10),
    ) {
        let mut wire = Vec::new();
        write_frame(&mut wire, &big);
        write_frame(&mut wire, &next);
        let (first, second) = block_on(async {
            let mut reader = &wire[..];
            let mut buf = Vec::new();
            let first = read_frame(&mut reader, &mut buf, 10).await;
            let second = read_frame(&mut reader, &mut buf, 10).await.map(|ok| (ok, buf.clone()));
            (first, second)
        });
        let too_large = matches!(first, Err(FrameError::TooLarge { len, max: 10 }) if len == big.len());
        prop_assert!(too_large, "{:?}", first);
        prop_assert_eq!(second.unwrap(), (true, next));
    }

    /// Arbitrary bytes never panic a decoder; whatever does decode encodes back
    /// to something that decodes to the same message.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        decode_every_way(&bytes);
        for encoding in ENCODINGS {
            if let Ok(m) = codec::decode::<ClientMessage>(encoding, &bytes) {
                let again = codec::encode(encoding, &m);
                prop_assert_eq!(codec::decode::<ClientMessage>(encoding, &again).unwrap(), m);
            }
            if let Ok(m) = codec::decode::<ServerMessage>(encoding, &bytes) {
                let again = codec::encode(encoding, &m);
                prop_assert_eq!(codec::decode::<ServerMessage>(encoding, &again).unwrap(), m);
            }
        }
    }

    /// Mutating one byte of a valid message never panics.
    #[test]
    fn corrupted_messages_never_panic(
        m in server_message(),
        encoding in encoding(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = codec::encode_enveloped(encoding, 1, &m);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        decode_every_way(&bytes);
    }

    /// Arbitrary bytes never panic the frame reader, and it never reads past what it was given.
    #[test]
    fn arbitrary_bytes_never_panic_the_frame_reader(
        bytes in vec(any::<u8>(), 0..64),
        max in 0usize..32,
    ) {
        let _ = read_all_frames(&bytes, max);
    }
}

// ---------------------------------------------------------------------------
// Garbage

#[test]
fn random_bytes_are_refused() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..2000 {
        let len = 16 + (rng.next() % 200) as usize;
        let bytes = rng.bytes(len);
        decode_every_way(&bytes);
        for encoding in ENCODINGS {
            assert!(
                !decodes_any_way(encoding, &bytes),
                "round {round}: random bytes decoded as {encoding:?}: {bytes:02x?}"
            );
        }
    }
}

#[test]
fn an_empty_frame_is_refused() {
    for encoding in ENCODINGS {
        assert!(!decodes_any_way(encoding, b""), "{encoding:?}");
    }
}

#[test]
fn every_truncation_of_a_message_is_refused() {
    let (client, server) = samples();
    for encoding in ENCODINGS {
        for m in &client {
            let whole = codec::encode(encoding, m);
            for cut in 0..whole.len() {
                assert!(
                    codec::decode::<ClientMessage>(encoding, &whole[..cut]).is_err(),
                    "{encoding:?} {m:?} cut at {cut}"
                );
            }
            let whole = codec::encode_enveloped(encoding, 7, m);
            for cut in 0..whole.len() {
                assert!(
                    codec::decode_enveloped::<ClientMessage>(encoding, &whole[..cut]).is_err(),
                    "{encoding:?} enveloped {m:?} cut at {cut}"
                );
            }
        }
        for m in &server {
            let whole = codec::encode(encoding, m);
            for cut in 0..whole.len() {
                assert!(
                    codec::decode::<ServerMessage>(encoding, &whole[..cut]).is_err(),
                    "{encoding:?} {m:?} cut at {cut}"
                );
            }
        }
    }
}

#[test]
fn every_truncation_of_a_frame_is_refused() {
    let (client, _) = samples();
    for encoding in ENCODINGS {
        for m in client.iter().take(16) {
            let frame = encode_frame(encoding, m);
            assert_eq!(read_all_frames(&frame, HARD_MAX_FRAME).unwrap().len(), 1);
            // Nothing at all is a clean end of stream; any other cut is not.
            assert!(read_all_frames(&frame[..0], HARD_MAX_FRAME).unwrap().is_empty());
            for cut in 1..frame.len() {
                let err = read_all_frames(&frame[..cut], HARD_MAX_FRAME).unwrap_err();
                assert!(matches!(err, FrameError::Truncated), "cut at {cut}: {err:?}");
            }
        }
    }
}

#[test]
fn trailing_bytes_after_a_bincode_message_are_refused() {
    let (client, server) = samples();
    for m in &client {
        for extra in [&[0u8][..], &[1, 2, 3], &codec::encode(Encoding::Bincode, m)] {
            let mut bytes = codec::encode(Encoding::Bincode, m);
            bytes.extend_from_slice(extra);
            let err = codec::decode::<ClientMessage>(Encoding::Bincode, &bytes).unwrap_err();
            assert!(
                matches!(err, DecodeError::TrailingBytes(n) if n == extra.len()),
                "{err:?}"
            );
            let mut bytes = codec::encode_enveloped(Encoding::Bincode, 3, m);
            bytes.extend_from_slice(extra);
            let err = codec::decode_enveloped::<ClientMessage>(Encoding::Bincode, &bytes).unwrap_err();
            assert!(
                matches!(err, DecodeError::TrailingBytes(n) if n == extra.len()),
                "{err:?}"
            );
        }
    }
    for m in &server {
        let mut bytes = codec::encode(Encoding::Bincode, m);
        bytes.push(0);
        assert!(codec::decode::<ServerMessage>(Encoding::Bincode, &bytes).is_err());
    }
}

#[test]
fn trailing_text_after_a_json_message_is_refused() {
    let (client, _) = samples();
    for m in &client {
        let mut bytes = codec::encode(Encoding::Json, m);
        bytes.extend_from_slice(b" x");
        assert!(codec::decode::<ClientMessage>(Encoding::Json, &bytes).is_err());
        let mut twice = codec::encode(Encoding::Json, m);
        twice.extend(codec::encode(Encoding::Json, m));
        assert!(codec::decode::<ClientMessage>(Encoding::Json, &twice).is_err());
    }
}

#[test]
fn json_of_an_unknown_or_wrong_shape_is_refused() {
    let client_garbage: &[&str] = &[
        r#"{"type":"shout","data":"hi"}"#,
        r#"{"type":"HELLO","version":1}"#,
        r#"{"version":1}"#,
        r#"{"type":"hello"}"#,
        r#"{"type":"hello","version":65536}"#,
        r#"{"type":"hello","version":-1}"#,
        r#"{"type":"hello","version":"1"}"#,
        r#"{"type":"ping","nonce":4294967296}"#,
        r#"{"type":"ping","nonce":1.5}"#,
        r#"{"type":"ping","id":-1,"nonce":1}"#,
        r#"{"type":"join","room":7}"#,
        r#"{"type":"signal","to":"0000000000000001","signal":{"kind":"fax","data":"x"}}"#,
        r#"{"type":"signal","to":"0000000000000001","signal":{"sdp":"v=0"}}"#,
        r#"{"type":"signal","to":"1","signal":{"kind":"custom","data":"x"}}"#,
        r#"{"type":"signal","to":1,"signal":{"kind":"custom","data":"x"}}"#,
        r#"{"type":"signal","to":"zzzzzzzzzzzzzzzz","signal":{"kind":"custom","data":"x"}}"#,
        r#"{"type":"signal","to":"00000000000000001","signal":{"kind":"custom","data":"x"}}"#,
        // Peer ids are exactly 16 lowercase hex digits: no uppercase, no sign.
        r#"{"type":"signal","to":"9E1C4D7A02B8F315","signal":{"kind":"custom","data":"x"}}"#,
        r#"{"type":"signal","to":"9e1c4d7a02b8f31A","signal":{"kind":"custom","data":"x"}}"#,
        r#"{"type":"signal","to":"+e1c4d7a02b8f315","signal":{"kind":"custom","data":"x"}}"#,
        r#"{"type":"signal","to":"-e1c4d7a02b8f315","signal":{"kind":"custom","data":"x"}}"#,
        r#"{"type":"signal","to":" e1c4d7a02b8f315","signal":{"kind":"custom","data":"x"}}"#,
        r#"{"type":"signal","to":"0000000000000001","signal":{"kind":"candidate","candidate":"","sdpMLineIndex":70000}}"#,
        r#"["hello",1]"#,
        r#""hello""#,
        "null",
        "",
        "{",
        "{\"type\":\"ping\",\"nonce\":1",
        "\u{feff}{\"type\":\"ping\",\"nonce\":1}",
    ];
    for text in client_garbage {
        assert!(
            codec::decode::<ClientMessage>(Encoding::Json, text.as_bytes()).is_err(),
            "{text}"
        );
        assert!(
            codec::decode_enveloped::<ClientMessage>(Encoding::Json, text.as_bytes()).is_err(),
            "enveloped {text}"
        );
    }
    let server_garbage: &[&str] = &[
        // A code is a name; a number (or anything else) is not a code.
        r#"{"type":"error","code":1,"message":""}"#,
        r#"{"type":"error","code":null,"message":""}"#,
        r#"{"type":"peer_left","peer_id":"9E1C4D7A02B8F315"}"#,
        r#"{"type":"goodbye","message":"bye"}"#,
        r#"{"type":"ack"}"#,
        r#"{"type":"welcome","version":1,"session_id":"s","peer_id":"0000000000000001","user_id":"u"}"#,
        r#"{"type":"joined","room":"r","members":[{"peer_id":"0000000000000001"}]}"#,
    ];
    for text in server_garbage {
        assert!(
            codec::decode::<ServerMessage>(Encoding::Json, text.as_bytes()).is_err(),
            "{text}"
        );
    }
    let envelopes: &[&str] = &[
        r#"{"ch":-1,"type":"ping","nonce":1}"#,
        r#"{"ch":4294967296,"type":"ping","nonce":1}"#,
        r#"{"ch":"1","type":"ping","nonce":1}"#,
        r#"{"ch":1}"#,
    ];
    for text in envelopes {
        assert!(
            codec::decode_enveloped::<ClientMessage>(Encoding::Json, text.as_bytes()).is_err(),
            "{text}"
        );
    }
    // Invalid UTF-8 is not JSON.
    assert!(codec::decode::<ClientMessage>(Encoding::Json, b"{\"type\":\"join\",\"room\":\"\xff\"}").is_err());
}

#[test]
fn bincode_of_an_unknown_or_wrong_shape_is_refused() {
    let cases: &[&[u8]] = &[
        // Variant numbers past the last message (`refresh`, 6, is the last).
        &[7, 0, 0],
        &[250],
        &[0xfb, 0x00, 0x01],
        // An invalid varint marker.
        &[0xff],
        // An option that is neither 0 nor 1.
        &[5, 2, 1],
        // A string claiming far more bytes than there are, or than the limit.
        &[1, 0, 0xfc, 0xff, 0xff, 0xff, 0x7f, b'a'],
        &[1, 0, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        // A string that is not UTF-8.
        &[1, 0, 2, 0xc3, 0x28],
        // A signal kind that does not exist.
        &[3, 0, 1, 4, 0],
        // u16 version too large for a u16.
        &[0, 0, 0xfc, 0, 0, 1, 0, 0],
    ];
    for bytes in cases {
        assert!(
            codec::decode::<ClientMessage>(Encoding::Bincode, bytes).is_err(),
            "{bytes:02x?}"
        );
    }
    let server_cases: &[&[u8]] = &[
        &[12],
        // An error code number too large for a u16, or not a varint at all.
        &[9, 0, 0xfc, 0, 0, 1, 0, 0],
        &[11, 0xff, 0],
        // `joined` claiming a huge member list.
        &[1, 0, 1, b'r', 0xfc, 0xff, 0xff, 0xff, 0xff],
    ];
    for bytes in server_cases {
        assert!(
            codec::decode::<ServerMessage>(Encoding::Bincode, bytes).is_err(),
            "{bytes:02x?}"
        );
    }
}

/// Codes added after a client was built decode as `ErrorCode::Unknown`, in an
/// `error` or a `goodbye` that is otherwise intact (see PROTOCOL.md, section 10).
#[test]
fn error_codes_a_decoder_does_not_know_decode_as_unknown() {
    let json: &[(&str, ServerMessage)] = &[
        (
            r#"{"type":"error","id":5,"code":"quantum_flux","message":"m"}"#,
            ServerMessage::Error {
                id: Some(5),
                code: ErrorCode::Unknown,
                message: "m".into(),
            },
        ),
        (
            r#"{"type":"error","code":"","message":""}"#,
            ServerMessage::Error {
                id: None,
                code: ErrorCode::Unknown,
                message: String::new(),
            },
        ),
        (
            r#"{"type":"goodbye","code":"RATE_LIMITED","message":"bye"}"#,
            ServerMessage::Goodbye {
                code: ErrorCode::Unknown,
                message: "bye".into(),
            },
        ),
        (
            r#"{"type":"goodbye","code":"unknown","message":"bye"}"#,
            ServerMessage::Goodbye {
                code: ErrorCode::Unknown,
                message: "bye".into(),
            },
        ),
    ];
    for (text, want) in json {
        assert_eq!(
            &codec::decode::<ServerMessage>(Encoding::Json, text.as_bytes()).unwrap(),
            want,
            "{text}"
        );
        let (ch, got) = codec::decode_enveloped::<ServerMessage>(Encoding::Json, text.as_bytes()).unwrap();
        assert_eq!((ch, &got), (0, want), "enveloped {text}");
    }
    // Every u16 decodes in bincode: a known number as its code, any other as `Unknown`.
    for n in 0..=u16::MAX {
        // 11: `goodbye`.
        let mut bytes = vec![11u8];
        bytes.extend(codec::encode(Encoding::Bincode, &n));
        bytes.push(0);
        let decoded = codec::decode::<ServerMessage>(Encoding::Bincode, &bytes)
            .unwrap_or_else(|e| panic!("code number {n}: {e}"));
        let want = ErrorCode::from_number(n).unwrap_or(ErrorCode::Unknown);
        assert_eq!(
            decoded,
            ServerMessage::Goodbye {
                code: want,
                message: String::new()
            },
            "code number {n}"
        );
    }
    let error = [9u8, 1, 5, 0xfb, 0x0f, 0x27, 1, b'm'];
    assert_eq!(
        codec::decode::<ServerMessage>(Encoding::Bincode, &error).unwrap(),
        ServerMessage::Error {
            id: Some(5),
            code: ErrorCode::Unknown,
            message: "m".into()
        }
    );
    // `Unknown` itself is 0 and "unknown" on the wire, and never collides with a real code.
    assert_eq!(ErrorCode::Unknown.number(), 0);
    assert_eq!(ErrorCode::Unknown.as_str(), "unknown");
    assert_eq!(ErrorCode::from_number(0), Some(ErrorCode::Unknown));
    assert_eq!(ErrorCode::ALL.last(), Some(&ErrorCode::Unknown));
}

#[test]
fn a_bincode_message_is_not_json_and_back() {
    let (client, server) = samples();
    for m in &client {
        let bincode = codec::encode(Encoding::Bincode, m);
        assert!(codec::decode::<ClientMessage>(Encoding::Json, &bincode).is_err());
        let json = codec::encode(Encoding::Json, m);
        assert!(codec::decode::<ClientMessage>(Encoding::Bincode, &json).is_err());
    }
    for m in &server {
        let bincode = codec::encode(Encoding::Bincode, m);
        assert!(codec::decode::<ServerMessage>(Encoding::Json, &bincode).is_err());
    }
}

#[test]
fn an_oversized_length_prefix_costs_no_allocation() {
    // A prefix claiming 4 GiB, or just over the hard cap, with nothing behind
    // it: refused as beyond any limit (never skipped), never allocated.
    let wire = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    let err = read_all_frames(&wire, HARD_MAX_FRAME).unwrap_err();
    assert!(
        matches!(err, FrameError::Unskippable { len } if len == u32::MAX as usize),
        "{err:?}"
    );
    let wire = [0x00, 0x10, 0x00, 0x01];
    let err = read_all_frames(&wire, HARD_MAX_FRAME).unwrap_err();
    assert!(matches!(err, FrameError::Unskippable { len: 0x0010_0001 }), "{err:?}");
}
