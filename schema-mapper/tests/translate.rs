//! Example-based tests of `translate`: exact values and error variants.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use schema_mapper::{translate, LearningRecord, LossReason, MapError, MappingTable};
use serde_json::{json, Value};

fn cqf(level: u32, credits: f64, hours: f64, outcome: &str) -> Value {
    json!({
        "framework": "cqf", "frameworkVersion": "1.0.0", "level": level,
        "credits": credits, "learningHours": hours, "outcomeType": outcome,
        "title": {"zh": "高等数学", "en": "Advanced Mathematics"},
        "awardedOn": "2026-07-01", "awardingBody": "重庆开放大学",
        "extensions": {"cq:courseCode": "MATH-101", "grade": {"score": 91, "scale": "百分制"}}
    })
}

fn run(v: Value, from: &str, to: &str) -> Result<schema_mapper::Translation, MapError> {
    translate(
        &LearningRecord::from_json(&v)?,
        from,
        to,
        &MappingTable::reference(),
    )
}

#[test]
fn cqf_degree_course_to_wfs() {
    let t = run(cqf(7, 4.0, 72.0, "degree-education"), "cqf", "wfs").unwrap();
    // 4 × 18 h = 72 h; 72 / 27 = 2.67 WFS credits, floored to the 0.1 step.
    assert_eq!(
        t.record.to_json(),
        json!({
            "framework": "wfs", "frameworkVersion": "1.0.0", "level": 6,
            "credits": 2.6, "learningHours": 72, "outcomeType": "formal-qualification",
            "title": {"zh": "高等数学", "en": "Advanced Mathematics"},
            "awardedOn": "2026-07-01", "awardingBody": "重庆开放大学",
            "extensions": {"cq:courseCode": "MATH-101", "grade": {"score": 91, "scale": "百分制"}}
        })
    );
    assert_eq!(
        (t.table_id.as_str(), t.table_version.as_str()),
        ("cqf-ref~wfs-ref", "1.0.0")
    );
    assert_eq!(t.losses.len(), 1);
    assert_eq!(t.losses[0].reason, LossReason::CreditsRoundedDown);
    assert_eq!(t.losses[0].field, "credits");
}

#[test]
fn exact_conversion_has_no_loss() {
    let t = run(cqf(6, 3.0, 54.0, "vocational-skill-level"), "cqf", "wfs").unwrap();
    assert_eq!((t.record.level, t.record.credits.as_f64()), (5, 2.0));
    assert_eq!(t.record.outcome_type, "vocational-qualification");
    assert!(t.losses.is_empty());
}

#[test]
fn merged_band_is_reported() {
    let t = run(cqf(10, 1.5, 27.0, "micro-credential"), "cqf", "wfs").unwrap();
    assert_eq!((t.record.level, t.record.credits.as_f64()), (8, 1.0));
    let reasons: Vec<_> = t.losses.iter().map(|l| l.reason).collect();
    assert_eq!(reasons, [LossReason::LevelBandMerged]);
    assert_eq!(
        (t.losses[0].source.clone(), t.losses[0].target.clone()),
        (json!(10), json!(8))
    );
}

#[test]
fn credits_are_capped_by_reported_hours() {
    // Claims 10 credits (180 h) but reports 36 h of learning: 36 / 27 = 1.33.
    let t = run(cqf(4, 10.0, 36.0, "non-formal-training"), "cqf", "wfs").unwrap();
    assert_eq!(t.record.credits.as_f64(), 1.3);
    let reasons: Vec<_> = t.losses.iter().map(|l| l.reason).collect();
    assert_eq!(
        reasons,
        [LossReason::CreditsCappedByHours, LossReason::CreditsRoundedDown]
    );
}

#[test]
fn wfs_to_cqf_lands_on_lowest_level_of_band() {
    let mut v = cqf(8, 2.0, 54.0, "community-learning");
    v["framework"] = json!("wfs");
    let t = run(v, "wfs", "cqf").unwrap();
    // 2 × 27 h = 54 h = 3 CQF credits; WFS 8 ↔ CQF band 9–10 → 9.
    assert_eq!((t.record.level, t.record.credits.as_f64()), (9, 3.0));
    assert_eq!(t.record.outcome_type, "community-education");
    assert!(t.losses.is_empty());
}

