//! API tokens: how they look and how they are compared. A token is `wdt_` + 43 characters of
//! URL-safe base64 (32 random bytes); only its SHA-256 is stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// Every token starts with this, so a leaked one is recognisable (and secret scanners can find it).
pub const PREFIX: &str = "wdt_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A new random token.
pub fn generate() -> zeroize::Zeroizing<String> {
    let mut bytes = zeroize::Zeroizing::new([0u8; TOKEN_BYTES]);
    rand::fill(&mut bytes[..]);
    zeroize::Zeroizing::new(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes[..])))
}

/// The hash a token is stored and looked up by.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether two hashes are equal, in time that does not depend on where they differ.
pub fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_compared_by_hash() {
        let (a, b) = (generate(), generate());
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43 && !a.contains('.'));
        assert_ne!(*a, *b);
        assert!(same_hash(&hash(&a), &hash(&a)));
        assert!(!same_hash(&hash(&a), &hash(&b)));
        assert!(!same_hash(&hash(&a), &hash(&a)[..31]));
    }
}
