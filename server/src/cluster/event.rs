//! What nodes tell each other through Redis pub/sub: one channel per node
//! (`sig:node:<id>`), so a node has one subscription whatever the number of
//! rooms and sessions. Events are bincode, as the native protocol is.

use bincode::{Decode, Encode};
use proto::{Member, PeerId, ServerMessage};

/// The pub/sub channel of a node.
pub fn channel_of(node: &str) -> String {
    format!("sig:node:{node}")
}

/// One event for the sessions of the receiving node.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Event {
    /// `member` joined `room` on node `node`.
    Joined { room: String, member: Member, node: String },
    /// `peer` left `room` (on the sending node).
    Left { room: String, peer: PeerId },
    /// A message for `to` in `room`, or for every member but `from` when `to` is `None`.
    Deliver {
        room: String,
        to: Option<PeerId>,
        from: PeerId,
        msg: ServerMessage,
    },
    /// A client tried to resume the session `session` (held by the receiving
    /// node) on another node, which starts a new session instead: the held
    /// one ends now if it is `user`'s (its peers see it leave).
    Release { session: [u8; 16], user: String },
}

/// Events larger than this are refused on decoding (a relayed message is at
/// most a client frame, 1 MiB, plus a little).
const MAX_EVENT: usize = (1 << 20) + 4096;

const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_EVENT>,
> = bincode::config::standard().with_limit::<MAX_EVENT>();

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, CONFIG).expect("events encode")
    }

    pub fn decode(bytes: &[u8]) -> Option<Event> {
        bincode::decode_from_slice(bytes, CONFIG).ok().map(|(event, _)| event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_refused() {
        let event = Event::Deliver {
            room: "r".into(),
            to: Some(PeerId(7)),
            from: PeerId(9),
            msg: ServerMessage::PeerLeft { peer_id: PeerId(3) },
        };
        assert_eq!(Event::decode(&event.encode()), Some(event));
        assert_eq!(Event::decode(&[0xff, 0xff, 0xff]), None);
    }
}
