//! The cost of authentication on the request path (`cargo bench -p allsource-infrastructure
//! --bench auth`): `Authenticate::authenticate` for a JWT access token (HS256 verify, claims
//! parse, tenant check) and for an API key (SHA-256, one state-store read, tenant check), on
//! the memory state store. An append's own cost is in the `engine` bench and docs/BENCHMARKS.md.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use allsource_application::Caller;
use allsource_application::auth::{Authenticate, Credential};
use allsource_application::quota::Unlimited;
use allsource_application::use_cases::identity::{
    CreateApiKeyInput, CreateUserInput, Identity, IdentityConfig, IdentityDeps, LoginInput,
};
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::audit::MemoryAuditLog;
use allsource_infrastructure::identity::{Argon2Hasher, JwtSigner, OsSecrets, SigningKey};
use allsource_infrastructure::state::MemoryStateStore;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_auth(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let signer = JwtSigner::new(
        vec![SigningKey {
            kid: "default".into(),
            secret: vec![7; 48],
        }],
        vec![],
        "allsource",
    )
    .expect("signer");
    let identity = Identity::new(
        IdentityDeps {
            state: Arc::new(MemoryStateStore::new()),
            hasher: Arc::new(Argon2Hasher),
            signer: Arc::new(signer),
            secrets: Arc::new(OsSecrets),
            audit: Arc::new(MemoryAuditLog::new()),
            clock: Arc::new(SystemClock),
            quotas: Arc::new(Unlimited),
            tenants: Arc::new(Unlimited),
        },
        IdentityConfig::default(),
    );
    let (token, key) = runtime.block_on(async {
        let admin = Caller::default_tenant();
        identity
            .create_user(
                &admin,
                CreateUserInput {
                    username: "bench".into(),
                    password: "bench password 123".into(),
                    role: "developer".into(),
                    tenant_id: None,
                },
            )
            .await
            .expect("user");
        let pair = identity
            .login(LoginInput {
                username: "bench".into(),
                password: "bench password 123".into(),
                tenant_id: None,
            })
            .await
            .expect("login");
        let key = identity
            .create_api_key(
                &admin,
                CreateApiKeyInput {
                    name: "bench".into(),
                    role: Some("service_account".into()),
                    expires_at: None,
                },
            )
            .await
            .expect("key");
        (pair.access_token, key.key)
    });
    let mut group = c.benchmark_group("authenticate");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("jwt", |b| {
        b.to_async(&runtime).iter(|| async {
            identity
                .authenticate(Credential::Bearer(token.clone()))
                .await
                .expect("jwt")
        });
    });
    group.bench_function("api_key", |b| {
        b.to_async(&runtime).iter(|| async {
            identity
                .authenticate(Credential::ApiKey(key.clone()))
                .await
                .expect("key")
        });
    });
    group.finish();
    let mut group = c.benchmark_group("password");
    group.sample_size(10);
    group.bench_function("argon2id_verify", |b| {
        let hash = Argon2Hasher::hash_now("bench password 123").expect("hash");
        b.to_async(&runtime).iter(|| async {
            use allsource_application::use_cases::identity::ports::PasswordHasher as _;
            Argon2Hasher.verify("bench password 123", &hash).await
        });
    });
    group.finish();
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
