//! From the record to the patient's risk profile: the factors that do not depend on which
//! molecule is ordered, derived once per request.

use std::collections::BTreeMap;

use jakguard_knowledge::codes::{normalize_icd10, Words};
use jakguard_knowledge::{
    Analyte, ConditionMatcher, FactorCode, FactorKind, Knowledge, Topic, TreatmentMatcher,
};

use crate::date::{Date, PartialDate};
use crate::model::*;

/// Verification statuses that mean the condition is not the patient's.
const NOT_THE_PATIENTS: [&str; 2] = ["refuted", "entered-in-error"];
/// Clinical statuses under which a *state* counts (absent counts too).
const ACTIVE: [&str; 3] = ["active", "recurrence", "relapse"];

/// A blood-count result in the analyte's canonical unit.
#[derive(Debug, Clone)]
pub(crate) struct BloodResult {
    pub value: f64,
    pub evidence: Evidence,
}

#[derive(Debug, Default)]
pub(crate) struct Profile {
    factors: BTreeMap<FactorCode, Factor>,
    pub smoking_known: bool,
    pub birth_date_known: bool,
    pub pack_years: Option<(f64, ResourceRef)>,
    pub skin_notes: Vec<Evidence>,
    pub blood: BTreeMap<Analyte, BloodResult>,
    /// Observations the rules needed but could not read (unknown unit...).
    pub unreadable: Vec<String>,
}

impl Profile {
    pub fn derive(k: &Knowledge, record: &Record, today: Date) -> Profile {
        let mut p = Profile::default();
        p.age(record, today);
        p.conditions(k, record);
        p.smoking(k, record);
        p.bmi(k, record);
        p.treatments(k, record);
        p.blood_counts(k, record, today);
        for f in p.factors.values_mut() {
            f.evidence.sort_by(|a, b| {
                a.reference
                    .cmp(&b.reference)
                    .then_with(|| a.what.cmp(&b.what))
            });
            f.evidence.dedup();
        }
        p.skin_notes.sort_by(|a, b| a.reference.cmp(&b.reference));
        p
    }

    pub fn has(&self, code: FactorCode) -> bool {
        self.factors.contains_key(&code)
    }

    /// The factors of one card topic, in contract order.
    pub fn factors_of(&self, topic: Topic) -> Vec<Factor> {
        self.factors
            .values()
            .filter(|f| f.code.topic() == topic)
            .cloned()
            .collect()
    }

    /// Every factor code present (for dose limits).
    pub fn present_codes(&self) -> Vec<FactorCode> {
        self.factors.keys().copied().collect()
    }

    fn add(&mut self, code: FactorCode, evidence: Evidence, inferred: bool) {
        let f = self.factors.entry(code).or_insert_with(|| Factor {
            code,
            evidence: vec![],
            inferred,
            analytes: vec![],
        });
        // A factor established by a record (not inferred) drops treatment-only evidence.
        if f.inferred && !inferred {
            f.inferred = false;
            f.evidence.clear();
        }
        if f.inferred == inferred {
            f.evidence.push(evidence);
        }
    }

    fn age(&mut self, record: &Record, today: Date) {
        let Some(patient) = &record.patient else {
            return;
        };
        let Some(born) = patient.birth_date else {
            return;
        };
        self.birth_date_known = true;
        // A partial date counts if the patient may already be 65: take the earliest day.
        if born.earliest().years_until(today) >= 65 {
            let what = format!("born {born}");
            self.add(
                FactorCode::Age65Plus,
                Evidence {
                    reference: patient.reference.clone(),
                    what,
                    date: Some(born),
                },
                false,
            );
        }
    }

