//! Who a request acts for. Every use case takes a [`Caller`] and scopes its reads and writes to
//! the caller's tenant, never to a tenant named in the request.
//!
//! A `Caller` is made by authentication (presentation's auth layer, from a JWT or an API key)
//! or, with authentication off, is [`Caller::default_tenant`]: an admin of tenant `default`.
//!
//! # Operators
//! The one rule of who operates the installation is [`Caller::is_operator`]: a holder of
//! `manage_tenants` in tenant `default` (today: its admins, and every caller when
//! authentication is off). Operators manage tenants and policies, create users in any tenant
//! and read any tenant's audit log; everybody else acts within their own tenant only.

use allsource_domain::{Permission, Role, TenantId};

/// Who stands behind a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off (`--dev`, `auth.enabled = false`), or an internal task.
    System,
    /// A user, authenticated by a JWT access token.
    User { user_id: String, username: String },
    /// An API key, acting for the user who created it.
    ApiKey {
        key_id: String,
        name: String,
        owner_user_id: String,
    },
}

/// The authenticated (or, with auth off, assumed) caller of a use case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    tenant: TenantId,
    role: Role,
    principal: Principal,
}

impl Caller {
    /// An admin of `tenant` acting as [`Principal::System`] (auth off, internal tasks, tests).
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            role: Role::Admin,
            principal: Principal::System,
        }
    }

    /// A caller established from a credential.
    pub fn authenticated(tenant: TenantId, role: Role, principal: Principal) -> Self {
        Self {
            tenant,
            role,
            principal,
        }
    }

    /// The caller used when authentication is off: an admin of tenant `default`.
    pub fn default_tenant() -> Self {
        Self::new(TenantId::default_tenant())
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Whether the caller's role holds `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.role.allows(permission)
    }

    /// Whether the caller operates the installation: holds `manage_tenants` in the operator
    /// tenant `default`. The only definition of "operator"; every use case asks this.
    pub fn is_operator(&self) -> bool {
        self.tenant == TenantId::default_tenant() && self.can(Permission::ManageTenants)
    }

    /// The id of the user behind the caller: the user, or the owner of the API key.
    pub fn user_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::System => None,
            Principal::User { user_id, .. } => Some(user_id),
            Principal::ApiKey { owner_user_id, .. } => Some(owner_user_id),
        }
    }

    /// A short description for logs and the audit log: `user:<id>`, `api_key:<id>`, `system`.
    pub fn actor(&self) -> String {
        match &self.principal {
            Principal::System => "system".to_owned(),
            Principal::User { user_id, .. } => format!("user:{user_id}"),
            Principal::ApiKey { key_id, .. } => format!("api_key:{key_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_caller_is_an_admin_of_tenant_default() {
        let caller = Caller::default_tenant();
        assert_eq!(caller.tenant().as_str(), "default");
        assert_eq!(caller.role(), Role::Admin);
        assert!(caller.can(Permission::ManageTenants));
        assert_eq!(caller.actor(), "system");
        assert_eq!(caller.user_id(), None);
        assert!(caller.is_operator());
    }

    #[test]
    fn operators_hold_manage_tenants_in_tenant_default_only() {
        let user = |tenant: &str, role| {
            Caller::authenticated(
                TenantId::parse(tenant).unwrap(),
                role,
                Principal::User {
                    user_id: "u".into(),
                    username: "u".into(),
                },
            )
        };
        assert!(user("default", Role::Admin).is_operator());
        for role in [Role::Developer, Role::Readonly, Role::ServiceAccount] {
            assert!(!user("default", role).is_operator(), "{role}");
        }
        for role in Role::ALL {
            assert!(!user("acme", role).is_operator(), "{role}");
        }
        assert!(!Caller::new(TenantId::parse("acme").unwrap()).is_operator());
        assert!(!Caller::new(TenantId::identity()).is_operator());
    }

    #[test]
    fn an_api_key_acts_for_its_owner() {
        let caller = Caller::authenticated(
            TenantId::parse("acme").unwrap(),
            Role::ServiceAccount,
            Principal::ApiKey {
                key_id: "k1".into(),
                name: "ci".into(),
                owner_user_id: "u1".into(),
            },
        );
        assert_eq!(caller.user_id(), Some("u1"));
        assert_eq!(caller.actor(), "api_key:k1");
        assert!(caller.can(Permission::Write));
        assert!(!caller.can(Permission::Admin));
    }
}
