//! Who a request acts for. Every use case takes a [`Caller`] and scopes its reads and writes to
//! the caller's tenant, never to a tenant named in the request.

use allsource_domain::TenantId;

/// The authenticated (or, with auth off, assumed) caller of a use case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    tenant: TenantId,
}

impl Caller {
    pub fn new(tenant: TenantId) -> Self {
        Self { tenant }
    }

    /// The caller used when authentication is off: tenant `default`.
    pub fn default_tenant() -> Self {
        Self::new(TenantId::default_tenant())
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
}
