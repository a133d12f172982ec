//! From findings to CDS Hooks cards, in the requested language.
//!
//! Optional fields are omitted, never null or empty (a rule of the specification). Card and
//! suggestion uuids are derived from the hookInstance, the order and the topic, so the same
//! request always gives the same response (the command line and the HTTP service agree).

use jakguard_knowledge::{FactorCode, Knowledge, Lang, Topic};
use jakguard_rules::{Assessment, DoseFinding, Evidence, Factor, Finding, Note};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const TOPIC_SYSTEM: &str = "urn:jakguard:topic";
pub const OVERRIDE_SYSTEM: &str = "urn:jakguard:override-reason";
pub const NOTICE_URL: &str =
    "https://ansm.sante.fr/uploads/2023/04/17/20230417-dhpc-janus-kinase.pdf";
const UCUM: &str = "http://unitsofmeasure.org";

static NO_DOSE: DoseFinding = DoseFinding {
    ordered_mg_per_day: 0.0,
    max_mg_per_day: 0.0,
    propose_dose_mg: 0.0,
    propose_per_day: 1,
    because: Vec::new(),
    note: None,
};

#[derive(Debug, Clone, Serialize)]
pub struct Coding {
    pub system: &'static str,
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub label: String,
    pub url: &'static str,
    pub topic: Coding,
}

#[derive(Debug, Clone, Serialize)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub description: String,
    #[serde(rename = "resourceId", skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The resource as JSON text (spliced into the EHR's own, see `updated_order`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Box<RawValue>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    pub label: String,
    pub uuid: String,
    #[serde(rename = "isRecommended", skip_serializing_if = "Option::is_none")]
    pub is_recommended: Option<bool>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub label: String,
    pub url: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct FactorOut {
    pub code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoseOut {
    pub ordered_mg_per_day: f64,
    pub max_mg_per_day: f64,
    pub proposed_mg: f64,
    pub proposed_per_day: u32,
    pub because: Vec<&'static str>,
}

/// `extension.jakguard`: the machine-readable explanation of a card.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub order: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub molecule: Option<String>,
    pub factors: Vec<FactorOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dose: Option<DoseOut>,
    #[serde(rename = "missingKeys", skip_serializing_if = "Vec::is_empty")]
    pub missing_keys: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    #[serde(rename = "knowledgeVersion")]
    pub knowledge_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Extension {
    pub jakguard: Explanation,
}

#[derive(Debug, Clone, Serialize)]
pub struct Card {
    pub uuid: String,
    pub summary: String,
    pub detail: String,
    pub indicator: &'static str,
    pub source: Source,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<Suggestion>,
    #[serde(rename = "selectionBehavior", skip_serializing_if = "Option::is_none")]
    pub selection_behavior: Option<&'static str>,
    #[serde(rename = "overrideReasons", skip_serializing_if = "Vec::is_empty")]
    pub override_reasons: Vec<Coding>,
    pub links: Vec<Link>,
    pub extension: Extension,
}

/// Everything a card needs to know about the request.
pub struct RenderContext<'a> {
    pub k: &'a Knowledge,
    pub lang: Lang,
    pub service_id: &'a str,
    pub hook_instance: &'a str,
    /// The raw JSON of each draft order, by reference, for update suggestions.
    pub draft_raw: &'a dyn Fn(&str) -> Option<&'a str>,
    /// Strength in mg of one unit of presentation of each order, when known.
    pub strength_mg: &'a dyn Fn(&str) -> Option<f64>,
}

