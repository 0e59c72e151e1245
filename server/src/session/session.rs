//! One session: frames in, decisions out.
//!
//! The transport feeds every frame it reads to the session; the session checks
//! it against the limits, decodes it, and acts: authenticates, joins and leaves
//! rooms, relays signals, answers pings, or reports an error with its code. What
//! it sends goes into its [`Outbox`]. Its end (a timeout, a slow reader, a fatal
//! error, shutdown) is announced through the outbox too, and dropping the
//! session takes it out of every room. A session whose connection is lost can
//! instead be held and resumed on a new connection ([`super::resume`]), which
//! takes over its identity and rooms.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use proto::codec::{self, DecodeError};
use proto::{
    CONTROL_CHANNEL, ChannelId, ClientMessage, Encoding, ErrorCode, PeerId, RequestId, RoomId, Seq, ServerMessage,
};
use tracing::Span;

use super::addr::MaskedIp;
use super::admission::Permit;
use super::auth::Claims;
use super::blocklist::Strike;
use super::budget::Budget;
use super::hub::{Hub, Opening};
use super::outbox::{Goodbye, Outbox};
use super::resume::SessionKey;
use super::score::Score;
use super::switches::Transport;
use crate::room::ReplayMemory;

/// At most one budget violation is reported per this interval.
const BUDGET_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) enum Phase {
    /// Waiting for `hello`; a token from the connect URL may already be checked.
    AwaitingHello { deadline: Instant, preauth: Option<Claims> },
    Open {
        claims: Claims,
        /// When the token expires (with the configured leeway): the session ends then.
        expires: Instant,
        /// When to send `token_expiring`; `None` once sent (a refresh sets it again).
        notice: Option<Instant>,
    },
}

impl Phase {
    /// The open phase for `claims`.
    pub(super) fn open(claims: Claims, hub: &Hub) -> Phase {
        let expires = hub.settings.expiry_instant(claims.expires_at);
        let notice = expires.checked_sub(hub.settings.refresh_notice.saturating_add(hub.settings.jwt_leeway));
        Phase::Open {
            claims,
            expires,
            notice: Some(notice.unwrap_or_else(Instant::now)),
        }
    }
}

/// A room of a resumed session that the client has not joined again yet.
pub(super) struct Detached {
    /// The last `seq` accepted from the client in the room.
    pub(super) last_seq: Seq,
    /// When the room is left if the client has not joined it again.
    pub(super) deadline: Instant,
}

pub(super) struct State {
    pub(super) phase: Phase,
    /// The session's identity across connections (its `session_id`).
    pub(super) key: SessionKey,
    /// The generation of the last resume token handed out.
    pub(super) generation: u32,
    /// What the session's seats keep for a resume, across rooms.
    pub(super) replay: Arc<ReplayMemory>,
    /// Rooms of a resumed session, until the client joins them again.
    pub(super) detached: HashMap<RoomId, Detached>,
    pub(super) budget: Budget,
    /// The rooms joined, by the channel each uses.
    pub(super) rooms: HashMap<ChannelId, RoomId>,
    /// Rooms being joined through the cluster, by channel: counted as joined
    /// until the cluster answers.
    pub(super) pending: HashMap<ChannelId, RoomId>,
    /// The last `seq` relayed on each room's channel.
    pub(super) seqs: HashMap<ChannelId, Seq>,
    pub(super) score: Score,
    pub(super) last_seen: Instant,
    /// When a budget violation was last reported: a flood gets one error a
    /// second, not one per dropped frame (every drop is still counted).
    pub(super) last_budget_report: Option<Instant>,
}

pub struct Session {
    /// The session itself, for work that outlives a request (a cluster join).
    pub(super) me: std::sync::Weak<Session>,
    pub(super) hub: Arc<Hub>,
    /// The peer id (a resumed session takes its predecessor's).
    peer_id: AtomicU64,
    pub(super) outbox: Arc<Outbox>,
    pub(super) state: Mutex<State>,
    /// Wakes [`Session::closed`] when a deadline may have moved earlier.
    pub(super) deadline_moved: tokio::sync::Notify,
    pub(super) span: Span,
    pub(super) ip: IpAddr,
    transport: Transport,
    pub(super) permit: Permit,
}

/// What happens when the session's next deadline passes.
enum Deadline {
    End(Goodbye),
    /// Tell the client its token is about to expire.
    Notice,
    /// Leave the rooms of a resumed session that were not joined again in time.
    Detached,
}

