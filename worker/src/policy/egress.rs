//! Egress through an HTTP CONNECT proxy, as pure decisions: the proxy's address and credentials
//! (`WEBHOOK_PROXY_URL`), which hosts bypass it (`WEBHOOK_NO_PROXY`), and the CONNECT exchange
//! itself (the request we write, the reply we accept).
//!
//! The worker resolves and checks the target itself and asks the proxy to CONNECT to the checked
//! *address*, never to the name, so the SSRF guard and DNS pinning hold through the proxy
//! (`engine::egress` does the I/O; see `docs/egress.md`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use url::{Host, Url};

/// Why `WEBHOOK_PROXY_URL` was refused. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyUrlError {
    #[error("is not a URL ({0}); expected http://[user:password@]host:port")]
    NotAUrl(url::ParseError),
    #[error(
        "has scheme `{0}`; only http:// (an HTTP CONNECT proxy, spoken to in plain text) is supported — \
         the webhook's own TLS runs end to end inside the tunnel"
    )]
    Scheme(String),
    #[error("has no host")]
    NoHost,
    #[error("must be only scheme, credentials, host and port (no path, query or fragment)")]
    Extra,
    #[error("has credentials that are not valid percent-encoded UTF-8")]
    Credentials,
}

/// The egress proxy: where it is and how to authenticate to it.
#[derive(Clone)]
pub struct ProxyConfig {
    host: Host<String>,
    port: u16,
    /// The `Proxy-Authorization` value (`Basic …`), when credentials were given.
    authorization: Option<SecretString>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("address", &self.to_string())
            .field("authorization", &self.authorization.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// `host:port`, without credentials: safe for logs and recorded errors.
impl fmt::Display for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl ProxyConfig {
    /// Parses `http://[user[:password]@]host[:port]` (port 80 when not given).
    ///
    /// # Errors
    /// A [`ProxyUrlError`] naming what is wrong, never quoting the URL.
    pub fn parse(text: &str) -> Result<Self, ProxyUrlError> {
        let url = Url::parse(text.trim()).map_err(ProxyUrlError::NotAUrl)?;
        if url.scheme() != "http" {
            return Err(ProxyUrlError::Scheme(url.scheme().to_owned()));
        }
        let host = url.host().ok_or(ProxyUrlError::NoHost)?.to_owned();
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(ProxyUrlError::Extra);
        }
        let decode = |part: &str| percent_decode(part).ok_or(ProxyUrlError::Credentials);
        let authorization = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = decode(url.username())?;
            let password = decode(url.password().unwrap_or(""))?;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(SecretString::from(format!("Basic {token}")))
        };
        Ok(Self { host, port: url.port().unwrap_or(80), authorization })
    }

    /// The proxy's host (a name to resolve, or an address).
    pub fn host(&self) -> &Host<String> {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether credentials are configured.
    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    /// The CONNECT request for the checked `target` address.
    pub fn connect_request(&self, target: SocketAddr) -> zeroize::Zeroizing<Vec<u8>> {
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = &self.authorization {
            head.push_str("Proxy-Authorization: ");
            head.push_str(authorization.expose_secret());
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        zeroize::Zeroizing::new(head.into_bytes())
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What the proxy answered to a CONNECT, read from the start of its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectReply {
    /// The head is not complete yet: read more.
    Incomplete,
    /// 2xx: the tunnel is open; its bytes start after `head_len`.
    Established { head_len: usize },
    /// Any other status, with its reason phrase (cut to 100 characters).
    Refused { status: u16, reason: String },
}

/// The reply is not HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the answer to CONNECT is not an HTTP response")]
pub struct MalformedReply;

/// The longest reply head accepted.
pub const MAX_REPLY_HEAD: usize = 8192;

/// Parses the start of a CONNECT reply.
///
/// # Errors
/// [`MalformedReply`] when it is not `HTTP/1.x NNN …`, or its head exceeds [`MAX_REPLY_HEAD`].
pub fn parse_connect_reply(buf: &[u8]) -> Result<ConnectReply, MalformedReply> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        let prefix = &buf[..buf.len().min(5)];
        if buf.len() > MAX_REPLY_HEAD || !b"HTTP/".starts_with(prefix) {
            return Err(MalformedReply);
        }
        return Ok(ConnectReply::Incomplete);
    };
    let line = buf[..end].split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| MalformedReply)?.trim_end();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(MalformedReply);
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(MalformedReply)?;
    if (200..300).contains(&status) {
        return Ok(ConnectReply::Established { head_len: end + 4 });
    }
    let reason = parts.next().unwrap_or("").chars().take(100).collect();
    Ok(ConnectReply::Refused { status, reason })
}

/// `WEBHOOK_NO_PROXY`: hosts reached directly, not through the proxy (still resolved and
/// checked by the SSRF guard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    any: bool,
    domains: Vec<String>,
    nets: Vec<IpNet>,
}

/// An entry of `WEBHOOK_NO_PROXY` that is not a name, an address or a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "WEBHOOK_NO_PROXY entry `{0}` is not a host name, `.suffix`, IP address, CIDR or `*` (ports are not supported)"
)]
pub struct NoProxyError(pub String);

