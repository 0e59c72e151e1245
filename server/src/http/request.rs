//! What the API's handlers read from a request (the bearer token, a JSON body,
//! the claims of the bearer token) and how they answer privately.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use proto::ErrorCode;
use serde::de::DeserializeOwned;

use crate::session::auth::Claims;
use crate::session::{Hub, Refusal};

/// The largest request body the API reads, in bytes (routes that take a body
/// set it with `DefaultBodyLimit`).
pub const MAX_BODY: usize = 16 * 1024;

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The claims of the request's bearer token: `auth_required` without one; a
/// bad one is counted and is a strike against `ip`, as a bad session token is.
pub fn claims(hub: &Hub, ip: IpAddr, headers: &HeaderMap) -> Result<Claims, Refusal> {
    let token = bearer(headers).ok_or_else(|| {
        Refusal::new(
            ErrorCode::AuthRequired,
            "send the token as `Authorization: Bearer <token>`",
        )
    })?;
    hub.authenticate(ip, token).map_err(|e| {
        hub.counters.error(e.code());
        Refusal::new(e.code(), e.to_string())
    })
}

/// The claims of a request to a route that needs a token: the service switch
/// and the blocklist are checked first, then the bearer token ([`claims`]).
pub fn authorized(hub: &Hub, ip: IpAddr, headers: &HeaderMap) -> Result<Claims, Refusal> {
    hub.switches.check_service()?;
    hub.check_blocklist(ip)?;
    claims(hub, ip, headers)
}

/// A 200 JSON answer no cache keeps (it carries tokens or credentials).
pub fn private(body: serde_json::Value) -> Response {
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The body as a `T`, or a refusal that says what is wrong with it.
pub fn read_json<T: DeserializeOwned>(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<T, Refusal> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Refusal::new(
            ErrorCode::InvalidMessage,
            "send the request as JSON, with `Content-Type: application/json`",
        ));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(
                ErrorCode::FrameTooLarge,
                format!("the request body is larger than {MAX_BODY} bytes"),
            )
        } else {
            Refusal::new(ErrorCode::InvalidMessage, "the request body could not be read")
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| Refusal::new(ErrorCode::InvalidMessage, format!("invalid request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_comes_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc.def"));
        assert_eq!(bearer(&headers), Some("abc.def"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U6eA=="));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }
}
