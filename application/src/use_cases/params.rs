//! Parsing of raw request parameters into typed values, collecting field-level errors.

use allsource_domain::InvalidValue;
use chrono::{DateTime, Utc};

/// One invalid input field: `field` is the path as the client wrote it (`events[3].event_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects field errors while parsing several parameters.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Records the error of a value-object parse and returns the value if it parsed.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, InvalidValue>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(field, e.0);
                None
            }
        }
    }

    /// Like [`check`](Self::check), naming the field only when there is an error (the append
    /// path validates every event and must not allocate field names on success).
    pub fn check_named<T>(
        &mut self,
        field: impl FnOnce() -> String,
        parsed: Result<T, InvalidValue>,
    ) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(field(), e.0);
                None
            }
        }
    }

    pub fn optional<T>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
    ) -> Option<T> {
        raw.and_then(|r| self.check(field, parse(r)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub(crate) fn timestamp(raw: &str) -> Result<DateTime<Utc>, InvalidValue> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            InvalidValue("must be an RFC 3339 timestamp, like 2026-11-22T10:15:00Z".into())
        })
}

pub(crate) fn unsigned(raw: &str) -> Result<u64, InvalidValue> {
    raw.parse::<u64>()
        .map_err(|_| InvalidValue("must be a non-negative integer".into()))
}

pub(crate) fn boolean(raw: &str) -> Result<bool, InvalidValue> {
    match raw {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(InvalidValue("must be true or false".into())),
    }
}

/// A page size between 1 and `max`.
pub(crate) fn limit(raw: &str, max: usize) -> Result<usize, InvalidValue> {
    match raw.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(InvalidValue(format!("must be an integer from 1 to {max}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert!(timestamp("2026-11-22T10:15:00.123456Z").is_ok());
        assert_eq!(
            timestamp("2026-11-22T12:15:00+02:00").unwrap(),
            timestamp("2026-11-22T10:15:00Z").unwrap()
        );
        assert!(timestamp("yesterday").is_err());
        assert_eq!(unsigned("42").unwrap(), 42);
        assert!(unsigned("-1").is_err());
        assert!(boolean("true").unwrap());
        assert!(!boolean("0").unwrap());
        assert!(boolean("yes").is_err());
        assert_eq!(limit("10", 10).unwrap(), 10);
        assert!(limit("0", 10).is_err());
        assert!(limit("11", 10).is_err());
    }
}
