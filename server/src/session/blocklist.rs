//! The blocklist: client addresses that failed authentication or broke the
//! rules too often, blocked for a while.
//!
//! Strikes are counted per [`ClientKey`] (an IPv4 address or an IPv6 /64)
//! within a sliding window: `auth_failures_before_block` failed authentications
//! (bad tokens, failed logins), or `abuse_closes_before_block` sessions closed
//! for `policy_violation`, block the address for `block_secs`. Blocks expire by
//! themselves; an operator can lift one early (`POST /admin/unblock`). Both
//! transports and the account service ask [`Blocklist::check`] before doing any
//! expensive work for an address.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::addr::{ClientKey, MaskedIp};
use crate::config::Config;

/// What gets an address blocked, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct BlockPolicy {
    pub auth_failures: u32,
    pub abuse_closes: u32,
    pub window: Duration,
    pub block_for: Duration,
}

impl BlockPolicy {
    pub fn from_config(config: &Config) -> Self {
        Self {
            auth_failures: config.auth_failures_before_block,
            abuse_closes: config.abuse_closes_before_block,
            window: Duration::from_secs(config.auth_failure_window_secs),
            block_for: Duration::from_secs(config.block_secs),
        }
    }
}

/// A strike against an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strike {
    /// A token that did not verify, or a failed login.
    AuthFailure,
    /// A session closed with `policy_violation`.
    Abuse,
}

impl Strike {
    pub fn as_str(self) -> &'static str {
        match self {
            Strike::AuthFailure => "auth_failures",
            Strike::Abuse => "abuse",
        }
    }
}

/// An address that is blocked, and for how much longer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub left: Duration,
    pub reason: Strike,
}

impl Blocked {
    /// Seconds left, rounded up (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        self.left.as_secs() + u64::from(self.left.subsec_nanos() > 0)
    }
}

/// One blocked address as the admin view shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BlockedEntry {
    /// The address or /64 as blocked (the admin view shows it unmasked so an
    /// operator can unblock it).
    pub ip: IpAddr,
    pub masked: String,
    pub reason: &'static str,
    pub seconds_left: u64,
}

#[derive(Default)]
struct Record {
    auth_failures: VecDeque<Instant>,
    abuse_closes: VecDeque<Instant>,
    blocked: Option<(Instant, Strike)>,
}

impl Record {
    fn prune(&mut self, now: Instant, window: Duration) {
        for strikes in [&mut self.auth_failures, &mut self.abuse_closes] {
            while strikes.front().is_some_and(|t| now.duration_since(*t) >= window) {
                strikes.pop_front();
            }
        }
        if self.blocked.is_some_and(|(until, _)| until <= now) {
            self.blocked = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.auth_failures.is_empty() && self.abuse_closes.is_empty() && self.blocked.is_none()
    }
}

/// The blocklist, shared by both transports and the account service.
pub struct Blocklist {
    policy: BlockPolicy,
    records: Mutex<HashMap<ClientKey, Record>>,
}

impl Blocklist {
    pub fn new(policy: BlockPolicy) -> Self {
        Self {
            policy,
            records: Mutex::default(),
        }
    }

    pub fn policy(&self) -> BlockPolicy {
        self.policy
    }

    /// `Err` while `ip` is blocked.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Blocked> {
        let records = self.records.lock().expect("blocklist lock");
        match records.get(&ClientKey::of(ip)).and_then(|r| r.blocked) {
            Some((until, reason)) if until > now => Err(Blocked {
                left: until - now,
                reason,
            }),
            _ => Ok(()),
        }
    }

    /// Counts a strike against `ip`; returns the block if this strike started one.
    pub fn strike(&self, ip: IpAddr, strike: Strike, now: Instant) -> Option<Blocked> {
        let policy = self.policy;
        let mut records = self.records.lock().expect("blocklist lock");
        let record = records.entry(ClientKey::of(ip)).or_default();
        record.prune(now, policy.window);
        if record.blocked.is_some() {
            return None;
        }
        let (strikes, limit) = match strike {
            Strike::AuthFailure => (&mut record.auth_failures, policy.auth_failures),
            Strike::Abuse => (&mut record.abuse_closes, policy.abuse_closes),
        };
        strikes.push_back(now);
        if strikes.len() < limit as usize {
            return None;
        }
        strikes.clear();
        record.blocked = Some((now + policy.block_for, strike));
        tracing::warn!(
            target: "security",
            event = "ip_blocked",
            ip = %MaskedIp::of(ip),
            reason = strike.as_str(),
            seconds = policy.block_for.as_secs(),
            "address blocked"
        );
        Some(Blocked {
            left: policy.block_for,
            reason: strike,
        })
    }

