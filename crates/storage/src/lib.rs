//! Where jakguard keeps what it must be able to show later: the feedback EHRs send about
//! cards, and an audit record of every evaluation.
//!
//! Two seams, [`FeedbackStore`] and [`AuditSink`], with two families of implementations:
//! - in memory ([`MemoryStore`], [`MemoryAudit`]): development and tests, nothing survives a
//!   restart;
//! - SQL ([`open`]): SQLite by default (one file under the data directory, WAL, synchronous
//!   commits), PostgreSQL when `storage.url` says so (several replicas share one database).
//!   The same SQL text and the same Rust code run on both (see `sql.rs`).
//!
//! Invariants:
//! - acknowledged means stored: `FeedbackStore::store` resolves to `Ok` only once the
//!   transaction holding every item has committed (the HTTP layer answers 200 after it);
//! - `AuditSink::record` never blocks nor fails the answer: records are queued in memory and
//!   written by a background task that retries while the database is down; a record that
//!   cannot be kept (buffer full, shutdown with the database down) is counted and logged,
//!   never dropped silently;
//! - no patient identifier is written in clear: `patientId` is replaced by an HMAC-SHA256
//!   under the configured secret before it leaves [`AuditSink::record`];
//! - nothing here logs patient data, card texts, comments or bodies.

mod audit;
mod bulk;
mod cards;
mod options;
mod patient;
pub mod report;
mod runtime;
mod sql;
#[doc(hidden)]
pub mod testing;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use jakguard_cds::feedback::FeedbackItem;

pub use jakguard_cds::{AuditCard, AuditRecord};
pub use options::{Backend, StorageOptions};
pub use patient::PatientHasher;
pub use report::{Period, Report};
pub use sql::{open, open_database, Database, Opened};

/// A store could not do what was asked now (the database is down, slow, or refused).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the feedback store is unavailable: {0}")]
    Unavailable(String),
    /// A stored record cannot be read back (only a hand edit of the database makes one): the
    /// report stops rather than count around it.
    #[error("the audit trail holds a record that cannot be read: {0}")]
    Unreadable(String),
}

/// The storage could not be opened at start-up: the service refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("storage: cannot reach the database {backend}: {reason}")]
    Connect { backend: String, reason: String },
    #[error("storage: the database schema could not be migrated: {0}")]
    Migrate(String),
    #[error("storage: the patient-id secret: {0}")]
    Secret(String),
    #[error("storage: {0}")]
    Io(String),
}

/// One stored feedback item, the service it was posted to, and whether this deployment ever
/// issued the card it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFeedback {
    pub service: String,
    pub item: FeedbackItem,
    /// False for feedback about a card no audit record mentions (kept, and counted apart in
    /// the report). Becomes true if the card's audit record arrives later.
    pub card_known: bool,
}

/// What a successful `store` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Items written now.
    pub stored: usize,
    /// Items already stored by an earlier post of the same feedback (an EHR retrying after
    /// a lost answer): acknowledged again, not counted twice.
    pub duplicates: usize,
    /// Items, among those written now, about a card this deployment never issued.
    pub unknown_cards: usize,
}

pub trait FeedbackStore: Send + Sync {
    /// Stores every item, or none; resolves only once they are durably stored.
    fn store<'a>(
        &'a self,
        service: &'a str,
        items: &'a [FeedbackItem],
    ) -> BoxFuture<'a, Result<StoreOutcome, StorageError>>;
    /// Whether the store can take writes now (readiness); answers within a few seconds.
    fn ready(&self) -> BoxFuture<'_, bool>;
    /// Everything stored, oldest first (tests and tools; not for the request path).
    fn all(&self) -> BoxFuture<'_, Result<Vec<StoredFeedback>, StorageError>>;
}

/// Counters of the audit trail, for readiness and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditStats {
    /// Records waiting to be written (they grow while the database is down).
    pub pending: u64,
    /// Records written since start.
    pub written: u64,
    /// Records that could not be kept (buffer full, or still pending at shutdown).
    pub dropped: u64,
}

/// Where audit records of evaluations go. `record` must not block the answer nor fail it:
/// an implementation buffers, retries, and counts what it could not keep.
pub trait AuditSink: Send + Sync {
    fn record(&self, audit: AuditRecord);
    fn stats(&self) -> AuditStats {
        AuditStats::default()
    }
}

/// Keeps feedback in memory, for development and tests. With [`MemoryStore::with_audit`] it
/// flags feedback about cards the given audit never saw, like the SQL store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    items: Mutex<Vec<StoredFeedback>>,
    audit: Option<Arc<MemoryAudit>>,
}

impl MemoryStore {
    pub fn with_audit(audit: Arc<MemoryAudit>) -> MemoryStore {
        MemoryStore {
            items: Mutex::default(),
            audit: Some(audit),
        }
    }
}

