//! SQLite and PostgreSQL behind one code path.
//!
//! [`Db`] holds either pool; the [`on_db!`] macro expands one block of code for each, so every
//! query below is written once, with `$N` placeholders (which SQLite accepts too) and only
//! types both drivers map the same way (TEXT, 64-bit integers, booleans). The schemas in
//! `migrations/sqlite` and `migrations/postgres` differ only in identity columns and integer
//! widths. Durability: SQLite in WAL mode with `synchronous = FULL` (a commit is on disk when
//! it returns, even across a power cut); PostgreSQL's default synchronous commit.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use jakguard_cds::feedback::{
    AcceptedSuggestion, FeedbackItem, Outcome, OverrideReason, ReasonCoding,
};
use jakguard_cds::AuditCard;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

use crate::audit::{self, AuditQueue, SqlAudit};
use crate::bulk::Conn;
use crate::cards;
use crate::patient::{PatientHasher, SecretSource};
use crate::report::{FeedbackRow, IssuedRow, Period, Report};
use crate::runtime::StorageRuntime;
use crate::{
    AuditSink, Backend, FeedbackStore, MemoryAudit, MemoryStore, OpenError, StorageError,
    StorageOptions, StoreOutcome, StoredFeedback,
};

/// How long a request may wait for a pooled connection before the store answers "unavailable".
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole of a feedback write, connection included: past it the client gets 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long start-up keeps trying to reach the database (a database started at the same
/// time as the service, as in a compose file, gets this long to come up).
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);
/// SQLite serialises writers; a few connections cover concurrent readers.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// Bound parameters per statement: SQLite accepts at most 32,766 (SQLITE_MAX_VARIABLE_NUMBER
/// since 3.32), PostgreSQL 65,535; the lower of the two, so that one chunking fits both.
pub(crate) const MAX_BINDS: usize = 32_766;
/// The audit writer's page cache, in KiB (negative: a size, not a page count). SQLite's
/// default, 2 MiB, held less than the index pages a batch touches once the tables outgrew it.
/// 8 MiB, not more: the cache is resident memory, and 32 MiB took the service to 99 MB under
/// `scripts/load.sh` (budget: under 100 MB) for a few microseconds per call.
const AUDIT_CACHE_PRAGMA: &str = "PRAGMA cache_size = -8192";

#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same block against whichever pool `$db` holds, bound to `$pool`.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// Start-up's connection: attempts until one succeeds or [`CONNECT_PATIENCE`] has passed (a
/// database started at the same time as the service, or a disk slow to sync, gets that long).
/// Only errors `retryable` accepts are tried again; any other stops start-up at once.
async fn with_patience<T, F, Fut>(
    retryable: fn(&sqlx::Error) -> bool,
    attempt: F,
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    retry_for(
        CONNECT_PATIENCE,
        Duration::from_millis(500),
        retryable,
        attempt,
    )
    .await
}

