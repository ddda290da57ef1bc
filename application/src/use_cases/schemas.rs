//! The schema registry: JSON Schemas (draft 2020-12) registered per subject in versions 1, 2,
//! ..., checked for compatibility on registration, and enforced at append.
//!
//! # Rules
//! - A subject is named like an event type; events of type `T` are checked against subject
//!   `T`. A registration names it with `subject` or `event_type` (the same thing).
//! - Registering a schema equal (as JSON) to one of the subject's versions registers nothing
//!   and answers that version (idempotent retries).
//! - A new version is checked against **every** previous version of the subject (transitive),
//!   under the subject's compatibility mode (default from the settings, `BACKWARD` unless
//!   configured): stored events of any age must stay readable, not only the latest ones. The
//!   rules are [`allsource_domain::schema`]'s.
//! - A subject's `compatibility` and `enforce` are set when it is created (from the
//!   registration, else the defaults) and changed with [`SchemaRegistry::configure`].
//! - Enforcement: when a subject is enforced, every appended event of that type must pass its
//!   latest schema, else the whole append is refused (422), nothing appended.
//!
//! # Storage
//! One state-store entry per subject (namespace `schemas`, key = subject) holds its
//! configuration and all its versions, so a registration is one optimistic write (retried on a
//! concurrent one).
//!
//! # The append hot path
//! The registry keeps, per tenant, the compiled latest schema of every *enforced* subject,
//! loaded from the state store at the tenant's first append and reloaded after
//! [`SchemaSettings::cache_ttl`]. Changes made through this registry drop the tenant's entry at
//! once; changes made by another node (postgres backend, several nodes) are seen within the
//! TTL. A tenant without enforced subjects costs a map lookup per append.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use allsource_domain::schema::check_compatibility;
use allsource_domain::{CompatibilityMode, ProposedEvent, SchemaVersion, Subject, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::append::{AppendError, AppendGuard};
use super::params::{Errors, FieldError};
use crate::Caller;
use crate::ports::{
    AppendReceipt, Clock, CompiledSchema, SchemaIssue, SchemaValidator, StateError, StateStore,
};

/// The state-store namespace of the registry.
pub const SCHEMA_NAMESPACE: &str = "schemas";

/// The `$schema` values accepted (absent is accepted too).
const DRAFT_2020_12: &[&str] = &[
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
];

/// At most this many field errors are reported for one refused append (it is refused whole
/// anyway; the cap bounds the answer of a huge bad batch).
pub const MAX_APPEND_VIOLATIONS: usize = 1000;

/// The subject name that `/api/v1/schemas/validate` takes from the path space.
const RESERVED_SUBJECT: &str = "validate";

/// How many times a registration is retried when another one wrote the subject meanwhile.
const WRITE_ATTEMPTS: usize = 5;

/// Registry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaSettings {
    /// `enforce` of a subject created without saying.
    pub enforce_by_default: bool,
    /// `compatibility` of a subject created without saying.
    pub default_compatibility: CompatibilityMode,
    /// How long the enforced schemas of a tenant are used before being reloaded from the
    /// state store (bounds staleness across nodes).
    pub cache_ttl: Duration,
}

impl Default for SchemaSettings {
    fn default() -> Self {
        Self {
            enforce_by_default: true,
            default_compatibility: CompatibilityMode::Backward,
            cache_ttl: Duration::from_secs(5),
        }
    }
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// 400: invalid input (an invalid schema included), with field errors.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// 404: unknown subject or version.
    #[error("{0}")]
    NotFound(String),
    /// 409: the schema is not compatible with earlier versions; the errors name where.
    #[error("the schema is incompatible with earlier versions of '{subject}'")]
    Incompatible {
        subject: Subject,
        mode: CompatibilityMode,
        errors: Vec<FieldError>,
    },
    /// 409: the subject kept changing under concurrent registrations; retry.
    #[error("{0}")]
    Conflict(String),
    /// 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StateError> for SchemaError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Unavailable(why) => Self::Unavailable(why),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

/// A registration as the client sent it.
#[derive(Debug, Default, Clone)]
pub struct RegisterSchemaInput {
    pub subject: Option<String>,
    pub event_type: Option<String>,
    pub schema: Option<Value>,
    pub compatibility: Option<String>,
    pub enforce: Option<bool>,
}

/// A subject's configuration change as the client sent it.
#[derive(Debug, Default, Clone)]
pub struct ConfigureSubjectInput {
    pub compatibility: Option<String>,
    pub enforce: Option<bool>,
}

/// A validation request as the client sent it.
#[derive(Debug, Default, Clone)]
pub struct ValidateInput {
    pub subject: Option<String>,
    pub payload: Option<Value>,
    pub version: Option<u64>,
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaView {
    pub subject: Subject,
    pub version: SchemaVersion,
    pub schema: Value,
    pub registered_at: DateTime<Utc>,
    pub compatibility: CompatibilityMode,
    pub enforce: bool,
}

/// The outcome of a registration: `created` is false when the schema was registered already.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub schema: SchemaView,
    pub created: bool,
}

/// A subject in the listing.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectSummary {
    pub subject: Subject,
    pub latest_version: SchemaVersion,
    pub versions: usize,
    pub compatibility: CompatibilityMode,
    pub enforce: bool,
}

/// A subject's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectConfig {
    pub subject: Subject,
    pub compatibility: CompatibilityMode,
    pub enforce: bool,
}

/// The verdict of `validate`: valid when `errors` is empty (fields `payload<pointer>`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationReport {
    pub subject: Subject,
    pub version: SchemaVersion,
    pub errors: Vec<FieldError>,
}

/// The persisted form of a subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSubject {
    subject: String,
    compatibility: String,
    enforce: bool,
    versions: Vec<StoredVersion>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredVersion {
    version: SchemaVersion,
    schema: Value,
    registered_at: DateTime<Utc>,
}

