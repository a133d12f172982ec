//! CDS client authentication over HTTP: a table of bad tokens, each answered 401 with no
//! details, and good tokens (the CDS Hooks sandbox's ES384 key, an RS384 key) answered 200.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jakguard_server::config::ClientConfig;
use jakguard_server::Config;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{fixture, spawn_with, TestApp};

const SANDBOX_ISS: &str = "https://sandbox.cds-hooks.org";
const SANDBOX_KID: &str = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f";
const RSA_ISS: &str = "https://ehr.example.org";
const TENANT_ISS: &str = "https://tenant-ehr.example.org";
const JKU_ISS: &str = "https://jku-ehr.example.org";

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys")
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(keys().join(name)).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Serves one JWKS document over HTTP on loopback, for `jku` and `jwks_url` clients.
fn serve_jwks(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = stream.write_all(resp.as_bytes());
        }
    });
    url
}

struct Env {
    app: TestApp,
    jku_url: String,
}

fn spawn_secured() -> Env {
    let rsa_jwks = std::fs::read_to_string(keys().join("test-rs384-jwks.json")).unwrap();
    let jku_url = serve_jwks(rsa_jwks.clone());
    let jwks_url = serve_jwks(rsa_jwks);
    let client = |issuer: &str, file: Option<&str>| ClientConfig {
        issuer: issuer.into(),
        jwks_file: file.map(|f| keys().join(f)),
        jwks_url: None,
        jku_allowlist: vec![],
        tenant: None,
    };
    let config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        clients: vec![
            client(SANDBOX_ISS, Some("cds-hooks-sandbox-jwks.json")),
            client(RSA_ISS, Some("test-rs384-jwks.json")),
            ClientConfig {
                tenant: Some("hospital-a".into()),
                ..client(TENANT_ISS, Some("cds-hooks-sandbox-jwks.json"))
            },
            ClientConfig {
                jwks_file: None,
                jwks_url: Some(jwks_url),
                jku_allowlist: vec![jku_url.clone()],
                ..client(JKU_ISS, None)
            },
        ],
        ..Config::default()
    };
    Env {
        app: spawn_with(config),
        jku_url,
    }
}

fn claims(app: &TestApp, iss: &str, path: &str) -> Value {
    let t = now();
    json!({
        "iss": iss,
        "sub": "cds-client",
        "aud": app.url(path),
        "exp": t + 240,
        "iat": t,
        "jti": uuid(),
    })
}

fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "jti-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn es384(kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some(kid.into());
    h.typ = Some("JWT".into());
    encode(
        &h,
        claims,
        &EncodingKey::from_ec_pem(&pem("cds-hooks-sandbox-ec384-private-test-key.pem")).unwrap(),
    )
    .unwrap()
}

