//! `GET /ice-servers`: the ICE servers a client should use, with TURN
//! credentials minted for the user of the bearer token, for clients that want
//! them before they connect (the same list `welcome` carries).
//!
//! Answers `{"ice_servers": [RTCIceServer...], "expires_at": <unix seconds>}`
//! (`expires_at` absent when no credential expires), never cached. Refusals
//! are those of the other token routes: the service switch, the blocklist, then
//! the token (`auth_required`, `invalid_token`, ... counted as strikes).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::request::{authorized, private};
use super::{AppState, refusal_response};

pub fn routes() -> Router<AppState> {
    Router::new().route("/ice-servers", get(ice_servers).options(super::cors::preflight))
}

async fn ice_servers(
    State(app): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match authorized(&app.hub, remote.ip(), &headers) {
        Ok(claims) => {
            let grant = app.hub.ice.grant(&claims.user_id);
            let mut body = json!({ "ice_servers": grant.servers });
            if let Some(expires_at) = grant.expires_at {
                body["expires_at"] = json!(expires_at);
            }
            private(body)
        }
        Err(refusal) => refusal_response(&refusal),
    }
}
