//! Hostile and broken input, through real sockets on both transports: frames
//! that are not messages, frames too large, a 4 GiB length prefix, streams cut
//! inside a frame, floods, slow handshakes, forged tokens and replays.
//!
//! Each attack gets its code (or, where the WebSocket layer acts first, its
//! drop), the server stays up, and two well-behaved peers sharing the
//! attacker's room (one on WebTransport, one on WSS: the [`Bystanders`]) keep
//! talking through it all without losing, duplicating or reordering a message.
//! Attackers connect from 127.0.0.2 (or .3), the bystanders from 127.0.0.1, so
//! that blocking the attacker's address is seen not to touch anyone else.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use e2e::raw::{RawWebTransport, RawWss, WsEvent};
use e2e::{Server, Via};
use proto::client::{Channel, Client, ClientError, Room};
use proto::{CONTROL_CHANNEL, ChannelId, ClientMessage, Encoding, ErrorCode, PeerId, ServerMessage, Signal, codec};
use server::session::auth::{TokenClaims, mint_hs256, now_secs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
/// How long anything that should happen may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(10);
const ROOM: &str = "town-square";
/// Where attackers connect from; the bystanders use 127.0.0.1.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const BOTH: [Via; 2] = [Via::WebTransport, Via::WebSocket];

// ---------------------------------------------------------------------------
// The bystanders: the well-behaved peers that must not notice any attack.
// ---------------------------------------------------------------------------

/// How often each bystander speaks: well within every budget these tests set.
const PACE: Duration = Duration::from_millis(100);

/// What one bystander heard while the test ran.
#[derive(Debug, Default)]
struct Heard {
    /// The other bystander's numbered messages, in the order they arrived.
    from_peer: Vec<String>,
    /// How many numbered messages this bystander sent.
    sent: usize,
    /// Broadcasts and signals from anyone else in the room, in arrival order.
    from_others: Vec<(PeerId, String)>,
    /// Anything a well-behaved peer should never get: messages on its control
    /// channel, errors on its room's.
    unexpected: Vec<ServerMessage>,
}

/// What a bystander has heard so far, for tests to wait on.
#[derive(Clone, Debug, Default)]
struct Progress {
    from_peer: usize,
    left: Vec<PeerId>,
}

/// A WebTransport peer and a WSS peer in [`ROOM`], sending each other numbered
/// broadcasts and signals (alternately) every [`PACE`], from before the attack
/// until after it.
struct Bystanders {
    /// The WebTransport peer's id, then the WSS peer's.
    ids: [PeerId; 2],
    stop: watch::Sender<bool>,
    progress: [watch::Receiver<Progress>; 2],
    talkers: Vec<JoinHandle<Talked>>,
}

/// What a bystander heard, and its connection: kept open until both have
/// finished, since closing it could lose what it sent last.
type Talked = (Heard, Client, Room);

impl Bystanders {
    /// Seats the two peers and returns once they are heard talking.
    async fn seat(server: &Server) -> Self {
        Self::seat_with(server, [server.token("bystander-wt"), server.token("bystander-wss")]).await
    }

    async fn seat_with(server: &Server, [wt_token, wss_token]: [String; 2]) -> Self {
        let wt = Client::connect(server.options(Via::WebTransport, &wt_token))
            .await
            .expect("the WebTransport bystander connects");
        let wss = Client::connect(server.options(Via::WebSocket, &wss_token))
            .await
            .expect("the WSS bystander connects");
        let wt_room = wt.join(ROOM).await.expect("the WebTransport bystander joins");
        let wss_room = wss.join(ROOM).await.expect("the WSS bystander joins");
        let ids = [wt.peer_id(), wss.peer_id()];
        let stop = watch::Sender::new(false);
        let (wt_progress, wt_watch) = watch::channel(Progress::default());
        let (wss_progress, wss_watch) = watch::channel(Progress::default());
        let talkers = vec![
            tokio::spawn(talk(wt, wt_room, ["wt", "wss"], ids[1], stop.subscribe(), wt_progress)),
            tokio::spawn(talk(
                wss,
                wss_room,
                ["wss", "wt"],
                ids[0],
                stop.subscribe(),
                wss_progress,
            )),
        ];
        let bystanders = Self {
            ids,
            stop,
            progress: [wt_watch, wss_watch],
            talkers,
        };
        bystanders.hear_more(3).await;
        bystanders
    }

    fn wt_id(&self) -> PeerId {
        self.ids[0]
    }

    /// Waits until both bystanders have seen `what`.
    async fn both_see(&self, what: &str, done: impl Fn(&Progress) -> bool) {
        for progress in &self.progress {
            let mut progress = progress.clone();
            tokio::time::timeout(WAIT, progress.wait_for(|p| done(p)))
                .await
                .unwrap_or_else(|_| panic!("the bystanders did not see {what} in time"))
                .expect("a bystander stopped");
        }
    }

    /// Waits until each bystander has heard `n` more messages from the other.
    async fn hear_more(&self, n: usize) {
        let targets = self.progress.each_ref().map(|p| p.borrow().from_peer + n);
        for (progress, target) in self.progress.iter().zip(targets) {
            let mut progress = progress.clone();
            tokio::time::timeout(WAIT, progress.wait_for(|p| p.from_peer >= target))
                .await
                .expect("the bystanders keep hearing each other")
                .expect("a bystander stopped");
        }
    }

    /// Waits until both bystanders saw `peer` leave the room.
    async fn see_leave(&self, peer: PeerId) {
        self.both_see("the attacker leave", |p| p.left.contains(&peer)).await;
    }

    /// Lets them talk a little more, stops them, and checks that each heard
    /// every message of the other exactly once, in order, and nothing it should
    /// not have. Returns what they heard, the WebTransport peer's first.
    async fn finish(self) -> [Heard; 2] {
        self.hear_more(3).await;
        self.stop.send_replace(true);
        let mut heard = Vec::new();
        let mut connections = Vec::new();
        for talker in self.talkers {
            let done = tokio::time::timeout(WAIT, talker)
                .await
                .expect("the bystanders finished in time");
            let (h, client, room) = done.expect("a bystander failed");
            heard.push(h);
            connections.push((client, room));
        }
        drop(connections);
        let [wt, wss]: [Heard; 2] = heard.try_into().expect("two bystanders");
        for (me, other, names) in [(&wt, &wss, ["wt", "wss"]), (&wss, &wt, ["wss", "wt"])] {
            let expected: Vec<String> = (0..other.sent).map(|n| format!("{}-{n}", names[1])).collect();
            assert!(other.sent >= 6, "the {} bystander kept talking", names[1]);
            assert_eq!(
                me.from_peer, expected,
                "the {} bystander heard every message of the other exactly once, in order",
                names[0]
            );
            assert!(
                me.unexpected.is_empty(),
                "the {} bystander was sent {:?}",
                names[0],
                me.unexpected
            );
        }
        [wt, wss]
    }
}

/// One bystander: speaks every [`PACE`] until told to stop, then sends an end
/// marker and listens until the other's end marker arrives.
async fn talk(
    mut client: Client,
    mut room: Room,
    [me, other_name]: [&'static str; 2],
    other: PeerId,
    mut stop: watch::Receiver<bool>,
    progress: watch::Sender<Progress>,
) -> Talked {
    let other_end = format!("{other_name}-end");
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Heard::default();
    let (mut stopping, mut other_done) = (false, false);
    loop {
        tokio::select! {
            _ = tick.tick(), if !stopping => {
                let text = format!("{me}-{}", heard.sent);
                let sent = if heard.sent % 2 == 0 {
                    room.broadcast(text).await
                } else {
                    room.signal(other, Signal::Custom { data: text }).await
                };
                sent.expect("a bystander can always send");
                heard.sent += 1;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                room.broadcast(format!("{me}-end")).await.expect("a bystander can always send");
                if other_done {
                    return (heard, client, room);
                }
            }
            msg = room.recv() => match msg.expect("a bystander's room stays open") {
                ServerMessage::Broadcast { from, data } | ServerMessage::Signal { from, signal: Signal::Custom { data } } => {
                    if from != other {
                        heard.from_others.push((from, data));
                    } else if data == other_end {
                        other_done = true;
                        if stopping {
                            return (heard, client, room);
                        }
                    } else {
                        heard.from_peer.push(data);
                        progress.send_modify(|p| p.from_peer += 1);
                    }
                }
                ServerMessage::PeerLeft { peer_id } => progress.send_modify(|p| p.left.push(peer_id)),
                ServerMessage::PeerJoined { .. } => {}
                other => heard.unexpected.push(other),
            },
            msg = client.control().recv() => heard.unexpected.push(msg.expect("a bystander's session stays open")),
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers for the attackers.
// ---------------------------------------------------------------------------

/// The server answers `/health`.
async fn assert_up(server: &Server) {
    let health = server.get("/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"), "the server is up");
}

/// Connects a client from the attacker's address.
async fn connect_attacker(server: &Server, via: Via, encoding: Encoding, name: &str) -> Client {
    let opts = server
        .options(via, &server.token(name))
        .encoding(encoding)
        .bind_ip(ATTACKER);
    Client::connect(opts)
        .await
        .unwrap_or_else(|e| panic!("{name} could not connect over {via:?}: {e}"))
}

/// Reads a channel until an error arrives; returns its code.
async fn next_error(channel: &mut Channel) -> ErrorCode {
    loop {
        match channel.recv_timeout(WAIT).await.expect("an error") {
            ServerMessage::Error { code, .. } => return code,
            _ => continue,
        }
    }
}

/// Reads a room's channel until the answer to a request (an ack or an error)
/// arrives, skipping what the room relays.
async fn next_answer(room: &mut Room) -> ServerMessage {
    loop {
        match room.recv_timeout(WAIT).await.expect("an answer") {
            msg @ (ServerMessage::Ack { .. } | ServerMessage::Error { .. }) => return msg,
            _ => continue,
        }
    }
}

/// Broadcasts `data` and waits for the server's ack: once it is there, the
/// broadcast is in every other member's queue.
async fn broadcast_acked(room: &mut Room, id: u32, data: &str) {
    let msg = ClientMessage::Broadcast {
        id: Some(id),
        seq: None,
        data: data.into(),
    };
    room.send(&msg).await.expect("the broadcast is sent");
    assert_eq!(next_answer(room).await, ServerMessage::Ack { id });
}

/// One frame's payload carrying `message` (encoded, valid or not) on `channel`:
/// on WebTransport the stream is the channel; on WSS the envelope names it.
fn on_channel(via: Via, encoding: Encoding, channel: ChannelId, message: &[u8]) -> Vec<u8> {
    match (via, encoding) {
        (Via::WebTransport, _) => message.to_vec(),
        (Via::WebSocket, Encoding::Bincode) => {
            // A channel id below 251 is one varint byte.
            let mut payload = vec![u8::try_from(channel).expect("a small channel id")];
            payload.extend_from_slice(message);
            payload
        }
        (Via::WebSocket, Encoding::Json) => match message.strip_prefix(b"{") {
            Some(rest) if channel != CONTROL_CHANNEL && message.starts_with(b"{\"") => {
                [format!("{{\"ch\":{channel},").as_bytes(), rest].concat()
            }
            _ => message.to_vec(),
        },
    }
}

/// The messages the attacker's session got on `channel` until it closed.
async fn until_closed(channel: &mut Channel) -> Vec<ServerMessage> {
    let mut got = Vec::new();
    loop {
        match channel.recv_timeout(WAIT).await {
            Ok(msg) => got.push(msg),
            Err(ClientError::Closed) => return got,
            Err(e) => panic!("the session did not close: {e}; got {got:?}"),
        }
    }
}

/// A new connection from `ip` is refused because the address is blocked: on
/// WSS with 429 `ip_blocked` and a `Retry-After` of at most `block_secs`; on
/// WebTransport before the QUIC handshake, so the client fails at once.
async fn assert_blocked(server: &Server, ip: IpAddr, token: &str, block_secs: u64) {
    let refused = match RawWss::connect(server, ip, &format!("?token={token}"), &[]).await {
        Ok(_) => panic!("a blocked address got a WebSocket"),
        Err(response) => response,
    };
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["code"], "ip_blocked");
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=block_secs).contains(&retry_after), "Retry-After: {retry_after}");

    let started = Instant::now();
    let err = server
        .connect_err(server.options(Via::WebTransport, token).bind_ip(ip))
        .await;
    assert!(matches!(err, ClientError::Connect(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the QUIC connection was refused at once, not left to time out ({:?})",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Frames that are not messages.
// ---------------------------------------------------------------------------

/// A frame that is not a message: what it is, its bytes, the code it earns, and
/// whether it only makes sense on a WebTransport stream.
struct Malformed {
    what: &'static str,
    bytes: Vec<u8>,
    code: ErrorCode,
    webtransport_only: bool,
}

fn malformed(what: &'static str, bytes: impl Into<Vec<u8>>, code: ErrorCode) -> Malformed {
    Malformed {
        what,
        bytes: bytes.into(),
        code,
        webtransport_only: false,
    }
}

fn malformed_json() -> Vec<Malformed> {
    let deep = format!(
        r#"{{"type":"ping","nonce":1,"x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    vec![
        malformed("text that is not JSON", "hello, server", ErrorCode::BadFrame),
        malformed("an empty frame", "", ErrorCode::BadFrame),
        malformed("truncated JSON", r#"{"type":"ping","nonce":1"#, ErrorCode::BadFrame),
        malformed("JSON nested 10 000 deep", deep, ErrorCode::BadFrame),
        Malformed {
            // On WSS the text frame itself must be UTF-8: see the raw test below.
            webtransport_only: true,
            ..malformed(
                "invalid UTF-8",
                &b"{\"type\":\"broadcast\",\"seq\":1,\"data\":\"\xff\xfe\"}"[..],
                ErrorCode::BadFrame,
            )
        },
        malformed(
            "an unknown type",
            r#"{"type":"teleport","nonce":1}"#,
            ErrorCode::UnknownType,
        ),
        malformed(
            "a type only the server sends",
            r#"{"type":"goodbye","code":"internal","message":"x"}"#,
            ErrorCode::UnknownType,
        ),
        malformed(
            "an unknown field",
            r#"{"type":"ping","nonce":1,"admin":true}"#,
            ErrorCode::InvalidMessage,
        ),
        malformed(
            "a field of the wrong type",
            r#"{"type":"ping","nonce":"one"}"#,
            ErrorCode::InvalidMessage,
        ),
        malformed("a missing field", r#"{"type":"ping"}"#, ErrorCode::InvalidMessage),
        // The Rust names of a candidate's fields: refused, not relayed without them.
        malformed(
            "a candidate with sdp_mid and sdp_m_line_index",
            r#"{"type":"signal","to":"9e1c4d7a02b8f315","signal":{"kind":"candidate","candidate":"c","sdp_mid":"0","sdp_m_line_index":0}}"#,
            ErrorCode::InvalidMessage,
        ),
        malformed("no type at all", r#"{"nonce":1}"#, ErrorCode::InvalidMessage),
    ]
}

fn malformed_bincode() -> Vec<Malformed> {
    let broadcast = codec::encode(
        Encoding::Bincode,
        &ClientMessage::Broadcast {
            id: None,
            seq: Some(1),
            data: "hello".into(),
        },
    );
    let ping = codec::encode(Encoding::Bincode, &ClientMessage::Ping { id: None, nonce: 1 });
    vec![
        malformed(
            "truncated bincode",
            &broadcast[..broadcast.len() - 3],
            ErrorCode::BadFrame,
        ),
        malformed(
            "bytes after the message",
            [&ping[..], &[0]].concat(),
            ErrorCode::BadFrame,
        ),
        // broadcast (4), no id (0), seq Some(1) (1 1), then a string length of
        // 2^40 (varint marker 253, then a u64): past the decoder's 1 MiB cap.
        malformed(
            "a length inside claiming a terabyte",
            [4u8, 0, 1, 1, 253, 0, 0, 0, 0, 0, 1, 0, 0],
            ErrorCode::BadFrame,
        ),
        malformed("a variant past the last type", [200u8, 1], ErrorCode::UnknownType),
    ]
}

/// Sends every malformed frame of `encoding` on the control channel and on the
/// room's, checking each one's code; then shows the session is still fine.
async fn send_malformed_frames(server: &Server, via: Via, encoding: Encoding, id: u32) {
    let name = format!("garbler-{via:?}-{}", encoding.as_str());
    let mut attacker = connect_attacker(server, via, encoding, &name).await;
    let mut room = attacker.join(ROOM).await.expect("the attacker joins");
    let cases = match encoding {
        Encoding::Json => malformed_json(),
        Encoding::Bincode => malformed_bincode(),
    };
    for case in cases
        .iter()
        .filter(|c| via == Via::WebTransport || !c.webtransport_only)
    {
        for channel in [CONTROL_CHANNEL, room.channel().id()] {
            let payload = on_channel(via, encoding, channel, &case.bytes);
            let sent = if channel == CONTROL_CHANNEL {
                attacker.control().send_raw_frame(&payload).await
            } else {
                room.channel().send_raw_frame(&payload).await
            };
            sent.expect("the frame is sent");
            // Errors about frames come on the control channel, whichever channel the frame was on.
            assert_eq!(
                next_error(attacker.control()).await,
                case.code,
                "{name}: {} on channel {channel}",
                case.what
            );
        }
    }
    attacker.ping().await.expect("the session is still open");
    broadcast_acked(&mut room, id, &format!("{name} still here")).await;
}

#[tokio::test]
async fn malformed_frames_get_their_own_codes_on_both_transports_and_the_room_loses_nothing() {
    // Enough violations to close any session at the default score limit: this
    // test is about the codes (the escalation has its own test).
    let server = Server::start(BIN, &[("abuse-score-limit", "100000")]);
    let bystanders = Bystanders::seat(&server).await;
    let mut id = 0;
    for encoding in [Encoding::Json, Encoding::Bincode] {
        for via in BOTH {
            id += 1;
            send_malformed_frames(&server, via, encoding, id).await;
        }
    }
    assert_up(&server).await;
    for heard in bystanders.finish().await {
        let said: Vec<&str> = heard.from_others.iter().map(|(_, data)| data.as_str()).collect();
        assert_eq!(
            said,
            [
                "garbler-WebTransport-json still here",
                "garbler-WebSocket-json still here",
                "garbler-WebTransport-bincode still here",
                "garbler-WebSocket-bincode still here",
            ],
            "only the attackers' valid broadcasts reached the room, once each"
        );
    }
}

#[tokio::test]
async fn a_wss_text_frame_that_is_not_utf8_is_closed_with_1007_before_the_session_sees_it() {
    let server = Server::start(BIN, &[]);
    let bystanders = Bystanders::seat(&server).await;
    let mut ws = RawWss::connect(&server, ATTACKER, "", &[]).await.expect("upgraded");
    let attacker_id = ws.hello(&server.token("mangler")).await;
    ws.join(1, ROOM).await;
    let text = &b"{\"ch\":1,\"type\":\"broadcast\",\"seq\":1,\"data\":\"\xff\xfe\"}"[..];
    let frame = Frame::message(text.to_vec(), OpCode::Data(Data::Text), true);
    assert!(ws.send_message(Message::Frame(frame)).await);
    // RFC 6455 has the server fail the connection on invalid UTF-8: the
    // WebSocket layer does so before the session sees the message, with a close
    // frame that says why (status 1007), and nothing else.
    let events = ws.drain().await;
    assert!(
        matches!(events.as_slice(), [WsEvent::Closed(Some((1007, reason)))] if reason.contains("UTF-8")),
        "closed with 1007 and a reason: {events:?}"
    );
    bystanders.see_leave(attacker_id).await;
    assert_up(&server).await;
    let [wt, wss] = bystanders.finish().await;
    assert!(wt.from_others.is_empty() && wss.from_others.is_empty());
}

// ---------------------------------------------------------------------------
// Frames too large.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_frame_over_max_frame_bytes_is_refused_and_the_stream_stays_in_sync() {
    let server = Server::start(BIN, &[("max-frame-bytes", "4096")]);
    let bystanders = Bystanders::seat(&server).await;
    for (id, via) in (1..).zip(BOTH) {
        let mut attacker = connect_attacker(&server, via, Encoding::Bincode, "bulky").await;
        let mut room = attacker.join(ROOM).await.expect("the attacker joins");
        room.broadcast("x".repeat(10_000)).await.expect("sent");
        assert_eq!(
            next_error(attacker.control()).await,
            ErrorCode::FrameTooLarge,
            "{via:?}"
        );
        attacker.ping().await.expect("the session is still open");
        // The next frame on the same channel is read as a frame: nothing of the big one is left.
        broadcast_acked(&mut room, id, &format!("small after big over {via:?}")).await;
    }
    assert_up(&server).await;
    for heard in bystanders.finish().await {
        let said: Vec<&str> = heard.from_others.iter().map(|(_, data)| data.as_str()).collect();
        assert_eq!(
            said,
            ["small after big over WebTransport", "small after big over WebSocket"]
        );
    }
}

#[tokio::test]
async fn a_wss_message_over_1_mib_is_closed_with_1009_before_the_session_sees_it() {
    let server = Server::start(BIN, &[]);
    let bystanders = Bystanders::seat(&server).await;
    let mut ws = RawWss::connect(&server, ATTACKER, "", &[]).await.expect("upgraded");
    let attacker_id = ws.hello(&server.token("hoarder")).await;
    ws.join(1, ROOM).await;
    // The server may drop the connection while this is still being written.
    let _ = ws
        .send_message(Message::binary(vec![0u8; codec::HARD_MAX_FRAME + 512 * 1024]))
        .await;
    // Refused from the frame's header, before its payload is read.
    let events = ws.drain().await;
    assert!(
        matches!(events.as_slice(), [WsEvent::Closed(Some((1009, reason)))] if reason.contains("exceeds the limit of 1048576")),
        "closed with 1009 and a reason: {events:?}"
    );
    bystanders.see_leave(attacker_id).await;
    assert_up(&server).await;
    bystanders.finish().await;
}

/// A WebSocket frame header is 14 bytes; it once bought an allocation of
/// the whole declared frame (1 MiB, whatever `max_frame_bytes` said). Now a
/// message over `max_frame_bytes` is dropped as it arrives: 100 connections
/// that each declare a 1,000,000-byte message and send half of it cost the
/// server a few KiB each, not 523, and the room around them hears everything.
#[tokio::test]
async fn declared_but_unsent_megabytes_cost_the_server_nothing() {
    let server = Server::start(BIN, &[("max-connections-per-ip", "1000"), ("auth-timeout-ms", "60000")]);
    let bystanders = Bystanders::seat(&server).await;
    let before = server.rss_kib();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.https
    );
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&1_000_000u64.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let half = vec![0x55u8; 500_000];
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut tls = tls_to(&server).await;
        tls.write_all(request.as_bytes()).await.expect("upgrade request");
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.expect("the upgrade's answer");
            answer.push(byte[0]);
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        tls.write_all(&header).await.expect("the header");
        tls.write_all(&half).await.expect("half the payload");
        tls.flush().await.expect("flushed");
        held.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 100 * 64, "100 half-sent megabytes cost the server {grown} KiB");
    bystanders.hear_more(20).await;
    drop(held);
    assert_up(&server).await;
    bystanders.finish().await;
}

#[tokio::test]
async fn a_4_gib_length_prefix_on_the_control_stream_ends_the_session_with_frame_too_large() {
    let server = Server::start(BIN, &[]);
    let bystanders = Bystanders::seat(&server).await;
    let attacker = RawWebTransport::connect(&server, ATTACKER, Encoding::Bincode, &[])
        .await
        .expect("connected");
    let (mut control, attacker_id) = attacker.hello(&server.token("hostage-taker")).await;
    let _room = attacker.join(ROOM).await;
    // A length no reader will skip, and a little of the 4 GiB it promises.
    control.write(&[0xff, 0xff, 0xff, 0xff]).await;
    control.write(b"and the rest is coming, promise").await;
    let got = control.drain().await;
    assert!(
        matches!(
            got.as_slice(),
            [
                ServerMessage::Error {
                    id: None,
                    code: ErrorCode::FrameTooLarge,
                    ..
                },
                ServerMessage::Goodbye {
                    code: ErrorCode::FrameTooLarge,
                    ..
                },
            ]
        ),
        "{got:?}"
    );
    // The close code is the error code's number, the reason its name.
    let closed = attacker.closed().await.expect("closed by the application");
    assert_eq!(
        closed,
        (u64::from(ErrorCode::FrameTooLarge.number()), "frame_too_large".into())
    );
    bystanders.see_leave(attacker_id).await;
    assert_up(&server).await;
    bystanders.finish().await;
}

#[tokio::test]
async fn a_4_gib_length_prefix_on_a_room_stream_leaves_the_room_and_the_session_goes_on() {
    let server = Server::start(BIN, &[]);
    let bystanders = Bystanders::seat(&server).await;
    let attacker = RawWebTransport::connect(&server, ATTACKER, Encoding::Bincode, &[])
        .await
        .expect("connected");
    let (mut control, attacker_id) = attacker.hello(&server.token("hostage-taker")).await;
    let mut room = attacker.join(ROOM).await;
    room.write(&[0xff, 0xff, 0xff, 0xff]).await;
    room.write(b"and the rest is coming, promise").await;
    assert!(matches!(
        control.next().await,
        Some(ServerMessage::Error {
            code: ErrorCode::FrameTooLarge,
            ..
        })
    ));
    // The server stops reading the stream, leaves its room and ends the stream.
    room.drain().await;
    bystanders.see_leave(attacker_id).await;
    control.send(&ClientMessage::Ping { id: None, nonce: 7 }).await;
    assert_eq!(control.next().await, Some(ServerMessage::Pong { id: None, nonce: 7 }));
    // The session can join again, and be heard.
    let mut again = attacker.join(ROOM).await;
    let back = ClientMessage::Broadcast {
        id: Some(2),
        seq: Some(1),
        data: "back again".into(),
    };
    again.send(&back).await;
    loop {
        match again.next().await.expect("the new room stream is open") {
            ServerMessage::Ack { id: 2 } => break,
            ServerMessage::Error { code, .. } => panic!("{code}"),
            _ => continue,
        }
    }
    assert_up(&server).await;
    for heard in bystanders.finish().await {
        assert_eq!(heard.from_others, [(attacker_id, "back again".to_owned())]);
    }
}

#[tokio::test]
async fn a_stream_that_ends_inside_a_frame_is_treated_as_ended() {
    let server = Server::start(BIN, &[]);
    let bystanders = Bystanders::seat(&server).await;
    let attacker = RawWebTransport::connect(&server, ATTACKER, Encoding::Bincode, &[])
        .await
        .expect("connected");
    let (mut control, attacker_id) = attacker.hello(&server.token("quitter")).await;
    // A room stream that ends ten bytes into a frame of a hundred: the room is left.
    let mut room = attacker.join(ROOM).await;
    room.write(&[0, 0, 0, 100]).await;
    room.write(&[1; 10]).await;
    room.finish().await;
    room.drain().await;
    bystanders.see_leave(attacker_id).await;
    // And one that ends inside a length prefix.
    let mut room = attacker.join(ROOM).await;
    room.write(&[0, 0]).await;
    room.finish().await;
    room.drain().await;
    bystanders
        .both_see("the attacker leave twice", |p| {
            p.left.iter().filter(|peer| **peer == attacker_id).count() == 2
        })
        .await;
    control.send(&ClientMessage::Ping { id: None, nonce: 1 }).await;
    assert_eq!(control.next().await, Some(ServerMessage::Pong { id: None, nonce: 1 }));
    // The control stream ending inside a frame is the client leaving: no error,
    // no goodbye, the session closed with code 0.
    control.write(&[0, 0, 0, 50, 5, 0]).await;
    control.finish().await;
    assert_eq!(control.drain().await, []);
    assert_eq!(
        attacker.closed().await.expect("closed by the application"),
        (0, String::new())
    );
    assert_up(&server).await;
    bystanders.finish().await;
}

// ---------------------------------------------------------------------------
// Floods.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_flood_escalates_from_rate_limited_to_policy_violation_to_a_blocked_address() {
    const BLOCK_SECS: u64 = 300;
    let server = Server::start(
        BIN,
        &[
            ("messages-per-sec", "30"),
            ("message-burst", "60"),
            ("abuse-closes-before-block", "2"),
            ("block-secs", "300"),
        ],
    );
    let bystanders = Bystanders::seat(&server).await;
    const FLOOD: u32 = 300;
    for via in BOTH {
        let mut attacker = connect_attacker(&server, via, Encoding::Bincode, "flooder").await;
        let attacker_id = attacker.peer_id();
        let _room = attacker.join(ROOM).await.expect("the attacker joins");
        let started = Instant::now();
        for nonce in 0..FLOOD {
            let ping = ClientMessage::Ping { id: None, nonce };
            if attacker.control().send(&ping).await.is_err() {
                break;
            }
        }
        let got = until_closed(attacker.control()).await;
        let elapsed = started.elapsed();
        let errors: Vec<ErrorCode> = got
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Error { code, .. } => Some(*code),
                _ => None,
            })
            .collect();
        let pongs = got.iter().filter(|m| matches!(m, ServerMessage::Pong { .. })).count();
        // Told first, at most once a second, while every drop is counted...
        let (last, told) = errors.split_last().expect("errors");
        assert!(
            !told.is_empty() && told.iter().all(|c| *c == ErrorCode::RateLimited),
            "{via:?}: {errors:?}"
        );
        assert!(
            told.len() as u64 <= 1 + elapsed.as_secs(),
            "{via:?}: {errors:?} in {elapsed:?}"
        );
        // ...then closed: 50 dropped frames at 2 points each reach the limit of 100.
        assert_eq!(*last, ErrorCode::PolicyViolation, "{via:?}");
        assert!(
            matches!(
                got.last(),
                Some(ServerMessage::Goodbye {
                    code: ErrorCode::PolicyViolation,
                    ..
                })
            ),
            "{via:?}: {:?}",
            got.last()
        );
        assert!(
            pongs < FLOOD as usize,
            "{via:?}: frames over budget were dropped ({pongs} pongs)"
        );
        bystanders.see_leave(attacker_id).await;
    }
    // Two sessions closed for abuse: the address is blocked on both transports...
    assert_blocked(&server, ATTACKER, &server.token("flooder"), BLOCK_SECS).await;
    // ...and nobody else is.
    server.connect(Via::WebTransport, "neighbour").await;
    server.connect(Via::WebSocket, "neighbour").await;
    assert_up(&server).await;
    bystanders.finish().await;
}

// ---------------------------------------------------------------------------
// Slow handshakes.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn slowloris_connections_are_cut_off_after_the_handshake_timeout() {
    let server = Server::start(BIN, &[("handshake-timeout-ms", "1000")]);
    let bystanders = Bystanders::seat(&server).await;
    let timeout = Duration::from_millis(1000);

    // A TCP connection that never starts TLS.
    let mut tcp = tokio::net::TcpStream::connect(server.https).await.expect("TCP connect");
    let started = Instant::now();
    let read = tokio::time::timeout(WAIT, tcp.read(&mut [0u8; 64]))
        .await
        .expect("the server closed the silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(100) && elapsed < WAIT,
        "closed after {elapsed:?}"
    );

    // A WebSocket upgrade whose TLS is done at once but whose headers come one
    // byte every 100 ms: they would take 15 s; the server waits 1 s.
    let (mut from_server, mut to_server) = tokio::io::split(tls_to(&server).await);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.https
    );
    let started = Instant::now();
    let mut drip = tokio::time::interval(Duration::from_millis(100));
    let mut dripped = 0;
    let mut answer = Vec::new();
    let give_up = tokio::time::sleep(WAIT);
    tokio::pin!(give_up);
    loop {
        let mut buf = [0u8; 1024];
        tokio::select! {
            read = from_server.read(&mut buf) => match read {
                Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
                _ => break,
            },
            _ = drip.tick(), if dripped < request.len() => {
                if to_server.write_all(&request.as_bytes()[dripped..=dripped]).await.is_err() {
                    break;
                }
                dripped += 1;
            }
            () = &mut give_up => panic!("the slow upgrade was never cut off"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(100) && elapsed < Duration::from_secs(8),
        "cut off after {elapsed:?}"
    );
    assert!(dripped < request.len(), "the headers were never complete");
    assert!(
        answer.is_empty(),
        "no answer, just the close: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_up(&server).await;
    bystanders.finish().await;
}

/// A TLS connection to the HTTPS listener, handshake done.
async fn tls_to(server: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = e2e::raw::client_tls(server, b"http/1.1");
    let tcp = tokio::net::TcpStream::connect(server.https).await.expect("TCP connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn a_webtransport_session_that_never_opens_its_control_stream_is_closed_with_auth_timeout() {
    let server = Server::start(BIN, &[("auth-timeout-ms", "1000")]);
    let bystanders = Bystanders::seat(&server).await;
    let started = Instant::now();
    let idle = RawWebTransport::connect(&server, ATTACKER, Encoding::Bincode, &[])
        .await
        .expect("the session is accepted");
    // No stream, so no goodbye: only the close code (13) and reason.
    let closed = idle.closed().await.expect("closed by the application");
    assert_eq!(
        closed,
        (u64::from(ErrorCode::AuthTimeout.number()), "auth_timeout".into())
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_up(&server).await;
    bystanders.finish().await;
}

// ---------------------------------------------------------------------------
// Forged tokens.
// ---------------------------------------------------------------------------

/// Unpadded base64url, as JWTs use it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |bits, (i, b)| bits | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(bits >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// The claims of a token for `sub` that the audience-checking server accepts.
fn claims(sub: &str) -> TokenClaims {
    let mut claims = TokenClaims::new(sub, now_secs() + 3600);
    claims.aud = Some("signal".into());
    claims
}

/// The forged tokens, each with the code it must get.
fn forged_tokens(server: &Server) -> Vec<(&'static str, String, ErrorCode)> {
    let payload = |claims: &TokenClaims| base64url(&serde_json::to_vec(claims).expect("claims serialize"));
    let unsigned = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        payload(&claims("mallory"))
    );
    let wrong_key = mint_hs256(b"not the server's secret", &claims("mallory"));
    let mut other_audience = claims("mallory");
    other_audience.aud = Some("another-service".into());
    let mut no_audience = claims("mallory");
    no_audience.aud = None;
    let mut expired = claims("mallory");
    expired.exp = now_secs() - 600;
    let mut early = claims("mallory");
    early.nbf = Some(now_secs() + 600);
    // A valid token whose signature's first character (its first six bits) is changed.
    let valid = server.token_with(claims("mallory"));
    let (signed, signature) = valid.rsplit_once('.').expect("three parts");
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered_signature = format!("{signed}.{flipped}{}", &signature[1..]);
    // A valid token whose payload is swapped for another user's, signature kept.
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered_payload = format!("{}.{}.{}", parts[0], payload(&claims("admin")), parts[2]);
    vec![
        ("alg none", unsigned, ErrorCode::AuthFailed),
        ("signed with another key", wrong_key, ErrorCode::AuthFailed),
        (
            "for another audience",
            server.token_with(other_audience),
            ErrorCode::AuthFailed,
        ),
        (
            "without an audience",
            server.token_with(no_audience),
            ErrorCode::AuthFailed,
        ),
        ("expired", server.token_with(expired), ErrorCode::TokenExpired),
        ("not valid yet", server.token_with(early), ErrorCode::AuthFailed),
        ("with a tampered signature", tampered_signature, ErrorCode::AuthFailed),
        ("with a tampered payload", tampered_payload, ErrorCode::AuthFailed),
    ]
}

#[tokio::test]
async fn forged_tokens_are_refused_each_with_its_code_on_both_transports() {
    let server = Server::start(
        BIN,
        &[("jwt-audience", "signal"), ("auth-failures-before-block", "1000")],
    );
    let tokens = [
        server.token_with(claims("bystander-wt")),
        server.token_with(claims("bystander-wss")),
    ];
    let bystanders = Bystanders::seat_with(&server, tokens).await;
    for (what, token, code) in forged_tokens(&server) {
        for via in BOTH {
            let err = server.connect_err(server.options(via, &token).bind_ip(ATTACKER)).await;
            assert_eq!(err.code(), Some(code), "a token {what} in hello over {via:?}: {err:?}");
        }
        let err = server
            .connect_err(
                server
                    .options(Via::WebSocket, &token)
                    .token_in_url(true)
                    .bind_ip(ATTACKER),
            )
            .await;
        match err {
            ClientError::Rejected { status, code: got, .. } => {
                assert_eq!((status, got), (Some(401), Some(code)), "a token {what} in the WSS URL");
            }
            other => panic!("a token {what} in the WSS URL: {other:?}"),
        }
    }
    assert_up(&server).await;
    bystanders.finish().await;
}

#[tokio::test]
async fn repeated_authentication_failures_block_the_address_on_both_transports() {
    const BLOCK_SECS: u64 = 300;
    let server = Server::start(BIN, &[("auth-failures-before-block", "3"), ("block-secs", "300")]);
    let bystanders = Bystanders::seat(&server).await;
    let guesser = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let forged = mint_hs256(b"a guess", &TokenClaims::new("root", now_secs() + 60));
    // Three failures, each answered with its own code...
    for via in BOTH {
        let err = server.connect_err(server.options(via, &forged).bind_ip(guesser)).await;
        assert_eq!(err.code(), Some(ErrorCode::AuthFailed), "{via:?}");
    }
    let err = server
        .connect_err(
            server
                .options(Via::WebSocket, &forged)
                .token_in_url(true)
                .bind_ip(guesser),
        )
        .await;
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed));
    // ...then the address is blocked, even with a valid token.
    assert_blocked(&server, guesser, &server.token("root"), BLOCK_SECS).await;
    server.connect(Via::WebTransport, "neighbour").await;
    server.connect(Via::WebSocket, "neighbour").await;
    assert_up(&server).await;
    bystanders.finish().await;
}

// ---------------------------------------------------------------------------
// Replays.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_replayed_signal_or_broadcast_is_refused_and_reaches_the_room_once() {
    let server = Server::start(BIN, &[]);
    let bystanders = Bystanders::seat(&server).await;
    let target = bystanders.wt_id();
    let mut replayers = Vec::new();
    for via in BOTH {
        let client = connect_attacker(&server, via, Encoding::Bincode, "replayer").await;
        let mut room = client.join(ROOM).await.expect("the replayer joins");
        let signal = |id, seq| ClientMessage::Signal {
            id: Some(id),
            seq,
            to: target,
            signal: Signal::Custom {
                data: format!("once over {via:?}"),
            },
        };
        let broadcast = |id, seq| ClientMessage::Broadcast {
            id: Some(id),
            seq,
            data: format!("all over {via:?}"),
        };
        let answers = [
            (signal(1, Some(7)), ServerMessage::Ack { id: 1 }),
            (signal(2, Some(7)), refused(2, ErrorCode::Replayed)),
            (signal(3, Some(3)), refused(3, ErrorCode::Replayed)),
            (broadcast(4, Some(8)), ServerMessage::Ack { id: 4 }),
            (broadcast(5, Some(8)), refused(5, ErrorCode::Replayed)),
        ];
        for (msg, answer) in answers {
            room.send(&msg).await.expect("sent");
            assert_eq!(strip_message(next_answer(&mut room).await), answer, "{via:?}: {msg:?}");
        }
        // Without a seq at all (the native client would add one, so the frame is built by hand).
        let unnumbered = codec::encode(Encoding::Bincode, &signal(6, None));
        let channel = room.channel().id();
        room.channel()
            .send_raw_frame(&on_channel(via, Encoding::Bincode, channel, &unnumbered))
            .await
            .expect("sent");
        assert_eq!(
            strip_message(next_answer(&mut room).await),
            refused(6, ErrorCode::InvalidMessage)
        );
        replayers.push((client, room));
    }
    let ids: Vec<PeerId> = replayers.iter().map(|(client, _)| client.peer_id()).collect();
    assert_up(&server).await;
    let [wt, wss] = bystanders.finish().await;
    let once = |peer, what: &str| (peer, what.to_owned());
    assert_eq!(
        wt.from_others,
        [
            once(ids[0], "once over WebTransport"),
            once(ids[0], "all over WebTransport"),
            once(ids[1], "once over WebSocket"),
            once(ids[1], "all over WebSocket"),
        ]
    );
    assert_eq!(
        wss.from_others,
        [
            once(ids[0], "all over WebTransport"),
            once(ids[1], "all over WebSocket")
        ]
    );
}

fn refused(id: u32, code: ErrorCode) -> ServerMessage {
    ServerMessage::Error {
        id: Some(id),
        code,
        message: String::new(),
    }
}

/// The message with an error's human-readable text left out (it may change).
fn strip_message(msg: ServerMessage) -> ServerMessage {
    match msg {
        ServerMessage::Error { id, code, .. } => refused(id.expect("an error answering a request"), code),
        other => other,
    }
}
