//! The HTTPS side and the server's life cycle: health, readiness, the
//! certificate hashes browsers pin, Alt-Svc, and a graceful shutdown.

use std::time::Duration;

use e2e::{Server, Via};
use proto::{ErrorCode, ServerMessage};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");

#[tokio::test]
async fn health_and_ready_answer_and_advertise_http3() {
    let server = Server::start(BIN, &[]);
    let health = server.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok");
    let alt_svc = health.header("alt-svc").expect("Alt-Svc on every response");
    assert_eq!(alt_svc, format!("h3=\":{}\"; ma=86400", server.webtransport.port()));
    let ready = server.get("/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
}

#[tokio::test]
async fn cert_hashes_publish_the_served_certificate_for_server_certificate_hashes() {
    let server = Server::start(BIN, &[]);
    let response = server.get("/cert-hashes").await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["self_signed"], true);
    assert_eq!(body["webtransport_port"], server.webtransport.port());
    let first = &body["hashes"][0];
    assert_eq!(first["algorithm"], "sha-256");
    let hex: String = server.hashes[0].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first["value"], hex.as_str());
    // A client pinning exactly that hash gets in: the hash is the served certificate's.
    server.connect(Via::WebTransport, "pinned").await;
}

#[tokio::test]
async fn the_demo_page_is_served_at_the_root() {
    let server = Server::start(BIN, &[]);
    let page = server.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap_or_default().starts_with("text/html"));
    assert!(page.body.contains("<html"));
}

#[tokio::test]
async fn a_refused_upgrade_carries_its_code_in_a_json_body() {
    let server = Server::start(BIN, &[]);
    let response = server
        .request(
            "GET /ws?token=garbage HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await;
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["code"], "auth_failed");
}

#[tokio::test]
async fn the_development_certificate_survives_a_restart() {
    // The certificate directory is per server in the harness, so restart by hand.
    let dir = std::env::temp_dir().join(format!("signal-certs-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_flag = dir.to_str().unwrap().to_owned();
    let first = Server::start(BIN, &[("cert-dir", &dir_flag)]);
    let hashes = first.hashes.clone();
    drop(first);
    let second = Server::start(BIN, &[("cert-dir", &dir_flag)]);
    assert_eq!(
        second.hashes, hashes,
        "pages that fetched the hash keep working after a restart"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_tells_every_session_shutting_down_and_exits_cleanly() {
    let mut server = Server::start(BIN, &[]);
    let mut wt = server.connect(Via::WebTransport, "alice").await;
    let mut ws = server.connect(Via::WebSocket, "bob").await;
    let _room = wt.join("last-call").await.unwrap();
    let code = tokio::task::spawn_blocking(move || {
        let code = server.terminate();
        (server, code)
    });
    for client in [&mut wt, &mut ws] {
        let goodbye = loop {
            match client.control().recv_timeout(Duration::from_secs(10)).await {
                Ok(ServerMessage::Goodbye { code, .. }) => break code,
                Ok(_) => continue,
                Err(e) => panic!("{:?}: no goodbye: {e}", client.transport()),
            }
        };
        assert_eq!(goodbye, ErrorCode::ShuttingDown);
    }
    let (_server, code) = code.await.unwrap();
    assert_eq!(code, Some(0), "the server exits cleanly once its sessions are gone");
}

#[tokio::test]
async fn metrics_count_sessions_relays_and_errors_in_prometheus_format() {
    let server = Server::start(BIN, &[]);
    let alice = server.connect(Via::WebTransport, "alice").await;
    let bob = server.connect(Via::WebSocket, "bob").await;
    let alice_room = alice.join("metered").await.unwrap();
    let mut bob_room = bob.join("metered").await.unwrap();
    alice_room
        .signal(bob.peer_id(), proto::Signal::Offer { sdp: "v=0".into() })
        .await
        .unwrap();
    loop {
        if let ServerMessage::Signal { .. } = bob_room.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            break;
        }
    }
    let _ = server.connect_err(server.options(Via::WebSocket, "forged")).await;
    let want = [
        "signal_sessions{transport=\"webtransport\"} 1",
        "signal_sessions{transport=\"websocket\"} 1",
        "signal_rooms 1",
        "signal_room_members 2",
        "signal_auth_failures_total 1",
        "signal_errors_total{code=\"auth_failed\"} 1",
    ];
    // The refused session is counted when it has ended, a moment after the client saw the error.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = server.get("/metrics").await;
        let complete = want.iter().all(|line| metrics.body.lines().any(|l| l == *line));
        if complete || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let body = &metrics.body;
    for line in want {
        assert!(body.lines().any(|l| l == line), "no `{line}` in:\n{body}");
    }
    assert!(body.contains("signal_messages_relayed_total"), "{body}");
    assert!(
        body.contains("signal_relay_queue_seconds_bucket{le=\"0.001\"}"),
        "{body}"
    );
    assert!(body.contains("# TYPE signal_relay_queue_seconds histogram"), "{body}");
}
