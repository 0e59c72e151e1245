//! The account service: an operator adds a user with `server users add`, the
//! user logs in over HTTPS, and the access token opens sessions on both
//! transports; refresh tokens rotate, and a stolen one is caught when it is
//! used twice; failed logins count towards the same block as bad tokens.

use std::time::Duration;

use e2e::{Response, Server, Via};
use proto::ErrorCode;
use proto::client::{Client, ClientError};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const PASSWORD: &str = "correct horse battery";

async fn login(server: &Server, username: &str, password: &str) -> Response {
    server
        .post_json("/auth/login", &json!({ "username": username, "password": password }))
        .await
}

async fn refresh(server: &Server, refresh_token: &Value) -> Response {
    server
        .post_json("/auth/refresh", &json!({ "refresh_token": refresh_token }))
        .await
}

/// Asserts an error answer: its status, its code, and `{"code","message"}`.
fn assert_refused(response: &Response, status: u16, code: ErrorCode) {
    assert_eq!(response.status, status, "{response:?}");
    let body = response.json();
    assert_eq!(body["code"], code.as_str(), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn a_user_added_with_the_cli_logs_in_and_the_access_token_opens_wss_and_webtransport_sessions() {
    let server = Server::start(BIN, &[]);
    server.add_user("alice", PASSWORD, &["admin"]);

    let response = login(&server, "alice", PASSWORD).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let tokens = response.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["refresh_expires_in"], 2_592_000);
    assert_eq!(tokens["user"], json!({ "name": "alice", "roles": ["admin"] }));
    let access = tokens["access_token"].as_str().expect("an access token");

    let me = server.get_authorized("/auth/me", access).await;
    assert_eq!(me.status, 200, "{me:?}");
    let me = me.json();
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["roles"], json!(["admin"]));
    assert_eq!(me["rooms"], Value::Null, "any room");
    assert!(me["expires_at"].as_u64().is_some());

    for via in [Via::WebSocket, Via::WebTransport] {
        let client = Client::connect(server.options(via, access))
            .await
            .unwrap_or_else(|e| panic!("{via:?}: {e}"));
        assert_eq!(client.welcome().user_id, "alice", "{via:?}");
        client.join("lobby").await.expect("any room");
    }
}

#[tokio::test]
async fn auth_me_needs_a_good_bearer_token() {
    let server = Server::start(BIN, &[]);
    assert_refused(&server.get("/auth/me").await, 401, ErrorCode::AuthRequired);
    assert_refused(
        &server.get_authorized("/auth/me", "not-a-jwt").await,
        401,
        ErrorCode::AuthFailed,
    );
}

