//! Rules-level clinical suite, part 2: which orders are recognised (every molecule, every code
//! system), the daily dose against each limit of `knowledge/doses.toml`, and the blood-count
//! thresholds of `knowledge/thresholds.toml` with unit conversions and the 90-day window.

mod common;
use common::*;
use jakguard_knowledge::Analyte;

// ---- recognising the molecule ----

#[test]
fn every_restricted_molecule_is_recognised_by_each_code_system_and_by_text() {
    let cases: Vec<(&str, Concept, &str)> = vec![
        (
            "tofacitinib by RxNorm ingredient 1357536",
            rxnorm("1357536"),
            "tofacitinib",
        ),
        (
            "tofacitinib by RxNorm SCD 1357541 (5 mg tablet)",
            rxnorm("1357541"),
            "tofacitinib",
        ),
        (
            "tofacitinib by RxNorm SBD 1357547 (Xeljanz 5 mg)",
            rxnorm("1357547"),
            "tofacitinib",
        ),
        (
            "tofacitinib by ATC 2024 L04AF01",
            atc("L04AF01"),
            "tofacitinib",
        ),
        (
            "tofacitinib by ATC before 2024 L04AA29",
            atc("L04AA29"),
            "tofacitinib",
        ),
        (
            "tofacitinib by French label in capitals",
            text("XELJANZ 5 mg, comprimé pelliculé"),
            "tofacitinib",
        ),
        (
            "tofacitinib by molecule name in a display",
            displayed(CodeSystem::Other, "x", "Tofacitinib citrate 5 mg"),
            "tofacitinib",
        ),
        (
            "baricitinib by RxNorm ingredient 2047232",
            rxnorm("2047232"),
            "baricitinib",
        ),
        (
            "baricitinib by ATC 2024 L04AF02",
            atc("L04AF02"),
            "baricitinib",
        ),
        (
            "baricitinib by ATC before 2024 L04AA37",
            atc("L04AA37"),
            "baricitinib",
        ),
        (
            "baricitinib by brand in capitals",
            text("OLUMIANT 4 mg, comprimé pelliculé"),
            "baricitinib",
        ),
        (
            "upadacitinib by RxNorm ingredient 2196092",
            rxnorm("2196092"),
            "upadacitinib",
        ),
        (
            "upadacitinib by ATC 2024 L04AF03",
            atc("L04AF03"),
            "upadacitinib",
        ),
        (
            "upadacitinib by ATC before 2024 L04AA44",
            atc("L04AA44"),
            "upadacitinib",
        ),
        (
            "upadacitinib by French label",
            text("RINVOQ 15 mg, comprimé à libération prolongée"),
            "upadacitinib",
        ),
        (
            "filgotinib by ATC 2024 L04AF04",
            atc("L04AF04"),
            "filgotinib",
        ),
        (
            "filgotinib by ATC before 2024 L04AA45",
            atc("L04AA45"),
            "filgotinib",
        ),
        (
            "filgotinib by brand (no RxNorm code exists)",
            text("Jyseleca 200 mg comprimés"),
            "filgotinib",
        ),
        (
            "abrocitinib by RxNorm ingredient 2591476",
            rxnorm("2591476"),
            "abrocitinib",
        ),
        ("abrocitinib by ATC D11AH08", atc("D11AH08"), "abrocitinib"),
        (
            "abrocitinib by brand",
            text("CIBINQO 100 MG"),
            "abrocitinib",
        ),
        (
            "ritlecitinib by RxNorm ingredient 2641595",
            rxnorm("2641595"),
            "ritlecitinib",
        ),
        (
            "ritlecitinib by ATC L04AF08",
            atc("L04AF08"),
            "ritlecitinib",
        ),
        (
            "ritlecitinib by French spelling with an accent",
            text("Ritlécitinib 50 mg gélule"),
            "ritlecitinib",
        ),
        (
            "ritlecitinib by brand",
            text("LITFULO 50 mg"),
            "ritlecitinib",
        ),
        (
            "an unknown RxNorm code falls back on the text",
            Concept {
                codings: vec![Coding {
                    system: CodeSystem::RxNorm,
                    code: "000000".into(),
                    display: None,
                }],
                text: Some("Xeljanz".into()),
            },
            "tofacitinib",
        ),
    ];
    check_all(
        &cases,
        |c| c.0,
        |(_, concept, molecule)| {
            let a = assess(&elderly(), &order(concept.clone(), vec![]));
            if a.molecule.as_deref() != Some(*molecule) {
                return Err(format!("recognised as {:?}", a.molecule));
            }
            // A 70-year-old: every restricted molecule gets the restriction card.
            (codes_on(&a, Topic::AnsmRestriction) == [F::Age65Plus])
                .then_some(())
                .ok_or(format!("{a:#?}"))
        },
    );
}