fn rs384(kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS384);
    h.kid = Some(kid.into());
    h.typ = Some("JWT".into());
    encode(
        &h,
        claims,
        &EncodingKey::from_rsa_pem(&pem("test-rs384-private.pem")).unwrap(),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token with a hand-written header and an arbitrary signature.
fn raw_token(header: Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{}", b64(&header), b64(claims), signature)
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

const SERVICE: &str = "/cds-services/jakguard-order-select";

async fn call(app: &TestApp, authorization: Option<String>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(SERVICE))
        .header("Content-Type", "application/json")
        .body(fixture("00-sandbox-order-select.json"));
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn every_bad_token_is_refused_with_a_bare_401() {
    let Env { app, jku_url } = spawn_secured();
    let good = || claims(&app, SANDBOX_ISS, SERVICE);
    let t = now();
    let replayed = es384(SANDBOX_KID, &good());
    assert_eq!(
        call(&app, Some(format!("Bearer {replayed}")))
            .await
            .status(),
        200,
        "first use of the token"
    );

    let forged_key = EncodingKey::from_ec_pem(&pem("other-ec384-private.pem")).unwrap();
    let mut forged_header = Header::new(Algorithm::ES384);
    forged_header.kid = Some(SANDBOX_KID.into());
    forged_header.typ = Some("JWT".into());
    let forged = encode(&forged_header, &good(), &forged_key).unwrap();

    let public_jwks = std::fs::read(keys().join("cds-hooks-sandbox-jwks.json")).unwrap();
    let mut hs = Header::new(Algorithm::HS384);
    hs.kid = Some(SANDBOX_KID.into());
    hs.typ = Some("JWT".into());
    let hmac_with_public_key = encode(
        &hs,
        &good(),
        &EncodingKey::from_secret(&public_jwks).unwrap(),
    )
    .unwrap();

    let valid = es384(SANDBOX_KID, &good());
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        b64(
            &json!({"iss": SANDBOX_ISS, "sub": "admin", "aud": app.url(SERVICE), "exp": t + 240, "iat": t, "jti": uuid()})
        ),
        parts[2]
    );
    let mut sig = parts[2].to_owned();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    sig.replace_range(0..1, &flipped.to_string());
    let tampered_signature = format!("{}.{}.{}", parts[0], parts[1], sig);

    let mut jku_header = Header::new(Algorithm::ES384);
    jku_header.kid = Some(SANDBOX_KID.into());
    jku_header.typ = Some("JWT".into());
    jku_header.jku = Some("https://evil.example.com/jwks.json".into());
    let jku_off_list = encode(
        &jku_header,
        &good(),
        &EncodingKey::from_ec_pem(&pem("cds-hooks-sandbox-ec384-private-test-key.pem")).unwrap(),
    )
    .unwrap();
    let _ = &jku_url;

    let mut no_kid = Header::new(Algorithm::ES384);
    no_kid.typ = Some("JWT".into());
    let no_kid = encode(
        &no_kid,
        &good(),
        &EncodingKey::from_ec_pem(&pem("cds-hooks-sandbox-ec384-private-test-key.pem")).unwrap(),
    )
    .unwrap();
    let mut bad_typ = Header::new(Algorithm::ES384);
    bad_typ.kid = Some(SANDBOX_KID.into());
    bad_typ.typ = Some("at+jwt".into());
    let bad_typ = encode(
        &bad_typ,
        &good(),
        &EncodingKey::from_ec_pem(&pem("cds-hooks-sandbox-ec384-private-test-key.pem")).unwrap(),
    )
    .unwrap();

    let mut tenant_wrong = claims(&app, TENANT_ISS, SERVICE);
    tenant_wrong["tenant"] = json!("hospital-b");

    let table: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("not a bearer token", Some("Basic dXNlcjpwYXNz".into())),
        ("an empty bearer token", Some("Bearer ".into())),
        ("not a JWT", Some("Bearer not.a.jwt".into())),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                raw_token(
                    json!({"alg": "none", "typ": "JWT", "kid": SANDBOX_KID}),
                    &good(),
                    ""
                )
            )),
        ),
        (
            "HS384 keyed with the public JWKS",
            Some(format!("Bearer {hmac_with_public_key}")),
        ),
        (
            "unknown kid",
            Some(format!("Bearer {}", es384("no-such-kid", &good()))),
        ),
        ("no kid", Some(format!("Bearer {no_kid}"))),
        ("typ is not JWT", Some(format!("Bearer {bad_typ}"))),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                es384(
                    SANDBOX_KID,
                    &claims(&app, "https://evil.example.com", SERVICE)
                )
            )),
        ),
        (
            "issuer of another client's key",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &claims(&app, RSA_ISS, SERVICE))
            )),
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                es384(
                    SANDBOX_KID,
                    &claims(&app, SANDBOX_ISS, "/cds-services/jakguard-order-sign")
                )
            )),
        ),
        (
            "audience of another host",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &{
                    let mut c = good();
                    c["aud"] = json!(format!("https://other.example.org{SERVICE}"));
                    c
                })
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &{
                    let mut c = good();
                    c["exp"] = json!(t - 600);
                    c["iat"] = json!(t - 900);
                    c
                })
            )),
        ),
        (
            "issued in the future",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &{
                    let mut c = good();
                    c["iat"] = json!(t + 600);
                    c["exp"] = json!(t + 700);
                    c
                })
            )),
        ),
        (
            "lives an hour",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &{
                    let mut c = good();
                    c["exp"] = json!(t + 3600);
                    c
                })
            )),
        ),
        ("replayed jti", Some(format!("Bearer {replayed}"))),
        (
            "tampered payload",
            Some(format!("Bearer {tampered_payload}")),
        ),
        (
            "tampered signature",
            Some(format!("Bearer {tampered_signature}")),
        ),
        (
            "signed by another key under the sandbox kid",
            Some(format!("Bearer {forged}")),
        ),
        (
            "RS384 under the sandbox's EC kid",
            Some(format!("Bearer {}", rs384(SANDBOX_KID, &good()))),
        ),
        (
            "missing iss",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &without(good(), "iss"))
            )),
        ),
        (
            "missing sub",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &without(good(), "sub"))
            )),
        ),
        (
            "missing aud",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &without(good(), "aud"))
            )),
        ),
        (
            "missing exp",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &without(good(), "exp"))
            )),
        ),
        (
            "missing iat",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &without(good(), "iat"))
            )),
        ),
        (
            "missing jti",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &without(good(), "jti"))
            )),
        ),
        (
            "jku off the allowlist",
            Some(format!("Bearer {jku_off_list}")),
        ),
        (
            "wrong tenant",
            Some(format!("Bearer {}", es384(SANDBOX_KID, &tenant_wrong))),
        ),
        (
            "missing tenant",
            Some(format!(
                "Bearer {}",
                es384(SANDBOX_KID, &claims(&app, TENANT_ISS, SERVICE))
            )),
        ),
    ];
    assert!(table.len() >= 20);
    for (what, authorization) in table {
        let resp = call(&app, authorization).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{what}"
        );
        let body = resp.bytes().await.unwrap();
        assert!(body.is_empty(), "{what}: a 401 says nothing");
    }
}

