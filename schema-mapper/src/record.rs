//! The learning record of SPEC §3: a `credentialSubject` without its `id`.
//!
//! Parsing is total and strict: every way a JSON value can fail to be a record
//! becomes a [`MapError::Schema`] naming the field. Unknown top-level fields
//! are rejected rather than ignored, so nothing a credit bank sent can be
//! silently dropped on the way through a translation; data a framework has no
//! field for belongs in `extensions`, which is carried verbatim.

use crate::error::MapError;
use crate::units::{Credits, Hours};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Longest accepted identifier (framework, version, outcome type), in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest accepted free text (titles, awarding body), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Deepest accepted nesting inside `extensions` (the JWS limit of SPEC §3).
pub const MAX_EXTENSION_DEPTH: usize = 32;

/// Title of the learning, Chinese required, English optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title {
    pub zh: String,
    pub en: Option<String>,
}

/// A learning record in some framework. Numbers are fixed-point
/// ([`Credits`], [`Hours`]) so they cannot be NaN, negative or off-grid.
#[derive(Debug, Clone, PartialEq)]
pub struct LearningRecord {
    pub framework: String,
    pub framework_version: String,
    pub level: u32,
    pub credits: Credits,
    pub learning_hours: Hours,
    pub outcome_type: String,
    pub title: Title,
    /// Calendar date `YYYY-MM-DD`.
    pub awarded_on: String,
    pub awarding_body: String,
    /// Anything the frameworks have no field for, kept verbatim in order.
    pub extensions: Map<String, Value>,
}

const FIELDS: [&str; 10] = [
    "framework",
    "frameworkVersion",
    "level",
    "credits",
    "learningHours",
    "outcomeType",
    "title",
    "awardedOn",
    "awardingBody",
    "extensions",
];

impl LearningRecord {
    /// Reads a record from JSON. `extensions` may be omitted (read as `{}`);
    /// every other field is required and unknown fields are rejected.
    pub fn from_json(value: &Value) -> Result<LearningRecord, MapError> {
        let obj = value
            .as_object()
            .ok_or_else(|| MapError::schema("$", "a learning record must be a JSON object"))?;
        Self::from_fields(obj, None)
    }

    /// Reads the record from a credential subject's members, passing over
    /// the learner's `id` beside them, which is not part of the record.
    /// Saves the caller copying the subject only to take `id` out.
    pub fn from_subject(subject: &Map<String, Value>) -> Result<LearningRecord, MapError> {
        Self::from_fields(subject, Some("id"))
    }

    fn from_fields(obj: &Map<String, Value>, beside: Option<&str>) -> Result<LearningRecord, MapError> {
        let foreign = |k: &&String| !FIELDS.contains(&k.as_str()) && Some(k.as_str()) != beside;
        if let Some(unknown) = obj.keys().find(foreign) {
            let hint = if unknown == "id" {
                " (strip the subject `id` before mapping)"
            } else {
                ""
            };
            return Err(MapError::schema(unknown.as_str(), format!("unknown field{hint}")));
        }
        let record = LearningRecord {
            framework: string(obj, "framework")?,
            framework_version: string(obj, "frameworkVersion")?,
            level: level(obj)?,
            credits: Credits::from_f64(number(obj, "credits")?)
                .map_err(|r| MapError::schema("credits", r))?,
            learning_hours: Hours::from_f64(number(obj, "learningHours")?)
                .map_err(|r| MapError::schema("learningHours", r))?,
            outcome_type: string(obj, "outcomeType")?,
            title: title(required(obj, "title")?)?,
            awarded_on: string(obj, "awardedOn")?,
            awarding_body: string(obj, "awardingBody")?,
            extensions: match obj.get("extensions") {
                None => Map::new(),
                Some(Value::Object(ext)) => {
                    check_depth(ext)?;
                    ext.clone()
                }
                Some(_) => return Err(MapError::schema("extensions", "must be a JSON object")),
            },
        };
        record.validate()?;
        Ok(record)
    }

