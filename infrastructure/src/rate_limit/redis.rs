//! Token buckets in Redis: every node runs the same Lua script on the same keys, so they share
//! one budget per key. The script reads the time from Redis (`TIME`), so the nodes' clocks do
//! not matter, and does read-refill-take-write atomically (Redis runs one script at a time).
//!
//! A bucket is a hash `allsource:rl:<key>` with `tokens` and `ts` (ms), expiring once it would
//! be full again, so idle keys cost nothing.
//!
//! Failures: the connection is made lazily and re-made after a loss; a call that fails or takes
//! longer than the response timeout is [`RateLimitError::Unavailable`]. The HTTP layer lets such
//! requests through (fail open) with a logged warning: losing the shared limiter must not take
//! the event store down with it.

use std::time::Duration;

use allsource_application::ports::rate_limit::decision;
use allsource_application::ports::{RateDecision, RateLimitError, RateLimiter};
use allsource_domain::RateLimit;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const SCRIPT: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) / 1000 * rate)
if now > ts then ts = now end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
";

/// Token buckets by key, in Redis.
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl RedisRateLimiter {
    /// A limiter on the Redis at `url` (`redis://127.0.0.1:6379`). Connects lazily: a Redis that
    /// is down now only makes calls fail until it is back.
    ///
    /// # Errors
    /// A URL that is not a Redis URL.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Self::with_prefix(url, "allsource:rl:")
    }

    /// Like [`new`](Self::new), with the keys' prefix (tests use one of their own).
    ///
    /// # Errors
    /// A URL that is not a Redis URL.
    pub fn with_prefix(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("invalid Redis URL (rate_limit.redis_url): {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(250)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis connection: {e}"))?;
        Ok(Self {
            connection,
            script: redis::Script::new(SCRIPT),
            prefix: prefix.to_owned(),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, limit: RateLimit) -> Result<RateDecision, RateLimitError> {
        let rate = limit.per_second.max(1);
        let burst = limit.burst.max(1);
        let mut connection = self.connection.clone();
        let (allowed, tokens): (i64, String) = self
            .script
            .key(format!("{}{key}", self.prefix))
            .arg(rate)
            .arg(burst)
            .invoke_async(&mut connection)
            .await
            .map_err(|e| RateLimitError::Unavailable(e.to_string()))?;
        let tokens: f64 = tokens
            .parse()
            .map_err(|_| RateLimitError::Unavailable(format!("odd token count {tokens:?}")))?;
        Ok(decision(
            allowed == 1,
            tokens,
            f64::from(burst),
            f64::from(rate),
        ))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