#[test]
fn out_of_scope_jak_inhibitors_and_other_drugs_get_no_assessment() {
    let cases: Vec<(&str, Concept)> = vec![
        ("oral ruxolitinib by RxNorm 1193326", rxnorm("1193326")),
        ("ruxolitinib by ATC L01EJ01", atc("L01EJ01")),
        ("Jakavi by brand", text("JAKAVI 20 mg, comprimé")),
        ("topical ruxolitinib by ATC D11AH09", atc("D11AH09")),
        ("Opzelura by brand", text("Opzelura 15 mg/g crème")),
        ("fedratinib (Inrebic)", text("Inrebic 100 mg gélule")),
        ("fedratinib by ATC L01EJ02", atc("L01EJ02")),
        ("pacritinib (Vonjo)", text("Vonjo 100 mg")),
        ("momelotinib (Omjjara)", text("Omjjara 200 mg")),
        ("momelotinib by ATC L01EJ04", atc("L01EJ04")),
        (
            "deucravacitinib, a TYK2 inhibitor (Sotyktu)",
            text("SOTYKTU 6 mg"),
        ),
        ("deucravacitinib by ATC L04AF07", atc("L04AF07")),
        (
            "delgocitinib cream (Anzupgo)",
            text("Anzupgo 20 mg/g crème"),
        ),
        ("amoxicillin", text("Amoxicillin 500 mg capsule")),
        ("methotrexate by ATC L04AX03", atc("L04AX03")),
        ("an ATC class code alone names no molecule", atc("L04AF")),
        ("no code and no text", Concept::default()),
    ];
    check_all(
        &cases,
        |c| c.0,
        |(_, concept)| {
            let out = run_at(
                &elderly(),
                &[order(concept.clone(), vec![mg_dose(20.0, 2.0)])],
                TODAY,
            );
            out.is_empty().then_some(()).ok_or(format!("{out:#?}"))
        },
    );
}

#[test]
fn an_unreadable_medication_gets_an_info_missing_data_finding_only() {
    let mut o = order(Concept::default(), vec![]);
    o.medication.unreadable = true;
    let a = assess(&elderly(), &o);
    assert_eq!(a.molecule, None);
    assert_eq!(a.findings.len(), 1, "{a:#?}");
    let f = &a.findings[0];
    assert_eq!(
        (f.topic, f.indicator),
        (Topic::MissingData, Indicator::Info)
    );
    assert_eq!(f.notes, [Note::OrderUnreadable]);
}

#[test]
fn one_assessment_per_jak_inhibitor_order_in_order() {
    let mut tofa = order(text("Xeljanz 5 mg"), vec![]);
    tofa.reference = reference("MedicationRequest/a");
    let mut amox = order(text("amoxicillin"), vec![]);
    amox.reference = reference("MedicationRequest/b");
    let mut rux = order(text("Jakavi"), vec![]);
    rux.reference = reference("MedicationRequest/c");
    let mut bari = order(atc("L04AF02"), vec![]);
    bari.reference = reference("MedicationRequest/d");
    let out = run_at(&elderly(), &[tofa, amox, rux, bari], TODAY);
    let got: Vec<(&str, Option<&str>)> = out
        .iter()
        .map(|a| (a.order.as_str(), a.molecule.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("MedicationRequest/a", Some("tofacitinib")),
            ("MedicationRequest/d", Some("baricitinib"))
        ]
    );
}

// ---- doses ----

fn with_conditions(mut r: Record, conditions: Vec<Condition>) -> Record {
    r.conditions = conditions;
    r
}

fn ctd() -> Record {
    baseline_with(vec![condition("sle", icd("M32.1"))])
}

struct DoseCase {
    desc: &'static str,
    record: Record,
    order: Order,
    /// (ordered mg/day, limit, proposed mg, proposed times a day), or no dose finding.
    expect: Option<(f64, f64, f64, u32)>,
    /// One factor that must be among the reasons of the limit.
    because: Option<F>,
}

fn dose_case(
    desc: &'static str,
    record: Record,
    order: Order,
    expect: Option<(f64, f64, f64, u32)>,
    because: Option<F>,
) -> DoseCase {
    DoseCase {
        desc,
        record,
        order,
        expect,
        because,
    }
}

fn check_dose_cases(cases: &[DoseCase]) {
    check_all(
        cases,
        |c| c.desc,
        |c| {
            let a = assess(&c.record, &c.order);
            let f = finding(&a, Topic::DoseAdjustment);
            match (f.and_then(|f| f.dose.as_ref()), c.expect) {
                (None, None) => Ok(()),
                (Some(d), Some((ordered, max, mg, per_day))) => {
                    let f = f.unwrap();
                    if f.indicator != Indicator::Warning || !f.factors.is_empty() {
                        return Err(format!("a dose card is a warning without factors: {f:?}"));
                    }
                    if (d.ordered_mg_per_day - ordered).abs() > 1e-9
                        || d.max_mg_per_day != max
                        || d.propose_dose_mg != mg
                        || d.propose_per_day != per_day
                    {
                        return Err(format!("{d:?}"));
                    }
                    match c.because {
                        Some(b) if !d.because.contains(&b) => {
                            Err(format!("{b} not a reason: {d:?}"))
                        }
                        _ => Ok(()),
                    }
                }
                (got, _) => Err(format!("dose finding: {got:?}")),
            }
        },
    );
}