    /// The record as JSON, fields in SPEC order.
    pub fn to_json(&self) -> Value {
        let mut title = Map::new();
        title.insert("zh".into(), Value::String(self.title.zh.clone()));
        if let Some(en) = &self.title.en {
            title.insert("en".into(), Value::String(en.clone()));
        }
        let mut m = Map::new();
        m.insert("framework".into(), Value::String(self.framework.clone()));
        m.insert(
            "frameworkVersion".into(),
            Value::String(self.framework_version.clone()),
        );
        m.insert("level".into(), Value::from(self.level));
        m.insert("credits".into(), self.credits.to_json());
        m.insert("learningHours".into(), self.learning_hours.to_json());
        m.insert("outcomeType".into(), Value::String(self.outcome_type.clone()));
        m.insert("title".into(), Value::Object(title));
        m.insert("awardedOn".into(), Value::String(self.awarded_on.clone()));
        m.insert("awardingBody".into(), Value::String(self.awarding_body.clone()));
        m.insert("extensions".into(), Value::Object(self.extensions.clone()));
        Value::Object(m)
    }

    /// Checks the invariants the field types cannot express (text lengths,
    /// date format, extension depth). The fields are public, so
    /// [`crate::translate`] re-checks rather than trusting the caller.
    pub fn validate(&self) -> Result<(), MapError> {
        id_text("framework", &self.framework)?;
        id_text("frameworkVersion", &self.framework_version)?;
        name_text("outcomeType", &self.outcome_type)?;
        free_text("title.zh", &self.title.zh)?;
        if let Some(en) = &self.title.en {
            free_text("title.en", en)?;
        }
        free_text("awardingBody", &self.awarding_body)?;
        if !is_calendar_date(&self.awarded_on) {
            return Err(MapError::schema(
                "awardedOn",
                "must be a calendar date YYYY-MM-DD",
            ));
        }
        check_depth(&self.extensions)
    }
}

impl Serialize for LearningRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for LearningRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LearningRecord::from_json(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn required<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a Value, MapError> {
    obj.get(field).ok_or_else(|| MapError::schema(field, "missing"))
}

fn string(obj: &Map<String, Value>, field: &str) -> Result<String, MapError> {
    match required(obj, field)? {
        Value::String(s) => Ok(s.clone()),
        _ => Err(MapError::schema(field, "must be a string")),
    }
}

fn number(obj: &Map<String, Value>, field: &str) -> Result<f64, MapError> {
    required(obj, field)?
        .as_f64()
        .ok_or_else(|| MapError::schema(field, "must be a number"))
}

fn level(obj: &Map<String, Value>) -> Result<u32, MapError> {
    required(obj, "level")?
        .as_u64()
        .and_then(|l| u32::try_from(l).ok())
        .ok_or_else(|| MapError::schema("level", "must be a non-negative integer below 2^32"))
}

fn title(value: &Value) -> Result<Title, MapError> {
    let obj = value
        .as_object()
        .ok_or_else(|| MapError::schema("title", "must be an object"))?;
    if let Some(unknown) = obj.keys().find(|k| *k != "zh" && *k != "en") {
        return Err(MapError::schema(format!("title.{unknown}"), "unknown field"));
    }
    let zh = match obj.get("zh") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(MapError::schema("title.zh", "must be a string")),
        None => return Err(MapError::schema("title.zh", "missing")),
    };
    let en = match obj.get("en") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(MapError::schema("title.en", "must be a string")),
    };
    Ok(Title { zh, en })
}

fn id_text(field: &str, s: &str) -> Result<(), MapError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+~".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        MapError::schema(
            field,
            format!("must be 1..={MAX_ID_LEN} ASCII letters, digits or -_.+~"),
        )
    })
}

/// An outcome type is named by its id or by its Chinese label (学历教育),
/// so it may be any short single-line text; the table decides if it exists.
fn name_text(field: &str, s: &str) -> Result<(), MapError> {
    let ok = !s.trim().is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control);
    ok.then_some(()).ok_or_else(|| {
        MapError::schema(
            field,
            format!("must be non-blank text of at most {MAX_ID_LEN} bytes"),
        )
    })
}

fn free_text(field: &str, s: &str) -> Result<(), MapError> {
    let ok = !s.trim().is_empty() && s.len() <= MAX_TEXT_LEN && !s.chars().any(char::is_control);
    ok.then_some(()).ok_or_else(|| {
        MapError::schema(
            field,
            format!("must be non-blank text of at most {MAX_TEXT_LEN} bytes"),
        )
    })
}

