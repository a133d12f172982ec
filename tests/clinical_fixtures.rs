//! The clinical table: every fixture of `fixtures/cases.toml` is evaluated and its cards are
//! compared, order by order and topic by topic, with the factor codes a clinician expects.
//! The expectations were written from `shared/clinical-rules.md`, independently of the code.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use jakguard_cds::Engine;
use jakguard_knowledge::{Knowledge, Lang};
use jakguard_rules::Date;
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    service: String,
    today: String,
    status: u16,
    description: String,
    #[serde(default)]
    cards: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// order -> topic -> sorted factor codes, from a response.
fn observed(resp: &serde_json::Value) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for card in resp["cards"].as_array().unwrap() {
        let ext = &card["extension"]["jakguard"];
        let order = ext["order"].as_str().unwrap().to_owned();
        let topic = card["source"]["topic"]["code"].as_str().unwrap().to_owned();
        let mut codes: Vec<String> = ext["factors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_owned())
            .collect();
        codes.sort();
        let previous = out.entry(order).or_default().insert(topic.clone(), codes);
        assert!(previous.is_none(), "two `{topic}` cards for one order");
    }
    out
}

#[test]
fn every_fixture_gives_the_cards_a_clinician_expects() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let cases: Cases =
        toml::from_str(&std::fs::read_to_string(root.join("cases.toml")).unwrap()).unwrap();
    assert!(cases.case.len() >= 20, "the table needs at least 20 cases");
    let engine = Engine::new(Arc::new(Knowledge::embedded().unwrap()));
    let mut failures = Vec::new();
    for c in &cases.case {
        let body = std::fs::read(root.join(&c.file)).unwrap();
        let today = Date::parse(&c.today).unwrap();
        let got = engine.evaluate(&c.service, &body, Lang::En, today);
        match got {
            Ok(resp) => {
                let resp = serde_json::to_value(&resp.response).unwrap();
                if c.status != 200 {
                    failures.push(format!("{}: expected status {}, got 200", c.file, c.status));
                    continue;
                }
                let mut expected = c.cards.clone();
                for topics in expected.values_mut() {
                    for codes in topics.values_mut() {
                        codes.sort();
                    }
                }
                let got = observed(&resp);
                if got != expected {
                    failures.push(format!(
                        "{} ({})\n  expected {expected:?}\n  got      {got:?}",
                        c.file, c.description
                    ));
                }
            }
            Err(e) => {
                if e.status() != c.status {
                    failures.push(format!(
                        "{}: expected status {}, got {} ({e})",
                        c.file,
                        c.status,
                        e.status()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.case.len(),
        failures.join("\n")
    );
}
