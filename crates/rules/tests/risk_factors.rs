//! Rules-level clinical suite, part 1: every risk-factor and missing-data code of the contract,
//! from each code system, under the status rules of `shared/clinical-rules.md` section 2.
//! Each table row is one behaviour; a failing row is reported by its description.

mod common;
use common::*;

/// One Condition added to the baseline patient, and whether `factor` must then be present.
struct ConditionCase {
    desc: &'static str,
    code: Concept,
    clinical: Option<&'static str>,
    verification: Option<&'static str>,
    factor: F,
    present: bool,
}

fn yes(desc: &'static str, code: Concept, factor: F) -> ConditionCase {
    ConditionCase {
        desc,
        code,
        clinical: Some("active"),
        verification: Some("confirmed"),
        factor,
        present: true,
    }
}

fn no(desc: &'static str, code: Concept, factor: F) -> ConditionCase {
    ConditionCase {
        present: false,
        ..yes(desc, code, factor)
    }
}

fn status(
    mut c: ConditionCase,
    clinical: Option<&'static str>,
    verification: Option<&'static str>,
) -> ConditionCase {
    c.clinical = clinical;
    c.verification = verification;
    c
}

fn check_condition_cases(cases: &[ConditionCase]) {
    check_all(
        cases,
        |c| c.desc,
        |c| {
            let cond = with_status(condition("c1", c.code.clone()), c.clinical, c.verification);
            let a = assess(&baseline_with(vec![cond]), &tofacitinib_5_bid());
            assert_well_formed(&a);
            match (factor(&a, c.factor), c.present) {
                (Some(f), true) if evidence_refs(f) == ["Condition/c1"] && !f.inferred => Ok(()),
                (Some(f), true) => Err(format!("wrong evidence or inferred: {f:?}")),
                (None, false) => Ok(()),
                (None, true) => Err(format!("{} missing: {a:#?}", c.factor)),
                (Some(f), false) => Err(format!("{} must not count: {f:?}", c.factor)),
            }
        },
    );
}

#[test]
fn smoking_conditions_from_icd10_and_snomed() {
    use F::{SmokerCurrent as Cur, SmokerFormer as Former};
    check_condition_cases(&[
        yes(
            "WHO F17.2 nicotine dependence is current smoking",
            icd("F17.2"),
            Cur,
        ),
        yes(
            "CIM-10 F172 without the dot is current smoking",
            icd("F172"),
            Cur,
        ),
        yes(
            "CM F17.210 cigarettes, uncomplicated is current",
            icd("F17.210"),
            Cur,
        ),
        yes(
            "CM F17.200 unspecified product, uncomplicated is current",
            icd("F17.200"),
            Cur,
        ),
        yes("CM F17.220 chewing tobacco is current", icd("F17.220"), Cur),
        yes("Z72.0 tobacco use is current smoking", icd("Z72.0"), Cur),
        yes(
            "CIM-10 Z720 without the dot is current smoking",
            icd("Z720"),
            Cur,
        ),
        yes("SNOMED 77176002 smoker", sct("77176002"), Cur),
        yes(
            "SNOMED 449868002 smokes tobacco daily",
            sct("449868002"),
            Cur,
        ),
        yes("SNOMED 56294008 nicotine dependence", sct("56294008"), Cur),
        no(
            "CM F17.211 cigarettes, in remission is not current",
            icd("F17.211"),
            Cur,
        ),
        yes(
            "CM F17.211 cigarettes, in remission is former",
            icd("F17.211"),
            Former,
        ),
        no(
            "CM F17.201 in remission is not current",
            icd("F17.201"),
            Cur,
        ),
        yes("CM F17.201 in remission is former", icd("F17.201"), Former),
        no(
            "WHO F17.20 dependence, currently abstinent is not current",
            icd("F17.20"),
            Cur,
        ),
        yes(
            "WHO F17.20 dependence, currently abstinent is former",
            icd("F17.20"),
            Former,
        ),
        no("Z72.1 alcohol use is not smoking", icd("Z72.1"), Cur),
        no("F10.2 alcohol dependence is not smoking", icd("F10.2"), Cur),
        status(
            no("a resolved F17.2 is not current smoking", icd("F17.2"), Cur),
            Some("resolved"),
            None,
        ),
        status(
            yes(
                "a resolved F17.2 means a former smoker",
                icd("F17.2"),
                Former,
            ),
            Some("resolved"),
            None,
        ),
        status(
            yes(
                "a smoker concept in remission means a former smoker",
                sct("77176002"),
                Former,
            ),
            Some("remission"),
            None,
        ),
        status(
            no("a refuted F17.2 is neither current", icd("F17.2"), Cur),
            Some("active"),
            Some("refuted"),
        ),
        status(
            no("... nor former", icd("F17.2"), Former),
            Some("resolved"),
            Some("refuted"),
        ),
        yes(
            "CM Z87.891 history of nicotine dependence is former",
            icd("Z87.891"),
            Former,
        ),
        yes("Z87891 without the dot is former", icd("Z87891"), Former),
        status(
            yes(
                "a resolved Z87.891 still counts (a history)",
                icd("Z87.891"),
                Former,
            ),
            Some("resolved"),
            None,
        ),
        yes("SNOMED 8517006 ex-smoker is former", sct("8517006"), Former),
        no(
            "SNOMED 8517006 ex-smoker is not current",
            sct("8517006"),
            Cur,
        ),
        status(
            no(
                "an entered-in-error ex-smoker never counts",
                sct("8517006"),
                Former,
            ),
            None,
            Some("entered-in-error"),
        ),
    ]);
}

