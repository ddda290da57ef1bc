//! The policy language: rules the control plane applies to every request after role-based
//! access control has let it through.
//!
//! A [`Policy`] has conditions (all must hold) on the attributes of a request
//! ([`PolicyContext`]) and an [`Effect`] when they do. [`evaluate`] walks the enabled policies
//! in priority order:
//!
//! - higher `priority` first; equal priorities in ascending `id` order (deterministic);
//! - the first matching `deny` or `allow` decides, and evaluation stops;
//! - a matching `warn` is collected and evaluation goes on;
//! - a matching `rate_limit` is collected and evaluation goes on: the caller of [`evaluate`]
//!   counts requests per (policy, caller) and refuses those over `per_minute` (the counting is
//!   state, so it is not here);
//! - no deciding match → allow (role-based access control has already run).
//!
//! # Attributes
//! `role`, `tenant_id`, `user_id`, `route` (the route pattern, `/api/v1/tenants/{id}`), `path`
//! (the actual path), `method` (upper case), `request.<name>` (query parameters, and what the
//! HTTP layer reads from bodies: `request.record_count`), `resource.<name>` (path parameters:
//! `resource.id`). An absent attribute makes every condition on it false, `ne` included, so a
//! rule never fires on data it cannot see.
//!
//! # Operators
//! `eq`, `ne` (JSON equality; a number and a string holding the same number are equal, since
//! query parameters arrive as text), `gt`, `lt` (numbers, or strings that parse as numbers),
//! `contains` (substring of a string attribute, or element of an array attribute), `in` (the
//! attribute is one of the value's array).
//!
//! # Variables
//! String values may hold `${user_id}` and `${tenant_id}`, replaced by the caller's. A condition
//! whose value names a variable the caller lacks (no user behind a system caller) is false.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest policy name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Most conditions a policy may have.
pub const MAX_CONDITIONS: usize = 32;
/// Longest policy id, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Priorities lie in `-MAX_PRIORITY..=MAX_PRIORITY`.
pub const MAX_PRIORITY: i64 = 1_000_000;

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Effect {
    /// Let the request through; no policy of lower priority is consulted.
    Allow,
    /// Refuse the request (403).
    Deny,
    /// Let it through with a warning (response header, audit record); evaluation goes on.
    Warn,
    /// At most `per_minute` matching requests per caller and minute; more are refused (429).
    RateLimit { per_minute: u32 },
}

impl Effect {
    /// The `action` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Warn => "warn",
            Effect::RateLimit { .. } => "rate_limit",
        }
    }
}

/// How a condition compares the attribute with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Eq,
    Ne,
    Gt,
    Lt,
    Contains,
    In,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Ne => "ne",
            Operator::Gt => "gt",
            Operator::Lt => "lt",
            Operator::Contains => "contains",
            Operator::In => "in",
        }
    }

    /// Parses `eq`, `ne`, `gt`, `lt`, `contains`, `in`.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "eq" => Operator::Eq,
            "ne" => Operator::Ne,
            "gt" => Operator::Gt,
            "lt" => Operator::Lt,
            "contains" => Operator::Contains,
            "in" => Operator::In,
            _ => return None,
        })
    }
}

/// One test on an attribute of the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub attribute: String,
    pub operator: Operator,
    pub value: Value,
}

impl Condition {
    pub fn new(attribute: impl Into<String>, operator: Operator, value: impl Into<Value>) -> Self {
        Self {
            attribute: attribute.into(),
            operator,
            value: value.into(),
        }
    }

