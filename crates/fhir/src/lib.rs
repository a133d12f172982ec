//! Reading FHIR R4 JSON into the rules' [`Record`] and [`Order`]s, tolerantly and leanly.
//!
//! Only the elements the rules read are declared; everything else is skipped by the parser
//! without being built. Each resource is read on its own, and each element through
//! [`lenient::Lenient`], so that a malformed resource or element is reported as a
//! [`DataGap`] instead of sinking the Bundle or the request. Real clients send imperfect FHIR
//! (the CDS Hooks sandbox sends `category` as an object and Bundles without `type`).
//!
//! Invariant: nothing in this crate fails on content. The only inputs refused are those that
//! are not JSON at all, and the caller (the protocol layer) has already checked that.

pub mod lenient;
mod resources;
pub mod scan;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use jakguard_rules::{DataGap, MedicationInfo, Order, Record, ResourceRef};
use serde::Deserialize;
use serde_json::value::RawValue;

use lenient::{Lenient, Many};

pub use resources::{Bundle, InPlace, RawResource, Str, MAX_ENTRIES};

use resources::{Converted, DraftEntry};

/// What a prefetch value (or a FHIR server's answer) turned out to be.
#[derive(Debug)]
pub enum Fetched<'a> {
    /// `null`: the client has no data for this key.
    Null,
    /// An OperationOutcome, or something that is no resource at all: the data is not there and
    /// must be fetched or reported.
    Failed(String),
    /// A resource or the entries of a Bundle; `next` is the Bundle's next-page link.
    Resources {
        resources: Vec<Entry<'a>>,
        next: Option<String>,
        unreadable: Vec<String>,
    },
}

/// One resource of a prefetch value or a Bundle, with the Bundle entry's `fullUrl`.
///
/// The resource is boxed where it is read: a `RawResource` is about 700 bytes, and by value
/// it was copied five or six times on its way into the list (out of its visitor, into the
/// entry, into the `Vec`, again each time the `Vec` grew): about a sixth of a call's memory
/// copying and most of its cache misses on written memory (callgrind, `SIM=1`).
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub full_url: Option<Cow<'a, str>>,
    pub resource: Box<RawResource<'a>>,
}

/// Classifies one prefetch value. Never fails.
///
/// Three readings, fastest first, each taken only when the one before failed: everything in
/// one strict pass ([`InPlace`]); the value strictly with each Bundle entry's resource read on
/// its own and leniently (one malformed resource costs only itself); the exact two readings,
/// every element lenient. Each gives what the next would have given on the same value.
pub fn read_value(raw: &RawValue) -> Fetched<'_> {
    let text = raw.get();
    if text == "null" {
        return Fetched::Null;
    }
    if let Ok(InPlace(fetched)) = lenient::parse_one_pass::<InPlace>(text) {
        return fetched;
    }
    read_value_by_parts(raw)
}

/// [`read_value`] without the one-pass reading: the value strictly with each entry's resource on
/// its own, then the two lenient readings. The reference [`InPlace`] is held to (tests,
/// fuzzing); services call [`read_value`].
pub fn read_value_by_parts(raw: &RawValue) -> Fetched<'_> {
    let text = raw.get();
    if text == "null" {
        return Fetched::Null;
    }
    if let Ok(top) = lenient::parse_strict::<resources::Top>(text) {
        return match top.resource.resource_type.as_deref() {
            Some("OperationOutcome") => {
                Fetched::Failed("the client returned an OperationOutcome".into())
            }
            Some("Bundle") => top.into_bundle().into_entries(),
            Some(_) => Fetched::Resources {
                resources: vec![Entry {
                    full_url: None,
                    resource: Box::new(top.resource),
                }],
                next: None,
                unreadable: vec![],
            },
            None => Fetched::Failed("no resourceType".into()),
        };
    }
    // Something is malformed: the exact two readings, each lenient.
    read_value_in_two(raw)
}

/// The reference reading of a prefetch value: as a resource, then, for a Bundle, as a Bundle.
fn read_value_in_two(raw: &RawValue) -> Fetched<'_> {
    let text = raw.get();
    let Ok(res) = lenient::parse::<RawResource>(text) else {
        return Fetched::Failed("not a FHIR resource".into());
    };
    match res.resource_type.as_deref() {
        Some("OperationOutcome") => {
            Fetched::Failed("the client returned an OperationOutcome".into())
        }
        Some("Bundle") => {
            let bundle: Bundle = match lenient::parse(text) {
                Ok(b) => b,
                Err(_) => return Fetched::Failed("a Bundle that could not be read".into()),
            };
            bundle.into_entries()
        }
        Some(_) => Fetched::Resources {
            resources: vec![Entry {
                full_url: None,
                resource: Box::new(res),
            }],
            next: None,
            unreadable: vec![],
        },
        None => Fetched::Failed("no resourceType".into()),
    }
}

