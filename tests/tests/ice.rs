//! ICE servers and TURN credentials: the server hands every session the STUN
//! and TURN servers to use, minting TURN credentials that a real coturn
//! (`use-auth-secret`) accepts, and that it refuses once expired or tampered.

use std::time::Duration;

use e2e::coturn::Coturn;
use e2e::{Server, Via};
use proto::{ClientMessage, ErrorCode, IceServer, ServerMessage};
use server::ice::credential;
use server::session::auth::now_secs;

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const WAIT: Duration = Duration::from_secs(5);
const TURN_SECRET: &str = "north-rtc-turn-secret";
const STUN: &str = "stun:stun.example.com:3478";
const STATIC_TURN: &str =
    r#"[{"urls":["turns:static.example.com:5349?transport=tcp"],"username":"ops","credential":"static-pass"}]"#;

/// A server whose sessions get a STUN server, a static TURN entry, and
/// credentials for `coturn` (its secret read from a file).
fn server_with_turn(coturn: &Coturn, ttl_secs: u64) -> Server {
    let secret_file = std::env::temp_dir().join(format!("turn-secret-{}-{}", std::process::id(), coturn.addr.port()));
    std::fs::write(&secret_file, format!("{}\n", coturn.secret)).expect("secret file");
    let urls = coturn.urls().join(",");
    let ttl = ttl_secs.to_string();
    Server::start(
        BIN,
        &[
            ("stun-urls", STUN),
            ("turn-urls", &urls),
            ("turn-secret-file", secret_file.to_str().expect("a UTF-8 temp path")),
            ("turn-credential-ttl-secs", &ttl),
            ("ice-servers", STATIC_TURN),
        ],
    )
}

/// The minted entry of a list: the one with `turn:` URLs of `coturn`.
fn minted<'a>(servers: &'a [IceServer], coturn: &Coturn) -> &'a IceServer {
    servers
        .iter()
        .find(|s| s.urls == coturn.urls())
        .unwrap_or_else(|| panic!("no entry for {:?} in {servers:?}", coturn.urls()))
}

fn username_and_password(server: &IceServer) -> (&str, &str) {
    (
        server.username.as_deref().expect("a minted username"),
        server.credential.as_deref().expect("a minted credential"),
    )
}

#[tokio::test]
async fn welcome_hands_out_turn_credentials_that_coturn_accepts() {
    let coturn = Coturn::start(TURN_SECRET);
    let server = server_with_turn(&coturn, 600);
    let before = now_secs();
    let alice = server.connect(Via::WebTransport, "alice").await;
    let welcome = alice.welcome();

    // STUN first, then the static entry as configured, then the minted one.
    let servers = &welcome.ice_servers;
    assert_eq!(servers.len(), 3, "{servers:?}");
    assert_eq!(servers[0].urls, [STUN]);
    assert_eq!(
        (servers[0].username.as_ref(), servers[0].credential.as_ref()),
        (None, None)
    );
    assert_eq!(servers[1].username.as_deref(), Some("ops"));
    assert_eq!(servers[1].credential.as_deref(), Some("static-pass"));
    let (username, password) = username_and_password(minted(servers, &coturn));
    let expires_at = welcome.ice_servers_expire_at.expect("minted credentials expire");
    assert!((before + 600..=now_secs() + 600).contains(&expires_at), "{expires_at}");
    assert_eq!(username, format!("{expires_at}:alice"));

    // coturn's own client allocates relays with them, over UDP and over TCP.
    for tcp in [false, true] {
        let allocation = coturn.allocate(username, password, tcp);
        assert!(allocation.relayed, "tcp={tcp}: coturn refused:\n{}", allocation.output);
    }
    // The secret never reaches the log.
    assert!(!server.log().contains(TURN_SECRET));
}

