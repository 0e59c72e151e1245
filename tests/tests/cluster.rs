//! Cluster mode's foundation: a node with `--redis` watches its Redis, reports
//! `degraded` while Redis is down (and keeps serving its own sessions), and
//! recovers by itself when Redis returns.

use std::time::{Duration, Instant};

use e2e::redis::Redis;
use e2e::{Server, Via};
use proto::{ClientMessage, ErrorCode, ServerMessage, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");

/// Polls `/ready` until its status is `want` (Redis health is probed every second).
async fn ready_becomes(server: &Server, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = server.get("/ready").await;
        assert_eq!(ready.status, 200, "a node without Redis still serves: {}", ready.body);
        let body = ready.json();
        if body["status"] == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/ready never said {want}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_reports_degraded_while_redis_is_down_serves_on_and_recovers() {
    let redis = Redis::start();
    let server = Server::start(BIN, &[("redis", &redis.url())]);
    ready_becomes(&server, "ready").await;

    redis.kill();
    let degraded = ready_becomes(&server, "degraded").await;
    assert_eq!(degraded["redis"], "down");
    // Local sessions and rooms go on.
    let alice = server.connect(Via::WebTransport, "alice").await;
    let bob = server.connect(Via::WebSocket, "bob").await;
    let mut alice_room = alice.join("local").await.unwrap();
    let bob_room = bob.join("local").await.unwrap();
    bob_room.broadcast("still here").await.unwrap();
    loop {
        match alice_room.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            proto::ServerMessage::Broadcast { data, .. } => break assert_eq!(data, "still here"),
            _ => continue,
        }
    }

    redis.restart();
    ready_becomes(&server, "ready").await;
    assert!(server.log().contains("Redis is reachable"), "the recovery is logged");
}

#[tokio::test]
async fn a_node_starts_while_redis_is_down_and_joins_when_it_comes_up() {
    let redis = Redis::start();
    redis.kill();
    let server = Server::start(BIN, &[("redis", &redis.url())]);
    ready_becomes(&server, "degraded").await;
    server.connect(Via::WebSocket, "early").await;
    redis.restart();
    ready_becomes(&server, "ready").await;
}

#[tokio::test]
async fn the_redis_url_never_reaches_the_log_or_the_printed_configuration() {
    let redis = Redis::start_with(&["--requirepass", "hunter2-secret"]);
    let url = format!("redis://:hunter2-secret@{}/", redis.addr);
    let server = Server::start(BIN, &[("redis", &url)]);
    // The password in the URL gets the node in.
    ready_becomes(&server, "ready").await;
    assert!(!server.log().contains("hunter2-secret"));
    let printed = std::process::Command::new(BIN)
        .args(["--redis", &url, "config"])
        .output()
        .expect("server config");
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("redis = \"<redacted>\""), "{printed}");
    assert!(!printed.contains("hunter2-secret"));
}

// ---------------------------------------------------------------------------
// Rooms across nodes.
// ---------------------------------------------------------------------------

/// How often the test nodes renew their memberships: a dead node's peers leave
/// within four times this.
const REFRESH_MS: &str = "300";

/// Two nodes of one cluster on `redis`, with the same JWT secret.
fn two_nodes(redis: &Redis, extra: &[(&str, &str)]) -> (Server, Server) {
    let url = redis.url();
    let mut flags = vec![("redis", url.as_str()), ("cluster-refresh-ms", REFRESH_MS)];
    flags.extend_from_slice(extra);
    let a = Server::start(BIN, &flags);
    let b = Server::start_node_like(BIN, &a, &flags);
    (a, b)
}

async fn both_ready(nodes: &[&Server]) {
    for node in nodes {
        ready_becomes(node, "ready").await;
    }
}

