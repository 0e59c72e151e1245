//! Resuming sessions: the resume token, the sessions that lost their
//! connection and wait for it, and the hand-over to a new connection.
//!
//! A session whose connection is lost (not closed by the client) is *held*
//! for the grace period: its peer id, its seats in rooms (which keep the
//! room's events, see [`crate::room::replay`]) and its budgets stay, and
//! nobody in its rooms is told. A new connection, over either transport, that
//! says `hello` with a valid token for the same user and the session's resume
//! token takes it over ([`Session::resume`]): same peer id, and each room is
//! joined again with `resume_after` to get the events it missed. A session can
//! also be taken over while its old connection still looks alive (a QUIC
//! connection whose peer vanished): the old connection is closed with
//! `session_resumed`. When the grace period ends, or the held events overflow
//! their bound, the session ends and its peers see it leave.
//!
//! A resume token is `base64url(version, session key, generation, node, MAC)`:
//! the MAC (HMAC-SHA256, a key this node or, in cluster mode, every node
//! holds) makes it unforgeable; the generation makes it single use (every
//! `welcome` carries the next one); the node says where the session is held.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use proto::{CONTROL_CHANNEL, ErrorCode, RequestId, RoomId, Seq, Token};
use sha2::Sha256;

use super::auth::Claims;
use super::outbox::Goodbye;
use super::score::Score;
use super::session::{Detached, Phase, Session, State};

const TOKEN_VERSION: u8 = 1;
const MAC_LEN: usize = 16;

/// A session's identity across connections: its `session_id` in `welcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey(pub [u8; 16]);

impl SessionKey {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Settings of resumption, from the configuration.
#[derive(Clone, Debug)]
pub struct ResumeSettings {
    /// How long a session that lost its connection is held; zero turns resume off.
    pub grace: Duration,
    /// The bytes of room events a session keeps for a resume.
    pub buffer_bytes: usize,
    /// The events a session keeps for a resume (they are queued at once when it resumes).
    pub buffer_events: usize,
}

impl ResumeSettings {
    pub fn enabled(&self) -> bool {
        !self.grace.is_zero()
    }
}

/// Why a resume was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error("not a resume token this server issued")]
    Invalid,
    #[error("the session is no longer held: {0}; start a new session")]
    Expired(&'static str),
    #[error("this resume token was already used")]
    Used,
    #[error("the resume token belongs to another user's session")]
    WrongUser,
    #[error("the session is held by another node of the cluster, which releases it now; start a new session")]
    Elsewhere,
}

impl ResumeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ResumeError::Invalid => ErrorCode::ResumeInvalid,
            ResumeError::Expired(_) => ErrorCode::ResumeExpired,
            ResumeError::Used => ErrorCode::ResumeUsed,
            ResumeError::WrongUser => ErrorCode::WrongUser,
            ResumeError::Elsewhere => ErrorCode::ResumeElsewhere,
        }
    }
}

/// What a resume token says, once its MAC checked out.
#[derive(Debug, PartialEq, Eq)]
pub struct ResumeClaim {
    pub key: SessionKey,
    pub generation: u32,
    pub node: String,
}

/// The sessions that can be resumed on this node.
pub struct Resumption {
    pub settings: ResumeSettings,
    mac_key: [u8; 32],
    /// This node's id in the cluster ("" on a single node).
    node: String,
    sessions: Mutex<HashMap<SessionKey, Entry>>,
    /// Why recently ended held sessions ended, until their tokens are stale.
    ended: Mutex<HashMap<SessionKey, (&'static str, Instant)>>,
}

struct Entry {
    /// The session that has the key now.
    live: Weak<Session>,
    /// Set while the session has no connection: what keeps it alive.
    held: Option<Arc<Session>>,
}

impl Resumption {
    pub fn new(settings: ResumeSettings, mac_key: [u8; 32], node: String) -> Self {
        Self {
            settings,
            mac_key,
            node,
            sessions: Mutex::default(),
            ended: Mutex::default(),
        }
    }

    /// Sessions held now (no connection, waiting for a resume).
    pub fn held(&self) -> usize {
        self.sessions
            .lock()
            .expect("resume lock")
            .values()
            .filter(|e| e.held.is_some())
            .count()
    }

