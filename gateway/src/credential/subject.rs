//! A learning credential's subject: the learner's id and the learning
//! record around it. Every place that maps or checks a subject (the accept
//! path, recomputing a peer's translation, `bashu credential issue`) splits
//! it here, so they agree on what a subject is.

use crate::problem::{Problem, ProblemType};
use schema_mapper::{LearningRecord, MapError};
use serde_json::Value;

/// Why a subject is not a learner id plus a learning record.
#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    #[error("credentialSubject must be an object")]
    NotObject,
    #[error("credentialSubject.id (the learner id) is required")]
    MissingId,
    #[error("{0}")]
    Record(#[from] MapError),
}

impl SubjectError {
    /// The SPEC §4 problem type: a mapper error names its own.
    pub fn kind(&self) -> ProblemType {
        match self {
            SubjectError::Record(e) => ProblemType::of_mapping(e),
            SubjectError::NotObject | SubjectError::MissingId => ProblemType::SchemaViolation,
        }
    }
}

impl From<SubjectError> for Problem {
    fn from(e: SubjectError) -> Self {
        Problem::new(e.kind(), e.to_string())
    }
}

/// Splits `subject` into the learner id and the learning record (every
/// other member).
pub fn split_subject(subject: &Value) -> Result<(Value, LearningRecord), SubjectError> {
    let Value::Object(fields) = subject else {
        return Err(SubjectError::NotObject);
    };
    let learner = fields.get("id").ok_or(SubjectError::MissingId)?.clone();
    let record = LearningRecord::from_subject(fields)?;
    Ok((learner, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_subject_needs_an_object_and_a_learner_id() {
        assert!(matches!(split_subject(&json!("x")), Err(SubjectError::NotObject)));
        assert!(matches!(
            split_subject(&json!({"framework": "cqf"})),
            Err(SubjectError::MissingId)
        ));
        let p = Problem::from(split_subject(&json!({})).unwrap_err());
        assert_eq!(p.kind, ProblemType::SchemaViolation);
        assert!(matches!(
            split_subject(&json!({"id": "did:example:1", "framework": "nope"})),
            Err(SubjectError::Record(_))
        ));
    }
}
