//! `BASHU_<SECTION>_<KEY>` environment overrides, applied to the parsed TOML
//! document before it is turned into [`Config`](super::Config).
//!
//! Every overridable key is listed in [`KEYS`] with its type, so a value is
//! converted by what the field needs (a member id `12` stays a string) and a
//! misspelt variable in a known section is an error rather than silently
//! ignored. Peers are addressed as `BASHU_PEERS_<MEMBER>_URL` and
//! `BASHU_PEERS_<MEMBER>_FEDERATION_KEY`. Variables that do not start with a
//! known section or top-level key (e.g. `BASHU_LOG`) are left alone here;
//! [`unknown_vars`] finds them so `bashu serve` can warn about typos.

use super::ConfigError;
use toml::{Table, Value};

/// Prefix of every override variable.
pub const PREFIX: &str = "BASHU_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated list of strings.
    StrList,
}

/// `(section, key, kind)`; section `""` is the top level.
pub const KEYS: &[(&str, &str, Kind)] = &[
    ("", "member", Kind::Str),
    ("", "framework", Kind::Str),
    ("", "data_dir", Kind::Str),
    ("listen", "api", Kind::Str),
    ("listen", "metrics", Kind::Str),
    ("listen", "allow_public_metrics", Kind::Bool),
    ("tls", "ca", Kind::Str),
    ("tls", "cert", Kind::Str),
    ("tls", "key", Kind::Str),
    ("tls", "crls", Kind::StrList),
    ("tls", "system_roots_outbound", Kind::Bool),
    ("limits", "max_body_bytes", Kind::Int),
    ("limits", "max_header_bytes", Kind::Int),
    ("limits", "request_timeout_ms", Kind::Int),
    ("limits", "max_connections", Kind::Int),
    ("limits", "rate_per_second", Kind::Int),
    ("limits", "rate_burst", Kind::Int),
    ("limits", "handshake_timeout_ms", Kind::Int),
    ("limits", "first_request_timeout_ms", Kind::Int),
    ("limits", "idle_timeout_ms", Kind::Int),
    ("limits", "max_connections_per_ip", Kind::Int),
    ("limits", "max_connections_per_identity", Kind::Int),
    ("limits", "unauthenticated_per_second", Kind::Int),
    ("limits", "unauthenticated_burst", Kind::Int),
    ("limits", "listen_backlog", Kind::Int),
    ("trust", "keystore", Kind::Str),
    ("trust", "federation_key", Kind::Str),
    ("trust", "keyset_ttl_secs", Kind::Int),
    ("trust", "refresh_ahead_secs", Kind::Int),
    ("trust", "stale_grace_secs", Kind::Int),
    ("trust", "negative_ttl_secs", Kind::Int),
    ("trust", "refetch_min_interval_ms", Kind::Int),
    ("trust", "clock_skew_secs", Kind::Int),
    ("mapping", "table", Kind::Str),
    ("delivery", "initial_backoff_ms", Kind::Int),
    ("delivery", "max_backoff_ms", Kind::Int),
    ("delivery", "dead_letter_after_secs", Kind::Int),
    ("delivery", "breaker_failure_threshold", Kind::Int),
    ("delivery", "breaker_open_ms", Kind::Int),
    ("delivery", "batch_size", Kind::Int),
    ("delivery", "request_timeout_ms", Kind::Int),
    ("delivery", "lease_ttl_ms", Kind::Int),
    ("delivery", "peer_batch_max", Kind::Int),
    ("audit", "checkpoint_interval_secs", Kind::Int),
    ("audit", "witness_interval_secs", Kind::Int),
    ("store", "url", Kind::Str),
    ("store", "pool_size", Kind::Int),
    ("peers", "url", Kind::Str),
    ("peers", "federation_key", Kind::Str),
];

const SECTIONS: &[&str] = &[
    "listen", "tls", "limits", "trust", "mapping", "delivery", "audit", "store", "peers",
];

/// `BASHU_*` variables read outside `gateway.toml` overrides (the dev
/// PostgreSQL cluster of `quickstart --replicas` and the tests), so they are
/// not reported as unknown.
pub const OTHER_KNOWN: &[&str] = &["BASHU_PG_BIN", "BASHU_REQUIRE_POSTGRES"];

/// A `BASHU_*` variable that is neither an override nor otherwise known:
/// most likely a typo, which would otherwise be ignored silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVar {
    pub name: String,
    /// The nearest known variable by edit distance, if any is close.
    pub nearest: Option<String>,
}

