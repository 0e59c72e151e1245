//! The HTTPS side: health and readiness, the certificate hashes browsers pin,
//! the WSS endpoint, and the demo page.
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | liveness: 200 while the process runs |
//! | `GET /ready` | readiness: 200 `{"status":"ready"}` (`"degraded"` in cluster mode while Redis is down), 503 while shutting down or switched off |
//! | `GET /cert-hashes` | SHA-256 hashes of the published certificates, for `serverCertificateHashes` |
//! | `GET /ws` | the WebSocket (WSS) transport |
//! | `/admin/*` | the operators' view ([`admin`]) |
//! | `GET /metrics` | Prometheus metrics ([`crate::metrics`]): from loopback and private addresses, or with an admin token |
//! | `POST /auth/login`, `POST /auth/refresh`, `GET /auth/me` | the account service (see [`auth`]) |
//! | `GET /ice-servers` | the STUN/TURN servers for the bearer token's user, TURN credentials minted ([`ice`]) |
//! | `GET /` | the web client's demo page; `/signaling.js`, `/demo.js`, `/demo.css` its files |
//!
//! Every response advertises the HTTP/3 (WebTransport) port in `Alt-Svc`. The
//! API routes answer only pages on the origin allow-list ([`cors`]).

pub mod admin;
pub mod auth;
pub mod cors;
pub mod ice;
pub mod request;
mod serve;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub use serve::serve;

use crate::accounts::Accounts;
use crate::cluster::{Cluster, Health};
use crate::session::{Hub, Refusal};
use crate::tls::{CertStore, hex};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub certs: Arc<CertStore>,
    pub webtransport_port: u16,
    pub accounts: Arc<Accounts>,
    /// This node's place in the cluster, in cluster mode.
    pub cluster: Option<Arc<Cluster>>,
}

pub fn router(state: AppState) -> Router {
    let alt_svc = HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", state.webtransport_port))
        .expect("a port number makes a valid header");
    let api = Router::new()
        .merge(admin::routes())
        .merge(auth::routes())
        .merge(ice::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors::guard));
    Router::new()
        .merge(api)
        .route("/", get(index))
        .route(
            "/signaling.js",
            get(|| {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../../../web-client/signaling.js"),
                )
            }),
        )
        .route(
            "/demo.js",
            get(|| {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../../../web-client/demo.js"),
                )
            }),
        )
        .route(
            "/demo.css",
            get(|| asset("text/css; charset=utf-8", include_str!("../../../web-client/demo.css"))),
        )
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/cert-hashes", get(cert_hashes))
        .route("/ws", get(crate::transport::websocket::upgrade))
        .layer(axum::middleware::map_response(move |mut response: Response| {
            let alt_svc = alt_svc.clone();
            async move {
                response.headers_mut().insert(header::ALT_SVC, alt_svc);
                response
            }
        }))
        .with_state(state)
}

/// An HTTP refusal carrying the error code: the status that goes with the code
/// and a JSON body `{"code": ..., "message": ...}`.
pub fn refusal_response(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        Json(json!({ "code": refusal.code, "message": refusal.message })),
    )
        .into_response();
    if let Some(secs) = refusal.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

async fn ready(State(state): State<AppState>) -> Response {
    if *state.hub.shutdown_signal().borrow() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting_down" })),
        )
            .into_response()
    } else if !state.hub.switches.state().service {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "disabled" }))).into_response()
    } else if let Some(cluster) = state.cluster.as_ref().filter(|c| c.health() == Health::Down) {
        // Still serving (local sessions and rooms): a load balancer should keep
        // sending clients, so 200; the status says what is missing.
        Json(json!({
            "status": "degraded",
            "redis": Health::Down,
            "node": cluster.node_id(),
            "sessions": state.hub.admission.open(),
        }))
        .into_response()
    } else {
        Json(json!({ "status": "ready", "sessions": state.hub.admission.open() })).into_response()
    }
}

/// `GET /metrics`: open to scrapers on loopback and private networks (where
/// Prometheus usually runs); from anywhere else, an admin token is needed.
async fn metrics(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(remote): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !is_private(remote.ip())
        && let Err(refusal) = admin::admin(&state, remote, &headers)
    {
        return refusal_response(&refusal);
    }
    let body = crate::metrics::render(&state.hub, state.cluster.as_deref());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Loopback, RFC 1918, link-local, and IPv6 unique-local addresses.
fn is_private(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

async fn cert_hashes(State(state): State<AppState>) -> Response {
    let hashes: Vec<_> = state
        .certs
        .hashes()
        .iter()
        .map(|h| json!({ "algorithm": "sha-256", "value": hex(h) }))
        .collect();
    let body = Json(json!({
        "hashes": hashes,
        "self_signed": state.certs.is_self_signed(),
        "webtransport_port": state.webtransport_port,
    }));
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../../../web-client/index.html"))
}

/// A file of the web client, compiled into the binary so the server needs no
/// files at run time.
async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_are_open_to_private_networks_only() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.9",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(super::is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.113.7", "2001:db8::1", "8.8.8.8"] {
            assert!(!super::is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
