//! Criterion benchmarks of a whole evaluation, request parsing included: body bytes in,
//! cards out, exactly what `Engine::evaluate` does for the HTTP service.
//!
//! The records are generated from the resources of `fixtures/requests/`: every Condition,
//! Observation and MedicationRequest/Statement the fixtures carry forms a pool of real shapes
//! (ICD-10 and SNOMED codes, partial dates, unit variants, a malformed entry), cycled with
//! fresh ids. A synthetic template would be faster to parse and prove less.
//!
//! - `evaluate/typical`: 50 resources (39 KB compact), as an EHR sends for one patient;
//! - `evaluate/large`: 500 Conditions, 2,000 Observations, 200 MedicationRequests;
//! - `evaluate/scaling/{1,10,100}`: the typical record times 1, 10 and 100, to show that the
//!   time grows linearly with the record (criterion prints bytes/s: it must stay flat);
//! - `floor/ignored_any`: the same typical body into `serde::de::IgnoredAny`, the least any
//!   service must do with it (the in-process counterpart of `POST /bench/floor/{id}`).
//!
//! Run with `cargo bench -p jakguard-cds --bench evaluate`; `cargo test` only compiles it.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jakguard_cds::Engine;
use jakguard_knowledge::{Knowledge, Lang};
use jakguard_rules::Date;
use serde_json::{json, Value};

/// The shapes the generator copies, read once from the fixtures.
struct Pool {
    /// The request whose envelope, Patient and draft orders every generated record reuses.
    base: Value,
    conditions: Vec<Value>,
    observations: Vec<Value>,
    medications: Vec<Value>,
}

impl Pool {
    fn load() -> Pool {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/requests");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("fixtures/requests")
            .map(|e| e.expect("fixture entry").path())
            .collect();
        // Sorted, so that every run generates the same bytes.
        names.sort();
        let mut pool = Pool {
            base: Value::Null,
            conditions: vec![],
            observations: vec![],
            medications: vec![],
        };
        for path in &names {
            let req: Value = serde_json::from_slice(&std::fs::read(path).expect("fixture"))
                .expect("fixture JSON");
            if path.ends_with("15-negatives-refuted-resolved-bmi-29-9.json") {
                // order-sign, tofacitinib: a relevant order, so the whole path runs.
                pool.base = req.clone();
            }
            for (key, out) in [
                ("conditions", &mut pool.conditions),
                ("observations", &mut pool.observations),
                ("medications", &mut pool.medications),
            ] {
                let entries = req["prefetch"][key]["entry"].as_array().cloned();
                for e in entries.unwrap_or_default() {
                    if e["resource"].is_object() {
                        out.push(e["resource"].clone());
                    }
                }
            }
        }
        assert!(
            pool.base.is_object(),
            "fixture 15 is the base of the records"
        );
        pool
    }

    /// A request whose prefetch holds `c` Conditions, `o` Observations and `m` medications.
    fn request(&self, c: usize, o: usize, m: usize) -> Vec<u8> {
        let bundle = |templates: &[Value], n: usize, kind: &str| {
            let entry: Vec<Value> = (0..n)
                .map(|i| {
                    let mut r = templates[i % templates.len()].clone();
                    let rt = r["resourceType"].as_str().unwrap_or("Basic").to_owned();
                    let id = format!("{kind}-{i}");
                    r["id"] = json!(id);
                    json!({
                        "fullUrl": format!("https://ehr.example.org/fhir/{rt}/{id}"),
                        "resource": r,
                        "search": {"mode": "match"},
                    })
                })
                .collect();
            json!({
                "resourceType": "Bundle",
                "type": "searchset",
                "total": n,
                "entry": entry,
            })
        };
        let mut req = self.base.clone();
        req["prefetch"]["conditions"] = bundle(&self.conditions, c, "cond");
        req["prefetch"]["observations"] = bundle(&self.observations, o, "obs");
        req["prefetch"]["medications"] = bundle(&self.medications, m, "med");
        // Compact, as EHRs send it.
        serde_json::to_vec(&req).expect("serialisable")
    }
}

