//! Roles and permissions: who may do what. The one table of which role holds which permission
//! lives here ([`Role::permissions`]); every route declares the [`Permission`] it needs and the
//! HTTP layer checks it against the caller's role.
//!
//! | role              | read | write | admin | metrics | manage_schemas | manage_pipelines | manage_tenants |
//! |-------------------|------|-------|-------|---------|----------------|------------------|----------------|
//! | `admin`           |  ✓   |   ✓   |   ✓   |    ✓    |       ✓        |        ✓         |       ✓        |
//! | `developer`       |  ✓   |   ✓   |       |    ✓    |       ✓        |        ✓         |                |
//! | `service_account` |  ✓   |   ✓   |       |         |                |                  |                |
//! | `readonly`        |  ✓   |       |       |    ✓    |                |                  |                |
//!
//! A role may grant (to a user or an API key) only a role whose permissions are all its own:
//! [`Role::can_grant`]. So a developer can hand out developer, service_account and readonly,
//! and nobody but an admin can make an admin.

use std::fmt;

use crate::values::InvalidValue;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Read,
    Write,
    Admin,
    Metrics,
    ManageSchemas,
    ManagePipelines,
    ManageTenants,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::Read,
        Permission::Write,
        Permission::Admin,
        Permission::Metrics,
        Permission::ManageSchemas,
        Permission::ManagePipelines,
        Permission::ManageTenants,
    ];

    /// The name used in the API and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
            Permission::Metrics => "metrics",
            Permission::ManageSchemas => "manage_schemas",
            Permission::ManagePipelines => "manage_pipelines",
            Permission::ManageTenants => "manage_tenants",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Developer,
    Readonly,
    ServiceAccount,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::Developer,
        Role::Readonly,
        Role::ServiceAccount,
    ];

    /// Parses the API name (`admin`, `developer`, `readonly`, `service_account`).
    ///
    /// # Errors
    /// Any other string.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "admin" => Ok(Role::Admin),
            "developer" => Ok(Role::Developer),
            "readonly" => Ok(Role::Readonly),
            "service_account" => Ok(Role::ServiceAccount),
            _ => Err(InvalidValue(
                "must be one of admin, developer, readonly, service_account".to_owned(),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Readonly => "readonly",
            Role::ServiceAccount => "service_account",
        }
    }

    /// The permissions of the role: the table of the module docs.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => &Permission::ALL,
            Role::Developer => &[Read, Write, Metrics, ManageSchemas, ManagePipelines],
            Role::ServiceAccount => &[Read, Write],
            Role::Readonly => &[Read, Metrics],
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }

    /// Whether a holder of `self` may create a user or API key with role `other`: only if
    /// every permission of `other` is one of `self`'s.
    pub fn can_grant(self, other: Role) -> bool {
        other.permissions().iter().all(|p| self.allows(*p))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table_is_the_documented_one() {
        use Permission::*;
        let has = |role: Role| -> Vec<Permission> {
            Permission::ALL
                .into_iter()
                .filter(|p| role.allows(*p))
                .collect()
        };
        assert_eq!(has(Role::Admin), Permission::ALL.to_vec());
        assert_eq!(
            has(Role::Developer),
            vec![Read, Write, Metrics, ManageSchemas, ManagePipelines]
        );
        assert_eq!(has(Role::ServiceAccount), vec![Read, Write]);
        assert_eq!(has(Role::Readonly), vec![Read, Metrics]);
    }

    #[test]
    fn only_admins_hold_admin_or_tenant_management() {
        for role in Role::ALL {
            assert_eq!(role.allows(Permission::Admin), role == Role::Admin);
            assert_eq!(role.allows(Permission::ManageTenants), role == Role::Admin);
        }
    }

    #[test]
    fn roles_grant_only_roles_within_their_own_permissions() {
        use Role::*;
        let grants = |role: Role| -> Vec<Role> {
            Role::ALL
                .into_iter()
                .filter(|r| role.can_grant(*r))
                .collect()
        };
        assert_eq!(
            grants(Admin),
            vec![Admin, Developer, Readonly, ServiceAccount]
        );
        assert_eq!(grants(Developer), vec![Developer, Readonly, ServiceAccount]);
        assert_eq!(grants(ServiceAccount), vec![ServiceAccount]);
        assert_eq!(grants(Readonly), vec![Readonly]);
    }

    #[test]
    fn role_names_round_trip_and_unknown_names_are_refused() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()).ok(), Some(role));
        }
        for bad in ["", "Admin", "root", "superuser", "admin "] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }
}
