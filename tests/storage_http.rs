//! Feedback and the audit trail through the real server, on SQLite and on PostgreSQL, then
//! `jakguard report`; and PostgreSQL stopped mid-run (a loopback proxy in front of the test
//! cluster is cut, then restored): feedback 503, evaluation still 200 in time, audit records
//! kept and written once the database is back.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jakguard_server::config::StorageConfig;
use jakguard_server::Config;
use jakguard_storage::testing;
use serde_json::{json, Value};
use support::{fixture, spawn_with, TestApp};

const SECRET: &str = "storage-http test secret, long enough";
const FIXTURE: &str = "07-current-smoker-tofacitinib-10mg-bid.json";
const SERVICE: &str = "/cds-services/jakguard-order-sign";

fn app_with(storage: StorageConfig) -> TestApp {
    spawn_with(Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        storage,
        ..Config::default()
    })
}

fn sqlite_storage() -> StorageConfig {
    StorageConfig {
        data_dir: testing::temp_dir("http-sqlite"),
        patient_id_secret: Some(SECRET.into()),
        ..StorageConfig::default()
    }
}

fn postgres_storage(test: &str) -> Option<StorageConfig> {
    let base = testing::postgres_url(test)?;
    Some(StorageConfig {
        url: Some(testing::scratch_postgres(&base)),
        data_dir: testing::temp_dir("http-pg"),
        patient_id_secret: Some(SECRET.into()),
        ..StorageConfig::default()
    })
}

