//! The room registry, sharded so that busy rooms do not contend on one lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use proto::{ChannelId, Member, PeerId, RequestId, RoomId, ServerMessage};

use crate::session::outbox::Outbox;

const SHARDS: usize = 64;

/// A session's place in a room.
#[derive(Clone)]
pub struct Seat {
    pub peer_id: PeerId,
    pub user_id: Arc<str>,
    pub channel: ChannelId,
    pub outbox: Arc<Outbox>,
}

impl Seat {
    fn member(&self) -> Member {
        Member {
            peer_id: self.peer_id,
            user_id: self.user_id.to_string(),
        }
    }

    /// Queues `msg` for this seat (a seat that cannot keep up is cut off);
    /// returns whether it was queued.
    fn deliver(&self, msg: Arc<ServerMessage>) -> bool {
        self.outbox.deliver(self.channel, msg)
    }
}

#[derive(Default)]
struct Room {
    seats: Vec<Seat>,
}

/// Why a join failed.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinError {
    Full,
}

/// The addressed peer is not in the room.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownPeer;

pub struct Rooms {
    shards: Box<[Mutex<HashMap<RoomId, Room>>]>,
    hasher: RandomState,
    max_members: usize,
}

impl Rooms {
    pub fn new(max_members: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            max_members,
        }
    }

    fn shard(&self, room: &RoomId) -> std::sync::MutexGuard<'_, HashMap<RoomId, Room>> {
        let index = self.hasher.hash_one(room) as usize % SHARDS;
        self.shards[index].lock().expect("room shard lock")
    }

    /// Seats `seat` in `room`, sends it `joined` (answering request `id`) with
    /// the members already there, and tells them. Both happen under the room's
    /// lock, so nothing from the room can reach the newcomer before its `joined`.
    pub fn join(&self, room: &RoomId, seat: Seat, id: Option<RequestId>) -> Result<(), JoinError> {
        let mut shard = self.shard(room);
        let entry = shard.entry(room.clone()).or_default();
        if entry.seats.len() >= self.max_members {
            if entry.seats.is_empty() {
                shard.remove(room);
            }
            return Err(JoinError::Full);
        }
        let members = entry.seats.iter().map(Seat::member).collect();
        seat.deliver(Arc::new(ServerMessage::Joined {
            id,
            room: room.to_string(),
            members,
        }));
        let joined = Arc::new(ServerMessage::PeerJoined { peer: seat.member() });
        for other in &entry.seats {
            other.deliver(joined.clone());
        }
        entry.seats.push(seat);
        Ok(())
    }

    /// Removes `peer` from `room` and tells the others. Returns whether it was there.
    pub fn leave(&self, room: &RoomId, peer: PeerId) -> bool {
        let mut shard = self.shard(room);
        let Some(entry) = shard.get_mut(room) else {
            return false;
        };
        let Some(index) = entry.seats.iter().position(|s| s.peer_id == peer) else {
            return false;
        };
        entry.seats.swap_remove(index);
        if entry.seats.is_empty() {
            shard.remove(room);
        } else {
            let left = Arc::new(ServerMessage::PeerLeft { peer_id: peer });
            for other in &entry.seats {
                other.deliver(left.clone());
            }
        }
        true
    }

    /// Delivers `msg` to `to` in `room`.
    pub fn send_to(&self, room: &RoomId, to: PeerId, msg: ServerMessage) -> Result<(), UnknownPeer> {
        let shard = self.shard(room);
        let seat = shard
            .get(room)
            .and_then(|r| r.seats.iter().find(|s| s.peer_id == to))
            .ok_or(UnknownPeer)?;
        // A peer whose session is ending is as good as gone.
        if seat.deliver(Arc::new(msg)) {
            Ok(())
        } else {
            Err(UnknownPeer)
        }
    }

    /// Delivers `msg` to everyone in `room` but `from`; returns how many got it.
    pub fn broadcast(&self, room: &RoomId, from: PeerId, msg: ServerMessage) -> usize {
        let shard = self.shard(room);
        let Some(entry) = shard.get(room) else {
            return 0;
        };
        let msg = Arc::new(msg);
        let mut sent = 0;
        for seat in entry.seats.iter().filter(|s| s.peer_id != from) {
            seat.deliver(msg.clone());
            sent += 1;
        }
        sent
    }

    /// Rooms that have at least one member.
    pub fn room_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("room shard lock").len())
            .sum()
    }

    /// Rooms, members in all of them, and the `n` largest rooms with their sizes
    /// (for the admin view; takes each shard's lock once).
    pub fn census(&self, n: usize) -> Census {
        let mut census = Census::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("room shard lock");
            census.rooms += shard.len();
            for (id, room) in shard.iter() {
                census.members += room.seats.len();
                census.largest.push((id.to_string(), room.seats.len()));
            }
            census.largest.sort_by_key(|(_, members)| std::cmp::Reverse(*members));
            census.largest.truncate(n);
        }
        census
    }
}

