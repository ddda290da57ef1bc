//! Durable consumers (`/api/v1/consumers`) and the followers of the log (WebSocket, SSE).
//!
//! A consumer is a named, server-side cursor of a tenant with its type filters: clients poll
//! the events after the cursor and acknowledge what they processed; a WebSocket connection
//! with `consumer_id` replays from the cursor and then goes live. Consumers live in the state
//! store (namespace [`CONSUMERS_NAMESPACE`], key = the name), so they survive restarts and are
//! shared by every node of a postgres deployment.
//!
//! # Rules
//! - An upsert creates the consumer or changes its filters; the cursor is kept.
//! - `cursor_position` is `null` until the first ack: the consumer starts at the beginning.
//! - Acks are monotonic: an older position is a no-op answering the current cursor; a
//!   position past the tenant's last event is 400. Concurrent acks are resolved with the state
//!   store's compare-and-swap, so the cursor only ever moves forward.
//! - Following ([`Consumers::follow`]) counts against the tenant's `max_subscriptions` quota
//!   while the [`Followed`] lives.

use std::sync::Arc;

use allsource_domain::{
    ConsumerName, EntityId, Event, EventFilter, Permission, Position, TenantId, TypeFilters,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::audit::record_or_log;
use super::params::{Errors, FieldError};
use crate::Caller;
use crate::ports::{
    AuditLog, AuditOutcome, AuditRecord, Clock, EventQuery, EventStore, SortOrder, StateError,
    StateStore, StorageFailure,
};
use crate::quota::{GateError, QuotaExceeded, QuotaGate, QuotaKind};
use crate::subscriptions::{CommitFeed, Subscription};

/// Where consumers are stored.
pub const CONSUMERS_NAMESPACE: &str = "consumers";
/// Events per poll when the client gives no `limit`.
pub const DEFAULT_POLL_LIMIT: usize = 100;
/// The largest `limit` of a poll.
pub const MAX_POLL_LIMIT: usize = 10_000;
/// Consumers one tenant may have.
pub const MAX_CONSUMERS: usize = 10_000;
/// Attempts of a compare-and-swap before a conflict reaches the client (409).
const CAS_ATTEMPTS: usize = 16;

/// Why a consumer call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// 400 with field-level errors.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 403: the caller lacks a permission this call needs (creating a consumer by following).
    #[error("{0}")]
    Forbidden(String),
    /// 409: too many concurrent changes of one consumer.
    #[error("{0}")]
    Conflict(String),
    /// 429.
    #[error(transparent)]
    QuotaExceeded(QuotaExceeded),
    /// 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl StorageFailure for ConsumerError {
    fn unavailable(why: String) -> Self {
        Self::Unavailable(why)
    }
    fn internal(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
    fn version_conflict(_: u64, _: u64) -> Self {
        Self::Conflict("the consumer changed concurrently too often; retry".into())
    }
}

crate::storage_errors!(ConsumerError);

impl From<GateError> for ConsumerError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::QuotaExceeded(q) => Self::QuotaExceeded(q),
            GateError::TenantInactive(why) => Self::Forbidden(why),
            GateError::Unavailable(why) => Self::Unavailable(why),
            GateError::Internal(e) => Self::Internal(e),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ConsumerError {
    ConsumerError::Invalid(vec![FieldError::new(field, message)])
}

/// A consumer as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConsumerRecord {
    consumer_id: String,
    event_type_filters: Vec<String>,
    cursor_position: Option<u64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A consumer as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerView {
    pub consumer_id: ConsumerName,
    pub filters: TypeFilters,
    /// The last acknowledged position; `None` before the first ack.
    pub cursor_position: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ConsumerRecord {
    fn view(&self) -> Result<ConsumerView, ConsumerError> {
        let consumer_id = ConsumerName::parse(&self.consumer_id)
            .map_err(|e| ConsumerError::Internal(anyhow::anyhow!("stored consumer: {}", e.0)))?;
        let filters = TypeFilters::parse(&self.event_type_filters).map_err(|(_, e)| {
            ConsumerError::Internal(anyhow::anyhow!("stored consumer filters: {}", e.0))
        })?;
        Ok(ConsumerView {
            consumer_id,
            filters,
            cursor_position: self.cursor_position,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The body of an upsert, as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct RegisterConsumerInput {
    pub consumer_id: Option<String>,
    pub event_type_filters: Option<Vec<String>>,
}

/// One page of a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PolledEvents {
    pub events: Vec<Arc<Event>>,
    pub has_more: bool,
}

/// What a follower of the log asks for (WebSocket without a consumer, SSE).
#[derive(Debug, Clone, Default)]
pub struct FollowInput {
    /// Type filters (`x`, `x.*`, `*`), combined with OR.
    pub filters: Vec<String>,
    pub entity_id: Option<String>,
    /// Replay after this position; `None` = live only.
    pub after: Option<u64>,
}

/// A subscription that holds one of the tenant's `max_subscriptions` while it lives.
pub struct Followed {
    pub subscription: Subscription,
    _slot: SubscriptionSlot,
    inner: Arc<Inner>,
}

impl Followed {
    /// Starts over with another filter and start (a WebSocket's first `subscribe`), keeping
    /// the quota it holds.
    pub fn restart(&mut self, filter: EventFilter, after: Option<u64>) {
        self.subscription = Subscription::open(
            Arc::clone(&self.inner.store),
            Arc::clone(&self.inner.feed),
            self.subscription.tenant().clone(),
            filter,
            after,
        );
    }
}

impl std::fmt::Debug for Followed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followed")
            .field("subscription", &self.subscription)
            .finish()
    }
}

/// Gives the quota back when the follower goes away.
struct SubscriptionSlot {
    quotas: Arc<dyn QuotaGate>,
    tenant: TenantId,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let quotas = Arc::clone(&self.quotas);
        let tenant = self.tenant.clone();
        // Release is async; the slot may be dropped outside a runtime at shutdown, when
        // in-memory counts no longer matter.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                quotas.release(&tenant, QuotaKind::Subscriptions, 1).await;
            });
        }
    }
}