    /// The resume token for generation `generation` of session `key`.
    pub fn token(&self, key: SessionKey, generation: u32) -> Token {
        let mut bytes = Vec::with_capacity(1 + 16 + 4 + 1 + self.node.len() + MAC_LEN);
        bytes.push(TOKEN_VERSION);
        bytes.extend_from_slice(&key.0);
        bytes.extend_from_slice(&generation.to_be_bytes());
        bytes.push(u8::try_from(self.node.len()).unwrap_or(u8::MAX));
        bytes.extend_from_slice(&self.node.as_bytes()[..self.node.len().min(255)]);
        let mac = self.mac(&bytes);
        bytes.extend_from_slice(&mac);
        Token(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Checks a token's form and MAC.
    pub fn verify(&self, token: &str) -> Result<ResumeClaim, ResumeError> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| ResumeError::Invalid)?;
        if bytes.len() < 1 + 16 + 4 + 1 + MAC_LEN || bytes[0] != TOKEN_VERSION {
            return Err(ResumeError::Invalid);
        }
        let (body, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let node_len = usize::from(body[21]);
        if body.len() != 22 + node_len {
            return Err(ResumeError::Invalid);
        }
        let mut check = Hmac::<Sha256>::new_from_slice(&self.mac_key).expect("HMAC takes any key length");
        check.update(body);
        check.verify_truncated_left(mac).map_err(|_| ResumeError::Invalid)?;
        let mut key = [0u8; 16];
        key.copy_from_slice(&body[1..17]);
        let mut generation = [0u8; 4];
        generation.copy_from_slice(&body[17..21]);
        let node = String::from_utf8(body[22..].to_vec()).map_err(|_| ResumeError::Invalid)?;
        Ok(ResumeClaim {
            key: SessionKey(key),
            generation: u32::from_be_bytes(generation),
            node,
        })
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.mac_key).expect("HMAC takes any key length");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// Whether a claim names a session of another node.
    pub fn is_elsewhere(&self, claim: &ResumeClaim) -> bool {
        claim.node != self.node
    }

    /// Records that `session` has `key` now (a new or a resumed session).
    pub(super) fn register(&self, key: SessionKey, session: Weak<Session>) {
        self.sessions.lock().expect("resume lock").insert(
            key,
            Entry {
                live: session,
                held: None,
            },
        );
    }

    /// Forgets `key` if `session` still has it (the session is over).
    pub(super) fn unregister(&self, key: SessionKey, session: *const Session) {
        let mut sessions = self.sessions.lock().expect("resume lock");
        if sessions.get(&key).is_some_and(|e| e.live.as_ptr() == session) {
            sessions.remove(&key);
        }
    }

    /// The session with `key`, or why there is none.
    fn find(&self, key: SessionKey) -> Result<Arc<Session>, ResumeError> {
        let live = self
            .sessions
            .lock()
            .expect("resume lock")
            .get(&key)
            .and_then(|e| e.live.upgrade());
        live.ok_or_else(|| {
            let ended = self.ended.lock().expect("resume lock");
            ResumeError::Expired(ended.get(&key).map_or("it ended", |(why, _)| why))
        })
    }

    /// Holds `session` (which lost its connection) until it is resumed, the
    /// grace period ends, its kept events overflow, or the server shuts down
    /// (a held session would otherwise keep the shutdown waiting its whole
    /// grace period for a client that is not there).
    pub(super) fn hold(
        self: &Arc<Self>,
        key: SessionKey,
        session: Arc<Session>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let memory = session.replay_memory();
        let weak = Arc::downgrade(&session);
        if let Some(entry) = self.sessions.lock().expect("resume lock").get_mut(&key) {
            entry.held = Some(session);
        } else {
            return;
        }
        let this = self.clone();
        let grace = self.settings.grace;
        tokio::spawn(async move {
            let why = tokio::select! {
                () = tokio::time::sleep(grace) => "its grace period ended",
                () = memory.overflowed() => "more events waited for it than it may keep",
                () = crate::shutdown::signalled(&mut shutdown) => "the server is shutting down",
            };
            this.end_hold(key, &weak, why);
        });
    }

    /// Ends the hold of `key` if `session` is still the one held.
    fn end_hold(&self, key: SessionKey, session: &Weak<Session>, why: &'static str) {
        let released = {
            let mut sessions = self.sessions.lock().expect("resume lock");
            match sessions.get_mut(&key) {
                Some(entry) if entry.live.ptr_eq(session) && entry.held.is_some() => {
                    let held = entry.held.take();
                    sessions.remove(&key);
                    held
                }
                _ => None,
            }
        };
        let Some(released) = released else { return };
        let now = Instant::now();
        {
            let mut ended = self.ended.lock().expect("resume lock");
            ended.retain(|_, (_, until)| *until > now);
            ended.insert(key, (why, now + self.settings.grace * 2));
        }
        released
            .span()
            .in_scope(|| tracing::info!(reason = why, "held session ended"));
        // Dropping the last reference takes the session out of its rooms.
        drop(released);
    }

    /// Ends the hold of the session `key` if it is held by `user` (another
    /// node was asked to resume it and will start a new session instead).
    pub fn release(&self, key: SessionKey, user: &str) {
        let Ok(session) = self.find(key) else { return };
        if session.user_id().as_deref() == Some(user) {
            self.end_hold(key, &Arc::downgrade(&session), "it was resumed on another node");
        }
    }

    /// Hands `key` over to `session` (which resumed it); returns the session
    /// held until now, if it was.
    fn adopt(&self, key: SessionKey, session: Weak<Session>) -> Option<Arc<Session>> {
        let mut sessions = self.sessions.lock().expect("resume lock");
        let entry = sessions.entry(key).or_insert(Entry {
            live: Weak::new(),
            held: None,
        });
        entry.live = session;
        entry.held.take()
    }
}

/// What a resumed session takes over from the session it resumes.
struct Taken {
    peer_id: proto::PeerId,
    rooms: HashMap<RoomId, Seq>,
    budget: super::budget::Budget,
    score: Score,
    memory: Arc<crate::room::ReplayMemory>,
    generation: u32,
}

impl Session {
    /// `hello` with a resume token: takes over the session it names, if `claims`
    /// are for the same user. On success the session is open, with the old one's
    /// identity, rooms (to be joined again) and budgets; `welcome` is sent.
    pub(super) fn resume(
        &self,
        state: &mut State,
        id: Option<RequestId>,
        version: u16,
        claims: Claims,
        token: &Token,
    ) -> Result<(), ResumeError> {
        let resumption = &self.hub.resumption;
        let claim = resumption.verify(&token.0)?;
        if resumption.is_elsewhere(&claim) {
            if let Some(cluster) = &self.hub.cluster {
                cluster.release_elsewhere(&claim.node, claim.key, &claims.user_id);
            }
            return Err(ResumeError::Elsewhere);
        }
        let old = resumption.find(claim.key)?;
        if std::ptr::eq(Arc::as_ptr(&old), self) {
            return Err(ResumeError::Used);
        }
        let taken = old.hand_over(claim.generation, &claims.user_id, self.hub.settings.limits.clone())?;
        // From here on the key is this session's; the old one, if it was held, is let go.
        let previous = resumption.adopt(claim.key, self.me.clone());
        old.end(Goodbye::new(
            ErrorCode::SessionResumed,
            "this session was resumed on another connection",
        ));
        drop((old, previous));

        let now = Instant::now();
        let generation = taken.generation;
        self.set_peer_id(taken.peer_id);
        state.key = claim.key;
        state.generation = generation;
        state.budget = taken.budget;
        state.score = taken.score;
        taken.memory.set_held(false);
        state.replay = taken.memory;
        let deadline = now + resumption.settings.grace;
        state.detached = taken
            .rooms
            .into_iter()
            .map(|(room, last_seq)| (room, Detached { last_seq, deadline }))
            .collect();
        self.span.record("session", tracing::field::display(claim.key));
        self.span.record("peer", tracing::field::display(taken.peer_id));
        tracing::info!(user = %claims.user_id, rooms = state.detached.len(), "session resumed");
        self.hub.counters.session_resumed();
        self.send(
            CONTROL_CHANNEL,
            self.welcome(id, version, &claims, claim.key, generation, true),
        );
        state.phase = Phase::open(claims, &self.hub);
        self.deadline_moved.notify_one();
        Ok(())
    }

