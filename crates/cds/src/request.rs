//! Reading a CDS Hooks request: the envelope is checked strictly (it is the protocol), the
//! FHIR inside it tolerantly (it is the EHR's data).
//!
//! Two readings of the same rules. The one-pass reading takes the whole body in one strict
//! scan, prefetch Bundles and their resources straight into the lean shapes
//! ([`jakguard_fhir::InPlace`]); it is what nearly every request costs. When anything in the
//! body is malformed or unusual it gives up, and the reading by parts decides: the envelope
//! with `context` and each prefetch value taken as raw JSON, then each read on its own and
//! leniently, so that one bad element fails alone and every 400 names its cause. Both feed the
//! same checks ([`check`]); whenever the one-pass reading succeeds it gives what the reading by
//! parts gives (`tests/properties.rs` compares them on every fixture and on mutated ones).

use std::borrow::Cow;
use std::collections::BTreeMap;

use jakguard_fhir::{Drafts, DraftsBundle, Fetched, InPlace};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::error::CdsError;
use crate::services::{Hook, Service};
use crate::DATA_KEYS;

/// The envelope. `C` and `P` say how `context` and `prefetch` are read: raw (the reading by
/// parts) or in place (the one-pass reading); the rest is read the same way by both.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "C: Deserialize<'de>, P: Deserialize<'de>")
)]
struct Envelope<'a, C, P> {
    #[serde(borrow)]
    hook: Option<Cow<'a, str>>,
    #[serde(borrow)]
    hook_instance: Option<Cow<'a, str>>,
    #[serde(borrow)]
    fhir_server: Option<Cow<'a, str>>,
    #[serde(borrow)]
    fhir_authorization: Option<&'a RawValue>,
    context: Option<C>,
    prefetch: Option<P>,
}

impl<'a, C, P> Envelope<'a, C, P> {
    /// The same envelope with `context` and `prefetch` as the checks take them.
    fn into_fields(
        self,
        context: fn(C) -> ContextField<'a>,
        prefetch: fn(Option<P>) -> PrefetchField<'a>,
    ) -> Fields<'a> {
        Envelope {
            hook: self.hook,
            hook_instance: self.hook_instance,
            fhir_server: self.fhir_server,
            fhir_authorization: self.fhir_authorization,
            context: self.context.map(context),
            prefetch: Some(prefetch(self.prefetch)),
        }
    }
}

/// The envelope read in one pass (see the module's documentation).
type OnePassEnvelope<'a> = Envelope<'a, Context<'a, DraftsBundle<'a>>, OnePassPrefetch<'a>>;

/// The envelope read by parts.
type ByPartsEnvelope<'a> = Envelope<'a, &'a RawValue, BTreeMap<Cow<'a, str>, &'a RawValue>>;

/// The data keys of a prefetch, each read in place; other keys are skipped unread.
struct OnePassPrefetch<'a>(Prefetch<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for OnePassPrefetch<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PrefetchVisitor;
        impl<'de> Visitor<'de> for PrefetchVisitor {
            type Value = OnePassPrefetch<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a prefetch object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Prefetch::default();
                // A key with escapes is not borrowed and fails the pass: the reading by parts
                // unescapes it.
                while let Some(key) = map.next_key::<&'de str>()? {
                    match DATA_KEYS.iter().position(|k| *k == key) {
                        // A repeated key: the reading by parts keeps the last one.
                        Some(i) if out.0[i].is_some() => {
                            return Err(serde::de::Error::custom("repeated prefetch key"))
                        }
                        Some(i) => out.0[i] = Some(map.next_value::<InPlace<'de>>()?.0),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(OnePassPrefetch(out))
            }
        }
        d.deserialize_map(PrefetchVisitor)
    }
}

/// `context`; `D` says how `draftOrders` is read: raw (by parts) or with the envelope.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "D: Deserialize<'de>"))]
struct Context<'a, D = &'a RawValue> {
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    patient_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    encounter_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    selections: Option<Vec<Cow<'a, str>>>,
    draft_orders: Option<D>,
}

