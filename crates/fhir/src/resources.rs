//! The lean shapes of the resources jakguard reads, and their conversion into the rules' model.
//!
//! One struct, [`RawResource`], holds the union of the elements read from Patient, Condition,
//! Observation, Medication, MedicationRequest and MedicationStatement, so that each resource
//! is parsed once, whatever its type.

use std::borrow::Cow;

use jakguard_rules::*;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::lenient::{Lenient, Many};
use crate::{Entry, Fetched};

/// A string of the body: borrowed when it has no escapes, owned otherwise. serde's `borrow`
/// attribute borrows a `Cow` only when it is a field's whole type, not inside `Option` or
/// `Lenient`, where every string was allocated (a few hundred allocations per call).
#[derive(Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Str<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> serde::de::Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RCoding<'a> {
    #[serde(borrow)]
    system: Option<Str<'a>>,
    #[serde(borrow)]
    code: Option<Str<'a>>,
    #[serde(borrow)]
    display: Option<Str<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RConcept<'a> {
    #[serde(borrow, default)]
    coding: Many<RCoding<'a>>,
    #[serde(borrow)]
    text: Option<Lenient<Str<'a>>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RQuantity<'a> {
    value: Option<f64>,
    #[serde(borrow)]
    unit: Option<Str<'a>>,
    #[serde(borrow)]
    code: Option<Str<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RReference<'a> {
    #[serde(borrow)]
    reference: Option<Str<'a>>,
    #[serde(borrow)]
    display: Option<Str<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RPeriod<'a> {
    #[serde(borrow)]
    start: Option<Str<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RRepeat<'a> {
    frequency: Option<f64>,
    period: Option<f64>,
    #[serde(borrow)]
    period_unit: Option<Str<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RTiming<'a> {
    #[serde(borrow)]
    repeat: Option<Lenient<RRepeat<'a>>>,
    #[serde(borrow)]
    code: Option<Lenient<RConcept<'a>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RDoseAndRate<'a> {
    #[serde(borrow)]
    dose_quantity: Option<Lenient<RQuantity<'a>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RDosage<'a> {
    #[serde(borrow)]
    timing: Option<Lenient<RTiming<'a>>>,
    #[serde(borrow, default)]
    dose_and_rate: Many<RDoseAndRate<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RRatio<'a> {
    #[serde(borrow)]
    numerator: Option<Lenient<RQuantity<'a>>>,
    #[serde(borrow)]
    denominator: Option<Lenient<RQuantity<'a>>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RIngredient<'a> {
    #[serde(borrow)]
    strength: Option<Lenient<RRatio<'a>>>,
}

/// The union of the elements jakguard reads, for every resource type it reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawResource<'a> {
    #[serde(borrow)]
    pub resource_type: Option<Str<'a>>,
    #[serde(borrow)]
    id: Option<Lenient<Str<'a>>>,
    // Patient
    #[serde(borrow)]
    birth_date: Option<Lenient<Str<'a>>>,
    // Condition, Observation, Medication
    #[serde(borrow)]
    code: Option<Lenient<RConcept<'a>>>,
    #[serde(borrow)]
    clinical_status: Option<Lenient<RConcept<'a>>>,
    #[serde(borrow)]
    verification_status: Option<Lenient<RConcept<'a>>>,
    #[serde(borrow)]
    onset_date_time: Option<Lenient<Str<'a>>>,
    #[serde(borrow)]
    recorded_date: Option<Lenient<Str<'a>>>,
    // Observation, MedicationRequest, MedicationStatement
    #[serde(borrow)]
    status: Option<Lenient<Str<'a>>>,
    #[serde(borrow)]
    effective_date_time: Option<Lenient<Str<'a>>>,
    #[serde(borrow)]
    effective_instant: Option<Lenient<Str<'a>>>,
    #[serde(borrow)]
    effective_period: Option<Lenient<RPeriod<'a>>>,
    #[serde(borrow)]
    issued: Option<Lenient<Str<'a>>>,
    #[serde(borrow)]
    value_quantity: Option<Lenient<RQuantity<'a>>>,
    #[serde(borrow)]
    value_codeable_concept: Option<Lenient<RConcept<'a>>>,
    // MedicationRequest, MedicationStatement
    #[serde(borrow)]
    medication_codeable_concept: Option<Lenient<RConcept<'a>>>,
    #[serde(borrow)]
    medication_reference: Option<Lenient<RReference<'a>>>,
    #[serde(borrow, default)]
    contained: Many<&'a RawValue>,
    #[serde(borrow, default)]
    dosage_instruction: Many<RDosage<'a>>,
    #[serde(borrow)]
    authored_on: Option<Lenient<Str<'a>>>,
    #[serde(borrow)]
    date_asserted: Option<Lenient<Str<'a>>>,
    // Medication
    #[serde(borrow, default)]
    ingredient: Many<RIngredient<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct REntry<'a> {
    #[serde(borrow)]
    full_url: Option<Lenient<Str<'a>>>,
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RLink<'a> {
    #[serde(borrow)]
    relation: Option<Str<'a>>,
    #[serde(borrow)]
    url: Option<Str<'a>>,
}

/// A Bundle: its entries, read one by one, and its links.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle<'a> {
    #[serde(borrow)]
    pub resource_type: Option<Str<'a>>,
    #[serde(borrow, default)]
    entry: Many<REntry<'a>>,
    #[serde(borrow, default)]
    link: Many<RLink<'a>>,
}

impl<'a> Bundle<'a> {
    /// The entries, the next-page link, and what could not be read.
    pub(crate) fn into_entries(self) -> Fetched<'a> {
        let mut unreadable = Vec::new();
        if self.entry.has_bad() {
            unreadable.push("a Bundle entry".to_owned());
        }
        let mut resources = Vec::new();
        for (i, e) in self.entry.iter().enumerate() {
            if i == MAX_ENTRIES {
                // Bounded work per request; what is not read is said, never dropped silently.
                unreadable.push(format!("Bundle entries after the first {MAX_ENTRIES}"));
                break;
            }
            let Some(raw) = e.resource else { continue };
            match crate::lenient::parse::<Box<RawResource>>(raw.get()) {
                Ok(resource) => resources.push(e.entry(resource)),
                Err(_) => unreadable.push(format!("Bundle entry {}", i + 1)),
            }
        }
        Fetched::Resources {
            resources,
            next: next_link(&self.link),
            unreadable,
        }
    }
}

