//! A session's outbound queues: what the server has to send, bounded.
//!
//! The session layer and the relay push messages here without waiting; the
//! transport's writer tasks drain them. A channel either has a queue of its own
//! (a WebTransport stream, so a stalled room never blocks another) or shares the
//! session's one queue (a WebSocket). Either way the session's queued bytes are
//! bounded: a reader too slow to keep up is cut off with `slow_consumer` instead
//! of letting memory grow.
//!
//! The outbox also carries the session's end: [`Outbox::close`] records the
//! goodbye once, and every task waiting on [`Outbox::closed`] wakes up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proto::{ChannelId, Encoding, ErrorCode, ServerMessage};
use tokio::sync::{mpsc, watch};

/// One message waiting to be written.
#[derive(Debug)]
pub struct Outgoing {
    pub channel: ChannelId,
    pub msg: Arc<ServerMessage>,
    size: usize,
    /// When it was queued: how long relayed messages wait is measured from here.
    queued_at: std::time::Instant,
}

/// Why a session ends, as the client is told in its `goodbye`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goodbye {
    pub code: ErrorCode,
    pub message: String,
}

impl Goodbye {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Goodbye {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The reader is too slow: the queue or the byte bound is full.
    Full,
    /// The channel is gone (its stream closed) or the session has ended.
    Gone,
}

enum Routing {
    Shared(mpsc::Sender<Outgoing>),
    PerChannel(Mutex<HashMap<ChannelId, mpsc::Sender<Outgoing>>>),
}

pub struct Outbox {
    routing: Routing,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    encoding: AtomicU8,
    end: watch::Sender<Option<Goodbye>>,
}

const UNSET: u8 = 0;

impl Outbox {
    /// One queue for every channel (a WebSocket); returns the receiving end.
    pub fn shared(queue_len: usize, max_bytes: usize) -> (Arc<Self>, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(queue_len);
        (Arc::new(Self::with(Routing::Shared(tx), max_bytes)), rx)
    }

    /// A queue per channel (WebTransport streams), added with [`add_channel`](Self::add_channel).
    pub fn per_channel(max_bytes: usize) -> Arc<Self> {
        Arc::new(Self::with(Routing::PerChannel(Mutex::default()), max_bytes))
    }

    fn with(routing: Routing, max_bytes: usize) -> Self {
        Self {
            routing,
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            encoding: AtomicU8::new(UNSET),
            end: watch::channel(None).0,
        }
    }

    /// Gives `channel` a queue of its own; returns the receiving end.
    pub fn add_channel(&self, channel: ChannelId, queue_len: usize) -> mpsc::Receiver<Outgoing> {
        let (tx, rx) = mpsc::channel(queue_len);
        if let Routing::PerChannel(routes) = &self.routing {
            routes.lock().expect("routes lock").insert(channel, tx);
        }
        rx
    }

    /// Ends `channel`'s queue: its writer sends what is queued, then closes the stream.
    pub fn remove_channel(&self, channel: ChannelId) {
        if let Routing::PerChannel(routes) = &self.routing {
            routes.lock().expect("routes lock").remove(&channel);
        }
    }

    /// Whether `channel` was given a queue of its own and has since been ended
    /// (the room was left or the join refused): its stream is done.
    pub fn is_finished(&self, channel: ChannelId) -> bool {
        match &self.routing {
            Routing::Shared(_) => false,
            Routing::PerChannel(routes) => !routes.lock().expect("routes lock").contains_key(&channel),
        }
    }

