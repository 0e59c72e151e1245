//! The operators' view: `/admin/stats`, `/admin/unblock` and `/admin/switches`,
//! open only to tokens with the `admin` role, and the API's origin policy.

use std::time::Duration;

use e2e::{Response, Server, Via};
use proto::ErrorCode;
use server::session::auth::{TokenClaims, now_secs};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");

fn admin_token(server: &Server) -> String {
    let mut claims = TokenClaims::new("operator", now_secs() + 600);
    claims.roles = vec!["admin".into()];
    server.token_with(claims)
}

/// An API call with an optional bearer token, origin and JSON body.
async fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    origin: Option<&str>,
    body: &str,
) -> Response {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(token) = token {
        raw.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(origin) = origin {
        raw.push_str(&format!("Origin: {origin}\r\n"));
    }
    if method == "OPTIONS" {
        // What a browser's preflight asks.
        raw.push_str("Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n");
    }
    if !body.is_empty() {
        raw.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    server.request(&raw).await
}

fn code(response: &Response) -> String {
    response.json()["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_admin_api_needs_a_token_with_the_admin_role() {
    let server = Server::start(BIN, &[]);
    let none = call(&server, "GET", "/admin/stats", None, None, "").await;
    assert_eq!((none.status, code(&none)), (401, "auth_required".into()));
    let user = server.token("mallory");
    let plain = call(&server, "GET", "/admin/stats", Some(&user), None, "").await;
    assert_eq!((plain.status, code(&plain)), (403, "forbidden".into()));
    let forged = call(&server, "GET", "/admin/stats", Some("e30.e30.AAAA"), None, "").await;
    assert_eq!((forged.status, code(&forged)), (401, "auth_failed".into()));
    let ok = call(&server, "GET", "/admin/stats", Some(&admin_token(&server)), None, "").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn stats_show_sessions_by_transport_rooms_talkers_and_violations() {
    let server = Server::start(BIN, &[("max-frame-bytes", "1000")]);
    let mut alice = server.connect(Via::WebTransport, "alice").await;
    let bob = server.connect(Via::WebSocket, "bob").await;
    let room = alice.join("stats-room").await.unwrap();
    let _bob_room = bob.join("stats-room").await.unwrap();
    room.broadcast("y".repeat(5000)).await.unwrap();
    // The oversized frame is reported on the control channel: once it is, it is counted.
    loop {
        if let proto::ServerMessage::Error { code, .. } =
            alice.control().recv_timeout(Duration::from_secs(5)).await.unwrap()
        {
            assert_eq!(code, ErrorCode::FrameTooLarge);
            break;
        }
    }
    let stats = call(&server, "GET", "/admin/stats", Some(&admin_token(&server)), None, "")
        .await
        .json();
    assert_eq!(stats["sessions"]["webtransport"], 1, "{stats}");
    assert_eq!(stats["sessions"]["websocket"], 1);
    assert_eq!(stats["sessions"]["total"], 2);
    assert_eq!(stats["rooms"]["count"], 1);
    assert_eq!(stats["rooms"]["members"], 2);
    assert_eq!(stats["rooms"]["largest"][0]["room"], "stats-room");
    assert_eq!(stats["violations"]["frame_too_large"], 1);
    let talker = &stats["top_talkers"][0];
    assert_eq!(talker["ip"], "127.0.0.x", "addresses are masked");
    assert_eq!(talker["sessions"], 2);
    assert!(talker["messages"].as_u64().unwrap() >= 4, "{talker}");
    assert_eq!(stats["switches"]["service"], true);
}

#[tokio::test]
async fn failed_authentications_block_the_address_and_an_operator_lifts_the_block() {
    let server = Server::start(BIN, &[("auth-failures-before-block", "2"), ("block-secs", "600")]);
    for _ in 0..2 {
        let err = server.connect_err(server.options(Via::WebSocket, "not-a-token")).await;
        assert_eq!(err.code(), Some(ErrorCode::AuthFailed));
    }
    let blocked = server
        .connect_err(server.options(Via::WebSocket, &server.token("late")))
        .await;
    assert_eq!(blocked.code(), Some(ErrorCode::IpBlocked));
    let ws = server.get("/ws").await;
    assert_eq!((ws.status, code(&ws)), (429, "ip_blocked".into()));
    let retry: u64 = ws.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((590..=600).contains(&retry), "{retry}");
    // WebTransport refuses the blocked address before the QUIC handshake.
    assert!(
        server
            .connect_err(server.options(Via::WebTransport, &server.token("late")))
            .await
            .code()
            .is_none()
    );

    let admin = admin_token(&server);
    let stats = call(&server, "GET", "/admin/stats", Some(&admin), None, "")
        .await
        .json();
    assert_eq!(stats["blocked"][0]["ip"], "127.0.0.1", "{stats}");
    assert_eq!(stats["blocked"][0]["reason"], "auth_failures");
    assert!(stats["blocked"][0]["seconds_left"].as_u64().unwrap() > 590);
    assert_eq!(stats["auth_failures"]["by_code"]["auth_failed"], 2);

    let bad = call(
        &server,
        "POST",
        "/admin/unblock",
        Some(&admin),
        None,
        r#"{"ip":"not an ip"}"#,
    )
    .await;
    assert_eq!((bad.status, code(&bad)), (400, "invalid_message".into()));
    let lifted = call(
        &server,
        "POST",
        "/admin/unblock",
        Some(&admin),
        None,
        r#"{"ip":"127.0.0.1"}"#,
    )
    .await;
    assert_eq!(lifted.json()["unblocked"], true, "{}", lifted.body);
    server.connect(Via::WebTransport, "welcome-back").await;
    server.connect(Via::WebSocket, "welcome-back").await;
    let again = call(
        &server,
        "POST",
        "/admin/unblock",
        Some(&admin),
        None,
        r#"{"ip":"127.0.0.1"}"#,
    )
    .await;
    assert_eq!(again.json()["unblocked"], false);
}

#[tokio::test]
async fn switches_turn_a_transport_or_the_service_off_with_503_and_back_on() {
    let server = Server::start(BIN, &[]);
    let admin = admin_token(&server);
    let off = call(
        &server,
        "POST",
        "/admin/switches",
        Some(&admin),
        None,
        r#"{"websocket":false}"#,
    )
    .await;
    assert_eq!(off.json()["websocket"], false, "{}", off.body);
    let ws = server.get("/ws").await;
    assert_eq!((ws.status, code(&ws)), (503, "service_disabled".into()));
    server.connect(Via::WebTransport, "still-fine").await;

    call(
        &server,
        "POST",
        "/admin/switches",
        Some(&admin),
        None,
        r#"{"service":false,"websocket":true}"#,
    )
    .await;
    assert_eq!(server.get("/ready").await.status, 503);
    assert_eq!(code(&server.get("/ws").await), "service_disabled");
    let started = std::time::Instant::now();
    let refused = server
        .connect_err(server.options(Via::WebTransport, &server.token("x")))
        .await;
    assert!(refused.code().is_none(), "refused at the QUIC level: {refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refused QUIC connection fails fast"
    );

    let state = call(&server, "GET", "/admin/switches", Some(&admin), None, "")
        .await
        .json();
    assert_eq!(
        state,
        serde_json::json!({"service": false, "webtransport": true, "websocket": true})
    );
    call(
        &server,
        "POST",
        "/admin/switches",
        Some(&admin),
        None,
        r#"{"service":true}"#,
    )
    .await;
    assert_eq!(server.get("/ready").await.status, 200);
    server.connect(Via::WebSocket, "back").await;
    let typo = call(
        &server,
        "POST",
        "/admin/switches",
        Some(&admin),
        None,
        r#"{"websockets":false}"#,
    )
    .await;
    assert_eq!((typo.status, code(&typo)), (400, "invalid_message".into()));
}

#[tokio::test]
async fn the_api_answers_pages_on_the_allow_list_and_refuses_others() {
    let server = Server::start(BIN, &[("allowed-origins", "https://app.example")]);
    let admin = admin_token(&server);
    let preflight = call(
        &server,
        "OPTIONS",
        "/admin/stats",
        None,
        Some("https://app.example"),
        "",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    let get = call(
        &server,
        "GET",
        "/admin/stats",
        Some(&admin),
        Some("https://app.example"),
        "",
    )
    .await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("access-control-allow-origin"), Some("https://app.example"));
    let foreign = call(
        &server,
        "OPTIONS",
        "/admin/stats",
        None,
        Some("https://evil.example"),
        "",
    )
    .await;
    assert_eq!((foreign.status, code(&foreign)), (403, "origin_not_allowed".into()));
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    // The account service answers the same origins.
    let login = call(&server, "OPTIONS", "/auth/login", None, Some("https://app.example"), "").await;
    assert_eq!(login.status, 204);
    assert_eq!(login.header("access-control-allow-origin"), Some("https://app.example"));
    let login = call(
        &server,
        "POST",
        "/auth/login",
        None,
        Some("https://evil.example"),
        r#"{"username":"a","password":"b"}"#,
    )
    .await;
    assert_eq!((login.status, code(&login)), (403, "origin_not_allowed".into()));
    // The server's own pages are always allowed.
    let own = call(
        &server,
        "GET",
        "/admin/stats",
        Some(&admin),
        Some("https://localhost"),
        "",
    )
    .await;
    assert_eq!(own.status, 200);
}
