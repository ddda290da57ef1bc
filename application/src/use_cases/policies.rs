//! The policy engine's use cases: managing policies (kept in the [`StateStore`]), the dry-run
//! evaluation, and the enforcement the HTTP layer asks for on every request.
//!
//! # Rules
//! - Policies are global: they apply to every tenant. Only operators (admins of the `default`
//!   tenant) may create, change or delete them; admins of other tenants may read them and
//!   evaluate them (to know what applies to them).
//! - The five default policies ([`allsource_domain::policy::defaults`]) are seeded at start when
//!   absent. They can be changed and disabled, never deleted (409), so "what the installation
//!   started with" is always visible.
//! - Enforcement: a deny refuses the request; a rate limit counts requests per (policy, tenant,
//!   actor) in fixed one-minute windows and refuses those over `per_minute`; warnings let the
//!   request through. Denials, rate-limit refusals and warnings are recorded in the audit log
//!   as `policy.decision`; plain allows are not (they are every request).
//! - The policy set is read from storage at most every [`REFRESH_SECONDS`] seconds (and at once
//!   after a change made through this node), so enforcement costs no storage round trip per
//!   request, and a change made on another node of a shared database applies within that time.
//!   When storage cannot answer, enforcement fails closed (503).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use allsource_domain::TenantId;
use allsource_domain::policy::{
    self, Condition, Decision, Effect, Matched, Operator, Policy, PolicyContext,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::Caller;
use crate::ports::{AuditLog, AuditOutcome, AuditRecord, Clock, StateError, StateStore};

use super::FieldError;
use super::audit::record_or_log;

/// Where policies are kept: this namespace of the `default` tenant, keyed by policy id.
pub const POLICY_NAMESPACE: &str = "policies";
/// Most policies an installation may have.
pub const MAX_POLICIES: usize = 1000;
/// Seconds a node keeps using the policy set it read.
pub const REFRESH_SECONDS: i64 = 5;

/// A policy as a client sends it (create, replace).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInput {
    pub name: String,
    pub description: Option<String>,
    pub priority: Option<i64>,
    pub enabled: Option<bool>,
    /// `allow`, `deny`, `warn` or `rate_limit`.
    pub action: String,
    /// With `rate_limit`: requests per minute and caller.
    pub per_minute: Option<u64>,
    pub conditions: Vec<ConditionInput>,
}

/// A condition as a client sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionInput {
    pub attribute: String,
    pub operator: String,
    pub value: Value,
}

/// Why a policy use case failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// 400: invalid policy or context.
    #[error("invalid policy")]
    Invalid(Vec<FieldError>),
    /// 403: the caller may not change policies.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no policy with this id.
    #[error("no policy with id '{0}'")]
    NotFound(String),
    /// 409: a default policy cannot be deleted; a concurrent change; too many policies.
    #[error("{0}")]
    Conflict(String),
    /// 503: storage cannot answer now.
    #[error("policy storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StateError> for PolicyError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::VersionConflict { .. } => {
                Self::Conflict("the policy was changed concurrently; read it and retry".into())
            }
            StateError::Unavailable(why) => Self::Unavailable(why),
            StateError::Internal(e) => Self::Internal(e),
        }
    }
}

/// What enforcement decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// Go on; the warnings (possibly none) go on the response.
    Allowed { warnings: Vec<Matched> },
    /// Refused by a deny policy (403).
    Denied { policy: Matched },
    /// Over the rate of a rate-limit policy (429), until the window ends.
    RateLimited {
        policy: Matched,
        retry_after_secs: u64,
    },
}

/// The policy engine (cheap to clone).
#[derive(Clone)]
pub struct Policies {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<dyn StateStore>,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    /// `policies.enabled`; changed by a configuration reload.
    enabled: std::sync::atomic::AtomicBool,
    cache: Mutex<Option<Cached>>,
    /// Bumped by every change through this node, so a read that raced with a change does not
    /// put the old set back into the cache.
    generation: AtomicU64,
    windows: Mutex<HashMap<WindowKey, Window>>,
}

/// The policy set and when it was read.
type Cached = (DateTime<Utc>, Arc<Vec<Policy>>);
/// (policy id, tenant, actor).
type WindowKey = (String, String, String);
/// (minute since the epoch, requests counted in it).
type Window = (i64, u64);

fn tenant() -> TenantId {
    TenantId::default_tenant()
}

