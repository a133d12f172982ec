//! Properties of the evaluation over the fixtures: the order of the record's resources never
//! changes the answer, an unrelated resource never takes a finding away, and the one-pass
//! reading of a request gives what the reading by parts gives (`jakguard-fuzz` checks the same
//! on mutated requests).

use std::collections::BTreeSet;
use std::sync::Arc;

use jakguard_cds::Engine;
use jakguard_knowledge::{Knowledge, Lang};
use jakguard_rules::Date;
use proptest::prelude::*;
use serde_json::{json, Value};

fn fixtures() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn run(engine: &Engine, req: &Value) -> Option<Value> {
    let service = format!("jakguard-{}", req["hook"].as_str().unwrap());
    let today = Date::parse("2026-12-01").unwrap();
    engine
        .evaluate(&service, req.to_string().as_bytes(), Lang::En, today)
        .ok()
        .map(|r| serde_json::to_value(r.response).unwrap())
}

/// (order, topic, factor) triples of a response.
fn findings(resp: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for c in resp["cards"].as_array().unwrap() {
        let order = c["extension"]["jakguard"]["order"]
            .as_str()
            .unwrap()
            .to_owned();
        let topic = c["source"]["topic"]["code"].as_str().unwrap().to_owned();
        out.insert((order.clone(), topic.clone(), String::new()));
        for f in c["extension"]["jakguard"]["factors"].as_array().unwrap() {
            out.insert((
                order.clone(),
                topic.clone(),
                f["code"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// A deterministic shuffle of every prefetch Bundle's entries.
fn shuffle(req: &mut Value, seed: u64) {
    let mut state = seed | 1;
    let Some(prefetch) = req.get_mut("prefetch").and_then(Value::as_object_mut) else {
        return;
    };
    for v in prefetch.values_mut() {
        if let Some(entries) = v.get_mut("entry").and_then(Value::as_array_mut) {
            for i in (1..entries.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                entries.swap(i, (state % (i as u64 + 1)) as usize);
            }
        }
    }
}

fn unrelated(kind: u8) -> Value {
    match kind % 3 {
        0 => {
            json!({"resourceType": "Condition", "id": "unrelated-c", "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}, "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J06.9", "display": "Acute upper respiratory infection"}]}})
        }
        1 => {
            json!({"resourceType": "Observation", "id": "unrelated-o", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]}, "effectiveDateTime": "2026-11-20T08:00:00Z", "valueQuantity": {"value": 5.1, "unit": "mmol/L"}})
        }
        _ => {
            json!({"resourceType": "MedicationRequest", "id": "unrelated-m", "status": "active", "intent": "order", "medicationCodeableConcept": {"text": "paracetamol 500 mg tablet"}})
        }
    }
}

/// What a reading of a request gave, as text (errors included, draft orders included).
fn reading(
    read: for<'a> fn(&'a [u8], &jakguard_cds::Service) -> jakguard_cds::request::Reading<'a>,
    body: &[u8],
    service: &str,
) -> String {
    let service = jakguard_cds::services::find(service).expect("a service");
    format!("{:?}", read(body, service))
}

#[test]
fn the_one_pass_reading_gives_what_the_reading_by_parts_gives() {
    use jakguard_cds::request::{parse, parse_by_parts};
    for (name, req) in fixtures() {
        let service = format!("jakguard-{}", req["hook"].as_str().unwrap());
        let pretty = serde_json::to_vec_pretty(&req).unwrap();
        let compact = serde_json::to_vec(&req).unwrap();
        // Both services: the wrong hook is refused the same way by both readings.
        for service in [
            service.as_str(),
            "jakguard-order-sign",
            "jakguard-order-select",
        ] {
            for body in [&pretty, &compact] {
                assert_eq!(
                    reading(parse, body, service),
                    reading(parse_by_parts, body, service),
                    "{name} to {service}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn reordering_the_record_never_changes_the_response(seed in any::<u64>()) {
        let engine = Engine::new(Arc::new(Knowledge::embedded().unwrap()));
        for (name, req) in fixtures() {
            let mut shuffled = req.clone();
            shuffle(&mut shuffled, seed);
            prop_assert_eq!(run(&engine, &req), run(&engine, &shuffled), "{}", name);
        }
    }

    #[test]
    fn an_unrelated_resource_never_removes_a_finding(kind in any::<u8>(), key in 0usize..3) {
        let engine = Engine::new(Arc::new(Knowledge::embedded().unwrap()));
        let key = ["conditions", "observations", "medications"][key];
        for (name, req) in fixtures() {
            let Some(before) = run(&engine, &req) else { continue };
            let mut more = req.clone();
            match more["prefetch"].get_mut(key).and_then(|b| b.get_mut("entry")).and_then(Value::as_array_mut) {
                Some(entries) => entries.push(json!({"resource": unrelated(kind)})),
                None => continue,
            }
            let after = run(&engine, &more).expect("still answered");
            let lost: Vec<_> = findings(&before).difference(&findings(&after)).cloned().collect();
            prop_assert!(lost.is_empty(), "{}: lost {:?}", name, lost);
        }
    }
}
