use serde::de::IgnoredAny;
use std::time::Instant;
fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/requests");
    let texts: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let t = Instant::now();
    for _ in 0..n {
        for text in &texts {
            match mode.as_str() {
                "serde" => {
                    serde_json::from_str::<IgnoredAny>(text).unwrap();
                }
                _ => {
                    jakguard_fhir::scan::from_str::<IgnoredAny>(text).unwrap();
                }
            }
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / (n * bytes) as f64;
    println!("{mode}: {ns:.3} ns/byte");
}
