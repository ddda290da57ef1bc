//! Seams between tenancy and the features it limits: [`QuotaGate`] (quotas of a tenant,
//! consumed by appends, queries, API keys, projections, pipelines) and [`TenantGate`] (whether
//! a tenant may act at all). The tenant use cases implement both; features call them without
//! knowing how quotas are stored or counted. With tenancy off, [`Unlimited`] answers yes.

use async_trait::async_trait;

use allsource_domain::TenantId;

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Events appended since midnight UTC.
    EventsPerDay,
    /// Bytes of payload and metadata stored.
    StorageBytes,
    /// Read requests in the current hour.
    QueriesPerHour,
    /// Live (not revoked) API keys.
    ApiKeys,
    /// Registered projections.
    Projections,
    /// Registered pipelines.
    Pipelines,
    /// Open WebSocket/SSE subscriptions on this node (counted in memory, never stored: a
    /// restart closes them all).
    Subscriptions,
    /// Registered webhooks.
    Webhooks,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 8] = [
        QuotaKind::EventsPerDay,
        QuotaKind::StorageBytes,
        QuotaKind::QueriesPerHour,
        QuotaKind::ApiKeys,
        QuotaKind::Projections,
        QuotaKind::Pipelines,
        QuotaKind::Subscriptions,
        QuotaKind::Webhooks,
    ];

    /// The quota's name in the API (`quota` member of a 429, quota fields).
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::EventsPerDay => "max_events_per_day",
            QuotaKind::StorageBytes => "max_storage_bytes",
            QuotaKind::QueriesPerHour => "max_queries_per_hour",
            QuotaKind::ApiKeys => "max_api_keys",
            QuotaKind::Projections => "max_projections",
            QuotaKind::Pipelines => "max_pipelines",
            QuotaKind::Subscriptions => "max_subscriptions",
            QuotaKind::Webhooks => "max_webhooks",
        }
    }
}

/// A quota that a request would exceed (429 `quota_exceeded`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quota '{quota}' exceeded: {used} of {limit} used")]
pub struct QuotaExceeded {
    /// The quota's name ([`QuotaKind::as_str`]).
    pub quota: String,
    pub limit: u64,
    pub used: u64,
    /// Seconds until the quota has room again (`Retry-After`).
    pub retry_after_secs: u64,
}

/// Why a quota or tenant check failed.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// 429.
    #[error(transparent)]
    QuotaExceeded(QuotaExceeded),
    /// 403: the tenant is deactivated (or does not exist).
    #[error("{0}")]
    TenantInactive(String),
    /// 503.
    #[error("tenant storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Quotas of tenants.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait QuotaGate: Send + Sync {
    /// Takes `amount` of the tenant's `kind` quota if it fits, else refuses and takes nothing.
    ///
    /// # Errors
    /// [`GateError::QuotaExceeded`] when it does not fit; `Unavailable`/`Internal`.
    async fn consume(
        &self,
        tenant: &TenantId,
        kind: QuotaKind,
        amount: u64,
    ) -> Result<(), GateError>;

    /// Gives back `amount` (a deleted API key or projection, a failed append).
    async fn release(&self, tenant: &TenantId, kind: QuotaKind, amount: u64);
}

/// Whether tenants may act.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TenantGate: Send + Sync {
    /// `Ok` when the tenant exists and is active.
    ///
    /// # Errors
    /// [`GateError::TenantInactive`] for a deactivated or unknown tenant; `Unavailable`/`Internal`.
    async fn check_active(&self, tenant: &TenantId) -> Result<(), GateError>;
}

/// No quotas, every tenant active: tenancy off, and tests that are not about it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unlimited;

#[async_trait]
impl QuotaGate for Unlimited {
    async fn consume(&self, _: &TenantId, _: QuotaKind, _: u64) -> Result<(), GateError> {
        Ok(())
    }

    async fn release(&self, _: &TenantId, _: QuotaKind, _: u64) {}
}

#[async_trait]
impl TenantGate for Unlimited {
    async fn check_active(&self, _: &TenantId) -> Result<(), GateError> {
        Ok(())
    }
}