/// The next message on a room's channel that is not a pong or an ack.
async fn next_event(room: &mut proto::client::Room) -> ServerMessage {
    loop {
        match room.recv_timeout(Duration::from_secs(10)).await.expect("an event") {
            ServerMessage::Pong { .. } | ServerMessage::Ack { .. } => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn peers_on_different_nodes_and_transports_exchange_offer_answer_and_candidates() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]);
    both_ready(&[&a, &b]).await;
    let alice = a.connect(Via::WebTransport, "alice").await;
    let bob = b.connect(Via::WebSocket, "bob").await;
    let mut alice_room = alice.join("call").await.unwrap();
    let mut bob_room = bob.join("call").await.unwrap();
    // Bob, on node b, sees alice of node a in the room; alice is told bob came.
    assert_eq!(bob_room.members().len(), 1);
    assert_eq!(bob_room.members()[0].peer_id, alice.peer_id());
    assert_eq!(bob_room.members()[0].user_id, "alice");
    assert!(
        matches!(next_event(&mut alice_room).await, ServerMessage::PeerJoined { peer } if peer.peer_id == bob.peer_id())
    );

    let offer = Signal::Offer {
        sdp: "v=0 offer".repeat(400),
    };
    alice_room.signal(bob.peer_id(), offer.clone()).await.unwrap();
    assert_eq!(
        next_event(&mut bob_room).await,
        ServerMessage::Signal {
            from: alice.peer_id(),
            signal: offer
        }
    );
    let answer = Signal::Answer {
        sdp: "v=0 answer".into(),
    };
    bob_room.signal(alice.peer_id(), answer.clone()).await.unwrap();
    assert_eq!(
        next_event(&mut alice_room).await,
        ServerMessage::Signal {
            from: bob.peer_id(),
            signal: answer
        }
    );
    // A burst of candidates arrives whole and in order.
    for i in 0..20u16 {
        let candidate = Signal::Candidate {
            candidate: format!("candidate:{i} 1 udp 2122260223 192.0.2.1 5{i:04} typ host"),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        alice_room.signal(bob.peer_id(), candidate).await.unwrap();
    }
    for i in 0..20u16 {
        match next_event(&mut bob_room).await {
            ServerMessage::Signal {
                signal: Signal::Candidate { candidate, .. },
                ..
            } => {
                assert!(candidate.starts_with(&format!("candidate:{i} ")), "{candidate}")
            }
            other => panic!("expected candidate {i}, got {other:?}"),
        }
    }
    // Round trips across the nodes (a signal there, an answer back): printed
    // for the record (`cargo test -p e2e --test cluster peers_on -- --nocapture`).
    let mut trips = Vec::new();
    for i in 0..100 {
        let started = Instant::now();
        let ping = Signal::Custom {
            data: format!("ping {i}"),
        };
        alice_room.signal(bob.peer_id(), ping.clone()).await.unwrap();
        assert_eq!(
            next_event(&mut bob_room).await,
            ServerMessage::Signal {
                from: alice.peer_id(),
                signal: ping
            }
        );
        let pong = Signal::Custom {
            data: format!("pong {i}"),
        };
        bob_room.signal(alice.peer_id(), pong.clone()).await.unwrap();
        assert_eq!(
            next_event(&mut alice_room).await,
            ServerMessage::Signal {
                from: bob.peer_id(),
                signal: pong
            }
        );
        trips.push(started.elapsed());
    }
    trips.sort();
    eprintln!(
        "cross-node round trip (WebTransport on node a <-> WSS on node b, via Redis): p50 {:?}, p90 {:?}, max {:?}",
        trips[50], trips[90], trips[99]
    );
    // A signal with a request id is acknowledged once Redis has taken it.
    bob_room
        .send(&ClientMessage::Broadcast {
            id: Some(77),
            seq: None,
            data: "hi all".into(),
        })
        .await
        .unwrap();
    loop {
        match bob_room.recv_timeout(Duration::from_secs(10)).await.unwrap() {
            ServerMessage::Ack { id: 77 } => break,
            ServerMessage::Pong { .. } => continue,
            other => panic!("expected the ack, got {other:?}"),
        }
    }
    assert_eq!(
        next_event(&mut alice_room).await,
        ServerMessage::Broadcast {
            from: bob.peer_id(),
            data: "hi all".into()
        }
    );
    // Leaving is seen on the other node.
    let bob_id = bob.peer_id();
    bob_room.leave().await.unwrap();
    assert_eq!(
        next_event(&mut alice_room).await,
        ServerMessage::PeerLeft { peer_id: bob_id }
    );
}

#[tokio::test]
async fn the_member_cap_is_exact_across_nodes() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[("max-room-members", "3")]);
    both_ready(&[&a, &b]).await;
    let mut clients = Vec::new();
    for i in 0..8 {
        let node = if i % 2 == 0 { &a } else { &b };
        let via = if i % 3 == 0 { Via::WebTransport } else { Via::WebSocket };
        clients.push(node.connect(via, &format!("racer{i}")).await);
    }
    // All at once: two nodes race for the last seats.
    let joins = clients.iter().map(|c| c.join("tiny"));
    let results = futures_util::future::join_all(joins).await;
    let seated = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.code() == Some(ErrorCode::RoomFull)))
        .count();
    assert_eq!((seated, full), (3, 5), "{results:?}");
}

