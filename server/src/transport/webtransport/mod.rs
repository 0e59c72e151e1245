//! WebTransport (HTTP/3 over QUIC), served on quinn with our own accept loop
//! and HTTP/3 handshake ([`proto::h3`]): one session per connection, one
//! bidirectional stream per channel.
//!
//! - [`endpoint`]: the QUIC endpoint and its transport settings.
//! - this module: the accept loop. A new connection is checked before its
//!   handshake (switches and blocklist: refused without TLS work; many
//!   handshakes in flight: its address is validated with a Retry first), then
//!   gets the QUIC handshake, the HTTP/3 SETTINGS and its CONNECT request, all
//!   within the handshake timeout. The CONNECT is answered with the status of
//!   the refusal's error code and a `{"code","message"}` body, or 200.
//! - [`streams`]: a session's streams once it is accepted.
//!
//! The first stream the client opens after the CONNECT is the control
//! channel; every later one is a room's, opened by the client with `join` as
//! its first frame. The connect URL states the encoding
//! (`?encoding=json|bincode`, JSON by default) and may carry the token
//! (`?token=`).

pub mod endpoint;
mod streams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proto::h3::{self, H3Error};
use proto::{Encoding, ErrorCode};
use quinn::{Connection, Incoming, VarInt};
use tokio::time::Instant;
use tracing::Instrument;

use super::FLUSH_TIMEOUT;
use crate::session::{Connecting, Hub, Refusal, Transport};

/// Above this many handshakes in flight, a new connection's address is
/// validated with a QUIC Retry (one round trip, no state kept) before the
/// server spends a handshake on it: a flood from spoofed addresses then costs
/// a packet each, not a TLS handshake.
const RETRY_ABOVE_HANDSHAKES: usize = 256;

/// Accepts WebTransport connections until the endpoint is closed (at
/// shutdown: during one, admission refuses new sessions with 503).
pub async fn serve(endpoint: quinn::Endpoint, hub: Arc<Hub>, handshake_timeout: Duration) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    while let Some(incoming) = endpoint.accept().await {
        if hub
            .early_check(incoming.remote_address().ip(), Transport::WebTransport)
            .is_err()
        {
            // No TLS work for a blocked address or a switched-off transport.
            incoming.refuse();
            continue;
        }
        if in_flight.load(Ordering::Relaxed) >= RETRY_ABOVE_HANDSHAKES && !incoming.remote_address_validated() {
            // Fails only if the address is already validated, which was checked.
            let _ = incoming.retry();
            continue;
        }
        let guard = InFlight::enter(&in_flight);
        tokio::spawn(handle(incoming, hub.clone(), handshake_timeout, guard));
    }
}

/// One handshake in flight, counted while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(incoming: Incoming, hub: Arc<Hub>, handshake_timeout: Duration, in_flight: InFlight) {
    let remote = incoming.remote_address();
    // Everything before the session exists is bounded in time, together: the
    // QUIC handshake, the HTTP/3 SETTINGS, the CONNECT request and its answer.
    let deadline = Instant::now() + handshake_timeout;
    let conn = match tokio::time::timeout_at(deadline, async { incoming.accept()?.await }).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("QUIC handshake timed out");
            return;
        }
    };
    let established = match tokio::time::timeout_at(deadline, establish(&conn, remote, &hub)).await {
        Ok(Ok(Some(established))) => established,
        // Refused: the answer has been sent.
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/3 handshake failed");
            conn.close(VarInt::from_u32(e.code()), b"");
            return;
        }
        Err(_) => {
            tracing::debug!("HTTP/3 handshake timed out");
            conn.close(VarInt::from_u32(h3::code::REQUEST_REJECTED), b"handshake timeout");
            return;
        }
    };
    drop(in_flight);
    let Established {
        admitted,
        encoding,
        session,
    } = established;
    let session_state = hub.open_per_channel(admitted, encoding);
    let span = session_state.span().clone();
    // A task of its own, and this one ends: a task is as large as its
    // future's largest state, and the handshake's would otherwise stay
    // reserved for the session's whole life.
    tokio::spawn(streams::drive(conn, session, session_state, encoding).instrument(span));
}

