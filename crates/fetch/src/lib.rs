//! Fetches what a CDS Hooks prefetch lacks from the EHR's FHIR server (`fhirServer`, with the
//! bearer token of `fhirAuthorization`), for [`jakguard_cds::Engine::complete`].
//!
//! [`Fetcher::fetch_for`] takes a [`Prepared`] request and returns one [`FetchedKey`] per key
//! that [`Prepared::to_fetch`] lists:
//! - only servers on `fhir.allowed_servers` are contacted (exact origin and base path); a
//!   request naming another server gets [`Refused`] before any connection is made;
//! - the keys are fetched in parallel over one pooled client; Bundle `next` links are followed
//!   (on the same allowed server only) up to `max_pages` pages per key;
//! - one deadline covers the whole fetch; what is not read by then is reported, never taken
//!   for "no data" ([`FetchOutcome::Failed`] or [`FetchOutcome::Partial`]);
//! - connection errors are retried within the deadline, nothing else is;
//! - an origin that keeps failing is short-circuited for a while (see `breaker.rs`);
//! - the token is never logged and never part of an error; URLs (which carry the patient id)
//!   are not logged either.
//!
//! The pages are handed over as raw JSON: the tolerant reader of `jakguard-fhir` reads them,
//! so one odd resource costs that resource, not the fetch.

mod allow;
mod breaker;
mod page;
mod transport;

use std::time::Duration;

use futures_util::future::join_all;
use jakguard_cds::{FetchNeed, FetchOutcome, FetchedKey, Prepared};
use tokio::time::Instant;

pub use allow::{AllowError, Allowlist, ServerBase};
pub use transport::{GetError, Token};

use breaker::{Admit, Breakers};

/// The fetcher's settings (the `[fhir]` section of the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    pub allowed_servers: Vec<String>,
    /// The whole fetch of one CDS call, every key and page included.
    pub timeout: Duration,
    /// Pages read per key (the first included); more are reported as not read.
    pub max_pages: usize,
    /// Allow plain http to loopback servers (tests, sidecars); https is required elsewhere.
    pub allow_http_loopback: bool,
    /// Failed fetches in a row after which an origin is short-circuited.
    pub breaker_failures: u32,
    /// How long a short-circuited origin is left alone.
    pub breaker_cooldown: Duration,
    /// Largest body accepted for one page.
    pub max_page_bytes: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            allowed_servers: vec![],
            timeout: Duration::from_millis(2000),
            max_pages: 10,
            allow_http_loopback: true,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_page_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The fetcher cannot be built from this configuration.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fhir.allowed_servers: {0}")]
    Allowlist(#[from] AllowError),
    #[error("fhir: {0}")]
    Invalid(&'static str),
    #[error("the HTTP client could not be built")]
    Client,
}

/// A request whose data must not be fetched at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `fhirServer` is not on the allowlist: nothing was contacted. `keys` are the data keys
    /// that would have been fetched (for the 412).
    #[error("fhirServer is not among fhir.allowed_servers")]
    ServerNotAllowed { keys: Vec<String> },
}

/// What one fetch did, for logs and metrics: counts and durations only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Keys fetched (0 when nothing was needed or possible).
    pub keys: usize,
    /// Keys that failed or came back incomplete.
    pub failed: usize,
    /// Pages read in all.
    pub pages: usize,
    /// The origin was short-circuited by the breaker: nothing was contacted.
    pub short_circuited: bool,
    pub elapsed: Duration,
}

/// The result of [`Fetcher::fetch_for`].
#[derive(Debug, Clone, Default)]
pub struct Fetch {
    pub fetched: Vec<FetchedKey>,
    pub report: FetchReport,
}

/// One thing to read for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A query relative to the base (`Condition?patient=…`).
    Query(String),
    /// An absolute next-page link of a prefetched Bundle.
    NextPage(String),
}

/// The fetcher: one pooled HTTP client, the allowlist and the breakers. Share one per process.
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    allow: Allowlist,
    breakers: Breakers,
    cfg: FetchConfig,
}

impl Fetcher {
    pub fn new(cfg: FetchConfig) -> Result<Fetcher, FetchError> {
        Self::with_allowlist(
            Allowlist::new(&cfg.allowed_servers, cfg.allow_http_loopback)?,
            cfg,
        )
    }

