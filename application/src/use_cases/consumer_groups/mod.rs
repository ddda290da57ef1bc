//! Consumer groups: competing consumers with at-least-once delivery, behind
//! `/api/v1/consumer-groups`.
//!
//! A group follows the tenant's events that pass its type filters, after its start position.
//! Members poll for messages; each message is leased to one member until its ack timeout, then
//! delivered again (to any member) unless acked. A message delivered `max_deliveries` times
//! without an ack is parked; parked messages can be listed and replayed.
//!
//! # Durability and several nodes
//! A group's whole state is one value of the `StateStore` (namespace [`NAMESPACE`], key = the
//! group's name, per tenant; layout in [`record`]). Every change (a poll that leases, an ack,
//! a nack, a replay, an update) reads it, changes it and writes it back with the version it
//! read (compare-and-swap), retrying on a conflict. So:
//! - a message is leased only by the write that wins: two members, on one node or on several
//!   nodes sharing a database, never hold it at once;
//! - an ack answered 200 was written before the answer: it survives a crash (kill -9), and the
//!   message is never delivered again;
//! - a lease is only a deadline in the record: after a crash or a restart, every unacked
//!   message is delivered again once its ack timeout has passed.
//!
//! On one node, the changes of one group are also serialized by a local lock, so its members
//! do not retry against each other; conflicts come only from other nodes (or from use-case
//! instances sharing one state store). Deadlines are wall-clock times: nodes sharing a
//! database need clocks that agree well within the groups' ack timeouts.
//!
//! # Long polls
//! A poll that finds nothing waits up to `wait_ms` (at most [`MAX_WAIT_MS`]) and tries again
//! when this node commits an event of the tenant that passes the filters (the
//! [`CommitFeed`]), when this node settles a message of the group, when a lease's deadline
//! passes, and every [`RECHECK`] otherwise (for what other nodes do). It never busy-polls.
//!
//! # Layout
//! - [`record`]: the stored record and its pure transitions (lease, expire, park, ack, nack,
//!   replay).
//! - here: [`ConsumerGroups`], the use cases, with validation and the compare-and-swap loops.

pub mod record;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use allsource_domain::{ConsumerName, Event, EventId, Position, TenantId, TypeFilters};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, broadcast, watch};

use crate::Caller;
use crate::ports::{
    AuditLog, AuditOutcome, AuditRecord, Clock, EventQuery, EventStore, SortOrder, StateError,
    StateStore, StorageFailure,
};
use crate::subscriptions::{CommitFeed, CommitGroup};
use crate::use_cases::FieldError;
use crate::use_cases::audit::record_or_log;
use crate::use_cases::params::Errors;
pub use record::{Counters, GroupConfig, GroupRecord, MAX_MEMBERS, MAX_PARKED, Settled};

/// The state-store namespace of the groups (per tenant; key = group name).
pub const NAMESPACE: &str = "consumer_groups";
/// Groups per tenant.
pub const MAX_GROUPS: usize = 1000;
/// `ack_timeout_ms`: default and bounds.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;
pub const MIN_ACK_TIMEOUT_MS: u64 = 100;
pub const MAX_ACK_TIMEOUT_MS: u64 = 3_600_000;
/// `max_in_flight`: default and bounds.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 100;
pub const MAX_IN_FLIGHT: u64 = 1000;
/// `max_deliveries`: default and bounds.
pub const DEFAULT_MAX_DELIVERIES: u64 = 5;
pub const MAX_DELIVERIES: u64 = 100;
/// A poll's `max`: default and bound.
pub const DEFAULT_POLL_MAX: u64 = 10;
pub const MAX_POLL_MAX: u64 = 1000;
/// A poll's `wait_ms` bound (default 0: answer at once).
pub const MAX_WAIT_MS: u64 = 30_000;
/// Delivery ids per ack or nack.
pub const MAX_SETTLE_IDS: usize = 1000;
/// Parked listing: default and largest page.
pub const DEFAULT_PARKED_LIMIT: usize = 100;
pub const MAX_PARKED_LIMIT: usize = 1000;
/// Lag is counted up to this many events (`lag_capped` beyond).
pub const LAG_CAP: usize = 1000;
/// How often a waiting poll looks again when nothing woke it (changes made on other nodes).
pub const RECHECK: Duration = Duration::from_millis(500);
/// Compare-and-swap attempts of one change before answering 409.
const CAS_ATTEMPTS: u32 = 50;

