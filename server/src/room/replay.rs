//! A seat's replay log: the room events sent to a session that its client has
//! not acknowledged yet, kept so that a resumed session gets them again.
//!
//! Events are numbered 1, 2, 3, ... per seat (`proto::EventCount`); the client
//! acknowledges them with `received`, which drops them here. What the logs of
//! one session keep is bounded by its [`ReplayMemory`] (bytes, and events, which
//! a resume queues at once): over the bound, a seat
//! whose session is connected forgets its oldest events (a later resume of
//! that room starts it afresh), and a held session is ended.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use proto::{EventCount, ServerMessage};

/// The replay bytes of one session, across its rooms; it moves with the
/// session when it is resumed.
#[derive(Debug)]
pub struct ReplayMemory {
    used: AtomicUsize,
    limit: usize,
    /// Events kept, and at most how many: a resume queues them all at once,
    /// so they must fit the outbound queue.
    events: AtomicUsize,
    max_events: usize,
    /// Set while the session has no connection: an overflow then ends it.
    held: AtomicBool,
    overflowed: AtomicBool,
    overflow: tokio::sync::Notify,
}

impl ReplayMemory {
    /// A bound of `limit` bytes and `max_events` events; 0 keeps nothing
    /// (resume is off).
    pub fn new(limit: usize, max_events: usize) -> Arc<Self> {
        let limit = if max_events == 0 { 0 } else { limit };
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
            events: AtomicUsize::new(0),
            max_events,
            held: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            overflow: tokio::sync::Notify::new(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Bytes kept now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Marks the session as held (no connection) or connected again.
    pub fn set_held(&self, held: bool) {
        self.held.store(held, Ordering::Release);
        if !held {
            self.overflowed.store(false, Ordering::Release);
        }
    }

    /// Waits until a held session's events overflowed the bound.
    pub async fn overflowed(&self) {
        loop {
            let notified = self.overflow.notified();
            if self.overflowed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn add(&self, size: usize) -> bool {
        let bytes = self.used.fetch_add(size, Ordering::AcqRel) + size;
        let events = self.events.fetch_add(1, Ordering::AcqRel) + 1;
        bytes <= self.limit && events <= self.max_events
    }

    fn sub(&self, size: usize) {
        self.used.fetch_sub(size, Ordering::AcqRel);
        self.events.fetch_sub(1, Ordering::AcqRel);
    }

    fn over(&self) -> bool {
        self.used() > self.limit || self.events.load(Ordering::Acquire) > self.max_events
    }
}

/// One seat's unacknowledged events.
#[derive(Debug)]
pub struct Replay {
    memory: Arc<ReplayMemory>,
    /// Events after `acked`, oldest first, with their sizes.
    events: VecDeque<(Arc<ServerMessage>, usize)>,
    /// The number of the event before the first one kept.
    acked: EventCount,
    /// The number of the last event sent.
    sent: EventCount,
}

impl Replay {
    pub fn new(memory: Arc<ReplayMemory>) -> Self {
        Self {
            memory,
            events: VecDeque::new(),
            acked: 0,
            sent: 0,
        }
    }

    /// Numbers and keeps an event that is being sent.
    pub fn record(&mut self, msg: &Arc<ServerMessage>) {
        self.sent += 1;
        if !self.memory.enabled() {
            self.acked = self.sent;
            return;
        }
        let size = msg.approx_size();
        self.events.push_back((msg.clone(), size));
        if self.memory.add(size) {
            return;
        }
        if self.memory.held.load(Ordering::Acquire) {
            // Kept: the session ends now and takes it with it.
            self.memory.overflowed.store(true, Ordering::Release);
            self.memory.overflow.notify_waiters();
            return;
        }
        // Connected but not acknowledging: forget the oldest events.
        while self.memory.over() {
            let Some((_, size)) = self.events.pop_front() else {
                break;
            };
            self.memory.sub(size);
            self.acked += 1;
        }
    }

    /// The client has the first `upto` events (a count above what was sent is
    /// taken as everything).
    pub fn acknowledge(&mut self, upto: EventCount) {
        let upto = upto.min(self.sent);
        while self.acked < upto {
            let Some((_, size)) = self.events.pop_front() else {
                break;
            };
            self.memory.sub(size);
            self.acked += 1;
        }
    }

    /// The events after the client's first `after`, to send again; `None` if
    /// some of them were forgotten.
    pub fn after(&mut self, after: EventCount) -> Option<Vec<Arc<ServerMessage>>> {
        self.acknowledge(after);
        if self.acked < after.min(self.sent) || after < self.acked {
            return None;
        }
        Some(self.events.iter().map(|(msg, _)| msg.clone()).collect())
    }

    /// Starts the numbering again (the room is joined afresh).
    pub fn restart(&mut self) {
        self.acknowledge(self.sent);
        self.acked = 0;
        self.sent = 0;
    }

    pub fn memory(&self) -> &Arc<ReplayMemory> {
        &self.memory
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        for (_, size) in self.events.drain(..) {
            self.memory.sub(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Arc<ServerMessage> {
        Arc::new(ServerMessage::Broadcast {
            from: proto::PeerId(1),
            data: format!("event {n}"),
        })
    }

    fn data(msgs: &[Arc<ServerMessage>]) -> Vec<String> {
        msgs.iter()
            .map(|m| match &**m {
                ServerMessage::Broadcast { data, .. } => data.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn what_the_client_has_not_acknowledged_is_sent_again() {
        let memory = ReplayMemory::new(1 << 20, 100);
        let mut replay = Replay::new(memory.clone());
        for n in 1..=5 {
            replay.record(&event(n));
        }
        replay.acknowledge(2);
        assert_eq!(data(&replay.after(3).unwrap()), ["event 4", "event 5"]);
        assert_eq!(data(&replay.after(5).unwrap()), Vec::<String>::new());
        drop(replay);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn a_connected_session_over_the_bound_forgets_its_oldest_events() {
        let size = event(1).approx_size();
        let memory = ReplayMemory::new(size * 3, 100);
        let mut replay = Replay::new(memory.clone());
        for n in 1..=5 {
            replay.record(&event(n));
        }
        assert!(memory.used() <= size * 3);
        assert!(replay.after(1).is_none(), "events 2 and 3 were forgotten");
        assert_eq!(data(&replay.after(3).unwrap()), ["event 4", "event 5"]);
    }

    #[tokio::test]
    async fn a_held_session_over_the_bound_overflows() {
        let size = event(1).approx_size();
        let memory = ReplayMemory::new(size * 2, 100);
        memory.set_held(true);
        let mut replay = Replay::new(memory.clone());
        replay.record(&event(1));
        replay.record(&event(2));
        assert!(!memory.overflowed.load(Ordering::Acquire));
        replay.record(&event(3));
        tokio::time::timeout(std::time::Duration::from_secs(1), memory.overflowed())
            .await
            .expect("overflow is signalled");
    }

    #[test]
    fn with_resume_off_nothing_is_kept() {
        let memory = ReplayMemory::new(1 << 20, 0);
        let mut replay = Replay::new(memory.clone());
        replay.record(&event(1));
        assert_eq!(memory.used(), 0);
        assert!(replay.after(0).is_none());
    }
}
