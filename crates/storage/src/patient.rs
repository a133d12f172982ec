//! The keyed hash that replaces `patientId` in the audit trail.
//!
//! HMAC-SHA256 rather than a plain hash: patient ids are short and guessable (MRNs, FHIR ids),
//! so anyone holding a plain hash could recover them by trying every id; without the secret
//! the hashes only tell which events concern the same patient, which is what the audit needs.
//!
//! Where the secret comes from (decided here, documented in the README):
//! - `storage.patient_id_secret` when configured (at least 16 characters);
//! - otherwise with SQLite: a random secret generated at first start and kept in
//!   `<data_dir>/patient-id.secret` (mode 0600), so that one installation links its events
//!   across restarts without shipping any constant;
//! - otherwise with PostgreSQL: start-up is refused, since replicas generating their own
//!   secrets would silently break the linking of one patient's events;
//! - in memory: a random secret for the life of the process.
//!
//! The database keeps an HMAC of a fixed label under the secret (`jakguard_meta`), so that a
//! changed secret is refused at start-up instead of silently splitting every patient's history.

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::OpenError;

const MIN_SECRET_LEN: usize = 16;
const KEY_FILE: &str = "patient-id.secret";

#[derive(Clone)]
pub struct PatientHasher {
    /// HMAC-SHA256 already keyed with the secret (its inner and outer pads computed once);
    /// each hash starts from a clone of it, on the request path.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for PatientHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientHasher(<secret>)")
    }
}

/// Where a hasher's secret came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    Configured,
    KeyFileCreated,
    KeyFileRead,
    Ephemeral,
}

impl PatientHasher {
    /// A hasher under `secret`; refused when the secret is too short to resist guessing.
    pub fn new(secret: &str) -> Result<PatientHasher, OpenError> {
        if secret.trim().chars().count() < MIN_SECRET_LEN {
            return Err(OpenError::Secret(format!(
                "storage.patient_id_secret must be at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`)"
            )));
        }
        Ok(PatientHasher::keyed(secret.trim().as_bytes()))
    }

    fn keyed(key: &[u8]) -> PatientHasher {
        // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        PatientHasher { keyed }
    }

    /// A random secret for this process only (memory stores, tests).
    pub fn ephemeral() -> PatientHasher {
        let mut key = vec![0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // Without an OS random source the in-memory hashes are merely unlinkable across
            // processes, which is all an ephemeral store promises; mix in the time anyway.
            key = crate::now_ms().to_le_bytes().repeat(4);
        }
        PatientHasher::keyed(&key)
    }

    /// The hex HMAC-SHA256 of `patient_id`.
    pub fn hash(&self, patient_id: &str) -> String {
        self.mac(patient_id.as_bytes())
    }

    /// A fingerprint of the secret that reveals nothing of it, to detect a changed secret.
    pub(crate) fn key_check(&self) -> String {
        self.mac(b"jakguard patient-id secret check v1")
    }

    fn mac(&self, data: &[u8]) -> String {
        let mut m = self.keyed.clone();
        m.update(data);
        hex(&m.finalize().into_bytes())
    }

    /// The secret kept in `dir`, created (random, mode 0600) when absent.
    pub(crate) fn from_key_file(dir: &Path) -> Result<(PatientHasher, SecretSource), OpenError> {
        let path = dir.join(KEY_FILE);
        let io = |e: std::io::Error| OpenError::Secret(format!("{}: {e}", path.display()));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((PatientHasher::new(&text)?, SecretSource::KeyFileRead)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)
            .map_err(|e| OpenError::Secret(format!("no random source to create one: {e}")))?;
        let secret = hex(&raw);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(&path) {
            Ok(mut f) => {
                f.write_all(secret.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok((PatientHasher::new(&secret)?, SecretSource::KeyFileCreated))
            }
            // Another process created it between our read and our create: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).map_err(io)?;
                Ok((PatientHasher::new(&text)?, SecretSource::KeyFileRead))
            }
            Err(e) => Err(io(e)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_keyed_stable_and_not_the_id() {
        let a = PatientHasher::new("a secret of sixteen+").unwrap();
        let b = PatientHasher::new("another secret, 16+").unwrap();
        assert_eq!(a.hash("p1"), a.hash("p1"));
        assert_ne!(a.hash("p1"), a.hash("p2"));
        assert_ne!(a.hash("p1"), b.hash("p1"));
        assert!(!a.hash("p1").contains("p1"));
        // RFC 4231 test case 2 ("Jefe" is too short for a configured secret, so bypass new).
        let jefe = PatientHasher::keyed(b"Jefe");
        assert_eq!(
            jefe.hash("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(PatientHasher::new("short").is_err());
        assert!(PatientHasher::new("                      ").is_err());
    }

    #[test]
    fn the_key_file_is_created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("jakguard-key-{}", uuid::Uuid::new_v4()));
        let (h1, s1) = PatientHasher::from_key_file(&dir).unwrap();
        let (h2, s2) = PatientHasher::from_key_file(&dir).unwrap();
        assert_eq!(
            (s1, s2),
            (SecretSource::KeyFileCreated, SecretSource::KeyFileRead)
        );
        assert_eq!(h1.hash("p"), h2.hash("p"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
