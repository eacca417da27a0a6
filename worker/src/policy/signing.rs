//! Standard Webhooks signatures (<https://www.standardwebhooks.com>).
//!
//! A signature is `v1,` + base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")). During a secret
//! rotation every live secret signs and the header carries the signatures space-separated, so a
//! receiver holding either secret accepts the request. Pure code: time and randomness come in as
//! arguments.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Prefix of the textual form of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest accepted key, in bytes (Standard Webhooks: 24 to 64 random bytes).
pub const MIN_SECRET_BYTES: usize = 24;
/// Longest accepted key, in bytes.
pub const MAX_SECRET_BYTES: usize = 64;
/// Length of the keys this project generates.
const GENERATED_SECRET_BYTES: usize = 32;

/// Why a signing secret was refused. Never contains the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("a signing secret must start with `whsec_`")]
    MissingPrefix,
    #[error("the signing secret after `whsec_` is not valid base64")]
    NotBase64,
    #[error("the signing secret is {0} bytes long; it must be 24 to 64 bytes")]
    BadLength(usize),
}

/// The raw bytes of an HMAC signing key. Zeroed on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct SigningSecret(Zeroizing<Vec<u8>>);

impl SigningSecret {
    /// Parses the `whsec_<base64>` form.
    ///
    /// # Errors
    /// [`Error`] when the prefix, the base64 or the length (24–64 bytes) is wrong.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(Error::MissingPrefix)?;
        let bytes = Zeroizing::new(BASE64.decode(encoded).map_err(|_| Error::NotBase64)?);
        Self::from_bytes(bytes.to_vec())
    }

    /// Wraps raw key bytes.
    ///
    /// # Errors
    /// [`Error::BadLength`] unless the key is 24 to 64 bytes long.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, Error> {
        let bytes = Zeroizing::new(bytes);
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(Error::BadLength(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// A new random 32-byte secret from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; GENERATED_SECRET_BYTES];
        rand::fill(&mut bytes[..]);
        Self(Zeroizing::new(bytes))
    }

    /// The `whsec_<base64>` form, for showing to the operator exactly once.
    pub fn expose_whsec(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_PREFIX}{}", BASE64.encode(&*self.0)))
    }

    /// The raw key bytes, for encryption at rest.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC-SHA256 accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// One `v1,<base64>` signature of `body` for message `msg_id` at `timestamp` (unix seconds).
pub fn signature(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(msg_id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", BASE64.encode(tag))
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
pub fn signature_header(secrets: &[SigningSecret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|secret| signature(secret, msg_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Whether any `v1` signature in `header` was made with `secret` (constant-time comparison).
/// Checks no timestamp tolerance: receivers decide how old a message may be.
pub fn verify(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header.split(' ').any(|candidate| {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            return false;
        };
        let Ok(tag) = BASE64.decode(encoded) else {
            return false;
        };
        secret.mac(msg_id, timestamp, body).verify_slice(&tag).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published Standard Webhooks test vector (also used by the svix libraries' tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signature_matches_the_published_test_vector() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(signature(&secret, MSG_ID, TIMESTAMP, BODY), EXPECTED);
    }

    #[test]
    fn signatures_are_accepted_by_the_standardwebhooks_reference_library() {
        let secret = SigningSecret::generate();
        let header = signature_header(std::slice::from_ref(&secret), MSG_ID, TIMESTAMP, BODY);
        let reference = standardwebhooks::Webhook::new(&secret.expose_whsec()).unwrap();
        assert_eq!(reference.sign(MSG_ID, TIMESTAMP, BODY).unwrap(), header);
    }

    #[test]
    fn rotation_header_carries_one_signature_per_secret_and_each_verifies() {
        let old = SigningSecret::generate();
        let new = SigningSecret::generate();
        let header = signature_header(&[new.clone(), old.clone()], MSG_ID, TIMESTAMP, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, MSG_ID, TIMESTAMP, BODY, &header));
        assert!(verify(&new, MSG_ID, TIMESTAMP, BODY, &header));
        assert!(!verify(&SigningSecret::generate(), MSG_ID, TIMESTAMP, BODY, &header));
    }

    #[test]
    fn any_change_to_the_signed_content_fails_verification() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert!(verify(&secret, MSG_ID, TIMESTAMP, BODY, EXPECTED));
        assert!(!verify(&secret, MSG_ID, TIMESTAMP + 1, BODY, EXPECTED));
        assert!(!verify(&secret, "msg_other", TIMESTAMP, BODY, EXPECTED));
        assert!(!verify(&secret, MSG_ID, TIMESTAMP, br#"{"test": 2432232315}"#, EXPECTED));
    }

    #[test]
    fn malformed_secrets_are_refused_with_a_reason() {
        assert_eq!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(), Error::MissingPrefix);
        assert_eq!(SigningSecret::parse("whsec_not base64!").unwrap_err(), Error::NotBase64);
        assert_eq!(SigningSecret::parse("whsec_c2hvcnQ=").unwrap_err(), Error::BadLength(5));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains("MfKQ"), "{shown}");
    }

    #[test]
    fn generated_secrets_round_trip_through_their_text_form() {
        let secret = SigningSecret::generate();
        let again = SigningSecret::parse(&secret.expose_whsec()).unwrap();
        assert_eq!(secret.expose_bytes(), again.expose_bytes());
    }
}
