//! Mapping tables: two frameworks (a *home* framework such as CQF and the
//! *interchange* framework WFS) and the correspondences between them.
//!
//! A table is data (TOML or JSON). [`MappingTable`] can only be obtained by
//! parsing and validating that data, and is immutable afterwards, so a
//! translation can never run on a table with gaps, overlaps, crossings or
//! zero hours per credit. Validation also precomputes both directions as
//! index vectors, so translating is a few array lookups.

use crate::error::{MapError, TableError};
use crate::record::{MAX_ID_LEN, MAX_TEXT_LEN};
use crate::semver::is_semver;
use crate::units::Credits;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

/// Largest accepted hours-per-credit; keeps credit arithmetic far from overflow.
pub const MAX_HOURS_PER_CREDIT: i64 = 10_000;

/// The bundled reference table (`cqf-ref~wfs-ref` 1.0.0).
pub const REFERENCE_TOML: &str = include_str!("../data/cqf-ref~wfs-ref.toml");

/// Chinese and English text of a name or descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub zh: String,
    pub en: String,
}

/// One level of a framework and its learning-outcome descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelDescriptor {
    pub level: i64,
    pub zh: String,
    pub en: String,
}

/// One outcome type (kind of learning) a framework recognises.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeType {
    pub id: String,
    pub zh: String,
    pub en: String,
}

/// A validated qualifications framework: levels `1..=n`, outcome types and
/// its credit rule (hours per credit, credit step for rounding down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framework {
    id: String,
    table: String,
    version: String,
    name: Text,
    hours_per_credit: u64,
    credit_step: Credits,
    levels: Vec<LevelDescriptor>,
    outcome_types: Vec<OutcomeType>,
}

impl Framework {
    /// Framework id used in records (`cqf`, `wfs`).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Id of the data table defining it (`cqf-ref`), naming its provenance.
    pub fn table(&self) -> &str {
        &self.table
    }
    /// The `frameworkVersion` records of this framework carry.
    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn name(&self) -> &Text {
        &self.name
    }
    /// Notional learning hours behind one credit.
    pub fn hours_per_credit(&self) -> u64 {
        self.hours_per_credit
    }
    /// Credits in this framework are floored to a multiple of this step.
    pub fn credit_step(&self) -> Credits {
        self.credit_step
    }
    /// Levels in order; `levels()[i].level == i + 1`.
    pub fn levels(&self) -> &[LevelDescriptor] {
        &self.levels
    }
    pub fn outcome_types(&self) -> &[OutcomeType] {
        &self.outcome_types
    }
    /// Number of levels, i.e. the highest level.
    pub fn top_level(&self) -> u32 {
        u32::try_from(self.levels.len()).unwrap_or(u32::MAX)
    }
    /// Index of `level` in [`Self::levels`], if defined.
    pub(crate) fn level_index(&self, level: u32) -> Option<usize> {
        let i = usize::try_from(level).ok()?.checked_sub(1)?;
        (i < self.levels.len()).then_some(i)
    }
    /// Index of the outcome type named `name` in [`Self::outcome_types`]:
    /// its id, or its Chinese label (credit banks record 学历教育, not
    /// `degree-education`). Validation keeps ids and labels one namespace,
    /// so a name never matches two types.
    pub(crate) fn outcome_index(&self, name: &str) -> Option<usize> {
        self.outcome_types
            .iter()
            .position(|o| o.id == name || o.zh == name)
    }
}

/// One direction of a table, precomputed: source index → target index, and
/// whether other sources share that target (information is merged).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Direction {
    pub(crate) level: Vec<usize>,
    pub(crate) level_merged: Vec<bool>,
    pub(crate) outcome: Vec<usize>,
    pub(crate) outcome_merged: Vec<bool>,
}

#[derive(Debug, PartialEq, Eq)]
struct TableData {
    id: String,
    version: String,
    reference: bool,
    description: String,
    home: Framework,
    interchange: Framework,
    up: Direction,
    down: Direction,
}

/// A validated mapping table. Cloning is cheap (shared, immutable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingTable(Arc<TableData>);

