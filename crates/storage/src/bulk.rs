//! The audit trail's bulk writes: one transaction per batch, a few multi-row statements each.
//!
//! Multi-row statements rather than one per row: with SQLite every statement is a round trip
//! to the driver's worker thread, with PostgreSQL one to the server. Their row counts are
//! taken from a fixed set ([`ROWS`], powers of two), a batch being split greedily into the
//! largest that fit (275 rows: 256 + 16 + 2 + 1): so each statement's text is one of a dozen,
//! prepared once per connection and then found in its statement cache, instead of being parsed
//! again for every batch (a tenth of the SQLite thread's CPU when the text followed the batch's
//! size). A split costs at most one statement per size but the largest: no more than ten for
//! a full batch of events, against one when the text followed the size (each statement costs
//! a round trip, and SQLite journals the pages it touches for itself, so fewer is better).
//!
//! On SQLite the rest after whole statements of the largest size goes in one statement of the
//! next size up, padded with rows of NULLs that `INSERT ... SELECT * FROM (VALUES ...) WHERE
//! column1 IS NOT NULL` leaves out (NULL never matches in the `IN` list of the feedback update):
//! one statement per kind for a usual batch. Each statement costs SQLite more than its rows:
//! inside a transaction it keeps a statement journal, a copy of each page the statement changes
//! first, and a batch split in many statements copied the same hot index pages again and
//! again. PostgreSQL keeps the exact split (its parameters are typed; NULL padding would need
//! casts), whose cost there is a round trip per statement.
//!
//! Idempotence without `RETURNING`: an event already stored (a batch retried after a commit
//! whose answer was lost) must not get its cards twice. The events are inserted with `ON
//! CONFLICT (id) DO NOTHING` and the rows it reports written are counted; when they are all
//! there (every batch but such a retry) the cards follow. When one is missing the transaction
//! is rolled back and the batch written again without the events already stored, looked up
//! first. `RETURNING id` on every batch made SQLite materialise and hand back one row per
//! event, and the writer collect them in a set, to serve that rare retry.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::sync::OnceLock;

use jakguard_cds::AuditCard;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Connection, Postgres, Row, Sqlite};

use crate::audit::PendingAudit;
use crate::cards;

/// Row counts of the multi-row statements, largest first. The largest event statement binds
/// 1,024 × 7 parameters, well under [`crate::sql::MAX_BINDS`].
const ROWS: [usize; 11] = [1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1];
const EVENT_COLUMNS: usize = 7;
/// `audit_card_event`: a card's uuid, its event's time and id.
const CARD_COLUMNS: usize = 3;
/// Rows of the previous release's `audit_card` moved per transaction (see
/// [`Conn::fold_legacy_cards`]).
const FOLD_ROWS: i64 = 10_000;

/// One pooled connection of either backend, kept by the audit writer between batches.
pub(crate) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// Runs the same block against whichever connection `$conn` holds, bound to `$c`.
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Postgres($c) => $body,
        }
    };
}

/// The sizes, taken from [`ROWS`], that `n` rows are written in when a statement may hold at
/// most `max_rows` (at least one).
pub(crate) fn split(n: usize, max_rows: usize) -> Vec<usize> {
    let mut left = n;
    let mut out = Vec::new();
    for &size in ROWS.iter().filter(|&&s| s <= max_rows.max(1)) {
        while left >= size {
            out.push(size);
            left -= size;
        }
    }
    out
}

/// How a statement names its parameters.
#[derive(Clone, Copy)]
enum Placeholders {
    /// `?`, SQLite's positional parameters. Not `$N`, which SQLite accepts too: the driver
    /// asks SQLite each parameter's name to bind it, and SQLite finds the name of parameter
    /// N by a linear scan, so binding a statement of n `$N` parameters costs O(n²) (with
    /// thousands, more than the whole insert).
    Question,
    /// `$1`, `$2`, ...: PostgreSQL's.
    Numbered,
}