#[test]
fn doses_at_and_just_above_each_limit() {
    let pe = || baseline_with(vec![condition("pe", icd("I26.9"))]);
    let fvl = || baseline_with(vec![condition("fvl", icd("D68.51"))]);
    let pill = || {
        let mut r = baseline();
        r.medications = vec![active_request("pill", atc("G03AA07"))];
        r
    };
    let tofa = |mg, n| order_mg("tofacitinib", mg, n);
    let bari = |mg, n| order_mg("baricitinib", mg, n);
    let upa = |mg, n| order_mg("upadacitinib", mg, n);
    let filgo = |mg, n| order_mg("filgotinib", mg, n);
    let abro = |mg, n| order_mg("abrocitinib", mg, n);
    check_dose_cases(&[
        // tofacitinib: 11 mg/day with any restriction factor, CTD, or a VTE risk factor
        dose_case(
            "tofacitinib 5 mg bid, 65+: at the usual dose",
            elderly(),
            tofa(5.0, 2.0),
            None,
            None,
        ),
        dose_case(
            "tofacitinib 11 mg once daily (XR), 65+: at the limit",
            elderly(),
            tofa(11.0, 1.0),
            None,
            None,
        ),
        dose_case(
            "tofacitinib 11.5 mg/day, 65+: just above",
            elderly(),
            tofa(11.5, 1.0),
            Some((11.5, 11.0, 5.0, 2)),
            Some(F::Age65Plus),
        ),
        dose_case(
            "tofacitinib 10 mg bid, 65+: above",
            elderly(),
            tofa(10.0, 2.0),
            Some((20.0, 11.0, 5.0, 2)),
            Some(F::Age65Plus),
        ),
        dose_case(
            "tofacitinib 10 mg bid, lupus: above",
            ctd(),
            tofa(10.0, 2.0),
            Some((20.0, 11.0, 5.0, 2)),
            Some(F::ConnectiveTissueDisease),
        ),
        dose_case(
            "tofacitinib 10 mg bid, previous PE: above (VTE risk)",
            pe(),
            tofa(10.0, 2.0),
            Some((20.0, 11.0, 5.0, 2)),
            Some(F::VteHistory),
        ),
        dose_case(
            "tofacitinib 10 mg bid, no factor: no limit",
            baseline(),
            tofa(10.0, 2.0),
            None,
            None,
        ),
        // baricitinib: 2 mg with risk factors (restriction or VTE), 4 mg in CTD
        dose_case(
            "baricitinib 2 mg, 65+: at the limit",
            elderly(),
            bari(2.0, 1.0),
            None,
            None,
        ),
        dose_case(
            "baricitinib 2.5 mg, 65+: just above",
            elderly(),
            bari(2.5, 1.0),
            Some((2.5, 2.0, 2.0, 1)),
            Some(F::Age65Plus),
        ),
        dose_case(
            "baricitinib 4 mg, 65+: above",
            elderly(),
            bari(4.0, 1.0),
            Some((4.0, 2.0, 2.0, 1)),
            Some(F::Age65Plus),
        ),
        dose_case(
            "baricitinib 4 mg, factor V Leiden: above (VTE risk)",
            fvl(),
            bari(4.0, 1.0),
            Some((4.0, 2.0, 2.0, 1)),
            Some(F::Thrombophilia),
        ),
        dose_case(
            "baricitinib 4 mg, no factor: no limit",
            baseline(),
            bari(4.0, 1.0),
            None,
            None,
        ),
        dose_case(
            "baricitinib 4 mg, lupus only: at the CTD limit",
            ctd(),
            bari(4.0, 1.0),
            None,
            None,
        ),
        dose_case(
            "baricitinib 4.5 mg, lupus only: just above the CTD limit",
            ctd(),
            bari(4.5, 1.0),
            Some((4.5, 4.0, 4.0, 1)),
            Some(F::ConnectiveTissueDisease),
        ),
        dose_case(
            "baricitinib 4 mg, lupus and 65+: the lowest limit wins",
            with_conditions(elderly(), vec![condition("sle", icd("M32.1"))]),
            bari(4.0, 1.0),
            Some((4.0, 2.0, 2.0, 1)),
            Some(F::Age65Plus),
        ),
        // upadacitinib: 15 mg with risk factors
        dose_case(
            "upadacitinib 15 mg, 65+: at the limit",
            elderly(),
            upa(15.0, 1.0),
            None,
            None,
        ),
        dose_case(
            "upadacitinib 15.5 mg, 65+: just above",
            elderly(),
            upa(15.5, 1.0),
            Some((15.5, 15.0, 15.0, 1)),
            Some(F::Age65Plus),
        ),
        dose_case(
            "upadacitinib 30 mg, 65+: above",
            elderly(),
            upa(30.0, 1.0),
            Some((30.0, 15.0, 15.0, 1)),
            None,
        ),
        dose_case(
            "upadacitinib 45 mg induction, 65+: above",
            elderly(),
            upa(45.0, 1.0),
            Some((45.0, 15.0, 15.0, 1)),
            None,
        ),
        dose_case(
            "upadacitinib 30 mg, combined pill: above (VTE risk)",
            pill(),
            upa(30.0, 1.0),
            Some((30.0, 15.0, 15.0, 1)),
            Some(F::HormonalTherapy),
        ),
        dose_case(
            "upadacitinib 30 mg, no factor: no limit",
            baseline(),
            upa(30.0, 1.0),
            None,
            None,
        ),
        // filgotinib: 100 mg with risk factors
        dose_case(
            "filgotinib 100 mg, 65+: at the limit",
            elderly(),
            filgo(100.0, 1.0),
            None,
            None,
        ),
        dose_case(
            "filgotinib 100.5 mg, 65+: just above",
            elderly(),
            filgo(100.5, 1.0),
            Some((100.5, 100.0, 100.0, 1)),
            None,
        ),
        dose_case(
            "filgotinib 200 mg, 65+: above",
            elderly(),
            filgo(200.0, 1.0),
            Some((200.0, 100.0, 100.0, 1)),
            None,
        ),
        dose_case(
            "filgotinib 200 mg, previous PE: above (VTE risk)",
            pe(),
            filgo(200.0, 1.0),
            Some((200.0, 100.0, 100.0, 1)),
            Some(F::VteHistory),
        ),
        dose_case(
            "filgotinib 200 mg, no factor: no limit",
            baseline(),
            filgo(200.0, 1.0),
            None,
            None,
        ),
        // abrocitinib: 100 mg with risk factors
        dose_case(
            "abrocitinib 100 mg, 65+: at the limit",
            elderly(),
            abro(100.0, 1.0),
            None,
            None,
        ),
        dose_case(
            "abrocitinib 100.5 mg, 65+: just above",
            elderly(),
            abro(100.5, 1.0),
            Some((100.5, 100.0, 100.0, 1)),
            None,
        ),
        dose_case(
            "abrocitinib 200 mg, 65+: above",
            elderly(),
            abro(200.0, 1.0),
            Some((200.0, 100.0, 100.0, 1)),
            None,
        ),
        dose_case(
            "abrocitinib 200 mg, combined pill: above (VTE risk)",
            pill(),
            abro(200.0, 1.0),
            Some((200.0, 100.0, 100.0, 1)),
            Some(F::HormonalTherapy),
        ),
        dose_case(
            "abrocitinib 200 mg, no factor: no limit",
            baseline(),
            abro(200.0, 1.0),
            None,
            None,
        ),
        // ritlecitinib: a single dose, no limit
        dose_case(
            "ritlecitinib 50 mg, 65+: no limit",
            elderly(),
            order_mg("ritlecitinib", 50.0, 1.0),
            None,
            None,
        ),
    ]);
}

