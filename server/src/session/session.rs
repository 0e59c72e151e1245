//! One session: frames in, decisions out.
//!
//! The transport feeds every frame it reads to the session; the session checks
//! it against the limits, decodes it, and acts: authenticates, joins and leaves
//! rooms, relays signals, answers pings, or reports an error with its code. What
//! it sends goes into its [`Outbox`]. Its end (a timeout, a slow reader, a fatal
//! error, shutdown) is announced through the outbox too, and dropping the
//! session takes it out of every room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use proto::codec::{self, DecodeError};
use proto::version::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, negotiate};
use proto::{
    CONTROL_CHANNEL, ChannelId, ClientMessage, Encoding, ErrorCode, PeerId, RequestId, RoomId, ServerMessage, Signal,
    Token,
};
use tracing::Span;

use super::addr::MaskedIp;
use super::admission::Permit;
use super::auth::Claims;
use super::budget::Budget;
use super::hub::{Hub, Opening};
use super::outbox::{Goodbye, Outbox};
use crate::room::{JoinError, Seat, UnknownPeer};

/// At most one budget violation is reported per this interval.
const BUDGET_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

enum Phase {
    /// Waiting for `hello`; a token from the connect URL may already be checked.
    AwaitingHello { deadline: Instant, preauth: Option<Claims> },
    Open {
        claims: Claims,
        /// When the token expires (with the configured leeway): the session ends then.
        expires: Instant,
    },
}

struct State {
    phase: Phase,
    budget: Budget,
    /// The rooms joined, by the channel each uses.
    rooms: HashMap<ChannelId, RoomId>,
    last_seen: Instant,
    /// When a budget violation was last reported: a flood gets one error a
    /// second, not one per dropped frame (every drop is still counted).
    last_budget_report: Option<Instant>,
}

pub struct Session {
    hub: Arc<Hub>,
    id: String,
    peer_id: PeerId,
    outbox: Arc<Outbox>,
    state: Mutex<State>,
    /// Wakes [`Session::closed`] when a deadline may have moved earlier.
    deadline_moved: tokio::sync::Notify,
    span: Span,
    _permit: Permit,
}

impl Session {
    pub(super) fn open(hub: Arc<Hub>, opening: Opening) -> Arc<Self> {
        let now = Instant::now();
        let id = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        let peer_id = PeerId(rand::random());
        let span = tracing::info_span!(
            "session",
            session = %id,
            peer = %peer_id,
            ip = %MaskedIp::of(opening.remote.ip()),
            transport = opening.transport,
        );
        if let Some(encoding) = opening.encoding {
            opening.outbox.set_encoding_once(encoding);
        }
        span.in_scope(|| tracing::info!("session opened"));
        let state = State {
            phase: Phase::AwaitingHello {
                deadline: now + hub.settings.auth_timeout,
                preauth: opening.claims,
            },
            budget: Budget::new(&hub.settings.limits, now),
            rooms: HashMap::new(),
            last_seen: now,
            last_budget_report: None,
        };
        Arc::new(Self {
            hub,
            id,
            peer_id,
            outbox: opening.outbox,
            state: Mutex::new(state),
            deadline_moved: tokio::sync::Notify::new(),
            span,
            _permit: opening.permit,
        })
    }

