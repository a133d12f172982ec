//! The CDS Hooks 2.0 protocol of jakguard, without the network.
//!
//! [`Engine::evaluate`] is the whole of a service call: body bytes in, a response or a
//! [`CdsError`] out. The HTTP server and `jakguard eval` both call it, which is why they give
//! the same answer for the same request.
//!
//! Invariants:
//! - a client can make `evaluate` return an error (400, 404, 412) but never panic;
//! - the request's FHIR is read tolerantly (see `jakguard-fhir`), the envelope strictly;
//! - nothing here logs: the caller decides what may be logged (never patient data).

pub mod cards;
pub mod error;
pub mod feedback;
pub mod json;
pub mod request;
pub mod services;

use std::collections::HashMap;
use std::sync::Arc;

use jakguard_fhir::{Fetched, RecordBuilder};
use jakguard_knowledge::{Knowledge, Lang};
use jakguard_rules::{DataGap, Date, Order};
use serde::Serialize;

pub use cards::Card;
pub use error::CdsError;
pub use request::HookRequest;
pub use services::{Hook, Service, SERVICES};

/// The body of a 200 answer.
#[derive(Debug, Clone, Serialize)]
pub struct Response {
    pub cards: Vec<Card>,
}

/// The evaluation engine: the knowledge and nothing else, cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Engine {
    knowledge: Arc<Knowledge>,
}

/// The most draft orders one call may carry (an order entry session holds a handful).
pub const MAX_DRAFT_ORDERS: usize = 200;

/// The data keys the rules read; `patient` is the one without which nothing can be said.
pub const DATA_KEYS: [&str; 4] = ["patient", "conditions", "observations", "medications"];

impl Engine {
    pub fn new(knowledge: Arc<Knowledge>) -> Self {
        Engine { knowledge }
    }

    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    /// Answers a call of service `service_id` with `body`, in `lang`, as of `today`, from the
    /// prefetch alone (nothing is fetched).
    pub fn evaluate(
        &self,
        service_id: &str,
        body: &[u8],
        lang: Lang,
        today: Date,
    ) -> Result<Evaluated, CdsError> {
        let prepared = self.prepare(service_id, body)?;
        self.complete(&prepared, &[], lang, today)
    }