/// Attempts until one succeeds, fails with an error not `retryable`, or `patience` has
/// passed; `pause` apart.
async fn retry_for<T, F, Fut>(
    patience: Duration,
    pause: Duration,
    retryable: fn(&sqlx::Error) -> bool,
    mut attempt: F,
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match attempt().await {
            Ok(pool) => return Ok(pool),
            Err(e) if !retryable(&e) || tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "storage: database not reachable yet; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

pub(crate) fn unavailable(e: sqlx::Error) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

/// The schema's versions, oldest first, as (version, description, SQLite text, PostgreSQL
/// text). A version once released is never edited: sqlx keeps each applied migration's
/// checksum and refuses a database whose history differs from the binary's.
const MIGRATIONS: [(i64, &str, &str, &str); 2] = [
    (
        1,
        "feedback and audit",
        include_str!("../migrations/sqlite/0001_feedback_and_audit.sql"),
        include_str!("../migrations/postgres/0001_feedback_and_audit.sql"),
    ),
    (
        2,
        "cards in their event",
        include_str!("../migrations/sqlite/0002_cards_in_their_event.sql"),
        include_str!("../migrations/postgres/0002_cards_in_their_event.sql"),
    ),
];

/// The migrations up to `through` (a version of [`MIGRATIONS`]) for SQLite or PostgreSQL.
fn migrator(postgres: bool, through: i64) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .filter(|m| m.0 <= through)
            .map(|&(version, description, sqlite, pg)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    (if postgres { pg } else { sqlite }).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

impl Db {
    async fn connect(backend: &Backend, max_connections: u32) -> Result<Db, OpenError> {
        let connect_error = |e: String| OpenError::Connect {
            backend: backend.describe(),
            reason: e,
        };
        match backend {
            Backend::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        OpenError::Io(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    // Statement journals (which undo one statement within a transaction, and
                    // play no part in crash recovery) in memory: a multi-row audit insert
                    // otherwise spills its journal to a temporary file past 64 KiB.
                    .pragma("temp_store", "memory")
                    // Checkpoint the WAL into the database every 10,000 pages (40 MiB) rather
                    // than SQLite's 1,000: the audit writer commits a batch every 50 ms, and an
                    // index page rewritten by many batches is copied back once per checkpoint,
                    // so ten times fewer checkpoints copy far fewer pages (the writer's thread
                    // took about 12% less CPU per call under scripts/load.sh). The cost is a
                    // WAL file of about 40 MiB beside the database (more while a long read
                    // holds a checkpoint back), replayed on open after a crash, and nothing
                    // of durability: a commit is on disk in the WAL either way.
                    .pragma("wal_autocheckpoint", "10000");
                // Retried like a server's: opening a new database in WAL mode with full
                // synchronisation waits on fsync, which a busy disk (a CI machine compiling
                // next to the service) can hold past the pool's 2 s acquire timeout.
                // Only a timeout: a file that cannot be opened (a directory, no permission)
                // will not open on a second try.
                let slow = |e: &sqlx::Error| matches!(e, sqlx::Error::PoolTimedOut);
                let pool = with_patience(slow, || {
                    SqlitePoolOptions::new()
                        .max_connections(max_connections.clamp(1, SQLITE_MAX_CONNECTIONS))
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_with(options.clone())
                })
                .await
                .map_err(|e| connect_error(e.to_string()))?;
                Ok(Db::Sqlite(pool))
            }
            Backend::Postgres(url) => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| connect_error(e.to_string()))?
                    .application_name("jakguard");
                let pool = with_patience(
                    |_| true,
                    || {
                        PgPoolOptions::new()
                            .max_connections(max_connections.max(1))
                            .acquire_timeout(ACQUIRE_TIMEOUT)
                            .connect_with(options.clone())
                    },
                )
                .await
                .map_err(|e| connect_error(e.to_string()))?;
                Ok(Db::Postgres(pool))
            }
            Backend::Memory => Err(OpenError::Config("the memory store has no database".into())),
        }
    }

    /// Applies the migrations this version knows (PostgreSQL takes an advisory lock, so
    /// replicas starting together migrate once).
    async fn migrate(&self) -> Result<(), OpenError> {
        self.migrate_through(i64::MAX).await
    }

    /// The migrations up to version `through` (tests start from an older schema).
    async fn migrate_through(&self, through: i64) -> Result<(), OpenError> {
        let migrate_error = |e: sqlx::migrate::MigrateError| OpenError::Migrate(e.to_string());
        match self {
            Db::Sqlite(pool) => migrator(false, through)
                .run(pool)
                .await
                .map_err(migrate_error),
            Db::Postgres(pool) => migrator(true, through)
                .run(pool)
                .await
                .map_err(migrate_error),
        }
    }

    /// Records the secret's fingerprint on first use, and refuses a different secret later:
    /// hashes under two secrets would silently split every patient's history in two.
    async fn check_secret(&self, hasher: &PatientHasher) -> Result<(), OpenError> {
        let check = hasher.key_check();
        let db_error = |e: sqlx::Error| OpenError::Secret(format!("cannot check it: {e}"));
        let stored: String = on_db!(self, pool => {
            sqlx::query(
                "INSERT INTO jakguard_meta (name, value) VALUES ('patient_id_key_check', $1) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(&check)
            .execute(pool)
            .await
            .map_err(db_error)?;
            sqlx::query("SELECT value FROM jakguard_meta WHERE name = 'patient_id_key_check'")
                .fetch_one(pool)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(db_error)?
        });
        if stored != check {
            return Err(OpenError::Secret(
                "it differs from the secret this database's audit trail was written with; \
                 restore the original secret (storage.patient_id_secret, or the patient-id.secret file)"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn ping(&self) -> bool {
        let ping =
            async { on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok()) };
        tokio::time::timeout(PING_TIMEOUT, ping)
            .await
            .unwrap_or(false)
    }

    /// Stores every item in one transaction: all or nothing, committed before it returns.
    pub(crate) async fn store_feedback(
        &self,
        service: &str,
        items: &[FeedbackItem],
    ) -> Result<StoreOutcome, StorageError> {
        let received_ms = crate::now_ms();
        let rows: Vec<FeedbackColumns> = items.iter().map(FeedbackColumns::of).collect();
        let mut outcome = StoreOutcome::default();
        on_db!(self, pool => {
            let mut tx = pool.begin().await.map_err(unavailable)?;
            for r in &rows {
                let inserted = sqlx::query(
                    "INSERT INTO feedback (received_ms, service, card_uuid, outcome, outcome_timestamp, \
                         accepted_suggestions, reason_system, reason_code, reason_display, user_comment, card_known) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                         EXISTS (SELECT 1 FROM audit_card_event WHERE uuid = $3)) \
                     ON CONFLICT (service, card_uuid, outcome, outcome_timestamp) DO NOTHING \
                     RETURNING card_known",
                )
                .bind(received_ms)
                .bind(service)
                .bind(&r.card)
                .bind(&r.outcome)
                .bind(&r.outcome_timestamp)
                .bind(&r.accepted_suggestions)
                .bind(&r.reason_system)
                .bind(&r.reason_code)
                .bind(&r.reason_display)
                .bind(&r.user_comment)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
                match inserted {
                    Some(row) => {
                        let known: bool = row.try_get(0).map_err(unavailable)?;
                        outcome.stored += 1;
                        outcome.unknown_cards += usize::from(!known);
                    }
                    None => outcome.duplicates += 1,
                }
            }
            tx.commit().await.map_err(unavailable)?;
        });
        Ok(outcome)
    }

    pub(crate) async fn all_feedback(&self) -> Result<Vec<StoredFeedback>, StorageError> {
        let rows = on_db!(self, pool => {
            let rows = sqlx::query(
                "SELECT service, card_uuid, outcome, outcome_timestamp, accepted_suggestions, \
                     reason_system, reason_code, reason_display, user_comment, card_known \
                 FROM feedback ORDER BY id",
            )
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push((
                    FeedbackColumns {
                        card: row.try_get(1).map_err(unavailable)?,
                        outcome: row.try_get(2).map_err(unavailable)?,
                        outcome_timestamp: row.try_get(3).map_err(unavailable)?,
                        accepted_suggestions: row.try_get(4).map_err(unavailable)?,
                        reason_system: row.try_get(5).map_err(unavailable)?,
                        reason_code: row.try_get(6).map_err(unavailable)?,
                        reason_display: row.try_get(7).map_err(unavailable)?,
                        user_comment: row.try_get(8).map_err(unavailable)?,
                    },
                    row.try_get::<String, _>(0).map_err(unavailable)?,
                    row.try_get::<bool, _>(9).map_err(unavailable)?,
                ));
            }
            out
        });
        Ok(rows
            .into_iter()
            .map(|(cols, service, card_known)| StoredFeedback {
                service,
                item: cols.into_item(),
                card_known,
            })
            .collect())
    }

    /// Writes a batch of audit records in one transaction, on a connection from the pool
    /// (tests; the audit writer keeps its own, see [`Db::audit_connection`]).
    #[cfg(test)]
    pub(crate) async fn insert_audit<A: std::borrow::Borrow<audit::PendingAudit> + Sync>(
        &self,
        batch: &[A],
    ) -> Result<(), sqlx::Error> {
        self.insert_audit_bounded(batch, MAX_BINDS).await
    }

    /// [`Db::insert_audit`] with at most `max_binds` parameters per statement (tests lower it
    /// to exercise the chunking).
    #[cfg(test)]
    pub(crate) async fn insert_audit_bounded<A: std::borrow::Borrow<audit::PendingAudit> + Sync>(
        &self,
        batch: &[A],
        max_binds: usize,
    ) -> Result<(), sqlx::Error> {
        let mut conn = match self {
            Db::Sqlite(pool) => Conn::Sqlite(pool.acquire().await?),
            Db::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        };
        conn.insert_audit(batch, max_binds).await
    }

    /// A connection for the audit writer to keep between its transactions. Kept rather than
    /// taken from the pool each time: the pool hands out its idle connections in turn, and a
    /// SQLite connection whose database another connection wrote since its last use starts
    /// with an empty page cache; with one connection the index pages every batch touches stay
    /// cached, and so do its prepared statements. A larger cache than SQLite's 2 MiB default
    /// keeps the interior pages of the indexes on random keys (patient hashes, card uuids) in
    /// memory as the tables grow.
    pub(crate) async fn audit_connection(&self) -> Result<Conn, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                sqlx::query(AUDIT_CACHE_PRAGMA)
                    .persistent(false)
                    .execute(&mut *conn)
                    .await?;
                Ok(Conn::Sqlite(conn))
            }
            Db::Postgres(pool) => Ok(Conn::Postgres(pool.acquire().await?)),
        }
    }

    /// Runs one statement (tests that break the schema for a moment).
    #[cfg(test)]
    pub(crate) async fn execute(&self, sql: &'static str) -> Result<(), StorageError> {
        on_db!(self, pool => {
            sqlx::query(sql).execute(pool).await.map_err(unavailable)?;
        });
        Ok(())
    }

    pub(crate) async fn audit_records(&self) -> Result<Vec<StoredAudit>, StorageError> {
        on_db!(self, pool => {
            let events = sqlx::query(
                "SELECT id, at_ms, service, hook_instance, patient_hash, cards FROM audit_event \
                 ORDER BY at_ms, id",
            )
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
            let mut out = Vec::with_capacity(events.len());
            for e in events {
                let id: String = e.try_get(0).map_err(unavailable)?;
                let text: String = e.try_get(5).map_err(unavailable)?;
                let cards = cards::from_json(&text).map_err(|err| unreadable(&id, &err))?;
                out.push(StoredAudit {
                    id,
                    at_ms: e.try_get(1).map_err(unavailable)?,
                    service: e.try_get(2).map_err(unavailable)?,
                    hook_instance: e.try_get(3).map_err(unavailable)?,
                    patient_hash: e.try_get(4).map_err(unavailable)?,
                    cards,
                });
            }
            Ok(out)
        })
    }

    async fn report(&self, period: Period) -> Result<Report, StorageError> {
        let (from, to) = period.bounds_ms();
        // Per (topic, molecule): the distinct card uuids, and how many times cards were shown.
        let mut tally: HashMap<(String, Option<String>), (HashSet<String>, i64)> = HashMap::new();
        let mut feedback = Vec::new();
        on_db!(self, pool => {
            // The period's events, read as a stream: a year of evaluations need not fit in
            // memory at once, only its distinct cards.
            let mut events = sqlx::query(
                "SELECT id, cards FROM audit_event \
                 WHERE at_ms >= $1 AND at_ms < $2 AND card_count > 0",
            )
            .bind(from)
            .bind(to)
            .fetch(pool);
            while let Some(e) = events.try_next().await.map_err(unavailable)? {
                let id: String = e.try_get(0).map_err(unavailable)?;
                let text: String = e.try_get(1).map_err(unavailable)?;
                for c in cards::from_json(&text).map_err(|err| unreadable(&id, &err))? {
                    let t = tally.entry((c.topic, c.molecule)).or_default();
                    t.0.insert(c.uuid);
                    t.1 += 1;
                }
            }
            drop(events);
            // Feedback is attributed to the latest audit record of its card (uuids repeat when
            // the EHR calls again with the same hookInstance); none: an unknown card.
            let rows = sqlx::query(
                "SELECT f.card_uuid, e.id, e.cards, f.outcome, f.reason_system, f.reason_code, \
                        f.reason_display, COUNT(*) \
                 FROM feedback f \
                 LEFT JOIN audit_event e ON e.id = ( \
                     SELECT i.event_id FROM audit_card_event i WHERE i.uuid = f.card_uuid \
                     ORDER BY i.at_ms DESC, i.event_id DESC LIMIT 1) \
                 WHERE f.received_ms >= $1 AND f.received_ms < $2 \
                 GROUP BY f.card_uuid, e.id, e.cards, f.outcome, f.reason_system, f.reason_code, \
                          f.reason_display",
            )
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
            for r in rows {
                let uuid: String = r.try_get(0).map_err(unavailable)?;
                let event: Option<String> = r.try_get(1).map_err(unavailable)?;
                let text: Option<String> = r.try_get(2).map_err(unavailable)?;
                let card = match (event, text) {
                    (Some(id), Some(text)) => {
                        let cards = cards::from_json(&text).map_err(|err| unreadable(&id, &err))?;
                        let card = cards.into_iter().find(|c| c.uuid == uuid).ok_or_else(|| {
                            StorageError::Unreadable(format!(
                                "audit event {id} is indexed under a card it does not list"
                            ))
                        })?;
                        Some(card)
                    }
                    _ => None,
                };
                let (topic, molecule) = match card {
                    Some(c) => (Some(c.topic), c.molecule),
                    None => (None, None),
                };
                feedback.push(FeedbackRow {
                    topic,
                    molecule,
                    outcome: r.try_get(3).map_err(unavailable)?,
                    reason_system: r.try_get(4).map_err(unavailable)?,
                    reason_code: r.try_get(5).map_err(unavailable)?,
                    reason_display: r.try_get(6).map_err(unavailable)?,
                    count: r.try_get(7).map_err(unavailable)?,
                });
            }
        });
        let issued = tally
            .into_iter()
            .map(|((topic, molecule), (uuids, shown))| IssuedRow {
                topic,
                molecule,
                issued: uuids.len() as i64,
                shown,
            })
            .collect();
        Ok(Report::from_rows(period, issued, feedback))
    }
}

/// An audit record whose cards cannot be read (only a hand edit of the database makes one).
fn unreadable(event: &str, err: &serde_json::Error) -> StorageError {
    StorageError::Unreadable(format!("audit event {event}: its cards: {err}"))
}

/// A feedback item as its columns.
struct FeedbackColumns {
    card: String,
    outcome: String,
    outcome_timestamp: String,
    accepted_suggestions: String,
    reason_system: Option<String>,
    reason_code: Option<String>,
    reason_display: Option<String>,
    user_comment: Option<String>,
}

impl FeedbackColumns {
    fn of(item: &FeedbackItem) -> FeedbackColumns {
        let ids: Vec<&str> = item
            .accepted_suggestions
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        let reason = item
            .override_reason
            .as_ref()
            .and_then(|r| r.reason.as_ref());
        FeedbackColumns {
            card: item.card.clone(),
            outcome: match item.outcome {
                Outcome::Accepted => "accepted",
                Outcome::Overridden => "overridden",
            }
            .to_owned(),
            outcome_timestamp: item.outcome_timestamp.clone(),
            accepted_suggestions: serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()),
            reason_system: reason.and_then(|r| r.system.clone()),
            reason_code: reason.and_then(|r| r.code.clone()),
            reason_display: reason.and_then(|r| r.display.clone()),
            user_comment: item
                .override_reason
                .as_ref()
                .and_then(|r| r.user_comment.clone()),
        }
    }
}

