//! Any key ring text: a ring or a readable error that never echoes a key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook_worker::policy::crypto::KeyRing;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match KeyRing::parse(text) {
        Ok(ring) => assert!(ring.contains(ring.active_key_id())),
        Err(err) => {
            let message = err.to_string();
            assert!(!message.is_empty());
            // Ids may be named; key material (what follows an id, or a bare entry) never.
            for entry in text.split([',', '\n']) {
                let material = entry.split_once(':').map_or(entry, |(_, key)| key).trim();
                if material.len() >= 8 {
                    assert!(!message.contains(material), "{message}");
                }
            }
        }
    }
});
