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

/// A CDS client trusted to call the service (verification of its JWTs is not built yet).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub issuer: String,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
}

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

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub url: Option<String>,
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
    pub fhir: FhirConfig,
    pub storage: StorageConfig,
    /// Allow a non-loopback bind without authenticated clients.
    pub insecure: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".parse().expect("a valid literal address"),
            default_language: Lang::En,
            body_limit: 5 * 1024 * 1024,
            knowledge_dir: None,
            clients: vec![],
            fhir: FhirConfig::default(),
            storage: StorageConfig::default(),
            insecure: false,
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
    #[serde(default)]
    clients: Vec<ClientConfig>,
    fhir: Option<FhirConfig>,
    storage: Option<StorageConfig>,
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
            if let Some(l) = f.body_limit {
                c.body_limit = l;
            }
            if let Some(dir) = f.knowledge_dir {
                // Relative to the configuration file, like every path in it.
                c.knowledge_dir = Some(path.parent().unwrap_or(Path::new(".")).join(dir));
            }
            c.clients = f.clients;
            if let Some(fhir) = f.fhir {
                c.fhir = fhir;
            }
            if let Some(s) = f.storage {
                c.storage = s;
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
                "LOG" => {}
                _ => return Err(err("unknown setting".into())),
            }
        }
        if c.body_limit < 1024 {
            return Err(ConfigError::Invalid(
                "body_limit must be at least 1024 bytes".into(),
            ));
        }
        c.fhir.check()?;
        Ok(c)
    }

    /// Refuses configurations that would expose the service without protection.
    pub fn check_security(&self) -> Result<(), ConfigError> {
        if !self.clients.is_empty() {
            return Err(ConfigError::Invalid(
                "[[clients]] is configured, but JWT verification of CDS clients is not implemented in this version: \
                 refusing to start rather than accept unauthenticated calls while appearing to check them"
                    .into(),
            ));
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
    fn configured_clients_are_refused_until_tokens_are_verified() {
        let c = Config {
            clients: vec![ClientConfig {
                issuer: "https://sandbox.cds-hooks.org".into(),
                jwks_file: None,
                jwks_url: None,
            }],
            ..Config::default()
        };
        assert!(c.check_security().is_err());
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
}