/// Every known variable name except the per-peer patterns.
pub fn known_names() -> Vec<String> {
    KEYS.iter()
        .filter(|(section, _, _)| *section != "peers")
        .map(|(section, key, _)| {
            if section.is_empty() {
                format!("{PREFIX}{}", key.to_ascii_uppercase())
            } else {
                format!(
                    "{PREFIX}{}_{}",
                    section.to_ascii_uppercase(),
                    key.to_ascii_uppercase()
                )
            }
        })
        .chain(OTHER_KNOWN.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// The `BASHU_*` variables of `vars` that [`apply`] ignores and nothing
/// else reads, sorted, each with the nearest known name.
pub fn unknown_vars<I>(vars: I) -> Vec<UnknownVar>
where
    I: IntoIterator<Item = (String, String)>,
{
    let known = known_names();
    let mut out: Vec<UnknownVar> = vars
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(PREFIX) && !OTHER_KNOWN.contains(&k.as_str()))
        .filter(|k| {
            let name = k[PREFIX.len()..].to_ascii_lowercase();
            matches!(locate(k, &name), Ok(None))
        })
        .map(|name| {
            // Up to a third of the name may differ (at least 3 edits).
            let limit = (name.len() / 3).max(3);
            let nearest =
                crate::suggest::nearest(&name, known.iter().map(String::as_str), limit).map(str::to_owned);
            UnknownVar { name, nearest }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Applies every relevant variable of `vars` to `doc`; returns the names applied.
pub fn apply<I>(doc: &mut Table, vars: I) -> Result<Vec<String>, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k.starts_with(PREFIX)).collect();
    vars.sort();
    for (var, raw) in vars {
        let name = var[PREFIX.len()..].to_ascii_lowercase();
        let Some((path, kind)) = locate(&var, &name)? else {
            continue;
        };
        let value = convert(&var, &raw, kind)?;
        set(doc, &path, value).map_err(|message| env_error(&var, message))?;
        applied.push(var);
    }
    Ok(applied)
}

fn env_error(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var: var.to_owned(),
        message: message.into(),
    }
}

/// Table path and kind of a variable, `None` if it is not a config override.
fn locate(var: &str, name: &str) -> Result<Option<(Vec<String>, Kind)>, ConfigError> {
    if let Some(&(_, key, kind)) = KEYS.iter().find(|(s, k, _)| s.is_empty() && *k == name) {
        return Ok(Some((vec![key.to_owned()], kind)));
    }
    let Some((section, rest)) = SECTIONS.iter().find_map(|s| {
        name.strip_prefix(s)
            .and_then(|r| r.strip_prefix('_'))
            .map(|r| (*s, r))
    }) else {
        return Ok(None);
    };
    let (path, key) = if section == "peers" {
        let (member, key) = rest
            .split_once('_')
            .ok_or_else(|| env_error(var, "expected BASHU_PEERS_<MEMBER>_<KEY>"))?;
        (vec![section.to_owned(), member.to_owned(), key.to_owned()], key)
    } else {
        (vec![section.to_owned(), rest.to_owned()], rest)
    };
    let kind = KEYS
        .iter()
        .find(|(s, k, _)| *s == section && *k == key)
        .map(|(_, _, kind)| *kind)
        .ok_or_else(|| env_error(var, format!("no key {key:?} in section [{section}]")))?;
    Ok(Some((path, kind)))
}

fn convert(var: &str, raw: &str, kind: Kind) -> Result<Value, ConfigError> {
    let raw = raw.trim();
    match kind {
        Kind::Str => Ok(Value::String(raw.to_owned())),
        Kind::Int => raw
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| env_error(var, "expected an integer")),
        Kind::Bool => match raw {
            "true" | "1" => Ok(Value::Boolean(true)),
            "false" | "0" => Ok(Value::Boolean(false)),
            _ => Err(env_error(var, "expected true or false")),
        },
        Kind::StrList => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        )),
    }
}

/// Sets `path` in `doc`, creating intermediate tables.
fn set(doc: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut table = doc;
    for key in parents {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("[{key}] in the config file is not a table"))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod unknown_tests {
    use super::*;

    fn vars(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| ((*n).to_owned(), "x".to_owned())).collect()
    }

    #[test]
    fn typos_are_reported_with_the_nearest_known_name() {
        let got = unknown_vars(vars(&[
            "BASHU_LISTN_API",
            "BASHU_LISTEN_API",
            "BASHU_PEERS_GZ_URL",
            "BASHU_STORE_URL",
            "BASHU_DATADIR",
            "BASHU_ZZZZZZZZZZZZZZZZZZZZZZZZ",
            "PATH",
        ]));
        assert_eq!(
            got,
            [
                UnknownVar {
                    name: "BASHU_DATADIR".into(),
                    nearest: Some("BASHU_DATA_DIR".into())
                },
                UnknownVar {
                    name: "BASHU_LISTN_API".into(),
                    nearest: Some("BASHU_LISTEN_API".into())
                },
                UnknownVar {
                    name: "BASHU_ZZZZZZZZZZZZZZZZZZZZZZZZ".into(),
                    nearest: None
                },
            ]
        );
    }

    #[test]
    fn every_known_name_is_accepted_or_read_elsewhere() {
        let names = known_names();
        assert!(names.contains(&"BASHU_LISTEN_API".to_owned()));
        assert!(names.contains(&"BASHU_STORE_URL".to_owned()));
        for read_by_devpg in [crate::devpg::PG_BIN_ENV, crate::devpg::REQUIRE_ENV] {
            assert!(names.contains(&read_by_devpg.to_owned()), "{read_by_devpg}");
        }
        assert_eq!(
            names.iter().filter(|n| *n == "BASHU_STORE_URL").count(),
            1,
            "each name once"
        );
        let all: Vec<(String, String)> = names.iter().map(|n| (n.clone(), String::new())).collect();
        assert_eq!(unknown_vars(all), []);
    }
}
