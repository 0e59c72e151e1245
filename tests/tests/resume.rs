//! Sessions that survive the network: a peer loses its connection in the
//! middle of a call, comes back over the other transport as the same peer,
//! and gets every signal it missed, in order, once; the other side of the call
//! never sees it leave. Connections are lost for real: through a loopback
//! proxy that the test cuts (UDP for WebTransport, TCP for WSS).

use std::time::Duration;

use e2e::proxy::Proxy;
use e2e::redis::Redis;
use e2e::{Server, Via};
use proto::client::resume::{ResumeOptions, ResumingClient, ResumingRoom, SessionEvent};
use proto::client::{Client, ConnectOptions, Resumption, Room, TransportKind, Trust};
use proto::{Encoding, ErrorCode, PeerId, ServerMessage, Signal, Token};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const WAIT: Duration = Duration::from_secs(10);

fn candidate(n: u16) -> Signal {
    Signal::Candidate {
        candidate: format!("candidate:{n} 1 udp 2122260223 192.0.2.{} 5{n:04} typ host", n % 250),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    }
}

fn offer() -> Signal {
    Signal::Offer {
        sdp: format!("v=0\r\n{}", "a=x\r\n".repeat(600)),
    }
}

/// Options for `url` (a server or a proxy in front of it).
fn options(server: &Server, url: String, token: &str) -> ConnectOptions {
    ConnectOptions::new(url, Trust::CertificateHashes(server.hashes.clone()))
        .token(token)
        .encoding(Encoding::Bincode)
        .timeout(Duration::from_secs(5))
}

/// A resuming client that notices a dead connection within about a second.
fn resume_options(endpoints: Vec<ConnectOptions>) -> ResumeOptions {
    ResumeOptions {
        ping_interval: Duration::from_millis(200),
        pong_timeout: Duration::from_millis(800),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        give_up_after: Duration::from_secs(20),
        ..ResumeOptions::new(endpoints)
    }
}

async fn next_event(events: &mut mpsc::Receiver<SessionEvent>) -> SessionEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a session event in time")
        .expect("the session goes on")
}

/// Waits for the session to come back, and says how.
async fn comes_back(events: &mut mpsc::Receiver<SessionEvent>) -> SessionEvent {
    loop {
        match next_event(events).await {
            SessionEvent::Reconnecting { .. } => continue,
            other => return other,
        }
    }
}

async fn recv(room: &mut Room) -> ServerMessage {
    room.recv_timeout(WAIT).await.expect("an event from the room")
}

async fn recv_resuming(room: &mut ResumingRoom) -> ServerMessage {
    room.recv_timeout(WAIT).await.expect("an event from the room")
}

/// The next `n` signals of a room from `from`, failing on anything else (a
/// peer leaving or joining is exactly what must not happen).
async fn signals_from(room: &mut Room, from: PeerId, n: usize) -> Vec<Signal> {
    let mut got = Vec::new();
    while got.len() < n {
        match recv(room).await {
            ServerMessage::Signal { from: f, signal } if f == from => got.push(signal),
            ServerMessage::Ack { .. } => {}
            other => panic!("expected a signal from {from}, got {other:?}"),
        }
    }
    got
}

async fn resuming_signals_from(room: &mut ResumingRoom, from: PeerId, n: usize) -> Vec<Signal> {
    let mut got = Vec::new();
    while got.len() < n {
        match recv_resuming(room).await {
            ServerMessage::Signal { from: f, signal } if f == from => got.push(signal),
            other => panic!("expected a signal from {from}, got {other:?}"),
        }
    }
    got
}

/// Nothing more arrives for a while (no duplicate, no churn).
async fn quiet(room: &mut Room) {
    if let Ok(msg) = room.recv_timeout(Duration::from_millis(500)).await {
        panic!("expected nothing more, got {msg:?}");
    }
}