#[tokio::test]
async fn expired_and_tampered_credentials_are_refused_by_coturn() {
    let coturn = Coturn::start(TURN_SECRET);
    let server = server_with_turn(&coturn, 600);
    let bob = server.connect(Via::WebSocket, "bob").await;
    let (username, password) = username_and_password(minted(&bob.welcome().ice_servers, &coturn));
    assert!(
        coturn.allocate(username, password, false).relayed,
        "the genuine credential works"
    );

    // The same scheme and secret, but expired a minute ago.
    let expired = credential::mint(TURN_SECRET.as_bytes(), "bob", now_secs() - 60);
    let refused = coturn.allocate(&expired.username, &expired.password, false);
    assert!(
        !refused.relayed,
        "coturn took an expired credential:\n{}",
        refused.output
    );
    // A password with one character changed.
    let mut tampered = password.to_owned().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("base64 is ASCII");
    let refused = coturn.allocate(username, &tampered, false);
    assert!(!refused.relayed, "coturn took a tampered password:\n{}", refused.output);
    // Bob's password with a later expiry, or under another user's name.
    let (expiry, _) = username.split_once(':').expect("expiry:user");
    let later = format!("{}:bob", expiry.parse::<u64>().expect("a number") + 3600);
    assert!(!coturn.allocate(&later, password, false).relayed);
    assert!(!coturn.allocate(&format!("{expiry}:mallory"), password, false).relayed);
}

#[tokio::test]
async fn a_session_asks_for_fresh_credentials_in_band_and_over_https() {
    let coturn = Coturn::start(TURN_SECRET);
    let server = server_with_turn(&coturn, 60);
    for via in [Via::WebTransport, Via::WebSocket] {
        let mut carol = server.connect(via, "carol").await;
        let first = carol.welcome().ice_servers_expire_at.expect("an expiry");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let fresh = tokio::time::timeout(WAIT, carol.ice_servers())
            .await
            .expect("an answer in time")
            .expect("fresh ICE servers");
        let expires_at = fresh.expires_at.expect("an expiry");
        assert!(expires_at > first, "{via:?}: {expires_at} is not after {first}");
        assert_eq!(fresh.servers.len(), 3);
        let (username, password) = username_and_password(minted(&fresh.servers, &coturn));
        assert_eq!(username, format!("{expires_at}:carol"));
        assert!(coturn.allocate(username, password, false).relayed, "{via:?}");
    }

    // Before connecting: GET /ice-servers with the token, never cached.
    let response = server.get_authorized("/ice-servers", &server.token("dave")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let body = response.json();
    let servers: Vec<IceServer> = serde_json::from_value(body["ice_servers"].clone()).expect("RTCIceServer objects");
    let expires_at = body["expires_at"].as_u64().expect("expires_at");
    let (username, password) = username_and_password(minted(&servers, &coturn));
    assert_eq!(username, format!("{expires_at}:dave"));
    assert!(coturn.allocate(username, password, false).relayed);
    assert!(!response.body.contains(TURN_SECRET));

    // Without a token, or with a bad one: refused with the code, no credentials.
    let response = server.get("/ice-servers").await;
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["code"], "auth_required");
    let response = server.get_authorized("/ice-servers", "not.a.jwt").await;
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["code"], "auth_failed");
    assert!(!response.body.contains("credential"));
}

#[tokio::test]
async fn ice_servers_belongs_on_the_control_channel_and_costs_budget() {
    let coturn = Coturn::start(TURN_SECRET);
    let server = server_with_turn(&coturn, 600);
    let erin = server.connect(Via::WebTransport, "erin").await;
    let mut room = erin.join("ice-room").await.expect("erin joins");
    room.send(&ClientMessage::IceServers { id: Some(7) }).await.unwrap();
    match room.recv_timeout(WAIT).await.expect("an answer") {
        ServerMessage::Error { id, code, .. } => {
            assert_eq!((id, code), (Some(7), ErrorCode::WrongChannel));
        }
        other => panic!("expected wrong_channel, got {other:?}"),
    }
    drop(room);

    // Every request is a message of the session's budget.
    let server = Server::start(BIN, &[("messages-per-sec", "1"), ("message-burst", "3")]);
    let mut frank = server.connect(Via::WebSocket, "frank").await;
    for id in 1..=6 {
        frank
            .send_control(&ClientMessage::IceServers { id: Some(id) })
            .await
            .unwrap();
    }
    let (mut answered, mut limited) = (0, 0);
    while let Ok(msg) = frank.control().recv_timeout(Duration::from_millis(500)).await {
        match msg {
            ServerMessage::IceServers {
                ice_servers,
                expires_at,
                ..
            } => {
                // Nothing configured: an empty list that never expires.
                assert!(ice_servers.is_empty() && expires_at.is_none());
                answered += 1;
            }
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                ..
            } => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        answered <= 3 && limited >= 1,
        "answered {answered}, rate_limited {limited}"
    );
    assert!(frank.welcome().ice_servers.is_empty());
}
