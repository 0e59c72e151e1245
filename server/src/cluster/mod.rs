//! Cluster mode: several nodes joined through Redis (`--redis`).
//!
//! Redis holds only ephemeral session data, every key with a TTL. This module
//! owns the node's connection to Redis (one `redis` connection manager, which
//! reconnects by itself) and watches its health: a node whose Redis is down
//! keeps serving what it can alone and reports itself `degraded` on `/ready`
//! and in `/admin/stats`, and comes back by itself when Redis does.
//!
//! Cross-node rooms, relay and the cluster-wide caps build on this connection
//! (issue 5); a single node without `--redis` never touches this module.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;

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

/// This node's place in the cluster.
pub struct Cluster {
    node_id: String,
    conn: ConnectionManager,
    health: watch::Receiver<Health>,
}

impl Cluster {
    /// Sets up the connection to `url` without waiting for Redis: a node starts
    /// (degraded) even while Redis is down, and connects when it is back.
    pub fn start(url: &str) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("invalid redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let (report, health) = watch::channel(Health::Down);
        let cluster = Arc::new(Self {
            node_id: format!("{:016x}", rand::random::<u64>()),
            conn,
            health,
        });
        tokio::spawn(probe(cluster.conn.clone(), report));
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

    /// The connection manager, for the cluster's commands (clone it; clones share the connection).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
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
