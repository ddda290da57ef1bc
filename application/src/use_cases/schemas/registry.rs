//! The registry's use cases: registering versions (checked for compatibility), listing,
//! reading, configuring subjects, validating payloads on demand; and the storage of subjects.

use std::sync::Arc;

use allsource_domain::schema::check_compatibility;
use allsource_domain::{
    CompatibilityMode, MAX_NESTING, SchemaVersion, Subject, TenantId, check_json,
};
use serde_json::Value;

use super::{
    ConfigureSubjectInput, DRAFT_2020_12, RESERVED_SUBJECT, RegisterSchemaInput, Registered,
    SCHEMA_NAMESPACE, SchemaError, SchemaRegistry, SchemaView, StoredSubject, StoredVersion,
    SubjectConfig, SubjectSummary, ValidateInput, ValidationReport, WRITE_ATTEMPTS,
    issues_as_fields, not_registered, pointer_field, subject_field,
};
use crate::Caller;
use crate::ports::{CompiledSchema, StateEntry, StateError};
use crate::use_cases::params::{Errors, FieldError};

impl SchemaRegistry {
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
        // The schema is stored inside a subject record: deeper than an event payload may be, it
        // could not be written (nor read back) by the state store.
        if let Some(schema) = &schema
            && let Err(problem) = check_json(&schema.to_string(), MAX_NESTING)
        {
            errors.push("schema", problem.to_string());
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

    pub(super) fn compile_stored(
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

    /// Every subject of the tenant; one unreadable record fails the call.
    async fn all(&self, tenant: &TenantId) -> Result<Vec<StoredSubject>, SchemaError> {
        self.entries(tenant)
            .await?
            .into_iter()
            .map(|(key, entry)| {
                serde_json::from_value(entry.value).map_err(|e| {
                    SchemaError::Internal(anyhow::anyhow!(
                        "stored subject '{key}' is unreadable: {e}"
                    ))
                })
            })
            .collect()
    }

    /// Every subject record of the tenant as stored, by key.
    pub(super) async fn entries(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(String, StateEntry)>, SchemaError> {
        const PAGE: usize = 500;
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .state
                .list(tenant, SCHEMA_NAMESPACE, None, after.clone(), PAGE)
                .await?;
            let full = page.len() == PAGE;
            after = page.last().map(|(key, _)| key.clone());
            entries.extend(page);
            if !full {
                return Ok(entries);
            }
        }
    }
}
