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

/// `n` copies of the request's first draft entry, with ids d0, d1...
fn copies_of_first_draft(v: &Value, n: usize) -> Vec<Value> {
    let entry = &v["context"]["draftOrders"]["entry"][0];
    (0..n)
        .map(|i| {
            let mut e = entry.clone();
            e["resource"]["id"] = json!(format!("d{i}"));
            e
        })
        .collect()
}

#[tokio::test]
async fn too_many_draft_orders_are_refused() {
    let app = spawn_app();
    let mut v = sandbox();
    let entries = copies_of_first_draft(&v, jakguard_cds::MAX_DRAFT_ORDERS + 1);
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

/// The answer to `head` then `body` written in `pieces` writes, 30 ms apart, on a connection
/// the server closes: the status line and the JSON body.
fn answer_in_pieces(
    app: &support::TestApp,
    head: &str,
    body: &[u8],
    pieces: usize,
) -> (String, Value) {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(body.len().div_ceil(pieces)) {
        s.write_all(piece).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (status, rest) = answer.split_once("\r\n").unwrap();
    let json = rest.split_once("\r\n\r\n").unwrap().1;
    (status.to_owned(), serde_json::from_str(json).unwrap())
}

/// A body that arrives in several reads (a slow network, a chunked upload) is gathered whole:
/// the same cards as when it arrives at once.
#[tokio::test]
async fn a_body_that_arrives_in_pieces_gets_the_same_answer_as_a_whole_one() {
    let app = spawn_app();
    let body = fixture("00-sandbox-order-select.json");
    let whole: Value = app
        .post_json(
            "/cds-services/jakguard-order-select",
            String::from_utf8(body.clone()).unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(!whole["cards"].as_array().unwrap().is_empty());
    let sized = format!(
        "POST /cds-services/jakguard-order-select HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut chunked = Vec::new();
    for piece in body.chunks(body.len().div_ceil(3)) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let chunked_head = "POST /cds-services/jakguard-order-select HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (head, body) in [(sized.as_str(), &body), (chunked_head, &chunked)] {
        let (status, json) = answer_in_pieces(&app, head, body, 3);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(json, whole, "{head}");
    }
}

/// The sandbox request with its one draft replaced by `resource_text` (raw JSON, so that it can
/// hold what a `Value` cannot, such as a repeated key), sent to `service`.
fn with_draft_text(service: &str, resource_text: &str) -> String {
    let mut v = sandbox();
    v["context"]["draftOrders"]["entry"][0]["resource"] = json!("__DRAFT__");
    if service == "jakguard-order-sign" {
        v["hook"] = json!("order-sign");
        v["context"].as_object_mut().unwrap().remove("selections");
    }
    v.to_string().replace("\"__DRAFT__\"", resource_text)
}

/// A draft whose resource cannot be read may be the JAK inhibitor being signed: it gets a card
/// saying it could not be checked, never silence. One that says it is another resource type
/// (a ServiceRequest) is not a draft jakguard checks.
#[tokio::test]
async fn a_draft_order_that_cannot_be_read_gets_a_card_not_silence() {
    let app = spawn_app();
    let draft = sandbox()["context"]["draftOrders"]["entry"][0]["resource"].to_string();
    let repeated = draft.replacen('{', r#"{"status": "draft", "#, 1);
    let cases: [(&str, &str, String, Option<&str>); 6] = [
        (
            "a repeated element",
            "jakguard-order-sign",
            repeated.clone(),
            Some("MedicationRequest/request-123"),
        ),
        (
            "a repeated element, selected",
            "jakguard-order-select",
            repeated,
            Some("MedicationRequest/request-123"),
        ),
        (
            "a repeated resourceType",
            "jakguard-order-sign",
            draft.replacen('{', r#"{"resourceType": "MedicationRequest", "#, 1),
            Some("MedicationRequest/(no id)"),
        ),
        (
            "not an object",
            "jakguard-order-sign",
            "5".into(),
            Some("MedicationRequest/(no id)"),
        ),
        (
            "an entry with a repeated resource",
            "jakguard-order-sign",
            format!("{draft}, \"resource\": {draft}"),
            Some("MedicationRequest/(no id)"),
        ),
        (
            "a ServiceRequest with a repeated element",
            "jakguard-order-sign",
            r#"{"resourceType": "ServiceRequest", "id": "s1", "status": "draft", "status": "draft"}"#
                .into(),
            None,
        ),
    ];
    for (name, service, text, expected) in cases {
        let resp = app
            .post_json(
                &format!("/cds-services/{service}"),
                with_draft_text(service, &text),
            )
            .await;
        assert_eq!(resp.status(), 200, "{name}");
        let body: Value = resp.json().await.unwrap();
        let cards = body["cards"].as_array().unwrap();
        match expected {
            Some(order) => {
                let card = cards
                    .iter()
                    .find(|c| c["extension"]["jakguard"]["order"] == order)
                    .unwrap_or_else(|| panic!("{name}: no card for {order}: {body}"));
                assert_eq!(card["source"]["topic"]["code"], "missing-data", "{name}");
            }
            None => assert!(cards.is_empty(), "{name}: {body}"),
        }
    }
}

/// Work per call stays bounded by the body, whatever it repeats: many selections naming a
/// non-medication draft cost one reading of draftOrders (each used to cost a new one), and
/// many dose suggestions one reading of their drafts' text (each used to cost one). The time
/// bounds are a hundredfold margin over this code in a debug build; they guard the
/// complexity, not the speed.
#[tokio::test]
async fn repeated_selections_and_dose_suggestions_cost_one_reading_of_the_drafts() {
    let app = spawn_app();
    let filler: Vec<Value> = (0..3000)
        .map(|i| {
            json!({"resource": {"resourceType": "ServiceRequest", "id": format!("s{i}"),
                "code": {"text": "x".repeat(150)}}})
        })
        .collect();

    let mut v = sandbox();
    let entries = v["context"]["draftOrders"]["entry"].as_array_mut().unwrap();
    entries.extend(filler.iter().cloned());
    let mut selections = vec![json!("MedicationRequest/request-123")];
    selections.extend(std::iter::repeat_n(json!("ServiceRequest/s1"), 1000));
    v["context"]["selections"] = Value::Array(selections);
    let started = Instant::now();
    let resp = app
        .post_json("/cds-services/jakguard-order-select", v.to_string())
        .await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5), "selections");

    // Tofacitinib 10 mg twice daily: each draft gets a dose update suggestion.
    let mut v: Value =
        serde_json::from_slice(&fixture("07-current-smoker-tofacitinib-10mg-bid.json")).unwrap();
    let mut entries = copies_of_first_draft(&v, jakguard_cds::MAX_DRAFT_ORDERS);
    entries.extend(filler);
    v["context"]["draftOrders"]["entry"] = Value::Array(entries);
    let started = Instant::now();
    let resp = app
        .post_json("/cds-services/jakguard-order-sign", v.to_string())
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let updates = body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.to_string().contains("\"type\":\"update\""))
        .count();
    assert_eq!(
        updates,
        jakguard_cds::MAX_DRAFT_ORDERS,
        "a dose update per draft"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "dose suggestions"
    );
}
