//! Enforcement: the per-tenant cache of compiled enforced schemas, and the [`AppendGuard`] that
//! checks appended events against it.
//!
//! # The cache
//! Per tenant, the compiled latest schema of every *enforced* subject, loaded from the state
//! store at the tenant's first append and reloaded after
//! [`SchemaSettings::cache_ttl`](super::SchemaSettings::cache_ttl). A tenant without enforced subjects costs a map lookup per append.
//!
//! - **One reload at a time.** When a tenant's entry expires, one append reloads it; the
//!   appends that arrive meanwhile wait for that reload and use its result instead of each
//!   listing every subject again.
//! - **A failure affects only what it concerns.** When a reload fails (the state store cannot
//!   answer), the tenant keeps the schemas it had (logged; retried after the TTL), so a tenant
//!   with no enforced subject keeps appending. Only a tenant whose subjects were never loaded on
//!   this node has no answer to fall back on: its appends are refused with 503. A subject whose
//!   record is unreadable or whose schema no longer compiles refuses (500) only the events of
//!   its type; the tenant's other events are checked and appended as usual.
//! - Changes made through this registry drop the tenant's entry at once; changes made by
//!   another node (postgres backend, several nodes) are seen within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use allsource_domain::{SchemaVersion, Subject, TenantId};
use serde_json::Value;

use super::{MAX_APPEND_VIOLATIONS, SchemaError, SchemaRegistry, StoredSubject, issues_as_fields};
use crate::Caller;
use crate::ports::CompiledSchema;
use crate::use_cases::append::{AppendError, AppendGuard, GuardedEvent};

/// The compiled latest schema of an enforced subject.
struct Enforced {
    version: SchemaVersion,
    compiled: Arc<dyn CompiledSchema>,
}

/// What the guard knows of one tenant.
struct TenantSchemas {
    loaded: Instant,
    enforced: HashMap<String, Arc<Enforced>>,
    /// Subjects that cannot be enforced now (unreadable record, schema that does not compile),
    /// with the reason: their events are refused until a reload finds them usable.
    broken: HashMap<String, String>,
}

/// The enforced schemas of every tenant seen on this node.
#[derive(Default)]
pub(super) struct EnforcementCache {
    tenants: RwLock<HashMap<TenantId, Arc<TenantSchemas>>>,
    /// One reload lock per tenant (single flight).
    reloads: parking_lot::Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
}

impl EnforcementCache {
    fn get(&self, tenant: &TenantId) -> Option<Arc<TenantSchemas>> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    fn put(&self, tenant: &TenantId, schemas: Arc<TenantSchemas>) {
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.clone(), schemas);
    }

    fn reload_lock(&self, tenant: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        self.reloads
            .lock()
            .entry(tenant.clone())
            .or_default()
            .clone()
    }
}