/// A tofacitinib order with one dosage instruction, for a 70-year-old (limit 11 mg/day).
fn tofa_order(concept: Concept, dosage: Dosage) -> Order {
    order(concept, vec![dosage])
}

fn dosage(value: f64, unit: Option<&str>) -> Dosage {
    Dosage {
        dose: Some(Quantity {
            value,
            unit: unit.map(str::to_owned),
        }),
        ..Dosage::default()
    }
}

fn every(mut d: Dosage, frequency: Option<f64>, period: Option<f64>, unit: Option<&str>) -> Dosage {
    d.frequency = frequency;
    d.period = period;
    d.period_unit = unit.map(str::to_owned);
    d
}

fn coded_as(mut d: Dosage, code: &str) -> Dosage {
    d.timing_code = Some(code.into());
    d
}

#[test]
fn the_daily_dose_is_read_from_every_form_of_dosage_instruction() {
    let xeljanz10 = || text("XELJANZ 10 mg, comprimé pelliculé");
    let with_strength = |mg: f64| {
        let mut o = tofa_order(
            text("Xeljanz"),
            every(dosage(1.0, Some("{tbl}")), Some(2.0), Some(1.0), Some("d")),
        );
        o.medication.strengths = vec![Strength {
            numerator: Quantity {
                value: mg,
                unit: Some("mg".into()),
            },
            denominator: Some(Quantity {
                value: 1.0,
                unit: Some("{tbl}".into()),
            }),
        }];
        o
    };
    let two_instructions = order(
        text("tofacitinib"),
        vec![
            every(dosage(10.0, Some("mg")), Some(1.0), Some(1.0), Some("d")),
            every(dosage(10.0, Some("mg")), Some(1.0), Some(1.0), Some("d")),
        ],
    );
    let above = Some((20.0, 11.0, 5.0, 2));
    check_dose_cases(&[
        dose_case(
            "10 mg, frequency 2 per 1 d",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                every(dosage(10.0, Some("mg")), Some(2.0), Some(1.0), Some("d")),
            ),
            above,
            None,
        ),
        dose_case(
            "10 mg every 12 h (frequency 1, period 12, h)",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                every(dosage(10.0, Some("mg")), Some(1.0), Some(12.0), Some("h")),
            ),
            above,
            None,
        ),
        dose_case(
            "5 mg every 12 h is 10 mg/day",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                every(dosage(5.0, Some("mg")), Some(1.0), Some(12.0), Some("h")),
            ),
            None,
            None,
        ),
        dose_case(
            "10 mg, timing.code BID",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                coded_as(dosage(10.0, Some("mg")), "BID"),
            ),
            above,
            None,
        ),
        dose_case(
            "10 mg, timing.code bid in lower case",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                coded_as(dosage(10.0, Some("mg")), "bid"),
            ),
            above,
            None,
        ),
        dose_case(
            "10 mg, timing.code Q12H",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                coded_as(dosage(10.0, Some("mg")), "Q12H"),
            ),
            above,
            None,
        ),
        dose_case(
            "period without frequency: once per day",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                every(dosage(20.0, Some("mg")), None, Some(1.0), Some("d")),
            ),
            Some((20.0, 11.0, 5.0, 2)),
            None,
        ),
        dose_case(
            "0.02 g once daily is 20 mg",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                every(dosage(0.02, Some("g")), Some(1.0), Some(1.0), Some("d")),
            ),
            above,
            None,
        ),
        dose_case(
            "2 tablets of 'XELJANZ 10 mg' once daily",
            elderly(),
            tofa_order(
                xeljanz10(),
                every(dosage(2.0, Some("{tbl}")), Some(1.0), Some(1.0), Some("d")),
            ),
            above,
            None,
        ),
        dose_case(
            "1 comprimé of 'XELJANZ 10 mg' twice daily (French unit)",
            elderly(),
            tofa_order(
                xeljanz10(),
                every(
                    dosage(1.0, Some("comprimé")),
                    Some(2.0),
                    Some(1.0),
                    Some("d"),
                ),
            ),
            above,
            None,
        ),
        dose_case(
            "1 tablet twice daily, strength from the RxNorm display",
            elderly(),
            tofa_order(
                displayed(
                    CodeSystem::RxNorm,
                    "2048566",
                    "tofacitinib 10 MG Oral Tablet",
                ),
                every(dosage(1.0, Some("tablet")), Some(2.0), Some(1.0), Some("d")),
            ),
            above,
            None,
        ),
        dose_case(
            "1 tablet twice daily, no unit, strength from the text",
            elderly(),
            tofa_order(
                xeljanz10(),
                every(dosage(1.0, None), Some(2.0), Some(1.0), Some("d")),
            ),
            above,
            None,
        ),
        dose_case(
            "1 tablet twice daily, strength 10 mg from Medication.ingredient",
            elderly(),
            with_strength(10.0),
            above,
            None,
        ),
        dose_case(
            "1 tablet twice daily, strength 5 mg from Medication.ingredient",
            elderly(),
            with_strength(5.0),
            None,
            None,
        ),
        dose_case(
            "two instructions of 10 mg once daily add up",
            elderly(),
            two_instructions,
            above,
            None,
        ),
        // unreadable doses: say nothing rather than guess
        dose_case(
            "a dose in mL cannot be read",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                every(dosage(10.0, Some("mL")), Some(2.0), Some(1.0), Some("d")),
            ),
            None,
            None,
        ),
        dose_case(
            "tablets without any strength cannot be read",
            elderly(),
            tofa_order(
                text("Xeljanz"),
                every(dosage(4.0, Some("{tbl}")), Some(2.0), Some(1.0), Some("d")),
            ),
            None,
            None,
        ),
        dose_case(
            "a dose without timing cannot be read",
            elderly(),
            tofa_order(text("tofacitinib"), dosage(20.0, Some("mg"))),
            None,
            None,
        ),
        dose_case(
            "an unknown timing.code cannot be read",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                coded_as(dosage(20.0, Some("mg")), "WHENEVER"),
            ),
            None,
            None,
        ),
        dose_case(
            "an unknown periodUnit cannot be read",
            elderly(),
            tofa_order(
                text("tofacitinib"),
                every(
                    dosage(20.0, Some("mg")),
                    Some(1.0),
                    Some(1.0),
                    Some("fortnight"),
                ),
            ),
            None,
            None,
        ),
        dose_case(
            "no dosage instruction",
            elderly(),
            order(text("tofacitinib"), vec![]),
            None,
            None,
        ),
        dose_case(
            "one unreadable instruction hides the whole dose",
            elderly(),
            order(
                text("tofacitinib"),
                vec![mg_dose(20.0, 1.0), dosage(1.0, Some("mL"))],
            ),
            None,
            None,
        ),
    ]);
}

