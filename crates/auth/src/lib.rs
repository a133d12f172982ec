//! Authentication of CDS clients, as CDS Hooks 2.0 "Trusting CDS Clients" requires: each call
//! carries `Authorization: Bearer <JWT>` signed by the EHR with an asymmetric key published in
//! its JWKS.
//!
//! What is checked, in order: the header (`alg` from an allowlist of asymmetric algorithms,
//! `typ` JWT, `kid` present, `jku` only when on the client's allowlist), the issuer (a configured
//! client), the signature (key by `kid` from that client's JWKS, refreshed once when the kid is
//! unknown), then the claims: `aud` equal to the URL called, `exp` and `iat` present and within
//! a small clock skew, `exp` no more than five minutes ahead, `sub` and `jti` present, `jti`
//! never seen before while the token lives, and `tenant` when the client configures one.
//!
//! Invariant: a failure says why only to the log ([`Failure`] carries no token material); the
//! HTTP answer is a bare 401.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The asymmetric algorithms accepted. Never `none`, never HMAC (a shared secret would let
/// anyone holding the public JWKS forge tokens).
pub const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Allowed clock difference between the EHR and this service.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// The specification asks for short-lived tokens: `exp` at most five minutes ahead.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// How often an unknown `kid` may trigger a refetch of a client's JWKS.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// How long a fetched JWKS is trusted before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(3600);

/// One trusted CDS client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The `iss` of its tokens.
    pub issuer: String,
    /// Its JWKS as a file...
    pub jwks_file: Option<PathBuf>,
    /// ... or a URL (fetched with timeouts, cached, refreshed on an unknown kid).
    pub jwks_url: Option<String>,
    /// JWKS URLs this client may name in a token's `jku` header.
    #[serde(default)]
    pub jku_allowlist: Vec<String>,
    /// The `tenant` claim its tokens must carry, if any.
    pub tenant: Option<String>,
}

/// Why a token was refused. Shown in logs and metrics, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("no bearer token")]
    Missing,
    #[error("the token is not a JWT")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("typ is not JWT")]
    Type,
    #[error("no kid")]
    NoKid,
    #[error("unknown issuer")]
    Issuer,
    #[error("unknown key")]
    UnknownKey,
    #[error("jku not allowed for this issuer")]
    Jku,
    #[error("bad signature")]
    Signature,
    #[error("wrong audience")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("lives longer than allowed")]
    TooLong,
    #[error("missing claim `{0}`")]
    MissingClaim(&'static str),
    #[error("replayed jti")]
    Replayed,
    #[error("wrong tenant")]
    Tenant,
    #[error("the JWKS could not be fetched")]
    Jwks,
}

impl Failure {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::Algorithm => "algorithm",
            Failure::Type => "typ",
            Failure::NoKid => "kid",
            Failure::Issuer => "issuer",
            Failure::UnknownKey => "unknown_key",
            Failure::Jku => "jku",
            Failure::Signature => "signature",
            Failure::Audience => "audience",
            Failure::Expired => "expired",
            Failure::IssuedInFuture => "iat_future",
            Failure::TooLong => "lifetime",
            Failure::MissingClaim(_) => "missing_claim",
            Failure::Replayed => "replayed",
            Failure::Tenant => "tenant",
            Failure::Jwks => "jwks",
        }
    }
}

/// A configuration that cannot work (a JWKS file that cannot be read...).
#[derive(Debug, thiserror::Error)]
#[error("client `{issuer}`: {message}")]
pub struct ConfigError {
    pub issuer: String,
    pub message: String,
}

/// Who called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub issuer: String,
    pub subject: String,
}

#[derive(Debug)]
struct Client {
    config: ClientConfig,
    /// Keys from `jwks_file`, or the last fetch of `jwks_url`.
    keys: RwLock<Option<(JwkSet, Instant)>>,
    last_refresh: Mutex<Option<Instant>>,
}