/// A comma-separated list of `count` parameters, the first numbered `first`.
fn params(sql: &mut String, style: Placeholders, first: usize, count: usize) {
    for i in first..first + count {
        if i > first {
            sql.push_str(", ");
        }
        match style {
            Placeholders::Question => sql.push('?'),
            Placeholders::Numbered => {
                sql.push('$');
                sql.push_str(&i.to_string());
            }
        }
    }
}

/// Padded split: whole statements of the largest size, then the rest in one statement of the
/// next size up, filled with NULL rows; as (statement rows, real rows).
pub(crate) fn padded(n: usize, max_rows: usize) -> Vec<(usize, usize)> {
    let largest = ROWS
        .iter()
        .copied()
        .find(|&s| s <= max_rows.max(1))
        .unwrap_or(1);
    let mut out = vec![(largest, largest); n / largest];
    let rest = n % largest;
    if rest > 0 {
        let size = ROWS
            .iter()
            .rev()
            .copied()
            .find(|&s| s >= rest)
            .unwrap_or(largest);
        out.push((size, rest));
    }
    out
}

/// `prefix` followed by `rows` groups of `columns` placeholders, then `suffix`.
fn values(style: Placeholders, prefix: &str, rows: usize, columns: usize, suffix: &str) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * columns * 7 + suffix.len());
    sql.push_str(prefix);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        params(&mut sql, style, r * columns + 1, columns);
        sql.push(')');
    }
    sql.push_str(suffix);
    sql
}

/// The statement texts of one backend, one per size of [`ROWS`].
struct Texts {
    events: Vec<String>,
    cards: Vec<String>,
    known: Vec<String>,
}

impl Texts {
    fn new(style: Placeholders) -> Texts {
        let each = |f: &dyn Fn(usize) -> String| ROWS.iter().map(|&n| f(n)).collect();
        let (open, close) = match style {
            Placeholders::Question => ("SELECT * FROM (VALUES ", ") WHERE column1 IS NOT NULL"),
            Placeholders::Numbered => ("VALUES ", ""),
        };
        Texts {
            events: each(&|n| {
                values(
                    style,
                    &format!("INSERT INTO audit_event (id, at_ms, service, hook_instance, patient_hash, card_count, cards) {open}"),
                    n,
                    EVENT_COLUMNS,
                    &format!("{close} ON CONFLICT (id) DO NOTHING"),
                )
            }),
            cards: each(&|n| {
                values(
                    style,
                    &format!("INSERT INTO audit_card_event (uuid, at_ms, event_id) {open}"),
                    n,
                    CARD_COLUMNS,
                    // A card listed twice in one answer (never seen, but not the writer's
                    // to refuse) is one row.
                    &format!("{close} ON CONFLICT DO NOTHING"),
                )
            }),
            known: each(&|n| {
                let mut sql = String::from(
                    "UPDATE feedback SET card_known = TRUE WHERE NOT card_known AND card_uuid IN (",
                );
                params(&mut sql, style, 1, n);
                sql.push(')');
                sql
            }),
        }
    }

    /// Made once per process: fixed texts, so `&'static str` for the statement cache.
    fn of(conn: &Conn) -> &'static Texts {
        static SQLITE: OnceLock<Texts> = OnceLock::new();
        static POSTGRES: OnceLock<Texts> = OnceLock::new();
        match conn {
            Conn::Sqlite(_) => SQLITE.get_or_init(|| Texts::new(Placeholders::Question)),
            Conn::Postgres(_) => POSTGRES.get_or_init(|| Texts::new(Placeholders::Numbered)),
        }
    }
}

/// The text of `kind` for `rows` rows (one of [`ROWS`]).
fn text(kind: &[String], rows: usize) -> &str {
    let i = ROWS
        .iter()
        .position(|&n| n == rows)
        .unwrap_or(ROWS.len() - 1);
    kind[i].as_str()
}

