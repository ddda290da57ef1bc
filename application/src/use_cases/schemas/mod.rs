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

//!
//! # Layout
//! - [`registry`]: registration, listing, configuration and validation of subjects.
//! - [`enforcement`]: the cache of enforced schemas and the [`AppendGuard`](super::AppendGuard)
//!   that checks appended events against it.

mod enforcement;
mod registry;

use std::sync::Arc;
use std::time::Duration;

use allsource_domain::{CompatibilityMode, SchemaVersion, Subject};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::{Errors, FieldError};
use crate::ports::{Clock, SchemaIssue, SchemaValidator, StateStore, StorageFailure};
use enforcement::EnforcementCache;

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

impl StorageFailure for SchemaError {
    fn unavailable(why: String) -> Self {
        Self::Unavailable(why)
    }
    fn internal(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
    // A lost optimistic write is retried where it happens (`store`).
}

crate::storage_errors!(SchemaError);

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

/// The schema registry use case; also the [`AppendGuard`](super::AppendGuard) that enforces
/// schemas (see the `enforcement` module).
pub struct SchemaRegistry {
    state: Arc<dyn StateStore>,
    validator: Arc<dyn SchemaValidator>,
    clock: Arc<dyn Clock>,
    settings: SchemaSettings,
    cache: EnforcementCache,
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
            cache: EnforcementCache::default(),
        }
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

#[cfg(test)]
mod tests;
