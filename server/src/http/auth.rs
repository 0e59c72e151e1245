//! The account routes: `POST /auth/login`, `POST /auth/refresh`, `GET /auth/me`.
//!
//! Each checks, in order: the service switch; for login and refresh, whether
//! the server can sign tokens at all; the blocklist, so a blocked address gets
//! 429 `ip_blocked` before any password is hashed (a login asks again once it
//! has a hashing slot); then the request. Bodies are
//! JSON (`Content-Type: application/json`) of at most [`MAX_BODY`] bytes
//! ([`super::request`]).
//! Failed logins and refreshes count towards the address's block as bad tokens
//! do. Every error is `{"code", "message"}` with the code's status.

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::request::{MAX_BODY, authorized, private, read_json};
use super::{AppState, refusal_response};
use crate::accounts::{AccountError, Issued};
use crate::session::Refusal;
use crate::session::auth::RoomGrant;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login).options(super::cors::preflight))
        .route("/auth/refresh", post(refresh).options(super::cors::preflight))
        .route("/auth/me", get(me).options(super::cors::preflight))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

// No `Debug`: a password must not end up in a log by accident.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

async fn login(
    State(app): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ip = remote.ip();
    let request = match admit(&app, ip).and_then(|()| read_json::<LoginRequest>(&headers, body)) {
        Ok(request) => request,
        Err(refusal) => return refusal_response(&refusal),
    };
    // The address may have been blocked while this login waited for a slot
    // (by the failures of logins queued beside it).
    let slot = match app.accounts.hashing_slot().await {
        Ok(slot) => slot,
        Err(e) => return respond(&app, ip, Err(e), "login failed"),
    };
    if let Err(refusal) = app.hub.check_blocklist(ip) {
        return refusal_response(&refusal);
    }
    let issued = app.accounts.login(slot, request.username, request.password, ip).await;
    respond(&app, ip, issued, "login failed")
}

async fn refresh(
    State(app): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ip = remote.ip();
    let request = match admit(&app, ip).and_then(|()| read_json::<RefreshRequest>(&headers, body)) {
        Ok(request) => request,
        Err(refusal) => return refusal_response(&refusal),
    };
    let issued = app.accounts.refresh(request.refresh_token, ip).await;
    respond(&app, ip, issued, "refresh failed")
}

/// `GET /auth/me`: what the bearer's access token says.
async fn me(State(app): State<AppState>, ConnectInfo(remote): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    match authorized(&app.hub, remote.ip(), &headers) {
        Ok(claims) => {
            let rooms = match claims.rooms {
                RoomGrant::Any => None,
                RoomGrant::Only(rooms) => Some(rooms),
            };
            private(json!({
                "sub": &*claims.user_id,
                "roles": claims.roles,
                "rooms": rooms,
                "expires_at": claims.expires_at,
            }))
        }
        Err(refusal) => refusal_response(&refusal),
    }
}

/// The checks before any work: the service switch, whether accounts can issue
/// tokens, and the blocklist.
fn admit(app: &AppState, ip: IpAddr) -> Result<(), Refusal> {
    app.hub.switches.check_service()?;
    app.accounts
        .check_enabled()
        .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
    app.hub.check_blocklist(ip)
}

/// The tokens as JSON, or the failure (counted against `ip` when it is one of
/// authentication).
fn respond(app: &AppState, ip: IpAddr, issued: Result<Issued, AccountError>, what: &str) -> Response {
    match issued {
        Ok(issued) => private(json!({
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "refresh_token": issued.refresh_token.expose(),
            "refresh_expires_in": issued.refresh_expires_in,
            "user": { "name": issued.user, "roles": issued.roles },
        })),
        Err(e) => {
            if e.is_auth_failure() {
                app.hub.auth_failed(ip, e.code(), what);
            }
            let mut refusal = Refusal::new(e.code(), e.to_string());
            if e == AccountError::Busy {
                refusal = refusal.retry_after(1);
            }
            refusal_response(&refusal)
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};
    use proto::ErrorCode;

    use super::*;

    fn json_headers(content_type: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers
    }

    fn read(content_type: &'static str, body: &'static str) -> Result<LoginRequest, Refusal> {
        read_json(&json_headers(content_type), Ok(Bytes::from_static(body.as_bytes())))
    }

    #[test]
    fn a_login_body_is_json_with_a_username_and_a_password() {
        let request = read(
            "application/json; charset=utf-8",
            r#"{"username":"alice","password":"correct horse"}"#,
        )
        .unwrap_or_else(|r| panic!("{}", r.message));
        assert_eq!(
            (request.username.as_str(), request.password.as_str()),
            ("alice", "correct horse")
        );
    }

    #[test]
    fn anything_else_is_an_invalid_message_that_says_what_is_wrong() {
        for (content_type, body, says) in [
            ("text/plain", r#"{"username":"a","password":"b"}"#, "Content-Type"),
            ("application/json", r#"{"username":"a","password":"#, "EOF"),
            ("application/json", r#"{"username":"a"}"#, "missing field `password`"),
            (
                "application/json",
                r#"{"username":"a","password":"b","x":1}"#,
                "unknown field `x`",
            ),
            ("application/json", r#"["a","b",1]"#, "invalid"),
        ] {
            let Err(refusal) = read(content_type, body) else {
                panic!("{body} was accepted")
            };
            assert_eq!(refusal.code, ErrorCode::InvalidMessage);
            assert!(refusal.message.contains(says), "{body}: {}", refusal.message);
        }
    }
}