impl Session {
    pub(super) fn open(hub: Arc<Hub>, opening: Opening) -> Arc<Self> {
        let now = Instant::now();
        let key = SessionKey::random();
        let peer_id = PeerId(rand::random());
        let span = tracing::info_span!(
            "session",
            session = %key,
            peer = %peer_id,
            ip = %MaskedIp::of(opening.remote.ip()),
            transport = opening.transport.as_str(),
        );
        if let Some(encoding) = opening.encoding {
            opening.outbox.set_encoding_once(encoding);
        }
        span.in_scope(|| tracing::info!("session opened"));
        let resume = &hub.resumption.settings;
        let state = State {
            phase: Phase::AwaitingHello {
                deadline: now + hub.settings.auth_timeout,
                preauth: opening.claims,
            },
            key,
            generation: 0,
            replay: ReplayMemory::new(
                if resume.enabled() { resume.buffer_bytes } else { 0 },
                resume.buffer_events,
            ),
            detached: HashMap::new(),
            budget: Budget::new(&hub.settings.limits, now),
            rooms: HashMap::new(),
            pending: HashMap::new(),
            seqs: HashMap::new(),
            score: Score::new(now),
            last_seen: now,
            last_budget_report: None,
        };
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            hub,
            peer_id: AtomicU64::new(peer_id.0),
            outbox: opening.outbox,
            state: Mutex::new(state),
            deadline_moved: tokio::sync::Notify::new(),
            span,
            ip: opening.remote.ip(),
            transport: opening.transport,
            permit: opening.permit,
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
        PeerId(self.peer_id.load(Ordering::Acquire))
    }

    pub(super) fn set_peer_id(&self, peer_id: PeerId) {
        self.peer_id.store(peer_id.0, Ordering::Release);
    }

    /// The authenticated user, once the session is open.
    pub fn user_id(&self) -> Option<String> {
        match &self.state.lock().expect("session lock").phase {
            Phase::Open { claims, .. } => Some(claims.user_id.to_string()),
            Phase::AwaitingHello { .. } => None,
        }
    }

    /// What the session keeps for a resume.
    pub(super) fn replay_memory(&self) -> Arc<ReplayMemory> {
        self.state.lock().expect("session lock").replay.clone()
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
        self.permit.traffic().count(len);
        self.frame_too_large(&mut state, len);
    }

    /// A stream whose next frame claims a length no reader will skip (more than
    /// 1 MiB): the transport stops reading the stream. On the control channel
    /// that ends the session; on a room's channel, the room is left.
    pub fn on_unframeable(&self, channel: ChannelId, len: usize) {
        let _enter = self.span.enter();
        let message = format!("a frame of {len} bytes can never be read; channel {channel} is closed");
        let mut state = self.state.lock().expect("session lock");
        if channel == CONTROL_CHANNEL {
            self.fatal(None, ErrorCode::FrameTooLarge, message);
            self.score(&mut state, ErrorCode::FrameTooLarge, Instant::now());
        } else {
            self.violation(&mut state, CONTROL_CHANNEL, None, ErrorCode::FrameTooLarge, message);
        }
    }

    /// A transport-level keepalive (a WebSocket ping): the client is there.
    pub fn on_keepalive(&self) {
        self.state.lock().expect("session lock").last_seen = Instant::now();
    }

    /// A channel's stream ended: the room it was in is left.
    pub fn on_channel_closed(&self, channel: ChannelId) {
        let _enter = self.span.enter();
        let mut state = self.state.lock().expect("session lock");
        state.seqs.remove(&channel);
        // A cluster join still under way finds its channel gone and undoes itself.
        state.pending.remove(&channel);
        if let Some(room) = state.rooms.remove(&channel) {
            self.hub.leave_room(&room, self.peer_id());
            tracing::debug!(%room, "room left (channel closed)");
        }
        self.outbox.remove_channel(channel);
    }