impl<'a> REntry<'a> {
    /// This entry with its resource read.
    fn entry(&self, resource: Box<RawResource<'a>>) -> Entry<'a> {
        Entry {
            full_url: self
                .full_url
                .as_ref()
                .and_then(|u| u.ok().map(|u| u.0.clone())),
            resource,
        }
    }
}

/// An entry of `draftOrders` read by parts: its resource, or, when the resource cannot be read
/// and may be a MedicationRequest, the order it names. A draft order must never vanish
/// silently: it may be the JAK inhibitor the prescriber is signing.
pub(crate) enum DraftEntry<'a> {
    /// A resource, with its raw text.
    Read(Entry<'a>, &'a RawValue),
    Unreadable(ResourceRef),
}

impl DraftEntry<'_> {
    /// An entry that is not even an entry (a string, a repeated `resource`...) cannot say what
    /// it orders: it may be the JAK inhibitor, so it is an order that could not be read.
    pub(crate) fn not_an_entry() -> Self {
        DraftEntry::Unreadable(ResourceRef::new("MedicationRequest", None))
    }
}

impl<'a> Bundle<'a> {
    /// The raw resource of every readable entry.
    pub(crate) fn resources(&self) -> impl Iterator<Item = &'a RawValue> + '_ {
        self.entry.iter().filter_map(|e| e.resource)
    }

