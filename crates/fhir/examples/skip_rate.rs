//! How fast `jakguard_fhir::scan` skips a request body, against serde_json, over every fixture
//! of `fixtures/requests/` (the README's "Performance" quotes its instruction counts).
//!
//! ```sh
//! cargo build --release -p jakguard-fhir --example skip_rate
//! target/release/examples/skip_rate scan      # or: serde
//! # instructions, stable on a noisy machine: the difference of N=4 and N=1 runs, over 3 rounds
//! N=4 valgrind --tool=callgrind target/release/examples/skip_rate scan
//! ```
//!
//! `N` (default 300) is the number of rounds over the fixtures.

use std::time::Instant;

use serde::de::IgnoredAny;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/requests");
    let texts: Vec<String> = std::fs::read_dir(dir)
        .expect("fixtures/requests")
        .map(|e| std::fs::read_to_string(e.expect("an entry").path()).expect("a fixture"))
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let serde = std::env::args().nth(1).as_deref() == Some("serde");
    let rounds: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let started = Instant::now();
    for _ in 0..rounds {
        for text in &texts {
            let read = if serde {
                serde_json::from_str::<IgnoredAny>(text).is_ok()
            } else {
                jakguard_fhir::scan::from_str::<IgnoredAny>(text).is_ok()
            };
            assert!(read, "a fixture is JSON");
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / (rounds * bytes).max(1) as f64;
    println!(
        "{}: {ns:.3} ns per byte ({bytes} bytes, {rounds} rounds)",
        if serde { "serde_json" } else { "scan" }
    );
}
