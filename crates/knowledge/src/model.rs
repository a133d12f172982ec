//! The validated knowledge, and how each data file becomes it.
//!
//! Each file is first read into a `Raw*` struct that mirrors its TOML layout (unknown keys are
//! refused, so a misspelt key is an error, not a silently ignored rule); then every entry is
//! checked and compiled into matchers.

use std::collections::BTreeMap;

use crate::hash::FastMap;

use serde::Deserialize;

use crate::codes::{AtcList, CodeSet, IcdList, NameList};
use crate::vocab::{Analyte, FactorCode, Indicator, Lang, Topic};
use crate::{KnowledgeError, Sources};

/// Everything the rules and the cards need to know, validated.
#[derive(Debug, Clone)]
pub struct Knowledge {
    version: String,
    pub molecules: Vec<Molecule>,
    pub factors: Vec<FactorDef>,
    pub skin_note: ConditionMatcher,
    pub observations: ObservationRules,
    pub thresholds: BTreeMap<String, Vec<(Analyte, f64)>>,
    pub analyte_factor: BTreeMap<Analyte, FactorCode>,
    pub doses: DoseRules,
    pub texts: Texts,
    pub indicators: IndicatorPolicy,
}

impl Knowledge {
    /// The versions of the data files, joined: shown in discovery and in the audit trail.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn molecule(&self, id: &str) -> Option<&Molecule> {
        self.molecules.iter().find(|m| m.id == id)
    }

    pub fn factor(&self, code: FactorCode) -> Option<&FactorDef> {
        self.factors.iter().find(|f| f.code == code)
    }

    /// The start thresholds of a molecule, in analyte order.
    pub fn thresholds_for(&self, molecule: &str) -> &[(Analyte, f64)] {
        self.thresholds
            .get(molecule)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// A medication jakguard recognises.
#[derive(Debug, Clone)]
pub struct Molecule {
    pub id: String,
    /// Whether the 2023 class restriction applies (cards are produced only then).
    pub restricted: bool,
    pub display_en: String,
    pub display_fr: String,
    pub names: NameList,
    pub atc: AtcList,
    pub rxnorm: CodeSet,
}

impl Molecule {
    pub fn display(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.display_en,
            Lang::Fr => &self.display_fr,
        }
    }
}

/// Codes that identify a condition: ICD-10 patterns and SNOMED CT concepts.
#[derive(Debug, Clone, Default)]
pub struct ConditionMatcher {
    pub icd10: IcdList,
    pub snomed: CodeSet,
}

/// Whether a factor is a state (only an active one counts), a history (a resolved one counts
/// too), or derived from treatment only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactorKind {
    State,
    History,
    Treatment,
}

/// Treatments that suggest (or, for `FactorKind::Treatment`, establish) a factor.
#[derive(Debug, Clone, Default)]
pub struct TreatmentMatcher {
    pub atc: AtcList,
    pub names: NameList,
    pub rxnorm: CodeSet,
}

impl TreatmentMatcher {
    pub fn is_empty(&self) -> bool {
        self.atc.is_empty() && self.names.is_empty() && self.rxnorm.is_empty()
    }
}

/// A risk factor read from Conditions and treatments.
#[derive(Debug, Clone)]
pub struct FactorDef {
    pub code: FactorCode,
    pub kind: FactorKind,
    pub conditions: ConditionMatcher,
    pub treatment: TreatmentMatcher,
}

#[derive(Debug, Clone)]
pub struct ObservationRules {
    pub final_statuses: Vec<String>,
    pub smoking: SmokingRules,
    pub bmi: BmiRules,
    pub blood: BloodRules,
}

impl ObservationRules {
    pub fn is_final(&self, status: Option<&str>) -> bool {
        status.is_some_and(|s| self.final_statuses.iter().any(|f| f == s))
    }
}

#[derive(Debug, Clone)]
pub struct SmokingRules {
    pub loinc: CodeSet,
    pub current: CodeSet,
    pub former: CodeSet,
    pub never: CodeSet,
    pub pack_years_snomed: CodeSet,
    pub pack_years_loinc: CodeSet,
}

