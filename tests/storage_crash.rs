//! Acknowledged means stored, even through a crash: the real `jakguard serve` binary on
//! SQLite takes a stream of feedback posts from several clients, is killed with SIGKILL in
//! the middle of it, and is started again on the same data directory; every feedback that got
//! a 200 before the kill must be there.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use jakguard_storage::{testing, StorageOptions};

const SECRET: &str = "crash test secret, long enough to pass";

/// Starts `jakguard serve` on a free port and returns it with its port (read from its log).
fn serve(config: &Path) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jakguard"))
        .args(["serve", "--config"])
        .arg(config)
        .env("JAKGUARD_LOG", "info")
        .env_remove("JAKGUARD_STORAGE__URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let kept = log.clone();
    // Keeps reading the log so that the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(port) = v["fields"]["port"].as_u64() {
                    let _ = tx.send(port as u16);
                }
            }
            kept.lock().unwrap().push(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(port) => (child, port),
        Err(e) => panic!(
            "the server did not log its port ({e}; exit status {:?}); its log:\n{}",
            child.try_wait(),
            log.lock().unwrap().join("\n")
        ),
    }
}

fn feedback(card: &str) -> String {
    serde_json::json!({"feedback": [{
        "card": card,
        "outcome": "overridden",
        "overrideReason": {"reason": {"code": "no-alternative"}},
        "outcomeTimestamp": "2026-11-22T13:43:17Z"
    }]})
    .to_string()
}

#[test]
fn sigkill_during_a_feedback_stream_loses_no_acknowledged_feedback() {
    let dir = testing::temp_dir("crash");
    let config = dir.join("jakguard.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:0\"\n[storage]\ndata_dir = {:?}\npatient_id_secret = {SECRET:?}\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();

    let (mut child, port) = serve(&config);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut clients = Vec::new();
    for c in 0..4 {
        let (acked, latencies) = (acked.clone(), latencies.clone());
        clients.push(rt.spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{port}/cds-services/jakguard-order-sign/feedback");
            // Bounded: at most 5000 posts per client, and never past the kill.
            for i in 0..5000 {
                let card = format!("crash-{c}-{i}");
                let started = Instant::now();
                let sent = http
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(feedback(&card))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        latencies.lock().unwrap().push(started.elapsed());
                        acked.lock().unwrap().push(card);
                    }
                    Ok(r) => panic!("unexpected status {} before the kill", r.status()),
                    // The server is gone: in flight, so never acknowledged.
                    Err(_) => break,
                }
            }
        }));
    }
    // Kill once a good number of posts have been acknowledged, while all four keep posting.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the stream is too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for c in clients {
        rt.block_on(c).unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();

    // Restarted on the same data directory, it serves again...
    let (mut again, port) = serve(&config);
    let resp = rt.block_on(async {
        reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{port}/cds-services/jakguard-order-sign/feedback"
            ))
            .header("Content-Type", "application/json")
            .body(feedback("after-restart"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(resp, 200);
    again.kill().unwrap();
    again.wait().unwrap();

    // ...and every acknowledged feedback is in the database.
    let db = jakguard_storage::open_database(&StorageOptions {
        data_dir: dir.join("data"),
        patient_id_secret: Some(SECRET.into()),
        ..StorageOptions::default()
    })
    .unwrap();
    let stored: HashSet<String> = db
        .feedback()
        .unwrap()
        .into_iter()
        .map(|f| f.item.card)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|c| !stored.contains(*c)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged feedback lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(stored.contains("after-restart"));

    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    eprintln!(
        "{} feedback acknowledged before SIGKILL, {} stored (the rest were in flight); \
         latency p50 {} µs, p99 {} µs",
        acked.len(),
        stored.len() - 1,
        l[l.len() / 2].as_micros(),
        l[l.len() * 99 / 100].as_micros()
    );
}
