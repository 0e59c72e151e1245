//! The hub: what every session shares, and the door through which transports
//! open sessions.
//!
//! A transport asks the hub two things: may this connection become a session
//! ([`Hub::preflight`]: the switches, the blocklist, the origin, admission, then
//! the connect URL's token), and then to open it ([`Hub::open_shared`] or
//! [`Hub::open_per_channel`]); it feeds the session frames and writes out what
//! lands in its queues. [`Hub::early_check`] is the part of the preflight that
//! needs nothing but the address, for transports that can refuse a connection
//! before its handshake.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proto::{Encoding, ErrorCode, PeerId, RoomId, SessionLimits};
use tokio::sync::{mpsc, watch};

use super::addr::{ClientKey, MaskedIp};
use super::admission::{Admission, AdmissionLimits, Permit, Refusal};
use super::auth::{AuthError, Authenticator, Claims};
use super::blocklist::{BlockPolicy, Blocklist, Strike};
use super::counters::Counters;
use super::outbox::{Outbox, Outgoing};
use super::resume::{ResumeSettings, Resumption};
use super::session::Session;
use super::switches::{Switches, Transport};
use crate::cluster::{Cluster, guard};
use crate::config::Config;
use crate::ice::Ice;
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
    /// How long before its token expires a session is sent `token_expiring`.
    pub refresh_notice: Duration,
    /// Violation points at which a session is closed with `policy_violation`.
    pub abuse_score_limit: u32,
    /// Development mode: `hello` without a token opens an anonymous session.
    pub dev_mode: bool,
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
            refresh_notice: Duration::from_secs(config.token_refresh_notice_secs),
            abuse_score_limit: config.abuse_score_limit,
            dev_mode: config.dev_mode,
        }
    }
}

impl SessionSettings {
    /// The instant a token expiring at `exp` (Unix seconds) stops being
    /// honoured. `exp` is the token's to say, up to `u64::MAX` (which once
    /// overflowed the clock and panicked the session's worker): anything
    /// beyond [`FARTHEST_EXPIRY`] from now counts as that.
    pub fn expiry_instant(&self, exp: u64) -> Instant {
        let left = Duration::from_secs(exp.saturating_sub(super::auth::now_secs()))
            .saturating_add(self.jwt_leeway)
            .min(FARTHEST_EXPIRY);
        let now = Instant::now();
        now.checked_add(left).unwrap_or(now)
    }
}

/// How far ahead a token's expiry is taken as given: a century, past any
/// session's life, and far inside what the clock can represent.
pub const FARTHEST_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[cfg(test)]
mod expiry_tests {
    use super::*;

    #[test]
    fn an_expiry_at_the_end_of_time_is_a_century_away_not_a_panic() {
        let settings = SessionSettings::from_config(&Config::default());
        let at = settings.expiry_instant(u64::MAX);
        let ahead = at.duration_since(Instant::now());
        assert!(ahead > FARTHEST_EXPIRY - Duration::from_secs(60) && ahead <= FARTHEST_EXPIRY);
        // An expired token's instant is now (plus the leeway), not in the past.
        assert!(settings.expiry_instant(0) >= Instant::now());
    }
}

pub struct Hub {
    pub settings: SessionSettings,
    pub auth: Authenticator,
    pub admission: Arc<Admission>,
    pub blocklist: Blocklist,
    pub switches: Switches,
    pub rooms: Rooms,
    pub counters: Counters,
    /// The STUN and TURN servers sessions are handed.
    pub ice: Ice,
    /// Sessions that can be resumed, and those held for it.
    pub resumption: Arc<Resumption>,
    /// This node's place in the cluster, in cluster mode.
    pub cluster: Option<Arc<Cluster>>,
    config: Arc<Config>,
    /// Sessions open now, by [`Transport::index`].
    open_by_transport: [AtomicU64; 2],
    shutdown: watch::Receiver<bool>,
}

/// A connection asking to become a session: what its transport knows of it
/// before the session exists.
#[derive(Clone, Copy, Debug)]
pub struct Connecting<'a> {
    pub remote: SocketAddr,
    pub transport: Transport,
    /// The `Origin` of the upgrade or CONNECT request (browsers send one).
    pub origin: Option<&'a str>,
    /// The authority the request was sent to (`Host` / `:authority`): a page
    /// served by this server has it as its own origin.
    pub authority: Option<&'a str>,
    /// A token from the connect URL.
    pub token: Option<&'a str>,
}

