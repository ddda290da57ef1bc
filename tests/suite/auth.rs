//! Authentication and authorization against the real server with auth on: login, throttling,
//! refresh rotation and reuse, forged tokens (alg none, tampered claims, wrong key, expired,
//! wrong issuer, retired kid), API keys via both headers, revocation and expiry, privilege
//! escalation, tenant isolation, and a walk of every route × every role.

use allsource_domain::Role;
use allsource_presentation::{Access, served_routes};
use allsource_tests::server::{
    ADMIN_PASSWORD, ADMIN_USERNAME, Reply, TEST_JWT_SECRET, TestServer, read,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

fn assert_status(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["error"], code, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
}

async fn login(server: &TestServer, username: &str, password: &str) -> Reply {
    server
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&json!({"username": username, "password": password})),
        )
        .await
}

async fn admin_token(server: &TestServer) -> String {
    let reply = login(server, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["access_token"].as_str().unwrap().to_owned()
}

async fn create_user(server: &TestServer, token: &str, username: &str, role: &str) -> Reply {
    server
        .call(
            Method::POST,
            "/api/v1/auth/users",
            Some(token),
            Some(
                &json!({"username": username, "password": format!("{username} password 123"),
                         "role": role}),
            ),
        )
        .await
}

/// A user of `role` logged in: its access token.
async fn user_token(server: &TestServer, admin: &str, username: &str, role: &str) -> String {
    let reply = create_user(server, admin, username, role).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let reply = login(server, username, &format!("{username} password 123")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["access_token"].as_str().unwrap().to_owned()
}

async fn create_key(server: &TestServer, token: &str, body: Value) -> Reply {
    server
        .call(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(token),
            Some(&body),
        )
        .await
}

async fn me(server: &TestServer, token: &str) -> Reply {
    server
        .call(Method::GET, "/api/v1/auth/me", Some(token), None)
        .await
}

fn claims(overrides: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({"sub": "u-forged", "tenant_id": "default", "role": "admin",
        "username": "mallory", "exp": now + 600, "iat": now, "iss": "allsource", "jti": "j"});
    for (k, v) in overrides.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn forge(kid: &str, secret: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn login_me_and_failures_without_user_enumeration() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let ok = login(&server, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 900);
    assert!(
        ok.body["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("rt_")
    );
    assert_eq!(ok.body["user"]["role"], "admin");
    assert!(ok.body["user"].get("password_hash").is_none());
    let token = ok.body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("default"));
    assert_eq!(header.alg, Algorithm::HS256);
    let who = me(&server, token).await;
    assert_eq!(who.status, 200, "{}", who.body);
    assert_eq!(who.body["username"], ADMIN_USERNAME);
    assert_eq!(who.body["tenant_id"], "default");
    assert_eq!(who.body["role"], "admin");
    assert_eq!(who.body["type"], "user");

    let wrong = login(&server, ADMIN_USERNAME, "not the password").await;
    let unknown = login(&server, "nobody", "not the password").await;
    assert_status(&wrong, 401, "unauthorized");
    assert_status(&unknown, 401, "unauthorized");
    assert_eq!(wrong.body["detail"], unknown.body["detail"]);
    // Wrong tenant for the user: the same answer.
    let other_tenant = server
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(
                &json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD,
                         "tenant_id": "acme"}),
            ),
        )
        .await;
    assert_eq!(other_tenant.body["detail"], wrong.body["detail"]);
    // Unknown fields, e.g. a self-chosen role, are refused.
    let sneaky = server
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(
                &json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD,
                         "role": "admin"}),
            ),
        )
        .await;
    assert_status(&sneaky, 400, "validation_failed");
    // No credentials on a protected route; garbage credentials even on a public one.
    assert_status(
        &server
            .call(Method::GET, "/api/v1/auth/me", None, None)
            .await,
        401,
        "unauthorized",
    );
    assert_status(
        &server
            .call(Method::POST, "/api/v1/auth/login", Some("garbage"), None)
            .await,
        401,
        "unauthorized",
    );
    // The bootstrap admin is created once: a restart with other bootstrap credentials keeps it.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |s| {
        allsource_tests::server::enable_auth(s);
        s.auth.bootstrap_admin.username = "second".into();
    })
    .await;
    assert_eq!(
        login(&server, ADMIN_USERNAME, ADMIN_PASSWORD).await.status,
        200
    );
    assert_eq!(login(&server, "second", ADMIN_PASSWORD).await.status, 401);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_username() {
    let server = TestServer::start_with_auth(|s| s.auth.login.max_failures = 3).await;
    for _ in 0..3 {
        assert_eq!(
            login(&server, ADMIN_USERNAME, "bad password!").await.status,
            401
        );
    }
    // Now even the right password waits.
    let throttled = login(&server, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    assert_status(&throttled, 429, "rate_limited");
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    // Upper-case spelling is the same username.
    assert_eq!(login(&server, "ROOT", ADMIN_PASSWORD).await.status, 429);
    // Another username is not affected.
    assert_eq!(login(&server, "someone", "bad password!").await.status, 401);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let first = login(&server, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let r1 = first.body["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| {
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    "/api/v1/auth/refresh",
                    None,
                    Some(&json!({"refresh_token": token})),
                )
                .await
        }
    };
    let second = refresh(r1.clone()).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let r2 = second.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(
        me(&server, second.body["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );
    // r1 again: a thief (or the victim) replays it → the whole family dies.
    assert_status(&refresh(r1).await, 401, "unauthorized");
    assert_status(&refresh(r2).await, 401, "unauthorized");
    assert_status(&refresh("rt_nonsense".into()).await, 401, "unauthorized");
    assert_status(&refresh(String::new()).await, 401, "unauthorized");
    // A new login starts a new family.
    let again = login(&server, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let r3 = again.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(r3).await.status, 200);
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let token = admin_token(&server).await;
    let good = forge("default", TEST_JWT_SECRET, &claims(json!({})));
    assert_eq!(me(&server, &good).await.status, 200, "the forger works");

    let parts: Vec<&str> = token.split('.').collect();
    let mut attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT","kid":"default"}"#),
                parts[1]
            ),
        ),
        (
            "alg none with the original signature",
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"none","typ":"JWT","kid":"default"}"#),
                parts[1],
                parts[2]
            ),
        ),
        (
            "wrong key",
            forge(
                "default",
                "another secret of enough length 0123456789",
                &claims(json!({})),
            ),
        ),
        (
            "unknown kid",
            forge("k9", TEST_JWT_SECRET, &claims(json!({}))),
        ),
        (
            "expired",
            forge(
                "default",
                TEST_JWT_SECRET,
                &claims(json!({"exp": 1_000_000, "iat": 999_000})),
            ),
        ),
        (
            "wrong issuer",
            forge("default", TEST_JWT_SECRET, &claims(json!({"iss": "evil"}))),
        ),
        ("no exp", {
            let mut c = claims(json!({}));
            c.as_object_mut().unwrap().remove("exp");
            forge("default", TEST_JWT_SECRET, &c)
        }),
        (
            "unknown role",
            forge("default", TEST_JWT_SECRET, &claims(json!({"role": "root"}))),
        ),
        (
            "bad tenant",
            forge(
                "default",
                TEST_JWT_SECRET,
                &claims(json!({"tenant_id": "../x"})),
            ),
        ),
        ("garbage", "a.b.c".into()),
    ];
    // Tampered claims (role and tenant changed) under the original signature.
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["tenant_id"] = json!("acme");
    payload["role"] = json!("admin");
    attacks.push((
        "tampered claims",
        format!("{}.{}.{}", parts[0], b64(&payload.to_string()), parts[2]),
    ));
    // HS512 with the right secret: not the pinned algorithm.
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some("default".into());
    attacks.push((
        "hs512",
        jsonwebtoken::encode(
            &header,
            &claims(json!({})),
            &EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
        )
        .unwrap(),
    ));
    for (name, forged) in attacks {
        let reply = me(&server, &forged).await;
        assert_eq!(reply.status, 401, "{name}: {}", reply.body);
        assert_eq!(reply.body["error"], "unauthorized", "{name}");
        let append = server
            .call(
                Method::POST,
                "/api/v1/events",
                Some(&forged),
                Some(&json!({"entity_id": "e", "event_type": "t", "payload": {}})),
            )
            .await;
        assert_eq!(append.status, 401, "{name}");
    }
}