    /// Gives this session's identity, rooms and budgets to a session resuming
    /// it with generation `generation` for `user`, if that is allowed; this
    /// session is left with nothing (its end leaves no room).
    fn hand_over(&self, generation: u32, user: &str, limits: proto::SessionLimits) -> Result<Taken, ResumeError> {
        let mut state = self.state.lock().expect("session lock");
        let Phase::Open { claims, .. } = &state.phase else {
            return Err(ResumeError::Expired("it ended"));
        };
        if *claims.user_id != *user {
            return Err(ResumeError::WrongUser);
        }
        if generation != state.generation {
            return Err(ResumeError::Used);
        }
        if self.outbox.goodbye().is_some() {
            return Err(ResumeError::Expired("it ended"));
        }
        let peer_id = self.peer_id();
        let mut rooms: HashMap<RoomId, Seq> = state.detached.drain().map(|(r, d)| (r, d.last_seq)).collect();
        let channels: Vec<_> = state.rooms.drain().collect();
        for (channel, room) in channels {
            self.hub.rooms.hold(&room, peer_id);
            let last_seq = state.seqs.get(&channel).copied().unwrap_or(0);
            rooms.insert(room, last_seq);
        }
        state.seqs.clear();
        // Cluster joins under way find their channel gone and undo themselves.
        state.pending.clear();
        state.generation = generation.wrapping_add(1);
        let now = Instant::now();
        Ok(Taken {
            peer_id,
            rooms,
            budget: std::mem::replace(&mut state.budget, super::budget::Budget::new(&limits, now)),
            score: std::mem::replace(&mut state.score, Score::new(now)),
            memory: state.replay.clone(),
            generation: state.generation,
        })
    }

