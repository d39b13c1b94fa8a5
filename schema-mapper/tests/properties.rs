//! Property tests of SPEC §6 over the reference table (256 cases each,
//! proptest's default). Records are generated around the valid space (known
//! levels and outcome types, with unknown ones mixed in) so that most cases
//! reach the mapping logic rather than stopping at the first check.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use proptest::prelude::*;
use schema_mapper::{translate, Credits, Hours, LearningRecord, MappingTable, Title};
use serde_json::{Map, Value};

const OUTCOMES: [&str; 10] = [
    "degree-education",
    "vocational-skill-level",
    "non-formal-training",
    "community-education",
    "micro-credential",
    "formal-qualification",
    "vocational-qualification",
    "non-formal-learning",
    "community-learning",
    "unknown-type",
];

fn table() -> MappingTable {
    MappingTable::reference()
}

/// Arbitrary JSON, including awkward numbers and non-ASCII keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN/inf become null, as in serde_json
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::vec((".{0,6}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn extensions() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(("[a-z:]{1,8}|.{0,6}", json_value()), 0..6).prop_map(|kv| kv.into_iter().collect())
}

/// Records in `framework`, levels 0..=11 (so some are unknown), any credits
/// and hours on the grid, outcome types from both frameworks.
fn record_in(framework: &'static str) -> impl Strategy<Value = LearningRecord> {
    (
        0u32..=11,
        prop_oneof![0u64..=40_000, 0u64..=1_000_000_000],
        prop_oneof![0u64..=100_000, 0u64..=100_000_000],
        prop::sample::select(&OUTCOMES[..]),
        "\\PC{1,20}",
        prop::option::of("[A-Za-z][A-Za-z ]{0,19}"),
        extensions(),
    )
        .prop_map(
            move |(level, credits, hours, outcome, zh, en, extensions)| LearningRecord {
                framework: framework.into(),
                framework_version: "1.0.0".into(),
                level,
                credits: Credits::from_millis(credits).unwrap(),
                learning_hours: Hours::from_centis(hours).unwrap(),
                outcome_type: outcome.into(),
                title: Title {
                    zh: format!("课程{zh}"),
                    en,
                },
                awarded_on: "2025-09-01".into(),
                awarding_body: "重庆开放大学".into(),
                extensions,
            },
        )
}

fn any_record() -> impl Strategy<Value = LearningRecord> {
    prop_oneof![record_in("cqf"), record_in("wfs")]
}

fn fw() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["cqf", "wfs"][..])
}

/// Credits of `r` expressed in thousandths of an hour.
fn hour_value(r: &LearningRecord) -> u128 {
    let hpc = table().framework(&r.framework).unwrap().hours_per_credit();
    u128::from(r.credits.millis()) * u128::from(hpc)
}

const SLUGS: [&str; 3] = ["schema-violation", "unmappable-record", "mapping-version-unknown"];

