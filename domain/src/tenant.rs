//! Tenants: who owns events, their [`Tier`], their [`Quotas`] and their [`RateLimit`].
//!
//! A tier is a preset of quotas and a rate limit. A tenant may override single quotas; what
//! holds for it is the tier's preset with its overrides laid over it ([`Tenant::quotas`]).
//!
//! | tier           | events/day | storage  | queries/hour | API keys | projections | pipelines | subscriptions | webhooks | req/s (burst) |
//! |----------------|-----------:|---------:|-------------:|---------:|------------:|----------:|--------------:|---------:|--------------:|
//! | `free`         |     10 000 |  100 MiB |        1 000 |        2 |           5 |         2 |             5 |        2 |       10 (20) |
//! | `professional` |  1 000 000 |   10 GiB |      100 000 |       25 |          50 |        20 |           200 |       20 |   500 (1 000) |
//! | `unlimited`    |          ∞ |        ∞ |            ∞ |        ∞ |           ∞ |         ∞ |             ∞ |        ∞ | 100 000 (200 000) |
//!
//! `subscriptions` counts the tenant's open followers of the log on one node (WebSocket and SSE
//! connections); `webhooks` counts registered webhooks.
//!
//! Why these numbers: `free` lets one developer try the product (a few thousand events a day,
//! an interactive client at 10 requests a second) without letting a forgotten script hurt the
//! node; `professional` is sized for one production service on one node (a million events a
//! day is ~12/s average with room for peaks of 500/s); `unlimited` is the operator's own
//! tenant (`default`): no quotas, and a rate limit so high that it only stops a runaway loop.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::values::{InvalidValue, TenantId};

/// A preset of quotas and rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Free,
    Professional,
    Unlimited,
}

