//! [`JsonSchemaValidator`]: the `SchemaValidator` port on the `jsonschema` crate, draft
//! 2020-12.
//!
//! - Schemas are checked against the 2020-12 meta-schema when compiled.
//! - No resource outside the schema is ever fetched: the crate is built without its HTTP and
//!   file resolvers, so a `$ref` to another document fails to compile (400), and the server
//!   never reaches out to a URL a client chose.
//! - `format` is an annotation (the 2020-12 default), not asserted.
//! - A document's issues are capped at [`MAX_ISSUES`] so one huge bad payload cannot make a
//!   huge answer.

use std::sync::Arc;

use allsource_application::ports::{CompiledSchema, SchemaIssue, SchemaValidator};
use serde_json::Value;

/// At most this many issues are reported per validated document.
pub const MAX_ISSUES: usize = 100;

/// Compiles draft 2020-12 schemas with the `jsonschema` crate.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSchemaValidator;

impl JsonSchemaValidator {
    pub fn new() -> Self {
        Self
    }
}

struct Compiled(jsonschema::Validator);

impl CompiledSchema for Compiled {
    fn validate(&self, instance: &Value) -> Vec<SchemaIssue> {
        self.0
            .iter_errors(instance)
            .take(MAX_ISSUES)
            .map(|e| SchemaIssue::new(e.instance_path().as_str(), e.to_string()))
            .collect()
    }
}

impl SchemaValidator for JsonSchemaValidator {
    fn compile(&self, schema: &Value) -> Result<Arc<dyn CompiledSchema>, Vec<SchemaIssue>> {
        jsonschema::draft202012::options()
            .build(schema)
            .map(|validator| Arc::new(Compiled(validator)) as Arc<dyn CompiledSchema>)
            // When the schema fails the meta-schema, the error's instance is the schema.
            .map_err(|e| vec![SchemaIssue::new(e.instance_path().as_str(), e.to_string())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(schema: Value) -> Arc<dyn CompiledSchema> {
        match JsonSchemaValidator::new().compile(&schema) {
            Ok(compiled) => compiled,
            Err(issues) => panic!("{schema} should compile: {issues:?}"),
        }
    }

    fn pointers(issues: &[SchemaIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.pointer.as_str()).collect()
    }

    #[test]
    fn validates_with_pointers_to_the_bad_members() {
        let schema = compile(json!({
            "type": "object",
            "properties": {
                "amount_cents": {"type": "integer", "minimum": 0},
                "currency": {"enum": ["EUR", "USD"]},
                "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
            },
            "required": ["amount_cents", "currency"]
        }));
        assert!(
            schema
                .validate(&json!({"amount_cents": 100, "currency": "EUR"}))
                .is_empty()
        );
        let issues = schema.validate(&json!({"amount_cents": -1, "currency": "JPY",
                                             "lines": [{"sku": "a"}, {}]}));
        let mut found = pointers(&issues);
        found.sort_unstable();
        assert_eq!(found, ["/amount_cents", "/currency", "/lines/1"]);
        assert!(issues.iter().all(|i| !i.message.is_empty()));
        let missing = schema.validate(&json!({"currency": "EUR"}));
        assert_eq!(pointers(&missing), [""]);
        assert!(missing[0].message.contains("amount_cents"), "{missing:?}");
    }

    #[test]
    fn draft_2020_12_features() {
        let tuple = compile(json!({
            "type": "array",
            "prefixItems": [{"type": "string"}, {"type": "integer"}],
            "items": false
        }));
        assert!(tuple.validate(&json!(["a", 1])).is_empty());
        assert_eq!(pointers(&tuple.validate(&json!(["a", "b"]))), ["/1"]);
        assert!(!tuple.validate(&json!(["a", 1, 2])).is_empty());

        let defs = compile(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": {"money": {"type": "integer", "minimum": 0}},
            "type": "object",
            "properties": {"price": {"$ref": "#/$defs/money"}},
            "unevaluatedProperties": false
        }));
        assert!(defs.validate(&json!({"price": 3})).is_empty());
        assert_eq!(pointers(&defs.validate(&json!({"price": -3}))), ["/price"]);
        assert!(!defs.validate(&json!({"price": 3, "other": 1})).is_empty());

        let dependent = compile(json!({"dependentRequired": {"card": ["cvc"]}}));
        assert!(!dependent.validate(&json!({"card": "x"})).is_empty());
        assert!(
            dependent
                .validate(&json!({"card": "x", "cvc": "1"}))
                .is_empty()
        );
    }

    #[test]
    fn formats_are_annotations() {
        let schema = compile(json!({"type": "string", "format": "email"}));
        assert!(schema.validate(&json!("not an email")).is_empty());
    }

    #[test]
    fn invalid_schemas_are_refused_with_a_pointer() {
        let issues = JsonSchemaValidator::new()
            .compile(&json!({"type": "object", "properties": {"a": {"type": "strin"}}}))
            .err()
            .expect("invalid type name");
        assert_eq!(pointers(&issues), ["/properties/a/type"]);
        for bad in [
            json!({"minimum": "zero"}),
            json!({"required": "a"}),
            json!({"pattern": "("}),
        ] {
            assert!(
                JsonSchemaValidator::new().compile(&bad).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn remote_references_are_never_fetched() {
        for schema in [
            json!({"$ref": "https://example.com/schema.json"}),
            json!({"$ref": "file:///etc/passwd"}),
            json!({"$ref": "#/$defs/missing"}),
        ] {
            assert!(
                JsonSchemaValidator::new().compile(&schema).is_err(),
                "{schema} should be refused"
            );
        }
    }

    #[test]
    fn issues_are_capped() {
        let schema = compile(json!({"type": "array", "items": {"type": "string"}}));
        let many: Vec<u32> = (0..1000).collect();
        assert_eq!(schema.validate(&json!(many)).len(), MAX_ISSUES);
    }

    #[test]
    fn boolean_schemas() {
        assert!(compile(json!(true)).validate(&json!({"x": 1})).is_empty());
        assert_eq!(pointers(&compile(json!(false)).validate(&json!(1))), [""]);
    }
}