    fn conditions(&mut self, k: &Knowledge, record: &Record) {
        for c in &record.conditions {
            if c.verification_status
                .as_deref()
                .is_some_and(|v| NOT_THE_PATIENTS.contains(&v))
            {
                continue;
            }
            let active = c
                .clinical_status
                .as_deref()
                .is_none_or(|s| ACTIVE.contains(&s));
            // Normalised once per condition, not once per factor the condition is tried against.
            let icd: Vec<Option<String>> = c
                .code
                .codings
                .iter()
                .map(|x| (x.system == CodeSystem::Icd10).then(|| normalize_icd10(&x.code)))
                .collect();
            for def in &k.factors {
                // A smoking state that is over (resolved, inactive, remission) is the history of
                // a smoker: the restriction covers past smokers too.
                let code = match def.code {
                    FactorCode::SmokerCurrent if !active => FactorCode::SmokerFormer,
                    _ if def.kind == FactorKind::Treatment => continue,
                    _ if def.kind == FactorKind::State && !active => continue,
                    code => code,
                };
                if let Some(matched) = matching_code(&def.conditions, &c.code, &icd) {
                    let what = describe(&c.code, matched);
                    self.add(
                        code,
                        Evidence {
                            reference: c.reference.clone(),
                            what,
                            date: c.date,
                        },
                        false,
                    );
                }
            }
            if let Some(code) = matching_code(&k.skin_note, &c.code, &icd) {
                let what = describe(&c.code, code);
                self.skin_notes.push(Evidence {
                    reference: c.reference.clone(),
                    what,
                    date: c.date,
                });
            }
        }
        if self.has(FactorCode::SmokerCurrent) || self.has(FactorCode::SmokerFormer) {
            self.smoking_known = true;
        }
    }

    fn smoking(&mut self, k: &Knowledge, record: &Record) {
        let rules = &k.observations.smoking;
        let status = latest(k, record, |o| {
            has_code(&o.code, CodeSystem::Loinc, |c| rules.loinc.contains(c))
        });
        if let Some(o) = status {
            if let ObservationValue::Concept(answer) = &o.value {
                let snomed = |set: &jakguard_knowledge::codes::CodeSet| {
                    answer
                        .codings
                        .iter()
                        .find(|c| c.system == CodeSystem::Snomed && set.contains(&c.code))
                };
                let ev = |c: &Coding| Evidence {
                    reference: o.reference.clone(),
                    what: describe(answer, &c.code),
                    date: o.effective,
                };
                if let Some(c) = snomed(&rules.current) {
                    self.add(FactorCode::SmokerCurrent, ev(c), false);
                    self.smoking_known = true;
                } else if let Some(c) = snomed(&rules.former) {
                    self.add(FactorCode::SmokerFormer, ev(c), false);
                    self.smoking_known = true;
                } else if snomed(&rules.never).is_some() {
                    self.smoking_known = true;
                }
            }
        }
        // Current smoking supersedes a former-smoker record.
        if self.has(FactorCode::SmokerCurrent) {
            self.factors.remove(&FactorCode::SmokerFormer);
        }
        let packs = latest(k, record, |o| {
            has_code(&o.code, CodeSystem::Snomed, |c| {
                rules.pack_years_snomed.contains(c)
            }) || has_code(&o.code, CodeSystem::Loinc, |c| {
                rules.pack_years_loinc.contains(c)
            })
        });
        if let Some(o) = packs {
            if let ObservationValue::Quantity(q) = &o.value {
                self.pack_years = Some((q.value, o.reference.clone()));
            }
        }
    }

    fn bmi(&mut self, k: &Knowledge, record: &Record) {
        let rules = &k.observations.bmi;
        let Some(o) = latest(k, record, |o| {
            has_code(&o.code, CodeSystem::Loinc, |c| rules.loinc.contains(c))
        }) else {
            return;
        };
        let ObservationValue::Quantity(q) = &o.value else {
            self.unreadable
                .push(format!("{} (BMI without a value)", o.reference));
            return;
        };
        if let Some(unit) = &q.unit {
            if !rules.units.iter().any(|u| u == unit) {
                self.unreadable
                    .push(format!("{} (BMI in unknown unit `{unit}`)", o.reference));
                return;
            }
        }
        if q.value >= rules.obese_at_least {
            let what = format!("BMI {} kg/m2", fmt_num(q.value));
            self.add(
                FactorCode::Obesity,
                Evidence {
                    reference: o.reference.clone(),
                    what,
                    date: o.effective,
                },
                false,
            );
        }
    }

