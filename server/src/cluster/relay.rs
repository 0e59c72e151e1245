//! The relay between nodes: an ordered, pipelined publisher, the node's one
//! subscription, and the refresh loop that keeps memberships alive and notices
//! members whose node is gone.
//!
//! Everything a node sends to other nodes goes through one queue and one task,
//! so messages between two peers keep their order. A relayed request is
//! acknowledged to its sender only once Redis has taken it; if Redis does not,
//! the sender gets `cluster_unavailable` instead, so nothing acknowledged is
//! lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use proto::{ChannelId, ErrorCode, PeerId, RequestId, RoomId, ServerMessage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::event::{Event, channel_of};
use super::guard::{AddressTag, Tagger};
use super::{guard, members};
use crate::room::Remote;
use crate::session::Hub;
use crate::session::outbox::Outbox;
use crate::session::resume::SessionKey;

/// Marks one life of Redis's data set: a node that finds another value there
/// knows Redis restarted empty.
const EPOCH_KEY: &str = "sig:epoch";

/// How long a node may take to reconnect to Redis (the connection manager's
/// longest backoff, and a little).
const RECONNECT_SLACK: Duration = Duration::from_millis(2500);

/// Items the publisher takes in one pipeline at most.
const BATCH: usize = 256;

/// Room refreshes in flight at once on the (multiplexed) Redis connection: a
/// refresh costs rooms / this round trips instead of one per room.
const REFRESH_IN_FLIGHT: usize = 64;

/// Who to answer once an item has reached Redis.
pub struct Ack {
    pub outbox: Arc<Outbox>,
    pub channel: ChannelId,
    pub id: RequestId,
}

/// Bookkeeping that goes with an item, in the same round trip.
pub enum Op {
    /// A membership to remove.
    Leave(RoomId, PeerId),
    /// A connection from this address closed on this node.
    Release(AddressTag),
}

/// One thing to tell Redis: an event for other nodes and its bookkeeping.
pub struct Outbound {
    pub event: Option<Event>,
    pub nodes: Vec<Arc<str>>,
    pub op: Option<Op>,
    pub ack: Option<Ack>,
}

/// Sends the queue's items to Redis in order, many per round trip. An item
/// to be acknowledged is acknowledged only if Redis took it and every node it
/// was for had its subscription up (a PUBLISH that reached nobody is not a
/// delivery); otherwise its sender gets `cluster_unavailable`.
pub async fn publish(mut conn: ConnectionManager, node: String, mut queue: mpsc::Receiver<Outbound>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        // How many receiver counts each item's PUBLISHes return (acknowledged items only).
        let mut counted = Vec::with_capacity(batch.len());
        for item in &batch {
            match &item.op {
                Some(Op::Leave(room, peer)) => members::leave(&mut pipe, room, *peer),
                Some(Op::Release(tag)) => guard::release(&mut pipe, tag, &node),
                None => {}
            }
            let mut publishes = 0;
            if let Some(event) = &item.event {
                let payload = event.encode();
                for node in &item.nodes {
                    pipe.cmd("PUBLISH").arg(channel_of(node)).arg(&payload);
                    if item.ack.is_some() {
                        publishes += 1;
                    } else {
                        pipe.ignore();
                    }
                }
            }
            counted.push(publishes);
        }
        // Events for no other node (a join in a room whose members are all
        // here, say) leave nothing to send: Redis refuses an empty pipeline,
        // and an acknowledged item among them was delivered to nobody it had to reach.
        let result: redis::RedisResult<Vec<i64>> = if pipe.is_empty() {
            Ok(Vec::new())
        } else {
            pipe.query_async(&mut conn).await
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, items = batch.len(), "relay to other nodes failed");
        }
        let mut receivers = result.as_ref().map(|r| r.iter()).ok();
        for (item, publishes) in batch.drain(..).zip(counted) {
            let delivered = match receivers.as_mut() {
                Some(counts) => counts.by_ref().take(publishes).filter(|n| **n > 0).count() == publishes,
                None => false,
            };
            let Some(ack) = item.ack else { continue };
            let reply = if delivered {
                ServerMessage::Ack { id: ack.id }
            } else {
                ServerMessage::Error {
                    id: Some(ack.id),
                    code: ErrorCode::ClusterUnavailable,
                    message: "the cluster's relay (Redis) could not deliver this; retry".into(),
                }
            };
            ack.outbox.deliver(ack.channel, Arc::new(reply));
        }
    }
}