impl FeedbackColumns {
    /// The item back from its columns (an empty `overrideReason` is read back as absent).
    fn into_item(self) -> FeedbackItem {
        let ids: Vec<String> = serde_json::from_str(&self.accepted_suggestions).unwrap_or_default();
        let reason = match (&self.reason_system, &self.reason_code, &self.reason_display) {
            (None, None, None) => None,
            _ => Some(ReasonCoding {
                system: self.reason_system,
                code: self.reason_code,
                display: self.reason_display,
            }),
        };
        let override_reason = if reason.is_some() || self.user_comment.is_some() {
            Some(OverrideReason {
                reason,
                user_comment: self.user_comment,
            })
        } else {
            None
        };
        FeedbackItem {
            card: self.card,
            outcome: if self.outcome == "accepted" {
                Outcome::Accepted
            } else {
                Outcome::Overridden
            },
            accepted_suggestions: ids
                .into_iter()
                .map(|id| AcceptedSuggestion { id })
                .collect(),
            override_reason,
            outcome_timestamp: self.outcome_timestamp,
        }
    }
}

/// One audit record as stored (tests and tools).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAudit {
    pub id: String,
    pub at_ms: i64,
    pub service: String,
    pub hook_instance: String,
    /// The keyed hash of the patient id.
    pub patient_hash: String,
    pub cards: Vec<AuditCard>,
}

