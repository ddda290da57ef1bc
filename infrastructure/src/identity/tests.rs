use super::*;

fn key(kid: &str, fill: u8) -> SigningKey {
    SigningKey {
        kid: kid.into(),
        secret: vec![fill; 48],
    }
}

fn claims(exp_in: i64) -> AccessClaims {
    let now = chrono::Utc::now().timestamp();
    AccessClaims {
        sub: "u1".into(),
        tenant_id: "acme".into(),
        role: "readonly".into(),
        username: "ann".into(),
        exp: now + exp_in,
        iat: now,
        iss: "allsource".into(),
        jti: "j1".into(),
        fid: Some("f1".into()),
    }
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn signed_tokens_verify_and_carry_the_kid() {
    let signer = JwtSigner::new(vec![key("k2", 2), key("k1", 1)], vec![], "allsource").unwrap();
    let token = signer.sign(&claims(60)).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("k2"));
    assert_eq!(signer.verify(&token).unwrap(), claims(60));
}

#[test]
fn the_family_id_round_trips_and_older_tokens_without_one_still_verify() {
    let signer = JwtSigner::new(vec![key("k1", 1)], vec![], "allsource").unwrap();
    let token = signer.sign(&claims(60)).unwrap();
    assert_eq!(signer.verify(&token).unwrap().fid.as_deref(), Some("f1"));
    let mut older = claims(60);
    older.fid = None;
    let token = signer.sign(&older).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let decoded = URL_SAFE_NO_PAD.decode(payload).unwrap();
    assert!(!String::from_utf8(decoded).unwrap().contains("fid"));
    assert_eq!(signer.verify(&token).unwrap().fid, None);
}

#[test]
fn older_keys_verify_until_retired() {
    let old = JwtSigner::new(vec![key("k1", 1)], vec![], "allsource").unwrap();
    let token = old.sign(&claims(60)).unwrap();
    let rotated = JwtSigner::new(vec![key("k2", 2), key("k1", 1)], vec![], "allsource").unwrap();
    assert!(rotated.verify(&token).is_ok());
    let retired = JwtSigner::new(
        vec![key("k2", 2), key("k1", 1)],
        vec!["k1".into()],
        "allsource",
    )
    .unwrap();
    assert_eq!(
        retired.verify(&token),
        Err(TokenError::Invalid(
            "the signing key has been retired".into()
        ))
    );
    let dropped = JwtSigner::new(vec![key("k2", 2)], vec![], "allsource").unwrap();
    assert!(dropped.verify(&token).is_err());
}

#[test]
fn attacks_are_refused() {
    let signer = JwtSigner::new(vec![key("k1", 1)], vec![], "allsource").unwrap();
    let token = signer.sign(&claims(60)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    // alg none, no signature.
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
        parts[1]
    );
    assert!(signer.verify(&none).is_err());
    // Tampered claims with the original signature.
    let mut forged = claims(60);
    forged.role = "admin".into();
    let body = b64(&serde_json::to_string(&forged).unwrap());
    assert_eq!(
        signer.verify(&format!("{}.{body}.{}", parts[0], parts[2])),
        Err(TokenError::Invalid("bad signature".into()))
    );
    // Another key under the same kid.
    let other = JwtSigner::new(vec![key("k1", 9)], vec![], "allsource").unwrap();
    assert!(signer.verify(&other.sign(&claims(60)).unwrap()).is_err());
    // Expired.
    assert_eq!(
        signer.verify(&signer.sign(&claims(-3600)).unwrap()),
        Err(TokenError::Expired)
    );
    // Wrong issuer.
    let mut foreign = claims(60);
    foreign.iss = "someone-else".into();
    assert_eq!(
        signer.verify(&signer.sign(&foreign).unwrap()),
        Err(TokenError::Invalid("wrong issuer".into()))
    );
    // HS512 with the right secret is still not the pinned algorithm.
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some("k1".into());
    let hs512 =
        jsonwebtoken::encode(&header, &claims(60), &EncodingKey::from_secret(&[1u8; 48])).unwrap();
    assert!(signer.verify(&hs512).is_err());
    for garbage in ["", "a.b.c", "not a token", "...."] {
        assert!(signer.verify(garbage).is_err(), "{garbage}");
    }
}

#[test]
fn weak_or_missing_keys_are_refused() {
    let short = SigningKey {
        kid: "k".into(),
        secret: vec![1; 31],
    };
    assert!(JwtSigner::new(vec![short], vec![], "allsource").is_err());
    assert!(JwtSigner::new(vec![], vec![], "allsource").is_err());
    assert!(JwtSigner::new(vec![key("k1", 1)], vec!["k1".into()], "allsource").is_err());
    assert!(JwtSigner::new(vec![key("k1", 1), key("k1", 2)], vec![], "allsource").is_err());
}

#[tokio::test]
async fn argon2id_hashes_verify_only_the_right_password() {
    let hasher = Argon2Hasher;
    let hash = hasher.hash("correct horse battery").await.unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(hasher.verify("correct horse battery", &hash).await);
    assert!(!hasher.verify("wrong horse battery", &hash).await);
    assert!(!hasher.verify("x", "not a hash").await);
    assert_ne!(hash, hasher.hash("correct horse battery").await.unwrap());
}

#[test]
fn secrets_are_random_and_digests_stable() {
    let a = OsSecrets.random_token();
    assert_eq!(a.len(), 43);
    assert_ne!(a, OsSecrets.random_token());
    assert_eq!(
        OsSecrets.digest("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
