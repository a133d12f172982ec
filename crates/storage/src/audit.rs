//! The audit trail's write path: a bounded in-memory queue in front of the database.
//!
//! `record` hashes the patient id, stamps the time and queues the record, never waiting on
//! the database: an evaluation answers in time whatever the database does. One writer task on
//! the storage runtime takes batches from the front of the queue and removes them only once
//! they are committed; while the database is down it keeps them and retries with backoff, so
//! an outage costs nothing as long as the buffer holds. What cannot be kept is counted in
//! `dropped` and logged: a full buffer (newest records refused, since the oldest are already
//! waiting in order), and records still pending when the service stops with its database
//! unreachable. A SIGKILL loses what is queued at that instant (normally the last few
//! milliseconds of evaluations); feedback, which the EHR was told is stored, is never in this
//! queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use jakguard_cds::{AuditCard, AuditRecord};
use tokio::sync::Notify;

use crate::patient::PatientHasher;
use crate::runtime::{on_storage_thread, StorageRuntime};
use crate::sql::Db;
use crate::{AuditSink, AuditStats};

/// Records written per transaction.
const BATCH: usize = 256;
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
}

pub(crate) fn factors_json(factors: &[String]) -> String {
    serde_json::to_string(factors).unwrap_or_else(|_| "[]".into())
}

pub(crate) struct AuditQueue {
    pending: Mutex<VecDeque<PendingAudit>>,
    notify: Notify,
    capacity: usize,
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
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            drained: (Mutex::new(false), Condvar::new()),
        }
    }

    fn push(&self, record: PendingAudit) {
        let accepted = match self.pending.lock() {
            Ok(mut q) if q.len() < self.capacity => {
                q.push_back(record);
                true
            }
            _ => false,
        };
        if accepted {
            self.notify.notify_one();
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
    fn peek(&self, n: usize) -> Vec<PendingAudit> {
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

    fn stats(&self) -> AuditStats {
        AuditStats {
            pending: self.len() as u64,
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Writes the queue to the database until the sink is dropped and the queue is empty.
pub(crate) async fn writer(queue: Arc<AuditQueue>, db: Db) {
    let mut backoff = MIN_BACKOFF;
    let mut failing_since: Option<Instant> = None;
    let mut last_warning = Instant::now();
    loop {
        let batch = queue.peek(BATCH);
        if batch.is_empty() {
            if queue.closing.load(Ordering::Acquire) {
                queue.signal_drained();
                return;
            }
            queue.notify.notified().await;
            continue;
        }
        let result = match tokio::time::timeout(WRITE_TIMEOUT, db.insert_audit(&batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        match result {
            Ok(()) => {
                queue.commit(batch.len());
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
            id: uuid::Uuid::new_v4().to_string(),
            at_ms: crate::now_ms(),
            patient_hash: self.hasher.hash(&audit.patient_id),
            service: audit.service,
            hook_instance: audit.hook_instance,
            cards: audit.cards,
        });
    }

    fn stats(&self) -> AuditStats {
        self.queue.stats()
    }
}

impl Drop for SqlAudit {
    /// At shutdown: gives the writer a few seconds to empty the queue, and says what is lost.
    fn drop(&mut self) {
        self.queue.closing.store(true, Ordering::Release);
        self.queue.notify.notify_one();
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