/// A deterministic uuid for (request, order, topic, part).
fn uuid_for(ctx: &RenderContext<'_>, parts: &[&str]) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1c_0f9e_5b1d_4c55_9f0e_2c6b_8d3a_7e41);
    let mut name = String::with_capacity(
        ctx.service_id.len()
            + ctx.hook_instance.len()
            + parts.iter().map(|p| p.len() + 1).sum::<usize>()
            + 1,
    );
    name.push_str(ctx.service_id);
    name.push('|');
    name.push_str(ctx.hook_instance);
    for p in parts {
        name.push('|');
        name.push_str(p);
    }
    // What uuid::Uuid::new_v5 computes (SHA-1 of the namespace then the name, its first 16
    // bytes with version 5 and the RFC variant), with a SHA-1 that uses the CPU's instructions.
    use sha1::Digest;
    let hash = sha1::Sha1::new()
        .chain_update(NAMESPACE.as_bytes())
        .chain_update(name.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Builder::from_sha1_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// Replaces each `{name}` of a template by its value, in one pass. A value is never scanned for
/// placeholders itself (an order id or a display from the EHR may contain braces); an unknown
/// `{name}` stays as written.
fn fill(template: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            let (_, v) = pairs.iter().find(|(k, _)| *k == name)?;
            Some((v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A number as cards show it: at most three decimals, no trailing zeros (`12.5`, `10`).
fn num(v: f64) -> String {
    let r = (v * 1000.0).round() / 1000.0;
    if r.fract() == 0.0 && r.abs() < 1e15 {
        // Whole numbers (most doses): integer formatting, not the float one.
        (r as i64).to_string()
    } else {
        r.to_string()
    }
}

/// Keeps a summary under the 140 characters the specification allows.
fn clip(s: String) -> String {
    if s.chars().count() < 140 {
        return s;
    }
    let mut out: String = s.chars().take(138).collect();
    out.push('…');
    out
}

fn evidence_line(ctx: &RenderContext<'_>, e: &Evidence) -> String {
    let mut out = String::with_capacity(e.what.len() + e.reference.as_str().len() + 24);
    push_evidence(ctx, e, &mut out);
    out
}

/// `what (`reference`, date)`, appended to `out`: the factor lines write each piece of
/// evidence straight into the card's text rather than into strings joined afterwards.
fn push_evidence(ctx: &RenderContext<'_>, e: &Evidence, out: &mut String) {
    use std::fmt::Write as _;
    out.push_str(&e.what);
    out.push_str(" (`");
    out.push_str(e.reference.as_str());
    out.push_str("`, ");
    match &e.date {
        // Writing to a String cannot fail.
        Some(d) => {
            let _ = write!(out, "{d}");
        }
        None => out.push_str(ctx.k.texts.get(ctx.lang, "evidence_none")),
    }
    out.push(')');
}

fn factor_lines(ctx: &RenderContext<'_>, factors: &[Factor]) -> String {
    let t = &ctx.k.texts;
    let mut out = String::with_capacity(128 * factors.len());
    for f in factors {
        let label = t.get_in(ctx.lang, "factor", f.code.as_str());
        out.push_str("- **");
        out.push_str(label);
        out.push_str("**");
        if f.inferred {
            out.push_str(" (");
            out.push_str(t.get(ctx.lang, "inferred"));
            out.push(')');
        }
        for (i, e) in f.evidence.iter().enumerate() {
            out.push_str(if i == 0 { ": " } else { "; " });
            push_evidence(ctx, e, &mut out);
        }
        out.push('\n');
    }
    out
}

fn override_reasons(ctx: &RenderContext<'_>, codes: &[&str]) -> Vec<Coding> {
    codes
        .iter()
        .map(|c| Coding {
            system: OVERRIDE_SYSTEM,
            code: c.to_string(),
            display: ctx.k.texts.get_in(ctx.lang, "override", c).to_owned(),
        })
        .collect()
}

fn proposed_text(ctx: &RenderContext<'_>, d: &DoseFinding) -> String {
    let t = &ctx.k.texts;
    let times = match d.propose_per_day {
        1 => t.get(ctx.lang, "dose.once").to_owned(),
        2 => t.get(ctx.lang, "dose.twice").to_owned(),
        n => fill(t.get(ctx.lang, "dose.n-times"), &[("n", &n.to_string())]),
    };
    fill(
        t.get(ctx.lang, "dose.proposed"),
        &[("dose", &num(d.propose_dose_mg)), ("times", &times)],
    )
}

/// Renders every finding of every assessment, in order.
pub fn render(ctx: &RenderContext<'_>, assessments: &[Assessment]) -> Vec<Card> {
    assessments
        .iter()
        .flat_map(|a| a.findings.iter().map(move |f| card(ctx, a, f)))
        .collect()
}

fn card(ctx: &RenderContext<'_>, a: &Assessment, f: &Finding) -> Card {
    let k = ctx.k;
    let t = &k.texts;
    let lang = ctx.lang;
    let order = a.order.as_str();
    let molecule_display = a
        .molecule
        .as_deref()
        .and_then(|m| k.molecule(m))
        .map(|m| m.display(lang).to_owned())
        .unwrap_or_else(|| "?".to_owned());
    let mut molecule_cap = molecule_display.clone();
    if let Some(first) = molecule_cap.get(..1) {
        molecule_cap = first.to_uppercase() + &molecule_cap[1..];
    }
    let codes: Vec<FactorCode> = f.factors.iter().map(|x| x.code).collect();
    let count = codes.len().to_string();

    let mut detail = String::new();
    let mut push = |s: &str| {
        if !detail.is_empty() {
            detail.push_str("\n\n");
        }
        detail.push_str(s.trim_end());
    };
    if a.molecule.is_some() {
        push(&fill(
            t.get(lang, "detail.order"),
            &[("order", order), ("molecule", &molecule_display)],
        ));
    }

    let mut suggestions = Vec::new();
    let mut reasons: Vec<&str> = Vec::new();
    let cancel = |ctx: &RenderContext<'_>| Suggestion {
        label: fill(
            t.get(lang, "suggestion.cancel"),
            &[("molecule", &molecule_display)],
        ),
        uuid: uuid_for(ctx, &[order, f.topic.as_str(), "cancel"]),
        is_recommended: None,
        actions: vec![Action {
            kind: "delete",
            description: fill(t.get(lang, "suggestion.cancel-action"), &[("order", order)]),
            resource_id: Some(order.to_owned()),
            resource: None,
        }],
    };
    let mut missing_keys = Vec::new();
    let mut unreadable = Vec::new();
    let mut dose_out = None;

    let summary = match f.topic {
        Topic::AnsmRestriction => {
            push(t.get(lang, "detail.restriction-intro"));
            push(&factor_lines(ctx, &f.factors));
            for n in &f.notes {
                match n {
                    Note::FormerSmoker { pack_years } => {
                        push(t.get(lang, "detail.former-smoker"));
                        if let Some((v, r)) = pack_years {
                            push(&format!(
                                "{} (`{r}`)",
                                fill(t.get(lang, "detail.pack-years"), &[("value", &num(*v))])
                            ));
                        }
                    }
                    Note::SkinCancer(e) => push(&format!(
                        "{} {}",
                        t.get(lang, "detail.skin-note"),
                        evidence_line(ctx, e)
                    )),
                    _ => {}
                }
            }
            push(t.get(lang, "detail.restriction-advice"));
            suggestions.push(cancel(ctx));
            reasons.extend(["no-alternative", "risks-discussed"]);
            let key = if f.indicator == jakguard_knowledge::Indicator::Critical {
                "summary.ansm-restriction-critical"
            } else {
                "summary.ansm-restriction"
            };
            fill(
                t.get(lang, key),
                &[("molecule", &molecule_cap), ("count", &count)],
            )
        }
        Topic::VteCaution => {
            push(t.get(lang, "detail.vte-intro"));
            push(&factor_lines(ctx, &f.factors));
            if f.notes.contains(&Note::ObesityIsVteRisk) {
                push(t.get(lang, "detail.vte-obesity"));
            }
            push(t.get(lang, "detail.vte-ask"));
            reasons.extend(["no-alternative", "risks-discussed"]);
            fill(
                t.get(lang, "summary.vte-caution"),
                &[("molecule", &molecule_cap)],
            )
        }
        Topic::CtdOffLabel => {
            push(t.get(lang, "detail.ctd-intro"));
            push(&factor_lines(ctx, &f.factors));
            push(t.get(lang, "detail.ctd-risks"));
            push(t.get(lang, "detail.ctd-dose"));
            suggestions.push(cancel(ctx));
            reasons.extend(["expert-opinion", "risks-discussed"]);
            fill(
                t.get(lang, "summary.ctd-off-label"),
                &[("molecule", &molecule_cap)],
            )
        }
        Topic::DoseAdjustment => {
            // The rules always attach the dose to this topic; a zero dose would only read oddly.
            let d = f.dose.as_ref().unwrap_or(&NO_DOSE);
            let because: Vec<&str> = d
                .because
                .iter()
                .map(|c| t.get_in(lang, "factor", c.as_str()))
                .collect();
            let proposed = proposed_text(ctx, d);
            push(&fill(
                t.get(lang, "detail.dose"),
                &[
                    ("ordered", &num(d.ordered_mg_per_day)),
                    ("max", &num(d.max_mg_per_day)),
                    ("factors", &because.join(", ")),
                    ("proposed", &proposed),
                ],
            ));
            if let Some(note) = &d.note {
                push(t.get_in(lang, "note", note));
            }
            if let Some(resource) = updated_order(ctx, order, d, &proposed) {
                suggestions.push(Suggestion {
                    label: fill(
                        t.get(lang, "suggestion.change-dose"),
                        &[("proposed", &proposed)],
                    ),
                    uuid: uuid_for(ctx, &[order, f.topic.as_str(), "change-dose"]),
                    is_recommended: Some(true),
                    actions: vec![Action {
                        kind: "update",
                        description: fill(
                            t.get(lang, "suggestion.change-dose-action"),
                            &[("order", order), ("proposed", &proposed)],
                        ),
                        resource_id: None,
                        resource: Some(resource),
                    }],
                });
            }
            reasons.extend(["expert-opinion", "risks-discussed"]);
            dose_out = Some(DoseOut {
                ordered_mg_per_day: d.ordered_mg_per_day,
                max_mg_per_day: d.max_mg_per_day,
                proposed_mg: d.propose_dose_mg,
                proposed_per_day: d.propose_per_day,
                because: d.because.iter().map(|c| c.as_str()).collect(),
            });
            fill(
                t.get(lang, "summary.dose-adjustment"),
                &[
                    ("molecule", &molecule_cap),
                    ("ordered", &num(d.ordered_mg_per_day)),
                    ("max", &num(d.max_mg_per_day)),
                ],
            )
        }
        Topic::BloodCount => {
            push(&fill(
                t.get(lang, "detail.blood-count"),
                &[("molecule", &molecule_display)],
            ));
            push(&factor_lines(ctx, &f.factors));
            suggestions.push(cancel(ctx));
            reasons.push("expert-opinion");
            let analytes: Vec<&str> = f
                .factors
                .iter()
                .flat_map(|x| x.analytes.iter())
                .map(|a| t.get_in(lang, "analyte", a.as_str()))
                .collect();
            fill(
                t.get(lang, "summary.blood-count"),
                &[
                    ("molecule", &molecule_cap),
                    ("analytes", &analytes.join(", ")),
                ],
            )
        }
        Topic::MissingData => {
            if f.notes.contains(&Note::OrderUnreadable) {
                push(&fill(
                    t.get(lang, "detail.order-unreadable"),
                    &[("order", order)],
                ));
                t.get(lang, "summary.order-unreadable").to_owned()
            } else {
                push(t.get(lang, "detail.missing-intro"));
                let mut lines = String::new();
                for x in &f.factors {
                    lines.push_str(&format!(
                        "- **{}**",
                        t.get_in(lang, "factor", x.code.as_str())
                    ));
                    if x.code == FactorCode::BloodCountMissing {
                        let names: Vec<&str> = x
                            .analytes
                            .iter()
                            .map(|a| t.get_in(lang, "analyte", a.as_str()))
                            .collect();
                        lines.push_str(": ");
                        lines.push_str(&fill(
                            t.get(lang, "detail.missing-blood"),
                            &[("analytes", &names.join(", "))],
                        ));
                    }
                    lines.push('\n');
                }
                if !lines.is_empty() {
                    push(&lines);
                }
                for n in &f.notes {
                    match n {
                        Note::MissingKeys(keys) => {
                            missing_keys = keys.clone();
                            push(&fill(
                                t.get(lang, "detail.missing-keys"),
                                &[("keys", &keys.join(", "))],
                            ));
                        }
                        Note::Unreadable(items) => {
                            unreadable = items.clone();
                            push(&fill(
                                t.get(lang, "detail.unreadable"),
                                &[("items", &items.join("; "))],
                            ));
                        }
                        _ => {}
                    }
                }
                fill(
                    t.get(lang, "summary.missing-data"),
                    &[("molecule", &molecule_cap)],
                )
            }
        }
    };

    let selection_behavior = (!suggestions.is_empty()).then_some("at-most-one");
    Card {
        uuid: uuid_for(ctx, &[order, f.topic.as_str()]),
        summary: clip(summary),
        detail,
        indicator: f.indicator.as_str(),
        source: Source {
            label: t.get(lang, "source_label").to_owned(),
            url: NOTICE_URL,
            topic: Coding {
                system: TOPIC_SYSTEM,
                code: f.topic.as_str().to_owned(),
                display: t.get_in(lang, "topic", f.topic.as_str()).to_owned(),
            },
        },
        suggestions,
        selection_behavior,
        override_reasons: override_reasons(ctx, &reasons),
        links: vec![Link {
            label: t.get(lang, "notice_link_label").to_owned(),
            url: NOTICE_URL,
            kind: "absolute",
        }],
        extension: Extension {
            jakguard: Explanation {
                order: order.to_owned(),
                molecule: a.molecule.clone(),
                factors: f
                    .factors
                    .iter()
                    .map(|x| FactorOut {
                        code: x.code.as_str(),
                        evidence: x.evidence.iter().map(|e| e.reference.to_string()).collect(),
                        inferred: x.inferred,
                    })
                    .collect(),
                dose: dose_out,
                missing_keys,
                unreadable,
                knowledge_version: k.version().to_owned(),
            },
        },
    }
}

/// The draft order with its dose changed to the proposal, everything else as the EHR sent it.
/// Tablets stay tablets when the strength divides the proposed dose.
///
/// Spliced into the EHR's own JSON rather than rebuilt from a parsed tree: every element the
/// rules never read goes back byte for byte (decimal precision, escapes, member order), and a
/// call pays one scan of the order's top level instead of building and writing a tree of it.
fn updated_order(
    ctx: &RenderContext<'_>,
    order: &str,
    d: &DoseFinding,
    proposed: &str,
) -> Option<Box<RawValue>> {
    let raw = (ctx.draft_raw)(order)?;
    let mut resource: Members = read_json(raw)?;
    let first: Option<Members> = resource
        .get("dosageInstruction")
        .and_then(first_of)
        .and_then(read_json);
    let quantity = match (ctx.strength_mg)(order) {
        Some(s)
            if s > 0.0
                && ((d.propose_dose_mg / s) - (d.propose_dose_mg / s).round()).abs() < 1e-9 =>
        {
            let original = first
                .as_ref()
                .and_then(|f| f.get("doseAndRate"))
                .and_then(first_of)
                .and_then(read_json::<Members>)
                .and_then(|m| m.get("doseQuantity"))
                .and_then(read_json::<Members>)
                .filter(|q| q.has("unit") || q.has("code"));
            let mut q = original.unwrap_or_default();
            q.set("value", number((d.propose_dose_mg / s).round()))?;
            q.to_raw()?
        }
        _ => made(format!(
            r#"{{"value":{},"unit":"mg","system":"{UCUM}","code":"mg"}}"#,
            number(d.propose_dose_mg)
        ))?,
    };
    // Keep route, method, sequence... of the original instruction; replace what changes.
    let mut first = first.unwrap_or_default();
    first.set("text", serde_json::to_string(proposed).ok()?)?;
    first.set(
        "timing",
        format!(
            r#"{{"repeat":{{"frequency":{},"period":1,"periodUnit":"d"}}}}"#,
            d.propose_per_day
        ),
    )?;
    first.set_raw(
        "doseAndRate",
        serde_json::value::to_raw_value(&[DoseAndRate {
            dose_quantity: &quantity,
        }])
        .ok()?,
    );
    first.remove("patientInstruction");
    resource.set_raw(
        "dosageInstruction",
        serde_json::value::to_raw_value(&[&first]).ok()?,
    );
    // Written by serde_json from values that are JSON already: not scanned once more.
    resource.to_raw()
}

/// `{"doseQuantity": ...}`, the one element of the proposed `doseAndRate`.
#[derive(Serialize)]
struct DoseAndRate<'a> {
    #[serde(rename = "doseQuantity")]
    dose_quantity: &'a RawValue,
}

/// JSON text made here, as a value of [`Members`] (checked: it is short).
fn made(json: String) -> Option<Box<RawValue>> {
    RawValue::from_string(json).ok()
}

/// The raw text of the first element of a JSON array.
fn first_of(array: &str) -> Option<&str> {
    let list: Vec<&RawValue> = read_json(array)?;
    list.first().map(|v| v.get())
}

/// `T` read from JSON of the request: by [`jakguard_fhir::scan`] (what serde_json would give,
/// for less), or by serde_json when scan leaves it (a name with escapes...).
fn read_json<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    jakguard_fhir::scan::from_str(text)
        .or_else(|_| serde_json::from_str(text))
        .ok()
}

/// The members of a JSON object in the order written, each value as its raw JSON; a repeated
/// name keeps the place of its first occurrence and the value of its last, as a parsed tree
/// would. Replaced values are JSON made here.
#[derive(Default)]
struct Members<'a>(Vec<(Cow<'a, str>, Member<'a>)>);

enum Member<'a> {
    /// As read from the request.
    Read(&'a RawValue),
    /// Made here.
    Made(Box<RawValue>),
}

impl<'a> Members<'a> {
    /// The raw text of a member as read from the request (not one set here).
    fn get(&self, name: &str) -> Option<&'a str> {
        match self.0.iter().find(|(k, _)| k == name)? {
            (_, Member::Read(v)) => Some(v.get()),
            (_, Member::Made(_)) => None,
        }
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// Sets `name` to the JSON text `json`; `None` if it is not JSON.
    fn set(&mut self, name: &str, json: String) -> Option<()> {
        self.set_raw(name, made(json)?);
        Some(())
    }

    fn set_raw(&mut self, name: &str, json: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = Member::Made(json),
            None => self
                .0
                .push((Cow::Owned(name.to_owned()), Member::Made(json))),
        }
    }

    fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name);
    }

    /// The object as JSON, written compactly by serde_json, values byte for byte.
    fn to_raw(&self) -> Option<Box<RawValue>> {
        serde_json::value::to_raw_value(self).ok()
    }
}