/// What the admin view shows of the rooms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub rooms: usize,
    pub members: usize,
    /// `(room, members)`, largest first.
    pub largest: Vec<(String, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::outbox::Outgoing;
    use proto::ErrorCode;
    use tokio::sync::mpsc;

    fn seat(peer: u64) -> (Seat, mpsc::Receiver<Outgoing>) {
        let (outbox, rx) = Outbox::shared(8, 1 << 20);
        (
            Seat {
                peer_id: PeerId(peer),
                user_id: format!("user{peer}").into(),
                channel: 1,
                outbox,
            },
            rx,
        )
    }

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    #[test]
    fn joining_announces_the_newcomer_and_lists_the_others() {
        let rooms = Rooms::new(8);
        let (alice, mut alice_rx) = seat(1);
        let (bob, mut bob_rx) = seat(2);
        rooms.join(&room("r"), alice, Some(7)).unwrap();
        assert!(
            matches!(&*alice_rx.try_recv().unwrap().msg, ServerMessage::Joined { id: Some(7), members, .. } if members.is_empty())
        );
        rooms.join(&room("r"), bob, None).unwrap();
        let out = bob_rx.try_recv().unwrap();
        assert!(matches!(&*out.msg, ServerMessage::Joined { members, .. } if members[0].peer_id == PeerId(1)));
        let out = alice_rx.try_recv().unwrap();
        assert!(matches!(&*out.msg, ServerMessage::PeerJoined { peer } if peer.peer_id == PeerId(2)));
    }

    #[test]
    fn a_full_room_refuses_and_an_empty_room_disappears() {
        let rooms = Rooms::new(1);
        let (alice, _a) = seat(1);
        let (bob, _b) = seat(2);
        rooms.join(&room("r"), alice, None).unwrap();
        assert_eq!(rooms.join(&room("r"), bob, None), Err(JoinError::Full));
        assert!(rooms.leave(&room("r"), PeerId(1)));
        assert_eq!(rooms.room_count(), 0);
        assert!(!rooms.leave(&room("r"), PeerId(1)));
    }

    #[test]
    fn a_signal_reaches_only_its_target_and_unknown_peers_are_reported() {
        let rooms = Rooms::new(8);
        let (alice, mut alice_rx) = seat(1);
        let (bob, mut bob_rx) = seat(2);
        rooms.join(&room("r"), alice, None).unwrap();
        rooms.join(&room("r"), bob, None).unwrap();
        let _ = alice_rx.try_recv();
        let _ = alice_rx.try_recv();
        let _ = bob_rx.try_recv();
        let msg = ServerMessage::Broadcast {
            from: PeerId(1),
            data: "hi".into(),
        };
        rooms.send_to(&room("r"), PeerId(2), msg.clone()).unwrap();
        assert!(bob_rx.try_recv().is_ok());
        assert!(alice_rx.try_recv().is_err());
        assert_eq!(rooms.send_to(&room("r"), PeerId(9), msg), Err(UnknownPeer));
    }

    #[test]
    fn a_reader_that_cannot_keep_up_is_cut_off_as_slow() {
        let rooms = Rooms::new(8);
        let (alice, _alice_rx) = seat(1);
        let (bob, _bob_rx) = seat(2);
        let bob_outbox = bob.outbox.clone();
        rooms.join(&room("r"), alice, None).unwrap();
        rooms.join(&room("r"), bob, None).unwrap();
        for _ in 0..9 {
            rooms.broadcast(
                &room("r"),
                PeerId(1),
                ServerMessage::Broadcast {
                    from: PeerId(1),
                    data: "x".into(),
                },
            );
        }
        assert_eq!(bob_outbox.goodbye().map(|g| g.code), Some(ErrorCode::SlowConsumer));
    }
}
