//! Small constructors for the rules-level clinical suite: records and orders are built in
//! code, so each case states only what matters to it.
#![allow(dead_code)]

use std::sync::OnceLock;

pub use jakguard_knowledge::{FactorCode as F, Indicator, Knowledge, Topic};
pub use jakguard_rules::*;

/// The embedded knowledge, loaded once for the whole test binary.
pub fn k() -> &'static Knowledge {
    static K: OnceLock<Knowledge> = OnceLock::new();
    K.get_or_init(|| Knowledge::embedded().expect("the embedded knowledge loads"))
}

/// The evaluation date of every case that does not say otherwise.
pub const TODAY: Date = Date {
    year: 2026,
    month: 12,
    day: 1,
};

pub fn pd(s: &str) -> PartialDate {
    PartialDate::parse(s).unwrap_or_else(|| panic!("`{s}` is not a FHIR date"))
}

pub fn date(s: &str) -> Date {
    Date::parse(s).unwrap_or_else(|| panic!("`{s}` is not a date"))
}

/// The day `n` days before [`TODAY`].
pub fn days_ago(n: i64) -> PartialDate {
    pd(&Date::from_days_since_epoch(TODAY.days_since_epoch() - n).to_string())
}

// ---- concepts ----

pub fn coded(system: CodeSystem, code: &str) -> Concept {
    Concept {
        codings: vec![Coding {
            system,
            code: code.into(),
            display: None,
        }],
        text: None,
    }
}

/// Any ICD-10 flavour: the FHIR edge maps WHO, ICD-10-CM and CIM-10 system URIs to `Icd10`;
/// the flavours differ in how the code is written.
pub fn icd(code: &str) -> Concept {
    coded(CodeSystem::Icd10, code)
}
pub fn sct(code: &str) -> Concept {
    coded(CodeSystem::Snomed, code)
}
pub fn loinc(code: &str) -> Concept {
    coded(CodeSystem::Loinc, code)
}
pub fn rxnorm(code: &str) -> Concept {
    coded(CodeSystem::RxNorm, code)
}
pub fn atc(code: &str) -> Concept {
    coded(CodeSystem::Atc, code)
}
pub fn text(t: &str) -> Concept {
    Concept {
        codings: vec![],
        text: Some(t.into()),
    }
}
/// A coding whose only human text is its display.
pub fn displayed(system: CodeSystem, code: &str, display: &str) -> Concept {
    Concept {
        codings: vec![Coding {
            system,
            code: code.into(),
            display: Some(display.into()),
        }],
        text: None,
    }
}

// ---- resources ----

pub fn reference(r: &str) -> ResourceRef {
    ResourceRef::from_relative(r)
}

pub fn patient(birth: Option<&str>) -> Patient {
    Patient {
        reference: reference("Patient/p1"),
        birth_date: birth.map(pd),
    }
}

/// An active, confirmed Condition `Condition/{id}`.
pub fn condition(id: &str, code: Concept) -> Condition {
    Condition {
        reference: reference(&format!("Condition/{id}")),
        code,
        clinical_status: Some("active".into()),
        verification_status: Some("confirmed".into()),
        date: Some(pd("2019-05-01")),
    }
}

pub fn with_status(
    mut c: Condition,
    clinical: Option<&str>,
    verification: Option<&str>,
) -> Condition {
    c.clinical_status = clinical.map(str::to_owned);
    c.verification_status = verification.map(str::to_owned);
    c
}

/// A final Observation with a quantity.
pub fn quantity_obs(
    id: &str,
    code: Concept,
    value: f64,
    unit: Option<&str>,
    effective: PartialDate,
) -> Observation {
    Observation {
        reference: reference(&format!("Observation/{id}")),
        status: Some("final".into()),
        code,
        effective: Some(effective),
        value: ObservationValue::Quantity(Quantity {
            value,
            unit: unit.map(str::to_owned),
        }),
    }
}

/// A final smoking-status Observation (LOINC 72166-2) answered with a SNOMED CT concept.
pub fn smoking_obs(id: &str, answer: &str, effective: PartialDate) -> Observation {
    Observation {
        reference: reference(&format!("Observation/{id}")),
        status: Some("final".into()),
        code: loinc("72166-2"),
        effective: Some(effective),
        value: ObservationValue::Concept(sct(answer)),
    }
}

pub fn bmi_obs(id: &str, value: f64, effective: PartialDate) -> Observation {
    quantity_obs(id, loinc("39156-5"), value, Some("kg/m2"), effective)
}

pub const LYMPHOCYTES: &str = "731-0";
pub const NEUTROPHILS: &str = "751-8";
pub const HAEMOGLOBIN: &str = "718-7";
pub const PLATELETS: &str = "777-3";

/// A normal, recent, complete blood count.
pub fn normal_counts() -> Vec<Observation> {
    vec![
        quantity_obs("lym", loinc(LYMPHOCYTES), 2.0, Some("10*9/L"), days_ago(10)),
        quantity_obs("neu", loinc(NEUTROPHILS), 4.0, Some("10*9/L"), days_ago(10)),
        quantity_obs("hb", loinc(HAEMOGLOBIN), 14.0, Some("g/dL"), days_ago(10)),
        quantity_obs("plt", loinc(PLATELETS), 250.0, Some("10*9/L"), days_ago(10)),
    ]
}

