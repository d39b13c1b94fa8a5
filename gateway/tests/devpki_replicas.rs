//! `bashu dev init --replicas N --store-url URL`: one loadable config per
//! replica, each with its own addresses and data directory, all sharing the
//! member's certificates and keys and the one database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bashu_gateway::config::{Config, StoreUrl};
use bashu_gateway::devpki::{init, write_replicas};
use std::collections::HashSet;

#[test]
fn replica_configs_share_the_member_and_the_store_but_not_ports_or_data() {
    let dir = tempfile::tempdir().unwrap();
    let fed = init(dir.path(), &["cq", "sc"]).unwrap();
    let url = StoreUrl::new("postgres://bashu:s3cret@127.0.0.1:5432/bashu_cq");
    let replicas = write_replicas(&fed, "cq", 3, &url).unwrap();
    assert_eq!(replicas.len(), 3);
    let cq = fed.member("cq").unwrap();
    let mut addrs = HashSet::new();
    let mut data_dirs = HashSet::new();
    for r in &replicas {
        let cfg = Config::load(&r.config).unwrap();
        cfg.check_files().unwrap();
        assert_eq!(cfg.member, "cq");
        assert_eq!(cfg.store.url.as_ref(), Some(&url));
        assert_eq!(cfg.listen.api, r.api_addr);
        assert_eq!(cfg.data_dir, r.data_dir);
        // The member's own certificate and keys, not copies.
        assert_eq!(
            cfg.tls.cert.canonicalize().unwrap(),
            cq.gateway_cert.canonicalize().unwrap()
        );
        assert_eq!(
            cfg.trust.keystore.canonicalize().unwrap(),
            cq.keystore.canonicalize().unwrap()
        );
        assert_eq!(
            cfg.peers["sc"].federation_key.canonicalize().unwrap(),
            fed.member("sc")
                .unwrap()
                .federation_public_key
                .canonicalize()
                .unwrap()
        );
        assert!(addrs.insert(cfg.listen.api) && addrs.insert(cfg.listen.metrics));
        assert!(data_dirs.insert(cfg.data_dir.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&r.config).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o077,
                0,
                "a config holding the database password is private"
            );
        }
    }
    // Replica 1 answers at the address the other members know as cq's.
    assert_eq!(replicas[0].api_addr, cq.api_addr);
    let sc = Config::load(&fed.member("sc").unwrap().config).unwrap();
    assert_eq!(sc.peers["cq"].url, replicas[0].url());

    // Replicas need PostgreSQL, and a sane count.
    assert!(write_replicas(&fed, "cq", 2, &StoreUrl::new("sqlite:///x")).is_err());
    assert!(write_replicas(&fed, "cq", 0, &url).is_err());
    assert!(write_replicas(&fed, "gz", 2, &url).is_err());
}
