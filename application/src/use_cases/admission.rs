//! [`Admission`]: whether a request may be served at all, before any feature looks at it.
//!
//! 1. **Tenant status**: the caller's tenant must exist and be active, else
//!    [`Refusal::Gate`] with [`GateError::TenantInactive`] (403). A deactivated or deleted
//!    tenant's credentials stop working at once on the node that changed it, within
//!    [`TENANT_CACHE_MILLIS`](crate::use_cases::TENANT_CACHE_MILLIS) elsewhere.
//! 2. **Rate limit**: a token bucket per tenant (`t:<tenant>`), sized by the tenant's tier, and
//!    for API keys one more per key (`k:<tenant>:<key id>`) at half the tier's rate, so one
//!    runaway key cannot spend its tenant's whole budget. The tighter bucket's
//!    [`RateDecision`] is returned with every answer (the `X-RateLimit-*` numbers); an empty
//!    bucket is [`Refusal::RateLimited`] (429 with `Retry-After`). Requests without a caller
//!    (public routes called without credentials, such as login) share one bucket per client
//!    address (when known, else one for all) at the `free` tier's rate. When the limiter's
//!    store fails (Redis down), requests pass (fail open) with a warning.
//! 3. **Queries per hour**: a [`RequestKind::Query`] counts one query of the tenant's
//!    `max_queries_per_hour` quota; over it, [`Refusal::Gate`] with
//!    [`GateError::QuotaExceeded`] (429), still with the rate numbers.
//!
//! [`RequestKind::Unlimited`] requests (health probes) are admitted without any check and
//! carry no rate numbers: load balancers probe them and must not be refused.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use allsource_domain::{RateLimit, TenantId, Tier};

use crate::ports::{RateDecision, RateLimiter};
use crate::quota::{GateError, QuotaGate, QuotaKind};
use crate::tenancy::{Caller, Principal};
use crate::use_cases::Tenants;

/// What kind of request asks to be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Never limited nor counted (health probes).
    Unlimited,
    /// Rate-limited, not counted against a quota.
    Limited,
    /// Rate-limited and counted as one query of `max_queries_per_hour`.
    Query,
}

/// Tenants' status and tier, as admission needs them.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TenantLimits: Send + Sync {
    /// The rate limit of an active tenant's tier.
    ///
    /// # Errors
    /// [`GateError::TenantInactive`] for a deactivated or unknown tenant; `Unavailable`/`Internal`.
    async fn active_rate_limit(&self, tenant: &TenantId) -> Result<RateLimit, GateError>;
}

#[async_trait]
impl TenantLimits for Tenants {
    async fn active_rate_limit(&self, tenant: &TenantId) -> Result<RateLimit, GateError> {
        Tenants::active_rate_limit(self, tenant).await
    }
}

/// An admitted request: the rate numbers to report, if a limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub rate: Option<RateDecision>,
}

/// Why a request is refused.
#[derive(Debug)]
pub enum Refusal {
    /// The bucket is empty: 429 `rate_limited` with `Retry-After`.
    RateLimited {
        /// The bucket size.
        limit: u64,
        retry_after_secs: u64,
    },
    /// The tenant may not act (403), its query quota is spent (429), or its record cannot be
    /// read (503/500).
    Gate(GateError),
}

/// A refused request, with the rate numbers to report when a limiter had decided.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub rate: Option<RateDecision>,
}

/// The admission use case (see the module docs). Every part is optional: [`Admission::off`]
/// admits every request without limits.
#[derive(Clone, Default)]
pub struct Admission {
    tenants: Option<Arc<dyn TenantLimits>>,
    quotas: Option<Arc<dyn QuotaGate>>,
    limiter: Option<Arc<dyn RateLimiter>>,
}

impl Admission {
    /// No tenant checks, no quotas on queries, no rate limits.
    pub fn off() -> Self {
        Self::default()
    }

