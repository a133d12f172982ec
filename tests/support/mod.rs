//! Spawns the real server on port 0, as production runs it, for HTTP tests.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::mpsc;

use jakguard_server::{Application, Config};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
}

/// Starts the service on a free loopback port in its own thread and returns its address.
pub fn spawn_app() -> TestApp {
    spawn_with(Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    })
}

pub fn spawn_with(mut config: Config) -> TestApp {
    // Tests that do not choose a store get an in-memory one: the default SQLite file under
    // ./data would be shared (and raced for its generated secret) by tests running in parallel.
    if config.storage == jakguard_server::config::StorageConfig::default() {
        config.storage.url = Some("memory:".into());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = Application::build(&config).expect("the app builds");
            tx.send(app.port()).unwrap();
            app.run_until_stopped().await.unwrap();
        })
    });
    let port = rx.recv().expect("the server reports its port");
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the server answers")
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/requests")
            .join(name),
    )
    .unwrap()
}

pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests"),
    )
    .unwrap()
    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
    .filter(|n| n.ends_with(".json"))
    .collect();
    names.sort();
    names
}

/// The FHIR server of the fetch tests, started by `.ci/setup.d/30-fhir-server.sh`: its base
/// URL and bearer token. Without it: a failure under CI (the server must have been started), a
/// printed notice and `None` (skip) elsewhere.
#[allow(dead_code)]
pub fn test_fhir_server() -> Option<(String, String)> {
    let url = std::env::var("JAKGUARD_TEST_FHIR_URL").unwrap_or_default();
    let token = std::env::var("JAKGUARD_TEST_FHIR_TOKEN").unwrap_or_default();
    if !url.is_empty() && !token.is_empty() {
        return Some((url, token));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but JAKGUARD_TEST_FHIR_URL / JAKGUARD_TEST_FHIR_TOKEN are not set: \
         .ci/setup.d/30-fhir-server.sh must start the FHIR server"
    );
    eprintln!(
        "NOTICE: skipping a FHIR server test: JAKGUARD_TEST_FHIR_URL is not set \
         (source .ci/setup.d/30-fhir-server.sh to start one)"
    );
    None
}

/// The service with `allowed` FHIR servers and the `[fhir]` settings changed by `tweak`.
#[allow(dead_code)]
pub fn spawn_with_fhir(
    allowed: &[&str],
    tweak: impl FnOnce(&mut jakguard_server::config::FhirConfig),
) -> TestApp {
    let mut fhir = jakguard_server::config::FhirConfig {
        allowed_servers: allowed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    tweak(&mut fhir);
    spawn_with(Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        fhir,
        ..Config::default()
    })
}

/// order -> topic -> (factor code, sorted evidence references), factors sorted.
#[allow(dead_code)]
pub type CardMap = std::collections::BTreeMap<
    String,
    std::collections::BTreeMap<String, Vec<(String, Vec<String>)>>,
>;

/// The cards of a response by order and topic, for comparing two answers.
#[allow(dead_code)]
pub fn cards_by_order(resp: &serde_json::Value) -> CardMap {
    let mut out = CardMap::new();
    for card in resp["cards"].as_array().into_iter().flatten() {
        let ext = &card["extension"]["jakguard"];
        let order = ext["order"].as_str().unwrap_or("").to_owned();
        let topic = card["source"]["topic"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let mut factors: Vec<(String, Vec<String>)> = ext["factors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let mut ev: Vec<String> = f["evidence"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect();
                ev.sort();
                (f["code"].as_str().unwrap_or("").to_owned(), ev)
            })
            .collect();
        factors.sort();
        out.entry(order).or_default().insert(topic, factors);
    }
    out
}

/// Every card's detail of a response, joined: what a clinician would read.
pub fn details(resp: &serde_json::Value) -> String {
    resp["cards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["detail"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
