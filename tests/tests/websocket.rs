//! The WSS transport speaks RFC 6455 itself: fragmented messages, pings
//! between fragments, the close handshake, refusals with their status codes,
//! and upgrade requests that are not quite right — over real sockets, against
//! tokio-tungstenite as the client.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use e2e::raw::{RawWss, WsEvent};
use e2e::{Server, Via};
use proto::{CONTROL_CHANNEL, Encoding, ServerMessage, codec};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const HERE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn fragment(bytes: &[u8], opcode: OpCode, fin: bool) -> Message {
    Message::Frame(Frame::message(bytes.to_vec(), opcode, fin))
}

#[tokio::test]
async fn a_hello_in_three_fragments_with_a_ping_between_them_is_welcomed_and_the_ping_answered() {
    let server = Server::start(BIN, &[]);
    let mut ws = RawWss::connect(&server, HERE, "", &[]).await.expect("upgraded");
    let hello = e2e::raw::hello(&server.token("fragmented"));
    let text = codec::encode_enveloped(Encoding::Json, CONTROL_CHANNEL, &hello);
    let (a, rest) = text.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    assert!(ws.send_message(fragment(a, OpCode::Data(Data::Text), false)).await);
    assert!(
        ws.send_message(Message::Ping(b"between fragments".to_vec().into()))
            .await
    );
    assert!(ws.send_message(fragment(b, OpCode::Data(Data::Continue), false)).await);
    assert!(ws.send_message(fragment(c, OpCode::Data(Data::Continue), true)).await);
    let mut pong = None;
    let mut welcome = false;
    while pong.is_none() || !welcome {
        match ws.next_raw().await.expect("the connection is open") {
            Message::Pong(payload) => pong = Some(payload),
            Message::Text(text) => {
                let (ch, msg) = codec::decode_enveloped(Encoding::Json, text.as_bytes()).expect("a server frame");
                welcome |= ch == CONTROL_CHANNEL && matches!(msg, ServerMessage::Welcome { .. });
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pong.as_deref(), Some(&b"between fragments"[..]));
}

#[tokio::test]
async fn a_clients_close_is_answered_with_its_code_and_ends_the_session_at_once() {
    let server = Server::start(BIN, &[]);
    let watcher = server.connect(Via::WebTransport, "watcher").await;
    let mut watcher_room = watcher.join("lobby").await.unwrap();
    let mut ws = RawWss::connect(&server, HERE, "", &[]).await.expect("upgraded");
    let leaver = ws.hello(&server.token("leaver")).await;
    ws.join(1, "lobby").await;
    let close = CloseFrame {
        code: CloseCode::Away,
        reason: "tab closed".into(),
    };
    assert!(ws.send_message(Message::Close(Some(close))).await);
    let events = ws.drain().await;
    assert!(
        matches!(events.as_slice(), [WsEvent::Closed(Some((1001, _)))]),
        "the server echoes the close code: {events:?}"
    );
    // A clean close is not a lost connection: peers hear of it now, not after the resume grace period.
    loop {
        match watcher_room.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            ServerMessage::PeerLeft { peer_id, .. } if peer_id == leaver => break,
            _ => continue,
        }
    }
}

/// RFC 6455 §7.4: some status codes may never be sent (1005, 1006 and 1015
/// only report a close without a code or frame; 1004 and the unassigned ones
/// are reserved). A close carrying one is a protocol error, answered with
/// 1002, never echoed.
#[tokio::test]
async fn a_close_with_a_code_that_may_not_be_sent_is_answered_with_1002() {
    let server = Server::start(BIN, &[]);
    for code in [999u16, 1004, 1005, 1006, 1015, 2999, 5000] {
        let mut ws = RawWss::connect(&server, HERE, "", &[]).await.expect("upgraded");
        ws.hello(&server.token("closer")).await;
        let frame = Frame::close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }));
        assert!(ws.send_message(Message::Frame(frame)).await);
        let events = ws.drain().await;
        // The server's own reason: a client library that got the code echoed
        // would put 1002 and a reason of its own in its place.
        assert!(
            matches!(events.as_slice(), [WsEvent::Closed(Some((1002, reason)))] if reason.contains("may not be sent")),
            "close {code}: {events:?}"
        );
    }
}

