//! The hub: what every session shares, and the door through which transports
//! open sessions.
//!
//! A transport asks the hub three things, in order: may this address connect
//! ([`Hub::admit`]), is the token in the URL good ([`Hub::check_token`]), and
//! then to open a session ([`Hub::open_session`]) to which it feeds frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::{Encoding, SessionLimits};
use tokio::sync::watch;

use super::addr::MaskedIp;
use super::admission::{Admission, AdmissionLimits, Permit, Refusal};
use super::auth::{Authenticator, Claims};
use super::counters::Counters;
use super::outbox::Outbox;
use super::session::Session;
use crate::config::Config;
use crate::room::Rooms;

/// Settings the sessions need, taken once from the configuration.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub limits: SessionLimits,
    pub auth_timeout: Duration,
    pub idle_timeout: Duration,
    pub queue_len: usize,
    pub queue_bytes: usize,
}

impl SessionSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            limits: SessionLimits {
                max_frame_bytes: config.max_frame_bytes,
                messages_per_sec: config.messages_per_sec,
                message_burst: config.message_burst,
                bytes_per_sec: config.bytes_per_sec,
                byte_burst: config.byte_burst,
                max_rooms: config.max_rooms_per_session,
                max_room_members: config.max_room_members,
                idle_timeout_ms: u32::try_from(config.idle_timeout_ms).unwrap_or(u32::MAX),
            },
            auth_timeout: config.auth_timeout(),
            idle_timeout: config.idle_timeout(),
            queue_len: config.outbound_queue_messages as usize,
            queue_bytes: config.outbound_queue_bytes as usize,
        }
    }
}

pub struct Hub {
    pub settings: SessionSettings,
    pub auth: Authenticator,
    pub admission: Arc<Admission>,
    pub rooms: Rooms,
    pub counters: Counters,
    shutdown: watch::Receiver<bool>,
}

/// Everything a transport knows about a connection when it opens its session.
pub struct Opening {
    pub permit: Permit,
    pub remote: SocketAddr,
    /// Claims of a token that came in the connect URL, already checked.
    pub claims: Option<Claims>,
    pub outbox: Arc<Outbox>,
    /// Known up front on WebTransport (the connect URL says); on a WebSocket it
    /// follows from the first frame.
    pub encoding: Option<Encoding>,
    /// For logs only: the session layer treats every transport alike.
    pub transport: &'static str,
}

impl Hub {
    pub fn new(config: &Config, auth: Authenticator, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Self {
            settings: SessionSettings::from_config(config),
            auth,
            admission: Admission::new(AdmissionLimits::from_config(config)),
            rooms: Rooms::new(config.max_room_members as usize),
            counters: Counters::default(),
            shutdown,
        })
    }

    /// Whether a new connection from `remote` may open (see [`Admission`]).
    pub fn admit(&self, remote: SocketAddr) -> Result<Permit, Refusal> {
        if *self.shutdown.borrow() {
            return Err(Refusal::new(
                proto::ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        self.admission
            .admit(remote.ip(), Instant::now())
            .inspect_err(|refusal| {
                self.counters.error(refusal.code);
                tracing::info!(ip = %MaskedIp::of(remote.ip()), code = %refusal.code, "connection refused");
            })
    }

    /// Checks a token that came in the connect URL.
    pub fn check_token(&self, token: &str) -> Result<Claims, Refusal> {
        self.auth.verify(token).map_err(|e| {
            self.counters.error(e.code());
            Refusal::new(e.code(), e.to_string())
        })
    }

    pub fn open_session(self: &Arc<Self>, opening: Opening) -> Arc<Session> {
        self.counters.session_opened();
        Session::open(self.clone(), opening)
    }

    /// A receiver that turns `true` when the server starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub fn max_frame(&self) -> usize {
        self.settings.limits.max_frame_bytes as usize
    }
}
