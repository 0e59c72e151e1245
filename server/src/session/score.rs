//! Suspicious-activity scoring: how a session that keeps breaking the rules is
//! told, then closed, then has its address blocked.
//!
//! Every violation adds points ([`points`]); the score drains at one point per
//! second, so an honest client that trips a limit now and then never gets near
//! the limit. A session whose score reaches `abuse_score_limit` is closed with
//! `policy_violation`, and that close is a strike against its address in the
//! [`super::blocklist`]: `abuse_closes_before_block` of them block it.

use std::time::Instant;

use proto::ErrorCode;

/// Points drained per second.
const DRAIN_PER_SEC: f64 = 1.0;

/// The points a violation reported with `code` costs; 0 for refusals that an
/// honest client meets in normal use (a full room, a peer that just left).
pub fn points(code: ErrorCode) -> u32 {
    match code {
        ErrorCode::FrameTooLarge => 20,
        ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::Replayed => 10,
        ErrorCode::InvalidMessage => 5,
        // Per dropped frame: a flood of 50 frames over budget closes the session.
        ErrorCode::RateLimited | ErrorCode::ByteRateLimited => 2,
        _ => 0,
    }
}

/// A session's score.
#[derive(Debug)]
pub struct Score {
    value: f64,
    at: Instant,
}

impl Score {
    pub fn new(now: Instant) -> Self {
        Self { value: 0.0, at: now }
    }

    /// Adds the points of `code`; returns the score after draining and adding.
    pub fn add(&mut self, code: ErrorCode, now: Instant) -> u32 {
        let drained = now.saturating_duration_since(self.at).as_secs_f64() * DRAIN_PER_SEC;
        self.value = (self.value - drained).max(0.0) + f64::from(points(code));
        self.at = now;
        self.value as u32
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn points_add_up_and_drain_over_time() {
        let t0 = Instant::now();
        let mut score = Score::new(t0);
        assert_eq!(score.add(ErrorCode::BadFrame, t0), 10);
        assert_eq!(score.add(ErrorCode::FrameTooLarge, t0), 30);
        assert_eq!(score.add(ErrorCode::RoomFull, t0 + Duration::from_secs(10)), 20);
        assert_eq!(score.add(ErrorCode::RoomFull, t0 + Duration::from_secs(60)), 0);
    }

    #[test]
    fn a_flood_of_fifty_dropped_frames_reaches_the_default_limit() {
        let t0 = Instant::now();
        let mut score = Score::new(t0);
        let last = (0..50).map(|_| score.add(ErrorCode::RateLimited, t0)).last();
        assert_eq!(last, Some(100));
    }
}