#[test]
fn two_different_strengths_make_the_tablet_count_unreadable() {
    let mut o = tofa_order(
        text("Xeljanz"),
        every(dosage(2.0, Some("{tbl}")), Some(2.0), Some(1.0), Some("d")),
    );
    let s = |mg: f64| Strength {
        numerator: Quantity {
            value: mg,
            unit: Some("mg".into()),
        },
        denominator: None,
    };
    o.medication.strengths = vec![s(5.0), s(10.0)];
    assert_eq!(strength_mg(k(), &o.medication), None);
    assert!(finding(&assess(&elderly(), &o), Topic::DoseAdjustment).is_none());
}

// ---- blood counts ----

struct BloodCase {
    desc: &'static str,
    molecule: &'static str,
    /// Replaces the baseline's result for the same analyte.
    result: Observation,
    low: Option<F>,
    unreadable: bool,
    missing: bool,
}

fn lab(loinc_code: &str, value: f64, unit: &str) -> Observation {
    lab_at(loinc_code, value, unit, 5)
}

fn lab_at(loinc_code: &str, value: f64, unit: &str, ago: i64) -> Observation {
    quantity_obs(
        "lab",
        loinc(loinc_code),
        value,
        (!unit.is_empty()).then_some(unit),
        days_ago(ago),
    )
}

