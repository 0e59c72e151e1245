//! The protocol's story: peers meet in a room and exchange offers, answers and
//! ICE candidates, over WebTransport, over WSS, and across the two.

use std::time::Duration;

use e2e::{Server, Via};
use proto::client::{Client, Room};
use proto::{ClientMessage, Encoding, PeerId, ServerMessage, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const WAIT: Duration = Duration::from_secs(5);

fn offer() -> Signal {
    Signal::Offer {
        sdp: format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n{}", "a=x\r\n".repeat(700)),
    }
}

fn candidate(n: u16) -> Signal {
    Signal::Candidate {
        candidate: format!("candidate:{n} 1 udp 2122260223 192.0.2.{n} 5{n:04} typ host"),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("abcd".into()),
    }
}

async fn next(room: &mut Room) -> ServerMessage {
    room.recv_timeout(WAIT).await.expect("an event from the room")
}

async fn expect_signal(room: &mut Room, from: PeerId, want: &Signal) {
    match next(room).await {
        ServerMessage::Signal { from: got_from, signal } => {
            assert_eq!(got_from, from);
            assert_eq!(&signal, want);
        }
        other => panic!("expected a signal, got {other:?}"),
    }
}

/// Alice and Bob join one room; Bob sees Alice, Alice hears Bob arrive; then a
/// full offer/answer/ICE exchange in both directions.
async fn alice_and_bob_negotiate(alice: Client, bob: Client) {
    let mut alice_room = alice.join("call-1").await.expect("alice joins");
    assert!(alice_room.members().is_empty());
    let mut bob_room = bob.join("call-1").await.expect("bob joins");
    assert_eq!(bob_room.members().len(), 1);
    assert_eq!(bob_room.members()[0].peer_id, alice.peer_id());
    assert_eq!(bob_room.members()[0].user_id, "alice");
    match next(&mut alice_room).await {
        ServerMessage::PeerJoined { peer } => {
            assert_eq!(peer.peer_id, bob.peer_id());
            assert_eq!(peer.user_id, "bob");
        }
        other => panic!("expected peer_joined, got {other:?}"),
    }

    // Bob offers (he is the newcomer), Alice answers, both trickle candidates.
    bob_room.signal(alice.peer_id(), offer()).await.unwrap();
    expect_signal(&mut alice_room, bob.peer_id(), &offer()).await;
    let answer = Signal::Answer {
        sdp: "v=0\r\nanswer".into(),
    };
    alice_room.signal(bob.peer_id(), answer.clone()).await.unwrap();
    expect_signal(&mut bob_room, alice.peer_id(), &answer).await;
    for n in 0..5 {
        bob_room.signal(alice.peer_id(), candidate(n)).await.unwrap();
        alice_room.signal(bob.peer_id(), candidate(100 + n)).await.unwrap();
    }
    for n in 0..5 {
        expect_signal(&mut alice_room, bob.peer_id(), &candidate(n)).await;
        expect_signal(&mut bob_room, alice.peer_id(), &candidate(100 + n)).await;
    }

    // And the other way round: Alice renegotiates.
    alice_room.signal(bob.peer_id(), offer()).await.unwrap();
    expect_signal(&mut bob_room, alice.peer_id(), &offer()).await;
    bob_room.signal(alice.peer_id(), answer.clone()).await.unwrap();
    expect_signal(&mut alice_room, bob.peer_id(), &answer).await;

    // Bob leaves; Alice is told.
    bob_room.leave().await.expect("bob leaves");
    match next(&mut alice_room).await {
        ServerMessage::PeerLeft { peer_id } => assert_eq!(peer_id, bob.peer_id()),
        other => panic!("expected peer_left, got {other:?}"),
    }
}

#[tokio::test]
async fn alice_and_bob_exchange_offer_answer_and_candidates_over_webtransport() {
    let server = Server::start(BIN, &[]);
    let alice = server.connect(Via::WebTransport, "alice").await;
    let bob = server.connect(Via::WebTransport, "bob").await;
    alice_and_bob_negotiate(alice, bob).await;
}

#[tokio::test]
async fn alice_and_bob_exchange_offer_answer_and_candidates_over_wss() {
    let server = Server::start(BIN, &[]);
    let alice = server.connect(Via::WebSocket, "alice").await;
    let bob = server.connect(Via::WebSocket, "bob").await;
    alice_and_bob_negotiate(alice, bob).await;
}

#[tokio::test]
async fn a_webtransport_peer_and_a_wss_peer_reach_each_other() {
    let server = Server::start(BIN, &[]);
    let alice = server.connect(Via::WebTransport, "alice").await;
    let bob = server.connect(Via::WebSocket, "bob").await;
    alice_and_bob_negotiate(alice, bob).await;
}

#[tokio::test]
async fn json_and_bincode_clients_share_a_room_on_either_transport() {
    let server = Server::start(BIN, &[]);
    let json_wt = Client::connect(
        server
            .options(Via::WebTransport, &server.token("alice"))
            .encoding(Encoding::Json),
    )
    .await
    .unwrap();
    let json_ws = Client::connect(
        server
            .options(Via::WebSocket, &server.token("bob"))
            .encoding(Encoding::Json),
    )
    .await
    .unwrap();
    alice_and_bob_negotiate(json_wt, json_ws).await;
}

#[tokio::test]
async fn a_token_in_the_connect_url_opens_the_session_on_both_transports() {
    let server = Server::start(BIN, &[]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let client = Client::connect(server.options(via, &server.token("carol")).token_in_url(true))
            .await
            .unwrap();
        assert_eq!(client.welcome().user_id, "carol");
    }
}

#[tokio::test]
async fn welcome_announces_the_session_limits() {
    let server = Server::start(BIN, &[("max-room-members", "7"), ("messages-per-sec", "33")]);
    let client = server.connect(Via::WebSocket, "dave").await;
    let welcome = client.welcome();
    assert_eq!(welcome.version, proto::PROTOCOL_VERSION);
    assert_eq!(welcome.limits.max_room_members, 7);
    assert_eq!(welcome.limits.messages_per_sec, 33);
    assert_eq!(welcome.session_id.len(), 32);
}

#[tokio::test]
async fn broadcasts_reach_every_other_member_and_acks_answer_request_ids() {
    let server = Server::start(BIN, &[]);
    let clients = [
        server.connect(Via::WebTransport, "a").await,
        server.connect(Via::WebSocket, "b").await,
        server.connect(Via::WebTransport, "c").await,
    ];
    let mut rooms = Vec::new();
    for c in &clients {
        rooms.push(c.join("party").await.unwrap());
    }
    // Drain the peer_joined events.
    for _ in 0..2 {
        next(&mut rooms[0]).await;
    }
    next(&mut rooms[1]).await;
    rooms[0]
        .send(&ClientMessage::Broadcast {
            id: Some(42),
            seq: None,
            data: "hello all".into(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut rooms[0]).await, ServerMessage::Ack { id: 42 });
    for room in &mut rooms[1..] {
        assert_eq!(
            next(room).await,
            ServerMessage::Broadcast {
                from: clients[0].peer_id(),
                data: "hello all".into()
            }
        );
    }
}

#[tokio::test]
async fn rooms_on_one_webtransport_session_are_independent_channels() {
    let server = Server::start(BIN, &[]);
    let alice = server.connect(Via::WebTransport, "alice").await;
    let bob = server.connect(Via::WebTransport, "bob").await;
    let mut a1 = alice.join("one").await.unwrap();
    let mut a2 = alice.join("two").await.unwrap();
    let b1 = bob.join("one").await.unwrap();
    let b2 = bob.join("two").await.unwrap();
    next(&mut a1).await;
    next(&mut a2).await;
    b2.signal(alice.peer_id(), candidate(2)).await.unwrap();
    b1.signal(alice.peer_id(), candidate(1)).await.unwrap();
    // Each room's signal arrives on that room's channel only.
    expect_signal(&mut a2, bob.peer_id(), &candidate(2)).await;
    expect_signal(&mut a1, bob.peer_id(), &candidate(1)).await;
}

#[tokio::test]
async fn a_peer_whose_connection_drops_leaves_its_rooms() {
    let server = Server::start(BIN, &[]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let alice = server.connect(Via::WebSocket, "alice").await;
        let bob = server.connect(via, "bob").await;
        let mut room = alice.join(&format!("drop-{via:?}")).await.unwrap();
        let _bob_room = bob.join(&format!("drop-{via:?}")).await.unwrap();
        next(&mut room).await;
        let bob_id = bob.peer_id();
        bob.close();
        drop(bob);
        match next(&mut room).await {
            ServerMessage::PeerLeft { peer_id } => assert_eq!(peer_id, bob_id),
            other => panic!("expected peer_left, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn joins_sent_at_once_on_several_new_channels_all_succeed() {
    let server = Server::start(BIN, &[]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let client = server.connect(via, "eager").await;
        let mut channels = Vec::new();
        for _ in 0..3 {
            channels.push(client.open_channel().await.unwrap());
        }
        // Sent in reverse order: on WebTransport the streams race each other.
        for (n, channel) in channels.iter().enumerate().rev() {
            channel
                .send(&ClientMessage::Join {
                    id: Some(n as u32),
                    room: format!("eager-{n}"),
                    resume_after: None,
                })
                .await
                .unwrap();
        }
        for (n, channel) in channels.iter_mut().enumerate() {
            match channel.recv_timeout(WAIT).await.unwrap() {
                ServerMessage::Joined { id, room, .. } => {
                    assert_eq!(id, Some(n as u32));
                    assert_eq!(room, format!("eager-{n}"));
                }
                other => panic!("{via:?}: expected joined, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_left_room_channel_is_finished() {
    let server = Server::start(BIN, &[]);
    let alice = server.connect(Via::WebTransport, "alice").await;
    let mut room = alice.join("brief").await.unwrap();
    room.send(&ClientMessage::Leave { id: Some(1) }).await.unwrap();
    assert!(matches!(
        room.recv_timeout(WAIT).await.unwrap(),
        ServerMessage::Left { .. }
    ));
    // The server finished the stream: nothing more comes on it, and a join sent
    // on it is ignored rather than half-accepted.
    let _ = room
        .send(&ClientMessage::Join {
            id: Some(2),
            room: "brief".into(),
            resume_after: None,
        })
        .await;
    assert!(room.recv_timeout(WAIT).await.is_err());
    let bob = server.connect(Via::WebSocket, "bob").await;
    let bob_room = bob.join("brief").await.unwrap();
    assert!(
        bob_room.members().is_empty(),
        "alice is not in the room: {:?}",
        bob_room.members()
    );
}
