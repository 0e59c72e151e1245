//! Token buckets: the per-session message budget and the per-IP connection rate.
//!
//! Pure arithmetic on `Instant`s handed in by the caller, so every limit can be
//! tested without a clock or a socket.

use std::time::Instant;

use proto::ErrorCode;

/// A bucket that refills at `rate` tokens per second up to `burst` tokens.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Whether `n` tokens are available now, without taking them.
    pub fn has(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= n
    }

    /// Takes `n` tokens if they are available.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        let ok = self.has(n, now);
        if ok {
            self.tokens -= n;
        }
        ok
    }

    /// Takes `n` tokens even if they are not there, down to minus the burst.
    pub fn take_into_debt(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - n).max(-self.burst);
    }

    /// Whether the bucket has refilled completely (nothing to remember about it).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// A session's inbound budget: messages per second and bytes per second.
#[derive(Clone, Debug)]
pub struct Budget {
    messages: TokenBucket,
    bytes: TokenBucket,
}

impl Budget {
    pub fn new(limits: &proto::SessionLimits, now: Instant) -> Self {
        Self {
            messages: TokenBucket::new(limits.messages_per_sec, limits.message_burst, now),
            bytes: TokenBucket::new(limits.bytes_per_sec, limits.byte_burst, now),
        }
    }

    /// Charges the bytes of a frame that was skipped unread (too large): the
    /// bytes bucket may go into debt, down to minus its burst.
    pub fn charge_skipped(&mut self, len: usize, now: Instant) {
        self.bytes.take_into_debt(len as f64, now);
    }

    /// Charges one frame of `len` bytes; on refusal nothing is taken.
    pub fn charge(&mut self, len: usize, now: Instant) -> Result<(), ErrorCode> {
        let bytes = len as f64;
        if !self.messages.has(1.0, now) {
            return Err(ErrorCode::RateLimited);
        }
        if !self.bytes.has(bytes, now) {
            return Err(ErrorCode::ByteRateLimited);
        }
        self.messages.try_take(1.0, now);
        self.bytes.try_take(bytes, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(messages_per_sec: u32, message_burst: u32, bytes_per_sec: u32, byte_burst: u32) -> proto::SessionLimits {
        proto::SessionLimits {
            max_frame_bytes: byte_burst,
            messages_per_sec,
            message_burst,
            bytes_per_sec,
            byte_burst,
            max_rooms: 1,
            max_room_members: 1,
            idle_timeout_ms: 1,
        }
    }

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut budget = Budget::new(&limits(10, 5, 1_000_000, 1_000_000), t0);
        for _ in 0..5 {
            budget.charge(10, t0).unwrap();
        }
        assert_eq!(budget.charge(10, t0), Err(ErrorCode::RateLimited));
        // 10 per second: one more token every 100 ms.
        assert_eq!(
            budget.charge(10, t0 + Duration::from_millis(50)),
            Err(ErrorCode::RateLimited)
        );
        budget.charge(10, t0 + Duration::from_millis(100)).unwrap();
    }

    #[test]
    fn bytes_are_limited_separately_and_a_refusal_takes_nothing() {
        let t0 = Instant::now();
        let mut budget = Budget::new(&limits(1000, 1000, 100, 1000), t0);
        budget.charge(900, t0).unwrap();
        assert_eq!(budget.charge(200, t0), Err(ErrorCode::ByteRateLimited));
        // The refused frame took no bytes: 100 are still there.
        budget.charge(100, t0).unwrap();
        assert_eq!(budget.charge(1, t0), Err(ErrorCode::ByteRateLimited));
        budget.charge(100, t0 + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn skipped_bytes_put_the_budget_in_debt() {
        let t0 = Instant::now();
        let mut budget = Budget::new(&limits(1000, 1000, 100, 100), t0);
        budget.charge_skipped(1_000_000, t0);
        // Down to -100 (not -999 900): a second at 100 bytes/s before a byte passes again.
        assert_eq!(
            budget.charge(1, t0 + Duration::from_millis(900)),
            Err(ErrorCode::ByteRateLimited)
        );
        budget.charge(1, t0 + Duration::from_millis(1020)).unwrap();
    }

    #[test]
    fn a_bucket_never_holds_more_than_its_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 3, t0);
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.is_full(later));
        for _ in 0..3 {
            assert!(bucket.try_take(1.0, later));
        }
        assert!(!bucket.try_take(1.0, later));
    }
}