#[derive(Clone)]
struct Inner {
    store: Arc<dyn EventStore>,
    state: Arc<dyn StateStore>,
    feed: Arc<CommitFeed>,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    quotas: Arc<dyn QuotaGate>,
}

/// The consumer and follower use cases.
#[derive(Clone)]
pub struct Consumers {
    inner: Arc<Inner>,
}

/// What [`Consumers::new`] needs.
pub struct ConsumersDeps {
    pub store: Arc<dyn EventStore>,
    pub state: Arc<dyn StateStore>,
    pub feed: Arc<CommitFeed>,
    pub audit: Arc<dyn AuditLog>,
    pub clock: Arc<dyn Clock>,
    pub quotas: Arc<dyn QuotaGate>,
}

impl Consumers {
    pub fn new(deps: ConsumersDeps) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: deps.store,
                state: deps.state,
                feed: deps.feed,
                audit: deps.audit,
                clock: deps.clock,
                quotas: deps.quotas,
            }),
        }
    }

    /// The commit feed (for stats).
    pub fn feed(&self) -> &Arc<CommitFeed> {
        &self.inner.feed
    }

    /// `POST /api/v1/consumers`: creates the consumer or changes its filters, keeping its
    /// cursor.
    ///
    /// # Errors
    /// `Invalid` for a bad name or filter; `Conflict` after many concurrent changes; storage.
    pub async fn upsert(
        &self,
        caller: &Caller,
        input: RegisterConsumerInput,
    ) -> Result<ConsumerView, ConsumerError> {
        let mut errors = Errors::default();
        let name = match input.consumer_id.as_deref() {
            None => {
                errors.push("consumer_id", "is required");
                None
            }
            Some(raw) => errors.check("consumer_id", ConsumerName::parse(raw)),
        };
        let filters = match TypeFilters::parse(&input.event_type_filters.unwrap_or_default()) {
            Ok(f) => Some(f),
            Err((i, e)) => {
                errors.push(format!("event_type_filters[{i}]"), e.0);
                None
            }
        };
        let (Some(name), Some(filters), true) = (name, filters, errors.0.is_empty()) else {
            return Err(ConsumerError::Invalid(errors.0));
        };
        let (view, created) = self.save_filters(caller.tenant(), &name, &filters).await?;
        if created {
            self.audit(caller, "consumer.create", &name, &filters).await;
        } else {
            self.audit(caller, "consumer.update", &name, &filters).await;
        }
        Ok(view)
    }

    async fn save_filters(
        &self,
        tenant: &TenantId,
        name: &ConsumerName,
        filters: &TypeFilters,
    ) -> Result<(ConsumerView, bool), ConsumerError> {
        for _ in 0..CAS_ATTEMPTS {
            let now = self.inner.clock.now();
            let current = self.read(tenant, name).await?;
            let (record, expected, created) = match current {
                Some((mut record, version)) => {
                    record.event_type_filters = filters.to_strings();
                    record.updated_at = now;
                    (record, version, false)
                }
                None => {
                    self.check_room(tenant).await?;
                    let record = ConsumerRecord {
                        consumer_id: name.as_str().to_owned(),
                        event_type_filters: filters.to_strings(),
                        cursor_position: None,
                        created_at: now,
                        updated_at: now,
                    };
                    (record, 0, true)
                }
            };
            match self.write(tenant, &record, expected).await {
                Ok(()) => return Ok((record.view()?, created)),
                Err(StateError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ConsumerError::version_conflict(0, 0))
    }

    async fn check_room(&self, tenant: &TenantId) -> Result<(), ConsumerError> {
        let existing = self
            .inner
            .state
            .list(tenant, CONSUMERS_NAMESPACE, None, None, MAX_CONSUMERS)
            .await?;
        if existing.len() >= MAX_CONSUMERS {
            return Err(invalid(
                "consumer_id",
                format!("a tenant may have at most {MAX_CONSUMERS} consumers; delete one first"),
            ));
        }
        Ok(())
    }

    /// `GET /api/v1/consumers/{id}`.
    ///
    /// # Errors
    /// `NotFound`, `Invalid` for a malformed name; storage.
    pub async fn get(&self, caller: &Caller, raw_id: &str) -> Result<ConsumerView, ConsumerError> {
        let name = parse_name(raw_id)?;
        match self.read(caller.tenant(), &name).await? {
            Some((record, _)) => record.view(),
            None => Err(not_found(&name)),
        }
    }

    /// `GET /api/v1/consumers`: every consumer of the tenant, by name.
    ///
    /// # Errors
    /// Storage.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<ConsumerView>, ConsumerError> {
        let entries = self
            .inner
            .state
            .list(
                caller.tenant(),
                CONSUMERS_NAMESPACE,
                None,
                None,
                MAX_CONSUMERS,
            )
            .await?;
        let mut views = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            match serde_json::from_value::<ConsumerRecord>(entry.value)
                .map_err(|e| ConsumerError::Internal(e.into()))
                .and_then(|r| r.view())
            {
                Ok(view) => views.push(view),
                // One unreadable record must not hide the others.
                Err(error) => tracing::error!(consumer = %key, %error, "unreadable consumer"),
            }
        }
        Ok(views)
    }

    /// `DELETE /api/v1/consumers/{id}`.
    ///
    /// # Errors
    /// `NotFound`; storage.
    pub async fn delete(&self, caller: &Caller, raw_id: &str) -> Result<(), ConsumerError> {
        let name = parse_name(raw_id)?;
        if !self
            .inner
            .state
            .delete(caller.tenant(), CONSUMERS_NAMESPACE, name.as_str())
            .await?
        {
            return Err(not_found(&name));
        }
        self.audit(caller, "consumer.delete", &name, &TypeFilters::any())
            .await;
        Ok(())
    }

    /// `GET /api/v1/consumers/{id}/events`: the matching events after the cursor, oldest
    /// first. The cursor does not move until an ack.
    ///
    /// # Errors
    /// `Invalid` limit, `NotFound`; storage.
    pub async fn poll(
        &self,
        caller: &Caller,
        raw_id: &str,
        raw_limit: Option<&str>,
    ) -> Result<PolledEvents, ConsumerError> {
        let name = parse_name(raw_id)?;
        let limit = parse_limit(raw_limit)?;
        let Some((record, _)) = self.read(caller.tenant(), &name).await? else {
            return Err(not_found(&name));
        };
        let view = record.view()?;
        let page = self
            .inner
            .store
            .query(
                caller.tenant(),
                EventQuery {
                    type_filters: view.filters,
                    from_position: view.cursor_position.map(Position::new),
                    limit,
                    order: SortOrder::Asc,
                    ..EventQuery::default()
                },
            )
            .await?;
        Ok(PolledEvents {
            events: page.events,
            has_more: page.has_more,
        })
    }

    /// `POST /api/v1/consumers/{id}/ack`: moves the cursor to `position` if that is forward;
    /// answers the cursor as it is afterwards.
    ///
    /// # Errors
    /// `Invalid` when `position` is missing or past the tenant's last event; `NotFound`;
    /// storage.
    pub async fn ack(
        &self,
        caller: &Caller,
        raw_id: &str,
        position: Option<u64>,
    ) -> Result<u64, ConsumerError> {
        let name = parse_name(raw_id)?;
        let Some(position) = position else {
            return Err(invalid("position", "is required"));
        };
        let tenant = caller.tenant();
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut record, version)) = self.read(tenant, &name).await? else {
                return Err(not_found(&name));
            };
            if record.cursor_position.is_some_and(|c| c >= position) {
                return Ok(record.cursor_position.unwrap_or(position));
            }
            let last = self.inner.store.stats(tenant).await?.last_position;
            if position > last {
                return Err(invalid(
                    "position",
                    format!("{position} is past the last event of the log ({last})"),
                ));
            }
            record.cursor_position = Some(position);
            record.updated_at = self.inner.clock.now();
            match self.write(tenant, &record, version).await {
                Ok(()) => return Ok(position),
                Err(StateError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ConsumerError::version_conflict(0, 0))
    }

    /// Follows the log as the consumer: replays after its cursor with its filters, then live.
    /// Creates the consumer (no filters) if missing, which needs `write`.
    ///
    /// # Errors
    /// `Invalid` name, `Forbidden` (creating without `write`), `QuotaExceeded`; storage.
    pub async fn follow_consumer(
        &self,
        caller: &Caller,
        raw_id: &str,
    ) -> Result<(ConsumerView, Followed), ConsumerError> {
        let name = parse_name(raw_id)?;
        let tenant = caller.tenant();
        let view = match self.read(tenant, &name).await? {
            Some((record, _)) => record.view()?,
            None => {
                if !caller.can(Permission::Write) {
                    return Err(ConsumerError::Forbidden(format!(
                        "consumer '{name}' does not exist, and creating it needs the 'write' \
                         permission"
                    )));
                }
                let (view, created) = self
                    .save_filters(tenant, &name, &TypeFilters::any())
                    .await?;
                if created {
                    self.audit(caller, "consumer.create", &name, &view.filters)
                        .await;
                }
                view
            }
        };
        let filter = EventFilter {
            types: view.filters.clone(),
            entity_id: None,
        };
        let followed = self
            .subscribe(tenant, filter, Some(view.cursor_position.unwrap_or(0)))
            .await?;
        Ok((view, followed))
    }

    /// Follows the log with the caller's own filters (WebSocket without a consumer, SSE).
    ///
    /// # Errors
    /// `Invalid` filters or entity; `QuotaExceeded`; storage.
    pub async fn follow(
        &self,
        caller: &Caller,
        input: FollowInput,
    ) -> Result<Followed, ConsumerError> {
        let filter = parse_filter(&input.filters, input.entity_id.as_deref(), "filters")?;
        self.subscribe(caller.tenant(), filter, input.after).await
    }

    async fn subscribe(
        &self,
        tenant: &TenantId,
        filter: EventFilter,
        after: Option<u64>,
    ) -> Result<Followed, ConsumerError> {
        self.inner
            .quotas
            .consume(tenant, QuotaKind::Subscriptions, 1)
            .await?;
        let slot = SubscriptionSlot {
            quotas: Arc::clone(&self.inner.quotas),
            tenant: tenant.clone(),
        };
        Ok(Followed {
            subscription: Subscription::open(
                Arc::clone(&self.inner.store),
                Arc::clone(&self.inner.feed),
                tenant.clone(),
                filter,
                after,
            ),
            _slot: slot,
            inner: Arc::clone(&self.inner),
        })
    }

    async fn read(
        &self,
        tenant: &TenantId,
        name: &ConsumerName,
    ) -> Result<Option<(ConsumerRecord, u64)>, ConsumerError> {
        let Some(entry) = self
            .inner
            .state
            .get(tenant, CONSUMERS_NAMESPACE, name.as_str())
            .await?
        else {
            return Ok(None);
        };
        let record = serde_json::from_value(entry.value).map_err(|e| {
            ConsumerError::Internal(anyhow::Error::new(e).context("stored consumer"))
        })?;
        Ok(Some((record, entry.version)))
    }

    async fn write(
        &self,
        tenant: &TenantId,
        record: &ConsumerRecord,
        expected: u64,
    ) -> Result<(), StateError> {
        let value = serde_json::to_value(record).map_err(|e| StateError::Internal(e.into()))?;
        self.inner
            .state
            .put(
                tenant,
                CONSUMERS_NAMESPACE,
                &record.consumer_id,
                value,
                Some(expected),
            )
            .await
            .map(|_| ())
    }

    async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        name: &ConsumerName,
        filters: &TypeFilters,
    ) {
        let record = AuditRecord::new(
            caller.tenant().as_str(),
            caller.actor(),
            action,
            AuditOutcome::Success,
        )
        .resource(name.as_str())
        .details(serde_json::json!({"event_type_filters": filters.to_strings()}));
        record_or_log(self.inner.audit.as_ref(), record).await;
    }
}