    /// Reads and checks a request, and says which data it still lacks
    /// ([`Prepared::to_fetch`]). Nothing is evaluated yet.
    pub fn prepare<'a>(&self, service_id: &str, body: &'a [u8]) -> Result<Prepared<'a>, CdsError> {
        let service = services::find(service_id)
            .ok_or_else(|| CdsError::UnknownService(service_id.to_owned()))?;
        let (req, prefetch) = request::parse(body, service)?;
        let drafts = &req.drafts.orders;
        if drafts.len() > MAX_DRAFT_ORDERS {
            return Err(CdsError::BadRequest(format!(
                "{} draft orders: at most {MAX_DRAFT_ORDERS} are evaluated in one call",
                drafts.len()
            )));
        }

        let selected: Vec<usize> = match (&req.hook, &req.selections) {
            (Hook::OrderSelect, Some(selections)) => {
                // Indexes built once: a request may carry many selections, and each must cost
                // a lookup, not a scan of the drafts (let alone a new reading of draftOrders).
                let mut by_ref: HashMap<&str, usize> = HashMap::new();
                for (i, d) in drafts.iter().enumerate() {
                    by_ref.entry(d.order.reference.as_str()).or_insert(i);
                }
                let mut entries: Option<std::collections::HashSet<String>> = None;
                let mut out = Vec::new();
                for s in selections {
                    match by_ref.get(s.as_ref()) {
                        Some(&i) => out.push(i),
                        None => {
                            // A selection may name a non-medication draft (ServiceRequest...): only
                            // a selection that names nothing in draftOrders is an error.
                            let entries =
                                entries.get_or_insert_with(|| req.drafts.entry_references());
                            if !entries.contains(s.as_ref()) {
                                return Err(CdsError::BadRequest(format!(
                                    "context.selections names `{s}`, which is not in context.draftOrders"
                                )));
                            }
                        }
                    }
                }
                out
            }
            _ => (0..drafts.len()).collect(),
        };

        // Orders that need no advice need no data.
        let k = &*self.knowledge;
        let relevant = selected.iter().any(|&i| {
            let med = &drafts[i].order.medication;
            match jakguard_rules::recognise(k, med) {
                Some(m) => m.restricted,
                None => med.unreadable,
            }
        });

        let mut keys = Vec::new();
        let mut prefetched = Vec::new();
        for (key, value) in DATA_KEYS.into_iter().zip(prefetch.0) {
            let state = match value {
                None => KeyState::Absent,
                Some(value) => match value {
                    Fetched::Null => KeyState::Null,
                    Fetched::Failed(_) => KeyState::Failed,
                    Fetched::Resources {
                        resources,
                        next,
                        unreadable,
                    } => {
                        // Kept for `complete`: reading the prefetch twice was half the time.
                        prefetched.push((key, resources, unreadable));
                        KeyState::Provided { next }
                    }
                },
            };
            keys.push((key, state));
        }
        Ok(Prepared {
            service,
            req,
            selected,
            relevant,
            keys,
            prefetched,
        })
    }

    /// Evaluates a prepared request with what was fetched for it (possibly nothing).
    pub fn complete(
        &self,
        p: &Prepared<'_>,
        fetched: &[FetchedKey],
        lang: Lang,
        today: Date,
    ) -> Result<Evaluated, CdsError> {
        let k = &*self.knowledge;
        let audit = |cards: &[Card]| AuditRecord {
            service: p.service.id.to_owned(),
            hook_instance: p.req.hook_instance.to_string(),
            patient_id: p.req.patient_id.to_string(),
            cards: cards.iter().map(AuditCard::of).collect(),
        };
        if !p.relevant {
            return Ok(Evaluated {
                audit: audit(&[]),
                response: Response { cards: vec![] },
            });
        }
        let record = read_record(p, fetched)?;
        let selected: Vec<&jakguard_fhir::DraftOrder> = p
            .selected
            .iter()
            .map(|&i| &p.req.drafts.orders[i])
            .collect();
        let orders: Vec<Order> = selected.iter().map(|d| d.order.clone()).collect();
        let assessments = jakguard_rules::evaluate(k, &record, &orders, today);

        // Later drafts with the same reference win, as they always have.
        let raw_by_ref: HashMap<&str, &str> = selected
            .iter()
            .filter_map(|d| Some((d.order.reference.as_str(), d.raw?.get())))
            .collect();
        let draft_raw = |r: &str| raw_by_ref.get(r).copied();
        let strength_by_ref: HashMap<&str, Option<f64>> = selected
            .iter()
            .map(|d| {
                (
                    d.order.reference.as_str(),
                    jakguard_rules::strength_mg(k, &d.order.medication),
                )
            })
            .collect();
        let strength = |r: &str| strength_by_ref.get(r).copied().flatten();
        let ctx = cards::RenderContext {
            k,
            lang,
            service_id: p.service.id,
            hook_instance: &p.req.hook_instance,
            draft_raw: &draft_raw,
            strength_mg: &strength,
        };
        let cards = cards::render(&ctx, &assessments);
        Ok(Evaluated {
            audit: audit(&cards),
            response: Response { cards },
        })
    }
}

/// How a data key arrived in the prefetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Not in the prefetch.
    Absent,
    /// `null`: no data.
    Null,
    /// An OperationOutcome or something unreadable.
    Failed,
    /// Resources; `next` is the link to further pages, if any.
    Provided { next: Option<String> },
}

/// A request read and checked, waiting for evaluation.
#[derive(Debug)]
pub struct Prepared<'a> {
    service: &'static Service,
    req: HookRequest<'a>,
    selected: Vec<usize>,
    relevant: bool,
    keys: Vec<(&'static str, KeyState)>,
    /// The resources (and unreadable entries) of each `Provided` key, read once in `prepare`.
    prefetched: Vec<(&'static str, Vec<jakguard_fhir::Entry<'a>>, Vec<String>)>,
}

/// What to fetch for one key: the whole query, or only the next pages of a prefetched Bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchNeed {
    /// Run the key's prefetch template (see [`Prepared::query`]).
    Query,
    /// Follow the prefetched Bundle's `next` link.
    NextPage(String),
}

impl<'a> Prepared<'a> {
    pub fn request(&self) -> &HookRequest<'a> {
        &self.req
    }

    pub fn service(&self) -> &'static Service {
        self.service
    }

    /// Whether any selected order is one jakguard advises on (otherwise nothing is needed).
    pub fn relevant(&self) -> bool {
        self.relevant
    }

    /// How each data key arrived.
    pub fn keys(&self) -> &[(&'static str, KeyState)] {
        &self.keys
    }

    /// The keys whose data is missing or incomplete, with what to fetch; empty when the
    /// orders need no data.
    pub fn to_fetch(&self) -> Vec<(&'static str, FetchNeed)> {
        if !self.relevant {
            return vec![];
        }
        self.keys
            .iter()
            .filter_map(|(k, s)| match s {
                KeyState::Absent | KeyState::Failed => Some((*k, FetchNeed::Query)),
                KeyState::Provided { next: Some(url) } => {
                    Some((*k, FetchNeed::NextPage(url.clone())))
                }
                _ => None,
            })
            .collect()
    }

    /// The relative FHIR query of a key's prefetch template, with the tokens filled in.
    pub fn query(&self, key: &str) -> Option<String> {
        let template = services::PREFETCH.iter().find(|(k, _)| *k == key)?.1;
        Some(template.replace("{{context.patientId}}", &self.req.patient_id))
    }
}