#[test]
fn cardiovascular_conditions_from_icd10_and_snomed() {
    use F::{
        AtheroscleroticCvDisease as Ascvd, Diabetes, Dyslipidemia, HeartFailure, Hypertension,
    };
    check_condition_cases(&[
        yes("WHO I21.9 acute myocardial infarction", icd("I21.9"), Ascvd),
        yes("WHO I20 angina (range start)", icd("I20.0"), Ascvd),
        yes(
            "CM I25.10 coronary atherosclerosis (range end)",
            icd("I25.10"),
            Ascvd,
        ),
        yes("CIM-10 I252 old MI without the dot", icd("I252"), Ascvd),
        yes("I63.9 cerebral infarction", icd("I63.9"), Ascvd),
        yes("I64 stroke not specified", icd("I64"), Ascvd),
        yes("G45.9 transient ischaemic attack", icd("G45.9"), Ascvd),
        yes("I70.2 atherosclerosis of the limbs", icd("I70.2"), Ascvd),
        yes("I73.9 peripheral vascular disease", icd("I73.9"), Ascvd),
        yes(
            "SNOMED 22298006 myocardial infarction",
            sct("22298006"),
            Ascvd,
        ),
        yes(
            "SNOMED 414545008 ischaemic heart disease",
            sct("414545008"),
            Ascvd,
        ),
        yes(
            "SNOMED 53741008 coronary arteriosclerosis",
            sct("53741008"),
            Ascvd,
        ),
        yes("SNOMED 194828000 angina", sct("194828000"), Ascvd),
        yes("SNOMED 230690007 stroke", sct("230690007"), Ascvd),
        yes("SNOMED 266257000 TIA", sct("266257000"), Ascvd),
        yes(
            "SNOMED 840580004 peripheral arterial disease",
            sct("840580004"),
            Ascvd,
        ),
        status(
            yes("a resolved MI counts (a history)", sct("22298006"), Ascvd),
            Some("resolved"),
            None,
        ),
        status(
            yes("an inactive stroke counts (a history)", icd("I63.9"), Ascvd),
            Some("inactive"),
            None,
        ),
        status(
            no("a refuted MI never counts", icd("I21.9"), Ascvd),
            Some("resolved"),
            Some("refuted"),
        ),
        no(
            "I26 pulmonary embolism is not atherosclerotic",
            icd("I26.9"),
            Ascvd,
        ),
        no(
            "I73.0 Raynaud syndrome is not atherosclerotic",
            icd("I73.0"),
            Ascvd,
        ),
        no(
            "I61 intracerebral haemorrhage is not atherosclerotic",
            icd("I61.9"),
            Ascvd,
        ),
        no(
            "G45.4 transient global amnesia is not a TIA",
            icd("G45.4"),
            Ascvd,
        ),
        yes("WHO I10 essential hypertension", icd("I10"), Hypertension),
        yes(
            "I11.9 hypertensive heart disease",
            icd("I11.9"),
            Hypertension,
        ),
        yes(
            "I15.0 renovascular hypertension (range end)",
            icd("I15.0"),
            Hypertension,
        ),
        yes("CM I16.0 hypertensive urgency", icd("I16.0"), Hypertension),
        yes(
            "SNOMED 38341003 hypertensive disorder",
            sct("38341003"),
            Hypertension,
        ),
        yes(
            "SNOMED 59621000 essential hypertension",
            sct("59621000"),
            Hypertension,
        ),
        status(
            yes(
                "clinicalStatus absent counts as active",
                icd("I10"),
                Hypertension,
            ),
            None,
            None,
        ),
        status(
            yes("clinicalStatus recurrence counts", icd("I10"), Hypertension),
            Some("recurrence"),
            None,
        ),
        status(
            yes("clinicalStatus relapse counts", icd("I10"), Hypertension),
            Some("relapse"),
            None,
        ),
        status(
            no(
                "a resolved hypertension does not count (a state)",
                icd("I10"),
                Hypertension,
            ),
            Some("resolved"),
            None,
        ),
        status(
            no(
                "an inactive hypertension does not count",
                icd("I10"),
                Hypertension,
            ),
            Some("inactive"),
            None,
        ),
        status(
            no(
                "a hypertension in remission does not count",
                sct("38341003"),
                Hypertension,
            ),
            Some("remission"),
            None,
        ),
        status(
            no(
                "a refuted hypertension never counts",
                icd("I10"),
                Hypertension,
            ),
            Some("active"),
            Some("refuted"),
        ),
        status(
            no(
                "an entered-in-error hypertension never counts",
                icd("I10"),
                Hypertension,
            ),
            Some("active"),
            Some("entered-in-error"),
        ),
        no(
            "I27.0 pulmonary hypertension is not arterial hypertension",
            icd("I27.0"),
            Hypertension,
        ),
        no(
            "O13 gestational hypertension is not listed",
            icd("O13"),
            Hypertension,
        ),
        yes("WHO E11.9 type 2 diabetes", icd("E11.9"), Diabetes),
        yes(
            "WHO E10 type 1 diabetes (range start)",
            icd("E10.9"),
            Diabetes,
        ),
        yes(
            "WHO E14 unspecified diabetes (range end)",
            icd("E14.9"),
            Diabetes,
        ),
        yes(
            "CM E08.9 diabetes due to an underlying condition",
            icd("E08.9"),
            Diabetes,
        ),
        yes(
            "CM E11.65 type 2 diabetes with hyperglycaemia",
            icd("E11.65"),
            Diabetes,
        ),
        yes("CIM-10 E119 without the dot", icd("E119"), Diabetes),
        yes(
            "SNOMED 73211009 diabetes mellitus",
            sct("73211009"),
            Diabetes,
        ),
        yes("SNOMED 44054006 type 2 diabetes", sct("44054006"), Diabetes),
        yes("SNOMED 46635009 type 1 diabetes", sct("46635009"), Diabetes),
        no(
            "R73.03 prediabetes is not diabetes",
            icd("R73.03"),
            Diabetes,
        ),
        no(
            "E16.2 hypoglycaemia is not diabetes",
            icd("E16.2"),
            Diabetes,
        ),
        no(
            "O24.4 gestational diabetes is not listed",
            icd("O24.4"),
            Diabetes,
        ),
        status(
            no("a resolved diabetes does not count", icd("E11.9"), Diabetes),
            Some("resolved"),
            None,
        ),
        yes("E78.5 hyperlipidaemia", icd("E78.5"), Dyslipidemia),
        yes("CIM-10 E780 without the dot", icd("E780"), Dyslipidemia),
        yes(
            "CM E78.00 pure hypercholesterolaemia",
            icd("E78.00"),
            Dyslipidemia,
        ),
        yes(
            "SNOMED 370992007 dyslipidaemia",
            sct("370992007"),
            Dyslipidemia,
        ),
        yes(
            "SNOMED 55822004 hyperlipidaemia",
            sct("55822004"),
            Dyslipidemia,
        ),
        yes(
            "SNOMED 13644009 hypercholesterolaemia",
            sct("13644009"),
            Dyslipidemia,
        ),
        no(
            "E79.0 hyperuricaemia is not dyslipidaemia",
            icd("E79.0"),
            Dyslipidemia,
        ),
        status(
            no(
                "an inactive dyslipidaemia does not count",
                icd("E78.5"),
                Dyslipidemia,
            ),
            Some("inactive"),
            None,
        ),
        yes("I50.9 heart failure", icd("I50.9"), HeartFailure),
        yes(
            "CM I50.23 acute on chronic systolic heart failure",
            icd("I50.23"),
            HeartFailure,
        ),
        yes("CIM-10 I500 without the dot", icd("I500"), HeartFailure),
        yes(
            "I11.0 hypertensive heart disease with heart failure",
            icd("I11.0"),
            HeartFailure,
        ),
        yes(
            "SNOMED 84114007 heart failure",
            sct("84114007"),
            HeartFailure,
        ),
        no(
            "I51.7 cardiomegaly is not heart failure",
            icd("I51.7"),
            HeartFailure,
        ),
        status(
            no(
                "a resolved heart failure does not count (a state)",
                icd("I50.9"),
                HeartFailure,
            ),
            Some("resolved"),
            None,
        ),
    ]);
}