/// Alice's connection is lost in the middle of a call (through `cut`); Bob
/// trickles candidates meanwhile and Alice sends hers; Alice comes back over
/// `back_over` as the same peer; each gets everything once, in order, and Bob
/// never sees Alice leave.
async fn a_call_survives_a_lost_connection(alice_via: Via, back_over: Via) {
    let server = Server::start(BIN, &[]);
    let proxy = match alice_via {
        Via::WebTransport => Proxy::udp(server.webtransport).await,
        Via::WebSocket => Proxy::tcp(server.https).await,
    };
    let through_proxy = match alice_via {
        Via::WebTransport => format!("https://{}/", proxy.addr),
        Via::WebSocket => format!("wss://{}/ws", proxy.addr),
    };
    let token = server.token("alice");
    let endpoints = vec![
        options(&server, through_proxy, &token),
        options(&server, server.url(back_over), &token),
    ];
    let (alice, mut alice_events) = ResumingClient::connect(resume_options(endpoints)).await.unwrap();
    let alice_id = alice.peer_id();
    let mut alice_room = alice.join("call").await.unwrap();
    let bob = server.connect(Via::WebSocket, "bob").await;
    let mut bob_room = bob.join("call").await.unwrap();
    assert_eq!(bob_room.members()[0].peer_id, alice_id);
    assert!(
        matches!(recv_resuming(&mut alice_room).await, ServerMessage::PeerJoined { peer } if peer.peer_id == bob.peer_id())
    );

    // The call starts: Bob offers, Alice answers.
    bob_room.signal(alice_id, offer()).await.unwrap();
    assert_eq!(
        resuming_signals_from(&mut alice_room, bob.peer_id(), 1).await,
        [offer()]
    );
    let answer = Signal::Answer {
        sdp: "v=0 answer".into(),
    };
    alice_room.signal(bob.peer_id(), answer.clone()).await.unwrap();
    assert_eq!(signals_from(&mut bob_room, alice_id, 1).await, [answer]);

    // Alice's network goes away mid-trickle.
    proxy.cut();
    let bob_candidates: Vec<Signal> = (1..=20).map(candidate).collect();
    for c in &bob_candidates {
        bob_room.signal(alice_id, c.clone()).await.unwrap();
    }
    let alice_candidates: Vec<Signal> = (100..105).map(candidate).collect();
    for c in &alice_candidates {
        alice_room.signal(bob.peer_id(), c.clone()).await.unwrap();
    }

    // Alice is back over the other transport, as the same peer.
    let back = comes_back(&mut alice_events).await;
    let want = match back_over {
        Via::WebTransport => TransportKind::WebTransport,
        Via::WebSocket => TransportKind::WebSocket,
    };
    assert_eq!(back, SessionEvent::Resumed { transport: want });
    assert_eq!(alice.peer_id(), alice_id);
    assert_eq!(alice.transport(), want);

    // Everything sent across the gap arrives once, in order, both ways.
    assert_eq!(
        resuming_signals_from(&mut alice_room, bob.peer_id(), 20).await,
        bob_candidates
    );
    assert_eq!(signals_from(&mut bob_room, alice_id, 5).await, alice_candidates);
    // And the call goes on.
    bob_room.signal(alice_id, candidate(21)).await.unwrap();
    assert_eq!(
        resuming_signals_from(&mut alice_room, bob.peer_id(), 1).await,
        [candidate(21)]
    );
    assert!(
        alice_room.recv_timeout(Duration::from_millis(500)).await.is_err(),
        "nothing twice"
    );
    // Bob never saw Alice leave or join again.
    quiet(&mut bob_room).await;
}

#[tokio::test]
async fn a_webtransport_session_lost_mid_call_resumes_over_wss() {
    a_call_survives_a_lost_connection(Via::WebTransport, Via::WebSocket).await;
}

#[tokio::test]
async fn a_wss_session_lost_mid_call_resumes_over_webtransport() {
    a_call_survives_a_lost_connection(Via::WebSocket, Via::WebTransport).await;
}

/// Connects `user` through a TCP proxy, so the test can lose the connection.
async fn through_proxy(server: &Server, user: &str) -> (Client, Proxy) {
    let proxy = Proxy::tcp(server.https).await;
    let url = format!("wss://{}/ws", proxy.addr);
    let client = Client::connect(options(server, url, &server.token(user)))
        .await
        .unwrap();
    (client, proxy)
}

/// Opens a connection and tries to resume `token` as `user`.
async fn resume_as(server: &Server, user: &str, token: &Token) -> Resumption {
    let pending = Client::open(server.options(Via::WebTransport, &server.token(user)))
        .await
        .unwrap();
    pending.resume(token.clone()).await.unwrap()
}

