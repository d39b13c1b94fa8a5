//! Semantic-version syntax check (semver.org 2.0.0): `MAJOR.MINOR.PATCH` with
//! optional `-pre.release` and `+build`. Only syntax matters here; tables
//! are matched by exact version string, never by range.

/// True if `s` is a valid semantic version.
pub fn is_semver(s: &str) -> bool {
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let numeric =
        |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'));
    let ident = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let core_ok = {
        let parts: Vec<&str> = core.split('.').collect();
        parts.len() == 3 && parts.iter().all(|p| numeric(p))
    };
    let pre_ok = pre.is_none_or(|p| {
        p.split('.')
            .all(|id| ident(id) && (!id.bytes().all(|b| b.is_ascii_digit()) || numeric(id)))
    });
    let build_ok = build.is_none_or(|b| b.split('.').all(ident));
    core_ok && pre_ok && build_ok
}

#[cfg(test)]
mod tests {
    use super::is_semver;

    #[test]
    fn accepts_and_rejects() {
        for ok in [
            "1.0.0",
            "0.10.2",
            "1.0.0-rc.1",
            "1.0.0+ref",
            "2.1.3-alpha.0+build.7",
        ] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in [
            "", "1", "1.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0+", "1.a.0",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
