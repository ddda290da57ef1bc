//! The login throttle: at most `max` logins of one username may fail within the window.
//!
//! The check and the count are one step: an attempt takes a slot ([`LoginThrottle::reserve`])
//! *before* the password is verified, under the lock, so parallel guesses cannot all pass the
//! check before any of them is counted. A failed attempt keeps its slot (it is the recorded
//! failure, until the window passes); a successful login clears the username's slots
//! ([`LoginThrottle::succeeded`]). So whatever the concurrency, at most `max` passwords of one
//! username are verified per window. Kept per node, in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use allsource_domain::Username;
use chrono::{DateTime, Duration, Utc};

/// Usernames tracked before the ones whose window has passed are dropped.
const MAX_TRACKED: usize = 100_000;

pub(super) struct LoginThrottle {
    max: usize,
    window: Duration,
    /// Attempts per normalised username, oldest first.
    attempts: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
}

impl LoginThrottle {
    pub(super) fn new(max: usize, window_secs: i64) -> Self {
        Self {
            max,
            window: Duration::seconds(window_secs),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The key of a raw username (valid or not: unknown names are throttled too).
    pub(super) fn key(raw: &str) -> String {
        Username::normalize(raw)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<DateTime<Utc>>>> {
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot for one attempt of `key`, or answers the seconds until one is free.
    pub(super) fn reserve(&self, key: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let mut attempts = self.lock();
        // Bound memory under a spray of random usernames: drop the usernames whose attempts
        // are all out of the window. Never the whole table: a spray must not reset a guessed
        // account's count.
        if attempts.len() > MAX_TRACKED {
            let window = self.window;
            attempts.retain(|_, list| list.back().is_some_and(|t| *t + window > now));
        }
        let list = attempts.entry(key.to_owned()).or_default();
        while list.front().is_some_and(|t| *t + self.window <= now) {
            list.pop_front();
        }
        if list.len() >= self.max {
            let wait = list.front().map_or(1, |oldest| {
                (*oldest + self.window - now).num_seconds().max(1)
            });
            return Err(u64::try_from(wait).unwrap_or(1));
        }
        list.push_back(now);
        Ok(())
    }

    /// The username logged in: its slots are free again.
    pub(super) fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    #[test]
    fn slots_are_taken_before_the_check_and_free_again_after_the_window() {
        let throttle = LoginThrottle::new(3, 60);
        for _ in 0..3 {
            throttle.reserve("root", t0()).unwrap();
        }
        assert_eq!(throttle.reserve("root", t0()), Err(60));
        assert_eq!(
            throttle.reserve("root", t0() + Duration::seconds(45)),
            Err(15)
        );
        // Another username has its own slots.
        throttle.reserve("alice", t0()).unwrap();
        // The window passes.
        throttle
            .reserve("root", t0() + Duration::seconds(60))
            .unwrap();
    }

    #[test]
    fn a_success_frees_the_slots_and_keys_are_normalised() {
        let throttle = LoginThrottle::new(2, 60);
        let key = LoginThrottle::key(" ROOT ");
        assert_eq!(key, "root");
        throttle.reserve(&key, t0()).unwrap();
        throttle.reserve(&key, t0()).unwrap();
        assert!(throttle.reserve(&key, t0()).is_err());
        throttle.succeeded(&key);
        throttle.reserve(&key, t0()).unwrap();
    }
}
