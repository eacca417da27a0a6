//! What the attempt history records about the connection of one attempt: the dialled address,
//! the timings of each phase, and a bounded excerpt of the response's headers.
//!
//! The phases of a new connection happen inside reqwest's connector, away from the request; they
//! are reported to a [`Probe`] that `deliver` puts in a task-local scope around the request. When
//! no connection was made in that scope the request went over a pooled connection: the record
//! says `connection_reused` and leaves DNS, connect and TLS empty (they happened for an earlier
//! attempt), rather than report zeros.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;

/// Bytes of response headers kept for the history.
pub const HEADER_EXCERPT_BYTES: usize = 1024;

/// The forensics of one attempt, as stored (all optional: older rows and unsent attempts have none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forensics {
    /// The address the worker dialled (through the proxy: the address it asked the proxy to CONNECT to).
    pub remote_ip: Option<IpAddr>,
    pub dns_ms: Option<i32>,
    /// After DNS until the connection could carry the request: TCP (and the CONNECT exchange
    /// through a proxy), and the TLS handshake too when `tls_ms` is empty (reqwest's direct
    /// connector does TCP and TLS in one step).
    pub connect_ms: Option<i32>,
    /// The TLS handshake alone, where it can be measured apart (through the proxy).
    pub tls_ms: Option<i32>,
    /// From sending the request until the response's head arrived (connecting included).
    pub first_byte_ms: Option<i32>,
    pub connection_reused: Option<bool>,
    pub via_proxy: Option<bool>,
    /// `name: value` lines of the response headers, cut at [`HEADER_EXCERPT_BYTES`].
    pub response_headers: Option<String>,
}

/// Whole milliseconds, saturating.
pub fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// The phases of the connection made for one request, as reported from inside the connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    pub dns: Option<Duration>,
    pub connect: Option<Duration>,
    pub tls: Option<Duration>,
    pub remote_ip: Option<IpAddr>,
    /// The connector finished a connection inside the request's scope.
    pub connected: bool,
}

/// Collects [`Phases`] for the request whose scope it is in; also tells the connector where the
/// request goes (reqwest does not show a connector layer its destination).
#[derive(Debug)]
pub struct Probe {
    /// The request's host (`url::Url::host_str`: IPv6 in brackets) and port.
    pub host: String,
    pub port: u16,
    /// Whether the request is https (a TLS handshake follows the connect).
    pub tls: bool,
    phases: Mutex<Phases>,
}

tokio::task_local! {
    static PROBE: std::sync::Arc<Probe>;
}

impl Probe {
    pub fn new(host: String, port: u16, tls: bool) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self { host, port, tls, phases: Mutex::default() })
    }

    /// Runs `future` with `probe` as the current probe.
    pub async fn scope<F: Future>(probe: std::sync::Arc<Self>, future: F) -> F::Output {
        PROBE.scope(probe, future).await
    }

    /// The current probe, when called inside a request's scope.
    pub fn current() -> Option<std::sync::Arc<Self>> {
        PROBE.try_with(std::sync::Arc::clone).ok()
    }

    /// Changes the recorded phases.
    pub fn record(&self, change: impl FnOnce(&mut Phases)) {
        change(&mut self.phases.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    pub fn phases(&self) -> Phases {
        *self.phases.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Forensics {
    /// The record of a request whose connection phases are `phases`, whose head arrived after
    /// `first_byte` (if it did) from `peer` (reqwest's view of the remote address, when direct).
    pub fn of(phases: Phases, via_proxy: bool, first_byte: Option<Duration>, peer: Option<IpAddr>) -> Self {
        let reused = !phases.connected && first_byte.is_some();
        Self {
            remote_ip: peer.or(phases.remote_ip),
            dns_ms: phases.dns.filter(|_| !reused).map(millis),
            connect_ms: phases.connect.filter(|_| !reused).map(millis),
            tls_ms: phases.tls.filter(|_| !reused).map(millis),
            first_byte_ms: first_byte.map(millis),
            connection_reused: first_byte.is_some().then_some(reused),
            via_proxy: Some(via_proxy),
            response_headers: None,
        }
    }
}

/// `name: value` lines of `headers`, cut at [`HEADER_EXCERPT_BYTES`] on a character boundary.
pub fn header_excerpt(headers: &HeaderMap) -> Option<String> {
    let mut text = String::new();
    for (name, value) in headers {
        text.push_str(name.as_str());
        text.push_str(": ");
        text.push_str(&String::from_utf8_lossy(value.as_bytes()));
        text.push('\n');
        if text.len() >= HEADER_EXCERPT_BYTES {
            break;
        }
    }
    if text.len() > HEADER_EXCERPT_BYTES {
        let mut end = HEADER_EXCERPT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_connection_reports_no_connection_phases() {
        let phases = Phases { dns: Some(Duration::from_millis(3)), ..Phases::default() };
        let reused = Forensics::of(phases, false, Some(Duration::from_millis(9)), "93.184.216.34".parse().ok());
        assert_eq!((reused.connection_reused, reused.dns_ms, reused.first_byte_ms), (Some(true), None, Some(9)));
        let fresh = Phases { connected: true, connect: Some(Duration::from_millis(4)), ..phases };
        let new = Forensics::of(fresh, true, Some(Duration::from_millis(12)), None);
        assert_eq!((new.connection_reused, new.dns_ms, new.connect_ms), (Some(false), Some(3), Some(4)));
        let failed = Forensics::of(fresh, true, None, None);
        assert_eq!((failed.connection_reused, failed.first_byte_ms, failed.dns_ms), (None, None, Some(3)));
    }

    #[test]
    fn header_excerpts_are_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().unwrap());
        assert_eq!(header_excerpt(&headers).as_deref(), Some("content-type: text/plain\n"));
        headers.insert("x-big", "é".repeat(2000).parse().unwrap_or_else(|_| "x".repeat(4000).parse().unwrap()));
        assert!(header_excerpt(&headers).unwrap().len() <= HEADER_EXCERPT_BYTES);
        assert_eq!(header_excerpt(&HeaderMap::new()), None);
    }
}
