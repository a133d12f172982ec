//! Configuration in layers: embedded defaults, then a TOML file, then `JAKGUARD_*`
//! environment variables (nested keys joined by `__`), then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jakguard_knowledge::Lang;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file `{0}`: {1}")]
    File(String, String),
    #[error("environment variable `{0}`: {1}")]
    Env(String, String),
    #[error("{0}")]
    Invalid(String),
}

/// A CDS client trusted to call the service: its issuer and where its keys are.
pub use jakguard_auth::ClientConfig;

/// `[fhir]`: which FHIR servers may be read when the prefetch lacks data, and how (see the
/// README's "Fetching from the EHR's FHIR server").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FhirConfig {
    /// Exact base URLs (origin and path); https except loopback.
    pub allowed_servers: Vec<String>,
    /// Deadline of the whole fetch of one call, in milliseconds.
    pub timeout_ms: u64,
    /// Pages read per prefetch key (Bundle `next` links followed).
    pub max_pages: usize,
    /// Allow plain http to loopback servers (tests, a local sidecar).
    pub allow_http_loopback: bool,
    /// Failed fetches in a row after which a server is left alone for `breaker_cooldown_ms`.
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
}

impl Default for FhirConfig {
    fn default() -> Self {
        let d = jakguard_fetch::FetchConfig::default();
        FhirConfig {
            allowed_servers: d.allowed_servers,
            timeout_ms: d.timeout.as_millis() as u64,
            max_pages: d.max_pages,
            allow_http_loopback: d.allow_http_loopback,
            breaker_failures: d.breaker_failures,
            breaker_cooldown_ms: d.breaker_cooldown.as_millis() as u64,
        }
    }
}

impl FhirConfig {
    /// The fetcher's settings.
    pub fn fetch_config(&self) -> jakguard_fetch::FetchConfig {
        jakguard_fetch::FetchConfig {
            allowed_servers: self.allowed_servers.clone(),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            max_pages: self.max_pages,
            allow_http_loopback: self.allow_http_loopback,
            breaker_failures: self.breaker_failures,
            breaker_cooldown: std::time::Duration::from_millis(self.breaker_cooldown_ms),
            ..jakguard_fetch::FetchConfig::default()
        }
    }

    /// Refuses what the fetcher would refuse, at load time (a plain-http server, a zero bound).
    fn check(&self) -> Result<(), ConfigError> {
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(ConfigError::Invalid(
                "fhir.timeout_ms must be between 1 and 60000".into(),
            ));
        }
        if self.max_pages == 0 || self.breaker_failures == 0 {
            return Err(ConfigError::Invalid(
                "fhir.max_pages and fhir.breaker_failures must be at least 1".into(),
            ));
        }
        jakguard_fetch::Allowlist::new(&self.allowed_servers, self.allow_http_loopback)
            .map_err(|e| ConfigError::Invalid(format!("fhir.allowed_servers: {e}")))?;
        Ok(())
    }
}

/// `[storage]`: where feedback and the audit trail are kept (see the README's "Storage and
/// audit"). Without `url`: SQLite in `data_dir`.
#[derive(Clone, PartialEq)]
pub struct StorageConfig {
    /// `sqlite:PATH`, `postgres://USER:PASSWORD@HOST:PORT/DB`, or `memory:` (not durable).
    pub url: Option<String>,
    /// Folder of the default SQLite file and of the generated patient-id secret
    /// (in the file: relative to the file).
    pub data_dir: PathBuf,
    /// HMAC secret for patient ids in the audit trail; required with PostgreSQL.
    pub patient_id_secret: Option<String>,
    pub max_connections: u32,
    /// Audit records kept in memory while the database is unreachable.
    pub audit_buffer: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let o = jakguard_storage::StorageOptions::default();
        StorageConfig {
            url: o.url,
            data_dir: o.data_dir,
            patient_id_secret: o.patient_id_secret,
            max_connections: o.max_connections,
            audit_buffer: o.audit_buffer,
        }
    }
}

