//! The operator's defences, seen from outside: the origin allow-list on both
//! transports, the service and transport switches, development mode, the
//! in-band token refresh, and what the security log says (and never says).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use e2e::raw::{RawWebTransport, RawWss};
use e2e::{Server, Via};
use proto::client::{Client, ClientError};
use proto::{ClientMessage, Encoding, ErrorCode, ServerMessage, Signal, Token};
use server::session::auth::{TokenClaims, mint_hs256, now_secs};
use wtransport::error::ConnectingError;

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
/// How long anything that should happen may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(10);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BOTH: [Via; 2] = [Via::WebTransport, Via::WebSocket];

// ---------------------------------------------------------------------------
// Origins.
// ---------------------------------------------------------------------------

fn origin_header(origin: Option<&str>) -> Vec<(&str, &str)> {
    origin.map(|o| ("origin", o)).into_iter().collect()
}

/// A page of `origin` (`None`: a native client, which sends no Origin) opens
/// a WSS session and says hello; `Err` is the refusal of the upgrade.
async fn wss_from(server: &Server, origin: Option<&str>) -> Result<(), e2e::Response> {
    let mut ws = RawWss::connect(server, LOOPBACK, "", &origin_header(origin)).await?;
    ws.hello(&server.token("page")).await;
    Ok(())
}

/// The same over WebTransport; `Err` is the refusal of the CONNECT.
async fn webtransport_from(server: &Server, origin: Option<&str>) -> Result<(), ConnectingError> {
    let conn = RawWebTransport::connect(server, LOOPBACK, Encoding::Json, &origin_header(origin)).await?;
    conn.hello(&server.token("page")).await;
    Ok(())
}

#[tokio::test]
async fn the_origin_allow_list_admits_listed_pages_and_refuses_foreign_ones_on_both_transports() {
    let server = Server::start(
        BIN,
        &[("allowed-origins", "https://app.example.com, http://localhost:3000")],
    );
    // A page is on the server's own origin when its origin names the host and
    // port the request went to.
    let own_https = format!("https://{}", server.https);
    let own_quic = format!("https://{}", server.webtransport);
    let listed = [Some("https://app.example.com"), Some("http://localhost:3000"), None];
    for origin in listed.into_iter().chain([Some(own_https.as_str())]) {
        if let Err(refused) = wss_from(&server, origin).await {
            panic!("{origin:?} was refused over WSS: {} {}", refused.status, refused.body);
        }
    }
    for origin in listed.into_iter().chain([Some(own_quic.as_str())]) {
        if let Err(e) = webtransport_from(&server, origin).await {
            panic!("{origin:?} was refused over WebTransport: {e}");
        }
    }
    // Another site, a look-alike, a listed host with the wrong scheme or port.
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "http://localhost:3001",
    ] {
        let refused = wss_from(&server, Some(origin))
            .await
            .expect_err("a foreign page is refused over WSS");
        assert_eq!(refused.status, 403, "{origin}");
        assert_eq!(refused.json()["code"], "origin_not_allowed", "{origin}");
        let err = webtransport_from(&server, Some(origin))
            .await
            .expect_err("a foreign page is refused over WebTransport");
        // wtransport tells a refused CONNECT (here 403) from other failures, not its status.
        assert!(matches!(err, ConnectingError::SessionRejected), "{origin}: {err}");
    }
}

#[tokio::test]
async fn a_wildcard_allow_list_or_development_mode_admits_any_origin() {
    for flag in [("allowed-origins", "*"), ("dev-mode", "true")] {
        let server = Server::start(BIN, &[flag]);
        if let Err(refused) = wss_from(&server, Some("https://anywhere.example")).await {
            panic!("{flag:?}: refused over WSS: {} {}", refused.status, refused.body);
        }
        if let Err(e) = webtransport_from(&server, Some("https://anywhere.example")).await {
            panic!("{flag:?}: refused over WebTransport: {e}");
        }
    }
}

/// The demo page is served by the HTTPS listener, so its origin carries the
/// HTTPS port; its WebTransport CONNECT goes to the WebTransport port. The
/// own-host rule ignores ports, so the server's own page may use both.
#[tokio::test]
async fn the_servers_own_page_may_open_a_webtransport_session() {
    let server = Server::start(BIN, &[]);
    let page = format!("https://{}", server.https);
    wss_from(&server, Some(&page)).await.expect("the page may use WSS");
    webtransport_from(&server, Some(&page))
        .await
        .expect("the page may use WebTransport");
}

// ---------------------------------------------------------------------------
// Switches.
// ---------------------------------------------------------------------------

