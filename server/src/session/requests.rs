//! Requests: what the session does with each decoded client message.
//!
//! `hello` opens the session (or resumes one, [`super::resume`]) and `refresh`
//! renews its token; `join`, `leave`, `signal` and `broadcast` act on rooms (the
//! last two only with a `seq` above the channel's last one), `received`
//! acknowledges a room's events; `ping` is answered, and so is `ice_servers`
//! (with freshly minted TURN credentials). Every refusal is an `error` with its code, on the
//! request's channel (errors that end the session go on the control channel,
//! followed by the `goodbye`). [`super::session`] checks frames against the limits and
//! decodes them before they get here.

use proto::version::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, negotiate};
use proto::{
    CONTROL_CHANNEL, ChannelId, ClientMessage, ErrorCode, EventCount, PeerId, RequestId, RoomId, Seq, ServerMessage,
    Signal, Token,
};

use super::auth::Claims;
use super::resume::{ResumeError, SessionKey};
use super::session::{Phase, Session, State};
use crate::cluster::ClusterError;
use crate::cluster::event::Event;
use crate::cluster::relay::Ack;
use crate::room::{Delivery, JoinError, Remote, Seat, UnknownPeer};

impl Session {
    pub(super) fn dispatch(&self, state: &mut State, channel: ChannelId, msg: ClientMessage) {
        let id = msg.request_id();
        match (&mut state.phase, msg) {
            (
                Phase::AwaitingHello { preauth, .. },
                ClientMessage::Hello {
                    id,
                    version,
                    token,
                    resume,
                },
            ) => {
                if self.off_control(channel, id, "hello") {
                    return;
                }
                let preauth = preauth.take();
                let Some((claims, version)) = self.authenticate_hello(id, version, token, preauth) else {
                    return;
                };
                match resume {
                    Some(resume) => self.hello_resume(state, id, version, claims, &resume),
                    None => self.open_new(state, id, version, claims),
                }
            }
            (Phase::AwaitingHello { .. }, _) => {
                // The token comes first: anything else ends the session.
                self.fatal(
                    id,
                    ErrorCode::AuthRequired,
                    "the first message must be hello with a token".into(),
                );
            }
            (Phase::Open { .. }, ClientMessage::Hello { .. }) => {
                self.error(
                    channel,
                    id,
                    ErrorCode::AlreadyAuthenticated,
                    "the session is already authenticated".into(),
                );
            }
            (Phase::Open { claims, .. }, ClientMessage::Join { id, room, resume_after }) => {
                let claims = claims.clone();
                self.join(state, &claims, channel, id, &room, resume_after);
            }
            (Phase::Open { .. }, ClientMessage::Received { upto }) => {
                if let Some(room) = self.room_of(state, channel, None) {
                    self.hub.rooms.received(&room, self.peer_id(), upto);
                }
            }
            (Phase::Open { .. }, ClientMessage::Leave { id }) => self.leave(state, channel, id),
            (Phase::Open { .. }, ClientMessage::Signal { id, seq, to, signal }) => {
                let Some(room) = self.room_of(state, channel, id) else {
                    return;
                };
                if self.check_seq(state, channel, id, seq) {
                    self.signal(&room, channel, id, to, signal)
                }
            }
            (Phase::Open { .. }, ClientMessage::Broadcast { id, seq, data }) => {
                let Some(room) = self.room_of(state, channel, id) else {
                    return;
                };
                if !self.check_seq(state, channel, id, seq) {
                    return;
                }
                let msg = ServerMessage::Broadcast {
                    from: self.peer_id(),
                    data,
                };
                let (nodes, msg) = self.hub.rooms.broadcast(&room, self.peer_id(), msg);
                if nodes.is_empty() {
                    self.ack(channel, id);
                } else {
                    let msg = std::sync::Arc::unwrap_or_clone(msg);
                    self.relay(&room, channel, id, None, msg, nodes);
                }
            }
            (Phase::Open { .. }, ClientMessage::Ping { id, nonce }) => {
                self.send(channel, ServerMessage::Pong { id, nonce })
            }
            (Phase::Open { .. }, ClientMessage::Refresh { id, token }) => self.refresh(state, channel, id, &token),
            (Phase::Open { claims, .. }, ClientMessage::IceServers { id }) => {
                if self.off_control(channel, id, "ice_servers") {
                    return;
                }
                let grant = self.hub.ice.grant(&claims.user_id);
                let answer = ServerMessage::IceServers {
                    id,
                    ice_servers: grant.servers,
                    expires_at: grant.expires_at,
                };
                self.send(channel, answer);
            }
        }
    }

