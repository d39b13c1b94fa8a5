//! A corrupted table is rejected with the error naming the corruption, never
//! loaded. Corruptions are applied to the bundled reference table.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use proptest::prelude::*;
use schema_mapper::{translate, LearningRecord, LossReason, MappingTable, TableError, REFERENCE_TOML};
use serde_json::json;
use toml::Value;

fn reference() -> Value {
    toml::from_str(REFERENCE_TOML).unwrap()
}

fn load(v: &Value) -> Result<MappingTable, TableError> {
    MappingTable::from_toml_str(&toml::to_string(v).unwrap())
}

fn rows<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    v.get_mut(key).unwrap().as_array_mut().unwrap()
}

fn framework(v: &mut Value, i: usize) -> &mut toml::Table {
    rows(v, "frameworks")[i].as_table_mut().unwrap()
}

#[test]
fn reference_round_trips_through_toml_and_json() {
    let v = reference();
    assert_eq!(load(&v).unwrap(), MappingTable::reference());
    let json = serde_json::to_string(&v).unwrap();
    assert_eq!(
        MappingTable::from_json_str(&json).unwrap(),
        MappingTable::reference()
    );
}

#[test]
fn each_corruption_has_its_error() {
    type Corrupt = fn(&mut Value);
    let cases: Vec<(Corrupt, TableError)> = vec![
        (
            |v| v["version"] = "1.0".into(),
            TableError::BadSemver {
                what: "table version".into(),
                value: "1.0".into(),
            },
        ),
        (
            |v| framework(v, 1)["id"] = "cqf".into(),
            TableError::DuplicateId {
                what: "framework".into(),
                id: "cqf".into(),
            },
        ),
        (
            |v| {
                let extra = rows(v, "frameworks")[0].clone();
                rows(v, "frameworks").push(extra);
                framework(v, 2)["id"] = "eqf".into();
            },
            TableError::UnusedFramework { id: "eqf".into() },
        ),
        (
            |v| v["home"] = "hqf".into(),
            TableError::UnknownFramework {
                role: "home",
                id: "hqf".into(),
            },
        ),
        (
            |v| v["interchange"] = "cqf".into(),
            TableError::DuplicateId {
                what: "home/interchange framework".into(),
                id: "cqf".into(),
            },
        ),
        (
            |v| framework(v, 0)["hours_per_credit"] = 0.into(),
            TableError::BadHoursPerCredit {
                framework: "cqf".into(),
                value: 0,
                max: 10_000,
            },
        ),
        (
            |v| framework(v, 1)["hours_per_credit"] = (-27).into(),
            TableError::BadHoursPerCredit {
                framework: "wfs".into(),
                value: -27,
                max: 10_000,
            },
        ),
        (
            |v| framework(v, 1)["credit_step"] = 0.0.into(),
            TableError::BadCreditStep {
                framework: "wfs".into(),
                value: "0".into(),
            },
        ),
        (
            |v| framework(v, 0)["version"] = "v1".into(),
            TableError::BadSemver {
                what: "framework `cqf` version".into(),
                value: "v1".into(),
            },
        ),
        (
            |v| {
                rows(v, "levels").remove(3);
            },
            TableError::LevelGap { level: 5 },
        ),
        (
            |v| rows(v, "levels")[0]["home"] = Value::Array(vec![1.into(), 3.into()]),
            TableError::LevelOverlap { level: 3 },
        ),
        (
            |v| rows(v, "levels")[0]["home"] = Value::Array(vec![2.into(), 1.into()]),
            TableError::ReversedBand { lo: 2, hi: 1 },
        ),
        (
            |v| rows(v, "levels")[7]["home"] = Value::Array(vec![9.into(), 11.into()]),
            TableError::UnknownLevel {
                framework: "cqf".into(),
                level: 11,
            },
        ),
        (
            |v| rows(v, "levels")[7]["interchange"] = 7.into(),
            TableError::InterchangeLevelUnmapped { level: 8 },
        ),
        (
            |v| {
                rows(v, "levels")[1]["interchange"] = 3.into();
                rows(v, "levels")[2]["interchange"] = 2.into();
            },
            TableError::OrderCrossing {
                home: 4,
                interchange: 2,
            },
        ),
        (
            |v| {
                framework(v, 0)
                    .get_mut("levels")
                    .unwrap()
                    .as_array_mut()
                    .unwrap()
                    .swap(0, 1);
            },
            TableError::LevelSequence {
                framework: "cqf".into(),
                position: 0,
                found: 2,
            },
        ),
        (
            |v| rows(v, "outcome_types")[1]["home"] = "degree-education".into(),
            TableError::DuplicateId {
                what: "outcome mapping of home type".into(),
                id: "degree-education".into(),
            },
        ),
        (
            |v| {
                rows(v, "outcome_types").remove(4);
            },
            TableError::OutcomeTypeUnmapped {
                framework: "cqf".into(),
                id: "micro-credential".into(),
            },
        ),
        (
            |v| rows(v, "outcome_types")[0]["interchange"] = "degree".into(),
            TableError::UnknownOutcomeType {
                framework: "wfs".into(),
                id: "degree".into(),
            },
        ),
    ];
    for (i, (corrupt, want)) in cases.into_iter().enumerate() {
        let mut v = reference();
        corrupt(&mut v);
        assert_eq!(load(&v).unwrap_err(), want, "case {i}");
    }
}

