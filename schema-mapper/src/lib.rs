//! Pure translation of learning records between qualifications frameworks
//! (SPEC §6), driven by versioned data tables.
//!
//! No I/O and no panics: every function is total and reports failures as
//! [`MapError`] (with its SPEC §4 problem slug) or [`TableError`]. Tables are
//! data ([`MappingTable::from_toml_str`], [`MappingTable::from_json_str`]);
//! the bundled [`MappingTable::reference`] is labelled reference data.
//!
//! ```
//! use schema_mapper::{translate, LearningRecord, MappingTable};
//! let record = LearningRecord::from_json(&serde_json::json!({
//!     "framework": "cqf", "frameworkVersion": "1.0.0", "level": 7,
//!     "credits": 3, "learningHours": 54, "outcomeType": "degree-education",
//!     "title": {"zh": "数据结构", "en": "Data Structures"},
//!     "awardedOn": "2026-06-30", "awardingBody": "重庆大学"
//! }))?;
//! let t = translate(&record, "cqf", "wfs", &MappingTable::reference())?;
//! assert_eq!((t.record.level, t.record.credits.as_f64()), (6, 2.0));
//! assert_eq!(t.table_version, "1.0.0");
//! # Ok::<(), schema_mapper::MapError>(())
//! ```

mod error;
mod record;
mod semver;
mod table;
mod translate;
mod units;

pub use error::{MapError, TableError};
pub use record::{LearningRecord, Title, MAX_EXTENSION_DEPTH, MAX_ID_LEN, MAX_TEXT_LEN};
pub use table::{
    Framework, LevelDescriptor, MappingTable, OutcomeType, Text, MAX_HOURS_PER_CREDIT, REFERENCE_TOML,
};
pub use translate::{translate, LossNote, LossReason, Translation};
pub use units::{Credits, Hours, MAX_CREDITS, MAX_HOURS};