#[test]
fn malignancy_and_the_non_melanoma_skin_cancer_exception() {
    use F::Malignancy as M;
    check_condition_cases(&[
        yes("WHO C50.9 breast cancer", icd("C50.9"), M),
        yes("C00 (range start)", icd("C00.0"), M),
        yes("C97 (range end)", icd("C97"), M),
        yes("CM C50.912 breast cancer, 6 characters", icd("C50.912"), M),
        yes("CIM-10 C509 without the dot", icd("C509"), M),
        yes("C43.9 melanoma counts", icd("C43.9"), M),
        yes("CM C4A.9 Merkel cell carcinoma counts", icd("C4A.9"), M),
        yes("CM C91.10 chronic lymphocytic leukaemia", icd("C91.10"), M),
        yes("D05.1 carcinoma in situ of the breast", icd("D05.1"), M),
        yes("D03.9 melanoma in situ counts", icd("D03.9"), M),
        yes("Z85.3 history of breast cancer", icd("Z85.3"), M),
        yes("CM Z85.820 history of melanoma counts", icd("Z85.820"), M),
        yes("Z85820 without the dot counts", icd("Z85820"), M),
        no(
            "C44.91 basal cell carcinoma of skin does not count",
            icd("C44.91"),
            M,
        ),
        no("CIM-10 C443 without the dot does not count", icd("C443"), M),
        no(
            "D04.9 carcinoma in situ of skin does not count",
            icd("D04.9"),
            M,
        ),
        no(
            "CM Z85.828 history of other skin cancer does not count",
            icd("Z85.828"),
            M,
        ),
        no("D36.9 benign neoplasm is not malignant", icd("D36.9"), M),
        no(
            "D48.5 neoplasm of uncertain behaviour of skin is not listed",
            icd("D48.5"),
            M,
        ),
        yes(
            "SNOMED 363346000 malignant neoplastic disease",
            sct("363346000"),
            M,
        ),
        yes("SNOMED 254837009 breast cancer", sct("254837009"), M),
        yes("SNOMED 372244006 malignant melanoma", sct("372244006"), M),
        no(
            "SNOMED 1338007 basal cell carcinoma does not count",
            sct("1338007"),
            M,
        ),
        no(
            "SNOMED 254701007 BCC of skin does not count",
            sct("254701007"),
            M,
        ),
        status(
            yes(
                "a resolved breast cancer counts (a history)",
                icd("C50.9"),
                M,
            ),
            Some("resolved"),
            None,
        ),
        status(
            yes("a breast cancer in remission counts", icd("C50.9"), M),
            Some("remission"),
            None,
        ),
        status(
            no("a refuted cancer never counts", icd("C50.9"), M),
            Some("active"),
            Some("refuted"),
        ),
    ]);
}