/// How a translation between two framework ids is carried out.
pub(crate) enum Route<'a> {
    /// `from == to`: validate against the framework, change nothing.
    Identity(&'a Framework),
    Cross {
        source: &'a Framework,
        target: &'a Framework,
        dir: &'a Direction,
    },
}

static REFERENCE: LazyLock<MappingTable> = LazyLock::new(|| {
    // The input is a compile-time constant; `reference_table_is_valid` (unit
    // test) proves it parses, so this cannot fail for any runtime input.
    #[allow(clippy::expect_used)]
    MappingTable::from_toml_str(REFERENCE_TOML).expect("bundled reference table is valid")
});

impl MappingTable {
    /// The bundled reference table `cqf-ref~wfs-ref` 1.0.0.
    pub fn reference() -> MappingTable {
        REFERENCE.clone()
    }

    /// Parses and validates a table written in TOML.
    pub fn from_toml_str(s: &str) -> Result<MappingTable, TableError> {
        let raw: RawTable = toml::from_str(s).map_err(|e| TableError::Parse(e.message().to_owned()))?;
        raw.validate()
    }

    /// Parses and validates a table written in JSON (same shape as TOML).
    pub fn from_json_str(s: &str) -> Result<MappingTable, TableError> {
        let raw: RawTable = serde_json::from_str(s).map_err(|e| TableError::Parse(e.to_string()))?;
        raw.validate()
    }

    /// Table id, e.g. `cqf-ref~wfs-ref`.
    pub fn id(&self) -> &str {
        &self.0.id
    }
    /// Semantic version of the table.
    pub fn version(&self) -> &str {
        &self.0.version
    }
    /// True for bundled-style reference data, not an official text.
    pub fn is_reference(&self) -> bool {
        self.0.reference
    }
    pub fn description(&self) -> &str {
        &self.0.description
    }
    /// The home framework (e.g. `cqf`).
    pub fn home(&self) -> &Framework {
        &self.0.home
    }
    /// The interchange framework (`wfs`).
    pub fn interchange(&self) -> &Framework {
        &self.0.interchange
    }
    /// The framework with id `id`, if the table covers it.
    pub fn framework(&self, id: &str) -> Option<&Framework> {
        [&self.0.home, &self.0.interchange]
            .into_iter()
            .find(|f| f.id == id)
    }

    /// Interchange level for a home level (`None` if undefined).
    pub fn home_to_interchange_level(&self, level: u32) -> Option<u32> {
        let i = self.0.home.level_index(level)?;
        u32::try_from(self.0.up.level[i] + 1).ok()
    }

    /// Home level for an interchange level: the lowest level of its band.
    pub fn interchange_to_home_level(&self, level: u32) -> Option<u32> {
        let i = self.0.interchange.level_index(level)?;
        u32::try_from(self.0.down.level[i] + 1).ok()
    }

    /// The home levels `lo..=hi` that map to an interchange level.
    pub fn home_band(&self, interchange_level: u32) -> Option<(u32, u32)> {
        let i = self.0.interchange.level_index(interchange_level)?;
        let band = self
            .0
            .up
            .level
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == i)
            .map(|(s, _)| s + 1);
        let lo = u32::try_from(band.clone().min()?).ok()?;
        let hi = u32::try_from(band.max()?).ok()?;
        Some((lo, hi))
    }

    pub(crate) fn route(&self, from: &str, to: &str) -> Result<Route<'_>, MapError> {
        let source = self.framework_or_err(from)?;
        let target = self.framework_or_err(to)?;
        Ok(if from == to {
            Route::Identity(source)
        } else if source.id == self.0.home.id {
            Route::Cross {
                source,
                target,
                dir: &self.0.up,
            }
        } else {
            Route::Cross {
                source,
                target,
                dir: &self.0.down,
            }
        })
    }

    fn framework_or_err(&self, id: &str) -> Result<&Framework, MapError> {
        self.framework(id).ok_or_else(|| MapError::UnknownFramework {
            framework: id.to_owned(),
            table_id: self.0.id.clone(),
            table_version: self.0.version.clone(),
        })
    }
}

