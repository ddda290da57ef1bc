//! Ports: the traits through which use cases reach the outside world. Adapters live in
//! `allsource-infrastructure`; every adapter of [`EventStore`] passes the one contract suite in
//! `allsource-tests`.

pub mod clock;
pub mod event_store;

pub use clock::Clock;
pub use event_store::*;