#[tokio::test]
async fn a_refresh_rotates_the_tokens_and_a_reused_refresh_token_revokes_its_family() {
    let server = Server::start(BIN, &[]);
    server.add_user("bob", PASSWORD, &[]);
    let first = login(&server, "bob", PASSWORD).await.json();

    let rotated = refresh(&server, &first["refresh_token"]).await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let second = rotated.json();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["user"]["name"], "bob");
    let me = server
        .get_authorized("/auth/me", second["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.json()["sub"], "bob");

    // Someone replays the first token: the whole family goes, the newest token too.
    assert_refused(
        &refresh(&server, &first["refresh_token"]).await,
        401,
        ErrorCode::RefreshTokenReused,
    );
    assert_refused(
        &refresh(&server, &second["refresh_token"]).await,
        401,
        ErrorCode::InvalidRefreshToken,
    );
    // A fresh login starts a new family.
    let third = login(&server, "bob", PASSWORD).await.json();
    assert_eq!(refresh(&server, &third["refresh_token"]).await.status, 200);
    assert!(
        server.log().contains("refresh_token_reused"),
        "the reuse is a security event"
    );
    assert!(!server.log().contains(first["refresh_token"].as_str().unwrap()));
}

#[tokio::test]
async fn a_wrong_password_or_an_unknown_user_is_invalid_credentials_and_bad_bodies_are_invalid_message() {
    let server = Server::start(BIN, &[]);
    server.add_user("carol", PASSWORD, &[]);
    assert_refused(
        &login(&server, "carol", "wrong horse battery").await,
        401,
        ErrorCode::InvalidCredentials,
    );
    assert_refused(
        &login(&server, "mallory", PASSWORD).await,
        401,
        ErrorCode::InvalidCredentials,
    );
    let missing_password = server.post_json("/auth/login", &json!({ "username": "carol" })).await;
    assert_refused(&missing_password, 400, ErrorCode::InvalidMessage);
    assert!(
        missing_password.json()["message"]
            .as_str()
            .unwrap()
            .contains("password")
    );
    assert_refused(
        &server.post_json("/auth/refresh", &json!("just a string")).await,
        400,
        ErrorCode::InvalidMessage,
    );
    assert!(
        !server.log().contains("wrong horse battery"),
        "passwords are never logged"
    );
}

#[tokio::test]
async fn five_failed_logins_block_the_address_for_logins_and_sessions_until_the_block_expires() {
    let server = Server::start(BIN, &[("block-secs", "2")]);
    server.add_user("dave", PASSWORD, &[]);
    for _ in 0..5 {
        assert_refused(
            &login(&server, "dave", "not the password").await,
            401,
            ErrorCode::InvalidCredentials,
        );
    }
    // Even the right password waits: a blocked address gets no password checked.
    let blocked = login(&server, "dave", PASSWORD).await;
    assert_refused(&blocked, 429, ErrorCode::IpBlocked);
    let retry_after: u64 = blocked
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // One blocklist for the HTTP API and the transports.
    let err = server
        .connect_err(server.options(Via::WebSocket, &server.token("dave")))
        .await;
    match err {
        ClientError::Rejected { status, code, .. } => {
            assert_eq!(status, Some(429));
            assert_eq!(code, Some(ErrorCode::IpBlocked));
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(login(&server, "dave", PASSWORD).await.status, 200, "the block expired");
    server.connect(Via::WebSocket, "dave").await;
}

#[tokio::test]
async fn a_user_added_while_the_server_runs_can_log_in_without_a_restart() {
    let server = Server::start(BIN, &[]);
    assert_refused(
        &login(&server, "erin", PASSWORD).await,
        401,
        ErrorCode::InvalidCredentials,
    );
    server.add_user("erin", PASSWORD, &[]);
    assert_eq!(login(&server, "erin", PASSWORD).await.status, 200);

    let list = server.users(&["list"], "");
    assert!(list.status.success());
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("erin") && !list.contains("argon2"), "{list}");
    let again = server.users(&["add", "erin", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let weak = server.users(&["add", "frank", "--password-stdin"], "short\n");
    assert_eq!(weak.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("too short"));
}

#[tokio::test]
async fn removing_a_user_or_changing_a_password_takes_effect_at_once() {
    let server = Server::start(BIN, &[]);
    server.add_user("gina", PASSWORD, &[]);
    let tokens = login(&server, "gina", PASSWORD).await.json();
    let passwd = server.users(&["passwd", "gina", "--password-stdin"], "a brand new password\n");
    assert!(passwd.status.success(), "{}", String::from_utf8_lossy(&passwd.stderr));
    assert_refused(
        &login(&server, "gina", PASSWORD).await,
        401,
        ErrorCode::InvalidCredentials,
    );
    assert_refused(
        &refresh(&server, &tokens["refresh_token"]).await,
        401,
        ErrorCode::InvalidRefreshToken,
    );
    let tokens = login(&server, "gina", "a brand new password").await.json();
    assert!(server.users(&["remove", "gina"], "").status.success());
    assert_refused(
        &refresh(&server, &tokens["refresh_token"]).await,
        401,
        ErrorCode::InvalidRefreshToken,
    );
}

#[tokio::test]
async fn logins_survive_a_restart() {
    let server = Server::start(BIN, &[]);
    server.add_user("hana", PASSWORD, &[]);
    let tokens = login(&server, "hana", PASSWORD).await.json();
    server.restart();
    assert_eq!(refresh(&server, &tokens["refresh_token"]).await.status, 200);
}

#[tokio::test]
async fn a_server_with_no_users_says_how_to_create_one() {
    let server = Server::start(BIN, &[]);
    let log = server.log();
    assert!(
        log.contains("no accounts yet: create one with `server users add <name>`"),
        "{log}"
    );
}