/// Accumulates resources from any number of prefetch keys or fetched pages into a [`Record`].
#[derive(Debug, Default)]
pub struct RecordBuilder {
    record: Record,
    medications: HashMap<String, MedicationInfo>,
    pending: Vec<(resources::MedicationUseDraft, Option<String>)>,
}

impl RecordBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every resource of a fetched value.
    pub fn add(&mut self, resources: &[Entry<'_>]) {
        for e in resources {
            self.add_one(e);
        }
    }

    fn add_one(&mut self, e: &Entry<'_>) {
        match e.resource.convert() {
            Converted::Patient(p) => {
                // The first Patient wins: the `patient` key is read first.
                if self.record.patient.is_none() {
                    self.record.patient = Some(p);
                }
            }
            Converted::Condition(c, gaps) => {
                self.record.gaps.extend(gaps);
                self.record.conditions.push(c);
            }
            Converted::Observation(o, gaps) => {
                self.record.gaps.extend(gaps);
                self.record.observations.push(o);
            }
            Converted::Medication(id, info) => {
                self.medications
                    .insert(format!("Medication/{id}"), info.clone());
                if let Some(url) = &e.full_url {
                    self.medications.insert(url.to_string(), info);
                }
            }
            Converted::MedicationUse(draft, reference) => self.pending.push((draft, reference)),
            Converted::Other => {}
            Converted::Unreadable(what) => self.record.gaps.push(DataGap::Unreadable { what }),
        }
    }

    /// Notes a gap (a key that was not provided, an unreadable entry).
    pub fn gap(&mut self, gap: DataGap) {
        self.record.gaps.push(gap);
    }

    /// The record, with medication references resolved against the Medications seen.
    pub fn finish(mut self) -> Record {
        for (draft, reference) in std::mem::take(&mut self.pending) {
            let resolved = reference
                .as_ref()
                .and_then(|r| self.medications.get(r))
                .cloned();
            self.record.medications.push(draft.finish(resolved));
        }
        self.record.gaps.sort();
        self.record.gaps.dedup();
        self.record
    }
}

/// A draft order read from `context.draftOrders`.
#[derive(Debug, Clone)]
pub struct DraftOrder<'a> {
    pub order: Order,
    /// The EHR's own JSON of the MedicationRequest: an update suggestion sends it back with only
    /// the dose changed. `None` for a draft that could not be read (its medication is marked
    /// unreadable, and the rules say it could not be checked).
    pub raw: Option<&'a RawValue>,
}

/// The draft orders of a request, with the raw JSON of every entry's resource.
#[derive(Debug)]
pub struct Drafts<'a> {
    pub orders: Vec<DraftOrder<'a>>,
    resources: Vec<&'a RawValue>,
}

impl Drafts<'_> {
    /// The `Type/id` of every entry of the Bundle, of any resource type (a selection may name a
    /// ServiceRequest). Only a selection that names no draft order needs it.
    pub fn entry_references(&self) -> HashSet<String> {
        self.resources
            .iter()
            .filter_map(|raw| resources::Head::read(raw))
            .filter_map(|h| Some(format!("{}/{}", h.kind()?, h.id()?)))
            .collect()
    }
}

/// `context.draftOrders` as the one-pass reading of a request takes it, with the envelope and
/// by [`scan`] only: each entry's resource read in place together with its raw JSON (what an
/// update suggestion sends back), in one scan. Read strictly: a draft with any malformed
/// element fails the pass, and the reading by parts ([`read_draft_orders`]) reads it leniently.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DraftsBundle<'a> {
    #[serde(borrow)]
    resource_type: Option<Str<'a>>,
    #[serde(borrow, default)]
    entry: Many<SpannedEntry<'a>>,
}

/// An entry of [`DraftsBundle`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpannedEntry<'a> {
    #[serde(borrow)]
    full_url: Option<Lenient<Str<'a>>>,
    #[serde(borrow)]
    resource: Option<scan::Spanned<'a, RawResource<'a>>>,
}

