//! A circuit breaker per server origin: after `threshold` fetches in a row that met a server
//! fault (no connection, no answer in time, 5xx), the origin is not contacted for `cooldown`,
//! so that CDS calls answer at once with a missing-data note instead of each waiting out the
//! deadline and piling up on a server that is down. After the cooldown one fetch goes through
//! as a probe: success closes the circuit, failure opens it again.
//!
//! A 401 or a 404 is the server working: it does not count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// Whether a fetch may contact the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The circuit is open: retry after this long.
    No(Duration),
}

#[derive(Debug)]
pub struct Breakers {
    threshold: u32,
    cooldown: Duration,
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breakers {
            threshold: threshold.max(1),
            cooldown,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, State>) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of counters: the
        // counters are still usable, and a breaker must never take the service down.
        let mut guard = self.states.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn admit(&self, origin: &str, now: Instant) -> Admit {
        self.with(|states| {
            let s = states.entry(origin.to_owned()).or_default();
            match s.open_until {
                None => Admit::Yes,
                Some(until) if now < until => Admit::No(until - now),
                Some(_) if s.probing => Admit::No(Duration::from_secs(1)),
                Some(_) => {
                    s.probing = true;
                    Admit::Yes
                }
            }
        })
    }

    /// Records the result of an admitted fetch.
    pub fn record(&self, origin: &str, server_fault: bool, now: Instant) {
        self.with(|states| {
            let s = states.entry(origin.to_owned()).or_default();
            if server_fault {
                s.failures = s.failures.saturating_add(1);
                if s.probing || s.failures >= self.threshold {
                    s.open_until = Some(now + self.cooldown);
                }
            } else {
                s.failures = 0;
                s.open_until = None;
            }
            s.probing = false;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let b = Breakers::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit("o", t0), Admit::Yes);
            b.record("o", true, t0);
        }
        assert_eq!(b.admit("o", t0), Admit::Yes);
        b.record("o", true, t0);
        assert!(matches!(b.admit("o", t0), Admit::No(_)));
        assert_eq!(b.admit("other", t0), Admit::Yes, "per origin");
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.admit("o", later), Admit::Yes, "one probe");
        assert!(matches!(b.admit("o", later), Admit::No(_)), "only one");
        b.record("o", true, later);
        assert!(matches!(b.admit("o", later), Admit::No(_)), "reopened");
        let much_later = later + Duration::from_secs(11);
        assert_eq!(b.admit("o", much_later), Admit::Yes);
        b.record("o", false, much_later);
        assert_eq!(b.admit("o", much_later), Admit::Yes);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breakers::new(2, Duration::from_secs(10));
        let t = Instant::now();
        b.record("o", true, t);
        b.record("o", false, t);
        b.record("o", true, t);
        assert_eq!(b.admit("o", t), Admit::Yes);
    }
}
