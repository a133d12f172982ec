//! The CDS Hooks service over real HTTP: discovery, calls, errors, CORS, languages, feedback.

mod support;

use serde_json::{json, Value};
use support::{fixture, fixture_names, spawn_app};

fn sandbox() -> Value {
    serde_json::from_slice(&fixture("00-sandbox-order-select.json")).unwrap()
}

/// A JSON value that the CDS Hooks specification forbids in a response: null, "", [] or {}.
fn find_empty(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Null => out.push(path.to_owned()),
        Value::String(s) if s.trim().is_empty() => out.push(path.to_owned()),
        Value::Array(a) if a.is_empty() && path != "$.cards" => out.push(path.to_owned()),
        Value::Object(o) if o.is_empty() => out.push(path.to_owned()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| find_empty(x, &format!("{path}[{i}]"), out)),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| find_empty(x, &format!("{path}.{k}"), out)),
        _ => {}
    }
}

fn assert_cards_conform(resp: &Value) {
    let mut empties = Vec::new();
    find_empty(resp, "$", &mut empties);
    // The update suggestion carries the EHR's own resource, which is not ours to judge; and
    // `extension.jakguard.factors` is always present (the contract's shape), empty on a card
    // such as dose-adjustment that has no factor of its own.
    empties.retain(|p| !p.contains(".resource") && !p.ends_with(".extension.jakguard.factors"));
    assert!(empties.is_empty(), "null or empty values: {empties:?}");
    for card in resp["cards"].as_array().unwrap() {
        assert!(uuid_like(card["uuid"].as_str().unwrap()), "{card}");
        let summary = card["summary"].as_str().unwrap();
        assert!(summary.chars().count() < 140, "summary too long: {summary}");
        assert!(["info", "warning", "critical"].contains(&card["indicator"].as_str().unwrap()));
        assert!(card["source"]["label"].is_string() && card["source"]["url"].is_string());
        assert_eq!(card["source"]["topic"]["system"], "urn:jakguard:topic");
        if card.get("suggestions").is_some() {
            assert!(
                card["selectionBehavior"].is_string(),
                "suggestions need selectionBehavior"
            );
            for s in card["suggestions"].as_array().unwrap() {
                assert!(uuid_like(s["uuid"].as_str().unwrap()));
            }
        }
        for r in card
            .get("overrideReasons")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert!(r["display"].is_string(), "override reasons need a display");
        }
        assert!(card["extension"]["jakguard"]["order"].is_string());
        assert!(card["extension"]["jakguard"]["factors"].is_array());
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn discovery_lists_both_services_with_the_contract_prefetch_keys() {
    let app = spawn_app();
    let resp = app
        .client
        .get(app.url("/cds-services"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let services = body["services"].as_array().unwrap();
    let ids: Vec<&str> = services.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["jakguard-order-select", "jakguard-order-sign"]);
    for s in services {
        assert!(s["title"].is_string() && s["description"].is_string());
        let keys: Vec<&String> = s["prefetch"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["conditions", "medications", "observations", "patient"]
        );
        assert_eq!(s["prefetch"]["patient"], "Patient/{{context.patientId}}");
    }
    assert_eq!(services[0]["hook"], "order-select");
    assert_eq!(services[1]["hook"], "order-sign");
}

#[tokio::test]
async fn the_sandbox_capture_gets_a_restriction_card_despite_its_invalid_fhir() {
    let app = spawn_app();
    let resp = app
        .post_json(
            "/cds-services/jakguard-order-select",
            fixture("00-sandbox-order-select.json"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_cards_conform(&body);
    let topics: Vec<&str> = body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["source"]["topic"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["ansm-restriction", "missing-data"]);
    assert_eq!(
        body["cards"][0]["extension"]["jakguard"]["factors"][0]["code"],
        "age-65-plus"
    );
}

#[tokio::test]
async fn every_fixture_answers_over_http_with_conforming_cards() {
    let app = spawn_app();
    for name in fixture_names() {
        let body: Value = serde_json::from_slice(&fixture(&name)).unwrap();
        let service = format!("jakguard-{}", body["hook"].as_str().unwrap());
        let resp = app
            .post_json(&format!("/cds-services/{service}"), fixture(&name))
            .await;
        let status = resp.status().as_u16();
        assert!(status == 200 || status == 412, "{name}: {status}");
        let v: Value = resp.json().await.unwrap();
        if status == 200 {
            assert_cards_conform(&v);
        } else {
            assert_eq!(v["resourceType"], "OperationOutcome");
        }
    }
}

#[tokio::test]
async fn accept_language_selects_french_cards() {
    let app = spawn_app();
    let resp = app
        .client
        .post(app.url("/cds-services/jakguard-order-select"))
        .header("Content-Type", "application/json")
        .header("Accept-Language", "fr-FR,fr;q=0.9,en;q=0.5")
        .body(fixture("00-sandbox-order-select.json"))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let summary = body["cards"][0]["summary"].as_str().unwrap();
    assert!(summary.contains("alternative appropriée"), "{summary}");
    assert_eq!(
        body["cards"][0]["overrideReasons"][0]["display"],
        "Pas d'alternative appropriée"
    );
}

#[tokio::test]
async fn malformed_requests_get_the_right_status_and_an_operation_outcome() {
    let app = spawn_app();
    let s = sandbox();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = s.clone();
        f(&mut v);
        v.to_string()
    };
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let table: Vec<(&str, &str, String, u16)> = vec![
        ("not JSON", "jakguard-order-select", "{not json".into(), 400),
        ("empty body", "jakguard-order-select", String::new(), 400),
        ("a JSON array", "jakguard-order-select", "[]".into(), 400),
        ("deeply nested JSON", "jakguard-order-select", deep, 400),
        (
            "wrong hook for the service",
            "jakguard-order-sign",
            s.to_string(),
            400,
        ),
        (
            "no hookInstance",
            "jakguard-order-select",
            with(&|v| {
                v.as_object_mut().unwrap().remove("hookInstance");
            }),
            400,
        ),
        (
            "empty hookInstance",
            "jakguard-order-select",
            with(&|v| v["hookInstance"] = json!("")),
            400,
        ),
        (
            "hook is a number",
            "jakguard-order-select",
            with(&|v| v["hook"] = json!(7)),
            400,
        ),
        (
            "no context",
            "jakguard-order-select",
            with(&|v| {
                v.as_object_mut().unwrap().remove("context");
            }),
            400,
        ),
        (
            "no patientId",
            "jakguard-order-select",
            with(&|v| {
                v["context"].as_object_mut().unwrap().remove("patientId");
            }),
            400,
        ),
        (
            "no draftOrders",
            "jakguard-order-select",
            with(&|v| {
                v["context"].as_object_mut().unwrap().remove("draftOrders");
            }),
            400,
        ),
        (
            "draftOrders not a Bundle",
            "jakguard-order-select",
            with(&|v| v["context"]["draftOrders"] = json!("x")),
            400,
        ),
        (
            "no selections on order-select",
            "jakguard-order-select",
            with(&|v| {
                v["context"].as_object_mut().unwrap().remove("selections");
            }),
            400,
        ),
        (
            "a selection that names no draft",
            "jakguard-order-select",
            with(&|v| v["context"]["selections"] = json!(["MedicationRequest/nope"])),
            400,
        ),
        (
            "fhirAuthorization without fhirServer",
            "jakguard-order-select",
            with(&|v| {
                v.as_object_mut().unwrap().remove("fhirServer");
                v["fhirAuthorization"] = json!({"access_token": "t", "token_type": "Bearer"});
            }),
            400,
        ),
        (
            "no Patient prefetched and no way to fetch it",
            "jakguard-order-select",
            with(&|v| {
                v["prefetch"].as_object_mut().unwrap().remove("patient");
            }),
            412,
        ),
        (
            "the Patient prefetch failed",
            "jakguard-order-select",
            with(&|v| {
                v["prefetch"]["patient"] = json!({"resourceType": "OperationOutcome", "issue": []})
            }),
            412,
        ),
        ("unknown service", "nope", s.to_string(), 404),
    ];
    for (what, service, body, status) in table {
        let resp = app
            .post_json(&format!("/cds-services/{service}"), body)
            .await;
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(v["resourceType"], "OperationOutcome", "{what}");
        assert!(v["issue"][0]["details"]["text"].is_string(), "{what}");
    }
}

#[tokio::test]
async fn the_precondition_failure_names_the_missing_keys() {
    let app = spawn_app();
    let mut v = sandbox();
    v.as_object_mut().unwrap().remove("prefetch");
    let resp = app
        .post_json("/cds-services/jakguard-order-select", v.to_string())
        .await;
    assert_eq!(resp.status(), 412);
    let body: Value = resp.json().await.unwrap();
    let text = body["issue"][0]["details"]["text"].as_str().unwrap();
    for key in ["patient", "conditions", "observations", "medications"] {
        assert!(text.contains(key), "{text}");
    }
}

#[tokio::test]
async fn a_non_json_content_type_is_refused_with_415() {
    let app = spawn_app();
    let resp = app
        .client
        .post(app.url("/cds-services/jakguard-order-select"))
        .header("Content-Type", "text/plain")
        .body(fixture("00-sandbox-order-select.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["resourceType"],
        "OperationOutcome"
    );
}

#[tokio::test]
async fn a_body_above_the_limit_is_refused_with_413() {
    let app = spawn_app();
    let mut v = sandbox();
    v["padding"] = json!("x".repeat(6 * 1024 * 1024));
    let resp = app
        .post_json("/cds-services/jakguard-order-select", v.to_string())
        .await;
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn a_draft_without_medication_or_a_non_jak_draft_gets_no_card() {
    let app = spawn_app();
    let mut v = sandbox();
    v["context"]["draftOrders"]["entry"][0]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("medicationCodeableConcept");
    let resp = app
        .post_json("/cds-services/jakguard-order-select", v.to_string())
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"cards": []}));
}

#[tokio::test]
async fn a_draft_whose_medication_cannot_be_read_gets_an_info_card() {
    let app = spawn_app();
    let mut v = sandbox();
    v["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"] =
        json!("tofacitinib");
    let resp = app
        .post_json("/cds-services/jakguard-order-select", v.to_string())
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["cards"].as_array().unwrap().len(), 1);
    assert_eq!(body["cards"][0]["indicator"], "info");
    assert_eq!(body["cards"][0]["source"]["topic"]["code"], "missing-data");
}

#[tokio::test]
async fn cors_preflights_are_answered_for_browser_clients() {
    let app = spawn_app();
    for path in [
        "/cds-services",
        "/cds-services/jakguard-order-select",
        "/cds-services/jakguard-order-select/feedback",
    ] {
        let resp = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("Origin", "https://sandbox.cds-hooks.org")
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let h = resp.headers();
        assert!(h.get("access-control-allow-origin").is_some(), "{path}");
        let allowed = h
            .get("access-control-allow-headers")
            .unwrap()
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
    }
}

#[tokio::test]
async fn feedback_from_the_sandbox_is_accepted_and_bad_feedback_refused() {
    let app = spawn_app();
    let good = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/interop/sandbox-feedback-request.json"))
        .unwrap_or_else(|_| br#"{"feedback":[{"card":"4e0a3a1e-3283-4575-ab82-028d55fe2719","outcome":"overridden","outcomeTimestamp":"2026-11-22T13:43:17.373Z"}]}"#.to_vec());
    let resp = app
        .post_json("/cds-services/jakguard-order-select/feedback", good)
        .await;
    assert_eq!(resp.status(), 200);
    for bad in [
        r#"{}"#,
        r#"{"feedback": []}"#,
        r#"{"feedback":[{"card":"x","outcome":"maybe","outcomeTimestamp":"2026-11-22T13:43:17Z"}]}"#,
        "nope",
    ] {
        let resp = app
            .post_json("/cds-services/jakguard-order-select/feedback", bad)
            .await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(
            resp.json::<Value>().await.unwrap()["resourceType"],
            "OperationOutcome"
        );
    }
    let resp = app
        .post_json("/cds-services/nope/feedback", r#"{"feedback":[]}"#)
        .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn an_unknown_endpoint_is_a_404_operation_outcome() {
    let app = spawn_app();
    let resp = app
        .client
        .get(app.url("/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["resourceType"],
        "OperationOutcome"
    );
}

#[tokio::test]
async fn health_endpoints_report_live_and_ready() {
    let app = spawn_app();
    assert_eq!(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_dose_suggestion_updates_the_ehr_order_and_keeps_its_other_fields() {
    let app = spawn_app();
    let req: Value =
        serde_json::from_slice(&fixture("07-current-smoker-tofacitinib-10mg-bid.json")).unwrap();
    let resp = app
        .post_json("/cds-services/jakguard-order-sign", req.to_string())
        .await;
    let body: Value = resp.json().await.unwrap();
    let card = body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["source"]["topic"]["code"] == "dose-adjustment")
        .unwrap();
    let action = &card["suggestions"][0]["actions"][0];
    assert_eq!(action["type"], "update");
    let updated = &action["resource"];
    let original = &req["context"]["draftOrders"]["entry"][0]["resource"];
    assert_eq!(updated["id"], original["id"]);
    assert_eq!(updated["subject"], original["subject"]);
    assert_eq!(
        updated["medicationCodeableConcept"],
        original["medicationCodeableConcept"]
    );
    assert_eq!(
        updated["dosageInstruction"][0]["timing"]["repeat"]["frequency"],
        2
    );
    assert_eq!(
        card["extension"]["jakguard"]["dose"]["max_mg_per_day"],
        11.0
    );
}