/// Parses follower filters (`field` names the list in errors) and an optional entity.
///
/// # Errors
/// `Invalid` naming the bad entry.
pub fn parse_filter(
    filters: &[String],
    entity_id: Option<&str>,
    field: &str,
) -> Result<EventFilter, ConsumerError> {
    let mut errors = Errors::default();
    let types = match TypeFilters::parse(filters) {
        Ok(t) => Some(t),
        Err((i, e)) => {
            errors.push(format!("{field}[{i}]"), e.0);
            None
        }
    };
    let entity_id = errors.optional("entity_id", entity_id, EntityId::parse);
    match (types, errors.0.is_empty()) {
        (Some(types), true) => Ok(EventFilter { types, entity_id }),
        _ => Err(ConsumerError::Invalid(errors.0)),
    }
}

fn parse_name(raw: &str) -> Result<ConsumerName, ConsumerError> {
    ConsumerName::parse(raw).map_err(|e| invalid("consumer_id", e.0))
}

fn parse_limit(raw: Option<&str>) -> Result<usize, ConsumerError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_POLL_LIMIT);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_POLL_LIMIT).contains(&n) => Ok(n),
        _ => Err(invalid(
            "limit",
            format!("must be a whole number from 1 to {MAX_POLL_LIMIT}"),
        )),
    }
}

fn not_found(name: &ConsumerName) -> ConsumerError {
    ConsumerError::NotFound(format!("no consumer '{name}'"))
}

#[cfg(test)]
mod tests;
