//! [`Health`]: what `/health` and `/health/ready` report: the server's version, the store's
//! backend, and whether the store has recovered and serves. Neither needs a caller: probes are
//! never authenticated.

use std::sync::Arc;

use crate::ports::EventStore;

/// The liveness figures of `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthReport {
    /// The server's version.
    pub version: &'static str,
    /// The event store's backend (`embedded`, `postgres`, `memory`).
    pub backend: &'static str,
}

/// The health use case.
#[derive(Clone)]
pub struct Health {
    version: &'static str,
    store: Arc<dyn EventStore>,
}

impl Health {
    /// Health of the server at `version` over `store`.
    pub fn new(version: &'static str, store: Arc<dyn EventStore>) -> Self {
        Self { version, store }
    }

    /// The process answers: its version and the store's backend.
    pub fn report(&self) -> HealthReport {
        HealthReport {
            version: self.version,
            backend: self.store.backend(),
        }
    }

    /// Whether the store has finished recovering and serves.
    pub fn is_ready(&self) -> bool {
        self.store.is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MockEventStore;

    #[test]
    fn health_reports_the_version_the_backend_and_readiness() {
        let mut store = MockEventStore::new();
        store.expect_backend().return_const("embedded");
        store.expect_is_ready().times(1).return_const(false);
        let health = Health::new("1.2.3", Arc::new(store));
        assert_eq!(
            health.report(),
            HealthReport {
                version: "1.2.3",
                backend: "embedded"
            }
        );
        assert!(!health.is_ready());
    }
}