#[test]
fn many_to_one_outcomes_go_back_to_the_first_listed() {
    let mut v = reference();
    rows(&mut v, "outcome_types")[3]["interchange"] = "non-formal-learning".into();
    let wfs = framework(&mut v, 1)
        .get_mut("outcome_types")
        .unwrap()
        .as_array_mut()
        .unwrap();
    wfs.remove(3);
    let t = load(&v).unwrap();
    assert_eq!(t.interchange().outcome_types().len(), 4);
    let record = LearningRecord::from_json(&json!({
        "framework": "cqf", "frameworkVersion": "1.0.0", "level": 3, "credits": 1.5,
        "learningHours": 27, "outcomeType": "community-education", "title": {"zh": "社区书法"},
        "awardedOn": "2026-03-01", "awardingBody": "渝中区社区学院"
    }))
    .unwrap();
    let up = translate(&record, "cqf", "wfs", &t).unwrap();
    assert_eq!(up.record.outcome_type, "non-formal-learning");
    assert_eq!(up.losses[0].reason, LossReason::OutcomeTypeMerged);
    let down = translate(&up.record, "wfs", "cqf", &t).unwrap();
    assert_eq!(down.record.outcome_type, "non-formal-training");
}

#[test]
fn parse_errors_are_typed() {
    assert!(matches!(
        MappingTable::from_toml_str("id = "),
        Err(TableError::Parse(_))
    ));
    assert!(matches!(
        MappingTable::from_json_str("[]"),
        Err(TableError::Parse(_))
    ));
    let unknown_key = format!("{REFERENCE_TOML}\nsurprise = 1\n");
    assert!(matches!(
        MappingTable::from_toml_str(&unknown_key),
        Err(TableError::Parse(_))
    ));
}

/// The kinds of corruption the property picks from.
#[derive(Debug, Clone, Copy)]
enum Kind {
    SwapLevels,
    Gap,
    ZeroHours,
    DuplicateFramework,
    DuplicateOutcome,
}

proptest! {
    #[test]
    fn random_corruption_is_rejected(
        kind in prop::sample::select(&[Kind::SwapLevels, Kind::Gap, Kind::ZeroHours, Kind::DuplicateFramework,
            Kind::DuplicateOutcome][..]),
        i in 0usize..8,
        j in 0usize..8,
        which in 0usize..2,
        hours in -1000i64..=0,
    ) {
        let mut v = reference();
        match kind {
            Kind::SwapLevels => {
                let levels = rows(&mut v, "levels");
                let (a, b) = (levels[i]["interchange"].clone(), levels[j]["interchange"].clone());
                prop_assume!(a != b);
                levels[i]["interchange"] = b;
                levels[j]["interchange"] = a;
            }
            Kind::Gap => { rows(&mut v, "levels").remove(i); }
            Kind::ZeroHours => framework(&mut v, which)["hours_per_credit"] = hours.into(),
            Kind::DuplicateFramework => {
                let frameworks = rows(&mut v, "frameworks");
                let copy = frameworks[which].clone();
                frameworks.push(copy);
            }
            Kind::DuplicateOutcome => {
                let outcomes = framework(&mut v, which).get_mut("outcome_types").unwrap().as_array_mut().unwrap();
                let copy = outcomes[i % 5].clone();
                outcomes.insert(j % 5, copy);
            }
        }
        let err = load(&v).unwrap_err();
        let ok = match kind {
            Kind::SwapLevels => matches!(err, TableError::OrderCrossing { .. }),
            Kind::Gap => matches!(err, TableError::LevelGap { .. } | TableError::InterchangeLevelUnmapped { .. }),
            Kind::ZeroHours => matches!(err, TableError::BadHoursPerCredit { value, .. } if value == hours),
            Kind::DuplicateFramework | Kind::DuplicateOutcome => matches!(err, TableError::DuplicateId { .. }),
        };
        prop_assert!(ok, "{:?} gave {:?}", kind, err);
    }
}

#[test]
fn an_outcome_label_that_names_another_type_is_rejected() {
    let mut v = reference();
    let types = framework(&mut v, 0)
        .get_mut("outcome_types")
        .unwrap()
        .as_array_mut()
        .unwrap();
    let other_id = types[1]["id"].as_str().unwrap().to_owned();
    types[0]
        .as_table_mut()
        .unwrap()
        .insert("zh".into(), Value::String(other_id.clone()));
    match load(&v) {
        Err(TableError::DuplicateId { id, .. }) => assert_eq!(id, other_id),
        other => panic!("expected a duplicate name, got {other:?}"),
    }
}
