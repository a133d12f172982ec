//! The audit trail's write path: a bounded in-memory queue in front of the database.
//!
//! `record` hashes the patient id, stamps the time and queues the record, never waiting on
//! the database: an evaluation answers in time whatever the database does. One writer task on
//! the storage runtime takes batches from the front of the queue and removes them only once
//! they are committed; while the database is down it keeps them and retries with backoff, so
//! an outage costs nothing as long as the buffer holds. What cannot be kept is counted in
//! `dropped` and logged: a full buffer (newest records refused, since the oldest are already
//! waiting in order), and records still pending when the service stops with its database
//! unreachable.
//!
//! Group commit: the writer lets records accumulate for up to [`LINGER`] after the oldest
//! one was queued (or until a full batch is there) before it writes them in one transaction
//! of a few multi-row statements, so that thousands of evaluations per second cost tens of
//! transactions (and fsyncs) per second. A stopping service does not wait for the linger: it
//! writes what is queued at once. A SIGKILL (or a power cut) loses what is queued at that
//! instant, which with the database up is at most the last [`LINGER`] (50 ms) of evaluations
//! plus those of the one transaction in flight (a few milliseconds), more only while the
//! database is down or slow and the backlog grows. Feedback, which the EHR was told is
//! stored, is never in this queue: it is committed before it is acknowledged.
//!
//! Wake-ups: `push` notifies the writer only when the queue goes from empty to non-empty and
//! when it reaches a full batch; every other push would only wake a writer that is already
//! busy. No wake-up is lost: `Notify` keeps one permit when nobody waits, so a notification
//! sent between the writer's look at the queue and its wait ends that wait at once, and the
//! writer decides from the queue itself (records stay in it until committed), never from the
//! notification. A spurious or stale wake-up only makes it look again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use jakguard_cds::{AuditCard, AuditRecord};
use tokio::sync::Notify;

use crate::bulk::Conn;
use crate::patient::PatientHasher;
use crate::runtime::{on_storage_thread, StorageRuntime};
use crate::sql::{Db, MAX_BINDS};
use crate::{AuditSink, AuditStats};

/// At most this many records per transaction; a full batch is written without waiting for
/// the linger. 512 records (each with a few cards) is a handful of multi-row statements of
/// a few thousand bound parameters, written in milliseconds, and drains a backlog of the
/// default 100,000 records in about two hundred transactions.
const BATCH: usize = 512;
/// How long the oldest queued record may wait for others before a transaction starts. At the
/// service's rates (thousands of evaluations per second) 50 ms gathers hundreds of records per
/// transaction: up to BATCH × 20 ≈ 10,000 records/s that is at most about 20 commits (fsyncs)
/// per second, above it rate / BATCH. A longer wait would save little more and widen what a
/// SIGKILL can lose; a shorter one would multiply the commits again. The latency it adds is
/// invisible: nobody waits for an audit record.
const LINGER: Duration = Duration::from_millis(50);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// While the database stays down, the warning is repeated this often with the backlog.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How long a stopping service waits for the backlog to be written.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// An audit record ready to be written: patient id already hashed.
#[derive(Debug, Clone)]
pub(crate) struct PendingAudit {
    pub id: String,
    pub at_ms: i64,
    pub service: String,
    pub hook_instance: String,
    pub patient_hash: String,
    pub cards: Vec<AuditCard>,
    /// When it entered the queue, which starts its linger.
    pub queued: Instant,
}

pub(crate) struct AuditQueue {
    /// Shared, so that the writer takes a batch without copying its strings (it leaves the
    /// records in the queue until they are committed).
    pending: Mutex<VecDeque<Arc<PendingAudit>>>,
    notify: Notify,
    capacity: usize,
    /// Queued records that make a batch worth writing at once: BATCH, or the whole buffer
    /// when it is smaller (lingering with a full buffer would drop records for nothing).
    full_batch: usize,
    /// [`LINGER`], except in tests.
    linger: Duration,
    written: AtomicU64,
    dropped: AtomicU64,
    closing: AtomicBool,
    drained: (Mutex<bool>, Condvar),
}

impl AuditQueue {
    pub(crate) fn new(capacity: usize) -> AuditQueue {
        AuditQueue {
            pending: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            capacity,
            full_batch: BATCH.min(capacity).max(1),
            linger: LINGER,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            drained: (Mutex::new(false), Condvar::new()),
        }
    }