    fn treatments(&mut self, k: &Knowledge, record: &Record) {
        for m in &record.medications {
            if m.status.as_deref().is_some_and(|s| s != "active") {
                continue;
            }
            let mut text_words = Words::default();
            for text in m.medication.concept.texts() {
                text_words.add(text);
            }
            for def in &k.factors {
                if def.treatment.is_empty()
                    || !treats(&def.treatment, &m.medication.concept, &text_words)
                {
                    continue;
                }
                let inferred = def.kind != FactorKind::Treatment;
                let what = m.medication.concept.label();
                self.add(
                    def.code,
                    Evidence {
                        reference: m.reference.clone(),
                        what,
                        date: m.date,
                    },
                    inferred,
                );
            }
        }
    }

    fn blood_counts(&mut self, k: &Knowledge, record: &Record, today: Date) {
        let window = k.observations.blood.window_days;
        let today_days = today.days_since_epoch();
        for def in &k.observations.blood.analytes {
            let mut candidates: Vec<&Observation> = record
                .observations
                .iter()
                .filter(|o| k.observations.is_final(o.status.as_deref()))
                .filter(|o| has_code(&o.code, CodeSystem::Loinc, |c| def.loinc.contains(c)))
                .filter(|o| {
                    o.effective.is_some_and(|d| {
                        let age = today_days - d.latest().days_since_epoch();
                        age <= window
                    })
                })
                .collect();
            candidates.sort_by(|a, b| order_latest(a, b));
            for o in candidates {
                let ObservationValue::Quantity(q) = &o.value else {
                    self.unreadable
                        .push(format!("{} ({} without a value)", o.reference, def.analyte));
                    continue;
                };
                let Some(factor) = q.unit.as_deref().and_then(|u| def.conversion(u)) else {
                    let unit = q.unit.as_deref().unwrap_or("no unit");
                    self.unreadable.push(format!(
                        "{} ({} in unknown unit `{unit}`)",
                        o.reference, def.analyte
                    ));
                    continue;
                };
                let value = q.value * factor;
                let what = format!(
                    "{} {} {}",
                    o.code.label(),
                    fmt_num(value),
                    def.canonical_unit
                );
                self.blood.insert(
                    def.analyte,
                    BloodResult {
                        value,
                        evidence: Evidence {
                            reference: o.reference.clone(),
                            what,
                            date: o.effective,
                        },
                    },
                );
                break;
            }
        }
    }
}

/// The latest final Observation satisfying `pred`; ties are broken by reference so that the
/// order of the record never matters.
fn latest<'r>(
    k: &Knowledge,
    record: &'r Record,
    pred: impl Fn(&Observation) -> bool,
) -> Option<&'r Observation> {
    record
        .observations
        .iter()
        .filter(|o| k.observations.is_final(o.status.as_deref()) && pred(o))
        .min_by(|a, b| order_latest(a, b))
}

/// Orders Observations latest first, then by reference.
fn order_latest(a: &Observation, b: &Observation) -> std::cmp::Ordering {
    let key = |o: &Observation| o.effective.map(PartialDate::sort_key).unwrap_or(i64::MIN);
    key(b)
        .cmp(&key(a))
        .then_with(|| a.reference.cmp(&b.reference))
}

fn has_code(concept: &Concept, system: CodeSystem, pred: impl Fn(&str) -> bool) -> bool {
    concept
        .codings
        .iter()
        .any(|c| c.system == system && pred(&c.code))
}

/// The first coding of `concept` that the matcher recognises.
/// The first coding of `concept` the matcher knows; `icd` holds each coding's normalised
/// ICD-10 code (`None` for other systems).
fn matching_code<'c>(
    m: &ConditionMatcher,
    concept: &'c Concept,
    icd: &[Option<String>],
) -> Option<&'c str> {
    concept.codings.iter().zip(icd).find_map(|(c, icd)| {
        let hit = match (c.system, icd) {
            (CodeSystem::Icd10, Some(normalized)) => m.icd10.contains(normalized),
            (CodeSystem::Snomed, _) => m.snomed.contains(&c.code),
            _ => false,
        };
        hit.then_some(c.code.as_str())
    })
}

fn treats(t: &TreatmentMatcher, concept: &Concept, text_words: &Words) -> bool {
    concept.codings.iter().any(|c| match c.system {
        CodeSystem::RxNorm => t.rxnorm.contains(&c.code),
        CodeSystem::Atc => t.atc.match_len(&c.code).is_some(),
        _ => false,
    }) || t.names.found_in(text_words)
}