/// Verifies bearer tokens against the configured clients.
#[derive(Debug)]
pub struct Verifier {
    clients: Vec<Client>,
    http: reqwest::Client,
    /// (issuer, jti) -> expiry (unix seconds): tokens seen, kept while they live.
    seen: Mutex<HashMap<(String, String), u64>>,
    /// JWKS fetched from allowed `jku` URLs.
    jku_cache: RwLock<HashMap<String, (JwkSet, Instant)>>,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    tenant: Option<String>,
}

impl Verifier {
    /// Loads every client's static JWKS; URL-based ones are fetched on first use.
    pub fn new(clients: &[ClientConfig]) -> Result<Verifier, ConfigError> {
        let mut out = Vec::new();
        for c in clients {
            let err = |message: String| ConfigError {
                issuer: c.issuer.clone(),
                message,
            };
            let keys = match (&c.jwks_file, &c.jwks_url) {
                (Some(path), None) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| err(format!("jwks_file `{}`: {e}", path.display())))?;
                    let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
                        err(format!("jwks_file `{}` is not a JWKS: {e}", path.display()))
                    })?;
                    Some((set, Instant::now()))
                }
                (None, Some(url)) => {
                    if !(url.starts_with("https://") || is_loopback_http(url)) {
                        return Err(err("jwks_url must be https".into()));
                    }
                    None
                }
                _ => return Err(err("needs exactly one of jwks_file and jwks_url".into())),
            };
            out.push(Client {
                config: c.clone(),
                keys: RwLock::new(keys),
                last_refresh: Mutex::new(None),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError {
                issuer: String::new(),
                message: e.to_string(),
            })?;
        Ok(Verifier {
            clients: out,
            http,
            seen: Mutex::new(HashMap::new()),
            jku_cache: RwLock::new(HashMap::new()),
        })
    }

    /// Whether any client is configured (otherwise calls are not authenticated).
    pub fn enabled(&self) -> bool {
        !self.clients.is_empty()
    }

    /// Verifies the `Authorization` header of a call to `audience` (the exact URL called), at
    /// `now` (unix seconds).
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        audience: &[&str],
        now: u64,
    ) -> Result<Caller, Failure> {
        let token = authorization
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Failure::Missing)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| Failure::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(Failure::Algorithm);
        }
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("JWT"))
        {
            return Err(Failure::Type);
        }
        let kid = header.kid.clone().ok_or(Failure::NoKid)?;
        // The issuer decides which keys may verify the token, so it is read before the
        // signature is checked; nothing from the unverified payload is trusted beyond that.
        let unverified = unverified_claims(token).ok_or(Failure::Malformed)?;
        let iss = unverified.iss.ok_or(Failure::MissingClaim("iss"))?;
        let client = self
            .clients
            .iter()
            .find(|c| c.config.issuer == iss)
            .ok_or(Failure::Issuer)?;

        let key = match &header.jku {
            Some(jku) => {
                if !client.config.jku_allowlist.iter().any(|a| a == jku) {
                    return Err(Failure::Jku);
                }
                // A key this client already publishes is trusted as it is; otherwise the
                // allowed jku is where the new key lives.
                match cached_key(&client.keys, &kid, client.config.jwks_url.is_some()) {
                    Some(k) => k,
                    None => self.jku_key(jku, &kid).await?,
                }
            }
            None => self.client_key(client, &kid).await?,
        };

        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW.as_secs();
        validation.validate_exp = false; // checked below against `now`, which tests can fix
        validation.validate_aud = false; // checked below: exact URL, string or list
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Failure::Algorithm,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => Failure::Signature,
            _ => Failure::Signature,
        })?;
        let c = data.claims;
        if c.iss.as_deref() != Some(client.config.issuer.as_str()) {
            return Err(Failure::Issuer);
        }
        let aud_ok = match &c.aud {
            Some(serde_json::Value::String(a)) => audience.contains(&a.as_str()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .any(|a| a.as_str().is_some_and(|a| audience.contains(&a))),
            Some(_) => false,
            None => return Err(Failure::MissingClaim("aud")),
        };
        if !aud_ok {
            return Err(Failure::Audience);
        }
        let exp = c.exp.ok_or(Failure::MissingClaim("exp"))?;
        let iat = c.iat.ok_or(Failure::MissingClaim("iat"))?;
        let skew = CLOCK_SKEW.as_secs();
        if exp + skew <= now {
            return Err(Failure::Expired);
        }
        if iat > now + skew {
            return Err(Failure::IssuedInFuture);
        }
        if exp > now + MAX_LIFETIME.as_secs() + skew {
            return Err(Failure::TooLong);
        }
        let sub = c.sub.ok_or(Failure::MissingClaim("sub"))?;
        let jti = c
            .jti
            .filter(|j| !j.is_empty())
            .ok_or(Failure::MissingClaim("jti"))?;
        if let Some(tenant) = &client.config.tenant {
            if c.tenant.as_deref() != Some(tenant.as_str()) {
                return Err(Failure::Tenant);
            }
        }
        {
            let mut seen = self.seen.lock().map_err(|_| Failure::Replayed)?;
            seen.retain(|_, until| *until + skew > now);
            if seen.insert((iss.clone(), jti), exp).is_some() {
                return Err(Failure::Replayed);
            }
        }
        Ok(Caller {
            issuer: iss,
            subject: sub,
        })
    }

    async fn client_key(&self, client: &Client, kid: &str) -> Result<DecodingKey, Failure> {
        if let Some(key) = cached_key(&client.keys, kid, client.config.jwks_url.is_some()) {
            return Ok(key);
        }
        let Some(url) = &client.config.jwks_url else {
            return Err(Failure::UnknownKey);
        };
        // An unknown kid may mean the EHR rotated its keys: refetch, but not more often than
        // REFRESH_INTERVAL, so that junk kids cannot make us hammer the EHR.
        {
            let mut last = client.last_refresh.lock().map_err(|_| Failure::Jwks)?;
            let fresh_enough = client.keys.read().map(|k| k.is_some()).unwrap_or(false);
            if fresh_enough && last.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
                return Err(Failure::UnknownKey);
            }
            *last = Some(Instant::now());
        }
        let set = self.fetch_jwks(url).await?;
        let key = find_key(&set, kid);
        if let Ok(mut k) = client.keys.write() {
            *k = Some((set, Instant::now()));
        }
        key.ok_or(Failure::UnknownKey)
    }

    async fn jku_key(&self, url: &str, kid: &str) -> Result<DecodingKey, Failure> {
        if let Some((set, at)) = self.jku_cache.read().ok().and_then(|c| c.get(url).cloned()) {
            if at.elapsed() < JWKS_TTL {
                if let Some(k) = find_key(&set, kid) {
                    return Ok(k);
                }
            }
        }
        let set = self.fetch_jwks(url).await?;
        let key = find_key(&set, kid);
        if let Ok(mut c) = self.jku_cache.write() {
            c.insert(url.to_owned(), (set, Instant::now()));
        }
        key.ok_or(Failure::UnknownKey)
    }

    async fn fetch_jwks(&self, url: &str) -> Result<JwkSet, Failure> {
        let resp = self.http.get(url).send().await.map_err(|_| Failure::Jwks)?;
        if !resp.status().is_success() {
            return Err(Failure::Jwks);
        }
        let bytes = resp.bytes().await.map_err(|_| Failure::Jwks)?;
        if bytes.len() > 256 * 1024 {
            return Err(Failure::Jwks);
        }
        serde_json::from_slice(&bytes).map_err(|_| Failure::Jwks)
    }
}