impl StoredSubject {
    fn mode(&self) -> CompatibilityMode {
        CompatibilityMode::parse(&self.compatibility).unwrap_or_default()
    }

    fn view(&self, subject: &Subject, v: &StoredVersion) -> SchemaView {
        SchemaView {
            subject: subject.clone(),
            version: v.version,
            schema: v.schema.clone(),
            registered_at: v.registered_at,
            compatibility: self.mode(),
            enforce: self.enforce,
        }
    }
}

/// The compiled latest schema of an enforced subject.
struct Enforced {
    version: SchemaVersion,
    compiled: Arc<dyn CompiledSchema>,
}

/// What the guard knows of one tenant.
struct TenantSchemas {
    loaded: Instant,
    enforced: HashMap<String, Arc<Enforced>>,
}

/// The schema registry use case; also the [`AppendGuard`] that enforces schemas.
pub struct SchemaRegistry {
    state: Arc<dyn StateStore>,
    validator: Arc<dyn SchemaValidator>,
    clock: Arc<dyn Clock>,
    settings: SchemaSettings,
    cache: RwLock<HashMap<TenantId, Arc<TenantSchemas>>>,
}

fn subject_field(field: &str, raw: &str, errors: &mut Errors) -> Option<Subject> {
    errors.check(field, Subject::parse(raw))
}

fn pointer_field(prefix: &str, pointer: &str) -> String {
    format!("{prefix}{pointer}")
}

impl SchemaRegistry {
    pub fn new(
        state: Arc<dyn StateStore>,
        validator: Arc<dyn SchemaValidator>,
        clock: Arc<dyn Clock>,
        settings: SchemaSettings,
    ) -> Self {
        Self {
            state,
            validator,
            clock,
            settings,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Registers a schema version (`POST /api/v1/schemas`).
    ///
    /// # Errors
    /// `Invalid` (400) for bad input or an invalid schema, `Incompatible` (409), `Conflict`
    /// (409) after repeated concurrent writes, `Unavailable`/`Internal`.
    pub async fn register(
        &self,
        caller: &Caller,
        input: RegisterSchemaInput,
    ) -> Result<Registered, SchemaError> {
        let mut errors = Errors::default();
        let subject = match (input.subject.as_deref(), input.event_type.as_deref()) {
            (None, None) => {
                errors.push("subject", "is required (or event_type)");
                None
            }
            (Some(s), Some(t)) if s != t => {
                errors.push(
                    "event_type",
                    "names the subject too and must equal subject when both are given",
                );
                None
            }
            (Some(s), _) => subject_field("subject", s, &mut errors),
            (None, Some(t)) => subject_field("event_type", t, &mut errors),
        };
        if subject
            .as_ref()
            .is_some_and(|s| s.as_str() == RESERVED_SUBJECT)
        {
            errors.push(
                "subject",
                "'validate' is reserved (POST /api/v1/schemas/validate)",
            );
        }
        let mode = input
            .compatibility
            .as_deref()
            .and_then(|raw| errors.check("compatibility", CompatibilityMode::parse(raw)));
        let schema = match input.schema {
            None => {
                errors.push("schema", "is required");
                None
            }
            Some(schema @ (Value::Object(_) | Value::Bool(_))) => Some(schema),
            Some(_) => {
                errors.push("schema", "must be a JSON Schema: an object or a boolean");
                None
            }
        };
        if let Some(Value::Object(map)) = &schema
            && let Some(declared) = map.get("$schema")
            && !declared
                .as_str()
                .is_some_and(|d| DRAFT_2020_12.contains(&d))
        {
            errors.push(
                "schema/$schema",
                "only draft 2020-12 is supported: omit $schema or use \
                 https://json-schema.org/draft/2020-12/schema",
            );
        }
        let (Some(subject), Some(schema), true) = (subject, schema, errors.is_empty()) else {
            return Err(SchemaError::Invalid(errors.0));
        };
        self.validator.compile(&schema).map_err(|issues| {
            SchemaError::Invalid(
                issues
                    .into_iter()
                    .map(|i| FieldError::new(pointer_field("schema", &i.pointer), i.message))
                    .collect(),
            )
        })?;

        let tenant = caller.tenant();
        for _ in 0..WRITE_ATTEMPTS {
            let (mut stored, expected) = match self.load(tenant, &subject).await? {
                Some((stored, version)) => {
                    if let Some(existing) = stored.versions.iter().find(|v| v.schema == schema) {
                        return Ok(Registered {
                            schema: stored.view(&subject, existing),
                            created: false,
                        });
                    }
                    if let Some(mode) = mode
                        && mode != stored.mode()
                    {
                        return Err(SchemaError::Invalid(vec![FieldError::new(
                            "compatibility",
                            format!(
                                "subject '{subject}' uses {}; change it with PUT \
                                 /api/v1/schemas/{subject}/compatibility",
                                stored.mode()
                            ),
                        )]));
                    }
                    if let Some(enforce) = input.enforce
                        && enforce != stored.enforce
                    {
                        return Err(SchemaError::Invalid(vec![FieldError::new(
                            "enforce",
                            format!(
                                "subject '{subject}' has enforce = {}; change it with PUT \
                                 /api/v1/schemas/{subject}/compatibility",
                                stored.enforce
                            ),
                        )]));
                    }
                    (stored, version)
                }
                None => (
                    StoredSubject {
                        subject: subject.as_str().to_owned(),
                        compatibility: mode
                            .unwrap_or(self.settings.default_compatibility)
                            .as_str()
                            .to_owned(),
                        enforce: input.enforce.unwrap_or(self.settings.enforce_by_default),
                        versions: Vec::new(),
                    },
                    0,
                ),
            };
            let mode = stored.mode();
            let mut incompatible = Vec::new();
            for previous in &stored.versions {
                for i in check_compatibility(mode, &previous.schema, &schema) {
                    incompatible.push(FieldError::new(
                        pointer_field("schema", &i.path),
                        format!("{} (against version {})", i.message, previous.version),
                    ));
                }
            }
            if !incompatible.is_empty() {
                return Err(SchemaError::Incompatible {
                    subject,
                    mode,
                    errors: incompatible,
                });
            }
            let version = stored
                .versions
                .last()
                .map_or(1, |v| v.version.saturating_add(1));
            let registered = StoredVersion {
                version,
                schema: schema.clone(),
                registered_at: self.clock.now(),
            };
            stored.versions.push(registered.clone());
            if self.store(tenant, &subject, &stored, expected).await? {
                return Ok(Registered {
                    schema: stored.view(&subject, &registered),
                    created: true,
                });
            }
        }
        Err(SchemaError::Conflict(format!(
            "subject '{subject}' kept changing under concurrent registrations; retry"
        )))
    }

    /// Every subject with its latest version, in name order (`GET /api/v1/schemas`).
    ///
    /// # Errors
    /// `Unavailable`/`Internal`.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<SubjectSummary>, SchemaError> {
        Ok(self
            .all(caller.tenant())
            .await?
            .into_iter()
            .filter_map(|stored| {
                let subject = Subject::parse(&stored.subject).ok()?;
                let latest = stored.versions.last()?;
                Some(SubjectSummary {
                    subject,
                    latest_version: latest.version,
                    versions: stored.versions.len(),
                    compatibility: stored.mode(),
                    enforce: stored.enforce,
                })
            })
            .collect())
    }

    /// One version of a subject, the latest by default (`GET /api/v1/schemas/{subject}`).
    ///
    /// # Errors
    /// `Invalid` for a bad subject or version, `NotFound`, `Unavailable`/`Internal`.
    pub async fn get(
        &self,
        caller: &Caller,
        subject: &str,
        version: Option<&str>,
    ) -> Result<SchemaView, SchemaError> {
        let mut errors = Errors::default();
        let subject = subject_field("subject", subject, &mut errors);
        let version = version.and_then(|raw| {
            errors.check(
                "version",
                raw.parse::<SchemaVersion>()
                    .ok()
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| {
                        allsource_domain::InvalidValue(
                            "must be a version number (1, 2, ...)".into(),
                        )
                    }),
            )
        });
        let Some(subject) = subject.filter(|_| errors.is_empty()) else {
            return Err(SchemaError::Invalid(errors.0));
        };
        let stored = self.existing(caller.tenant(), &subject).await?;
        let found = match version {
            None => stored.versions.last(),
            Some(v) => stored.versions.iter().find(|s| s.version == v),
        };
        found.map(|v| stored.view(&subject, v)).ok_or_else(|| {
            SchemaError::NotFound(format!(
                "subject '{subject}' has no version {}",
                version.unwrap_or_default()
            ))
        })
    }