    /// Refuses a control request (`what`) sent on a room's channel with
    /// `wrong_channel`; true if it was.
    fn off_control(&self, channel: ChannelId, id: Option<RequestId>, what: &str) -> bool {
        if channel == CONTROL_CHANNEL {
            return false;
        }
        let message = format!("{what} goes on the control channel (0)");
        self.error(channel, id, ErrorCode::WrongChannel, message);
        true
    }

    /// Accepts `seq` if it is above the channel's last one, else reports the
    /// message as replayed (or as missing its `seq`).
    fn check_seq(&self, state: &mut State, channel: ChannelId, id: Option<RequestId>, seq: Option<Seq>) -> bool {
        let Some(seq) = seq else {
            let message = "signal and broadcast need a seq, increasing per channel".into();
            self.violation(state, channel, id, ErrorCode::InvalidMessage, message);
            return false;
        };
        match state.seqs.get(&channel) {
            Some(&last) if seq <= last => {
                let message = format!("seq {seq} is not above this channel's last seq {last}; not relayed");
                self.violation(state, channel, id, ErrorCode::Replayed, message);
                false
            }
            _ => {
                state.seqs.insert(channel, seq);
                true
            }
        }
    }

    /// Replaces the session's token with a fresh one for the same user.
    fn refresh(&self, state: &mut State, channel: ChannelId, id: Option<RequestId>, token: &Token) {
        if self.off_control(channel, id, "refresh") {
            return;
        }
        let Phase::Open { claims: current, .. } = &state.phase else {
            return;
        };
        let claims = match self.hub.authenticate(self.ip, &token.0) {
            Ok(claims) => claims,
            // The session keeps its current token until that one expires.
            Err(e) => return self.error(channel, id, e.code(), e.to_string()),
        };
        if claims.user_id != current.user_id {
            return self.error(
                channel,
                id,
                ErrorCode::WrongUser,
                "the new token is for another user".into(),
            );
        }
        tracing::info!(expires_at = claims.expires_at, "token refreshed");
        state.phase = Phase::open(claims, &self.hub);
        self.deadline_moved.notify_one();
        self.ack(channel, id);
    }

    /// Checks the version and the token of a `hello`; a failure ends the session.
    fn authenticate_hello(
        &self,
        id: Option<RequestId>,
        version: u16,
        token: Option<Token>,
        preauth: Option<Claims>,
    ) -> Option<(Claims, u16)> {
        let Some(version) = negotiate(version) else {
            self.fatal(
                id,
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported; this server speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"),
            );
            return None;
        };
        let claims = match (token, preauth) {
            (Some(token), _) => match self.hub.authenticate(self.ip, &token.0) {
                Ok(claims) => claims,
                Err(e) => {
                    self.fatal(id, e.code(), e.to_string());
                    return None;
                }
            },
            (None, Some(claims)) => claims,
            (None, None) if self.hub.settings.dev_mode => Claims::anonymous(),
            (None, None) => {
                self.fatal(
                    id,
                    ErrorCode::AuthRequired,
                    "no token: put one in hello or in the connect URL".into(),
                );
                return None;
            }
        };
        Some((claims, version))
    }

