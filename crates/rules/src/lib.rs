//! The clinical rules of jakguard.
//!
//! [`evaluate`] turns a patient [`Record`] and the draft [`Order`]s into one [`Assessment`] per
//! JAK inhibitor order, following `shared/clinical-rules.md` with the code lists, thresholds
//! and dose limits of [`Knowledge`].
//!
//! Invariants, relied upon by the service and pinned by tests:
//! - no I/O, no clock: today's date is an argument;
//! - total: there is no error path for clinical content. What cannot be read arrives as a
//!   [`DataGap`] or an unreadable flag and becomes a `missing-data` finding, never a panic;
//! - deterministic: the same input gives the same findings in the same order, whatever the
//!   order of the resources in the record.

pub mod date;
mod derive;
mod dose;
mod model;

pub use date::{Date, PartialDate};
pub use dose::{daily_dose_mg, strength_mg};
pub use model::*;

use jakguard_knowledge::{Analyte, FactorCode, Indicator, Knowledge, Molecule, Topic};

use crate::derive::Profile;

/// Recognises the molecule of a medication: by RxNorm code, then ATC code, then words of its
/// text and displays. `None` when it is no molecule jakguard knows.
pub fn recognise<'k>(k: &'k Knowledge, med: &MedicationInfo) -> Option<&'k Molecule> {
    let codings = &med.concept.codings;
    if let Some(m) = codings
        .iter()
        .filter(|c| c.system == CodeSystem::RxNorm)
        .find_map(|c| k.molecules.iter().find(|m| m.rxnorm.contains(&c.code)))
    {
        return Some(m);
    }
    let by_atc = codings
        .iter()
        .filter(|c| c.system == CodeSystem::Atc)
        .flat_map(|c| {
            k.molecules
                .iter()
                .filter_map(move |m| m.atc.match_len(&c.code).map(|len| (len, m)))
        })
        .max_by_key(|(len, _)| *len);
    if let Some((_, m)) = by_atc {
        return Some(m);
    }
    let mut words = jakguard_knowledge::codes::Words::default();
    for text in med.concept.texts() {
        words.add(text);
    }
    k.molecules.iter().find(|m| m.names.found_in(&words))
}

/// Evaluates every draft order against the record, as of `today`.
pub fn evaluate(k: &Knowledge, record: &Record, orders: &[Order], today: Date) -> Vec<Assessment> {
    let profile = Profile::derive(k, record, today);
    orders
        .iter()
        .filter_map(|order| assess(k, &profile, record, order))
        .collect()
}

