//! The identity records and where they live in the [`StateStore`]: all of them under the
//! reserved tenant `_identity` ([`TenantId::identity`]), so that a tenant's own derived state never mixes with
//! credentials, and usernames are unique per deployment (login needs no tenant).
//!
//! | namespace         | key                     | value                                   |
//! |-------------------|-------------------------|-----------------------------------------|
//! | `auth.users`      | `<tenant>/<user id>`    | [`UserRecord`] (with the Argon2id hash) |
//! | `auth.usernames`  | `<username>`            | [`UsernameRecord`] (tenant, user id)    |
//! | `auth.api_keys`   | SHA-256 of the key      | [`ApiKeyRecord`]                        |
//! | `auth.api_key_ids`| `<tenant>/<key id>`     | [`KeyIdRecord`] (the digest)            |
//! | `auth.refresh`    | SHA-256 of the token    | [`RefreshRecord`]                       |
//! | `auth.families`   | family id               | [`FamilyRecord`]                        |
//! | `auth.user_families` | `<tenant>/<user id>/<family id>` | [`FamilyIndexRecord`] (an index to revoke a user's logins) |
//! | `auth.revoked`    | `user/<tenant>/<user id>`, `family/<family id>` | [`RevocationRecord`] (until when it matters) |

use std::sync::Arc;

use allsource_domain::TenantId;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ports::{StateEntry, StateError, StateStore};

/// The reserved tenant under which identity records are stored ([`TenantId::identity`]).
pub const IDENTITY_TENANT: &str = "_identity";

