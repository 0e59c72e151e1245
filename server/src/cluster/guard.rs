//! The per-IP connection cap and the failed-authentication block, across nodes.
//!
//! Addresses never reach Redis as such: keys carry an [`AddressTag`], a
//! SHA-256 of the address salted with a secret every node shares (derived from
//! the JWT key), so the keys cannot be turned back into addresses.
//!
//! Each node keeps, per client address ([`ClientKey`]), its own count of open
//! connections in `sig:ip:<tag>:<node>` and its id in the set
//! `sig:ip:<tag>:nodes`, both expiring after the member TTL unless renewed
//! (every refresh sets the count to the node's exact local count, so a dead
//! node's connections stop counting by themselves). Admission sums the live
//! counts atomically, so moving between nodes does not multiply a client's
//! allowance. Failed authentications count in `sig:fail:<tag>` (expiring with
//! the window); reaching the limit sets `sig:block:<tag>` for the block time,
//! which every node checks before admitting.

use std::net::IpAddr;
use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::session::addr::ClientKey;

/// Turns client addresses into the opaque tags Redis keys carry.
#[derive(Clone)]
pub struct Tagger {
    salt: [u8; 32],
}

/// A client address as Redis sees it: 32 hex digits, the same on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressTag(String);

impl Tagger {
    /// `secret`: material every node shares and nobody else knows (the JWT key).
    pub fn new(secret: &[u8]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"signal-server address tags v1\0");
        hash.update(secret);
        Self {
            salt: hash.finalize().into(),
        }
    }

    /// A key for `purpose`, the same on every node, derived from the shared secret.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.salt);
        hash.update(b"\0derive\0");
        hash.update(purpose.as_bytes());
        hash.finalize().into()
    }

    pub fn tag(&self, key: ClientKey) -> AddressTag {
        let mut hash = Sha256::new();
        hash.update(self.salt);
        match key.ip() {
            IpAddr::V4(v4) => hash.update(v4.octets()),
            IpAddr::V6(v6) => hash.update(v6.octets()),
        }
        let digest = hash.finalize();
        AddressTag(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }
}

fn prefix(tag: &AddressTag) -> String {
    format!("sig:ip:{}:", tag.0)
}

fn nodes_key(tag: &AddressTag) -> String {
    format!("sig:ip:{}:nodes", tag.0)
}

fn block_key(tag: &AddressTag) -> String {
    format!("sig:block:{}", tag.0)
}

fn fail_key(tag: &AddressTag) -> String {
    format!("sig:fail:{}", tag.0)
}

/// KEYS: nodes set, block key. ARGV: count prefix, node, max, ttl ms.
/// Returns `{-1, ms left}` if blocked, `{0}` if at the cap, `{1}` if admitted.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return {-1, left} end
local prefix, node, max, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local total = 0
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local c = redis.call('GET', prefix .. n)
  if c then total = total + math.max(0, tonumber(c)) else redis.call('SREM', KEYS[1], n) end
end
if total >= max then return {0} end
redis.call('INCR', prefix .. node)
redis.call('PEXPIRE', prefix .. node, ttl)
redis.call('SADD', KEYS[1], node)
redis.call('PEXPIRE', KEYS[1], ttl)
return {1}",
    )
});

/// KEYS: fail key, block key. ARGV: window ms, limit, block ms. Returns 1 if
/// this failure blocked the address.
static STRIKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0",
    )
});

/// The cluster's answer to a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The address has `max` connections open across the cluster.
    AtCap,
    /// The address is blocked for this many more milliseconds.
    Blocked(u64),
}

pub async fn admit(
    conn: &mut ConnectionManager,
    tag: &AddressTag,
    node: &str,
    max: u32,
    ttl_ms: u64,
) -> redis::RedisResult<Admission> {
    let reply: Vec<i64> = ADMIT
        .key(nodes_key(tag))
        .key(block_key(tag))
        .arg(prefix(tag))
        .arg(node)
        .arg(max)
        .arg(ttl_ms)
        .invoke_async(conn)
        .await?;
    Ok(match reply.as_slice() {
        [-1, left] => Admission::Blocked(u64::try_from(*left).unwrap_or(0)),
        [1] => Admission::Admitted,
        _ => Admission::AtCap,
    })
}

/// Counts a failed authentication; returns whether the address is now blocked.
pub async fn strike(
    conn: &mut ConnectionManager,
    tag: &AddressTag,
    window_ms: u64,
    limit: u32,
    block_ms: u64,
) -> redis::RedisResult<bool> {
    let blocked: i64 = STRIKE
        .key(fail_key(tag))
        .key(block_key(tag))
        .arg(window_ms)
        .arg(limit)
        .arg(block_ms)
        .invoke_async(conn)
        .await?;
    Ok(blocked == 1)
}

/// Lifts a block everywhere; returns whether there was one.
pub async fn unblock(conn: &mut ConnectionManager, tag: &AddressTag) -> redis::RedisResult<bool> {
    let (blocks, _): (i64, i64) = redis::pipe()
        .del(block_key(tag))
        .del(fail_key(tag))
        .query_async(conn)
        .await?;
    Ok(blocks > 0)
}

/// The commands that count one connection of this node from `key` as closed.
pub fn release(pipe: &mut redis::Pipeline, tag: &AddressTag, node: &str) {
    pipe.cmd("DECR").arg(format!("{}{node}", prefix(tag))).ignore();
}

/// The commands that set this node's open connections from `key` to `open`.
pub fn renew(pipe: &mut redis::Pipeline, tag: &AddressTag, node: &str, open: u32, ttl_ms: u64) {
    pipe.cmd("SET")
        .arg(format!("{}{node}", prefix(tag)))
        .arg(open)
        .arg("PX")
        .arg(ttl_ms)
        .ignore();
    pipe.cmd("SADD").arg(nodes_key(tag)).arg(node).ignore();
    pipe.cmd("PEXPIRE").arg(nodes_key(tag)).arg(ttl_ms).ignore();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_opaque_and_depend_on_the_shared_secret() {
        let key = ClientKey::of("192.0.2.7".parse().unwrap());
        let a = Tagger::new(b"secret");
        assert_eq!(a.tag(key), Tagger::new(b"secret").tag(key));
        assert_ne!(a.tag(key), Tagger::new(b"other").tag(key));
        assert_ne!(a.tag(key), a.tag(ClientKey::of("192.0.2.8".parse().unwrap())));
        assert!(!a.tag(key).0.contains("192"));
        assert_eq!(a.tag(key).0.len(), 32);
    }
}