/// Reads the draft MedicationRequests of a `draftOrders` Bundle, resolving
/// `medicationReference` against the Bundle's Medications and each order's `contained` ones.
/// Other resource types (ServiceRequest...) are not drafts jakguard checks. A draft that cannot
/// be read is kept, with its medication marked unreadable, unless it says it is another type.
pub fn read_draft_orders(raw: &RawValue) -> Result<Drafts<'_>, &'static str> {
    let bundle: Bundle = lenient::parse(raw.get()).map_err(|_| "draftOrders is not a Bundle")?;
    if !bundle.is_a_bundle() {
        return Err("draftOrders is not a Bundle");
    }
    let entries = bundle.draft_entries()?;
    Ok(Drafts {
        orders: draft_orders(&entries),
        resources: bundle.resources().collect(),
    })
}

/// The draft orders of a Bundle read with the envelope: what [`read_draft_orders`] gives for
/// the same JSON (a strict reading succeeds only where the lenient one reads every element).
pub fn drafts_of(bundle: DraftsBundle<'_>) -> Result<Drafts<'_>, &'static str> {
    if !resources::says_bundle(bundle.resource_type.as_deref()) {
        return Err("draftOrders is not a Bundle");
    }
    if bundle.entry.0.len() > MAX_ENTRIES {
        return Err(resources::TOO_MANY_DRAFTS);
    }
    let mut entries = Vec::with_capacity(bundle.entry.0.len());
    let mut raws = Vec::with_capacity(bundle.entry.0.len());
    for e in bundle.entry.0 {
        // Read strictly, every entry is `Ok` (a bad one failed the pass); were one not, it
        // would still not vanish, as by parts.
        let Lenient::Ok(e) = e else {
            entries.push(DraftEntry::not_an_entry());
            continue;
        };
        let Some(resource) = e.resource else { continue };
        raws.push(resource.raw);
        let full_url = e.full_url.and_then(Lenient::into_ok).map(|u| u.0);
        entries.push(DraftEntry::Read(
            Entry {
                full_url,
                resource: Box::new(resource.value),
            },
            resource.raw,
        ));
    }
    Ok(Drafts {
        orders: draft_orders(&entries),
        resources: raws,
    })
}

fn is_draft(e: &Entry<'_>) -> bool {
    e.resource.resource_type.as_deref() == Some("MedicationRequest")
}

fn draft_orders<'a>(entries: &[DraftEntry<'a>]) -> Vec<DraftOrder<'a>> {
    let mut meds: HashMap<String, MedicationInfo> = HashMap::new();
    for e in entries {
        let DraftEntry::Read(e, _) = e else { continue };
        // Only Medications here: converting every order twice was work for nothing.
        if e.resource.resource_type.as_deref() != Some("Medication") {
            continue;
        }
        if let Converted::Medication(id, info) = e.resource.convert() {
            meds.insert(format!("Medication/{id}"), info.clone());
            if let Some(url) = &e.full_url {
                meds.insert(url.to_string(), info);
            }
        }
    }
    let mut out = Vec::new();
    for e in entries {
        match e {
            DraftEntry::Read(e, raw) if is_draft(e) => {
                if let Converted::MedicationUse(draft, reference) = e.resource.convert() {
                    let resolved = reference.as_ref().and_then(|r| meds.get(r)).cloned();
                    let dosages = e.resource.dosages();
                    let use_ = draft.finish(resolved);
                    out.push(DraftOrder {
                        order: Order {
                            reference: use_.reference,
                            medication: use_.medication,
                            dosages,
                        },
                        raw: Some(*raw),
                    });
                }
            }
            DraftEntry::Read(..) => {}
            DraftEntry::Unreadable(reference) => out.push(DraftOrder {
                order: Order {
                    reference: reference.clone(),
                    medication: MedicationInfo {
                        unreadable: true,
                        ..MedicationInfo::default()
                    },
                    dosages: vec![],
                },
                raw: None,
            }),
        }
    }
    out
}