/// Opens the node's subscription (renewed by the connection manager after every
/// reconnect) and applies what arrives to the rooms of `hub`.
pub async fn subscribe(client: redis::Client, node: String, hub: Arc<Hub>) {
    let (push, mut pushed) = mpsc::unbounded_channel::<PushInfo>();
    let config = ConnectionManagerConfig::new()
        .set_push_sender(push)
        .set_automatic_resubscription()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_max_delay(Duration::from_secs(2));
    let mut conn = match ConnectionManager::new_lazy_with_config(client, config) {
        Ok(conn) => conn,
        Err(e) => return tracing::error!(error = %e, "cluster subscription could not be set up"),
    };
    let channel = channel_of(&node);
    subscribe_until_done(&mut conn, &channel).await;
    while let Some(push) = pushed.recv().await {
        if push.kind == PushKind::Disconnection {
            // Nothing else runs on this connection, so nothing would make the
            // manager reconnect: subscribing again does (and the manager's own
            // resubscription makes a double subscription impossible).
            tracing::warn!("the relay subscription lost Redis; resubscribing");
            subscribe_until_done(&mut conn, &channel).await;
            continue;
        }
        if push.kind != PushKind::Message {
            continue;
        }
        let Some(Value::BulkString(payload)) = push.data.get(1) else {
            continue;
        };
        match Event::decode(payload) {
            Some(event) => apply(&hub, event),
            None => tracing::warn!("undecodable relay event ignored"),
        }
    }
}

/// Subscribes to `channel`, retrying until Redis answers.
async fn subscribe_until_done(conn: &mut ConnectionManager, channel: &str) {
    while let Err(e) = conn.subscribe(channel).await {
        tracing::debug!(error = %e, "subscribing to the node's channel failed; retrying");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::info!(%channel, "subscribed to the node's relay channel");
}

fn apply(hub: &Hub, event: Event) {
    let room_of = |name: &str| RoomId::parse(name).ok();
    match event {
        Event::Joined { room, member, node } => {
            if let Some(room) = room_of(&room) {
                hub.rooms.remote_joined(
                    &room,
                    Remote {
                        member,
                        node: node.into(),
                    },
                );
            }
        }
        Event::Left { room, peer } => {
            if let Some(room) = room_of(&room) {
                hub.rooms.remote_left(&room, peer);
            }
        }
        Event::Deliver { room, to, from, msg } => {
            if let Some(room) = room_of(&room) {
                hub.rooms.deliver_relayed(&room, to, from, msg);
            }
        }
        Event::Release { session, user } => hub.resumption.release(SessionKey(session), &user),
    }
}

/// Every `interval`, renews this node's memberships and brings each room's
/// list of other nodes' members up to date: members whose node stopped
/// renewing them lapse after `ttl`, and their rooms here see them leave.
pub async fn refresh(
    mut conn: ConnectionManager,
    node: String,
    hub: Arc<Hub>,
    tagger: Tagger,
    interval: Duration,
    ttl: Duration,
) {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    // After Redis was unreachable or lost its data, every node needs time to
    // reconnect and register its members again: until then, a member missing
    // from Redis is not taken for gone.
    let grace = ttl + RECONNECT_SLACK;
    let mut leaves_from = Instant::now();
    let mut epoch: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // This node's connections per address, exactly (correcting any drift),
        // and Redis's epoch: a new one means Redis restarted empty.
        let mut pipe = redis::pipe();
        for (key, open) in hub.admission.open_by_address() {
            guard::renew(&mut pipe, &tagger.tag(key), &node, open, ttl_ms);
        }
        let fresh = format!("{:016x}", rand::random::<u64>());
        pipe.cmd("SET").arg(EPOCH_KEY).arg(&fresh).arg("NX").ignore();
        pipe.cmd("GET").arg(EPOCH_KEY);
        match pipe.query_async::<(Option<String>,)>(&mut conn).await {
            Ok((now_epoch,)) => {
                if epoch.is_some() && now_epoch != epoch {
                    tracing::warn!("Redis restarted without its data: memberships are being registered again");
                    leaves_from = Instant::now() + grace;
                }
                epoch = now_epoch;
            }
            Err(e) => {
                tracing::debug!(error = %e, "renewing connection counts failed");
                leaves_from = Instant::now() + grace;
                continue;
            }
        }
        let leaves = Instant::now() >= leaves_from;
        hub.rooms.forget_seatless();
        let started = Instant::now();
        let mut refreshed = futures_util::stream::iter(hub.rooms.local_rooms())
            .map(|(room, seats)| {
                let (mut conn, node) = (conn.clone(), &node);
                async move {
                    let others = members::refresh(&mut conn, &room, &seats, node, ttl_ms).await;
                    (room, others)
                }
            })
            .buffer_unordered(REFRESH_IN_FLIGHT);
        while let Some((room, others)) = refreshed.next().await {
            match others {
                Ok(others) => hub.rooms.reconcile(&room, others, leaves),
                Err(e) => {
                    tracing::debug!(error = %e, "membership refresh failed");
                    break;
                }
            }
        }
        drop(refreshed);
        // Must stay well below the interval (rooms x Redis round trip / REFRESH_IN_FLIGHT).
        metrics::gauge!("signal_cluster_refresh_seconds").set(started.elapsed().as_secs_f64());
    }
}