#[test]
fn identity_validates_and_records_the_table() {
    let mut v = cqf(8, 2.3, 62.1, "micro-credential");
    v["framework"] = json!("wfs");
    let r = LearningRecord::from_json(&v).unwrap();
    let t = translate(&r, "wfs", "wfs", &MappingTable::reference()).unwrap();
    assert_eq!(t.record, r);
    assert!(t.losses.is_empty());
    assert_eq!(t.table_version, "1.0.0");
    let mut bad = v.clone();
    bad["level"] = json!(9);
    let e = run(bad, "wfs", "wfs").unwrap_err();
    assert_eq!(
        e,
        MapError::UnknownLevel {
            framework: "wfs".into(),
            level: 9
        }
    );
}

#[test]
fn errors_carry_their_slug() {
    let cases: [(Value, &str, &str, &str); 6] = [
        (
            cqf(11, 1.0, 18.0, "degree-education"),
            "cqf",
            "wfs",
            "unmappable-record",
        ),
        (
            cqf(0, 1.0, 18.0, "degree-education"),
            "cqf",
            "wfs",
            "unmappable-record",
        ),
        (
            cqf(3, 1.0, 18.0, "apprenticeship"),
            "cqf",
            "wfs",
            "unmappable-record",
        ),
        (
            cqf(3, 1.0, 18.0, "degree-education"),
            "wfs",
            "cqf",
            "unmappable-record",
        ),
        (
            cqf(3, 1.0, 18.0, "degree-education"),
            "cqf",
            "eqf",
            "mapping-version-unknown",
        ),
        (cqf(3, 1.0, 18.0, "degree-education"), "cqf", "wfs", "ok"),
    ];
    for (v, from, to, slug) in cases {
        assert_eq!(
            run(v, from, to).map_or_else(|e| e.slug(), |_| "ok"),
            slug,
            "{from}->{to}"
        );
    }
    let mut v = cqf(3, 1.0, 18.0, "degree-education");
    v["frameworkVersion"] = json!("2.0.0");
    assert_eq!(
        run(v, "cqf", "wfs").unwrap_err(),
        MapError::UnknownFrameworkVersion {
            framework: "cqf".into(),
            version: "2.0.0".into(),
            known: "1.0.0".into()
        }
    );
    let mut r = LearningRecord::from_json(&cqf(3, 1.0, 18.0, "degree-education")).unwrap();
    r.title.zh = " ".into();
    assert_eq!(
        translate(&r, "cqf", "wfs", &MappingTable::reference())
            .unwrap_err()
            .slug(),
        "schema-violation"
    );
}

#[test]
fn provenance_json_shape() {
    let t = run(cqf(1, 1.0, 18.0, "community-education"), "cqf", "wfs").unwrap();
    assert_eq!(
        t.provenance_json(),
        json!({"tableId": "cqf-ref~wfs-ref", "tableVersion": "1.0.0", "losses": [
            {"field": "level", "reason": "level-band-merged", "source": 1, "target": 1},
            {"field": "credits", "reason": "credits-rounded-down", "source": 1, "target": 0.6}
        ]})
    );
}

#[test]
fn outcome_types_are_named_by_id_or_chinese_label() {
    let by_label = run(cqf(5, 4.0, 72.0, "职业技能等级"), "cqf", "wfs").unwrap();
    let by_id = run(cqf(5, 4.0, 72.0, "vocational-skill-level"), "cqf", "wfs").unwrap();
    assert_eq!(by_label.record, by_id.record);
    assert_eq!(by_label.record.outcome_type, "vocational-qualification");

    // Identity translation normalises the name to the id and changes nothing else.
    let same = run(cqf(5, 4.0, 72.0, "微证书"), "cqf", "cqf").unwrap();
    assert_eq!(same.record.outcome_type, "micro-credential");
    assert_eq!(
        same.record.credits,
        run(cqf(5, 4.0, 72.0, "micro-credential"), "cqf", "cqf")
            .unwrap()
            .record
            .credits
    );

    assert!(matches!(
        run(cqf(5, 4.0, 72.0, "职业技能"), "cqf", "wfs"),
        Err(MapError::UnknownOutcomeType { .. })
    ));
}
