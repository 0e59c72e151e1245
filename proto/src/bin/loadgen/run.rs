//! The sessions and their traffic.
//!
//! Sessions are opened at `--connect-rate` and fill rooms of `--room-size` in
//! order. Once every member of a room has joined (or failed to), each pair
//! negotiates like two browsers: the one that joined later (the other was in
//! its `joined`) offers, the other answers, then each sends 8 candidates. A session that has received all of its opening messages sends
//! `custom` signals to random peers of its room at `--rate` until the steady
//! phase ends, then waits until everything sent was received (or a deadline).
//!
//! Sender and receiver live in this process, so every payload starts with its
//! send time (nanoseconds since a shared epoch) and the receiver computes the
//! relay latency from it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use proto::Encoding;
use proto::client::{ClientError, SharedEndpoint, Trust};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::link::{Addr, Link};
use crate::traffic::{Traffic, offer};
use crate::{Args, TransportArg, secs};

/// Candidates each side of a pair sends after the offer and answer.
pub(crate) const CANDIDATES: usize = 8;
pub(crate) const OFFER_BYTES: usize = 4096;
pub(crate) const ANSWER_BYTES: usize = 3072;
pub(crate) const CANDIDATE_BYTES: usize = 200;
/// How long a session waits for its opening messages before it goes steady anyway.
pub(crate) const OPENING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, after the steady phase, sessions wait for messages still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run measured.
pub struct Outcome {
    pub requested: usize,
    pub connected: usize,
    /// Connect (handshake, hello, welcome) times, in microseconds.
    pub connect_us: Histogram<u64>,
    /// Relay latencies (send to receive), in microseconds.
    pub latency_us: Histogram<u64>,
    pub sent: u64,
    pub received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `custom` signals received in the steady phase, their bytes, and the
    /// span from the first steady send to the last steady receive.
    pub steady_received: u64,
    pub steady_bytes: u64,
    pub steady_secs: f64,
    /// `custom` signals sent, and the span from the first to the last such send:
    /// their ratio is the rate actually offered, measured the same way as the
    /// delivered one (sessions start their steady phase at different times).
    pub steady_sent: u64,
    pub steady_send_secs: f64,
    pub errors: BTreeMap<String, u64>,
    pub rss_kib: Option<Rss>,
    pub elapsed: Duration,
}

/// The server's resident memory, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    pub start: u64,
    pub peak: u64,
    pub end: u64,
}

/// Counters every session updates; the progress line reads them.
pub(crate) struct Shared {
    pub(crate) epoch: Instant,
    pub(crate) connected: AtomicUsize,
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) steady_received: AtomicU64,
    pub(crate) steady_sent: AtomicU64,
    /// Nanoseconds since `epoch` of the last steady send.
    pub(crate) last_steady_send_ns: AtomicU64,
    pub(crate) steady_bytes: AtomicU64,
    /// Nanoseconds since `epoch` of the first steady send and the last steady receive.
    pub(crate) first_steady_ns: AtomicU64,
    pub(crate) last_steady_ns: AtomicU64,
    /// Sessions that may still send: the drain is over when none may and all arrived.
    pub(crate) sending: AtomicUsize,
    pub(crate) error_count: AtomicU64,
    pub(crate) logged_errors: AtomicU64,
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub(crate) fn error(&self, label: &str) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(label.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn all_delivered(&self) -> bool {
        self.sending.load(Ordering::Acquire) == 0
            && self.received.load(Ordering::Acquire) >= self.sent.load(Ordering::Acquire)
    }
}

/// Decrements `sending` exactly once: when the session stops sending, or ends.
pub(crate) struct Sending(Option<Arc<Shared>>);

impl Sending {
    pub(crate) fn stop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.sending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A room's members as they join: their peer ids by index, and how many have
/// joined or given up.
struct RoomState {
    size: usize,
    peers: Mutex<Vec<Option<Addr>>>,
    arrived: watch::Sender<usize>,
}

impl RoomState {
    fn arrive(&self, index: usize, peer: Option<Addr>) {
        self.peers.lock().expect("peers lock")[index] = peer;
        self.arrived.send_modify(|n| *n += 1);
    }

    /// Waits until every member arrived (or `timeout`); returns the others' ids by index.
    async fn others(&self, me: usize, timeout: Duration) -> Vec<(usize, Addr)> {
        let mut rx = self.arrived.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|n| *n >= self.size)).await;
        let peers = self.peers.lock().expect("peers lock");
        peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .filter_map(|(i, p)| p.clone().map(|p| (i, p)))
            .collect()
    }
}

/// What a session hands back: its connect time, its latencies and, to keep the
/// server's memory as it is until the end is sampled, its connection.
struct SessionResult {
    connect: Option<Duration>,
    latency_us: Histogram<u64>,
    connection: Option<Link>,
}

