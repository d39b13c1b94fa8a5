//! Lower-case hex for digests. `write!("{:02x}")` per byte went through the
//! formatting machinery 32 times per SHA-256, several digests per exchange
//! (audit rows and entries, credential and predecessor digests).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex, two digits per byte.
pub fn lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::lower;

    #[test]
    fn matches_the_formatting_machinery() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(lower(&bytes), expected);
        assert_eq!(lower(&[]), "");
    }
}
