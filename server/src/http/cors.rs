//! The HTTP API's origin policy: CORS for the pages on the allow-list, a
//! refusal for every other page.
//!
//! Browsers send an `Origin` with cross-origin requests. For `/auth/*` and
//! `/admin/*`, a request from an origin that is not allowed (see
//! `allowed_origins`; the server's own pages always are) is refused with 403
//! `origin_not_allowed` before its handler runs, preflights included; an
//! allowed one gets `Access-Control-Allow-Origin` naming it. Requests without
//! an `Origin` (curl, native clients) are not affected. Every API route
//! registers [`preflight`] for `OPTIONS`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use proto::ErrorCode;

use super::{AppState, refusal_response};
use crate::session::Refusal;

/// What a preflight may ask for.
const ALLOW_METHODS: &str = "GET, POST";
const ALLOW_HEADERS: &str = "authorization, content-type";
/// How long a browser may cache a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// Middleware for the API routes.
pub async fn guard(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let authority = request.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    let allowed = origin.to_str().is_ok_and(|o| app.hub.origin_allowed(o, authority));
    if !allowed {
        let refusal = Refusal::new(
            ErrorCode::OriginNotAllowed,
            "pages from this origin may not call this API (see allowed_origins)",
        );
        tracing::info!(target: "security", event = "origin_refused", path = %request.uri().path(), "API call from a foreign origin refused");
        return refusal_response(&refusal);
    }
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// The handler an API route registers for `OPTIONS`, so that preflights reach
/// [`guard`] (which answers them) instead of a 405.
pub async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}