/// Everything a session needs to know about the run.
pub(crate) struct Plan {
    pub(crate) trust: Trust,
    pub(crate) secret: String,
    pub(crate) encoding: Encoding,
    pub(crate) transport: TransportArg,
    pub(crate) url_webtransport: String,
    pub(crate) url_wss: String,
    pub(crate) url_peerjs: String,
    /// WebTransport sessions share these endpoints round robin (none: a socket each).
    pub(crate) endpoints: Vec<SharedEndpoint>,
    pub(crate) peerjs_tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) source_ips: Vec<IpAddr>,
    pub(crate) connect_timeout: Duration,
    pub(crate) room_size: usize,
    pub(crate) connect_rate: f64,
    pub(crate) rate: f64,
    pub(crate) message_bytes: usize,
    pub(crate) run_id: String,
    pub(crate) steady_end: Instant,
    /// Messages sent before this (nanoseconds since the epoch) are counted but
    /// their latency is not recorded: `--warmup` after the last connect.
    pub(crate) record_from_ns: u64,
    pub(crate) drain_deadline: Instant,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("shared WebTransport endpoint: {0}")]
    Endpoint(#[from] ClientError),
    #[error("PeerJS TLS: {0}")]
    PeerJsTls(String),
}

pub async fn run(args: &Args) -> Result<Outcome, SetupError> {
    let trust = Trust::CertificateHashes(args.cert_hashes.clone());
    let source_ips = args.source_ips.clone().map(|l| l.0).unwrap_or_default();
    // Each shared endpoint binds to a source address of its own, round robin.
    let endpoints = (0..args.wt_endpoints)
        .map(|j| {
            SharedEndpoint::new(
                &trust,
                (!source_ips.is_empty()).then(|| source_ips[j % source_ips.len()]),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let peerjs_tls = match args.transport {
        TransportArg::Peerjs => Some(Arc::new(
            crate::peerjs::tls_config(&args.cert_hashes).map_err(SetupError::PeerJsTls)?,
        )),
        _ => None,
    };
    let start = Instant::now();
    let n = args.sessions;
    let k = args.room_size as usize;
    let connect_span = secs(n.saturating_sub(1) as f64 / args.connect_rate);
    let steady_end = start + connect_span + secs(args.duration);
    let plan = Arc::new(Plan {
        trust,
        secret: args.jwt_secret.clone().unwrap_or_default(),
        encoding: args.encoding.into(),
        transport: args.transport,
        url_webtransport: args.url_webtransport.clone(),
        url_wss: args.url_wss.clone(),
        url_peerjs: args.url_peerjs.clone(),
        endpoints,
        peerjs_tls,
        source_ips,
        connect_timeout: secs(args.connect_timeout),
        room_size: k,
        connect_rate: args.connect_rate,
        rate: args.rate,
        message_bytes: args.message_bytes.max(24),
        run_id: format!("{:x}{:x}", std::process::id(), jsonwebtoken::get_current_timestamp()),
        steady_end,
        record_from_ns: if args.warmup > 0.0 {
            (connect_span + secs(args.warmup)).as_nanos() as u64
        } else {
            0
        },
        drain_deadline: steady_end + DRAIN_TIMEOUT,
    });
    let shared = Arc::new(Shared {
        epoch: start,
        connected: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
        bytes_received: AtomicU64::new(0),
        steady_received: AtomicU64::new(0),
        steady_sent: AtomicU64::new(0),
        last_steady_send_ns: AtomicU64::new(0),
        steady_bytes: AtomicU64::new(0),
        first_steady_ns: AtomicU64::new(u64::MAX),
        last_steady_ns: AtomicU64::new(0),
        sending: AtomicUsize::new(n),
        error_count: AtomicU64::new(0),
        logged_errors: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
    });
    let rooms: Vec<Arc<RoomState>> = (0..n.div_ceil(k))
        .map(|r| {
            let size = k.min(n - r * k);
            Arc::new(RoomState {
                size,
                peers: Mutex::new(vec![None; size]),
                arrived: watch::channel(0).0,
            })
        })
        .collect();

    let rss = Arc::new(Mutex::new(args.server_pid.and_then(read_rss_kib).map(|kib| Rss {
        start: kib,
        peak: kib,
        end: kib,
    })));
    let monitor = tokio::spawn(monitor(shared.clone(), n, args.server_pid, rss.clone()));

    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + secs(i as f64 / args.connect_rate)).await;
        let room = rooms[i / k].clone();
        tasks.push(tokio::spawn(session(i, plan.clone(), shared.clone(), room)));
    }
    let mut connect_us = Histogram::<u64>::new(3).expect("histogram");
    let mut latency_us = Histogram::<u64>::new(3).expect("histogram");
    let mut connections = Vec::with_capacity(n);
    for task in tasks {
        let Ok(result) = task.await else {
            shared.error("loadgen_panic");
            continue;
        };
        if let Some(d) = result.connect {
            let _ = connect_us.record(d.as_micros() as u64);
        }
        let _ = latency_us.add(&result.latency_us);
        connections.extend(result.connection);
    }
    monitor.abort();
    let rss_kib = *rss.lock().expect("rss lock");
    let rss_kib = rss_kib.map(|mut r| {
        if let Some(kib) = args.server_pid.and_then(read_rss_kib) {
            r.end = kib;
            r.peak = r.peak.max(kib);
        }
        r
    });
    // Close every session (a dropped client closes its connection) and wait
    // until the servers were told, so that the next run does not start with
    // this one's sessions still held until their idle timeout.
    drop(connections);
    for endpoint in &plan.endpoints {
        endpoint.close().await;
    }
    if plan.endpoints.is_empty() {
        // Clients with endpoints of their own: their closes go out on the next turn of their drivers.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let first = shared.first_steady_ns.load(Ordering::Relaxed);
    let last = shared.last_steady_ns.load(Ordering::Relaxed);
    let steady_secs = if first < last { (last - first) as f64 / 1e9 } else { 0.0 };
    let last_send = shared.last_steady_send_ns.load(Ordering::Relaxed);
    let steady_send_secs = if first < last_send {
        (last_send - first) as f64 / 1e9
    } else {
        0.0
    };
    let errors = std::mem::take(&mut *shared.errors.lock().expect("errors lock"));
    Ok(Outcome {
        requested: n,
        connected: shared.connected.load(Ordering::Relaxed),
        connect_us,
        latency_us,
        sent: shared.sent.load(Ordering::Relaxed),
        received: shared.received.load(Ordering::Relaxed),
        bytes_sent: shared.bytes_sent.load(Ordering::Relaxed),
        bytes_received: shared.bytes_received.load(Ordering::Relaxed),
        steady_received: shared.steady_received.load(Ordering::Relaxed),
        steady_bytes: shared.steady_bytes.load(Ordering::Relaxed),
        steady_secs,
        steady_sent: shared.steady_sent.load(Ordering::Relaxed),
        steady_send_secs,
        errors,
        rss_kib,
        elapsed: start.elapsed(),
    })
}

/// Once a second: the progress line on stderr and a sample of the server's memory.
async fn monitor(shared: Arc<Shared>, n: usize, pid: Option<u32>, rss: Arc<Mutex<Option<Rss>>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_sent, mut last_received) = (0, 0);
    loop {
        tick.tick().await;
        if let Some(kib) = pid.and_then(read_rss_kib)
            && let Some(r) = rss.lock().expect("rss lock").as_mut()
        {
            r.peak = r.peak.max(kib);
            r.end = kib;
        }
        let sent = shared.sent.load(Ordering::Relaxed);
        let received = shared.received.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0}s] connected {}/{n}  sent {sent} ({}/s)  received {received} ({}/s)  errors {}",
            shared.epoch.elapsed().as_secs_f64(),
            shared.connected.load(Ordering::Relaxed),
            sent - last_sent,
            received - last_received,
            shared.error_count.load(Ordering::Relaxed),
        );
        (last_sent, last_received) = (sent, received);
    }
}