    /// Gives `channel` an outbound queue of its own (a stream); returns its receiving end.
    pub fn add_channel(&self, channel: ChannelId) -> tokio::sync::mpsc::Receiver<super::Outgoing> {
        self.outbox.add_channel(channel, self.hub.settings.queue_len)
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The largest frame a transport should read whole.
    pub fn max_frame(&self) -> usize {
        self.hub.max_frame()
    }

    /// A frame read from a channel's own stream (WebTransport).
    pub fn on_stream_frame(&self, channel: ChannelId, encoding: Encoding, frame: &[u8]) {
        self.on_frame(encoding, frame, |bytes| {
            codec::decode(encoding, bytes).map(|m| (channel, m))
        });
    }

    /// A frame that carries its channel in an envelope (WebSocket).
    pub fn on_envelope_frame(&self, encoding: Encoding, frame: &[u8]) {
        self.on_frame(encoding, frame, |bytes| codec::decode_enveloped(encoding, bytes));
    }

    /// A frame longer than the limit, which the transport skipped unread.
    pub fn on_oversized_frame(&self, len: usize) {
        let _enter = self.span.enter();
        let now = Instant::now();
        let mut state = self.state.lock().expect("session lock");
        state.last_seen = now;
        // Skipping it still cost its bytes: they come out of the byte budget.
        state.budget.charge_skipped(len, now);
        drop(state);
        let max = self.hub.max_frame();
        self.violation(
            ErrorCode::FrameTooLarge,
            format!("frame of {len} bytes exceeds max_frame_bytes {max}"),
        );
    }

    /// A transport-level keepalive (a WebSocket ping): the client is there.
    pub fn on_keepalive(&self) {
        self.state.lock().expect("session lock").last_seen = Instant::now();
    }

    /// A channel's stream ended: the room it was in is left.
    pub fn on_channel_closed(&self, channel: ChannelId) {
        let _enter = self.span.enter();
        let mut state = self.state.lock().expect("session lock");
        if let Some(room) = state.rooms.remove(&channel) {
            self.hub.rooms.leave(&room, self.peer_id);
            tracing::debug!(%room, "room left (channel closed)");
        }
        self.outbox.remove_channel(channel);
    }

    /// Waits until the session must end (timeout, slow reader, fatal error,
    /// shutdown) and returns the goodbye to send. Call it from one place per session.
    pub async fn closed(&self) -> Goodbye {
        let mut shutdown = self.hub.shutdown_signal();
        loop {
            let (deadline, on_expiry) = self.deadline();
            tokio::select! {
                goodbye = self.outbox.closed() => {
                    let _enter = self.span.enter();
                    self.hub.counters.error(goodbye.code);
                    tracing::info!(code = %goodbye.code, reason = %goodbye.message, "session ending");
                    // Out of every room now, not when the transport has finished
                    // saying goodbye: nobody should signal a peer that is leaving.
                    self.leave_all_rooms();
                    return goodbye;
                }
                () = crate::shutdown::signalled(&mut shutdown) => {
                    self.end(Goodbye::new(ErrorCode::ShuttingDown, "the server is shutting down"));
                }
                () = self.deadline_moved.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if self.deadline().0 <= Instant::now() {
                        self.end(on_expiry);
                    }
                }
            }
        }
    }

    fn deadline(&self) -> (Instant, Goodbye) {
        let state = self.state.lock().expect("session lock");
        match state.phase {
            Phase::AwaitingHello { deadline, .. } => (
                deadline,
                Goodbye::new(ErrorCode::AuthTimeout, "no hello with a valid token arrived in time"),
            ),
            Phase::Open { expires, .. } if expires <= state.last_seen + self.hub.settings.idle_timeout => (
                expires,
                Goodbye::new(ErrorCode::TokenExpired, "the session's token has expired"),
            ),
            Phase::Open { .. } => (
                state.last_seen + self.hub.settings.idle_timeout,
                Goodbye::new(
                    ErrorCode::IdleTimeout,
                    "nothing arrived within the idle timeout; send pings",
                ),
            ),
        }
    }

