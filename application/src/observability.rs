//! Figures for the metrics that are read when asked (at a scrape) rather than kept current:
//! how far the followers of the log are behind it.
//!
//! Lags are reported as a maximum and a sum over all tenants, never per name: projection,
//! pipeline, consumer and group names are chosen by tenants, so a label per name would grow
//! without bound. The REST routes give each one's figures.
//!
//! Projection, consumer and group lags are in positions: the tenant's head position minus
//! the follower's checkpoint, cursor or committed position. They read no event (a scrape
//! stays cheap however far behind a follower is), and are an upper bound on the matching
//! events still to process. Pipeline lag is the pipeline's own figure (matching events,
//! capped).

use std::collections::BTreeSet;
use std::sync::Arc;

use allsource_domain::TenantId;

use crate::Caller;
use crate::pipelines::Pipelines;
use crate::projections::ProjectionEngine;
use crate::use_cases::Consumers;
use crate::use_cases::Tenants;
use crate::use_cases::consumer_groups::ConsumerGroups;

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

/// What the lags are measured on.
pub struct LagSources {
    pub projections: Arc<ProjectionEngine>,
    pub pipelines: Pipelines,
    pub consumers: Consumers,
    pub consumer_groups: ConsumerGroups,
    /// The tenant registry (absent when tenancy is off: only `default` then).
    pub tenants: Option<Tenants>,
}

/// Measures the lags of projections, consumers, consumer groups and of the pipelines running
/// on this node.
#[derive(Clone)]
pub struct LagProbe {
    projections: Arc<ProjectionEngine>,
    pipelines: Pipelines,
    consumers: Consumers,
    consumer_groups: ConsumerGroups,
    tenants: Option<Tenants>,
}

impl LagProbe {
    pub fn new(sources: LagSources) -> Self {
        Self {
            projections: sources.projections,
            pipelines: sources.pipelines,
            consumers: sources.consumers,
            consumer_groups: sources.consumer_groups,
            tenants: sources.tenants,
        }
    }

    /// Every tenant that can have consumers or groups: the registry's (or `default` alone).
    async fn registered_tenants(&self) -> Vec<TenantId> {
        match &self.tenants {
            None => vec![TenantId::default_tenant()],
            Some(tenants) => match tenants.list(&Caller::default_tenant()).await {
                Ok(all) => all.into_iter().map(|t| t.id).collect(),
                Err(error) => {
                    tracing::debug!(%error, "tenants not listed for the lag metrics");
                    Vec::new()
                }
            },
        }
    }

    /// Positions between each tenant's head and each of its consumers' cursors (a consumer
    /// that never acknowledged is behind by the whole log).
    pub async fn consumers(&self) -> Lag {
        let mut lag = Lag::default();
        for tenant in self.registered_tenants().await {
            let (Ok(head), Ok(consumers)) = (
                self.projections.head_position(&tenant).await,
                self.consumers.list(&Caller::new(tenant.clone())).await,
            ) else {
                tracing::debug!(%tenant, "consumer lag not measured");
                continue;
            };
            for consumer in consumers {
                lag.add(head.saturating_sub(consumer.cursor_position.unwrap_or(0)));
            }
        }
        lag
    }

    /// Positions between each tenant's head and each of its groups' committed positions.
    pub async fn consumer_groups(&self) -> Lag {
        let mut lag = Lag::default();
        for tenant in self.registered_tenants().await {
            let (Ok(head), Ok(committed)) = (
                self.projections.head_position(&tenant).await,
                self.consumer_groups.committed_positions(&tenant).await,
            ) else {
                tracing::debug!(%tenant, "consumer group lag not measured");
                continue;
            };
            for position in committed {
                lag.add(head.saturating_sub(position));
            }
        }
        lag
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