impl Policies {
    /// `enabled = false` (`policies.enabled`) turns enforcement off; management still works.
    pub fn new(
        state: Arc<dyn StateStore>,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
        enabled: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                state,
                audit,
                clock,
                enabled: std::sync::atomic::AtomicBool::new(enabled),
                cache: Mutex::new(None),
                generation: AtomicU64::new(0),
                windows: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether enforcement is on.
    pub fn enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Acquire)
    }

    /// Turns enforcement on or off (configuration reload); the next request sees it.
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Release);
    }

    /// Forgets the cached policy set, so the next request reads the stored one (configuration
    /// reload: changes made through other nodes apply at once instead of within the refresh
    /// interval).
    pub fn refresh(&self) {
        self.invalidate();
    }

    /// Writes the default policies that are absent; returns how many were written.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn seed_defaults(&self) -> Result<usize, PolicyError> {
        let mut written = 0;
        for policy in policy::defaults() {
            let value = stored(&policy)?;
            match self
                .inner
                .state
                .put(&tenant(), POLICY_NAMESPACE, &policy.id, value, Some(0))
                .await
            {
                Ok(_) => written += 1,
                Err(StateError::VersionConflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.invalidate();
        Ok(written)
    }

    /// Every policy, in evaluation order (priority descending, then id).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(&self, _caller: &Caller) -> Result<Vec<Policy>, PolicyError> {
        let mut policies = self.load().await?;
        sort(&mut policies);
        Ok(policies)
    }

    /// One policy.
    ///
    /// # Errors
    /// `NotFound`, storage errors.
    pub async fn get(&self, _caller: &Caller, id: &str) -> Result<Policy, PolicyError> {
        Ok(self.read(id).await?.0)
    }

    /// Creates a policy with a new id.
    ///
    /// # Errors
    /// `Forbidden` for non-operators, `Invalid`, `Conflict` when there are too many policies.
    pub async fn create(&self, caller: &Caller, input: PolicyInput) -> Result<Policy, PolicyError> {
        operator_only(caller)?;
        let policy = build(uuid::Uuid::now_v7().to_string(), input)?;
        if self.load_shared().await?.len() >= MAX_POLICIES {
            return Err(PolicyError::Conflict(format!(
                "an installation holds at most {MAX_POLICIES} policies"
            )));
        }
        self.inner
            .state
            .put(
                &tenant(),
                POLICY_NAMESPACE,
                &policy.id,
                stored(&policy)?,
                Some(0),
            )
            .await?;
        self.invalidate();
        self.audit_change(caller, "policy.create", &policy).await;
        Ok(policy)
    }

    /// Replaces a policy (defaults included).
    ///
    /// # Errors
    /// `Forbidden`, `NotFound`, `Invalid`, `Conflict` on a concurrent change.
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        input: PolicyInput,
    ) -> Result<Policy, PolicyError> {
        operator_only(caller)?;
        let (_, version) = self.read(id).await?;
        let policy = build(id.to_owned(), input)?;
        self.inner
            .state
            .put(
                &tenant(),
                POLICY_NAMESPACE,
                id,
                stored(&policy)?,
                Some(version),
            )
            .await?;
        self.invalidate();
        self.audit_change(caller, "policy.update", &policy).await;
        Ok(policy)
    }

    /// Deletes a policy; the defaults cannot be deleted (disable them instead).
    ///
    /// # Errors
    /// `Forbidden`, `NotFound`, `Conflict` for a default policy.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), PolicyError> {
        operator_only(caller)?;
        if policy::is_default(id) {
            return Err(PolicyError::Conflict(format!(
                "'{id}' is a default policy: it can be disabled (enabled: false), not deleted"
            )));
        }
        let (policy, _) = self.read(id).await?;
        if !self
            .inner
            .state
            .delete(&tenant(), POLICY_NAMESPACE, id)
            .await?
        {
            return Err(PolicyError::NotFound(id.to_owned()));
        }
        self.invalidate();
        self.audit_change(caller, "policy.delete", &policy).await;
        Ok(())
    }

    /// Dry run: what the enabled policies decide for `context`, without counting, recording or
    /// refusing anything. `role`, `tenant_id` and `user_id` default to the caller's.
    ///
    /// # Errors
    /// `Invalid` for unknown attribute names; storage errors.
    pub async fn evaluate(
        &self,
        caller: &Caller,
        attributes: Vec<(String, Value)>,
    ) -> Result<Decision, PolicyError> {
        let mut errors = Vec::new();
        let mut context = caller_context(caller);
        for (name, value) in attributes {
            match policy::check_attribute(&name) {
                Ok(()) => context.set(name, value),
                Err(message) => errors.push(FieldError::new(format!("context.{name}"), message)),
            }
        }
        if !errors.is_empty() {
            return Err(PolicyError::Invalid(errors));
        }
        let policies = self.load_shared().await?;
        Ok(policy::evaluate(&policies, &context))
    }

    /// Enforces the policies on a real request. `context` holds the request's attributes; the
    /// caller's (`role`, `tenant_id`, `user_id`) are set here.
    ///
    /// # Errors
    /// Storage errors (the request must then be refused: enforcement fails closed).
    pub async fn enforce(
        &self,
        caller: &Caller,
        mut context: PolicyContext,
        request_id: Option<String>,
    ) -> Result<Enforcement, PolicyError> {
        if !self.enabled() {
            return Ok(Enforcement::Allowed {
                warnings: Vec::new(),
            });
        }
        // Who calls comes from the credential only, never from the request.
        for name in ["role", "tenant_id", "user_id"] {
            context.remove(name);
        }
        for (name, value) in caller_context(caller).attributes() {
            context.set(name.clone(), value.clone());
        }
        let policies = self.load_shared().await?;
        let decision = policy::evaluate(&policies, &context);
        let audit = |outcome, matched: &Matched, extra: Value| {
            AuditRecord::new(
                caller.tenant().as_str(),
                caller.actor(),
                "policy.decision",
                outcome,
            )
            .resource(format!(
                "{} {}",
                text(&context, "method"),
                text(&context, "route")
            ))
            .details(json!({
                "policy_id": matched.id,
                "policy_name": matched.name,
                "effect": matched.effect.as_str(),
                "path": text(&context, "path"),
                "detail": extra,
            }))
            .request_id(request_id.clone())
        };
        if let Some(policy) = decision.decided_by.as_ref().filter(|_| decision.denied()) {
            record_or_log(
                self.inner.audit.as_ref(),
                audit(AuditOutcome::Denied, policy, Value::Null),
            )
            .await;
            return Ok(Enforcement::Denied {
                policy: policy.clone(),
            });
        }
        for policy in &decision.rate_limits {
            let Effect::RateLimit { per_minute } = policy.effect else {
                continue;
            };
            if let Some(retry_after_secs) = self.count(policy, caller, per_minute) {
                record_or_log(
                    self.inner.audit.as_ref(),
                    audit(
                        AuditOutcome::Denied,
                        policy,
                        json!({"per_minute": per_minute}),
                    ),
                )
                .await;
                return Ok(Enforcement::RateLimited {
                    policy: policy.clone(),
                    retry_after_secs,
                });
            }
        }
        for warning in &decision.warnings {
            record_or_log(
                self.inner.audit.as_ref(),
                audit(AuditOutcome::Warned, warning, Value::Null),
            )
            .await;
        }
        Ok(Enforcement::Allowed {
            warnings: decision.warnings,
        })
    }

    /// Counts one request against a rate-limit policy; `Some(retry after)` when over the rate.
    fn count(&self, policy: &Matched, caller: &Caller, per_minute: u32) -> Option<u64> {
        let now = self.inner.clock.now().timestamp();
        let minute = now.div_euclid(60);
        let key = (
            policy.id.clone(),
            caller.tenant().as_str().to_owned(),
            caller.actor(),
        );
        let mut windows = self
            .inner
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Old windows are dropped now and then, so the map holds only active callers.
        if windows.len() > 10_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(key).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= u64::from(per_minute) {
            let retry = 60 - now.rem_euclid(60);
            return Some(u64::try_from(retry).unwrap_or(60).max(1));
        }
        entry.1 += 1;
        None
    }

    fn invalidate(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        *self
            .inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The policy set, from the cache when fresh.
    async fn load(&self) -> Result<Vec<Policy>, PolicyError> {
        Ok(self.load_shared().await?.as_ref().clone())
    }

    async fn load_shared(&self) -> Result<Arc<Vec<Policy>>, PolicyError> {
        let now = self.inner.clock.now();
        if let Some((at, policies)) = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            && (now - *at).num_seconds() < REFRESH_SECONDS
            && now >= *at
        {
            return Ok(Arc::clone(policies));
        }
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let mut policies = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .inner
                .state
                .list(&tenant(), POLICY_NAMESPACE, None, after.clone(), 500)
                .await?;
            let done = page.len() < 500;
            after = page.last().map(|(key, _)| key.clone());
            for (key, entry) in page {
                match serde_json::from_value::<Policy>(entry.value) {
                    Ok(policy) => policies.push(policy),
                    // A stored policy this version cannot read is skipped, loudly, rather
                    // than stopping every request.
                    Err(e) => tracing::error!(policy = %key, error = %e, "unreadable policy"),
                }
            }
            if done {
                break;
            }
        }
        let policies = Arc::new(policies);
        let mut cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.inner.generation.load(Ordering::SeqCst) == generation {
            *cache = Some((now, Arc::clone(&policies)));
        }
        Ok(policies)
    }

    async fn read(&self, id: &str) -> Result<(Policy, u64), PolicyError> {
        if !policy::valid_id(id) {
            return Err(PolicyError::NotFound(id.to_owned()));
        }
        let entry = self
            .inner
            .state
            .get(&tenant(), POLICY_NAMESPACE, id)
            .await?
            .ok_or_else(|| PolicyError::NotFound(id.to_owned()))?;
        let policy = serde_json::from_value(entry.value)
            .map_err(|e| PolicyError::Internal(anyhow::anyhow!("stored policy '{id}': {e}")))?;
        Ok((policy, entry.version))
    }

    async fn audit_change(&self, caller: &Caller, action: &str, policy: &Policy) {
        let record = AuditRecord::new(
            caller.tenant().as_str(),
            caller.actor(),
            action,
            AuditOutcome::Success,
        )
        .resource(policy.id.clone())
        .details(json!({"name": policy.name, "enabled": policy.enabled,
                        "action": policy.effect.as_str()}));
        record_or_log(self.inner.audit.as_ref(), record).await;
    }
}

