//! A fuzzer that runs on stable Rust: it mutates the real requests of `fixtures/requests/`
//! (bytes and JSON structure alike) and feeds them to [`Engine::evaluate`], checking the
//! service's promises for every input:
//! - it never panics;
//! - it answers with cards, or with a 400, 404 or 412;
//! - cards keep their shape (a summary under 140 characters, a known indicator).
//!
//! cargo-fuzz needs a nightly toolchain, which this project cannot fetch; structure-aware
//! mutation of realistic requests reaches the interesting paths (a wrong type in one field of
//! one resource) faster than byte-level coverage guidance would from scratch anyway.

use std::panic::{catch_unwind, AssertUnwindSafe};

use jakguard_cds::Engine;
use jakguard_knowledge::Lang;
use jakguard_rules::Date;
use serde_json::Value;

/// A small, seedable generator (xorshift64*): runs are reproducible from their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// What one input broke.
#[derive(Debug)]
pub struct Violation {
    pub input: Vec<u8>,
    pub what: String,
}

/// Evaluates one input and checks the promises.
pub fn check(engine: &Engine, service: &str, input: &[u8]) -> Result<(), String> {
    let today = Date::new(2026, 12, 1).expect("a valid date");
    same_reading(service, input)?;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        engine.evaluate(service, input, Lang::Fr, today)
    }));
    match outcome {
        Err(_) => Err("panicked".into()),
        Ok(Err(e)) if [400, 404, 412].contains(&e.status()) => Ok(()),
        Ok(Err(e)) => Err(format!("unexpected status {}", e.status())),
        Ok(Ok(ev)) => {
            for c in &ev.response.cards {
                if c.summary.chars().count() >= 140 {
                    return Err(format!(
                        "summary of {} characters",
                        c.summary.chars().count()
                    ));
                }
                if !["info", "warning", "critical"].contains(&c.indicator) {
                    return Err(format!("indicator {}", c.indicator));
                }
            }
            // The service's writer must give serde_json's bytes (see jakguard_cds::json).
            let theirs = serde_json::to_vec(&ev.response)
                .map_err(|e| format!("response not serialisable: {e}"))?;
            let ours = jakguard_cds::json::to_vec(&ev.response)
                .map_err(|e| format!("response not written: {e}"))?;
            if ours != theirs {
                return Err("jakguard_cds::json and serde_json wrote different bytes".into());
            }
            Ok(())
        }
    }
}

/// The one-pass reading of a request (envelope, prefetch, draft orders) must give what the
/// reading by parts gives, error or not.
fn same_reading(service: &str, input: &[u8]) -> Result<(), String> {
    let Some(service) = jakguard_cds::services::find(service) else {
        return Ok(());
    };
    let read = catch_unwind(AssertUnwindSafe(|| {
        let one_pass = jakguard_cds::request::parse(input, service);
        let by_parts = jakguard_cds::request::parse_by_parts(input, service);
        // The draft orders are part of each reading (read with the envelope, or by parts).
        (format!("{one_pass:?}"), format!("{by_parts:?}"))
    }))
    .map_err(|_| "panicked while reading".to_owned())?;
    if read.0 == read.1 {
        Ok(())
    } else {
        Err(format!(
            "the one-pass reading differs from the reading by parts:\n{}\n{}",
            read.0, read.1
        ))
    }
}

/// One mutation of a request.
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    match rng.below(4) {
        0 => mutate_bytes(rng, seed),
        _ => match serde_json::from_slice::<Value>(seed) {
            Ok(mut v) => {
                for _ in 0..=rng.below(4) {
                    mutate_value(rng, &mut v, 0);
                }
                serde_json::to_vec(&v).unwrap_or_default()
            }
            Err(_) => mutate_bytes(rng, seed),
        },
    }
}