    fn push(&self, record: PendingAudit) {
        // The length after this push, taken under the lock: each push moves it by one, so
        // it passes through 1 and through `full_batch` exactly when those wake-ups are due.
        let queued = match self.pending.lock() {
            Ok(mut q) if q.len() < self.capacity => {
                q.push_back(Arc::new(record));
                Some(q.len())
            }
            _ => None,
        };
        if let Some(len) = queued {
            // Empty to non-empty: the writer may be waiting for work. A full batch: it may
            // be lingering. Otherwise it is already awake (lingering for less, or writing,
            // and it looks at the queue again after each commit).
            if len == 1 || len == self.full_batch {
                self.notify.notify_one();
            }
            return;
        }
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // The first drop, then one line per thousand: loud, without flooding the log.
        if dropped == 1 || dropped.is_multiple_of(1000) {
            tracing::error!(
                dropped,
                capacity = self.capacity,
                "audit trail: buffer full while the database is unreachable; audit records dropped"
            );
        }
    }

    fn len(&self) -> usize {
        self.pending.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// The first records, left in the queue until [`AuditQueue::commit`].
    fn peek(&self, n: usize) -> Vec<Arc<PendingAudit>> {
        self.pending
            .lock()
            .map(|q| q.iter().take(n).cloned().collect())
            .unwrap_or_default()
    }

    fn commit(&self, n: usize) {
        if let Ok(mut q) = self.pending.lock() {
            let n = n.min(q.len());
            q.drain(..n);
        }
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn signal_drained(&self) {
        let (lock, cvar) = &self.drained;
        if let Ok(mut done) = lock.lock() {
            *done = true;
            cvar.notify_all();
        }
    }

    /// Waits until the writer has emptied the queue and stopped, at most `limit`.
    fn wait_drained(&self, limit: Duration) -> bool {
        let (lock, cvar) = &self.drained;
        let Ok(guard) = lock.lock() else { return false };
        cvar.wait_timeout_while(guard, limit, |done| !*done)
            .map(|(done, _)| *done)
            .unwrap_or(false)
    }

    /// When the oldest queued record was queued, if any.
    fn oldest(&self) -> Option<Instant> {
        self.pending
            .lock()
            .ok()
            .and_then(|q| q.front().map(|r| r.queued))
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Marks the queue closing and wakes the writer, which then writes without lingering.
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    #[cfg(test)]
    fn with_linger(mut self, linger: Duration) -> AuditQueue {
        self.linger = linger;
        self
    }

    /// Waits, at most until `oldest + LINGER`, for a full batch or the queue closing; returns
    /// at once in either case.
    async fn linger(&self, oldest: Instant) {
        let deadline = tokio::time::Instant::from_std(oldest + self.linger);
        // Every pass looks at the queue before waiting: a notification sent since the last
        // look is kept as Notify's permit and ends the wait at once.
        while !self.closing() && self.len() < self.full_batch {
            if tokio::time::timeout_at(deadline, self.notify.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    fn stats(&self) -> AuditStats {
        AuditStats {
            pending: self.len() as u64,
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Writes the queue to the database until the sink is dropped and the queue is empty.
/// Moves what pods of the previous release wrote in the first schema's shape (see
/// [`Conn::fold_legacy_cards`]): all of it, a transaction at a time. A failure is logged and
/// left for the next batch; it never holds up this release's own records. `false` when the
/// connection should be discarded (whatever state a failure left it in).
async fn fold_legacy(conn: &mut Conn) -> bool {
    loop {
        match tokio::time::timeout(WRITE_TIMEOUT, conn.fold_legacy_cards()).await {
            Ok(Ok(0)) => return true,
            Ok(Ok(moved)) => {
                tracing::info!(
                    moved,
                    "audit trail: cards of the previous release's shape moved"
                )
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit trail: cards of the previous release's shape not moved yet");
                return false;
            }
            Err(_) => {
                tracing::warn!(
                    "audit trail: moving cards of the previous release's shape timed out"
                );
                return false;
            }
        }
    }
}

pub(crate) async fn writer(queue: Arc<AuditQueue>, db: Db) {
    let mut backoff = MIN_BACKOFF;
    let mut failing_since: Option<Instant> = None;
    let mut last_warning = Instant::now();
    // Kept from one batch to the next (see `Db::audit_connection`); dropped after a failure.
    let mut conn: Option<Conn> = None;
    // Rows the previous release's pods wrote since the migration, before any batch of ours.
    if let Ok(Ok(mut c)) = tokio::time::timeout(WRITE_TIMEOUT, db.audit_connection()).await {
        if fold_legacy(&mut c).await {
            conn = Some(c);
        } else {
            c.discard();
        }
    }
    loop {
        let Some(oldest) = queue.oldest() else {
            if queue.closing() {
                queue.signal_drained();
                return;
            }
            // Looked empty: the push that makes it non-empty notifies, and if it came in
            // since the look, its permit ends this wait at once.
            queue.notify.notified().await;
            continue;
        };
        // Group commit: gather more records, unless a batch is full or the service stops.
        // After a failure the oldest record is long past its linger: the retry is not delayed
        // beyond the backoff.
        queue.linger(oldest).await;
        let batch = queue.peek(BATCH);
        if batch.is_empty() {
            continue;
        }
        let attempt = async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(db.audit_connection().await?),
            };
            c.insert_audit(&batch, MAX_BINDS).await
        };
        let result = match tokio::time::timeout(WRITE_TIMEOUT, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        if result.is_err() {
            // Whatever state it was left in (a transaction cut by the timeout, a broken
            // socket), the next attempt starts from a fresh connection.
            if let Some(c) = conn.take() {
                c.discard();
            }
        }
        match result {
            Ok(()) => {
                queue.commit(batch.len());
                if let Some(c) = &mut conn {
                    if !fold_legacy(c).await {
                        if let Some(c) = conn.take() {
                            c.discard();
                        }
                    }
                }
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        outage_s = since.elapsed().as_secs(),
                        pending = queue.len(),
                        "audit trail: database reachable again; writing the backlog"
                    );
                }
                backoff = MIN_BACKOFF;
            }
            Err(error) => {
                let pending = queue.len();
                if failing_since.is_none() || last_warning.elapsed() >= WARN_EVERY {
                    tracing::warn!(%error, pending, "audit trail: records not written; kept in memory and retried");
                    last_warning = Instant::now();
                }
                failing_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The audit sink over SQL: hashes, queues, and lets [`writer`] do the rest.
pub(crate) struct SqlAudit {
    queue: Arc<AuditQueue>,
    hasher: PatientHasher,
    // Keeps the storage runtime (and so the writer) alive as long as records can arrive.
    _rt: Arc<StorageRuntime>,
}

impl SqlAudit {
    pub(crate) fn new(
        queue: Arc<AuditQueue>,
        hasher: PatientHasher,
        rt: Arc<StorageRuntime>,
    ) -> SqlAudit {
        SqlAudit {
            queue,
            hasher,
            _rt: rt,
        }
    }
}

impl AuditSink for SqlAudit {
    fn record(&self, audit: AuditRecord) {
        self.queue.push(PendingAudit {
            // Time-ordered (UUIDv7): each new id lands at the end of the primary-key index,
            // so a batch rewrites a few index pages instead of one random page per record.
            id: uuid::Uuid::now_v7().to_string(),
            at_ms: crate::now_ms(),
            patient_hash: self.hasher.hash(&audit.patient_id),
            service: audit.service,
            hook_instance: audit.hook_instance,
            cards: audit.cards,
            queued: Instant::now(),
        });
    }

    fn stats(&self) -> AuditStats {
        self.queue.stats()
    }
}

impl Drop for SqlAudit {
    /// At shutdown: gives the writer a few seconds to empty the queue, and says what is lost.
    fn drop(&mut self) {
        self.queue.close();
        let flushed = !on_storage_thread() && self.queue.wait_drained(FLUSH_AT_SHUTDOWN);
        let lost = self.queue.len();
        if !flushed && lost > 0 {
            self.queue.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            tracing::error!(
                lost,
                "audit trail: records still unwritten at shutdown (database unreachable); lost"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! The writer and the bulk statements against real databases: SQLite always, PostgreSQL
    //! when `JAKGUARD_TEST_POSTGRES_URL` is set (see `crate::testing`).

    use super::*;
    use crate::sql::{connect, Database};
    use crate::{testing, StorageOptions};

    /// A fresh database per backend, each with its name for assertion messages.
    fn databases(test: &str) -> Vec<(&'static str, Database)> {
        let sqlite = StorageOptions {
            data_dir: testing::temp_dir("audit-unit"),
            ..StorageOptions::default()
        };
        let mut out = vec![("sqlite", open(&sqlite))];
        if let Some(base) = testing::postgres_url(test) {
            let postgres = StorageOptions {
                url: Some(testing::scratch_postgres(&base)),
                ..StorageOptions::default()
            };
            out.push(("postgres", open(&postgres)));
        }
        out
    }

    fn open(options: &StorageOptions) -> Database {
        let backend = options.backend().expect("a valid backend");
        connect(&backend, options).expect("the test database opens")
    }

    fn run<T: Send + 'static>(
        d: &Database,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        d.rt.block_on(f).expect("the storage runtime runs")
    }

    fn record(n: usize, cards: usize) -> PendingAudit {
        PendingAudit {
            id: uuid::Uuid::new_v4().to_string(),
            at_ms: crate::now_ms(),
            service: "jakguard-order-sign".into(),
            hook_instance: format!("hook-{n}"),
            patient_hash: format!("{n:064x}"),
            cards: (0..cards)
                .map(|c| AuditCard {
                    uuid: format!("card-{n}-{c}"),
                    topic: "ansm-restriction".into(),
                    indicator: "warning".into(),
                    molecule: (c % 2 == 0).then(|| "tofacitinib".into()),
                    factors: vec!["age-65-plus".into()],
                })
                .collect(),
            queued: Instant::now(),
        }
    }

    /// Events and cards stored, as (event count, card count, every card in a batch record's
    /// card list stored exactly once).
    fn stored(d: &Database, batch: &[PendingAudit]) -> (usize, usize, bool) {
        let db = d.db.clone();
        let records = run(d, async move { db.audit_records().await }).expect("readable");
        let cards = records.iter().map(|r| r.cards.len()).sum();
        let by_id: std::collections::HashMap<&str, &crate::sql::StoredAudit> =
            records.iter().map(|r| (r.id.as_str(), r)).collect();
        let exact = batch
            .iter()
            .all(|a| by_id.get(a.id.as_str()).is_some_and(|r| r.cards == a.cards));
        (records.len(), cards, exact)
    }

    fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_batch_larger_than_one_statements_parameter_limit_is_written_completely() {
        // 6,000 events (36,000 event parameters), 36,000 cards (252,000 card parameters)
        // and 36,000 card uuids to look up in feedback: every statement kind needs several
        // chunks under MAX_BINDS.
        let (events, cards_each) = (6_000, 6);
        assert!(events * 6 > MAX_BINDS && events * cards_each > MAX_BINDS);
        for (backend, d) in databases("a_batch_larger_than_one_statements_parameter_limit") {
            let batch: Vec<PendingAudit> = (0..events).map(|n| record(n, cards_each)).collect();
            // Feedback that arrived before its cards, in the first and the last chunk.
            let early = vec![
                crate::tests::item("card-0-0"),
                crate::tests::item(&format!("card-{}-5", events - 1)),
                crate::tests::item("never-issued"),
            ];
            let (db, b) = (d.db.clone(), batch.clone());
            run(&d, async move {
                db.store_feedback("jakguard-order-sign", &early)
                    .await
                    .expect("feedback stored");
                db.insert_audit(&b).await
            })
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
            assert_eq!(
                stored(&d, &batch),
                (events, events * cards_each, true),
                "{backend}"
            );
            let db = d.db.clone();
            let feedback = run(&d, async move { db.all_feedback().await }).expect("readable");
            let known: Vec<bool> = feedback.iter().map(|f| f.card_known).collect();
            assert_eq!(known, [true, true, false], "{backend}");
        }
    }

    #[test]
    fn statements_split_at_the_parameter_bound_keep_every_row() {
        // A tiny bound: 2 events, 1 card and 13 uuids per statement, so chunk boundaries fall
        // inside records and between a record's cards.
        for (backend, d) in databases("statements_split_at_the_parameter_bound") {
            let batch: Vec<PendingAudit> = (0..41).map(|n| record(n, n % 4)).collect();
            let cards: usize = batch.iter().map(|a| a.cards.len()).sum();
            let (db, b) = (d.db.clone(), batch.clone());
            run(&d, async move { db.insert_audit_bounded(&b, 13).await })
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
            assert_eq!(stored(&d, &batch), (41, cards, true), "{backend}");
        }
    }

    #[test]
    fn a_batch_retried_after_its_commit_does_not_duplicate_cards() {
        for (backend, d) in databases("a_batch_retried_after_its_commit") {
            let first: Vec<PendingAudit> = (0..300).map(|n| record(n, 2)).collect();
            // The retry (the answer to the commit was lost), then a batch that overlaps it:
            // its older half was committed, its newer half not.
            let mut overlapping = first[150..].to_vec();
            overlapping.extend((300..450).map(|n| record(n, 3)));
            let (db, a, b) = (d.db.clone(), first.clone(), overlapping.clone());
            run(&d, async move {
                db.insert_audit_bounded(&a, 64).await?;
                db.insert_audit_bounded(&a, 64).await?;
                db.insert_audit(&b).await
            })
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
            let all: Vec<PendingAudit> = first.iter().chain(&overlapping[150..]).cloned().collect();
            assert_eq!(
                stored(&d, &all),
                (450, 300 * 2 + 150 * 3, true),
                "{backend}"
            );
        }
    }

    #[test]
    fn batches_of_every_size_around_the_statement_sizes_are_written_completely() {
        // Statements hold 1, 2, 4, ... 1,024 rows (see `bulk`): sizes on both sides of each
        // boundary, with 0 to 3 cards per record so card counts fall anywhere too.
        let mut sizes: Vec<usize> = (1..=20).collect();
        for p in [32usize, 64, 128, 256, 512, 1024, 2048] {
            sizes.extend([p - 1, p, p + 1]);
        }
        for (backend, d) in databases("batches_of_every_size_around_the_statement_sizes") {
            let mut all = Vec::new();
            let mut next = 0;
            for &size in &sizes {
                let batch: Vec<PendingAudit> = (next..next + size)
                    .map(|n| record(n, (n * 7 + size) % 4))
                    .collect();
                next += size;
                let (db, b) = (d.db.clone(), batch.clone());
                run(&d, async move { db.insert_audit(&b).await })
                    .unwrap_or_else(|e| panic!("{backend}: {size} records: {e}"));
                all.extend(batch);
            }
            let cards = all.iter().map(|a| a.cards.len()).sum();
            assert_eq!(stored(&d, &all), (all.len(), cards, true), "{backend}");
        }
    }

    #[test]
    fn a_retry_whose_stored_events_come_after_new_ones_is_rolled_back_and_redone() {
        // The stored events sit in the batch's last statement, after statements of new
        // events already executed: those must be undone and written again, once.
        for (backend, d) in databases("a_retry_whose_stored_events_come_after_new_ones") {
            let old: Vec<PendingAudit> = (0..5).map(|n| record(n, 2)).collect();
            let mut batch: Vec<PendingAudit> = (5..305).map(|n| record(n, 1)).collect();
            batch.extend(old.iter().cloned());
            let early = vec![crate::tests::item("card-100-0")];
            let (db, a, b) = (d.db.clone(), old.clone(), batch.clone());
            run(&d, async move {
                db.store_feedback("jakguard-order-sign", &early).await?;
                db.insert_audit(&a).await.map_err(crate::sql::unavailable)?;
                db.insert_audit(&b).await.map_err(crate::sql::unavailable)?;
                db.insert_audit(&b).await.map_err(crate::sql::unavailable)
            })
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
            assert_eq!(stored(&d, &batch), (305, 5 * 2 + 300, true), "{backend}");
            let db = d.db.clone();
            let feedback = run(&d, async move { db.all_feedback().await }).expect("readable");
            assert!(feedback[0].card_known, "{backend}");
        }
    }

    #[test]
    fn the_writer_keeps_writing_after_a_failed_batch() {
        // A failure drops the writer's connection; the next attempt takes a new one.
        for (backend, d) in databases("the_writer_keeps_writing_after_a_failed_batch") {
            let queue = writing(&d, Duration::from_millis(1));
            queue.push(record(0, 1));
            wait_until(Duration::from_secs(5), backend, || {
                queue.stats().written == 1
            });
            // The table renamed away: the next batch fails, and is retried with backoff.
            let db = d.db.clone();
            run(&d, async move {
                db.execute("ALTER TABLE audit_card_event RENAME TO audit_card_away")
                    .await
            })
            .expect("renamed");
            queue.push(record(1, 1));
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                queue.stats().written,
                1,
                "{backend}: the write fails meanwhile"
            );
            let db = d.db.clone();
            run(&d, async move {
                db.execute("ALTER TABLE audit_card_away RENAME TO audit_card_event")
                    .await
            })
            .expect("renamed back");
            queue.push(record(2, 1));
            wait_until(Duration::from_secs(10), backend, || {
                queue.stats().written == 3
            });
            let db = d.db.clone();
            let records = run(&d, async move { db.audit_records().await }).expect("readable");
            assert_eq!(records.len(), 3, "{backend}");
        }
    }

    /// A queue lingering `linger`, with its writer running on `d`'s runtime.
    fn writing(d: &Database, linger: Duration) -> Arc<AuditQueue> {
        let queue = Arc::new(AuditQueue::new(100_000).with_linger(linger));
        d.rt.spawn(writer(queue.clone(), d.db.clone()));
        queue
    }

    #[test]
    fn records_pushed_while_the_writer_idles_lingers_or_writes_are_all_written() {
        for (backend, d) in databases("records_pushed_while_the_writer_idles_lingers_or_writes") {
            let queue = writing(&d, Duration::from_millis(20));
            let threads = 6;
            let mut total = 0u64;
            // Rounds of a few records (an idle writer must be woken by the first) to more
            // than a batch (bursts that cross a full batch while it lingers or writes); each
            // round starts with the writer idle and an empty queue.
            for (round, each) in [1usize, 3, 40, 150, 1, 400].into_iter().enumerate() {
                let pushers: Vec<_> = (0..threads)
                    .map(|t| {
                        let queue = queue.clone();
                        std::thread::spawn(move || {
                            let mut seed =
                                0x9e37_79b9_7f4a_7c15_u64 ^ ((round * 64 + t) as u64 + 1);
                            for i in 0..each {
                                queue.push(record((round * threads + t) * 1000 + i, i % 3));
                                // Random pauses: none (bursts), microseconds (mid-write),
                                // or longer than the linger (the writer caught idle).
                                seed ^= seed << 13;
                                seed ^= seed >> 7;
                                seed ^= seed << 17;
                                match seed % 16 {
                                    0 => std::thread::sleep(Duration::from_millis(20 + seed % 20)),
                                    1..=3 => std::thread::sleep(Duration::from_millis(seed % 7)),
                                    4..=6 => std::thread::sleep(Duration::from_micros(seed % 500)),
                                    _ => {}
                                }
                            }
                        })
                    })
                    .collect();
                for p in pushers {
                    p.join().expect("pusher");
                }
                total += (threads * each) as u64;
                // Nothing pushes any more: only a writer that missed no wake-up gets there.
                wait_until(Duration::from_secs(10), backend, || {
                    queue.stats().written == total
                });
                assert_eq!(queue.stats().pending, 0, "{backend}");
            }
            let db = d.db.clone();
            let records = run(&d, async move { db.audit_records().await }).expect("readable");
            assert_eq!(records.len() as u64, total, "{backend}");
            assert_eq!(queue.stats().dropped, 0, "{backend}");
        }
    }

    #[test]
    fn a_full_batch_is_written_without_waiting_for_the_linger() {
        for (backend, d) in databases("a_full_batch_is_written_without_waiting") {
            let queue = writing(&d, Duration::from_secs(60));
            for n in 0..BATCH {
                queue.push(record(n, 1));
            }
            wait_until(Duration::from_secs(5), backend, || {
                queue.stats().written == BATCH as u64
            });
        }
    }

    #[test]
    fn shutdown_writes_records_queued_during_the_linger_at_once() {
        for (backend, d) in databases("shutdown_writes_records_queued_during_the_linger") {
            let queue = writing(&d, Duration::from_secs(60));
            let batch: Vec<PendingAudit> = (0..10).map(|n| record(n, 2)).collect();
            for a in &batch {
                queue.push(a.clone());
            }
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(queue.stats().written, 0, "{backend}: the writer lingers");
            let started = Instant::now();
            queue.close();
            assert!(queue.wait_drained(FLUSH_AT_SHUTDOWN), "{backend}");
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "{backend}: flushed in {took:?}"
            );
            assert_eq!(
                queue.stats(),
                AuditStats {
                    pending: 0,
                    written: 10,
                    dropped: 0
                }
            );
            assert_eq!(stored(&d, &batch), (10, 20, true), "{backend}");
        }
    }
}