fn assess(k: &Knowledge, p: &Profile, record: &Record, order: &Order) -> Option<Assessment> {
    let molecule = match recognise(k, &order.medication) {
        Some(m) if m.restricted => m,
        // An out-of-scope JAK inhibitor, or not a JAK inhibitor: nothing to say.
        Some(_) => return None,
        None if order.medication.unreadable => {
            return Some(Assessment {
                order: order.reference.clone(),
                molecule: None,
                findings: vec![Finding {
                    topic: Topic::MissingData,
                    indicator: Indicator::Info,
                    factors: vec![],
                    dose: None,
                    notes: vec![Note::OrderUnreadable],
                }],
            });
        }
        None => return None,
    };

    let mut findings = Vec::new();

    let restriction: Vec<Factor> = p.factors_of(Topic::AnsmRestriction);
    if !restriction.is_empty() {
        let codes: Vec<FactorCode> = restriction.iter().map(|f| f.code).collect();
        let mut notes = Vec::new();
        if codes.contains(&FactorCode::SmokerFormer) {
            notes.push(Note::FormerSmoker {
                pack_years: p.pack_years.clone(),
            });
        }
        notes.extend(p.skin_notes.iter().cloned().map(Note::SkinCancer));
        findings.push(Finding {
            topic: Topic::AnsmRestriction,
            indicator: k.indicators.restriction(&codes),
            factors: restriction,
            dose: None,
            notes,
        });
    }

    let vte = p.factors_of(Topic::VteCaution);
    if !vte.is_empty() {
        let codes: Vec<FactorCode> = vte.iter().map(|f| f.code).collect();
        let mut notes = Vec::new();
        if p.has(FactorCode::Obesity) {
            notes.push(Note::ObesityIsVteRisk);
        }
        findings.push(Finding {
            topic: Topic::VteCaution,
            indicator: k.indicators.vte(&codes),
            factors: vte,
            dose: None,
            notes,
        });
    }

    let ctd = p.factors_of(Topic::CtdOffLabel);
    if !ctd.is_empty() {
        findings.push(Finding {
            topic: Topic::CtdOffLabel,
            indicator: Indicator::Warning,
            factors: ctd,
            dose: None,
            notes: vec![],
        });
    }

    if let Some(dose) = dose::check(k, &molecule.id, &p.present_codes(), order) {
        findings.push(Finding {
            topic: Topic::DoseAdjustment,
            indicator: Indicator::Warning,
            factors: vec![],
            dose: Some(dose),
            notes: vec![],
        });
    }

    let thresholds = k.thresholds_for(&molecule.id);
    let mut low: Vec<Factor> = Vec::new();
    let mut missing_analytes: Vec<Analyte> = Vec::new();
    for (analyte, threshold) in thresholds {
        match p.blood.get(analyte) {
            Some(result) if result.value < *threshold => {
                let code = k.analyte_factor[analyte];
                let mut ev = result.evidence.clone();
                ev.what = format!("{} (< {threshold})", ev.what);
                low.push(Factor {
                    code,
                    evidence: vec![ev],
                    inferred: false,
                    analytes: vec![*analyte],
                });
            }
            Some(_) => {}
            None => missing_analytes.push(*analyte),
        }
    }
    if !low.is_empty() {
        low.sort_by_key(|f| f.code);
        findings.push(Finding {
            topic: Topic::BloodCount,
            indicator: Indicator::Critical,
            factors: low,
            dose: None,
            notes: vec![],
        });
    }

    let mut missing = Vec::new();
    if !p.smoking_known {
        missing.push(Factor {
            code: FactorCode::SmokingStatusUnknown,
            evidence: vec![],
            inferred: false,
            analytes: vec![],
        });
    }
    if !p.birth_date_known {
        let evidence = record
            .patient
            .as_ref()
            .map(|pt| Evidence {
                reference: pt.reference.clone(),
                what: "birthDate".into(),
                date: None,
            })
            .into_iter()
            .collect();
        missing.push(Factor {
            code: FactorCode::BirthDateUnknown,
            evidence,
            inferred: false,
            analytes: vec![],
        });
    }
    if !missing_analytes.is_empty() {
        missing.push(Factor {
            code: FactorCode::BloodCountMissing,
            evidence: vec![],
            inferred: false,
            analytes: missing_analytes,
        });
    }
    let mut notes = Vec::new();
    let keys: Vec<String> = record
        .gaps
        .iter()
        .filter_map(|g| match g {
            DataGap::MissingKey(k) => Some(k.clone()),
            DataGap::Unreadable { .. } => None,
        })
        .collect();
    if !keys.is_empty() {
        notes.push(Note::MissingKeys(keys));
    }
    let mut unreadable: Vec<String> = record
        .gaps
        .iter()
        .filter_map(|g| match g {
            DataGap::Unreadable { what } => Some(what.clone()),
            DataGap::MissingKey(_) => None,
        })
        .chain(p.unreadable.iter().cloned())
        .collect();
    unreadable.sort();
    unreadable.dedup();
    if !unreadable.is_empty() {
        notes.push(Note::Unreadable(unreadable));
    }
    if !missing.is_empty() || !notes.is_empty() {
        findings.push(Finding {
            topic: Topic::MissingData,
            indicator: Indicator::Info,
            factors: missing,
            dose: None,
            notes,
        });
    }

    Some(Assessment {
        order: order.reference.clone(),
        molecule: Some(molecule.id.clone()),
        findings,
    })
}