    /// Whether the condition holds for the context.
    pub fn holds(&self, context: &PolicyContext) -> bool {
        let Some(actual) = context.get(&self.attribute) else {
            return false;
        };
        let Some(expected) = substitute(&self.value, context) else {
            return false;
        };
        match self.operator {
            Operator::Eq => loose_eq(actual, &expected),
            Operator::Ne => !loose_eq(actual, &expected),
            Operator::Gt => compare(actual, &expected).is_some_and(|o| o.is_gt()),
            Operator::Lt => compare(actual, &expected).is_some_and(|o| o.is_lt()),
            Operator::Contains => match (actual, &expected) {
                (Value::String(a), Value::String(e)) => a.contains(e.as_str()),
                (Value::Array(items), e) => items.iter().any(|item| loose_eq(item, e)),
                _ => false,
            },
            Operator::In => match &expected {
                Value::Array(items) => items.iter().any(|item| loose_eq(actual, item)),
                _ => false,
            },
        }
    }
}

/// A rule of the policy engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub priority: i64,
    pub enabled: bool,
    #[serde(flatten)]
    pub effect: Effect,
    pub conditions: Vec<Condition>,
}

impl Policy {
    /// Whether every condition holds (a policy without conditions matches every request).
    pub fn matches(&self, context: &PolicyContext) -> bool {
        self.conditions.iter().all(|c| c.holds(context))
    }

    /// The policy's problems, as (field, message), with field names as the API spells them.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut push = |field: String, message: &str| problems.push((field, message.to_owned()));
        if !valid_id(&self.id) {
            push(
                "id".into(),
                "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
            );
        }
        let name_chars = self.name.chars().count();
        if self.name.trim().is_empty() || name_chars > MAX_NAME_CHARS {
            push(
                "name".into(),
                "must be 1-128 characters and not only spaces",
            );
        }
        if self.name.chars().any(char::is_control) {
            push("name".into(), "must not contain control characters");
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            push("description".into(), "must be at most 1024 characters");
        }
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&self.priority) {
            push("priority".into(), "must be between -1000000 and 1000000");
        }
        if let Effect::RateLimit { per_minute } = self.effect
            && per_minute == 0
        {
            push("per_minute".into(), "must be at least 1");
        }
        if self.conditions.len() > MAX_CONDITIONS {
            push("conditions".into(), "at most 32 conditions");
        }
        for (i, condition) in self.conditions.iter().enumerate() {
            if let Err(message) = check_attribute(&condition.attribute) {
                push(format!("conditions[{i}].attribute"), message);
            }
            if let Err(message) = check_value(condition.operator, &condition.value) {
                push(format!("conditions[{i}].value"), message);
            }
        }
        problems
    }
}

/// Whether `id` is a valid policy id (it appears in response headers, so it is plain ASCII).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The plain attributes; `request.<name>` and `resource.<name>` come on top.
pub const ATTRIBUTES: [&str; 6] = ["role", "tenant_id", "user_id", "route", "path", "method"];

/// Whether `attribute` names an attribute of the language; the error says which ones do.
///
/// # Errors
/// The attribute is none of `ATTRIBUTES`, `request.<name>`, `resource.<name>`.
pub fn check_attribute(attribute: &str) -> Result<(), &'static str> {
    if ATTRIBUTES.contains(&attribute) {
        return Ok(());
    }
    let name = attribute
        .strip_prefix("request.")
        .or_else(|| attribute.strip_prefix("resource."));
    match name {
        Some(name)
            if !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) =>
        {
            Ok(())
        }
        _ => Err(
            "must be one of role, tenant_id, user_id, route, path, method, request.<name> or \
             resource.<name>",
        ),
    }
}

fn check_value(operator: Operator, value: &Value) -> Result<(), &'static str> {
    match operator {
        Operator::Gt | Operator::Lt if number(value).is_none() => {
            Err("gt and lt need a number (or a string holding one)")
        }
        Operator::In if !value.is_array() => Err("in needs an array of values"),
        Operator::Contains if !(value.is_string() || value.is_number() || value.is_boolean()) => {
            Err("contains needs a string, a number or a boolean")
        }
        _ if has_unknown_variable(value) => {
            Err("the only variables are ${user_id} and ${tenant_id}")
        }
        _ => Ok(()),
    }
}

