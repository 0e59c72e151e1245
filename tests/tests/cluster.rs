//! Cluster mode's foundation: a node with `--redis` watches its Redis, reports
//! `degraded` while Redis is down (and keeps serving its own sessions), and
//! recovers by itself when Redis returns.

use std::time::{Duration, Instant};

use e2e::redis::Redis;
use e2e::{Server, Via};

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
    let redis = Redis::start();
    let url = format!("redis://:hunter2-secret@{}/", redis.addr);
    let server = Server::start(BIN, &[("redis", &url)]);
    ready_becomes(&server, "degraded").await;
    assert!(!server.log().contains("hunter2-secret"));
    let printed = std::process::Command::new(BIN)
        .args(["--redis", &url, "config"])
        .output()
        .expect("server config");
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("redis = \"<redacted>\""), "{printed}");
    assert!(!printed.contains("hunter2-secret"));
}
