//! Endpoint secrets at rest: an AES-256-GCM envelope under a key ring.
//!
//! Each ciphertext is `nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`, sealed with a fresh random
//! nonce, the owning endpoint's id as associated data (a ciphertext copied to another endpoint's
//! row fails to open) and stored next to the id of the key that sealed it. The ring seals with its
//! first key and opens with any key it holds, so a new key can be rolled out before the old one is
//! retired (`keys rotate` re-seals everything under the first key).
//!
//! Keys are given as `key_id:base64(32 bytes)`, comma- or newline-separated.

use std::fmt;

use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce, Payload};
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const KEY_BYTES: usize = 32;

/// Why the key ring could not be built or a secret could not be opened. Never contains key
/// material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("the encryption key ring is empty")]
    EmptyKeyRing,
    #[error("encryption key entry {0} is not of the form `key_id:base64key`")]
    MalformedEntry(usize),
    /// Ids are stored beside every ciphertext, so they are kept to plain, printable names.
    #[error("encryption key entry {entry} has the id {id:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    KeyId { entry: usize, id: String },
    /// A bare key, as `openssl rand -base64 32` prints it: the message shows the fix, never the key.
    #[error("encryption key entry {0} has no key id: write it as `<id>:<key>`, e.g. `k1:` followed by this key")]
    BareKey(usize),
    #[error("encryption key `{0}` is not valid base64")]
    KeyNotBase64(String),
    #[error("encryption key `{key_id}` is {len} bytes long; AES-256 needs exactly 32")]
    KeyLength { key_id: String, len: usize },
    #[error("encryption key id `{0}` appears twice in the key ring")]
    DuplicateKeyId(String),
    #[error("key id `{0}` is not in this worker's key ring")]
    UnknownKeyId(String),
    #[error("ciphertext is {0} bytes long, shorter than a nonce and a tag")]
    Truncated(usize),
    #[error(
        "ciphertext did not authenticate under key `{0}`: it was tampered with, sealed for another \
         endpoint, or sealed with a different key of the same id"
    )]
    NotAuthentic(String),
    #[error("sealing with key `{0}` failed")]
    Seal(String),
}

