//! The room registry, sharded so that busy rooms do not contend on one lock.
//!
//! A room holds the seats of this node's sessions and, in cluster mode, the
//! members that sit on other nodes ([`Remote`]): those are listed to newcomers
//! and addressed through the cluster relay, which [`Rooms::send_to`] and
//! [`Rooms::broadcast`] name by returning the nodes concerned.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use proto::{ChannelId, EventCount, Member, PeerId, RequestId, RoomId, Seq, ServerMessage};

use super::replay::{Replay, ReplayMemory};
use crate::session::outbox::Outbox;

const SHARDS: usize = 64;

/// A session's place in a room.
pub struct Seat {
    pub peer_id: PeerId,
    pub user_id: Arc<str>,
    link: Link,
    /// The room's events sent to the seat and not acknowledged yet.
    replay: Replay,
}

/// Where a seat's messages go.
enum Link {
    /// To the channel the room uses on the session's connection.
    Attached { channel: ChannelId, outbox: Arc<Outbox> },
    /// Nowhere yet: the session lost its connection (or was just resumed and
    /// has not joined this room's channel again). Events are only kept.
    Held,
}

impl Seat {
    pub fn new(
        peer_id: PeerId,
        user_id: Arc<str>,
        channel: ChannelId,
        outbox: Arc<Outbox>,
        memory: Arc<ReplayMemory>,
    ) -> Self {
        Self {
            peer_id,
            user_id,
            link: Link::Attached { channel, outbox },
            replay: Replay::new(memory),
        }
    }

    /// The channel the seat was joined on (none while held).
    pub fn channel(&self) -> Option<ChannelId> {
        match &self.link {
            Link::Attached { channel, .. } => Some(*channel),
            Link::Held => None,
        }
    }

    fn member(&self) -> Member {
        Member {
            peer_id: self.peer_id,
            user_id: self.user_id.to_string(),
        }
    }

    /// Queues `msg` for this seat (a seat that cannot keep up is cut off), and
    /// keeps it for a resume if it is one of the room's events; returns whether
    /// it was queued (or kept, for a held seat).
    fn deliver(&mut self, msg: Arc<ServerMessage>) -> bool {
        if msg.is_room_event() {
            self.replay.record(&msg);
        }
        match &self.link {
            Link::Attached { channel, outbox } => outbox.deliver(*channel, msg),
            Link::Held => true,
        }
    }
}

/// How a resuming join ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Reattached {
    /// `rejoined` and the missed events were queued.
    Resumed,
    /// Some missed events were forgotten: `joined` with the members was queued
    /// instead, and the numbering starts again. The other members saw nothing.
    Restarted,
}

/// A member of a room whose session is on another node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub member: Member,
    /// The node that holds its session.
    pub node: Arc<str>,
}

#[derive(Default)]
struct Room {
    seats: Vec<Seat>,
    remote: Vec<Remote>,
    /// Other nodes' members the cluster's list lacked at the last
    /// reconciliation: gone if it lacks them again (a node that lost Redis's
    /// data gets one refresh interval to register its members again).
    missing: Vec<PeerId>,
}

impl Room {
    fn len(&self) -> usize {
        self.seats.len() + self.remote.len()
    }

    fn is_empty(&self) -> bool {
        self.seats.is_empty() && self.remote.is_empty()
    }

    fn members(&self) -> Vec<Member> {
        self.seats
            .iter()
            .map(Seat::member)
            .chain(self.remote.iter().map(|r| r.member.clone()))
            .collect()
    }

    /// The other nodes with members here, each once.
    fn nodes(&self) -> Vec<Arc<str>> {
        let mut nodes: Vec<Arc<str>> = Vec::new();
        for remote in &self.remote {
            if !nodes.contains(&remote.node) {
                nodes.push(remote.node.clone());
            }
        }
        nodes
    }

    fn tell_seats(&mut self, msg: ServerMessage) {
        let msg = Arc::new(msg);
        for seat in &mut self.seats {
            seat.deliver(msg.clone());
        }
    }
}

/// Why a join failed.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinError {
    Full,
}

/// The addressed peer is not in the room.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownPeer;

/// A seat's peer id and user id.
pub type SeatIds = (PeerId, Arc<str>);

