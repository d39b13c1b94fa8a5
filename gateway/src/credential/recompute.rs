//! Verifiable translations (SPEC v1.1 §3): a translation link is a pure
//! function of its predecessor and the mapping table its evidence names, so
//! the receiver recomputes it and accepts the link only if the signed record
//! is exactly that result. A peer gateway can therefore sign only what the
//! published table says, never an inflated level or credit count.

use super::{CredentialError, VerifiedCredential};
use crate::mapping::MappingTables;
use schema_mapper::{translate, LearningRecord};

/// Checks that `link` (at `index`) is the translation of `prev` with the
/// table its evidence names. Unknown table → `mapping-version-unknown` (the
/// sender retries until the operator installs it); any other difference →
/// `chain-broken`, naming the first field that differs.
pub(super) fn check(
    index: usize,
    prev: &VerifiedCredential,
    link: &VerifiedCredential,
    tables: &MappingTables,
) -> Result<(), CredentialError> {
    let broken = |reason: String| CredentialError::ChainBroken { index, reason };
    let Some(ev) = link.evidence() else {
        return Err(broken("a later link must be a translation credential".into()));
    };
    let Some(table) = tables.get(&ev.table_id, &ev.table_version) else {
        return Err(CredentialError::MappingVersionUnknown {
            index,
            table_id: ev.table_id.clone(),
            version: ev.table_version.clone(),
        });
    };
    let source = record_of(prev).map_err(|e| broken(format!("predecessor's record: {e}")))?;
    let claimed = record_of(link).map_err(|e| broken(format!("translated record: {e}")))?;
    let expected = translate(&source, &source.framework, &claimed.framework, table).map_err(|e| {
        broken(format!(
            "cannot recompute the translation with table {} {}: {e}",
            ev.table_id, ev.table_version
        ))
    })?;
    match first_difference(&expected.record, &claimed) {
        None => Ok(()),
        Some(field) => Err(broken(format!(
            "{field} differs from the translation recomputed with table {} {}",
            ev.table_id, ev.table_version
        ))),
    }
}

/// The learning record of a credential's subject (its `id` set aside).
fn record_of(vc: &VerifiedCredential) -> Result<LearningRecord, String> {
    super::split_subject(vc.subject())
        .map(|(_, record)| record)
        .map_err(|e| e.to_string())
}

/// The first field (SPEC order, wire name) in which two records differ.
fn first_difference(expected: &LearningRecord, claimed: &LearningRecord) -> Option<&'static str> {
    let same = [
        ("framework", expected.framework == claimed.framework),
        (
            "frameworkVersion",
            expected.framework_version == claimed.framework_version,
        ),
        ("level", expected.level == claimed.level),
        ("credits", expected.credits == claimed.credits),
        ("learningHours", expected.learning_hours == claimed.learning_hours),
        ("outcomeType", expected.outcome_type == claimed.outcome_type),
        ("title", expected.title == claimed.title),
        ("awardedOn", expected.awarded_on == claimed.awarded_on),
        ("awardingBody", expected.awarding_body == claimed.awarding_body),
        ("extensions", extensions_equal(expected, claimed)),
    ];
    same.into_iter().find(|(_, eq)| !eq).map(|(field, _)| field)
}

/// Extensions are kept verbatim: same members, same values, same order.
fn extensions_equal(a: &LearningRecord, b: &LearningRecord) -> bool {
    a.extensions.len() == b.extensions.len()
        && a.extensions.iter().zip(b.extensions.iter()).all(|(x, y)| x == y)
}
