//! The fetch path when the FHIR server misbehaves, with small local HTTP servers that script
//! the misbehaviour and count connections: a server outside the allowlist is never contacted,
//! a closed port, a server slower than the deadline, an OperationOutcome inside a search
//! response, a failing server short-circuited by the breaker.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{cards_by_order, details, fixture, spawn_with_fhir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An answer of the scripted server: status, body, delay before answering.
type Script = fn(&str) -> (u16, String, Duration);

/// A scripted HTTP server on loopback in its own thread; returns its base URL and the number of
/// connections it has accepted.
fn scripted(script: Script) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut n = 0;
                    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => n += k,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let (status, body, delay) = script(&target);
                    tokio::time::sleep(delay).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
    });
    (format!("http://127.0.0.1:{port}/fhir"), count)
}

fn request_for(server: &str, keep: &[&str]) -> Value {
    let mut req: Value =
        serde_json::from_slice(&fixture("01-elderly-hypertensive-tofacitinib.json")).unwrap();
    let full = req["prefetch"].clone();
    let mut prefetch = json!({});
    for k in keep {
        prefetch[*k] = full[*k].clone();
    }
    req["prefetch"] = prefetch;
    req["fhirServer"] = json!(server);
    req["fhirAuthorization"] = json!({"access_token": "tok-SECRET-42", "token_type": "Bearer"});
    req
}

async fn call(app: &support::TestApp, req: &Value) -> (u16, Value) {
    let resp = app
        .post_json("/cds-services/jakguard-order-sign", req.to_string())
        .await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn empty(_: &str) -> (u16, String, Duration) {
    (
        200,
        json!({"resourceType": "Bundle", "type": "searchset"}).to_string(),
        Duration::ZERO,
    )
}

#[tokio::test]
async fn a_server_outside_the_allowlist_is_never_contacted() {
    let (elsewhere, connections) = scripted(empty);
    let app = spawn_with_fhir(&["https://ehr.example.org/fhir"], |_| {});
    // Nothing prefetched, or only the Patient: 412 either way, naming the keys.
    for keep in [&[][..], &["patient"][..]] {
        let (status, body) = call(&app, &request_for(&elsewhere, keep)).await;
        assert_eq!(status, 412, "{body}");
        assert!(body.to_string().contains("prefetch.conditions"), "{body}");
        assert!(!body.to_string().contains("SECRET"));
    }
    // A complete prefetch needs nothing: the same unknown server is no reason to refuse.
    let all = ["patient", "conditions", "observations", "medications"];
    let (status, _) = call(&app, &request_for(&elsewhere, &all)).await;
    assert_eq!(status, 200);
    // A next link of a prefetched Bundle that leaves the allowed server is not followed.
    let (allowed, allowed_connections) = scripted(empty);
    let app = spawn_with_fhir(&[&allowed], |_| {});
    let mut req = request_for(&allowed, &all);
    req["prefetch"]["conditions"]["link"] =
        json!([{"relation": "next", "url": format!("{elsewhere}/Condition?page=2")}]);
    let (status, body) = call(&app, &req).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        details(&body).contains("not on the allowed FHIR server"),
        "{}",
        details(&body)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 0, "never contacted");
    assert_eq!(allowed_connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_server_that_is_down_is_reported_and_the_patient_is_needed() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}/fhir");
    let app = spawn_with_fhir(&[&down], |_| {});
    let t = Instant::now();
    let (status, body) = call(&app, &request_for(&down, &[])).await;
    assert_eq!(status, 412, "{body}");
    let (status, body) = call(&app, &request_for(&down, &["patient"])).await;
    assert_eq!(status, 200, "{body}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let cards = cards_by_order(&body);
    let topics = &cards["MedicationRequest/draft-1"];
    assert!(
        topics.contains_key("ansm-restriction"),
        "the age still counts"
    );
    assert!(topics.contains_key("missing-data"), "{body}");
    let d = details(&body);
    for key in ["conditions", "observations", "medications"] {
        assert!(
            d.contains(&format!(
                "`{key}` from the FHIR server: the FHIR server could not be reached"
            )),
            "{d}"
        );
    }
    assert!(!body.to_string().contains("SECRET"));
}

fn slow(_: &str) -> (u16, String, Duration) {
    let (s, b, _) = empty("");
    (s, b, Duration::from_secs(5))
}

#[tokio::test]
async fn a_server_slower_than_the_deadline_is_cut_off() {
    let (server, _) = scripted(slow);
    let app = spawn_with_fhir(&[&server], |f| f.timeout_ms = 300);
    let t = Instant::now();
    let (status, body) = call(&app, &request_for(&server, &["patient"])).await;
    let took = t.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(
        details(&body).contains("did not answer within 300 ms"),
        "{}",
        details(&body)
    );
    let t = Instant::now();
    let (status, _) = call(&app, &request_for(&server, &[])).await;
    assert_eq!(status, 412);
    assert!(t.elapsed() < Duration::from_millis(1500));
}

fn outcome_in_search(target: &str) -> (u16, String, Duration) {
    let body = if target.contains("/Condition?") {
        json!({"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Condition", "id": "htn-1",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]},
                "subject": {"reference": "Patient/pat-0001"}},
             "search": {"mode": "match"}},
            {"resource": {"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "too-costly", "diagnostics": "search truncated"}]},
             "search": {"mode": "outcome"}}
        ]})
    } else if target.contains("/Observation?") {
        return (
            500,
            json!({"resourceType": "OperationOutcome",
                   "issue": [{"severity": "fatal", "code": "exception"}]})
            .to_string(),
            Duration::ZERO,
        );
    } else {
        json!({"resourceType": "Bundle", "type": "searchset"})
    };
    (200, body.to_string(), Duration::ZERO)
}

#[tokio::test]
async fn an_operation_outcome_in_a_search_response_is_reported_and_the_rest_used() {
    let (server, _) = scripted(outcome_in_search);
    let app = spawn_with_fhir(&[&server], |_| {});
    let (status, body) = call(&app, &request_for(&server, &["patient"])).await;
    assert_eq!(status, 200, "{body}");
    let cards = cards_by_order(&body);
    let restriction = &cards["MedicationRequest/draft-1"]["ansm-restriction"];
    assert!(
        restriction
            .iter()
            .any(|(code, ev)| code == "hypertension" && ev == &["Condition/htn-1"]),
        "the Condition next to the OperationOutcome is used: {restriction:?}"
    );
    let d = details(&body);
    assert!(
        d.contains("reported an error in its search results (too-costly)"),
        "{d}"
    );
    assert!(
        d.contains("`observations` from the FHIR server: the FHIR server failed (500)"),
        "{d}"
    );
}

fn unavailable(_: &str) -> (u16, String, Duration) {
    (503, String::new(), Duration::ZERO)
}

#[tokio::test]
async fn a_failing_server_is_short_circuited_for_a_while() {
    let (server, connections) = scripted(unavailable);
    let app = spawn_with_fhir(&[&server], |f| {
        f.breaker_failures = 2;
        f.breaker_cooldown_ms = 60_000;
    });
    let req = request_for(&server, &["patient"]);
    for _ in 0..2 {
        let (status, body) = call(&app, &req).await;
        assert_eq!(status, 200);
        assert!(
            details(&body).contains("failed (503)"),
            "{}",
            details(&body)
        );
    }
    let before = connections.load(Ordering::SeqCst);
    assert!(before >= 2);
    let (status, body) = call(&app, &req).await;
    assert_eq!(status, 200);
    assert!(
        details(&body).contains("not contacted"),
        "{}",
        details(&body)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        before,
        "no new connection"
    );
}
