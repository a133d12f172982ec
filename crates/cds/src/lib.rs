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

/// The data keys the rules read; `patient` is the one without which nothing can be said.
pub const DATA_KEYS: [&str; 4] = ["patient", "conditions", "observations", "medications"];

impl Engine {
    pub fn new(knowledge: Arc<Knowledge>) -> Self {
        Engine { knowledge }
    }

    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    /// Answers a call of service `service_id` with `body`, in `lang`, as of `today`.
    pub fn evaluate(
        &self,
        service_id: &str,
        body: &[u8],
        lang: Lang,
        today: Date,
    ) -> Result<Response, CdsError> {
        let service = services::find(service_id)
            .ok_or_else(|| CdsError::UnknownService(service_id.to_owned()))?;
        let req = request::parse(body, service)?;
        let drafts = jakguard_fhir::read_draft_orders(req.draft_orders)
            .map_err(|m| CdsError::BadRequest(m.into()))?;

        let selected: Vec<&jakguard_fhir::DraftOrder<'_>> = match (&req.hook, &req.selections) {
            (Hook::OrderSelect, Some(selections)) => {
                let mut out = Vec::new();
                for s in selections {
                    match drafts
                        .iter()
                        .find(|d| d.order.reference.as_str() == s.as_ref())
                    {
                        Some(d) => out.push(d),
                        None => {
                            // A selection may name a non-medication draft (ServiceRequest...): only
                            // a selection that names nothing in draftOrders is an error.
                            if !names_any_entry(req.draft_orders.get(), s) {
                                return Err(CdsError::BadRequest(format!(
                                    "context.selections names `{s}`, which is not in context.draftOrders"
                                )));
                            }
                        }
                    }
                }
                out
            }
            _ => drafts.iter().collect(),
        };
        let orders: Vec<Order> = selected.iter().map(|d| d.order.clone()).collect();

        // Orders that need no advice need no data: answer at once, without reading the record.
        let k = &*self.knowledge;
        let relevant = orders
            .iter()
            .any(|o| match jakguard_rules::recognise(k, &o.medication) {
                Some(m) => m.restricted,
                None => o.medication.unreadable,
            });
        if !relevant {
            return Ok(Response { cards: vec![] });
        }

        let record = self.read_record(&req)?;
        let assessments = jakguard_rules::evaluate(k, &record, &orders, today);

        let raw_by_ref: HashMap<&str, &str> = selected
            .iter()
            .map(|d| (d.order.reference.as_str(), d.raw.get()))
            .collect();
        let strength_by_ref: HashMap<&str, Option<f64>> = selected
            .iter()
            .map(|d| {
                (
                    d.order.reference.as_str(),
                    jakguard_rules::strength_mg(k, &d.order.medication),
                )
            })
            .collect();
        let draft_raw = |r: &str| raw_by_ref.get(r).copied();
        let strength = |r: &str| strength_by_ref.get(r).copied().flatten();
        let ctx = cards::RenderContext {
            k,
            lang,
            service_id: service.id,
            hook_instance: &req.hook_instance,
            draft_raw: &draft_raw,
            strength_mg: &strength,
        };
        Ok(Response {
            cards: cards::render(&ctx, &assessments),
        })
    }

    /// Reads the prefetched data. A key that is absent or failed, and cannot be fetched,
    /// becomes a gap the cards report; without the Patient there is nothing safe to say (412).
    ///
    /// This is the seam where fetching from `fhirServer` plugs in: the keys in `missing` are
    /// exactly those to fetch with the prefetch templates of [`services::PREFETCH`].
    fn read_record(&self, req: &HookRequest<'_>) -> Result<jakguard_rules::Record, CdsError> {
        let mut builder = RecordBuilder::new();
        let mut missing: Vec<String> = Vec::new();
        for key in DATA_KEYS {
            let Some(raw) = req.prefetch.get(key) else {
                missing.push(key.to_owned());
                continue;
            };
            match jakguard_fhir::read_value(raw) {
                Fetched::Null => {}
                Fetched::Failed(_) => missing.push(key.to_owned()),
                Fetched::Resources {
                    resources,
                    next,
                    unreadable,
                } => {
                    builder.add(&resources);
                    for u in unreadable {
                        builder.gap(DataGap::Unreadable {
                            what: format!("prefetch `{key}`: {u}"),
                        });
                    }
                    if next.is_some() {
                        builder.gap(DataGap::Unreadable {
                            what: format!("prefetch `{key}`: further pages were not read"),
                        });
                    }
                }
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
}

/// Whether a `Type/id` names any entry of the draftOrders Bundle (of any resource type).
fn names_any_entry(bundle: &str, reference: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "resourceType", borrow)]
        resource_type: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        id: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct E<'a> {
        #[serde(borrow)]
        resource: Option<jakguard_fhir::lenient::Lenient<Head<'a>>>,
    }
    #[derive(serde::Deserialize)]
    struct B<'a> {
        #[serde(borrow, default)]
        entry: jakguard_fhir::lenient::Many<E<'a>>,
    }
    let Ok(b) = serde_json::from_str::<B>(bundle) else {
        return false;
    };
    let found = b.entry.iter().filter_map(|e| e.resource.as_ref()?.ok()).any(|h| {
        matches!((&h.resource_type, &h.id), (Some(t), Some(i)) if format!("{t}/{i}") == reference)
    });
    found
}