fn analyte_of(loinc_code: &str) -> &'static str {
    match loinc_code {
        "731-0" | "26474-7" => "Observation/lym",
        "751-8" | "26499-4" => "Observation/neu",
        "718-7" => "Observation/hb",
        _ => "Observation/plt",
    }
}

fn blood(
    desc: &'static str,
    molecule: &'static str,
    result: Observation,
    low: Option<F>,
) -> BloodCase {
    BloodCase {
        desc,
        molecule,
        result,
        low,
        unreadable: false,
        missing: false,
    }
}

fn check_blood_cases(cases: &[BloodCase]) {
    check_all(
        cases,
        |c| c.desc,
        |c| {
            let mut r = baseline();
            let loinc_code = c.result.code.codings[0].code.clone();
            r.observations
                .retain(|o| o.reference.as_str() != analyte_of(&loinc_code));
            r.observations.push(c.result.clone());
            let a = assess(&r, &order(text(c.molecule), vec![]));
            assert_well_formed(&a);
            let low = codes_on(&a, Topic::BloodCount);
            let expected: Vec<F> = c.low.into_iter().collect();
            if low != expected {
                return Err(format!("low: {low:?}"));
            }
            if let Some(f) = finding(&a, Topic::BloodCount) {
                if f.indicator != Indicator::Critical
                    || evidence_refs(&f.factors[0]) != ["Observation/lab"]
                {
                    return Err(format!("{f:?}"));
                }
            }
            let missing = finding(&a, Topic::MissingData);
            let unreadable = missing.is_some_and(|m| m.notes.iter().any(|n| matches!(n, Note::Unreadable(i) if i.iter().any(|i| i.contains("Observation/lab")))));
            let count_missing = factor(&a, F::BloodCountMissing).is_some();
            if (unreadable, count_missing) != (c.unreadable, c.missing) {
                return Err(format!(
                    "(unreadable, blood-count-missing) = {:?}",
                    (unreadable, count_missing)
                ));
            }
            Ok(())
        },
    );
}