#[test]
fn vte_thrombophilia_obesity_and_connective_tissue_conditions() {
    use F::{ConnectiveTissueDisease as Ctd, Obesity, Thrombophilia, VteHistory as Vte};
    check_condition_cases(&[
        yes("I26.9 pulmonary embolism", icd("I26.9"), Vte),
        yes("I80.2 deep phlebitis of the leg", icd("I80.2"), Vte),
        yes(
            "I82.4 deep vein thrombosis (CM I82.40x)",
            icd("I82.409"),
            Vte,
        ),
        yes("CM Z86.718 history of other VTE", icd("Z86.718"), Vte),
        yes("CIM-10 I269 without the dot", icd("I269"), Vte),
        yes(
            "SNOMED 128053003 deep venous thrombosis",
            sct("128053003"),
            Vte,
        ),
        yes("SNOMED 59282003 pulmonary embolism", sct("59282003"), Vte),
        status(
            yes("a resolved DVT counts (a history)", sct("128053003"), Vte),
            Some("resolved"),
            None,
        ),
        status(
            no("a refuted PE never counts", icd("I26.9"), Vte),
            Some("resolved"),
            Some("refuted"),
        ),
        no("I83.9 varicose veins are not VTE", icd("I83.9"), Vte),
        no("I74.3 arterial embolism is not VTE", icd("I74.3"), Vte),
        yes("D68.5 primary thrombophilia", icd("D68.5"), Thrombophilia),
        yes("CM D68.51 factor V Leiden", icd("D68.51"), Thrombophilia),
        yes("D68.6 other thrombophilia", icd("D68.6"), Thrombophilia),
        yes("CIM-10 D685 without the dot", icd("D685"), Thrombophilia),
        yes(
            "SNOMED 234467004 thrombophilia",
            sct("234467004"),
            Thrombophilia,
        ),
        no(
            "D68.0 von Willebrand disease is a bleeding disorder",
            icd("D68.0"),
            Thrombophilia,
        ),
        no(
            "D69.6 thrombocytopenia is not thrombophilia",
            icd("D69.6"),
            Thrombophilia,
        ),
        yes("E66.9 obesity", icd("E66.9"), Obesity),
        yes("CM E66.01 morbid obesity", icd("E66.01"), Obesity),
        yes("CM E66.811 obesity class 1", icd("E66.811"), Obesity),
        yes(
            "CIM-10 E6600 without the dot (BMI extension)",
            icd("E6600"),
            Obesity,
        ),
        yes("SNOMED 414916001 obesity", sct("414916001"), Obesity),
        no("CM E66.3 overweight is not obesity", icd("E66.3"), Obesity),
        no(
            "CIM-10 E663 overweight without the dot is not obesity",
            icd("E663"),
            Obesity,
        ),
        status(
            no(
                "a resolved obesity does not count (a state)",
                icd("E66.9"),
                Obesity,
            ),
            Some("resolved"),
            None,
        ),
        yes(
            "M32.1 systemic lupus with organ involvement",
            icd("M32.1"),
            Ctd,
        ),
        yes("CIM-10 M321 without the dot", icd("M321"), Ctd),
        yes("CM M32.14 lupus glomerulonephritis", icd("M32.14"), Ctd),
        yes("M33.2 polymyositis", icd("M33.2"), Ctd),
        yes("M34.0 progressive systemic sclerosis", icd("M34.0"), Ctd),
        yes("M35.0 Sjögren syndrome", icd("M35.0"), Ctd),
        yes(
            "M35.1 mixed connective tissue disease (overlap)",
            icd("M35.1"),
            Ctd,
        ),
        yes(
            "M35.8 other systemic involvement of connective tissue",
            icd("M35.8"),
            Ctd,
        ),
        yes("CM M35.89", icd("M35.89"), Ctd),
        yes(
            "M35.9 systemic involvement of connective tissue, unspecified",
            icd("M35.9"),
            Ctd,
        ),
        yes("L93.0 discoid lupus", icd("L93.0"), Ctd),
        yes("SNOMED 55464009 SLE", sct("55464009"), Ctd),
        yes("SNOMED 89155008 systemic sclerosis", sct("89155008"), Ctd),
        yes("SNOMED 396230008 dermatomyositis", sct("396230008"), Ctd),
        yes("SNOMED 31384009 polymyositis", sct("31384009"), Ctd),
        yes("SNOMED 83901003 Sjögren", sct("83901003"), Ctd),
        status(
            yes("an inactive lupus counts (a history)", icd("M32.1"), Ctd),
            Some("inactive"),
            None,
        ),
        status(
            no("a refuted lupus never counts", icd("M32.1"), Ctd),
            Some("active"),
            Some("refuted"),
        ),
        no(
            "M35.3 polymyalgia rheumatica is not a CTD",
            icd("M35.3"),
            Ctd,
        ),
        no(
            "CM M35.81 multisystem inflammatory syndrome is not a CTD",
            icd("M35.81"),
            Ctd,
        ),
        no("M06.9 rheumatoid arthritis is not a CTD", icd("M06.9"), Ctd),
        no(
            "L94.0 morphoea is localised, not systemic",
            icd("L94.0"),
            Ctd,
        ),
    ]);
}

#[test]
fn non_melanoma_skin_cancer_reinforces_skin_advice_on_the_restriction_card() {
    let r = {
        let mut r = elderly();
        r.conditions = vec![condition("bcc", icd("C44.3"))];
        r
    };
    let a = assess(&r, &tofacitinib_5_bid());
    let card = finding(&a, Topic::AnsmRestriction).expect("age gives a restriction card");
    assert_eq!(codes_on(&a, Topic::AnsmRestriction), [F::Age65Plus]);
    assert!(
        card.notes
            .iter()
            .any(|n| matches!(n, Note::SkinCancer(e) if e.reference.as_str() == "Condition/bcc")),
        "{card:#?}"
    );
    // Melanoma history counts as malignancy and is no skin note.
    let mut r2 = elderly();
    r2.conditions = vec![condition("mel", icd("Z85.820"))];
    let a2 = assess(&r2, &tofacitinib_5_bid());
    let card2 = finding(&a2, Topic::AnsmRestriction).unwrap();
    assert!(factor(&a2, F::Malignancy).is_some());
    assert!(!card2.notes.iter().any(|n| matches!(n, Note::SkinCancer(_))));
}

// ---- age ----

#[test]
fn age_65_plus_from_full_and_partial_birth_dates() {
    struct Case {
        desc: &'static str,
        birth: &'static str,
        today: &'static str,
        present: bool,
    }
    let cases = [
        Case {
            desc: "born 1956: 70",
            birth: "1956-03-10",
            today: "2026-12-01",
            present: true,
        },
        Case {
            desc: "65th birthday today counts",
            birth: "1961-12-01",
            today: "2026-12-01",
            present: true,
        },
        Case {
            desc: "65th birthday tomorrow: still 64",
            birth: "1961-12-02",
            today: "2026-12-01",
            present: false,
        },
        Case {
            desc: "year only 1961: may already be 65",
            birth: "1961",
            today: "2026-12-01",
            present: true,
        },
        Case {
            desc: "year only 1961 on 1 January 2026: may be 65 that very day",
            birth: "1961",
            today: "2026-01-01",
            present: true,
        },
        Case {
            desc: "year only 1961 on 31 December 2025: at most 64",
            birth: "1961",
            today: "2025-12-31",
            present: false,
        },
        Case {
            desc: "year only 1962: at most 64",
            birth: "1962",
            today: "2026-12-01",
            present: false,
        },
        Case {
            desc: "month 1961-12 on 1 December: may be 65",
            birth: "1961-12",
            today: "2026-12-01",
            present: true,
        },
        Case {
            desc: "month 1961-12 on 30 November: at most 64",
            birth: "1961-12",
            today: "2026-11-30",
            present: false,
        },
        Case {
            desc: "leap-day birth, 28 February of a common year: 64",
            birth: "1960-02-29",
            today: "2025-02-28",
            present: false,
        },
        Case {
            desc: "leap-day birth, 1 March of a common year: 65",
            birth: "1960-02-29",
            today: "2025-03-01",
            present: true,
        },
        Case {
            desc: "born 28 February: 65 on 28 February of a leap year",
            birth: "1959-02-28",
            today: "2024-02-28",
            present: true,
        },
        Case {
            desc: "a dateTime birth date is read by its date",
            birth: "1961-12-01T23:00:00+01:00",
            today: "2026-12-01",
            present: true,
        },
    ];
    check_all(
        &cases,
        |c| c.desc,
        |c| {
            let mut r = baseline();
            r.patient = Some(patient(Some(c.birth)));
            let a = assess_at(&r, &tofacitinib_5_bid(), date(c.today));
            let f = factor(&a, F::Age65Plus);
            if f.is_some() != c.present {
                return Err(format!("age-65-plus present: {}", f.is_some()));
            }
            if let Some(f) = f {
                if evidence_refs(f) != ["Patient/p1"]
                    || codes_on(&a, Topic::AnsmRestriction) != [F::Age65Plus]
                {
                    return Err(format!("{f:?}"));
                }
            }
            if factor(&a, F::BirthDateUnknown).is_some() {
                return Err("a birth date was given".into());
            }
            Ok(())
        },
    );
}