#[tokio::test]
async fn older_keys_verify_until_retired() {
    const K1: &str = "first secret 0123456789 0123456789 0123456789";
    const K2: &str = "second secret 0123456789 0123456789 012345678";
    const K0: &str = "zeroth secret 0123456789 0123456789 012345678";
    let server = TestServer::start_with_auth(|s| {
        s.auth.jwt.secret = String::new();
        s.auth.jwt.keys = [("k2", K2), ("k1", K1), ("k0", K0)]
            .into_iter()
            .map(|(kid, secret)| allsource::settings::JwtKeySettings {
                kid: kid.into(),
                secret: secret.into(),
            })
            .collect();
        s.auth.jwt.retired_kids = vec!["k0".into()];
    })
    .await;
    let token = admin_token(&server).await;
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some("k2"),
        "the newest key signs"
    );
    assert_eq!(
        me(&server, &forge("k1", K1, &claims(json!({}))))
            .await
            .status,
        200
    );
    assert_eq!(
        me(&server, &forge("k0", K0, &claims(json!({}))))
            .await
            .status,
        401
    );
    // The right secret under the wrong kid fails too.
    assert_eq!(
        me(&server, &forge("k2", K1, &claims(json!({}))))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn api_keys_work_in_both_headers_until_revoked_or_expired() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let admin = admin_token(&server).await;
    let created = create_key(
        &server,
        &admin,
        json!({"name": "ingest", "role": "service_account"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ask_") && key.len() == 47, "{key}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["role"], "service_account");
    assert_eq!(created.body["tenant_id"], "default");

    let event = json!({"entity_id": "order-1", "event_type": "order.placed", "payload": {}});
    let bearer = server
        .call(Method::POST, "/api/v1/events", Some(&key), Some(&event))
        .await;
    assert_eq!(bearer.status, 200, "{}", bearer.body);
    let header = read(
        server
            .client
            .post(server.url("/api/v1/events"))
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(event.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(header.status, 200, "{}", header.body);
    let who = me(&server, &key).await;
    assert_eq!(who.body["type"], "api_key");
    assert_eq!(who.body["api_key_id"], id.as_str());
    // A service account can't manage users.
    assert_status(
        &server
            .call(Method::GET, "/api/v1/auth/users", Some(&key), None)
            .await,
        403,
        "forbidden",
    );
    // Listing never shows the key or its hash; last use is recorded.
    let list = server
        .call(Method::GET, "/api/v1/auth/api-keys", Some(&admin), None)
        .await;
    assert_eq!(list.body["total"], 1);
    let listed = &list.body["api_keys"][0];
    assert!(
        listed.get("key").is_none() && listed.get("hash").is_none(),
        "{listed}"
    );
    assert!(!list.body.to_string().contains(&key[4..]));
    assert!(listed["last_used_at"].is_string(), "{listed}");

    let revoked = server
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(revoked.body["revoked_at"].is_string());
    assert_status(&me(&server, &key).await, 401, "unauthorized");
    let unknown = format!("ask_{}", "A".repeat(43));
    assert_status(&me(&server, &unknown).await, 401, "unauthorized");
    assert_status(
        &server
            .call(
                Method::DELETE,
                "/api/v1/auth/api-keys/nope",
                Some(&admin),
                None,
            )
            .await,
        404,
        "not_found",
    );

    // Expiry: a key that expires in two seconds.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let short = create_key(
        &server,
        &admin,
        json!({"name": "short", "expires_at": soon}),
    )
    .await;
    assert_eq!(short.status, 201, "{}", short.body);
    let short_key = short.body["key"].as_str().unwrap().to_owned();
    assert_eq!(me(&server, &short_key).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_status(&me(&server, &short_key).await, 401, "unauthorized");
    // Past expiry and bad input are refused.
    let past = create_key(
        &server,
        &admin,
        json!({"name": "old", "expires_at": "2000-01-01T00:00:00Z"}),
    )
    .await;
    assert_status(&past, 400, "validation_failed");
    assert_status(
        &create_key(&server, &admin, json!({"name": ""})).await,
        400,
        "validation_failed",
    );
    assert_status(
        &create_key(&server, &admin, json!({"name": "x", "role": "root"})).await,
        400,
        "validation_failed",
    );
    assert_status(
        &create_key(&server, &admin, json!({"name": "x", "tenant_id": "acme"})).await,
        400,
        "validation_failed",
    );
}

#[tokio::test]
async fn nobody_escalates_above_their_role() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let admin = admin_token(&server).await;
    let dev = user_token(&server, &admin, "dev", "developer").await;
    let ro = user_token(&server, &admin, "ro", "readonly").await;

    assert_status(
        &create_key(&server, &dev, json!({"name": "x", "role": "admin"})).await,
        403,
        "forbidden",
    );
    assert_eq!(
        create_key(&server, &dev, json!({"name": "x", "role": "developer"}))
            .await
            .status,
        201
    );
    assert_status(
        &create_key(&server, &ro, json!({"name": "x", "role": "developer"})).await,
        403,
        "forbidden",
    );
    assert_status(
        &create_key(
            &server,
            &ro,
            json!({"name": "x", "role": "service_account"}),
        )
        .await,
        403,
        "forbidden",
    );
    let ro_key = create_key(&server, &ro, json!({"name": "mine"})).await;
    assert_eq!(ro_key.status, 201);
    assert_eq!(ro_key.body["role"], "readonly");
    // A readonly key can't mint a developer key either.
    let ro_key = ro_key.body["key"].as_str().unwrap().to_owned();
    assert_status(
        &create_key(&server, &ro_key, json!({"name": "y", "role": "developer"})).await,
        403,
        "forbidden",
    );

    for token in [&dev, &ro, &ro_key] {
        assert_status(
            &create_user(&server, token, "evil", "admin").await,
            403,
            "forbidden",
        );
        let register = server
            .call(
                Method::POST,
                "/api/v1/auth/register",
                Some(token),
                Some(
                    &json!({"username": "evil", "password": "evil password 123", "role": "admin"}),
                ),
            )
            .await;
        assert_status(&register, 403, "forbidden");
        assert_status(
            &server
                .call(Method::GET, "/api/v1/auth/users", Some(token), None)
                .await,
            403,
            "forbidden",
        );
    }
    // No self-registration without credentials.
    let anonymous = server
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(&json!({"username": "evil", "password": "evil password 123", "role": "admin"})),
        )
        .await;
    assert_status(&anonymous, 401, "unauthorized");
    // Readonly keys only see their own keys; the developer's key is not theirs to revoke.
    let dev_keys = server
        .call(Method::GET, "/api/v1/auth/api-keys", Some(&dev), None)
        .await;
    let dev_key_id = dev_keys.body["api_keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ro_keys = server
        .call(Method::GET, "/api/v1/auth/api-keys", Some(&ro), None)
        .await;
    assert_eq!(ro_keys.body["total"], 1, "{}", ro_keys.body);
    assert_status(
        &server
            .call(
                Method::DELETE,
                &format!("/api/v1/auth/api-keys/{dev_key_id}"),
                Some(&ro),
                None,
            )
            .await,
        404,
        "not_found",
    );
    // Admins: users are listed without hashes; duplicates conflict; no self-deletion.
    let users = server
        .call(Method::GET, "/api/v1/auth/users", Some(&admin), None)
        .await;
    assert_eq!(users.body["total"], 3, "{}", users.body);
    assert!(!users.body.to_string().contains("argon2"));
    assert_status(
        &create_user(&server, &admin, "DEV", "readonly").await,
        409,
        "conflict",
    );
    let weak = server
        .call(
            Method::POST,
            "/api/v1/auth/users",
            Some(&admin),
            Some(&json!({"username": "weak", "password": "short", "role": "readonly"})),
        )
        .await;
    assert_status(&weak, 400, "validation_failed");
    let admin_id = me(&server, &admin).await.body["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_status(
        &server
            .call(
                Method::DELETE,
                &format!("/api/v1/auth/users/{admin_id}"),
                Some(&admin),
                None,
            )
            .await,
        403,
        "forbidden",
    );
    // Deleting a user revokes the user's keys and ends its logins' refresh.
    let dev_id = me(&server, &dev).await.body["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dev_key = create_key(&server, &dev, json!({"name": "z"})).await.body["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = server
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/users/{dev_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(me(&server, &dev_key).await.status, 401);
    assert_eq!(login(&server, "dev", "dev password 123").await.status, 401);
    assert_status(
        &server
            .call(
                Method::GET,
                &format!("/api/v1/auth/users/{dev_id}"),
                Some(&admin),
                None,
            )
            .await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn a_deleted_users_token_stops_at_once_and_mints_no_key_even_after_a_restart() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let admin = admin_token(&server).await;
    let bob = user_token(&server, &admin, "bob", "developer").await;
    let bob_id = me(&server, &bob).await.body["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = server
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/users/{bob_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    // The leftover access token (valid for 15 more minutes) is refused at once …
    assert_status(&me(&server, &bob).await, 401, "unauthorized");
    // … and mints no key.
    let minted = create_key(&server, &bob, json!({"name": "backdoor"})).await;
    assert_status(&minted, 401, "unauthorized");
    let keys = server
        .call(Method::GET, "/api/v1/auth/api-keys", Some(&admin), None)
        .await;
    assert!(!keys.body.to_string().contains("backdoor"), "{}", keys.body);
    // After a restart too.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, allsource_tests::server::enable_auth).await;
    assert_status(&me(&server, &bob).await, 401, "unauthorized");
    assert_status(
        &create_key(&server, &bob, json!({"name": "backdoor"})).await,
        401,
        "unauthorized",
    );
}

#[tokio::test]
async fn a_reused_refresh_token_stops_the_logins_access_tokens_at_once() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let first = login(&server, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let refresh = |token: &str| {
        let body = json!({"refresh_token": token});
        let server = &server;
        async move {
            server
                .call(Method::POST, "/api/v1/auth/refresh", None, Some(&body))
                .await
        }
    };
    let r1 = first.body["refresh_token"].as_str().unwrap();
    let second = refresh(r1).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let access = second.body["access_token"].as_str().unwrap();
    assert_eq!(me(&server, access).await.status, 200);
    let other = admin_token(&server).await;
    // The first refresh token comes back: the login is revoked, its access tokens with it.
    assert_status(&refresh(r1).await, 401, "unauthorized");
    assert_status(&me(&server, access).await, 401, "unauthorized");
    let first_access = first.body["access_token"].as_str().unwrap();
    assert_status(&me(&server, first_access).await, 401, "unauthorized");
    // Another login of the same user is not affected.
    assert_eq!(me(&server, &other).await.status, 200);
}

#[tokio::test]
async fn a_key_made_by_a_key_never_outlives_it() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let admin = admin_token(&server).await;
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let parent = create_key(
        &server,
        &admin,
        json!({"name": "parent", "role": "developer", "expires_at": expires}),
    )
    .await;
    assert_eq!(parent.status, 201, "{}", parent.body);
    let parent_key = parent.body["key"].as_str().unwrap().to_owned();
    let parent_id = parent.body["id"].as_str().unwrap().to_owned();
    let parent_expiry = parent.body["expires_at"].clone();
    // No expiry asked: the child gets its parent's. A later one is clamped to it.
    let child = create_key(&server, &parent_key, json!({"name": "child"})).await;
    assert_eq!(child.status, 201, "{}", child.body);
    assert_eq!(child.body["expires_at"], parent_expiry, "{}", child.body);
    let later = create_key(
        &server,
        &parent_key,
        json!({"name": "later", "expires_at": "2099-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(later.body["expires_at"], parent_expiry, "{}", later.body);
    // Never a role above the parent's.
    assert_status(
        &create_key(&server, &parent_key, json!({"name": "up", "role": "admin"})).await,
        403,
        "forbidden",
    );
    // Revoking the parent revokes its children.
    let child_key = child.body["key"].as_str().unwrap().to_owned();
    assert_eq!(me(&server, &child_key).await.status, 200);
    let revoke = server
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/api-keys/{parent_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoke.status, 200, "{}", revoke.body);
    assert_status(&me(&server, &child_key).await, 401, "unauthorized");
    let later_key = later.body["key"].as_str().unwrap();
    assert_status(&me(&server, later_key).await, 401, "unauthorized");
}

#[tokio::test]
async fn parallel_wrong_passwords_never_exceed_the_throttle() {
    let server = TestServer::start_with_auth(|s| s.auth.login.max_failures = 3).await;
    let guesses = (0..16).map(|i| {
        let server = &server;
        async move { login(server, ADMIN_USERNAME, &format!("wrong guess {i}")).await }
    });
    let replies = futures::future::join_all(guesses).await;
    let verified = replies.iter().filter(|r| r.status == 401).count();
    let throttled = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(
        (verified, throttled),
        (3, 13),
        "statuses: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_tenant_key_writes_its_own_tenant_and_nothing_else() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let admin = admin_token(&server).await;
    let user = json!({"username": "acme-admin", "password": "acme password 123",
                      "role": "admin", "tenant_id": "acme"});
    // Users go into existing, active tenants only.
    let no_tenant = server
        .call(
            Method::POST,
            "/api/v1/auth/users",
            Some(&admin),
            Some(&user),
        )
        .await;
    assert_eq!(no_tenant.status, 403, "{}", no_tenant.body);
    let tenant = server
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(&admin),
            Some(&json!({"id": "acme", "name": "Acme", "tier": "free"})),
        )
        .await;
    assert_eq!(tenant.status, 201, "{}", tenant.body);
    let created = server
        .call(
            Method::POST,
            "/api/v1/auth/users",
            Some(&admin),
            Some(&user),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["tenant_id"], "acme");
    let acme_admin = login(&server, "acme-admin", "acme password 123").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // An admin of a non-operator tenant can't create users elsewhere.
    let elsewhere = server
        .call(
            Method::POST,
            "/api/v1/auth/users",
            Some(&acme_admin),
            Some(&json!({"username": "spy", "password": "spy password 1234",
                         "role": "admin", "tenant_id": "default"})),
        )
        .await;
    assert_status(&elsewhere, 403, "forbidden");
    let key = create_key(
        &server,
        &acme_admin,
        json!({"name": "ingest", "role": "service_account"}),
    )
    .await
    .body["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let appended = server
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&key),
            Some(&json!({"entity_id": "acme-order", "event_type": "order.placed", "payload": {}})),
        )
        .await;
    assert_eq!(appended.status, 200, "{}", appended.body);
    let theirs = server
        .call(
            Method::GET,
            "/api/v1/events/query?entity_id=acme-order",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(theirs.body["count"], 1, "{}", theirs.body);
    assert_eq!(theirs.body["events"][0]["tenant_id"], "acme");
    let ours = server
        .call(
            Method::GET,
            "/api/v1/events/query?entity_id=acme-order",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(ours.body["count"], 0, "tenant default sees nothing of acme");
    // Nor users or keys of another tenant.
    let users = server
        .call(Method::GET, "/api/v1/auth/users", Some(&acme_admin), None)
        .await;
    assert_eq!(users.body["total"], 1, "{}", users.body);
    let keys = server
        .call(Method::GET, "/api/v1/auth/api-keys", Some(&admin), None)
        .await;
    assert_eq!(keys.body["total"], 0, "{}", keys.body);
}

/// Every served route × every role: 403 (from the authorization layer, naming the missing
/// permission) exactly when the role lacks the route's permission; 401 without credentials on
/// every non-public route.
#[tokio::test]
async fn every_route_for_every_role() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let admin = admin_token(&server).await;
    let mut keys = Vec::new();
    for role in Role::ALL {
        let reply = create_key(
            &server,
            &admin,
            json!({"name": role.as_str(), "role": role.as_str()}),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        keys.push((role, reply.body["key"].as_str().unwrap().to_owned()));
    }
    let served: Vec<_> = served_routes()
        .iter()
        .map(|r| (r.verb.as_str(), r.path, r.access, r.long_lived))
        .collect();
    for (method, pattern, access, long_lived) in &served {
        // Fill path parameters with a value no resource has.
        let mut path: String = pattern
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "no-such-thing"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        if *long_lived {
            // A stream would stay open: a parameter its handler refuses ends the request
            // right after authorization, which is what this matrix checks.
            path.push_str("?from_position=not-a-position");
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method == Method::POST || method == Method::PUT).then(|| json!({}));
        let anonymous = server
            .call(method.clone(), &path, None, body.as_ref())
            .await;
        match access {
            Access::Public => assert!(
                anonymous.status != 401 && anonymous.status != 403,
                "{method} {pattern} is public: {}",
                anonymous.body
            ),
            _ => assert_eq!(
                anonymous.status, 401,
                "{method} {pattern} without credentials"
            ),
        }
        for (role, key) in &keys {
            let reply = server
                .call(method.clone(), &path, Some(key), body.as_ref())
                .await;
            let denied_by_layer =
                reply.status == 403 && reply.body.get("required_permission").is_some();
            match access {
                Access::Requires(permission) if !role.allows(*permission) => {
                    assert_eq!(
                        reply.status, 403,
                        "{method} {pattern} as {role}: {}",
                        reply.body
                    );
                    assert_eq!(reply.body["required_permission"], permission.as_str());
                }
                _ => {
                    assert!(
                        reply.status != 401 && !denied_by_layer,
                        "{method} {pattern} as {role}: {} {}",
                        reply.status,
                        reply.body
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn with_auth_off_credentials_are_ignored_and_everyone_is_the_default_admin() {
    let server = TestServer::start().await;
    let who = me(&server, "ask_whatever").await;
    assert_eq!(who.status, 200, "{}", who.body);
    assert_eq!(who.body["type"], "system");
    assert_eq!(who.body["role"], "admin");
    assert_eq!(who.body["tenant_id"], "default");
    let login = login(&server, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    assert_status(&login, 404, "not_found");
}

#[tokio::test]
async fn the_server_refuses_to_start_with_auth_on_and_a_weak_secret() {
    for secret in ["", "too short"] {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = allsource::Settings::for_tests(dir.path());
        settings.auth.enabled = true;
        settings.auth.jwt.secret = secret.into();
        let err = match allsource::Application::build(settings).await {
            Ok(_) => panic!("started with secret {secret:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("ALLSOURCE__AUTH__JWT__SECRET"), "{err}");
        assert!(err.contains("openssl rand -base64 48"), "{err}");
    }
}

/// `allsource admin create-user` on a stopped data dir; refused while a server holds it.
#[tokio::test]
async fn admin_create_user_on_the_data_dir() {
    use allsource_tests::process::{ServerProcess, binary};
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let create = |username: &str, password: &str, role: &str| {
        let mut child = Command::new(binary())
            .args(["admin", "create-user", "--data-dir"])
            .arg(&data)
            .args(["--username", username, "--password-stdin", "--role", role])
            .args(["--tenant", "default"])
            .env_remove("ALLSOURCE__AUTH__JWT__SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = create("Alice", "alice password 123", "admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["username"], "alice");
    assert_eq!(created["role"], "admin");
    let out = create("bob", "short", "root");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--password") && err.contains("--role"),
        "{err}"
    );
    let out = create("alice", "alice password 123", "admin");
    assert!(!out.status.success(), "duplicate username");

    let env = [
        ("ALLSOURCE__AUTH__ENABLED", "true"),
        ("ALLSOURCE__AUTH__JWT__SECRET", TEST_JWT_SECRET),
    ];
    let mut server = ServerProcess::start(&data, &env).await;
    let out = create("carol", "carol password 123", "readonly");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by a running server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = reqwest::Client::new();
    let reply = read(
        client
            .post(format!("{}/api/v1/auth/login", server.base))
            .header("content-type", "application/json")
            .body(json!({"username": "alice", "password": "alice password 123"}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["user"]["role"], "admin");
    server.terminate();
}

/// The binary refuses to start with auth on and no secret, naming the variable.
#[tokio::test]
async fn serve_without_a_secret_explains_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(allsource_tests::process::binary())
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("ALLSOURCE__AUTH__ENABLED", "true")
        .env_remove("ALLSOURCE__AUTH__JWT__SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ALLSOURCE__AUTH__JWT__SECRET") && err.contains("openssl rand -base64 48"),
        "{err}"
    );
}
