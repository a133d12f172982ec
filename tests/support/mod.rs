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

pub fn spawn_with(config: Config) -> TestApp {
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
