//! Any text as an endpoint URL: parsing and the SSRF policy never panic, and an address the
//! policy refuses is refused in every IPv6 form that carries it.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use webhook_worker::policy::address::{NetPolicy, forbidden_range};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let policy = NetPolicy::default();
    if let Ok(url) = url::Url::parse(text) {
        if let Err(refusal) = policy.check_url(&url) {
            assert!(!refusal.to_string().is_empty());
        }
        if let Some(url::Host::Ipv4(v4)) = url.host() {
            let verdict = forbidden_range(IpAddr::V4(v4)).is_some();
            assert_eq!(forbidden_range(IpAddr::V6(v4.to_ipv6_mapped())).is_some(), verdict, "{v4}");
        }
    }
});
