//! Feedback storage behind one seam, [`FeedbackStore`].
//!
//! Today the only store is [`MemoryStore`]: feedback is kept for the life of the process.
//! Durable storage (SQLite by default, PostgreSQL for several replicas) plugs in behind the
//! same trait; the HTTP layer answers 200 only after `store` has returned `Ok`, which is the
//! invariant a durable store must keep (acknowledged means stored).

use std::sync::Mutex;

use jakguard_cds::feedback::FeedbackItem;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the feedback store is unavailable: {0}")]
    Unavailable(String),
}

/// One stored feedback item and the service it was posted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFeedback {
    pub service: String,
    pub item: FeedbackItem,
}

pub trait FeedbackStore: Send + Sync {
    /// Stores every item, or none; returns only once they are stored.
    fn store(&self, service: &str, items: &[FeedbackItem]) -> Result<(), StorageError>;
    /// Whether the store can take writes now (readiness).
    fn ready(&self) -> bool;
    /// Everything stored, oldest first (reports and tests).
    fn all(&self) -> Result<Vec<StoredFeedback>, StorageError>;
}

/// Keeps feedback in memory, for development and until durable storage lands.
#[derive(Debug, Default)]
pub struct MemoryStore {
    items: Mutex<Vec<StoredFeedback>>,
}

impl FeedbackStore for MemoryStore {
    fn store(&self, service: &str, items: &[FeedbackItem]) -> Result<(), StorageError> {
        let mut all = self
            .items
            .lock()
            .map_err(|_| StorageError::Unavailable("poisoned lock".into()))?;
        all.extend(items.iter().cloned().map(|item| StoredFeedback {
            service: service.to_owned(),
            item,
        }));
        Ok(())
    }

    fn ready(&self) -> bool {
        !self.items.is_poisoned()
    }

    fn all(&self) -> Result<Vec<StoredFeedback>, StorageError> {
        Ok(self
            .items
            .lock()
            .map_err(|_| StorageError::Unavailable("poisoned lock".into()))?
            .clone())
    }
}

/// Where audit records of evaluations go. `record` must not block the answer nor fail it:
/// an implementation buffers, retries, and counts what it could not keep.
pub trait AuditSink: Send + Sync {
    fn record(&self, audit: AuditRecord);
}

pub use jakguard_cds::AuditRecord;

/// Keeps audit records in memory (development, tests).
#[derive(Debug, Default)]
pub struct MemoryAudit {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAudit {
    pub fn all(&self) -> Vec<AuditRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, audit: AuditRecord) {
        if let Ok(mut r) = self.records.lock() {
            r.push(audit);
        }
    }
}