    /// The entries of a `draftOrders` Bundle; more than [`MAX_ENTRIES`] is refused (no order
    /// entry session holds that many, and none may be dropped unread).
    pub(crate) fn draft_entries(&self) -> Result<Vec<DraftEntry<'a>>, &'static str> {
        if self.entry.0.len() > MAX_ENTRIES {
            return Err(TOO_MANY_DRAFTS);
        }
        let mut out = Vec::new();
        for e in &self.entry.0 {
            let Lenient::Ok(e) = e else {
                out.push(DraftEntry::not_an_entry());
                continue;
            };
            let Some(raw) = e.resource else { continue };
            match crate::lenient::parse::<Box<RawResource>>(raw.get()) {
                Ok(resource) => out.push(DraftEntry::Read(e.entry(resource), raw)),
                Err(_) => {
                    if let Some(reference) = unreadable_draft(raw) {
                        out.push(DraftEntry::Unreadable(reference));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Why a `draftOrders` Bundle of more than [`MAX_ENTRIES`] entries is refused.
pub(crate) const TOO_MANY_DRAFTS: &str =
    "draftOrders has more entries than are evaluated in one call";

impl Bundle<'_> {
    /// Whether it says it is a Bundle (or says nothing).
    pub(crate) fn is_a_bundle(&self) -> bool {
        says_bundle(self.resource_type.as_deref())
    }
}

/// Whether a `resourceType` (or its absence) lets a value be read as a Bundle.
pub(crate) fn says_bundle(resource_type: Option<&str>) -> bool {
    resource_type.is_none_or(|t| t == "Bundle")
}

/// What a resource says it is, read leniently: enough to name it when nothing else of it can be
/// read, or when only its name is wanted.
#[derive(Deserialize)]
pub(crate) struct Head<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Option<Lenient<Str<'a>>>,
    #[serde(borrow)]
    id: Option<Lenient<Str<'a>>>,
}

impl Head<'_> {
    pub(crate) fn read(raw: &RawValue) -> Option<Head<'_>> {
        serde_json::from_str(raw.get()).ok()
    }

    pub(crate) fn kind(&self) -> Option<&str> {
        self.resource_type.as_ref()?.ok().map(|t| t.as_ref())
    }

    pub(crate) fn id(&self) -> Option<&str> {
        self.id.as_ref()?.ok().map(|i| i.as_ref())
    }
}

/// The order an unreadable draft names, unless it says it is another resource type.
fn unreadable_draft(raw: &RawValue) -> Option<ResourceRef> {
    let head = Head::read(raw);
    match head.as_ref().and_then(Head::kind) {
        // Another resource type (ServiceRequest...) is not a draft jakguard checks.
        Some(t) if t != "MedicationRequest" => None,
        _ => Some(ResourceRef::new(
            "MedicationRequest",
            head.as_ref().and_then(Head::id),
        )),
    }
}

fn next_link(links: &Many<RLink<'_>>) -> Option<String> {
    links
        .iter()
        .find(|l| l.relation.as_deref() == Some("next"))
        .and_then(|l| l.url.as_deref().map(str::to_owned))
}

/// The most entries read from one Bundle (a hostile or runaway client must not make one
/// request cost unbounded work; the body limit bounds it too).
pub const MAX_ENTRIES: usize = 20_000;

/// A prefetch value read in one pass: the elements of [`RawResource`] and, for a Bundle, its
/// `entry` and `link`. Reading it as a `RawResource` and then again as a `Bundle` scanned every
/// prefetched Bundle twice (14% of the instructions of `evaluate/typical`).
///
/// It is only ever read strictly (see [`crate::lenient::parse_strict`]) and on any error the
/// caller falls back to the two readings, so that malformed values (duplicate keys included)
/// give exactly what they gave before.
pub(crate) struct Top<'a, E = Many<REntry<'a>>> {
    pub resource: RawResource<'a>,
    entry: Option<E>,
    link: Option<Many<RLink<'a>>>,
}

impl<'a> Top<'a> {
    /// The Bundle the two readings would have given (`entry` and `link` default to empty).
    pub fn into_bundle(self) -> Bundle<'a> {
        Bundle {
            resource_type: self.resource.resource_type,
            entry: self.entry.unwrap_or_default(),
            link: self.link.unwrap_or_default(),
        }
    }
}

impl<'de, E: Deserialize<'de>> Deserialize<'de> for Top<'de, E> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TopVisitor<E>(std::marker::PhantomData<E>);
        impl<'de, E: Deserialize<'de>> serde::de::Visitor<'de> for TopVisitor<E> {
            type Value = Top<'de, E>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a FHIR resource")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Top<'de, E>, A::Error> {
                read_top(map)
            }
        }
        d.deserialize_map(TopVisitor(std::marker::PhantomData))
    }
}