#[test]
fn blood_count_thresholds_of_every_molecule_with_unit_conversions() {
    use F::{Anemia as A, Lymphopenia as L, Neutropenia as N, Thrombocytopenia as T};
    let unknown = |desc, molecule, result| BloodCase {
        desc,
        molecule,
        result,
        low: None,
        unreadable: true,
        missing: true,
    };
    check_blood_cases(&[
        // tofacitinib: lymphocytes 0.75, neutrophils 1.0, haemoglobin 9
        blood(
            "tofacitinib: lymphocytes 0.74 10*9/L is below 0.75",
            "tofacitinib",
            lab(LYMPHOCYTES, 0.74, "10*9/L"),
            Some(L),
        ),
        blood(
            "tofacitinib: lymphocytes 0.75 10*9/L is at, not below",
            "tofacitinib",
            lab(LYMPHOCYTES, 0.75, "10*9/L"),
            None,
        ),
        blood(
            "tofacitinib: 740 /mm3 is 0.74",
            "tofacitinib",
            lab(LYMPHOCYTES, 740.0, "/mm3"),
            Some(L),
        ),
        blood(
            "tofacitinib: 750 /mm3 is 0.75, not below",
            "tofacitinib",
            lab(LYMPHOCYTES, 750.0, "/mm3"),
            None,
        ),
        blood(
            "tofacitinib: 740 cells/uL is 0.74",
            "tofacitinib",
            lab(LYMPHOCYTES, 740.0, "cells/uL"),
            Some(L),
        ),
        blood(
            "tofacitinib: 0.74 10*3/uL is 0.74 10^9/L",
            "tofacitinib",
            lab(LYMPHOCYTES, 0.74, "10*3/uL"),
            Some(L),
        ),
        blood(
            "tofacitinib: 0.74 G/L (French giga per litre)",
            "tofacitinib",
            lab(LYMPHOCYTES, 0.74, "G/L"),
            Some(L),
        ),
        blood(
            "tofacitinib: 0.76 G/L is above",
            "tofacitinib",
            lab(LYMPHOCYTES, 0.76, "G/L"),
            None,
        ),
        blood(
            "tofacitinib: LOINC 26474-7 lymphocytes",
            "tofacitinib",
            lab("26474-7", 0.6, "10*9/L"),
            Some(L),
        ),
        blood(
            "tofacitinib: neutrophils 0.99 is below 1.0",
            "tofacitinib",
            lab(NEUTROPHILS, 0.99, "10*9/L"),
            Some(N),
        ),
        blood(
            "tofacitinib: neutrophils 1.0 is at",
            "tofacitinib",
            lab(NEUTROPHILS, 1.0, "10*9/L"),
            None,
        ),
        blood(
            "tofacitinib: 990 /uL neutrophils",
            "tofacitinib",
            lab(NEUTROPHILS, 990.0, "/uL"),
            Some(N),
        ),
        blood(
            "tofacitinib: LOINC 26499-4 neutrophils",
            "tofacitinib",
            lab("26499-4", 0.8, "10*3/uL"),
            Some(N),
        ),
        blood(
            "tofacitinib: haemoglobin 8.9 g/dL is below 9",
            "tofacitinib",
            lab(HAEMOGLOBIN, 8.9, "g/dL"),
            Some(A),
        ),
        blood(
            "tofacitinib: haemoglobin 9.0 g/dL is at",
            "tofacitinib",
            lab(HAEMOGLOBIN, 9.0, "g/dL"),
            None,
        ),
        blood(
            "tofacitinib: 89 g/L is 8.9 g/dL",
            "tofacitinib",
            lab(HAEMOGLOBIN, 89.0, "g/L"),
            Some(A),
        ),
        blood(
            "tofacitinib: 90 g/L is 9.0 g/dL, not below",
            "tofacitinib",
            lab(HAEMOGLOBIN, 90.0, "g/L"),
            None,
        ),
        blood(
            "tofacitinib: 5.5 mmol/L is 8.86 g/dL",
            "tofacitinib",
            lab(HAEMOGLOBIN, 5.5, "mmol/L"),
            Some(A),
        ),
        blood(
            "tofacitinib: 5.6 mmol/L is 9.02 g/dL",
            "tofacitinib",
            lab(HAEMOGLOBIN, 5.6, "mmol/L"),
            None,
        ),
        blood(
            "tofacitinib: no platelet threshold",
            "tofacitinib",
            lab(PLATELETS, 50.0, "10*9/L"),
            None,
        ),
        unknown(
            "an unknown haemoglobin unit is reported, not compared",
            "tofacitinib",
            lab(HAEMOGLOBIN, 8.0, "mg/dL"),
        ),
        unknown(
            "a lymphocyte count in % is reported, not compared",
            "tofacitinib",
            lab(LYMPHOCYTES, 10.0, "%"),
        ),
        unknown(
            "a count without a unit is reported, not compared",
            "tofacitinib",
            lab(NEUTROPHILS, 0.5, ""),
        ),
        // baricitinib, upadacitinib, filgotinib: 0.5, 1.0, 8
        blood(
            "baricitinib: lymphocytes 0.49",
            "baricitinib",
            lab(LYMPHOCYTES, 0.49, "10*9/L"),
            Some(L),
        ),
        blood(
            "baricitinib: lymphocytes 0.5 is at",
            "baricitinib",
            lab(LYMPHOCYTES, 0.5, "10*9/L"),
            None,
        ),
        blood(
            "baricitinib: lymphocytes 0.6 (below tofacitinib's 0.75 only)",
            "baricitinib",
            lab(LYMPHOCYTES, 0.6, "10*9/L"),
            None,
        ),
        blood(
            "baricitinib: neutrophils 0.9",
            "baricitinib",
            lab(NEUTROPHILS, 0.9, "10*9/L"),
            Some(N),
        ),
        blood(
            "baricitinib: haemoglobin 7.9",
            "baricitinib",
            lab(HAEMOGLOBIN, 7.9, "g/dL"),
            Some(A),
        ),
        blood(
            "baricitinib: haemoglobin 8.0 is at",
            "baricitinib",
            lab(HAEMOGLOBIN, 8.0, "g/dL"),
            None,
        ),
        blood(
            "baricitinib: haemoglobin 8.5 (below tofacitinib's 9 only)",
            "baricitinib",
            lab(HAEMOGLOBIN, 8.5, "g/dL"),
            None,
        ),
        blood(
            "upadacitinib: lymphocytes 490 /mm3",
            "upadacitinib",
            lab(LYMPHOCYTES, 490.0, "/mm3"),
            Some(L),
        ),
        blood(
            "upadacitinib: neutrophils 1.0 is at",
            "upadacitinib",
            lab(NEUTROPHILS, 1.0, "G/L"),
            None,
        ),
        blood(
            "upadacitinib: haemoglobin 79 g/L",
            "upadacitinib",
            lab(HAEMOGLOBIN, 79.0, "g/L"),
            Some(A),
        ),
        blood(
            "filgotinib: lymphocytes 0.45 10*3/uL",
            "filgotinib",
            lab(LYMPHOCYTES, 0.45, "10*3/uL"),
            Some(L),
        ),
        blood(
            "filgotinib: neutrophils 950 cells/uL",
            "filgotinib",
            lab(NEUTROPHILS, 950.0, "cells/uL"),
            Some(N),
        ),
        blood(
            "filgotinib: haemoglobin 4.9 mmol/L (7.9 g/dL)",
            "filgotinib",
            lab(HAEMOGLOBIN, 4.9, "mmol/L"),
            Some(A),
        ),
        // abrocitinib: 0.5, 1.2, 10, platelets 150
        blood(
            "abrocitinib: neutrophils 1.19",
            "abrocitinib",
            lab(NEUTROPHILS, 1.19, "10*9/L"),
            Some(N),
        ),
        blood(
            "abrocitinib: neutrophils 1.2 is at",
            "abrocitinib",
            lab(NEUTROPHILS, 1.2, "10*9/L"),
            None,
        ),
        blood(
            "abrocitinib: haemoglobin 9.9",
            "abrocitinib",
            lab(HAEMOGLOBIN, 9.9, "g/dL"),
            Some(A),
        ),
        blood(
            "abrocitinib: haemoglobin 10.0 is at",
            "abrocitinib",
            lab(HAEMOGLOBIN, 10.0, "g/dL"),
            None,
        ),
        blood(
            "abrocitinib: platelets 149",
            "abrocitinib",
            lab(PLATELETS, 149.0, "10*9/L"),
            Some(T),
        ),
        blood(
            "abrocitinib: platelets 150 is at",
            "abrocitinib",
            lab(PLATELETS, 150.0, "10*9/L"),
            None,
        ),
        blood(
            "abrocitinib: platelets 149000 /uL",
            "abrocitinib",
            lab(PLATELETS, 149_000.0, "/uL"),
            Some(T),
        ),
        blood(
            "abrocitinib: LOINC 26515-7 platelets 140 10*3/uL",
            "abrocitinib",
            lab("26515-7", 140.0, "10*3/uL"),
            Some(T),
        ),
        blood(
            "abrocitinib: lymphocytes 0.49",
            "abrocitinib",
            lab(LYMPHOCYTES, 0.49, "10*9/L"),
            Some(L),
        ),
        // ritlecitinib: lymphocytes 0.5, platelets 100
        blood(
            "ritlecitinib: platelets 99",
            "ritlecitinib",
            lab(PLATELETS, 99.0, "10*9/L"),
            Some(T),
        ),
        blood(
            "ritlecitinib: platelets 100 is at",
            "ritlecitinib",
            lab(PLATELETS, 100.0, "10*9/L"),
            None,
        ),
        blood(
            "ritlecitinib: platelets 140 (below abrocitinib's 150 only)",
            "ritlecitinib",
            lab(PLATELETS, 140.0, "10*9/L"),
            None,
        ),
        blood(
            "ritlecitinib: lymphocytes 0.49",
            "ritlecitinib",
            lab(LYMPHOCYTES, 0.49, "10*9/L"),
            Some(L),
        ),
        blood(
            "ritlecitinib: no haemoglobin threshold",
            "ritlecitinib",
            lab(HAEMOGLOBIN, 7.0, "g/dL"),
            None,
        ),
    ]);
}

