//! Optimistic-concurrency expectations on a stream's current version.

use std::fmt;

/// What the client expects the entity's stream to look like before its event is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// No check (the default).
    #[default]
    Any,
    /// The entity must have no events.
    NoStream,
    /// The entity must have at least one event.
    StreamExists,
    /// The entity's current version must be exactly this (0 = no events).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose current version is `current` (0 = empty) satisfies the expectation.
    pub fn is_satisfied_by(self, current: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::StreamExists => current > 0,
            Self::Exact(expected) => current == expected,
        }
    }

    /// Parses the word forms of the API (`any`, `no_stream`, `stream_exists`).
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "any" => Some(Self::Any),
            "no_stream" => Some(Self::NoStream),
            "stream_exists" => Some(Self::StreamExists),
            _ => None,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no_stream"),
            Self::StreamExists => f.write_str("stream_exists"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExpectedVersion::*;
    use super::*;

    #[test]
    fn satisfaction_table() {
        let cases = [
            (Any, 0, true),
            (Any, 5, true),
            (NoStream, 0, true),
            (NoStream, 1, false),
            (StreamExists, 0, false),
            (StreamExists, 1, true),
            (Exact(0), 0, true),
            (Exact(0), 1, false),
            (Exact(3), 3, true),
            (Exact(3), 2, false),
            (Exact(3), 4, false),
        ];
        for (expected, current, ok) in cases {
            assert_eq!(
                expected.is_satisfied_by(current),
                ok,
                "{expected} vs {current}"
            );
        }
    }

    #[test]
    fn words() {
        assert_eq!(ExpectedVersion::from_word("any"), Some(Any));
        assert_eq!(ExpectedVersion::from_word("no_stream"), Some(NoStream));
        assert_eq!(
            ExpectedVersion::from_word("stream_exists"),
            Some(StreamExists)
        );
        assert_eq!(ExpectedVersion::from_word("Any"), None);
        assert_eq!(Exact(4).to_string(), "4");
        assert_eq!(NoStream.to_string(), "no_stream");
        assert_eq!(ExpectedVersion::default(), Any);
    }
}
