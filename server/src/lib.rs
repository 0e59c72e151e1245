//! The signaling server: WebTransport first, WSS fallback, one session layer.
//!
//! - [`accounts`]: the optional account service (logins, refresh tokens, `server users`);
//! - [`transport`]: WebTransport and WebSocket, moving frames and nothing else;
//! - [`session`]: every policy (admission, auth, budgets, limits) in one place;
//! - [`room`]: membership and relay;
//! - [`cluster`]: cluster mode, nodes joined through Redis;
//! - [`http`]: the HTTPS API and the WSS endpoint; [`metrics`]: `GET /metrics`;
//! - [`ice`]: the STUN/TURN servers sessions are handed, TURN credentials minted per session;
//! - [`tls`]: certificates, self-signed and rotated for development;
//! - [`config`]: the one typed configuration;
//! - [`app`]: wiring and graceful shutdown; [`cli`]: the command line;
//! - [`fuzzing`]: the fuzz targets' bodies for the server's own parsers (`fuzz/`).

pub mod accounts;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod fd_limit;
pub mod fuzzing;
pub mod http;
pub mod ice;
pub mod listen;
pub mod metrics;
pub mod room;
pub mod session;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod transport;