fn cached_key(
    keys: &RwLock<Option<(JwkSet, Instant)>>,
    kid: &str,
    expires: bool,
) -> Option<DecodingKey> {
    let guard = keys.read().ok()?;
    let (set, at) = guard.as_ref()?;
    if expires && at.elapsed() >= JWKS_TTL {
        return None;
    }
    find_key(set, kid)
}

/// The key with this kid, if it is an asymmetric key (an `oct` key is never usable).
fn find_key(set: &JwkSet, kid: &str) -> Option<DecodingKey> {
    let jwk = set.find(kid)?;
    if matches!(
        jwk.algorithm,
        jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
    ) {
        return None;
    }
    DecodingKey::from_jwk(jwk).ok()
}

fn is_loopback_http(url: &str) -> bool {
    ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| url.starts_with(p))
}

/// The payload of a JWT, without checking anything: only to find the issuer.
fn unverified_claims(token: &str) -> Option<Claims> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's "Trusting CDS Clients" section: its key, its token.
    const SPEC_JWKS: &str = r#"{"keys":[{"kty":"EC","use":"sig","crv":"P-384","kid":"example-kid","x":"46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk","y":"XMcRuuoGW7CXjQdy-F5i3FeBE0x9hPLdeFdSoDd3ELmx404tLX0VRRcqzAsPhXcI","alg":"ES384"}]}"#;
    const SPEC_TOKEN: &str = "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImV4YW1wbGUta2lkIiwiamt1IjoiaHR0cHM6Ly9maGlyLWVoci5leGFtcGxlLmNvbS9qd2tfdXJpIn0.eyJpc3MiOiJodHRwczovL2ZoaXItZWhyLmV4YW1wbGUuY29tLyIsInN1YiI6ImNsaWVudF9pZCIsImF1ZCI6Imh0dHBzOi8vY2RzLmV4YW1wbGUub3JnL2Nkcy1zZXJ2aWNlcy9zb21lLXNlcnZpY2UiLCJleHAiOjE0MjI1Njg4NjAsImlhdCI6MTMxMTI4MDk3MCwianRpIjoiZWUyMmIwMjEtZTFiNy00NjExLWJhNWItOGVlYzZhMzNhYzFlIiwidGVuYW50IjoiMmRkZDZjM2EtOGU5YS00NGM2LWEzMDUtNTIxMTFhZDMwMmEyIn0.CUFPkplnWd6YGIvzoHolWCQBDsCL8QtTWKGg_QFpS169WrqDGzktRi-_we6-6rVzbjerU27ZKww_SW0-b9RTz-dPJNcqsueMio8r6EqXUXhbLm_ch3XFSbDlGHDl_tqo";

    fn spec_verifier() -> Verifier {
        let dir = std::env::temp_dir().join(format!("jakguard-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // One file per test thread: tests run in parallel and must not read a half-written file.
        let thread = format!("{:?}", std::thread::current().id())
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let path = dir.join(format!("spec-jwks-{thread}.json"));
        std::fs::write(&path, SPEC_JWKS).unwrap();
        Verifier::new(&[ClientConfig {
            issuer: "https://fhir-ehr.example.com/".into(),
            jwks_file: Some(path),
            jwks_url: None,
            jku_allowlist: vec!["https://fhir-ehr.example.com/jwk_uri".into()],
            tenant: None,
        }])
        .unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The verification of a file-based client never awaits anything real.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn the_specification_example_token_is_refused_as_expired() {
        let v = spec_verifier();
        let aud = ["https://cds.example.org/cds-services/some-service"];
        let now = 1_800_000_000;
        let got = block_on(v.verify(Some(&format!("Bearer {SPEC_TOKEN}")), &aud, now));
        assert_eq!(got, Err(Failure::Expired));
    }

    #[test]
    fn the_specification_example_token_is_valid_at_its_own_time() {
        // Proves the signature check itself passes: at a time when the token lived (but its
        // lifetime of years exceeds what the specification allows), only the lifetime fails.
        let v = spec_verifier();
        let aud = ["https://cds.example.org/cds-services/some-service"];
        let got = block_on(v.verify(Some(&format!("Bearer {SPEC_TOKEN}")), &aud, 1_400_000_000));
        assert_eq!(got, Err(Failure::TooLong));
    }

    #[test]
    fn a_token_without_bearer_scheme_is_missing() {
        let v = spec_verifier();
        assert_eq!(
            block_on(v.verify(Some("Basic abc"), &["x"], 0)),
            Err(Failure::Missing)
        );
        assert_eq!(block_on(v.verify(None, &["x"], 0)), Err(Failure::Missing));
    }
}