/// Reads a resource's elements and, for a Bundle, its `entry` (as `E`) and `link`.
fn read_top<'de, A, E>(map: A) -> Result<Top<'de, E>, A::Error>
where
    A: serde::de::MapAccess<'de>,
    E: Deserialize<'de>,
{
    let mut tap = BundleTap {
        map,
        entry: None,
        link: None,
    };
    let resource =
        RawResource::deserialize(serde::de::value::MapAccessDeserializer::new(&mut tap))?;
    Ok(Top {
        resource,
        entry: tap.entry,
        link: tap.link,
    })
}

/// A prefetch value or a FHIR server's page read in one strict pass: the envelope, every
/// entry and every resource straight into the lean shapes, without first taking any of them as
/// a [`RawValue`]. The profile of the running service showed the three scans of the reading by
/// parts (the value, each entry, each resource) at a quarter of all its instructions.
///
/// It must run inside a strict pass ([`crate::lenient::parse_one_pass`],
/// [`crate::lenient::parse_strict`]): any malformed or unusual element fails the whole
/// reading, and the caller falls back to [`crate::read_value`] on the raw text, which reads
/// element by element. Whenever it succeeds it gives exactly what [`crate::read_value`] gives
/// (tested on every fixture and on mutated ones).
#[derive(Debug)]
pub struct InPlace<'a>(pub Fetched<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for InPlace<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Outside the strict pass its wrappers would quietly read leniently and report nothing
        // unreadable: refuse, so that a misuse falls back to the reading by parts.
        if !crate::lenient::strict() {
            return Err(serde::de::Error::custom(
                "InPlace is read only inside lenient::parse_strict",
            ));
        }
        struct InPlaceVisitor;
        impl<'de> serde::de::Visitor<'de> for InPlaceVisitor {
            type Value = InPlace<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a FHIR resource or null")
            }
            fn visit_unit<E>(self) -> Result<InPlace<'de>, E> {
                Ok(InPlace(Fetched::Null))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<InPlace<'de>, A::Error> {
                let top: Top<'de, InPlaceEntries<'de>> = read_top(map)?;
                Ok(InPlace(top.into_fetched()))
            }
        }
        d.deserialize_any(InPlaceVisitor)
    }
}

impl<'a> Top<'a, InPlaceEntries<'a>> {
    /// What [`crate::read_value`] gives for the same value (see its classification).
    fn into_fetched(self) -> Fetched<'a> {
        match self.resource.resource_type.as_deref() {
            Some("OperationOutcome") => {
                Fetched::Failed("the client returned an OperationOutcome".into())
            }
            Some("Bundle") => Fetched::Resources {
                resources: self
                    .entry
                    .map(InPlaceEntries::into_entries)
                    .unwrap_or_default(),
                next: self.link.as_ref().and_then(next_link),
                unreadable: vec![],
            },
            Some(_) => Fetched::Resources {
                resources: vec![Entry {
                    full_url: None,
                    resource: Box::new(self.resource),
                }],
                next: None,
                unreadable: vec![],
            },
            None => Fetched::Failed("no resourceType".into()),
        }
    }
}

/// A Bundle entry read in place.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InPlaceEntry<'a> {
    #[serde(borrow)]
    full_url: Option<Lenient<Str<'a>>>,
    // Boxed as soon as it is read (see `Entry`).
    #[serde(borrow)]
    resource: Option<Box<RawResource<'a>>>,
}

/// The entries of a Bundle read in place: an array, `null` or a single object, as [`Many`]
/// reads them, kept as the [`Entry`]s that have a resource ([`Bundle::into_entries`] gives the
/// same). Each entry becomes an `Entry` as it is read: a resource is a large value, and
/// collecting the entries first and converting them after copied every resource once more.
/// More than [`MAX_ENTRIES`] fail the pass, so that the reading by parts bounds the work and
/// says what it did not read.
pub(crate) struct InPlaceEntries<'a>(Vec<Entry<'a>>);