/// The feedback store over SQL.
struct SqlFeedback {
    rt: Arc<StorageRuntime>,
    db: Db,
}

impl FeedbackStore for SqlFeedback {
    fn store<'a>(
        &'a self,
        service: &'a str,
        items: &'a [FeedbackItem],
    ) -> BoxFuture<'a, Result<StoreOutcome, StorageError>> {
        let db = self.db.clone();
        let service = service.to_owned();
        let items = items.to_vec();
        let task = self.rt.run(async move {
            tokio::time::timeout(STORE_TIMEOUT, db.store_feedback(&service, &items))
                .await
                .unwrap_or_else(|_| Err(StorageError::Unavailable("timed out".into())))
        });
        Box::pin(async move { task.await? })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        let db = self.db.clone();
        let task = self.rt.run(async move { db.ping().await });
        Box::pin(async move { task.await.unwrap_or(false) })
    }

    fn all(&self) -> BoxFuture<'_, Result<Vec<StoredFeedback>, StorageError>> {
        let db = self.db.clone();
        let task = self.rt.run(async move { db.all_feedback().await });
        Box::pin(async move { task.await? })
    }
}

/// What [`open`] hands the server.
pub struct Opened {
    pub feedback: Arc<dyn FeedbackStore>,
    pub audit: Arc<dyn AuditSink>,
    pub backend: Backend,
}