/// `VmRSS` of a process, in KiB.
fn read_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(crate) fn error_label(e: &ClientError) -> &'static str {
    match e {
        ClientError::Connect(_) => "connect_failed",
        ClientError::Rejected { code: None, .. } => "rejected",
        ClientError::Timeout => "timeout",
        ClientError::Closed => "closed",
        ClientError::Protocol(_) => "protocol",
        _ => e.code().map_or("unknown", |c| c.as_str()),
    }
}

async fn session(i: usize, plan: Arc<Plan>, shared: Arc<Shared>, room: Arc<RoomState>) -> SessionResult {
    let mut sending = Sending(Some(shared.clone()));
    let mut result = SessionResult {
        connect: None,
        latency_us: Histogram::new(3).expect("histogram"),
        connection: None,
    };
    // Rooms are filled in order.
    let index = i % plan.room_size;
    let (mut link, me, connect_time) = match Link::open(i, &plan).await {
        Ok(ok) => ok,
        Err((label, message)) => {
            shared.error(label);
            // The first few say why, on stderr: the report only counts labels.
            if shared.logged_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("loadgen: session {i}: {label}: {message}");
            }
            room.arrive(index, None);
            return result;
        }
    };
    result.connect = Some(connect_time);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    room.arrive(index, Some(me));
    let wait = plan.connect_timeout * 2 + secs(room.size as f64 / plan.connect_rate);
    let peers = room.others(index, wait).await;

    let mut traffic = Traffic {
        plan: &plan,
        shared: &shared,
        latency_us: &mut result.latency_us,
        rng: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
        sending: true,
    };
    for (j, peer) in &peers {
        if link.offers_to(peer, index < *j) && traffic.send(&link, peer, offer(&shared)).await.is_err() {
            break;
        }
    }
    traffic.exchange(&mut link, &peers, &mut sending).await;
    sending.stop();
    result.connection = Some(link);
    result
}