    /// Tenant status and tiers from `tenants`, query quotas against `quotas`, and buckets in
    /// `limiter` (`None`: no rate limiting and no rate numbers).
    pub fn new(
        tenants: Option<Arc<dyn TenantLimits>>,
        quotas: Option<Arc<dyn QuotaGate>>,
        limiter: Option<Arc<dyn RateLimiter>>,
    ) -> Self {
        Self {
            tenants,
            quotas,
            limiter,
        }
    }

    /// Admission over the tenant use cases (status, tiers and quotas) and a limiter.
    pub fn for_tenants(tenants: Option<Tenants>, limiter: Option<Arc<dyn RateLimiter>>) -> Self {
        Self {
            tenants: tenants
                .clone()
                .map(|t| Arc::new(t) as Arc<dyn TenantLimits>),
            quotas: tenants.map(|t| Arc::new(t) as Arc<dyn QuotaGate>),
            limiter,
        }
    }

    /// Decides whether the request of `caller` (`None`: no credential was sent, from
    /// `client` when its address is known) may be served.
    ///
    /// # Errors
    /// [`Refused`], with the reason and the rate numbers (see the module docs).
    pub async fn admit(
        &self,
        caller: Option<&Caller>,
        client: Option<IpAddr>,
        kind: RequestKind,
    ) -> Result<Admitted, Refused> {
        if kind == RequestKind::Unlimited {
            return Ok(Admitted { rate: None });
        }
        let rate = match caller {
            Some(caller) => {
                let mut limit = Tier::Unlimited.rate_limit();
                if let Some(tenants) = &self.tenants {
                    limit = tenants
                        .active_rate_limit(caller.tenant())
                        .await
                        .map_err(|e| Refused {
                            refusal: Refusal::Gate(e),
                            rate: None,
                        })?;
                }
                match &self.limiter {
                    Some(limiter) => limit_caller(limiter.as_ref(), caller, limit).await,
                    None => None,
                }
            }
            None => match &self.limiter {
                Some(limiter) => {
                    let client = client.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
                    checked(
                        limiter.as_ref(),
                        &format!("anon:{client}"),
                        Tier::Free.rate_limit(),
                    )
                    .await
                }
                None => None,
            },
        };
        if let Some(d) = rate
            && !d.allowed
        {
            return Err(Refused {
                refusal: Refusal::RateLimited {
                    limit: d.limit,
                    retry_after_secs: d.retry_after_secs,
                },
                rate,
            });
        }
        if kind == RequestKind::Query
            && let (Some(caller), Some(quotas)) = (caller, &self.quotas)
            && let Err(e) = quotas
                .consume(caller.tenant(), QuotaKind::QueriesPerHour, 1)
                .await
        {
            return Err(Refused {
                refusal: Refusal::Gate(e),
                rate,
            });
        }
        Ok(Admitted { rate })
    }
}

/// The tenant's bucket, and the API key's when the caller is one; the tighter answer wins.
async fn limit_caller(
    limiter: &dyn RateLimiter,
    caller: &Caller,
    limit: RateLimit,
) -> Option<RateDecision> {
    let tenant = checked(limiter, &format!("t:{}", caller.tenant().as_str()), limit).await;
    let Principal::ApiKey { key_id, .. } = caller.principal() else {
        return tenant;
    };
    if tenant.is_some_and(|d| !d.allowed) {
        return tenant;
    }
    let per_key = RateLimit {
        per_second: (limit.per_second / 2).max(1),
        burst: (limit.burst / 2).max(1),
    };
    let key = checked(
        limiter,
        &format!("k:{}:{key_id}", caller.tenant().as_str()),
        per_key,
    )
    .await;
    match (tenant, key) {
        (Some(t), Some(k)) => Some(if !k.allowed || k.remaining < t.remaining {
            k
        } else {
            t
        }),
        (t, k) => t.or(k),
    }
}