impl StorageConfig {
    pub fn options(&self) -> jakguard_storage::StorageOptions {
        jakguard_storage::StorageOptions {
            url: self.url.clone(),
            data_dir: self.data_dir.clone(),
            patient_id_secret: self.patient_id_secret.clone(),
            max_connections: self.max_connections,
            audit_buffer: self.audit_buffer,
        }
    }
}

// Through the storage options' Debug, which hides the secret and database passwords.
impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options().fmt(f)
    }
}

/// `[storage]` as written in the file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStorageConfig {
    url: Option<String>,
    data_dir: Option<PathBuf>,
    patient_id_secret: Option<String>,
    max_connections: Option<u32>,
    audit_buffer: Option<usize>,
}

impl FileStorageConfig {
    fn apply(self, c: &mut StorageConfig, base: &Path) {
        if let Some(u) = self.url {
            c.url = Some(u);
        }
        if let Some(d) = self.data_dir {
            c.data_dir = base.join(d);
        }
        if let Some(s) = self.patient_id_secret {
            c.patient_id_secret = Some(s);
        }
        if let Some(n) = self.max_connections {
            c.max_connections = n;
        }
        if let Some(n) = self.audit_buffer {
            c.audit_buffer = n;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub bind: SocketAddr,
    pub default_language: Lang,
    /// Largest request body accepted, in bytes (413 above).
    pub body_limit: usize,
    /// A knowledge folder to use instead of the embedded one.
    pub knowledge_dir: Option<PathBuf>,
    pub clients: Vec<ClientConfig>,
    /// The URL clients call this service at (scheme, host, port, path prefix): the expected
    /// `aud` of their tokens is derived from it. Defaults to `http://` + the bound address;
    /// set it behind a proxy or ingress.
    pub public_url: Option<String>,
    pub fhir: FhirConfig,
    pub storage: StorageConfig,
    /// Allow a non-loopback bind without authenticated clients.
    pub insecure: bool,
    /// On SIGTERM, how long requests in flight may take to finish.
    pub shutdown_grace_seconds: u64,
    /// Whether `/health/ready` answers 503 while storage cannot take writes (the default). With
    /// one database behind every replica, an operator may prefer `false`: replicas then stay in
    /// the load balancer and keep answering CDS calls, and readiness reports "degraded".
    pub ready_requires_storage: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".parse().expect("a valid literal address"),
            default_language: Lang::En,
            body_limit: 5 * 1024 * 1024,
            knowledge_dir: None,
            clients: vec![],
            public_url: None,
            fhir: FhirConfig::default(),
            storage: StorageConfig::default(),
            insecure: false,
            shutdown_grace_seconds: 30,
            ready_requires_storage: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    default_language: Option<String>,
    body_limit: Option<usize>,
    knowledge_dir: Option<PathBuf>,
    shutdown_grace_seconds: Option<u64>,
    ready_requires_storage: Option<bool>,
    #[serde(default)]
    clients: Vec<ClientConfig>,
    public_url: Option<String>,
    fhir: Option<FhirConfig>,
    storage: Option<FileStorageConfig>,
}

fn parse_lang(s: &str) -> Result<Lang, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not a supported language (en, fr)"))
}

fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an address such as 127.0.0.1:8080"))
}