fn mutate_bytes(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    if out.is_empty() {
        return vec![b'{'];
    }
    match rng.below(4) {
        0 => out.truncate(rng.below(out.len())),
        1 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(out.len());
                out[i] = rng.next_u64() as u8;
            }
        }
        2 => {
            let i = rng.below(out.len());
            let tokens: [&[u8]; 8] = [b"null", b"[", b"]", b"{", b"}", b"\"", b",", b"1e999"];
            let t = tokens[rng.below(tokens.len())];
            out.splice(i..i, t.iter().copied());
        }
        _ => {
            let i = rng.below(out.len());
            let j = (i + rng.below(64)).min(out.len());
            let chunk = out[i..j].to_vec();
            out.splice(i..i, chunk);
        }
    }
    out
}

/// Replaces, removes or duplicates a random node of the JSON tree.
fn mutate_value(rng: &mut Rng, v: &mut Value, depth: usize) {
    let descend = depth < 12 && rng.below(4) != 0;
    match v {
        Value::Object(map) if descend && !map.is_empty() => {
            let key = map
                .keys()
                .nth(rng.below(map.len()))
                .cloned()
                .unwrap_or_default();
            if rng.below(6) == 0 {
                map.remove(&key);
            } else if let Some(child) = map.get_mut(&key) {
                mutate_value(rng, child, depth + 1);
            }
        }
        Value::Array(list) if descend && !list.is_empty() => {
            let i = rng.below(list.len());
            match rng.below(6) {
                0 => {
                    list.remove(i);
                }
                1 => {
                    let copy = list[i].clone();
                    list.push(copy);
                }
                _ => mutate_value(rng, &mut list[i], depth + 1),
            }
        }
        _ => *v = replacement(rng),
    }
}

fn replacement(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(rng.next_u64() as i64),
        3 => Value::from(-1.5e300),
        4 => Value::from(""),
        5 => Value::from("1958"),
        6 => Value::from("2026-13-45T99:99:99+99:99"),
        7 => Value::Array(vec![]),
        8 => serde_json::json!({}),
        9 => serde_json::json!([{"coding": {"system": 7}}]),
        10 => Value::from("é".repeat(200)),
        _ => serde_json::json!({"resourceType": "Condition", "code": "M32.1"}),
    }
}

/// Runs `iterations` mutations of every seed; returns the first violations found.
pub fn run(
    engine: &Engine,
    seeds: &[(String, Vec<u8>)],
    iterations: usize,
    seed: u64,
) -> Vec<Violation> {
    let mut rng = Rng::new(seed);
    let mut found = Vec::new();
    for n in 0..iterations {
        let (service, body) = &seeds[n % seeds.len()];
        let input = mutate(&mut rng, body);
        // Also send it to the other service now and then: the wrong-hook paths matter too.
        let service = if rng.below(10) == 0 {
            "jakguard-order-sign"
        } else {
            service.as_str()
        };
        if let Err(what) = check(engine, service, &input) {
            found.push(Violation { input, what });
            if found.len() >= 5 {
                break;
            }
        }
    }
    found
}

/// The fixtures as (service, body) seeds.
pub fn seeds(dir: &std::path::Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    for p in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let body = std::fs::read(&p)?;
        let hook = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["hook"].as_str().map(str::to_owned));
        out.push((
            format!("jakguard-{}", hook.unwrap_or_else(|| "order-sign".into())),
            body,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_bounded_fuzz_run_finds_no_violation() {
        let engine = Engine::new(Arc::new(jakguard_knowledge::Knowledge::embedded().unwrap()));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/requests");
        let seeds = seeds(&dir).unwrap();
        let iterations = std::env::var("JAKGUARD_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        let found = run(&engine, &seeds, iterations, 0x5eed);
        let report: Vec<String> = found
            .iter()
            .map(|v| {
                format!(
                    "{}: {}",
                    v.what,
                    String::from_utf8_lossy(&v.input[..v.input.len().min(300)])
                )
            })
            .collect();
        assert!(found.is_empty(), "{report:#?}");
    }

    #[test]
    fn mutation_is_reproducible_from_the_seed() {
        let seed = br#"{"a": [1, 2, {"b": "c"}]}"#;
        let a: Vec<Vec<u8>> = {
            let mut r = Rng::new(7);
            (0..20).map(|_| mutate(&mut r, seed)).collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut r = Rng::new(7);
            (0..20).map(|_| mutate(&mut r, seed)).collect()
        };
        assert_eq!(a, b);
    }
}