async fn ready(app: &TestApp) -> (u16, Value) {
    let resp = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Waits until the audit trail has written `n` records and has none pending.
async fn audit_written(app: &TestApp, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = ready(app).await;
        if body["audit"]["written"].as_u64() >= Some(n) && body["audit"]["pending"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "audit not written: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn feedback(card: &str, code: &str, at: &str) -> String {
    json!({"feedback": [{
        "card": card,
        "outcome": "overridden",
        "overrideReason": {
            "reason": {"system": "http://example.org/override-reasons", "code": code, "display": "No suitable alternative"},
            "userComment": "patient Jane Doe insists"
        },
        "outcomeTimestamp": at
    }]})
    .to_string()
}

/// `jakguard report` on the configuration `storage` describes.
fn report(storage: &StorageConfig, args: &[&str]) -> std::process::Output {
    let dir = testing::temp_dir("report-config");
    let file = dir.join("jakguard.toml");
    let mut toml = format!(
        "[storage]\ndata_dir = {:?}\npatient_id_secret = {:?}\n",
        storage.data_dir.display().to_string(),
        SECRET
    );
    if let Some(url) = &storage.url {
        toml.push_str(&format!("url = {url:?}\n"));
    }
    std::fs::write(&file, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jakguard"))
        .arg("report")
        .args(args)
        .arg("--config")
        .arg(&file)
        .env_remove("JAKGUARD_STORAGE__URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jakguard report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn feedback_audit_and_report(storage: StorageConfig) {
    let app = app_with(storage.clone());
    let resp = app.post_json(SERVICE, fixture(FIXTURE)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let card = &body["cards"][0];
    let uuid = card["uuid"].as_str().unwrap();
    let topic = card["source"]["topic"]["code"].as_str().unwrap();
    let molecule = card["extension"]["jakguard"]["molecule"].as_str();
    let issued = body["cards"].as_array().unwrap().len();
    audit_written(&app, 1).await;

    let fb = feedback(uuid, "no-alternative", "2026-11-22T13:43:17.373Z");
    let started = Instant::now();
    assert_eq!(
        app.post_json(&format!("{SERVICE}/feedback"), fb.clone())
            .await
            .status(),
        200
    );
    let latency = started.elapsed();
    // A retry of the same feedback is acknowledged and not counted twice.
    assert_eq!(
        app.post_json(&format!("{SERVICE}/feedback"), fb)
            .await
            .status(),
        200
    );
    // Feedback for a card this deployment never issued: stored (and flagged), not refused.
    let unknown = feedback(
        "00000000-0000-4000-8000-000000000000",
        "other",
        "2026-11-22T13:43:18Z",
    );
    assert_eq!(
        app.post_json(&format!("{SERVICE}/feedback"), unknown)
            .await
            .status(),
        200
    );
    eprintln!("feedback answered 200 in {} µs", latency.as_micros());

    let out = report(&storage, &["--json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = r["cards"].as_array().unwrap();
    let total_issued: u64 = rows.iter().map(|c| c["issued"].as_u64().unwrap()).sum();
    assert_eq!(total_issued, issued as u64, "{r:#}");
    let row = rows
        .iter()
        .find(|c| c["topic"] == topic && c["molecule"].as_str() == molecule)
        .unwrap_or_else(|| panic!("no row for {topic}: {r:#}"));
    assert_eq!(row["overridden"], 1, "{r:#}");
    assert_eq!(row["override_reasons"][0]["code"], "no-alternative");
    assert_eq!(row["override_reasons"][0]["count"], 1);
    assert_eq!(r["unknown_cards"]["overridden"], 1);
    assert!(
        !r.to_string().contains("Jane Doe"),
        "a comment reached the report"
    );

    let table = String::from_utf8(report(&storage, &["--from", "2000-01-01"]).stdout).unwrap();
    assert!(
        table.contains(topic) && table.contains("no-alternative"),
        "{table}"
    );
    let empty =
        String::from_utf8(report(&storage, &["--from", "2000-01-01", "--to", "2000-01-31"]).stdout)
            .unwrap();
    assert!(empty.contains("No card issued"), "{empty}");
}

#[tokio::test]
async fn sqlite_feedback_audit_and_report_over_http() {
    feedback_audit_and_report(sqlite_storage()).await;
}

#[tokio::test]
async fn postgres_feedback_audit_and_report_over_http() {
    if let Some(storage) = postgres_storage("postgres_feedback_audit_and_report_over_http") {
        feedback_audit_and_report(storage).await;
    }
}

#[tokio::test]
async fn the_patient_id_never_reaches_the_database_file() {
    let storage = sqlite_storage();
    let app = app_with(storage.clone());
    let body = fixture(FIXTURE);
    let req: Value = serde_json::from_slice(&body).unwrap();
    let patient = req["context"]["patientId"].as_str().unwrap().to_owned();
    assert_eq!(app.post_json(SERVICE, body).await.status(), 200);
    audit_written(&app, 1).await;
    let mut bytes = Vec::new();
    for name in ["jakguard.sqlite3", "jakguard.sqlite3-wal"] {
        if let Ok(b) = std::fs::read(storage.data_dir.join(name)) {
            bytes.extend(b);
        }
    }
    let needle = patient.as_bytes();
    assert!(!bytes.is_empty());
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the patient id is in the database in clear"
    );
}

/// A TCP proxy on loopback in front of the test cluster, which can be cut (listener closed,
/// every connection reset) and restored on the same port: the database "stops" for the
/// server under test without disturbing the other tests that share the cluster.
struct Proxy {
    port: u16,
    upstream: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Proxy {
            port,
            upstream: upstream.to_owned(),
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::default(),
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, conns, upstream) = (self.up.clone(), self.conns.clone(), self.upstream.clone());
        std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        let mut list = conns.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener is dropped here: the port refuses connections.
        });
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    fn restore(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => panic!("cannot rebind the proxy: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.serve(listener);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// `postgres://user:pw@HOST:PORT/db` → (`HOST:PORT`, the URL with `addr` instead).
fn redirect(url: &str, addr: &str) -> (String, String) {
    let after_at = url
        .rfind('@')
        .map_or(url.find("://").unwrap() + 3, |i| i + 1);
    let end = after_at + url[after_at..].find('/').unwrap();
    (
        url[after_at..end].to_owned(),
        format!("{}{addr}{}", &url[..after_at], &url[end..]),
    )
}

#[tokio::test]
async fn postgres_stopped_mid_run_feedback_503_evaluation_200_audit_kept() {
    let Some(mut storage) = postgres_storage("postgres_stopped_mid_run") else {
        return;
    };
    let direct = storage.url.clone().unwrap();
    let (upstream, _) = redirect(&direct, "");
    let proxy = Proxy::start(&upstream);
    storage.url = Some(redirect(&direct, &format!("127.0.0.1:{}", proxy.port)).1);
    let app = app_with(storage.clone());
    let fb = |i: u32| feedback(&format!("card-{i}"), "x", "2026-11-22T13:43:17Z");

    assert_eq!(app.post_json(SERVICE, fixture(FIXTURE)).await.status(), 200);
    assert_eq!(
        app.post_json(&format!("{SERVICE}/feedback"), fb(0))
            .await
            .status(),
        200
    );
    audit_written(&app, 1).await;

    proxy.cut();
    let started = Instant::now();
    let resp = app.post_json(&format!("{SERVICE}/feedback"), fb(1)).await;
    let refused_in = started.elapsed();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let outcome: Value = resp.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let resp = app.post_json(SERVICE, fixture(FIXTURE)).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            resp.status(),
            200,
            "evaluation must not depend on the database"
        );
    }
    assert!(
        slowest < Duration::from_millis(500),
        "evaluation took {slowest:?}"
    );
    // Readiness flips while storage is away (the default), yet evaluations kept answering.
    let (status, body) = ready(&app).await;
    assert_eq!(
        (status, &body["storage"]),
        (503, &json!("unavailable")),
        "{body}"
    );
    assert_eq!(body["audit"]["pending"], 5, "{body}");
    eprintln!(
        "database down: feedback 503 in {} ms, slowest evaluation {} ms",
        refused_in.as_millis(),
        slowest.as_millis()
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = app
            .post_json(&format!("{SERVICE}/feedback"), fb(2))
            .await
            .status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "feedback still {status} after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The five evaluations answered during the outage reach the database.
    audit_written(&app, 6).await;
    let db = jakguard_storage::open_database(
        &StorageConfig {
            url: Some(direct),
            ..storage
        }
        .options(),
    )
    .unwrap();
    assert_eq!(db.audit_records().unwrap().len(), 6);
    let cards: Vec<String> = db
        .feedback()
        .unwrap()
        .into_iter()
        .map(|f| f.item.card)
        .collect();
    assert_eq!(cards, ["card-0", "card-2"]);
    let (status, body) = ready(&app).await;
    assert_eq!((status, &body["storage"]), (200, &json!("ok")), "{body}");
}

#[test]
fn the_report_of_a_missing_database_fails_with_a_message() {
    let dir = testing::temp_dir("report-missing");
    let file = dir.join("jakguard.toml");
    std::fs::write(&file, "[storage]\ndata_dir = \"nowhere\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jakguard"))
        .args(["report", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no database at"), "{err}");
    assert!(!Path::new(&dir.join("nowhere")).exists());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_jakguard"))
        .args(["report", "--from", "2026-13-01", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from"));
}
