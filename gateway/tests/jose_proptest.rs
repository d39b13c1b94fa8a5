//! The verifier is total: whatever bytes arrive, it answers with an error
//! (never a panic), and random mutations of a valid token never verify.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod trust_support;

use proptest::prelude::*;
use std::sync::OnceLock;
use trust_support::*;

struct World {
    rt: tokio::runtime::Runtime,
    fed: Fed,
    valid: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let fed = Fed::new();
        let valid = fed.credential("cq");
        rt.block_on(fed.verifier.verify(&valid)).unwrap();
        World { rt, fed, valid }
    })
}

fn verify(s: &str) -> bool {
    let w = world();
    w.rt.block_on(w.fed.verifier.verify(s)).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(!verify(&String::from_utf8_lossy(&bytes)));
    }

    #[test]
    fn any_string_is_refused(s in ".{0,512}") {
        prop_assert!(!verify(&s));
    }

    #[test]
    fn three_random_segments_are_refused(
        h in proptest::collection::vec(any::<u8>(), 0..256),
        p in proptest::collection::vec(any::<u8>(), 0..512),
        s in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        use bashu_gateway::jose::b64::encode;
        let token = format!("{}.{}.{}", encode(&h), encode(&p), encode(&s));
        prop_assert!(!verify(&token));
    }

    #[test]
    fn json_shaped_headers_are_refused(alg in "[A-Za-z0-9]{0,8}", kid in ".{0,16}", extra in ".{0,24}") {
        use bashu_gateway::jose::b64::encode;
        let header = format!(r#"{{"alg":"{alg}","typ":"vc+jwt","kid":"{kid}"{extra}}}"#);
        let w = world();
        let (_, rest) = w.valid.split_once('.').unwrap();
        let token = format!("{}.{rest}", encode(header.as_bytes()));
        prop_assert!(!verify(&token));
    }

    #[test]
    fn mutations_of_a_valid_token_never_verify(pos in 0usize..4096, byte in any::<u8>()) {
        let w = world();
        let mut bytes = w.valid.clone().into_bytes();
        let i = pos % bytes.len();
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        prop_assert!(!verify(&String::from_utf8_lossy(&bytes)));
    }
}