#[tokio::test]
async fn good_tokens_are_accepted() {
    let Env { app, jku_url } = spawn_secured();
    let sandbox = es384(SANDBOX_KID, &claims(&app, SANDBOX_ISS, SERVICE));
    let resp = call(&app, Some(format!("Bearer {sandbox}"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["cards"][0]["source"]["topic"]["code"],
        "ansm-restriction"
    );

    let rsa = rs384("test-rs384", &claims(&app, RSA_ISS, SERVICE));
    assert_eq!(
        call(&app, Some(format!("Bearer {rsa}"))).await.status(),
        200,
        "RS384"
    );

    let mut with_tenant = claims(&app, TENANT_ISS, SERVICE);
    with_tenant["tenant"] = json!("hospital-a");
    assert_eq!(
        call(
            &app,
            Some(format!("Bearer {}", es384(SANDBOX_KID, &with_tenant)))
        )
        .await
        .status(),
        200,
        "tenant"
    );

    // A client whose keys are at a URL, naming an allowed jku.
    let mut h = Header::new(Algorithm::RS384);
    h.kid = Some("test-rs384".into());
    h.typ = Some("JWT".into());
    h.jku = Some(jku_url);
    let via_jku = encode(
        &h,
        &claims(&app, JKU_ISS, SERVICE),
        &EncodingKey::from_rsa_pem(&pem("test-rs384-private.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        call(&app, Some(format!("Bearer {via_jku}"))).await.status(),
        200,
        "jku on the allowlist"
    );
    let from_url = rs384("test-rs384", &claims(&app, JKU_ISS, SERVICE));
    assert_eq!(
        call(&app, Some(format!("Bearer {from_url}")))
            .await
            .status(),
        200,
        "jwks_url"
    );
}

#[tokio::test]
async fn discovery_and_feedback_need_a_token_too_but_health_and_preflights_do_not() {
    let Env { app, .. } = spawn_secured();
    assert_eq!(
        app.client
            .get(app.url("/cds-services"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let token = es384(SANDBOX_KID, &claims(&app, SANDBOX_ISS, "/cds-services"));
    let resp = app
        .client
        .get(app.url("/cds-services"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let feedback = r#"{"feedback":[{"card":"4e0a3a1e-3283-4575-ab82-028d55fe2719","outcome":"overridden","outcomeTimestamp":"2026-11-22T13:43:17.373Z"}]}"#;
    let path = "/cds-services/jakguard-order-select/feedback";
    let post = |token: Option<String>| {
        let mut r = app
            .client
            .post(app.url(path))
            .header("Content-Type", "application/json")
            .body(feedback);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    // Clients name either the feedback URL or the service's URL as audience.
    assert_eq!(
        post(Some(es384(SANDBOX_KID, &claims(&app, SANDBOX_ISS, path))))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(Some(es384(
            SANDBOX_KID,
            &claims(&app, SANDBOX_ISS, SERVICE)
        )))
        .await
        .unwrap()
        .status(),
        200
    );

    assert_eq!(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url(SERVICE))
        .header("Origin", "https://sandbox.cds-hooks.org")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    // A refused call still carries CORS headers, so that a browser client can read the 401.
    let refused = app
        .client
        .post(app.url(SERVICE))
        .header("Origin", "https://sandbox.cds-hooks.org")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_some());
}
