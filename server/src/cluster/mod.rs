//! Cluster mode: several nodes joined through Redis (`--redis`).
//!
//! Redis holds only ephemeral session data, every key with a TTL. This module
//! owns the node's connection to Redis (one `redis` connection manager, which
//! reconnects by itself) and watches its health: a node whose Redis is down
//! keeps serving what it can alone and reports itself `degraded` on `/ready`
//! and in `/admin/stats`, and comes back by itself when Redis does.
//!
//! Rooms span nodes: membership lives in Redis ([`members`]), with an exact
//! member cap and a TTL that each node renews; what one node's peer sends to
//! another node's peer goes through Redis pub/sub ([`relay`], [`event`]), one
//! subscription per node. A single node without `--redis` never touches this
//! module.

pub mod event;
pub mod guard;
pub mod members;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use proto::{Member, PeerId, RoomId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, watch};

use self::event::Event;
use self::members::JoinRefused;
use self::relay::{Ack, Op, Outbound};
use crate::room::Remote;
use crate::session::Hub;
use crate::session::addr::ClientKey;
use crate::session::resume::SessionKey;

/// Items that may wait for the relay's publisher.
const RELAY_QUEUE: usize = 65_536;

/// How often the node checks that Redis answers.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe (and any Redis command) may take before Redis counts as down.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether this node can reach Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
}

/// How the cluster runs.
#[derive(Clone)]
pub struct ClusterSettings {
    /// How often a node renews its memberships.
    pub refresh: Duration,
    /// The room member cap, exact across the cluster.
    pub max_room_members: u32,
    /// Salts the address tags of the per-IP keys (see [`guard::Tagger`]).
    pub tagger: guard::Tagger,
}

impl ClusterSettings {
    /// How long a membership lives without renewal: twice the refresh interval,
    /// so one late renewal is not a departure.
    pub fn member_ttl(&self) -> Duration {
        self.refresh * 2
    }
}

/// This node's place in the cluster.
pub struct Cluster {
    node_id: String,
    client: redis::Client,
    conn: ConnectionManager,
    health: watch::Receiver<Health>,
    settings: ClusterSettings,
    relay: mpsc::Sender<Outbound>,
}

/// Why a cluster operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the room is full")]
    RoomFull,
    #[error("the cluster (Redis) is unavailable")]
    Unavailable,
}

