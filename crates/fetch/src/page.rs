//! What a fetched body says about the fetch itself: its next link, whether it is (or carries) an
//! OperationOutcome that makes the search incomplete, whether a read returned the Patient asked
//! for. The resources themselves are not read here: the page goes to `complete` as raw JSON and
//! is read tolerantly there, so one odd resource does not sink a fetch.
//!
//! OperationOutcomes are read leanly (`issue[].severity` and `code` as strings), and the codes
//! are checked against their required bindings with fhir-sdk's R4B code enums (`IssueSeverity`,
//! `IssueType`). Why not `serde_json::from_str::<OperationOutcome>`: its serde code (with
//! `contained`, the whole R4B `Resource` tree) is instantiated in the calling crate, which made
//! a debug build of this crate take minutes and a release build a quarter of an hour; and being
//! strict it would refuse a server's slightly odd OperationOutcome, which is still an
//! OperationOutcome. The code enums cost nothing at build time and keep the binding check.

use std::str::FromStr;

use fhir_sdk::r4b::codes::{IssueSeverity, IssueType};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Link {
    relation: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct Search {
    mode: Option<String>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    search: Option<Search>,
}

#[derive(Deserialize)]
struct BundleHead<'a> {
    #[serde(default)]
    link: Vec<serde_json::Value>,
    #[serde(default, borrow)]
    entry: Vec<&'a RawValue>,
}

/// The verdict on one page.
#[derive(Debug, PartialEq, Eq)]
pub enum Page {
    /// Usable; `next` is the next-page link, `incomplete` a reason the search may lack results.
    Ok {
        next: Option<String>,
        incomplete: Option<String>,
    },
    /// Not usable at all (the reason goes on the card).
    Failed(String),
}

/// The issue codes of an OperationOutcome whose worst issue is an error, or `None` when it only
/// informs or warns. Never fails: an issue whose severity is not in the binding counts as an
/// error (safer than ignoring it), a code outside the binding is shown as `unknown code`.
pub fn outcome_error(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Issue {
        severity: Option<serde_json::Value>,
        code: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Lean {
        #[serde(default)]
        issue: Vec<serde_json::Value>,
    }
    let lean: Lean = serde_json::from_str(body).ok()?;
    let mut codes: Vec<String> = Vec::new();
    for raw in lean.issue {
        let issue = serde_json::from_value::<Issue>(raw).ok();
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        let severity = issue.as_ref().and_then(|i| text(i.severity.as_ref()));
        let error = match severity.as_deref().map(IssueSeverity::from_str) {
            Some(Ok(IssueSeverity::Information | IssueSeverity::Warning)) => false,
            Some(Ok(IssueSeverity::Error | IssueSeverity::Fatal)) | Some(Err(_)) | None => true,
        };
        if !error {
            continue;
        }
        let code = issue.as_ref().and_then(|i| text(i.code.as_ref()));
        codes.push(match code.as_deref().map(IssueType::from_str) {
            Some(Ok(t)) => t.to_string(),
            _ => "unknown code".to_owned(),
        });
    }
    codes.dedup();
    (!codes.is_empty()).then(|| codes.join(", "))
}

/// Inspects a 200 body. `expect_patient` is the id a Patient read must return.
pub fn inspect(body: &str, expect_patient: Option<&str>) -> Page {
    let Ok(head) = serde_json::from_str::<Head>(body) else {
        return Page::Failed("the FHIR server's answer is not a FHIR resource".into());
    };
    match head.resource_type.as_deref() {
        Some("OperationOutcome") => Page::Failed(match outcome_error(body) {
            Some(codes) => format!("the FHIR server answered an OperationOutcome ({codes})"),
            None => "the FHIR server answered an OperationOutcome".into(),
        }),
        Some("Bundle") => inspect_bundle(body),
        Some("Patient") => match expect_patient {
            // Another patient's record would be worse than none.
            Some(id) if head.id.as_deref() != Some(id) => {
                Page::Failed("the FHIR server returned a Patient with another id".into())
            }
            _ => Page::Ok {
                next: None,
                incomplete: None,
            },
        },
        _ => Page::Failed("the FHIR server returned an unexpected resource type".into()),
    }
}

fn inspect_bundle(body: &str) -> Page {
    let Ok(b) = serde_json::from_str::<BundleHead>(body) else {
        return Page::Failed("the FHIR server's Bundle could not be read".into());
    };
    let next = b
        .link
        .into_iter()
        .filter_map(|l| serde_json::from_value::<Link>(l).ok())
        .find(|l| l.relation.as_deref() == Some("next"))
        .and_then(|l| l.url);
    let mut codes = Vec::new();
    for raw in b.entry {
        let Ok(e) = serde_json::from_str::<Entry>(raw.get()) else {
            continue;
        };
        let Some(res) = e.resource else { continue };
        let is_outcome = serde_json::from_str::<Head>(res.get())
            .ok()
            .is_some_and(|h| h.resource_type.as_deref() == Some("OperationOutcome"));
        let mode_outcome = e.search.and_then(|s| s.mode).as_deref() == Some("outcome");
        if is_outcome || mode_outcome {
            if let Some(c) = outcome_error(res.get()) {
                codes.push(c);
            }
        }
    }
    Page::Ok {
        next,
        incomplete: (!codes.is_empty()).then(|| {
            format!(
                "the FHIR server reported an error in its search results ({})",
                codes.join(", ")
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_outcome_with_an_error_marks_the_page_incomplete() {
        let body = r#"{"resourceType":"Bundle","type":"searchset",
          "link":[{"relation":"next","url":"https://s/fhir?page=2"}],
          "entry":[{"resource":{"resourceType":"Condition","id":"c1"}},
                   {"search":{"mode":"outcome"},"resource":{"resourceType":"OperationOutcome",
                    "issue":[{"severity":"error","code":"too-costly"}]}}]}"#;
        assert_eq!(
            inspect(body, None),
            Page::Ok {
                next: Some("https://s/fhir?page=2".into()),
                incomplete: Some(
                    "the FHIR server reported an error in its search results (too-costly)".into()
                )
            }
        );
    }

    #[test]
    fn warnings_do_not_mark_a_page_and_odd_outcomes_are_still_read() {
        let warn = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"processing"}]}"#;
        assert_eq!(outcome_error(warn), None);
        // Outside the required bindings: still an error, the code not echoed.
        let odd =
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"weird"}]}"#;
        assert_eq!(outcome_error(odd).as_deref(), Some("unknown code"));
        let odd = r#"{"issue":[{"severity":"bad","code":"exception"}, 3]}"#;
        assert_eq!(
            outcome_error(odd).as_deref(),
            Some("exception, unknown code")
        );
        let body = format!(
            r#"{{"resourceType":"Bundle","entry":[{{"resource":{warn}}}, 7, {{"resource":null}}]}}"#
        );
        assert_eq!(
            inspect(&body, None),
            Page::Ok {
                next: None,
                incomplete: None
            }
        );
    }

    #[test]
    fn a_read_must_return_the_patient_asked_for() {
        let p = r#"{"resourceType":"Patient","id":"p1"}"#;
        assert!(matches!(inspect(p, Some("p1")), Page::Ok { .. }));
        assert!(matches!(inspect(p, Some("p2")), Page::Failed(_)));
        assert!(matches!(inspect("[]", Some("p1")), Page::Failed(_)));
        assert!(matches!(
            inspect(r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}"#, Some("p1")),
            Page::Failed(m) if m.contains("not-found")
        ));
    }
}
