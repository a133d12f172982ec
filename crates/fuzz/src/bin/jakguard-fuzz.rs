//! `cargo run -p jakguard-fuzz --release -- [--seconds N] [--seed S]`: fuzz until the time is
//! up, print any violation with the seed that reproduces it, exit non-zero if one was found.

use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let seconds = value("--seconds").unwrap_or(60);
    let mut seed = value("--seed").unwrap_or(1);
    let knowledge = match jakguard_knowledge::Knowledge::embedded() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let engine = jakguard_cds::Engine::new(Arc::new(knowledge));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/requests");
    let seeds = jakguard_fuzz::seeds(&dir).unwrap_or_default();
    if seeds.is_empty() {
        eprintln!("no seeds in {}", dir.display());
        std::process::exit(2);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut total = 0usize;
    while Instant::now() < deadline {
        let found = jakguard_fuzz::run(&engine, &seeds, 5000, seed);
        total += 5000;
        if let Some(v) = found.first() {
            eprintln!("violation with --seed {seed}: {}", v.what);
            eprintln!("{}", String::from_utf8_lossy(&v.input));
            std::process::exit(1);
        }
        seed += 1;
    }
    println!("{total} inputs, no violation (seeds up to {seed})");
}
