//! Properties of everything that parses outside input, over generated input (proptest; a
//! failure prints the shrunk case, and `PROPTEST_CASES` runs more): the SSRF policy over the
//! whole IPv4 and IPv6 space against an independent table of ranges, URLs in every textual form
//! of an address, `Retry-After`, the key ring, the ciphertext envelope and signature headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine as _;
use ipnet::IpNet;
use proptest::prelude::*;
use webhook_worker::policy::address::{NetPolicy, forbidden_range};
use webhook_worker::policy::crypto::{Error as CryptoError, KeyRing, Sealed};
use webhook_worker::policy::retry::parse_retry_after;
use webhook_worker::policy::signing::{self, SigningSecret};

/// IPv4 ranges a webhook may never reach, written from the registries, not from the code.
const FORBIDDEN_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// IPv6 ranges refused for themselves.
const FORBIDDEN_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "2001:db8::/32",
    "2001::/23",
    "100::/64",
    "64:ff9b:1::/48",
];

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn model_v4(ip: Ipv4Addr) -> bool {
    nets(FORBIDDEN_V4).iter().any(|n| n.contains(&IpAddr::V4(ip)))
}

/// The model's verdict for any address: an IPv4 address carried in IPv6 (mapped, compatible,
/// NAT64 well-known prefix, 6to4) takes the verdict of the IPv4 address it carries.
fn model(ip: IpAddr) -> bool {
    let v6 = match ip {
        IpAddr::V4(v4) => return model_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    if nets(FORBIDDEN_V6).iter().any(|n| n.contains(&ip)) {
        return true;
    }
    let s = v6.segments();
    let tail = Ipv4Addr::from(u128::from(v6) as u32);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => model_v4(tail),
        [0x2002, hi, lo, ..] => model_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        _ => false,
    }
}

/// Addresses at and around the edges of every range, where an off-by-one hides, and anywhere.
fn any_v4() -> impl Strategy<Value = Ipv4Addr> {
    let edges: Vec<(u32, u32)> = nets(FORBIDDEN_V4)
        .into_iter()
        .map(|n| match n {
            IpNet::V4(n) => (u32::from(n.network()), u32::from(n.broadcast())),
            IpNet::V6(_) => unreachable!(),
        })
        .collect();
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        (proptest::sample::select(edges), any::<bool>(), -2i64..=2).prop_map(|((first, last), low, delta)| {
            let edge = i64::from(if low { first } else { last }) + delta;
            Ipv4Addr::from(edge.clamp(0, i64::from(u32::MAX)) as u32)
        }),
    ]
}

/// Anywhere in IPv6, and every form that carries an IPv4 address.
fn any_v6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        (any_v4(), 0..4u8, any::<u64>()).prop_map(|(v4, form, noise)| embed(v4, form, noise)),
        (proptest::sample::select(nets(FORBIDDEN_V6)), any::<u128>(), any::<bool>()).prop_map(|(net, bits, inside)| {
            let IpNet::V6(net) = net else { unreachable!() };
            let host = bits & !u128::from(net.netmask());
            let ip = u128::from(net.network()) | host;
            // Just inside or just outside the range.
            Ipv6Addr::from(if inside { ip } else { u128::from(net.broadcast()).wrapping_add(1) })
        }),
    ]
}

/// `v4` in IPv6 form `form`: mapped, compatible, NAT64 (64:ff9b::/96) or 6to4 (with `noise` in
/// the bits 6to4 leaves to the site).
fn embed(v4: Ipv4Addr, form: u8, noise: u64) -> Ipv6Addr {
    let v4 = u128::from(u32::from(v4));
    Ipv6Addr::from(match form {
        0 => (0xffff << 32) | v4,
        1 => v4,
        2 => (0x0064_ff9b_u128 << 96) | v4,
        _ => (0x2002_u128 << 112) | (v4 << 80) | u128::from(noise & 0xffff_ffff_ffff),
    })
}

fn refused(policy: &NetPolicy, url: &str) -> bool {
    policy.check_url(&url::Url::parse(url).unwrap()).is_err()
}

