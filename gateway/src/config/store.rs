//! `[store]`: which database the gateway keeps its state in.
//!
//! Without a `url` the gateway uses the embedded SQLite store in
//! `data_dir` (no configuration needed). With `url = "postgres://…"` it
//! uses that PostgreSQL database, which several replicas of one member's
//! gateway may share (docs/operations.md "High availability").
//!
//! The URL usually carries a password, so [`StoreUrl`] never shows it:
//! `Debug` and `Display` print [`StoreUrl::redacted`].

use serde::Deserialize;
use std::fmt;

/// The `[store]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database[?options]`; absent:
    /// SQLite at `<data_dir>/bashu.db`.
    pub url: Option<StoreUrl>,
    /// Connections this replica keeps open to PostgreSQL (ignored for SQLite).
    pub pool_size: usize,
}

/// Default connections per replica: enough for the API's concurrent
/// writes (which queue on the audit chain anyway) plus the worker, the
/// sweeps and readiness probes, without crowding `max_connections`.
pub const DEFAULT_POOL_SIZE: usize = 16;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

/// Most connections one replica may ask for.
pub const MAX_POOL_SIZE: usize = 1000;

impl StoreConfig {
    /// Start-up checks: `(field, message)` of the first failure. The URL
    /// is parsed as the driver will parse it; messages never include it
    /// whole (only its redacted form).
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            return Err((
                "store.pool_size",
                format!("must be between 1 and {MAX_POOL_SIZE}"),
            ));
        }
        let Some(url) = &self.url else {
            return Ok(());
        };
        if !url.is_postgres() {
            return Err((
                "store.url",
                format!(
                    "{} is not a postgres:// or postgresql:// URL (leave store.url out for the \
                     embedded SQLite store)",
                    url.redacted()
                ),
            ));
        }
        let parsed: tokio_postgres::Config = url
            .expose()
            .parse()
            .map_err(|e| ("store.url", format!("{}: {e}", url.redacted())))?;
        if parsed.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err((
                "store.url",
                "sslmode=require is not supported: the gateway connects to PostgreSQL without \
                 TLS (use a private network, a local socket path or a TLS tunnel; see \
                 docs/operations.md \"High availability\")"
                    .to_owned(),
            ));
        }
        if parsed.get_dbname().is_none_or(str::is_empty) {
            return Err(("store.url", format!("{} names no database", url.redacted())));
        }
        Ok(())
    }
}

/// A database URL whose password is never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for connecting only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the URL names PostgreSQL (`postgres://` or `postgresql://`).
    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }

    /// The URL with the password of its user info and any `password=`
    /// query parameter replaced by `***`: what logs and errors show.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({:?})", self.redacted())
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// See [`StoreUrl::redacted`]. Works on any text: what is not a URL is
/// shown only up to its scheme, in case it holds a secret in another form.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    // The user info ends at the last `@` before any query: a password with
    // an unescaped `/` or `@` is still hidden (erring towards hiding more).
    let before_query = rest.find('?').unwrap_or(rest.len());
    let (userinfo, rest) = match rest[..before_query].rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (host, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match userinfo {
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => host.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(url: Option<&str>, pool_size: usize) -> Result<(), (&'static str, String)> {
        StoreConfig {
            url: url.map(StoreUrl::new),
            pool_size,
        }
        .check()
    }

    #[test]
    fn store_section_is_checked() {
        assert_eq!(checked(None, DEFAULT_POOL_SIZE), Ok(()));
        assert_eq!(checked(Some("postgres://u:p@127.0.0.1:5432/bashu"), 4), Ok(()));
        assert_eq!(checked(None, 0).map_err(|e| e.0), Err("store.pool_size"));
        let (field, message) = checked(Some("mysql://u:secret@h/db"), 4).unwrap_err();
        assert_eq!(field, "store.url");
        assert!(!message.contains("secret"), "{message}");
        let (_, message) = checked(Some("postgres://u:secret@h/db?sslmode=require"), 4).unwrap_err();
        assert!(message.contains("sslmode=require"), "{message}");
        let (_, message) = checked(Some("postgres://u:secret@h:notaport/db"), 4).unwrap_err();
        assert!(!message.contains("secret"), "{message}");
        let (_, message) = checked(Some("postgres://u:secret@h:5432"), 4).unwrap_err();
        assert!(message.contains("names no database"), "{message}");
    }

    #[test]
    fn passwords_never_show() {
        let cases = [
            (
                "postgres://bashu:s3cret@db.example:5432/bashu",
                "postgres://bashu:***@db.example:5432/bashu",
            ),
            (
                "postgresql://bashu:p%40ss@10.0.0.1/bashu?sslmode=disable&password=other",
                "postgresql://bashu:***@10.0.0.1/bashu?sslmode=disable&password=***",
            ),
            ("postgres://bashu@db/bashu", "postgres://bashu@db/bashu"),
            ("postgres://db", "postgres://db"),
            ("postgres://u:pw@h", "postgres://u:***@h"),
            ("postgres://u:pa/s@s@h:1/db", "postgres://u:***@h:1/db"),
            ("host=db password=x", "<not a URL>"),
        ];
        for (url, shown) in cases {
            let u = StoreUrl::new(url);
            assert_eq!(u.redacted(), shown);
            assert_eq!(u.to_string(), shown);
            assert!(!format!("{u:?}").contains("s3cret"));
            assert!(!format!("{u:?}").contains("pw@"));
        }
        assert_eq!(StoreUrl::new("postgres://a:b@c/d").expose(), "postgres://a:b@c/d");
    }
}
