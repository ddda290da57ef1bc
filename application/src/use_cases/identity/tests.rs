//! Use-case tests: crypto, audit and gates are mockall mocks; the state store is the shared
//! in-memory one of `crate::testing` (the real adapters pass the state-store contract suite).

use std::sync::{Arc, Mutex};

use allsource_domain::{Role, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use super::ports::{AccessClaims, MockPasswordHasher, MockSecrets, MockTokenSigner, TokenError};
use super::*;
use crate::auth::{AuthError, Authenticate, Credential};
use crate::ports::MockAuditLog;
use crate::quota::{GateError, MockQuotaGate, MockTenantGate, QuotaExceeded, QuotaKind};
use crate::{Caller, Principal};

/// The shared in-memory state store of the use-case tests.
pub(super) type FakeState = crate::testing::MemoryStateStore;

struct FixedClock(Mutex<DateTime<Utc>>);
impl crate::ports::Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

struct Setup {
    identity: Identity,
    clock: Arc<FixedClock>,
    state: Arc<FakeState>,
}

impl Setup {
    /// Another node over the same state store and clock (or this one after a restart).
    fn node(&self) -> Identity {
        identity_over(
            self.state.clone(),
            self.clock.clone(),
            Arc::new(hasher()),
            3,
        )
    }

    fn advance_millis(&self, ms: i64) {
        let mut now = self.clock.0.lock().unwrap();
        *now += chrono::Duration::milliseconds(ms);
    }
}

fn identity_over(
    state: Arc<FakeState>,
    clock: Arc<FixedClock>,
    hasher: Arc<dyn super::ports::PasswordHasher>,
    max_login_failures: usize,
) -> Identity {
    Identity::new(
        IdentityDeps {
            state,
            hasher,
            signer: Arc::new(signer()),
            secrets: Arc::new(secrets()),
            audit: Arc::new(audit()),
            clock,
            quotas: Arc::new(open_quotas()),
            tenants: Arc::new(active_tenants()),
        },
        IdentityConfig {
            max_login_failures,
            ..IdentityConfig::default()
        },
    )
}

fn hasher() -> MockPasswordHasher {
    let mut h = MockPasswordHasher::new();
    h.expect_hash().returning(|p| Ok(format!("hash:{p}")));
    h.expect_verify()
        .returning(|p, hash| hash == format!("hash:{p}"));
    h
}

fn secrets() -> MockSecrets {
    let mut s = MockSecrets::new();
    // Unique across every node of a test (nodes share one state store).
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    s.expect_random_token().returning(|| {
        let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        format!("random{c}")
    });
    s.expect_digest().returning(|x| format!("sha:{x}"));
    s
}

fn signer() -> MockTokenSigner {
    let mut s = MockTokenSigner::new();
    s.expect_sign()
        .returning(|c| Ok(serde_json::to_string(c).unwrap()));
    s.expect_verify().returning(|t| {
        if t == "expired" {
            return Err(TokenError::Expired);
        }
        serde_json::from_str::<AccessClaims>(t).map_err(|_| TokenError::Invalid("bad".into()))
    });
    s
}

fn audit() -> MockAuditLog {
    let mut a = MockAuditLog::new();
    a.expect_record().returning(|_| Ok(()));
    a
}

fn setup_with(quotas: MockQuotaGate, tenants: MockTenantGate, audit: MockAuditLog) -> Setup {
    let clock = Arc::new(FixedClock(Mutex::new(
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
    )));
    let state = Arc::new(FakeState::default());
    let identity = Identity::new(
        IdentityDeps {
            state: state.clone(),
            hasher: Arc::new(hasher()),
            signer: Arc::new(signer()),
            secrets: Arc::new(secrets()),
            audit: Arc::new(audit),
            clock: clock.clone(),
            quotas: Arc::new(quotas),
            tenants: Arc::new(tenants),
        },
        IdentityConfig {
            max_login_failures: 3,
            ..IdentityConfig::default()
        },
    );
    Setup {
        identity,
        clock,
        state,
    }
}

fn open_quotas() -> MockQuotaGate {
    let mut q = MockQuotaGate::new();
    q.expect_consume().returning(|_, _, _| Ok(()));
    q.expect_release().returning(|_, _, _| ());
    q
}

fn active_tenants() -> MockTenantGate {
    let mut t = MockTenantGate::new();
    t.expect_check_active().returning(|_| Ok(()));
    t
}

fn setup() -> Setup {
    setup_with(open_quotas(), active_tenants(), audit())
}

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn admin() -> Caller {
    Caller::new(tenant("default"))
}

fn as_role(role: Role) -> Caller {
    Caller::authenticated(
        tenant("default"),
        role,
        Principal::User {
            user_id: format!("{role}-id"),
            username: role.to_string(),
        },
    )
}

fn user_input(name: &str, role: &str) -> CreateUserInput {
    CreateUserInput {
        username: name.into(),
        password: "a good long password".into(),
        role: role.into(),
        tenant_id: None,
    }
}

fn login_input(name: &str, password: &str) -> LoginInput {
    LoginInput {
        username: name.into(),
        password: password.into(),
        tenant_id: None,
    }
}

#[tokio::test]
async fn bootstrap_creates_the_first_admin_only_once() {
    let s = setup();
    assert!(
        s.identity
            .bootstrap_admin("Root", "a good long password", &tenant("default"))
            .await
            .unwrap()
    );
    assert!(
        !s.identity
            .bootstrap_admin("other", "a good long password", &tenant("default"))
            .await
            .unwrap()
    );
    let pair = s
        .identity
        .login(login_input("root", "a good long password"))
        .await
        .unwrap();
    assert_eq!(pair.user.role, Role::Admin);
    assert_eq!(pair.user.username, "root");
}

#[tokio::test]
async fn only_admins_create_users_and_never_above_themselves() {
    let s = setup();
    for role in [Role::Developer, Role::Readonly, Role::ServiceAccount] {
        let err = s
            .identity
            .create_user(&as_role(role), user_input("x", "readonly"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, IdentityError::Forbidden(_)),
            "{role}: {err:?}"
        );
    }
    let user = s
        .identity
        .create_user(&admin(), user_input("dev", "developer"))
        .await
        .unwrap();
    assert_eq!(
        (user.role, user.tenant_id.as_str()),
        (Role::Developer, "default")
    );
    let err = s
        .identity
        .create_user(&admin(), user_input("DEV", "readonly"))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Conflict(_)), "{err:?}");
    let err = s
        .identity
        .create_user(
            &admin(),
            CreateUserInput {
                username: "bad name".into(),
                password: "short".into(),
                role: "root".into(),
                tenant_id: Some("a/b".into()),
            },
        )
        .await
        .unwrap_err();
    let IdentityError::Validation(fields) = err else {
        panic!("{err:?}")
    };
    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(names, ["username", "password", "role", "tenant_id"]);
}

