//! Any `Retry-After` header value: parsed or ignored, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook_worker::policy::retry::parse_retry_after;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let now = chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap();
    if let Some(wait) = parse_retry_after(text, now)
        && text.trim().parse::<u64>().is_err()
    {
        // A date: never more than the distance to the year 9999.
        assert!(wait.as_secs() < 300_000_000_000, "{text:?}");
    }
});