    /// Lifts the block on `ip` (and forgets its strikes); false if it was not blocked.
    pub fn unblock(&self, ip: IpAddr, now: Instant) -> bool {
        let mut records = self.records.lock().expect("blocklist lock");
        let was_blocked = records
            .remove(&ClientKey::of(ip))
            .and_then(|r| r.blocked)
            .is_some_and(|(until, _)| until > now);
        if was_blocked {
            tracing::warn!(target: "security", event = "ip_unblocked", ip = %MaskedIp::of(ip), "block lifted");
        }
        was_blocked
    }

    /// The addresses blocked now.
    pub fn blocked(&self, now: Instant) -> Vec<BlockedEntry> {
        let records = self.records.lock().expect("blocklist lock");
        let mut entries: Vec<_> = records
            .iter()
            .filter_map(|(key, r)| {
                let (until, reason) = r.blocked?;
                (until > now).then(|| BlockedEntry {
                    ip: key.ip(),
                    masked: MaskedIp::of(key.ip()).to_string(),
                    reason: reason.as_str(),
                    seconds_left: (until - now).as_secs(),
                })
            })
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.seconds_left));
        entries
    }

    /// Failed authentications within the window, summed over every address.
    pub fn recent_auth_failures(&self, now: Instant) -> usize {
        let window = self.policy.window;
        let records = self.records.lock().expect("blocklist lock");
        records
            .values()
            .map(|r| {
                r.auth_failures
                    .iter()
                    .filter(|t| now.duration_since(**t) < window)
                    .count()
            })
            .sum()
    }

    /// Forgets expired strikes and blocks; run now and then.
    pub fn sweep(&self, now: Instant) {
        let window = self.policy.window;
        let mut records = self.records.lock().expect("blocklist lock");
        records.retain(|_, r| {
            r.prune(now, window);
            !r.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BlockPolicy {
        BlockPolicy {
            auth_failures: 3,
            abuse_closes: 2,
            window: Duration::from_secs(60),
            block_for: Duration::from_secs(300),
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn the_nth_failure_in_the_window_blocks_and_the_block_expires() {
        let list = Blocklist::new(policy());
        let t0 = Instant::now();
        assert_eq!(list.strike(IP, Strike::AuthFailure, t0), None);
        assert_eq!(list.strike(IP, Strike::AuthFailure, t0), None);
        assert!(list.check(IP, t0).is_ok());
        let blocked = list.strike(IP, Strike::AuthFailure, t0).expect("blocked");
        assert_eq!(blocked.left, Duration::from_secs(300));
        assert_eq!(
            list.check(IP, t0 + Duration::from_secs(299))
                .unwrap_err()
                .retry_after_secs(),
            1
        );
        assert!(list.check(IP, t0 + Duration::from_secs(300)).is_ok());
        assert_eq!(list.blocked(t0).len(), 1);
        list.sweep(t0 + Duration::from_secs(301));
        assert!(list.blocked(t0).is_empty());
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let list = Blocklist::new(policy());
        let t0 = Instant::now();
        list.strike(IP, Strike::AuthFailure, t0);
        list.strike(IP, Strike::AuthFailure, t0);
        assert_eq!(list.strike(IP, Strike::AuthFailure, t0 + Duration::from_secs(61)), None);
        assert!(list.check(IP, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn abuse_closes_count_separately_and_an_operator_can_unblock() {
        let list = Blocklist::new(policy());
        let t0 = Instant::now();
        list.strike(IP, Strike::AuthFailure, t0);
        list.strike(IP, Strike::Abuse, t0);
        let blocked = list.strike(IP, Strike::Abuse, t0).expect("blocked");
        assert_eq!(blocked.reason, Strike::Abuse);
        let neighbour: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(list.check(neighbour, t0).is_ok());
        assert!(list.unblock(IP, t0));
        assert!(list.check(IP, t0).is_ok());
        assert!(!list.unblock(IP, t0));
    }
}
