//! Limits that keep one client from hurting the service: too many draft orders, huge
//! Bundles, slow bodies, nesting depth.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{fixture, spawn_app};

fn sandbox() -> Value {
    serde_json::from_slice(&fixture("00-sandbox-order-select.json")).unwrap()
}

#[tokio::test]
async fn too_many_draft_orders_are_refused() {
    let app = spawn_app();
    let mut v = sandbox();
    let entry = v["context"]["draftOrders"]["entry"][0].clone();
    let entries: Vec<Value> = (0..=jakguard_cds::MAX_DRAFT_ORDERS)
        .map(|i| {
            let mut e = entry.clone();
            e["resource"]["id"] = json!(format!("d{i}"));
            e
        })
        .collect();
    v["context"]["draftOrders"]["entry"] = Value::Array(entries);
    v["context"]["selections"] = json!(["MedicationRequest/d0"]);
    let resp = app
        .post_json("/cds-services/jakguard-order-select", v.to_string())
        .await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn a_bundle_beyond_the_entry_limit_is_read_up_to_it_and_says_so() {
    let app = spawn_app();
    let mut v = sandbox();
    let condition = json!({"resource": {"resourceType": "Condition", "id": "x", "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J06.9"}]}}});
    let entries: Vec<Value> =
        std::iter::repeat_n(condition, jakguard_fhir::MAX_ENTRIES + 5).collect();
    v["prefetch"]["conditions"] =
        json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
    let started = Instant::now();
    let resp = app
        .post_json("/cds-services/jakguard-order-select", v.to_string())
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let missing = body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["source"]["topic"]["code"] == "missing-data")
        .unwrap();
    let unreadable = missing["extension"]["jakguard"]["unreadable"].to_string();
    assert!(unreadable.contains("after the first"), "{unreadable}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded work");
}

#[test]
fn a_client_that_trickles_its_body_is_cut_off_with_408() {
    let app = spawn_app();
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "POST /cds-services/jakguard-order-select HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"hook\"").unwrap();
    s.flush().unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        if answer.contains("\r\n\r\n") {
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(15));
}
