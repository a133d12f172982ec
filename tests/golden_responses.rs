//! The full expected response of every fixture, in `fixtures/expected/`: any change of a card
//! (text, evidence, suggestion, uuid) shows up here as a reviewable diff.
//!
//! After an intended change, regenerate with `JAKGUARD_BLESS=1 cargo test --test golden_responses`
//! and review the diff of `fixtures/expected/` like code.

use std::path::Path;
use std::sync::Arc;

use jakguard_cds::Engine;
use jakguard_knowledge::{Knowledge, Lang};
use jakguard_rules::Date;
use serde_json::Value;

#[test]
fn every_fixture_gives_its_recorded_response() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let engine = Engine::new(Arc::new(Knowledge::embedded().unwrap()));
    let bless = std::env::var_os("JAKGUARD_BLESS").is_some();
    let today = Date::parse("2026-12-01").unwrap();
    let mut names: Vec<_> = std::fs::read_dir(root.join("requests"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let mut differ = Vec::new();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        let body = std::fs::read(root.join("requests").join(&name)).unwrap();
        let req: Value = serde_json::from_slice(&body).unwrap();
        let service = format!("jakguard-{}", req["hook"].as_str().unwrap());
        let got = match engine.evaluate(&service, &body, Lang::En, today) {
            Ok(r) => serde_json::to_value(r.response).unwrap(),
            Err(e) => serde_json::json!({ "status": e.status(), "outcome": e.operation_outcome() }),
        };
        let path = root.join("expected").join(&name);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            continue;
        }
        let expected: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_default())
            .unwrap_or(Value::Null);
        if expected != got {
            differ.push(name);
        }
    }
    assert!(
        differ.is_empty(),
        "responses differ from fixtures/expected/ (bless after review): {differ:?}"
    );
}
