//! A call's cards as the audit trail keeps them: `audit_event.cards`, a JSON array with one
//! object per card, in the order of the answer:
//!
//! ```json
//! [{"uuid":"…","topic":"ansm-restriction","indicator":"warning","molecule":"tofacitinib",
//!   "factors":["age-65-plus","smoker"]}]
//! ```
//!
//! One column rather than a row per card: every row and every index entry is a B-tree
//! insertion for the audit writer (see `migrations/sqlite/0002_cards_in_their_event.sql`).
//! Written here with serde_json; migration 0002 built the same shape from the former rows with
//! the databases' own JSON functions (a `molecule` of `null`, keys in any order), which
//! [`from_json`] reads alike.

use jakguard_cds::AuditCard;
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Written<'a> {
    uuid: &'a str,
    topic: &'a str,
    indicator: &'a str,
    molecule: Option<&'a str>,
    factors: &'a [String],
}

#[derive(Deserialize)]
struct Read {
    uuid: String,
    topic: String,
    indicator: String,
    molecule: Option<String>,
    factors: Vec<String>,
}

/// The column's text for `cards`.
pub(crate) fn to_json(cards: &[AuditCard]) -> String {
    let written: Vec<Written<'_>> = cards
        .iter()
        .map(|c| Written {
            uuid: &c.uuid,
            topic: &c.topic,
            indicator: &c.indicator,
            molecule: c.molecule.as_deref(),
            factors: &c.factors,
        })
        .collect();
    // Strings and a list of strings: serde_json cannot fail on them.
    serde_json::to_string(&written).unwrap_or_else(|_| "[]".into())
}

/// The cards of a column's text; `Err` for a text this module did not write (a hand edit).
pub(crate) fn from_json(text: &str) -> Result<Vec<AuditCard>, serde_json::Error> {
    let read: Vec<Read> = serde_json::from_str(text)?;
    Ok(read
        .into_iter()
        .map(|c| AuditCard {
            uuid: c.uuid,
            topic: c.topic,
            indicator: c.indicator,
            molecule: c.molecule,
            factors: c.factors,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(uuid: &str, molecule: Option<&str>, factors: &[&str]) -> AuditCard {
        AuditCard {
            uuid: uuid.into(),
            topic: "ansm-restriction".into(),
            indicator: "warning".into(),
            molecule: molecule.map(Into::into),
            factors: factors.iter().map(|f| (*f).into()).collect(),
        }
    }

    #[test]
    fn cards_read_back_as_they_were_written() {
        for cards in [
            vec![],
            vec![card("a", Some("tofacitinib"), &["age-65-plus", "smoker"])],
            vec![card("a", None, &[]), card("b\"\\é", Some("x"), &["f"])],
        ] {
            assert_eq!(from_json(&to_json(&cards)).expect("readable"), cards);
        }
        assert_eq!(
            to_json(&[card("u", None, &["smoker"])]),
            r#"[{"uuid":"u","topic":"ansm-restriction","indicator":"warning","molecule":null,"factors":["smoker"]}]"#
        );
    }

    #[test]
    fn the_migrations_shape_reads_whatever_its_key_order() {
        // What SQLite's json_object and PostgreSQL's json_build_object wrote in migration 0002.
        let migrated = r#"[{"uuid": "u", "topic": "vte", "indicator": "info",
            "molecule": null, "factors": []},
            {"factors":["age-65-plus"],"molecule":"baricitinib","indicator":"warning","topic":"ansm-restriction","uuid":"v"}]"#;
        let cards = from_json(migrated).expect("readable");
        assert_eq!(cards.len(), 2);
        assert_eq!(
            (cards[0].topic.as_str(), cards[0].molecule.as_deref()),
            ("vte", None)
        );
        assert_eq!(cards[1].factors, ["age-65-plus"]);
        assert_eq!(cards[1].molecule.as_deref(), Some("baricitinib"));
    }

    #[test]
    fn a_text_not_written_here_is_an_error_not_an_empty_list() {
        for bad in ["", "{}", "[1]", r#"[{"uuid":"u"}]"#, "not json"] {
            assert!(from_json(bad).is_err(), "{bad}");
        }
    }
}