/// Opens the configured storage for the service: connects, migrates, checks the patient-id
/// secret, and starts the audit writer. Blocks the calling thread until done (start-up).
pub fn open(options: &StorageOptions) -> Result<Opened, OpenError> {
    let backend = options.backend()?;
    let (hasher, source) = match (&options.patient_id_secret, &backend) {
        (Some(secret), _) => (PatientHasher::new(secret)?, SecretSource::Configured),
        (None, Backend::Memory) => (PatientHasher::ephemeral(), SecretSource::Ephemeral),
        (None, Backend::Sqlite(_)) => PatientHasher::from_key_file(&options.data_dir)?,
        (None, Backend::Postgres(_)) => {
            return Err(OpenError::Secret(
                "storage.patient_id_secret (JAKGUARD_STORAGE__PATIENT_ID_SECRET) is required with PostgreSQL: \
                 every replica must hash patient ids with the same secret"
                    .into(),
            ))
        }
    };
    match source {
        SecretSource::KeyFileCreated => tracing::warn!(
            path = %options.data_dir.join("patient-id.secret").display(),
            "storage: no storage.patient_id_secret configured; generated one and kept it in this file (back it up with the database)"
        ),
        SecretSource::KeyFileRead => tracing::info!(
            path = %options.data_dir.join("patient-id.secret").display(),
            "storage: patient ids hashed with the secret kept in this file"
        ),
        SecretSource::Configured | SecretSource::Ephemeral => {}
    }
    if backend == Backend::Memory {
        tracing::warn!(
            "storage: in memory; feedback and audit records are lost when the service stops"
        );
        let audit = Arc::new(MemoryAudit::default());
        return Ok(Opened {
            feedback: Arc::new(MemoryStore::with_audit(audit.clone())),
            audit,
            backend,
        });
    }
    let Database { rt, db } = connect(&backend, options)?;
    let checked = db.clone();
    let hasher = rt
        .block_on(async move { checked.check_secret(&hasher).await.map(|()| hasher) })
        .map_err(|e| OpenError::Io(e.to_string()))??;
    let queue = Arc::new(AuditQueue::new(options.audit_buffer.max(1)));
    rt.spawn(audit::writer(queue.clone(), db.clone()));
    tracing::info!(backend = %backend.describe(), "storage ready");
    Ok(Opened {
        feedback: Arc::new(SqlFeedback { rt: rt.clone(), db }),
        audit: Arc::new(SqlAudit::new(queue, hasher, rt)),
        backend,
    })
}