#[test]
fn blood_counts_use_the_latest_final_result_within_90_days() {
    use F::Lymphopenia as L;
    let mut prelim = lab_at(LYMPHOCYTES, 0.3, "10*9/L", 2);
    prelim.status = Some("preliminary".into());
    let cases = [
        blood(
            "a result 90 days old still counts",
            "baricitinib",
            lab_at(LYMPHOCYTES, 0.4, "10*9/L", 90),
            Some(L),
        ),
        BloodCase {
            desc: "a result 91 days old does not: count missing",
            missing: true,
            ..blood(
                "",
                "baricitinib",
                lab_at(LYMPHOCYTES, 0.4, "10*9/L", 91),
                None,
            )
        },
        BloodCase {
            desc: "a preliminary result is ignored: count missing",
            missing: true,
            ..blood("", "baricitinib", prelim, None)
        },
        blood(
            "a result dated today counts",
            "baricitinib",
            lab_at(LYMPHOCYTES, 0.4, "10*9/L", 0),
            Some(L),
        ),
    ];
    check_blood_cases(&cases);

    // The latest result decides, whichever comes first in the record.
    for (old, new, low) in [(0.4, 1.5, false), (1.5, 0.4, true)] {
        let mut r = baseline();
        r.observations
            .retain(|o| o.reference.as_str() != "Observation/lym");
        let mut a = quantity_obs("old", loinc(LYMPHOCYTES), old, Some("10*9/L"), days_ago(40));
        let b = quantity_obs("new", loinc(LYMPHOCYTES), new, Some("10*9/L"), days_ago(4));
        r.observations.push(b);
        r.observations.push(a.clone());
        a.reference = reference("Observation/old");
        let got = assess(&r, &order(text("baricitinib"), vec![]));
        assert_eq!(factor(&got, L).is_some(), low, "old {old}, new {new}");
        if low {
            assert_eq!(evidence_refs(factor(&got, L).unwrap()), ["Observation/new"]);
        }
    }
}

#[test]
fn blood_count_missing_names_the_analytes_without_a_recent_result() {
    let mut r = baseline();
    r.observations
        .retain(|o| !matches!(o.reference.as_str(), "Observation/hb" | "Observation/plt"));
    // Abrocitinib needs all four analytes; tofacitinib has no platelet threshold.
    let a = assess(&r, &order(text("abrocitinib"), vec![]));
    let f = factor(&a, F::BloodCountMissing).expect("missing");
    assert_eq!(f.analytes, [Analyte::Haemoglobin, Analyte::Platelets]);
    let a = assess(&r, &order(text("tofacitinib"), vec![]));
    assert_eq!(
        factor(&a, F::BloodCountMissing).unwrap().analytes,
        [Analyte::Haemoglobin]
    );
    let mut r = baseline();
    r.observations
        .retain(|o| o.reference.as_str() != "Observation/hb");
    let a = assess(&r, &order(text("ritlecitinib"), vec![]));
    assert!(
        factor(&a, F::BloodCountMissing).is_none(),
        "ritlecitinib has no haemoglobin threshold"
    );
}
