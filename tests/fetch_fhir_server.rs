//! The fetch path against a real FHIR R4 server (SEKMET, started and loaded with the fixtures'
//! patients by `.ci/setup.d/30-fhir-server.sh`): a request without prefetch but with
//! `fhirServer` and `fhirAuthorization` gets the same cards as the prefetched request; partial
//! prefetch, paging, a wrong token and an unknown patient behave as the issue says.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{
    cards_by_order, details, fixture, fixture_names, spawn_with_fhir, test_fhir_server, CardMap,
};

const KEYS: [&str; 4] = ["patient", "conditions", "observations", "medications"];

fn empty_bundle() -> Value {
    json!({"resourceType": "Bundle", "type": "searchset", "entry": []})
}

fn service_of(req: &Value) -> String {
    format!("jakguard-{}", req["hook"].as_str().unwrap())
}

/// The request with fhirServer and a bearer token, and `prefetch` replaced.
fn with_server(req: &Value, url: &str, token: &str, prefetch: Value) -> Value {
    let mut r = req.clone();
    r["fhirServer"] = json!(url);
    r["fhirAuthorization"] = json!({
        "access_token": token, "token_type": "Bearer", "expires_in": 300,
        "scope": "patient/*.read", "subject": "jakguard"
    });
    r["prefetch"] = prefetch;
    r
}

