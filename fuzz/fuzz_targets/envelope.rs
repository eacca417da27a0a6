//! Any stored ciphertext: opened only if authentic, otherwise a readable error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook_worker::policy::crypto::{KeyRing, Sealed};

fuzz_target!(|data: &[u8]| {
    let ring = KeyRing::parse("k:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    let (aad, blob) = data.split_at(data.len().min(16));
    let sealed = Sealed { key_id: "k".into(), ciphertext: blob.to_vec() };
    if let Err(err) = ring.open(&sealed, aad) {
        assert!(!err.to_string().is_empty());
    }
    // What it seals, it opens.
    let sealed = ring.seal(blob, aad).unwrap();
    assert_eq!(&ring.open(&sealed, aad).unwrap()[..], blob);
});
