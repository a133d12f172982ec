//! `jakguard report`: how the cards are used, per topic and molecule, over a period.
//!
//! Counting rules (also in the README):
//! - a card counts in the period of the evaluation that returned it; `issued` counts distinct
//!   cards (uuids are deterministic, so the EHR calling again for the same order shows the same
//!   card again), `shown` counts every time it was returned;
//! - feedback counts in the period it was received, under the topic and molecule of the
//!   latest audit record of its card; feedback about a card no audit record mentions is
//!   counted apart (`unknown_cards`);
//! - override reasons are grouped by coding (system and code) with their counts; user
//!   comments are free text that may name a patient: stored, never reported.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

/// A half-open interval of days, UTC; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    /// First day included.
    pub from: Option<jakguard_rules::Date>,
    /// Last day included.
    pub to: Option<jakguard_rules::Date>,
}

const DAY_MS: i64 = 86_400_000;

impl Period {
    /// From `--from` and `--to` (YYYY-MM-DD, both inclusive).
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Period, String> {
        let date = |flag: &str, s: &str| {
            jakguard_rules::Date::parse(s)
                .ok_or_else(|| format!("{flag} `{s}` is not a date YYYY-MM-DD"))
        };
        let period = Period {
            from: from.map(|s| date("--from", s)).transpose()?,
            to: to.map(|s| date("--to", s)).transpose()?,
        };
        if let (Some(f), Some(t)) = (period.from, period.to) {
            if t < f {
                return Err(format!("--to {t} is before --from {f}"));
            }
        }
        Ok(period)
    }

    /// `[from, to)` in milliseconds since the epoch.
    pub(crate) fn bounds_ms(&self) -> (i64, i64) {
        (
            self.from
                .map_or(i64::MIN, |d| d.days_since_epoch() * DAY_MS),
            self.to
                .map_or(i64::MAX, |d| (d.days_since_epoch() + 1) * DAY_MS),
        )
    }
}

/// Cards of one topic for one molecule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardStats {
    pub topic: String,
    /// None for cards about no molecule in particular.
    pub molecule: Option<String>,
    pub issued: u64,
    pub shown: u64,
    pub accepted: u64,
    pub overridden: u64,
    pub override_reasons: Vec<ReasonCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub system: Option<String>,
    /// None: overridden without a reason.
    pub code: Option<String>,
    pub display: Option<String>,
    pub count: u64,
}

/// Feedback about cards this deployment has no record of issuing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnknownCards {
    pub accepted: u64,
    pub overridden: u64,
    pub override_reasons: Vec<ReasonCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// First day included (UTC), if bounded.
    pub from: Option<String>,
    /// Last day included (UTC), if bounded.
    pub to: Option<String>,
    pub cards: Vec<CardStats>,
    pub unknown_cards: UnknownCards,
}

pub(crate) struct IssuedRow {
    pub topic: String,
    pub molecule: Option<String>,
    pub issued: i64,
    pub shown: i64,
}

pub(crate) struct FeedbackRow {
    pub topic: Option<String>,
    pub molecule: Option<String>,
    pub outcome: String,
    pub reason_system: Option<String>,
    pub reason_code: Option<String>,
    pub reason_display: Option<String>,
    pub count: i64,
}

/// A reason's coding (system, code), and the display first seen for it with its count.
type ReasonKey = (Option<String>, Option<String>);
type ReasonTally = (Option<String>, u64);

#[derive(Default)]
struct Tally {
    issued: u64,
    shown: u64,
    accepted: u64,
    overridden: u64,
    // (system, code) → (display, count): displays differ between EHR versions; keep one.
    reasons: BTreeMap<ReasonKey, ReasonTally>,
}

impl Tally {
    fn add_feedback(&mut self, r: FeedbackRow) {
        let n = u64::try_from(r.count).unwrap_or(0);
        if r.outcome == "accepted" {
            self.accepted += n;
            return;
        }
        self.overridden += n;
        let entry = self
            .reasons
            .entry((r.reason_system, r.reason_code))
            .or_insert((None, 0));
        entry.1 += n;
        if entry.0.is_none() {
            entry.0 = r.reason_display;
        }
    }

    fn reasons(&mut self) -> Vec<ReasonCount> {
        let mut v: Vec<ReasonCount> = std::mem::take(&mut self.reasons)
            .into_iter()
            .map(|((system, code), (display, count))| ReasonCount {
                system,
                code,
                display,
                count,
            })
            .collect();
        // Most frequent first; "no reason" after the coded reasons of the same count.
        v.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.code.is_none().cmp(&b.code.is_none()))
                .then(a.code.cmp(&b.code))
        });
        v
    }
}

impl Report {
    pub(crate) fn from_rows(
        period: Period,
        issued: Vec<IssuedRow>,
        feedback: Vec<FeedbackRow>,
    ) -> Report {
        let mut cards: BTreeMap<(String, Option<String>), Tally> = BTreeMap::new();
        let mut unknown = Tally::default();
        for r in issued {
            let t = cards.entry((r.topic, r.molecule)).or_default();
            t.issued += u64::try_from(r.issued).unwrap_or(0);
            t.shown += u64::try_from(r.shown).unwrap_or(0);
        }
        for r in feedback {
            match r.topic.clone() {
                Some(topic) => cards
                    .entry((topic, r.molecule.clone()))
                    .or_default()
                    .add_feedback(r),
                None => unknown.add_feedback(r),
            }
        }
        Report {
            from: period.from.map(|d| d.to_string()),
            to: period.to.map(|d| d.to_string()),
            cards: cards
                .into_iter()
                .map(|((topic, molecule), mut t)| CardStats {
                    topic,
                    molecule,
                    issued: t.issued,
                    shown: t.shown,
                    accepted: t.accepted,
                    overridden: t.overridden,
                    override_reasons: t.reasons(),
                })
                .collect(),
            unknown_cards: UnknownCards {
                accepted: unknown.accepted,
                overridden: unknown.overridden,
                override_reasons: unknown.reasons(),
            },
        }
    }

