//! Every session is authenticated: tokens in the URL are checked before the
//! session exists, tokens in hello before anything else happens.

use std::time::Duration;

use e2e::{Server, Via};
use proto::client::{Client, ClientError};
use proto::{ClientMessage, ErrorCode, ServerMessage};
use server::session::auth::{TokenClaims, now_secs};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const WAIT: Duration = Duration::from_secs(5);

fn claims(sub: &str, exp: u64) -> TokenClaims {
    TokenClaims::new(sub, exp)
}

#[tokio::test]
async fn a_bad_or_expired_token_in_the_wss_url_gets_401_with_its_code_before_the_upgrade() {
    let server = Server::start(BIN, &[]);
    let expired = server.token_with(claims("alice", now_secs() - 120));
    for (token, code) in [
        ("not-a-jwt", ErrorCode::AuthFailed),
        (expired.as_str(), ErrorCode::TokenExpired),
    ] {
        let err = server
            .connect_err(server.options(Via::WebSocket, token).token_in_url(true))
            .await;
        match err {
            ClientError::Rejected { status, code: got, .. } => {
                assert_eq!(status, Some(401));
                assert_eq!(got, Some(code));
            }
            other => panic!("expected an HTTP refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_bad_token_in_the_webtransport_url_is_refused_before_the_session_is_accepted() {
    let server = Server::start(BIN, &[]);
    let err = server
        .connect_err(server.options(Via::WebTransport, "not-a-jwt").token_in_url(true))
        .await;
    assert!(matches!(err, ClientError::Rejected { .. }), "{err:?}");
    // The refusal cost no session: a good client still gets in.
    server.connect(Via::WebTransport, "alice").await;
}

#[tokio::test]
async fn a_bad_expired_or_missing_token_in_hello_gets_its_error_code_on_both_transports() {
    let server = Server::start(BIN, &[]);
    let expired = server.token_with(claims("alice", now_secs() - 120));
    let forged = server::session::auth::mint_hs256(b"not the server's secret", &claims("alice", now_secs() + 60));
    for via in [Via::WebTransport, Via::WebSocket] {
        for (token, code) in [
            (Some(forged.as_str()), ErrorCode::AuthFailed),
            (Some(expired.as_str()), ErrorCode::TokenExpired),
            (None, ErrorCode::AuthRequired),
        ] {
            let mut opts = server.options(via, "unused");
            opts.token = token.map(str::to_owned);
            let err = server.connect_err(opts).await;
            assert_eq!(err.code(), Some(code), "{via:?}: {err:?}");
        }
    }
}

#[tokio::test]
async fn anything_before_hello_ends_the_session_with_auth_required() {
    let server = Server::start(BIN, &[]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let mut pending = Client::open(server.options(via, &server.token("eager"))).await.unwrap();
        pending
            .control()
            .send(&ClientMessage::Ping { id: Some(1), nonce: 1 })
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Ok(msg) = pending.control().recv_timeout(WAIT).await {
            got.push(msg);
        }
        assert!(
            matches!(
                got.as_slice(),
                [
                    ServerMessage::Error {
                        id: Some(1),
                        code: ErrorCode::AuthRequired,
                        ..
                    },
                    ServerMessage::Goodbye {
                        code: ErrorCode::AuthRequired,
                        ..
                    },
                ]
            ),
            "{via:?}: {got:?}"
        );
    }
}

#[tokio::test]
async fn a_session_that_never_says_hello_is_closed_with_auth_timeout() {
    let server = Server::start(BIN, &[("auth-timeout-ms", "300")]);
    for via in [Via::WebTransport, Via::WebSocket] {
        // The client opens its control channel but says nothing.
        let mut pending = Client::open(server.options(via, &server.token("slowpoke")))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        match pending.control().recv_timeout(WAIT).await {
            Ok(ServerMessage::Goodbye { code, .. }) => assert_eq!(code, ErrorCode::AuthTimeout, "{via:?}"),
            other => panic!("{via:?}: expected a goodbye, got {other:?}"),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{via:?}: not before the timeout"
        );
    }
}

#[tokio::test]
async fn a_session_ends_with_token_expired_when_its_token_does() {
    let server = Server::start(BIN, &[("jwt-leeway-secs", "0")]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let token = server.token_with(claims("brief", now_secs() + 2));
        let mut client = Client::connect(server.options(via, &token)).await.unwrap();
        let goodbye = loop {
            match client
                .control()
                .recv_timeout(Duration::from_secs(6))
                .await
                .expect("a goodbye")
            {
                ServerMessage::Goodbye { code, .. } => break code,
                _ => continue,
            }
        };
        assert_eq!(goodbye, ErrorCode::TokenExpired, "{via:?}");
    }
}

#[tokio::test]
async fn a_session_told_its_token_is_expiring_refreshes_it_in_band_and_lives_on() {
    let server = Server::start(BIN, &[("jwt-leeway-secs", "0"), ("token-refresh-notice-secs", "60")]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let token = server.token_with(claims("renewer", now_secs() + 2));
        let mut client = Client::connect(server.options(via, &token)).await.unwrap();
        // Less than the notice period is left: the server says so at once.
        let notice = client.control().recv_timeout(WAIT).await.unwrap();
        assert!(
            matches!(notice, ServerMessage::TokenExpiring { expires_in_ms } if expires_in_ms <= 2000),
            "{notice:?}"
        );
        let other = server.token("someone-else");
        let err = client.refresh(other).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::WrongUser), "{via:?}");
        let err = client.refresh("forged").await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::AuthFailed), "{via:?}");
        client
            .refresh(server.token("renewer"))
            .await
            .expect("a fresh token for the same user");
        // Past the first token's expiry, the session is still open.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        client.ping().await.expect("alive on the fresh token");
    }
}

