//! Token buckets in this node's memory. Exact and cheap (one map lookup under a lock), but each
//! node has its own budget: with several nodes behind a load balancer, use Redis.

use std::collections::HashMap;
use std::sync::Arc;

use allsource_application::ports::{Clock, RateDecision, RateLimitError, RateLimiter, TokenBucket};
use allsource_domain::RateLimit;
use async_trait::async_trait;
use parking_lot::Mutex;

/// Buckets beyond this many trigger a sweep of the full ones (a full bucket is the same as no
/// bucket), so keys that stopped calling do not hold memory forever.
const SWEEP_AT: usize = 100_000;

/// Token buckets by key, in memory.
pub struct MemoryRateLimiter {
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, (TokenBucket, RateLimit)>>,
}

impl MemoryRateLimiter {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, limit: RateLimit) -> Result<RateDecision, RateLimitError> {
        let now = self.clock.now().timestamp_millis();
        let mut buckets = self.buckets.lock();
        if let Some((bucket, held)) = buckets.get_mut(key) {
            *held = limit;
            return Ok(bucket.take(limit, now));
        }
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, (bucket, held)| {
                let mut probe = *bucket;
                // Full after refilling: forgetting it changes nothing.
                probe.take(*held, now);
                probe.tokens + 1.0 < f64::from(held.burst.max(1))
            });
        }
        let mut bucket = TokenBucket::full(limit, now);
        let decision = bucket.take(limit, now);
        buckets.insert(key.to_owned(), (bucket, limit));
        Ok(decision)
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use allsource_application::ports::clock::MockClock;
    use chrono::{TimeZone, Utc};

    use super::*;

    fn limiter() -> (MemoryRateLimiter, Arc<AtomicI64>) {
        let ms = Arc::new(AtomicI64::new(1_000_000));
        let mut clock = MockClock::new();
        let t = ms.clone();
        clock
            .expect_now()
            .returning(move || Utc.timestamp_millis_opt(t.load(Ordering::SeqCst)).unwrap());
        (MemoryRateLimiter::new(Arc::new(clock)), ms)
    }

    const LIMIT: RateLimit = RateLimit {
        per_second: 1,
        burst: 2,
    };

    #[tokio::test]
    async fn keys_have_their_own_buckets_that_refill_with_time() {
        let (limiter, ms) = limiter();
        assert!(limiter.check("a", LIMIT).await.unwrap().allowed);
        assert!(limiter.check("a", LIMIT).await.unwrap().allowed);
        let refused = limiter.check("a", LIMIT).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        assert!(
            limiter.check("b", LIMIT).await.unwrap().allowed,
            "b untouched"
        );
        ms.fetch_add(1_000, Ordering::SeqCst);
        let again = limiter.check("a", LIMIT).await.unwrap();
        assert!(again.allowed);
        assert_eq!(again.remaining, 0);
        assert_eq!(limiter.len(), 2);
    }

    #[tokio::test]
    async fn a_changed_limit_applies_to_the_existing_bucket() {
        let (limiter, _) = limiter();
        for _ in 0..2 {
            limiter.check("a", LIMIT).await.unwrap();
        }
        let bigger = RateLimit {
            per_second: 1,
            burst: 10,
        };
        // The tokens left do not grow by themselves: a tier change is no free burst.
        assert!(!limiter.check("a", bigger).await.unwrap().allowed);
    }
}
