//! Strict JSON parsing for attacker-controlled JOSE segments.
//!
//! `serde_json` silently keeps the last of two members with the same name,
//! so `{"alg":"ES256","alg":"none"}` means different things to different
//! parsers. This parser builds the same `serde_json::Value` but refuses
//! duplicate member names and nesting deeper than [`MAX_DEPTH`] (counting
//! objects and arrays; the outermost object is depth 1).

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// Deepest accepted nesting of objects and arrays.
pub const MAX_DEPTH: usize = 32;

/// Why a JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("duplicate member name {0}")]
    DuplicateMember(String),
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Parses one JSON value from `bytes` (UTF-8, trailing whitespace only).
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let issue = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = ValueSeed {
        issue: &issue,
        depth: 0,
    };
    let result = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match result {
        Ok(v) => Ok(v),
        Err(e) => Err(issue
            .into_inner()
            .unwrap_or_else(|| JsonError::Syntax(e.to_string()))),
    }
}

/// Parses an object; any other JSON value is a syntax error for our purposes.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    match parse(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::Syntax("expected a JSON object".into())),
    }
}

/// Shortens attacker-chosen text before it goes into an error message.
fn clip(s: &str) -> String {
    super::error::plain(s, 64)
}

#[derive(Clone, Copy)]
struct ValueSeed<'c> {
    /// The typed reason of the first failure; serde's error type can only
    /// carry a string, so the classification travels on the side.
    issue: &'c RefCell<Option<JsonError>>,
    depth: usize,
}

impl ValueSeed<'_> {
    fn fail<E: serde::de::Error>(&self, err: JsonError) -> E {
        let msg = err.to_string();
        self.issue.borrow_mut().get_or_insert(err);
        E::custom(msg)
    }

    fn nested<E: serde::de::Error>(&self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(self.fail(JsonError::TooDeep));
        }
        Ok(ValueSeed {
            issue: self.issue,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.fail(JsonError::DuplicateMember(clip(&key))));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_serde_json() {
        let text = br#"{"a":[1,2.5,{"b":null}],"c":"\u00e9","d":true}"#;
        assert_eq!(parse(text), Ok(serde_json::from_slice::<Value>(text).unwrap()));
    }

    #[test]
    fn rejects_duplicates_at_any_level() {
        assert_eq!(
            parse(br#"{"a":1,"a":2}"#),
            Err(JsonError::DuplicateMember("a".into()))
        );
        assert_eq!(
            parse(br#"{"x":[{"k":1,"k":1}]}"#),
            Err(JsonError::DuplicateMember("k".into()))
        );
        // Escapes are decoded before comparison: "\u0061" is "a".
        assert_eq!(
            parse(br#"{"a":1,"\u0061":2}"#),
            Err(JsonError::DuplicateMember("a".into()))
        );
    }

    #[test]
    fn depth_limit_is_exact() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(parse(deep.as_bytes()), Err(JsonError::TooDeep));
        let very_deep = "[".repeat(100_000);
        assert_eq!(parse(very_deep.as_bytes()), Err(JsonError::TooDeep));
    }

    #[test]
    fn rejects_trailing_data_and_bad_utf8() {
        assert!(matches!(parse(b"{} {}"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse(b"\"\xff\""), Err(JsonError::Syntax(_))));
        assert!(matches!(parse_object(b"[]"), Err(JsonError::Syntax(_))));
    }
}