fn assert_refused(err: ClientError, status: u16, code: ErrorCode) {
    match err {
        ClientError::Rejected {
            status: got_status,
            code: got_code,
            ..
        } => assert_eq!((got_status, got_code), (Some(status), Some(code))),
        other => panic!("expected an HTTP refusal with {code}, got {other:?}"),
    }
}

/// A WebTransport connect fails at once (the QUIC connection is refused), so
/// a client can fall back to WSS without waiting for a timeout.
async fn assert_webtransport_refused_at_once(server: &Server) {
    let started = Instant::now();
    let err = server
        .connect_err(server.options(Via::WebTransport, &server.token("hopeful")))
        .await;
    assert!(matches!(err, ClientError::Connect(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not timed out: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn with_the_service_switched_off_both_transports_refuse_new_sessions() {
    let server = Server::start(BIN, &[("service-enabled", "false")]);
    let err = server
        .connect_err(server.options(Via::WebSocket, &server.token("hopeful")))
        .await;
    assert_refused(err, 503, ErrorCode::ServiceDisabled);
    assert_webtransport_refused_at_once(&server).await;
}

#[tokio::test]
async fn with_websocket_switched_off_wss_gets_503_and_webtransport_still_works() {
    let server = Server::start(BIN, &[("websocket-enabled", "false")]);
    let err = server
        .connect_err(server.options(Via::WebSocket, &server.token("hopeful")))
        .await;
    assert_refused(err, 503, ErrorCode::ServiceDisabled);
    let mut client = server.connect(Via::WebTransport, "hopeful").await;
    client.ping().await.expect("WebTransport sessions work");
}

#[tokio::test]
async fn with_webtransport_switched_off_quic_is_refused_at_once_and_wss_still_works() {
    let server = Server::start(BIN, &[("webtransport-enabled", "false")]);
    assert_webtransport_refused_at_once(&server).await;
    let mut client = server.connect(Via::WebSocket, "hopeful").await;
    client.ping().await.expect("WSS sessions work");
}

// ---------------------------------------------------------------------------
// Development mode.
// ---------------------------------------------------------------------------

/// The log's JSON lines.
fn log_lines(server: &Server) -> Vec<serde_json::Value> {
    server
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn warns_of_development_mode(server: &Server) -> bool {
    log_lines(server)
        .iter()
        .any(|line| line["level"] == "WARN" && line["message"].as_str().is_some_and(|m| m.contains("DEVELOPMENT MODE")))
}

fn without_token(server: &Server, via: Via) -> proto::client::ConnectOptions {
    let mut opts = server.options(via, "unused");
    opts.token = None;
    opts
}

#[tokio::test]
async fn in_development_mode_hello_without_a_token_opens_an_anonymous_session() {
    let server = Server::start(BIN, &[("dev-mode", "true")]);
    // The listening line comes after start-up, so the warning is already written.
    assert!(
        warns_of_development_mode(&server),
        "no warning at start:\n{}",
        server.log()
    );
    let mut anonymous = Vec::new();
    for via in BOTH {
        let client = Client::connect(without_token(&server, via))
            .await
            .unwrap_or_else(|e| panic!("{via:?}: {e}"));
        let user = client.welcome().user_id.clone();
        let hex = user.strip_prefix("anon-").expect("an anon- user");
        assert!(hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()), "{user}");
        anonymous.push(client);
    }
    assert_ne!(anonymous[0].welcome().user_id, anonymous[1].welcome().user_id);
    // Anonymous peers meet in rooms like any others.
    let first = anonymous[0].join("sandbox").await.expect("joins");
    let mut second = anonymous[1].join("sandbox").await.expect("joins");
    let hello = Signal::Custom { data: "hi".into() };
    first.signal(anonymous[1].peer_id(), hello.clone()).await.unwrap();
    assert_eq!(
        second.recv_timeout(WAIT).await.unwrap(),
        ServerMessage::Signal {
            from: anonymous[0].peer_id(),
            signal: hello
        }
    );
}

#[tokio::test]
async fn outside_development_mode_hello_without_a_token_is_auth_required() {
    let server = Server::start(BIN, &[]);
    for via in BOTH {
        let err = server.connect_err(without_token(&server, via)).await;
        assert_eq!(err.code(), Some(ErrorCode::AuthRequired), "{via:?}: {err:?}");
    }
    assert!(!warns_of_development_mode(&server));
}

// ---------------------------------------------------------------------------
// In-band token refresh.
// ---------------------------------------------------------------------------

/// Sends `refresh` with `token` and returns the answer, its text left out.
async fn refresh(client: &mut Client, id: u32, token: &str) -> ServerMessage {
    let msg = ClientMessage::Refresh {
        id: Some(id),
        token: Token(token.to_owned()),
    };
    client.control().send(&msg).await.expect("sent");
    match client.control().recv_timeout(WAIT).await.expect("an answer") {
        ServerMessage::Error { id, code, .. } => refused(id, code),
        other => other,
    }
}

fn refused(id: Option<u32>, code: ErrorCode) -> ServerMessage {
    ServerMessage::Error {
        id,
        code,
        message: String::new(),
    }
}

/// A token for `sub` expiring `secs` from now (whole seconds, so in
/// `secs - 1` to `secs` seconds).
fn token_for(server: &Server, sub: &str, secs: u64) -> String {
    server.token_with(TokenClaims::new(sub, now_secs() + secs))
}

/// The next `token_expiring` on the control channel; returns its `expires_in_ms`.
async fn token_expiring(client: &mut Client) -> u64 {
    match client.control().recv_timeout(WAIT).await {
        Ok(ServerMessage::TokenExpiring { expires_in_ms }) => expires_in_ms,
        other => panic!("expected token_expiring, got {other:?}"),
    }
}

/// The goodbye that ends the session.
async fn goodbye(client: &mut Client) -> ErrorCode {
    loop {
        match client.control().recv_timeout(WAIT).await {
            Ok(ServerMessage::Goodbye { code, .. }) => return code,
            Ok(_) => continue,
            Err(e) => panic!("expected a goodbye: {e}"),
        }
    }
}

/// A session whose token has 4 s left is told at once (the notice period is
/// 60 s), refuses another user's token and a forged one, takes its own fresh
/// one, and lives on past the first token's expiry.
async fn a_session_renews_its_token(server: &Server, via: Via) {
    let minted = Instant::now();
    let first = token_for(server, "renewer", 4);
    let mut client = Client::connect(server.options(via, &first)).await.expect("connects");
    let left = token_expiring(&mut client).await;
    assert!((1..=4000).contains(&left), "{via:?}: expires in {left} ms");
    let forged = mint_hs256(b"a guess", &TokenClaims::new("renewer", now_secs() + 3600));
    assert_eq!(
        refresh(&mut client, 1, &server.token("mallory")).await,
        refused(Some(1), ErrorCode::WrongUser),
        "{via:?}"
    );
    assert_eq!(
        refresh(&mut client, 2, &forged).await,
        refused(Some(2), ErrorCode::AuthFailed),
        "{via:?}"
    );
    assert_eq!(
        refresh(&mut client, 3, &token_for(server, "renewer", 3600)).await,
        ServerMessage::Ack { id: 3 },
        "{via:?}"
    );
    // The first token has expired by then; nothing arrives, the session goes on.
    let past_first = tokio::time::Instant::from_std(minted + Duration::from_millis(6500));
    if let Ok(msg) = tokio::time::timeout_at(past_first, client.control().recv()).await {
        panic!("{via:?}: the refreshed session was sent {msg:?}");
    }
    client.ping().await.expect("the session outlived its first token");
}

#[tokio::test]
async fn a_session_refreshes_its_token_in_band_and_outlives_the_first_one() {
    let server = Server::start(BIN, &[("jwt-leeway-secs", "0")]);
    tokio::join!(
        a_session_renews_its_token(&server, Via::WebTransport),
        a_session_renews_its_token(&server, Via::WebSocket),
    );
}

/// With a notice period of 2 s, a token of 5 s is announced as expiring about
/// 2 s before it does; without a refresh the session then ends with `token_expired`.
async fn a_session_lapses(server: &Server, via: Via) {
    let minted = Instant::now();
    let mut client = Client::connect(server.options(via, &token_for(server, "lapser", 5)))
        .await
        .expect("connects");
    let left = token_expiring(&mut client).await;
    // The token expires 4 to 5 s after it was minted, so the notice is due 2 to 3 s after.
    assert!(
        minted.elapsed() >= Duration::from_millis(1900),
        "{via:?}: not at once but {:?} after the token was minted",
        minted.elapsed()
    );
    assert!((500..=2000).contains(&left), "{via:?}: expires in {left} ms");
    let noticed = Instant::now();
    assert_eq!(goodbye(&mut client).await, ErrorCode::TokenExpired, "{via:?}");
    let waited = noticed.elapsed();
    assert!(
        waited >= Duration::from_millis(left) - Duration::from_millis(200),
        "{via:?}: the goodbye came {waited:?} after a notice of {left} ms"
    );
}

#[tokio::test]
async fn token_expiring_comes_the_notice_period_before_expiry_and_without_refresh_the_session_ends() {
    let server = Server::start(BIN, &[("jwt-leeway-secs", "0"), ("token-refresh-notice-secs", "2")]);
    tokio::join!(
        a_session_lapses(&server, Via::WebTransport),
        a_session_lapses(&server, Via::WebSocket),
    );
}

/// A refused refresh changes nothing: the session stays open on its old token,
/// and ends when that one expires.
async fn a_session_keeps_its_old_token(server: &Server, via: Via) {
    let minted = Instant::now();
    let mut client = Client::connect(server.options(via, &token_for(server, "keeper", 3)))
        .await
        .expect("connects");
    token_expiring(&mut client).await;
    let forged = mint_hs256(b"a guess", &TokenClaims::new("keeper", now_secs() + 3600));
    assert_eq!(
        refresh(&mut client, 1, &forged).await,
        refused(Some(1), ErrorCode::AuthFailed),
        "{via:?}"
    );
    client.ping().await.expect("still open");
    assert_eq!(goodbye(&mut client).await, ErrorCode::TokenExpired, "{via:?}");
    let lived = minted.elapsed();
    assert!(
        lived >= Duration::from_millis(1800) && lived < Duration::from_secs(6),
        "{via:?}: ended {lived:?} after a token of 2 to 3 s was minted"
    );
}

#[tokio::test]
async fn a_refused_refresh_leaves_the_session_on_its_old_token() {
    let server = Server::start(BIN, &[("jwt-leeway-secs", "0")]);
    tokio::join!(
        a_session_keeps_its_old_token(&server, Via::WebTransport),
        a_session_keeps_its_old_token(&server, Via::WebSocket),
    );
}

// ---------------------------------------------------------------------------
// The security log.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn security_events_in_the_log_carry_masked_addresses_and_never_a_token() {
    let server = Server::start(
        BIN,
        &[
            ("allowed-origins", "https://app.example.com"),
            ("auth-failures-before-block", "2"),
        ],
    );
    let prowler = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
    let session_token = token_for(&server, "alice", 3600);
    let refreshed = token_for(&server, "alice", 7200);
    let forged_hello = mint_hs256(b"guess one", &TokenClaims::new("alice", now_secs() + 60));
    let forged_url = mint_hs256(b"guess two", &TokenClaims::new("alice", now_secs() + 60));

    // An honest session that refreshes its token.
    let mut alice = Client::connect(server.options(Via::WebSocket, &session_token))
        .await
        .expect("connects");
    assert_eq!(refresh(&mut alice, 1, &refreshed).await, ServerMessage::Ack { id: 1 });
    // Two forged tokens from one address (auth_failed twice, then ip_blocked)...
    let err = server
        .connect_err(server.options(Via::WebTransport, &forged_hello).bind_ip(prowler))
        .await;
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed));
    let err = server
        .connect_err(
            server
                .options(Via::WebSocket, &forged_url)
                .token_in_url(true)
                .bind_ip(prowler),
        )
        .await;
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed));
    // ...its next attempt refused (connection_refused, ip_blocked)...
    let err = server
        .connect_err(server.options(Via::WebSocket, &session_token).bind_ip(prowler))
        .await;
    assert_refused(err, 429, ErrorCode::IpBlocked);
    // ...and a foreign page (connection_refused, origin_not_allowed). Each event
    // was written before the answer it goes with.
    assert!(wss_from(&server, Some("https://evil.example")).await.is_err());

    let lines = log_lines(&server);
    let security: Vec<&serde_json::Value> = lines.iter().filter(|l| l["target"] == "security").collect();
    let events: Vec<(&str, &str)> = security
        .iter()
        .map(|l| (l["event"].as_str().unwrap_or(""), l["code"].as_str().unwrap_or("")))
        .collect();
    for want in [
        ("auth_failed", "auth_failed"),
        ("ip_blocked", ""),
        ("connection_refused", "ip_blocked"),
        ("connection_refused", "origin_not_allowed"),
    ] {
        assert!(events.contains(&want), "no {want:?} among {events:?}");
    }
    for event in &security {
        assert_eq!(event["ip"], "127.0.0.x", "{event}");
    }
    // Every address anywhere in the log (events and their spans) is masked.
    for line in &lines {
        let spans = line["spans"].as_array().into_iter().flatten();
        for ip in [&line["ip"], &line["span"]["ip"]]
            .into_iter()
            .chain(spans.map(|s| &s["ip"]))
        {
            if let Some(ip) = ip.as_str() {
                assert!(ip.ends_with(".x"), "an unmasked address in {line}");
            }
        }
    }
    let log = server.log();
    assert!(!log.contains("127.0.0.4"), "the prowler's address is in the log");
    for token in [&session_token, &refreshed, &forged_hello, &forged_url] {
        let signature = token.rsplit('.').next().expect("a signature");
        assert!(
            !log.contains(token.as_str()) && !log.contains(signature),
            "a token is in the log"
        );
    }
}
