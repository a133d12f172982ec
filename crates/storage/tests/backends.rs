//! The storage against real databases: every test runs on SQLite (a file in a fresh folder)
//! and on PostgreSQL (a scratch database on the cluster of `JAKGUARD_TEST_POSTGRES_URL`;
//! skipped with a notice outside CI when it is not set, a failure under CI).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jakguard_cds::feedback::{
    AcceptedSuggestion, FeedbackItem, Outcome, OverrideReason, ReasonCoding,
};
use jakguard_storage::testing;
use jakguard_storage::{
    open, open_database, AuditCard, AuditRecord, AuditSink, OpenError, PatientHasher, Period,
    StorageOptions,
};

const SECRET: &str = "test secret, long enough to be accepted";

fn sqlite() -> StorageOptions {
    StorageOptions {
        data_dir: testing::temp_dir("storage"),
        patient_id_secret: Some(SECRET.into()),
        ..StorageOptions::default()
    }
}

fn postgres(test: &str) -> Option<StorageOptions> {
    let base = testing::postgres_url(test)?;
    Some(StorageOptions {
        url: Some(testing::scratch_postgres(&base)),
        data_dir: testing::temp_dir("storage-pg"),
        patient_id_secret: Some(SECRET.into()),
        ..StorageOptions::default()
    })
}

/// One `#[test]` per backend for each scenario, so that a failure names its backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::run(super::$name(super::sqlite()));
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(options) = super::postgres(stringify!($name)) {
                        super::run(super::$name(options));
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    feedback_round_trips_and_repeats_are_not_counted_twice,
    audit_records_round_trip_with_the_patient_id_hashed,
    feedback_for_unknown_cards_is_kept_and_flagged_until_the_card_is_seen,
    concurrent_writers_from_two_instances_lose_nothing,
    the_report_counts_cards_outcomes_and_reasons,
    a_different_patient_id_secret_is_refused,
    shutdown_flushes_records_queued_during_the_linger_quickly,
    a_burst_of_several_batches_is_written_completely,
);