impl Config {
    /// Defaults, overridden by `file` when given, then by the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(path) = file {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::File(name.clone(), e.to_string()))?;
            let f: FileConfig = toml::from_str(&text)
                .map_err(|e| ConfigError::File(name.clone(), e.message().to_owned()))?;
            if let Some(b) = f.bind {
                c.bind = parse_bind(&b).map_err(|e| ConfigError::File(name.clone(), e))?;
            }
            if let Some(l) = f.default_language {
                c.default_language =
                    parse_lang(&l).map_err(|e| ConfigError::File(name.clone(), e))?;
            }
            if let Some(r) = f.ready_requires_storage {
                c.ready_requires_storage = r;
            }
            if let Some(g) = f.shutdown_grace_seconds {
                c.shutdown_grace_seconds = g;
            }
            if let Some(l) = f.body_limit {
                c.body_limit = l;
            }
            if let Some(dir) = f.knowledge_dir {
                // Relative to the configuration file, like every path in it.
                c.knowledge_dir = Some(path.parent().unwrap_or(Path::new(".")).join(dir));
            }
            // Paths of JWKS files are relative to the configuration file.
            let base = path.parent().unwrap_or(Path::new("."));
            c.clients = f
                .clients
                .into_iter()
                .map(|mut cl| {
                    cl.jwks_file = cl.jwks_file.map(|p| base.join(p));
                    cl
                })
                .collect();
            if let Some(u) = f.public_url {
                c.public_url = Some(u);
            }
            if let Some(fhir) = f.fhir {
                c.fhir = fhir;
            }
            if let Some(s) = f.storage {
                s.apply(&mut c.storage, path.parent().unwrap_or(Path::new(".")));
            }
        }
        for (key, value) in env {
            let Some(name) = key.strip_prefix("JAKGUARD_") else {
                continue;
            };
            let err = |m: String| ConfigError::Env(key.clone(), m);
            match name {
                "BIND" => c.bind = parse_bind(&value).map_err(err)?,
                "DEFAULT_LANGUAGE" => c.default_language = parse_lang(&value).map_err(err)?,
                "READY_REQUIRES_STORAGE" => {
                    c.ready_requires_storage =
                        value.parse().map_err(|_| err("true or false".into()))?
                }
                "SHUTDOWN_GRACE_SECONDS" => {
                    c.shutdown_grace_seconds = value
                        .parse()
                        .map_err(|_| err("not a number of seconds".into()))?
                }
                "BODY_LIMIT" => {
                    c.body_limit = value
                        .parse()
                        .map_err(|_| err("not a number of bytes".into()))?
                }
                "KNOWLEDGE_DIR" => c.knowledge_dir = Some(PathBuf::from(value)),
                "FHIR__ALLOWED_SERVERS" => {
                    c.fhir.allowed_servers = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "PUBLIC_URL" => c.public_url = Some(value),
                "FHIR__TIMEOUT_MS" => {
                    c.fhir.timeout_ms = value
                        .parse()
                        .map_err(|_| err("not a number of milliseconds".into()))?
                }
                "FHIR__MAX_PAGES" => {
                    c.fhir.max_pages = value
                        .parse()
                        .map_err(|_| err("not a number of pages".into()))?
                }
                "FHIR__ALLOW_HTTP_LOOPBACK" => {
                    c.fhir.allow_http_loopback =
                        value.parse().map_err(|_| err("not true or false".into()))?
                }
                "FHIR__BREAKER_FAILURES" => {
                    c.fhir.breaker_failures = value
                        .parse()
                        .map_err(|_| err("not a number of failures".into()))?
                }
                "FHIR__BREAKER_COOLDOWN_MS" => {
                    c.fhir.breaker_cooldown_ms = value
                        .parse()
                        .map_err(|_| err("not a number of milliseconds".into()))?
                }
                "STORAGE__URL" => c.storage.url = Some(value),
                "STORAGE__DATA_DIR" => c.storage.data_dir = PathBuf::from(value),
                "STORAGE__PATIENT_ID_SECRET" => c.storage.patient_id_secret = Some(value),
                "STORAGE__MAX_CONNECTIONS" => {
                    c.storage.max_connections = value
                        .parse()
                        .map_err(|_| err("not a number of connections".into()))?
                }
                "STORAGE__AUDIT_BUFFER" => {
                    c.storage.audit_buffer = value
                        .parse()
                        .map_err(|_| err("not a number of records".into()))?
                }
                // The test suite's own settings (e.g. JAKGUARD_TEST_POSTGRES_URL, exported by CI
                // for the whole run), not the service's.
                n if n.starts_with("TEST_") => {}
                "LOG" => {}
                _ => return Err(err("unknown setting".into())),
            }
        }
        if c.body_limit < 1024 {
            return Err(ConfigError::Invalid(
                "body_limit must be at least 1024 bytes".into(),
            ));
        }
        if c.storage.max_connections == 0 || c.storage.audit_buffer == 0 {
            return Err(ConfigError::Invalid(
                "storage.max_connections and storage.audit_buffer must be at least 1".into(),
            ));
        }
        c.fhir.check()?;
        Ok(c)
    }

    /// The effective configuration as TOML, secrets masked: what `jakguard config check` prints.
    pub fn effective(&self) -> String {
        fn q(s: &str) -> String {
            format!("{s:?}")
        }
        fn list(v: &[String]) -> String {
            format!(
                "[{}]",
                v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        }
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
        line("bind", q(&self.bind.to_string()));
        if let Some(u) = &self.public_url {
            line("public_url", q(u));
        }
        line("default_language", q(self.default_language.as_str()));
        line("body_limit", self.body_limit.to_string());
        line(
            "shutdown_grace_seconds",
            self.shutdown_grace_seconds.to_string(),
        );
        line(
            "ready_requires_storage",
            self.ready_requires_storage.to_string(),
        );
        if let Some(d) = &self.knowledge_dir {
            line("knowledge_dir", q(&d.display().to_string()));
        }
        for c in &self.clients {
            out.push_str("\n[[clients]]\n");
            out.push_str(&format!("issuer = {}\n", q(&c.issuer)));
            if let Some(f) = &c.jwks_file {
                out.push_str(&format!("jwks_file = {}\n", q(&f.display().to_string())));
            }
            if let Some(u) = &c.jwks_url {
                out.push_str(&format!("jwks_url = {}\n", q(u)));
            }
            if !c.jku_allowlist.is_empty() {
                out.push_str(&format!("jku_allowlist = {}\n", list(&c.jku_allowlist)));
            }
            if let Some(t) = &c.tenant {
                out.push_str(&format!("tenant = {}\n", q(t)));
            }
        }
        out.push_str("\n[fhir]\n");
        out.push_str(&format!(
            "allowed_servers = {}\n",
            list(&self.fhir.allowed_servers)
        ));
        out.push_str(&format!("timeout_ms = {}\n", self.fhir.timeout_ms));
        out.push_str(&format!("max_pages = {}\n", self.fhir.max_pages));
        out.push_str(&format!(
            "allow_http_loopback = {}\n",
            self.fhir.allow_http_loopback
        ));
        out.push_str("\n[storage]\n");
        if let Some(u) = &self.storage.url {
            out.push_str(&format!("url = {}\n", q(&mask_url(u))));
        }
        out.push_str(&format!(
            "data_dir = {}\n",
            q(&self.storage.data_dir.display().to_string())
        ));
        out.push_str(&format!(
            "patient_id_secret = {}\n",
            if self.storage.patient_id_secret.is_some() {
                q("********")
            } else {
                q("(not set)")
            }
        ));
        out
    }

    /// Refuses configurations that would expose the service without protection.
    pub fn check_security(&self) -> Result<(), ConfigError> {
        if !self.clients.is_empty() {
            return Ok(());
        }
        if !self.bind.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without authenticated clients; bind a loopback address, or pass --insecure",
                self.bind
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_keys_come_from_the_file_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("jakguard-fhir-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jakguard.toml");
        std::fs::write(
            &file,
            "[fhir]\nallowed_servers = [\"https://ehr.example.org/fhir\"]\nmax_pages = 3\n",
        )
        .unwrap();
        let env = [("JAKGUARD_FHIR__TIMEOUT_MS".to_string(), "750".to_string())];
        let c = Config::load(Some(&file), env.into_iter()).unwrap();
        assert_eq!(c.fhir.allowed_servers, ["https://ehr.example.org/fhir"]);
        assert_eq!(c.fhir.max_pages, 3);
        assert_eq!(c.fhir.timeout_ms, 750);
        assert!(c.fhir.allow_http_loopback);
        let f = c.fhir.fetch_config();
        assert_eq!(f.timeout, std::time::Duration::from_millis(750));
        assert_eq!(FhirConfig::default().timeout_ms, 2000);
    }

    #[test]
    fn plain_http_fhir_servers_are_refused_except_on_loopback() {
        let env = |v: &str| [("JAKGUARD_FHIR__ALLOWED_SERVERS".to_string(), v.to_string())];
        assert!(Config::load(None, env("http://ehr.example.org/fhir").into_iter()).is_err());
        assert!(Config::load(None, env("http://127.0.0.1:8080/fhir").into_iter()).is_ok());
        let mut e = env("http://127.0.0.1:8080/fhir").to_vec();
        e.push(("JAKGUARD_FHIR__ALLOW_HTTP_LOOPBACK".into(), "false".into()));
        assert!(Config::load(None, e.into_iter()).is_err());
        let zero = [("JAKGUARD_FHIR__TIMEOUT_MS".to_string(), "0".to_string())];
        assert!(Config::load(None, zero.into_iter()).is_err());
    }

    #[test]
    fn defaults_bind_loopback_in_english() {
        let c = Config::load(None, std::iter::empty()).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.default_language, Lang::En);
        assert!(c.check_security().is_ok());
    }

    #[test]
    fn the_environment_overrides_defaults() {
        let env = [
            ("JAKGUARD_DEFAULT_LANGUAGE".to_string(), "fr".to_string()),
            (
                "JAKGUARD_FHIR__ALLOWED_SERVERS".into(),
                "https://a/fhir, https://b/fhir".into(),
            ),
        ];
        let c = Config::load(None, env.into_iter()).unwrap();
        assert_eq!(c.default_language, Lang::Fr);
        assert_eq!(c.fhir.allowed_servers, ["https://a/fhir", "https://b/fhir"]);
    }

    #[test]
    fn an_unknown_environment_setting_is_an_error() {
        let env = [("JAKGUARD_BINDD".to_string(), "x".to_string())];
        assert!(Config::load(None, env.into_iter()).is_err());
    }

    #[test]
    fn the_example_file_of_the_repository_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/jakguard.example.toml");
        let c = Config::load(Some(&path), std::iter::empty()).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn a_public_bind_with_clients_is_allowed() {
        let c = Config {
            bind: "0.0.0.0:8080".parse().unwrap(),
            clients: vec![ClientConfig {
                issuer: "https://sandbox.cds-hooks.org".into(),
                jwks_file: Some("keys.json".into()),
                jwks_url: None,
                jku_allowlist: vec![],
                tenant: None,
            }],
            ..Config::default()
        };
        assert!(c.check_security().is_ok());
    }

    #[test]
    fn a_public_bind_without_clients_is_refused_unless_insecure() {
        let mut c = Config {
            bind: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        assert!(c.check_security().is_err());
        c.insecure = true;
        assert!(c.check_security().is_ok());
    }

    #[test]
    fn storage_keys_come_from_the_file_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("jakguard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jakguard.toml");
        std::fs::write(
            &file,
            "[storage]\ndata_dir = \"state\"\npatient_id_secret = \"from the file, long enough\"\n",
        )
        .unwrap();
        let env = [
            (
                "JAKGUARD_STORAGE__URL".to_string(),
                "postgres://u:pw@127.0.0.1/db".to_string(),
            ),
            ("JAKGUARD_STORAGE__AUDIT_BUFFER".into(), "500".into()),
        ];
        let c = Config::load(Some(&file), env.into_iter()).unwrap();
        assert_eq!(c.storage.data_dir, dir.join("state"));
        assert_eq!(c.storage.audit_buffer, 500);
        assert_eq!(
            c.storage.url.as_deref(),
            Some("postgres://u:pw@127.0.0.1/db")
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("long enough") && !shown.contains(":pw@"),
            "{shown}"
        );
        let zero = [(
            "JAKGUARD_STORAGE__MAX_CONNECTIONS".to_string(),
            "0".to_string(),
        )];
        assert!(Config::load(None, zero.into_iter()).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A database URL with its password replaced by asterisks.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:********@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod effective_tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_the_effective_configuration() {
        let mut c = Config::default();
        c.storage.url = Some("postgres://jak:s3cret@db:5432/jakguard".into());
        c.storage.patient_id_secret = Some("hmac-key".into());
        let text = c.effective();
        assert!(
            !text.contains("s3cret") && !text.contains("hmac-key"),
            "{text}"
        );
        assert!(text.contains("postgres://jak:********@db:5432/jakguard"));
        // What is printed reads back as TOML.
        toml::from_str::<toml::Table>(&text).unwrap();
    }
}