/// A token bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Tokens added per second (sustained requests per second).
    pub per_second: u32,
    /// Bucket size: requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Free, Tier::Professional, Tier::Unlimited];

    /// Parses the API name (`free`, `professional`, `unlimited`).
    ///
    /// # Errors
    /// Any other string.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "free" => Ok(Tier::Free),
            "professional" => Ok(Tier::Professional),
            "unlimited" => Ok(Tier::Unlimited),
            _ => Err(InvalidValue(
                "must be one of free, professional, unlimited".to_owned(),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Professional => "professional",
            Tier::Unlimited => "unlimited",
        }
    }

    /// The tier's quotas (the table of the module docs).
    pub fn quotas(self) -> Quotas {
        const MIB: u64 = 1024 * 1024;
        match self {
            Tier::Free => Quotas {
                max_events_per_day: Some(10_000),
                max_storage_bytes: Some(100 * MIB),
                max_queries_per_hour: Some(1_000),
                max_api_keys: Some(2),
                max_projections: Some(5),
                max_pipelines: Some(2),
                max_subscriptions: Some(5),
                max_webhooks: Some(2),
            },
            Tier::Professional => Quotas {
                max_events_per_day: Some(1_000_000),
                max_storage_bytes: Some(10 * 1024 * MIB),
                max_queries_per_hour: Some(100_000),
                max_api_keys: Some(25),
                max_projections: Some(50),
                max_pipelines: Some(20),
                max_subscriptions: Some(200),
                max_webhooks: Some(20),
            },
            Tier::Unlimited => Quotas::UNLIMITED,
        }
    }

    /// The tier's rate limit (the table of the module docs).
    pub fn rate_limit(self) -> RateLimit {
        match self {
            Tier::Free => RateLimit {
                per_second: 10,
                burst: 20,
            },
            Tier::Professional => RateLimit {
                per_second: 500,
                burst: 1_000,
            },
            Tier::Unlimited => RateLimit {
                per_second: 100_000,
                burst: 200_000,
            },
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits of a tenant; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quotas {
    pub max_events_per_day: Option<u64>,
    pub max_storage_bytes: Option<u64>,
    pub max_queries_per_hour: Option<u64>,
    pub max_api_keys: Option<u64>,
    pub max_projections: Option<u64>,
    pub max_pipelines: Option<u64>,
    /// Open WebSocket/SSE subscriptions at once, on one node.
    pub max_subscriptions: Option<u64>,
    pub max_webhooks: Option<u64>,
}

impl Quotas {
    pub const UNLIMITED: Quotas = Quotas {
        max_events_per_day: None,
        max_storage_bytes: None,
        max_queries_per_hour: None,
        max_api_keys: None,
        max_projections: None,
        max_pipelines: None,
        max_subscriptions: None,
        max_webhooks: None,
    };
}

/// Per-quota overrides: `None` keeps the tier's value, `Some(None)` makes it unlimited,
/// `Some(Some(n))` sets it to `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaOverrides {
    pub max_events_per_day: Option<Option<u64>>,
    pub max_storage_bytes: Option<Option<u64>>,
    pub max_queries_per_hour: Option<Option<u64>>,
    pub max_api_keys: Option<Option<u64>>,
    pub max_projections: Option<Option<u64>>,
    pub max_pipelines: Option<Option<u64>>,
    pub max_subscriptions: Option<Option<u64>>,
    pub max_webhooks: Option<Option<u64>>,
}

impl QuotaOverrides {
    /// `base` with these overrides laid over it.
    pub fn apply(&self, base: Quotas) -> Quotas {
        Quotas {
            max_events_per_day: self.max_events_per_day.unwrap_or(base.max_events_per_day),
            max_storage_bytes: self.max_storage_bytes.unwrap_or(base.max_storage_bytes),
            max_queries_per_hour: self
                .max_queries_per_hour
                .unwrap_or(base.max_queries_per_hour),
            max_api_keys: self.max_api_keys.unwrap_or(base.max_api_keys),
            max_projections: self.max_projections.unwrap_or(base.max_projections),
            max_pipelines: self.max_pipelines.unwrap_or(base.max_pipelines),
            max_subscriptions: self.max_subscriptions.unwrap_or(base.max_subscriptions),
            max_webhooks: self.max_webhooks.unwrap_or(base.max_webhooks),
        }
    }
}

/// A tenant's display name: 1–128 characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantName(String);

impl TenantName {
    pub const MAX_LEN: usize = 128;

    /// # Errors
    /// Empty, too long, control characters, or leading/trailing whitespace.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() || raw.chars().count() > Self::MAX_LEN {
            return Err(InvalidValue(format!(
                "must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidValue("must not contain control characters".into()));
        }
        if raw.trim() != raw {
            return Err(InvalidValue("must not start or end with whitespace".into()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    pub tier: Tier,
    pub active: bool,
    pub overrides: QuotaOverrides,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    /// A new, active tenant without overrides.
    pub fn new(id: TenantId, name: TenantName, tier: Tier, now: DateTime<Utc>) -> Self {
        Self {
            id,
            name,
            tier,
            active: true,
            overrides: QuotaOverrides::default(),
            created_at: now,
            updated_at: now,
        }
    }

    /// The quotas that hold: the tier's, with the overrides laid over them.
    pub fn quotas(&self) -> Quotas {
        self.overrides.apply(self.tier.quotas())
    }

    /// The rate limit of the tenant's tier.
    pub fn rate_limit(&self) -> RateLimit {
        self.tier.rate_limit()
    }

    /// Whether this is the operator's tenant, which always exists and cannot be deleted or
    /// deactivated.
    pub fn is_default(&self) -> bool {
        self.id == TenantId::default_tenant()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_names_round_trip_and_unknown_names_are_refused() {
        for tier in Tier::ALL {
            assert_eq!(Tier::parse(tier.as_str()).ok(), Some(tier));
        }
        for bad in ["", "Free", "pro", "enterprise", " free"] {
            assert!(Tier::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tiers_grow_monotonically() {
        let [free, pro, unlimited] = Tier::ALL.map(Tier::quotas);
        let le = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a <= b,
        };
        for (a, b) in [(free, pro), (pro, unlimited)] {
            assert!(le(a.max_events_per_day, b.max_events_per_day));
            assert!(le(a.max_storage_bytes, b.max_storage_bytes));
            assert!(le(a.max_queries_per_hour, b.max_queries_per_hour));
            assert!(le(a.max_api_keys, b.max_api_keys));
            assert!(le(a.max_projections, b.max_projections));
            assert!(le(a.max_pipelines, b.max_pipelines));
        }
        assert_eq!(unlimited, Quotas::UNLIMITED);
        assert!(Tier::Free.rate_limit().per_second < Tier::Professional.rate_limit().per_second);
        for tier in Tier::ALL {
            assert!(tier.rate_limit().burst >= tier.rate_limit().per_second);
        }
    }

    #[test]
    fn overrides_lay_over_the_tier() {
        let overrides = QuotaOverrides {
            max_events_per_day: Some(Some(5)),
            max_storage_bytes: Some(None),
            ..QuotaOverrides::default()
        };
        let q = overrides.apply(Tier::Free.quotas());
        assert_eq!(q.max_events_per_day, Some(5));
        assert_eq!(q.max_storage_bytes, None);
        assert_eq!(q.max_api_keys, Tier::Free.quotas().max_api_keys);
    }

    #[test]
    fn tenant_names_are_checked() {
        assert!(TenantName::parse("Acme Corp").is_ok());
        for bad in ["", " acme", "acme ", "a\nb", &"x".repeat(129)] {
            assert!(TenantName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_new_tenant_is_active_with_its_tiers_quotas() {
        let t = Tenant::new(
            TenantId::parse("acme").unwrap(),
            TenantName::parse("Acme").unwrap(),
            Tier::Professional,
            Utc::now(),
        );
        assert!(t.active);
        assert!(!t.is_default());
        assert_eq!(t.quotas(), Tier::Professional.quotas());
        assert_eq!(t.rate_limit(), Tier::Professional.rate_limit());
    }
}
