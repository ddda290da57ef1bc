//! What a follower of the log asks for: event-type filters (`order.placed`, or a prefix
//! pattern `order.*`), an optional entity, and the names of durable consumers.
//!
//! Every door that follows the log (consumers, WebSocket, SSE, consumer groups, webhooks,
//! pipelines) takes its filters through [`TypeFilters::parse`], so they all read a filter the
//! same way:
//! - `x` matches the type `x` exactly;
//! - `x.*` matches `x` itself and every type `x.<anything>` (`order.*` matches `order`,
//!   `order.placed` and `order.line.added`, not `orders`);
//! - `*` matches every type;
//! - several filters combine with OR; an empty list matches every type.

use std::fmt;

use crate::values::{EntityId, EventType, InvalidValue};

/// One event-type filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypeFilter {
    /// Exactly this type.
    Exact(EventType),
    /// This type and every type below it: `prefix` is the part before `.*`.
    Below(EventType),
    /// Every type (`*`).
    Any,
    /// Every type starting with this text, as `/events/query`'s `event_type_prefix` reads it
    /// (`order.` matches `order.placed`, `ord` matches `orders`). Never parsed from a filter
    /// list: only SSE's `event_type_prefix` parameter makes it.
    StartsWith(String),
}

impl TypeFilter {
    /// Parses `x`, `x.*` or `*`.
    ///
    /// # Errors
    /// When the text is neither an event type nor an event type followed by `.*`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw == "*" {
            return Ok(Self::Any);
        }
        if let Some(stem) = raw.strip_suffix(".*") {
            return EventType::parse(stem).map(Self::Below).map_err(|e| {
                InvalidValue(format!(
                    "'{raw}' is not a filter: the part before '.*' {}",
                    e.0
                ))
            });
        }
        EventType::parse(raw).map(Self::Exact).map_err(|e| {
            InvalidValue(format!(
                "'{raw}' is not a filter (an event type, 'type.*' or '*'): {}",
                e.0
            ))
        })
    }

    /// Whether the filter matches `event_type`.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::Exact(t) => t.as_str() == event_type,
            Self::Below(stem) => event_type
                .strip_prefix(stem.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.')),
            Self::Any => true,
            Self::StartsWith(prefix) => event_type.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for TypeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(t) => f.write_str(t.as_str()),
            Self::Below(stem) => write!(f, "{}.*", stem.as_str()),
            Self::Any => f.write_str("*"),
            Self::StartsWith(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// Filters that combine with OR; empty matches every type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TypeFilters(Vec<TypeFilter>);

impl TypeFilters {
    /// At most this many filters per list.
    pub const MAX: usize = 100;

    /// Matches every type.
    pub fn any() -> Self {
        Self::default()
    }

    /// Parses a list, naming the index of the first bad entry in the error.
    ///
    /// # Errors
    /// `(index, problem)` of the first filter that does not parse, or `(MAX, ..)` for a list
    /// longer than [`Self::MAX`].
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, (usize, InvalidValue)> {
        if raw.len() > Self::MAX {
            return Err((
                Self::MAX,
                InvalidValue(format!("at most {} filters are allowed", Self::MAX)),
            ));
        }
        let mut filters = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let filter = TypeFilter::parse(r.as_ref()).map_err(|e| (i, e))?;
            if !filters.contains(&filter) {
                filters.push(filter);
            }
        }
        Ok(Self(filters))
    }

    /// Whether any filter matches `event_type` (always, for an empty list or with `*`).
    pub fn matches(&self, event_type: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|f| f.matches(event_type))
    }

    /// Whether the list matches every type.
    pub fn matches_all(&self) -> bool {
        self.0.is_empty() || self.0.contains(&TypeFilter::Any)
    }

    /// A list of exactly these filters.
    pub fn of(filters: Vec<TypeFilter>) -> Self {
        Self(filters)
    }

    pub fn as_slice(&self) -> &[TypeFilter] {
        &self.0
    }

    /// The filters as the API shows them.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// What one follower receives: events of these types, optionally of one entity only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFilter {
    pub types: TypeFilters,
    pub entity_id: Option<EntityId>,
}

impl EventFilter {
    /// Every event.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether an event of `event_type` on `entity_id` passes.
    pub fn matches(&self, entity_id: &EntityId, event_type: &str) -> bool {
        self.entity_id.as_ref().is_none_or(|e| e == entity_id) && self.types.matches(event_type)
    }
}

/// The name of a durable consumer or consumer group: 1–128 of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerName(String);

impl ConsumerName {
    pub const MAX_LEN: usize = 128;

    /// # Errors
    /// Empty, longer than 128 or with another character.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(InvalidValue(format!(
                "must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(InvalidValue(
                "may only contain letters, digits, '.', '_', ':' and '-'".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(raw: &[&str]) -> TypeFilters {
        TypeFilters::parse(raw).expect("valid filters")
    }

    #[test]
    fn an_exact_filter_matches_only_its_type() {
        let f = filters(&["order.placed"]);
        assert!(f.matches("order.placed"));
        assert!(!f.matches("order.placed.v2"));
        assert!(!f.matches("order"));
    }

    #[test]
    fn a_prefix_pattern_matches_the_stem_and_below_it_only() {
        let f = filters(&["order.*"]);
        for yes in ["order", "order.placed", "order.line.added"] {
            assert!(f.matches(yes), "{yes}");
        }
        for no in ["orders", "orderx.placed", "customer.order", "ord"] {
            assert!(!f.matches(no), "{no}");
        }
    }

    #[test]
    fn several_filters_combine_with_or_and_none_matches_all() {
        let f = filters(&["a.*", "b"]);
        assert!(f.matches("a.x") && f.matches("b") && !f.matches("c"));
        assert!(TypeFilters::any().matches("anything"));
        assert!(filters(&["*"]).matches("anything"));
        assert!(filters(&["*"]).matches_all() && TypeFilters::any().matches_all());
        assert!(!f.matches_all());
    }

    #[test]
    fn bad_filters_are_refused_with_their_index() {
        for (raw, index) in [
            (vec!["ok", "bad type"], 1),
            (vec![".*"], 0),
            (vec!["a.**"], 0),
            (vec!["a*"], 0),
            (vec![""], 0),
        ] {
            let (i, e) = TypeFilters::parse(&raw).expect_err("refused");
            assert_eq!(i, index, "{raw:?}: {e}");
        }
        let many: Vec<String> = (0..=TypeFilters::MAX).map(|i| format!("t{i}")).collect();
        assert!(TypeFilters::parse(&many).is_err());
    }

    #[test]
    fn filters_print_as_they_were_written_and_duplicates_collapse() {
        let f = filters(&["a.*", "b", "*", "b"]);
        assert_eq!(f.to_strings(), ["a.*", "b", "*"]);
    }

    #[test]
    fn an_entity_filter_narrows_the_types() {
        let filter = EventFilter {
            types: filters(&["a.*"]),
            entity_id: Some(EntityId::parse("e1").expect("entity")),
        };
        let e1 = EntityId::parse("e1").expect("entity");
        let e2 = EntityId::parse("e2").expect("entity");
        assert!(filter.matches(&e1, "a.b"));
        assert!(!filter.matches(&e2, "a.b"));
        assert!(!filter.matches(&e1, "b"));
    }

    #[test]
    fn consumer_names_follow_the_contract() {
        for ok in ["w1", "projection:orders", "a.b_c-d", &"x".repeat(128)] {
            assert!(ConsumerName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(129)] {
            assert!(ConsumerName::parse(bad).is_err(), "{bad}");
        }
    }
}
