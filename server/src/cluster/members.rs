//! Room membership in Redis: who is in which room, on which node, until when.
//!
//! Per room, two keys: `sig:room:<room>:m`, a hash from peer id to
//! `node<TAB>user`, and `sig:room:<room>:e`, a sorted set of peer ids scored by
//! the instant (Redis time, ms) their membership lapses unless the node that
//! holds them refreshes it. Both keys expire twice the member TTL after their
//! last change, so nothing outlives its sessions by more than that. Scripts
//! run atomically, which makes the member cap exact across the cluster: two
//! nodes admitting the last seat at once cannot both get it.

use std::sync::{Arc, LazyLock};

use proto::{Member, PeerId, RoomId};
use redis::Script;
use redis::aio::ConnectionManager;

use crate::room::Remote;

fn members_key(room: &RoomId) -> String {
    format!("sig:room:{room}:m")
}

fn expiry_key(room: &RoomId) -> String {
    format!("sig:room:{room}:e")
}

/// Drops lapsed members; shared by the scripts below.
const PRUNE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, p in ipairs(lapsed) do redis.call('HDEL', KEYS[1], p) end
if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
";

/// ARGV: peer, node, user, ttl ms, cap. Returns `{0}` when full, else
/// `{1, members...}` (the hash, flattened) including the newcomer.
static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PRUNE}
local ttl = tonumber(ARGV[4])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {{0}} end
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\t' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
local out = {{1}}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do table.insert(out, v) end
return out"
    ))
});

/// ARGV: node, ttl ms, then peer and user for every seat of this node.
/// Renews (or restores) them; returns the hash, flattened.
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PRUNE}
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[i])
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[1] .. '\t' .. ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
return redis.call('HGETALL', KEYS[1])"
    ))
});

/// Why a cluster join did not seat the peer.
#[derive(Debug, thiserror::Error)]
pub enum JoinRefused {
    #[error("the room is full")]
    Full,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Seats `peer` in `room` in Redis if the room has room; returns the members on
/// other nodes than `node`.
pub async fn join(
    conn: &mut ConnectionManager,
    room: &RoomId,
    peer: PeerId,
    user: &str,
    node: &str,
    ttl_ms: u64,
    cap: u32,
) -> Result<Vec<Remote>, JoinRefused> {
    let reply: Vec<String> = JOIN
        .key(members_key(room))
        .key(expiry_key(room))
        .arg(peer.to_string())
        .arg(node)
        .arg(user)
        .arg(ttl_ms)
        .arg(cap)
        .invoke_async(conn)
        .await?;
    match reply.split_first() {
        Some((ok, members)) if ok == "1" => Ok(others(members, node)),
        _ => Err(JoinRefused::Full),
    }
}

/// Renews the memberships of this node's `seats` in `room` (peer, user) and
/// returns the members on other nodes.
pub async fn refresh(
    conn: &mut ConnectionManager,
    room: &RoomId,
    seats: &[(PeerId, Arc<str>)],
    node: &str,
    ttl_ms: u64,
) -> Result<Vec<Remote>, redis::RedisError> {
    let mut invocation = REFRESH.key(members_key(room));
    invocation.key(expiry_key(room)).arg(node).arg(ttl_ms);
    for (peer, user) in seats {
        invocation.arg(peer.to_string()).arg(&**user);
    }
    let flat: Vec<String> = invocation.invoke_async(conn).await?;
    Ok(others(&flat, node))
}

/// The commands that take `peer` out of `room` (for a pipeline).
pub fn leave(pipe: &mut redis::Pipeline, room: &RoomId, peer: PeerId) {
    let peer = peer.to_string();
    pipe.cmd("HDEL").arg(members_key(room)).arg(&peer).ignore();
    pipe.cmd("ZREM").arg(expiry_key(room)).arg(&peer).ignore();
}

/// The members of a flattened hash (peer, node<TAB>user, ...) that sit on other nodes.
fn others(flat: &[String], node: &str) -> Vec<Remote> {
    flat.chunks_exact(2)
        .filter_map(|pair| {
            let peer_id = pair[0].parse::<PeerId>().ok()?;
            let (on, user) = pair[1].split_once('\t')?;
            (on != node).then(|| Remote {
                member: Member {
                    peer_id,
                    user_id: user.to_owned(),
                },
                node: on.into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_on_other_nodes_are_read_from_the_flattened_hash() {
        let flat: Vec<String> = [
            "00000000000000aa",
            "n1\talice",
            "00000000000000bb",
            "n2\tbob",
            "junk",
            "x",
        ]
        .map(String::from)
        .to_vec();
        let others = others(&flat, "n1");
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].member.user_id, "bob");
        assert_eq!(&*others[0].node, "n2");
    }
}