    /// Checks a frame against the limits before decoding it. Violations are
    /// reported on the control channel: the frame's own channel may be unknown
    /// (inside an envelope that was never decoded).
    fn on_frame(
        &self,
        encoding: Encoding,
        frame: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<(ChannelId, ClientMessage), DecodeError>,
    ) {
        let _enter = self.span.enter();
        let now = Instant::now();
        let mut state = self.state.lock().expect("session lock");
        state.last_seen = now;
        let max = self.hub.max_frame();
        if frame.len() > max {
            let len = frame.len();
            return self.violation(
                ErrorCode::FrameTooLarge,
                format!("frame of {len} bytes exceeds max_frame_bytes {max}"),
            );
        }
        if let Err(code) = state.budget.charge(frame.len(), now) {
            if state
                .last_budget_report
                .is_some_and(|at| now.duration_since(at) < BUDGET_REPORT_INTERVAL)
            {
                self.hub.counters.error(code);
                return;
            }
            state.last_budget_report = Some(now);
            let limits = &self.hub.settings.limits;
            let message = match code {
                ErrorCode::RateLimited => format!(
                    "more than {} messages per second; message dropped",
                    limits.messages_per_sec
                ),
                _ => format!("more than {} bytes per second; message dropped", limits.bytes_per_sec),
            };
            return self.violation(code, message);
        }
        let (channel, msg) = match decode(frame) {
            Ok(decoded) => decoded,
            Err(e) => return self.violation(ErrorCode::BadFrame, e.to_string()),
        };
        // Replies use the encoding of the first frame that decoded.
        self.outbox.set_encoding_once(encoding);
        tracing::trace!(channel, kind = msg.kind(), "message");
        self.dispatch(&mut state, channel, msg);
    }

    /// Reports a frame that broke a limit or could not be decoded.
    fn violation(&self, code: ErrorCode, message: String) {
        self.error(CONTROL_CHANNEL, None, code, message);
    }