    /// The connection is lost (not closed by the client): the session is held
    /// for a resume if it can be, else it ends here.
    pub fn connection_lost(self: Arc<Self>) {
        let _enter = self.span.enter();
        if !self.hub.resumption.settings.enabled() || self.outbox.goodbye().is_some() || self.hub.shutting_down() {
            return;
        }
        let key = {
            let state = self.state.lock().expect("session lock");
            if !matches!(state.phase, Phase::Open { .. }) {
                return;
            }
            let peer_id = self.peer_id();
            for room in state.rooms.values() {
                self.hub.rooms.hold(room, peer_id);
            }
            state.replay.set_held(true);
            state.key
        };
        tracing::info!(
            grace_secs = self.hub.resumption.settings.grace.as_secs(),
            "connection lost: session held for a resume"
        );
        let resumption = self.hub.resumption.clone();
        resumption.hold(key, self.clone(), self.hub.shutdown_signal());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resumption(node: &str, key: [u8; 32]) -> Resumption {
        let settings = ResumeSettings {
            grace: Duration::from_secs(30),
            buffer_bytes: 1 << 20,
            buffer_events: 100,
        };
        Resumption::new(settings, key, node.into())
    }

    #[test]
    fn a_token_names_its_session_generation_and_node_and_cannot_be_forged() {
        let r = resumption("n1", [7; 32]);
        let key = SessionKey([1; 16]);
        let token = r.token(key, 3);
        let claim = r.verify(&token.0).unwrap();
        assert_eq!(claim.key, key);
        assert_eq!(claim.generation, 3);
        assert_eq!(claim.node, "n1");
        assert!(!r.is_elsewhere(&claim));
        // Another key: not ours.
        assert_eq!(resumption("n1", [8; 32]).verify(&token.0), Err(ResumeError::Invalid));
        // A bit flipped anywhere: refused.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token.0).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            assert_eq!(
                r.verify(&URL_SAFE_NO_PAD.encode(&bytes)),
                Err(ResumeError::Invalid),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        assert_eq!(r.verify("not base64 !"), Err(ResumeError::Invalid));
        assert_eq!(r.verify(""), Err(ResumeError::Invalid));
    }

    #[test]
    fn a_token_of_another_node_is_recognised_as_such() {
        let key = [9; 32];
        let token = resumption("n1", key).token(SessionKey([2; 16]), 0);
        let here = resumption("n2", key);
        assert!(here.is_elsewhere(&here.verify(&token.0).unwrap()));
    }
}