pub(crate) fn connect(backend: &Backend, options: &StorageOptions) -> Result<Database, OpenError> {
    let rt = Arc::new(StorageRuntime::start()?);
    let b = backend.clone();
    let max = options.max_connections;
    let db = rt
        .block_on(async move {
            let db = Db::connect(&b, max).await?;
            db.migrate().await?;
            Ok::<Db, OpenError>(db)
        })
        .map_err(|e| OpenError::Io(e.to_string()))??;
    Ok(Database { rt, db })
}

/// The database alone, for `jakguard report` and tests: no secret needed, no audit writer.
pub struct Database {
    pub(crate) rt: Arc<StorageRuntime>,
    pub(crate) db: Db,
}

/// Opens the configured database (migrating it, like the service would).
pub fn open_database(options: &StorageOptions) -> Result<Database, OpenError> {
    let backend = options.backend()?;
    if backend == Backend::Memory {
        return Err(OpenError::Config(
            "the memory store keeps nothing to read: configure storage.url or storage.data_dir"
                .into(),
        ));
    }
    if let Backend::Sqlite(path) = &backend {
        // A report must not create an empty database where the operator mistyped a path.
        if !Path::new(path).exists() {
            return Err(OpenError::Config(format!(
                "no database at {} (set --config or storage.data_dir)",
                path.display()
            )));
        }
    }
    connect(&backend, options)
}

impl Database {
    /// Cards issued, accepted and overridden per topic and molecule over `period`.
    pub fn report(&self, period: Period) -> Result<Report, StorageError> {
        let db = self.db.clone();
        self.rt.block_on(async move { db.report(period).await })?
    }

    /// Every feedback item, oldest first.
    pub fn feedback(&self) -> Result<Vec<StoredFeedback>, StorageError> {
        let db = self.db.clone();
        self.rt.block_on(async move { db.all_feedback().await })?
    }