impl Serialize for Members<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            let v: &RawValue = match v {
                Member::Read(v) => v,
                Member::Made(v) => v,
            };
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> serde::de::Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut out = Members::default();
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    match out.0.iter_mut().find(|(k, _)| *k == name) {
                        Some((_, v)) => *v = Member::Read(value),
                        None => out.0.push((name, Member::Read(value))),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

/// Whole numbers as JSON integers (`5`, not `5.0`), as EHRs write doses.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        (v as i64).to_string()
    } else {
        serde_json::Value::from(v).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_every_placeholder_once_and_never_inside_values() {
        let pairs = [
            ("molecule", "Tofacitinib"),
            ("order", "MedicationRequest/{count}"),
            ("count", "3"),
        ];
        let cases = [
            ("{molecule}: {count} factor(s)", "Tofacitinib: 3 factor(s)"),
            (
                "{order} {order}",
                "MedicationRequest/{count} MedicationRequest/{count}",
            ),
            ("{unknown} {", "{unknown} {"),
            ("no placeholder", "no placeholder"),
            ("{molecule", "{molecule"),
            ("{}{count}}", "{}3}"),
            ("é{molecule}è", "éTofacitinibè"),
        ];
        for (template, expected) in cases {
            assert_eq!(fill(template, &pairs), expected, "{template}");
        }
    }

    /// The dose update of `MedicationRequest/d1` whose JSON is `raw`.
    fn dose_update_of(
        k: &Knowledge,
        raw: &str,
        strength: Option<f64>,
        d: &DoseFinding,
        proposed: &str,
    ) -> Option<Box<RawValue>> {
        let draft_raw = |_: &str| Some(raw);
        let strength_mg = |_: &str| strength;
        let ctx = RenderContext {
            k,
            lang: Lang::En,
            service_id: "jakguard-order-sign",
            hook_instance: "h",
            draft_raw: &draft_raw,
            strength_mg: &strength_mg,
        };
        updated_order(&ctx, "MedicationRequest/d1", d, proposed)
    }

    /// The EHR's order goes back as written except the first dosage instruction's text, timing
    /// and dose; `expected` is the whole resource, byte for byte.
    #[test]
    fn a_dose_update_changes_only_the_dose_of_the_ehrs_own_json() {
        let k = Knowledge::embedded().expect("the embedded knowledge");
        let d = DoseFinding {
            ordered_mg_per_day: 20.0,
            max_mg_per_day: 10.0,
            propose_dose_mg: 5.0,
            propose_per_day: 2,
            because: Vec::new(),
            note: None,
        };
        let tablets =
            r#""doseAndRate":[{"doseQuantity":{"value":1,"unit":"tablet","code":"TAB"}}]"#;
        let mg = r#""doseAndRate":[{"doseQuantity":{"value":5,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"}}]"#;
        let timing = r#""timing":{"repeat":{"frequency":2,"period":1,"periodUnit":"d"}}"#;
        let cases: [(&str, Option<f64>, String); 6] = [
            // Member order, escapes and decimal precision of everything else are kept; the
            // instruction's route stays, its patientInstruction goes (it spoke of the old dose).
            (
                r#"{"resourceType":"MedicationRequest","id":"d1","note":[{"text":"caf\u00e9 \"x\""}],"dispenseRequest":{"quantity":{"value":1.50}},"dosageInstruction":[{"sequence":1,"text":"10 mg","patientInstruction":"x","route":{"text":"oral"},"doseAndRate":[{"doseQuantity":{"value":2,"unit":"tablet","code":"TAB"}}]},{"text":"second"}],"subject":{"reference":"Patient/p"}}"#,
                Some(5.0),
                format!(
                    r#"{{"resourceType":"MedicationRequest","id":"d1","note":[{{"text":"caf\u00e9 \"x\""}}],"dispenseRequest":{{"quantity":{{"value":1.50}}}},"dosageInstruction":[{{"sequence":1,"text":"5 mg twice","route":{{"text":"oral"}},{tablets},{timing}}}],"subject":{{"reference":"Patient/p"}}}}"#
                ),
            ),
            // The strength does not divide the dose: milligrams.
            (
                r#"{"resourceType":"MedicationRequest","id":"d1","dosageInstruction":[{"text":"10 mg"}]}"#,
                Some(3.0),
                format!(
                    r#"{{"resourceType":"MedicationRequest","id":"d1","dosageInstruction":[{{"text":"5 mg twice",{timing},{mg}}}]}}"#
                ),
            ),
            // No strength known, no instruction at all.
            (
                r#"{"resourceType":"MedicationRequest","id":"d1"}"#,
                None,
                format!(
                    r#"{{"resourceType":"MedicationRequest","id":"d1","dosageInstruction":[{{"text":"5 mg twice",{timing},{mg}}}]}}"#
                ),
            ),
            // A dose quantity without unit or code is not kept.
            (
                r#"{"id":"d1","dosageInstruction":[{"doseAndRate":[{"doseQuantity":{"value":2}}]}]}"#,
                Some(5.0),
                format!(
                    r#"{{"id":"d1","dosageInstruction":[{{"doseAndRate":[{{"doseQuantity":{{"value":1}}}}],"text":"5 mg twice",{timing}}}]}}"#
                ),
            ),
            // A repeated member keeps its first place and its last value, as a parsed tree would.
            (
                r#"{"id":"a","status":"draft","id":"d1","dosageInstruction":{"text":"not an array"}}"#,
                None,
                format!(
                    r#"{{"id":"d1","status":"draft","dosageInstruction":[{{"text":"5 mg twice",{timing},{mg}}}]}}"#
                ),
            ),
            // An escaped member name is read as the name it spells.
            (
                r#"{"dosage\u0049nstruction":[{"text":"old","route":{"text":"oral"}}]}"#,
                None,
                format!(
                    r#"{{"dosageInstruction":[{{"text":"5 mg twice","route":{{"text":"oral"}},{timing},{mg}}}]}}"#
                ),
            ),
        ];
        for (raw, strength, expected) in cases {
            let got =
                dose_update_of(&k, raw, strength, &d, "5 mg twice").expect("an updated order");
            assert_eq!(got.get(), expected, "{raw}");
            serde_json::from_str::<serde_json::Value>(got.get()).expect("valid JSON");
        }
    }

    #[test]
    fn a_draft_that_is_not_a_json_object_gets_no_dose_update() {
        let k = Knowledge::embedded().expect("the embedded knowledge");
        let d = NO_DOSE.clone();
        for raw in ["[1,2]", "\"x\"", "null", "{\"id\":"] {
            assert!(dose_update_of(&k, raw, None, &d, "x").is_none(), "{raw}");
        }
    }

    #[test]
    fn numbers_show_at_most_three_decimals_and_no_trailing_zeros() {
        let cases = [
            (10.0, "10"),
            (12.5, "12.5"),
            (0.1 + 0.2, "0.3"),
            (2.0004, "2"),
            (1.23456, "1.235"),
            (7.0 / 3.0, "2.333"),
            (0.0, "0"),
            (22.0, "22"),
            (1.0e6, "1000000"),
        ];
        for (v, expected) in cases {
            assert_eq!(num(v), expected, "{v}");
        }
    }

    #[test]
    fn card_uuids_are_stable_and_differ_by_every_part() {
        let k = Knowledge::embedded().expect("the embedded knowledge");
        let ctx = RenderContext {
            k: &k,
            lang: Lang::En,
            service_id: "jakguard-order-sign",
            hook_instance: "h",
            draft_raw: &|_| None,
            strength_mg: &|_| None,
        };
        // The name hashed is `service|hookInstance|parts...`, as it always was: the same
        // request keeps giving the same card uuids across versions.
        let expected = uuid::Uuid::new_v5(
            &uuid::Uuid::from_u128(0x6a1c_0f9e_5b1d_4c55_9f0e_2c6b_8d3a_7e41),
            b"jakguard-order-sign|h|MedicationRequest/d1|ansm-restriction",
        )
        .to_string();
        assert_eq!(
            uuid_for(&ctx, &["MedicationRequest/d1", "ansm-restriction"]),
            expected
        );
        assert_ne!(
            uuid_for(
                &ctx,
                &["MedicationRequest/d1", "ansm-restriction", "cancel"]
            ),
            expected
        );
    }
}
