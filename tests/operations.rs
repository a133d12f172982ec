//! Running it like production: metrics after a known sequence, configuration check, graceful
//! shutdown on SIGTERM.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jakguard_server::config::ClientConfig;
use jakguard_server::Config;
use support::{fixture, spawn_app, spawn_with};

/// The value of one sample line of a Prometheus text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let (metric, rest) = head.split_once('{').unwrap_or((head, ""));
        if metric != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn metrics_count_requests_cards_feedback_and_statuses() {
    let app = spawn_app();
    for _ in 0..2 {
        let r = app
            .post_json(
                "/cds-services/jakguard-order-select",
                fixture("00-sandbox-order-select.json"),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        app.post_json("/cds-services/nope", "{}").await.status(),
        404
    );
    let fb = r#"{"feedback":[{"card":"x-1","outcome":"overridden","outcomeTimestamp":"2026-11-22T13:43:17Z"},{"card":"x-2","outcome":"accepted","outcomeTimestamp":"2026-11-22T13:43:18Z"}]}"#;
    assert_eq!(
        app.post_json("/cds-services/jakguard-order-select/feedback", fb)
            .await
            .status(),
        200
    );

    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let req = |endpoint, status| {
        sample(
            &text,
            "jakguard_http_requests_total",
            &[("endpoint", endpoint), ("status", status)],
        )
    };
    assert_eq!(req("jakguard-order-select", "200"), Some(2.0), "{text}");
    assert_eq!(req("unknown", "404"), Some(1.0), "{text}");
    assert_eq!(
        req("jakguard-order-select/feedback", "200"),
        Some(1.0),
        "{text}"
    );
    let cards = |topic, indicator| {
        sample(
            &text,
            "jakguard_cards_total",
            &[("topic", topic), ("indicator", indicator)],
        )
    };
    assert_eq!(cards("ansm-restriction", "warning"), Some(2.0), "{text}");
    assert_eq!(cards("missing-data", "info"), Some(2.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "jakguard_feedback_total",
            &[("outcome", "overridden")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "jakguard_feedback_total", &[("outcome", "accepted")]),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            "jakguard_http_request_duration_seconds_count",
            &[("endpoint", "jakguard-order-select")]
        ) == Some(2.0),
        "{text}"
    );
    // No patient data and no hookInstance anywhere in the exposition.
    assert!(
        !text.contains("smart-1288992") && !text.contains("fd964d35"),
        "{text}"
    );
}

#[tokio::test]
async fn authentication_failures_are_counted_by_reason() {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys");
    let app = spawn_with(Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        clients: vec![ClientConfig {
            issuer: "https://sandbox.cds-hooks.org".into(),
            jwks_file: Some(keys.join("cds-hooks-sandbox-jwks.json")),
            jwks_url: None,
            jku_allowlist: vec![],
            tenant: None,
        }],
        ..Config::default()
    });
    assert_eq!(
        app.post_json("/cds-services/jakguard-order-select", "{}")
            .await
            .status(),
        401
    );
    let r = app
        .client
        .post(app.url("/cds-services/jakguard-order-select"))
        .bearer_auth("a.b.c")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(
            &text,
            "jakguard_auth_failures_total",
            &[("reason", "missing")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "jakguard_auth_failures_total",
            &[("reason", "malformed")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "jakguard_http_requests_total",
            &[("endpoint", "jakguard-order-select"), ("status", "401")]
        ),
        Some(2.0)
    );
}

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_masked() {
    let dir = std::env::temp_dir().join(format!("jakguard-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jakguard.toml");
    std::fs::write(&file, "bind = \"127.0.0.1:9090\"\ndefault_language = \"fr\"\n[storage]\nurl = \"postgres://jak:s3cret@db/jakguard\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jakguard"))
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bind = \"127.0.0.1:9090\"") && text.contains("default_language = \"fr\""),
        "{text}"
    );
    assert!(
        !text.contains("s3cret") && text.contains("********"),
        "{text}"
    );

    std::fs::write(&file, "bind = \"nowhere\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jakguard"))
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let data = std::env::temp_dir().join(format!("jakguard-sigterm-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_jakguard"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("JAKGUARD_STORAGE__URL", "memory:")
        .env("JAKGUARD_STORAGE__DATA_DIR", &data)
        .env("JAKGUARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("the server did not start: {e}"),
        }
    };
    // A first, complete request on the same connection proves that a worker holds it (a
    // connection still in the accept queue at SIGTERM is not "in flight").
    write!(s, "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the health answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut rest_of_health = vec![0u8; len];
    s.read_exact(&mut rest_of_health).unwrap();

    let body = fixture("00-sandbox-order-select.json");
    let (first, rest) = body.split_at(body.len() / 2);
    write!(s, "POST /cds-services/jakguard-order-select HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(first).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM while the request is half sent.
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(rest).unwrap();
    s.flush().unwrap();
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("ansm-restriction"));
    // And then it stops, well within the grace period.
    let deadline = Instant::now() + Duration::from_secs(35);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    // New connections are refused once stopped.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
