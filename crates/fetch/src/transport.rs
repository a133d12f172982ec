//! One GET to the FHIR server over the shared, pooled reqwest client, within the deadline,
//! retried only when no connection could be made.
//!
//! Why reqwest and not fhir-sdk's client: fhir-sdk 0.16's `Client` can hand back a raw
//! `reqwest::Response` (`send_custom_request`) and accepts our own pooled `reqwest::Client`, so
//! raw pages and pooling would be possible; but
//! - it logs every request's full URL at `info` level (`Sending GET request to …`), and our URLs
//!   carry the patient id (`Condition?patient=…`): that breaks the rule that logs carry no
//!   patient data;
//! - its retry predicate also retries timeouts and request errors (not only connection
//!   errors), one second apart by default, and its request settings (headers, timeout) are
//!   client-wide behind a mutex while our token changes with every CDS call;
//! - its typed search (`search`, `next_page`) parses whole Bundles strictly, where one odd
//!   entry fails the page (see `shared/ecosystem.md`).
//!
//! So the transport is reqwest, and fhir-sdk serves for its models (see `page.rs`). Errors
//! here never carry the URL, the token or the body: reqwest's own errors name the URL, so they
//! are mapped to our own variants before anything else sees them.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use tokio::time::Instant;

/// Why a GET gave no usable body. The messages end up on the missing-data card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    #[error("the FHIR server could not be reached")]
    Connect,
    #[error("the FHIR server did not answer within {0} ms")]
    Deadline(u128),
    #[error("the FHIR server refused the access token ({0})")]
    Unauthorized(u16),
    #[error("the FHIR server has no such record ({0})")]
    NotFound(u16),
    #[error("the FHIR server failed ({0})")]
    ServerError(u16),
    #[error("the FHIR server answered {0}")]
    Status(u16),
    #[error("the FHIR server's answer exceeds {0} bytes")]
    TooLarge(usize),
    #[error("the FHIR server's answer could not be read")]
    Read,
}

impl GetError {
    /// A fault of the server or the network (counts for the circuit breaker), as opposed to an
    /// answer about this request (401, 404).
    pub fn is_server_fault(&self) -> bool {
        matches!(
            self,
            GetError::Connect | GetError::Deadline(_) | GetError::ServerError(_) | GetError::Read
        )
    }
}

/// Connection attempts for one GET (the first included); later ones wait 25, 50… ms.
const CONNECT_ATTEMPTS: u32 = 3;

/// The bearer token of one CDS call. Its Debug never shows it, and the header built from it is
/// marked sensitive (hyper then keeps it out of its own debug output).
#[derive(Clone)]
pub struct Token(HeaderValue);

impl Token {
    /// `None` when the token cannot be a header value (the token is not echoed).
    pub fn bearer(access_token: &str) -> Option<Token> {
        let mut v = HeaderValue::from_str(&format!("Bearer {access_token}")).ok()?;
        v.set_sensitive(true);
        Some(Token(v))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// GETs `url` and returns its body, or why not, by `deadline`.
pub async fn get(
    client: &reqwest::Client,
    url: &Url,
    token: &Token,
    deadline: Instant,
    budget_ms: u128,
    max_bytes: usize,
) -> Result<String, GetError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let once = async {
            let resp = client
                .get(url.clone())
                .header(ACCEPT, "application/fhir+json, application/json")
                .header(AUTHORIZATION, token.0.clone())
                .send()
                .await
                .map_err(map_send_error)?;
            check_status(resp.status())?;
            read_body(resp, max_bytes).await
        };
        match tokio::time::timeout_at(deadline, once).await {
            Err(_) => return Err(GetError::Deadline(budget_ms)),
            Ok(Err(GetError::Connect)) if attempt < CONNECT_ATTEMPTS => {
                let backoff = Duration::from_millis(25 << (attempt - 1));
                if Instant::now() + backoff >= deadline {
                    return Err(GetError::Connect);
                }
                tokio::time::sleep(backoff).await;
            }
            Ok(r) => return r,
        }
    }
}

fn map_send_error(e: reqwest::Error) -> GetError {
    if e.is_connect() {
        GetError::Connect
    } else if e.is_timeout() {
        GetError::Deadline(0)
    } else {
        // The request went out (or half of it): not retried, a GET is idempotent but the
        // server may be struggling, and the deadline is short.
        GetError::Read
    }
}

fn check_status(s: StatusCode) -> Result<(), GetError> {
    match s.as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(GetError::Unauthorized(s.as_u16())),
        404 | 410 => Err(GetError::NotFound(s.as_u16())),
        429 | 500..=599 => Err(GetError::ServerError(s.as_u16())),
        other => Err(GetError::Status(other)),
    }
}

async fn read_body(mut resp: reqwest::Response, max_bytes: usize) -> Result<String, GetError> {
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(GetError::TooLarge(max_bytes));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| GetError::Read)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(GetError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| GetError::Read)
}