impl Cluster {
    /// Sets up the connection to `url` without waiting for Redis: a node starts
    /// (degraded) even while Redis is down, and connects when it is back.
    pub fn start(url: &str, settings: ClusterSettings) -> anyhow::Result<Arc<Self>> {
        // The node's subscription needs RESP3 push messages.
        let url = if url.contains("protocol=") {
            url.to_owned()
        } else if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}?protocol=resp3")
        };
        let client = redis::Client::open(url.as_str()).map_err(|e| anyhow::anyhow!("invalid redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let (report, health) = watch::channel(Health::Down);
        let (relay, queue) = mpsc::channel(RELAY_QUEUE);
        let cluster = Arc::new(Self {
            node_id: format!("{:016x}", rand::random::<u64>()),
            client,
            conn,
            health,
            settings,
            relay,
        });
        tokio::spawn(probe(cluster.conn.clone(), report));
        tokio::spawn(relay::publish(cluster.conn.clone(), cluster.node_id.clone(), queue));
        tracing::info!(node = %cluster.node_id, "cluster mode: connecting to Redis");
        Ok(cluster)
    }

    /// This node's id (random, new at every start).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn health(&self) -> Health {
        *self.health.borrow()
    }

    /// Starts relaying for `hub`: the node's subscription and the membership refresh.
    pub fn run(&self, hub: Arc<Hub>) {
        tokio::spawn(relay::subscribe(self.client.clone(), self.node_id.clone(), hub.clone()));
        tokio::spawn(relay::refresh(
            self.conn.clone(),
            self.node_id.clone(),
            hub,
            self.settings.tagger.clone(),
            self.settings.refresh,
            self.settings.member_ttl(),
        ));
    }

    /// Seats `member` in `room` across the cluster, within the member cap;
    /// returns the members on other nodes.
    pub async fn join(&self, room: &RoomId, member: &Member) -> Result<Vec<Remote>, ClusterError> {
        if self.health() == Health::Down {
            return Err(ClusterError::Unavailable);
        }
        let ttl_ms = u64::try_from(self.settings.member_ttl().as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let joined = members::join(
            &mut conn,
            room,
            member.peer_id,
            &member.user_id,
            &self.node_id,
            ttl_ms,
            self.settings.max_room_members,
        )
        .await;
        joined.map_err(|e| match e {
            JoinRefused::Full => ClusterError::RoomFull,
            JoinRefused::Redis(e) => {
                tracing::warn!(error = %e, "cluster join failed");
                ClusterError::Unavailable
            }
        })
    }

    /// Tells `nodes` that `member` joined `room` here.
    pub fn joined(&self, room: &RoomId, member: Member, nodes: Vec<Arc<str>>) {
        let event = Event::Joined {
            room: room.to_string(),
            member,
            node: self.node_id.clone(),
        };
        self.enqueue(Outbound {
            event: Some(event),
            nodes,
            op: None,
            ack: None,
        });
    }

    /// Takes `peer` out of `room` in Redis and tells `nodes`.
    pub fn left(&self, room: &RoomId, peer: PeerId, nodes: Vec<Arc<str>>) {
        let event = Event::Left {
            room: room.to_string(),
            peer,
        };
        self.enqueue(Outbound {
            event: Some(event),
            nodes,
            op: Some(Op::Leave(room.clone(), peer)),
            ack: None,
        });
    }

    /// Asks `node` to end the session `key` it holds for `user` (the client
    /// tried to resume it here and starts a new session instead).
    pub fn release_elsewhere(&self, node: &str, key: SessionKey, user: &str) {
        let event = Event::Release {
            session: key.0,
            user: user.to_owned(),
        };
        self.enqueue(Outbound {
            event: Some(event),
            nodes: vec![node.into()],
            op: None,
            ack: None,
        });
    }

    /// Secret material every node derives alike from the shared secret, for `purpose`.
    pub fn shared_key(&self, purpose: &str) -> [u8; 32] {
        self.settings.tagger.derive(purpose)
    }

    /// Carries a message to the members of `room` on `nodes` (`to` one peer, or
    /// all but `from`); `ack` is answered once Redis has it.
    pub fn relay(&self, event: Event, nodes: Vec<Arc<str>>, ack: Option<Ack>) {
        self.enqueue(Outbound {
            event: Some(event),
            nodes,
            op: None,
            ack,
        });
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.settings.member_ttl().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts a new connection from `key` against the cluster-wide per-address
    /// cap and block. With Redis down, admits (the node's own caps still hold).
    pub async fn admit(&self, key: ClientKey, max_per_ip: u32) -> guard::Admission {
        if self.health() == Health::Down {
            return guard::Admission::Admitted;
        }
        let mut conn = self.conn.clone();
        let tag = self.settings.tagger.tag(key);
        match guard::admit(&mut conn, &tag, &self.node_id, max_per_ip, self.ttl_ms()).await {
            Ok(admission) => admission,
            Err(e) => {
                tracing::debug!(error = %e, "cluster admission failed; admitted on this node's limits");
                guard::Admission::Admitted
            }
        }
    }

    /// A connection admitted by [`Cluster::admit`] closed.
    pub fn release(&self, key: ClientKey) {
        self.enqueue(Outbound {
            event: None,
            nodes: Vec::new(),
            op: Some(Op::Release(self.settings.tagger.tag(key))),
            ack: None,
        });
    }

    /// Counts a failed authentication from `key` across the cluster.
    pub fn strike(&self, key: ClientKey, policy: crate::session::blocklist::BlockPolicy) {
        let mut conn = self.conn.clone();
        let tag = self.settings.tagger.tag(key);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        tokio::spawn(async move {
            let struck = guard::strike(
                &mut conn,
                &tag,
                ms(policy.window),
                policy.auth_failures,
                ms(policy.block_for),
            );
            if let Err(e) = struck.await {
                tracing::debug!(error = %e, "cluster strike not recorded");
            }
        });
    }

    /// Lifts a block across the cluster; returns whether there was one.
    pub async fn unblock(&self, key: ClientKey) -> bool {
        let mut conn = self.conn.clone();
        guard::unblock(&mut conn, &self.settings.tagger.tag(key))
            .await
            .unwrap_or(false)
    }

    fn enqueue(&self, item: Outbound) {
        if let Err(mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item)) =
            self.relay.try_send(item)
        {
            tracing::warn!("the relay queue is full; an event for other nodes was dropped");
            if let Some(ack) = item.ack {
                ack.outbox.deliver(
                    ack.channel,
                    Arc::new(proto::ServerMessage::Error {
                        id: Some(ack.id),
                        code: proto::ErrorCode::ClusterUnavailable,
                        message: "the cluster's relay is overloaded; not delivered".into(),
                    }),
                );
            }
        }
    }
}

/// Pings Redis every [`PROBE_INTERVAL`] and reports each change of health.
async fn probe(mut conn: ConnectionManager, report: watch::Sender<Health>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let answer = tokio::time::timeout(RESPONSE_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await;
        let now = match answer {
            Ok(Ok(_)) => Health::Up,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Redis probe failed");
                Health::Down
            }
            Err(_) => Health::Down,
        };
        let before = report.send_replace(now);
        match (before, now) {
            (Health::Down, Health::Up) => tracing::info!("Redis is reachable: cluster mode is up"),
            (Health::Up, Health::Down) => {
                tracing::warn!("Redis is unreachable: this node is degraded and serves local sessions only")
            }
            _ => {}
        }
        if report.is_closed() {
            return;
        }
    }
}
