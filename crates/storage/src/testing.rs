//! Helpers for tests that need a real PostgreSQL (this crate's and the workspace's).
//!
//! CI (`CI=true`) starts a throwaway cluster in `.ci/setup.d/20-postgres.sh` and exports
//! `JAKGUARD_TEST_POSTGRES_URL`; there its absence is a failure, not a skip, so that a broken
//! setup cannot turn the PostgreSQL tests green by running none. Elsewhere the tests print a
//! notice and skip.

use sqlx::{AssertSqlSafe, Connection, Executor};

pub const POSTGRES_URL_VAR: &str = "JAKGUARD_TEST_POSTGRES_URL";

/// The test cluster's URL; `None` (with a notice) outside CI when it is not configured.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "{POSTGRES_URL_VAR} is not set under CI: .ci/setup.d/20-postgres.sh must start PostgreSQL and export it"
            );
            eprintln!(
                "NOTICE: {test}: skipped, {POSTGRES_URL_VAR} is not set (source .ci/setup.d/20-postgres.sh to run it)"
            );
            None
        }
    }
}

/// Creates an empty database on the cluster of `base` and returns its URL, so that each test
/// sees only its own rows. Callable from synchronous and asynchronous tests alike.
pub fn scratch_postgres(base: &str) -> String {
    let name = format!(
        "jakguard_t_{}",
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..16)
            .unwrap_or("x")
    );
    let base_owned = base.to_owned();
    let create = format!("CREATE DATABASE {name}");
    let outcome = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&base_owned)
                .await
                .map_err(|e| e.to_string())?;
            conn.execute(AssertSqlSafe(create))
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join();
    match outcome {
        Ok(Ok(())) => with_database(base, &name),
        Ok(Err(e)) => panic!("cannot create a scratch database on the test cluster: {e}"),
        Err(_) => panic!("creating a scratch database panicked"),
    }
}

/// `base` with its database name replaced by `name`.
pub fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let host_part = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// A fresh, empty directory under the system's temporary directory.
pub fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("jakguard-{label}-{}", uuid::Uuid::new_v4()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://u:p@127.0.0.1:5432/base?sslmode=disable", "t1"),
            "postgres://u:p@127.0.0.1:5432/t1?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://127.0.0.1", "t1"),
            "postgres://127.0.0.1/t1"
        );
    }
}
