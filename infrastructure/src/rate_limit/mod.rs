//! Adapters of the `RateLimiter` port: [`MemoryRateLimiter`] (this node's buckets) and
//! [`RedisRateLimiter`] (buckets in Redis, one budget shared by every node).

mod memory;
mod redis;

pub use self::memory::MemoryRateLimiter;
pub use self::redis::RedisRateLimiter;