    /// Opens a new session for `claims` and sends `welcome`.
    fn open_new(&self, state: &mut State, id: Option<RequestId>, version: u16, claims: Claims) {
        tracing::info!(user = %claims.user_id, version, "authenticated");
        if self.hub.resumption.settings.enabled() {
            self.hub.resumption.register(state.key, self.me.clone());
        }
        self.send(
            CONTROL_CHANNEL,
            self.welcome(id, version, &claims, state.key, state.generation, false),
        );
        state.phase = Phase::open(claims, &self.hub);
        // The idle deadline may come before the authentication deadline did.
        self.deadline_moved.notify_one();
    }

    /// `hello` with a resume token: resumes the session it names, or says why
    /// not and waits for a plain `hello` (the token already checked is kept).
    fn hello_resume(&self, state: &mut State, id: Option<RequestId>, version: u16, claims: Claims, resume: &Token) {
        let result = if self.hub.resumption.settings.enabled() {
            self.resume(state, id, version, claims.clone(), resume)
        } else {
            Err(ResumeError::Expired(
                "this server does not hold sessions (resume_grace_secs is 0)",
            ))
        };
        let Err(e) = result else { return };
        let code = e.code();
        if matches!(e, ResumeError::Invalid | ResumeError::WrongUser) {
            // A forged or stolen token is an attack on someone's session.
            self.hub.auth_failed(self.ip, code, "resume token refused");
        } else {
            self.hub.counters.error(code);
        }
        tracing::info!(%code, "resume refused");
        self.send(
            CONTROL_CHANNEL,
            ServerMessage::Error {
                id,
                code,
                message: e.to_string(),
            },
        );
        if let Phase::AwaitingHello { preauth, .. } = &mut state.phase {
            *preauth = Some(claims);
        }
    }

    /// The `welcome` of a session that is new or was just resumed.
    pub(super) fn welcome(
        &self,
        id: Option<RequestId>,
        version: u16,
        claims: &Claims,
        key: SessionKey,
        generation: u32,
        resumed: bool,
    ) -> ServerMessage {
        let resumption = &self.hub.resumption;
        let ice = self.hub.ice.grant(&claims.user_id);
        ServerMessage::Welcome {
            id,
            version,
            session_id: key.to_string(),
            peer_id: self.peer_id(),
            user_id: claims.user_id.to_string(),
            limits: self.hub.settings.limits.clone(),
            resume_token: resumption.settings.enabled().then(|| resumption.token(key, generation)),
            resumed,
            ice_servers: ice.servers,
            ice_servers_expire_at: ice.expires_at,
        }
    }