impl<'a> InPlaceEntries<'a> {
    /// The entries that have a resource.
    fn into_entries(self) -> Vec<Entry<'a>> {
        self.0
    }
}

impl<'a> InPlaceEntry<'a> {
    fn push_into(self, out: &mut Vec<Entry<'a>>) {
        if let Some(resource) = self.resource {
            out.push(Entry {
                full_url: self.full_url.and_then(Lenient::into_ok).map(|u| u.0),
                resource,
            });
        }
    }
}

impl<'de> Deserialize<'de> for InPlaceEntries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> serde::de::Visitor<'de> for EntriesVisitor {
            type Value = InPlaceEntries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("Bundle entries")
            }
            fn visit_unit<E>(self) -> Result<InPlaceEntries<'de>, E> {
                Ok(InPlaceEntries(Vec::new()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<InPlaceEntries<'de>, A::Error> {
                let mut out = Vec::new();
                let mut read = 0;
                while let Some(e) = seq.next_element::<InPlaceEntry<'de>>()? {
                    if read == MAX_ENTRIES {
                        return Err(serde::de::Error::custom("too many entries"));
                    }
                    read += 1;
                    e.push_into(&mut out);
                }
                Ok(InPlaceEntries(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<InPlaceEntries<'de>, A::Error> {
                let e =
                    InPlaceEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let mut out = Vec::with_capacity(1);
                e.push_into(&mut out);
                Ok(InPlaceEntries(out))
            }
        }
        d.deserialize_any(EntriesVisitor)
    }
}

/// Hands every key of a map to `RawResource`'s derived visitor except `entry` and `link`,
/// which it reads itself.
struct BundleTap<'a, A, E> {
    map: A,
    entry: Option<E>,
    link: Option<Many<RLink<'a>>>,
}

impl<'de, A: serde::de::MapAccess<'de>, E: Deserialize<'de>> serde::de::MapAccess<'de>
    for &mut BundleTap<'de, A, E>
{
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
        use serde::de::Error;
        loop {
            // A key borrowed from the body unless it has escapes.
            let Some(Str(key)) = self.map.next_key::<Str<'de>>()? else {
                return Ok(None);
            };
            match key.as_ref() {
                "entry" if self.entry.is_some() => return Err(A::Error::duplicate_field("entry")),
                "link" if self.link.is_some() => return Err(A::Error::duplicate_field("link")),
                "entry" => self.entry = Some(self.map.next_value()?),
                "link" => self.link = Some(self.map.next_value()?),
                _ => {
                    return match key {
                        Cow::Borrowed(k) => seed.deserialize(BorrowedStrDeserializer::new(k)),
                        Cow::Owned(k) => seed.deserialize(StringDeserializer::new(k)),
                    }
                    .map(Some)
                }
            }
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// A MedicationRequest or MedicationStatement waiting for its `medicationReference` to be resolved.
#[derive(Debug, Clone)]
pub(crate) struct MedicationUseDraft {
    reference: ResourceRef,
    kind: MedicationKind,
    status: Option<String>,
    inline: MedicationInfo,
    date: Option<PartialDate>,
}

impl MedicationUseDraft {
    /// Uses the resolved Medication when there is one, else what the order itself says.
    pub(crate) fn finish(self, resolved: Option<MedicationInfo>) -> MedicationUse {
        let medication = match resolved {
            Some(mut m) => {
                // Keep the reference's display as one more text to recognise.
                m.concept.codings.extend(self.inline.concept.codings);
                if m.concept.text.is_none() {
                    m.concept.text = self.inline.concept.text;
                }
                m
            }
            None => self.inline,
        };
        MedicationUse {
            reference: self.reference,
            kind: self.kind,
            status: self.status,
            medication,
            date: self.date,
        }
    }
}

pub(crate) enum Converted {
    Patient(Patient),
    Condition(Condition, Vec<DataGap>),
    Observation(Observation, Vec<DataGap>),
    Medication(String, MedicationInfo),
    /// A medication use, and the key of the Medication it references (`Medication/x`, `#x`...).
    MedicationUse(MedicationUseDraft, Option<String>),
    Other,
    Unreadable(String),
}

fn text(v: &Option<Lenient<Str<'_>>>) -> Option<String> {
    v.as_ref().and_then(Lenient::ok).map(|s| s.to_string())
}

fn date(v: &Option<Lenient<Str<'_>>>) -> Option<PartialDate> {
    v.as_ref()
        .and_then(Lenient::ok)
        .and_then(|s| PartialDate::parse(s))
}

fn system_of(uri: &str) -> CodeSystem {
    // Lowercased only when it has capitals: nearly every system URI is written in lowercase,
    // and a coding is read for each of a record's codes.
    let u: Cow<'_, str> = if uri.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(uri.to_ascii_lowercase())
    } else {
        Cow::Borrowed(uri)
    };
    if u == "http://snomed.info/sct" || u.starts_with("http://snomed.info/") {
        CodeSystem::Snomed
    } else if u == "http://loinc.org" {
        CodeSystem::Loinc
    } else if u.contains("rxnorm") {
        CodeSystem::RxNorm
    } else if u.contains("whocc.no/atc") || u.ends_with("/atc") || u == "atc" {
        CodeSystem::Atc
    } else if u.contains("icd-10")
        || u.contains("icd10")
        || u.contains("cim-10")
        || u.contains("cim10")
    {
        // WHO, ICD-10-CM and the French CIM-10 (various URIs): the code is normalised later.
        // ICD-10-PCS is a procedure coding system, not a diagnosis one.
        if u.contains("pcs") {
            CodeSystem::Other
        } else {
            CodeSystem::Icd10
        }
    } else {
        CodeSystem::Other
    }
}

