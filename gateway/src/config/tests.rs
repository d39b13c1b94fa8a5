use super::*;

/// A config directory with every referenced file present.
struct Fixture {
    dir: tempfile::TempDir,
}

const GOOD: &str = r#"
member = "cq"
framework = "cqf"
data_dir = "data"

[listen]
api = "127.0.0.1:7443"
metrics = "127.0.0.1:9464"

[tls]
ca = "ca.pem"
cert = "gateway.crt"
key = "gateway.key"

[trust]
keystore = "keys.json"
federation_key = "federation.jwk"

[peers.sc]
url = "https://127.0.0.1:7444"
federation_key = "sc.pub.jwk"
"#;

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "ca.pem",
            "gateway.crt",
            "gateway.key",
            "keys.json",
            "federation.jwk",
            "sc.pub.jwk",
        ] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        Self { dir }
    }

    fn load(&self, toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let path = self.dir.path().join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::load_with_env(&path, env)
    }

    /// Loads `GOOD` with `from` replaced by `to`, checks its files, and
    /// returns the failing field.
    fn invalid_field(&self, from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        match self
            .load(&GOOD.replace(from, to), &[])
            .and_then(|c| c.check_files())
        {
            Err(ConfigError::Invalid { field, .. } | ConfigError::File { field, .. }) => field,
            other => panic!("{from} -> {to}: expected Invalid or File, got {other:?}"),
        }
    }
}

#[test]
fn good_config_loads_with_defaults_and_absolute_paths() {
    let fx = Fixture::new();
    let cfg = fx.load(GOOD, &[]).unwrap();
    cfg.check_files().unwrap();
    assert_eq!(cfg.member, "cq");
    assert_eq!(cfg.tls.ca, fx.dir.path().join("ca.pem"));
    assert_eq!(cfg.peers["sc"].federation_key, fx.dir.path().join("sc.pub.jwk"));
    assert_eq!(cfg.limits.max_body_bytes, LimitsConfig::default().max_body_bytes);
    assert!(!cfg.listen.allow_public_metrics);
}