    /// A fetcher with an allowlist built by the caller (see [`Allowlist::with`]).
    pub fn with_allowlist(allow: Allowlist, cfg: FetchConfig) -> Result<Fetcher, FetchError> {
        if cfg.timeout.is_zero() || cfg.timeout > Duration::from_secs(60) {
            return Err(FetchError::Invalid(
                "timeout_ms must be between 1 and 60000",
            ));
        }
        if cfg.max_pages == 0 {
            return Err(FetchError::Invalid("max_pages must be at least 1"));
        }
        let client = reqwest::Client::builder()
            // A redirect could take the token to another server; the allowlist is the rule.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            .user_agent(concat!("jakguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| FetchError::Client)?;
        Ok(Fetcher {
            client,
            breakers: Breakers::new(cfg.breaker_failures, cfg.breaker_cooldown),
            allow,
            cfg,
        })
    }

    pub fn config(&self) -> &FetchConfig {
        &self.cfg
    }

    /// Fetches what `p` lacks. Nothing is fetched (an empty [`Fetch`]) when nothing is needed
    /// or when the request gives no `fhirServer` with `fhirAuthorization`; then `complete`
    /// reports the missing keys as it does for a prefetch-only request.
    pub async fn fetch_for(&self, p: &Prepared<'_>) -> Result<Fetch, Refused> {
        let needs = p.to_fetch();
        if needs.is_empty() {
            return Ok(Fetch::default());
        }
        let req = p.request();
        let (Some(server), Some(auth)) = (&req.fhir_server, &req.fhir_authorization) else {
            return Ok(Fetch::default());
        };
        let Some(base) = self.allow.find(server) else {
            return Err(Refused::ServerNotAllowed {
                keys: needs.iter().map(|(k, _)| (*k).to_owned()).collect(),
            });
        };
        let bearer = auth
            .token_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("bearer"));
        let token = if bearer {
            Token::bearer(&auth.access_token)
        } else {
            None
        };
        let Some(token) = token else {
            let why = if bearer {
                "the access token is not usable in an HTTP header"
            } else {
                "fhirAuthorization.token_type is not Bearer"
            };
            return Ok(Fetch {
                report: FetchReport {
                    keys: needs.len(),
                    failed: needs.len(),
                    ..FetchReport::default()
                },
                fetched: needs
                    .iter()
                    .map(|(k, _)| failed(k, why.to_owned()))
                    .collect(),
            });
        };
        let patient_id = req.patient_id.as_ref();
        let mut work = Vec::new();
        for (key, need) in needs {
            let need = match need {
                FetchNeed::NextPage(url) => Need::NextPage(url),
                FetchNeed::Query if !is_fhir_id(patient_id) => {
                    // Not a FHIR id: it cannot be put into a URL safely.
                    work.push((key, Err("context.patientId is not a FHIR id".to_owned())));
                    continue;
                }
                FetchNeed::Query => match p.query(key) {
                    Some(q) => Need::Query(q),
                    None => continue,
                },
            };
            work.push((key, Ok(need)));
        }
        Ok(self.run(base, &token, work, Some(patient_id)).await)
    }

    /// Fetches `needs` from `base` with `token`: every key in parallel, one deadline.
    pub async fn fetch(
        &self,
        base: &ServerBase,
        token: &Token,
        needs: Vec<(&'static str, Need)>,
    ) -> Fetch {
        let work = needs.into_iter().map(|(k, n)| (k, Ok(n))).collect();
        self.run(base, token, work, None).await
    }

    async fn run(
        &self,
        base: &ServerBase,
        token: &Token,
        work: Vec<(&'static str, Result<Need, String>)>,
        patient_id: Option<&str>,
    ) -> Fetch {
        let started = Instant::now();
        let origin = base.origin();
        let mut report = FetchReport {
            keys: work.len(),
            ..FetchReport::default()
        };
        if let Admit::No(wait) = self.breakers.admit(&origin, std::time::Instant::now()) {
            report.failed = work.len();
            report.short_circuited = true;
            report.elapsed = started.elapsed();
            let why = format!(
                "the FHIR server has been failing; it is not contacted for {} s",
                wait.as_secs().max(1)
            );
            return Fetch {
                fetched: work.iter().map(|(k, _)| failed(k, why.clone())).collect(),
                report,
            };
        }
        let deadline = started + self.cfg.timeout;
        let results = join_all(work.into_iter().map(|(key, need)| async move {
            match need {
                Ok(need) => {
                    // A read of the Patient must return that patient.
                    let expect = patient_id.filter(|_| key == "patient");
                    self.fetch_key(base, token, key, need, expect, deadline)
                        .await
                }
                Err(why) => (failed(key, why), false),
            }
        }))
        .await;
        let mut server_fault = false;
        let mut fetched = Vec::with_capacity(results.len());
        for (f, fault) in results {
            report.pages += match &f.outcome {
                FetchOutcome::Pages(p) | FetchOutcome::Partial { pages: p, .. } => p.len(),
                FetchOutcome::Failed(_) => 0,
            };
            if !matches!(f.outcome, FetchOutcome::Pages(_)) {
                report.failed += 1;
            }
            server_fault |= fault;
            fetched.push(f);
        }
        self.breakers
            .record(&origin, server_fault, std::time::Instant::now());
        report.elapsed = started.elapsed();
        Fetch { fetched, report }
    }

    /// One key: its pages in order. Returns the outcome and whether the server was at fault.
    async fn fetch_key(
        &self,
        base: &ServerBase,
        token: &Token,
        key: &'static str,
        need: Need,
        expect_patient: Option<&str>,
        deadline: Instant,
    ) -> (FetchedKey, bool) {
        let first = match &need {
            Need::Query(q) => base.join(q),
            Need::NextPage(u) => reqwest::Url::parse(u).ok().filter(|u| base.contains(u)),
        };
        let Some(mut url) = first else {
            let why = match need {
                Need::Query(_) => "the query cannot be built under the FHIR server's base",
                Need::NextPage(_) => "the prefetch's next link is not on the allowed FHIR server",
            };
            return (failed(key, why.to_owned()), false);
        };
        let budget_ms = self.cfg.timeout.as_millis();
        let mut pages: Vec<String> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        loop {
            let body = match transport::get(
                &self.client,
                &url,
                token,
                deadline,
                budget_ms,
                self.cfg.max_page_bytes,
            )
            .await
            {
                Ok(b) => b,
                Err(e) => {
                    let fault = e.is_server_fault();
                    let mut why = e.to_string();
                    if !pages.is_empty() {
                        why = format!("after {} page(s), {why}", pages.len());
                    }
                    notes.push(why);
                    return (finish(key, pages, notes), fault);
                }
            };
            match page::inspect(&body, expect_patient) {
                page::Page::Failed(why) => {
                    notes.push(why);
                    return (finish(key, pages, notes), false);
                }
                page::Page::Ok { next, incomplete } => {
                    pages.push(body);
                    notes.extend(incomplete);
                    let Some(next) = next else {
                        return (finish(key, pages, notes), false);
                    };
                    if pages.len() >= self.cfg.max_pages {
                        notes.push(format!(
                            "more than {} pages: the rest was not read",
                            self.cfg.max_pages
                        ));
                        return (finish(key, pages, notes), false);
                    }
                    match reqwest::Url::parse(&next) {
                        Ok(u) if base.contains(&u) => url = u,
                        _ => {
                            notes.push(
                                "a next link leaves the allowed FHIR server: the rest was not read"
                                    .into(),
                            );
                            return (finish(key, pages, notes), false);
                        }
                    }
                }
            }
        }
    }
}

fn failed(key: &'static str, why: String) -> FetchedKey {
    FetchedKey {
        key,
        outcome: FetchOutcome::Failed(why),
    }
}

fn finish(key: &'static str, pages: Vec<String>, notes: Vec<String>) -> FetchedKey {
    let outcome = match (pages.is_empty(), notes.is_empty()) {
        (_, true) => FetchOutcome::Pages(pages),
        (true, false) => FetchOutcome::Failed(notes.join("; ")),
        (false, false) => FetchOutcome::Partial {
            pages,
            reason: notes.join("; "),
        },
    };
    FetchedKey { key, outcome }
}

/// A FHIR id: 1 to 64 of `A-Z a-z 0-9 - .`, and not only dots (a path segment `..`).
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !id.bytes().all(|b| b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_ids() {
        assert!(is_fhir_id("pat-0001"));
        assert!(is_fhir_id("smart-1288992"));
        assert!(is_fhir_id("a.b"));
        assert!(!is_fhir_id(".."));
        assert!(!is_fhir_id("x/../y"));
        assert!(!is_fhir_id("x?_id=y"));
        assert!(!is_fhir_id(""));
        assert!(!is_fhir_id(&"a".repeat(65)));
    }

    #[test]
    fn the_token_is_never_shown() {
        let t = Token::bearer("s3cr3t").unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(Token::bearer("bad\ntoken").is_none());
    }

    #[test]
    fn invalid_settings_are_refused() {
        let cfg = FetchConfig {
            max_pages: 0,
            ..FetchConfig::default()
        };
        assert!(Fetcher::new(cfg).is_err());
        let cfg = FetchConfig {
            timeout: Duration::ZERO,
            ..FetchConfig::default()
        };
        assert!(Fetcher::new(cfg).is_err());
        let cfg = FetchConfig {
            allowed_servers: vec!["http://ehr.example.org/fhir".into()],
            ..FetchConfig::default()
        };
        assert!(matches!(
            Fetcher::new(cfg),
            Err(FetchError::Allowlist(AllowError::InsecureScheme(_)))
        ));
    }
}