fn concept(c: &RConcept<'_>) -> Concept {
    Concept {
        codings: c
            .coding
            .iter()
            .filter_map(|cd| {
                let code = cd.code.as_deref()?.trim();
                if code.is_empty() {
                    return None;
                }
                Some(Coding {
                    system: cd.system.as_deref().map_or(CodeSystem::Other, system_of),
                    code: code.to_owned(),
                    display: cd.display.as_deref().map(str::to_owned),
                })
            })
            .collect(),
        text: text(&c.text),
    }
}

fn status_code(c: &Option<Lenient<RConcept<'_>>>) -> Option<String> {
    c.as_ref().and_then(Lenient::ok).and_then(|c| {
        c.coding
            .iter()
            .find_map(|cd| cd.code.as_deref().map(str::to_owned))
    })
}

fn quantity(q: &RQuantity<'_>) -> Option<Quantity> {
    Some(Quantity {
        value: q.value?,
        unit: q
            .code
            .as_deref()
            .or(q.unit.as_deref())
            .map(|u| u.trim().to_owned()),
    })
}

impl<'a> RawResource<'a> {
    fn reference(&self, resource_type: &str) -> ResourceRef {
        let id = self.id.as_ref().and_then(Lenient::ok).map(|s| s.as_ref());
        ResourceRef::new(resource_type, id)
    }

