//! The mapping tables a gateway holds, by table id and version.
//!
//! A translation is a pure function of its predecessor and a published
//! table (SPEC v1.1 §3), so a receiver recomputes every translation link it
//! is handed with the table the link's evidence names. That needs the
//! tables of *every* member's home framework, not only our own: the
//! bundled reference table plus whatever `[mapping] table` and
//! `[mapping] tables` name. Tables are immutable once loaded; a new version
//! is a new entry, and old versions stay so that exchanges translated with
//! them still verify.

use schema_mapper::MappingTable;
use std::collections::BTreeMap;
use std::path::Path;

/// Why a table file could not be added.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error("mapping table {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("mapping table {id} {version} is loaded twice with different contents ({path})")]
    Conflict {
        id: String,
        version: String,
        path: String,
    },
}

/// Every mapping table this gateway knows, keyed by `(id, version)`.
#[derive(Debug, Clone)]
pub struct MappingTables {
    tables: BTreeMap<(String, String), MappingTable>,
}

impl Default for MappingTables {
    fn default() -> Self {
        Self::reference()
    }
}

impl MappingTables {
    /// Only the bundled reference table (`cqf-ref~wfs-ref`).
    pub fn reference() -> Self {
        let mut tables = BTreeMap::new();
        let t = MappingTable::reference();
        tables.insert(key(&t), t);
        Self { tables }
    }

    /// Adds `table`. The same id and version again is fine if the contents
    /// are equal (a member's own table listed twice), a conflict otherwise:
    /// two different tables under one name would make recomputation
    /// ambiguous.
    pub fn insert(&mut self, table: MappingTable, origin: &Path) -> Result<(), TablesError> {
        match self.tables.get(&key(&table)) {
            Some(existing) if existing == &table => Ok(()),
            Some(_) => Err(TablesError::Conflict {
                id: table.id().to_owned(),
                version: table.version().to_owned(),
                path: origin.display().to_string(),
            }),
            None => {
                self.tables.insert(key(&table), table);
                Ok(())
            }
        }
    }

    /// Reads a table file (TOML, or JSON by extension) and adds it.
    pub fn load_file(&mut self, path: &Path) -> Result<MappingTable, TablesError> {
        let table = read_table(path)?;
        self.insert(table.clone(), path)?;
        Ok(table)
    }

    /// The table `id` at exactly `version`.
    pub fn get(&self, id: &str, version: &str) -> Option<&MappingTable> {
        self.tables.get(&(id.to_owned(), version.to_owned()))
    }

    /// `(id, version)` of every table, sorted.
    pub fn ids(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tables.keys().map(|(i, v)| (i.as_str(), v.as_str()))
    }
}

/// Reads one table file: JSON if the extension says so, TOML otherwise.
pub fn read_table(path: &Path) -> Result<MappingTable, TablesError> {
    let load = |reason: String| TablesError::Load {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| load(e.to_string()))?;
    let parsed = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        MappingTable::from_json_str(&text)
    } else {
        MappingTable::from_toml_str(&text)
    };
    parsed.map_err(|e| load(e.to_string()))
}

fn key(t: &MappingTable) -> (String, String) {
    (t.id().to_owned(), t.version().to_owned())
}
