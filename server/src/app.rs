//! Wiring: builds the hub, the certificates and both listeners from a
//! [`Config`], runs them, and shuts them down gracefully.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::watch;

use crate::accounts::Accounts;
use crate::cluster::guard::Tagger;
use crate::cluster::{Cluster, ClusterSettings};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::ice::Ice;
use crate::session::Hub;
use crate::session::auth::{Authenticator, dev_secret_path};
use crate::tls::{CertStore, hex};
use crate::transport;

/// How often housekeeping runs: forgetting quiet addresses, rotating certificates.
const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// How long the process waits at exit for its QUIC connection closes to go out.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// Where a started server listens; printed as one JSON line on stdout.
#[derive(Clone, Debug, Serialize)]
pub struct Listening {
    pub webtransport: SocketAddr,
    pub https: SocketAddr,
    /// Hex SHA-256 of the published certificates, the served one first.
    pub cert_hashes: Vec<String>,
}

/// A started server.
pub struct Running {
    pub listening: Listening,
    pub hub: Arc<Hub>,
    /// The QUIC endpoint, closed (and drained) last at shutdown.
    endpoint: quinn::Endpoint,
    shutdown: watch::Sender<bool>,
    grace: Duration,
}

/// Starts both listeners.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let certs = CertStore::load(&config).context("loading certificates")?;
    let dev_secret = config.jwt_secret.is_none() && config.jwt_secret_file.is_none() && config.jwt_public_key.is_none();
    let auth = Authenticator::from_config(&config).context("setting up JWT verification")?;
    if dev_secret {
        tracing::warn!(
            secret_file = %dev_secret_path(&config.cert_dir).display(),
            "no JWT key configured: tokens are verified with a development secret; \
             mint one with `server token --sub <user>`, and configure jwt_secret or jwt_public_key in production"
        );
    }
    if config.dev_mode {
        announce_dev_mode();
    }
    if let Some(limit) = crate::fd_limit::raise() {
        limit.report(config.max_connections);
    }
    crate::metrics::install();
    let accounts = Arc::new(Accounts::from_config(&config).context("opening the account service")?);
    if accounts.user_count() == 0 {
        tracing::info!(
            users_file = %config.users_file.display(),
            "no accounts yet: create one with `server users add <name>` \
             (accounts are optional; tokens from your own issuer work without them)"
        );
    }
    let cluster = match &config.redis {
        Some(url) => {
            let settings = ClusterSettings {
                refresh: Duration::from_millis(config.cluster_refresh_ms),
                max_room_members: config.max_room_members,
                tagger: Tagger::new(&shared_secret(&config)?),
            };
            Some(Cluster::start(&url.0, settings).context("setting up cluster mode")?)
        }
        None => None,
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let ice = Ice::from_config(&config).context("setting up the ICE servers")?;
    let hub = Hub::new(&config, auth, ice, cluster.clone(), shutdown_rx.clone());
    if let Some(cluster) = &cluster {
        cluster.run(hub.clone());
    }

    let endpoint = transport::webtransport::endpoint::bind(&config, &certs)?;
    let wt_addr = endpoint.local_addr()?;

    let listener = crate::listen::tcp(SocketAddr::new(config.bind, config.https_port), config.reuse_port)
        .with_context(|| format!("binding TCP {}:{}", config.bind, config.https_port))?;
    let https_addr = listener.local_addr()?;

    let router = http::router(AppState {
        hub: hub.clone(),
        certs: certs.clone(),
        webtransport_port: wt_addr.port(),
        accounts,
        cluster,
    });
    // Both listeners keep running until the process exits: during a shutdown
    // admission refuses new sessions, and /ready answers 503.
    tokio::spawn(transport::webtransport::serve(
        endpoint.clone(),
        hub.clone(),
        config.handshake_timeout(),
    ));
    tokio::spawn(http::serve(
        listener,
        Arc::new(certs.tcp_config()?),
        router,
        config.handshake_timeout(),
    ));
    tokio::spawn(housekeeping(hub.clone(), certs.clone(), shutdown_rx));

    let listening = Listening {
        webtransport: display_addr(wt_addr),
        https: display_addr(https_addr),
        cert_hashes: certs.hashes().iter().map(|h| hex(h)).collect(),
    };
    tracing::info!(
        webtransport = %listening.webtransport,
        https = %listening.https,
        "listening: WebTransport on udp/{}, HTTPS and WSS (/ws) on tcp/{}; demo page at https://localhost:{}/",
        wt_addr.port(), https_addr.port(), https_addr.port()
    );
    Ok(Running {
        listening,
        hub,
        endpoint,
        shutdown,
        grace: config.shutdown_grace(),
    })
}

/// Key material every node of a cluster shares and nobody else has: the JWT
/// secret, or the JWT public key's file (public, but the same everywhere:
/// addresses are still not readable from the keys at a glance).
fn shared_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    match &config.jwt_public_key {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display())),
        None => crate::session::auth::hs256_secret(config),
    }
}

/// Development mode relaxes authentication and the origin check: say so where
/// nobody can miss it, on stderr and in the log.
fn announce_dev_mode() {
    const BANNER: &str = "DEVELOPMENT MODE: sessions may open WITHOUT A TOKEN (as anonymous users) and pages \
                          from ANY ORIGIN may connect. Never run this on the open internet; turn dev_mode off.";
    eprintln!("\n{}\n{BANNER}\n{}\n", "!".repeat(78), "!".repeat(78));
    tracing::warn!(target: "security", event = "dev_mode", "{BANNER}");
}

/// An unspecified bind address shown as the loopback one a local client can use.
fn display_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::V6(SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, addr.port(), 0, 0))
        }
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

async fn housekeeping(hub: Arc<Hub>, certs: Arc<CertStore>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = crate::shutdown::signalled(&mut shutdown) => return,
        }
        hub.admission.sweep(Instant::now());
        hub.blocklist.sweep(Instant::now());
        if let Err(e) = certs.rotate(time::OffsetDateTime::now_utc()) {
            tracing::error!(error = %e, "certificate rotation failed; will retry");
        }
    }
}

impl Running {
    /// Stops accepting, tells every session `shutting_down`, and waits for them
    /// to close (at most the configured grace period).
    pub async fn shutdown(self) {
        tracing::info!(sessions = self.hub.admission.open(), "shutting down");
        let _ = self.shutdown.send(true);
        let deadline = Instant::now() + self.grace;
        while self.hub.admission.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.hub.admission.open();
        if left > 0 {
            tracing::warn!(sessions = left, "grace period over; closing the rest");
        } else {
            tracing::info!("all sessions closed");
        }
        // WebTransport connections whose session has ended wait a moment for
        // their client to close first; then every connection left gets its
        // CONNECTION_CLOSE, and the process waits (briefly) until they are out.
        while self.endpoint.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let code = proto::ErrorCode::ShuttingDown;
        self.endpoint.close(
            quinn::VarInt::from_u32(u32::from(code.number())),
            code.as_str().as_bytes(),
        );
        let _ = tokio::time::timeout(CLOSE_DRAIN, self.endpoint.wait_idle()).await;
    }
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    println!("{}", serde_json::to_string(&running.listening)?);
    wait_for_signal().await?;
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