/// Checks that `id`, the id of key ring entry `entry` (from 1), is 1 to 64 of `A-Z a-z 0-9 . _ -`.
///
/// # Errors
/// [`Error::KeyId`] otherwise.
pub fn check_key_id(entry: usize, id: &str) -> Result<(), Error> {
    let plain = (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if plain { Ok(()) } else { Err(Error::KeyId { entry, id: id.to_owned() }) }
}

struct RingKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The AES-256-GCM keys this process can use; the first one seals.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

/// A sealed secret as stored in `webhook.endpoint_secrets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

impl KeyRing {
    /// Parses `id:base64key[,id:base64key…]` (commas or newlines; blank lines and `#` comments
    /// ignored). The first key seals.
    ///
    /// # Errors
    /// [`Error`] for an empty ring, a malformed entry, a key that is not 32 bytes of base64, or a
    /// repeated key id.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut keys: Vec<RingKey> = Vec::new();
        let entries =
            text.split([',', '\n']).map(str::trim).filter(|entry| !entry.is_empty() && !entry.starts_with('#'));
        for (index, entry) in entries.enumerate() {
            let (id, encoded) = entry.split_once(':').ok_or_else(|| missing_id(entry, index + 1))?;
            let id = id.trim();
            if id.is_empty() {
                return Err(Error::MalformedEntry(index + 1));
            }
            check_key_id(index + 1, id)?;
            let bytes = Zeroizing::new(BASE64.decode(encoded.trim()).map_err(|_| Error::KeyNotBase64(id.to_owned()))?);
            let mut bytes: [u8; KEY_BYTES] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::KeyLength { key_id: id.to_owned(), len: bytes.len() })?;
            if keys.iter().any(|key| key.id == id) {
                return Err(Error::DuplicateKeyId(id.to_owned()));
            }
            let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(bytes));
            zeroize::Zeroize::zeroize(&mut bytes);
            keys.push(RingKey { id: id.to_owned(), cipher });
        }
        if keys.is_empty() {
            return Err(Error::EmptyKeyRing);
        }
        Ok(Self { keys })
    }

    /// A one-key ring with a fresh random key, and its textual form (for the demo and for
    /// `keys generate`).
    pub fn generate(key_id: &str) -> (Self, Zeroizing<String>) {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        rand::fill(&mut bytes[..]);
        let text = Zeroizing::new(format!("{key_id}:{}", BASE64.encode(&bytes[..])));
        let ring = Self::parse(&text).expect("a freshly generated key is well-formed");
        (ring, text)
    }

    /// The id of the key that seals.
    pub fn active_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Whether `key_id` is in the ring.
    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.iter().any(|key| key.id == key_id)
    }

    /// Seals `plaintext` for the endpoint `associated_data` under the active key.
    ///
    /// # Errors
    /// [`Error::Seal`] only if the cipher itself fails (it does not for in-memory data).
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Sealed, Error> {
        let key = &self.keys[0];
        let nonce = Nonce::<Aes256Gcm>::generate();
        let sealed = key
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: associated_data })
            .map_err(|_| Error::Seal(key.id.clone()))?;
        let mut ciphertext = Vec::with_capacity(NONCE_BYTES + sealed.len());
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        Ok(Sealed { key_id: key.id.clone(), ciphertext })
    }

    /// Opens a sealed secret of the endpoint `associated_data`.
    ///
    /// # Errors
    /// [`Error::UnknownKeyId`] if the ring lacks the key, [`Error::Truncated`] for a blob too short
    /// to hold a nonce and a tag, [`Error::NotAuthentic`] if authentication fails.
    pub fn open(&self, sealed: &Sealed, associated_data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let key = self
            .keys
            .iter()
            .find(|key| key.id == sealed.key_id)
            .ok_or_else(|| Error::UnknownKeyId(sealed.key_id.clone()))?;
        let blob = &sealed.ciphertext;
        if blob.len() < NONCE_BYTES + TAG_BYTES {
            return Err(Error::Truncated(blob.len()));
        }
        let (nonce, body) = blob.split_at(NONCE_BYTES);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| Error::Truncated(blob.len()))?;
        key.cipher
            .decrypt(&nonce, Payload { msg: body, aad: associated_data })
            .map(Zeroizing::new)
            .map_err(|_| Error::NotAuthentic(key.id.clone()))
    }
}