impl Conn {
    /// Writes `batch` in one transaction; events already stored are skipped with their cards.
    /// Feedback that arrived before its card's audit record stops being flagged as unknown.
    pub(crate) async fn insert_audit<A: Borrow<PendingAudit> + Sync>(
        &mut self,
        batch: &[A],
        max_binds: usize,
    ) -> Result<(), sqlx::Error> {
        if batch.is_empty() || self.write(batch, max_binds).await? {
            return Ok(());
        }
        // A retry of a batch that (partly) committed: write only what is not there yet.
        let stored = self.stored_events(batch, max_binds).await?;
        let fresh: Vec<&PendingAudit> = batch
            .iter()
            .map(Borrow::borrow)
            .filter(|a| !stored.contains(&a.id))
            .collect();
        if fresh.is_empty() || self.write(&fresh, max_binds).await? {
            return Ok(());
        }
        Err(sqlx::Error::Protocol(
            "audit events appeared while their batch was being written".into(),
        ))
    }

    /// One attempt: `false` (and nothing written) when an event of `batch` is already stored.
    async fn write<A: Borrow<PendingAudit> + Sync>(
        &mut self,
        batch: &[A],
        max_binds: usize,
    ) -> Result<bool, sqlx::Error> {
        let t = Texts::of(self);
        let pad = matches!(self, Conn::Sqlite(_));
        let plan = move |n: usize, max: usize| -> Vec<(usize, usize)> {
            if pad {
                padded(n, max)
            } else {
                split(n, max).into_iter().map(|r| (r, r)).collect()
            }
        };
        on_conn!(self, c => {
            let mut tx = Connection::begin(&mut **c).await?;
            let mut rest = batch;
            for (size, rows) in plan(batch.len(), max_binds / EVENT_COLUMNS) {
                let (chunk, tail) = rest.split_at(rows);
                rest = tail;
                let mut q = sqlx::query(text(&t.events, size));
                for a in chunk {
                    let a = a.borrow();
                    q = q
                        .bind(a.id.as_str())
                        .bind(a.at_ms)
                        .bind(a.service.as_str())
                        .bind(a.hook_instance.as_str())
                        .bind(a.patient_hash.as_str())
                        .bind(a.cards.len() as i64)
                        .bind(cards::to_json(&a.cards));
                }
                for _ in rows..size {
                    q = q.bind(None::<&str>).bind(None::<i64>).bind(None::<&str>)
                        .bind(None::<&str>).bind(None::<&str>).bind(None::<i64>)
                        .bind(None::<&str>);
                }
                if q.execute(&mut *tx).await?.rows_affected() != rows as u64 {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
            let cards: Vec<(&PendingAudit, &AuditCard)> = batch
                .iter()
                .map(Borrow::borrow)
                .flat_map(|a| a.cards.iter().map(move |c| (a, c)))
                .collect();
            let mut rest = cards.as_slice();
            for (size, rows) in plan(cards.len(), max_binds / CARD_COLUMNS) {
                let (chunk, tail) = rest.split_at(rows);
                rest = tail;
                let mut q = sqlx::query(text(&t.cards, size));
                for (a, c) in chunk {
                    q = q.bind(c.uuid.as_str()).bind(a.at_ms).bind(a.id.as_str());
                }
                for _ in rows..size {
                    q = q.bind(None::<&str>).bind(None::<i64>).bind(None::<&str>);
                }
                q.execute(&mut *tx).await?;
            }
            let mut uuids: Vec<&str> = cards.iter().map(|(_, c)| c.uuid.as_str()).collect();
            uuids.sort_unstable();
            uuids.dedup();
            let mut rest = uuids.as_slice();
            for (size, rows) in plan(uuids.len(), max_binds) {
                let (chunk, tail) = rest.split_at(rows);
                rest = tail;
                let mut q = sqlx::query(text(&t.known, size));
                for uuid in chunk {
                    q = q.bind(*uuid);
                }
                for _ in rows..size {
                    q = q.bind(None::<&str>);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Moves the cards that a binary of the previous release wrote into `audit_card` (a row per
    /// card, the first schema's shape) into their event's `cards` and `audit_card_event`, and
    /// returns how many it moved. Migration 0002 keeps that table, empty, so that the pods of
    /// the previous release keep their audit trail during a rolling update; the writer calls
    /// this after each batch: one probe of an empty table when there is nothing to move. Each
    /// call moves up to [`FOLD_ROWS`] rows in one transaction (the rows are deleted in it), so
    /// a crash moves them all or none.
    pub(crate) async fn fold_legacy_cards(&mut self) -> Result<usize, sqlx::Error> {
        on_conn!(self, c => {
            let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_card)")
                .fetch_one(&mut **c)
                .await?;
            if !any {
                return Ok(0);
            }
            let mut tx = Connection::begin(&mut **c).await?;
            let rows = sqlx::query(
                "SELECT id, event_id, at_ms, uuid, topic, indicator, molecule, factors \
                 FROM audit_card ORDER BY id LIMIT $1",
            )
            .bind(FOLD_ROWS)
            .fetch_all(&mut *tx)
            .await?;
            // Per event, in the order the cards were written.
            let mut events: Vec<(String, i64, Vec<AuditCard>)> = Vec::new();
            let mut index: std::collections::HashMap<String, usize> = Default::default();
            let mut last_id = i64::MIN;
            for r in &rows {
                last_id = last_id.max(r.try_get(0)?);
                let event: String = r.try_get(1)?;
                let factors: String = r.try_get(7)?;
                let card = AuditCard {
                    uuid: r.try_get(3)?,
                    topic: r.try_get(4)?,
                    indicator: r.try_get(5)?,
                    molecule: r.try_get(6)?,
                    // As the previous release wrote them (serde_json); unreadable: none.
                    factors: serde_json::from_str(&factors).unwrap_or_default(),
                };
                match index.get(&event) {
                    Some(&i) => events[i].2.push(card),
                    None => {
                        index.insert(event.clone(), events.len());
                        events.push((event, r.try_get(2)?, vec![card]));
                    }
                }
            }
            for (event, at_ms, legacy) in &events {
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT cards FROM audit_event WHERE id = $1")
                        .bind(event.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                // The previous release's events have the column's default, `[]`.
                let mut all = match stored.as_deref().map(cards::from_json) {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        return Err(sqlx::Error::Protocol(format!(
                            "audit event {event}: its cards cannot be read: {e}"
                        )))
                    }
                    None => vec![],
                };
                all.extend(legacy.iter().cloned());
                sqlx::query("UPDATE audit_event SET cards = $1 WHERE id = $2")
                    .bind(cards::to_json(&all))
                    .bind(event.as_str())
                    .execute(&mut *tx)
                    .await?;
                for card in legacy {
                    sqlx::query(
                        "INSERT INTO audit_card_event (uuid, at_ms, event_id) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(card.uuid.as_str())
                    .bind(*at_ms)
                    .bind(event.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
            }
            // Feedback that came before the cards moved, and feedback the previous release's
            // pods flagged unknown because they looked for this release's cards in audit_card:
            // while they write there, they may do so. (The report finds a feedback's card by
            // uuid and never reads the flag.)
            sqlx::query(
                "UPDATE feedback SET card_known = TRUE WHERE NOT card_known \
                 AND EXISTS (SELECT 1 FROM audit_card_event i WHERE i.uuid = feedback.card_uuid)",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM audit_card WHERE id <= $1")
                .bind(last_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(rows.len())
        })
    }

    /// The ids of `batch`'s events already stored (only after a retry: texts vary, so they
    /// are not kept in the statement cache).
    async fn stored_events<A: Borrow<PendingAudit> + Sync>(
        &mut self,
        batch: &[A],
        max_binds: usize,
    ) -> Result<HashSet<String>, sqlx::Error> {
        let mut stored = HashSet::new();
        let style = match self {
            Conn::Sqlite(_) => Placeholders::Question,
            Conn::Postgres(_) => Placeholders::Numbered,
        };
        on_conn!(self, c => {
            for chunk in batch.chunks(max_binds.max(1)) {
                let mut sql = String::from("SELECT id FROM audit_event WHERE id IN (");
                params(&mut sql, style, 1, chunk.len());
                sql.push(')');
                let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
                for a in chunk {
                    q = q.bind(a.borrow().id.as_str());
                }
                for row in q.fetch_all(&mut **c).await? {
                    stored.insert(row.try_get::<String, _>(0)?);
                }
            }
        });
        Ok(stored)
    }

    /// Makes sure this connection is closed rather than handed back to the pool when it is
    /// dropped (after an error, whatever state it was left in).
    pub(crate) fn discard(mut self) {
        on_conn!(&mut self, c => c.close_on_drop());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_count_is_split_into_fixed_sizes_that_add_up() {
        for max_rows in [1, 2, 5, 16, 100, 5461, 32_766] {
            for n in 0..3000 {
                let sizes = split(n, max_rows);
                assert_eq!(
                    sizes.iter().sum::<usize>(),
                    n,
                    "{n} rows, at most {max_rows}"
                );
                assert!(sizes.iter().all(|s| ROWS.contains(s) && *s <= max_rows));
                // Greedy: one statement per size at most, but for the largest allowed.
                let largest = ROWS.iter().find(|&&s| s <= max_rows).copied().unwrap_or(1);
                for size in ROWS.into_iter().filter(|&s| s < largest) {
                    assert!(
                        sizes.iter().filter(|&&s| s == size).count() <= 1,
                        "{n}: {sizes:?}"
                    );
                }
            }
        }
        assert_eq!(split(275, 5461), [256, 16, 2, 1]);
        assert_eq!(split(3000, 5461), [1024, 1024, 512, 256, 128, 32, 16, 8]);
        assert_eq!(split(5, 2), [2, 2, 1]);
    }

    #[test]
    fn a_padded_split_uses_one_statement_for_the_rest() {
        assert_eq!(padded(275, 5461), [(512, 275)]);
        assert_eq!(
            padded(3000, 5461),
            [(1024, 1024), (1024, 1024), (1024, 952)]
        );
        assert_eq!(padded(5, 2), [(2, 2), (2, 2), (1, 1)]);
        assert_eq!(padded(0, 100), []);
        for max_rows in [1, 2, 13, 5461] {
            for n in 0..2100 {
                let plan = padded(n, max_rows);
                assert_eq!(plan.iter().map(|p| p.1).sum::<usize>(), n);
                assert!(plan.iter().all(|&(size, rows)| ROWS.contains(&size)
                    && size <= max_rows.max(1)
                    && rows <= size));
            }
        }
    }

    #[test]
    fn statement_texts_number_every_placeholder() {
        let t = Texts::new(Placeholders::Numbered);
        assert!(text(&t.events, 4)
            .ends_with("($22, $23, $24, $25, $26, $27, $28) ON CONFLICT (id) DO NOTHING"));
        assert!(text(&t.cards, 1).ends_with("VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"));
        assert!(text(&t.known, 4).ends_with("IN ($1, $2, $3, $4)"));
        let t = Texts::new(Placeholders::Question);
        assert!(text(&t.events, 4).ends_with(
            "(?, ?, ?, ?, ?, ?, ?)) WHERE column1 IS NOT NULL ON CONFLICT (id) DO NOTHING"
        ));
        assert_eq!(text(&t.cards, 16).matches('?').count(), 16 * CARD_COLUMNS);
        assert!(text(&t.known, 4).ends_with("IN (?, ?, ?, ?)"));
    }
}
