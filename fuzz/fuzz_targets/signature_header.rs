//! Any `webhook-signature` header: a signature of other bytes never verifies; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook_worker::policy::signing::{self, SigningSecret};

fuzz_target!(|data: &[u8]| {
    let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let (header, body) = data.split_at(data.len() / 2);
    let header = String::from_utf8_lossy(header);
    let genuine = signing::signature(&secret, "msg_1", 1_700_000_000, body);
    // Only a header carrying the genuine signature verifies.
    assert_eq!(signing::verify(&secret, "msg_1", 1_700_000_000, body, &header), header.split(' ').any(|s| s == genuine));
});
