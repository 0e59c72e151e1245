//! The hub: what every session shares, and the door through which transports
//! open sessions.
//!
//! A transport asks the hub two things: may this connection become a session
//! ([`Hub::preflight`]: admission, then the connect URL's token), and then to
//! open it ([`Hub::open_shared`] or [`Hub::open_per_channel`]); it feeds the
//! session frames and writes out what lands in its queues.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::{Encoding, SessionLimits};
use tokio::sync::{mpsc, watch};

use super::addr::MaskedIp;
use super::admission::{Admission, AdmissionLimits, Permit, Refusal};
use super::auth::{Authenticator, Claims};
use super::counters::Counters;
use super::outbox::{Outbox, Outgoing};
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
    pub jwt_leeway: Duration,
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
            jwt_leeway: Duration::from_secs(config.jwt_leeway_secs),
        }
    }
}

impl SessionSettings {
    /// The instant a token expiring at `exp` (Unix seconds) stops being honoured.
    pub fn expiry_instant(&self, exp: u64) -> Instant {
        let left = Duration::from_secs(exp.saturating_sub(super::auth::now_secs()));
        Instant::now() + left + self.jwt_leeway
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

/// A connection that passed admission and, if its connect URL carried a token,
/// authentication: what a transport holds before it opens the session.
pub struct Admitted {
    permit: Permit,
    remote: SocketAddr,
    claims: Option<Claims>,
}

/// What a session is opened with (built by the hub from an [`Admitted`]).
pub(super) struct Opening {
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

    /// Everything checked before a session exists, in order: admission (caps
    /// and rates), then the token of the connect URL if there is one.
    pub fn preflight(&self, remote: SocketAddr, token: Option<&str>) -> Result<Admitted, Refusal> {
        let permit = self.admit(remote)?;
        let claims = token.map(|t| self.check_token(t)).transpose()?;
        Ok(Admitted { permit, remote, claims })
    }

    fn admit(&self, remote: SocketAddr) -> Result<Permit, Refusal> {
        let admitted = if *self.shutdown.borrow() {
            Err(Refusal::new(
                proto::ErrorCode::ShuttingDown,
                "the server is shutting down",
            ))
        } else {
            self.admission.admit(remote.ip(), Instant::now())
        };
        admitted.inspect_err(|refusal| {
            self.counters.error(refusal.code);
            tracing::info!(ip = %MaskedIp::of(remote.ip()), code = %refusal.code, "connection refused");
        })
    }

    fn check_token(&self, token: &str) -> Result<Claims, Refusal> {
        self.auth.verify(token).map_err(|e| {
            self.counters.error(e.code());
            Refusal::new(e.code(), e.to_string())
        })
    }

    /// Opens a session whose channels share one outbound queue (a WebSocket);
    /// returns the queue for the transport's writer.
    pub fn open_shared(
        self: &Arc<Self>,
        admitted: Admitted,
        transport: &'static str,
    ) -> (Arc<Session>, mpsc::Receiver<Outgoing>) {
        let (outbox, queue) = Outbox::shared(self.settings.queue_len, self.settings.queue_bytes);
        (self.open(admitted, outbox, None, transport), queue)
    }

    /// Opens a session whose channels get outbound queues of their own (streams,
    /// added with [`Session::add_channel`]).
    pub fn open_per_channel(
        self: &Arc<Self>,
        admitted: Admitted,
        encoding: Encoding,
        transport: &'static str,
    ) -> Arc<Session> {
        let outbox = Outbox::per_channel(self.settings.queue_bytes);
        self.open(admitted, outbox, Some(encoding), transport)
    }

    fn open(
        self: &Arc<Self>,
        admitted: Admitted,
        outbox: Arc<Outbox>,
        encoding: Option<Encoding>,
        transport: &'static str,
    ) -> Arc<Session> {
        self.counters.session_opened();
        let Admitted { permit, remote, claims } = admitted;
        Session::open(
            self.clone(),
            Opening {
                permit,
                remote,
                claims,
                outbox,
                encoding,
                transport,
            },
        )
    }

    /// A receiver that turns `true` when the server starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub fn max_frame(&self) -> usize {
        self.settings.limits.max_frame_bytes as usize
    }
}
