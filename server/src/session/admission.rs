//! Admission: whether a new connection may open at all.
//!
//! Checked by both transports before any session work (before the WebSocket
//! upgrade, before the WebTransport session is accepted): the global connection
//! cap, the per-IP concurrent cap and the per-IP rate of new connections. An
//! admitted connection holds a [`Permit`]; dropping it gives the slot back, so a
//! session cannot exist without having been counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use proto::ErrorCode;

use super::addr::{ClientKey, MaskedIp};
use super::budget::TokenBucket;
use crate::cluster::Cluster;
use crate::config::Config;

#[derive(Clone, Copy, Debug)]
pub struct AdmissionLimits {
    pub max_connections: u32,
    pub max_per_ip: u32,
    pub per_ip_rate: u32,
    pub per_ip_burst: u32,
}

impl AdmissionLimits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_connections: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            per_ip_rate: config.connections_per_ip_per_sec,
            per_ip_burst: config.connection_burst_per_ip,
        }
    }
}

struct IpEntry {
    open: u32,
    rate: TokenBucket,
    traffic: Arc<Traffic>,
}

/// What the sessions of one address sent, for the admin view's top talkers.
/// Bumped by the sessions without taking the admission lock.
#[derive(Debug, Default)]
pub struct Traffic {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    /// Counts one frame of `len` bytes.
    pub fn count(&self, len: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// One address of the admin view's top talkers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Talker {
    /// Masked as in the logs.
    pub ip: String,
    pub sessions: u32,
    pub messages: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    open: u32,
    per_ip: HashMap<ClientKey, IpEntry>,
}

/// The connection counters, shared by both transports.
pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
}

/// A refused connection: the code says which limit refused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// When to try again, in seconds, if the refusal says (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::default(),
        })
    }

    /// Counts a new connection from `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Permit, Refusal> {
        let key = ClientKey::of(ip);
        let mut guard = self.state.lock().expect("admission lock");
        let state = &mut *guard;
        let limits = self.limits;
        let entry = state.per_ip.entry(key).or_insert_with(|| IpEntry {
            open: 0,
            rate: TokenBucket::new(limits.per_ip_rate, limits.per_ip_burst, now),
            traffic: Arc::default(),
        });
        if !entry.rate.try_take(1.0, now) {
            return Err(Refusal::new(
                ErrorCode::ConnectionRateLimited,
                format!(
                    "more than {} new connections per second from this address",
                    limits.per_ip_rate
                ),
            ));
        }
        if entry.open >= limits.max_per_ip {
            return Err(Refusal::new(
                ErrorCode::TooManyConnections,
                format!("this address already has {} connections open", limits.max_per_ip),
            ));
        }
        if state.open >= limits.max_connections {
            return Err(Refusal::new(
                ErrorCode::ServerFull,
                "the server holds as many connections as it may",
            ));
        }
        entry.open += 1;
        let traffic = entry.traffic.clone();
        state.open += 1;
        Ok(Permit {
            admission: self.clone(),
            key,
            traffic,
            cluster: None,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.state.lock().expect("admission lock").open
    }

    /// Forgets addresses with nothing open and a full rate bucket; run now and then
    /// so that the table does not grow with every address ever seen.
    pub fn sweep(&self, now: Instant) {
        let mut state = self.state.lock().expect("admission lock");
        state.per_ip.retain(|_, e| e.open > 0 || !e.rate.is_full(now));
    }

    /// The `n` addresses that sent the most messages (among those remembered:
    /// an address is forgotten once it has nothing open and its rate has recovered).
    pub fn top_talkers(&self, n: usize) -> Vec<Talker> {
        let state = self.state.lock().expect("admission lock");
        let mut talkers: Vec<Talker> = state
            .per_ip
            .iter()
            .map(|(key, e)| Talker {
                ip: MaskedIp::of(key.ip()).to_string(),
                sessions: e.open,
                messages: e.traffic.messages.load(Ordering::Relaxed),
                bytes: e.traffic.bytes.load(Ordering::Relaxed),
            })
            .collect();
        talkers.sort_by_key(|t| std::cmp::Reverse((t.messages, t.bytes)));
        talkers.truncate(n);
        talkers
    }

    /// Every address with connections open, and how many.
    pub fn open_by_address(&self) -> Vec<(ClientKey, u32)> {
        let state = self.state.lock().expect("admission lock");
        state
            .per_ip
            .iter()
            .filter(|(_, e)| e.open > 0)
            .map(|(k, e)| (*k, e.open))
            .collect()
    }

    /// Addresses remembered now.
    pub fn tracked_addresses(&self) -> usize {
        self.state.lock().expect("admission lock").per_ip.len()
    }

    fn release(&self, key: ClientKey) {
        let mut state = self.state.lock().expect("admission lock");
        state.open = state.open.saturating_sub(1);
        if let Some(entry) = state.per_ip.get_mut(&key) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

/// One admitted connection. Dropping it frees its slot.
pub struct Permit {
    admission: Arc<Admission>,
    key: ClientKey,
    traffic: Arc<Traffic>,
    /// The cluster that also counted this connection, in cluster mode.
    cluster: Option<Arc<Cluster>>,
}

impl Permit {
    pub fn key(&self) -> ClientKey {
        self.key
    }

    /// The cluster counted this connection too: it is told when it closes.
    pub fn counted_by(&mut self, cluster: Arc<Cluster>) {
        self.cluster = Some(cluster);
    }

    /// Where the session counts what it receives.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("key", &self.key).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(self.key);
        if let Some(cluster) = &self.cluster {
            cluster.release(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn admission(max_connections: u32, max_per_ip: u32, per_ip_rate: u32, per_ip_burst: u32) -> Arc<Admission> {
        Admission::new(AdmissionLimits {
            max_connections,
            max_per_ip,
            per_ip_rate,
            per_ip_burst,
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn the_per_ip_cap_refuses_the_next_connection_until_one_closes() {
        let adm = admission(100, 2, 100, 100);
        let now = Instant::now();
        let first = adm.admit(A, now).unwrap();
        let _second = adm.admit(A, now).unwrap();
        assert_eq!(adm.admit(A, now).unwrap_err().code, ErrorCode::TooManyConnections);
        adm.admit(B, now).expect("another address is not affected");
        drop(first);
        adm.admit(A, now).expect("a slot came back");
    }

    #[test]
    fn the_global_cap_refuses_with_server_full() {
        let adm = admission(1, 10, 100, 100);
        let now = Instant::now();
        let _held = adm.admit(A, now).unwrap();
        assert_eq!(adm.admit(B, now).unwrap_err().code, ErrorCode::ServerFull);
        assert_eq!(adm.open(), 1);
    }

    #[test]
    fn new_connections_per_ip_are_rate_limited() {
        let adm = admission(100, 100, 1, 2);
        let now = Instant::now();
        drop(adm.admit(A, now).unwrap());
        drop(adm.admit(A, now).unwrap());
        assert_eq!(adm.admit(A, now).unwrap_err().code, ErrorCode::ConnectionRateLimited);
        adm.admit(A, now + Duration::from_secs(1)).expect("the bucket refilled");
    }

    #[test]
    fn sweeping_forgets_quiet_addresses_only() {
        let adm = admission(100, 100, 1, 1);
        let now = Instant::now();
        let held = adm.admit(A, now).unwrap();
        drop(adm.admit(B, now).unwrap());
        adm.sweep(now);
        assert_eq!(adm.tracked_addresses(), 2, "B's bucket is not full yet");
        adm.sweep(now + Duration::from_secs(2));
        assert_eq!(adm.tracked_addresses(), 1, "A is still open");
        drop(held);
    }
}
