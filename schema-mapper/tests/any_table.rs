//! The SPEC §6 properties hold for every valid table, not only the bundled
//! reference data: operators replace the table by configuration, so the
//! guarantees must come from the model. Tables here are random: level counts,
//! a random order-preserving many-to-one correspondence, random hours per
//! credit and credit steps, several home outcome types sharing one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use proptest::prelude::*;
use schema_mapper::{translate, Credits, Hours, LearningRecord, MappingTable, Title};
use serde_json::Map;
use std::fmt::Write;

#[derive(Debug, Clone)]
struct Spec {
    home_levels: u32,
    /// Interchange level (1-based) of each home level, non-decreasing, onto.
    up: Vec<u32>,
    hours: [u32; 2],
    steps: [&'static str; 2],
}

fn spec() -> impl Strategy<Value = Spec> {
    (1u32..=12)
        .prop_flat_map(|n| (Just(n), prop::collection::vec(any::<bool>(), n as usize - 1)))
        .prop_flat_map(|(n, cuts)| {
            // A cut after home level i starts a new interchange level.
            let mut up = vec![1u32];
            for cut in cuts {
                let last = *up.last().unwrap();
                up.push(if cut { last + 1 } else { last });
            }
            let steps = prop::sample::select(&["1", "0.5", "0.25", "0.1", "0.001"][..]);
            (Just(n), Just(up), 1u32..=60, 1u32..=60, steps.clone(), steps)
        })
        .prop_map(|(home_levels, up, h0, h1, s0, s1)| Spec {
            home_levels,
            up,
            hours: [h0, h1],
            steps: [s0, s1],
        })
}

fn toml_of(s: &Spec) -> String {
    let ic_levels = *s.up.last().unwrap();
    let mut t = String::from("id = \"rand~test\"\nversion = \"0.1.0\"\nhome = \"h\"\ninterchange = \"i\"\n");
    for (k, (id, n)) in [("h", s.home_levels), ("i", ic_levels)].into_iter().enumerate() {
        writeln!(
            t,
            "[[frameworks]]\nid = \"{id}\"\ntable = \"{id}-test\"\nversion = \"2.0.0\"\n\
             name = {{ zh = \"测试\", en = \"Test\" }}\nhours_per_credit = {}\ncredit_step = {}",
            s.hours[k], s.steps[k]
        )
        .unwrap();
        for l in 1..=n {
            writeln!(
                t,
                "[[frameworks.levels]]\nlevel = {l}\nzh = \"级{l}\"\nen = \"L{l}\""
            )
            .unwrap();
        }
        for o in if id == "h" {
            &["a", "b", "c"][..]
        } else {
            &["x", "y"][..]
        } {
            writeln!(
                t,
                "[[frameworks.outcome_types]]\nid = \"{o}\"\nzh = \"{o}\"\nen = \"{o}\""
            )
            .unwrap();
        }
    }
    for (i, target) in s.up.iter().enumerate() {
        writeln!(t, "[[levels]]\nhome = {}\ninterchange = {target}", i + 1).unwrap();
    }
    for (h, i) in [("a", "x"), ("b", "y"), ("c", "y")] {
        writeln!(t, "[[outcome_types]]\nhome = \"{h}\"\ninterchange = \"{i}\"").unwrap();
    }
    t
}

fn record(fw: &str, level: u32, credits: u64, hours: u64, outcome: &str) -> LearningRecord {
    LearningRecord {
        framework: fw.into(),
        framework_version: "2.0.0".into(),
        level,
        credits: Credits::from_millis(credits).unwrap(),
        learning_hours: Hours::from_centis(hours).unwrap(),
        outcome_type: outcome.into(),
        title: Title {
            zh: "测试课程".into(),
            en: None,
        },
        awarded_on: "2026-01-01".into(),
        awarding_body: "测试机构".into(),
        extensions: Map::new(),
    }
}

fn hour_value(t: &MappingTable, r: &LearningRecord) -> u128 {
    u128::from(r.credits.millis()) * u128::from(t.framework(&r.framework).unwrap().hours_per_credit())
}

proptest! {
    #[test]
    fn properties_hold_for_any_valid_table(
        s in spec(),
        level_seed in any::<u32>(),
        credits in 0u64..=50_000,
        hours in 0u64..=200_000,
        outcome in prop::sample::select(&["a", "b", "c"][..]),
    ) {
        let t = MappingTable::from_toml_str(&toml_of(&s)).unwrap();
        let level = level_seed % s.home_levels + 1;
        let r = record("h", level, credits, hours, outcome);

        // Monotone levels and the documented correspondence.
        let ups: Vec<u32> = (1..=s.home_levels)
            .map(|l| translate(&LearningRecord { level: l, ..r.clone() }, "h", "i", &t).unwrap().record.level)
            .collect();
        prop_assert_eq!(&ups, &s.up);

        // Round trip lands in the same band, with credits never increasing.
        let there = translate(&r, "h", "i", &t).unwrap();
        let back = translate(&there.record, "i", "h", &t).unwrap();
        prop_assert_eq!(s.up[back.record.level as usize - 1], s.up[level as usize - 1]);
        prop_assert!(hour_value(&t, &there.record) <= hour_value(&t, &r));
        prop_assert!(back.record.credits <= r.credits);
        prop_assert_eq!(back.record.learning_hours, r.learning_hours);

        // Within one target step of the hours basis.
        let basis = hour_value(&t, &r).min(u128::from(r.learning_hours.millis()));
        let step = u128::from(t.interchange().credit_step().millis()) * u128::from(t.interchange().hours_per_credit());
        prop_assert!(basis - hour_value(&t, &there.record) < step);

        // Merged outcome types are reported and go back to the first listed.
        let merged = there.losses.iter().any(|l| l.field == "outcomeType");
        prop_assert_eq!(merged, outcome != "a");
        prop_assert_eq!(back.record.outcome_type.as_str(), if outcome == "a" { "a" } else { "b" });
        prop_assert_eq!((there.table_id.as_str(), there.table_version.as_str()), ("rand~test", "0.1.0"));
    }
}