/// The typical record: the Patient and 49 resources (12 + 33 + 4). The fixtures' resources
/// are complete (categories, subjects, narrative-free but fully coded): 39 KB compact.
const TYPICAL: (usize, usize, usize) = (12, 33, 4);

const SERVICE: &str = "jakguard-order-sign";

fn engine() -> Engine {
    Engine::new(Arc::new(Knowledge::embedded().expect("embedded knowledge")))
}

fn today() -> Date {
    Date::parse("2026-12-01").expect("date")
}

/// Fails the bench early if the generated request is not one the engine answers with cards.
fn check(engine: &Engine, body: &[u8]) {
    let out = engine
        .evaluate(SERVICE, body, Lang::En, today())
        .expect("the generated request is valid");
    assert!(!out.response.cards.is_empty(), "the record yields cards");
}

/// A generated request, built and checked on first use: criterion calls a bench's closure
/// only when its name passes the filter, so `--bench '^evaluate/typical$'` (under callgrind,
/// say) does not pay for generating the large records.
struct Lazy<'p> {
    pool: &'p Pool,
    engine: &'p Engine,
    counts: (usize, usize, usize),
    body: std::cell::OnceCell<Vec<u8>>,
}

impl<'p> Lazy<'p> {
    fn new(pool: &'p Pool, engine: &'p Engine, counts: (usize, usize, usize)) -> Self {
        Lazy {
            pool,
            engine,
            counts,
            body: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> &[u8] {
        self.body.get_or_init(|| {
            let (c, o, m) = self.counts;
            let body = self.pool.request(c, o, m);
            check(self.engine, &body);
            eprintln!(
                "record: {} resources ({c} Conditions, {o} Observations, {m} medications), {} bytes",
                1 + c + o + m,
                body.len()
            );
            body
        })
    }
}

fn scaled(factor: usize) -> (usize, usize, usize) {
    let (c, o, m) = TYPICAL;
    (c * factor, o * factor, m * factor)
}

fn benches(cr: &mut Criterion) {
    let pool = Pool::load();
    let engine = engine();
    let typical = Lazy::new(&pool, &engine, TYPICAL);
    let large = Lazy::new(&pool, &engine, (500, 2000, 200));
    // The byte counts for throughput, from the generator without evaluating.
    let typical_len = pool.request(TYPICAL.0, TYPICAL.1, TYPICAL.2).len() as u64;

    let mut g = cr.benchmark_group("evaluate");
    g.throughput(Throughput::Bytes(typical_len));
    g.bench_function("typical", |b| {
        let body = typical.get();
        b.iter(|| engine.evaluate(SERVICE, black_box(body), Lang::En, today()))
    });
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(2701));
    g.bench_function("large", |b| {
        let body = large.get();
        b.iter(|| engine.evaluate(SERVICE, black_box(body), Lang::En, today()))
    });
    g.finish();

    let mut g = cr.benchmark_group("evaluate/scaling");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for factor in [1usize, 10, 100] {
        let record = Lazy::new(&pool, &engine, scaled(factor));
        // Resources per second that stay flat from 1x to 100x mean linear time.
        let (c, o, m) = scaled(factor);
        g.throughput(Throughput::Elements((1 + c + o + m) as u64));
        g.bench_function(BenchmarkId::from_parameter(factor), |b| {
            let body = record.get();
            b.iter(|| engine.evaluate(SERVICE, black_box(body), Lang::En, today()))
        });
    }
    g.finish();

    let mut g = cr.benchmark_group("floor");
    g.throughput(Throughput::Bytes(typical_len));
    g.bench_function("ignored_any", |b| {
        let body = typical.get();
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)))
    });
    g.finish();
}

criterion_group!(evaluate, benches);
criterion_main!(evaluate);