// ---- smoking from Observations ----

#[test]
fn smoking_status_from_the_latest_final_observation() {
    struct Case {
        desc: &'static str,
        observations: Vec<Observation>,
        current: bool,
        former: bool,
        unknown: bool,
    }
    let prelim = {
        let mut o = smoking_obs("s2", "449868002", days_ago(1));
        o.status = Some("preliminary".into());
        o
    };
    let history_code = {
        let mut o = smoking_obs("s3", "449868002", days_ago(5));
        o.code = loinc("11367-0");
        o
    };
    let cases = vec![
        Case {
            desc: "449868002 daily smoker is current",
            observations: vec![smoking_obs("s1", "449868002", days_ago(5))],
            current: true,
            former: false,
            unknown: false,
        },
        Case {
            desc: "77176002 smoker is current",
            observations: vec![smoking_obs("s1", "77176002", days_ago(5))],
            current: true,
            former: false,
            unknown: false,
        },
        Case {
            desc: "428041000124106 occasional smoker is current",
            observations: vec![smoking_obs("s1", "428041000124106", days_ago(5))],
            current: true,
            former: false,
            unknown: false,
        },
        Case {
            desc: "428071000124103 heavy smoker is current",
            observations: vec![smoking_obs("s1", "428071000124103", days_ago(5))],
            current: true,
            former: false,
            unknown: false,
        },
        Case {
            desc: "428061000124105 light smoker is current",
            observations: vec![smoking_obs("s1", "428061000124105", days_ago(5))],
            current: true,
            former: false,
            unknown: false,
        },
        Case {
            desc: "LOINC 11367-0 is read as a smoking status too",
            observations: vec![history_code],
            current: true,
            former: false,
            unknown: false,
        },
        Case {
            desc: "8517006 ex-smoker is former",
            observations: vec![smoking_obs("s1", "8517006", days_ago(5))],
            current: false,
            former: true,
            unknown: false,
        },
        Case {
            desc: "266919005 never smoker is known and no factor",
            observations: vec![smoking_obs("s1", "266919005", days_ago(5))],
            current: false,
            former: false,
            unknown: false,
        },
        Case {
            desc: "266927001 consumption unknown leaves the status unknown",
            observations: vec![smoking_obs("s1", "266927001", days_ago(5))],
            current: false,
            former: false,
            unknown: true,
        },
        Case {
            desc: "no smoking Observation: status unknown",
            observations: vec![],
            current: false,
            former: false,
            unknown: true,
        },
        Case {
            desc: "the latest decides: never smoker after a smoker",
            observations: vec![
                smoking_obs("old", "449868002", days_ago(400)),
                smoking_obs("new", "266919005", days_ago(5)),
            ],
            current: false,
            former: false,
            unknown: false,
        },
        Case {
            desc: "the latest decides: ex-smoker after a smoker",
            observations: vec![
                smoking_obs("old", "449868002", days_ago(400)),
                smoking_obs("new", "8517006", days_ago(5)),
            ],
            current: false,
            former: true,
            unknown: false,
        },
        Case {
            desc: "a preliminary result is ignored",
            observations: vec![smoking_obs("s1", "266919005", days_ago(30)), prelim],
            current: false,
            former: false,
            unknown: false,
        },
    ];
    check_all(
        &cases,
        |c| c.desc,
        |c| {
            let mut r = baseline();
            r.observations = normal_counts();
            r.observations.extend(c.observations.iter().cloned());
            let a = assess(&r, &tofacitinib_5_bid());
            assert_well_formed(&a);
            let got = (
                factor(&a, F::SmokerCurrent).is_some(),
                factor(&a, F::SmokerFormer).is_some(),
                factor(&a, F::SmokingStatusUnknown).is_some(),
            );
            (got == (c.current, c.former, c.unknown))
                .then_some(())
                .ok_or(format!("(current, former, unknown) = {got:?}"))
        },
    );
}

#[test]
fn current_smoking_supersedes_a_former_smoker_record() {
    let mut r = baseline_with(vec![condition("hist", icd("Z87.891"))]);
    r.observations = normal_counts();
    r.observations
        .push(smoking_obs("s1", "449868002", days_ago(3)));
    let a = assess(&r, &tofacitinib_5_bid());
    assert_eq!(codes_on(&a, Topic::AnsmRestriction), [F::SmokerCurrent]);
}

#[test]
fn a_former_smoker_card_shows_pack_years_when_recorded_and_asks_for_judgement() {
    let former = |with_packs: bool| {
        let mut r = baseline();
        r.observations = normal_counts();
        r.observations
            .push(smoking_obs("s1", "8517006", days_ago(5)));
        if with_packs {
            r.observations.push(quantity_obs(
                "packs",
                sct("401201003"),
                30.0,
                Some("{pack-years}"),
                days_ago(5),
            ));
        }
        assess(&r, &tofacitinib_5_bid())
    };
    let a = former(true);
    let card = finding(&a, Topic::AnsmRestriction).unwrap();
    assert_eq!(codes_on(&a, Topic::AnsmRestriction), [F::SmokerFormer]);
    assert!(card.notes.iter().any(|n| matches!(n,
        Note::FormerSmoker { pack_years: Some((v, r)) } if *v == 30.0 && r.as_str() == "Observation/packs")), "{card:#?}");
    let a = former(false);
    let card = finding(&a, Topic::AnsmRestriction).unwrap();
    assert!(
        card.notes
            .contains(&Note::FormerSmoker { pack_years: None }),
        "{card:#?}"
    );
}

// ---- BMI ----