/// `Type/id` of a resource, for matching `context.selections`.
pub fn reference_of(o: &Order) -> &ResourceRef {
    &o.reference
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_pass_reading_is_refused_outside_the_strict_pass() {
        let text = r#"{"resourceType": "Patient", "birthDate": 1950}"#;
        assert!(serde_json::from_str::<InPlace>(text).is_err());
        assert!(lenient::parse_strict::<InPlace>(text).is_err());
        let ok = r#"{"resourceType": "Patient", "birthDate": "1950"}"#;
        assert!(serde_json::from_str::<InPlace>(ok).is_err());
        assert!(lenient::parse_strict::<InPlace>(ok).is_ok());
    }

    #[test]
    fn a_bundle_over_the_entry_bound_is_read_up_to_it_and_the_rest_reported() {
        let entry = r#"{"resource": {"resourceType": "Patient", "id": "p"}}"#;
        let text = format!(
            r#"{{"resourceType": "Bundle", "entry": [{}]}}"#,
            vec![entry; MAX_ENTRIES + 1].join(",")
        );
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        assert!(lenient::parse_strict::<InPlace>(&text).is_err());
        let Fetched::Resources {
            resources,
            unreadable,
            ..
        } = read_value(raw)
        else {
            panic!("a Bundle");
        };
        assert_eq!(resources.len(), MAX_ENTRIES);
        assert_eq!(
            unreadable,
            [format!("Bundle entries after the first {MAX_ENTRIES}")]
        );
    }

    #[test]
    fn the_one_pass_reading_of_a_value_gives_what_the_two_readings_give() {
        let cases = [
            r#"{"resourceType": "Patient", "id": "p", "birthDate": "1950"}"#,
            r#"{"resourceType": "Patient", "birthDate": 1950}"#,
            r#"{"resourceType": "OperationOutcome", "issue": []}"#,
            r#"{"id": "x"}"#,
            r#"[1, 2]"#,
            r#""text""#,
            r#"{"resourceType": "Bundle", "link": [{"relation": "next", "url": "u"}],
                "entry": [{"fullUrl": "f", "resource": {"resourceType": "Condition", "id": "c",
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]}}},
                {"resource": {"resourceType": "Observation", "status": 3}}, "bad",
                {"resource": [1]}]}"#,
            r#"{"entry": {"resource": {"resourceType": "Patient"}}, "resourceType": "Bundle"}"#,
            r#"{"resourceType": "Bundle", "entry": [], "entry": []}"#,
            r#"{"resourceType": "Bundle", "id": "a", "id": "b", "entry": []}"#,
            r#"{"resourceType": "Patient", "link": 1, "link": 2}"#,
            r#"{"resourceType": "Bundle", "entr\u0079": [{"resource": {"resourceType": "Patient"}}]}"#,
            r#"{"resourceType": "Bundle", "entry": null, "link": "x"}"#,
            r#"{"resourceType": "Bundle", "entry": [{"fullUrl": "urn:uuid:a", "resource":
                {"resourceType": "Medication", "id": "m"}}, {"resource": null}, {"fullUrl": "x"}],
                "link": [{"relation": "self", "url": "s"}, {"relation": "next", "url": "n"}]}"#,
            r#"{"resourceType": "Bundle", "entry": {"fullUrl": "u", "resource":
                {"resourceType": "Patient", "id": "p"}}}"#,
            r#"{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient",
                "birthDate": 1950}}, {"resource": {"resourceType": "Patient", "id": "ok"}}]}"#,
            r#"{"resourceType": "Bundle", "entry": [{"fullUrl": 5, "resource":
                {"resourceType": "Patient"}}]}"#,
            r#"{"resourceType": "Bundle", "entry": [{"resource": []}, {"resource": "x"}]}"#,
            r#"{"resourceType": "Patient", "id": "p", "link": [{"other": {"reference": "Patient/q"},
                "type": "seealso"}], "birthDate": "1950-02-03"}"#,
            r#"{"resourceType": "Observation", "status": "final", "code": {"coding":
                {"system": "http://loinc.org", "code": "72166-2"}}, "valueQuantity": {"value": "x"}}"#,
            r#"{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Cond\u0069tion",
                "id": "\u00e9"}}]}"#,
        ];
        for text in cases {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            let reference = format!("{:?}", read_value_in_two(raw));
            assert_eq!(format!("{:?}", read_value(raw)), reference, "{text}");
            assert_eq!(
                format!("{:?}", read_value_by_parts(raw)),
                reference,
                "{text}"
            );
            if let Ok(InPlace(fetched)) = lenient::parse_strict::<InPlace>(text) {
                assert_eq!(format!("{fetched:?}"), reference, "{text}");
            }
        }
    }
}