    pub(crate) fn convert(&self) -> Converted {
        let Some(rt) = self.resource_type.as_deref() else {
            return Converted::Unreadable("a resource without resourceType".into());
        };
        let reference = self.reference(rt);
        match rt {
            "Patient" => Converted::Patient(Patient {
                reference,
                birth_date: date(&self.birth_date),
            }),
            "Condition" => {
                let mut gaps = Vec::new();
                let code = match &self.code {
                    Some(Lenient::Ok(c)) => concept(c),
                    Some(Lenient::Bad) => {
                        gaps.push(DataGap::Unreadable {
                            what: format!("{reference} (code)"),
                        });
                        Concept::default()
                    }
                    None => Concept::default(),
                };
                if self.clinical_status.as_ref().is_some_and(Lenient::is_bad) {
                    gaps.push(DataGap::Unreadable {
                        what: format!("{reference} (clinicalStatus)"),
                    });
                }
                Converted::Condition(
                    Condition {
                        reference,
                        code,
                        clinical_status: status_code(&self.clinical_status),
                        verification_status: status_code(&self.verification_status),
                        date: date(&self.onset_date_time).or_else(|| date(&self.recorded_date)),
                    },
                    gaps,
                )
            }
            "Observation" => {
                let mut gaps = Vec::new();
                let code = match &self.code {
                    Some(Lenient::Ok(c)) => concept(c),
                    Some(Lenient::Bad) => {
                        gaps.push(DataGap::Unreadable {
                            what: format!("{reference} (code)"),
                        });
                        Concept::default()
                    }
                    None => Concept::default(),
                };
                let value = match (&self.value_quantity, &self.value_codeable_concept) {
                    (Some(Lenient::Ok(q)), _) => {
                        quantity(q).map_or(ObservationValue::None, ObservationValue::Quantity)
                    }
                    (_, Some(Lenient::Ok(c))) => ObservationValue::Concept(concept(c)),
                    (Some(Lenient::Bad), _) | (_, Some(Lenient::Bad)) => {
                        gaps.push(DataGap::Unreadable {
                            what: format!("{reference} (value)"),
                        });
                        ObservationValue::None
                    }
                    _ => ObservationValue::None,
                };
                let effective = date(&self.effective_date_time)
                    .or_else(|| date(&self.effective_instant))
                    .or_else(|| {
                        self.effective_period
                            .as_ref()
                            .and_then(Lenient::ok)
                            .and_then(|p| p.start.as_deref().and_then(PartialDate::parse))
                    })
                    .or_else(|| date(&self.issued));
                Converted::Observation(
                    Observation {
                        reference,
                        status: text(&self.status),
                        code,
                        effective,
                        value,
                    },
                    gaps,
                )
            }
            "Medication" => {
                let id = self
                    .id
                    .as_ref()
                    .and_then(Lenient::ok)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                Converted::Medication(id, self.medication_info_of_medication())
            }
            "MedicationRequest" | "MedicationStatement" => {
                let kind = if rt == "MedicationRequest" {
                    MedicationKind::Request
                } else {
                    MedicationKind::Statement
                };
                let (inline, target) = self.inline_medication();
                let date = date(&self.authored_on)
                    .or_else(|| date(&self.effective_date_time))
                    .or_else(|| date(&self.date_asserted));
                Converted::MedicationUse(
                    MedicationUseDraft {
                        reference,
                        kind,
                        status: text(&self.status),
                        inline,
                        date,
                    },
                    target,
                )
            }
            _ => Converted::Other,
        }
    }

    /// What a Medication resource says: its code and its ingredients' strengths.
    fn medication_info_of_medication(&self) -> MedicationInfo {
        let (concept, unreadable) = match &self.code {
            Some(Lenient::Ok(c)) => (concept(c), false),
            Some(Lenient::Bad) => (Concept::default(), true),
            None => (Concept::default(), false),
        };
        let strengths = self
            .ingredient
            .iter()
            .filter_map(|i| i.strength.as_ref()?.ok())
            .filter_map(|r| {
                let numerator = quantity(r.numerator.as_ref()?.ok()?)?;
                let denominator = r
                    .denominator
                    .as_ref()
                    .and_then(Lenient::ok)
                    .and_then(quantity);
                Some(Strength {
                    numerator,
                    denominator,
                })
            })
            .collect();
        MedicationInfo {
            concept,
            strengths,
            unreadable,
        }
    }