    fn dispatch(&self, state: &mut State, channel: ChannelId, msg: ClientMessage) {
        let id = msg.request_id();
        match (&mut state.phase, msg) {
            (Phase::AwaitingHello { preauth, .. }, ClientMessage::Hello { id, version, token }) => {
                if channel != CONTROL_CHANNEL {
                    return self.error(
                        channel,
                        id,
                        ErrorCode::WrongChannel,
                        "hello goes on the control channel (0)".into(),
                    );
                }
                if let Some(claims) = self.hello(id, version, token, preauth.take()) {
                    let expires = self.hub.settings.expiry_instant(claims.expires_at);
                    state.phase = Phase::Open { claims, expires };
                    // The idle deadline may come before the authentication deadline did.
                    self.deadline_moved.notify_one();
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
            (Phase::Open { claims, .. }, ClientMessage::Join { id, room }) => {
                let claims = claims.clone();
                self.join(state, &claims, channel, id, &room);
            }
            (Phase::Open { .. }, ClientMessage::Leave { id }) => self.leave(state, channel, id),
            (Phase::Open { .. }, ClientMessage::Signal { id, to, signal }) => {
                self.signal(state, channel, id, to, signal)
            }
            (Phase::Open { .. }, ClientMessage::Broadcast { id, data }) => {
                let Some(room) = self.room_of(state, channel, id) else {
                    return;
                };
                self.hub.rooms.broadcast(
                    &room,
                    self.peer_id,
                    ServerMessage::Broadcast {
                        from: self.peer_id,
                        data,
                    },
                );
                self.ack(channel, id);
            }
            (Phase::Open { .. }, ClientMessage::Ping { id, nonce }) => {
                self.send(channel, ServerMessage::Pong { id, nonce })
            }
        }
    }

    /// Checks the version and the token; on success sends `welcome`.
    fn hello(
        &self,
        id: Option<RequestId>,
        version: u16,
        token: Option<Token>,
        preauth: Option<Claims>,
    ) -> Option<Claims> {
        let Some(version) = negotiate(version) else {
            self.fatal(
                id,
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported; this server speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"),
            );
            return None;
        };
        let claims = match (token, preauth) {
            (Some(token), _) => match self.hub.auth.verify(&token.0) {
                Ok(claims) => claims,
                Err(e) => {
                    self.fatal(id, e.code(), e.to_string());
                    return None;
                }
            },
            (None, Some(claims)) => claims,
            (None, None) => {
                self.fatal(
                    id,
                    ErrorCode::AuthRequired,
                    "no token: put one in hello or in the connect URL".into(),
                );
                return None;
            }
        };
        tracing::info!(user = %claims.user_id, version, "authenticated");
        self.send(
            CONTROL_CHANNEL,
            ServerMessage::Welcome {
                id,
                version,
                session_id: self.id.clone(),
                peer_id: self.peer_id,
                user_id: claims.user_id.to_string(),
                limits: self.hub.settings.limits.clone(),
            },
        );
        Some(claims)
    }

    fn join(&self, state: &mut State, claims: &Claims, channel: ChannelId, id: Option<RequestId>, name: &str) {
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
        if let Some(room) = state.rooms.get(&channel) {
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
        if !claims.rooms.allows(&room) {
            return refuse(
                ErrorCode::RoomForbidden,
                format!("the token does not allow room {room}"),
            );
        }
        if state.rooms.values().any(|r| *r == room) {
            return refuse(ErrorCode::AlreadyJoined, format!("already in room {room}"));
        }
        let max_rooms = self.hub.settings.limits.max_rooms as usize;
        if state.rooms.len() >= max_rooms {
            return refuse(
                ErrorCode::TooManyRooms,
                format!("a session may be in at most {max_rooms} rooms"),
            );
        }
        let seat = Seat {
            peer_id: self.peer_id,
            user_id: claims.user_id.clone(),
            channel,
            outbox: self.outbox.clone(),
        };
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

    fn leave(&self, state: &mut State, channel: ChannelId, id: Option<RequestId>) {
        let Some(room) = self.room_of(state, channel, id) else {
            return;
        };
        state.rooms.remove(&channel);
        self.hub.rooms.leave(&room, self.peer_id);
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

    fn signal(&self, state: &mut State, channel: ChannelId, id: Option<RequestId>, to: PeerId, signal: Signal) {
        let Some(room) = self.room_of(state, channel, id) else {
            return;
        };
        if to == self.peer_id {
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
        match self.hub.rooms.send_to(
            &room,
            to,
            ServerMessage::Signal {
                from: self.peer_id,
                signal,
            },
        ) {
            Ok(()) => self.ack(channel, id),
            Err(UnknownPeer) => self.error(
                channel,
                id,
                ErrorCode::UnknownPeer,
                format!("peer {to} is not in room {room}"),
            ),
        }
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

    fn ack(&self, channel: ChannelId, id: Option<RequestId>) {
        if let Some(id) = id {
            self.send(channel, ServerMessage::Ack { id });
        }
    }

    fn error(&self, channel: ChannelId, id: Option<RequestId>, code: ErrorCode, message: String) {
        self.hub.counters.error(code);
        tracing::debug!(%code, %message, "error sent");
        self.send(channel, ServerMessage::Error { id, code, message });
    }

    /// Reports an error that ends the session: the error answers the request,
    /// the goodbye (counted when the session ends) closes it.
    fn fatal(&self, id: Option<RequestId>, code: ErrorCode, message: String) {
        self.send(
            CONTROL_CHANNEL,
            ServerMessage::Error {
                id,
                code,
                message: message.clone(),
            },
        );
        self.end(Goodbye::new(code, message));
    }

    fn end(&self, goodbye: Goodbye) {
        self.outbox.close(goodbye);
    }

    fn send(&self, channel: ChannelId, msg: ServerMessage) {
        self.outbox.deliver(channel, Arc::new(msg));
    }

    fn leave_all_rooms(&self) {
        let mut state = self.state.lock().expect("session lock");
        for (_, room) in state.rooms.drain() {
            self.hub.rooms.leave(&room, self.peer_id);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _enter = self.span.enter();
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        for room in state.rooms.values() {
            self.hub.rooms.leave(room, self.peer_id);
        }
        tracing::info!("session closed");
    }
}