/// Where a message for one peer went.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    /// Queued for a session of this node.
    Local,
    /// The peer sits on this other node: the relay must carry the message there.
    Remote(Arc<str>, ServerMessage),
}

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
        self.join_with(room, seat, id, Vec::new(), true).map(|_| ())
    }

    /// [`Rooms::join`] in cluster mode: `remote` are the members on other nodes
    /// (from the cluster's own, exact, admission), merged with those already
    /// known; `check_cap` is false when the cluster has already counted the
    /// seat. Returns the other nodes with members here, to be told.
    pub fn join_with(
        &self,
        room: &RoomId,
        seat: Seat,
        id: Option<RequestId>,
        remote: Vec<Remote>,
        check_cap: bool,
    ) -> Result<Vec<Arc<str>>, JoinError> {
        let mut shard = self.shard(room);
        let entry = shard.entry(room.clone()).or_default();
        for member in remote {
            if !entry.remote.iter().any(|r| r.member.peer_id == member.member.peer_id) {
                entry.remote.push(member);
            }
        }
        if check_cap && entry.len() >= self.max_members {
            if entry.is_empty() {
                shard.remove(room);
            }
            return Err(JoinError::Full);
        }
        let mut seat = seat;
        seat.deliver(Arc::new(ServerMessage::Joined {
            id,
            room: room.to_string(),
            members: entry.members(),
        }));
        entry.tell_seats(ServerMessage::PeerJoined { peer: seat.member() });
        entry.seats.push(seat);
        Ok(entry.nodes())
    }

    /// Detaches `peer`'s seat in `room` from its connection: its events are
    /// kept, nobody is told. Returns whether the seat was there.
    pub fn hold(&self, room: &RoomId, peer: PeerId) -> bool {
        let mut shard = self.shard(room);
        let Some(seat) = shard
            .get_mut(room)
            .and_then(|entry| entry.seats.iter_mut().find(|s| s.peer_id == peer))
        else {
            return false;
        };
        seat.link = Link::Held;
        true
    }

    /// Attaches `peer`'s held seat in `room` to `channel` of `outbox` and
    /// queues, under the room's lock, `rejoined` (answering `id`, with the
    /// client's `last_seq`) and the events after the client's first `after`;
    /// or, if some were forgotten, `joined` with the members. `None` if the
    /// seat is not there.
    #[allow(clippy::too_many_arguments)]
    pub fn reattach(
        &self,
        room: &RoomId,
        peer: PeerId,
        channel: ChannelId,
        outbox: Arc<Outbox>,
        id: Option<RequestId>,
        after: EventCount,
        last_seq: Seq,
    ) -> Option<Reattached> {
        let mut shard = self.shard(room);
        let entry = shard.get_mut(room)?;
        let members = entry.members();
        let seat = entry.seats.iter_mut().find(|s| s.peer_id == peer)?;
        let resumed = match seat.replay.after(after) {
            Some(missed) => {
                outbox.deliver(
                    channel,
                    Arc::new(ServerMessage::Rejoined {
                        id,
                        room: room.to_string(),
                        last_seq,
                    }),
                );
                for msg in missed {
                    outbox.deliver(channel, msg);
                }
                Reattached::Resumed
            }
            None => {
                seat.replay.restart();
                let members = members.into_iter().filter(|m| m.peer_id != peer).collect();
                outbox.deliver(
                    channel,
                    Arc::new(ServerMessage::Joined {
                        id,
                        room: room.to_string(),
                        members,
                    }),
                );
                Reattached::Restarted
            }
        };
        seat.link = Link::Attached { channel, outbox };
        Some(resumed)
    }

    /// The client behind `peer` has the first `upto` events of `room`.
    pub fn received(&self, room: &RoomId, peer: PeerId, upto: EventCount) {
        let mut shard = self.shard(room);
        if let Some(seat) = shard
            .get_mut(room)
            .and_then(|entry| entry.seats.iter_mut().find(|s| s.peer_id == peer))
        {
            seat.replay.acknowledge(upto);
        }
    }

    /// Removes `peer` from `room` and tells the others. Returns the other
    /// nodes with members here (to be told) if it was there.
    pub fn leave(&self, room: &RoomId, peer: PeerId) -> Option<Vec<Arc<str>>> {
        let mut shard = self.shard(room);
        let entry = shard.get_mut(room)?;
        let index = entry.seats.iter().position(|s| s.peer_id == peer)?;
        entry.seats.swap_remove(index);
        let nodes = entry.nodes();
        if entry.seats.is_empty() {
            // Nobody here to tell; the other nodes' members are of no use without a seat.
            shard.remove(room);
        } else {
            entry.tell_seats(ServerMessage::PeerLeft { peer_id: peer });
        }
        Some(nodes)
    }

    /// Delivers `msg` to `to` in `room`, or says which node holds `to`.
    pub fn send_to(&self, room: &RoomId, to: PeerId, msg: ServerMessage) -> Result<Delivery, UnknownPeer> {
        let mut shard = self.shard(room);
        let entry = shard.get_mut(room).ok_or(UnknownPeer)?;
        if let Some(seat) = entry.seats.iter_mut().find(|s| s.peer_id == to) {
            // A peer whose session is ending is as good as gone.
            return if seat.deliver(Arc::new(msg)) {
                Ok(Delivery::Local)
            } else {
                Err(UnknownPeer)
            };
        }
        entry
            .remote
            .iter()
            .find(|r| r.member.peer_id == to)
            .map(|r| Delivery::Remote(r.node.clone(), msg))
            .ok_or(UnknownPeer)
    }

    /// Delivers `msg` to every seat of `room` but `from`'s; returns the other
    /// nodes with members here and the message, for the relay.
    pub fn broadcast(&self, room: &RoomId, from: PeerId, msg: ServerMessage) -> (Vec<Arc<str>>, Arc<ServerMessage>) {
        let msg = Arc::new(msg);
        let mut shard = self.shard(room);
        let Some(entry) = shard.get_mut(room) else {
            return (Vec::new(), msg);
        };
        for seat in entry.seats.iter_mut().filter(|s| s.peer_id != from) {
            seat.deliver(msg.clone());
        }
        (entry.nodes(), msg)
    }

    /// A member joined `room` on another node: seats here are told. Recorded
    /// even before a local seat exists (the relay may be faster than the
    /// local join that asked for the room).
    pub fn remote_joined(&self, room: &RoomId, remote: Remote) {
        let mut shard = self.shard(room);
        let entry = shard.entry(room.clone()).or_default();
        if entry.remote.iter().any(|r| r.member.peer_id == remote.member.peer_id)
            || entry.seats.iter().any(|s| s.peer_id == remote.member.peer_id)
        {
            return;
        }
        entry.tell_seats(ServerMessage::PeerJoined {
            peer: remote.member.clone(),
        });
        entry.remote.push(remote);
    }

    /// A member of another node left `room`: seats here are told.
    pub fn remote_left(&self, room: &RoomId, peer: PeerId) {
        let mut shard = self.shard(room);
        let Some(entry) = shard.get_mut(room) else {
            return;
        };
        let Some(index) = entry.remote.iter().position(|r| r.member.peer_id == peer) else {
            return;
        };
        entry.remote.swap_remove(index);
        entry.tell_seats(ServerMessage::PeerLeft { peer_id: peer });
        if entry.is_empty() {
            shard.remove(room);
        }
    }

    /// Delivers a message relayed from another node: to `to`, or to every seat
    /// but `from`'s.
    pub fn deliver_relayed(&self, room: &RoomId, to: Option<PeerId>, from: PeerId, msg: ServerMessage) {
        let mut shard = self.shard(room);
        let Some(entry) = shard.get_mut(room) else {
            return;
        };
        let msg = Arc::new(msg);
        for seat in entry.seats.iter_mut() {
            if to.map_or(seat.peer_id != from, |to| seat.peer_id == to) {
                seat.deliver(msg.clone());
            }
        }
    }

    /// Every room with seats here, with the peer and user ids of its seats.
    pub fn local_rooms(&self) -> Vec<(RoomId, Vec<SeatIds>)> {
        let mut rooms = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("room shard lock");
            for (id, room) in shard.iter() {
                if !room.seats.is_empty() {
                    let seats = room.seats.iter().map(|s| (s.peer_id, s.user_id.clone())).collect();
                    rooms.push((id.clone(), seats));
                }
            }
        }
        rooms
    }

    /// Brings the other nodes' members of `room` in line with `members` (the
    /// cluster's list, without this node's): the new join, and the seats here
    /// are told; a member absent from two lists in a row leaves, unless
    /// `leaves` is false (Redis just came back). Rooms without seats are dropped.
    pub fn reconcile(&self, room: &RoomId, members: Vec<Remote>, leaves: bool) {
        let mut shard = self.shard(room);
        let Some(entry) = shard.get_mut(room) else {
            return;
        };
        if entry.seats.is_empty() {
            shard.remove(room);
            return;
        }
        let absent: Vec<PeerId> = entry
            .remote
            .iter()
            .filter(|r| !members.iter().any(|m| m.member.peer_id == r.member.peer_id))
            .map(|r| r.member.peer_id)
            .collect();
        let (gone, first_miss): (Vec<PeerId>, Vec<PeerId>) = absent
            .into_iter()
            .partition(|peer| leaves && entry.missing.contains(peer));
        entry.missing = first_miss;
        entry.remote.retain(|r| !gone.contains(&r.member.peer_id));
        for peer_id in gone {
            entry.tell_seats(ServerMessage::PeerLeft { peer_id });
        }
        for member in members {
            let known = entry.remote.iter().any(|r| r.member.peer_id == member.member.peer_id)
                || entry.seats.iter().any(|s| s.peer_id == member.member.peer_id);
            if !known {
                entry.tell_seats(ServerMessage::PeerJoined {
                    peer: member.member.clone(),
                });
                entry.remote.push(member);
            }
        }
    }

    /// Forgets rooms that have no seat here (only other nodes' members, learnt
    /// from the relay for a join that never came).
    pub fn forget_seatless(&self) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .expect("room shard lock")
                .retain(|_, room| !room.seats.is_empty());
        }
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
                census.members += room.len();
                census.largest.push((id.to_string(), room.len()));
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
        let seat = Seat::new(
            PeerId(peer),
            format!("user{peer}").into(),
            1,
            outbox,
            ReplayMemory::new(1 << 20, 100),
        );
        (seat, rx)
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
        assert!(rooms.leave(&room("r"), PeerId(1)).is_some());
        assert_eq!(rooms.room_count(), 0);
        assert!(rooms.leave(&room("r"), PeerId(1)).is_none());
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

    fn remote(peer: u64, node: &str) -> Remote {
        Remote {
            member: Member {
                peer_id: PeerId(peer),
                user_id: format!("user{peer}"),
            },
            node: node.into(),
        }
    }

    fn drain(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<ServerMessage> {
        std::iter::from_fn(|| rx.try_recv().ok().map(|o| (*o.msg).clone())).collect()
    }

    #[test]
    fn other_nodes_members_are_listed_addressed_and_leave_only_when_missing_twice() {
        let rooms = Rooms::new(8);
        let (a, mut a_rx) = seat(1);
        let nodes = rooms
            .join_with(&room("r"), a, None, vec![remote(2, "n2")], false)
            .unwrap();
        assert_eq!(nodes, vec![Arc::<str>::from("n2")]);
        assert!(matches!(&drain(&mut a_rx)[..], [ServerMessage::Joined { members, .. }] if members.len() == 1));
        let msg = ServerMessage::PeerLeft { peer_id: PeerId(0) };
        assert_eq!(
            rooms.send_to(&room("r"), PeerId(2), msg.clone()),
            Ok(Delivery::Remote("n2".into(), msg.clone()))
        );
        assert_eq!(rooms.send_to(&room("r"), PeerId(3), msg), Err(UnknownPeer));
        rooms.remote_joined(&room("r"), remote(3, "n3"));
        assert_eq!(drain(&mut a_rx).len(), 1, "peer_joined");
        // The cluster's list lacks 2 once (Redis lost its data): nothing happens.
        rooms.reconcile(&room("r"), vec![remote(3, "n3")], true);
        assert!(drain(&mut a_rx).is_empty());
        // Twice: 2 has left.
        rooms.reconcile(&room("r"), vec![remote(3, "n3")], true);
        assert_eq!(drain(&mut a_rx), vec![ServerMessage::PeerLeft { peer_id: PeerId(2) }]);
        // Back in the list after one miss: still there, no churn.
        rooms.reconcile(&room("r"), vec![], true);
        rooms.reconcile(&room("r"), vec![remote(3, "n3")], true);
        assert!(drain(&mut a_rx).is_empty());
    }

    #[test]
    fn a_reader_that_cannot_keep_up_is_cut_off_as_slow() {
        let rooms = Rooms::new(8);
        let (alice, _alice_rx) = seat(1);
        let (bob, _bob_rx) = seat(2);
        let Link::Attached { outbox: bob_outbox, .. } = &bob.link else {
            unreachable!()
        };
        let bob_outbox = bob_outbox.clone();
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
