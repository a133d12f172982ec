//! The servers jakguard may contact: `fhir.allowed_servers`, compared by exact origin and base
//! path, so that a request cannot send the EHR's token (or jakguard's traffic) anywhere else.
//!
//! Plain http is refused at configuration time except on loopback (a test server, a sidecar),
//! because the bearer token would travel in clear.

use std::net::IpAddr;

use reqwest::Url;

/// A configuration entry that cannot be an allowed server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    #[error("`{0}` is not an absolute http(s) URL")]
    NotAUrl(String),
    #[error(
        "`{0}` uses plain http: https is required except on loopback (and `allow_http_loopback` is off or the host is not loopback)"
    )]
    InsecureScheme(String),
    #[error(
        "entry {0} carries a user name, a password, a query or a fragment: give the base URL only"
    )]
    NotABase(usize),
}

/// One allowed FHIR server: its base URL without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBase {
    url: Url,
}

impl ServerBase {
    /// `scheme://host:port`, the unit of the circuit breaker.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// The base URL as text, without a trailing slash.
    pub fn as_str(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// `relative` (e.g. `Condition?patient=1`) resolved under this base; `None` if the result
    /// would leave the base (a crafted id such as `..`).
    pub fn join(&self, relative: &str) -> Option<Url> {
        let path = relative.split(['?', '#']).next().unwrap_or("");
        let dots = |s: &str| {
            let s = s.to_ascii_lowercase().replace("%2e", ".");
            !s.is_empty() && s.chars().all(|c| c == '.')
        };
        if relative.starts_with('/') || path.split('/').any(dots) {
            return None;
        }
        let url = Url::parse(&format!("{}/{}", self.as_str(), relative)).ok()?;
        let below = url.path().len() > self.url.path().trim_end_matches('/').len() + 1;
        (below && self.contains(&url)).then_some(url)
    }

    /// Whether `url` is on this server under its base path: same scheme, host and port, and a
    /// path equal to the base path or below it. Next links must pass this before they are
    /// followed, so a Bundle cannot redirect the token elsewhere.
    pub fn contains(&self, url: &Url) -> bool {
        if url.scheme() != self.url.scheme()
            || url.host_str() != self.url.host_str()
            || url.port_or_known_default() != self.url.port_or_known_default()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        let base = self.url.path().trim_end_matches('/');
        let path = url.path();
        path == base
            || path == format!("{base}/")
            || path.starts_with(&format!("{base}/")) && !path.split('/').any(|s| s == "..")
    }
}

/// Parses `text` into a normalized base (lower-case host, default port, no trailing slash).
fn parse_base(text: &str) -> Option<Url> {
    let mut url = Url::parse(text.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Some(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The allowed servers, checked once at start-up.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    servers: Vec<ServerBase>,
}

impl Allowlist {
    /// Checks every entry; plain http only on loopback and only when `allow_http_loopback`.
    pub fn new(entries: &[String], allow_http_loopback: bool) -> Result<Allowlist, AllowError> {
        let mut servers = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let url = parse_base(entry).ok_or_else(|| AllowError::NotAUrl(entry.clone()))?;
            if !url.username().is_empty()
                || url.password().is_some()
                || url.query().is_some()
                || url.fragment().is_some()
            {
                // The entry is not echoed: it may hold a password.
                return Err(AllowError::NotABase(i + 1));
            }
            if url.scheme() == "http" && !(allow_http_loopback && is_loopback(&url)) {
                return Err(AllowError::InsecureScheme(entry.clone()));
            }
            servers.push(ServerBase { url });
        }
        Ok(Allowlist { servers })
    }

    /// The allowed server that `fhir_server` names exactly (origin and base path), if any.
    pub fn find(&self, fhir_server: &str) -> Option<&ServerBase> {
        let url = parse_base(fhir_server)?;
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return None;
        }
        self.servers.iter().find(|s| {
            s.url.scheme() == url.scheme()
                && s.url.host_str() == url.host_str()
                && s.url.port_or_known_default() == url.port_or_known_default()
                && s.url.path() == url.path()
        })
    }

    /// Adds one server, with the same checks as the configuration (for `jakguard eval
    /// --fhir-server`, where the operator names the server).
    pub fn with(mut self, entry: &str, allow_http_loopback: bool) -> Result<Allowlist, AllowError> {
        let more = Allowlist::new(&[entry.to_owned()], allow_http_loopback)?;
        self.servers.extend(more.servers);
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Result<Allowlist, AllowError> {
        let e: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        Allowlist::new(&e, true)
    }

    #[test]
    fn exact_origin_and_base_path_match() {
        let a = list(&["https://EHR.example.org:443/fhir/"]).unwrap();
        assert!(a.find("https://ehr.example.org/fhir").is_some());
        assert!(a.find("https://ehr.example.org/fhir/").is_some());
        assert!(a.find("https://ehr.example.org/fhir2").is_none());
        assert!(a.find("https://ehr.example.org/fhir/sub").is_none());
        assert!(a.find("https://ehr.example.org/").is_none());
        assert!(a.find("http://ehr.example.org/fhir").is_none());
        assert!(a.find("https://ehr.example.org:8443/fhir").is_none());
        assert!(a.find("https://ehr.example.org.evil.test/fhir").is_none());
        assert!(a.find("https://user@ehr.example.org/fhir").is_none());
        assert!(a.find("not a url").is_none());
        assert!(a.find("").is_none());
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(list(&["http://127.0.0.1:8080/fhir"]).is_ok());
        assert!(list(&["http://localhost/fhir"]).is_ok());
        assert!(list(&["http://[::1]:9/fhir"]).is_ok());
        assert!(matches!(
            list(&["http://ehr.example.org/fhir"]),
            Err(AllowError::InsecureScheme(_))
        ));
        let e = vec!["http://127.0.0.1/fhir".to_string()];
        assert!(Allowlist::new(&e, false).is_err());
        assert!(matches!(
            list(&["https://u:secret@ehr.example.org/fhir"]),
            Err(AllowError::NotABase(1))
        ));
        assert!(!list(&["https://u:secret@ehr.example.org/fhir"])
            .unwrap_err()
            .to_string()
            .contains("secret"));
        assert!(list(&["ftp://ehr.example.org/fhir"]).is_err());
    }

    #[test]
    fn joins_and_next_links_stay_under_the_base() {
        let a = list(&["https://ehr.example.org/fhir"]).unwrap();
        let base = a.find("https://ehr.example.org/fhir").unwrap();
        assert_eq!(
            base.join("Condition?patient=p1").unwrap().as_str(),
            "https://ehr.example.org/fhir/Condition?patient=p1"
        );
        assert!(base.join("../admin").is_none());
        assert!(base.join("Patient/..").is_none());
        let ok = Url::parse("https://ehr.example.org/fhir?_getpages=abc").unwrap();
        assert!(base.contains(&ok));
        let other = Url::parse("https://evil.example/fhir/Condition").unwrap();
        assert!(!base.contains(&other));
        let sibling = Url::parse("https://ehr.example.org/fhirx/Condition").unwrap();
        assert!(!base.contains(&sibling));
        assert_eq!(base.origin(), "https://ehr.example.org");
    }
}