/// What was fetched for one key.
#[derive(Debug, Clone)]
pub struct FetchedKey {
    pub key: &'static str,
    pub outcome: FetchOutcome,
}

#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// The JSON bodies read: a resource, or the pages of a search Bundle, in order.
    Pages(Vec<String>),
    /// Some pages were read, then the rest could not be (deadline, page bound, server error):
    /// the pages are used and the reason is shown on the card, so that a truncated search is
    /// never taken for a complete one.
    Partial { pages: Vec<String>, reason: String },
    /// The data could not be read; the reason is shown on the card (never a token or body).
    Failed(String),
}

/// A response and the audit record of the call.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub response: Response,
    pub audit: AuditRecord,
}

/// What the audit trail keeps of one evaluation. `patient_id` is in clear here: the storage
/// layer must hash it before it is written anywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub service: String,
    pub hook_instance: String,
    pub patient_id: String,
    pub cards: Vec<AuditCard>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditCard {
    pub uuid: String,
    pub topic: String,
    pub indicator: String,
    pub molecule: Option<String>,
    pub factors: Vec<String>,
}

impl AuditCard {
    fn of(c: &Card) -> AuditCard {
        AuditCard {
            uuid: c.uuid.clone(),
            topic: c.source.topic.code.clone(),
            indicator: c.indicator.to_owned(),
            molecule: c.extension.jakguard.molecule.clone(),
            factors: c
                .extension
                .jakguard
                .factors
                .iter()
                .map(|f| f.code.to_owned())
                .collect(),
        }
    }
}

/// Reads the prefetched and fetched data into a record. A key that is neither provided nor
/// fetched becomes a gap the cards report; without the Patient there is nothing safe to say (412).
fn read_record(
    p: &Prepared<'_>,
    fetched: &[FetchedKey],
) -> Result<jakguard_rules::Record, CdsError> {
    let mut builder = RecordBuilder::new();
    let mut missing: Vec<String> = Vec::new();
    // Parsed pages must outlive the builder's borrow of them.
    let pages: Vec<(&str, Vec<&serde_json::value::RawValue>)> = fetched
        .iter()
        .filter_map(|f| match &f.outcome {
            FetchOutcome::Pages(pages) | FetchOutcome::Partial { pages, .. } => Some((
                f.key,
                pages
                    .iter()
                    .filter_map(|b| serde_json::from_str::<&serde_json::value::RawValue>(b).ok())
                    .collect(),
            )),
            FetchOutcome::Failed(_) => None,
        })
        .collect();
    for (key, state) in &p.keys {
        let key = *key;
        let fetched_pages = pages
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice());
        let failure = fetched.iter().find_map(|f| match &f.outcome {
            FetchOutcome::Failed(why) | FetchOutcome::Partial { reason: why, .. }
                if f.key == key =>
            {
                Some(why.as_str())
            }
            _ => None,
        });
        let mut have = false;
        if let KeyState::Provided { next } = state {
            if let Some((_, resources, unreadable)) = p.prefetched.iter().find(|e| e.0 == key) {
                builder.add(resources);
                for u in unreadable {
                    builder.gap(DataGap::Unreadable {
                        what: format!("prefetch `{key}`: {u}"),
                    });
                }
            }
            have = true;
            if next.is_some() && fetched_pages.is_none() {
                builder.gap(DataGap::Unreadable {
                    what: format!("prefetch `{key}`: further pages were not read"),
                });
            }
        } else if *state == KeyState::Null {
            have = true;
        }
        for raw in fetched_pages.unwrap_or_default() {
            match jakguard_fhir::read_value(raw) {
                Fetched::Resources {
                    resources,
                    unreadable,
                    ..
                } => {
                    builder.add(&resources);
                    for u in unreadable {
                        builder.gap(DataGap::Unreadable {
                            what: format!("`{key}` from the FHIR server: {u}"),
                        });
                    }
                    have = true;
                }
                Fetched::Null => have = true,
                Fetched::Failed(why) => builder.gap(DataGap::Unreadable {
                    what: format!("`{key}` from the FHIR server: {why}"),
                }),
            }
        }
        if let Some(why) = failure {
            builder.gap(DataGap::Unreadable {
                what: format!("`{key}` from the FHIR server: {why}"),
            });
        }
        if !have {
            missing.push(key.to_owned());
        }
    }
    if missing.iter().any(|k| k == "patient") {
        return Err(CdsError::PreconditionFailed(missing));
    }
    for key in missing {
        builder.gap(DataGap::MissingKey(key));
    }
    Ok(builder.finish())
}
