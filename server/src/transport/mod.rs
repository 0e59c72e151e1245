//! The transports: they move frames between sockets and the session layer, and
//! nothing else. Admission, authentication, limits and relaying are decided in
//! [`crate::session`]; a transport only knows how to carry the protocol's
//! channels (a stream each on WebTransport, an envelope on a WebSocket).

pub mod websocket;
pub mod webtransport;

use std::time::Duration;

/// How long a closing session gets to flush what is queued and its goodbye.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