proptest! {
    #[test]
    fn every_ipv4_address_gets_the_registries_verdict_in_every_textual_form(ip in any_v4()) {
        let expected = model_v4(ip);
        prop_assert_eq!(forbidden_range(IpAddr::V4(ip)).is_some(), expected, "{}", ip);
        let policy = NetPolicy::default();
        let n = u32::from(ip);
        // Dotted, one decimal number, hex, and octal dotted: the url crate normalises them all.
        let [a, b, c, d] = ip.octets();
        for url in [
            format!("http://{ip}/"),
            format!("http://{n}/"),
            format!("https://0x{n:x}/"),
            format!("http://0{a:o}.0{b:o}.0{c:o}.0{d:o}/"),
        ] {
            prop_assert_eq!(refused(&policy, &url), expected, "{}", url);
        }
    }

    #[test]
    fn every_ipv6_address_gets_the_verdict_of_the_ipv4_address_it_carries(ip in any_v6()) {
        let expected = model(IpAddr::V6(ip));
        prop_assert_eq!(forbidden_range(IpAddr::V6(ip)).is_some(), expected, "{}", ip);
        prop_assert_eq!(refused(&NetPolicy::default(), &format!("https://[{ip}]/")), expected, "{}", ip);
    }

    #[test]
    fn each_form_of_an_embedded_ipv4_address_inherits_its_verdict(ip in any_v4(), noise in any::<u64>()) {
        let expected = forbidden_range(IpAddr::V4(ip)).is_some();
        for form in 0..4 {
            let v6 = embed(ip, form, noise);
            prop_assert_eq!(forbidden_range(IpAddr::V6(v6)).is_some(), expected, "{} as {}", ip, v6);
        }
    }

    #[test]
    fn the_allow_list_lifts_the_guard_for_its_range_and_the_forms_that_carry_it(ip in any_v4(), form in 0..3u8) {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses, not carriers.
        prop_assume!(form != 1 || u32::from(ip) > 1);
        let policy = NetPolicy::new(vec![IpNet::from(IpAddr::V4(ip))], false);
        prop_assert!(policy.check_ip(IpAddr::V4(ip)).is_ok());
        prop_assert!(policy.check_ip(IpAddr::V6(embed(ip, form, 0))).is_ok());
    }

    #[test]
    fn retry_after_seconds_are_read_exactly(seconds in any::<u64>(), pad in "[ \t]{0,2}") {
        let value = format!("{pad}{seconds}{pad}");
        prop_assert_eq!(parse_retry_after(&value, chrono::Utc::now()), Some(Duration::from_secs(seconds)));
    }

    #[test]
    fn retry_after_http_dates_are_read_to_the_second(offset in -10_000_000i64..100_000_000) {
        let now = chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        let date = now + chrono::TimeDelta::seconds(offset);
        let value = date.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let expected = Duration::from_secs(u64::try_from(offset.max(0)).unwrap());
        prop_assert_eq!(parse_retry_after(&value, now), Some(expected), "{}", value);
    }

    #[test]
    fn retry_after_never_panics_and_ignores_what_is_neither(value in "\\PC{0,40}") {
        let parsed = parse_retry_after(&value, chrono::Utc::now());
        let numeric = value.trim().parse::<u64>().is_ok();
        let dated = chrono::DateTime::parse_from_rfc2822(value.trim()).is_ok();
        prop_assert_eq!(parsed.is_some(), numeric || dated, "{:?}", value);
    }

    #[test]
    fn a_key_ring_round_trips_and_the_first_key_seals(keys in proptest::collection::btree_map("[a-z0-9_-]{1,12}", any::<[u8; 32]>(), 1..5)) {
        let text: Vec<String> = keys.iter().map(|(id, key)| format!("{id}:{}", base64::engine::general_purpose::STANDARD.encode(key))).collect();
        let ring = KeyRing::parse(&text.join(",")).unwrap();
        prop_assert_eq!(ring.active_key_id(), keys.keys().next().unwrap().as_str());
        prop_assert!(keys.keys().all(|id| ring.contains(id)));
    }

    #[test]
    fn key_ring_errors_never_echo_key_material(key in any::<[u8; 32]>(), junk in "\\PC{0,60}") {
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        for text in [encoded.clone(), format!("{encoded},{junk}"), format!("k:{encoded}x"), junk.clone()] {
            if let Err(err) = KeyRing::parse(&text) {
                let message = err.to_string();
                prop_assert!(!message.is_empty());
                prop_assert!(!message.contains(&encoded[..16]), "{} leaks the key", message);
            }
        }
    }

    #[test]
    fn the_envelope_opens_what_it_sealed_and_nothing_else(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        aad in proptest::collection::vec(any::<u8>(), 0..64),
        flip in any::<proptest::sample::Index>(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let ring = KeyRing::generate("k").0;
        let sealed = ring.seal(&plaintext, &aad).unwrap();
        prop_assert_eq!(&ring.open(&sealed, &aad).unwrap()[..], &plaintext[..]);
        let mut tampered = sealed.ciphertext.clone();
        let i = flip.index(tampered.len());
        tampered[i] ^= 0x01;
        let err = ring.open(&Sealed { key_id: "k".into(), ciphertext: tampered }, &aad).unwrap_err();
        prop_assert_eq!(err, CryptoError::NotAuthentic("k".into()));
        let mut other_aad = aad.clone();
        other_aad.push(0);
        prop_assert!(ring.open(&sealed, &other_aad).is_err(), "sealed for another row");
        let short = sealed.ciphertext[..cut.index(28)].to_vec();
        let err = ring.open(&Sealed { key_id: "k".into(), ciphertext: short }, &aad).unwrap_err();
        prop_assert!(matches!(err, CryptoError::Truncated(_)), "{:?}", err);
    }

    #[test]
    fn signatures_verify_with_the_standard_webhooks_library_and_only_for_their_bytes(
        body in "\\PC{0,512}",
        msg_id in "msg_[A-Za-z0-9]{1,32}",
        timestamp in 1_000_000_000i64..4_000_000_000,
        flip in any::<proptest::sample::Index>(),
    ) {
        // Bodies are JSON text, which the library reads as UTF-8.
        let body = body.into_bytes();
        let secret = SigningSecret::generate();
        let header = signing::signature_header(std::slice::from_ref(&secret), &msg_id, timestamp, &body);
        prop_assert!(signing::verify(&secret, &msg_id, timestamp, &body, &header));
        let library = standardwebhooks::Webhook::new(&secret.expose_whsec()).unwrap();
        let now = chrono::Utc::now().timestamp();
        // The library checks the timestamp's age; sign again at "now" for it.
        let fresh = signing::signature_header(std::slice::from_ref(&secret), &msg_id, now, &body);
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", msg_id.parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert("webhook-signature", fresh.parse().unwrap());
        prop_assert!(library.verify(&body, &headers).is_ok());
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 0x80;
            prop_assert!(!signing::verify(&secret, &msg_id, timestamp, &changed, &header));
        }
    }

    #[test]
    fn signature_headers_of_any_shape_are_refused_without_panicking(header in "\\PC{0,200}") {
        let secret = SigningSecret::generate();
        let body: &[u8] = b"[]";
        prop_assert!(!signing::verify(&secret, "msg_1", 1_700_000_000, body, &header));
    }
}