fn text<'a>(context: &'a PolicyContext, attribute: &str) -> &'a str {
    context
        .get(attribute)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn sort(policies: &mut [Policy]) {
    policies.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
}

fn operator_only(caller: &Caller) -> Result<(), PolicyError> {
    if caller.is_operator() {
        Ok(())
    } else {
        Err(PolicyError::Forbidden(
            "policies apply to every tenant: only admins of the 'default' tenant may change them"
                .into(),
        ))
    }
}

/// The caller's attributes.
fn caller_context(caller: &Caller) -> PolicyContext {
    let mut context = PolicyContext::new()
        .with("role", caller.role().as_str())
        .with("tenant_id", caller.tenant().as_str());
    if let Some(user) = caller.user_id() {
        context.set("user_id", user);
    }
    context
}

fn stored(policy: &Policy) -> Result<Value, PolicyError> {
    serde_json::to_value(policy).map_err(|e| PolicyError::Internal(e.into()))
}

/// Validates the input into a policy with the given id.
fn build(id: String, input: PolicyInput) -> Result<Policy, PolicyError> {
    let mut errors = Vec::new();
    let effect = match (input.action.as_str(), input.per_minute) {
        ("allow", None) => Some(Effect::Allow),
        ("deny", None) => Some(Effect::Deny),
        ("warn", None) => Some(Effect::Warn),
        ("rate_limit", Some(n)) => match u32::try_from(n) {
            Ok(per_minute) if per_minute > 0 => Some(Effect::RateLimit { per_minute }),
            _ => {
                errors.push(FieldError::new(
                    "per_minute",
                    "must be from 1 to 4294967295",
                ));
                None
            }
        },
        ("rate_limit", None) => {
            errors.push(FieldError::new(
                "per_minute",
                "is required with action rate_limit",
            ));
            None
        }
        ("allow" | "deny" | "warn", Some(_)) => {
            errors.push(FieldError::new(
                "per_minute",
                "is only allowed with action rate_limit",
            ));
            None
        }
        _ => {
            errors.push(FieldError::new(
                "action",
                "must be one of allow, deny, warn, rate_limit",
            ));
            None
        }
    };
    let mut conditions = Vec::with_capacity(input.conditions.len());
    for (i, c) in input.conditions.into_iter().enumerate() {
        // Stored inside the policy set's record: a value deeper than a payload may be could
        // not be written (nor read back) by the state store.
        if let Err(problem) =
            allsource_domain::check_json(&c.value.to_string(), allsource_domain::MAX_NESTING)
        {
            errors.push(FieldError::new(
                format!("conditions[{i}].value"),
                problem.to_string(),
            ));
        }
        match Operator::parse(&c.operator) {
            Some(operator) => conditions.push(Condition {
                attribute: c.attribute,
                operator,
                value: c.value,
            }),
            None => errors.push(FieldError::new(
                format!("conditions[{i}].operator"),
                "must be one of eq, ne, gt, lt, contains, in",
            )),
        }
    }
    let policy = Policy {
        id,
        name: input.name,
        description: input.description.unwrap_or_default(),
        priority: input.priority.unwrap_or(0),
        enabled: input.enabled.unwrap_or(true),
        effect: effect.unwrap_or(Effect::Deny),
        conditions,
    };
    // Condition indexes of the domain's check refer to the parsed list; they only differ from
    // the client's when an operator was invalid, which is reported already.
    if errors.is_empty() {
        errors.extend(
            policy
                .problems()
                .into_iter()
                .map(|(field, message)| FieldError::new(field, message)),
        );
    }
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use allsource_domain::Role;
    use allsource_domain::policy::default_ids;
    use chrono::TimeZone;

    use super::*;
    use crate::Principal;
    use crate::ports::clock::MockClock;
    use crate::ports::{MockAuditLog, MockStateStore, StateEntry};

    fn caller(tenant: &str, role: Role, user: &str) -> Caller {
        Caller::authenticated(
            TenantId::parse(tenant).unwrap(),
            role,
            Principal::User {
                user_id: user.into(),
                username: user.into(),
            },
        )
    }

    fn operator() -> Caller {
        caller("default", Role::Admin, "root")
    }

    fn clock_at(seconds: i64) -> Arc<dyn Clock> {
        let mut clock = MockClock::new();
        clock
            .expect_now()
            .returning(move || Utc.timestamp_opt(seconds, 0).unwrap());
        Arc::new(clock)
    }

    fn entries(policies: &[Policy]) -> Vec<(String, StateEntry)> {
        policies
            .iter()
            .map(|p| {
                (
                    p.id.clone(),
                    StateEntry {
                        value: serde_json::to_value(p).unwrap(),
                        version: 1,
                    },
                )
            })
            .collect()
    }

    /// A store that lists `policies` and an audit log expecting nothing unless told.
    fn engine(policies: Vec<Policy>, audit: MockAuditLog, clock: Arc<dyn Clock>) -> Policies {
        let mut state = MockStateStore::new();
        let listed = entries(&policies);
        state
            .expect_list()
            .withf(|t, ns, _, _, _| t.as_str() == "default" && ns == POLICY_NAMESPACE)
            .returning(move |_, _, _, _, _| Ok(listed.clone()));
        Policies::new(Arc::new(state), Arc::new(audit), clock, true)
    }

    fn input(action: &str) -> PolicyInput {
        PolicyInput {
            name: "no big batches".into(),
            description: None,
            priority: Some(10),
            enabled: None,
            action: action.into(),
            per_minute: None,
            conditions: vec![ConditionInput {
                attribute: "request.record_count".into(),
                operator: "gt".into(),
                value: json!(100),
            }],
        }
    }

    fn request(method: &str, route: &str) -> PolicyContext {
        PolicyContext::new()
            .with("method", method)
            .with("route", route)
            .with("path", route)
    }

    #[tokio::test]
    async fn seeding_writes_only_absent_defaults() {
        let mut state = MockStateStore::new();
        state
            .expect_put()
            .withf(|t, ns, _, _, expected| {
                t.as_str() == "default" && ns == POLICY_NAMESPACE && *expected == Some(0)
            })
            .times(5)
            .returning(|_, _, key, _, _| {
                if key == default_ids::NO_SELF_DELETION {
                    Err(StateError::VersionConflict {
                        expected: 0,
                        current: 3,
                    })
                } else {
                    Ok(1)
                }
            });
        let engine = Policies::new(
            Arc::new(state),
            Arc::new(MockAuditLog::new()),
            clock_at(0),
            true,
        );
        assert_eq!(engine.seed_defaults().await.unwrap(), 4);
    }

    #[tokio::test]
    async fn create_validates_stores_and_audits() {
        let mut state = MockStateStore::new();
        state.expect_list().returning(|_, _, _, _, _| Ok(vec![]));
        state
            .expect_put()
            .withf(|_, _, key, value, expected| {
                *expected == Some(0)
                    && uuid::Uuid::parse_str(key).is_ok()
                    && value["action"] == "deny"
                    && value["priority"] == 10
            })
            .times(1)
            .returning(|_, _, _, _, _| Ok(1));
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|r| r.action == "policy.create" && r.actor == "user:root")
            .times(1)
            .returning(|_| Ok(()));
        let engine = Policies::new(Arc::new(state), Arc::new(audit), clock_at(0), true);
        let policy = engine.create(&operator(), input("deny")).await.unwrap();
        assert_eq!(policy.effect, Effect::Deny);
        assert!(policy.enabled);
    }

    #[tokio::test]
    async fn invalid_input_names_the_fields() {
        let engine = Policies::new(
            Arc::new(MockStateStore::new()),
            Arc::new(MockAuditLog::new()),
            clock_at(0),
            true,
        );
        let fields = |input| {
            let engine = engine.clone();
            async move {
                match engine.create(&operator(), input).await {
                    Err(PolicyError::Invalid(errors)) => {
                        errors.into_iter().map(|e| e.field).collect::<Vec<_>>()
                    }
                    other => panic!("{other:?}"),
                }
            }
        };
        let mut bad = input("explode");
        bad.conditions[0].operator = "like".into();
        assert_eq!(fields(bad).await, ["action", "conditions[0].operator"]);
        assert_eq!(fields(input("rate_limit")).await, ["per_minute"]);
        let mut zero = input("rate_limit");
        zero.per_minute = Some(0);
        assert_eq!(fields(zero).await, ["per_minute"]);
        let mut warn = input("warn");
        warn.per_minute = Some(3);
        assert_eq!(fields(warn).await, ["per_minute"]);
        let mut domain = input("deny");
        domain.name = String::new();
        domain.conditions[0].attribute = "colour".into();
        assert_eq!(fields(domain).await, ["name", "conditions[0].attribute"]);
        let mut deep = input("deny");
        let mut value = json!(1);
        for _ in 0..=allsource_domain::MAX_NESTING {
            value = json!([value]);
        }
        deep.conditions[0].value = value;
        assert_eq!(fields(deep).await, ["conditions[0].value"]);
    }

    #[tokio::test]
    async fn only_operators_change_policies() {
        let engine = Policies::new(
            Arc::new(MockStateStore::new()),
            Arc::new(MockAuditLog::new()),
            clock_at(0),
            true,
        );
        for who in [
            caller("acme", Role::Admin, "a"),
            caller("default", Role::Developer, "d"),
        ] {
            assert!(matches!(
                engine.create(&who, input("deny")).await,
                Err(PolicyError::Forbidden(_))
            ));
            assert!(matches!(
                engine.update(&who, "x", input("deny")).await,
                Err(PolicyError::Forbidden(_))
            ));
            assert!(matches!(
                engine.delete(&who, "x").await,
                Err(PolicyError::Forbidden(_))
            ));
        }
    }

    #[tokio::test]
    async fn defaults_cannot_be_deleted_and_unknown_ids_are_404() {
        let mut state = MockStateStore::new();
        state.expect_get().returning(|_, _, _| Ok(None));
        state.expect_delete().never();
        let engine = Policies::new(
            Arc::new(state),
            Arc::new(MockAuditLog::new()),
            clock_at(0),
            true,
        );
        for id in default_ids::ALL {
            assert!(matches!(
                engine.delete(&operator(), id).await,
                Err(PolicyError::Conflict(_))
            ));
        }
        assert!(matches!(
            engine.delete(&operator(), "nope").await,
            Err(PolicyError::NotFound(_))
        ));
        assert!(matches!(
            engine.get(&operator(), "bad id/../x").await,
            Err(PolicyError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn update_writes_over_the_version_it_read() {
        let existing = policy::defaults().remove(2);
        let stored_value = serde_json::to_value(&existing).unwrap();
        let mut state = MockStateStore::new();
        state.expect_get().returning(move |_, _, _| {
            Ok(Some(StateEntry {
                value: stored_value.clone(),
                version: 7,
            }))
        });
        state
            .expect_put()
            .withf(|_, _, key, value, expected| {
                key == default_ids::WARN_LARGE_OPERATIONS
                    && *expected == Some(7)
                    && value["enabled"] == false
            })
            .times(1)
            .returning(|_, _, _, _, _| {
                Err(StateError::VersionConflict {
                    expected: 7,
                    current: 8,
                })
            });
        let engine = Policies::new(
            Arc::new(state),
            Arc::new(MockAuditLog::new()),
            clock_at(0),
            true,
        );
        let mut disable = input("warn");
        disable.enabled = Some(false);
        assert!(matches!(
            engine
                .update(&operator(), default_ids::WARN_LARGE_OPERATIONS, disable)
                .await,
            Err(PolicyError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn a_deny_is_enforced_and_audited() {
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|r| {
                r.action == "policy.decision"
                    && r.outcome == AuditOutcome::Denied
                    && r.tenant_id == "acme"
                    && r.resource.as_deref() == Some("POST /api/v1/tenants")
                    && r.details["policy_id"] == default_ids::ADMIN_CREATES_TENANTS
                    && r.request_id.as_deref() == Some("req-1")
            })
            .times(1)
            .returning(|_| Ok(()));
        let engine = engine(policy::defaults(), audit, clock_at(0));
        let outcome = engine
            .enforce(
                &caller("acme", Role::Developer, "d"),
                request("POST", "/api/v1/tenants"),
                Some("req-1".into()),
            )
            .await
            .unwrap();
        assert!(
            matches!(&outcome, Enforcement::Denied { policy } if policy.id == default_ids::ADMIN_CREATES_TENANTS),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn the_callers_attributes_cannot_be_forged_by_the_request() {
        let mut audit = MockAuditLog::new();
        audit.expect_record().times(1).returning(|_| Ok(()));
        let engine = engine(policy::defaults(), audit, clock_at(0));
        let forged = request("DELETE", "/api/v1/auth/users/{id}")
            .with("resource.id", "u1")
            .with("user_id", "someone-else");
        let outcome = engine
            .enforce(&caller("acme", Role::Admin, "u1"), forged, None)
            .await
            .unwrap();
        assert!(matches!(outcome, Enforcement::Denied { .. }), "{outcome:?}");
    }

    #[tokio::test]
    async fn warnings_pass_and_are_audited() {
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|r| r.outcome == AuditOutcome::Warned)
            .times(1)
            .returning(|_| Ok(()));
        let engine = engine(policy::defaults(), audit, clock_at(0));
        let outcome = engine
            .enforce(
                &operator(),
                request("POST", "/api/v1/events/batch").with("request.record_count", 10_001),
                None,
            )
            .await
            .unwrap();
        let Enforcement::Allowed { warnings } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(warnings[0].id, default_ids::WARN_LARGE_OPERATIONS);
    }

    #[tokio::test]
    async fn plain_allows_are_not_audited() {
        let mut audit = MockAuditLog::new();
        audit.expect_record().never();
        let engine = engine(policy::defaults(), audit, clock_at(0));
        let outcome = engine
            .enforce(&operator(), request("GET", "/api/v1/events/query"), None)
            .await
            .unwrap();
        assert_eq!(outcome, Enforcement::Allowed { warnings: vec![] });
    }

    #[tokio::test]
    async fn rate_limits_count_per_caller_and_minute() {
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|r| r.outcome == AuditOutcome::Denied && r.details["effect"] == "rate_limit")
            .times(1)
            .returning(|_| Ok(()));
        let limited = Policy {
            id: "r".into(),
            name: "two a minute".into(),
            description: String::new(),
            priority: 0,
            enabled: true,
            effect: Effect::RateLimit { per_minute: 2 },
            conditions: vec![Condition::new("method", Operator::Eq, "POST")],
        };
        // 45 s into a minute.
        let engine = engine(vec![limited], audit, clock_at(6_045));
        let ann = caller("acme", Role::Admin, "ann");
        let bob = caller("acme", Role::Admin, "bob");
        let post = || request("POST", "/api/v1/replay");
        for _ in 0..2 {
            assert!(matches!(
                engine.enforce(&ann, post(), None).await.unwrap(),
                Enforcement::Allowed { .. }
            ));
        }
        let third = engine.enforce(&ann, post(), None).await.unwrap();
        assert!(
            matches!(
                third,
                Enforcement::RateLimited {
                    retry_after_secs: 15,
                    ..
                }
            ),
            "{third:?}"
        );
        // Another caller has its own count; other methods do not count.
        assert!(matches!(
            engine.enforce(&bob, post(), None).await.unwrap(),
            Enforcement::Allowed { .. }
        ));
        assert!(matches!(
            engine
                .enforce(&ann, request("GET", "/api/v1/replay"), None)
                .await
                .unwrap(),
            Enforcement::Allowed { .. }
        ));
    }

    #[tokio::test]
    async fn the_next_minute_starts_a_new_window() {
        let limited = Policy {
            id: "r".into(),
            name: "one a minute".into(),
            description: String::new(),
            priority: 0,
            enabled: true,
            effect: Effect::RateLimit { per_minute: 1 },
            conditions: vec![],
        };
        let mut state = MockStateStore::new();
        let listed = entries(&[limited]);
        state
            .expect_list()
            .returning(move |_, _, _, _, _| Ok(listed.clone()));
        let mut audit = MockAuditLog::new();
        audit.expect_record().returning(|_| Ok(()));
        let now = Arc::new(Mutex::new(0_i64));
        let mut clock = MockClock::new();
        let read = Arc::clone(&now);
        clock
            .expect_now()
            .returning(move || Utc.timestamp_opt(*read.lock().unwrap(), 0).unwrap());
        let engine = Policies::new(Arc::new(state), Arc::new(audit), Arc::new(clock), true);
        let me = operator();
        let go = || engine.enforce(&me, request("POST", "/x"), None);
        assert!(matches!(go().await.unwrap(), Enforcement::Allowed { .. }));
        assert!(matches!(
            go().await.unwrap(),
            Enforcement::RateLimited { .. }
        ));
        *now.lock().unwrap() = 60;
        assert!(matches!(go().await.unwrap(), Enforcement::Allowed { .. }));
    }

    #[tokio::test]
    async fn disabled_enforcement_reads_nothing() {
        let mut state = MockStateStore::new();
        state.expect_list().never();
        let engine = Policies::new(
            Arc::new(state),
            Arc::new(MockAuditLog::new()),
            clock_at(0),
            false,
        );
        assert!(matches!(
            engine
                .enforce(&operator(), request("POST", "/api/v1/tenants"), None)
                .await
                .unwrap(),
            Enforcement::Allowed { .. }
        ));
    }

    #[tokio::test]
    async fn storage_failures_fail_closed() {
        let mut state = MockStateStore::new();
        state
            .expect_list()
            .returning(|_, _, _, _, _| Err(StateError::Unavailable("down".into())));
        let engine = Policies::new(
            Arc::new(state),
            Arc::new(MockAuditLog::new()),
            clock_at(0),
            true,
        );
        assert!(matches!(
            engine
                .enforce(&operator(), request("GET", "/x"), None)
                .await,
            Err(PolicyError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn the_policy_set_is_cached_for_a_few_seconds() {
        let mut state = MockStateStore::new();
        state
            .expect_list()
            .times(1)
            .returning(|_, _, _, _, _| Ok(vec![]));
        let engine = Policies::new(
            Arc::new(state),
            Arc::new(MockAuditLog::new()),
            clock_at(0),
            true,
        );
        for _ in 0..3 {
            engine
                .enforce(&operator(), request("GET", "/x"), None)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn evaluate_is_a_dry_run_with_the_callers_defaults() {
        let mut audit = MockAuditLog::new();
        audit.expect_record().never();
        let engine = engine(policy::defaults(), audit, clock_at(0));
        let admin = operator();
        let decision = engine
            .evaluate(
                &admin,
                vec![
                    ("method".into(), json!("POST")),
                    ("route".into(), json!("/api/v1/tenants")),
                    ("role".into(), json!("readonly")),
                ],
            )
            .await
            .unwrap();
        assert!(decision.denied());
        // Rate limits are reported, never counted: the eleventh dry run still only reports.
        for _ in 0..11 {
            let decision = engine
                .evaluate(
                    &admin,
                    vec![
                        ("method".into(), json!("POST")),
                        ("route".into(), json!("/api/v1/replay")),
                    ],
                )
                .await
                .unwrap();
            assert_eq!(decision.rate_limits.len(), 1);
        }
        let err = engine
            .evaluate(&admin, vec![("colour".into(), json!("red"))])
            .await
            .unwrap_err();
        assert!(matches!(err, PolicyError::Invalid(e) if e[0].field == "context.colour"));
    }
}