impl SchemaRegistry {
    /// Drops the tenant's cached schemas: the next append reloads them.
    pub(super) fn invalidate(&self, tenant: &TenantId) {
        self.cache
            .tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant);
    }

    fn is_fresh(&self, schemas: &TenantSchemas) -> bool {
        schemas.loaded.elapsed() < self.settings.cache_ttl
    }

    /// The enforced subjects of a tenant, from the cache or freshly loaded (see the module
    /// docs for what a failed reload does).
    async fn enforced(&self, tenant: &TenantId) -> Result<Arc<TenantSchemas>, SchemaError> {
        let seen = self.cache.get(tenant);
        if let Some(cached) = &seen
            && self.is_fresh(cached)
        {
            return Ok(cached.clone());
        }
        let lock = self.cache.reload_lock(tenant);
        let _reloading = lock.lock().await;
        // Another append may have reloaded (or a registration dropped the entry) meanwhile.
        let previous = self.cache.get(tenant);
        match (&seen, &previous) {
            (Some(seen), Some(now)) if !Arc::ptr_eq(seen, now) => return Ok(now.clone()),
            (None, Some(now)) => return Ok(now.clone()),
            _ => {}
        }
        let fresh = match self.load_enforced(tenant, previous.as_deref()).await {
            Ok(fresh) => Arc::new(fresh),
            Err(e) => {
                let Some(previous) = previous else {
                    return Err(e);
                };
                tracing::warn!(
                    tenant = %tenant, error = %e,
                    "enforced schemas not reloaded; using the ones loaded before"
                );
                // Tried again after the TTL, not on every append.
                Arc::new(TenantSchemas {
                    loaded: Instant::now(),
                    enforced: previous.enforced.clone(),
                    broken: previous.broken.clone(),
                })
            }
        };
        self.cache.put(tenant, fresh.clone());
        Ok(fresh)
    }

    /// Reads and compiles the tenant's enforced subjects. Only a failure to list them fails
    /// the load; a subject that cannot be used is recorded as broken.
    async fn load_enforced(
        &self,
        tenant: &TenantId,
        previous: Option<&TenantSchemas>,
    ) -> Result<TenantSchemas, SchemaError> {
        let loaded = Instant::now();
        let mut enforced = HashMap::new();
        let mut broken = HashMap::new();
        for (key, entry) in self.entries(tenant).await? {
            let stored: StoredSubject = match serde_json::from_value(entry.value) {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::error!(tenant = %tenant, subject = %key, error = %e, "stored schema subject is unreadable");
                    broken.insert(key, format!("the stored subject is unreadable: {e}"));
                    continue;
                }
            };
            let Some(latest) = stored.versions.last().filter(|_| stored.enforce) else {
                continue;
            };
            // Reuse what was compiled before when the version has not changed.
            let reused = previous
                .and_then(|p| p.enforced.get(&key))
                .filter(|e| e.version == latest.version)
                .cloned();
            if let Some(e) = reused {
                enforced.insert(key, e);
                continue;
            }
            let compiled = Subject::parse(&key)
                .map_err(|e| SchemaError::Internal(anyhow::anyhow!("stored subject name: {e}")))
                .and_then(|subject| self.compile_stored(&subject, &latest.schema));
            match compiled {
                Ok(compiled) => {
                    enforced.insert(
                        key,
                        Arc::new(Enforced {
                            version: latest.version,
                            compiled,
                        }),
                    );
                }
                Err(e) => {
                    tracing::error!(tenant = %tenant, subject = %key, error = %e, "enforced schema cannot be used");
                    broken.insert(key, e.to_string());
                }
            }
        }
        Ok(TenantSchemas {
            loaded,
            enforced,
            broken,
        })
    }
}

#[async_trait::async_trait]
impl AppendGuard for SchemaRegistry {
    /// Refuses the append when an event of an enforced subject fails its latest schema.
    async fn before_append<'a>(
        &self,
        caller: &Caller,
        events: &[GuardedEvent<'a>],
        batch: bool,
    ) -> Result<(), AppendError> {
        let schemas = self.enforced(caller.tenant()).await.map_err(|e| match e {
            SchemaError::Unavailable(why) => AppendError::Unavailable(why),
            other => AppendError::Internal(anyhow::Error::new(other)),
        })?;
        if schemas.enforced.is_empty() && schemas.broken.is_empty() {
            return Ok(());
        }
        let mut violations = Vec::new();
        for event in events {
            if violations.len() >= MAX_APPEND_VIOLATIONS {
                violations.truncate(MAX_APPEND_VIOLATIONS);
                break;
            }
            let event_type = event.event_type.as_str();
            if let Some(why) = schemas.broken.get(event_type) {
                return Err(AppendError::Internal(anyhow::anyhow!(
                    "the schema of '{event_type}' cannot be enforced: {why}"
                )));
            }
            let Some(enforced) = schemas.enforced.get(event_type) else {
                continue;
            };
            let payload: Value = serde_json::from_str(event.payload.get()).map_err(|e| {
                AppendError::Internal(anyhow::anyhow!("a validated payload is not JSON: {e}"))
            })?;
            let prefix = if batch {
                format!("events[{}].payload", event.index)
            } else {
                "payload".to_owned()
            };
            violations.extend(issues_as_fields(
                &prefix,
                enforced.compiled.validate(&payload),
            ));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(AppendError::SchemaViolation(violations))
        }
    }
}