#[tokio::test]
async fn an_unknown_protocol_version_is_refused_with_unsupported_version() {
    let server = Server::start(BIN, &[]);
    for via in [Via::WebTransport, Via::WebSocket] {
        let err = server
            .connect_err(server.options(via, &server.token("old")).version(0))
            .await;
        assert_eq!(err.code(), Some(ErrorCode::UnsupportedVersion), "{via:?}");
    }
    // A newer client is answered with the version the server speaks.
    let client = Client::connect(server.options(Via::WebSocket, &server.token("new")).version(99))
        .await
        .unwrap();
    assert_eq!(client.welcome().version, proto::PROTOCOL_VERSION);
}

#[tokio::test]
async fn a_second_hello_is_refused_and_the_session_stays_open() {
    let server = Server::start(BIN, &[]);
    let mut client = server.connect(Via::WebSocket, "alice").await;
    client
        .control()
        .send(&ClientMessage::Hello {
            id: Some(5),
            version: 1,
            token: None,
            resume: None,
        })
        .await
        .unwrap();
    match client.control().recv_timeout(WAIT).await.unwrap() {
        ServerMessage::Error { id, code, .. } => {
            assert_eq!(id, Some(5));
            assert_eq!(code, ErrorCode::AlreadyAuthenticated);
        }
        other => panic!("{other:?}"),
    }
    client.ping().await.expect("still open");
}

#[tokio::test]
async fn the_rooms_claim_restricts_which_rooms_a_token_may_join() {
    let server = Server::start(BIN, &[]);
    let mut c = claims("guest", now_secs() + 600);
    c.rooms = Some(vec!["lobby".into(), "team-*".into()]);
    let client = Client::connect(server.options(Via::WebTransport, &server.token_with(c)))
        .await
        .unwrap();
    client.join("lobby").await.expect("lobby is allowed");
    client.join("team-blue").await.expect("team-* is allowed");
    let err = client.join("admin").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoomForbidden));
}

#[tokio::test]
async fn tokens_never_appear_in_the_log() {
    let server = Server::start(BIN, &[]);
    let token = server.token("alice");
    let _client = Client::connect(server.options(Via::WebSocket, &token)).await.unwrap();
    let _err = server
        .connect_err(
            server
                .options(Via::WebSocket, "secret-looking-garbage")
                .token_in_url(true),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = server.log();
    assert!(log.contains("authenticated"), "the log is being written");
    assert!(!log.contains(&token));
    assert!(!log.contains("secret-looking-garbage"));
}

/// A validly signed token may say it expires at the end of time (`exp` =
/// 2^64 - 1): it is honoured as a very long one, on both transports, in
/// `hello` and in the URL, and the server stays up (it once panicked the
/// session's worker, overflowing the clock).
#[tokio::test]
async fn a_token_expiring_at_the_end_of_time_opens_a_session_and_panics_nothing() {
    let server = Server::start(BIN, &[]);
    let token = server.token_with(claims("forever", u64::MAX));
    for via in [Via::WebTransport, Via::WebSocket] {
        for in_url in [false, true] {
            let mut client = Client::connect(server.options(via, &token).token_in_url(in_url))
                .await
                .unwrap_or_else(|e| panic!("{via:?} (token in URL: {in_url}): {e}"));
            client.ping().await.expect("the session answers");
            let room = client.join("eternity").await.expect("joins a room");
            drop(room);
        }
    }
    // Nobody's worker panicked: the log says so, and a newcomer still gets in.
    assert!(!server.log().contains("panicked"), "{}", server.log());
    let mut late = server.connect(Via::WebSocket, "late").await;
    late.ping().await.expect("the server is up");
}