#[tokio::test]
async fn a_frame_with_a_reserved_bit_is_refused_with_1002_and_the_reason() {
    let server = Server::start(BIN, &[]);
    let mut ws = RawWss::connect(&server, HERE, "", &[]).await.expect("upgraded");
    ws.hello(&server.token("compressor")).await;
    // RSV1 means permessage-deflate, which was never agreed.
    let mut frame = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Text), true);
    frame.header_mut().rsv1 = true;
    assert!(ws.send_message(Message::Frame(frame)).await);
    let events = ws.drain().await;
    assert!(
        matches!(events.as_slice(), [WsEvent::Closed(Some((1002, reason)))] if reason.contains("reserved bit")),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_upgrade_request_that_is_not_right_is_answered_with_a_status_and_an_error_code() {
    let server = Server::start(BIN, &[]);
    let version = RawWss::connect(&server, HERE, "", &[("sec-websocket-version", "8")])
        .await
        .err()
        .expect("refused");
    assert_eq!(version.status, 426);
    assert!(
        version
            .headers
            .iter()
            .any(|(k, v)| k == "sec-websocket-version" && v == "13")
    );
    // A plain GET: not an upgrade at all.
    let plain = server.get("/ws").await;
    assert_eq!(plain.status, 400);
    assert_eq!(plain.json()["code"], "invalid_message", "{}", plain.body);
    assert!(plain.body.contains("not a WebSocket upgrade"), "{}", plain.body);
}

/// Whether a request is an upgrade at all is checked before admission: plain
/// requests to `/ws` spend none of the address's connection tokens (nor, in
/// cluster mode, a Redis round trip), so a real upgrade after them still gets in.
#[tokio::test]
async fn plain_requests_to_the_websocket_path_spend_no_admission_token() {
    let server = Server::start(
        BIN,
        &[("connections-per-ip-per-sec", "1"), ("connection-burst-per-ip", "1")],
    );
    for _ in 0..3 {
        assert_eq!(server.get("/ws").await.status, 400);
    }
    let mut ws = RawWss::connect(&server, HERE, "", &[])
        .await
        .unwrap_or_else(|refused| panic!("refused after plain requests: {} {}", refused.status, refused.body));
    ws.hello(&server.token("patient")).await;
}

/// A message over 1 MiB is refused with 1009 as soon as its header says so;
/// the server then reads and drops the rest of it until the client closes,
/// so the close frame reaches the client instead of a TCP reset (which made
/// clients see 1006 most of the time). Five times, since a reset was a race.
#[tokio::test]
async fn a_message_over_1_mib_gets_its_1009_close_to_the_client_every_time() {
    let server = Server::start(BIN, &[]);
    for attempt in 0..5 {
        let mut ws = RawWss::connect(&server, HERE, "", &[]).await.expect("upgraded");
        ws.hello(&server.token("oversender")).await;
        let huge = vec![7u8; codec::HARD_MAX_FRAME + codec::HARD_MAX_FRAME / 2];
        assert!(
            ws.send_message(Message::Binary(huge.into())).await,
            "attempt {attempt}: the server took the whole message (and dropped it)"
        );
        let events = ws.drain().await;
        assert!(
            matches!(events.last(), Some(WsEvent::Closed(Some((1009, _))))),
            "attempt {attempt}: {events:?}"
        );
    }
}

/// A client that stops reading while a room floods it is cut off with
/// `slow_consumer`; when it reads again, every frame it gets is whole (a batch
/// cut by the session's end is finished before anything follows it), then the
/// goodbye, then the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_reads_whole_frames_then_its_goodbye() {
    let server = Server::start(BIN, &e2e::NO_BUDGETS);
    let alice = server.connect(Via::WebSocket, "alice").await;
    let carol = server.connect(Via::WebTransport, "carol").await;
    let alice_room = alice.join("flood").await.unwrap();
    let mut carol_room = carol.join("flood").await.unwrap();
    let mut bob = RawWss::connect(&server, HERE, "", &[]).await.expect("upgraded");
    let bob_id = bob.hello(&server.token("bob")).await;
    bob.join(1, "flood").await;
    let flood = tokio::spawn(async move {
        let payload = "z".repeat(16 * 1024);
        let mut pace = tokio::time::interval(Duration::from_millis(2));
        while alice_room.broadcast(payload.clone()).await.is_ok() {
            pace.tick().await;
        }
    });
    // Carol keeps reading; she hears when Bob is cut off.
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match carol_room.recv().await {
                Some(ServerMessage::PeerLeft { peer_id }) if peer_id == bob_id => return,
                Some(_) => continue,
                None => panic!("carol's room closed"),
            }
        }
    })
    .await
    .expect("bob was cut off");
    flood.abort();
    // Every frame decodes (RawWss panics on one that does not), and the end is in order.
    let events = bob.drain().await;
    let n = events.len();
    assert!(n >= 2, "only {n} events");
    match &events[n - 2..] {
        [
            WsEvent::Message(0, ServerMessage::Goodbye { code, .. }),
            WsEvent::Closed(Some((1008, reason))),
        ] => {
            assert_eq!(*code, proto::ErrorCode::SlowConsumer);
            assert_eq!(reason, "slow_consumer");
        }
        end => panic!("expected the goodbye and the close last, got {end:?}"),
    }
}