fn has_unknown_variable(value: &Value) -> bool {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    return true;
                };
                if !matches!(&after[..end], "user_id" | "tenant_id") {
                    return true;
                }
                rest = &after[end + 1..];
            }
            false
        }
        Value::Array(items) => items.iter().any(has_unknown_variable),
        _ => false,
    }
}

/// The attributes of one request, as the policy engine sees them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyContext {
    attributes: BTreeMap<String, Value>,
}

impl PolicyContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an attribute (`role`, `request.limit`, `resource.id`, ...).
    #[must_use]
    pub fn with(mut self, attribute: impl Into<String>, value: impl Into<Value>) -> Self {
        self.set(attribute, value);
        self
    }

    pub fn set(&mut self, attribute: impl Into<String>, value: impl Into<Value>) {
        self.attributes.insert(attribute.into(), value.into());
    }

    /// Removes an attribute, returning its value.
    pub fn remove(&mut self, attribute: &str) -> Option<Value> {
        self.attributes.remove(attribute)
    }

    pub fn get(&self, attribute: &str) -> Option<&Value> {
        self.attributes.get(attribute)
    }

    /// Every attribute, by name.
    pub fn attributes(&self) -> &BTreeMap<String, Value> {
        &self.attributes
    }
}

/// A policy named in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub id: String,
    pub name: String,
    pub effect: Effect,
}

impl Matched {
    fn of(policy: &Policy) -> Self {
        Self {
            id: policy.id.clone(),
            name: policy.name.clone(),
            effect: policy.effect,
        }
    }
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// The `deny` or `allow` policy that decided, if one matched.
    pub decided_by: Option<Matched>,
    /// Matching `warn` policies seen before the decision, in evaluation order.
    pub warnings: Vec<Matched>,
    /// Matching `rate_limit` policies seen before the decision, in evaluation order.
    pub rate_limits: Vec<Matched>,
}

impl Decision {
    /// Whether a `deny` policy decided.
    pub fn denied(&self) -> bool {
        self.decided_by
            .as_ref()
            .is_some_and(|m| m.effect == Effect::Deny)
    }

    /// Every matching policy: the warnings, the rate limits, then the decider.
    pub fn matched(&self) -> impl Iterator<Item = &Matched> {
        self.warnings
            .iter()
            .chain(self.rate_limits.iter())
            .chain(self.decided_by.iter())
    }
}

/// Evaluates the enabled policies against the context (see the module docs for the order).
pub fn evaluate(policies: &[Policy], context: &PolicyContext) -> Decision {
    let mut ordered: Vec<&Policy> = policies.iter().filter(|p| p.enabled).collect();
    ordered.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
    let mut decision = Decision::default();
    for policy in ordered {
        if !policy.matches(context) {
            continue;
        }
        match policy.effect {
            Effect::Allow | Effect::Deny => {
                decision.decided_by = Some(Matched::of(policy));
                break;
            }
            Effect::Warn => decision.warnings.push(Matched::of(policy)),
            Effect::RateLimit { .. } => decision.rate_limits.push(Matched::of(policy)),
        }
    }
    decision
}