    /// The version numbers of a subject (`GET /api/v1/schemas/{subject}/versions`).
    ///
    /// # Errors
    /// `Invalid`, `NotFound`, `Unavailable`/`Internal`.
    pub async fn versions(
        &self,
        caller: &Caller,
        subject: &str,
    ) -> Result<(Subject, Vec<SchemaVersion>), SchemaError> {
        let subject = Subject::parse(subject)
            .map_err(|e| SchemaError::Invalid(vec![FieldError::new("subject", e.0)]))?;
        let stored = self.existing(caller.tenant(), &subject).await?;
        Ok((subject, stored.versions.iter().map(|v| v.version).collect()))
    }

    /// Changes a subject's compatibility mode and/or enforcement
    /// (`PUT /api/v1/schemas/{subject}/compatibility`). Existing versions are not re-checked.
    ///
    /// # Errors
    /// `Invalid`, `NotFound` (register a schema first), `Conflict`, `Unavailable`/`Internal`.
    pub async fn configure(
        &self,
        caller: &Caller,
        subject: &str,
        input: ConfigureSubjectInput,
    ) -> Result<SubjectConfig, SchemaError> {
        let mut errors = Errors::default();
        let subject = subject_field("subject", subject, &mut errors);
        let mode = input
            .compatibility
            .as_deref()
            .and_then(|raw| errors.check("compatibility", CompatibilityMode::parse(raw)));
        if input.compatibility.is_none() && input.enforce.is_none() {
            errors.push("compatibility", "is required (or enforce)");
        }
        let Some(subject) = subject.filter(|_| errors.is_empty()) else {
            return Err(SchemaError::Invalid(errors.0));
        };
        let tenant = caller.tenant();
        for _ in 0..WRITE_ATTEMPTS {
            let Some((mut stored, expected)) = self.load(tenant, &subject).await? else {
                return Err(not_registered(&subject));
            };
            if let Some(mode) = mode {
                mode.as_str().clone_into(&mut stored.compatibility);
            }
            if let Some(enforce) = input.enforce {
                stored.enforce = enforce;
            }
            if self.store(tenant, &subject, &stored, expected).await? {
                return Ok(SubjectConfig {
                    compatibility: stored.mode(),
                    enforce: stored.enforce,
                    subject,
                });
            }
        }
        Err(SchemaError::Conflict(format!(
            "subject '{subject}' kept changing under concurrent writes; retry"
        )))
    }