#[derive(Debug, Clone)]
pub struct BmiRules {
    pub loinc: CodeSet,
    pub obese_at_least: f64,
    pub units: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct BloodRules {
    pub window_days: i64,
    pub analytes: Vec<AnalyteDef>,
}

#[derive(Debug, Clone)]
pub struct AnalyteDef {
    pub analyte: Analyte,
    pub loinc: CodeSet,
    pub canonical_unit: String,
    /// (unit as written, factor to the canonical unit)
    pub units: Vec<(String, f64)>,
}

impl AnalyteDef {
    /// The factor that converts a value in `unit` to the canonical unit, if the unit is known.
    pub fn conversion(&self, unit: &str) -> Option<f64> {
        let unit = unit.trim();
        self.units.iter().find(|(u, _)| u == unit).map(|(_, f)| *f)
    }
}

#[derive(Debug, Clone)]
pub struct DoseRules {
    pub mass_units: Vec<(String, f64)>,
    pub presentation_units: Vec<String>,
    pub timing_codes: FastMap<String, f64>,
    pub limits: Vec<DoseLimit>,
}

impl DoseRules {
    /// Milligrams per unit of a mass unit (`mg` 1, `g` 1000), if it is one.
    pub fn mg_per(&self, unit: &str) -> Option<f64> {
        let unit = unit.trim();
        self.mass_units
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(unit))
            .map(|(_, f)| *f)
    }

    /// Whether a unit counts tablets, capsules or other units of presentation.
    pub fn is_presentation(&self, unit: &str) -> bool {
        let unit = unit.trim().to_lowercase();
        self.presentation_units.contains(&unit)
    }
}

/// A daily dose limit for patients with some factors.
#[derive(Debug, Clone)]
pub struct DoseLimit {
    pub molecule: String,
    pub when_any: Vec<FactorCode>,
    /// `when_any` includes "any-restriction-factor".
    pub any_restriction_factor: bool,
    pub max_mg_per_day: f64,
    pub propose_dose_mg: f64,
    pub propose_per_day: u32,
    /// Key of a `note.*` text shown with the limit.
    pub note: Option<String>,
}

impl DoseLimit {
    /// Which of the patient's factors make this limit apply (empty: it does not apply).
    pub fn triggered_by(&self, present: &[FactorCode]) -> Vec<FactorCode> {
        present
            .iter()
            .copied()
            .filter(|f| {
                self.when_any.contains(f)
                    || (self.any_restriction_factor && f.topic() == Topic::AnsmRestriction)
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct IndicatorPolicy {
    pub restriction_critical_when_any: Vec<FactorCode>,
    pub restriction_critical_count: usize,
    pub vte_warning_when_any: Vec<FactorCode>,
}

impl IndicatorPolicy {
    pub fn restriction(&self, factors: &[FactorCode]) -> Indicator {
        if factors.len() >= self.restriction_critical_count
            || factors
                .iter()
                .any(|f| self.restriction_critical_when_any.contains(f))
        {
            Indicator::Critical
        } else {
            Indicator::Warning
        }
    }

    pub fn vte(&self, factors: &[FactorCode]) -> Indicator {
        if factors
            .iter()
            .any(|f| self.vte_warning_when_any.contains(f))
        {
            Indicator::Warning
        } else {
            Indicator::Info
        }
    }
}

/// Every card text, in both languages.
#[derive(Debug, Clone)]
pub struct Texts {
    en: FastMap<String, String>,
    fr: FastMap<String, String>,
}

/// Text keys the service uses besides the per-code ones (`topic.*`, `factor.*`, `analyte.*`).
pub const TEXT_KEYS: &[&str] = &[
    "source_label",
    "notice_link_label",
    "inferred",
    "evidence_none",
    "recorded",
    "summary.ansm-restriction",
    "summary.ansm-restriction-critical",
    "summary.vte-caution",
    "summary.ctd-off-label",
    "summary.dose-adjustment",
    "summary.blood-count",
    "summary.missing-data",
    "summary.order-unreadable",
    "detail.order",
    "detail.restriction-intro",
    "detail.restriction-advice",
    "detail.former-smoker",
    "detail.pack-years",
    "detail.skin-note",
    "detail.vte-intro",
    "detail.vte-ask",
    "detail.vte-obesity",
    "detail.ctd-intro",
    "detail.ctd-risks",
    "detail.ctd-dose",
    "detail.dose",
    "detail.blood-count",
    "detail.missing-intro",
    "detail.missing-keys",
    "detail.missing-blood",
    "detail.unreadable",
    "detail.order-unreadable",
    "dose.proposed",
    "dose.once",
    "dose.twice",
    "dose.n-times",
    "suggestion.cancel",
    "suggestion.cancel-action",
    "suggestion.change-dose",
    "suggestion.change-dose-action",
    "override.no-alternative",
    "override.expert-opinion",
    "override.risks-discussed",
];

impl Texts {
    /// The text of `key` in `lang`. Every key the service uses is checked at load time; an
    /// unchecked key gives an empty text rather than failing a card.
    pub fn get<'a>(&'a self, lang: Lang, key: &str) -> &'a str {
        let map = match lang {
            Lang::En => &self.en,
            Lang::Fr => &self.fr,
        };
        map.get(key).map(String::as_str).unwrap_or("")
    }

    /// The text of `{prefix}.{name}` (`factor.smoker`, `topic.vte-caution`...), without
    /// allocating the key: cards look several of these up per card.
    pub fn get_in<'a>(&'a self, lang: Lang, prefix: &str, name: &str) -> &'a str {
        let mut buf = [0u8; 96];
        let len = prefix.len() + 1 + name.len();
        if len > buf.len() {
            return self.get(lang, &format!("{prefix}.{name}"));
        }
        buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buf[prefix.len()] = b'.';
        buf[prefix.len() + 1..len].copy_from_slice(name.as_bytes());
        // Two strings and a dot: always UTF-8.
        std::str::from_utf8(&buf[..len]).map_or("", |key| self.get(lang, key))
    }
}