/// The value with `${user_id}` and `${tenant_id}` replaced from the context; `None` when it
/// names a variable the context lacks.
fn substitute(value: &Value, context: &PolicyContext) -> Option<Value> {
    match value {
        Value::String(s) if s.contains("${") => {
            let mut out = s.clone();
            for name in ["user_id", "tenant_id"] {
                let variable = format!("${{{name}}}");
                if out.contains(&variable) {
                    let replacement = context.get(name)?.as_str()?;
                    out = out.replace(&variable, replacement);
                }
            }
            Some(Value::String(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|item| substitute(item, context))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        other => Some(other.clone()),
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// JSON equality, except that a number equals a string holding the same number.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            matches!((number(a), number(b)), (Some(x), Some(y)) if x == y)
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    number(a)?.partial_cmp(&number(b)?)
}

/// Ids of the policies seeded at start ([`defaults`]).
pub mod default_ids {
    pub const PROTECT_DEFAULT_TENANT: &str = "default-protect-default-tenant";
    pub const ADMIN_CREATES_TENANTS: &str = "default-admin-creates-tenants";
    pub const WARN_LARGE_OPERATIONS: &str = "default-warn-large-operations";
    pub const NO_SELF_DELETION: &str = "default-no-self-deletion";
    pub const RATE_LIMIT_EXPENSIVE: &str = "default-rate-limit-expensive";
    pub const ALL: [&str; 5] = [
        PROTECT_DEFAULT_TENANT,
        ADMIN_CREATES_TENANTS,
        WARN_LARGE_OPERATIONS,
        NO_SELF_DELETION,
        RATE_LIMIT_EXPENSIVE,
    ];
}

/// Whether `id` is one of the default policies (which can be changed or disabled, never
/// deleted).
pub fn is_default(id: &str) -> bool {
    default_ids::ALL.contains(&id)
}

/// Requests per minute and caller of the expensive operations (default policy 5).
pub const EXPENSIVE_PER_MINUTE: u32 = 10;
/// Records one operation may touch before default policy 3 warns: a tenth of the largest batch
/// and page the server accepts (10,000), and the default page size (1,000), so that a default
/// read never warns and a large accepted one does.
pub const LARGE_OPERATION_RECORDS: u64 = 1_000;

/// The five default policies, seeded at start when absent.
pub fn defaults() -> Vec<Policy> {
    use Operator::*;
    use default_ids::*;
    let policy = |id: &str, name: &str, description: &str, priority, effect, conditions| Policy {
        id: id.into(),
        name: name.into(),
        description: description.into(),
        priority,
        enabled: true,
        effect,
        conditions,
    };
    vec![
        policy(
            PROTECT_DEFAULT_TENANT,
            "No deletion of the default tenant",
            "DELETE /api/v1/tenants/default is refused, whoever asks.",
            1000,
            Effect::Deny,
            vec![
                Condition::new("method", Eq, "DELETE"),
                Condition::new("route", Eq, "/api/v1/tenants/{id}"),
                Condition::new("resource.id", Eq, "default"),
            ],
        ),
        policy(
            ADMIN_CREATES_TENANTS,
            "Admin required to create tenants",
            "POST /api/v1/tenants by any role but admin is refused.",
            1000,
            Effect::Deny,
            vec![
                Condition::new("method", Eq, "POST"),
                Condition::new("route", Eq, "/api/v1/tenants"),
                Condition::new("role", Ne, "admin"),
            ],
        ),
        policy(
            WARN_LARGE_OPERATIONS,
            "Warn on operations over 1,000 records",
            "A batch of more than 1,000 events, or a read with a limit over 1,000, goes \
             through with a warning.",
            500,
            Effect::Warn,
            vec![Condition::new(
                "request.record_count",
                Gt,
                LARGE_OPERATION_RECORDS,
            )],
        ),
        policy(
            NO_SELF_DELETION,
            "No self-deletion",
            "A user cannot delete their own account.",
            1000,
            Effect::Deny,
            vec![
                Condition::new("method", Eq, "DELETE"),
                Condition::new("route", Eq, "/api/v1/auth/users/{id}"),
                Condition::new("resource.id", Eq, "${user_id}"),
            ],
        ),
        policy(
            RATE_LIMIT_EXPENSIVE,
            "Rate-limit expensive operations",
            "Replays, projection rebuilds and compaction triggers: at most 10 per minute and \
             caller.",
            900,
            Effect::RateLimit {
                per_minute: EXPENSIVE_PER_MINUTE,
            },
            vec![
                Condition::new("method", Eq, "POST"),
                Condition::new(
                    "route",
                    In,
                    serde_json::json!([
                        "/api/v1/replay",
                        "/api/v1/projections/{name}/rebuild",
                        "/api/v1/compaction/trigger"
                    ]),
                ),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> PolicyContext {
        PolicyContext::new()
            .with("role", "developer")
            .with("tenant_id", "acme")
            .with("user_id", "u1")
            .with("method", "POST")
            .with("route", "/api/v1/events/batch")
            .with("path", "/api/v1/events/batch")
            .with("request.record_count", 20_000)
            .with("request.limit", "500")
            .with("request.tags", json!(["a", "b"]))
            .with("resource.id", "u1")
    }

    fn holds(attribute: &str, operator: Operator, value: Value) -> bool {
        Condition::new(attribute, operator, value).holds(&ctx())
    }

    fn policy(id: &str, priority: i64, effect: Effect, conditions: Vec<Condition>) -> Policy {
        Policy {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            priority,
            enabled: true,
            effect,
            conditions,
        }
    }

    #[test]
    fn eq_and_ne() {
        assert!(holds("role", Operator::Eq, json!("developer")));
        assert!(!holds("role", Operator::Eq, json!("admin")));
        assert!(holds("role", Operator::Ne, json!("admin")));
        assert!(!holds("role", Operator::Ne, json!("developer")));
        // Numbers and numeric strings compare as numbers.
        assert!(holds("request.limit", Operator::Eq, json!(500)));
        assert!(holds("request.limit", Operator::Eq, json!(500.0)));
        assert!(holds("request.record_count", Operator::Eq, json!("20000")));
        assert!(!holds("request.limit", Operator::Eq, json!("0500x")));
        // Case matters.
        assert!(!holds("method", Operator::Eq, json!("post")));
    }

    #[test]
    fn absent_attributes_never_match_not_even_ne() {
        for op in [
            Operator::Eq,
            Operator::Ne,
            Operator::Gt,
            Operator::Lt,
            Operator::Contains,
            Operator::In,
        ] {
            assert!(!holds("request.nope", op, json!(1)), "{op:?}");
        }
    }

    #[test]
    fn gt_and_lt_compare_numbers_and_numeric_strings() {
        assert!(holds("request.record_count", Operator::Gt, json!(10_000)));
        assert!(!holds("request.record_count", Operator::Gt, json!(20_000)));
        assert!(!holds("request.record_count", Operator::Lt, json!(20_000)));
        assert!(holds("request.record_count", Operator::Lt, json!(20_001)));
        assert!(holds("request.limit", Operator::Gt, json!(499)));
        assert!(holds("request.limit", Operator::Lt, json!("501")));
        // Not numbers: never holds.
        assert!(!holds("role", Operator::Gt, json!(1)));
        assert!(!holds("request.limit", Operator::Gt, json!("many")));
    }

    #[test]
    fn contains_and_in() {
        assert!(holds("route", Operator::Contains, json!("/events")));
        assert!(!holds("route", Operator::Contains, json!("/tenants")));
        assert!(holds("request.tags", Operator::Contains, json!("b")));
        assert!(!holds("request.tags", Operator::Contains, json!("c")));
        assert!(!holds(
            "request.record_count",
            Operator::Contains,
            json!("2")
        ));
        assert!(holds("method", Operator::In, json!(["PUT", "POST"])));
        assert!(!holds("method", Operator::In, json!(["GET"])));
        assert!(holds("request.limit", Operator::In, json!([100, 500])));
        assert!(!holds("method", Operator::In, json!("POST")));
    }

    #[test]
    fn variables_are_the_callers() {
        assert!(holds("resource.id", Operator::Eq, json!("${user_id}")));
        assert!(holds("tenant_id", Operator::Eq, json!("${tenant_id}")));
        assert!(!holds("path", Operator::Contains, json!("${tenant_id}")));
        assert!(holds(
            "resource.id",
            Operator::In,
            json!(["x", "${user_id}"])
        ));
        assert!(holds("resource.id", Operator::Ne, json!("${tenant_id}")));
        // A caller without a user: the condition is false, whatever the operator.
        let system = PolicyContext::new()
            .with("tenant_id", "default")
            .with("resource.id", "u1");
        for op in [Operator::Eq, Operator::Ne] {
            assert!(!Condition::new("resource.id", op, "${user_id}").holds(&system));
        }
    }

    #[test]
    fn no_match_allows_without_a_decider() {
        let decision = evaluate(
            &[policy(
                "p",
                1,
                Effect::Deny,
                vec![Condition::new("role", Operator::Eq, "admin")],
            )],
            &ctx(),
        );
        assert_eq!(decision, Decision::default());
        assert!(!decision.denied());
        assert!(!evaluate(&[], &ctx()).denied());
    }

    #[test]
    fn a_policy_without_conditions_matches_everything() {
        assert!(evaluate(&[policy("p", 0, Effect::Deny, vec![])], &ctx()).denied());
    }

    #[test]
    fn higher_priority_decides_first() {
        let policies = [
            policy("deny", 1, Effect::Deny, vec![]),
            policy("allow", 2, Effect::Allow, vec![]),
        ];
        let decision = evaluate(&policies, &ctx());
        assert_eq!(decision.decided_by.unwrap().id, "allow");
        let policies = [
            policy("deny", 3, Effect::Deny, vec![]),
            policy("allow", 2, Effect::Allow, vec![]),
        ];
        assert!(evaluate(&policies, &ctx()).denied());
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        let policies = [
            policy("b-allow", 5, Effect::Allow, vec![]),
            policy("a-deny", 5, Effect::Deny, vec![]),
        ];
        assert!(evaluate(&policies, &ctx()).denied());
        let policies = [
            policy("b-deny", 5, Effect::Deny, vec![]),
            policy("a-allow", 5, Effect::Allow, vec![]),
        ];
        assert!(!evaluate(&policies, &ctx()).denied());
    }

    #[test]
    fn warnings_and_rate_limits_collect_until_the_decision() {
        let policies = [
            policy("w1", 10, Effect::Warn, vec![]),
            policy("r", 9, Effect::RateLimit { per_minute: 5 }, vec![]),
            policy("w2", 8, Effect::Warn, vec![]),
            policy("allow", 7, Effect::Allow, vec![]),
            policy("w3", 6, Effect::Warn, vec![]),
        ];
        let decision = evaluate(&policies, &ctx());
        let ids: Vec<_> = decision.warnings.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["w1", "w2"]);
        assert_eq!(decision.rate_limits.len(), 1);
        assert_eq!(decision.decided_by.as_ref().unwrap().id, "allow");
        assert_eq!(decision.matched().count(), 4);
    }

    #[test]
    fn disabled_policies_are_skipped() {
        let mut deny = policy("deny", 1, Effect::Deny, vec![]);
        deny.enabled = false;
        assert!(!evaluate(&[deny], &ctx()).denied());
    }

    #[test]
    fn all_conditions_must_hold() {
        let p = policy(
            "p",
            1,
            Effect::Deny,
            vec![
                Condition::new("role", Operator::Eq, "developer"),
                Condition::new("method", Operator::Eq, "GET"),
            ],
        );
        assert!(!evaluate(&[p], &ctx()).denied());
    }

    #[test]
    fn validation_names_each_field() {
        let mut p = policy(
            "bad id!",
            2_000_000,
            Effect::RateLimit { per_minute: 0 },
            vec![
                Condition::new("colour", Operator::Eq, "red"),
                Condition::new("request.limit", Operator::Gt, "lots"),
                Condition::new("method", Operator::In, "GET"),
                Condition::new("resource.id", Operator::Eq, "${username}"),
                Condition::new("route", Operator::Contains, json!({"a": 1})),
                Condition::new("request.", Operator::Eq, 1),
            ],
        );
        p.name = " ".into();
        p.description = "x".repeat(1025);
        let fields: Vec<String> = p.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "id",
                "name",
                "description",
                "priority",
                "per_minute",
                "conditions[0].attribute",
                "conditions[1].value",
                "conditions[2].value",
                "conditions[3].value",
                "conditions[4].value",
                "conditions[5].attribute",
            ]
        );
        let ok = policy(
            "ok",
            1,
            Effect::Warn,
            vec![
                Condition::new("request.limit", Operator::Gt, "10"),
                Condition::new("resource.id", Operator::In, json!(["${user_id}", "x"])),
            ],
        );
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        let mut unclosed = ok.clone();
        unclosed.conditions = vec![Condition::new("user_id", Operator::Eq, "${user_id")];
        assert_eq!(unclosed.problems().len(), 1);
    }

    #[test]
    fn ids_are_plain_ascii() {
        assert!(valid_id("default-no-self-deletion"));
        assert!(valid_id("0193a5b4-7c1e-7d2a-9f00-1c2d3e4f5a6b"));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id("é"));
        assert!(!valid_id(&"a".repeat(65)));
    }

    #[test]
    fn the_defaults_are_valid_and_do_what_they_say() {
        let defaults = defaults();
        assert_eq!(defaults.len(), 5);
        for p in &defaults {
            assert!(p.problems().is_empty(), "{}: {:?}", p.id, p.problems());
            assert!(is_default(&p.id));
        }
        let base = |role: &str, method: &str, route: &str| {
            PolicyContext::new()
                .with("role", role)
                .with("tenant_id", "default")
                .with("user_id", "u1")
                .with("method", method)
                .with("route", route)
        };
        let decided = |c: &PolicyContext| evaluate(&defaults, c).decided_by.map(|m| m.id);
        // 1. the default tenant
        let delete_tenant = base("admin", "DELETE", "/api/v1/tenants/{id}");
        assert_eq!(
            decided(&delete_tenant.clone().with("resource.id", "default")).as_deref(),
            Some(default_ids::PROTECT_DEFAULT_TENANT)
        );
        assert_eq!(decided(&delete_tenant.with("resource.id", "acme")), None);
        // 2. creating tenants
        let create = |role| base(role, "POST", "/api/v1/tenants");
        assert_eq!(
            decided(&create("developer")).as_deref(),
            Some(default_ids::ADMIN_CREATES_TENANTS)
        );
        assert_eq!(decided(&create("admin")), None);
        // 3. large operations
        let batch = |n: u64| {
            evaluate(
                &defaults,
                &base("developer", "POST", "/api/v1/events/batch").with("request.record_count", n),
            )
        };
        assert_eq!(batch(1_000).warnings, []);
        assert_eq!(
            batch(1_001).warnings[0].id,
            default_ids::WARN_LARGE_OPERATIONS
        );
        assert!(!batch(1_001).denied());
        // 4. self-deletion
        let delete_user = base("admin", "DELETE", "/api/v1/auth/users/{id}");
        assert_eq!(
            decided(&delete_user.clone().with("resource.id", "u1")).as_deref(),
            Some(default_ids::NO_SELF_DELETION)
        );
        assert_eq!(decided(&delete_user.with("resource.id", "u2")), None);
        // 5. expensive operations
        let replay = evaluate(&defaults, &base("admin", "POST", "/api/v1/replay"));
        assert_eq!(replay.rate_limits[0].id, default_ids::RATE_LIMIT_EXPENSIVE);
        let read = evaluate(&defaults, &base("admin", "GET", "/api/v1/replay"));
        assert!(read.rate_limits.is_empty());
    }

    #[test]
    fn the_stored_form_round_trips() {
        for p in defaults() {
            let json = serde_json::to_value(&p).unwrap();
            assert!(json["action"].is_string(), "{json}");
            let back: Policy = serde_json::from_value(json).unwrap();
            assert_eq!(back, p);
        }
    }
}