fn poisoned<T>(_: T) -> StorageError {
    StorageError::Unavailable("poisoned lock".into())
}

impl FeedbackStore for MemoryStore {
    fn store<'a>(
        &'a self,
        service: &'a str,
        items: &'a [FeedbackItem],
    ) -> BoxFuture<'a, Result<StoreOutcome, StorageError>> {
        Box::pin(async move {
            let issued = self.audit.as_ref().map(|a| a.card_uuids());
            let mut all = self.items.lock().map_err(poisoned)?;
            let mut outcome = StoreOutcome::default();
            for item in items {
                if all
                    .iter()
                    .any(|s| s.service == service && same_feedback(&s.item, item))
                {
                    outcome.duplicates += 1;
                    continue;
                }
                let card_known = issued.as_ref().is_some_and(|u| u.contains(&item.card));
                outcome.stored += 1;
                outcome.unknown_cards += usize::from(!card_known);
                all.push(StoredFeedback {
                    service: service.to_owned(),
                    item: item.clone(),
                    card_known,
                });
            }
            Ok(outcome)
        })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { !self.items.is_poisoned() })
    }

    fn all(&self) -> BoxFuture<'_, Result<Vec<StoredFeedback>, StorageError>> {
        Box::pin(async move { Ok(self.items.lock().map_err(poisoned)?.clone()) })
    }
}

/// The identity of a feedback item for de-duplication, the same in every store: an EHR that
/// re-posts after a lost answer sends the same card, outcome and timestamp.
fn same_feedback(a: &FeedbackItem, b: &FeedbackItem) -> bool {
    a.card == b.card && a.outcome == b.outcome && a.outcome_timestamp == b.outcome_timestamp
}

/// Keeps audit records in memory (development, tests). The patient id is hashed here too, so
/// that what tests see is what a database would hold.
#[derive(Debug)]
pub struct MemoryAudit {
    records: Mutex<Vec<AuditRecord>>,
    hasher: PatientHasher,
    written: AtomicU64,
}

impl Default for MemoryAudit {
    fn default() -> Self {
        MemoryAudit {
            records: Mutex::default(),
            hasher: PatientHasher::ephemeral(),
            written: AtomicU64::new(0),
        }
    }
}

impl MemoryAudit {
    /// Every record so far; `patient_id` holds the keyed hash, never the id in clear.
    pub fn all(&self) -> Vec<AuditRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn card_uuids(&self) -> HashSet<String> {
        self.records
            .lock()
            .map(|r| {
                r.iter()
                    .flat_map(|a| a.cards.iter().map(|c| c.uuid.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, mut audit: AuditRecord) {
        audit.patient_id = self.hasher.hash(&audit.patient_id);
        if let Ok(mut r) = self.records.lock() {
            r.push(audit);
            self.written.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn stats(&self) -> AuditStats {
        AuditStats {
            pending: 0,
            written: self.written.load(Ordering::Relaxed),
            dropped: 0,
        }
    }
}

/// Milliseconds since the Unix epoch, the time unit of every stored row.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jakguard_cds::feedback::Outcome;

    /// An override of `card`, as an EHR posts it (shared by the crate's tests).
    pub(crate) fn item(card: &str) -> FeedbackItem {
        FeedbackItem {
            card: card.into(),
            outcome: Outcome::Overridden,
            accepted_suggestions: vec![],
            override_reason: None,
            outcome_timestamp: "2026-11-22T13:43:17Z".into(),
        }
    }

    fn audit(card: &str) -> AuditRecord {
        AuditRecord {
            service: "jakguard-order-sign".into(),
            hook_instance: "h1".into(),
            patient_id: "patient-123".into(),
            cards: vec![AuditCard {
                uuid: card.into(),
                topic: "ansm-restriction".into(),
                indicator: "warning".into(),
                molecule: Some("tofacitinib".into()),
                factors: vec!["age-65-plus".into()],
            }],
        }
    }

    #[tokio::test]
    async fn memory_store_flags_unknown_cards_and_ignores_repeats() {
        let a = Arc::new(MemoryAudit::default());
        a.record(audit("known"));
        let s = MemoryStore::with_audit(a.clone());
        let out = s
            .store("svc", &[item("known"), item("other")])
            .await
            .unwrap();
        assert_eq!((out.stored, out.unknown_cards, out.duplicates), (2, 1, 0));
        let again = s.store("svc", &[item("known")]).await.unwrap();
        assert_eq!((again.stored, again.duplicates), (0, 1));
        let all = s.all().await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].card_known && !all[1].card_known);
    }

    #[test]
    fn memory_audit_never_keeps_the_patient_id_in_clear() {
        let a = MemoryAudit::default();
        a.record(audit("c"));
        let r = &a.all()[0];
        assert_ne!(r.patient_id, "patient-123");
        assert_eq!(r.patient_id.len(), 64);
    }
}
