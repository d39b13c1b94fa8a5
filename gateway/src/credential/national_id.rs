//! Detecting PRC resident identity numbers (GB 11643-1999) in learner ids.
//!
//! SPEC §3: a learner id carries no national ID number in clear. An opaque
//! part such as `urn:bashu:learner:cq:11010519491231002X` would pass every
//! structural check, so the whole `credentialSubject.id` is scanned for the
//! 18-character citizen number: 17 digits then a check character `0-9`/`X`
//! (ISO 7064 MOD 11-2). To keep long numeric opaque ids (snowflake-style
//! numbers) usable, a window counts only when it is also plausible as a
//! number: an address code starting 1–8, a real calendar birth date from
//! 1900 to 2099 in digits 7–14, and a valid check character. A random
//! 18-character window passes all of that roughly once in ten thousand; a
//! real number always does.

/// ISO 7064 MOD 11-2 weights of the first 17 digits (2^(17-i) mod 11).
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for each value of the weighted sum mod 11.
const CHECK: [u8; 11] = *b"10X98765432";

/// Whether `text` contains, anywhere, an 18-character GB 11643-1999 number
/// (see the module docs). Never reports which characters matched, so
/// callers cannot echo the number.
pub(crate) fn contains_national_id(text: &str) -> bool {
    text.as_bytes().windows(18).any(is_national_id)
}

fn is_national_id(w: &[u8]) -> bool {
    let Some((&check, body)) = w.split_last() else {
        return false;
    };
    if body.len() != 17 || !body.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let digit = |i: usize| body.get(i).map_or(0, |b| u32::from(b - b'0'));
    let number = |from: usize, len: usize| (from..from + len).fold(0, |acc, i| acc * 10 + digit(i));
    let sum: u32 = WEIGHTS.iter().enumerate().map(|(i, w)| w * digit(i)).sum();
    let expected = CHECK.get(usize::try_from(sum % 11).unwrap_or(0)).copied();
    if expected != Some(check.to_ascii_uppercase()) {
        return false;
    }
    let region = digit(0);
    (1..=8).contains(&region) && is_date(number(6, 4), number(10, 2), number(12, 2))
}

fn is_date(year: u32, month: u32, day: u32) -> bool {
    if !(1900..=2099).contains(&year) {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_valid_numbers_anywhere() {
        // The standard's sample number (check character X) and a digit one.
        for id in [
            "11010519491231002X",
            "11010519491231002x",
            "urn:bashu:learner:cq:11010519491231002X",
            "urn:bashu:learner:cq:student-11010519491231002X-2026",
            "did:example:abc11010519491231002X",
            "urn:bashu:learner:sc:510104199003070015",
            // Inside a longer digit run still counts.
            "urn:bashu:learner:cq:9911010519491231002X99",
        ] {
            assert!(contains_national_id(id), "{id}");
        }
    }

    #[test]
    fn leaves_other_ids_alone() {
        for id in [
            "urn:bashu:learner:cq:a1b2c3",
            // One check character off.
            "urn:bashu:learner:cq:110105194912310021",
            "urn:bashu:learner:cq:11010519491231002",
            // Valid check character, impossible birth date (month 13).
            "urn:bashu:learner:cq:110105194913310021",
            "urn:bashu:learner:cq:9f3c2e1a-0b4d-4c1e-8f00-123456789012",
            "",
            "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        ] {
            assert!(!contains_national_id(id), "{id}");
        }
    }

    #[test]
    fn check_character_is_iso_7064_mod_11_2() {
        // Exactly one check character completes a given 17-digit body.
        let body = "11010519491231002";
        let valid: Vec<char> = "0123456789X"
            .chars()
            .filter(|c| contains_national_id(&format!("{body}{c}")))
            .collect();
        assert_eq!(valid, vec!['X']);
    }
}
