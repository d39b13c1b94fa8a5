//! Error types: [`MapError`] for records and translations, [`TableError`] for
//! mapping tables. Every `MapError` maps onto exactly one SPEC §4 problem slug,
//! so callers never have to guess which problem to report.

use thiserror::Error;

/// Why a record could not be read or translated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    /// The record is not a well-formed learning record (wrong type, missing
    /// or unknown field, out-of-range number, bad date, oversized text).
    #[error("schema violation at `{field}`: {reason}")]
    Schema { field: String, reason: String },

    /// The record claims a different framework than the one translated from.
    #[error("record is in framework `{record}` but the translation is from `{from}`")]
    FrameworkMismatch { record: String, from: String },

    /// The record's level is not defined in its framework.
    #[error("level {level} is not defined in framework `{framework}`")]
    UnknownLevel { framework: String, level: u64 },

    /// The record's outcome type is not defined in its framework.
    #[error("outcome type `{outcome_type}` is not defined in framework `{framework}`")]
    UnknownOutcomeType { framework: String, outcome_type: String },

    /// `from` or `to` names a framework the table does not cover.
    #[error("framework `{framework}` is not covered by mapping table {table_id} {table_version}")]
    UnknownFramework {
        framework: String,
        table_id: String,
        table_version: String,
    },

    /// The record's `frameworkVersion` is not the version the table knows.
    #[error("framework `{framework}` version `{version}` is unknown (table knows `{known}`)")]
    UnknownFrameworkVersion {
        framework: String,
        version: String,
        known: String,
    },
}

impl MapError {
    /// The SPEC §4 problem slug (`urn:bashu:problem:<slug>`) for this error.
    pub fn slug(&self) -> &'static str {
        match self {
            MapError::Schema { .. } => "schema-violation",
            MapError::FrameworkMismatch { .. }
            | MapError::UnknownLevel { .. }
            | MapError::UnknownOutcomeType { .. } => "unmappable-record",
            MapError::UnknownFramework { .. } | MapError::UnknownFrameworkVersion { .. } => {
                "mapping-version-unknown"
            }
        }
    }

    pub(crate) fn schema(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MapError::Schema {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why a mapping table was rejected at load. A table that fails any check is
/// never constructed, so a translation can only ever use a valid one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TableError {
    /// Not valid TOML/JSON, or not the shape of a mapping table.
    #[error("mapping table does not parse: {0}")]
    Parse(String),

    #[error("{what} `{value}` is not a semantic version (MAJOR.MINOR.PATCH)")]
    BadSemver { what: String, value: String },

    #[error("duplicate {what} `{id}`")]
    DuplicateId { what: String, id: String },

    /// A framework is defined but is neither `home` nor `interchange`.
    #[error("framework `{id}` is defined but neither home nor interchange")]
    UnusedFramework { id: String },

    /// `home`/`interchange` name a framework the table does not define.
    #[error("{role} framework `{id}` is not defined in the table")]
    UnknownFramework { role: &'static str, id: String },

    /// A field that must be non-empty text is empty or too long.
    #[error("{what} must be non-empty text of at most {max} bytes")]
    BadText { what: String, max: usize },

    #[error("framework `{framework}`: hours per credit must be in 1..={max}, got {value}")]
    BadHoursPerCredit { framework: String, value: i64, max: i64 },

    #[error("framework `{framework}`: credit step must be a multiple of 0.001 in (0, 1], got {value}")]
    BadCreditStep { framework: String, value: String },

    /// Framework levels must be exactly 1, 2, …, n in order.
    #[error("framework `{framework}`: levels must be 1..=n in order, found {found} at position {position}")]
    LevelSequence {
        framework: String,
        position: usize,
        found: i64,
    },

    #[error("framework `{framework}` defines no {what}")]
    Empty { framework: String, what: &'static str },

    /// A correspondence row refers to a level its framework does not define.
    #[error("level correspondence refers to level {level}, undefined in framework `{framework}`")]
    UnknownLevel { framework: String, level: i64 },

    /// A band is written high-to-low (`[5, 3]`).
    #[error("level band [{lo}, {hi}] is reversed")]
    ReversedBand { lo: i64, hi: i64 },

    /// Two rows claim the same home level.
    #[error("home level {level} is mapped twice")]
    LevelOverlap { level: i64 },

    /// A home level between two bands is mapped by neither.
    #[error("home level {level} is not mapped")]
    LevelGap { level: i64 },

    /// An interchange level has no home band, so the way back is undefined.
    #[error("interchange level {level} has no home band")]
    InterchangeLevelUnmapped { level: i64 },

    /// Rows must go up together: a higher home band never maps lower.
    #[error("level correspondence crosses order: home band starting {home} maps to {interchange}, below an earlier band")]
    OrderCrossing { home: i64, interchange: i64 },

    #[error("outcome map refers to outcome type `{id}`, undefined in framework `{framework}`")]
    UnknownOutcomeType { framework: String, id: String },

    /// Every outcome type must be mapped, in each direction.
    #[error("outcome type `{id}` of framework `{framework}` is not mapped")]
    OutcomeTypeUnmapped { framework: String, id: String },
}