#[tokio::test]
async fn the_peers_of_a_killed_node_leave_their_rooms_everywhere_within_the_bound() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]);
    both_ready(&[&a, &b]).await;
    let alice = a.connect(Via::WebSocket, "alice").await;
    let carol = a.connect(Via::WebTransport, "carol").await;
    let bob = b.connect(Via::WebTransport, "bob").await;
    let mut alice_room = alice.join("survivors").await.unwrap();
    let mut carol_room = carol.join("survivors").await.unwrap();
    let _bob_room = bob.join("survivors").await.unwrap();
    let bob_id = bob.peer_id();
    assert!(matches!(
        next_event(&mut alice_room).await,
        ServerMessage::PeerJoined { .. }
    ));
    assert!(matches!(
        next_event(&mut alice_room).await,
        ServerMessage::PeerJoined { .. }
    ));
    assert!(matches!(
        next_event(&mut carol_room).await,
        ServerMessage::PeerJoined { .. }
    ));

    b.kill();
    let killed = Instant::now();
    assert_eq!(
        next_event(&mut alice_room).await,
        ServerMessage::PeerLeft { peer_id: bob_id }
    );
    let took = killed.elapsed();
    let bound = Duration::from_millis(4 * REFRESH_MS.parse::<u64>().unwrap()) + Duration::from_millis(500);
    assert!(took <= bound, "bob left after {took:?}, beyond {bound:?}");
    assert_eq!(
        next_event(&mut carol_room).await,
        ServerMessage::PeerLeft { peer_id: bob_id }
    );
    // Nothing else was disturbed: alice and carol still talk.
    alice_room.broadcast("still here").await.unwrap();
    assert_eq!(
        next_event(&mut carol_room).await,
        ServerMessage::Broadcast {
            from: alice.peer_id(),
            data: "still here".into()
        }
    );
}

#[tokio::test]
async fn cross_node_rooms_recover_when_redis_returns() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]);
    both_ready(&[&a, &b]).await;
    let alice = a.connect(Via::WebTransport, "alice").await;
    let bob = b.connect(Via::WebSocket, "bob").await;
    let mut alice_room = alice.join("phoenix").await.unwrap();
    let mut bob_room = bob.join("phoenix").await.unwrap();
    assert!(matches!(
        next_event(&mut alice_room).await,
        ServerMessage::PeerJoined { .. }
    ));

    redis.kill();
    ready_becomes(&a, "degraded").await;
    // A signal to the other node is refused, not acknowledged and lost.
    bob_room
        .send(&ClientMessage::Signal {
            id: Some(5),
            seq: None,
            to: alice.peer_id(),
            signal: Signal::Custom { data: "lost?".into() },
        })
        .await
        .unwrap();
    match next_event(&mut bob_room).await {
        ServerMessage::Error { id: Some(5), code, .. } => assert_eq!(code, ErrorCode::ClusterUnavailable),
        other => panic!("expected cluster_unavailable, got {other:?}"),
    }

    redis.restart();
    both_ready(&[&a, &b]).await;
    // Once the nodes have re-registered, signals flow again: retry until one is
    // acknowledged, and an acknowledged one arrives.
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in 100.. {
        let data = format!("back {id}");
        bob_room
            .send(&ClientMessage::Signal {
                id: Some(id),
                seq: None,
                to: alice.peer_id(),
                signal: Signal::Custom { data: data.clone() },
            })
            .await
            .unwrap();
        match answer(&mut bob_room, id).await {
            Ok(()) => {
                assert_eq!(
                    next_event(&mut alice_room).await,
                    ServerMessage::Signal {
                        from: bob.peer_id(),
                        signal: Signal::Custom { data }
                    }
                );
                return;
            }
            Err(ErrorCode::ClusterUnavailable) => {
                assert!(Instant::now() < deadline, "the relay never came back");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(code) => panic!("unexpected {code}"),
        }
    }
}

/// The server's answer to request `id`: its ack, or its error code.
async fn answer(room: &mut proto::client::Room, id: u32) -> Result<(), ErrorCode> {
    loop {
        match room.recv_timeout(Duration::from_secs(10)).await.expect("an answer") {
            ServerMessage::Ack { id: acked } if acked == id => return Ok(()),
            ServerMessage::Error {
                id: Some(failed), code, ..
            } if failed == id => return Err(code),
            _ => continue,
        }
    }
}