// ---- the data shape, as written in TOML/JSON, and its validation ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    id: String,
    version: String,
    #[serde(default)]
    reference: bool,
    #[serde(default)]
    description: String,
    home: String,
    interchange: String,
    frameworks: Vec<RawFramework>,
    levels: Vec<RawLevelRow>,
    outcome_types: Vec<RawOutcomeRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFramework {
    id: String,
    table: String,
    version: String,
    name: Text,
    hours_per_credit: i64,
    credit_step: f64,
    levels: Vec<LevelDescriptor>,
    outcome_types: Vec<OutcomeType>,
}

/// A home band (one level or `[lo, hi]`) and the interchange level it maps to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevelRow {
    home: Band,
    interchange: i64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Band {
    One(i64),
    Range([i64; 2]),
}

/// Home outcome type → interchange outcome type. Several home types may share
/// one interchange type; the way back then uses the first row listed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutcomeRow {
    home: String,
    interchange: String,
}

fn check_id(what: &str, s: &str) -> Result<(), TableError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+~".contains(&b));
    ok.then_some(()).ok_or_else(|| TableError::BadText {
        what: what.to_owned(),
        max: MAX_ID_LEN,
    })
}

fn check_text(what: &str, s: &str) -> Result<(), TableError> {
    let ok = !s.trim().is_empty() && s.len() <= MAX_TEXT_LEN;
    ok.then_some(()).ok_or_else(|| TableError::BadText {
        what: what.to_owned(),
        max: MAX_TEXT_LEN,
    })
}

fn check_semver(what: &str, s: &str) -> Result<(), TableError> {
    is_semver(s).then_some(()).ok_or_else(|| TableError::BadSemver {
        what: what.to_owned(),
        value: s.to_owned(),
    })
}

impl RawTable {
    fn validate(self) -> Result<MappingTable, TableError> {
        let RawTable {
            id,
            version,
            reference,
            description,
            home,
            interchange,
            mut frameworks,
            levels,
            outcome_types,
        } = self;
        check_id("table id", &id)?;
        check_semver("table version", &version)?;
        let mut seen = HashSet::new();
        if let Some(dup) = frameworks.iter().find(|f| !seen.insert(f.id.as_str())) {
            return Err(TableError::DuplicateId {
                what: "framework".into(),
                id: dup.id.clone(),
            });
        }
        if home == interchange {
            return Err(TableError::DuplicateId {
                what: "home/interchange framework".into(),
                id: home,
            });
        }
        let home = take_framework(&mut frameworks, "home", &home)?;
        let interchange = take_framework(&mut frameworks, "interchange", &interchange)?;
        if let Some(extra) = frameworks.first() {
            return Err(TableError::UnusedFramework { id: extra.id.clone() });
        }
        let (home, interchange) = (home.validate()?, interchange.validate()?);
        let (up_level, down_level) = level_maps(&home, &interchange, &levels)?;
        let (up_outcome, down_outcome) = outcome_maps(&home, &interchange, &outcome_types)?;
        Ok(MappingTable(Arc::new(TableData {
            id,
            version,
            reference,
            description,
            up: Direction::new(up_level, up_outcome),
            down: Direction::new(down_level, down_outcome),
            home,
            interchange,
        })))
    }
}

/// Removes and returns the framework `id` that the table names as `role`.
fn take_framework(
    frameworks: &mut Vec<RawFramework>,
    role: &'static str,
    id: &str,
) -> Result<RawFramework, TableError> {
    match frameworks.iter().position(|f| f.id == id) {
        Some(i) => Ok(frameworks.swap_remove(i)),
        None => Err(TableError::UnknownFramework {
            role,
            id: id.to_owned(),
        }),
    }
}

