//! The `SchemaValidator` port: compiles JSON Schemas (draft 2020-12) and validates documents
//! against them. The adapter is the `jsonschema` crate (infrastructure); use cases see only
//! these traits, so their tests run with mocks.

use std::sync::Arc;

use serde_json::Value;

/// One problem found in a schema or a document: `pointer` is a JSON pointer into it (`""` for
/// the root, `/amount` for a member), `message` is written for the API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaIssue {
    pub pointer: String,
    pub message: String,
}

impl SchemaIssue {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// A compiled schema, ready to validate documents; cheap to share.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait CompiledSchema: Send + Sync {
    /// Every way `instance` fails the schema (empty = valid). Never fails itself.
    fn validate(&self, instance: &Value) -> Vec<SchemaIssue>;
}

/// Compiles schemas.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait SchemaValidator: Send + Sync {
    /// Compiles a draft 2020-12 schema.
    ///
    /// # Errors
    /// The schema is not a valid draft 2020-12 schema (against the meta-schema), names another
    /// draft in `$schema`, or refers to a resource outside itself (remote `$ref`s are never
    /// fetched): the issues name where, with pointers into the schema.
    fn compile(&self, schema: &Value) -> Result<Arc<dyn CompiledSchema>, Vec<SchemaIssue>>;
}