/// What a connection that was accepted as a session carries into it.
struct Established {
    admitted: crate::session::Admitted,
    encoding: Encoding,
    session: streams::H3Session,
}

/// The HTTP/3 handshake and the answer to the CONNECT request: `None` when it
/// was refused (and told why).
async fn establish(conn: &Connection, remote: SocketAddr, hub: &Hub) -> Result<Option<Established>, H3Error> {
    let control = h3::open_control(conn).await?;
    let (peer, connect) = tokio::try_join!(h3::accept_control(conn), h3::accept_connect(conn))?;
    let h3::IncomingConnect {
        request,
        mut send,
        recv,
    } = connect;
    let Some(target) = Target::parse(&request.url) else {
        let refusal = Refusal::new(
            ErrorCode::InvalidMessage,
            "unknown path or encoding: connect to / or /signal, with encoding json or bincode",
        );
        refuse(conn, send, 404, &refusal).await;
        return Ok(None);
    };
    let origin = request.headers.get("origin").and_then(|v| v.to_str().ok());
    let authority = request.url.port().map_or_else(
        || request.url.host_str().unwrap_or_default().to_owned(),
        |port| format!("{}:{port}", request.url.host_str().unwrap_or_default()),
    );
    let connecting = Connecting {
        remote,
        transport: Transport::WebTransport,
        origin,
        authority: Some(&authority),
        token: target.token.as_deref(),
    };
    let admitted = match hub.preflight(&connecting).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            refuse(conn, send, refusal.code.http_status(), &refusal).await;
            return Ok(None);
        }
    };
    send.write_all(&h3::response(200, &[], b"")).await?;
    let session_id = h3::session_id(&send);
    Ok(Some(Established {
        admitted,
        encoding: target.encoding,
        session: streams::H3Session {
            _control: control,
            peer,
            connect_send: send,
            connect_recv: recv,
            session_id,
        },
    }))
}

/// Answers the CONNECT with the refusal's status, its `Retry-After` if it
/// has one, and a `{"code","message"}` body, then closes the connection once
/// the client has it (or after [`FLUSH_TIMEOUT`]).
async fn refuse(conn: &Connection, mut send: quinn::SendStream, status: u16, refusal: &Refusal) {
    let body = serde_json::json!({ "code": refusal.code, "message": refusal.message }).to_string();
    let retry_after = refusal.retry_after.map(|secs| secs.to_string());
    let mut headers = vec![("content-type", "application/json")];
    if let Some(secs) = &retry_after {
        headers.push(("retry-after", secs));
    }
    let answer = h3::response(status, &headers, body.as_bytes());
    let delivered = async {
        send.write_all(&answer).await.ok()?;
        send.finish().ok()?;
        send.stopped().await.ok()
    };
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, delivered).await;
    conn.close(VarInt::from_u32(h3::code::NO_ERROR), refusal.code.as_str().as_bytes());
}

/// What the CONNECT request's URL says.
struct Target {
    encoding: Encoding,
    token: Option<String>,
}

impl Target {
    fn parse(url: &url::Url) -> Option<Self> {
        if !matches!(url.path(), "/" | "/signal") {
            return None;
        }
        let mut target = Target {
            encoding: Encoding::Json,
            token: None,
        };
        for (key, value) in url.query_pairs() {
            match &*key {
                "encoding" => target.encoding = Encoding::from_query(&value)?,
                "token" => target.token = Some(value.into_owned()),
                _ => {}
            }
        }
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Option<Target> {
        Target::parse(&url::Url::parse("https://server:4433").unwrap().join(path).unwrap())
    }

    #[test]
    fn the_connect_path_gives_encoding_and_token() {
        let c = parse("/?encoding=bincode&token=abc").unwrap();
        assert_eq!(c.encoding, Encoding::Bincode);
        assert_eq!(c.token.as_deref(), Some("abc"));
        let c = parse("/signal").unwrap();
        assert_eq!(c.encoding, Encoding::Json);
        assert!(parse("/other").is_none());
        assert!(parse("/?encoding=xml").is_none());
    }
}
