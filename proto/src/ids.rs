//! Identifiers that appear on the wire: peers, rooms and channels.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A logical channel of a session. Channel 0 is the control channel; every
/// joined room has a channel of its own (a WebTransport stream, or a channel id
/// carried in each WebSocket frame).
pub type ChannelId = u32;

/// The control channel: authentication, pings and session-wide notices.
pub const CONTROL_CHANNEL: ChannelId = 0;

/// A peer, i.e. one session, as other peers see it.
///
/// Random and unique per session. In JSON it is a 16-digit hex string, because
/// JavaScript numbers cannot hold 64 bits; in bincode it is a plain `u64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(PeerId)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(serde::de::Error::custom("peer id must be 16 lowercase hex digits"));
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A validated room name: 1 to 64 characters from `A-Z a-z 0-9 _ - . : @`.
///
/// Messages carry room names as plain strings so that a bad name gets its own
/// error code (`invalid_room`) rather than a decoding error; the server turns
/// them into `RoomId`s with [`RoomId::parse`].
///
/// Shared, not copied: the server clones a room's id for every message relayed
/// in it, and a clone is a reference count, not an allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RoomId(Arc<str>);

/// Why a string is not a room name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoom {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {max} bytes", max = RoomId::MAX_LEN)]
    TooLong,
    #[error("room name may only contain A-Z a-z 0-9 _ - . : @")]
    BadCharacter,
}

impl RoomId {
    /// The longest room name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Checks a room name.
    ///
    /// ```
    /// # use proto::RoomId;
    /// assert!(RoomId::parse("lobby").is_ok());
    /// assert!(RoomId::parse("no spaces").is_err());
    /// ```
    pub fn parse(name: &str) -> Result<Self, InvalidRoom> {
        if name.is_empty() {
            return Err(InvalidRoom::Empty);
        }
        if name.len() > Self::MAX_LEN {
            return Err(InvalidRoom::TooLong);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.:@".contains(c);
        if !name.chars().all(allowed) {
            return Err(InvalidRoom::BadCharacter);
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_are_hex_strings_in_json() {
        let id = PeerId(0xdead_beef);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"00000000deadbeef\"");
        assert_eq!(serde_json::from_str::<PeerId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<PeerId>("\"xyz\"").is_err());
        assert!(serde_json::from_str::<PeerId>("\"beef\"").is_err());
    }

    #[test]
    fn room_names_are_checked() {
        assert_eq!(RoomId::parse(""), Err(InvalidRoom::Empty));
        assert_eq!(RoomId::parse(&"a".repeat(65)), Err(InvalidRoom::TooLong));
        assert_eq!(RoomId::parse("a/b"), Err(InvalidRoom::BadCharacter));
        assert_eq!(RoomId::parse("team:42@eu-1").unwrap().as_str(), "team:42@eu-1");
    }

    #[test]
    fn a_cloned_room_id_shares_its_name() {
        let room = RoomId::parse("lobby").unwrap();
        let clone = room.clone();
        assert_eq!(clone, room);
        assert!(std::ptr::eq(room.as_str(), clone.as_str()));
    }
}
