//! Value objects. Each has private fields and a `parse` constructor that enforces the rules of
//! the REST contract, so a value of the type is valid by construction.
//!
//! String-like values are stored as `Arc<str>`: the read side keeps millions of events in memory
//! and the same tenant, entity and type names repeat across them, so clones must be cheap and
//! shareable.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

/// Why a raw value was refused. The message is written for the API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl InvalidValue {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The tenant that owns an event: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

/// Maps keyed by the name can be searched with a `&str` (it hashes and compares as its text).
impl Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TenantId {
    pub const MAX_LEN: usize = 64;

    /// The first character of every reserved tenant id: ids starting with it belong to the
    /// installation itself and are never created through the API.
    pub const RESERVED_PREFIX: char = '_';

    /// The tenant every request acts as when authentication is off, and the operator tenant:
    /// holders of `manage_tenants` in it manage the installation.
    pub fn default_tenant() -> Self {
        Self(Arc::from("default"))
    }

    /// Reserved: where users, API keys, refresh tokens and revocations are stored.
    pub fn identity() -> Self {
        Self(Arc::from("_identity"))
    }

    /// Reserved: bookkeeping of the installation (such as which tenants have projections).
    pub fn system() -> Self {
        Self(Arc::from("_system"))
    }

    /// Whether the id is reserved for the installation (`_identity`, `_system` and every other
    /// id that starts with `_`): such a tenant is never created, and no credential is ever
    /// issued for it.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(Self::RESERVED_PREFIX)
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(InvalidValue::new(format!(
                "must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(InvalidValue::new(
                "may only contain letters, digits, '_' and '-'",
            ));
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Shares the underlying string (used by interning read sides).
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

/// An entity id names a stream: 1–256 bytes of UTF-8, no control characters, no leading or
/// trailing whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(Arc<str>);

/// Maps keyed by the name can be searched with a `&str` (it hashes and compares as its text).
impl Borrow<str> for EntityId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl EntityId {
    pub const MAX_BYTES: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::check(raw)?;
        Ok(Self(Arc::from(raw)))
    }

    /// Builds an id from an already shared string, validating it (used to intern).
    pub fn parse_shared(raw: Arc<str>) -> Result<Self, InvalidValue> {
        Self::check(&raw)?;
        Ok(Self(raw))
    }

    fn check(raw: &str) -> Result<(), InvalidValue> {
        if raw.is_empty() {
            return Err(InvalidValue::new("must not be empty"));
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(InvalidValue::new(format!(
                "must be at most {} bytes long",
                Self::MAX_BYTES
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidValue::new("must not contain control characters"));
        }
        if raw.starts_with(char::is_whitespace) || raw.ends_with(char::is_whitespace) {
            return Err(InvalidValue::new("must not start or end with whitespace"));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

/// An event type: 1–128 characters of `[A-Za-z0-9._-]`, not starting or ending with `.`, no `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(Arc<str>);

/// Maps keyed by the name can be searched with a `&str` (it hashes and compares as its text).
impl Borrow<str> for EventType {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl EventType {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::check(raw)?;
        Ok(Self(Arc::from(raw)))
    }

    pub fn parse_shared(raw: Arc<str>) -> Result<Self, InvalidValue> {
        Self::check(&raw)?;
        Ok(Self(raw))
    }

    fn check(raw: &str) -> Result<(), InvalidValue> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(InvalidValue::new(format!(
                "must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(InvalidValue::new(
                "may only contain letters, digits, '.', '_' and '-'",
            ));
        }
        if raw.starts_with('.') || raw.ends_with('.') {
            return Err(InvalidValue::new("must not start or end with '.'"));
        }
        if raw.contains("..") {
            return Err(InvalidValue::new("must not contain '..'"));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

/// The unique id of an event within its tenant (a UUID; the server assigns UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Uuid);

impl EventId {
    pub fn new(id: Uuid) -> Self {
        Self(id)
    }

    /// A new time-ordered id (UUIDv7).
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| InvalidValue::new("must be a UUID"))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(u64);

        impl $name {
            pub const fn new(value: u64) -> Self {
                Self(value)
            }

            pub const fn get(self) -> u64 {
                self.0
            }

            /// The next value.
            ///
            /// # Panics
            /// Never in practice: it would take 2^64 events.
            pub const fn next(self) -> Self {
                Self(self.0 + 1)
            }
        }

        impl From<$name> for u64 {
            fn from(value: $name) -> u64 {
                value.0
            }
        }
    };
}

counter!(
    /// The 1-based, gapless version of an event within its (tenant, entity) stream.
    Version
);
counter!(
    /// The global, strictly increasing position of an event in the store (starts at 1).
    Position
);

macro_rules! display_str {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_str!(TenantId, EntityId, EventType, EventId, Version, Position);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(TenantId::parse("default").is_ok());
        assert!(TenantId::parse("acme_corp-2").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a b").is_err());
        assert!(TenantId::parse("a/b").is_err());
        assert!(TenantId::parse(&"x".repeat(64)).is_ok());
        assert!(TenantId::parse(&"x".repeat(65)).is_err());
        assert_eq!(TenantId::default_tenant().as_str(), "default");
    }

    #[test]
    fn reserved_tenant_ids_are_the_underscore_prefixed_ones() {
        assert_eq!(TenantId::identity().as_str(), "_identity");
        assert_eq!(TenantId::system().as_str(), "_system");
        assert_eq!(TenantId::parse("_identity").unwrap(), TenantId::identity());
        assert_eq!(TenantId::parse("_system").unwrap(), TenantId::system());
        for reserved in ["_identity", "_system", "_", "_anything", "__x"] {
            assert!(
                TenantId::parse(reserved).unwrap().is_reserved(),
                "{reserved}"
            );
        }
        for open in ["default", "acme", "a_", "a_b", "-x", "x-_"] {
            assert!(!TenantId::parse(open).unwrap().is_reserved(), "{open}");
        }
        assert!(!TenantId::default_tenant().is_reserved());
    }

    #[test]
    fn entity_ids_accept_any_printable_utf8() {
        for ok in ["order-42", "a", "ünïcødé/with spaces inside", "user:1@x.y"] {
            assert_eq!(EntityId::parse(ok).unwrap().as_str(), ok);
        }
        assert!(EntityId::parse(&"é".repeat(128)).is_ok()); // 256 bytes
    }

    #[test]
    fn entity_ids_refuse_bad_input() {
        assert!(EntityId::parse("").is_err());
        assert!(EntityId::parse(" lead").is_err());
        assert!(EntityId::parse("trail ").is_err());
        assert!(EntityId::parse("tab\there").is_err());
        assert!(EntityId::parse("nul\0").is_err());
        assert!(EntityId::parse("line\nbreak").is_err());
        assert!(EntityId::parse(&"x".repeat(257)).is_err());
        assert!(EntityId::parse(&"é".repeat(129)).is_err()); // 258 bytes
    }

    #[test]
    fn event_types() {
        for ok in ["order.placed", "a", "A_b-c.d9", &"x".repeat(128)] {
            assert!(EventType::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".start",
            "end.",
            "a..b",
            "sp ace",
            "slash/no",
            "ü",
            &"x".repeat(129),
        ] {
            assert!(EventType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_ids() {
        let id = EventId::generate();
        assert_eq!(id.as_uuid().get_version_num(), 7);
        assert_eq!(EventId::parse(&id.to_string()).unwrap(), id);
        assert!(EventId::parse("not-a-uuid").is_err());
    }

    #[test]
    fn counters() {
        assert_eq!(Version::new(1).next(), Version::new(2));
        assert_eq!(Position::default().get(), 0);
        assert_eq!(u64::from(Position::new(7)), 7);
        assert_eq!(Version::new(3).to_string(), "3");
    }
}
