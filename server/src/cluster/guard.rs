//! The per-IP connection cap and the failed-authentication block, across nodes.
//!
//! Each node keeps, per client address ([`ClientKey`]), its own count of open
//! connections in `sig:ip:<addr>:<node>` and its id in the set
//! `sig:ip:<addr>:nodes`, both expiring after the member TTL unless renewed
//! (every refresh sets the count to the node's exact local count, so a dead
//! node's connections stop counting by themselves). Admission sums the live
//! counts atomically, so moving between nodes does not multiply a client's
//! allowance. Failed authentications count in `sig:fail:<addr>` (expiring with
//! the window); reaching the limit sets `sig:block:<addr>` for the block time,
//! which every node checks before admitting.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::session::addr::ClientKey;

fn prefix(key: ClientKey) -> String {
    format!("sig:ip:{}:", key.ip())
}

fn nodes_key(key: ClientKey) -> String {
    format!("sig:ip:{}:nodes", key.ip())
}

fn block_key(key: ClientKey) -> String {
    format!("sig:block:{}", key.ip())
}

fn fail_key(key: ClientKey) -> String {
    format!("sig:fail:{}", key.ip())
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
    key: ClientKey,
    node: &str,
    max: u32,
    ttl_ms: u64,
) -> redis::RedisResult<Admission> {
    let reply: Vec<i64> = ADMIT
        .key(nodes_key(key))
        .key(block_key(key))
        .arg(prefix(key))
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
    key: ClientKey,
    window_ms: u64,
    limit: u32,
    block_ms: u64,
) -> redis::RedisResult<bool> {
    let blocked: i64 = STRIKE
        .key(fail_key(key))
        .key(block_key(key))
        .arg(window_ms)
        .arg(limit)
        .arg(block_ms)
        .invoke_async(conn)
        .await?;
    Ok(blocked == 1)
}

/// Lifts a block everywhere; returns whether there was one.
pub async fn unblock(conn: &mut ConnectionManager, key: ClientKey) -> redis::RedisResult<bool> {
    let (blocks, _): (i64, i64) = redis::pipe()
        .del(block_key(key))
        .del(fail_key(key))
        .query_async(conn)
        .await?;
    Ok(blocks > 0)
}

/// The commands that count one connection of this node from `key` as closed.
pub fn release(pipe: &mut redis::Pipeline, key: ClientKey, node: &str) {
    pipe.cmd("DECR").arg(format!("{}{node}", prefix(key))).ignore();
}

/// The commands that set this node's open connections from `key` to `open`.
pub fn renew(pipe: &mut redis::Pipeline, key: ClientKey, node: &str, open: u32, ttl_ms: u64) {
    pipe.cmd("SET")
        .arg(format!("{}{node}", prefix(key)))
        .arg(open)
        .arg("PX")
        .arg(ttl_ms)
        .ignore();
    pipe.cmd("SADD").arg(nodes_key(key)).arg(node).ignore();
    pipe.cmd("PEXPIRE").arg(nodes_key(key)).arg(ttl_ms).ignore();
}