async fn post(app: &support::TestApp, service: &str, body: &Value) -> (u16, Value) {
    let resp = app
        .post_json(&format!("/cds-services/{service}"), body.to_string())
        .await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Ids that several fixtures share were loaded as `{id}-{patientId}` (see
/// scripts/load-fhir-fixtures.py): evidence is compared with the fixture's own id.
fn unshare(mut cards: CardMap, patient: &str) -> CardMap {
    let suffix = format!("-{patient}");
    for topics in cards.values_mut() {
        for factors in topics.values_mut() {
            for (_, evidence) in factors.iter_mut() {
                for e in evidence.iter_mut() {
                    if let Some(s) = e.strip_suffix(&suffix) {
                        *e = s.to_owned();
                    }
                }
                evidence.sort();
            }
        }
    }
    cards
}

#[tokio::test]
async fn every_fixture_gives_the_same_cards_fetched_as_prefetched() {
    let Some((url, token)) = test_fhir_server() else {
        return;
    };
    let app = spawn_with_fhir(&[&url], |_| {});
    let mut failures = Vec::new();
    let mut latencies = Vec::new();
    for name in fixture_names() {
        let req: Value = serde_json::from_slice(&fixture(&name)).unwrap();
        let service = service_of(&req);
        // What the server holds for a key the fixture leaves out is nothing: the prefetch
        // path gets an empty Bundle for it, so both paths see the same record.
        let mut prefetch = req["prefetch"].clone();
        for k in KEYS {
            if prefetch.get(k).is_none() {
                prefetch[k] = empty_bundle();
            }
        }
        let mut expected_req = req.clone();
        expected_req["prefetch"] = prefetch;
        let (s1, expected) = post(&app, &service, &expected_req).await;
        let started = Instant::now();
        let (s2, got) = post(&app, &service, &with_server(&req, &url, &token, json!({}))).await;
        latencies.push(started.elapsed());
        if s1 != s2 {
            failures.push(format!(
                "{name}: status {s1} prefetched, {s2} fetched: {got}"
            ));
            continue;
        }
        let patient = req["context"]["patientId"].as_str().unwrap();
        let fetched = unshare(cards_by_order(&got), patient);
        if s1 == 200 && cards_by_order(&expected) != fetched {
            failures.push(format!(
                "{name}:\n  prefetched {:?}\n  fetched    {fetched:?}\n  detail: {}",
                cards_by_order(&expected),
                details(&got)
            ));
        }
        assert!(
            !got.to_string().contains(&token),
            "{name}: the token leaked"
        );
    }
    latencies.sort();
    eprintln!(
        "fetch path latency over {} fixtures: median {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_partial_prefetch_is_completed_from_the_server() {
    let Some((url, token)) = test_fhir_server() else {
        return;
    };
    let app = spawn_with_fhir(&[&url], |_| {});
    for name in [
        "01-elderly-hypertensive-tofacitinib.json",
        "16-vte-thrombophilia-contraceptive-upadacitinib.json",
        "21-low-counts-tofacitinib-unit-conversion.json",
    ] {
        let req: Value = serde_json::from_slice(&fixture(name)).unwrap();
        let service = service_of(&req);
        let (_, expected) = post(&app, &service, &req).await;
        // The patient and observations prefetched, conditions absent, medications failed.
        let prefetch = json!({
            "patient": req["prefetch"]["patient"],
            "observations": req["prefetch"]["observations"],
            "medications": {"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "timeout"}]},
        });
        let (status, got) = post(&app, &service, &with_server(&req, &url, &token, prefetch)).await;
        assert_eq!(status, 200, "{name}: {got}");
        assert_eq!(cards_by_order(&expected), cards_by_order(&got), "{name}");
    }
}

#[tokio::test]
async fn a_wrong_token_is_reported_and_never_echoed() {
    let Some((url, _)) = test_fhir_server() else {
        return;
    };
    let app = spawn_with_fhir(&[&url], |_| {});
    let req: Value =
        serde_json::from_slice(&fixture("01-elderly-hypertensive-tofacitinib.json")).unwrap();
    let service = service_of(&req);
    let wrong = "not-the-token-0123456789";
    // Without the Patient nothing can be said: 412.
    let (status, body) = post(&app, &service, &with_server(&req, &url, wrong, json!({}))).await;
    assert_eq!(status, 412, "{body}");
    assert!(!body.to_string().contains(wrong));
    // With it, the cards say what could not be read and why.
    let prefetch = json!({"patient": req["prefetch"]["patient"]});
    let (status, body) = post(&app, &service, &with_server(&req, &url, wrong, prefetch)).await;
    assert_eq!(status, 200, "{body}");
    let cards = cards_by_order(&body);
    let topics = &cards["MedicationRequest/draft-1"];
    assert!(topics.contains_key("ansm-restriction"), "{body}");
    assert!(topics.contains_key("missing-data"), "{body}");
    let d = details(&body);
    assert!(d.contains("refused the access token (401)"), "{d}");
    assert!(!body.to_string().contains(wrong));
}

#[tokio::test]
async fn an_unknown_patient_is_a_412() {
    let Some((url, token)) = test_fhir_server() else {
        return;
    };
    let app = spawn_with_fhir(&[&url], |_| {});
    let mut req: Value =
        serde_json::from_slice(&fixture("01-elderly-hypertensive-tofacitinib.json")).unwrap();
    req["context"]["patientId"] = json!("no-such-patient-4242");
    let service = service_of(&req);
    let (status, body) = post(&app, &service, &with_server(&req, &url, &token, json!({}))).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert!(body.to_string().contains("prefetch.patient"), "{body}");
}

/// The first page of a search with `_count=2`, read straight from the server.
async fn first_page(url: &str, token: &str, query: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{url}/{query}&_count=2"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn results_split_over_several_pages_are_all_read_up_to_the_bound() {
    let Some((url, token)) = test_fhir_server() else {
        return;
    };
    // Six Observations, two per page: the prefetch holds page 1, the service reads 2 and 3.
    let name = "12-heart-failure-bmi-obesity-pe-history-xeljanz-xr.json";
    let req: Value = serde_json::from_slice(&fixture(name)).unwrap();
    let service = service_of(&req);
    let page1 = first_page(&url, &token, "Observation?patient=pat-0012").await;
    let has_next = page1["link"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["relation"] == "next");
    assert!(has_next, "the server pages: {page1}");
    let mut prefetch = req["prefetch"].clone();
    prefetch["observations"] = page1;
    let paged = with_server(&req, &url, &token, prefetch);

    let app = spawn_with_fhir(&[&url], |_| {});
    let mut full = req.clone();
    full["prefetch"]["observations"] = first_all(&url, &token).await;
    let (_, expected) = post(&app, &service, &full).await;
    let (status, got) = post(&app, &service, &paged).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(cards_by_order(&expected), cards_by_order(&got));
    assert!(!details(&got).contains("could not"), "{}", details(&got));

    // With one page allowed, the rest is reported, never taken for complete.
    let bounded = spawn_with_fhir(&[&url], |f| f.max_pages = 1);
    let (status, got) = post(&bounded, &service, &paged).await;
    assert_eq!(status, 200, "{got}");
    let d = details(&got);
    assert!(d.contains("more than 1 pages"), "{d}");
    assert!(cards_by_order(&got)["MedicationRequest/draft-1"].contains_key("missing-data"));
}

/// Every Observation of patient 12 in one Bundle (the unpaged search).
async fn first_all(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{url}/Observation?patient=pat-0012"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_fetch_answers_well_within_the_deadline() {
    let Some((url, token)) = test_fhir_server() else {
        return;
    };
    let app = spawn_with_fhir(&[&url], |_| {});
    let req: Value =
        serde_json::from_slice(&fixture("01-elderly-hypertensive-tofacitinib.json")).unwrap();
    let service = service_of(&req);
    let body = with_server(&req, &url, &token, json!({}));
    post(&app, &service, &body).await; // warm the pool
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (status, _) = post(&app, &service, &body).await;
        assert_eq!(status, 200);
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "fetch of 4 keys from the FHIR server, 10 calls: median {:?}, max {:?}",
        times[5], times[9]
    );
    assert!(times[5] < Duration::from_secs(2));
}