/// Why an entry without `:` is refused: a bare 32-byte key (the usual `openssl rand -base64 32`
/// mistake) gets a message that says what to change; anything else is merely malformed.
fn missing_id(entry: &str, n: usize) -> Error {
    let decoded = Zeroizing::new(BASE64.decode(entry).unwrap_or_default());
    if decoded.len() == KEY_BYTES { Error::BareKey(n) } else { Error::MalformedEntry(n) }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|key| key.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT_A: &[u8] = b"0b6e3c1e-8f55-4c39-9d53-5a8c1f2b7a10";
    const ENDPOINT_B: &[u8] = b"5f0d2a9b-1c3e-4f6a-8b7c-9d0e1f2a3b4c";

    fn ring(ids: &[&str]) -> (KeyRing, String) {
        let text: Vec<String> = ids.iter().map(|id| KeyRing::generate(id).1.to_string()).collect();
        let text = text.join(",");
        (KeyRing::parse(&text).unwrap(), text)
    }

    #[test]
    fn sealed_secret_opens_to_the_same_bytes() {
        let (ring, _) = ring(&["k1"]);
        let sealed = ring.seal(b"the secret", ENDPOINT_A).unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(sealed.ciphertext.len(), NONCE_BYTES + 10 + TAG_BYTES);
        assert_eq!(&ring.open(&sealed, ENDPOINT_A).unwrap()[..], b"the secret");
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let (ring, _) = ring(&["k1"]);
        let a = ring.seal(b"same", ENDPOINT_A).unwrap();
        let b = ring.seal(b"same", ENDPOINT_A).unwrap();
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn tampered_ciphertext_does_not_open() {
        let (ring, _) = ring(&["k1"]);
        let mut sealed = ring.seal(b"the secret", ENDPOINT_A).unwrap();
        sealed.ciphertext[NONCE_BYTES + 1] ^= 0x01;
        assert_eq!(ring.open(&sealed, ENDPOINT_A).unwrap_err(), Error::NotAuthentic("k1".into()));
    }

    #[test]
    fn ciphertext_moved_to_another_endpoint_does_not_open() {
        let (ring, _) = ring(&["k1"]);
        let sealed = ring.seal(b"the secret", ENDPOINT_A).unwrap();
        assert_eq!(ring.open(&sealed, ENDPOINT_B).unwrap_err(), Error::NotAuthentic("k1".into()));
    }

    #[test]
    fn key_ids_are_plain_printable_names() {
        let key = BASE64.encode([7u8; 32]);
        assert!(KeyRing::parse(&format!("2026-12_k.1:{key}")).is_ok());
        for id in ["k 1", "k\u{0}", "ключ", &"k".repeat(65)] {
            let err = KeyRing::parse(&format!("{id}:{key}")).unwrap_err();
            assert_eq!(err, Error::KeyId { entry: 1, id: id.to_owned() }, "{id:?}");
            assert!(!err.to_string().contains(&key), "the key is never echoed");
        }
    }

    #[test]
    fn unknown_key_id_is_named_in_the_error() {
        let (ring, _) = ring(&["k1"]);
        let mut sealed = ring.seal(b"the secret", ENDPOINT_A).unwrap();
        sealed.key_id = "k0".into();
        assert_eq!(ring.open(&sealed, ENDPOINT_A).unwrap_err(), Error::UnknownKeyId("k0".into()));
    }

    #[test]
    fn truncated_ciphertext_is_an_error_not_a_panic() {
        let (ring, _) = ring(&["k1"]);
        for len in [0, 1, 12, 27] {
            let sealed = Sealed { key_id: "k1".into(), ciphertext: vec![0; len] };
            assert_eq!(ring.open(&sealed, ENDPOINT_A).unwrap_err(), Error::Truncated(len));
        }
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let (old_ring, old_text) = ring(&["old"]);
        let sealed_old = old_ring.seal(b"s", ENDPOINT_A).unwrap();
        let new_text = format!("{},{old_text}", KeyRing::generate("new").1.as_str());
        let both = KeyRing::parse(&new_text).unwrap();
        assert_eq!(both.active_key_id(), "new");
        assert_eq!(&both.open(&sealed_old, ENDPOINT_A).unwrap()[..], b"s");
        assert_eq!(both.seal(b"s", ENDPOINT_A).unwrap().key_id, "new");
    }

    #[test]
    fn malformed_key_rings_are_refused_with_a_reason() {
        assert_eq!(KeyRing::parse(" \n# only a comment\n").unwrap_err(), Error::EmptyKeyRing);
        assert_eq!(KeyRing::parse("no-colon").unwrap_err(), Error::MalformedEntry(1));
        assert_eq!(KeyRing::parse("k1:***").unwrap_err(), Error::KeyNotBase64("k1".into()));
        assert_eq!(KeyRing::parse("k1:c2hvcnQ=").unwrap_err(), Error::KeyLength { key_id: "k1".into(), len: 5 });
        let one = KeyRing::generate("k1").1;
        assert_eq!(
            KeyRing::parse(&format!("{},{}", one.as_str(), one.as_str())).unwrap_err(),
            Error::DuplicateKeyId("k1".into())
        );
    }

    #[test]
    fn a_bare_key_is_refused_with_the_fix_and_without_the_key() {
        let one = KeyRing::generate("k1").1;
        let key = one.split_once(':').unwrap().1;
        let err = KeyRing::parse(&format!("{},{key}", one.as_str())).unwrap_err();
        assert_eq!(err, Error::BareKey(2));
        let message = err.to_string();
        assert_eq!(
            message,
            "encryption key entry 2 has no key id: write it as `<id>:<key>`, e.g. `k1:` followed by this key"
        );
        assert!(!message.contains(key));
        // Base64 of another length is not a key: the generic message stays.
        assert_eq!(KeyRing::parse("c2hvcnQ=").unwrap_err(), Error::MalformedEntry(1));
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let (ring, text) = ring(&["k1"]);
        let shown = format!("{ring:?}");
        let key = text.split_once(':').unwrap().1;
        assert!(shown.contains("k1") && !shown.contains(key), "{shown}");
    }
}