    /// The report as a table for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let period = match (&self.from, &self.to) {
            (None, None) => "all time".to_owned(),
            (Some(f), None) => format!("from {f}"),
            (None, Some(t)) => format!("until {t}"),
            (Some(f), Some(t)) => format!("{f} to {t}"),
        };
        let _ = writeln!(out, "jakguard report: {period} (UTC)");
        let _ = writeln!(out);
        if self.cards.is_empty() {
            let _ = writeln!(out, "No card issued and no feedback in this period.");
        } else {
            let name = |c: &CardStats| c.molecule.clone().unwrap_or_else(|| "-".into());
            let tw = self
                .cards
                .iter()
                .map(|c| c.topic.len())
                .max()
                .unwrap_or(0)
                .max(5);
            let mw = self
                .cards
                .iter()
                .map(|c| name(c).len())
                .max()
                .unwrap_or(0)
                .max(8);
            let _ = writeln!(
                out,
                "{:<tw$}  {:<mw$}  {:>7}  {:>7}  {:>8}  {:>10}",
                "topic", "molecule", "issued", "shown", "accepted", "overridden"
            );
            for c in &self.cards {
                let _ = writeln!(
                    out,
                    "{:<tw$}  {:<mw$}  {:>7}  {:>7}  {:>8}  {:>10}",
                    c.topic,
                    name(c),
                    c.issued,
                    c.shown,
                    c.accepted,
                    c.overridden
                );
                write_reasons(&mut out, &c.override_reasons);
            }
        }
        let u = &self.unknown_cards;
        if u.accepted + u.overridden > 0 {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "Feedback about cards this deployment has no record of issuing: {} accepted, {} overridden",
                u.accepted, u.overridden
            );
            write_reasons(&mut out, &u.override_reasons);
        }
        out
    }
}

fn write_reasons(out: &mut String, reasons: &[ReasonCount]) {
    for r in reasons {
        let label = match (&r.code, &r.display) {
            (None, _) => "(no reason given)".to_owned(),
            (Some(code), Some(display)) if display != code => format!("{code}: {display}"),
            (Some(code), _) => code.clone(),
        };
        let _ = writeln!(out, "    overridden {:>5} × {label}", r.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(topic: Option<&str>, outcome: &str, code: Option<&str>, count: i64) -> FeedbackRow {
        FeedbackRow {
            topic: topic.map(str::to_owned),
            molecule: topic.map(|_| "tofacitinib".to_owned()),
            outcome: outcome.into(),
            reason_system: code.map(|_| "urn:ehr:reasons".to_owned()),
            reason_code: code.map(str::to_owned),
            reason_display: code.map(|c| format!("{c} (display)")),
            count,
        }
    }

    #[test]
    fn rows_are_tallied_per_topic_molecule_and_reason() {
        let period = Period::parse(Some("2026-01-01"), Some("2026-01-31")).unwrap();
        let r = Report::from_rows(
            period,
            vec![IssuedRow {
                topic: "ansm-restriction".into(),
                molecule: Some("tofacitinib".into()),
                issued: 3,
                shown: 5,
            }],
            vec![
                fb(Some("ansm-restriction"), "accepted", None, 1),
                fb(Some("ansm-restriction"), "overridden", Some("no-alt"), 2),
                fb(Some("ansm-restriction"), "overridden", None, 2),
                fb(Some("ansm-restriction"), "overridden", Some("benefit"), 1),
                fb(None, "overridden", None, 4),
            ],
        );
        assert_eq!(r.cards.len(), 1);
        let c = &r.cards[0];
        assert_eq!((c.issued, c.shown, c.accepted, c.overridden), (3, 5, 1, 5));
        let codes: Vec<_> = c
            .override_reasons
            .iter()
            .map(|r| (r.code.as_deref(), r.count))
            .collect();
        assert_eq!(
            codes,
            [(Some("no-alt"), 2), (None, 2), (Some("benefit"), 1)]
        );
        assert_eq!(
            (r.unknown_cards.accepted, r.unknown_cards.overridden),
            (0, 4)
        );
        let table = r.to_table();
        assert!(table.contains("2026-01-01 to 2026-01-31"), "{table}");
        assert!(table.contains("no-alt: no-alt (display)"), "{table}");
        assert!(
            table.contains("no record of issuing: 0 accepted, 4 overridden"),
            "{table}"
        );
    }

    #[test]
    fn periods_are_whole_utc_days_and_checked() {
        let p = Period::parse(Some("1970-01-02"), Some("1970-01-02")).unwrap();
        assert_eq!(p.bounds_ms(), (DAY_MS, 2 * DAY_MS));
        assert_eq!(Period::default().bounds_ms(), (i64::MIN, i64::MAX));
        assert!(Period::parse(Some("2026-02-01"), Some("2026-01-01")).is_err());
        assert!(Period::parse(Some("yesterday"), None).is_err());
    }
}
