//! What a fetched body says about the fetch itself: its next link, whether it is (or carries) an
//! OperationOutcome that makes the search incomplete, whether a read returned the Patient asked
//! for. The resources themselves are not read here: the page goes to `complete` as raw JSON and
//! is read tolerantly there, so one odd resource does not sink a fetch.
//!
//! OperationOutcomes are read with fhir-sdk's R4B model (same elements as R4): the issue codes
//! are a required binding, which the typed model checks for us. It is strict, so a body that
//! does not fit it falls back to a lean reading of `issue[].severity`: a server's odd
//! OperationOutcome is still an OperationOutcome.

use fhir_sdk::r4b::codes::IssueSeverity;
use fhir_sdk::r4b::resources::OperationOutcome;
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
/// informs or warns. Never fails: an OperationOutcome that fhir-sdk refuses is read leanly.
pub fn outcome_error(body: &str) -> Option<String> {
    if let Ok(oo) = serde_json::from_str::<OperationOutcome>(body) {
        let codes: Vec<String> = oo
            .issue
            .iter()
            .flatten()
            .filter(|i| matches!(i.severity, IssueSeverity::Error | IssueSeverity::Fatal))
            .map(|i| i.code.to_string())
            .collect();
        return (!codes.is_empty()).then(|| codes.join(", "));
    }
    #[derive(Deserialize)]
    struct Issue {
        severity: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Lean {
        #[serde(default)]
        issue: Vec<serde_json::Value>,
    }
    let lean: Lean = serde_json::from_str(body).ok()?;
    let bad = lean.issue.into_iter().any(|i| {
        serde_json::from_value::<Issue>(i)
            .ok()
            .and_then(|i| i.severity)
            .and_then(|s| s.as_str().map(|s| s == "error" || s == "fatal"))
            .unwrap_or(true)
    });
    bad.then(|| "unreadable issue".to_owned())
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
        // `code` outside the required binding: fhir-sdk refuses it, the lean reading does not.
        let odd =
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"weird"}]}"#;
        assert_eq!(outcome_error(odd).as_deref(), Some("unreadable issue"));
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
