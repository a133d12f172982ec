//! What can go wrong with a request, and its OperationOutcome.

use serde_json::json;

/// A request the service cannot answer with cards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdsError {
    /// Not a valid request for this service (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such service (404).
    #[error("no service `{0}`")]
    UnknownService(String),
    /// Needed data is neither prefetched nor fetchable (412); the keys are named.
    #[error("needed data is missing: {}", .0.join(", "))]
    PreconditionFailed(Vec<String>),
}

impl CdsError {
    pub fn status(&self) -> u16 {
        match self {
            CdsError::BadRequest(_) => 400,
            CdsError::UnknownService(_) => 404,
            CdsError::PreconditionFailed(_) => 412,
        }
    }

    pub fn operation_outcome(&self) -> serde_json::Value {
        match self {
            CdsError::BadRequest(msg) => outcome("invalid", msg, &[]),
            CdsError::UnknownService(_) => outcome("not-found", &self.to_string(), &[]),
            CdsError::PreconditionFailed(keys) => {
                let expressions: Vec<String> =
                    keys.iter().map(|k| format!("prefetch.{k}")).collect();
                outcome(
                    "required",
                    &format!(
                        "Cannot evaluate: prefetch key(s) {} missing or failed, and no FHIR server access to fetch them.",
                        keys.join(", ")
                    ),
                    &expressions,
                )
            }
        }
    }
}

/// An OperationOutcome with one error issue.
pub fn outcome(code: &str, text: &str, expression: &[String]) -> serde_json::Value {
    let mut issue = json!({
        "severity": "error",
        "code": code,
        "details": { "text": text },
    });
    if !expression.is_empty() {
        issue["expression"] = json!(expression);
    }
    json!({ "resourceType": "OperationOutcome", "issue": [issue] })
}