impl NoProxy {
    /// Parses a comma-separated list: `*` (everything), host names (which also match their
    /// subdomains; a leading `.` or `*.` is allowed), IP addresses and CIDRs.
    ///
    /// # Errors
    /// [`NoProxyError`] naming the first bad entry.
    pub fn parse(text: &str) -> Result<Self, NoProxyError> {
        let mut list = Self::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                list.any = true;
            } else if let Ok(net) = entry.parse::<IpNet>() {
                list.nets.push(net);
            } else if let Ok(ip) = entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else {
                let domain = entry.trim_start_matches("*.").trim_start_matches('.').to_ascii_lowercase();
                let valid = !domain.is_empty()
                    && domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
                if !valid {
                    return Err(NoProxyError(entry.to_owned()));
                }
                list.domains.push(domain);
            }
        }
        Ok(list)
    }

    /// Whether `host` bypasses the proxy.
    pub fn matches(&self, host: &Host<&str>) -> bool {
        if self.any {
            return true;
        }
        match host {
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                self.domains.iter().any(|d| {
                    name == *d
                        || (name.len() > d.len()
                            && name.ends_with(d.as_str())
                            && name.as_bytes()[name.len() - d.len() - 1] == b'.')
                })
            }
            Host::Ipv4(ip) => self.nets.iter().any(|net| net.contains(&IpAddr::V4(*ip))),
            Host::Ipv6(ip) => self.nets.iter().any(|net| net.contains(&IpAddr::V6(*ip))),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.any && self.domains.is_empty() && self.nets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_validated_without_echoing_the_password() {
        let proxy = ProxyConfig::parse("http://us%40er:p%3Ass@proxy.internal:3128").unwrap();
        assert_eq!(proxy.to_string(), "proxy.internal:3128");
        assert!(!format!("{proxy:?}").contains("p:ss"));
        let request = String::from_utf8(proxy.connect_request("93.184.216.34:443".parse().unwrap()).to_vec()).unwrap();
        let token = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(
            request,
            format!(
                "CONNECT 93.184.216.34:443 HTTP/1.1\r\nHost: 93.184.216.34:443\r\nProxy-Authorization: Basic {token}\r\n\r\n"
            )
        );
        assert_eq!(ProxyConfig::parse("http://10.0.0.1").unwrap().to_string(), "10.0.0.1:80");
        let v6 = ProxyConfig::parse("http://[fd00::1]:8080").unwrap();
        let request = String::from_utf8(v6.connect_request("[2001:db8::1]:443".parse().unwrap()).to_vec()).unwrap();
        assert!(request.starts_with("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n"), "{request}");
        assert_eq!(ProxyConfig::parse("https://user:secret@p:1").unwrap_err(), ProxyUrlError::Scheme("https".into()));
        assert_eq!(ProxyConfig::parse("socks5://p:1").unwrap_err(), ProxyUrlError::Scheme("socks5".into()));
        assert_eq!(ProxyConfig::parse("http://p:1/path").unwrap_err(), ProxyUrlError::Extra);
        assert!(matches!(ProxyConfig::parse("proxy:3128").unwrap_err(), ProxyUrlError::Scheme(_)));
        assert!(matches!(ProxyConfig::parse("not a url").unwrap_err(), ProxyUrlError::NotAUrl(_)));
        let err = ProxyConfig::parse("http://user:secret@p:99999").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn connect_replies_are_read_until_the_head_ends() {
        assert_eq!(parse_connect_reply(b"HTTP/1.1 200 Conn"), Ok(ConnectReply::Incomplete));
        assert_eq!(parse_connect_reply(b"HT"), Ok(ConnectReply::Incomplete));
        assert_eq!(
            parse_connect_reply(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03"),
            Ok(ConnectReply::Established { head_len: 39 })
        );
        assert_eq!(
            parse_connect_reply(b"HTTP/1.0 407 Proxy Authentication Required\r\nX: y\r\n\r\n"),
            Ok(ConnectReply::Refused { status: 407, reason: "Proxy Authentication Required".into() })
        );
        assert_eq!(parse_connect_reply(b"SSH-2.0-OpenSSH\r\n"), Err(MalformedReply));
        assert_eq!(parse_connect_reply(b"HTTP/1.1 abc\r\n\r\n"), Err(MalformedReply));
        assert_eq!(parse_connect_reply(&[b'H'; 9000]), Err(MalformedReply));
    }

    #[test]
    fn no_proxy_matches_names_their_subdomains_addresses_and_cidrs() {
        let list = NoProxy::parse(" internal.example, .corp, *.svc.local, 10.0.0.0/8, 192.168.1.7, [::1] ").unwrap();
        let yes = |h: &str| list.matches(&Host::parse(h).unwrap().to_owned().borrow_host());
        assert!(yes("internal.example") && yes("a.internal.example") && yes("INTERNAL.example."));
        assert!(!yes("notinternal.example") && !yes("example"));
        assert!(yes("x.corp") && yes("corp") && yes("a.b.svc.local"));
        assert!(yes("10.1.2.3") && yes("192.168.1.7") && !yes("192.168.1.8") && yes("[::1]"));
        assert!(!yes("hooks.example.com"));
        assert!(NoProxy::parse("*").unwrap().matches(&Host::Domain("anything")));
        assert!(NoProxy::parse("").unwrap().is_empty());
        assert_eq!(NoProxy::parse("a.com, b.com:443").unwrap_err(), NoProxyError("b.com:443".into()));
    }

    trait Borrow {
        fn borrow_host(&self) -> Host<&str>;
    }

    impl Borrow for Host<String> {
        fn borrow_host(&self) -> Host<&str> {
            match self {
                Host::Domain(d) => Host::Domain(d.as_str()),
                Host::Ipv4(ip) => Host::Ipv4(*ip),
                Host::Ipv6(ip) => Host::Ipv6(*ip),
            }
        }
    }
}