#[test]
fn obesity_from_the_latest_bmi() {
    struct Case {
        desc: &'static str,
        bmis: Vec<Observation>,
        present: bool,
        unreadable: bool,
    }
    let odd_unit = quantity_obs("b1", loinc("39156-5"), 32.0, Some("lb/in2"), days_ago(3));
    let prelim = {
        let mut o = bmi_obs("b2", 35.0, days_ago(1));
        o.status = Some("preliminary".into());
        o
    };
    let no_unit = quantity_obs("b1", loinc("39156-5"), 31.0, None, days_ago(3));
    let cases = vec![
        Case {
            desc: "BMI 30.0 is obese",
            bmis: vec![bmi_obs("b1", 30.0, days_ago(3))],
            present: true,
            unreadable: false,
        },
        Case {
            desc: "BMI 29.9 is not",
            bmis: vec![bmi_obs("b1", 29.9, days_ago(3))],
            present: false,
            unreadable: false,
        },
        Case {
            desc: "the latest BMI decides (31.0 then 29.9)",
            bmis: vec![
                bmi_obs("old", 31.0, days_ago(300)),
                bmi_obs("new", 29.9, days_ago(3)),
            ],
            present: false,
            unreadable: false,
        },
        Case {
            desc: "the latest BMI decides (29.9 then 31.0)",
            bmis: vec![
                bmi_obs("old", 29.9, days_ago(300)),
                bmi_obs("new", 31.0, days_ago(3)),
            ],
            present: true,
            unreadable: false,
        },
        Case {
            desc: "a BMI without a unit is read as kg/m2",
            bmis: vec![no_unit],
            present: true,
            unreadable: false,
        },
        Case {
            desc: "a BMI in an unknown unit is reported, not compared",
            bmis: vec![odd_unit],
            present: false,
            unreadable: true,
        },
        Case {
            desc: "a preliminary BMI is ignored",
            bmis: vec![bmi_obs("b1", 25.0, days_ago(30)), prelim],
            present: false,
            unreadable: false,
        },
    ];
    check_all(
        &cases,
        |c| c.desc,
        |c| {
            let mut r = baseline();
            r.observations.extend(c.bmis.iter().cloned());
            let a = assess(&r, &tofacitinib_5_bid());
            assert_well_formed(&a);
            let f = factor(&a, F::Obesity);
            if f.is_some() != c.present {
                return Err(format!("obesity present: {}", f.is_some()));
            }
            if c.present && codes_on(&a, Topic::AnsmRestriction) != [F::Obesity] {
                return Err("obesity belongs on the restriction card".into());
            }
            let unreadable = finding(&a, Topic::MissingData)
            .is_some_and(|m| m.notes.iter().any(|n| matches!(n, Note::Unreadable(items) if items.iter().any(|i| i.contains("BMI")))));
            (unreadable == c.unreadable)
                .then_some(())
                .ok_or(format!("unreadable reported: {unreadable}"))
        },
    );
}

#[test]
fn obesity_is_also_flagged_on_the_vte_card_when_there_is_one() {
    let mut r = baseline_with(vec![condition("pe", icd("I26.9"))]);
    r.observations.push(bmi_obs("b1", 34.0, days_ago(3)));
    let a = assess(&r, &tofacitinib_5_bid());
    assert_eq!(codes_on(&a, Topic::AnsmRestriction), [F::Obesity]);
    assert_eq!(codes_on(&a, Topic::VteCaution), [F::VteHistory]);
    assert!(finding(&a, Topic::VteCaution)
        .unwrap()
        .notes
        .contains(&Note::ObesityIsVteRisk));
}

// ---- treatments ----

#[test]
fn hormonal_therapy_from_active_requests_and_statements() {
    use MedicationKind::{Request, Statement};
    struct Case {
        desc: &'static str,
        med: MedicationUse,
        present: bool,
    }
    let c = |desc, kind, status, concept, present| Case {
        desc,
        med: med_use("m1", kind, status, concept),
        present,
    };
    let cases = vec![
        c(
            "ATC G03AA07 combined pill, active request",
            Request,
            Some("active"),
            atc("G03AA07"),
            true,
        ),
        c(
            "ATC G03AC03 progestogen-only contraceptive (G03A)",
            Request,
            Some("active"),
            atc("G03AC03"),
            true,
        ),
        c(
            "ATC G03CA03 estradiol, active statement",
            Statement,
            Some("active"),
            atc("G03CA03"),
            true,
        ),
        c(
            "ATC G03FA01 HRT combination",
            Request,
            Some("active"),
            atc("G03FA01"),
            true,
        ),
        c(
            "ATC G02BB01 vaginal ring",
            Request,
            Some("active"),
            atc("G02BB01"),
            true,
        ),
        c(
            "ATC G03HB01 cyproterone and estrogen",
            Request,
            Some("active"),
            atc("G03HB01"),
            true,
        ),
        c(
            "name: levonorgestrel / ethinylestradiol",
            Statement,
            Some("active"),
            text("Levonorgestrel/Ethinylestradiol 0.15/0.03 mg"),
            true,
        ),
        c(
            "name in French with œ: Œstradiol gel",
            Statement,
            Some("active"),
            text("ŒSTRADIOL 0,06 % gel"),
            true,
        ),
        c(
            "name in the coding display only",
            Request,
            Some("active"),
            displayed(CodeSystem::RxNorm, "999999", "estradiol 1 MG Oral Tablet"),
            true,
        ),
        c(
            "status absent counts as active",
            Statement,
            None,
            atc("G03AA07"),
            true,
        ),
        c(
            "a stopped request does not count",
            Request,
            Some("stopped"),
            atc("G03AA07"),
            false,
        ),
        c(
            "a completed statement does not count",
            Statement,
            Some("completed"),
            atc("G03CA03"),
            false,
        ),
        c(
            "an entered-in-error request does not count",
            Request,
            Some("entered-in-error"),
            atc("G03AA07"),
            false,
        ),
        c(
            "an on-hold request does not count",
            Request,
            Some("on-hold"),
            atc("G03AA07"),
            false,
        ),
        c(
            "ATC G03BA03 testosterone is not hormonal therapy of the list",
            Request,
            Some("active"),
            atc("G03BA03"),
            false,
        ),
        c(
            "ATC G03DA04 progesterone alone is not listed",
            Request,
            Some("active"),
            atc("G03DA04"),
            false,
        ),
        c(
            "nomegestrol alone (Lutényl, a progestogen) is not listed",
            Request,
            Some("active"),
            text("NOMEGESTROL ACETATE 5 mg (Lutényl), comprimé"),
            false,
        ),
        c(
            "nomegestrol with estradiol (Zoely) is a combined pill",
            Request,
            Some("active"),
            text("Zoely 2,5 mg/1,5 mg (nomégestrol/estradiol)"),
            true,
        ),
        c(
            "levothyroxine is a hormone but not listed",
            Request,
            Some("active"),
            text("Levothyroxine 75 µg"),
            false,
        ),
    ];
    check_all(
        &cases,
        |c| c.desc,
        |c| {
            let mut r = baseline();
            r.medications = vec![c.med.clone()];
            let a = assess(&r, &tofacitinib_5_bid());
            assert_well_formed(&a);
            match (factor(&a, F::HormonalTherapy), c.present) {
                (Some(f), true)
                    if !f.inferred && evidence_refs(f) == [c.med.reference.as_str()] =>
                {
                    Ok(())
                }
                (Some(f), true) => Err(format!(
                    "hormonal therapy is the treatment itself, never inferred: {f:?}"
                )),
                (None, false) => Ok(()),
                (got, _) => Err(format!("present: {}", got.is_some())),
            }
        },
    );
}