impl<'a, D> Context<'a, D> {
    /// The context without its `draftOrders`, and them as the checks take them.
    fn take_drafts<F>(self, field: fn(D) -> F) -> (Context<'a, ()>, Option<F>) {
        (
            Context {
                user_id: self.user_id,
                patient_id: self.patient_id,
                encounter_id: self.encounter_id,
                selections: self.selections,
                draft_orders: None,
            },
            self.draft_orders.map(field),
        )
    }
}

/// The OAuth token the client passed for FHIR access. Its Debug never shows the token.
#[derive(Deserialize)]
pub struct FhirAuthorization {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
}

impl std::fmt::Debug for FhirAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FhirAuthorization { access_token: <redacted> }")
    }
}

/// A request whose envelope is valid for its service.
#[derive(Debug)]
pub struct HookRequest<'a> {
    pub hook: Hook,
    pub hook_instance: Cow<'a, str>,
    pub fhir_server: Option<Cow<'a, str>>,
    pub fhir_authorization: Option<FhirAuthorization>,
    pub user_id: Option<Cow<'a, str>>,
    pub patient_id: Cow<'a, str>,
    pub encounter_id: Option<Cow<'a, str>>,
    pub selections: Option<Vec<Cow<'a, str>>>,
    pub drafts: Drafts<'a>,
}

/// A request read and checked, with its prefetch; or why it is refused.
pub type Reading<'a> = Result<(HookRequest<'a>, Prefetch<'a>), CdsError>;

/// The prefetch's data keys, in the order of [`DATA_KEYS`], each as read (`None`: absent).
#[derive(Debug, Default)]
pub struct Prefetch<'a>(pub [Option<Fetched<'a>>; DATA_KEYS.len()]);

fn bad(msg: impl Into<String>) -> CdsError {
    CdsError::BadRequest(msg.into())
}

fn non_empty<'a>(v: Option<Cow<'a, str>>, what: &str) -> Result<Cow<'a, str>, CdsError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(bad(format!("`{what}` is empty"))),
        None => Err(bad(format!("`{what}` is required"))),
    }
}

/// The envelope as either reading gives it, before the checks (`prefetch` is always `Some`).
type Fields<'a> = Envelope<'a, ContextField<'a>, PrefetchField<'a>>;

enum ContextField<'a> {
    /// Not read yet (the reading by parts reads it after the hook is checked).
    Raw(&'a RawValue),
    Read(Context<'a, DraftsBundle<'a>>),
}

/// `context.draftOrders` as either reading gives it.
enum DraftsField<'a> {
    Raw(&'a RawValue),
    Read(DraftsBundle<'a>),
}

// Built once per request and moved straight into `check`: boxing the large variant would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
enum PrefetchField<'a> {
    Raw(BTreeMap<Cow<'a, str>, &'a RawValue>),
    Read(Prefetch<'a>),
}

/// Reads and checks the envelope of a request to `service`, and reads its prefetch.
pub fn parse<'a>(body: &'a [u8], service: &Service) -> Reading<'a> {
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    let fields = match read_in_one_pass(text) {
        Some(fields) => fields,
        None => read_by_parts(text)?,
    };
    check(fields, service, jakguard_fhir::read_value)
}

/// [`parse`] by parts only: the reference the one-pass reading is held to (tests, fuzzing).
pub fn parse_by_parts<'a>(body: &'a [u8], service: &Service) -> Reading<'a> {
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    check(
        read_by_parts(text)?,
        service,
        jakguard_fhir::read_value_by_parts,
    )
}

/// The one-pass reading; `None` when anything in the body is malformed or unusual.
fn read_in_one_pass(text: &str) -> Option<Fields<'_>> {
    let env: OnePassEnvelope = jakguard_fhir::lenient::parse_one_pass(text).ok()?;
    Some(env.into_fields(ContextField::Read, |p| {
        PrefetchField::Read(p.map(|p| p.0).unwrap_or_default())
    }))
}

/// The reading by parts: the reference, and the one that names what is wrong.
fn read_by_parts(text: &str) -> Result<Fields<'_>, CdsError> {
    let env: ByPartsEnvelope = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "the body is not a CDS Hooks request: {}",
            describe(&e)
        ))
    })?;
    Ok(env.into_fields(ContextField::Raw, |p| {
        PrefetchField::Raw(p.unwrap_or_default())
    }))
}