fn refusal(resumption: Resumption) -> ErrorCode {
    match resumption {
        Resumption::Resumed(_) => panic!("the resume was expected to be refused"),
        Resumption::Refused { code, .. } => code,
    }
}

#[tokio::test]
async fn a_resume_token_works_once_for_its_own_user_and_a_refusal_leaves_the_session_alone() {
    let server = Server::start(BIN, &[]);
    let (alice, proxy) = through_proxy(&server, "alice").await;
    let alice_id = alice.peer_id();
    let first = alice
        .welcome()
        .resume_token
        .clone()
        .expect("welcome carries a resume token");

    // Mallory has a valid token of her own and Alice's resume token: refused,
    // and Alice's session does not notice.
    assert_eq!(
        refusal(resume_as(&server, "mallory", &first).await),
        ErrorCode::WrongUser
    );
    let forged = Token(format!("{}x", first.0));
    assert_eq!(
        refusal(resume_as(&server, "alice", &forged).await),
        ErrorCode::ResumeInvalid
    );
    let mut alice = alice;
    alice.ping().await.expect("Alice's session is undisturbed");

    // Alice's connection is lost; she resumes with her token.
    proxy.cut();
    let resumed = match resume_as(&server, "alice", &first).await {
        Resumption::Resumed(client) => client,
        Resumption::Refused { code, message, .. } => panic!("refused: {code} {message}"),
    };
    assert!(resumed.welcome().resumed);
    assert_eq!(resumed.peer_id(), alice_id);
    assert_ne!(
        resumed.welcome().resume_token.as_ref(),
        Some(&first),
        "a new token each time"
    );

    // The same token again: used.
    assert_eq!(
        refusal(resume_as(&server, "alice", &first).await),
        ErrorCode::ResumeUsed
    );

    // A refused resume leaves the connection open for a plain hello.
    let pending = Client::open(server.options(Via::WebSocket, &server.token("alice")))
        .await
        .unwrap();
    let Resumption::Refused { pending, .. } = pending.resume(first).await.unwrap() else {
        panic!("refused")
    };
    let fresh = pending.hello().await.expect("a new session");
    assert_ne!(fresh.peer_id(), alice_id);
    assert!(!fresh.welcome().resumed);
}

#[tokio::test]
async fn when_the_grace_period_ends_the_peers_see_the_session_leave() {
    let server = Server::start(BIN, &[("resume-grace-secs", "2")]);
    let (alice, proxy) = through_proxy(&server, "alice").await;
    let token = alice.welcome().resume_token.clone().unwrap();
    let _alice_room = alice.join("r").await.unwrap();
    let bob = server.connect(Via::WebTransport, "bob").await;
    let mut bob_room = bob.join("r").await.unwrap();

    proxy.cut();
    let lost = std::time::Instant::now();
    // During the grace period Bob sees nothing; then Alice leaves.
    match bob_room.recv_timeout(Duration::from_secs(10)).await.unwrap() {
        ServerMessage::PeerLeft { peer_id } => assert_eq!(peer_id, alice.peer_id()),
        other => panic!("expected peer_left, got {other:?}"),
    }
    let after = lost.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "peer_left came {after:?} after the loss, before the grace period"
    );
    assert_eq!(
        refusal(resume_as(&server, "alice", &token).await),
        ErrorCode::ResumeExpired
    );
}

#[tokio::test]
async fn a_held_session_whose_missed_messages_overflow_ends_at_once() {
    let server = Server::start(BIN, &[("resume-buffer-bytes", "20000")]);
    let (alice, proxy) = through_proxy(&server, "alice").await;
    let token = alice.welcome().resume_token.clone().unwrap();
    let _alice_room = alice.join("r").await.unwrap();
    let bob = server.connect(Via::WebTransport, "bob").await;
    let mut bob_room = bob.join("r").await.unwrap();

    proxy.cut();
    // Wait until the server noticed (WSS: at once) and holds the session.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        // ~3 KB each: the tenth is over the bound.
        bob_room.signal(alice.peer_id(), offer()).await.unwrap();
    }
    loop {
        match recv(&mut bob_room).await {
            ServerMessage::PeerLeft { peer_id } => break assert_eq!(peer_id, alice.peer_id()),
            ServerMessage::Ack { .. } | ServerMessage::Error { .. } => continue,
            other => panic!("expected peer_left, got {other:?}"),
        }
    }
    let pending = Client::open(server.options(Via::WebSocket, &server.token("alice")))
        .await
        .unwrap();
    match pending.resume(token).await.unwrap() {
        Resumption::Refused { code, message, .. } => {
            assert_eq!(code, ErrorCode::ResumeExpired);
            assert!(message.contains("more events waited"), "{message}");
        }
        Resumption::Resumed(_) => panic!("an overflowed session cannot be resumed"),
    }
}

