//! The Feedback body of CDS Hooks 2.0: what the EHR says happened to a card.

use serde::{Deserialize, Serialize};

use crate::error::CdsError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accepted,
    Overridden,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCoding {
    pub system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideReason {
    pub reason: Option<ReasonCoding>,
    pub user_comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedSuggestion {
    pub id: String,
}

/// One feedback item, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackItem {
    pub card: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_suggestions: Vec<AcceptedSuggestion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<OverrideReason>,
    pub outcome_timestamp: String,
}

#[derive(Deserialize)]
struct Body {
    feedback: Vec<FeedbackItem>,
}

/// Reads a feedback body; every item must be valid, or none is taken.
pub fn parse(body: &[u8]) -> Result<Vec<FeedbackItem>, CdsError> {
    let b: Body = serde_json::from_slice(body)
        .map_err(|_| CdsError::BadRequest("not a CDS Hooks feedback body: expected {\"feedback\": [{card, outcome, outcomeTimestamp}]}".into()))?;
    if b.feedback.is_empty() {
        return Err(CdsError::BadRequest("`feedback` is empty".into()));
    }
    for (i, f) in b.feedback.iter().enumerate() {
        if f.card.trim().is_empty() {
            return Err(CdsError::BadRequest(format!(
                "feedback {}: `card` is empty",
                i + 1
            )));
        }
        if !looks_like_instant(&f.outcome_timestamp) {
            return Err(CdsError::BadRequest(format!(
                "feedback {}: `outcomeTimestamp` is not an ISO 8601 instant",
                i + 1
            )));
        }
        if f.outcome == Outcome::Accepted && f.override_reason.is_some() {
            return Err(CdsError::BadRequest(format!(
                "feedback {}: an accepted card has no override reason",
                i + 1
            )));
        }
    }
    Ok(b.feedback)
}

fn looks_like_instant(s: &str) -> bool {
    jakguard_rules::PartialDate::parse(s).is_some_and(|d| d.day.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_feedback_is_accepted() {
        let body = br#"{"feedback":[{"card":"4e0a3a1e-3283-4575-ab82-028d55fe2719","outcome":"overridden","outcomeTimestamp":"2026-11-22T13:43:17.373Z"}]}"#;
        assert_eq!(parse(body).unwrap()[0].outcome, Outcome::Overridden);
    }

    #[test]
    fn an_unknown_outcome_is_refused() {
        let body = br#"{"feedback":[{"card":"x","outcome":"ignored","outcomeTimestamp":"2026-11-22T13:43:17Z"}]}"#;
        assert!(parse(body).is_err());
    }
}