    /// Validates a payload against a version of a subject (the latest by default), whether or
    /// not the subject is enforced (`POST /api/v1/schemas/validate`).
    ///
    /// # Errors
    /// `Invalid`, `NotFound`, `Unavailable`/`Internal`. A payload that fails the schema is
    /// not an error: the report lists why.
    pub async fn validate(
        &self,
        caller: &Caller,
        input: ValidateInput,
    ) -> Result<ValidationReport, SchemaError> {
        let mut errors = Errors::default();
        let subject = match input.subject.as_deref() {
            None => {
                errors.push("subject", "is required");
                None
            }
            Some(raw) => subject_field("subject", raw, &mut errors),
        };
        if input.payload.is_none() {
            errors.push("payload", "is required");
        }
        let version = match input.version {
            Some(v) => match SchemaVersion::try_from(v).ok().filter(|v| *v >= 1) {
                Some(v) => Some(v),
                None => {
                    errors.push("version", "must be a version number (1, 2, ...)");
                    None
                }
            },
            None => None,
        };
        let (Some(subject), Some(payload), true) = (subject, input.payload, errors.is_empty())
        else {
            return Err(SchemaError::Invalid(errors.0));
        };
        let stored = self.existing(caller.tenant(), &subject).await?;
        let found = match version {
            None => stored.versions.last(),
            Some(v) => stored.versions.iter().find(|s| s.version == v),
        }
        .ok_or_else(|| {
            SchemaError::NotFound(format!(
                "subject '{subject}' has no version {}",
                version.unwrap_or_default()
            ))
        })?;
        let compiled = self.compile_stored(&subject, &found.schema)?;
        Ok(ValidationReport {
            errors: issues_as_fields("payload", compiled.validate(&payload)),
            version: found.version,
            subject,
        })
    }

    fn compile_stored(
        &self,
        subject: &Subject,
        schema: &Value,
    ) -> Result<Arc<dyn CompiledSchema>, SchemaError> {
        self.validator.compile(schema).map_err(|issues| {
            SchemaError::Internal(anyhow::anyhow!(
                "stored schema of '{subject}' no longer compiles: {issues:?}"
            ))
        })
    }

    /// Writes a subject's record if it is still at version `expected`; `false` when another
    /// writer got there first (the caller reloads and tries again).
    async fn store(
        &self,
        tenant: &TenantId,
        subject: &Subject,
        stored: &StoredSubject,
        expected: u64,
    ) -> Result<bool, SchemaError> {
        let value = serde_json::to_value(stored)
            .map_err(|e| SchemaError::Internal(anyhow::Error::new(e)))?;
        match self
            .state
            .put(
                tenant,
                SCHEMA_NAMESPACE,
                subject.as_str(),
                value,
                Some(expected),
            )
            .await
        {
            Ok(_) => {
                self.invalidate(tenant);
                Ok(true)
            }
            Err(StateError::VersionConflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn load(
        &self,
        tenant: &TenantId,
        subject: &Subject,
    ) -> Result<Option<(StoredSubject, u64)>, SchemaError> {
        let Some(entry) = self
            .state
            .get(tenant, SCHEMA_NAMESPACE, subject.as_str())
            .await?
        else {
            return Ok(None);
        };
        let stored = serde_json::from_value(entry.value).map_err(|e| {
            SchemaError::Internal(anyhow::anyhow!(
                "stored subject '{subject}' is unreadable: {e}"
            ))
        })?;
        Ok(Some((stored, entry.version)))
    }

    async fn existing(
        &self,
        tenant: &TenantId,
        subject: &Subject,
    ) -> Result<StoredSubject, SchemaError> {
        match self.load(tenant, subject).await? {
            Some((stored, _)) if !stored.versions.is_empty() => Ok(stored),
            _ => Err(not_registered(subject)),
        }
    }

    async fn all(&self, tenant: &TenantId) -> Result<Vec<StoredSubject>, SchemaError> {
        const PAGE: usize = 500;
        let mut subjects = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .state
                .list(tenant, SCHEMA_NAMESPACE, None, after.clone(), PAGE)
                .await?;
            let full = page.len() == PAGE;
            for (key, entry) in page {
                let stored: StoredSubject = serde_json::from_value(entry.value).map_err(|e| {
                    SchemaError::Internal(anyhow::anyhow!(
                        "stored subject '{key}' is unreadable: {e}"
                    ))
                })?;
                subjects.push(stored);
                after = Some(key);
            }
            if !full {
                return Ok(subjects);
            }
        }
    }

    fn invalidate(&self, tenant: &TenantId) {
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant);
    }

    /// The enforced subjects of a tenant, from the cache or freshly loaded.
    async fn enforced(&self, tenant: &TenantId) -> Result<Arc<TenantSchemas>, SchemaError> {
        let previous = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned();
        if let Some(cached) = &previous
            && cached.loaded.elapsed() < self.settings.cache_ttl
        {
            return Ok(cached.clone());
        }
        let loaded = Instant::now();
        let mut enforced = HashMap::new();
        for stored in self.all(tenant).await? {
            let Some(latest) = stored.versions.last().filter(|_| stored.enforce) else {
                continue;
            };
            // Reuse what was compiled before when the version has not changed.
            let reused = previous
                .as_ref()
                .and_then(|p| p.enforced.get(&stored.subject))
                .filter(|e| e.version == latest.version)
                .cloned();
            let entry = match reused {
                Some(e) => e,
                None => {
                    let subject = Subject::parse(&stored.subject).map_err(|e| {
                        SchemaError::Internal(anyhow::anyhow!("stored subject name: {e}"))
                    })?;
                    Arc::new(Enforced {
                        version: latest.version,
                        compiled: self.compile_stored(&subject, &latest.schema)?,
                    })
                }
            };
            enforced.insert(stored.subject.clone(), entry);
        }
        let fresh = Arc::new(TenantSchemas { loaded, enforced });
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.clone(), fresh.clone());
        Ok(fresh)
    }
}

fn not_registered(subject: &Subject) -> SchemaError {
    SchemaError::NotFound(format!("no schema is registered for subject '{subject}'"))
}

