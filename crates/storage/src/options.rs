//! What the storage needs to know to open, and which backend a `storage.url` names.

use std::path::PathBuf;
use std::str::FromStr;

use crate::OpenError;

/// The file SQLite uses under the data directory when no `storage.url` is given.
pub const DEFAULT_SQLITE_FILE: &str = "jakguard.sqlite3";

/// The storage settings (the server's `[storage]` section).
#[derive(Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// `None`: SQLite in `data_dir`. Otherwise `sqlite:PATH`, `postgres://...` or `memory:`.
    pub url: Option<String>,
    /// Where the default SQLite file and the generated patient-id secret live.
    pub data_dir: PathBuf,
    /// The HMAC secret for patient ids (see `patient.rs` for what happens without one).
    pub patient_id_secret: Option<String>,
    /// Largest number of connections in the pool.
    pub max_connections: u32,
    /// Largest number of audit records kept in memory while the database is unreachable.
    pub audit_buffer: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            url: None,
            data_dir: PathBuf::from("data"),
            patient_id_secret: None,
            max_connections: 8,
            audit_buffer: 100_000,
        }
    }
}

// By hand, so that neither the secret nor a database password reaches a log or a panic.
impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageOptions")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("data_dir", &self.data_dir)
            .field(
                "patient_id_secret",
                &self.patient_id_secret.as_ref().map(|_| "<secret>"),
            )
            .field("max_connections", &self.max_connections)
            .field("audit_buffer", &self.audit_buffer)
            .finish()
    }
}

/// The database a configuration names.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// Nothing survives the process (development and tests only).
    Memory,
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (kept whole for the driver; shown redacted).
    Postgres(String),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Backend {
    /// A description for logs, without password.
    pub fn describe(&self) -> String {
        match self {
            Backend::Memory => "memory (not durable)".into(),
            Backend::Sqlite(p) => format!("sqlite {}", p.display()),
            Backend::Postgres(url) => format!("postgres {}", redact_url(url)),
        }
    }
}

impl StorageOptions {
    pub fn backend(&self) -> Result<Backend, OpenError> {
        let Some(url) = self.url.as_deref().map(str::trim) else {
            return Ok(Backend::Sqlite(self.data_dir.join(DEFAULT_SQLITE_FILE)));
        };
        if url == "memory:" || url == "memory" {
            return Ok(Backend::Memory);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Parsed now so that a typo stops start-up with a message, not a retry loop.
            sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| {
                OpenError::Config(format!("storage.url `{}`: {e}", redact_url(url)))
            })?;
            return Ok(Backend::Postgres(url.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() || path == ":memory:" {
                return Err(OpenError::Config(
                    "storage.url: an in-memory SQLite database is not durable; use `memory:` for a throwaway store".into(),
                ));
            }
            return Ok(Backend::Sqlite(PathBuf::from(path)));
        }
        Err(OpenError::Config(format!(
            "storage.url `{}`: expected sqlite:PATH, postgres://USER@HOST/DB or memory:",
            redact_url(url)
        )))
    }
}

/// `postgres://user:password@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}:***@{host}")
        }
        _ => authority.to_owned(),
    };
    // A password given as a query parameter is masked too.
    let tail = match tail.find("password=") {
        Some(i) => {
            let end = tail[i..].find('&').map_or(tail.len(), |j| i + j);
            format!("{}password=***{}", &tail[..i], &tail[end..])
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(url: Option<&str>) -> Result<Backend, OpenError> {
        StorageOptions {
            url: url.map(str::to_owned),
            ..StorageOptions::default()
        }
        .backend()
    }

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            backend(None).unwrap(),
            Backend::Sqlite(PathBuf::from("data/jakguard.sqlite3"))
        );
        assert_eq!(
            backend(Some("sqlite://var/j.db")).unwrap(),
            Backend::Sqlite("var/j.db".into())
        );
        assert_eq!(
            backend(Some("sqlite:///var/lib/j.db?mode=rwc")).unwrap(),
            Backend::Sqlite("/var/lib/j.db".into())
        );
        assert_eq!(backend(Some("memory:")).unwrap(), Backend::Memory);
        assert!(matches!(
            backend(Some("postgres://u:p@127.0.0.1:5432/db")),
            Ok(Backend::Postgres(_))
        ));
        assert!(backend(Some("mysql://x")).is_err());
        assert!(backend(Some("sqlite::memory:")).is_err());
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=s3cret&x=1"),
            "postgres://h/db?user=u&password=***&x=1"
        );
        let o = StorageOptions {
            url: Some("postgres://u:s3cret@h/db".into()),
            patient_id_secret: Some("very secret value".into()),
            ..StorageOptions::default()
        };
        let shown = format!("{o:?} {:?}", o.backend().unwrap());
        assert!(!shown.contains("s3cret") && !shown.contains("very secret"));
    }
}
