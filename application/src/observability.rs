//! Figures for the metrics that are read when asked (at a scrape) rather than kept current:
//! how far the followers of the log are behind it.
//!
//! Lags are reported as a maximum and a sum over all tenants, never per name: projection and
//! pipeline names are chosen by tenants, so a label per name would grow without bound. The
//! REST routes give each one's figures.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::Caller;
use crate::pipelines::Pipelines;
use crate::projections::ProjectionEngine;

/// A lag over several followers, in events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Followers measured.
    pub count: u64,
    /// The largest lag.
    pub max: u64,
    /// All lags added.
    pub sum: u64,
}

impl Lag {
    fn add(&mut self, lag: u64) {
        self.count += 1;
        self.max = self.max.max(lag);
        self.sum = self.sum.saturating_add(lag);
    }
}

/// Measures the lags of projections and of the pipelines running on this node.
#[derive(Clone)]
pub struct LagProbe {
    projections: Arc<ProjectionEngine>,
    pipelines: Pipelines,
}

impl LagProbe {
    pub fn new(projections: Arc<ProjectionEngine>, pipelines: Pipelines) -> Self {
        Self {
            projections,
            pipelines,
        }
    }

    /// Events between each tenant's head and each of its projections' checkpoints. A
    /// tenant whose figures cannot be read is left out (logged at debug).
    pub async fn projections(&self) -> Lag {
        let mut lag = Lag::default();
        let Ok(tenants) = self.projections.tenants().await else {
            return lag;
        };
        for tenant in tenants {
            let (Ok(head), Ok(projections)) = (
                self.projections.head_position(&tenant).await,
                self.projections.heads(&tenant).await,
            ) else {
                tracing::debug!(%tenant, "projection lag not measured");
                continue;
            };
            for projection in projections {
                if let Ok(checkpoint) = self
                    .projections
                    .checkpoint(
                        &tenant,
                        projection.definition.name.as_str(),
                        &projection.generation,
                    )
                    .await
                {
                    lag.add(head.saturating_sub(checkpoint.position));
                }
            }
        }
        lag
    }

    /// Matching events after each running pipeline's checkpoint (capped per pipeline, as in
    /// its figures).
    pub async fn pipelines(&self) -> Lag {
        let mut lag = Lag::default();
        let running = self.pipelines.running().await;
        let tenants: BTreeSet<_> = running.iter().map(|(t, _)| t.clone()).collect();
        for tenant in tenants {
            let Ok(all) = self.pipelines.all_stats(&Caller::new(tenant.clone())).await else {
                tracing::debug!(%tenant, "pipeline lag not measured");
                continue;
            };
            for stats in all {
                if running
                    .iter()
                    .any(|(t, id)| *t == tenant && *id == stats.id)
                {
                    lag.add(stats.lag);
                }
            }
        }
        lag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lag_keeps_count_max_and_sum() {
        let mut lag = Lag::default();
        for l in [3, 10, 0] {
            lag.add(l);
        }
        assert_eq!(
            lag,
            Lag {
                count: 3,
                max: 10,
                sum: 13
            }
        );
    }
}
