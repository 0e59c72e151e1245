//! The operators' view: `/admin/*`, for tokens whose `roles` claim holds `admin`.
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/stats` | sessions by transport, top talkers (masked), blocked addresses with time left, failed authentications, violations by kind, rooms and members, switches |
//! | `POST /admin/unblock` | `{"ip": "192.0.2.7"}`: lifts that address's block |
//! | `GET /admin/switches` | the service and transport switches |
//! | `POST /admin/switches` | `{"websocket": false}`: flips some of them (503 `service_disabled` while off) |
//!
//! A missing token is `auth_required` (401), a bad one counts as a failed
//! authentication (and toward the address's block), a token without the role
//! is `forbidden` (403). The admin API keeps working while the service is
//! switched off, so an operator can switch it back on.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use proto::ErrorCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::request::{MAX_BODY, claims, read_json};
use super::{AppState, refusal_response};
use crate::session::Refusal;
use crate::session::addr::ClientKey;
use crate::session::auth::Claims;
use crate::session::switches::{SwitchChange, Transport};

/// How many top talkers and largest rooms the stats show.
const TOP: usize = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/stats", get(stats).options(super::cors::preflight))
        .route("/admin/unblock", post(unblock).options(super::cors::preflight))
        .route(
            "/admin/switches",
            get(switches).post(set_switches).options(super::cors::preflight),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Violations that the stats count by kind.
const VIOLATIONS: &[ErrorCode] = &[
    ErrorCode::RateLimited,
    ErrorCode::ByteRateLimited,
    ErrorCode::FrameTooLarge,
    ErrorCode::BadFrame,
    ErrorCode::UnknownType,
    ErrorCode::InvalidMessage,
    ErrorCode::WrongChannel,
    ErrorCode::Replayed,
    ErrorCode::PolicyViolation,
    ErrorCode::SlowConsumer,
];

/// Failed authentications by code.
const AUTH_FAILURES: &[ErrorCode] = &[
    ErrorCode::AuthFailed,
    ErrorCode::TokenExpired,
    ErrorCode::AuthRequired,
    ErrorCode::AuthTimeout,
    ErrorCode::InvalidCredentials,
    ErrorCode::InvalidRefreshToken,
    ErrorCode::RefreshTokenReused,
];

async fn stats(State(app): State<AppState>, _: Admin) -> Response {
    let hub = &app.hub;
    let now = Instant::now();
    let counts = |codes: &[ErrorCode]| -> Map<String, Value> {
        codes
            .iter()
            .map(|c| (c.as_str().to_owned(), json!(hub.counters.errors(*c))))
            .collect()
    };
    let census = hub.rooms.census(TOP);
    let sessions: Map<String, Value> = Transport::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), json!(hub.open_sessions(*t))))
        .chain([("total".to_owned(), json!(hub.admission.open()))])
        .collect();
    Json(json!({
        "sessions": sessions,
        "sessions_opened": hub.counters.sessions_opened(),
        "top_talkers": hub.admission.top_talkers(TOP),
        "blocked": hub.blocklist.blocked(now),
        "auth_failures": {
            "in_window": hub.blocklist.recent_auth_failures(now),
            "by_code": counts(AUTH_FAILURES),
        },
        "violations": counts(VIOLATIONS),
        "errors": hub.counters.error_counts().into_iter().map(|(c, n)| (c.as_str().to_owned(), json!(n))).collect::<Map<_, _>>(),
        "rooms": {
            "count": census.rooms,
            "members": census.members,
            "largest": census.largest.iter().map(|(room, members)| json!({"room": room, "members": members})).collect::<Vec<_>>(),
        },
        "switches": hub.switches.state(),
        "cluster": app.cluster.as_ref().map(|c| json!({"node": c.node_id(), "redis": c.health()})),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unblock {
    ip: IpAddr,
}

async fn unblock(State(app): State<AppState>, Admin(claims): Admin, JsonBody(request): JsonBody<Unblock>) -> Response {
    let mut unblocked = app.hub.blocklist.unblock(request.ip, Instant::now());
    if let Some(cluster) = &app.hub.cluster {
        // Lifted on every node.
        unblocked |= cluster.unblock(ClientKey::of(request.ip)).await;
    }
    tracing::warn!(target: "security", event = "admin_unblock", admin = %claims.user_id, unblocked, "unblock requested");
    Json(json!({ "unblocked": unblocked })).into_response()
}

async fn switches(State(app): State<AppState>, _: Admin) -> Response {
    Json(app.hub.switches.state()).into_response()
}

async fn set_switches(
    State(app): State<AppState>,
    Admin(claims): Admin,
    JsonBody(change): JsonBody<SwitchChange>,
) -> Response {
    tracing::info!(admin = %claims.user_id, "switches changed by an operator");
    Json(app.hub.switches.apply(change)).into_response()
}

/// A request whose bearer token has the `admin` role, and its claims; any
/// other request is answered with the refusal (`auth_required`, the token's
/// error, or `forbidden`).
pub struct Admin(pub Claims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
            .ok_or_else(|| refusal_response(&Refusal::new(ErrorCode::Internal, "no peer address")))?;
        admin(app, remote, &parts.headers)
            .map(Admin)
            .map_err(|refusal| refusal_response(&refusal))
    }
}

/// A JSON request body (see [`read_json`]); a bad one is answered with `invalid_message`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, app).await;
        read_json(&headers, body)
            .map(JsonBody)
            .map_err(|refusal| refusal_response(&refusal))
    }
}

/// The caller's claims if its bearer token is valid and has the `admin` role.
///
/// The blocklist is not consulted: an operator behind a blocked address must
/// still be able to lift the block (a bad token is still a strike).
pub(super) fn admin(app: &AppState, remote: SocketAddr, headers: &HeaderMap) -> Result<Claims, Refusal> {
    let claims = claims(&app.hub, remote.ip(), headers)?;
    if !claims.has_role("admin") {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "the admin API needs a token with the admin role",
        ));
    }
    Ok(claims)
}