/// The protocol's rules, in the order their errors are reported.
fn check<'a>(
    fields: Fields<'a>,
    service: &Service,
    read_value: fn(&'a RawValue) -> Fetched<'a>,
) -> Reading<'a> {
    let hook = non_empty(fields.hook, "hook")?;
    if hook != service.hook.as_str() {
        return Err(bad(format!(
            "service `{}` answers the `{}` hook, not `{hook}`",
            service.id,
            service.hook.as_str()
        )));
    }
    let hook_instance = non_empty(fields.hook_instance, "hookInstance")?;
    let (ctx, draft_orders): (Context<'a, ()>, _) = match fields.context {
        None => return Err(bad("`context` is required")),
        Some(ContextField::Read(ctx)) => ctx.take_drafts(DraftsField::Read),
        Some(ContextField::Raw(raw)) => serde_json::from_str::<Context<'a>>(raw.get())
            .map_err(|e| bad(format!("`context` is not valid: {}", describe(&e))))?
            .take_drafts(DraftsField::Raw),
    };
    let patient_id = non_empty(ctx.patient_id, "context.patientId")?;
    let draft_orders = draft_orders.ok_or_else(|| bad("`context.draftOrders` is required"))?;
    if service.hook == Hook::OrderSelect && ctx.selections.is_none() {
        return Err(bad("`context.selections` is required for order-select"));
    }
    let fhir_authorization = match fields.fhir_authorization {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(
            serde_json::from_str::<FhirAuthorization>(raw.get())
                .map_err(|_| bad("`fhirAuthorization` needs an `access_token` string"))?,
        ),
    };
    if fhir_authorization.is_some() && fields.fhir_server.is_none() {
        return Err(bad("`fhirServer` is required with `fhirAuthorization`"));
    }
    let prefetch = match fields.prefetch {
        None => Prefetch::default(),
        Some(PrefetchField::Read(p)) => p,
        Some(PrefetchField::Raw(map)) => {
            let mut p = Prefetch::default();
            for (slot, key) in p.0.iter_mut().zip(DATA_KEYS) {
                *slot = map.get(key).map(|raw| read_value(raw));
            }
            p
        }
    };
    // Last, as before the drafts were read with the envelope: every other 400 names its cause
    // first.
    let drafts = match draft_orders {
        DraftsField::Read(bundle) => jakguard_fhir::drafts_of(bundle),
        DraftsField::Raw(raw) => jakguard_fhir::read_draft_orders(raw),
    }
    .map_err(bad)?;
    Ok((
        HookRequest {
            hook: service.hook,
            hook_instance,
            fhir_server: fields.fhir_server,
            fhir_authorization,
            user_id: ctx.user_id,
            patient_id,
            encounter_id: ctx.encounter_id,
            selections: ctx.selections,
            drafts,
        },
        prefetch,
    ))
}

/// A serde error without echoing the client's data back.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => {
            format!("invalid JSON at line {} column {}", e.line(), e.column())
        }
        Category::Data => format!("unexpected type at line {} column {}", e.line(), e.column()),
        Category::Io => "could not be read".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/requests");
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .expect("fixtures/requests")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).expect("a fixture"))
            })
            .collect();
        out.sort();
        out
    }

    /// The one-pass reading is what keeps a call cheap: a well-formed request must not fall back
    /// to the reading by parts (which costs about three scans of the body instead of one). The
    /// sandbox's capture (a `category` object, a Bundle without `type`) is well formed where it
    /// matters: only the elements jakguard reads decide. Fixture 30 is malformed on purpose.
    #[test]
    fn well_formed_fixtures_are_read_in_one_pass() {
        let mut fell_back = Vec::new();
        for (name, body) in fixtures() {
            let text = std::str::from_utf8(&body).unwrap();
            if read_in_one_pass(text).is_none() {
                fell_back.push(name);
            }
        }
        assert_eq!(
            fell_back,
            ["30-malformed-condition-ritlecitinib-diabetes.json"]
        );
    }
}
