//! The ordered daily dose, and whether it exceeds what this patient's factors allow.
//!
//! When any part of the dose cannot be read, the answer is `None`: jakguard says nothing
//! about a dose it would have to guess.

use jakguard_knowledge::codes::Words;
use jakguard_knowledge::{FactorCode, Knowledge};

use crate::model::*;

/// Milligrams per day ordered by `order`, if every dosage instruction can be read.
/// Several instructions (morning and evening doses) are added up.
pub fn daily_dose_mg(k: &Knowledge, order: &Order) -> Option<f64> {
    if order.dosages.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for d in &order.dosages {
        total += instruction_mg_per_day(k, &order.medication, d)?;
    }
    (total.is_finite() && total > 0.0).then_some(total)
}

fn instruction_mg_per_day(k: &Knowledge, med: &MedicationInfo, d: &Dosage) -> Option<f64> {
    let dose = d.dose.as_ref()?;
    let unit = dose.unit.as_deref().unwrap_or("");
    let mg = if let Some(per) = k.doses.mg_per(unit) {
        dose.value * per
    } else if unit.is_empty() || k.doses.is_presentation(unit) {
        dose.value * strength_mg(k, med)?
    } else {
        return None;
    };
    Some(mg * per_day(k, d)?)
}

/// Administrations per day from timing.repeat, or else timing.code.
fn per_day(k: &Knowledge, d: &Dosage) -> Option<f64> {
    if d.frequency.is_some() || d.period.is_some() {
        let frequency = d.frequency.unwrap_or(1.0);
        let period = d.period.unwrap_or(1.0);
        let days = match d.period_unit.as_deref().unwrap_or("d") {
            "s" => period / 86_400.0,
            "min" => period / 1_440.0,
            "h" => period / 24.0,
            "d" => period,
            "wk" => period * 7.0,
            "mo" => period * 30.0,
            "a" => period * 365.0,
            _ => return None,
        };
        return (days > 0.0 && frequency > 0.0).then(|| frequency / days);
    }
    let code = d.timing_code.as_deref()?;
    k.doses
        .timing_codes
        .get(&code.to_ascii_uppercase())
        .copied()
}

/// The strength of one unit of presentation, in mg: from Medication.ingredient.strength, or
/// else from a "5 MG" in the medication's text or displays. Two different strengths: unknown.
pub fn strength_mg(k: &Knowledge, med: &MedicationInfo) -> Option<f64> {
    let mut found: Vec<f64> = Vec::new();
    for s in &med.strengths {
        let per = s.numerator.unit.as_deref().and_then(|u| k.doses.mg_per(u));
        let per_unit = s.denominator.as_ref().map_or(Some(1.0), |d| {
            let unit = d.unit.as_deref().unwrap_or("");
            (unit.is_empty() || k.doses.is_presentation(unit)).then_some(d.value)
        });
        if let (Some(per), Some(den)) = (per, per_unit) {
            if den > 0.0 {
                found.push(s.numerator.value * per / den);
            }
        }
    }
    if found.is_empty() {
        for text in med.concept.texts() {
            let w = Words::of(text);
            for (number, unit) in w.iter().zip(w.iter().skip(1)) {
                if let Some(per) = k.doses.mg_per(unit) {
                    if let Ok(v) = number.replace(',', ".").parse::<f64>() {
                        found.push(v * per);
                    }
                }
            }
            // "5mg" written as one word
            for word in w.iter() {
                if let Some(num) = word.strip_suffix("mg") {
                    if let Ok(v) = num.parse::<f64>() {
                        found.push(v);
                    }
                }
            }
        }
    }
    let first = *found.first()?;
    found
        .iter()
        .all(|v| (v - first).abs() < 1e-9)
        .then_some(first)
}

/// The dose finding for `order`, if its daily dose exceeds the lowest limit that applies.
pub(crate) fn check(
    k: &Knowledge,
    molecule: &str,
    present: &[FactorCode],
    order: &Order,
) -> Option<DoseFinding> {
    let limit = k
        .doses
        .limits
        .iter()
        .filter(|l| l.molecule == molecule)
        .filter_map(|l| {
            let because = l.triggered_by(present);
            (!because.is_empty()).then_some((l, because))
        })
        .min_by(|a, b| a.0.max_mg_per_day.total_cmp(&b.0.max_mg_per_day))?;
    let ordered = daily_dose_mg(k, order)?;
    let (l, because) = limit;
    // Decimals written in the order (0.5 tablet of 10 mg) must not trip the limit by rounding.
    (ordered > l.max_mg_per_day + 1e-6).then(|| DoseFinding {
        ordered_mg_per_day: ordered,
        max_mg_per_day: l.max_mg_per_day,
        propose_dose_mg: l.propose_dose_mg,
        propose_per_day: l.propose_per_day,
        because,
        note: l.note.clone(),
    })
}
