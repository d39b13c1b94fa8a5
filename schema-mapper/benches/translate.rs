//! Throughput of `translate` on the reference table: a batch of realistic
//! records (every level and outcome type, with extensions) in both
//! directions. Criterion reports elements/s; a plain timed loop at the end
//! prints records/s on one core.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup may panic

use criterion::{black_box, criterion_group, Criterion, Throughput};
use schema_mapper::{translate, LearningRecord, MappingTable};
use serde_json::json;
use std::time::Instant;

const CQF_OUTCOMES: [&str; 5] = [
    "degree-education",
    "vocational-skill-level",
    "non-formal-training",
    "community-education",
    "micro-credential",
];
const WFS_OUTCOMES: [&str; 5] = [
    "formal-qualification",
    "vocational-qualification",
    "non-formal-learning",
    "community-learning",
    "micro-credential",
];

/// 1000 records: (record, from, to), alternating CQF→WFS and WFS→CQF.
fn batch() -> Vec<(LearningRecord, &'static str, &'static str)> {
    (0..1000u32)
        .map(|i| {
            let (fw, to, levels, outcomes) =
                if i % 2 == 0 { ("cqf", "wfs", 10, &CQF_OUTCOMES) } else { ("wfs", "cqf", 8, &WFS_OUTCOMES) };
            let credits = f64::from(i % 20) * 0.5 + 0.5;
            let record = LearningRecord::from_json(&json!({
                "framework": fw, "frameworkVersion": "1.0.0", "level": i % levels + 1,
                "credits": credits, "learningHours": credits * 18.0, "outcomeType": outcomes[(i % 5) as usize],
                "title": {"zh": "工业机器人系统运维", "en": "Industrial Robot Systems Operation"},
                "awardedOn": "2026-05-22", "awardingBody": "重庆工程职业技术学院",
                "extensions": {"cq:courseCode": format!("CS-{i}"), "grade": {"score": 88, "scale": "百分制"}}
            }))
            .unwrap();
            (record, fw, to)
        })
        .collect()
}

fn bench_translate(c: &mut Criterion) {
    let table = MappingTable::reference();
    let records = batch();
    let mut group = c.benchmark_group("translate");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("reference-table-mixed-1000", |b| {
        b.iter(|| {
            for (r, from, to) in &records {
                black_box(translate(black_box(r), from, to, &table).unwrap());
            }
        })
    });
    group.finish();
}

/// Single-threaded records/s over ~2 s, printed for the record.
fn print_records_per_second() {
    let table = MappingTable::reference();
    let records = batch();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < 2.0 {
        for (r, from, to) in &records {
            black_box(translate(black_box(r), from, to, &table).unwrap());
        }
        n += records.len() as u64;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("translate: {rate:.0} records/s on one core (reference table, mixed directions)");
}

criterion_group!(benches, bench_translate);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_records_per_second();
}