/// "Essential hypertension (I10)".
fn describe(concept: &Concept, code: &str) -> String {
    match concept.texts().next() {
        Some(label) => {
            let mut text = String::with_capacity(label.len() + code.len() + 3);
            text.push_str(label);
            text.push_str(" (");
            text.push_str(code);
            text.push(')');
            text
        }
        None => code.to_owned(),
    }
}

/// A number without useless decimals: 5, 0.45, 12.5.
pub(crate) fn fmt_num(v: f64) -> String {
    // The usual measurement (a BMI, a blood count) is far from a tie between two thousandths:
    // then rounding `v * 1000` to an integer gives the thousandths `{:.3}` would. Below 1e12
    // the product's rounding error is under 0.0002, so a product within 0.49 of an integer
    // is, exactly, within 0.4902 of it: never at or past the tie. Written with integer
    // formatting; `{:.3}`'s exact float formatting, over a thousand instructions, is kept for
    // the rest: near-ties, huge values, NaN and infinities.
    let x = v * 1000.0;
    let r = x.round();
    if r.abs() < 1e12 && (x - r).abs() < 0.49 {
        return thousandths(r as i64);
    }
    fmt_num_exact(v)
}

/// `t` thousandths, as [`fmt_num_exact`] writes them.
fn thousandths(t: i64) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(24);
    if t < 0 {
        s.push('-');
    }
    let a = t.unsigned_abs();
    let _ = write!(s, "{}", a / 1000);
    let frac = a % 1000;
    if frac != 0 {
        let _ = write!(s, ".{frac:03}");
        let kept = s.trim_end_matches('0').len();
        s.truncate(kept);
    }
    if s == "-0" {
        s.clear();
        s.push('0');
    }
    s
}

/// The reference: `{:.3}`, trailing zeros and point removed, `-0` written `0`.
fn fmt_num_exact(v: f64) -> String {
    use std::fmt::Write as _;
    // One buffer, trimmed in place.
    let mut s = String::with_capacity(24);
    let _ = write!(s, "{v:.3}");
    let kept = s.trim_end_matches('0').trim_end_matches('.').len();
    s.truncate(kept);
    if s.is_empty() || s == "-0" {
        s.clear();
        s.push('0');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{fmt_num, fmt_num_exact};

    /// The fast path gives what `{:.3}` gives: on values of every usual magnitude, on
    /// thousandths, on near-ties either side, and on a million pseudo-random values.
    #[test]
    fn evidence_numbers_are_written_as_the_exact_formatting_writes_them() {
        let mut values = vec![
            0.0005,
            0.0015,
            0.0025,
            1.0005,
            2.6745,
            12.3455,
            -0.0005,
            -2.5005,
            999.9995,
            0.001,
            0.01,
            0.1,
            1.0,
            9.999,
            99.9994,
            99.9996,
            123456.789,
            -123456.789,
            4.35,
            5.05,
            0.125,
            2.675,
            1e14,
            -1e14,
            9.0e14,
            1.0e15,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            -f64::MAX,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..1_000_000 {
            // xorshift64*: deterministic, and spread over magnitudes from 1e-6 to 1e9.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let mantissa = (r >> 11) as f64 / (1u64 << 53) as f64;
            let exponent = (r % 16) as i32 - 6;
            let sign = if r & (1 << 10) == 0 { 1.0 } else { -1.0 };
            values.push(sign * mantissa * 10f64.powi(exponent));
        }
        for v in values {
            assert_eq!(fmt_num(v), fmt_num_exact(v), "{v:e}");
        }
    }

    #[test]
    fn evidence_numbers_show_at_most_three_decimals_and_no_trailing_zeros() {
        let cases = [
            (31.2, "31.2"),
            (100.0, "100"),
            (0.0, "0"),
            (-0.0, "0"),
            (-0.0001, "0"),
            (0.00025, "0"),
            (12.3456, "12.346"),
            (-3.5, "-3.5"),
            (7.1204, "7.12"),
            (1e20, "100000000000000000000"),
        ];
        for (v, want) in cases {
            assert_eq!(fmt_num(v), want, "{v}");
        }
    }
}