    fn join(
        &self,
        state: &mut State,
        claims: &Claims,
        channel: ChannelId,
        id: Option<RequestId>,
        name: &str,
        resume_after: Option<EventCount>,
    ) {
        let refuse = |code, message: String| {
            self.error(channel, id, code, message);
            // The channel was opened for this room only; close it again.
            self.outbox.remove_channel(channel);
        };
        if channel == CONTROL_CHANNEL {
            return self.error(
                channel,
                id,
                ErrorCode::WrongChannel,
                "join opens a new channel; not on the control channel".into(),
            );
        }
        if let Some(room) = state.rooms.get(&channel).or_else(|| state.pending.get(&channel)) {
            return self.error(
                channel,
                id,
                ErrorCode::WrongChannel,
                format!("this channel is already room {room}"),
            );
        }
        let room = match RoomId::parse(name) {
            Ok(room) => room,
            Err(e) => return refuse(ErrorCode::InvalidRoom, e.to_string()),
        };
        if let Some(after) = resume_after
            && self.rejoin(state, channel, id, &room, after)
        {
            return;
        }
        if !claims.rooms.allows(&room) {
            return refuse(
                ErrorCode::RoomForbidden,
                format!("the token does not allow room {room}"),
            );
        }
        if state.rooms.values().chain(state.pending.values()).any(|r| *r == room) {
            return refuse(ErrorCode::AlreadyJoined, format!("already in room {room}"));
        }
        let max_rooms = self.hub.settings.limits.max_rooms as usize;
        if state.rooms.len() + state.pending.len() >= max_rooms {
            return refuse(
                ErrorCode::TooManyRooms,
                format!("a session may be in at most {max_rooms} rooms"),
            );
        }
        let seat = Seat::new(
            self.peer_id(),
            claims.user_id.clone(),
            channel,
            self.outbox.clone(),
            state.replay.clone(),
        );
        if let Some(cluster) = self.hub.cluster.clone() {
            // The cluster admits the seat (exactly, against every node's
            // members) before this node seats it; the answer comes later.
            state.pending.insert(channel, room.clone());
            let session = self.me.clone();
            tokio::spawn(async move {
                let member = proto::Member {
                    peer_id: seat.peer_id,
                    user_id: seat.user_id.to_string(),
                };
                let admitted = cluster.join(&room, &member).await;
                if let Some(session) = session.upgrade() {
                    session.finish_cluster_join(room, seat, id, admitted);
                } else if admitted.is_ok() {
                    cluster.left(&room, member.peer_id, Vec::new());
                }
            });
            return;
        }
        match self.hub.rooms.join(&room, seat, id) {
            Ok(()) => {
                tracing::debug!(%room, channel, "room joined");
                state.rooms.insert(channel, room);
            }
            Err(JoinError::Full) => {
                let max = self.hub.settings.limits.max_room_members;
                refuse(ErrorCode::RoomFull, format!("room {room} already has {max} members"));
            }
        }
    }

    /// A resuming `join`: attaches the resumed session's seat in `room` to
    /// `channel` and sends what it missed. False if the room is not one of the
    /// resumed session's (then it is joined like any room).
    fn rejoin(
        &self,
        state: &mut State,
        channel: ChannelId,
        id: Option<RequestId>,
        room: &RoomId,
        after: EventCount,
    ) -> bool {
        let Some(detached) = state.detached.remove(room) else {
            return false;
        };
        let peer_id = self.peer_id();
        let Some(how) = self.hub.rooms.reattach(
            room,
            peer_id,
            channel,
            self.outbox.clone(),
            id,
            after,
            detached.last_seq,
        ) else {
            return false;
        };
        tracing::debug!(%room, channel, ?how, "room joined again after the resume");
        state.rooms.insert(channel, room.clone());
        state.seqs.insert(channel, detached.last_seq);
        true
    }

    /// Seats a session in a room the cluster admitted it to (or refuses the
    /// join); undoes the admission if the session left the channel meanwhile.
    fn finish_cluster_join(
        &self,
        room: RoomId,
        seat: Seat,
        id: Option<RequestId>,
        admitted: Result<Vec<Remote>, ClusterError>,
    ) {
        let _enter = self.span.enter();
        let Some(channel) = seat.channel() else { return };
        let mut state = self.state.lock().expect("session lock");
        let still_wanted = state.pending.remove(&channel).is_some_and(|r| r == room) && self.outbox.goodbye().is_none();
        let Some(cluster) = self.hub.cluster.as_ref() else {
            return;
        };
        let refuse = |code, message: String| {
            self.error(channel, id, code, message);
            self.outbox.remove_channel(channel);
        };
        match admitted {
            Ok(_) if !still_wanted => cluster.left(&room, self.peer_id(), Vec::new()),
            Ok(remote) => {
                let member = proto::Member {
                    peer_id: seat.peer_id,
                    user_id: seat.user_id.to_string(),
                };
                match self.hub.rooms.join_with(&room, seat, id, remote, false) {
                    Ok(nodes) => {
                        tracing::debug!(%room, channel, "room joined (cluster)");
                        cluster.joined(&room, member, nodes);
                        state.rooms.insert(channel, room);
                    }
                    // Not checked here: the cluster counted the seat.
                    Err(JoinError::Full) => refuse(ErrorCode::RoomFull, format!("room {room} is full")),
                }
            }
            Err(_) if !still_wanted => {}
            Err(ClusterError::RoomFull) => {
                let max = self.hub.settings.limits.max_room_members;
                refuse(ErrorCode::RoomFull, format!("room {room} already has {max} members"));
            }
            Err(ClusterError::Unavailable) => {
                // Degraded: the room works with this node's members (and those of
                // other nodes it already knows); the next refresh after Redis
                // returns registers the seat in the cluster.
                tracing::warn!(%room, "Redis is unavailable: room joined on this node only");
                match self.hub.rooms.join_with(&room, seat, id, Vec::new(), true) {
                    Ok(_) => {
                        state.rooms.insert(channel, room);
                    }
                    Err(JoinError::Full) => {
                        let max = self.hub.settings.limits.max_room_members;
                        refuse(ErrorCode::RoomFull, format!("room {room} already has {max} members"));
                    }
                }
            }
        }
    }