    /// The medication as the order states it, resolving `#contained` references here; other
    /// references are returned to be resolved against the Bundle.
    fn inline_medication(&self) -> (MedicationInfo, Option<String>) {
        if let Some(m) = &self.medication_codeable_concept {
            return match m {
                Lenient::Ok(c) => (
                    MedicationInfo {
                        concept: concept(c),
                        ..Default::default()
                    },
                    None,
                ),
                Lenient::Bad => (
                    MedicationInfo {
                        unreadable: true,
                        ..Default::default()
                    },
                    None,
                ),
            };
        }
        let Some(r) = &self.medication_reference else {
            return (MedicationInfo::default(), None);
        };
        let Lenient::Ok(r) = r else {
            return (
                MedicationInfo {
                    unreadable: true,
                    ..Default::default()
                },
                None,
            );
        };
        let display = MedicationInfo {
            concept: Concept {
                codings: vec![],
                text: r.display.as_deref().map(str::to_owned),
            },
            ..Default::default()
        };
        let Some(target) = r.reference.as_deref() else {
            let unreadable = display.concept.text.is_none();
            return (
                MedicationInfo {
                    unreadable,
                    ..display
                },
                None,
            );
        };
        if let Some(local) = target.strip_prefix('#') {
            for raw in self.contained.iter() {
                let Ok(res) = crate::lenient::parse::<RawResource>(raw.get()) else {
                    continue;
                };
                let id = res.id.as_ref().and_then(Lenient::ok).map(|s| s.as_ref());
                if res.resource_type.as_deref() == Some("Medication") && id == Some(local) {
                    let mut info = res.medication_info_of_medication();
                    if info.concept.text.is_none() {
                        info.concept.text = display.concept.text.clone();
                    }
                    return (info, None);
                }
            }
            let unreadable = display.concept.text.is_none();
            return (
                MedicationInfo {
                    unreadable,
                    ..display
                },
                None,
            );
        }
        // Resolved later against the Bundle; until then, the display is all there is. An
        // unresolvable reference without display is flagged by the caller's lookup failing.
        let unreadable = display.concept.text.is_none();
        (
            MedicationInfo {
                unreadable,
                ..display
            },
            Some(target.to_owned()),
        )
    }

    /// The dosage instructions of a MedicationRequest.
    pub fn dosages(&self) -> Vec<Dosage> {
        self.dosage_instruction
            .iter()
            .map(|d| {
                let timing = d.timing.as_ref().and_then(Lenient::ok);
                let repeat = timing.and_then(|t| t.repeat.as_ref()?.ok());
                let timing_code = timing.and_then(|t| t.code.as_ref()?.ok()).and_then(|c| {
                    c.coding
                        .iter()
                        .find_map(|cd| cd.code.as_deref().map(str::to_owned))
                });
                let dose = d
                    .dose_and_rate
                    .iter()
                    .find_map(|dr| dr.dose_quantity.as_ref()?.ok().and_then(quantity));
                Dosage {
                    dose,
                    frequency: repeat.and_then(|r| r.frequency),
                    period: repeat.and_then(|r| r.period),
                    period_unit: repeat.and_then(|r| r.period_unit.as_deref().map(str::to_owned)),
                    timing_code,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code systems are recognised whatever the case of their URI.
    #[test]
    fn code_systems_are_recognised_from_their_uris_whatever_the_case() {
        let cases = [
            ("http://snomed.info/sct", CodeSystem::Snomed),
            ("HTTP://SNOMED.INFO/SCT", CodeSystem::Snomed),
            (
                "http://snomed.info/sct/900000000000207008",
                CodeSystem::Snomed,
            ),
            ("http://loinc.org", CodeSystem::Loinc),
            ("http://LOINC.org", CodeSystem::Loinc),
            (
                "http://www.nlm.nih.gov/research/umls/rxnorm",
                CodeSystem::RxNorm,
            ),
            ("http://www.whocc.no/atc", CodeSystem::Atc),
            ("urn:oid:x/ATC", CodeSystem::Atc),
            ("ATC", CodeSystem::Atc),
            ("http://hl7.org/fhir/sid/icd-10", CodeSystem::Icd10),
            ("http://hl7.org/fhir/sid/icd-10-cm", CodeSystem::Icd10),
            (
                "https://smt.esante.gouv.fr/terminologie-cim-10/",
                CodeSystem::Icd10,
            ),
            ("http://hl7.org/fhir/sid/ICD-10-PCS", CodeSystem::Other),
            ("http://example.org/local", CodeSystem::Other),
            ("", CodeSystem::Other),
        ];
        for (uri, expected) in cases {
            assert_eq!(system_of(uri), expected, "{uri}");
        }
    }
}
