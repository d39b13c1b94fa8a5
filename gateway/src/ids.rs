//! The contract's identifiers, one rule each: member ids (SPEC §1) and
//! exchange ids (SPEC §4, `ExchangeId` in docs/openapi.yaml).
//!
//! Config, transport, trust, the API and the pipeline all check these; the
//! rules live here, below all of them, so they cannot drift apart.

/// Member ids are short lowercase tokens; they appear in SPIFFE URIs and issuer URNs.
pub fn is_member_id(s: &str) -> bool {
    (2..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Longest exchange id a gateway accepts, in bytes.
pub const MAX_EXCHANGE_ID_LEN: usize = 128;

/// What [`is_exchange_id`] allows, for error messages.
pub const EXCHANGE_ID_RULE: &str = "1-128 characters of [A-Za-z0-9._:-]";

/// Exchange ids are opaque, URL-safe tokens chosen by the origin gateway
/// (ours are UUIDv7); a receiver keys its inbox and paths by them, so they
/// may hold nothing that needs escaping in a path or a log line.
pub fn is_exchange_id(s: &str) -> bool {
    (1..=MAX_EXCHANGE_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_short_lowercase_tokens() {
        for ok in ["cq", "sc", "gz01", "abcdefghijklmnop"] {
            assert!(is_member_id(ok), "{ok}");
        }
        for bad in ["", "c", "CQ", "c-q", "abcdefghijklmnopq", "cq ", "重庆"] {
            assert!(!is_member_id(bad), "{bad}");
        }
    }

    #[test]
    fn exchange_ids_follow_the_openapi_pattern() {
        let longest = "a".repeat(MAX_EXCHANGE_ID_LEN);
        for ok in [
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "ex:1",
            "a_b.c",
            longest.as_str(),
        ] {
            assert!(is_exchange_id(ok), "{ok}");
        }
        let too_long = "a".repeat(MAX_EXCHANGE_ID_LEN + 1);
        for bad in ["", "a/b", "a b", "a%2f", "é", too_long.as_str()] {
            assert!(!is_exchange_id(bad), "{bad}");
        }
    }
}
