//! The `RateLimiter` port: token buckets by key (a tenant, an API key), shared by whatever
//! adapter holds them (this node's memory, or Redis for several nodes).
//!
//! The bucket math lives here ([`TokenBucket`]) so that every adapter answers alike: a bucket
//! holds at most `burst` tokens, refills `per_second` tokens a second, and a request takes one.
//!
//! # Contract
//! - `check` takes one token from the key's bucket if it holds one (`allowed`), else takes
//!   nothing; a key never seen before starts with a full bucket.
//! - `limit` is the bucket size (`burst`), `remaining` the whole tokens left after this request,
//!   `reset_secs` the seconds until the bucket is full again, `retry_after_secs` (≥ 1 when
//!   refused, 0 when allowed) the seconds until one token is there.
//! - Buckets of different keys never affect each other.

use async_trait::async_trait;

use allsource_domain::RateLimit;

/// The answer of [`RateLimiter::check`], and what the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// `X-RateLimit-Limit`: the bucket size.
    pub limit: u64,
    /// `X-RateLimit-Remaining`: whole tokens left.
    pub remaining: u64,
    /// `X-RateLimit-Reset`: seconds until the bucket is full.
    pub reset_secs: u64,
    /// `Retry-After` when refused.
    pub retry_after_secs: u64,
}

/// Why the limiter could not decide.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The shared store (Redis) cannot be reached. Callers decide to fail open or closed.
    #[error("rate limit store unavailable: {0}")]
    Unavailable(String),
}

/// Token buckets by key.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes a token from `key`'s bucket of size `limit.burst`, refilled at `limit.per_second`.
    ///
    /// # Errors
    /// [`RateLimitError::Unavailable`] when the buckets' store cannot answer.
    async fn check(&self, key: &str, limit: RateLimit) -> Result<RateDecision, RateLimitError>;

    /// The adapter's name (`memory`, `redis`), for logs.
    fn backend(&self) -> &'static str;
}

/// One bucket's state: tokens (fractional) at a time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    pub tokens: f64,
    pub updated_ms: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn full(limit: RateLimit, now_ms: i64) -> Self {
        Self {
            tokens: f64::from(limit.burst.max(1)),
            updated_ms: now_ms,
        }
    }

    /// Refills for the time since the last call, then takes one token if there is one.
    /// A clock that went backwards refills nothing.
    pub fn take(&mut self, limit: RateLimit, now_ms: i64) -> RateDecision {
        let burst = f64::from(limit.burst.max(1));
        let rate = f64::from(limit.per_second.max(1));
        let elapsed = (now_ms - self.updated_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated_ms = self.updated_ms.max(now_ms);
        let allowed = self.tokens >= 1.0;
        if allowed {
            self.tokens -= 1.0;
        }
        decision(allowed, self.tokens, burst, rate)
    }
}

/// The decision for a bucket holding `tokens` after the request (shared with adapters that
/// compute the bucket elsewhere, like Redis).
pub fn decision(allowed: bool, tokens: f64, burst: f64, rate: f64) -> RateDecision {
    let tokens = tokens.clamp(0.0, burst);
    RateDecision {
        allowed,
        limit: burst as u64,
        remaining: tokens.floor() as u64,
        reset_secs: ((burst - tokens) / rate).ceil() as u64,
        retry_after_secs: if allowed {
            0
        } else {
            (((1.0 - tokens) / rate).ceil() as u64).max(1)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 2,
        burst: 4,
    };

    #[test]
    fn a_full_bucket_allows_a_burst_then_refuses() {
        let mut bucket = TokenBucket::full(LIMIT, 0);
        for left in (0..4).rev() {
            let d = bucket.take(LIMIT, 0);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            assert_eq!(d.limit, 4);
            assert_eq!(d.retry_after_secs, 0);
        }
        let refused = bucket.take(LIMIT, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(refused.reset_secs, 2, "4 tokens at 2/s");
    }

    #[test]
    fn tokens_come_back_at_the_rate_and_never_beyond_the_burst() {
        let mut bucket = TokenBucket::full(LIMIT, 0);
        for _ in 0..4 {
            bucket.take(LIMIT, 0);
        }
        assert!(!bucket.take(LIMIT, 400).allowed, "0.8 tokens after 400 ms");
        let d = bucket.take(LIMIT, 500);
        assert!(d.allowed, "1 token after 500 ms");
        assert_eq!(d.remaining, 0);
        let d = bucket.take(LIMIT, 60_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3, "refilled to the burst of 4, minus this one");
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let mut bucket = TokenBucket::full(LIMIT, 10_000);
        for _ in 0..4 {
            bucket.take(LIMIT, 10_000);
        }
        assert!(!bucket.take(LIMIT, 0).allowed);
        assert_eq!(bucket.updated_ms, 10_000);
    }

    #[test]
    fn zero_limits_are_treated_as_one() {
        let zero = RateLimit {
            per_second: 0,
            burst: 0,
        };
        let mut bucket = TokenBucket::full(zero, 0);
        assert!(bucket.take(zero, 0).allowed);
        let d = bucket.take(zero, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
    }
}