/// `YYYY-MM-DD` naming a real day of the proleptic Gregorian calendar.
fn is_calendar_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Some(y), Some(m), Some(d)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// Rejects nesting deeper than [`MAX_EXTENSION_DEPTH`]. The walk stops at
/// that depth, so its own recursion is bounded however deep the value is.
fn check_depth(ext: &Map<String, Value>) -> Result<(), MapError> {
    fn within(v: &Value, depth: usize) -> bool {
        match v {
            Value::Object(m) => depth <= MAX_EXTENSION_DEPTH && m.values().all(|c| within(c, depth + 1)),
            Value::Array(a) => depth <= MAX_EXTENSION_DEPTH && a.iter().all(|c| within(c, depth + 1)),
            _ => true,
        }
    }
    if ext.values().all(|v| within(v, 2)) {
        Ok(())
    } else {
        Err(MapError::schema(
            "extensions",
            format!("nested deeper than {MAX_EXTENSION_DEPTH} levels"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn sample() -> Value {
        json!({
            "framework": "cqf", "frameworkVersion": "1.0.0", "level": 6,
            "credits": 4, "learningHours": 72, "outcomeType": "degree-education",
            "title": {"zh": "高等数学", "en": "Advanced Mathematics"},
            "awardedOn": "2026-07-01", "awardingBody": "重庆开放大学",
            "extensions": {"z": 1, "a": [true, null]}
        })
    }

    #[test]
    fn round_trips_through_json_in_field_order() {
        let r = LearningRecord::from_json(&sample()).unwrap();
        assert_eq!(r.to_json().to_string(), sample().to_string());
        assert_eq!(serde_json::to_value(&r).unwrap(), sample());
        let via_serde: LearningRecord = serde_json::from_value(sample()).unwrap();
        assert_eq!(via_serde, r);
    }

    #[test]
    fn unknown_and_missing_fields_are_schema_violations() {
        let mut v = sample();
        v["id"] = json!("urn:bashu:learner:cq:x");
        let e = LearningRecord::from_json(&v).unwrap_err();
        assert_eq!(e.slug(), "schema-violation");
        assert!(matches!(e, MapError::Schema { ref field, .. } if field == "id"));
        let mut v = sample();
        v.as_object_mut().unwrap().remove("awardingBody");
        assert_eq!(
            LearningRecord::from_json(&v).unwrap_err(),
            MapError::schema("awardingBody", "missing")
        );
    }

    #[test]
    fn a_subject_reads_as_its_record_without_the_learner_id() {
        let mut subject = sample();
        subject["id"] = json!("urn:bashu:learner:cq:x");
        let subject = subject.as_object().unwrap();
        assert_eq!(
            LearningRecord::from_subject(subject).unwrap(),
            LearningRecord::from_json(&sample()).unwrap()
        );
        // Only `id` is passed over: anything else foreign is still refused.
        let mut v = sample();
        v["learner"] = json!("x");
        let e = LearningRecord::from_subject(v.as_object().unwrap()).unwrap_err();
        assert!(matches!(e, MapError::Schema { ref field, .. } if field == "learner"));
    }

    #[test]
    fn bad_values_name_their_field() {
        for (field, bad) in [
            ("credits", json!(-1)),
            ("credits", json!("4")),
            ("learningHours", json!(1e12)),
            ("level", json!(6.5)),
            ("awardedOn", json!("2026-02-30")),
            ("title", json!("高等数学")),
            ("extensions", json!([1])),
            ("framework", json!("")),
        ] {
            let mut v = sample();
            v[field] = bad;
            match LearningRecord::from_json(&v) {
                Err(MapError::Schema { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn deep_extensions_are_rejected_not_recursed() {
        let mut deep = json!(1);
        for _ in 0..100_000 {
            deep = Value::Array(vec![deep]);
        }
        let mut ext = Map::new();
        ext.insert("deep".into(), deep);
        assert!(check_depth(&ext).is_err());
        // Drop iteratively so the test itself does not overflow the stack.
        let mut v = ext.remove("deep");
        while let Some(Value::Array(mut a)) = v {
            v = a.pop();
        }
    }

    #[test]
    fn calendar_dates() {
        assert!(is_calendar_date("2024-02-29"));
        assert!(!is_calendar_date("2023-02-29"));
        assert!(!is_calendar_date("2023-13-01"));
        assert!(!is_calendar_date("2023-1-01"));
        assert!(!is_calendar_date("２０２３-01-01"));
    }
}