#[test]
fn hormonal_therapy_alone_gives_an_info_vte_card_and_no_restriction_card() {
    let mut r = baseline();
    r.medications = vec![active_request("pill", atc("G03AA07"))];
    let a = assess(&r, &tofacitinib_5_bid());
    assert!(finding(&a, Topic::AnsmRestriction).is_none());
    let vte = finding(&a, Topic::VteCaution).unwrap();
    assert_eq!(vte.indicator, Indicator::Info);
    assert_eq!(codes_on(&a, Topic::VteCaution), [F::HormonalTherapy]);
}

#[test]
fn treatments_suggest_factors_marked_inferred() {
    struct Case {
        desc: &'static str,
        concept: Concept,
        factor: F,
    }
    let c = |desc, concept, factor| Case {
        desc,
        concept,
        factor,
    };
    let cases = vec![
        c(
            "amlodipine by name: hypertension",
            text("Amlodipine 5 mg tablet"),
            F::Hypertension,
        ),
        c(
            "ramipril by ATC C09AA05: hypertension",
            atc("C09AA05"),
            F::Hypertension,
        ),
        c(
            "bisoprolol by ATC C07AB07: hypertension",
            atc("C07AB07"),
            F::Hypertension,
        ),
        c(
            "lisinopril by RxNorm 29046: hypertension",
            rxnorm("29046"),
            F::Hypertension,
        ),
        c(
            "metformin by ATC A10BA02: diabetes",
            atc("A10BA02"),
            F::Diabetes,
        ),
        c(
            "metformin by RxNorm 6809: diabetes",
            rxnorm("6809"),
            F::Diabetes,
        ),
        c(
            "insulin glargine by name: diabetes",
            text("Insulin glargine 100 units/mL"),
            F::Diabetes,
        ),
        c(
            "French name METFORMINE in capitals: diabetes",
            text("METFORMINE 850 mg cp"),
            F::Diabetes,
        ),
        c(
            "atorvastatin by name: dyslipidaemia",
            text("atorvastatin 20 MG Oral Tablet"),
            F::Dyslipidemia,
        ),
        c(
            "rosuvastatine (French) by name: dyslipidaemia",
            text("Rosuvastatine 10 mg"),
            F::Dyslipidemia,
        ),
        c(
            "ezetimibe by ATC C10AX09: dyslipidaemia",
            atc("C10AX09"),
            F::Dyslipidemia,
        ),
    ];
    check_all(
        &cases,
        |c| c.desc,
        |c| {
            let mut r = baseline();
            r.medications = vec![active_request("m1", c.concept.clone())];
            let a = assess(&r, &tofacitinib_5_bid());
            let f = factor(&a, c.factor).ok_or("factor missing")?;
            if !f.inferred || evidence_refs(f) != ["MedicationRequest/m1"] {
                return Err(format!("must be inferred from the request: {f:?}"));
            }
            // A stopped treatment suggests nothing.
            r.medications = vec![med_use(
                "m1",
                MedicationKind::Request,
                Some("stopped"),
                c.concept.clone(),
            )];
            let a = assess(&r, &tofacitinib_5_bid());
            factor(&a, c.factor)
                .map_or(Ok(()), |f| Err(format!("stopped treatment counted: {f:?}")))
        },
    );
}

#[test]
fn a_condition_makes_a_treated_factor_established_not_inferred() {
    for (desc, cond, med, code) in [
        (
            "hypertension",
            icd("I10"),
            text("amlodipine 5 mg"),
            F::Hypertension,
        ),
        ("diabetes", sct("44054006"), atc("A10BA02"), F::Diabetes),
        (
            "dyslipidaemia",
            icd("E78.0"),
            text("atorvastatin 40 mg"),
            F::Dyslipidemia,
        ),
    ] {
        // Whatever the order of the record, the Condition wins and the treatment is dropped.
        for cond_first in [true, false] {
            let mut r = baseline_with(vec![condition("c1", cond.clone())]);
            r.medications = vec![active_request("m1", med.clone())];
            if !cond_first {
                r.conditions.reverse();
            }
            let a = assess(&r, &tofacitinib_5_bid());
            let f = factor(&a, code).unwrap_or_else(|| panic!("{desc} missing"));
            assert!(!f.inferred, "{desc}: {f:?}");
            assert_eq!(evidence_refs(f), ["Condition/c1"], "{desc}");
        }
    }
}

#[test]
fn a_resolved_condition_leaves_the_treatment_inference() {
    let mut r = baseline_with(vec![with_status(
        condition("c1", icd("I10")),
        Some("resolved"),
        None,
    )]);
    r.medications = vec![active_request("m1", text("amlodipine 5 mg"))];
    let a = assess(&r, &tofacitinib_5_bid());
    let f = factor(&a, F::Hypertension).unwrap();
    assert!(f.inferred);
    assert_eq!(evidence_refs(f), ["MedicationRequest/m1"]);
}

// ---- indicators ----

