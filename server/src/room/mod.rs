//! Rooms: who is in which room, and relaying messages between them.
//!
//! A room is a set of seats; a seat is a session's place in the room: its peer
//! id, user id, and where to deliver (the session's outbox and the channel the
//! room uses on that session). Relaying is pushing into the target seat's
//! outbox without waiting; a target that cannot take it is cut off as a slow
//! consumer, so one stuck reader never holds up a room. Each seat keeps the
//! room's events its client has not acknowledged ([`replay`]), so that a
//! session that lost its connection can be resumed without its peers noticing.

mod registry;
pub mod replay;

pub use registry::{Census, Delivery, JoinError, Reattached, Remote, Rooms, Seat, UnknownPeer};
pub use replay::ReplayMemory;