fn run(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

fn overridden(card: &str, code: Option<&str>, at: &str) -> FeedbackItem {
    FeedbackItem {
        card: card.into(),
        outcome: Outcome::Overridden,
        accepted_suggestions: vec![],
        override_reason: Some(OverrideReason {
            reason: code.map(|c| ReasonCoding {
                system: Some("http://example.org/cds-override-reasons".into()),
                code: Some(c.into()),
                display: Some(format!("display of {c}")),
            }),
            user_comment: Some("discussed with rheumatology".into()),
        }),
        outcome_timestamp: at.into(),
    }
}

fn accepted(card: &str, at: &str) -> FeedbackItem {
    FeedbackItem {
        card: card.into(),
        outcome: Outcome::Accepted,
        accepted_suggestions: vec![AcceptedSuggestion {
            id: "8b3f0f0e-0000-4000-8000-000000000001".into(),
        }],
        override_reason: None,
        outcome_timestamp: at.into(),
    }
}

fn card(uuid: &str, topic: &str, molecule: &str) -> AuditCard {
    AuditCard {
        uuid: uuid.into(),
        topic: topic.into(),
        indicator: "warning".into(),
        molecule: Some(molecule.into()),
        factors: vec!["age-65-plus".into(), "hypertension".into()],
    }
}

fn evaluation(patient: &str, cards: Vec<AuditCard>) -> AuditRecord {
    AuditRecord {
        service: "jakguard-order-sign".into(),
        hook_instance: uuid::Uuid::new_v4().to_string(),
        patient_id: patient.into(),
        cards,
    }
}

/// Waits until the audit writer has written `n` records in all.
async fn written(audit: &Arc<dyn AuditSink>, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while audit.stats().written < n {
        assert!(
            Instant::now() < deadline,
            "audit records not written in time: {:?}",
            audit.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn feedback_round_trips_and_repeats_are_not_counted_twice(options: StorageOptions) {
    let s = open(&options).unwrap();
    let items = vec![
        accepted("card-a", "2026-11-22T13:43:17.373Z"),
        overridden("card-b", Some("patient-informed"), "2026-11-22T13:44:00Z"),
        overridden("card-c", None, "2026-11-22T13:45:00+01:00"),
    ];
    let out = s
        .feedback
        .store("jakguard-order-sign", &items)
        .await
        .unwrap();
    assert_eq!((out.stored, out.duplicates), (3, 0));
    // The EHR did not get the answer and posts again: acknowledged, not stored twice.
    let again = s
        .feedback
        .store("jakguard-order-sign", &items[..1])
        .await
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1));
    let all = s.feedback.all().await.unwrap();
    let back: Vec<FeedbackItem> = all.iter().map(|f| f.item.clone()).collect();
    assert_eq!(back, items);
    assert!(all.iter().all(|f| f.service == "jakguard-order-sign"));
    assert!(s.feedback.ready().await);
    drop(s);
    // Reopened (a restart): everything is still there.
    let db = open_database(&options).unwrap();
    assert_eq!(db.feedback().unwrap().len(), 3);
}

async fn audit_records_round_trip_with_the_patient_id_hashed(options: StorageOptions) {
    let s = open(&options).unwrap();
    let cards = vec![
        card(
            "11111111-1111-5111-8111-111111111111",
            "ansm-restriction",
            "tofacitinib",
        ),
        card(
            "22222222-2222-5222-8222-222222222222",
            "vte-caution",
            "tofacitinib",
        ),
    ];
    s.audit.record(evaluation("patient-007", cards.clone()));
    s.audit.record(evaluation("patient-007", vec![]));
    s.audit.record(evaluation("patient-008", vec![]));
    written(&s.audit, 3).await;
    let records = open_database(&options).unwrap().audit_records().unwrap();
    assert_eq!(records.len(), 3);
    let expected = PatientHasher::new(SECRET).unwrap().hash("patient-007");
    let with_cards = records.iter().find(|r| !r.cards.is_empty()).unwrap();
    assert_eq!(with_cards.cards, cards);
    assert_eq!(with_cards.patient_hash, expected);
    assert_eq!(with_cards.service, "jakguard-order-sign");
    // Linkable: the same patient, the same hash; never the id in clear.
    assert_eq!(
        records
            .iter()
            .filter(|r| r.patient_hash == expected)
            .count(),
        2
    );
    assert!(records
        .iter()
        .all(|r| !r.patient_hash.contains("patient-00")));
    assert_eq!(s.audit.stats().pending, 0);
}

async fn feedback_for_unknown_cards_is_kept_and_flagged_until_the_card_is_seen(
    options: StorageOptions,
) {
    let s = open(&options).unwrap();
    s.audit.record(evaluation(
        "p1",
        vec![card("known-card", "ansm-restriction", "baricitinib")],
    ));
    written(&s.audit, 1).await;
    let out = s
        .feedback
        .store(
            "jakguard-order-select",
            &[
                overridden("known-card", Some("x"), "2026-11-22T13:43:17Z"),
                overridden("never-issued", Some("x"), "2026-11-22T13:43:17Z"),
            ],
        )
        .await
        .unwrap();
    assert_eq!((out.stored, out.unknown_cards), (2, 1));
    let all = s.feedback.all().await.unwrap();
    assert!(all[0].card_known);
    assert!(!all[1].card_known);
    // The card's audit record arrives after its feedback (another replica, a backlog).
    s.audit.record(evaluation(
        "p2",
        vec![card("never-issued", "vte-caution", "baricitinib")],
    ));
    written(&s.audit, 2).await;
    assert!(s.feedback.all().await.unwrap().iter().all(|f| f.card_known));
}

async fn concurrent_writers_from_two_instances_lose_nothing(options: StorageOptions) {
    // Two instances on one database: two processes on one SQLite file, or two replicas.
    let a = open(&options).unwrap();
    let b = open(&options).unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 {
            a.feedback.clone()
        } else {
            b.feedback.clone()
        };
        let audit = if w % 2 == 0 {
            a.audit.clone()
        } else {
            b.audit.clone()
        };
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let uuid = format!("w{w}-card-{i}");
                audit.record(evaluation(
                    &format!("patient-{w}"),
                    vec![card(&uuid, "ansm-restriction", "upadacitinib")],
                ));
                let out = store
                    .store(
                        "jakguard-order-sign",
                        &[overridden(&uuid, Some("r"), "2026-11-22T13:43:17Z")],
                    )
                    .await
                    .expect("each write is stored");
                assert_eq!(out.stored, 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    written(&a.audit, 100).await;
    written(&b.audit, 100).await;
    let db = open_database(&options).unwrap();
    let feedback = db.feedback().unwrap();
    assert_eq!(feedback.len(), 200);
    let mut cards: Vec<&str> = feedback.iter().map(|f| f.item.card.as_str()).collect();
    cards.sort_unstable();
    cards.dedup();
    assert_eq!(cards.len(), 200);
    assert_eq!(db.audit_records().unwrap().len(), 200);
    eprintln!(
        "200 feedback writes from 8 concurrent writers on 2 instances in {} ms",
        elapsed.as_millis()
    );
}

async fn the_report_counts_cards_outcomes_and_reasons(options: StorageOptions) {
    let s = open(&options).unwrap();
    let tofa = card("c-tofa", "ansm-restriction", "tofacitinib");
    // The same card shown twice (the EHR called again for the same order), another once.
    s.audit.record(evaluation("p1", vec![tofa.clone()]));
    s.audit.record(evaluation("p1", vec![tofa]));
    s.audit.record(evaluation(
        "p2",
        vec![card("c-bari", "ansm-restriction", "baricitinib")],
    ));
    s.audit.record(evaluation(
        "p3",
        vec![card("c-vte", "vte-caution", "tofacitinib")],
    ));
    written(&s.audit, 4).await;
    s.feedback
        .store(
            "jakguard-order-sign",
            &[
                overridden("c-tofa", Some("no-alternative"), "2026-11-22T10:00:00Z"),
                overridden("c-tofa", Some("no-alternative"), "2026-11-22T11:00:00Z"),
                overridden("c-tofa", None, "2026-11-22T12:00:00Z"),
                accepted("c-bari", "2026-11-22T10:00:00Z"),
                overridden("c-elsewhere", Some("other"), "2026-11-22T10:00:00Z"),
            ],
        )
        .await
        .unwrap();
    let db = open_database(&options).unwrap();
    let report = db.report(Period::default()).unwrap();
    let row = |topic: &str, molecule: &str| {
        report
            .cards
            .iter()
            .find(|c| c.topic == topic && c.molecule.as_deref() == Some(molecule))
            .unwrap_or_else(|| panic!("no row for {topic}/{molecule} in {report:#?}"))
    };
    let t = row("ansm-restriction", "tofacitinib");
    assert_eq!((t.issued, t.shown, t.accepted, t.overridden), (1, 2, 0, 3));
    let reasons: Vec<(Option<&str>, u64)> = t
        .override_reasons
        .iter()
        .map(|r| (r.code.as_deref(), r.count))
        .collect();
    assert_eq!(reasons, [(Some("no-alternative"), 2), (None, 1)]);
    let b = row("ansm-restriction", "baricitinib");
    assert_eq!((b.issued, b.accepted, b.overridden), (1, 1, 0));
    let v = row("vte-caution", "tofacitinib");
    assert_eq!((v.issued, v.accepted, v.overridden), (1, 0, 0));
    assert_eq!(report.unknown_cards.overridden, 1);
    assert_eq!(report.cards.len(), 3);
    // A period before any of it: nothing.
    let past = db
        .report(Period::parse(Some("2000-01-01"), Some("2000-12-31")).unwrap())
        .unwrap();
    assert!(past.cards.is_empty());
    assert_eq!(past.unknown_cards.overridden, 0);
    // The JSON form is what `jakguard report --json` prints.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["unknown_cards"]["overridden"], 1);
    // No comment text reaches the report.
    assert!(!json.to_string().contains("rheumatology"));
}

async fn shutdown_flushes_records_queued_during_the_linger_quickly(options: StorageOptions) {
    let s = open(&options).unwrap();
    let audit = s.audit.clone();
    drop(s);
    // Queued and at once dropped: the writer is still lingering over them.
    for i in 0..50 {
        audit.record(evaluation(
            &format!("p{i}"),
            vec![card(&format!("c{i}"), "ansm-restriction", "tofacitinib")],
        ));
    }
    let started = Instant::now();
    drop(audit);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "shutdown took {took:?} (the flush limit is 5 s)"
    );
    let records = open_database(&options).unwrap().audit_records().unwrap();
    assert_eq!(records.len(), 50);
    assert_eq!(records.iter().map(|r| r.cards.len()).sum::<usize>(), 50);
}

async fn a_burst_of_several_batches_is_written_completely(options: StorageOptions) {
    // More than one transaction's worth, recorded faster than the linger.
    let s = open(&options).unwrap();
    let n = 2_000;
    for i in 0..n {
        let cards = (0..i % 4)
            .map(|c| card(&format!("c{i}-{c}"), "vte-caution", "baricitinib"))
            .collect();
        s.audit.record(evaluation(&format!("p{i}"), cards));
    }
    written(&s.audit, n as u64).await;
    let stats = s.audit.stats();
    assert_eq!((stats.pending, stats.dropped), (0, 0));
    let records = open_database(&options).unwrap().audit_records().unwrap();
    assert_eq!(records.len(), n);
    let cards: usize = records.iter().map(|r| r.cards.len()).sum();
    assert_eq!(cards, (0..n).map(|i| i % 4).sum::<usize>());
}

async fn a_different_patient_id_secret_is_refused(options: StorageOptions) {
    drop(open(&options).unwrap());
    let changed = StorageOptions {
        patient_id_secret: Some("another secret, also long enough".into()),
        ..options.clone()
    };
    match open(&changed) {
        Err(OpenError::Secret(m)) => assert!(m.contains("differs"), "{m}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a changed secret was accepted"),
    }
    // The original secret still opens it.
    assert!(open(&options).is_ok());
}

#[test]
fn postgres_without_a_secret_is_refused_before_connecting() {
    let options = StorageOptions {
        url: Some("postgres://jakguard@127.0.0.1:1/none".into()),
        ..StorageOptions::default()
    };
    match open(&options) {
        Err(OpenError::Secret(m)) => assert!(m.contains("required with PostgreSQL"), "{m}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened without a secret"),
    }
}

#[test]
fn sqlite_without_a_secret_generates_one_kept_in_the_data_dir() {
    let options = StorageOptions {
        data_dir: testing::temp_dir("storage-keyfile"),
        ..StorageOptions::default()
    };
    run(async {
        let s = open(&options).unwrap();
        s.audit.record(evaluation("p1", vec![]));
        written(&s.audit, 1).await;
    });
    assert!(options.data_dir.join("jakguard.sqlite3").exists());
    assert!(options.data_dir.join("patient-id.secret").exists());
    // Reopening uses the same secret (the database would refuse another one).
    assert!(open(&options).is_ok());
}

#[test]
fn the_report_refuses_a_database_that_does_not_exist() {
    let options = StorageOptions {
        data_dir: testing::temp_dir("storage-none").join("missing"),
        ..StorageOptions::default()
    };
    assert!(matches!(open_database(&options), Err(OpenError::Config(_))));
    assert!(!options.data_dir.exists());
}