// ---- raw file layouts ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMolecules {
    version: String,
    molecule: Vec<RawMolecule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMolecule {
    id: String,
    scope: String,
    display: RawLangText,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    atc: Vec<String>,
    #[serde(default)]
    rxnorm: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLangText {
    en: String,
    fr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFactors {
    version: String,
    factor: Vec<RawFactor>,
    #[serde(default)]
    note: Vec<RawNote>,
    indicators: RawIndicators,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFactor {
    code: String,
    kind: FactorKind,
    #[serde(default)]
    icd10: Vec<String>,
    #[serde(default)]
    snomed: Vec<String>,
    #[serde(default)]
    treatment_atc: Vec<String>,
    #[serde(default)]
    treatment_names: Vec<String>,
    #[serde(default)]
    treatment_rxnorm: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNote {
    code: String,
    #[allow(dead_code)]
    kind: FactorKind,
    #[serde(default)]
    icd10: Vec<String>,
    #[serde(default)]
    snomed: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndicators {
    restriction_critical_when_any: Vec<String>,
    restriction_critical_count: usize,
    vte_warning_when_any: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObservations {
    version: String,
    final_statuses: Vec<String>,
    smoking: RawSmoking,
    bmi: RawBmi,
    blood_counts: RawBlood,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmoking {
    loinc: Vec<String>,
    current: Vec<String>,
    former: Vec<String>,
    never: Vec<String>,
    pack_years_snomed: Vec<String>,
    pack_years_loinc: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBmi {
    loinc: Vec<String>,
    obese_at_least: f64,
    units: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlood {
    window_days: i64,
    analyte: Vec<RawAnalyte>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnalyte {
    id: String,
    loinc: Vec<String>,
    canonical_unit: String,
    units: Vec<RawUnit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    unit: String,
    factor: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoses {
    version: String,
    mass_units: BTreeMap<String, f64>,
    presentation_units: Vec<String>,
    timing_codes: BTreeMap<String, f64>,
    limit: Vec<RawLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    molecule: String,
    when_any: Vec<String>,
    max_mg_per_day: f64,
    propose: RawPropose,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPropose {
    dose_mg: f64,
    per_day: u32,
}

fn parse_toml<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, KnowledgeError> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().to_owned();
        let entry = match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                format!("line {line}")
            }
            None => "file".to_owned(),
        };
        KnowledgeError::new(file, entry, msg)
    })
}

fn factor_code(file: &str, entry: &str, code: &str) -> Result<FactorCode, KnowledgeError> {
    code.parse()
        .map_err(|e: crate::UnknownCode| KnowledgeError::new(file, entry, e.to_string()))
}

fn positive(file: &str, entry: &str, what: &str, v: f64) -> Result<f64, KnowledgeError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(KnowledgeError::new(
            file,
            entry,
            format!("{what} must be a positive number, not {v}"),
        ))
    }
}

pub(crate) fn build(src: &Sources) -> Result<Knowledge, KnowledgeError> {
    let [(f_mol, t_mol), (f_fac, t_fac), (f_obs, t_obs), (f_thr, t_thr), (f_dose, t_dose), (f_txt, t_txt)] =
        &src.files;

    // molecules
    let raw: RawMolecules = parse_toml(f_mol, t_mol)?;
    let mut versions = vec![format!("molecules {}", raw.version)];
    let mut molecules = Vec::new();
    for m in raw.molecule {
        let entry = format!("molecule `{}`", m.id);
        let err = |msg: String| KnowledgeError::new(f_mol, &entry, msg);
        if m.id.is_empty() || m.id.chars().any(|c| !c.is_ascii_lowercase()) {
            return Err(err("the id must be a lower-case molecule name".into()));
        }
        if molecules.iter().any(|x: &Molecule| x.id == m.id) {
            return Err(err("appears twice".into()));
        }
        let restricted = match m.scope.as_str() {
            "restricted" => true,
            "out-of-scope" => false,
            other => {
                return Err(err(format!(
                    "scope must be `restricted` or `out-of-scope`, not `{other}`"
                )))
            }
        };
        if m.names.is_empty() {
            return Err(err("needs at least one name to match in free text".into()));
        }
        molecules.push(Molecule {
            restricted,
            display_en: m.display.en,
            display_fr: m.display.fr,
            names: NameList::parse(&m.names).map_err(err)?,
            atc: AtcList::parse(&m.atc).map_err(err)?,
            rxnorm: CodeSet::parse(&m.rxnorm, "RxNorm").map_err(err)?,
            id: m.id,
        });
    }
    // One code must not name two molecules.
    for (i, a) in molecules.iter().enumerate() {
        for b in &molecules[i + 1..] {
            if let Some(code) = shared_code(a, b) {
                return Err(KnowledgeError::new(
                    f_mol,
                    format!("molecules `{}` and `{}`", a.id, b.id),
                    format!("both claim RxNorm code {code}"),
                ));
            }
        }
    }

    // factors
    let raw: RawFactors = parse_toml(f_fac, t_fac)?;
    versions.push(format!("factors {}", raw.version));
    let mut factors = Vec::new();
    for f in raw.factor {
        let entry = format!("factor `{}`", f.code);
        let code = factor_code(f_fac, &entry, &f.code)?;
        let err = |msg: String| KnowledgeError::new(f_fac, &entry, msg);
        if matches!(code.topic(), Topic::BloodCount | Topic::MissingData)
            || code == FactorCode::Age65Plus
        {
            return Err(err(
                "this factor is not read from Conditions or treatments".into()
            ));
        }
        if factors.iter().any(|x: &FactorDef| x.code == code) {
            return Err(err("appears twice".into()));
        }
        let def = FactorDef {
            code,
            kind: f.kind,
            conditions: ConditionMatcher {
                icd10: IcdList::parse(&f.icd10).map_err(err)?,
                snomed: CodeSet::parse(&f.snomed, "SNOMED CT").map_err(err)?,
            },
            treatment: TreatmentMatcher {
                atc: AtcList::parse(&f.treatment_atc).map_err(err)?,
                names: NameList::parse(&f.treatment_names).map_err(err)?,
                rxnorm: CodeSet::parse(&f.treatment_rxnorm, "RxNorm").map_err(err)?,
            },
        };
        if f.kind == FactorKind::Treatment && def.treatment.is_empty() {
            return Err(err(
                "a treatment factor needs treatment codes or names".into()
            ));
        }
        if f.kind != FactorKind::Treatment
            && def.conditions.icd10.is_empty()
            && def.conditions.snomed.is_empty()
        {
            return Err(err("needs ICD-10 or SNOMED CT codes".into()));
        }
        factors.push(def);
    }
    let mut skin_note = ConditionMatcher::default();
    for n in raw.note {
        let entry = format!("note `{}`", n.code);
        let err = |msg: String| KnowledgeError::new(f_fac, &entry, msg);
        if n.code != "skin-note" {
            return Err(err("the only note jakguard knows is `skin-note`".into()));
        }
        skin_note = ConditionMatcher {
            icd10: IcdList::parse(&n.icd10).map_err(err)?,
            snomed: CodeSet::parse(&n.snomed, "SNOMED CT").map_err(err)?,
        };
    }
    let ind = raw.indicators;
    let codes = |list: &[String]| -> Result<Vec<FactorCode>, KnowledgeError> {
        list.iter()
            .map(|c| factor_code(f_fac, "[indicators]", c))
            .collect()
    };
    let indicators = IndicatorPolicy {
        restriction_critical_when_any: codes(&ind.restriction_critical_when_any)?,
        restriction_critical_count: ind.restriction_critical_count.max(1),
        vte_warning_when_any: codes(&ind.vte_warning_when_any)?,
    };

    // observations
    let raw: RawObservations = parse_toml(f_obs, t_obs)?;
    versions.push(format!("observations {}", raw.version));
    let set = |entry: &str, list: &[String], what: &str| {
        CodeSet::parse(list, what).map_err(|m| KnowledgeError::new(f_obs, entry, m))
    };
    let s = raw.smoking;
    let smoking = SmokingRules {
        loinc: set("[smoking] loinc", &s.loinc, "LOINC")?,
        current: set("[smoking] current", &s.current, "SNOMED CT")?,
        former: set("[smoking] former", &s.former, "SNOMED CT")?,
        never: set("[smoking] never", &s.never, "SNOMED CT")?,
        pack_years_snomed: set(
            "[smoking] pack_years_snomed",
            &s.pack_years_snomed,
            "SNOMED CT",
        )?,
        pack_years_loinc: set("[smoking] pack_years_loinc", &s.pack_years_loinc, "LOINC")?,
    };
    let bmi = BmiRules {
        loinc: set("[bmi] loinc", &raw.bmi.loinc, "LOINC")?,
        obese_at_least: positive(f_obs, "[bmi]", "obese_at_least", raw.bmi.obese_at_least)?,
        units: raw.bmi.units,
    };
    let mut analytes = Vec::new();
    for a in raw.blood_counts.analyte {
        let entry = format!("analyte `{}`", a.id);
        let analyte: Analyte = a
            .id
            .parse()
            .map_err(|e: crate::UnknownCode| KnowledgeError::new(f_obs, &entry, e.to_string()))?;
        let mut units = Vec::new();
        for u in a.units {
            positive(
                f_obs,
                &entry,
                &format!("the factor of unit `{}`", u.unit),
                u.factor,
            )?;
            units.push((u.unit, u.factor));
        }
        analytes.push(AnalyteDef {
            analyte,
            loinc: set(&entry, &a.loinc, "LOINC")?,
            canonical_unit: a.canonical_unit,
            units,
        });
    }
    for a in Analyte::ALL {
        if !analytes.iter().any(|d| d.analyte == *a) {
            return Err(KnowledgeError::new(
                f_obs,
                "[blood_counts]",
                format!("analyte `{a}` is missing"),
            ));
        }
    }
    if raw.blood_counts.window_days <= 0 {
        return Err(KnowledgeError::new(
            f_obs,
            "[blood_counts]",
            "window_days must be positive",
        ));
    }
    let observations = ObservationRules {
        final_statuses: raw.final_statuses,
        smoking,
        bmi,
        blood: BloodRules {
            window_days: raw.blood_counts.window_days,
            analytes,
        },
    };

    // thresholds
    let raw: toml::Table = parse_toml(f_thr, t_thr)?;
    let mut thresholds = BTreeMap::new();
    let mut analyte_factor = BTreeMap::new();
    for (key, value) in raw {
        match (key.as_str(), value) {
            ("version", toml::Value::String(v)) => versions.push(format!("thresholds {v}")),
            ("analyte_factor", toml::Value::Table(t)) => {
                for (a, f) in t {
                    let entry = format!("analyte_factor.{a}");
                    let analyte: Analyte = a.parse().map_err(|e: crate::UnknownCode| {
                        KnowledgeError::new(f_thr, &entry, e.to_string())
                    })?;
                    let code = factor_code(f_thr, &entry, f.as_str().unwrap_or_default())?;
                    if code.topic() != Topic::BloodCount {
                        return Err(KnowledgeError::new(
                            f_thr,
                            &entry,
                            "must be a blood-count factor",
                        ));
                    }
                    analyte_factor.insert(analyte, code);
                }
            }
            (molecule, toml::Value::Table(t)) => {
                let entry = format!("[{molecule}]");
                if !molecules.iter().any(|m| m.id == molecule && m.restricted) {
                    return Err(KnowledgeError::new(
                        f_thr,
                        &entry,
                        format!("`{molecule}` is not a restricted molecule of molecules.toml"),
                    ));
                }
                let mut list = Vec::new();
                for (a, v) in t {
                    let analyte: Analyte = a.parse().map_err(|e: crate::UnknownCode| {
                        KnowledgeError::new(f_thr, &entry, e.to_string())
                    })?;
                    let v = v
                        .as_float()
                        .or_else(|| v.as_integer().map(|i| i as f64))
                        .unwrap_or(f64::NAN);
                    list.push((analyte, positive(f_thr, &entry, a.as_str(), v)?));
                }
                list.sort_by_key(|(a, _)| *a);
                thresholds.insert(molecule.to_owned(), list);
            }
            (other, _) => return Err(KnowledgeError::new(f_thr, other, "unexpected entry")),
        }
    }
    for a in Analyte::ALL {
        if !analyte_factor.contains_key(a) {
            return Err(KnowledgeError::new(
                f_thr,
                "analyte_factor",
                format!("`{a}` has no factor"),
            ));
        }
    }

    // doses
    let raw: RawDoses = parse_toml(f_dose, t_dose)?;
    versions.push(format!("doses {}", raw.version));
    let mut limits = Vec::new();
    for (i, l) in raw.limit.into_iter().enumerate() {
        let entry = format!("limit {} (`{}`)", i + 1, l.molecule);
        if !molecules.iter().any(|m| m.id == l.molecule && m.restricted) {
            return Err(KnowledgeError::new(
                f_dose,
                &entry,
                "not a restricted molecule of molecules.toml",
            ));
        }
        let mut when_any = Vec::new();
        let mut any_restriction_factor = false;
        for w in &l.when_any {
            if w == "any-restriction-factor" {
                any_restriction_factor = true;
            } else {
                when_any.push(factor_code(f_dose, &entry, w)?);
            }
        }
        if when_any.is_empty() && !any_restriction_factor {
            return Err(KnowledgeError::new(
                f_dose,
                &entry,
                "when_any is empty: the limit would never apply",
            ));
        }
        let max = positive(f_dose, &entry, "max_mg_per_day", l.max_mg_per_day)?;
        let dose = positive(f_dose, &entry, "propose.dose_mg", l.propose.dose_mg)?;
        if l.propose.per_day == 0 || dose * l.propose.per_day as f64 > max + 1e-9 {
            return Err(KnowledgeError::new(
                f_dose,
                &entry,
                "the proposed dose must be within max_mg_per_day",
            ));
        }
        limits.push(DoseLimit {
            molecule: l.molecule,
            when_any,
            any_restriction_factor,
            max_mg_per_day: max,
            propose_dose_mg: dose,
            propose_per_day: l.propose.per_day,
            note: l.note,
        });
    }
    let doses = DoseRules {
        mass_units: raw.mass_units.into_iter().collect(),
        presentation_units: raw
            .presentation_units
            .into_iter()
            .map(|u| u.to_lowercase())
            .collect(),
        timing_codes: raw.timing_codes.into_iter().collect(),
        limits,
    };

    // texts
    let raw: toml::Table = parse_toml(f_txt, t_txt)?;
    let mut en = FastMap::default();
    let mut fr = FastMap::default();
    for (key, value) in raw {
        match (key.as_str(), value) {
            ("version", toml::Value::String(v)) => versions.push(format!("texts {v}")),
            ("en", toml::Value::Table(t)) => flatten("", &t, &mut en, f_txt)?,
            ("fr", toml::Value::Table(t)) => flatten("", &t, &mut fr, f_txt)?,
            (other, _) => {
                return Err(KnowledgeError::new(
                    f_txt,
                    other,
                    "unexpected entry: only `version`, `[en]` and `[fr]`",
                ))
            }
        }
    }
    let mut required: Vec<String> = TEXT_KEYS.iter().map(|s| s.to_string()).collect();
    required.extend(Topic::ALL.iter().map(|t| format!("topic.{t}")));
    required.extend(FactorCode::ALL.iter().map(|f| format!("factor.{f}")));
    required.extend(Analyte::ALL.iter().map(|a| format!("analyte.{a}")));
    required.extend(
        doses
            .limits
            .iter()
            .filter_map(|l| l.note.as_ref())
            .map(|n| format!("note.{n}")),
    );
    for (lang, map) in [("en", &en), ("fr", &fr)] {
        for key in &required {
            if map.get(key).is_none_or(|v| v.trim().is_empty()) {
                return Err(KnowledgeError::new(
                    f_txt,
                    format!("[{lang}] {key}"),
                    "missing",
                ));
            }
        }
    }
    for key in en.keys() {
        if !fr.contains_key(key) {
            return Err(KnowledgeError::new(
                f_txt,
                format!("[fr] {key}"),
                "missing (present in [en])",
            ));
        }
    }
    for key in fr.keys() {
        if !en.contains_key(key) {
            return Err(KnowledgeError::new(
                f_txt,
                format!("[en] {key}"),
                "missing (present in [fr])",
            ));
        }
    }
    let texts = Texts { en, fr };
    check_summary_lengths(&texts, f_txt)?;

    Ok(Knowledge {
        version: versions.join(", "),
        molecules,
        factors,
        skin_note,
        observations,
        thresholds,
        analyte_factor,
        doses,
        texts,
        indicators,
    })
}

fn shared_code(a: &Molecule, b: &Molecule) -> Option<String> {
    a.rxnorm
        .codes()
        .find(|c| b.rxnorm.contains(c))
        .map(str::to_owned)
}

fn flatten(
    prefix: &str,
    t: &toml::Table,
    out: &mut FastMap<String, String>,
    file: &str,
) -> Result<(), KnowledgeError> {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            toml::Value::Table(inner) => flatten(&key, inner, out, file)?,
            _ => return Err(KnowledgeError::new(file, key, "must be a string")),
        }
    }
    Ok(())
}

/// Fills each summary with long but realistic values and checks it stays under the
/// CDS Hooks limit of 140 characters.
fn check_summary_lengths(texts: &Texts, file: &str) -> Result<(), KnowledgeError> {
    let fill = |s: &str| {
        s.replace("{molecule}", "upadacitinib")
            .replace("{count}", "10")
            .replace("{ordered}", "1000")
            .replace("{max}", "100")
            .replace("{analytes}", "lymphocytes, neutrophiles, plaquettes")
    };
    for lang in Lang::ALL {
        for key in TEXT_KEYS.iter().filter(|k| k.starts_with("summary.")) {
            let filled = fill(texts.get(*lang, key));
            if filled.chars().count() >= 140 {
                return Err(KnowledgeError::new(
                    file,
                    format!("[{lang}] {key}"),
                    format!(
                        "a summary must stay under 140 characters; filled in it has {}",
                        filled.chars().count()
                    ),
                ));
            }
        }
    }
    Ok(())
}