#[tokio::test]
async fn a_resumed_session_counts_once_against_the_connection_cap() {
    let server = Server::start(BIN, &[("max-connections-per-ip", "2")]);
    let (alice, proxy) = through_proxy(&server, "alice").await;
    let token = alice.welcome().resume_token.clone().unwrap();
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Held (one) + the new connection (two): within the cap.
    let Resumption::Resumed(_alice) = resume_as(&server, "alice", &token).await else {
        panic!("resumed")
    };
    // The resumed session is one connection: one more fits, then the cap.
    let _bob = server.connect(Via::WebSocket, "bob").await;
    let refused = server
        .connect_err(server.options(Via::WebSocket, &server.token("carol")))
        .await;
    assert_eq!(refused.code(), Some(ErrorCode::TooManyConnections));
}

#[tokio::test]
async fn in_a_cluster_a_resume_on_another_node_falls_back_to_a_clean_rejoin() {
    let redis = Redis::start();
    let flags = [("redis", redis.url()), ("cluster-refresh-ms", "500".to_owned())];
    let flags: Vec<(&str, &str)> = flags.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Server::start(BIN, &flags);
    let b = Server::start_node_like(BIN, &a, &flags);
    let (alice, proxy) = through_proxy(&a, "alice").await;
    let old_id = alice.peer_id();
    let token = alice.welcome().resume_token.clone().unwrap();
    let _alice_room = alice.join("r").await.unwrap();
    let bob = a.connect(Via::WebSocket, "bob").await;
    let mut bob_room = bob.join("r").await.unwrap();

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Alice comes back on node B: refused there, node A lets the session go.
    let pending = Client::open(b.options(Via::WebTransport, &b.token("alice")))
        .await
        .unwrap();
    let Resumption::Refused { pending, code, .. } = pending.resume(token).await.unwrap() else {
        panic!("a resume on another node is refused")
    };
    assert_eq!(code, ErrorCode::ResumeElsewhere);
    match recv(&mut bob_room).await {
        ServerMessage::PeerLeft { peer_id } => assert_eq!(peer_id, old_id),
        other => panic!("expected peer_left, got {other:?}"),
    }
    // A new session joins again: Bob sees it join, with a new peer id.
    let alice = pending.hello().await.unwrap();
    let _alice_room = alice.join("r").await.unwrap();
    match recv(&mut bob_room).await {
        ServerMessage::PeerJoined { peer } => {
            assert_eq!(peer.user_id, "alice");
            assert_ne!(peer.peer_id, old_id);
        }
        other => panic!("expected peer_joined, got {other:?}"),
    }
}

/// A session held for a resume does not keep a shutdown waiting: its client is
/// not there to say goodbye to, so the hold ends at once and the server exits
/// without using its grace period.
#[tokio::test]
async fn a_held_session_does_not_hold_up_a_shutdown() {
    let mut server = Server::start(BIN, &[("resume-grace-secs", "60"), ("shutdown-grace-ms", "8000")]);
    let (alice, proxy) = through_proxy(&server, "alice").await;
    let _alice_room = alice.join("r").await.unwrap();
    proxy.cut();
    // The server notices the loss and holds the session.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !server.log().contains("session held for a resume") {
        assert!(std::time::Instant::now() < deadline, "the session was never held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    assert_eq!(server.terminate(), Some(0));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "the shutdown took {took:?} (grace 8 s)");
    assert!(
        server.log().contains(r#""reason":"the server is shutting down""#),
        "{}",
        server.log()
    );
}
