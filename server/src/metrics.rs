//! `GET /metrics`: the server's numbers in Prometheus' text format.
//!
//! The hot path pays for one histogram sample per relayed message (how long it
//! waited between its queue and the socket); everything else is read from the
//! counters the session layer keeps anyway, when Prometheus scrapes. The
//! exposition format is written by `metrics-exporter-prometheus`.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `signal_sessions{transport}` | gauge | sessions open now |
//! | `signal_sessions_opened_total` | counter | sessions opened (rate = connects/s) |
//! | `signal_sessions_held` | gauge | sessions that lost their connection and are held for a resume |
//! | `signal_sessions_resumed_total` | counter | sessions resumed on a new connection |
//! | `signal_errors_total{code}` | counter | every error and refusal sent, by code: auth failures, budget violations (`rate_limited`, ...), outbound queue drops (`slow_consumer`) |
//! | `signal_auth_failures_total` | counter | failed authentications (tokens and logins) |
//! | `signal_messages_relayed_total` | counter | signals and broadcasts written to a peer |
//! | `signal_relay_queue_seconds` | histogram | how long a relayed message waited for its peer's socket |
//! | `signal_rooms`, `signal_room_members` | gauge | rooms with members, and their members |
//! | `signal_blocked_addresses` | gauge | addresses blocked now |
//! | `signal_redis_up` | gauge | cluster mode: 1 while Redis answers |
//! | `signal_cluster_refresh_seconds` | gauge | cluster mode: how long the last renewal of this node's room memberships took (keep it well below `cluster_refresh_ms`) |

use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use proto::ErrorCode;

use crate::cluster::{Cluster, Health};
use crate::session::Hub;
use crate::session::switches::Transport;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets of the relay histogram, in seconds: 10 µs to 1 s.
const BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP: Duration = Duration::from_secs(1);

/// Installs the process-wide recorder (once; later calls keep the first).
/// Call it inside the runtime: it spawns the exporter's upkeep.
pub fn install() {
    if HANDLE.get().is_some() {
        return;
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("signal_relay_queue_seconds".into()),
            BUCKETS,
        )
        .expect("static buckets are valid");
    match builder.install_recorder() {
        Ok(handle) => {
            // The exporter keeps every histogram sample until upkeep folds it
            // into the buckets: without it memory grows with every relayed
            // message until a scrape, which then pays for all of them at once.
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(UPKEEP);
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
            let _ = HANDLE.set(handle);
        }
        Err(e) => tracing::warn!(error = %e, "metrics recorder not installed"),
    }
}

/// The hot path's handles, registered once (after [`install`], which runs at
/// start-up before any message), so a relayed message costs no registry lookup.
static RELAYED: LazyLock<(metrics::Counter, metrics::Histogram)> = LazyLock::new(|| {
    (
        metrics::counter!("signal_messages_relayed_total"),
        metrics::histogram!("signal_relay_queue_seconds"),
    )
});

/// Counts one relayed message that waited `waited` in its queue.
pub fn relayed(waited: Duration) {
    let (count, waits) = &*RELAYED;
    count.increment(1);
    waits.record(waited.as_secs_f64());
}

/// The exposition text, with the gauges and counters read now.
pub fn render(hub: &Hub, cluster: Option<&Cluster>) -> String {
    let Some(handle) = HANDLE.get() else {
        return String::new();
    };
    for transport in Transport::ALL {
        metrics::gauge!("signal_sessions", "transport" => transport.as_str()).set(hub.open_sessions(transport) as f64);
    }
    metrics::counter!("signal_sessions_opened_total").absolute(hub.counters.sessions_opened());
    metrics::gauge!("signal_sessions_held").set(hub.resumption.held() as f64);
    metrics::counter!("signal_sessions_resumed_total").absolute(hub.counters.sessions_resumed());
    let mut auth_failures = 0;
    for (code, count) in hub.counters.error_counts() {
        metrics::counter!("signal_errors_total", "code" => code.as_str()).absolute(count);
        if matches!(
            code,
            ErrorCode::AuthFailed
                | ErrorCode::TokenExpired
                | ErrorCode::InvalidCredentials
                | ErrorCode::InvalidRefreshToken
        ) {
            auth_failures += count;
        }
    }
    metrics::counter!("signal_auth_failures_total").absolute(auth_failures);
    let census = hub.rooms.census(0);
    metrics::gauge!("signal_rooms").set(census.rooms as f64);
    metrics::gauge!("signal_room_members").set(census.members as f64);
    metrics::gauge!("signal_blocked_addresses").set(hub.blocklist.blocked(Instant::now()).len() as f64);
    if let Some(cluster) = cluster {
        metrics::gauge!("signal_redis_up").set(if cluster.health() == Health::Up { 1.0 } else { 0.0 });
    }
    handle.render()
}
