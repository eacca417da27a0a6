//! SSRF guard: which addresses a webhook may be sent to.
//!
//! Webhook URLs come from customers, so a URL must never make a worker reach into its own network:
//! loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved, documentation and
//! benchmarking ranges are refused, including their IPv4-mapped, IPv4-compatible, NAT64 and 6to4
//! IPv6 forms. Hosts are resolved by `engine::resolve::GuardedResolver`, which refuses a name if any of its
//! addresses is forbidden and hands the checked addresses straight to the connector, so there is no
//! second resolution to rebind. IP-literal URLs never reach a resolver, so [`NetPolicy::check_url`]
//! checks them (the `url` crate has already normalised decimal, octal, hex and short forms).
//! An explicit CIDR allow-list lifts the guard for tests, the demo and internal receivers.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

/// Why a URL or address was refused. The text is recorded as the delivery's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("URL scheme `{0}` is not allowed; use https (or http unless HTTPS-only mode is on)")]
    Scheme(String),
    #[error("plain http URLs are refused: HTTPS-only mode is on")]
    HttpsOnly,
    #[error("URL has no host")]
    NoHost,
    #[error("URL must not contain credentials")]
    Credentials,
    #[error("address {ip} is in a forbidden range ({range})")]
    Address { ip: IpAddr, range: Cow<'static, str> },
    #[error("host `{host}` resolves to {ip}, which is in a forbidden range ({range})")]
    Resolved { host: String, ip: IpAddr, range: Cow<'static, str> },
    #[error("host `{0}` did not resolve to any address")]
    NoAddresses(String),
}

/// Where webhooks may go.
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    allow: Vec<IpNet>,
    https_only: bool,
}

impl NetPolicy {
    /// `allow`: CIDRs exempt from the guard. `https_only`: refuse `http://` URLs.
    pub fn new(allow: Vec<IpNet>, https_only: bool) -> Self {
        Self { allow, https_only }
    }

    /// Checks the scheme, credentials and, for IP-literal hosts, the address.
    ///
    /// # Errors
    /// A [`Refusal`] naming what is wrong.
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        match url.scheme() {
            "https" => {}
            "http" if self.https_only => return Err(Refusal::HttpsOnly),
            "http" => {}
            other => return Err(Refusal::Scheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        match url.host() {
            None => Err(Refusal::NoHost),
            Some(Host::Domain(_)) => Ok(()),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
        }
    }

    /// Checks one address.
    ///
    /// # Errors
    /// [`Refusal::Address`] naming the forbidden range.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.is_allowed(ip) {
            return Ok(());
        }
        match forbidden_range(ip) {
            Some(range) => Err(Refusal::Address { ip, range }),
            None => Ok(()),
        }
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        let canonical = embedded_ipv4(ip).map_or(ip, IpAddr::V4);
        self.allow.iter().any(|net| net.contains(&ip) || net.contains(&canonical))
    }
}

