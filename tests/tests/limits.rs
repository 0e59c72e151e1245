//! Every limit of the session layer, hit once on purpose: each gets the client
//! its own error code, and the server stays up.

use std::time::Duration;

use e2e::{Server, Via};
use proto::client::{Client, ClientError};
use proto::{ClientMessage, ErrorCode, PeerId, ServerMessage, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const WAIT: Duration = Duration::from_secs(5);

fn assert_refused(err: ClientError, status: u16, code: ErrorCode) {
    match err {
        ClientError::Rejected {
            status: got_status,
            code: got_code,
            ..
        } => {
            assert_eq!(got_status, Some(status));
            assert_eq!(got_code, Some(code));
        }
        other => panic!("expected an HTTP refusal with {code}, got {other:?}"),
    }
}

/// Reads a channel until an error arrives; returns its code.
async fn next_error(channel: &mut proto::client::Channel) -> ErrorCode {
    loop {
        match channel.recv_timeout(WAIT).await.expect("an error") {
            ServerMessage::Error { code, .. } => return code,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn the_per_ip_connection_cap_refuses_the_next_connection_on_both_transports() {
    let server = Server::start(BIN, &[("max-connections-per-ip", "2")]);
    let first = server.connect(Via::WebTransport, "a").await;
    let _second = server.connect(Via::WebSocket, "b").await;
    let err = server
        .connect_err(server.options(Via::WebSocket, &server.token("c")))
        .await;
    assert_refused(err, 429, ErrorCode::TooManyConnections);
    let err = server
        .connect_err(server.options(Via::WebTransport, &server.token("c")))
        .await;
    assert!(matches!(err, ClientError::Rejected { .. }), "{err:?}");
    // A slot comes back when a connection closes.
    first.close();
    drop(first);
    let mut reconnected = None;
    for _ in 0..50 {
        if let Ok(client) = Client::connect(server.options(Via::WebSocket, &server.token("c"))).await {
            reconnected = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reconnected.is_some(), "the freed slot was given back");
}

#[tokio::test]
async fn new_connections_per_ip_are_rate_limited() {
    let server = Server::start(
        BIN,
        &[("connections-per-ip-per-sec", "1"), ("connection-burst-per-ip", "2")],
    );
    let _a = server.connect(Via::WebSocket, "a").await;
    let _b = server.connect(Via::WebSocket, "b").await;
    let err = server
        .connect_err(server.options(Via::WebSocket, &server.token("c")))
        .await;
    assert_refused(err, 429, ErrorCode::ConnectionRateLimited);
}

#[tokio::test]
async fn the_global_connection_cap_refuses_with_server_full() {
    let server = Server::start(BIN, &[("max-connections", "1")]);
    let _a = server.connect(Via::WebTransport, "a").await;
    let err = server
        .connect_err(server.options(Via::WebSocket, &server.token("b")))
        .await;
    assert_refused(err, 503, ErrorCode::ServerFull);
}

#[tokio::test]
async fn the_message_budget_drops_excess_messages_with_rate_limited_and_keeps_the_session() {
    let server = Server::start(BIN, &[("messages-per-sec", "2"), ("message-burst", "3")]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let mut client = server.connect(via, "chatty").await;
        for nonce in 0..10 {
            client
                .control()
                .send(&ClientMessage::Ping { id: None, nonce })
                .await
                .unwrap();
        }
        assert_eq!(next_error(client.control()).await, ErrorCode::RateLimited, "{via:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        client
            .ping()
            .await
            .expect("the budget refilled and the session is open");
    }
}

#[tokio::test]
async fn the_byte_budget_drops_excess_bytes_with_byte_rate_limited() {
    let server = Server::start(
        BIN,
        &[
            ("bytes-per-sec", "100"),
            ("byte-burst", "3000"),
            ("max-frame-bytes", "3000"),
        ],
    );
    let mut client = server.connect(Via::WebSocket, "bulky").await;
    let room = client.join("bytes").await.unwrap();
    for _ in 0..3 {
        room.broadcast("x".repeat(1400)).await.unwrap();
    }
    // Limit violations are reported on the control channel, whatever channel the frame was for.
    assert_eq!(next_error(client.control()).await, ErrorCode::ByteRateLimited);
    client.ping().await.expect("still open");
}

#[tokio::test]
async fn an_oversized_frame_gets_frame_too_large_and_the_session_goes_on() {
    let server = Server::start(BIN, &[("max-frame-bytes", "1000")]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let mut client = server.connect(via, "big").await;
        let mut room = client.join("big-frames").await.unwrap();
        room.broadcast("y".repeat(5000)).await.unwrap();
        assert_eq!(next_error(client.control()).await, ErrorCode::FrameTooLarge, "{via:?}");
        client.ping().await.expect("the stream stayed in sync");
        room.send(&ClientMessage::Broadcast {
            id: Some(9),
            seq: None,
            data: "small".into(),
        })
        .await
        .unwrap();
        assert_eq!(room.recv_timeout(WAIT).await.unwrap(), ServerMessage::Ack { id: 9 });
    }
}

#[tokio::test]
async fn garbage_gets_bad_frame_and_the_session_goes_on() {
    let server = Server::start(BIN, &[]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let mut client = server.connect(via, "noisy").await;
        client
            .control()
            .send_raw_frame(&[0xff, 0x00, 0x13, 0x37])
            .await
            .unwrap();
        assert_eq!(next_error(client.control()).await, ErrorCode::BadFrame, "{via:?}");
        client.ping().await.expect("still open");
    }
}

#[tokio::test]
async fn the_room_member_cap_refuses_with_room_full() {
    let server = Server::start(BIN, &[("max-room-members", "2")]);
    let a = server.connect(Via::WebTransport, "a").await;
    let b = server.connect(Via::WebSocket, "b").await;
    let c = server.connect(Via::WebTransport, "c").await;
    let _ra = a.join("small").await.unwrap();
    let _rb = b.join("small").await.unwrap();
    assert_eq!(c.join("small").await.unwrap_err().code(), Some(ErrorCode::RoomFull));
    c.join("elsewhere").await.expect("other rooms are not affected");
}

#[tokio::test]
async fn the_rooms_per_session_cap_refuses_with_too_many_rooms() {
    let server = Server::start(BIN, &[("max-rooms-per-session", "2")]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let client = server.connect(via, "joiner").await;
        let _r1 = client.join("r1").await.unwrap();
        let r2 = client.join("r2").await.unwrap();
        assert_eq!(
            client.join("r3").await.unwrap_err().code(),
            Some(ErrorCode::TooManyRooms),
            "{via:?}"
        );
        r2.leave().await.unwrap();
        client.join("r3").await.expect("leaving frees a place");
    }
}

#[tokio::test]
async fn room_requests_that_make_no_sense_get_their_own_codes() {
    let server = Server::start(BIN, &[]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let mut client = server.connect(via, "confused").await;
        assert_eq!(
            client.join("no spaces allowed").await.unwrap_err().code(),
            Some(ErrorCode::InvalidRoom)
        );
        let mut room = client.join("sense").await.unwrap();
        assert_eq!(
            client.join("sense").await.unwrap_err().code(),
            Some(ErrorCode::AlreadyJoined)
        );
        room.signal(PeerId(12345), Signal::Custom { data: "?".into() })
            .await
            .unwrap();
        assert_eq!(next_error(room.channel()).await, ErrorCode::UnknownPeer);
        let to = PeerId(1);
        client
            .control()
            .send(&ClientMessage::Signal {
                id: Some(3),
                seq: None,
                to,
                signal: Signal::Custom { data: "?".into() },
            })
            .await
            .unwrap();
        assert_eq!(next_error(client.control()).await, ErrorCode::WrongChannel);
        room.signal(client.peer_id(), Signal::Custom { data: "me".into() })
            .await
            .unwrap();
        assert_eq!(next_error(room.channel()).await, ErrorCode::InvalidMessage);
        let mut stray = client.open_channel().await.unwrap();
        stray
            .send(&ClientMessage::Broadcast {
                id: None,
                seq: None,
                data: "no room here".into(),
            })
            .await
            .unwrap();
        assert_eq!(next_error(&mut stray).await, ErrorCode::NotInRoom, "{via:?}");
    }
}

#[tokio::test]
async fn a_silent_session_is_closed_with_idle_timeout() {
    let server = Server::start(BIN, &[("idle-timeout-ms", "400")]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let mut client = server.connect(via, "sleepy").await;
        let msg = client.control().recv_timeout(WAIT).await.expect("a goodbye");
        assert!(
            matches!(
                msg,
                ServerMessage::Goodbye {
                    code: ErrorCode::IdleTimeout,
                    ..
                }
            ),
            "{via:?}: {msg:?}"
        );
    }
}

#[tokio::test]
async fn pings_keep_a_session_alive_past_the_idle_timeout() {
    let server = Server::start(BIN, &[("idle-timeout-ms", "400")]);
    let mut client = server.connect(Via::WebTransport, "awake").await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.ping().await.expect("alive");
    }
}

/// Bob stops reading; Alice floods the room while Carol watches it. The server
/// must cut Bob off with slow_consumer rather than buffer without bound, its
/// memory must not grow, and Alice and Carol must not be disturbed.
async fn a_slow_reader_is_cut_off(via: Via) {
    // Slack for Carol, who must keep up on a machine that may be busy: Bob,
    // who reads nothing, is cut off all the same.
    let flags = [e2e::NO_BUDGETS.as_slice(), &[("outbound-queue-bytes", "8388608")]].concat();
    let server = Server::start(BIN, &flags);
    let alice = server.connect(Via::WebSocket, "alice").await;
    let carol = server.connect(Via::WebTransport, "carol").await;
    let mut bob = server.connect(via, "bob").await;
    let alice_room = alice.join("flood").await.unwrap();
    let mut carol_room = carol.join("flood").await.unwrap();
    let mut bob_room = bob.join("flood").await.unwrap();
    let bob_id = bob.peer_id();
    let rss_before = server.rss_kib();

    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = {
        let sent = sent.clone();
        tokio::spawn(async move {
            // About 8 MB/s: far more than Bob reads (nothing), well within what Carol reads.
            let payload = "z".repeat(16 * 1024);
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while alice_room.broadcast(payload.clone()).await.is_ok() {
                pace.tick().await;
                sent.fetch_add(payload.len(), std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let cut_off = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match carol_room.recv().await {
                Some(ServerMessage::PeerLeft { peer_id }) if peer_id == bob_id => return,
                Some(_) => continue,
                None => panic!("carol's room closed"),
            }
        }
    })
    .await;
    flood.abort();
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(cut_off.is_ok(), "bob was never cut off after {sent} bytes");
    let rss_after = server.rss_kib();
    eprintln!("{via:?}: bob cut off after {sent} bytes; server RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server memory grew from {rss_before} KiB to {rss_after} KiB while {sent} bytes were sent"
    );
    // Bob reads again (on a WebSocket, his client reads the shared socket only as
    // fast as every channel is drained).
    tokio::spawn(async move { while bob_room.recv().await.is_some() {} });
    // On WebTransport the control stream has its own flow
    // control, so the goodbye gets through; on a WebSocket it would queue behind
    // everything Bob did not read, so Bob only sees the connection closed.
    let end = loop {
        match bob.control().recv_timeout(Duration::from_secs(10)).await {
            Ok(ServerMessage::Goodbye { code, .. }) => break Ok(code),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    match via {
        Via::WebTransport => assert_eq!(end.ok(), Some(ErrorCode::SlowConsumer)),
        Via::WebSocket => assert!(
            matches!(end, Ok(ErrorCode::SlowConsumer) | Err(ClientError::Closed)),
            "{end:?}"
        ),
    }
    // Carol was never disturbed.
    carol.join("after-the-flood").await.expect("carol is still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webtransport_reader_is_cut_off_without_the_server_growing() {
    a_slow_reader_is_cut_off(Via::WebTransport).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_wss_reader_is_cut_off_without_the_server_growing() {
    a_slow_reader_is_cut_off(Via::WebSocket).await;
}
