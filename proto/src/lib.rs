//! The wire protocol of the signaling server, and a native client that speaks it.
//!
//! This crate is the single source of truth for what crosses the wire: the
//! message types ([`message`]), their two encodings ([`codec`]: bincode for
//! native clients, JSON for browsers), stream framing ([`frame`]), protocol
//! versions ([`version`]) and the stable error codes ([`error`]). The server and
//! every client (the native [`client`], the browser module, the load generator)
//! are built on it. `PROTOCOL.md` next to this crate describes the same protocol
//! in prose, with examples that the tests decode. [`fuzzing`] is the body of
//! the fuzz targets in `fuzz/`, which the tests replay over their corpus.

pub mod client;
pub mod codec;
pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod h3;
pub mod ids;
pub mod message;
pub mod version;

pub use codec::Encoding;
pub use error::ErrorCode;
pub use ids::{CONTROL_CHANNEL, ChannelId, InvalidRoom, PeerId, RoomId};
pub use message::{
    ClientMessage, EventCount, IceServer, Member, RequestId, Seq, ServerMessage, SessionLimits, Signal, Token,
};
pub use version::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
