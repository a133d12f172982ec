//! `jakguard eval` prints exactly what the HTTP service answers, and fails clearly on bad input.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{fixture, fixture_names, spawn_app};

fn eval(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jakguard"))
        .arg("eval")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn eval_prints_the_same_response_as_the_http_service() {
    let app = spawn_app();
    let today = jakguard_server::today_utc().to_string();
    for name in fixture_names() {
        let path = format!("{}/fixtures/requests/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = eval(&["--today", &today, &path], None);
        let req: Value = serde_json::from_slice(&fixture(&name)).unwrap();
        let service = format!("jakguard-{}", req["hook"].as_str().unwrap());
        let resp = app
            .post_json(&format!("/cds-services/{service}"), fixture(&name))
            .await;
        if resp.status() == 200 {
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let http = resp.bytes().await.unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim_end(),
                String::from_utf8_lossy(&http),
                "{name}"
            );
        } else {
            assert!(!out.status.success(), "{name}");
        }
    }
}

#[test]
fn eval_reads_standard_input_and_fixes_the_date() {
    let body = fixture("02-turns-65-today-baricitinib.json");
    let on_birthday = eval(&["--today", "2026-12-01", "-"], Some(&body));
    let day_before = eval(&["--today", "2026-11-30", "-"], Some(&body));
    let count = |o: &std::process::Output| {
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["cards"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(&on_birthday), 1);
    assert_eq!(count(&day_before), 0);
}

#[test]
fn eval_of_a_bad_request_fails_with_a_message_on_standard_error() {
    let out = eval(&["-"], Some(b"{\"hook\": \"order-sign\"}"));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hookInstance"), "{err}");
    let out = eval(&["--today", "yesterday", "-"], Some(b"{}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--today"));
}
