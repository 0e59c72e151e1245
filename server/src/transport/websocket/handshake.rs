//! The WebSocket opening handshake, server side (RFC 6455 §4.2): checks a
//! client's upgrade request and builds the `101 Switching Protocols` answer.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// Why a request is not a WebSocket upgrade this server accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAnUpgrade {
    #[error("the Upgrade header must be `websocket`")]
    Upgrade,
    #[error("the Connection header must include `upgrade`")]
    Connection,
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    Key,
}

impl NotAnUpgrade {
    /// The HTTP status: 426 (with the version this server speaks) for a wrong
    /// version, 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            NotAnUpgrade::Version => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks the request's headers; returns the `Sec-WebSocket-Accept` value.
pub fn accept(headers: &HeaderMap) -> Result<HeaderValue, NotAnUpgrade> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::UPGRADE, "websocket") {
        return Err(NotAnUpgrade::Upgrade);
    }
    if !has_token(header::CONNECTION, "upgrade") {
        return Err(NotAnUpgrade::Connection);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(NotAnUpgrade::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().trim_ascii())
        .filter(|k| STANDARD.decode(k).is_ok_and(|raw| raw.len() == 16))
        .ok_or(NotAnUpgrade::Key)?;
    Ok(accept_value(key))
}

/// base64(SHA-1(key + the protocol's GUID)).
fn accept_value(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    HeaderValue::from_str(&STANDARD.encode(sha1.finalize())).expect("base64 is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn the_accept_value_is_the_one_of_rfc_6455() {
        // §1.3's example.
        assert_eq!(accept(&request(&GOOD)).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        // Firefox says `Connection: keep-alive, Upgrade`; header case does not matter.
        let mut firefox = GOOD;
        firefox[1] = ("connection", "keep-alive, Upgrade");
        firefox[0] = ("upgrade", "WebSocket");
        assert!(accept(&request(&firefox)).is_ok());
    }

    #[test]
    fn a_request_that_is_not_an_upgrade_is_told_what_is_wrong() {
        let without = |name: &str| -> Vec<(&'static str, &'static str)> {
            GOOD.iter().copied().filter(|(n, _)| *n != name).collect()
        };
        assert_eq!(accept(&request(&without("upgrade"))), Err(NotAnUpgrade::Upgrade));
        assert_eq!(accept(&request(&without("connection"))), Err(NotAnUpgrade::Connection));
        assert_eq!(accept(&request(&without("sec-websocket-key"))), Err(NotAnUpgrade::Key));
        let mut old = without("sec-websocket-version");
        old.push(("sec-websocket-version", "8"));
        let err = accept(&request(&old)).unwrap_err();
        assert_eq!(
            (err.status(), err),
            (StatusCode::UPGRADE_REQUIRED, NotAnUpgrade::Version)
        );
        let mut short = without("sec-websocket-key");
        short.push(("sec-websocket-key", "c2hvcnQ="));
        assert_eq!(accept(&request(&short)), Err(NotAnUpgrade::Key));
    }
}