const USERS: &str = "auth.users";
const USERNAMES: &str = "auth.usernames";
const API_KEYS: &str = "auth.api_keys";
const API_KEY_IDS: &str = "auth.api_key_ids";
const REFRESH: &str = "auth.refresh";
const FAMILIES: &str = "auth.families";
const USER_FAMILIES: &str = "auth.user_families";
const REVOKED: &str = "auth.revoked";
const PAGE: usize = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub tenant_id: String,
    pub role: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsernameRecord {
    pub tenant_id: String,
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub tenant_id: String,
    pub role: String,
    pub owner_user_id: String,
    /// The first characters of the key (`ask_abcd`), to recognise it in lists.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key that created this one, if a key did: revoking the parent revokes the child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_key_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyIdRecord {
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub family_id: String,
    pub user_id: String,
    pub tenant_id: String,
    pub expires_at: DateTime<Utc>,
    /// Set when the token was exchanged; a second use is a reuse.
    pub used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyIndexRecord {
    pub family_id: String,
}

/// An entry of the revocation list: access tokens it matches are refused until `until`, when
/// every token it could match has expired anyway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub revoked_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyRecord {
    pub user_id: String,
    pub tenant_id: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Typed access to the identity namespaces.
#[derive(Clone)]
pub struct IdentityStore {
    state: Arc<dyn StateStore>,
    tenant: TenantId,
}

/// A record and the version it was read at (for compare-and-set).
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, StateError> {
    serde_json::from_value(value)
        .map_err(|e| StateError::Internal(anyhow::anyhow!("corrupt identity record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<serde_json::Value, StateError> {
    serde_json::to_value(value)
        .map_err(|e| StateError::Internal(anyhow::anyhow!("cannot encode identity record: {e}")))
}

impl IdentityStore {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        Self {
            state,
            tenant: TenantId::identity(),
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        ns: &str,
        key: &str,
    ) -> Result<Option<Versioned<T>>, StateError> {
        match self.state.get(&self.tenant, ns, key).await? {
            None => Ok(None),
            Some(entry) => Ok(Some(Versioned {
                value: decode(entry.value)?,
                version: entry.version,
            })),
        }
    }

    async fn put<T: Serialize>(
        &self,
        ns: &str,
        key: &str,
        value: &T,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        self.state
            .put(&self.tenant, ns, key, encode(value)?, expected)
            .await
    }

    async fn list_all<T: DeserializeOwned>(
        &self,
        ns: &str,
        prefix: Option<String>,
    ) -> Result<Vec<T>, StateError> {
        self.list_entries(ns, prefix)
            .await?
            .into_iter()
            .map(|(_, entry)| decode(entry.value))
            .collect()
    }

    async fn list_keys(&self, ns: &str, prefix: Option<String>) -> Result<Vec<String>, StateError> {
        Ok(self
            .list_entries(ns, prefix)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// Every entry of the namespace (under `prefix`), page by page.
    async fn list_entries(
        &self,
        ns: &str,
        prefix: Option<String>,
    ) -> Result<Vec<(String, StateEntry)>, StateError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .state
                .list(&self.tenant, ns, prefix.clone(), after.clone(), PAGE)
                .await?;
            let done = page.len() < PAGE;
            after = page.last().map(|(k, _)| k.clone());
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Whether any user exists (bootstrap runs only when none does).
    pub async fn has_users(&self) -> Result<bool, StateError> {
        Ok(!self
            .state
            .list(&self.tenant, USERNAMES, None, None, 1)
            .await?
            .is_empty())
    }

    /// Claims the username; `false` when it is taken.
    pub async fn claim_username(
        &self,
        username: &str,
        record: &UsernameRecord,
    ) -> Result<bool, StateError> {
        match self.put(USERNAMES, username, record, Some(0)).await {
            Ok(_) => Ok(true),
            Err(StateError::VersionConflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn username(&self, username: &str) -> Result<Option<UsernameRecord>, StateError> {
        Ok(self.get(USERNAMES, username).await?.map(|v| v.value))
    }

    pub async fn put_user(&self, user: &UserRecord) -> Result<(), StateError> {
        let key = format!("{}/{}", user.tenant_id, user.id);
        self.put(USERS, &key, user, None).await.map(|_| ())
    }

    pub async fn user(&self, tenant: &str, id: &str) -> Result<Option<UserRecord>, StateError> {
        Ok(self
            .get(USERS, &format!("{tenant}/{id}"))
            .await?
            .map(|v| v.value))
    }

    pub async fn users(&self, tenant: &str) -> Result<Vec<UserRecord>, StateError> {
        self.list_all(USERS, Some(format!("{tenant}/"))).await
    }

    pub async fn delete_user(&self, user: &UserRecord) -> Result<(), StateError> {
        self.state
            .delete(
                &self.tenant,
                USERS,
                &format!("{}/{}", user.tenant_id, user.id),
            )
            .await?;
        self.state
            .delete(&self.tenant, USERNAMES, &user.username)
            .await?;
        Ok(())
    }

    pub async fn insert_api_key(&self, digest: &str, key: &ApiKeyRecord) -> Result<(), StateError> {
        self.put(API_KEYS, digest, key, Some(0)).await?;
        let id_key = format!("{}/{}", key.tenant_id, key.id);
        let index = KeyIdRecord {
            digest: digest.to_owned(),
        };
        self.put(API_KEY_IDS, &id_key, &index, Some(0)).await?;
        Ok(())
    }

    pub async fn api_key(
        &self,
        digest: &str,
    ) -> Result<Option<Versioned<ApiKeyRecord>>, StateError> {
        self.get(API_KEYS, digest).await
    }

    /// Writes the key back if it is still at `version`; `false` when it changed meanwhile.
    pub async fn update_api_key(
        &self,
        digest: &str,
        key: &ApiKeyRecord,
        version: u64,
    ) -> Result<bool, StateError> {
        match self.put(API_KEYS, digest, key, Some(version)).await {
            Ok(_) => Ok(true),
            Err(StateError::VersionConflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The digest of the tenant's key with this id.
    pub async fn api_key_digest(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<String>, StateError> {
        Ok(self
            .get::<KeyIdRecord>(API_KEY_IDS, &format!("{tenant}/{id}"))
            .await?
            .map(|v| v.value.digest))
    }

    /// The tenant's keys with their digests.
    pub async fn api_keys(&self, tenant: &str) -> Result<Vec<(String, ApiKeyRecord)>, StateError> {
        let index: Vec<KeyIdRecord> = self
            .list_all(API_KEY_IDS, Some(format!("{tenant}/")))
            .await?;
        let mut out = Vec::with_capacity(index.len());
        for entry in index {
            if let Some(key) = self.api_key(&entry.digest).await? {
                out.push((entry.digest, key.value));
            }
        }
        Ok(out)
    }

    pub async fn insert_refresh(
        &self,
        digest: &str,
        token: &RefreshRecord,
    ) -> Result<(), StateError> {
        self.put(REFRESH, digest, token, Some(0)).await.map(|_| ())
    }

    pub async fn refresh(
        &self,
        digest: &str,
    ) -> Result<Option<Versioned<RefreshRecord>>, StateError> {
        self.get(REFRESH, digest).await
    }

    /// Marks the token used if nobody else did first; `false` when it changed meanwhile.
    pub async fn mark_refresh_used(
        &self,
        digest: &str,
        token: &RefreshRecord,
        version: u64,
    ) -> Result<bool, StateError> {
        match self.put(REFRESH, digest, token, Some(version)).await {
            Ok(_) => Ok(true),
            Err(StateError::VersionConflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn put_family(&self, id: &str, family: &FamilyRecord) -> Result<(), StateError> {
        self.put(FAMILIES, id, family, None).await.map(|_| ())
    }

    pub async fn family(&self, id: &str) -> Result<Option<FamilyRecord>, StateError> {
        Ok(self.get(FAMILIES, id).await?.map(|v| v.value))
    }

    /// Records that the family belongs to the user (so that deleting the user revokes it).
    pub async fn index_family(
        &self,
        tenant: &str,
        user_id: &str,
        family_id: &str,
    ) -> Result<(), StateError> {
        let key = format!("{tenant}/{user_id}/{family_id}");
        let record = FamilyIndexRecord {
            family_id: family_id.to_owned(),
        };
        self.put(USER_FAMILIES, &key, &record, None)
            .await
            .map(|_| ())
    }

    /// The families of the user (`Some`) or of every user of the tenant (`None`), with their
    /// index keys.
    pub async fn families_of(
        &self,
        tenant: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, StateError> {
        let prefix = match user_id {
            Some(user) => format!("{tenant}/{user}/"),
            None => format!("{tenant}/"),
        };
        let keys = self.list_keys(USER_FAMILIES, Some(prefix)).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| {
                let family = k.rsplit('/').next()?.to_owned();
                Some((k, family))
            })
            .collect())
    }

    pub async fn delete_family_index(&self, index_key: &str) -> Result<(), StateError> {
        self.state
            .delete(&self.tenant, USER_FAMILIES, index_key)
            .await
            .map(|_| ())
    }

    /// Deletes the key and its id index.
    pub async fn delete_api_key(&self, digest: &str, key: &ApiKeyRecord) -> Result<(), StateError> {
        self.state.delete(&self.tenant, API_KEYS, digest).await?;
        self.state
            .delete(
                &self.tenant,
                API_KEY_IDS,
                &format!("{}/{}", key.tenant_id, key.id),
            )
            .await?;
        Ok(())
    }

    pub async fn put_revocation(
        &self,
        key: &str,
        record: &RevocationRecord,
    ) -> Result<(), StateError> {
        self.put(REVOKED, key, record, None).await.map(|_| ())
    }

    /// The whole revocation list (it holds only entries younger than an access token's life,
    /// plus expired ones not yet pruned).
    pub async fn revocations(&self) -> Result<Vec<(String, RevocationRecord)>, StateError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .state
                .list(&self.tenant, REVOKED, None, after.clone(), PAGE)
                .await?;
            let done = page.len() < PAGE;
            after = page.last().map(|(k, _)| k.clone());
            for (key, entry) in page {
                out.push((key, decode(entry.value)?));
            }
            if done {
                return Ok(out);
            }
        }
    }

    pub async fn revocation(&self, key: &str) -> Result<Option<RevocationRecord>, StateError> {
        Ok(self.get(REVOKED, key).await?.map(|v| v.value))
    }

    pub async fn delete_revocation(&self, key: &str) -> Result<(), StateError> {
        self.state
            .delete(&self.tenant, REVOKED, key)
            .await
            .map(|_| ())
    }
}