/// The name of the forbidden range `ip` falls in, or `None` for a public unicast address. For an
/// IPv4 address carried in IPv6 it names the embedded address and its range.
pub fn forbidden_range(ip: IpAddr) -> Option<Cow<'static, str>> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4).map(Cow::Borrowed),
        IpAddr::V6(v6) => match embedded_ipv4(ip) {
            Some(v4) => forbidden_v4(v4).map(|range| Cow::Owned(format!("embeds IPv4 {v4}: {range}"))),
            None => forbidden_v6(v6).map(Cow::Borrowed),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        (0, ..) => "unspecified / \"this network\" 0.0.0.0/8",
        (10, ..) => "private 10.0.0.0/8",
        (100, 64..=127, _) => "carrier-grade NAT 100.64.0.0/10",
        (127, ..) => "loopback 127.0.0.0/8",
        (169, 254, _) => "link-local 169.254.0.0/16 (cloud metadata)",
        (172, 16..=31, _) => "private 172.16.0.0/12",
        (192, 0, 0) => "IETF protocol assignments 192.0.0.0/24",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation range",
        (192, 88, 99) => "6to4 relay anycast 192.88.99.0/24",
        (192, 168, _) => "private 192.168.0.0/16",
        (198, 18..=19, _) => "benchmarking 198.18.0.0/15",
        (224..=239, ..) => "multicast 224.0.0.0/4",
        (240..=255, ..) => "reserved 240.0.0.0/4 and broadcast",
        _ => return None,
    };
    Some(range)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let range = if ip.is_unspecified() {
        "unspecified ::/128"
    } else if ip.is_loopback() {
        "loopback ::1/128"
    } else if segments[0] & 0xfe00 == 0xfc00 {
        "unique local fc00::/7"
    } else if segments[0] & 0xffc0 == 0xfe80 {
        "link-local fe80::/10"
    } else if segments[0] & 0xffc0 == 0xfec0 {
        "site-local fec0::/10"
    } else if segments[0] & 0xff00 == 0xff00 {
        "multicast ff00::/8"
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        "documentation 2001:db8::/32"
    } else if segments[0] == 0x2001 && segments[1] < 0x0200 {
        "IETF protocol assignments 2001::/23 (Teredo, benchmarking, ORCHID)"
    } else if segments[..4] == [0x0100, 0, 0, 0] {
        "discard-only 100::/64"
    } else if segments[..3] == [0x64, 0xff9b, 1] {
        // Translated by the site's own NAT64 (RFC 8215), to any IPv4 address it chooses.
        "local-use NAT64 64:ff9b:1::/48"
    } else {
        return None;
    };
    Some(range)
}

/// The IPv4 address carried inside an IPv6 address in mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`) form.
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // IPv4-compatible (all of ::/96): `::2` carries 0.0.0.2 as much as `::7f00:1` carries
        // 127.0.0.1. `::` and `::1` are named by their IPv6 ranges instead (both are refused).
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> Option<Refusal> {
        NetPolicy::default().check_url(&Url::parse(url).unwrap()).err()
    }

    #[test]
    fn private_and_special_ipv4_ranges_are_forbidden() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(forbidden_range(ip.parse().unwrap()).is_some(), "{ip} should be forbidden");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
        ] {
            assert_eq!(forbidden_range(ip.parse().unwrap()), None, "{ip} should be allowed");
        }
    }

    #[test]
    fn special_ipv6_ranges_and_embedded_ipv4_are_forbidden() {
        for ip in [
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(forbidden_range(ip.parse().unwrap()).is_some(), "{ip} should be forbidden");
        }
        // Embedded public addresses are fine.
        assert_eq!(forbidden_range("::ffff:8.8.8.8".parse().unwrap()), None);
        assert_eq!(forbidden_range("64:ff9b::808:808".parse().unwrap()), None);
    }

    #[test]
    fn every_textual_form_of_loopback_and_metadata_is_refused() {
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/",
            "http://0xa9fea9fe/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://0/",
            "http://[::]/",
        ] {
            assert!(matches!(refused(url), Some(Refusal::Address { .. })), "{url}: {:?}", refused(url));
        }
    }

    #[test]
    fn schemes_credentials_and_https_only_are_enforced() {
        assert_eq!(refused("ftp://example.com/"), Some(Refusal::Scheme("ftp".into())));
        assert_eq!(refused("file:///etc/passwd"), Some(Refusal::Scheme("file".into())));
        assert_eq!(refused("https://user:pw@example.com/"), Some(Refusal::Credentials));
        assert_eq!(refused("https://example.com/hook"), None);
        let strict = NetPolicy::new(vec![], true);
        assert_eq!(strict.check_url(&Url::parse("http://example.com/").unwrap()), Err(Refusal::HttpsOnly));
    }

    #[test]
    fn the_allow_list_lifts_the_guard_for_its_ranges_only() {
        let policy = NetPolicy::new(vec!["127.0.0.0/8".parse().unwrap()], false);
        assert_eq!(policy.check_url(&Url::parse("http://127.0.0.1:8080/").unwrap()), Ok(()));
        assert_eq!(policy.check_url(&Url::parse("http://[::ffff:127.0.0.1]/").unwrap()), Ok(()));
        assert!(policy.check_url(&Url::parse("http://10.0.0.1/").unwrap()).is_err());
        assert!(policy.check_url(&Url::parse("http://[::1]/").unwrap()).is_err());
    }
}