/// A connection that passed admission and, if its connect URL carried a token,
/// authentication: what a transport holds before it opens the session.
pub struct Admitted {
    permit: Permit,
    remote: SocketAddr,
    transport: Transport,
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
    /// For logs, stats and switches only: sessions treat every transport alike.
    pub transport: Transport,
}

impl Hub {
    pub fn new(
        config: &Config,
        auth: Authenticator,
        ice: Ice,
        cluster: Option<Arc<Cluster>>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let resume = ResumeSettings {
            grace: Duration::from_secs(config.resume_grace_secs),
            buffer_bytes: config.resume_buffer_bytes as usize,
            // A resume queues what was kept at once: it must fit the queue.
            buffer_events: (config.outbound_queue_messages as usize / 2).max(1),
        };
        // Resume tokens are checked by the node that issued them; in cluster mode
        // every node can check every node's (to tell a client where its session is).
        let (mac_key, node) = match &cluster {
            Some(cluster) => (cluster.shared_key("resume tokens"), cluster.node_id().to_owned()),
            None => (rand::random(), String::new()),
        };
        Arc::new(Self {
            resumption: Arc::new(Resumption::new(resume, mac_key, node)),
            settings: SessionSettings::from_config(config),
            auth,
            admission: Admission::new(AdmissionLimits::from_config(config)),
            blocklist: Blocklist::new(BlockPolicy::from_config(config)),
            switches: Switches::from_config(config),
            rooms: Rooms::new(config.max_room_members as usize),
            counters: Counters::default(),
            ice,
            cluster,
            config: Arc::new(config.clone()),
            open_by_transport: Default::default(),
            shutdown,
        })
    }

    /// Everything checked before a session exists, in order: the switches and
    /// the blocklist ([`Hub::early_check`]), the page's origin, admission (caps
    /// and rates), then the token of the connect URL if there is one.
    pub async fn preflight(&self, connecting: &Connecting<'_>) -> Result<Admitted, Refusal> {
        let mut admitted = self.preflight_here(connecting)?;
        if let Some(cluster) = &self.cluster {
            let ip = connecting.remote.ip();
            let max = self.config.max_connections_per_ip;
            match cluster.admit(admitted.permit.key(), max).await {
                guard::Admission::Admitted => admitted.permit.counted_by(cluster.clone()),
                guard::Admission::AtCap => {
                    let refusal = Refusal::new(
                        ErrorCode::TooManyConnections,
                        format!("this address already has {max} connections open across the cluster"),
                    );
                    return Err(self.refused(ip, refusal));
                }
                guard::Admission::Blocked(ms) => {
                    let secs = ms.div_ceil(1000);
                    let refusal = Refusal::new(
                        ErrorCode::IpBlocked,
                        format!("this address is blocked for {secs} more seconds (auth_failures, cluster-wide)"),
                    )
                    .retry_after(secs);
                    return Err(self.refused(ip, refusal));
                }
            }
        }
        Ok(admitted)
    }

    /// The checks this node makes alone (all of [`Hub::preflight`] on a single node).
    pub fn preflight_here(&self, connecting: &Connecting<'_>) -> Result<Admitted, Refusal> {
        let remote = connecting.remote;
        self.early_check(remote.ip(), connecting.transport)?;
        if let Some(origin) = connecting.origin
            && !self.config.origin_allowed(origin, connecting.authority)
        {
            let refusal = Refusal::new(
                ErrorCode::OriginNotAllowed,
                format!("pages from {origin} may not connect to this server"),
            );
            return Err(self.refused(remote.ip(), refusal));
        }
        let permit = self.admit(remote)?;
        let claims = connecting
            .token
            .map(|t| self.verify_token(remote.ip(), t))
            .transpose()?;
        Ok(Admitted {
            permit,
            remote,
            transport: connecting.transport,
            claims,
        })
    }

    /// What can be checked from the address alone, before any handshake: the
    /// service and transport switches, and the blocklist.
    pub fn early_check(&self, ip: IpAddr, transport: Transport) -> Result<(), Refusal> {
        self.switches
            .check(transport)
            .and_then(|()| self.check_blocklist(ip))
            .map_err(|refusal| self.refused(ip, refusal))
    }

    /// `Err(ip_blocked)` while `ip` is blocked (the HTTP API asks this too).
    pub fn check_blocklist(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.blocklist.check(ip, Instant::now()).map_err(|blocked| {
            Refusal::new(
                ErrorCode::IpBlocked,
                format!(
                    "this address is blocked for {} more seconds ({})",
                    blocked.retry_after_secs(),
                    blocked.reason.as_str()
                ),
            )
            .retry_after(blocked.retry_after_secs())
        })
    }