    /// Queues `msg` on `channel` without waiting.
    pub fn push(&self, channel: ChannelId, msg: Arc<ServerMessage>) -> Result<(), PushError> {
        if self.end.borrow().is_some() {
            return Err(PushError::Gone);
        }
        let size = msg.approx_size();
        if self.queued_bytes.fetch_add(size, Ordering::AcqRel) + size > self.max_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(PushError::Full);
        }
        let out = Outgoing {
            channel,
            msg,
            size,
            queued_at: std::time::Instant::now(),
        };
        let result = match &self.routing {
            Routing::Shared(tx) => tx.try_send(out),
            Routing::PerChannel(routes) => match routes.lock().expect("routes lock").get(&channel) {
                Some(tx) => tx.try_send(out),
                None => Err(mpsc::error::TrySendError::Closed(out)),
            },
        };
        result.map_err(|e| {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => PushError::Full,
                mpsc::error::TrySendError::Closed(_) => PushError::Gone,
            }
        })
    }

    /// Queues `msg` on `channel`; a session that cannot take it is cut off as a
    /// slow consumer. Returns whether the message was queued.
    pub fn deliver(&self, channel: ChannelId, msg: Arc<ServerMessage>) -> bool {
        match self.push(channel, msg) {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.close(Goodbye::new(
                    ErrorCode::SlowConsumer,
                    "the session did not read fast enough and its outbound queue is full",
                ));
                false
            }
            Err(PushError::Gone) => false,
        }
    }

    /// Called by a writer once `out` is on the wire (or dropped).
    pub fn written(&self, out: &Outgoing) {
        self.queued_bytes.fetch_sub(out.size, Ordering::AcqRel);
        if matches!(*out.msg, ServerMessage::Signal { .. } | ServerMessage::Broadcast { .. }) {
            crate::metrics::relayed(out.queued_at.elapsed());
        }
    }

    /// Bytes waiting now.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// The session's encoding; set by the session layer from the client's first frame.
    pub fn encoding(&self) -> Encoding {
        match self.encoding.load(Ordering::Acquire) {
            2 => Encoding::Bincode,
            _ => Encoding::Json,
        }
    }

    /// Records the encoding the first time; later calls change nothing.
    pub fn set_encoding_once(&self, encoding: Encoding) {
        let value = match encoding {
            Encoding::Json => 1,
            Encoding::Bincode => 2,
        };
        let _ = self
            .encoding
            .compare_exchange(UNSET, value, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Ends the session with `goodbye`; the first call wins.
    pub fn close(&self, goodbye: Goodbye) {
        self.end.send_if_modified(|end| {
            if end.is_none() {
                *end = Some(goodbye);
                true
            } else {
                false
            }
        });
    }

    /// The goodbye, once the session is ending.
    pub fn goodbye(&self) -> Option<Goodbye> {
        self.end.borrow().clone()
    }

    /// Waits until the session is ending.
    pub async fn closed(&self) -> Goodbye {
        let mut rx = self.end.subscribe();
        let end = rx.wait_for(Option::is_some).await.expect("the sender lives in self");
        end.clone().expect("waited for Some")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(data: &str) -> Arc<ServerMessage> {
        Arc::new(ServerMessage::Broadcast {
            from: proto::PeerId(1),
            data: data.into(),
        })
    }

    #[test]
    fn a_full_queue_refuses_without_waiting() {
        let (outbox, mut rx) = Outbox::shared(2, 1 << 20);
        outbox.push(1, msg("a")).unwrap();
        outbox.push(2, msg("b")).unwrap();
        assert_eq!(outbox.push(1, msg("c")), Err(PushError::Full));
        let out = rx.try_recv().unwrap();
        outbox.written(&out);
        outbox.push(1, msg("c")).unwrap();
    }

    #[test]
    fn queued_bytes_are_bounded_across_channels() {
        let outbox = Outbox::per_channel(1000);
        let _a = outbox.add_channel(1, 100);
        let _b = outbox.add_channel(2, 100);
        outbox.push(1, msg(&"x".repeat(600))).unwrap();
        assert_eq!(outbox.push(2, msg(&"y".repeat(600))), Err(PushError::Full));
        assert!(outbox.queued_bytes() < 1000);
    }

    #[test]
    fn a_removed_channel_is_gone() {
        let outbox = Outbox::per_channel(1000);
        let _rx = outbox.add_channel(1, 4);
        outbox.remove_channel(1);
        assert_eq!(outbox.push(1, msg("late")), Err(PushError::Gone));
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn the_first_goodbye_wins() {
        let (outbox, _rx) = Outbox::shared(2, 1000);
        outbox.close(Goodbye::new(ErrorCode::SlowConsumer, "slow"));
        outbox.close(Goodbye::new(ErrorCode::ShuttingDown, "bye"));
        assert_eq!(outbox.closed().await.code, ErrorCode::SlowConsumer);
        assert_eq!(outbox.push(0, msg("after")), Err(PushError::Gone));
    }
}