#[tokio::test]
async fn only_operator_admins_create_users_in_other_tenants() {
    let s = setup();
    let mut input = user_input("acme-admin", "admin");
    input.tenant_id = Some("acme".into());
    assert_eq!(
        s.identity
            .create_user(&admin(), input.clone())
            .await
            .unwrap()
            .tenant_id,
        "acme"
    );
    let acme_admin = Caller::new(tenant("acme"));
    input.username = "spy".into();
    input.tenant_id = Some("default".into());
    assert!(matches!(
        s.identity.create_user(&acme_admin, input).await,
        Err(IdentityError::Forbidden(_))
    ));
}

#[tokio::test]
async fn users_of_a_deactivated_tenant_are_not_created_there() {
    let mut tenants = MockTenantGate::new();
    tenants.expect_check_active().returning(|t| {
        Err(GateError::TenantInactive(format!(
            "tenant {t} is deactivated"
        )))
    });
    let s = setup_with(open_quotas(), tenants, audit());
    let mut input = user_input("x", "readonly");
    input.tenant_id = Some("gone".into());
    assert!(matches!(
        s.identity.create_user(&admin(), input).await,
        Err(IdentityError::Forbidden(_))
    ));
}

#[tokio::test]
async fn login_throttles_after_repeated_failures_and_the_window_passes() {
    let s = setup();
    s.identity
        .create_user(&admin(), user_input("ann", "readonly"))
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            s.identity
                .login(login_input("ann", "wrong password!"))
                .await,
            Err(IdentityError::Unauthorized(_))
        ));
    }
    let err = s
        .identity
        .login(login_input("ann", "a good long password"))
        .await
        .unwrap_err();
    let IdentityError::Throttled { retry_after_secs } = err else {
        panic!("{err:?}")
    };
    assert_eq!(retry_after_secs, 900);
    *s.clock.0.lock().unwrap() += chrono::Duration::seconds(901);
    assert!(
        s.identity
            .login(login_input("ann", "a good long password"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn unknown_users_get_the_same_answer_as_wrong_passwords() {
    let s = setup();
    s.identity
        .create_user(&admin(), user_input("ann", "readonly"))
        .await
        .unwrap();
    let a = s
        .identity
        .login(login_input("ann", "wrong password!"))
        .await
        .unwrap_err();
    let b = s
        .identity
        .login(login_input("bob", "wrong password!"))
        .await
        .unwrap_err();
    assert_eq!(a.to_string(), b.to_string());
    let mut other = login_input("ann", "a good long password");
    other.tenant_id = Some("acme".into());
    assert_eq!(
        s.identity.login(other).await.unwrap_err().to_string(),
        a.to_string()
    );
}

#[tokio::test]
async fn login_and_refresh_are_audited_and_reuse_revokes_the_family() {
    let mut audit_log = MockAuditLog::new();
    let actions = Arc::new(Mutex::new(Vec::new()));
    let seen = actions.clone();
    audit_log.expect_record().returning(move |r| {
        seen.lock().unwrap().push(format!(
            "{}:{}@{}",
            r.action,
            r.outcome.as_str(),
            r.tenant_id
        ));
        Ok(())
    });
    let s = setup_with(open_quotas(), active_tenants(), audit_log);
    s.identity
        .create_user(&admin(), user_input("ann", "developer"))
        .await
        .unwrap();
    let first = s
        .identity
        .login(login_input("ann", "a good long password"))
        .await
        .unwrap();
    let second = s.identity.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(first.refresh_token, second.refresh_token);
    assert!(matches!(
        s.identity.refresh(&first.refresh_token).await,
        Err(IdentityError::Unauthorized(_))
    ));
    assert!(matches!(
        s.identity.refresh(&second.refresh_token).await,
        Err(IdentityError::Unauthorized(_))
    ));
    let _ = s
        .identity
        .login(login_input("ann", "wrong password!"))
        .await;
    // An unknown user naming a tenant: the record goes to the operator tenant, never to the
    // tenant an anonymous request names.
    let _ = s
        .identity
        .login(LoginInput {
            tenant_id: Some("victim".into()),
            ..login_input("nobody", "some password")
        })
        .await;
    let actions = actions.lock().unwrap().clone();
    assert_eq!(
        actions,
        [
            "user.create:success@default",
            "auth.login:success@default",
            "token.reuse_detected:denied@default",
            "auth.login:failure@default",
            "auth.login:failure@default"
        ]
    );
}

#[tokio::test]
async fn expired_refresh_tokens_are_refused() {
    let s = setup();
    s.identity
        .create_user(&admin(), user_input("ann", "developer"))
        .await
        .unwrap();
    let pair = s
        .identity
        .login(login_input("ann", "a good long password"))
        .await
        .unwrap();
    *s.clock.0.lock().unwrap() += chrono::Duration::days(15);
    assert!(matches!(
        s.identity.refresh(&pair.refresh_token).await,
        Err(IdentityError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn api_keys_respect_roles_quotas_and_revocation() {
    let mut quotas = MockQuotaGate::new();
    quotas
        .expect_consume()
        .withf(|t, k, n| t.as_str() == "default" && *k == QuotaKind::ApiKeys && *n == 1)
        .times(2)
        .returning(|_, _, _| Ok(()));
    quotas.expect_consume().returning(|_, _, _| {
        Err(GateError::QuotaExceeded(QuotaExceeded {
            quota: "max_api_keys".into(),
            limit: 2,
            used: 2,
            retry_after_secs: 60,
        }))
    });
    quotas
        .expect_release()
        .withf(|_, k, n| *k == QuotaKind::ApiKeys && *n == 1)
        .times(1)
        .returning(|_, _, _| ());
    let s = setup_with(quotas, active_tenants(), audit());
    let dev = as_role(Role::Developer);
    let err = s
        .identity
        .create_api_key(
            &dev,
            CreateApiKeyInput {
                name: "x".into(),
                role: Some("admin".into()),
                expires_at: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Forbidden(_)), "{err:?}");
    let created = s
        .identity
        .create_api_key(
            &dev,
            CreateApiKeyInput {
                name: "ci".into(),
                role: None,
                expires_at: None,
            },
        )
        .await
        .unwrap();
    assert!(created.key.starts_with("ask_"));
    assert_eq!(created.view.role, Role::Developer);
    assert_eq!(created.view.owner_user_id, "developer-id");
    let caller = s
        .identity
        .authenticate(Credential::ApiKey(created.key.clone()))
        .await
        .unwrap();
    assert_eq!(caller.role(), Role::Developer);
    assert_eq!(caller.user_id(), Some("developer-id"));
    assert!(
        s.identity.list_api_keys(&dev).await.unwrap()[0]
            .last_used_at
            .is_some()
    );
    // Others don't see or revoke it.
    let other = as_role(Role::ServiceAccount);
    assert!(s.identity.list_api_keys(&other).await.unwrap().is_empty());
    assert!(matches!(
        s.identity.revoke_api_key(&other, &created.view.id).await,
        Err(IdentityError::NotFound(_))
    ));
    s.identity
        .create_api_key(
            &dev,
            CreateApiKeyInput {
                name: "second".into(),
                role: Some("readonly".into()),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        s.identity
            .create_api_key(
                &dev,
                CreateApiKeyInput {
                    name: "third".into(),
                    role: None,
                    expires_at: None
                }
            )
            .await,
        Err(IdentityError::Quota(_))
    ));
    s.identity
        .revoke_api_key(&dev, &created.view.id)
        .await
        .unwrap();
    // Twice is fine and releases once.
    s.identity
        .revoke_api_key(&dev, &created.view.id)
        .await
        .unwrap();
    assert!(matches!(
        s.identity
            .authenticate(Credential::Bearer(created.key))
            .await,
        Err(AuthError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn expired_keys_and_deactivated_tenants_are_refused() {
    let mut tenants = MockTenantGate::new();
    tenants.expect_check_active().returning(|t| {
        if t.as_str() == "gone" {
            Err(GateError::TenantInactive("deactivated".into()))
        } else {
            Ok(())
        }
    });
    let s = setup_with(open_quotas(), tenants, audit());
    let created = s
        .identity
        .create_api_key(
            &admin(),
            CreateApiKeyInput {
                name: "soon".into(),
                role: None,
                expires_at: Some("2026-11-23T12:01:00Z".into()),
            },
        )
        .await
        .unwrap();
    assert!(
        s.identity
            .authenticate(Credential::ApiKey(created.key.clone()))
            .await
            .is_ok()
    );
    *s.clock.0.lock().unwrap() += chrono::Duration::seconds(61);
    assert!(matches!(
        s.identity
            .authenticate(Credential::ApiKey(created.key))
            .await,
        Err(AuthError::Unauthorized(_))
    ));
    let gone = Caller::new(tenant("gone"));
    let key = s
        .identity
        .create_api_key(
            &gone,
            CreateApiKeyInput {
                name: "k".into(),
                role: None,
                expires_at: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        s.identity.authenticate(Credential::ApiKey(key.key)).await,
        Err(AuthError::Forbidden(_))
    ));
}

#[tokio::test]
async fn access_tokens_become_callers_and_bad_ones_are_refused() {
    let s = setup();
    s.identity
        .create_user(&admin(), user_input("ann", "readonly"))
        .await
        .unwrap();
    let pair = s
        .identity
        .login(login_input("ann", "a good long password"))
        .await
        .unwrap();
    let caller = s
        .identity
        .authenticate(Credential::Bearer(pair.access_token.clone()))
        .await
        .unwrap();
    assert_eq!(caller.role(), Role::Readonly);
    assert_eq!(caller.tenant().as_str(), "default");
    assert!(matches!(caller.principal(), Principal::User { username, .. } if username == "ann"));
    let claims: AccessClaims = serde_json::from_str(&pair.access_token).unwrap();
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(claims.iss, "allsource");
    for bad in ["expired", "garbage", "ask_unknown"] {
        assert!(
            matches!(
                s.identity
                    .authenticate(Credential::Bearer(bad.into()))
                    .await,
                Err(AuthError::Unauthorized(_))
            ),
            "{bad}"
        );
    }
    let mut forged = claims.clone();
    forged.role = "root".into();
    assert!(
        s.identity
            .authenticate(Credential::Bearer(serde_json::to_string(&forged).unwrap()))
            .await
            .is_err()
    );
    assert!(
        s.identity
            .authenticate(Credential::ApiKey("not-a-key".into()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn deleting_users_revokes_their_keys_but_never_oneself() {
    let s = setup();
    let ann = s
        .identity
        .create_user(&admin(), user_input("ann", "developer"))
        .await
        .unwrap();
    let ann_caller = Caller::authenticated(
        tenant("default"),
        Role::Developer,
        Principal::User {
            user_id: ann.id.clone(),
            username: "ann".into(),
        },
    );
    let key = s
        .identity
        .create_api_key(
            &ann_caller,
            CreateApiKeyInput {
                name: "k".into(),
                role: None,
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let root = s
        .identity
        .create_user(&admin(), user_input("root", "admin"))
        .await
        .unwrap();
    let root_caller = Caller::authenticated(
        tenant("default"),
        Role::Admin,
        Principal::User {
            user_id: root.id.clone(),
            username: "root".into(),
        },
    );
    assert!(matches!(
        s.identity.delete_user(&root_caller, &root.id).await,
        Err(IdentityError::Forbidden(_))
    ));
    s.identity.delete_user(&root_caller, &ann.id).await.unwrap();
    assert!(
        s.identity
            .authenticate(Credential::ApiKey(key.key))
            .await
            .is_err()
    );
    assert!(matches!(
        s.identity.get_user(&root_caller, &ann.id).await,
        Err(IdentityError::NotFound(_))
    ));
    assert!(
        s.identity
            .login(login_input("ann", "a good long password"))
            .await
            .is_err()
    );
}

#[test]
fn usernames_and_passwords_are_checked() {
    assert_eq!(normalize_username(" Ann.B@x-y_z ").unwrap(), "ann.b@x-y_z");
    for bad in ["", "a b", "a/b", &"x".repeat(65)] {
        assert!(normalize_username(bad).is_err(), "{bad}");
    }
    assert!(check_password("twelve chars").is_ok());
    assert!(check_password("eleven char").is_err());
    assert!(check_password(&"x".repeat(1025)).is_err());
}

/// A user of `role` in tenant `default`, logged in: its token pair and the caller its access
/// token stands for.
async fn logged_in(s: &Setup, name: &str, role: &str) -> (TokenPair, Caller) {
    s.identity
        .create_user(&admin(), user_input(name, role))
        .await
        .unwrap();
    let pair = s
        .identity
        .login(login_input(name, "a good long password"))
        .await
        .unwrap();
    let caller = s
        .identity
        .authenticate(Credential::Bearer(pair.access_token.clone()))
        .await
        .unwrap();
    (pair, caller)
}

fn key_input(name: &str, role: Option<&str>, expires_at: Option<&str>) -> CreateApiKeyInput {
    CreateApiKeyInput {
        name: name.into(),
        role: role.map(Into::into),
        expires_at: expires_at.map(Into::into),
    }
}

fn revoked(result: Result<Caller, AuthError>) -> bool {
    matches!(result, Err(AuthError::Unauthorized(_)))
}

#[tokio::test]
async fn a_deleted_users_access_token_stops_at_once_and_mints_no_key() {
    let s = setup();
    let (pair, bob) = logged_in(&s, "bob", "developer").await;
    let before = s
        .identity
        .create_api_key(&bob, key_input("before", None, None))
        .await
        .unwrap();
    s.identity
        .delete_user(&admin(), bob.user_id().unwrap())
        .await
        .unwrap();
    let token = || Credential::Bearer(pair.access_token.clone());
    // The access token is refused at once, long before it expires.
    assert!(revoked(s.identity.authenticate(token()).await));
    // A caller authenticated just before the deletion (a request in flight) mints nothing.
    let err = s
        .identity
        .create_api_key(&bob, key_input("after", None, None))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Unauthorized(_)), "{err:?}");
    assert!(
        s.identity
            .list_api_keys(&admin())
            .await
            .unwrap()
            .iter()
            .all(|k| k.name != "after"),
        "no key was left behind"
    );
    // The key made before is revoked, and so is the refresh token.
    assert!(revoked(
        s.identity
            .authenticate(Credential::ApiKey(before.key.clone()))
            .await
    ));
    assert!(matches!(
        s.identity.refresh(&pair.refresh_token).await,
        Err(IdentityError::Unauthorized(_))
    ));
    // After a restart (a new node over the same store) too.
    let restarted = s.node();
    assert!(revoked(restarted.authenticate(token()).await));
    assert!(revoked(
        restarted.authenticate(Credential::ApiKey(before.key)).await
    ));
}

#[tokio::test]
async fn a_key_minted_while_its_user_is_deleted_on_another_node_is_revoked() {
    let s = setup();
    let other_node = s.node();
    let (_, bob) = logged_in(&s, "bob", "developer").await;
    // The other node has loaded its revocation list before the deletion.
    assert!(
        other_node
            .authenticate(Credential::Bearer(
                s.identity
                    .login(login_input("bob", "a good long password"))
                    .await
                    .unwrap()
                    .access_token
            ))
            .await
            .is_ok()
    );
    s.identity
        .delete_user(&admin(), bob.user_id().unwrap())
        .await
        .unwrap();
    // Within its reload interval, the other node still has the old list in memory, but key
    // creation reads the store: nothing is minted.
    let err = other_node
        .create_api_key(&bob, key_input("late", None, None))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Unauthorized(_)), "{err:?}");
}

#[tokio::test]
async fn another_node_refuses_a_revoked_token_within_the_reload_bound() {
    let s = setup();
    let other_node = s.node();
    let (pair, bob) = logged_in(&s, "bob", "developer").await;
    let token = || Credential::Bearer(pair.access_token.clone());
    assert!(other_node.authenticate(token()).await.is_ok());
    s.identity
        .delete_user(&admin(), bob.user_id().unwrap())
        .await
        .unwrap();
    s.advance_millis(REVOCATION_RELOAD_MILLIS);
    assert!(revoked(other_node.authenticate(token()).await));
}

#[tokio::test]
async fn reuse_detection_stops_the_access_tokens_of_the_family_at_once() {
    let s = setup();
    let (first, _) = logged_in(&s, "ann", "developer").await;
    let second = s.identity.refresh(&first.refresh_token).await.unwrap();
    let other_login = s
        .identity
        .login(login_input("ann", "a good long password"))
        .await
        .unwrap();
    let bearer = |t: &str| Credential::Bearer(t.to_owned());
    assert!(
        s.identity
            .authenticate(bearer(&second.access_token))
            .await
            .is_ok()
    );
    // The first refresh token comes back: a thief. The whole login is revoked …
    assert!(s.identity.refresh(&first.refresh_token).await.is_err());
    assert!(revoked(
        s.identity.authenticate(bearer(&first.access_token)).await
    ));
    assert!(revoked(
        s.identity.authenticate(bearer(&second.access_token)).await
    ));
    assert!(revoked(
        s.node().authenticate(bearer(&second.access_token)).await
    ));
    // … and only that login.
    assert!(
        s.identity
            .authenticate(bearer(&other_login.access_token))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn revocations_expire_when_the_tokens_they_match_have() {
    let s = setup();
    let (pair, bob) = logged_in(&s, "bob", "developer").await;
    s.identity
        .delete_user(&admin(), bob.user_id().unwrap())
        .await
        .unwrap();
    assert_eq!(s.state.keys(&TenantId::identity(), "auth.revoked").len(), 1);
    // Past the token's lifetime and the slack, the entry is pruned on the next reload.
    s.advance_millis((IdentityConfig::default().access_ttl_secs + 61) * 1000);
    // (The token itself is expired by then: the mock signer does not check `exp`, so the
    // refusal here would come from the revocation list alone, which has let it go.)
    let _ = s
        .identity
        .authenticate(Credential::Bearer(pair.access_token))
        .await;
    assert_eq!(s.state.keys(&TenantId::identity(), "auth.revoked").len(), 0);
}

#[tokio::test]
async fn a_key_made_by_a_key_never_outlives_or_exceeds_it() {
    let s = setup();
    let parent = s
        .identity
        .create_api_key(
            &admin(),
            key_input("parent", Some("developer"), Some("2026-11-23T13:00:00Z")),
        )
        .await
        .unwrap();
    let by_key = s
        .identity
        .authenticate(Credential::ApiKey(parent.key.clone()))
        .await
        .unwrap();
    let limit = parent.view.expires_at;
    // No expiry asked, or a later one: the parent's.
    let child = s
        .identity
        .create_api_key(&by_key, key_input("child", None, None))
        .await
        .unwrap();
    assert_eq!(child.view.expires_at, limit);
    assert_eq!(child.view.role, Role::Developer);
    let later = s
        .identity
        .create_api_key(
            &by_key,
            key_input("later", None, Some("2030-01-01T00:00:00Z")),
        )
        .await
        .unwrap();
    assert_eq!(later.view.expires_at, limit);
    // An earlier one is kept.
    let earlier = s
        .identity
        .create_api_key(
            &by_key,
            key_input("earlier", None, Some("2026-11-23T12:30:00Z")),
        )
        .await
        .unwrap();
    assert_eq!(
        earlier.view.expires_at.unwrap().to_rfc3339(),
        "2026-11-23T12:30:00+00:00"
    );
    // Never a role above the parent's.
    assert!(matches!(
        s.identity
            .create_api_key(&by_key, key_input("up", Some("admin"), None))
            .await,
        Err(IdentityError::Forbidden(_))
    ));
    // A grandchild, then the parent is revoked: the whole line goes.
    let child_caller = s
        .identity
        .authenticate(Credential::ApiKey(child.key.clone()))
        .await
        .unwrap();
    let grandchild = s
        .identity
        .create_api_key(
            &child_caller,
            key_input("grandchild", Some("readonly"), None),
        )
        .await
        .unwrap();
    assert_eq!(grandchild.view.expires_at, limit);
    s.identity
        .revoke_api_key(&admin(), &parent.view.id)
        .await
        .unwrap();
    for key in [
        parent.key,
        child.key,
        later.key,
        earlier.key,
        grandchild.key,
    ] {
        assert!(revoked(
            s.identity.authenticate(Credential::ApiKey(key)).await
        ));
    }
    // And a revoked key creates nothing.
    assert!(matches!(
        s.identity
            .create_api_key(&child_caller, key_input("orphan", None, None))
            .await,
        Err(IdentityError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn a_key_of_a_key_without_expiry_expires_when_the_parent_is_revoked() {
    let s = setup();
    let parent = s
        .identity
        .create_api_key(&admin(), key_input("parent", None, None))
        .await
        .unwrap();
    let by_key = s
        .identity
        .authenticate(Credential::ApiKey(parent.key.clone()))
        .await
        .unwrap();
    let child = s
        .identity
        .create_api_key(&by_key, key_input("child", None, None))
        .await
        .unwrap();
    assert_eq!(child.view.expires_at, None);
    s.identity
        .revoke_api_key(&by_key, &parent.view.id)
        .await
        .unwrap();
    assert!(revoked(
        s.identity.authenticate(Credential::ApiKey(child.key)).await
    ));
}

/// A hasher that counts the passwords it verifies and takes its time doing so.
struct CountingHasher(std::sync::atomic::AtomicUsize);

#[async_trait]
impl super::ports::PasswordHasher for CountingHasher {
    async fn hash(&self, password: &str) -> anyhow::Result<String> {
        Ok(format!("hash:{password}"))
    }
    async fn verify(&self, password: &str, hash: &str) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        hash == format!("hash:{password}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_passwords_verify_at_most_the_limit() {
    let s = setup();
    let hasher = Arc::new(CountingHasher(std::sync::atomic::AtomicUsize::new(0)));
    let identity = identity_over(s.state.clone(), s.clock.clone(), hasher.clone(), 3);
    identity
        .create_user(&admin(), user_input("target", "developer"))
        .await
        .unwrap();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..24 {
        let identity = identity.clone();
        guesses.spawn(async move {
            identity
                .login(login_input("target", &format!("guess number {i}")))
                .await
        });
    }
    let (mut unauthorized, mut throttled) = (0, 0);
    while let Some(result) = guesses.join_next().await {
        match result.unwrap() {
            Err(IdentityError::Unauthorized(_)) => unauthorized += 1,
            Err(IdentityError::Throttled { .. }) => throttled += 1,
            other => panic!("{other:?}"),
        }
    }
    let verified = hasher.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        verified <= 3,
        "{verified} passwords verified with a limit of 3"
    );
    assert_eq!((unauthorized, throttled), (3, 21));
    // The right password waits too.
    assert!(matches!(
        identity
            .login(login_input("target", "a good long password"))
            .await,
        Err(IdentityError::Throttled { .. })
    ));
}

#[tokio::test]
async fn purging_a_tenant_deletes_its_users_keys_and_logins() {
    let s = setup();
    let operator = admin();
    s.identity
        .create_user(
            &operator,
            CreateUserInput {
                tenant_id: Some("acme".into()),
                ..user_input("carol", "admin")
            },
        )
        .await
        .unwrap();
    let pair = s
        .identity
        .login(login_input("carol", "a good long password"))
        .await
        .unwrap();
    let carol = s
        .identity
        .authenticate(Credential::Bearer(pair.access_token.clone()))
        .await
        .unwrap();
    assert_eq!(carol.tenant().as_str(), "acme");
    let key = s
        .identity
        .create_api_key(&carol, key_input("ci", None, None))
        .await
        .unwrap();
    let acme = Caller::new(tenant("acme"));
    let system_key = s
        .identity
        .create_api_key(&acme, key_input("system", None, None))
        .await
        .unwrap();
    // Another tenant's user is not touched.
    let (other, _) = logged_in(&s, "dave", "developer").await;

    s.identity.purge_tenant(&tenant("acme")).await.unwrap();
    assert!(s.identity.list_users(&acme).await.unwrap().is_empty());
    assert!(s.identity.list_api_keys(&acme).await.unwrap().is_empty());
    for credential in [
        Credential::Bearer(pair.access_token.clone()),
        Credential::ApiKey(key.key),
        Credential::ApiKey(system_key.key),
    ] {
        assert!(revoked(s.identity.authenticate(credential).await));
    }
    assert!(s.identity.refresh(&pair.refresh_token).await.is_err());
    assert!(
        s.identity
            .login(login_input("carol", "a good long password"))
            .await
            .is_err()
    );
    // Idempotent, and the name is free again.
    s.identity.purge_tenant(&tenant("acme")).await.unwrap();
    s.identity
        .create_user(
            &operator,
            CreateUserInput {
                tenant_id: Some("acme".into()),
                ..user_input("carol", "admin")
            },
        )
        .await
        .unwrap();
    assert!(
        s.identity
            .authenticate(Credential::Bearer(other.access_token))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn reserved_tenants_get_no_users() {
    let s = setup();
    for reserved in ["_identity", "_system", "_x"] {
        let err = s
            .identity
            .create_user(
                &admin(),
                CreateUserInput {
                    tenant_id: Some(reserved.into()),
                    ..user_input("eve", "admin")
                },
            )
            .await
            .unwrap_err();
        let IdentityError::Validation(fields) = err else {
            panic!("{err:?}");
        };
        assert_eq!(fields[0].field, "tenant_id", "{reserved}");
    }
}
