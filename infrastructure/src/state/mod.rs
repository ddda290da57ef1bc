//! Adapters of the [`StateStore`](allsource_application::ports::StateStore) port.
//!
//! # Layout
//! - [`memory`]: `MemoryStateStore`, a `BTreeMap` (tests, `--dev`).
//! - [`file`]: `FileStateStore`, the embedded backend's: an append-only, checksummed log of
//!   writes replayed at start and rewritten (compacted) when mostly dead.
//! - [`postgres`]: `PostgresStateStore`, a table in the events database.
//!
//! The three share the in-memory map logic of [`memory::StateMap`] where they can, so the
//! version rules live in one place.
//!
//! The file and PostgreSQL stores read values back with the JSON parser's nesting limit
//! ([`READABLE_NESTING`]); both refuse to write a value nesting deeper ([`storable_text`]), so
//! nothing they write is unreadable.

pub mod file;
pub mod memory;
pub mod postgres;

pub use file::FileStateStore;
pub use memory::MemoryStateStore;
pub use postgres::PostgresStateStore;

use allsource_domain::check_json;
use serde_json::Value;

/// Deepest nesting of arrays and objects in a value that the stores' reader (`serde_json`, with
/// its default recursion limit) reads back.
pub const READABLE_NESTING: usize = 127;

/// The value's JSON text, or an error naming the entry if it could not be read back.
///
/// # Errors
/// A value nesting deeper than [`READABLE_NESTING`].
pub(crate) fn storable_text(
    value: &Value,
    tenant: &str,
    namespace: &str,
    key: &str,
) -> anyhow::Result<String> {
    let text = serde_json::to_string(value)?;
    if let Err(problem) = check_json(&text, READABLE_NESTING) {
        anyhow::bail!(
            "the value of state entry {tenant}/{namespace}/{key} cannot be stored: it {problem}, \
             which the state store could not read back"
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(serde_json::json!(1), |v, _| Value::Array(vec![v]))
    }

    #[test]
    fn the_readable_nesting_is_what_the_reader_parses() {
        let text = |depth| serde_json::to_string(&nested(depth)).unwrap();
        assert!(serde_json::from_str::<Value>(&text(READABLE_NESTING)).is_ok());
        assert!(serde_json::from_str::<Value>(&text(READABLE_NESTING + 1)).is_err());
        assert!(storable_text(&nested(READABLE_NESTING), "t", "n", "k").is_ok());
        let err = storable_text(&nested(READABLE_NESTING + 1), "t", "n", "k").unwrap_err();
        assert!(err.to_string().contains("t/n/k cannot be stored"), "{err}");
    }
}