impl RawFramework {
    fn validate(self) -> Result<Framework, TableError> {
        let fid = self.id.clone();
        check_id("framework id", &self.id)?;
        check_id("framework table id", &self.table)?;
        check_semver(&format!("framework `{fid}` version"), &self.version)?;
        check_text(&format!("framework `{fid}` name.zh"), &self.name.zh)?;
        check_text(&format!("framework `{fid}` name.en"), &self.name.en)?;
        if !(1..=MAX_HOURS_PER_CREDIT).contains(&self.hours_per_credit) {
            return Err(TableError::BadHoursPerCredit {
                framework: fid,
                value: self.hours_per_credit,
                max: MAX_HOURS_PER_CREDIT,
            });
        }
        let credit_step = Credits::from_f64(self.credit_step)
            .ok()
            .filter(|s| (1..=1000).contains(&s.millis()))
            .ok_or_else(|| TableError::BadCreditStep {
                framework: fid.clone(),
                value: self.credit_step.to_string(),
            })?;
        if self.levels.is_empty() {
            return Err(TableError::Empty {
                framework: fid,
                what: "levels",
            });
        }
        for (position, l) in self.levels.iter().enumerate() {
            if usize::try_from(l.level).ok() != Some(position + 1) {
                return Err(TableError::LevelSequence {
                    framework: fid,
                    position,
                    found: l.level,
                });
            }
            check_text(&format!("framework `{fid}` level {} zh", l.level), &l.zh)?;
            check_text(&format!("framework `{fid}` level {} en", l.level), &l.en)?;
        }
        if self.outcome_types.is_empty() {
            return Err(TableError::Empty {
                framework: fid,
                what: "outcome types",
            });
        }
        let mut seen = HashSet::new();
        for o in &self.outcome_types {
            check_id(&format!("framework `{fid}` outcome type id"), &o.id)?;
            check_text(&format!("outcome type `{}` zh", o.id), &o.zh)?;
            check_text(&format!("outcome type `{}` en", o.id), &o.en)?;
            // Ids and zh labels are both accepted as names in records: no
            // name may denote two types (a type's label may equal its own id).
            let names: &[&str] = if o.zh == o.id {
                &[o.id.as_str()]
            } else {
                &[o.id.as_str(), o.zh.as_str()]
            };
            for &name in names {
                if !seen.insert(name) {
                    return Err(TableError::DuplicateId {
                        what: format!("outcome type id or zh label of framework `{fid}`"),
                        id: name.to_owned(),
                    });
                }
            }
        }
        Ok(Framework {
            hours_per_credit: self.hours_per_credit.unsigned_abs(),
            id: self.id,
            table: self.table,
            version: self.version,
            name: self.name,
            credit_step,
            levels: self.levels,
            outcome_types: self.outcome_types,
        })
    }
}

/// Index of `level` in `f`, or the table error naming it.
fn level_in(f: &Framework, level: i64) -> Result<usize, TableError> {
    u32::try_from(level)
        .ok()
        .and_then(|l| f.level_index(l))
        .ok_or_else(|| TableError::UnknownLevel {
            framework: f.id.clone(),
            level,
        })
}