/// One bucket; a failing limiter lets the request through (fail open) and says so in the log.
async fn checked(limiter: &dyn RateLimiter, key: &str, limit: RateLimit) -> Option<RateDecision> {
    match limiter.check(key, limit).await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, backend = limiter.backend(), "rate limiter failed; request let through");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use mockall::predicate::eq;

    use super::*;
    use crate::ports::{MockRateLimiter, RateLimitError};
    use crate::quota::{MockQuotaGate, QuotaExceeded};
    use allsource_domain::Role;

    fn decision(allowed: bool, remaining: u64) -> RateDecision {
        RateDecision {
            allowed,
            limit: 20,
            remaining,
            reset_secs: 3,
            retry_after_secs: u64::from(!allowed) * 2,
        }
    }

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn user() -> Caller {
        Caller::authenticated(
            acme(),
            Role::Developer,
            Principal::User {
                user_id: "u1".into(),
                username: "ann".into(),
            },
        )
    }

    fn key() -> Caller {
        Caller::authenticated(
            acme(),
            Role::ServiceAccount,
            Principal::ApiKey {
                key_id: "k1".into(),
                name: "ci".into(),
                owner_user_id: "u1".into(),
            },
        )
    }

    fn professional() -> MockTenantLimits {
        let mut tenants = MockTenantLimits::new();
        tenants
            .expect_active_rate_limit()
            .with(eq(acme()))
            .returning(|_| Ok(Tier::Professional.rate_limit()));
        tenants
    }

    fn admission(
        tenants: MockTenantLimits,
        quotas: MockQuotaGate,
        limiter: MockRateLimiter,
    ) -> Admission {
        Admission::new(
            Some(Arc::new(tenants)),
            Some(Arc::new(quotas)),
            Some(Arc::new(limiter)),
        )
    }

    #[tokio::test]
    async fn health_probes_are_admitted_without_any_check() {
        let mut tenants = MockTenantLimits::new();
        tenants.expect_active_rate_limit().never();
        let mut quotas = MockQuotaGate::new();
        quotas.expect_consume().never();
        let mut limiter = MockRateLimiter::new();
        limiter.expect_check().never();
        let admitted = admission(tenants, quotas, limiter)
            .admit(Some(&user()), None, RequestKind::Unlimited)
            .await
            .unwrap();
        assert_eq!(admitted.rate, None);
    }

    #[tokio::test]
    async fn a_query_takes_a_token_of_the_tenants_tier_and_counts_one_query() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_check()
            .with(eq("t:acme"), eq(Tier::Professional.rate_limit()))
            .times(1)
            .returning(|_, _| Ok(decision(true, 7)));
        let mut quotas = MockQuotaGate::new();
        quotas
            .expect_consume()
            .with(eq(acme()), eq(QuotaKind::QueriesPerHour), eq(1))
            .times(1)
            .returning(|_, _, _| Ok(()));
        let admitted = admission(professional(), quotas, limiter)
            .admit(Some(&user()), None, RequestKind::Query)
            .await
            .unwrap();
        assert_eq!(admitted.rate, Some(decision(true, 7)));
    }

    #[tokio::test]
    async fn other_requests_are_limited_but_not_counted() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_check()
            .returning(|_, _| Ok(decision(true, 3)));
        let mut quotas = MockQuotaGate::new();
        quotas.expect_consume().never();
        let admitted = admission(professional(), quotas, limiter)
            .admit(Some(&user()), None, RequestKind::Limited)
            .await
            .unwrap();
        assert_eq!(admitted.rate, Some(decision(true, 3)));
    }

    #[tokio::test]
    async fn an_empty_bucket_refuses_with_retry_after_and_counts_nothing() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_check()
            .returning(|_, _| Ok(decision(false, 0)));
        let mut quotas = MockQuotaGate::new();
        quotas.expect_consume().never();
        let refused = admission(professional(), quotas, limiter)
            .admit(Some(&user()), None, RequestKind::Query)
            .await
            .unwrap_err();
        assert!(matches!(
            refused.refusal,
            Refusal::RateLimited {
                limit: 20,
                retry_after_secs: 2
            }
        ));
        assert_eq!(refused.rate, Some(decision(false, 0)));
    }

    #[tokio::test]
    async fn an_inactive_tenant_is_refused_before_any_bucket() {
        let mut tenants = MockTenantLimits::new();
        tenants.expect_active_rate_limit().returning(|_| {
            Err(GateError::TenantInactive(
                "tenant 'acme' is deactivated".into(),
            ))
        });
        let mut limiter = MockRateLimiter::new();
        limiter.expect_check().never();
        let refused = admission(tenants, MockQuotaGate::new(), limiter)
            .admit(Some(&user()), None, RequestKind::Query)
            .await
            .unwrap_err();
        assert!(matches!(
            refused.refusal,
            Refusal::Gate(GateError::TenantInactive(_))
        ));
        assert_eq!(refused.rate, None);
    }

    #[tokio::test]
    async fn a_spent_query_quota_is_refused_with_the_rate_numbers() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_check()
            .returning(|_, _| Ok(decision(true, 5)));
        let mut quotas = MockQuotaGate::new();
        quotas.expect_consume().returning(|_, _, _| {
            Err(GateError::QuotaExceeded(QuotaExceeded {
                quota: "max_queries_per_hour".into(),
                limit: 10,
                used: 10,
                retry_after_secs: 60,
            }))
        });
        let refused = admission(professional(), quotas, limiter)
            .admit(Some(&user()), None, RequestKind::Query)
            .await
            .unwrap_err();
        assert!(matches!(
            refused.refusal,
            Refusal::Gate(GateError::QuotaExceeded(_))
        ));
        assert_eq!(refused.rate, Some(decision(true, 5)));
    }

    #[tokio::test]
    async fn an_api_key_has_a_half_size_bucket_of_its_own_and_the_tighter_answer_wins() {
        let tier = Tier::Professional.rate_limit();
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_check()
            .with(eq("t:acme"), eq(tier))
            .times(1)
            .returning(|_, _| Ok(decision(true, 9)));
        limiter
            .expect_check()
            .with(
                eq("k:acme:k1"),
                eq(RateLimit {
                    per_second: tier.per_second / 2,
                    burst: tier.burst / 2,
                }),
            )
            .times(1)
            .returning(|_, _| Ok(decision(true, 4)));
        let admitted = admission(professional(), MockQuotaGate::new(), limiter)
            .admit(Some(&key()), None, RequestKind::Limited)
            .await
            .unwrap();
        assert_eq!(admitted.rate, Some(decision(true, 4)));
    }

    #[tokio::test]
    async fn anonymous_callers_share_a_free_bucket_per_client_address() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_check()
            .with(eq("anon:10.0.0.7"), eq(Tier::Free.rate_limit()))
            .times(1)
            .returning(|_, _| Ok(decision(true, 1)));
        limiter
            .expect_check()
            .with(eq("anon:unknown"), eq(Tier::Free.rate_limit()))
            .times(1)
            .returning(|_, _| Ok(decision(true, 0)));
        let mut tenants = MockTenantLimits::new();
        tenants.expect_active_rate_limit().never();
        let admission = admission(tenants, MockQuotaGate::new(), limiter);
        let known = admission
            .admit(
                None,
                Some("10.0.0.7".parse().unwrap()),
                RequestKind::Limited,
            )
            .await
            .unwrap();
        assert_eq!(known.rate, Some(decision(true, 1)));
        let unknown = admission
            .admit(None, None, RequestKind::Query)
            .await
            .unwrap();
        assert_eq!(unknown.rate, Some(decision(true, 0)));
    }

    #[tokio::test]
    async fn a_failing_limiter_lets_requests_through_without_numbers() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_check()
            .returning(|_, _| Err(RateLimitError::Unavailable("redis down".into())));
        limiter.expect_backend().return_const("redis");
        let mut quotas = MockQuotaGate::new();
        quotas.expect_consume().returning(|_, _, _| Ok(()));
        let admitted = admission(professional(), quotas, limiter)
            .admit(Some(&user()), None, RequestKind::Query)
            .await
            .unwrap();
        assert_eq!(admitted.rate, None);
    }

    #[tokio::test]
    async fn off_admits_everything_without_numbers() {
        let admitted = Admission::off()
            .admit(Some(&user()), None, RequestKind::Query)
            .await
            .unwrap();
        assert_eq!(admitted.rate, None);
    }
}