#[test]
fn restriction_and_vte_indicators_follow_the_policy() {
    struct Case {
        desc: &'static str,
        conditions: Vec<Condition>,
        topic: Topic,
        indicator: Indicator,
    }
    let c = |desc, conditions, topic, indicator| Case {
        desc,
        conditions,
        topic,
        indicator,
    };
    let cases = vec![
        c(
            "one cardiovascular risk factor: warning",
            vec![condition("a", icd("I10"))],
            Topic::AnsmRestriction,
            Indicator::Warning,
        ),
        c(
            "two factors: warning",
            vec![condition("a", icd("I10")), condition("b", icd("E11.9"))],
            Topic::AnsmRestriction,
            Indicator::Warning,
        ),
        c(
            "three factors: critical",
            vec![
                condition("a", icd("I10")),
                condition("b", icd("E11.9")),
                condition("c", icd("E78.5")),
            ],
            Topic::AnsmRestriction,
            Indicator::Critical,
        ),
        c(
            "atherosclerotic disease: critical",
            vec![condition("a", icd("I21.9"))],
            Topic::AnsmRestriction,
            Indicator::Critical,
        ),
        c(
            "malignancy: critical",
            vec![condition("a", icd("C50.9"))],
            Topic::AnsmRestriction,
            Indicator::Critical,
        ),
        c(
            "previous VTE: warning VTE card",
            vec![condition("a", icd("I26.9"))],
            Topic::VteCaution,
            Indicator::Warning,
        ),
        c(
            "thrombophilia: warning VTE card",
            vec![condition("a", icd("D68.5"))],
            Topic::VteCaution,
            Indicator::Warning,
        ),
        c(
            "connective tissue disease: warning",
            vec![condition("a", icd("M32.1"))],
            Topic::CtdOffLabel,
            Indicator::Warning,
        ),
    ];
    check_all(
        &cases,
        |c| c.desc,
        |c| {
            let a = assess(&baseline_with(c.conditions.clone()), &tofacitinib_5_bid());
            let f = finding(&a, c.topic).ok_or("no card")?;
            (f.indicator == c.indicator)
                .then_some(())
                .ok_or(format!("{:?}", f.indicator))
        },
    );
}

// ---- missing data ----

#[test]
fn missing_data_factors() {
    struct Case {
        desc: &'static str,
        record: Record,
        factor: F,
        present: bool,
    }
    let edit = |f: &dyn Fn(&mut Record)| {
        let mut r = baseline();
        f(&mut r);
        r
    };
    let cases = vec![
        Case {
            desc: "no birthDate: birth date unknown",
            record: edit(&|r| r.patient = Some(patient(None))),
            factor: F::BirthDateUnknown,
            present: true,
        },
        Case {
            desc: "no Patient at all: birth date unknown",
            record: edit(&|r| r.patient = None),
            factor: F::BirthDateUnknown,
            present: true,
        },
        Case {
            desc: "a birth date: known",
            record: baseline(),
            factor: F::BirthDateUnknown,
            present: false,
        },
        Case {
            desc: "no smoking record: smoking status unknown",
            record: edit(&|r| r.observations = normal_counts()),
            factor: F::SmokingStatusUnknown,
            present: true,
        },
        Case {
            desc: "a never-smoker Observation: known",
            record: baseline(),
            factor: F::SmokingStatusUnknown,
            present: false,
        },
        Case {
            desc: "a smoking Condition alone makes the status known",
            record: edit(&|r| {
                r.observations = normal_counts();
                r.conditions = vec![condition("c1", icd("Z87.891"))];
            }),
            factor: F::SmokingStatusUnknown,
            present: false,
        },
        Case {
            desc: "no blood count: missing",
            record: edit(&|r| {
                r.observations
                    .retain(|o| o.reference.as_str() == "Observation/smoke")
            }),
            factor: F::BloodCountMissing,
            present: true,
        },
        Case {
            desc: "a complete recent count: not missing",
            record: baseline(),
            factor: F::BloodCountMissing,
            present: false,
        },
        Case {
            desc: "one analyte missing (no haemoglobin): missing",
            record: edit(&|r| {
                r.observations
                    .retain(|o| o.reference.as_str() != "Observation/hb")
            }),
            factor: F::BloodCountMissing,
            present: true,
        },
    ];
    check_all(
        &cases,
        |c| c.desc,
        |c| {
            let a = assess(&c.record, &tofacitinib_5_bid());
            assert_well_formed(&a);
            let f = factor(&a, c.factor);
            if f.is_some() != c.present {
                return Err(format!("present: {}", f.is_some()));
            }
            if c.present {
                let m = finding(&a, Topic::MissingData).unwrap();
                if m.indicator != Indicator::Info {
                    return Err("missing data is info".into());
                }
            }
            Ok(())
        },
    );
}

#[test]
fn a_missing_prefetch_key_is_reported_on_the_missing_data_card() {
    let mut r = baseline();
    r.gaps = vec![DataGap::MissingKey("conditions".into())];
    let a = assess(&r, &tofacitinib_5_bid());
    let m = finding(&a, Topic::MissingData).unwrap();
    assert!(
        m.notes
            .contains(&Note::MissingKeys(vec!["conditions".into()])),
        "{m:#?}"
    );
    assert_eq!(m.indicator, Indicator::Info);
}

#[test]
fn a_record_with_nothing_to_report_gives_no_finding() {
    for molecule in [
        "tofacitinib",
        "baricitinib",
        "upadacitinib",
        "filgotinib",
        "abrocitinib",
        "ritlecitinib",
    ] {
        // The baseline patient: 50, never smoker, normal recent count, an unrelated condition
        // and an unrelated treatment; the usual dose of each molecule.
        let mut r = baseline_with(vec![
            condition("ra", icd("M06.9")),
            condition("uc", icd("K51.9")),
        ]);
        r.medications = vec![active_request("mtx", text("Methotrexate 15 mg weekly"))];
        r.observations.push(bmi_obs("bmi", 24.0, days_ago(20)));
        let dose = match molecule {
            "tofacitinib" => mg_dose(5.0, 2.0),
            "baricitinib" => mg_dose(4.0, 1.0),
            "upadacitinib" => mg_dose(15.0, 1.0),
            "filgotinib" => mg_dose(200.0, 1.0),
            "abrocitinib" => mg_dose(200.0, 1.0),
            _ => mg_dose(50.0, 1.0),
        };
        let a = assess(&r, &order(text(molecule), vec![dose]));
        assert_eq!(a.molecule.as_deref(), Some(molecule));
        assert!(a.findings.is_empty(), "{molecule}: {a:#?}");
    }
}