// ---------------------------------------------------------------------------
// Per-address limits across nodes.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_per_ip_cap_holds_across_nodes() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[("max-connections-per-ip", "2")]);
    both_ready(&[&a, &b]).await;
    let first = a.connect(Via::WebSocket, "one").await;
    let _second = b.connect(Via::WebTransport, "two").await;
    // A third connection is refused by either node: the allowance is the cluster's.
    let err = b.connect_err(b.options(Via::WebSocket, &b.token("three"))).await;
    assert_eq!(err.code(), Some(ErrorCode::TooManyConnections));
    let err = a.connect_err(a.options(Via::WebSocket, &a.token("three"))).await;
    assert_eq!(err.code(), Some(ErrorCode::TooManyConnections));
    // Closing one frees a place on any node.
    first.close();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match proto::client::Client::connect(b.options(Via::WebSocket, &b.token("three"))).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::TooManyConnections), "{e:?}");
                assert!(Instant::now() < deadline, "the closed connection was never released");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn an_address_blocked_on_one_node_is_blocked_on_the_others() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[("auth-failures-before-block", "3"), ("block-secs", "60")]);
    both_ready(&[&a, &b]).await;
    // Failures on both nodes add up.
    for node in [&a, &b, &a] {
        let err = node.connect_err(node.options(Via::WebSocket, "forged")).await;
        assert_eq!(err.code(), Some(ErrorCode::AuthFailed));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A real upgrade: a cluster-wide block is found in admission, which a
        // request that is not an upgrade never reaches.
        let Err(refused) = e2e::raw::RawWss::connect(&b, std::net::IpAddr::from([127, 0, 0, 1]), "", &[]).await else {
            assert!(Instant::now() < deadline, "node b never saw the block");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if refused.status == 429 {
            assert_eq!(refused.json()["code"], "ip_blocked");
            let retry: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
            assert!((50..=60).contains(&retry), "{retry}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node b never saw the block: {}",
            refused.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_processes_on_the_same_ports_share_the_connections_and_the_rooms() {
    let redis = Redis::start();
    let url = redis.url();
    let a = Server::start(BIN, &[("redis", &url), ("reuse-port", "true")]);
    let (https, wt) = (a.https.port().to_string(), a.webtransport.port().to_string());
    let cert_dir = a.cert_dir().to_string_lossy().into_owned();
    let b = Server::start_node_like(
        BIN,
        &a,
        &[
            ("redis", &url),
            ("reuse-port", "true"),
            ("https-port", &https),
            ("webtransport-port", &wt),
            ("cert-dir", &cert_dir),
        ],
    );
    assert_eq!(
        (b.https, b.webtransport),
        (a.https, a.webtransport),
        "one address for both"
    );
    both_ready(&[&a, &b]).await;
    // Every client dials the one address; the kernel picks the process.
    let mut clients = Vec::new();
    for i in 0..16 {
        let via = if i % 2 == 0 { Via::WebTransport } else { Via::WebSocket };
        clients.push(a.connect(via, &format!("guest{i}")).await);
    }
    let opened = |node: &Server| node.log().matches("\"session opened\"").count();
    assert!(
        opened(&a) > 0 && opened(&b) > 0,
        "both processes took sessions: {} and {}",
        opened(&a),
        opened(&b)
    );
    assert_eq!(opened(&a) + opened(&b), 16);
    // One room across both processes: the last to join sees the fifteen others,
    // and a signal from the first reaches it.
    let mut rooms = Vec::new();
    for client in &clients {
        rooms.push(client.join("party").await.unwrap());
    }
    let last = rooms.last().unwrap();
    assert_eq!(last.members().len(), 15);
    let first = clients.first().unwrap();
    let last_peer = clients.last().unwrap().peer_id();
    let offer = Signal::Offer {
        sdp: "v=0 shared".into(),
    };
    // The first signals the last once it has heard of it: a peer on the other
    // process becomes known to this one through Redis, a moment after it joined.
    loop {
        match next_event(&mut rooms[0]).await {
            ServerMessage::PeerJoined { peer } if peer.peer_id == last_peer => break,
            ServerMessage::PeerJoined { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    rooms[0].signal(last_peer, offer.clone()).await.unwrap();
    let mut last = rooms.pop().unwrap();
    loop {
        match next_event(&mut last).await {
            ServerMessage::Signal { from, signal } => {
                assert_eq!((from, signal), (first.peer_id(), offer));
                break;
            }
            ServerMessage::PeerJoined { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    // A join with nobody on another node has nothing to publish: no empty
    // pipeline reaches Redis (which refuses it).
    for node in [&a, &b] {
        assert!(!node.log().contains("relay to other nodes failed"), "{}", node.log());
    }
}