pub fn med_use(
    id: &str,
    kind: MedicationKind,
    status: Option<&str>,
    concept: Concept,
) -> MedicationUse {
    let prefix = match kind {
        MedicationKind::Request => "MedicationRequest",
        MedicationKind::Statement => "MedicationStatement",
    };
    MedicationUse {
        reference: reference(&format!("{prefix}/{id}")),
        kind,
        status: status.map(str::to_owned),
        medication: MedicationInfo {
            concept,
            strengths: vec![],
            unreadable: false,
        },
        date: Some(pd("2026-06-01")),
    }
}

pub fn active_request(id: &str, concept: Concept) -> MedicationUse {
    med_use(id, MedicationKind::Request, Some("active"), concept)
}

/// A 50-year-old never smoker with a normal recent blood count and nothing else: every
/// factor case adds one thing to it.
pub fn baseline() -> Record {
    let mut observations = vec![smoking_obs("smoke", "266919005", days_ago(30))];
    observations.extend(normal_counts());
    Record {
        patient: Some(patient(Some("1976-06-15"))),
        conditions: vec![],
        observations,
        medications: vec![],
        gaps: vec![],
    }
}

pub fn baseline_with(conditions: Vec<Condition>) -> Record {
    let mut r = baseline();
    r.conditions = conditions;
    r
}

/// A 70-year-old: age alone makes every restriction limit apply.
pub fn elderly() -> Record {
    let mut r = baseline();
    r.patient = Some(patient(Some("1956-03-10")));
    r
}

// ---- orders ----

pub fn mg_dose(value: f64, frequency: f64) -> Dosage {
    Dosage {
        dose: Some(Quantity {
            value,
            unit: Some("mg".into()),
        }),
        frequency: Some(frequency),
        period: Some(1.0),
        period_unit: Some("d".into()),
        timing_code: None,
    }
}

pub fn order(concept: Concept, dosages: Vec<Dosage>) -> Order {
    Order {
        reference: reference("MedicationRequest/draft-1"),
        medication: MedicationInfo {
            concept,
            strengths: vec![],
            unreadable: false,
        },
        dosages,
    }
}

/// An order recognised by its molecule name, with a dose in mg.
pub fn order_mg(molecule: &str, mg: f64, per_day: f64) -> Order {
    order(text(molecule), vec![mg_dose(mg, per_day)])
}

// ---- evaluating ----

pub fn run_at(record: &Record, orders: &[Order], today: Date) -> Vec<Assessment> {
    evaluate(k(), record, orders, today)
}

/// The one assessment of one order, as of [`TODAY`].
pub fn assess(record: &Record, order: &Order) -> Assessment {
    assess_at(record, order, TODAY)
}

pub fn assess_at(record: &Record, order: &Order, today: Date) -> Assessment {
    let mut out = run_at(record, std::slice::from_ref(order), today);
    assert_eq!(out.len(), 1, "expected one assessment, got {out:#?}");
    out.remove(0)
}

/// The order every factor case uses: tofacitinib 5 mg twice daily (at every limit).
pub fn tofacitinib_5_bid() -> Order {
    order(rxnorm("1357541"), vec![mg_dose(5.0, 2.0)])
}

pub fn finding(a: &Assessment, topic: Topic) -> Option<&Finding> {
    a.findings.iter().find(|f| f.topic == topic)
}

/// Every factor of every card, with the topic of its card.
pub fn all_factors(a: &Assessment) -> Vec<(Topic, &Factor)> {
    a.findings
        .iter()
        .flat_map(|f| f.factors.iter().map(move |x| (f.topic, x)))
        .collect()
}

pub fn factor(a: &Assessment, code: F) -> Option<&Factor> {
    all_factors(a)
        .into_iter()
        .find(|(_, f)| f.code == code)
        .map(|(_, f)| f)
}

pub fn codes_on(a: &Assessment, topic: Topic) -> Vec<F> {
    finding(a, topic)
        .map(|f| f.factors.iter().map(|x| x.code).collect())
        .unwrap_or_default()
}

pub fn evidence_refs(f: &Factor) -> Vec<&str> {
    f.evidence.iter().map(|e| e.reference.as_str()).collect()
}

/// Every factor sits on the card of its topic, and no topic appears twice.
pub fn assert_well_formed(a: &Assessment) {
    for (topic, f) in all_factors(a) {
        assert_eq!(f.code.topic(), topic, "{:?} on the wrong card", f.code);
    }
    let mut topics: Vec<Topic> = a.findings.iter().map(|f| f.topic).collect();
    topics.sort();
    let n = topics.len();
    topics.dedup();
    assert_eq!(n, topics.len(), "a topic appears twice: {a:#?}");
}

/// Runs a table: each failing row is reported with its description, all at once.
pub fn check_all<C>(
    cases: &[C],
    desc: impl Fn(&C) -> &str,
    check: impl Fn(&C) -> Result<(), String>,
) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("- {}: {e}", desc(c))))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
