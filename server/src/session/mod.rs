//! The session layer: every policy the server applies to a client, in one place
//! that does not know which transport it serves.
//!
//! - [`admission`]: the global and per-IP connection caps and the per-IP rate of
//!   new connections, checked before any session exists;
//! - [`auth`]: the JWT that opens a session;
//! - [`blocklist`]: addresses blocked for failed authentication or abuse;
//! - [`budget`]: the per-session message and byte budgets;
//! - [`outbox`]: the bounded outbound queues, and the session's end;
//! - [`resume`]: sessions that lost their connection, held and resumed on a new one;
//! - [`score`]: points for violations, which close a session that collects too many;
//! - [`session`]: the state machine that takes frames in, checks them against
//!   the limits and decodes them; `requests` acts on each decoded message;
//! - [`switches`]: the operator's switches for the service and each transport;
//! - [`hub`]: what all sessions share, and where transports open sessions.
//!
//! Transports hand frames in ([`Session::on_stream_frame`],
//! [`Session::on_envelope_frame`]) and write out what lands in the outbox.

pub mod addr;
pub mod admission;
pub mod auth;
pub mod blocklist;
pub mod budget;
pub mod counters;
pub mod hub;
pub mod outbox;
mod requests;
pub mod resume;
pub mod score;
#[allow(clippy::module_inception)]
pub mod session;
pub mod switches;

pub use admission::{Permit, Refusal};
pub use hub::{Admitted, Connecting, Hub};
pub use outbox::{Goodbye, Outbox, Outgoing};
pub use session::Session;
pub use switches::Transport;
