//! The revocation list: access tokens refused before they expire.
//!
//! An access token is a signed JWT, valid until its `exp` without any lookup. When a user is
//! deleted (alone or with its tenant) or a refresh-token family is revoked by reuse detection,
//! the tokens already handed out must stop working at once, not when they expire. So every
//! authenticated request checks the token's user (`user/<tenant>/<user id>`) and family
//! (`family/<family id>`) against this list.
//!
//! - **Durable:** an entry is written to the state store (`_identity`, namespace
//!   `auth.revoked`) before it takes effect, so it survives restarts.
//! - **Cheap:** the check is a lookup in an in-memory map; the map is reloaded from the state
//!   store when it is older than [`REVOCATION_RELOAD_MILLIS`] (one list of a small namespace
//!   per node and interval, by one request at a time while the others use the map they have).
//! - **At once on this node, within a bound elsewhere:** a revocation made through this node
//!   is in its map immediately; other nodes see it after their next reload, within
//!   [`REVOCATION_RELOAD_MILLIS`] plus one reload.
//! - **Small:** an entry matters only until every token it can match has expired (its
//!   `until`: the revocation time plus the access-token lifetime plus a minute of clock
//!   slack). Expired entries are skipped on load and pruned from the store.
//!
//! If the list cannot be loaded, authentication answers 503: a revoked token is never let
//! through because the store is down.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use parking_lot::RwLock;

use super::store::{IdentityStore, RevocationRecord};
use crate::ports::StateError;

/// How old the in-memory list may be before it is reloaded (the bound within which another
/// node's revocation takes effect here).
pub const REVOCATION_RELOAD_MILLIS: i64 = 1_000;
/// Clock slack added to an entry's life.
const SLACK_SECS: i64 = 60;

/// The key of a user's entry.
pub(super) fn user_key(tenant: &str, user_id: &str) -> String {
    format!("user/{tenant}/{user_id}")
}

/// The key of a refresh-token family's entry.
pub(super) fn family_key(family_id: &str) -> String {
    format!("family/{family_id}")
}

#[derive(Default, Clone)]
struct Loaded {
    /// When the map was read from the store, in ms; `None` before the first load.
    at_ms: Option<i64>,
    /// Key → until.
    entries: HashMap<String, DateTime<Utc>>,
}

pub(super) struct Revocations {
    store: IdentityStore,
    loaded: RwLock<Arc<Loaded>>,
    reloading: tokio::sync::Mutex<()>,
}

impl Revocations {
    pub(super) fn new(store: IdentityStore) -> Self {
        Self {
            store,
            loaded: RwLock::new(Arc::new(Loaded::default())),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether any of `keys` is revoked now.
    ///
    /// # Errors
    /// The list could not be loaded.
    pub(super) async fn any_revoked(
        &self,
        keys: &[&str],
        now: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let loaded = self.current(now).await?;
        Ok(keys
            .iter()
            .any(|k| loaded.entries.get(*k).is_some_and(|until| *until > now)))
    }

    /// Revokes the key for tokens of a lifetime up to `access_ttl_secs`: durable first, then
    /// in this node's map.
    ///
    /// # Errors
    /// The entry could not be written (then nothing is revoked).
    pub(super) async fn revoke(
        &self,
        key: String,
        access_ttl_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let until = now + Duration::seconds(access_ttl_secs.saturating_add(SLACK_SECS));
        self.store
            .put_revocation(
                &key,
                &RevocationRecord {
                    revoked_at: now,
                    until,
                },
            )
            .await?;
        // Copied only if a check holds the current map right now.
        Arc::make_mut(&mut self.loaded.write())
            .entries
            .insert(key, until);
        Ok(())
    }

    fn fresh(loaded: &Loaded, now_ms: i64) -> bool {
        loaded
            .at_ms
            .is_some_and(|at| now_ms >= at && now_ms - at < REVOCATION_RELOAD_MILLIS)
    }

    /// The map, reloaded first if it is stale. While one request reloads, the others use the
    /// map they have (unless there is none yet).
    async fn current(&self, now: DateTime<Utc>) -> Result<Arc<Loaded>, StateError> {
        let now_ms = now.timestamp_millis();
        let loaded = self.loaded.read().clone();
        if Self::fresh(&loaded, now_ms) {
            return Ok(loaded);
        }
        let _reloading = match self.reloading.try_lock() {
            Ok(guard) => guard,
            Err(_) if loaded.at_ms.is_some() => return Ok(loaded),
            Err(_) => self.reloading.lock().await,
        };
        let loaded = self.loaded.read().clone();
        if Self::fresh(&loaded, now_ms) {
            return Ok(loaded);
        }
        let mut entries = HashMap::new();
        let mut expired = Vec::new();
        for (key, record) in self.store.revocations().await? {
            if record.until > now {
                entries.insert(key, record.until);
            } else {
                expired.push(key);
            }
        }
        // Entries revoked on this node while the list was read are kept.
        for (key, until) in &self.loaded.read().entries {
            if *until > now {
                entries.entry(key.clone()).or_insert(*until);
            }
        }
        let next = Arc::new(Loaded {
            at_ms: Some(now_ms),
            entries,
        });
        *self.loaded.write() = next.clone();
        for key in expired {
            // Best effort: an expired entry left behind is skipped on every load.
            if let Err(e) = self.store.delete_revocation(&key).await {
                tracing::debug!(error = %e, "expired revocation not pruned yet");
                break;
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chrono::TimeZone;

    use super::*;
    use crate::ports::StateStore;

    /// The cost the revocation list adds to every authenticated request: one lookup of the
    /// user and one of the family in the in-memory map. Measured with a list of 10 000 live
    /// entries; the time per check is printed (`--nocapture`) and bounded loosely so that the
    /// test only fails when the check stops being a memory lookup.
    #[tokio::test]
    async fn a_check_costs_a_map_lookup() {
        let state = Arc::new(crate::use_cases::identity::tests::FakeState::default());
        let store = IdentityStore::new(state.clone() as Arc<dyn StateStore>);
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let revocations = Revocations::new(store);
        for i in 0..10_000 {
            revocations
                .revoke(family_key(&format!("family-{i}")), 900, now)
                .await
                .unwrap();
        }
        // A fresh node: the first check loads the list from the store.
        let loading = Instant::now();
        let fresh = Revocations::new(IdentityStore::new(state as Arc<dyn StateStore>));
        let user = user_key("acme", "u-live");
        let family = family_key("f-live");
        assert!(!fresh.any_revoked(&[&user, &family], now).await.unwrap());
        let load = loading.elapsed();
        const N: u32 = 200_000;
        let started = Instant::now();
        for _ in 0..N {
            let keys = [user.as_str(), family.as_str()];
            assert!(!fresh.any_revoked(&keys, now).await.unwrap());
        }
        let per_check = started.elapsed() / N;
        assert!(
            fresh
                .any_revoked(&[&user, &family_key("family-42")], now)
                .await
                .unwrap()
        );
        println!("revocation check: {per_check:?} per request; loading 10 000 entries: {load:?}");
        assert!(
            per_check < std::time::Duration::from_micros(50),
            "{per_check:?}"
        );
    }
}
