//! What the rules read (a lean patient record and the draft orders) and what they return
//! (findings). These types know nothing of JSON: the FHIR edge fills them in.

use crate::date::PartialDate;
use jakguard_knowledge::{Analyte, FactorCode, Indicator, Topic};

/// A relative FHIR reference such as `Condition/c7`, naming the evidence of a finding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef(String);

impl ResourceRef {
    pub fn new(resource_type: &str, id: Option<&str>) -> Self {
        // Built for every resource read: pushed rather than `format!`ed, whose machinery cost
        // several times the copy (callgrind: 7.9k of a call's instructions).
        let id = id.unwrap_or("(no id)");
        let mut text = String::with_capacity(resource_type.len() + 1 + id.len());
        text.push_str(resource_type);
        text.push('/');
        text.push_str(id);
        ResourceRef(text)
    }

    /// A reference already written `Type/id`.
    pub fn from_relative(text: &str) -> Self {
        ResourceRef(text.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The code systems the rules recognise; every other system is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeSystem {
    Icd10,
    Snomed,
    Loinc,
    RxNorm,
    Atc,
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Coding {
    pub system: CodeSystem,
    pub code: String,
    pub display: Option<String>,
}

/// A CodeableConcept: codings and free text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Concept {
    pub codings: Vec<Coding>,
    pub text: Option<String>,
}

impl Concept {
    /// Every piece of human text: `text` and each coding's display.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.text
            .as_deref()
            .into_iter()
            .chain(self.codings.iter().filter_map(|c| c.display.as_deref()))
    }

    /// A short human label: the text, or the first display, or the first code.
    pub fn label(&self) -> String {
        self.texts()
            .next()
            .map(str::to_owned)
            .or_else(|| self.codings.first().map(|c| c.code.clone()))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub value: f64,
    /// UCUM `code` when present, else the human `unit`.
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Patient {
    pub reference: ResourceRef,
    pub birth_date: Option<PartialDate>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub reference: ResourceRef,
    pub code: Concept,
    pub clinical_status: Option<String>,
    pub verification_status: Option<String>,
    /// Onset, or else the recorded date: shown as the evidence's date.
    pub date: Option<PartialDate>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ObservationValue {
    Quantity(Quantity),
    Concept(Concept),
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub reference: ResourceRef,
    pub status: Option<String>,
    pub code: Concept,
    pub effective: Option<PartialDate>,
    pub value: ObservationValue,
}

/// A dosage instruction, as far as the daily dose needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dosage {
    pub dose: Option<Quantity>,
    pub frequency: Option<f64>,
    pub period: Option<f64>,
    pub period_unit: Option<String>,
    pub timing_code: Option<String>,
}

/// A strength such as 5 mg per tablet, from `Medication.ingredient.strength`.
#[derive(Debug, Clone, PartialEq)]
pub struct Strength {
    pub numerator: Quantity,
    pub denominator: Option<Quantity>,
}

/// What a medication is: its concept (codes, text) and its strengths when a Medication
/// resource gave them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MedicationInfo {
    pub concept: Concept,
    pub strengths: Vec<Strength>,
    /// The medication was present but could not be read.
    pub unreadable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MedicationKind {
    Request,
    Statement,
}

/// A MedicationRequest or MedicationStatement of the record.
#[derive(Debug, Clone, PartialEq)]
pub struct MedicationUse {
    pub reference: ResourceRef,
    pub kind: MedicationKind,
    pub status: Option<String>,
    pub medication: MedicationInfo,
    pub date: Option<PartialDate>,
}

/// Something in the request that hid part of the record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DataGap {
    /// A prefetch key that was neither provided nor fetched (`conditions`, ...).
    MissingKey(String),
    /// A resource, or a field the rules need, that could not be read.
    Unreadable { what: String },
}

/// The patient's record as the rules see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub patient: Option<Patient>,
    pub conditions: Vec<Condition>,
    pub observations: Vec<Observation>,
    pub medications: Vec<MedicationUse>,
    pub gaps: Vec<DataGap>,
}

/// A draft order to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub reference: ResourceRef,
    pub medication: MedicationInfo,
    pub dosages: Vec<Dosage>,
}

// ---- findings ----

/// One piece of evidence of a factor: which resource, what it says, when.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub reference: ResourceRef,
    /// What the resource says, e.g. "Essential hypertension (I10)" or "BMI 32.1 kg/m2".
    pub what: String,
    pub date: Option<PartialDate>,
}

/// A factor present in the record, with its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    pub code: FactorCode,
    pub evidence: Vec<Evidence>,
    /// Only suggested by a treatment ("probable, from treatment").
    pub inferred: bool,
    /// Analytes concerned, for blood-count factors.
    pub analytes: Vec<Analyte>,
}

/// The dose part of a `dose-adjustment` finding.
#[derive(Debug, Clone, PartialEq)]
pub struct DoseFinding {
    pub ordered_mg_per_day: f64,
    pub max_mg_per_day: f64,
    pub propose_dose_mg: f64,
    pub propose_per_day: u32,
    /// The factors that lower the limit.
    pub because: Vec<FactorCode>,
    /// Key of a `note.*` text.
    pub note: Option<String>,
}

/// Extra context a card shows besides its factors.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A former smoker: the clinician must judge "long-time"; pack-years when recorded.
    FormerSmoker {
        pack_years: Option<(f64, ResourceRef)>,
    },
    /// A non-melanoma skin cancer: not a malignancy factor, but skin examination matters more.
    SkinCancer(Evidence),
    /// Obesity is also a VTE risk factor (shown on the VTE card).
    ObesityIsVteRisk,
    /// Keys that were not provided.
    MissingKeys(Vec<String>),
    /// Resources or fields that could not be read.
    Unreadable(Vec<String>),
    /// The order's medication itself could not be read.
    OrderUnreadable,
}

/// One card's worth of findings.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub topic: Topic,
    pub indicator: Indicator,
    pub factors: Vec<Factor>,
    pub dose: Option<DoseFinding>,
    pub notes: Vec<Note>,
}

/// Everything the rules say about one draft order.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub order: ResourceRef,
    /// The recognised molecule; `None` when the medication could not be read.
    pub molecule: Option<String>,
    pub findings: Vec<Finding>,
}