    fn leave(&self, state: &mut State, channel: ChannelId, id: Option<RequestId>) {
        let Some(room) = self.room_of(state, channel, id) else {
            return;
        };
        state.rooms.remove(&channel);
        state.seqs.remove(&channel);
        self.hub.leave_room(&room, self.peer_id());
        tracing::debug!(%room, "room left");
        self.send(
            channel,
            ServerMessage::Left {
                id,
                room: room.to_string(),
            },
        );
        self.outbox.remove_channel(channel);
    }

    fn signal(&self, room: &RoomId, channel: ChannelId, id: Option<RequestId>, to: PeerId, signal: Signal) {
        if to == self.peer_id() {
            return self.error(
                channel,
                id,
                ErrorCode::InvalidMessage,
                "a peer cannot signal itself".into(),
            );
        }
        if let Signal::Offer { sdp } | Signal::Answer { sdp } = &signal
            && sdp.is_empty()
        {
            return self.error(
                channel,
                id,
                ErrorCode::InvalidMessage,
                "an offer or answer needs an SDP".into(),
            );
        }
        let msg = ServerMessage::Signal {
            from: self.peer_id(),
            signal,
        };
        match self.hub.rooms.send_to(room, to, msg) {
            Ok(Delivery::Local) => self.ack(channel, id),
            Ok(Delivery::Remote(node, msg)) => self.relay(room, channel, id, Some(to), msg, vec![node]),
            Err(UnknownPeer) => self.error(
                channel,
                id,
                ErrorCode::UnknownPeer,
                format!("peer {to} is not in room {room}"),
            ),
        }
    }

    /// Hands `msg` to the cluster's relay for the members of `room` on `nodes`;
    /// the request is acknowledged once Redis has it.
    fn relay(
        &self,
        room: &RoomId,
        channel: ChannelId,
        id: Option<RequestId>,
        to: Option<PeerId>,
        msg: ServerMessage,
        nodes: Vec<std::sync::Arc<str>>,
    ) {
        let Some(cluster) = &self.hub.cluster else {
            return self.ack(channel, id);
        };
        let event = Event::Deliver {
            room: room.to_string(),
            to,
            from: self.peer_id(),
            msg,
        };
        let ack = id.map(|id| Ack {
            outbox: self.outbox.clone(),
            channel,
            id,
        });
        cluster.relay(event, nodes, ack);
    }

    /// The room of `channel`, or an error to the client saying there is none.
    fn room_of(&self, state: &State, channel: ChannelId, id: Option<RequestId>) -> Option<RoomId> {
        let room = state.rooms.get(&channel).cloned();
        if room.is_none() {
            let (code, message) = if channel == CONTROL_CHANNEL {
                (
                    ErrorCode::WrongChannel,
                    "room messages go on the room's channel, not the control channel",
                )
            } else {
                (ErrorCode::NotInRoom, "this channel is not a joined room")
            };
            self.error(channel, id, code, message.into());
        }
        room
    }
}
