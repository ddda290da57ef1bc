//! One mapping of the storage ports' failures ([`StoreError`] of the event store,
//! [`StateError`] of the state store) into use-case errors.
//!
//! A use-case error implements [`StorageFailure`] (how it says "unavailable", "internal" and,
//! where it has one, "changed concurrently") and gets its `From<StoreError>` and
//! `From<StateError>` from [`storage_errors!`](crate::storage_errors), so every use case maps
//! the same failure the same way.
//!
//! # How a version conflict surfaces
//! - A failed expectation of an **append** (`expected_version`) is the event store's
//!   [`AppendRejection`](allsource_domain::AppendRejection), not a storage failure: it is
//!   `409 version_conflict`, as the API says.
//! - An **optimistic state-store write** that loses to a concurrent one is retried internally
//!   where it can be retried blindly: schema registration and configuration (re-read and
//!   re-checked, a few attempts, then `409`), usage counters, projection keys and checkpoints
//!   (the runner tries again on its next round). Where retrying could overwrite a decision
//!   made by the other writer (projection heads, tenants, policies), it reaches the client as
//!   `409` ("changed concurrently; retry").
//! - A use case that never writes with an expected version cannot see a conflict; if one
//!   arrives anyway it is a bug and answers 500 ([`StorageFailure::version_conflict`]'s
//!   default).

use super::event_store::StoreError;
use super::state_store::StateError;

/// How a use-case error says what a storage port answered.
pub trait StorageFailure: Sized {
    /// 503: the storage cannot answer now.
    fn unavailable(why: String) -> Self;

    /// 500.
    fn internal(error: anyhow::Error) -> Self;

    /// A state-store write with an expected version lost to a concurrent write. By default a
    /// bug (500): only use cases that write with an expected version say otherwise.
    fn version_conflict(expected: u64, current: u64) -> Self {
        Self::internal(anyhow::Error::new(StateError::VersionConflict {
            expected,
            current,
        }))
    }

    /// The one mapping of [`StoreError`].
    fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(why) => Self::unavailable(why),
            StoreError::Internal(e) => Self::internal(e),
        }
    }

    /// The one mapping of [`StateError`].
    fn from_state(e: StateError) -> Self {
        match e {
            StateError::Unavailable(why) => Self::unavailable(why),
            StateError::VersionConflict { expected, current } => {
                Self::version_conflict(expected, current)
            }
            StateError::Internal(e) => Self::internal(e),
        }
    }
}

/// Implements `From<StoreError>` and `From<StateError>` for use-case errors through their
/// [`StorageFailure`] implementation.
#[macro_export]
macro_rules! storage_errors {
    ($($error:ty),+ $(,)?) => {
        $(
            impl From<$crate::ports::StoreError> for $error {
                fn from(e: $crate::ports::StoreError) -> Self {
                    <$error as $crate::ports::StorageFailure>::from_store(e)
                }
            }

            impl From<$crate::ports::StateError> for $error {
                fn from(e: $crate::ports::StateError) -> Self {
                    <$error as $crate::ports::StorageFailure>::from_state(e)
                }
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Plain {
        Unavailable(String),
        Internal(String),
    }

    impl StorageFailure for Plain {
        fn unavailable(why: String) -> Self {
            Self::Unavailable(why)
        }
        fn internal(error: anyhow::Error) -> Self {
            Self::Internal(error.to_string())
        }
    }

    #[derive(Debug, PartialEq)]
    enum Optimistic {
        Conflict,
        Other,
    }

    impl StorageFailure for Optimistic {
        fn unavailable(_: String) -> Self {
            Self::Other
        }
        fn internal(_: anyhow::Error) -> Self {
            Self::Other
        }
        fn version_conflict(_: u64, _: u64) -> Self {
            Self::Conflict
        }
    }

    crate::storage_errors!(Plain, Optimistic);

    #[test]
    fn every_failure_maps_one_way() {
        assert_eq!(
            Plain::from(StoreError::Unavailable("down".into())),
            Plain::Unavailable("down".into())
        );
        assert_eq!(
            Plain::from(StateError::Unavailable("down".into())),
            Plain::Unavailable("down".into())
        );
        assert!(matches!(
            Plain::from(StateError::VersionConflict {
                expected: 1,
                current: 2
            }),
            Plain::Internal(m) if m.contains("expected 1, current 2")
        ));
        assert_eq!(
            Optimistic::from(StateError::VersionConflict {
                expected: 1,
                current: 2
            }),
            Optimistic::Conflict
        );
        assert_eq!(
            Optimistic::from(StoreError::Internal(anyhow::anyhow!("x"))),
            Optimistic::Other
        );
    }
}