proptest! {
    #[test]
    fn from_json_is_total_on_any_json(v in json_value()) {
        if let Err(e) = LearningRecord::from_json(&v) {
            prop_assert_eq!(e.slug(), "schema-violation");
        }
    }

    #[test]
    fn from_json_is_total_on_corrupted_records(
        r in any_record(),
        field in prop::sample::select(&["framework", "frameworkVersion", "level", "credits", "learningHours",
            "outcomeType", "title", "awardedOn", "awardingBody", "extensions", "id", "title.zh"][..]),
        junk in prop_oneof![json_value(), any::<f64>().prop_map(|f| Value::from(-f.abs() - 1.0)),
            Just(Value::from(1e300)), Just(Value::from("x".repeat(5000))), Just(Value::from(""))],
    ) {
        let mut v = r.to_json();
        match field.split_once('.') {
            Some((outer, inner)) => { v[outer][inner] = junk; }
            None => { v[field] = junk; }
        }
        match LearningRecord::from_json(&v) {
            // Accepted junk must have been read faithfully. Numbers are
            // normalized (0.0 is written back as 0), so compare those by value.
            Ok(parsed) => match field {
                "credits" => prop_assert_eq!(Some(parsed.credits.as_f64()), v[field].as_f64()),
                "learningHours" => prop_assert_eq!(Some(parsed.learning_hours.as_f64()), v[field].as_f64()),
                _ => prop_assert_eq!(parsed.to_json(), v),
            },
            Err(e) => prop_assert_eq!(e.slug(), "schema-violation"),
        }
    }

    #[test]
    fn records_and_translations_round_trip_through_json(r in any_record(), to in fw()) {
        let from = r.framework.clone();
        if r.validate().is_ok() {
            prop_assert_eq!(&LearningRecord::from_json(&r.to_json()).unwrap(), &r);
        }
        if let Ok(t) = translate(&r, &from, to, &table()) {
            prop_assert_eq!(LearningRecord::from_json(&t.record.to_json()).unwrap(), t.record);
        }
    }

    #[test]
    fn translate_is_total(r in any_record(), from in "cqf|wfs|eqf|", to in "cqf|wfs|eqf|") {
        match translate(&r, &from, &to, &table()) {
            Ok(t) => prop_assert_eq!(t.record.framework, to),
            Err(e) => prop_assert!(SLUGS.contains(&e.slug())),
        }
    }

    #[test]
    fn translate_is_deterministic(r in any_record(), from in fw(), to in fw()) {
        let a = translate(&r, from, to, &table());
        let b = translate(&r, from, to, &table().clone());
        prop_assert_eq!(&a, &b);
        if let (Ok(a), Ok(b)) = (a, b) {
            prop_assert_eq!(a.record.to_json().to_string(), b.record.to_json().to_string());
        }
    }

    #[test]
    fn version_and_target_are_recorded(r in any_record(), to in fw()) {
        let from = r.framework.clone();
        if let Ok(t) = translate(&r, &from, to, &table()) {
            prop_assert_eq!(&t.table_id, "cqf-ref~wfs-ref");
            prop_assert_eq!(&t.table_version, "1.0.0");
            prop_assert_eq!(t.record.framework.as_str(), to);
            let tb = table();
            prop_assert_eq!(t.record.framework_version.as_str(), tb.framework(to).unwrap().version());
            prop_assert_eq!(&t.provenance_json()["tableVersion"], "1.0.0");
        }
    }

    #[test]
    fn levels_stay_in_order(r in any_record(), to in fw()) {
        let from = r.framework.clone();
        let top = table().framework(&from).unwrap().top_level();
        let mut prev = 0;
        for level in 1..=top {
            let t = translate(&LearningRecord { level, ..r.clone() }, &from, to, &table());
            match t {
                Ok(t) => { prop_assert!(t.record.level >= prev); prev = t.record.level; }
                Err(e) => prop_assert_eq!(e.slug(), "unmappable-record"), // outcome type of the other framework
            }
        }
    }

    #[test]
    fn cqf_round_trip_stays_in_band(r in record_in("cqf")) {
        if let Ok(there) = translate(&r, "cqf", "wfs", &table()) {
            let back = translate(&there.record, "wfs", "cqf", &table()).unwrap();
            let (lo, hi) = table().home_band(there.record.level).unwrap();
            prop_assert!((lo..=hi).contains(&back.record.level));
            prop_assert!((lo..=hi).contains(&r.level));
            prop_assert_eq!(back.record.outcome_type, r.outcome_type);
        }
    }

    #[test]
    fn wfs_round_trip_is_exact_on_level(r in record_in("wfs")) {
        if let Ok(there) = translate(&r, "wfs", "cqf", &table()) {
            let back = translate(&there.record, "cqf", "wfs", &table()).unwrap();
            prop_assert_eq!(back.record.level, r.level);
            prop_assert_eq!(back.record.outcome_type, r.outcome_type);
        }
    }

    #[test]
    fn credits_never_increase_along_any_path(r in any_record(), path in prop::collection::vec(fw(), 1..6)) {
        let mut cur = r.clone();
        for to in path {
            let from = cur.framework.clone();
            let Ok(t) = translate(&cur, &from, to, &table()) else { return Ok(()) };
            prop_assert!(hour_value(&t.record) <= hour_value(&cur), "{} -> {}", from, to);
            if t.record.framework == r.framework {
                prop_assert!(t.record.credits <= r.credits);
            }
            cur = t.record;
        }
    }

    #[test]
    fn hours_conserved_within_rounding(r in any_record(), to in fw()) {
        let from = r.framework.clone();
        if let Ok(t) = translate(&r, &from, to, &table()) {
            prop_assert_eq!(t.record.learning_hours, r.learning_hours);
            if from != to {
                let tb = table();
                let target = tb.framework(to).unwrap();
                let basis = hour_value(&r).min(u128::from(r.learning_hours.millis()));
                let got = hour_value(&t.record);
                let step = u128::from(target.credit_step().millis()) * u128::from(target.hours_per_credit());
                prop_assert!(got <= basis && basis - got < step, "basis {} got {} step {}", basis, got, step);
            }
        }
    }

    #[test]
    fn extensions_preserved_byte_for_byte(r in any_record(), to in fw()) {
        let from = r.framework.clone();
        let before = serde_json::to_string(&r.extensions).unwrap();
        if let Ok(t) = translate(&r, &from, to, &table()) {
            prop_assert_eq!(serde_json::to_string(&t.record.extensions).unwrap(), before.clone());
            let reparsed = LearningRecord::from_json(&t.record.to_json()).unwrap();
            prop_assert_eq!(serde_json::to_string(&reparsed.extensions).unwrap(), before);
        }
    }
}