/// Level maps both ways. Home levels must be covered exactly once (no gap,
/// no overlap), the map must never go down as home levels go up (no
/// crossing), and every interchange level must be hit (so the way back is
/// defined); it goes to the lowest home level of its band (never inflates).
fn level_maps(
    home: &Framework,
    ic: &Framework,
    rows: &[RawLevelRow],
) -> Result<(Vec<usize>, Vec<usize>), TableError> {
    let mut up: Vec<Option<usize>> = vec![None; home.levels.len()];
    for row in rows {
        let (lo, hi) = match row.home {
            Band::One(l) => (l, l),
            Band::Range([lo, hi]) => (lo, hi),
        };
        if lo > hi {
            return Err(TableError::ReversedBand { lo, hi });
        }
        let (lo_i, hi_i) = (level_in(home, lo)?, level_in(home, hi)?);
        let target = level_in(ic, row.interchange)?;
        for (i, slot) in up.iter_mut().enumerate().take(hi_i + 1).skip(lo_i) {
            if slot.replace(target).is_some() {
                return Err(TableError::LevelOverlap { level: i as i64 + 1 });
            }
        }
    }
    let mut up_done = Vec::with_capacity(up.len());
    for (i, slot) in up.into_iter().enumerate() {
        let target = slot.ok_or(TableError::LevelGap { level: i as i64 + 1 })?;
        if up_done.last().is_some_and(|prev| target < *prev) {
            return Err(TableError::OrderCrossing {
                home: i as i64 + 1,
                interchange: target as i64 + 1,
            });
        }
        up_done.push(target);
    }
    let down = (0..ic.levels.len())
        .map(|t| {
            up_done
                .iter()
                .position(|x| *x == t)
                .ok_or(TableError::InterchangeLevelUnmapped { level: t as i64 + 1 })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((up_done, down))
}

/// Outcome-type maps both ways: each home type mapped exactly once, each
/// interchange type at least once (back to the first home type listed).
fn outcome_maps(
    home: &Framework,
    ic: &Framework,
    rows: &[RawOutcomeRow],
) -> Result<(Vec<usize>, Vec<usize>), TableError> {
    let unknown = |f: &Framework, id: &str| TableError::UnknownOutcomeType {
        framework: f.id.clone(),
        id: id.to_owned(),
    };
    let mut up: Vec<Option<usize>> = vec![None; home.outcome_types.len()];
    let mut down: Vec<Option<usize>> = vec![None; ic.outcome_types.len()];
    for row in rows {
        let h = home
            .outcome_index(&row.home)
            .ok_or_else(|| unknown(home, &row.home))?;
        let t = ic
            .outcome_index(&row.interchange)
            .ok_or_else(|| unknown(ic, &row.interchange))?;
        if up[h].replace(t).is_some() {
            return Err(TableError::DuplicateId {
                what: "outcome mapping of home type".into(),
                id: row.home.clone(),
            });
        }
        down[t].get_or_insert(h);
    }
    let complete = |f: &Framework, v: Vec<Option<usize>>| {
        v.into_iter()
            .enumerate()
            .map(|(i, x)| {
                x.ok_or_else(|| TableError::OutcomeTypeUnmapped {
                    framework: f.id.clone(),
                    id: f.outcome_types[i].id.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok((complete(home, up)?, complete(ic, down)?))
}

impl Direction {
    fn new(level: Vec<usize>, outcome: Vec<usize>) -> Direction {
        Direction {
            level_merged: merged(&level),
            level,
            outcome_merged: merged(&outcome),
            outcome,
        }
    }
}

/// For each source, whether another source maps to the same target.
fn merged(map: &[usize]) -> Vec<bool> {
    map.iter()
        .map(|t| map.iter().filter(|x| *x == t).count() > 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_table_is_valid() {
        let t = MappingTable::from_toml_str(REFERENCE_TOML).unwrap();
        assert_eq!(
            (t.id(), t.version(), t.is_reference()),
            ("cqf-ref~wfs-ref", "1.0.0", true)
        );
        assert_eq!(
            (t.home().id(), t.home().table(), t.home().top_level()),
            ("cqf", "cqf-ref", 10)
        );
        assert_eq!(
            (
                t.interchange().id(),
                t.interchange().table(),
                t.interchange().top_level()
            ),
            ("wfs", "wfs-ref", 8)
        );
        assert_eq!(
            (t.home().hours_per_credit(), t.interchange().hours_per_credit()),
            (18, 27)
        );
        assert_eq!(MappingTable::reference(), t);
    }

    #[test]
    fn reference_levels() {
        let t = MappingTable::reference();
        let up: Vec<u32> = (1..=10).filter_map(|l| t.home_to_interchange_level(l)).collect();
        assert_eq!(up, [1, 1, 2, 3, 4, 5, 6, 7, 8, 8]);
        let down: Vec<u32> = (1..=8).filter_map(|l| t.interchange_to_home_level(l)).collect();
        assert_eq!(down, [1, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(t.home_band(8), Some((9, 10)));
        assert_eq!(t.home_to_interchange_level(0), None);
        assert_eq!(t.home_to_interchange_level(11), None);
    }
}
