//! Counters of what the session layer saw: sessions opened and resumed, and
//! every error code sent.

use std::sync::atomic::{AtomicU64, Ordering};

use proto::ErrorCode;

const SLOTS: usize = 128;

/// Monotonic counters, cheap to bump from any task.
pub struct Counters {
    sessions_opened: AtomicU64,
    sessions_resumed: AtomicU64,
    errors: [AtomicU64; SLOTS],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            sessions_opened: AtomicU64::new(0),
            sessions_resumed: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    pub fn session_opened(&self) {
        self.sessions_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sessions_opened(&self) -> u64 {
        self.sessions_opened.load(Ordering::Relaxed)
    }

    pub fn session_resumed(&self) {
        self.sessions_resumed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sessions_resumed(&self) -> u64 {
        self.sessions_resumed.load(Ordering::Relaxed)
    }

    /// Counts one violation or error reported with `code`.
    pub fn error(&self, code: ErrorCode) {
        if let Some(slot) = self.errors.get(usize::from(code.number())) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors
            .get(usize::from(code.number()))
            .map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// Every code counted at least once, with its count.
    pub fn error_counts(&self) -> Vec<(ErrorCode, u64)> {
        ErrorCode::ALL
            .iter()
            .map(|&c| (c, self.errors(c)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_slot() {
        assert!(ErrorCode::ALL.iter().all(|c| usize::from(c.number()) < SLOTS));
        let counters = Counters::default();
        counters.error(ErrorCode::RoomFull);
        counters.error(ErrorCode::RoomFull);
        assert_eq!(counters.error_counts(), vec![(ErrorCode::RoomFull, 2)]);
    }
}