    /// Whether a browser page of `origin` may use the server (the HTTP API's CORS asks this).
    pub fn origin_allowed(&self, origin: &str, authority: Option<&str>) -> bool {
        self.config.origin_allowed(origin, authority)
    }

    fn refused(&self, ip: IpAddr, refusal: Refusal) -> Refusal {
        self.counters.error(refusal.code);
        let ip = MaskedIp::of(ip);
        match refusal.code {
            ErrorCode::IpBlocked | ErrorCode::OriginNotAllowed => {
                tracing::info!(target: "security", event = "connection_refused", %ip, code = %refusal.code, "connection refused");
            }
            _ => tracing::info!(%ip, code = %refusal.code, "connection refused"),
        }
        refusal
    }

    fn admit(&self, remote: SocketAddr) -> Result<Permit, Refusal> {
        if *self.shutdown.borrow() {
            let refusal = Refusal::new(ErrorCode::ShuttingDown, "the server is shutting down");
            return Err(self.refused(remote.ip(), refusal));
        }
        self.admission
            .admit(remote.ip(), Instant::now())
            .map_err(|refusal| self.refused(remote.ip(), refusal))
    }

    fn verify_token(&self, ip: IpAddr, token: &str) -> Result<Claims, Refusal> {
        self.authenticate(ip, token)
            .map_err(|e| self.refused(ip, Refusal::new(e.code(), e.to_string())))
    }

    /// Verifies a token presented from `ip`; a failure is a strike against the
    /// address (and a security event). The caller reports the failure, which
    /// counts its code.
    pub fn authenticate(&self, ip: IpAddr, token: &str) -> Result<Claims, AuthError> {
        self.auth
            .verify(token)
            .inspect_err(|e| self.strike_auth(ip, e.code(), &e.to_string()))
    }

    /// Records a failed authentication from `ip` that is not a token (a failed
    /// login, an unknown refresh token): counted, logged, and a strike.
    pub fn auth_failed(&self, ip: IpAddr, code: ErrorCode, reason: &str) {
        self.counters.error(code);
        self.strike_auth(ip, code, reason);
    }

    fn strike_auth(&self, ip: IpAddr, code: ErrorCode, reason: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.strike(ClientKey::of(ip), self.blocklist.policy());
        }
        tracing::warn!(
            target: "security",
            event = "auth_failed",
            ip = %MaskedIp::of(ip),
            %code,
            reason,
            "authentication failed"
        );
        self.blocklist.strike(ip, Strike::AuthFailure, Instant::now());
    }

    /// Takes `peer` out of `room`, here and, in cluster mode, everywhere.
    pub fn leave_room(&self, room: &RoomId, peer: PeerId) {
        let nodes = self.rooms.leave(room, peer);
        if let (Some(cluster), Some(nodes)) = (&self.cluster, nodes) {
            cluster.left(room, peer, nodes);
        }
    }

    /// Sessions open now on `transport`.
    pub fn open_sessions(&self, transport: Transport) -> u64 {
        self.open_by_transport[transport.index()].load(Ordering::Relaxed)
    }

    pub(super) fn session_closed(&self, transport: Transport) {
        self.open_by_transport[transport.index()].fetch_sub(1, Ordering::Relaxed);
    }

    /// Opens a session whose channels share one outbound queue (a WebSocket);
    /// returns the queue for the transport's writer.
    pub fn open_shared(self: &Arc<Self>, admitted: Admitted) -> (Arc<Session>, mpsc::Receiver<Outgoing>) {
        let (outbox, queue) = Outbox::shared(self.settings.queue_len, self.settings.queue_bytes);
        (self.open(admitted, outbox, None), queue)
    }

    /// Opens a session whose channels get outbound queues of their own (streams,
    /// added with [`Session::add_channel`]).
    pub fn open_per_channel(self: &Arc<Self>, admitted: Admitted, encoding: Encoding) -> Arc<Session> {
        let outbox = Outbox::per_channel(self.settings.queue_bytes);
        self.open(admitted, outbox, Some(encoding))
    }

    fn open(self: &Arc<Self>, admitted: Admitted, outbox: Arc<Outbox>, encoding: Option<Encoding>) -> Arc<Session> {
        self.counters.session_opened();
        let Admitted {
            permit,
            remote,
            transport,
            claims,
        } = admitted;
        self.open_by_transport[transport.index()].fetch_add(1, Ordering::Relaxed);
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

    /// Whether the server is shutting down.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that turns `true` when the server starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub fn max_frame(&self) -> usize {
        self.settings.limits.max_frame_bytes as usize
    }
}
