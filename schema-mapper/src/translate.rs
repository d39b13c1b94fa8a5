//! Translation of one record between two frameworks of a table.
//!
//! Level and outcome type go through the table's precomputed maps. Credits
//! convert through learning hours: the hours a record's credits stand for
//! (capped by the hours it actually reports, so an inflated claim is not
//! carried over) are divided by the target's hours per credit and floored to
//! the target's credit step. Everything else is carried unchanged, and every
//! loss of information is reported as a [`LossNote`].

use crate::error::MapError;
use crate::record::LearningRecord;
use crate::table::{Framework, MappingTable, Route};
use crate::units::Credits;
use serde::Serialize;
use serde_json::{json, Value};

/// A translated record and the provenance the gateway signs with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// The record in the target framework (`framework`/`frameworkVersion`
    /// are the target's).
    pub record: LearningRecord,
    pub table_id: String,
    pub table_version: String,
    /// What the target cannot express, in record field order.
    pub losses: Vec<LossNote>,
}

/// Why information was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// Several source levels share the target level; the source level is
    /// not recoverable from the target.
    LevelBandMerged,
    /// Several source outcome types share the target outcome type.
    OutcomeTypeMerged,
    /// The credits claimed more hours than `learningHours`; the hours were used.
    CreditsCappedByHours,
    /// The converted credits were floored to the target's credit step.
    CreditsRoundedDown,
}

/// One loss of information: the field, the reason, and both values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LossNote {
    /// Record field name as in JSON (`level`, `credits`, `outcomeType`).
    pub field: &'static str,
    pub reason: LossReason,
    pub source: Value,
    pub target: Value,
}

impl Translation {
    /// `{tableId, tableVersion, losses}`: what a translation credential's
    /// evidence and `bashu map` output record about how it was made.
    pub fn provenance_json(&self) -> Value {
        json!({
            "tableId": self.table_id,
            "tableVersion": self.table_version,
            "losses": self.losses.iter().map(LossNote::to_json).collect::<Vec<_>>(),
        })
    }
}

impl LossNote {
    pub fn to_json(&self) -> Value {
        json!({"field": self.field, "reason": self.reason.slug(), "source": self.source, "target": self.target})
    }
}

impl LossReason {
    /// The wire name of the reason in provenance.
    pub fn slug(self) -> &'static str {
        match self {
            LossReason::LevelBandMerged => "level-band-merged",
            LossReason::OutcomeTypeMerged => "outcome-type-merged",
            LossReason::CreditsCappedByHours => "credits-capped-by-hours",
            LossReason::CreditsRoundedDown => "credits-rounded-down",
        }
    }
}

impl Serialize for LossReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.slug())
    }
}