    /// Waits until the session must end (timeout, slow reader, fatal error,
    /// shutdown) and returns the goodbye to send. Call it from one place per session.
    pub async fn closed(&self) -> Goodbye {
        let mut shutdown = self.hub.shutdown_signal();
        loop {
            let (deadline, _) = self.deadline();
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
                    let (deadline, action) = self.deadline();
                    if deadline <= Instant::now() {
                        match action {
                            Deadline::End(goodbye) => self.end(goodbye),
                            Deadline::Notice => self.token_expiring(),
                            Deadline::Detached => self.leave_detached(),
                        }
                    }
                }
            }
        }
    }

    /// The session's next deadline and what happens then.
    fn deadline(&self) -> (Instant, Deadline) {
        let state = self.state.lock().expect("session lock");
        let (at, action) = match state.phase {
            Phase::AwaitingHello { deadline, .. } => (
                deadline,
                Deadline::End(Goodbye::new(
                    ErrorCode::AuthTimeout,
                    "no hello with a valid token arrived in time",
                )),
            ),
            Phase::Open {
                notice: Some(notice), ..
            } if notice <= state.last_seen + self.hub.settings.idle_timeout => (notice, Deadline::Notice),
            Phase::Open { expires, .. } if expires <= state.last_seen + self.hub.settings.idle_timeout => (
                expires,
                Deadline::End(Goodbye::new(
                    ErrorCode::TokenExpired,
                    "the session's token has expired; send refresh with a fresh token before it does",
                )),
            ),
            Phase::Open { .. } => (
                state.last_seen + self.hub.settings.idle_timeout,
                Deadline::End(Goodbye::new(
                    ErrorCode::IdleTimeout,
                    "nothing arrived within the idle timeout; send pings",
                )),
            ),
        };
        match state.detached.values().map(|d| d.deadline).min() {
            Some(first) if first < at => (first, Deadline::Detached),
            _ => (at, action),
        }
    }

    /// Sends `token_expiring` (once per token).
    fn token_expiring(&self) {
        let mut state = self.state.lock().expect("session lock");
        if let Phase::Open { expires, notice, .. } = &mut state.phase
            && notice.take().is_some()
        {
            let left = expires.saturating_duration_since(Instant::now());
            let expires_in_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            drop(state);
            let _enter = self.span.enter();
            tracing::debug!(expires_in_ms, "token expiring");
            self.send(CONTROL_CHANNEL, ServerMessage::TokenExpiring { expires_in_ms });
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
        // A session that is ending acts on nothing more (it has left its rooms).
        if self.outbox.goodbye().is_some() {
            return;
        }
        let now = Instant::now();
        let mut state = self.state.lock().expect("session lock");
        state.last_seen = now;
        let max = self.hub.max_frame();
        if frame.len() > max {
            return self.frame_too_large(&mut state, frame.len());
        }
        self.permit.traffic().count(frame.len());
        if let Err(code) = state.budget.charge(frame.len(), now) {
            if state
                .last_budget_report
                .is_some_and(|at| now.duration_since(at) < BUDGET_REPORT_INTERVAL)
            {
                self.hub.counters.error(code);
                self.score(&mut state, code, now);
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
            return self.violation(&mut state, CONTROL_CHANNEL, None, code, message);
        }
        let (channel, msg) = match decode(frame) {
            Ok(decoded) => decoded,
            Err(e) => return self.violation(&mut state, CONTROL_CHANNEL, None, e.code(), e.to_string()),
        };
        // Replies use the encoding of the first frame that decoded.
        self.outbox.set_encoding_once(encoding);
        tracing::trace!(channel, kind = msg.kind(), "message");
        self.dispatch(&mut state, channel, msg);
    }

    /// Reports a violation (a frame that broke a limit or could not be
    /// decoded goes on the control channel: its own channel may be unknown)
    /// and adds its points to the session's score.
    pub(super) fn violation(
        &self,
        state: &mut State,
        channel: ChannelId,
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    ) {
        self.error(channel, id, code, message);
        self.score(state, code, Instant::now());
    }

    fn frame_too_large(&self, state: &mut State, len: usize) {
        let max = self.hub.max_frame();
        let message = format!("frame of {len} bytes exceeds max_frame_bytes {max}");
        self.violation(state, CONTROL_CHANNEL, None, ErrorCode::FrameTooLarge, message);
    }

    /// Adds the points of a violation to the session's score; at the limit the
    /// session is closed with `policy_violation`, a strike against its address.
    pub(super) fn score(&self, state: &mut State, code: ErrorCode, now: Instant) {
        let limit = self.hub.settings.abuse_score_limit;
        if state.score.add(code, now) < limit || self.outbox.goodbye().is_some() {
            return;
        }
        tracing::warn!(
            target: "security",
            event = "policy_violation",
            ip = %MaskedIp::of(self.ip),
            last = %code,
            "session closed for repeated violations"
        );
        self.fatal(
            None,
            ErrorCode::PolicyViolation,
            format!("too many violations (score {limit}); the session is closed"),
        );
        self.hub.blocklist.strike(self.ip, Strike::Abuse, now);
    }

    pub(super) fn ack(&self, channel: ChannelId, id: Option<RequestId>) {
        if let Some(id) = id {
            self.send(channel, ServerMessage::Ack { id });
        }
    }

    pub(super) fn error(&self, channel: ChannelId, id: Option<RequestId>, code: ErrorCode, message: String) {
        self.hub.counters.error(code);
        tracing::debug!(%code, %message, "error sent");
        self.send(channel, ServerMessage::Error { id, code, message });
    }

    /// Reports an error that ends the session: the error answers the request,
    /// the goodbye (counted when the session ends) closes it.
    pub(super) fn fatal(&self, id: Option<RequestId>, code: ErrorCode, message: String) {
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

    pub(super) fn end(&self, goodbye: Goodbye) {
        self.outbox.close(goodbye);
    }

    pub(super) fn send(&self, channel: ChannelId, msg: ServerMessage) {
        self.outbox.deliver(channel, Arc::new(msg));
    }

    fn leave_all_rooms(&self) {
        let mut state = self.state.lock().expect("session lock");
        let peer_id = self.peer_id();
        for (_, room) in state.rooms.drain() {
            self.hub.leave_room(&room, peer_id);
        }
        for (room, _) in state.detached.drain() {
            self.hub.leave_room(&room, peer_id);
        }
    }

    /// Leaves the rooms of a resumed session that the client did not join again in time.
    fn leave_detached(&self) {
        let mut state = self.state.lock().expect("session lock");
        let now = Instant::now();
        let peer_id = self.peer_id();
        let late: Vec<RoomId> = state
            .detached
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(room, _)| room.clone())
            .collect();
        for room in late {
            state.detached.remove(&room);
            tracing::debug!(%room, "room left (not joined again after the resume)");
            self.hub.leave_room(&room, peer_id);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _enter = self.span.enter();
        let peer_id = PeerId(*self.peer_id.get_mut());
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        for room in state.rooms.values().chain(state.detached.keys()) {
            self.hub.leave_room(room, peer_id);
        }
        self.hub.resumption.unregister(state.key, self);
        self.hub.session_closed(self.transport);
        tracing::info!("session closed");
    }
}

#[cfg(test)]
mod tests {
    //! The session layer driven directly, without a socket: frames in, queued
    //! messages out.

    use proto::{Signal, Token};
    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::config::{Config, Secret};
    use crate::session::Outgoing;
    use crate::session::auth::{Authenticator, TokenClaims, mint_hs256, now_secs};

    struct Harness {
        hub: Arc<Hub>,
        _shutdown: watch::Sender<bool>,
    }

    impl Harness {
        fn new() -> Self {
            let config = Config {
                jwt_secret: Some(Secret("k".into())),
                ..Config::default()
            };
            let (shutdown, rx) = watch::channel(false);
            let auth = Authenticator::from_config(&config).unwrap();
            Self {
                hub: Hub::new(&config, auth, crate::ice::Ice::default(), None, rx),
                _shutdown: shutdown,
            }
        }

        fn session(&self, port: u16) -> (Arc<Session>, mpsc::Receiver<Outgoing>) {
            let connecting = crate::session::Connecting {
                remote: ([192, 0, 2, 1], port).into(),
                transport: Transport::WebSocket,
                origin: None,
                authority: None,
                token: None,
            };
            let admitted = self.hub.preflight_here(&connecting).unwrap();
            self.hub.open_shared(admitted)
        }

        fn token(user: &str) -> Token {
            let claims = TokenClaims::new(user, now_secs() + 60);
            Token(mint_hs256(b"k", &claims))
        }
    }

    fn send(session: &Session, channel: ChannelId, msg: ClientMessage) {
        session.on_envelope_frame(Encoding::Json, &codec::encode_enveloped(Encoding::Json, channel, &msg));
    }

    fn next(queue: &mut mpsc::Receiver<Outgoing>) -> (ChannelId, ServerMessage) {
        let out = queue.try_recv().expect("a queued message");
        (out.channel, (*out.msg).clone())
    }

    fn hello(session: &Session, queue: &mut mpsc::Receiver<Outgoing>, user: &str) {
        send(
            session,
            CONTROL_CHANNEL,
            ClientMessage::Hello {
                id: Some(1),
                version: 1,
                token: Some(Harness::token(user)),
                resume: None,
            },
        );
        assert!(matches!(next(queue), (0, ServerMessage::Welcome { id: Some(1), .. })));
    }

    /// A welcomed session for `user`.
    fn welcomed(h: &Harness, port: u16, user: &str) -> (Arc<Session>, mpsc::Receiver<Outgoing>) {
        let (session, mut queue) = h.session(port);
        hello(&session, &mut queue, user);
        (session, queue)
    }

    #[test]
    fn two_sessions_meet_in_a_room_and_relay_a_signal() {
        let h = Harness::new();
        let (alice, mut alice_q) = welcomed(&h, 1, "alice");
        let (bob, mut bob_q) = welcomed(&h, 2, "bob");
        send(
            &alice,
            1,
            ClientMessage::Join {
                id: Some(2),
                room: "r".into(),
                resume_after: None,
            },
        );
        assert!(matches!(next(&mut alice_q), (1, ServerMessage::Joined { members, .. }) if members.is_empty()));
        send(
            &bob,
            5,
            ClientMessage::Join {
                id: Some(2),
                room: "r".into(),
                resume_after: None,
            },
        );
        assert!(matches!(next(&mut bob_q), (5, ServerMessage::Joined { members, .. }) if members.len() == 1));
        assert!(matches!(next(&mut alice_q), (1, ServerMessage::PeerJoined { .. })));
        let offer = Signal::Offer { sdp: "v=0".into() };
        send(
            &bob,
            5,
            ClientMessage::Signal {
                id: Some(3),
                seq: Some(1),
                to: alice.peer_id(),
                signal: offer.clone(),
            },
        );
        assert_eq!(next(&mut bob_q), (5, ServerMessage::Ack { id: 3 }));
        assert_eq!(
            next(&mut alice_q),
            (
                1,
                ServerMessage::Signal {
                    from: bob.peer_id(),
                    signal: offer
                }
            )
        );
    }

    #[test]
    fn a_message_before_hello_ends_the_session_with_auth_required() {
        let h = Harness::new();
        let (session, mut queue) = h.session(1);
        send(&session, CONTROL_CHANNEL, ClientMessage::Ping { id: Some(9), nonce: 1 });
        assert!(matches!(
            next(&mut queue),
            (
                0,
                ServerMessage::Error {
                    id: Some(9),
                    code: ErrorCode::AuthRequired,
                    ..
                }
            )
        ));
        assert_eq!(
            session.outbox().goodbye().map(|g| g.code),
            Some(ErrorCode::AuthRequired)
        );
    }

    #[test]
    fn a_dropped_session_leaves_its_rooms_and_frees_its_slot() {
        let h = Harness::new();
        let (alice, mut alice_q) = welcomed(&h, 1, "alice");
        let (bob, mut bob_q) = welcomed(&h, 2, "bob");
        send(
            &alice,
            1,
            ClientMessage::Join {
                id: None,
                room: "r".into(),
                resume_after: None,
            },
        );
        send(
            &bob,
            1,
            ClientMessage::Join {
                id: None,
                room: "r".into(),
                resume_after: None,
            },
        );
        let _ = (next(&mut alice_q), next(&mut alice_q), next(&mut bob_q));
        let bob_id = bob.peer_id();
        assert_eq!(h.hub.admission.open(), 2);
        drop(bob);
        assert_eq!(next(&mut alice_q), (1, ServerMessage::PeerLeft { peer_id: bob_id }));
        assert_eq!(h.hub.admission.open(), 1);
    }

    #[test]
    fn budget_violations_are_reported_once_a_second_but_all_counted() {
        let h = Harness::new();
        let (session, mut queue) = welcomed(&h, 1, "flood");
        let burst = h.hub.settings.limits.message_burst;
        for nonce in 0..burst + 10 {
            send(&session, CONTROL_CHANNEL, ClientMessage::Ping { id: None, nonce });
        }
        let mut errors = 0;
        while let Ok(out) = queue.try_recv() {
            if matches!(
                &*out.msg,
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            ) {
                errors += 1;
            }
        }
        assert_eq!(errors, 1);
        assert!(h.hub.counters.errors(ErrorCode::RateLimited) >= 10);
    }
}