fn issues_as_fields(prefix: &str, issues: Vec<SchemaIssue>) -> Vec<FieldError> {
    issues
        .into_iter()
        .map(|i| FieldError::new(pointer_field(prefix, &i.pointer), i.message))
        .collect()
}

#[async_trait::async_trait]
impl AppendGuard for SchemaRegistry {
    /// Refuses the append when an event of an enforced subject fails its latest schema.
    async fn before_append(
        &self,
        caller: &Caller,
        events: &[ProposedEvent],
        batch: bool,
    ) -> Result<(), AppendError> {
        let schemas = self.enforced(caller.tenant()).await.map_err(|e| match e {
            SchemaError::Unavailable(why) => AppendError::Unavailable(why),
            other => AppendError::Internal(anyhow::Error::new(other)),
        })?;
        if schemas.enforced.is_empty() {
            return Ok(());
        }
        let mut violations = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if violations.len() >= MAX_APPEND_VIOLATIONS {
                violations.truncate(MAX_APPEND_VIOLATIONS);
                break;
            }
            let Some(enforced) = schemas.enforced.get(event.event_type.as_str()) else {
                continue;
            };
            let payload: Value = serde_json::from_str(event.payload.get()).map_err(|e| {
                AppendError::Internal(anyhow::anyhow!("a validated payload is not JSON: {e}"))
            })?;
            let prefix = if batch {
                format!("events[{index}].payload")
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

    async fn after_append(
        &self,
        _caller: &Caller,
        _events: &[ProposedEvent],
        _receipts: &[AppendReceipt],
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{
        MockCompiledSchema, MockSchemaValidator, MockStateStore, StateEntry, clock::MockClock,
    };
    use allsource_domain::{EntityId, EventId, EventType, ExpectedVersion};
    use serde_json::json;
    use serde_json::value::RawValue;

    fn caller() -> Caller {
        Caller::default_tenant()
    }

    fn clock() -> Arc<MockClock> {
        let mut clock = MockClock::new();
        clock.expect_now().returning(Utc::now);
        Arc::new(clock)
    }

    /// A compiled schema that wants `amount` to be an integer.
    fn amount_must_be_integer() -> Arc<dyn CompiledSchema> {
        let mut compiled = MockCompiledSchema::new();
        compiled.expect_validate().returning(|instance| {
            if instance.get("amount").is_some_and(Value::is_i64) {
                vec![]
            } else {
                vec![SchemaIssue::new("/amount", "must be an integer")]
            }
        });
        Arc::new(compiled)
    }

    /// A validator that compiles everything to `amount_must_be_integer`.
    fn accepting_validator() -> MockSchemaValidator {
        let mut validator = MockSchemaValidator::new();
        validator
            .expect_compile()
            .returning(|_| Ok(amount_must_be_integer()));
        validator
    }

    fn registry(state: MockStateStore, validator: MockSchemaValidator) -> SchemaRegistry {
        SchemaRegistry::new(
            Arc::new(state),
            Arc::new(validator),
            clock(),
            SchemaSettings::default(),
        )
    }

    fn stored(mode: &str, enforce: bool, schemas: &[Value]) -> Value {
        json!({
            "subject": "order.placed",
            "compatibility": mode,
            "enforce": enforce,
            "versions": schemas.iter().enumerate().map(|(i, s)| json!({
                "version": i + 1, "schema": s, "registered_at": "2026-11-22T10:15:00Z"
            })).collect::<Vec<_>>()
        })
    }

    fn entry(value: Value, version: u64) -> StateEntry {
        StateEntry { value, version }
    }

    fn object(properties: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": properties, "required": required})
    }

    fn register_input(schema: Value) -> RegisterSchemaInput {
        RegisterSchemaInput {
            subject: Some("order.placed".into()),
            schema: Some(schema),
            ..Default::default()
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[tokio::test]
    async fn registers_version_one_with_the_defaults() {
        let mut state = MockStateStore::new();
        state.expect_get().returning(|_, _, _| Ok(None));
        state
            .expect_put()
            .withf(|tenant, ns, key, value, expected| {
                tenant.as_str() == "default"
                    && ns == SCHEMA_NAMESPACE
                    && key == "order.placed"
                    && *expected == Some(0)
                    && value["compatibility"] == "BACKWARD"
                    && value["enforce"] == true
                    && value["versions"][0]["version"] == 1
                    && value["versions"][0]["schema"]["type"] == "object"
            })
            .times(1)
            .returning(|_, _, _, _, _| Ok(1));
        let registered = registry(state, accepting_validator())
            .register(&caller(), register_input(json!({"type": "object"})))
            .await
            .unwrap();
        assert!(registered.created);
        assert_eq!(registered.schema.version, 1);
        assert_eq!(registered.schema.subject.as_str(), "order.placed");
        assert_eq!(registered.schema.compatibility, CompatibilityMode::Backward);
        assert!(registered.schema.enforce);
    }

    #[tokio::test]
    async fn event_type_names_the_subject_and_settings_can_be_given() {
        let mut state = MockStateStore::new();
        state.expect_get().returning(|_, _, _| Ok(None));
        state
            .expect_put()
            .withf(|_, _, key, value, _| {
                key == "user.created"
                    && value["compatibility"] == "FULL"
                    && value["enforce"] == false
            })
            .returning(|_, _, _, _, _| Ok(1));
        let registered = registry(state, accepting_validator())
            .register(
                &caller(),
                RegisterSchemaInput {
                    event_type: Some("user.created".into()),
                    schema: Some(json!(true)),
                    compatibility: Some("full".into()),
                    enforce: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(registered.schema.subject.as_str(), "user.created");
        assert_eq!(registered.schema.compatibility, CompatibilityMode::Full);
        assert!(!registered.schema.enforce);
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_any_storage() {
        let uc = || registry(MockStateStore::new(), MockSchemaValidator::new());
        let cases = [
            (RegisterSchemaInput::default(), vec!["subject", "schema"]),
            (
                RegisterSchemaInput {
                    subject: Some("a..b".into()),
                    schema: Some(json!(1)),
                    compatibility: Some("SOMETIMES".into()),
                    ..Default::default()
                },
                vec!["subject", "compatibility", "schema"],
            ),
            (
                RegisterSchemaInput {
                    subject: Some("a".into()),
                    event_type: Some("b".into()),
                    schema: Some(json!({})),
                    ..Default::default()
                },
                vec!["event_type"],
            ),
            (
                RegisterSchemaInput {
                    subject: Some("validate".into()),
                    schema: Some(json!({})),
                    ..Default::default()
                },
                vec!["subject"],
            ),
            (
                register_input(
                    json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}),
                ),
                vec!["schema/$schema"],
            ),
        ];
        for (input, expected) in cases {
            let Err(SchemaError::Invalid(errors)) = uc().register(&caller(), input).await else {
                panic!("expected invalid for {expected:?}");
            };
            assert_eq!(fields(&errors), expected);
        }
    }

    #[tokio::test]
    async fn a_schema_that_does_not_compile_is_invalid_with_pointers() {
        let mut validator = MockSchemaValidator::new();
        validator.expect_compile().returning(|_| {
            Err(vec![SchemaIssue::new(
                "/properties/a/type",
                "\"strin\" is not valid",
            )])
        });
        let Err(SchemaError::Invalid(errors)) = registry(MockStateStore::new(), validator)
            .register(
                &caller(),
                register_input(json!({"properties": {"a": {"type": "strin"}}})),
            )
            .await
        else {
            panic!("expected invalid");
        };
        assert_eq!(fields(&errors), ["schema/properties/a/type"]);
    }

    #[tokio::test]
    async fn re_registering_an_existing_schema_returns_its_version_and_writes_nothing() {
        let v1 = object(json!({"a": {"type": "string"}}), &["a"]);
        let v2 = object(
            json!({"a": {"type": "string"}, "b": {"type": "string"}}),
            &["a"],
        );
        let mut state = MockStateStore::new();
        let value = stored("BACKWARD", true, &[v1.clone(), v2]);
        state
            .expect_get()
            .returning(move |_, _, _| Ok(Some(entry(value.clone(), 2))));
        state.expect_put().never();
        let registered = registry(state, accepting_validator())
            .register(&caller(), register_input(v1))
            .await
            .unwrap();
        assert!(!registered.created);
        assert_eq!(registered.schema.version, 1);
    }

    #[tokio::test]
    async fn an_incompatible_schema_is_refused_and_not_written() {
        let v1 = object(json!({"a": {"type": "string"}}), &["a"]);
        let mut state = MockStateStore::new();
        let value = stored("BACKWARD", true, &[v1]);
        state
            .expect_get()
            .returning(move |_, _, _| Ok(Some(entry(value.clone(), 1))));
        state.expect_put().never();
        let new = object(
            json!({"a": {"type": "string"}, "b": {"type": "string"}}),
            &["a", "b"],
        );
        let err = registry(state, accepting_validator())
            .register(&caller(), register_input(new))
            .await
            .unwrap_err();
        let SchemaError::Incompatible { mode, errors, .. } = err else {
            panic!("expected incompatible, got {err:?}");
        };
        assert_eq!(mode, CompatibilityMode::Backward);
        assert_eq!(fields(&errors), ["schema/required"]);
        assert!(
            errors[0].message.contains("'b' is newly required"),
            "{errors:?}"
        );
        assert!(
            errors[0].message.contains("against version 1"),
            "{errors:?}"
        );
    }

    #[tokio::test]
    async fn every_previous_version_is_checked_not_only_the_latest() {
        // v2 was registered while the subject was NONE; the mode is BACKWARD again now.
        let v1 = object(json!({"a": {"type": "integer"}}), &[]);
        let v2 = object(json!({"a": {"type": "string"}}), &[]);
        let mut v3 = v2.clone();
        v3["description"] = json!("v2 with a description");
        let mut state = MockStateStore::new();
        let value = stored("BACKWARD", true, &[v1, v2]);
        state
            .expect_get()
            .returning(move |_, _, _| Ok(Some(entry(value.clone(), 2))));
        state.expect_put().never();
        let err = registry(state, accepting_validator())
            .register(&caller(), register_input(v3))
            .await
            .unwrap_err();
        let SchemaError::Incompatible { errors, .. } = err else {
            panic!("expected incompatible, got {err:?}");
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.contains("against version 1"),
            "{errors:?}"
        );
    }

    #[tokio::test]
    async fn mode_none_accepts_any_change_as_the_next_version() {
        let mut state = MockStateStore::new();
        let value = stored("NONE", true, &[json!({"type": "string"})]);
        state
            .expect_get()
            .returning(move |_, _, _| Ok(Some(entry(value.clone(), 7))));
        state
            .expect_put()
            .withf(|_, _, _, value, expected| {
                *expected == Some(7) && value["versions"][1]["version"] == 2
            })
            .returning(|_, _, _, _, _| Ok(8));
        let registered = registry(state, accepting_validator())
            .register(&caller(), register_input(json!({"type": "integer"})))
            .await
            .unwrap();
        assert_eq!(registered.schema.version, 2);
    }

    #[tokio::test]
    async fn settings_of_an_existing_subject_are_not_changed_by_a_registration() {
        let mut state = MockStateStore::new();
        let value = stored("BACKWARD", true, &[json!({"type": "string"})]);
        state
            .expect_get()
            .returning(move |_, _, _| Ok(Some(entry(value.clone(), 1))));
        state.expect_put().never();
        let mut input = register_input(json!({"type": "integer"}));
        input.compatibility = Some("NONE".into());
        let Err(SchemaError::Invalid(errors)) = registry(state, accepting_validator())
            .register(&caller(), input)
            .await
        else {
            panic!("expected invalid");
        };
        assert_eq!(fields(&errors), ["compatibility"]);
    }

    #[tokio::test]
    async fn a_concurrent_registration_is_retried_against_the_new_state() {
        let mut state = MockStateStore::new();
        let mut seq = mockall::Sequence::new();
        state
            .expect_get()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(None));
        state
            .expect_put()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _, _, _| {
                Err(StateError::VersionConflict {
                    expected: 0,
                    current: 1,
                })
            });
        let value = stored("BACKWARD", true, &[json!({"type": "object"})]);
        state
            .expect_get()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _, _| Ok(Some(entry(value.clone(), 1))));
        state
            .expect_put()
            .times(1)
            .in_sequence(&mut seq)
            .withf(|_, _, _, _, expected| *expected == Some(1))
            .returning(|_, _, _, _, _| Ok(2));
        let registered = registry(state, accepting_validator())
            .register(
                &caller(),
                register_input(json!({"type": "object", "title": "t"})),
            )
            .await
            .unwrap();
        assert_eq!(registered.schema.version, 2);
    }

    #[tokio::test]
    async fn storage_failures_are_unavailable() {
        let mut state = MockStateStore::new();
        state
            .expect_get()
            .returning(|_, _, _| Err(StateError::Unavailable("down".into())));
        assert!(matches!(
            registry(state, accepting_validator())
                .register(&caller(), register_input(json!({})))
                .await,
            Err(SchemaError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn get_versions_and_list() {
        let v1 = json!({"type": "object"});
        let v2 = json!({"type": "object", "title": "two"});
        let value = stored("FORWARD", false, &[v1.clone(), v2.clone()]);
        let mut state = MockStateStore::new();
        let for_get = value.clone();
        state.expect_get().returning(move |_, _, key| {
            Ok((key == "order.placed").then(|| entry(for_get.clone(), 2)))
        });
        state.expect_list().returning(move |_, _, _, _, _| {
            Ok(vec![("order.placed".into(), entry(value.clone(), 2))])
        });
        let uc = registry(state, MockSchemaValidator::new());
        let latest = uc.get(&caller(), "order.placed", None).await.unwrap();
        assert_eq!((latest.version, &latest.schema), (2, &v2));
        assert_eq!(latest.compatibility, CompatibilityMode::Forward);
        let first = uc.get(&caller(), "order.placed", Some("1")).await.unwrap();
        assert_eq!(first.schema, v1);
        assert!(matches!(
            uc.get(&caller(), "order.placed", Some("3")).await,
            Err(SchemaError::NotFound(_))
        ));
        assert!(matches!(
            uc.get(&caller(), "order.placed", Some("0")).await,
            Err(SchemaError::Invalid(_))
        ));
        assert!(matches!(
            uc.get(&caller(), "other", None).await,
            Err(SchemaError::NotFound(_))
        ));
        assert!(matches!(
            uc.get(&caller(), "a b", None).await,
            Err(SchemaError::Invalid(_))
        ));
        let (_, versions) = uc.versions(&caller(), "order.placed").await.unwrap();
        assert_eq!(versions, [1, 2]);
        let list = uc.list(&caller()).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].latest_version, list[0].versions), (2, 2));
        assert!(!list[0].enforce);
    }

    #[tokio::test]
    async fn configure_changes_mode_and_enforcement() {
        let value = stored("BACKWARD", true, &[json!({})]);
        let mut state = MockStateStore::new();
        state.expect_get().returning(move |_, _, key| {
            Ok((key == "order.placed").then(|| entry(value.clone(), 3)))
        });
        state
            .expect_put()
            .withf(|_, _, _, value, expected| {
                *expected == Some(3)
                    && value["compatibility"] == "NONE"
                    && value["enforce"] == false
            })
            .times(1)
            .returning(|_, _, _, _, _| Ok(4));
        let uc = registry(state, MockSchemaValidator::new());
        let config = uc
            .configure(
                &caller(),
                "order.placed",
                ConfigureSubjectInput {
                    compatibility: Some("NONE".into()),
                    enforce: Some(false),
                },
            )
            .await
            .unwrap();
        assert_eq!(config.compatibility, CompatibilityMode::None);
        assert!(!config.enforce);
        assert!(matches!(
            uc.configure(
                &caller(),
                "missing",
                ConfigureSubjectInput {
                    compatibility: Some("FULL".into()),
                    enforce: None
                }
            )
            .await,
            Err(SchemaError::NotFound(_))
        ));
        let Err(SchemaError::Invalid(errors)) = uc
            .configure(&caller(), "order.placed", ConfigureSubjectInput::default())
            .await
        else {
            panic!("expected invalid");
        };
        assert_eq!(fields(&errors), ["compatibility"]);
    }

    #[tokio::test]
    async fn validate_reports_payload_errors_without_failing() {
        let value = stored("BACKWARD", false, &[json!({}), json!({"title": "2"})]);
        let mut state = MockStateStore::new();
        state.expect_get().returning(move |_, _, key| {
            Ok((key == "order.placed").then(|| entry(value.clone(), 2)))
        });
        let uc = registry(state, accepting_validator());
        let input = |payload: Value, version: Option<u64>| ValidateInput {
            subject: Some("order.placed".into()),
            payload: Some(payload),
            version,
        };
        let report = uc
            .validate(&caller(), input(json!({"amount": "x"}), None))
            .await
            .unwrap();
        assert_eq!(report.version, 2);
        assert_eq!(fields(&report.errors), ["payload/amount"]);
        let report = uc
            .validate(&caller(), input(json!({"amount": 1}), Some(1)))
            .await
            .unwrap();
        assert!(report.errors.is_empty());
        assert_eq!(report.version, 1);
        assert!(matches!(
            uc.validate(&caller(), input(json!({}), Some(9))).await,
            Err(SchemaError::NotFound(_))
        ));
        let Err(SchemaError::Invalid(errors)) = uc
            .validate(
                &caller(),
                ValidateInput {
                    version: Some(0),
                    ..Default::default()
                },
            )
            .await
        else {
            panic!("expected invalid");
        };
        assert_eq!(fields(&errors), ["subject", "payload", "version"]);
    }

    fn event(event_type: &str, payload: &str) -> ProposedEvent {
        ProposedEvent {
            id: EventId::generate(),
            entity_id: EntityId::parse("order-1").unwrap(),
            event_type: EventType::parse(event_type).unwrap(),
            payload: RawValue::from_string(payload.to_owned()).unwrap(),
            metadata: None,
            expected_version: ExpectedVersion::Any,
        }
    }

    /// A state store listing one enforced and one unenforced subject, `times` times.
    fn listing_state(times: usize) -> MockStateStore {
        let mut state = MockStateStore::new();
        state.expect_list().times(times).returning(|_, _, _, _, _| {
            let mut unenforced = stored("BACKWARD", false, &[json!({})]);
            unenforced["subject"] = json!("order.noted");
            Ok(vec![
                ("order.noted".into(), entry(unenforced, 1)),
                (
                    "order.placed".into(),
                    entry(stored("BACKWARD", true, &[json!({})]), 1),
                ),
            ])
        });
        state
    }

    #[tokio::test]
    async fn the_guard_refuses_a_batch_naming_every_bad_payload() {
        let uc = registry(listing_state(1), accepting_validator());
        let events = [
            event("order.placed", r#"{"amount": 1}"#),
            event("order.placed", r#"{"amount": "1"}"#),
            event("order.noted", r#"{"amount": "not checked"}"#),
            event("order.other", r#"{}"#),
            event("order.placed", r#"{}"#),
        ];
        let err = uc
            .before_append(&caller(), &events, true)
            .await
            .unwrap_err();
        let AppendError::SchemaViolation(errors) = err else {
            panic!("expected a schema violation, got {err:?}");
        };
        assert_eq!(
            fields(&errors),
            ["events[1].payload/amount", "events[4].payload/amount"]
        );
        // single events are named without the batch prefix; the cache answers (one list)
        let err = uc
            .before_append(&caller(), &[event("order.placed", "{}")], false)
            .await
            .unwrap_err();
        assert!(matches!(&err, AppendError::SchemaViolation(e) if e[0].field == "payload/amount"));
        assert!(
            uc.before_append(&caller(), &events[..1], true)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_huge_bad_batch_reports_a_bounded_number_of_errors() {
        let uc = registry(listing_state(1), accepting_validator());
        let events: Vec<_> = (0..MAX_APPEND_VIOLATIONS + 50)
            .map(|_| event("order.placed", "{}"))
            .collect();
        let Err(AppendError::SchemaViolation(errors)) =
            uc.before_append(&caller(), &events, true).await
        else {
            panic!("expected a schema violation");
        };
        assert_eq!(errors.len(), MAX_APPEND_VIOLATIONS);
    }

    #[tokio::test]
    async fn a_tenant_without_schemas_is_loaded_once_and_passes() {
        let mut state = MockStateStore::new();
        state
            .expect_list()
            .times(1)
            .returning(|_, _, _, _, _| Ok(vec![]));
        let uc = registry(state, MockSchemaValidator::new());
        for _ in 0..3 {
            uc.before_append(&caller(), &[event("a", "1")], false)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn registration_and_configuration_drop_the_cached_schemas() {
        let mut state = listing_state(3);
        let value = stored("BACKWARD", true, &[json!({})]);
        state
            .expect_get()
            .returning(move |_, _, _| Ok(Some(entry(value.clone(), 1))));
        state.expect_put().returning(|_, _, _, _, _| Ok(2));
        let uc = registry(state, accepting_validator());
        let events = [event("order.placed", r#"{"amount": 1}"#)];
        uc.before_append(&caller(), &events, false).await.unwrap();
        uc.register(&caller(), register_input(json!({"title": "v2"})))
            .await
            .unwrap();
        uc.before_append(&caller(), &events, false).await.unwrap();
        uc.configure(
            &caller(),
            "order.placed",
            ConfigureSubjectInput {
                compatibility: None,
                enforce: Some(true),
            },
        )
        .await
        .unwrap();
        uc.before_append(&caller(), &events, false).await.unwrap();
    }

    #[tokio::test]
    async fn the_cache_expires_after_its_ttl() {
        let uc = SchemaRegistry::new(
            Arc::new(listing_state(2)),
            Arc::new(accepting_validator()),
            clock(),
            SchemaSettings {
                cache_ttl: Duration::ZERO,
                ..SchemaSettings::default()
            },
        );
        let events = [event("order.placed", r#"{"amount": 1}"#)];
        uc.before_append(&caller(), &events, false).await.unwrap();
        uc.before_append(&caller(), &events, false).await.unwrap();
    }

    #[tokio::test]
    async fn the_guard_answers_unavailable_when_the_state_store_is() {
        let mut state = MockStateStore::new();
        state
            .expect_list()
            .returning(|_, _, _, _, _| Err(StateError::Unavailable("recovering".into())));
        let uc = registry(state, MockSchemaValidator::new());
        assert!(matches!(
            uc.before_append(&caller(), &[event("a", "{}")], false)
                .await,
            Err(AppendError::Unavailable(_))
        ));
    }
}