    /// Every audit record, oldest first.
    pub fn audit_records(&self) -> Result<Vec<StoredAudit>, StorageError> {
        let db = self.db.clone();
        self.rt.block_on(async move { db.audit_records().await })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    /// The settings the durability and the writer's cost rest on, as every connection of the
    /// pool sees them: WAL, full synchronisation (a commit is on disk when it returns), and the
    /// WAL checkpointed every 10,000 pages.
    #[test]
    fn sqlite_connections_are_durable_and_checkpoint_every_ten_thousand_pages() {
        let dir = crate::testing::temp_dir("sqlite-pragmas");
        let backend = Backend::Sqlite(dir.join("jakguard.sqlite3"));
        block_on(async {
            let Db::Sqlite(pool) = Db::connect(&backend, 2).await.expect("a database") else {
                panic!("not SQLite");
            };
            for (pragma, expected) in [
                ("PRAGMA journal_mode", "wal"),
                ("PRAGMA synchronous", "2"),
                ("PRAGMA wal_autocheckpoint", "10000"),
            ] {
                let row = sqlx::query(pragma)
                    .fetch_one(&pool)
                    .await
                    .expect("a pragma");
                let got: String = match row.try_get::<String, _>(0) {
                    Ok(s) => s,
                    Err(_) => row.try_get::<i64, _>(0).expect("a number").to_string(),
                };
                assert_eq!(got, expected, "{pragma}");
            }
        });
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The databases a migration test runs on: a SQLite file, and a scratch PostgreSQL
    /// database when the test cluster is configured (see `crate::testing`).
    fn backends(test: &str) -> Vec<(&'static str, Backend)> {
        let dir = crate::testing::temp_dir(test);
        let mut out = vec![("sqlite", Backend::Sqlite(dir.join("jakguard.sqlite3")))];
        if let Some(base) = crate::testing::postgres_url(test) {
            out.push((
                "postgres",
                Backend::Postgres(crate::testing::scratch_postgres(&base)),
            ));
        }
        out
    }

    /// A database written by the first schema (a row per card) keeps every record, card and
    /// attribution through migration 0002 (the cards into their event's row): the records
    /// read back equal, the report counts the same, feedback about an old card is known.
    #[test]
    fn migrating_a_first_schema_database_keeps_every_record_and_attribution() {
        // Three evaluations of the first schema: e1 with two cards (one about no molecule),
        // e2 with none, e3 later showing e1's first card again (its latest record).
        const V1: [&str; 6] = [
            "INSERT INTO audit_event (id, at_ms, service, hook_instance, patient_hash, card_count) VALUES \
             ('e1', 1000, 'jakguard-order-sign', 'h1', 'p1', 2), \
             ('e2', 2000, 'jakguard-order-select', 'h2', 'p2', 0), \
             ('e3', 3000, 'jakguard-order-sign', 'h1', 'p1', 1)",
            "INSERT INTO audit_card (event_id, at_ms, uuid, topic, indicator, molecule, factors) VALUES \
             ('e1', 1000, 'c1', 'ansm-restriction', 'warning', 'tofacitinib', '[\"age-65-plus\",\"smoker\"]')",
            "INSERT INTO audit_card (event_id, at_ms, uuid, topic, indicator, molecule, factors) VALUES \
             ('e1', 1000, 'c2', 'blood-count', 'info', NULL, '[]')",
            "INSERT INTO audit_card (event_id, at_ms, uuid, topic, indicator, molecule, factors) VALUES \
             ('e3', 3000, 'c1', 'ansm-restriction', 'critical', 'tofacitinib', '[\"age-65-plus\"]')",
            "INSERT INTO feedback (received_ms, service, card_uuid, outcome, outcome_timestamp, \
             accepted_suggestions, reason_system, reason_code, reason_display, user_comment, card_known) VALUES \
             (4000, 'jakguard-order-sign', 'c1', 'overridden', 't1', '[]', 's', 'benefit', 'Benefit', NULL, TRUE), \
             (4000, 'jakguard-order-sign', 'c2', 'accepted', 't1', '[]', NULL, NULL, NULL, NULL, TRUE)",
            "INSERT INTO feedback (received_ms, service, card_uuid, outcome, outcome_timestamp, \
             accepted_suggestions, reason_system, reason_code, reason_display, user_comment, card_known) VALUES \
             (4000, 'jakguard-order-sign', 'never-issued', 'accepted', 't1', '[]', NULL, NULL, NULL, NULL, FALSE)",
        ];
        let card =
            |uuid: &str, topic: &str, indicator: &str, molecule: Option<&str>, factors: &[&str]| {
                AuditCard {
                    uuid: uuid.into(),
                    topic: topic.into(),
                    indicator: indicator.into(),
                    molecule: molecule.map(Into::into),
                    factors: factors.iter().map(|f| (*f).into()).collect(),
                }
            };
        for (name, backend) in backends("migration-0002") {
            block_on(async {
                let db = Db::connect(&backend, 2).await.expect("a database");
                db.migrate_through(1).await.expect("the first schema");
                on_db!(&db, pool => {
                    for sql in V1 {
                        sqlx::query(sql).execute(pool).await.expect("a first-schema row");
                    }
                });
                db.migrate().await.expect("migrated");
                db.migrate().await.expect("a second start migrates nothing");

                let records = db.audit_records().await.expect("readable");
                let got: Vec<(&str, i64, &str, &[AuditCard])> = records
                    .iter()
                    .map(|r| {
                        (
                            r.id.as_str(),
                            r.at_ms,
                            r.patient_hash.as_str(),
                            r.cards.as_slice(),
                        )
                    })
                    .collect();
                let e1 = [
                    card(
                        "c1",
                        "ansm-restriction",
                        "warning",
                        Some("tofacitinib"),
                        &["age-65-plus", "smoker"],
                    ),
                    card("c2", "blood-count", "info", None, &[]),
                ];
                let e3 = [card(
                    "c1",
                    "ansm-restriction",
                    "critical",
                    Some("tofacitinib"),
                    &["age-65-plus"],
                )];
                assert_eq!(
                    got,
                    [
                        ("e1", 1000, "p1", &e1[..]),
                        ("e2", 2000, "p2", &[][..]),
                        ("e3", 3000, "p1", &e3[..])
                    ],
                    "{name}"
                );

                let report = db.report(Period::default()).await.expect("a report");
                // (topic, molecule, [issued, shown, accepted, overridden])
                let rows: Vec<(&str, Option<&str>, [u64; 4])> = report
                    .cards
                    .iter()
                    .map(|c| {
                        let counts = [c.issued, c.shown, c.accepted, c.overridden];
                        (c.topic.as_str(), c.molecule.as_deref(), counts)
                    })
                    .collect();
                assert_eq!(
                    rows,
                    [
                        ("ansm-restriction", Some("tofacitinib"), [1, 2, 0, 1]),
                        ("blood-count", None, [1, 1, 1, 0])
                    ],
                    "{name}"
                );
                assert_eq!(report.unknown_cards.accepted, 1, "{name}");

                // Feedback arriving after the migration finds the old cards by uuid.
                let stored = db
                    .store_feedback(
                        "jakguard-order-sign",
                        &[crate::tests::item("c2"), crate::tests::item("gone")],
                    )
                    .await
                    .expect("stored");
                assert_eq!((stored.stored, stored.unknown_cards), (2, 1), "{name}");

                // The first schema's per-card table is kept, emptied, for the previous
                // release's pods during a rolling update.
                on_db!(&db, pool => {
                    let old = sqlx::query("SELECT uuid FROM audit_card").fetch_all(pool).await;
                    assert_eq!(old.map(|r| r.len()).ok(), Some(0), "{name}: audit_card");
                });
            });
        }
    }

    /// During a rolling update the previous release's pods write a row per card into
    /// `audit_card` and flag feedback about this release's cards as unknown; this release's
    /// writer moves their cards into their events and clears the flags: nothing they recorded
    /// is lost or misattributed.
    #[test]
    fn cards_written_by_the_previous_release_after_the_migration_are_moved_into_their_event() {
        // What the previous release's statements write (bulk.rs and store_feedback of the
        // first schema): an event without the cards column, its cards as rows; feedback
        // flagged by a lookup in audit_card.
        const PREVIOUS: [&str; 4] = [
            "INSERT INTO audit_event (id, at_ms, service, hook_instance, patient_hash, card_count) VALUES \
             ('old-1', 5000, 'jakguard-order-sign', 'h9', 'p9', 2)",
            "INSERT INTO audit_card (event_id, at_ms, uuid, topic, indicator, molecule, factors) VALUES \
             ('old-1', 5000, 'k1', 'ansm-restriction', 'warning', 'upadacitinib', '[\"smoker\"]'), \
             ('old-1', 5000, 'k2', 'vte', 'warning', NULL, '[]')",
            "INSERT INTO feedback (received_ms, service, card_uuid, outcome, outcome_timestamp, \
             accepted_suggestions, reason_system, reason_code, reason_display, user_comment, card_known) VALUES \
             (6000, 'jakguard-order-sign', 'k2', 'accepted', 't1', '[]', NULL, NULL, NULL, NULL, \
              EXISTS (SELECT 1 FROM audit_card WHERE uuid = 'k2'))",
            "INSERT INTO feedback (received_ms, service, card_uuid, outcome, outcome_timestamp, \
             accepted_suggestions, reason_system, reason_code, reason_display, user_comment, card_known) VALUES \
             (6000, 'jakguard-order-sign', 'new-1', 'accepted', 't1', '[]', NULL, NULL, NULL, NULL, \
              EXISTS (SELECT 1 FROM audit_card WHERE uuid = 'new-1'))",
        ];
        for (name, backend) in backends("migration-0002-rolling") {
            block_on(async {
                let db = Db::connect(&backend, 2).await.expect("a database");
                db.migrate().await.expect("migrated");
                // A card of this release first, then the previous release's writes.
                let ours = audit::PendingAudit {
                    id: "new-event".into(),
                    at_ms: 4000,
                    service: "jakguard-order-sign".into(),
                    hook_instance: "h8".into(),
                    patient_hash: "p8".into(),
                    cards: vec![AuditCard {
                        uuid: "new-1".into(),
                        topic: "ansm-restriction".into(),
                        indicator: "warning".into(),
                        molecule: Some("tofacitinib".into()),
                        factors: vec![],
                    }],
                    queued: std::time::Instant::now(),
                };
                db.insert_audit(&[ours]).await.expect("written");
                on_db!(&db, pool => {
                    for sql in PREVIOUS {
                        sqlx::query(sql).execute(pool).await.expect("a previous-release row");
                    }
                });
                let mut conn = db.audit_connection().await.expect("a connection");
                assert_eq!(conn.fold_legacy_cards().await.expect("moved"), 2, "{name}");
                assert_eq!(
                    conn.fold_legacy_cards().await.expect("nothing left"),
                    0,
                    "{name}"
                );

                let records = db.audit_records().await.expect("readable");
                let old = records
                    .iter()
                    .find(|r| r.id == "old-1")
                    .expect("the old event");
                let uuids: Vec<&str> = old.cards.iter().map(|c| c.uuid.as_str()).collect();
                assert_eq!(uuids, ["k1", "k2"], "{name}");
                assert_eq!(old.cards[0].factors, ["smoker"], "{name}");
                assert_eq!(old.cards[1].molecule, None, "{name}");
                let feedback = db.all_feedback().await.expect("readable");
                assert!(
                    feedback.iter().all(|f| f.card_known),
                    "{name}: {feedback:?}"
                );
                let report = db.report(Period::default()).await.expect("a report");
                let vte = report.cards.iter().find(|c| c.topic == "vte").expect("vte");
                assert_eq!((vte.issued, vte.accepted), (1, 1), "{name}");
                assert_eq!(report.unknown_cards.accepted, 0, "{name}");
            });
        }
    }

    /// Start-up keeps trying: a database (or a disk) slow to answer the first attempts is
    /// waited for, and only an attempt still failing at the deadline stops the service.
    #[test]
    fn start_up_retries_the_connection_until_its_patience_runs_out() {
        let pause = Duration::from_millis(10);
        let mut calls = 0;
        let any = |_: &sqlx::Error| true;
        let got = block_on(retry_for(Duration::from_secs(5), pause, any, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(sqlx::Error::PoolTimedOut)
                } else {
                    Ok(n)
                }
            }
        }));
        assert_eq!(got.ok(), Some(3));

        let started = std::time::Instant::now();
        let got: Result<(), _> = block_on(retry_for(
            Duration::from_millis(100),
            pause,
            any,
            || async { Err(sqlx::Error::PoolTimedOut) },
        ));
        assert!(matches!(got, Err(sqlx::Error::PoolTimedOut)));
        assert!(started.elapsed() >= Duration::from_millis(100));

        // An error that is not worth retrying stops at the first attempt.
        let mut calls = 0;
        let timeouts_only = |e: &sqlx::Error| matches!(e, sqlx::Error::PoolTimedOut);
        let got: Result<(), _> = block_on(retry_for(
            Duration::from_secs(5),
            pause,
            timeouts_only,
            || {
                calls += 1;
                async { Err(sqlx::Error::PoolClosed) }
            },
        ));
        assert!(matches!(got, Err(sqlx::Error::PoolClosed)));
        assert_eq!(calls, 1);
    }
}
