//! Time, as a port, so tests can control it.

use chrono::{DateTime, Utc};

/// A source of wall-clock time.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// The current time. Stores truncate it to microseconds and never let it go backwards.
    fn now(&self) -> DateTime<Utc>;
}
