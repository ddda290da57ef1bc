//! Ports: the traits through which use cases reach the outside world (`EventStore`,
//! `StateStore`, `EntityStateCache`, `Clock`). Adapters live in
//! `allsource-infrastructure`; every adapter of [`EventStore`] passes the one contract suite in
//! `allsource-tests`.

pub mod clock;
pub mod event_store;
pub mod state_cache;
pub mod state_store;

pub use clock::Clock;
pub use event_store::*;
#[cfg(any(test, feature = "mocks"))]
pub use state_cache::MockEntityStateCache;
pub use state_cache::{EntityStateCache, NoStateCache};
#[cfg(any(test, feature = "mocks"))]
pub use state_store::MockStateStore;
pub use state_store::{StateEntry, StateError, StateStore};
