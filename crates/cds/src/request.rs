//! Reading a CDS Hooks request: the envelope is checked strictly (it is the protocol), the
//! FHIR inside it tolerantly (it is the EHR's data).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::CdsError;
use crate::services::{Hook, Service};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow)]
    hook: Option<Cow<'a, str>>,
    #[serde(borrow)]
    hook_instance: Option<Cow<'a, str>>,
    #[serde(borrow)]
    fhir_server: Option<Cow<'a, str>>,
    #[serde(borrow)]
    fhir_authorization: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    prefetch: Option<BTreeMap<Cow<'a, str>, &'a RawValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Context<'a> {
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    patient_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    encounter_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    selections: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    draft_orders: Option<&'a RawValue>,
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
    pub draft_orders: &'a RawValue,
    pub prefetch: BTreeMap<Cow<'a, str>, &'a RawValue>,
}

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

/// Reads and checks the envelope of a request to `service`.
pub fn parse<'a>(body: &'a [u8], service: &Service) -> Result<HookRequest<'a>, CdsError> {
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    let env: Envelope<'a> = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "the body is not a CDS Hooks request: {}",
            describe(&e)
        ))
    })?;
    let hook = non_empty(env.hook, "hook")?;
    if hook != service.hook.as_str() {
        return Err(bad(format!(
            "service `{}` answers the `{}` hook, not `{hook}`",
            service.id,
            service.hook.as_str()
        )));
    }
    let hook_instance = non_empty(env.hook_instance, "hookInstance")?;
    let context = env.context.ok_or_else(|| bad("`context` is required"))?;
    let ctx: Context<'a> = serde_json::from_str(context.get())
        .map_err(|e| bad(format!("`context` is not valid: {}", describe(&e))))?;
    let patient_id = non_empty(ctx.patient_id, "context.patientId")?;
    let draft_orders = ctx
        .draft_orders
        .ok_or_else(|| bad("`context.draftOrders` is required"))?;
    if service.hook == Hook::OrderSelect && ctx.selections.is_none() {
        return Err(bad("`context.selections` is required for order-select"));
    }
    let fhir_authorization = match env.fhir_authorization {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(
            serde_json::from_str::<FhirAuthorization>(raw.get())
                .map_err(|_| bad("`fhirAuthorization` needs an `access_token` string"))?,
        ),
    };
    if fhir_authorization.is_some() && env.fhir_server.is_none() {
        return Err(bad("`fhirServer` is required with `fhirAuthorization`"));
    }
    Ok(HookRequest {
        hook: service.hook,
        hook_instance,
        fhir_server: env.fhir_server,
        fhir_authorization,
        user_id: ctx.user_id,
        patient_id,
        encounter_id: ctx.encounter_id,
        selections: ctx.selections,
        draft_orders,
        prefetch: env.prefetch.unwrap_or_default(),
    })
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