#[test]
fn env_overrides_replace_and_add_values() {
    let fx = Fixture::new();
    std::fs::write(fx.dir.path().join("gz.pub.jwk"), "x").unwrap();
    let cfg = fx
        .load(
            GOOD,
            &[
                ("BASHU_LISTEN_API", "127.0.0.1:9000"),
                ("BASHU_LIMITS_MAX_BODY_BYTES", "2048"),
                ("BASHU_TLS_SYSTEM_ROOTS_OUTBOUND", "true"),
                ("BASHU_PEERS_SC_URL", "https://sc.example:8443"),
                ("BASHU_PEERS_GZ_URL", "https://127.0.0.1:7445"),
                ("BASHU_PEERS_GZ_FEDERATION_KEY", "gz.pub.jwk"),
                ("BASHU_FRAMEWORK", "cqf-2"),
                ("BASHU_LOG", "debug"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
    assert_eq!(cfg.listen.api, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(cfg.limits.max_body_bytes, 2048);
    assert!(cfg.tls.system_roots_outbound);
    assert_eq!(cfg.peers["sc"].url, "https://sc.example:8443");
    assert_eq!(cfg.peers["gz"].federation_key, fx.dir.path().join("gz.pub.jwk"));
    assert_eq!(cfg.framework, "cqf-2");
}

#[test]
fn bad_env_overrides_name_the_variable() {
    let fx = Fixture::new();
    for (var, value) in [
        ("BASHU_LIMITS_MAX_BODY_BYTES", "lots"),
        ("BASHU_LIMITS_MAX_BODY", "1"),
        ("BASHU_TLS_SYSTEM_ROOTS_OUTBOUND", "yes"),
        ("BASHU_PEERS_SC", "x"),
    ] {
        match fx.load(GOOD, &[(var, value)]) {
            Err(ConfigError::Env { var: v, .. }) => assert_eq!(v, var),
            other => panic!("{var}: {other:?}"),
        }
    }
    // An override that parses but is invalid fails validation like the file would.
    match fx.load(GOOD, &[("BASHU_LIMITS_RATE_BURST", "0")]) {
        Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "limits.rate_burst"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_values_name_their_field() {
    let fx = Fixture::new();
    let cases = [
        ("member = \"cq\"", "member = \"CQ\"", "member"),
        (
            "metrics = \"127.0.0.1:9464\"",
            "metrics = \"0.0.0.0:9464\"",
            "listen.metrics",
        ),
        (
            "metrics = \"127.0.0.1:9464\"",
            "metrics = \"127.0.0.1:7443\"",
            "listen.metrics",
        ),
        ("ca = \"ca.pem\"", "ca = \"missing.pem\"", "tls.ca"),
        (
            "keystore = \"keys.json\"",
            "keystore = \"data\"",
            "trust.keystore",
        ),
        (
            "url = \"https://127.0.0.1:7444\"",
            "url = \"http://127.0.0.1:7444\"",
            "peers.sc.url",
        ),
        (
            "url = \"https://127.0.0.1:7444\"",
            "url = \"https://127.0.0.1:7444/v1\"",
            "peers.sc.url",
        ),
        (
            "url = \"https://127.0.0.1:7444\"",
            "url = \"https://u@127.0.0.1:7444\"",
            "peers.sc.url",
        ),
        (
            "federation_key = \"sc.pub.jwk\"",
            "federation_key = \"nope.jwk\"",
            "peers.sc.federation_key",
        ),
        ("[peers.sc]", "[peers.cq]", "peers"),
        (
            "[tls]",
            "[limits]\nmax_body_bytes = 0\n\n[tls]",
            "limits.max_body_bytes",
        ),
        (
            "[tls]",
            "[limits]\nrequest_timeout_ms = 0\n\n[tls]",
            "limits.request_timeout_ms",
        ),
        (
            "[tls]",
            "[delivery]\nmax_backoff_ms = 1\n\n[tls]",
            "delivery.max_backoff_ms",
        ),
        (
            "[tls]",
            "[delivery]\nlease_ttl_ms = 499\n\n[tls]",
            "delivery.lease_ttl_ms",
        ),
        (
            "[tls]",
            "[audit]\ncheckpoint_interval_secs = 61\n\n[tls]",
            "audit.checkpoint_interval_secs",
        ),
        (
            "[tls]",
            "[audit]\nwitness_interval_secs = 0\n\n[tls]",
            "audit.witness_interval_secs",
        ),
        (
            "[tls]",
            "[mapping]\ntable = \"no-table.toml\"\n\n[tls]",
            "mapping.table",
        ),
        (
            "[trust]",
            "[trust]\nkeyset_ttl_secs = 60\nrefresh_ahead_secs = 60",
            "trust.refresh_ahead_secs",
        ),
        (
            "[trust]",
            "[trust]\nkeyset_ttl_secs = 2592001",
            "trust.keyset_ttl_secs",
        ),
    ];
    std::fs::create_dir(fx.dir.path().join("data")).unwrap();
    for (from, to, field) in cases {
        assert_eq!(fx.invalid_field(from, to), field, "{to}");
    }
}

#[test]
fn public_metrics_need_an_explicit_opt_in() {
    let fx = Fixture::new();
    let toml = GOOD.replace(
        "metrics = \"127.0.0.1:9464\"",
        "metrics = \"0.0.0.0:9464\"\nallow_public_metrics = true",
    );
    assert!(fx.load(&toml, &[]).is_ok());
}

#[test]
fn syntax_errors_and_unknown_keys_are_parse_errors() {
    let fx = Fixture::new();
    for toml in [
        GOOD.replace("[tls]", "[tls"),
        GOOD.replace("[tls]", "[tls]\nciphers = \"all\""),
    ] {
        assert!(
            matches!(fx.load(&toml, &[]), Err(ConfigError::Parse { .. })),
            "{toml}"
        );
    }
    assert!(matches!(
        Config::load(&fx.dir.path().join("absent.toml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn load_does_not_need_the_files_but_check_files_does() {
    let fx = Fixture::new();
    std::fs::remove_file(fx.dir.path().join("keys.json")).unwrap();
    let cfg = fx.load(GOOD, &[]).unwrap();
    match cfg.check_files() {
        Err(ConfigError::File { field, path, .. }) => {
            assert_eq!(field, "trust.keystore");
            assert_eq!(path, fx.dir.path().join("keys.json"));
        }
        other => panic!("{other:?}"),
    }
    assert!(Config::load_checked(&fx.dir.path().join("gateway.toml")).is_err());
}

#[test]
fn store_defaults_to_sqlite_and_env_url_wins_without_showing_the_password() {
    let fx = Fixture::new();
    let cfg = fx.load(GOOD, &[]).unwrap();
    assert!(cfg.store.url.is_none(), "no [store]: the embedded SQLite store");
    assert_eq!(cfg.store.pool_size, DEFAULT_POOL_SIZE);

    let file = format!("{GOOD}\n[store]\nurl = \"postgres://bashu:filepw@db1:5432/bashu\"\npool_size = 4\n");
    let cfg = fx.load(&file, &[]).unwrap();
    assert_eq!(
        cfg.store.url.as_ref().unwrap().expose(),
        "postgres://bashu:filepw@db1:5432/bashu"
    );
    assert_eq!(cfg.store.pool_size, 4);

    // Like every BASHU_* override, the environment wins over the file.
    let cfg = fx
        .load(
            &file,
            &[
                ("BASHU_STORE_URL", "postgres://bashu:envpw@db2:5433/bashu"),
                ("BASHU_STORE_POOL_SIZE", "9"),
            ],
        )
        .unwrap();
    assert_eq!(
        cfg.store.url.as_ref().unwrap().expose(),
        "postgres://bashu:envpw@db2:5433/bashu"
    );
    assert_eq!(cfg.store.pool_size, 9);
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("envpw"),
        "Debug of the config shows the password: {shown}"
    );
    assert!(shown.contains("postgres://bashu:***@db2:5433/bashu"));

    // A bad URL is refused naming the key, without echoing the password.
    let err = fx
        .load(GOOD, &[("BASHU_STORE_URL", "mysql://root:envpw@db/x")])
        .unwrap_err();
    match err {
        ConfigError::Invalid { field, message, .. } => {
            assert_eq!(field, "store.url");
            assert!(!message.contains("envpw"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}