/// Why a consumer-group use case failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// 400: every invalid field.
    #[error("invalid consumer group request")]
    Invalid(Vec<FieldError>),
    /// 404: no group of that name for the caller's tenant.
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`: the name is taken, the tenant has [`MAX_GROUPS`] groups, or the group
    /// kept changing concurrently (after [`CAS_ATTEMPTS`] attempts).
    #[error("{0}")]
    Conflict(String),
    /// 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl StorageFailure for GroupError {
    fn unavailable(why: String) -> Self {
        Self::Unavailable(why)
    }
    fn internal(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
    // Only reached when a compare-and-swap loop gives up or a create loses the name.
    fn version_conflict(_: u64, _: u64) -> Self {
        Self::Conflict("the consumer group was changed concurrently; retry".into())
    }
}

crate::storage_errors!(GroupError);

impl From<Errors> for GroupError {
    fn from(e: Errors) -> Self {
        Self::Invalid(e.0)
    }
}

fn invalid(field: &str, message: impl Into<String>) -> GroupError {
    GroupError::Invalid(vec![FieldError::new(field, message)])
}

fn not_found(name: &str) -> GroupError {
    GroupError::NotFound(format!("no consumer group named '{name}'"))
}

/// The body of a create or an update, as it came. Absent fields take the defaults (create) or
/// keep their values (update).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInput {
    pub group: Option<String>,
    pub event_type_filters: Option<Vec<String>>,
    pub start_position: Option<u64>,
    pub ack_timeout_ms: Option<u64>,
    pub max_in_flight: Option<u64>,
    pub max_deliveries: Option<u64>,
}

/// The body of a poll, as it came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollInput {
    pub member: Option<String>,
    pub max: Option<u64>,
    pub wait_ms: Option<u64>,
}

/// The parameters of the parked listing, as they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParkedInput {
    pub limit: Option<String>,
    /// Only messages at positions after this one (the previous page's last).
    pub after: Option<String>,
}

/// A group as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub group: String,
    pub config: GroupConfig,
}

/// One delivery of a message to a member.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// What the member acks or nacks; a new one at every delivery.
    pub delivery_id: String,
    /// 1 for the first delivery of the message, 2 for the next, ...
    pub attempt: u32,
    pub event: Arc<Event>,
}

/// A parked message with its event.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedMessage {
    pub position: u64,
    pub attempts: u32,
    pub delivery_id: String,
    pub member: Option<String>,
    pub parked_at: DateTime<Utc>,
    pub event: Arc<Event>,
}

/// A page of parked messages, by position.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedPage {
    pub messages: Vec<ParkedMessage>,
    /// Parked messages of the group, all pages together.
    pub total: usize,
    pub has_more: bool,
}

/// One member as the stats show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStats {
    pub member: String,
    pub last_poll_at: DateTime<Utc>,
    /// Messages it holds now.
    pub in_flight: usize,
}

/// Where a group stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    pub group: String,
    /// The tenant's newest position.
    pub head_position: u64,
    /// Every matching event at or below it has been delivered at least once.
    pub read_position: u64,
    /// Every message at or below it is acked or parked.
    pub committed_position: u64,
    /// Matching events after the read position, not delivered yet (counted up to
    /// [`LAG_CAP`]; `lag_capped` beyond).
    pub lag: u64,
    pub lag_capped: bool,
    /// Messages held by members now.
    pub in_flight: usize,
    /// Messages waiting to be delivered again (ack timeout passed, nacked, replayed).
    pub waiting: usize,
    pub parked: usize,
    /// The parked list is full: nothing new is taken from the log until some are replayed.
    pub parked_full: bool,
    pub counters: Counters,
    /// Members by name.
    pub members: Vec<MemberStats>,
}

/// What this node keeps about one group: the lock that serializes its changes here, and the
/// signal that wakes its waiting polls.
#[derive(Default)]
struct Local {
    lock: tokio::sync::Mutex<()>,
    changed: Notify,
}

struct Inner {
    store: Arc<dyn EventStore>,
    feed: Arc<CommitFeed>,
    state: Arc<dyn StateStore>,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    local: Mutex<HashMap<(TenantId, String), Arc<Local>>>,
    stopping: watch::Sender<bool>,
}

/// The consumer-group use cases (cheap to clone).
#[derive(Clone)]
pub struct ConsumerGroups {
    inner: Arc<Inner>,
    recheck: Duration,
}

/// What one poll attempt found.
struct Attempt {
    messages: Vec<Message>,
    filters: TypeFilters,
    next_deadline: Option<i64>,
}

/// A stored group, or the tombstone a deletion leaves (so that the key's version keeps
/// growing and a write prepared against the deleted group can never land on a new group of
/// the same name).
enum Stored {
    Live(Box<GroupRecord>),
    Deleted,
}

fn tombstone(now: DateTime<Utc>) -> Value {
    json!({"deleted_at": now})
}

impl ConsumerGroups {
    pub fn new(
        store: Arc<dyn EventStore>,
        feed: Arc<CommitFeed>,
        state: Arc<dyn StateStore>,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                feed,
                state,
                audit,
                clock,
                local: Mutex::new(HashMap::new()),
                stopping: watch::channel(false).0,
            }),
            recheck: RECHECK,
        }
    }

    /// Looks again every `recheck` while a poll waits (tests shorten it).
    #[must_use]
    pub fn with_recheck(mut self, recheck: Duration) -> Self {
        self.recheck = recheck;
        self
    }

    /// Ends every waiting poll now, and makes later polls answer at once (shutdown: a long
    /// poll must not hold the server's graceful stop for up to [`MAX_WAIT_MS`]).
    pub fn stop_waiting(&self) {
        self.inner.stopping.send_replace(true);
    }

    fn now(&self) -> (DateTime<Utc>, i64) {
        let now = self.inner.clock.now();
        (now, now.timestamp_millis())
    }

    fn local(&self, tenant: &TenantId, name: &str) -> Arc<Local> {
        let mut map = self.inner.local.lock();
        Arc::clone(
            map.entry((tenant.clone(), name.to_owned()))
                .or_insert_with(|| Arc::new(Local::default())),
        )
    }

    fn changed(&self, tenant: &TenantId, name: &str) {
        let local = self
            .inner
            .local
            .lock()
            .get(&(tenant.clone(), name.to_owned()))
            .cloned();
        if let Some(local) = local {
            local.changed.notify_waiters();
        }
    }

    async fn load(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<(Stored, u64)>, GroupError> {
        let Some(entry) = self.inner.state.get(tenant, NAMESPACE, name).await? else {
            return Ok(None);
        };
        if entry.value.get("deleted_at").is_some() {
            return Ok(Some((Stored::Deleted, entry.version)));
        }
        let record: GroupRecord = serde_json::from_value(entry.value).map_err(|e| {
            GroupError::Internal(anyhow::anyhow!("bad consumer group record '{name}': {e}"))
        })?;
        Ok(Some((Stored::Live(Box::new(record)), entry.version)))
    }

    async fn load_live(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<(GroupRecord, u64), GroupError> {
        match self.load(tenant, name).await? {
            Some((Stored::Live(record), version)) => Ok((*record, version)),
            _ => Err(not_found(name)),
        }
    }

    async fn write(
        &self,
        tenant: &TenantId,
        name: &str,
        record: &GroupRecord,
        expected: u64,
    ) -> Result<bool, GroupError> {
        let value = serde_json::to_value(record)
            .map_err(|e| GroupError::Internal(anyhow::anyhow!("consumer group record: {e}")))?;
        match self
            .inner
            .state
            .put(tenant, NAMESPACE, name, value, Some(expected))
            .await
        {
            Ok(_) => Ok(true),
            Err(StateError::VersionConflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the group, applies `change` and writes it back with the version read, retrying
    /// on conflicts; writes nothing when `change` leaves the record as it was.
    async fn mutate<T>(
        &self,
        tenant: &TenantId,
        name: &str,
        change: impl FnMut(&mut GroupRecord, DateTime<Utc>, i64) -> Result<T, GroupError>,
    ) -> Result<(T, GroupRecord), GroupError> {
        let local = self.local(tenant, name);
        let outcome = {
            let _serialized = local.lock.lock().await;
            self.mutate_locked(tenant, name, change).await
        };
        self.forget_if_missing(tenant, name, local, &outcome);
        outcome
    }

    /// Drops what this node keeps about a group that does not exist (so that calls naming
    /// groups that were never created leave nothing behind), unless someone else uses it.
    fn forget_if_missing<T>(
        &self,
        tenant: &TenantId,
        name: &str,
        local: Arc<Local>,
        outcome: &Result<T, GroupError>,
    ) {
        if matches!(outcome, Err(GroupError::NotFound(_))) {
            let mut map = self.inner.local.lock();
            // The map's reference and `local`: nobody else holds it.
            if Arc::strong_count(&local) <= 2 {
                map.remove(&(tenant.clone(), name.to_owned()));
            }
        }
    }

    async fn mutate_locked<T>(
        &self,
        tenant: &TenantId,
        name: &str,
        mut change: impl FnMut(&mut GroupRecord, DateTime<Utc>, i64) -> Result<T, GroupError>,
    ) -> Result<(T, GroupRecord), GroupError> {
        for attempt in 0..CAS_ATTEMPTS {
            let (mut record, version) = self.load_live(tenant, name).await?;
            let before = record.clone();
            let (now, now_ms) = self.now();
            let outcome = change(&mut record, now, now_ms)?;
            record.normalize();
            if record == before || self.write(tenant, name, &record, version).await? {
                return Ok((outcome, record));
            }
            backoff(attempt).await;
        }
        Err(GroupError::version_conflict(0, 0))
    }

    async fn audit(&self, caller: &Caller, action: &str, name: &str, details: Value) {
        let record = AuditRecord::new(
            caller.tenant().as_str(),
            caller.actor(),
            action,
            AuditOutcome::Success,
        )
        .resource(name)
        .details(details);
        record_or_log(self.inner.audit.as_ref(), record).await;
    }

    /// The tenant's newest position (0 without events).
    async fn tenant_head(&self, tenant: &TenantId) -> Result<u64, GroupError> {
        let page = self
            .inner
            .store
            .query(
                tenant,
                EventQuery {
                    limit: 1,
                    order: SortOrder::Desc,
                    ..EventQuery::default()
                },
            )
            .await?;
        Ok(page.events.first().map_or(0, |e| e.position.get()))
    }

    /// Creates a group for the caller's tenant (`POST /api/v1/consumer-groups`).
    ///
    /// # Errors
    /// `Invalid` (every bad field), `Conflict` (name taken, or [`MAX_GROUPS`] reached),
    /// storage failures.
    pub async fn create(
        &self,
        caller: &Caller,
        input: GroupInput,
    ) -> Result<GroupView, GroupError> {
        let mut errors = Errors::default();
        let name = match input.group.as_deref() {
            None => {
                errors.push("group", "is required");
                None
            }
            Some(raw) => errors.check("group", ConsumerName::parse(raw)),
        };
        let (now, _) = self.now();
        let config = apply(&mut errors, defaults(now), &input);
        let (Some(name), true) = (name, errors.is_empty()) else {
            return Err(errors.into());
        };
        let tenant = caller.tenant();
        let head = self.tenant_head(tenant).await?.max(self.inner.feed.head());
        if config.start_position > head {
            return Err(invalid(
                "start_position",
                format!("is past the end of the log (last position {head})"),
            ));
        }
        let name = name.as_str();
        let expected = match self.load(tenant, name).await? {
            Some((Stored::Live(_), _)) => return Err(taken(name)),
            Some((Stored::Deleted, version)) => version,
            None => 0,
        };
        if self.count(tenant).await? >= MAX_GROUPS {
            return Err(GroupError::Conflict(format!(
                "a tenant may have at most {MAX_GROUPS} consumer groups"
            )));
        }
        let record = GroupRecord::new(config.clone());
        if !self.write(tenant, name, &record, expected).await? {
            return Err(taken(name));
        }
        self.audit(caller, "consumer_group.create", name, config_json(&config))
            .await;
        Ok(GroupView {
            group: name.to_owned(),
            config,
        })
    }

    async fn count(&self, tenant: &TenantId) -> Result<usize, GroupError> {
        Ok(self.entries(tenant).await?.len())
    }

    /// Every live group of the tenant, by name.
    async fn entries(&self, tenant: &TenantId) -> Result<Vec<(String, GroupRecord)>, GroupError> {
        let mut groups = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .inner
                .state
                .list(tenant, NAMESPACE, None, after.clone(), 200)
                .await?;
            let full = page.len() == 200;
            for (key, entry) in page {
                after = Some(key.clone());
                if entry.value.get("deleted_at").is_some() {
                    continue;
                }
                let record: GroupRecord = serde_json::from_value(entry.value).map_err(|e| {
                    GroupError::Internal(anyhow::anyhow!("bad consumer group record '{key}': {e}"))
                })?;
                groups.push((key, record));
            }
            if !full {
                return Ok(groups);
            }
        }
    }

    /// The committed position of each live group of `tenant` (for the lag metrics: cheap,
    /// no event is read).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn committed_positions(&self, tenant: &TenantId) -> Result<Vec<u64>, GroupError> {
        Ok(self
            .entries(tenant)
            .await?
            .into_iter()
            .map(|(_, record)| record.committed)
            .collect())
    }

    /// The caller's tenant's groups, by name.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<GroupView>, GroupError> {
        Ok(self
            .entries(caller.tenant())
            .await?
            .into_iter()
            .map(|(group, record)| GroupView {
                group,
                config: record.config,
            })
            .collect())
    }

    /// One group (`GET /api/v1/consumer-groups/{group}`).
    ///
    /// # Errors
    /// `Invalid` name, `NotFound`, storage failures.
    pub async fn get(&self, caller: &Caller, name: &str) -> Result<GroupView, GroupError> {
        let name = parse_name(name)?;
        let (record, _) = self.load_live(caller.tenant(), name.as_str()).await?;
        Ok(GroupView {
            group: name.as_str().to_owned(),
            config: record.config,
        })
    }

    /// Changes a group's settings (`PUT /api/v1/consumer-groups/{group}`): the fields sent
    /// replace their values, the others are kept. Messages in flight keep their deadlines;
    /// new filters apply to the events after the read position; a lower `max_deliveries`
    /// parks the waiting messages that have had that many attempts.
    ///
    /// # Errors
    /// `Invalid` (a bad field, `group` other than the path's, a different `start_position`),
    /// `NotFound`, `Conflict` (kept changing), storage failures.
    pub async fn update(
        &self,
        caller: &Caller,
        name: &str,
        input: GroupInput,
    ) -> Result<GroupView, GroupError> {
        let name = parse_name(name)?;
        let name = name.as_str();
        if input.group.as_deref().is_some_and(|g| g != name) {
            return Err(invalid("group", "must be the name in the path"));
        }
        let tenant = caller.tenant();
        // Checked against the defaults first, so a bad body is a 400 before anything is read.
        let mut errors = Errors::default();
        let (now, _) = self.now();
        let _ = apply(&mut errors, defaults(now), &input);
        if !errors.is_empty() {
            return Err(errors.into());
        }
        let (config, _) = self
            .mutate(tenant, name, |record, now, _| {
                if input
                    .start_position
                    .is_some_and(|p| p != record.config.start_position)
                {
                    return Err(invalid(
                        "start_position",
                        "cannot be changed; delete the group and create it again",
                    ));
                }
                let mut errors = Errors::default();
                let mut config = apply(&mut errors, record.config.clone(), &input);
                if !errors.is_empty() {
                    return Err(errors.into());
                }
                if config != record.config {
                    config.updated_at = now;
                    record.config = config;
                    record.park_exhausted(now);
                }
                Ok(record.config.clone())
            })
            .await?;
        self.changed(tenant, name);
        self.audit(caller, "consumer_group.update", name, config_json(&config))
            .await;
        Ok(GroupView {
            group: name.to_owned(),
            config,
        })
    }

    /// Deletes a group with its leases and parked messages (`DELETE .../{group}`). Waiting
    /// polls of it answer 404.
    ///
    /// # Errors
    /// `Invalid` name, `NotFound`, storage failures.
    pub async fn delete(&self, caller: &Caller, name: &str) -> Result<(), GroupError> {
        let name = parse_name(name)?;
        let name = name.as_str();
        let tenant = caller.tenant();
        let local = self.local(tenant, name);
        let outcome = {
            let _serialized = local.lock.lock().await;
            self.write_tombstone(tenant, name).await
        };
        if outcome.is_err() {
            self.forget_if_missing(tenant, name, local, &outcome);
            return outcome;
        }
        local.changed.notify_waiters();
        self.inner
            .local
            .lock()
            .remove(&(tenant.clone(), name.to_owned()));
        self.audit(caller, "consumer_group.delete", name, Value::Null)
            .await;
        Ok(())
    }

    /// Replaces the live group by a tombstone, with compare-and-swap.
    async fn write_tombstone(&self, tenant: &TenantId, name: &str) -> Result<(), GroupError> {
        for attempt in 0..CAS_ATTEMPTS {
            let (_, version) = self.load_live(tenant, name).await?;
            let (now, _) = self.now();
            match self
                .inner
                .state
                .put(tenant, NAMESPACE, name, tombstone(now), Some(version))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StateError::VersionConflict { .. }) => backoff(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(GroupError::version_conflict(0, 0))
    }

    /// Leases up to `max` messages to `member` (`POST .../{group}/poll`): messages waiting to
    /// be delivered again first, then new events after the read position; waits up to
    /// `wait_ms` for some when there are none.
    ///
    /// # Errors
    /// `Invalid` (member, max, wait_ms), `NotFound`, `Conflict` (the group kept changing),
    /// storage failures.
    pub async fn poll(
        &self,
        caller: &Caller,
        name: &str,
        input: PollInput,
    ) -> Result<Vec<Message>, GroupError> {
        let mut errors = Errors::default();
        let member = match input.member.as_deref() {
            None => {
                errors.push("member", "is required");
                None
            }
            Some(raw) => errors.check("member", ConsumerName::parse(raw)),
        };
        let max = bounded(
            &mut errors,
            "max",
            input.max,
            DEFAULT_POLL_MAX,
            1,
            MAX_POLL_MAX,
        );
        let wait = bounded(&mut errors, "wait_ms", input.wait_ms, 0, 0, MAX_WAIT_MS);
        let (name, member) = match (parse_name(name), member) {
            (Ok(name), Some(member)) if errors.is_empty() => (name, member),
            (name, _) => {
                let mut fields = match name {
                    Err(GroupError::Invalid(fields)) => fields,
                    _ => Vec::new(),
                };
                fields.extend(errors.0);
                return Err(GroupError::Invalid(fields));
            }
        };
        let name = name.as_str();
        let tenant = caller.tenant();
        let local = self.local(tenant, name);
        let outcome = self
            .wait_for_messages(tenant, name, &local, member.as_str(), max, wait)
            .await;
        self.forget_if_missing(tenant, name, local, &outcome);
        outcome
    }

    async fn wait_for_messages(
        &self,
        tenant: &TenantId,
        name: &str,
        local: &Local,
        member: &str,
        max: u64,
        wait: u64,
    ) -> Result<Vec<Message>, GroupError> {
        let until = tokio::time::Instant::now() + Duration::from_millis(wait);
        // Subscribed before the first look, so no commit between a look and the wait is missed.
        let mut feed = self.inner.feed.subscribe();
        let mut stopping = self.inner.stopping.subscribe();
        loop {
            let mut notified = pin!(local.changed.notified());
            notified.as_mut().enable();
            let attempt = self
                .poll_once(tenant, name, local, member, max as usize)
                .await?;
            let now = tokio::time::Instant::now();
            if !attempt.messages.is_empty() || now >= until || *stopping.borrow() {
                return Ok(attempt.messages);
            }
            let mut wake = until.min(now + self.recheck);
            if let Some(deadline) = attempt.next_deadline {
                let (_, now_ms) = self.now();
                let ms = u64::try_from(deadline.saturating_sub(now_ms)).unwrap_or(0);
                wake = wake.min(now + Duration::from_millis(ms));
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = notified => {}
                () = commit_of(&mut feed, tenant, &attempt.filters) => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        }
    }

    async fn poll_once(
        &self,
        tenant: &TenantId,
        name: &str,
        local: &Local,
        member: &str,
        max: usize,
    ) -> Result<Attempt, GroupError> {
        let _serialized = local.lock.lock().await;
        for attempt in 0..CAS_ATTEMPTS {
            let (mut record, version) = self.load_live(tenant, name).await?;
            let before = record.clone();
            let (now, now_ms) = self.now();
            record.settle_time(now_ms, now);
            let filters = TypeFilters::parse(&record.config.filters).map_err(|(_, e)| {
                GroupError::Internal(anyhow::anyhow!("stored filters of '{name}': {e}"))
            })?;
            let mut messages = Vec::new();
            let mut gone = Vec::new();
            for index in record.redeliverable(max) {
                let event = match EventId::parse(&record.leases[index].event_id) {
                    Ok(id) => self.inner.store.get_event(tenant, id).await?,
                    Err(_) => None,
                };
                match event {
                    Some(event) => {
                        let delivery_id = new_delivery_id();
                        let attempt = record.redeliver(index, member, now_ms, delivery_id.clone());
                        messages.push(Message {
                            delivery_id,
                            attempt,
                            event,
                        });
                    }
                    None => gone.push(index),
                }
            }
            for index in gone.into_iter().rev() {
                tracing::warn!(
                    group = name,
                    position = record.leases[index].position,
                    "a leased event cannot be read any more; dropping it from the group"
                );
                record.forget(index);
            }
            let room = record.room_for_new(max - messages.len());
            if room > 0 {
                let page = self
                    .inner
                    .store
                    .query(
                        tenant,
                        EventQuery {
                            type_filters: filters.clone(),
                            from_position: Some(Position::new(record.read)),
                            limit: room,
                            order: SortOrder::Asc,
                            ..EventQuery::default()
                        },
                    )
                    .await?;
                for event in page.events {
                    if event.position.get() <= record.read {
                        continue;
                    }
                    let delivery_id = new_delivery_id();
                    record.deliver_new(
                        event.position.get(),
                        event.id.as_uuid().to_string(),
                        member,
                        now_ms,
                        delivery_id.clone(),
                    );
                    messages.push(Message {
                        delivery_id,
                        attempt: 1,
                        event,
                    });
                }
            }
            record.touch_member(member, now, !messages.is_empty());
            record.normalize();
            if record == before || self.write(tenant, name, &record, version).await? {
                messages.sort_by_key(|m| m.event.position);
                return Ok(Attempt {
                    messages,
                    filters,
                    next_deadline: record.next_deadline(),
                });
            }
            backoff(attempt).await;
        }
        Err(GroupError::version_conflict(0, 0))
    }

    /// Acks deliveries (`POST .../{group}/ack`): each id of a message's latest delivery settles
    /// it for good, also after its ack timeout as long as it has not been delivered again, and
    /// also once it is parked. Other ids are ignored and listed.
    ///
    /// # Errors
    /// `Invalid` ids, `NotFound`, `Conflict` (kept changing), storage failures.
    pub async fn ack(
        &self,
        caller: &Caller,
        name: &str,
        delivery_ids: Option<Vec<String>>,
    ) -> Result<Settled, GroupError> {
        let (name, ids) = settle_input(name, delivery_ids)?;
        let tenant = caller.tenant();
        let (settled, _) = self
            .mutate(tenant, name.as_str(), |record, now, now_ms| {
                record.settle_time(now_ms, now);
                Ok(record.ack(&ids))
            })
            .await?;
        self.changed(tenant, name.as_str());
        Ok(settled)
    }

    /// Nacks deliveries (`POST .../{group}/nack`): each id of a message's latest delivery makes
    /// it available to any member at once (its next delivery counts an attempt; after
    /// `max_deliveries` attempts it is parked instead). Other ids are ignored and listed.
    ///
    /// # Errors
    /// `Invalid` ids, `NotFound`, `Conflict` (kept changing), storage failures.
    pub async fn nack(
        &self,
        caller: &Caller,
        name: &str,
        delivery_ids: Option<Vec<String>>,
    ) -> Result<Settled, GroupError> {
        let (name, ids) = settle_input(name, delivery_ids)?;
        let tenant = caller.tenant();
        let (settled, _) = self
            .mutate(tenant, name.as_str(), |record, now, now_ms| {
                record.settle_time(now_ms, now);
                Ok(record.nack(&ids, now))
            })
            .await?;
        self.changed(tenant, name.as_str());
        Ok(settled)
    }

    /// A page of the parked messages with their events (`GET .../{group}/parked?limit&after`).
    ///
    /// # Errors
    /// `Invalid` name or parameters, `NotFound`, storage failures.
    pub async fn parked(
        &self,
        caller: &Caller,
        name: &str,
        input: ParkedInput,
    ) -> Result<ParkedPage, GroupError> {
        let mut errors = Errors::default();
        let limit = match input.limit.as_deref() {
            None => DEFAULT_PARKED_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_PARKED_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(
                        "limit",
                        format!("must be an integer from 1 to {MAX_PARKED_LIMIT}"),
                    );
                    0
                }
            },
        };
        let after = match input.after.as_deref() {
            None => 0,
            Some(raw) => raw.parse::<u64>().unwrap_or_else(|_| {
                errors.push("after", "must be a position (an unsigned integer)");
                0
            }),
        };
        let name = parse_name(name)?;
        if !errors.is_empty() {
            return Err(errors.into());
        }
        let tenant = caller.tenant();
        let (mut record, _) = self.load_live(tenant, name.as_str()).await?;
        let (now, now_ms) = self.now();
        record.settle_time(now_ms, now);
        let total = record.parked.len();
        let mut page: Vec<_> = record
            .parked
            .into_iter()
            .filter(|p| p.position > after)
            .take(limit + 1)
            .collect();
        let has_more = page.len() > limit;
        page.truncate(limit);
        let mut messages = Vec::with_capacity(page.len());
        for p in page {
            let Ok(id) = EventId::parse(&p.event_id) else {
                continue;
            };
            if let Some(event) = self.inner.store.get_event(tenant, id).await? {
                messages.push(ParkedMessage {
                    position: p.position,
                    attempts: p.attempts,
                    delivery_id: p.delivery_id,
                    member: p.member,
                    parked_at: p.parked_at,
                    event,
                });
            }
        }
        Ok(ParkedPage {
            messages,
            total,
            has_more,
        })
    }

    /// Puts every parked message back to be delivered again, each with `max_deliveries` fresh
    /// attempts (`POST .../{group}/parked/replay`); returns how many.
    ///
    /// # Errors
    /// `Invalid` name, `NotFound`, `Conflict` (kept changing), storage failures.
    pub async fn replay_parked(&self, caller: &Caller, name: &str) -> Result<usize, GroupError> {
        let name = parse_name(name)?;
        let tenant = caller.tenant();
        let (replayed, _) = self
            .mutate(tenant, name.as_str(), |record, now, now_ms| {
                record.settle_time(now_ms, now);
                Ok(record.replay_parked())
            })
            .await?;
        self.changed(tenant, name.as_str());
        Ok(replayed)
    }

    /// Where the group stands (`GET .../{group}/stats`).
    ///
    /// # Errors
    /// `Invalid` name, `NotFound`, storage failures.
    pub async fn stats(&self, caller: &Caller, name: &str) -> Result<GroupStats, GroupError> {
        let name = parse_name(name)?;
        let tenant = caller.tenant();
        let (mut record, _) = self.load_live(tenant, name.as_str()).await?;
        let (now, now_ms) = self.now();
        record.settle_time(now_ms, now);
        record.normalize();
        let filters = TypeFilters::parse(&record.config.filters).map_err(|(_, e)| {
            GroupError::Internal(anyhow::anyhow!("stored filters of '{name}': {e}"))
        })?;
        let behind = self
            .inner
            .store
            .query(
                tenant,
                EventQuery {
                    type_filters: filters,
                    from_position: Some(Position::new(record.read)),
                    limit: LAG_CAP,
                    order: SortOrder::Asc,
                    ..EventQuery::default()
                },
            )
            .await?;
        let head_position = self.tenant_head(tenant).await?;
        let members = record
            .members
            .iter()
            .map(|(member, last)| MemberStats {
                member: member.clone(),
                last_poll_at: *last,
                in_flight: record
                    .leases
                    .iter()
                    .filter(|l| l.held && l.member.as_deref() == Some(member))
                    .count(),
            })
            .collect();
        Ok(GroupStats {
            group: name.as_str().to_owned(),
            head_position,
            read_position: record.read,
            committed_position: record.committed,
            lag: behind.events.len() as u64,
            lag_capped: behind.has_more,
            in_flight: record.in_flight(),
            waiting: record.waiting(),
            parked: record.parked.len(),
            parked_full: record.parked.len() >= MAX_PARKED,
            counters: record.counters,
            members,
        })
    }
}

/// The settings of a group created now with nothing but its name.
fn defaults(now: DateTime<Utc>) -> GroupConfig {
    GroupConfig {
        filters: Vec::new(),
        start_position: 0,
        ack_timeout_ms: DEFAULT_ACK_TIMEOUT_MS,
        max_in_flight: DEFAULT_MAX_IN_FLIGHT as u32,
        max_deliveries: DEFAULT_MAX_DELIVERIES as u32,
        created_at: now,
        updated_at: now,
    }
}

fn taken(name: &str) -> GroupError {
    GroupError::Conflict(format!("a consumer group named '{name}' exists"))
}

fn parse_name(raw: &str) -> Result<ConsumerName, GroupError> {
    ConsumerName::parse(raw).map_err(|e| invalid("group", e.0))
}

/// The group name and the distinct delivery ids of an ack or nack.
fn settle_input(
    name: &str,
    delivery_ids: Option<Vec<String>>,
) -> Result<(ConsumerName, Vec<String>), GroupError> {
    let name = parse_name(name)?;
    let Some(raw) = delivery_ids else {
        return Err(invalid("delivery_ids", "is required"));
    };
    if raw.is_empty() || raw.len() > MAX_SETTLE_IDS {
        return Err(invalid(
            "delivery_ids",
            format!("must hold 1 to {MAX_SETTLE_IDS} delivery ids"),
        ));
    }
    let mut errors = Errors::default();
    let mut ids: Vec<String> = Vec::with_capacity(raw.len());
    for (i, id) in raw.into_iter().enumerate() {
        match uuid::Uuid::parse_str(&id) {
            Ok(uuid) => {
                let id = uuid.to_string();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Err(_) => errors.push(
                format!("delivery_ids[{i}]"),
                "must be a delivery id (a UUID)",
            ),
        }
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    Ok((name, ids))
}

/// `value` within `min..=max`, `default` when absent; else an error naming `field`.
fn bounded(
    errors: &mut Errors,
    field: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> u64 {
    match value {
        None => default,
        Some(v) if (min..=max).contains(&v) => v,
        Some(_) => {
            errors.push(field, format!("must be an integer from {min} to {max}"));
            default
        }
    }
}

/// `base` with the fields of `input` that are present, checked (errors collected).
fn apply(errors: &mut Errors, base: GroupConfig, input: &GroupInput) -> GroupConfig {
    let filters = match &input.event_type_filters {
        None => base.filters,
        Some(raw) => match TypeFilters::parse(raw) {
            Ok(filters) => filters.to_strings(),
            Err((i, e)) => {
                let field = if i >= TypeFilters::MAX {
                    "event_type_filters".to_owned()
                } else {
                    format!("event_type_filters[{i}]")
                };
                errors.push(field, e.0);
                base.filters
            }
        },
    };
    let in_flight = u64::from(base.max_in_flight);
    let deliveries = u64::from(base.max_deliveries);
    GroupConfig {
        filters,
        start_position: input.start_position.unwrap_or(base.start_position),
        ack_timeout_ms: bounded(
            errors,
            "ack_timeout_ms",
            input.ack_timeout_ms,
            base.ack_timeout_ms,
            MIN_ACK_TIMEOUT_MS,
            MAX_ACK_TIMEOUT_MS,
        ),
        max_in_flight: bounded(
            errors,
            "max_in_flight",
            input.max_in_flight,
            in_flight,
            1,
            MAX_IN_FLIGHT,
        ) as u32,
        max_deliveries: bounded(
            errors,
            "max_deliveries",
            input.max_deliveries,
            deliveries,
            1,
            MAX_DELIVERIES,
        ) as u32,
        created_at: base.created_at,
        updated_at: base.updated_at,
    }
}

fn config_json(config: &GroupConfig) -> Value {
    json!({
        "event_type_filters": config.filters,
        "start_position": config.start_position,
        "ack_timeout_ms": config.ack_timeout_ms,
        "max_in_flight": config.max_in_flight,
        "max_deliveries": config.max_deliveries,
    })
}

fn new_delivery_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A short random pause before the next compare-and-swap attempt (growing, at most ~50 ms),
/// so racing writers spread out.
async fn backoff(attempt: u32) {
    let ceiling = 1u128 << attempt.min(5);
    let jitter = uuid::Uuid::new_v4().as_u128() % (ceiling + 1);
    let ms = u64::try_from(jitter).unwrap_or(1) + u64::from(attempt.min(20));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Waits for a commit of `tenant` with an event that passes `filters`, or for a lag of the
/// receiver (something was missed: look again). Never returns once the feed is closed.
async fn commit_of(
    feed: &mut broadcast::Receiver<Arc<CommitGroup>>,
    tenant: &TenantId,
    filters: &TypeFilters,
) {
    loop {
        match feed.recv().await {
            Ok(group) => {
                if group
                    .events
                    .iter()
                    .any(|e| e.tenant_id == *tenant && filters.matches(e.event_type.as_str()))
                {
                    return;
                }
            }
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