/// Translates `record` from framework `from` to framework `to` with `table`.
///
/// `from == to` is the identity: the record is validated against the
/// framework and returned unchanged, with the table version recorded.
/// Errors: [`MapError::Schema`] for an invalid record;
/// [`MapError::UnknownFramework`]/[`MapError::UnknownFrameworkVersion`] if
/// the table does not know `from`, `to` or the record's version;
/// [`MapError::FrameworkMismatch`], [`MapError::UnknownLevel`],
/// [`MapError::UnknownOutcomeType`] if the record cannot be mapped.
pub fn translate(
    record: &LearningRecord,
    from: &str,
    to: &str,
    table: &MappingTable,
) -> Result<Translation, MapError> {
    record.validate()?;
    let route = table.route(from, to)?;
    if record.framework != from {
        return Err(MapError::FrameworkMismatch {
            record: record.framework.clone(),
            from: from.to_owned(),
        });
    }
    let source = match &route {
        Route::Identity(f) => *f,
        Route::Cross { source, .. } => *source,
    };
    if record.framework_version != source.version() {
        return Err(MapError::UnknownFrameworkVersion {
            framework: source.id().to_owned(),
            version: record.framework_version.clone(),
            known: source.version().to_owned(),
        });
    }
    let level = source
        .level_index(record.level)
        .ok_or_else(|| MapError::UnknownLevel {
            framework: source.id().to_owned(),
            level: u64::from(record.level),
        })?;
    let outcome = source
        .outcome_index(&record.outcome_type)
        .ok_or_else(|| MapError::UnknownOutcomeType {
            framework: source.id().to_owned(),
            outcome_type: record.outcome_type.clone(),
        })?;

    let (target, dir) = match route {
        Route::Identity(f) => {
            // Same framework: only the outcome type's name is normalised to its id.
            let mut same = record.clone();
            same.outcome_type = f.outcome_types()[outcome].id.clone();
            return Ok(finish(same, table, Vec::new()));
        }
        Route::Cross { target, dir, .. } => (target, dir),
    };
    // `level` and `outcome` index the source framework, and a validated
    // table's direction maps have exactly one entry per source item, each a
    // valid target index: the lookups below cannot go out of bounds.
    let mut losses = Vec::new();
    let target_level = level_number(dir.level[level]);
    if dir.level_merged[level] {
        losses.push(note(
            "level",
            LossReason::LevelBandMerged,
            record.level.into(),
            target_level.into(),
        ));
    }
    let target_outcome = &target.outcome_types()[dir.outcome[outcome]].id;
    if dir.outcome_merged[outcome] {
        losses.push(note(
            "outcomeType",
            LossReason::OutcomeTypeMerged,
            record.outcome_type.as_str().into(),
            target_outcome.as_str().into(),
        ));
    }
    let credits = convert_credits(record, source, target, &mut losses)?;
    let out = LearningRecord {
        framework: target.id().to_owned(),
        framework_version: target.version().to_owned(),
        level: target_level,
        credits,
        learning_hours: record.learning_hours,
        outcome_type: target_outcome.clone(),
        title: record.title.clone(),
        awarded_on: record.awarded_on.clone(),
        awarding_body: record.awarding_body.clone(),
        extensions: record.extensions.clone(),
    };
    Ok(finish(out, table, losses))
}

fn finish(record: LearningRecord, table: &MappingTable, losses: Vec<LossNote>) -> Translation {
    Translation {
        record,
        table_id: table.id().to_owned(),
        table_version: table.version().to_owned(),
        losses,
    }
}

fn note(field: &'static str, reason: LossReason, source: Value, target: Value) -> LossNote {
    LossNote {
        field,
        reason,
        source,
        target,
    }
}

/// Level number of a level index (indices come from a validated table, whose
/// level count fits in `u32`).
fn level_number(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// Credits in the target framework, never worth more hours than the source
/// credits or the reported learning hours. Exact integer arithmetic in
/// thousandths of an hour; `u128` cannot overflow for `u64` operands.
fn convert_credits(
    record: &LearningRecord,
    source: &Framework,
    target: &Framework,
    losses: &mut Vec<LossNote>,
) -> Result<Credits, MapError> {
    let claimed = u128::from(record.credits.millis()) * u128::from(source.hours_per_credit());
    let reported = u128::from(record.learning_hours.millis());
    let basis = claimed.min(reported);
    let step = u128::from(target.hours_per_credit()) * u128::from(target.credit_step().millis());
    let millis = basis / step * u128::from(target.credit_step().millis());
    // basis <= reported hours, so the result is at most MAX_HOURS credits.
    let credits = u64::try_from(millis)
        .ok()
        .and_then(Credits::from_millis)
        .ok_or_else(|| MapError::schema("credits", "converted value out of range"))?;
    if claimed > reported {
        losses.push(note(
            "credits",
            LossReason::CreditsCappedByHours,
            record.credits.to_json(),
            record.learning_hours.to_json(),
        ));
    }
    if millis * u128::from(target.hours_per_credit()) < basis {
        losses.push(note(
            "credits",
            LossReason::CreditsRoundedDown,
            record.credits.to_json(),
            credits.to_json(),
        ));
    }
    Ok(credits)
}
