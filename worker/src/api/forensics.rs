//! The forensics of an attempt as the API shows them: an extra `forensics` object on
//! `MessageAttemptOut` (beyond Svix's fields, which keep their meaning).

use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::attempts::Forensics;

/// What the worker recorded about the attempt's connection; absent when it recorded nothing
/// (an attempt that sent nothing, or one made before the forensics existed).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptForensicsOut {
    /// The address dialled (through the egress proxy: the checked address the proxy was asked to
    /// CONNECT to).
    pub remote_ip: Option<String>,
    pub dns_ms: Option<i32>,
    /// TCP (and CONNECT through the proxy), plus the TLS handshake when `tlsMs` is absent.
    pub connect_ms: Option<i32>,
    pub tls_ms: Option<i32>,
    /// From sending the request until the response head arrived.
    pub first_byte_ms: Option<i32>,
    /// Sent over a pooled connection (no DNS, connect or TLS of its own).
    pub connection_reused: Option<bool>,
    pub via_proxy: Option<bool>,
    /// `name: value` lines of the response headers, at most 1 KiB.
    pub response_headers: Option<String>,
}

impl AttemptForensicsOut {
    /// `None` when nothing was recorded.
    pub fn of(f: Forensics) -> Option<Self> {
        (f != Forensics::default()).then_some(Self {
            remote_ip: f.remote_ip,
            dns_ms: f.dns_ms,
            connect_ms: f.connect_ms,
            tls_ms: f.tls_ms,
            first_byte_ms: f.first_byte_ms,
            connection_reused: f.connection_reused,
            via_proxy: f.via_proxy,
            response_headers: f.response_headers,
        })
    }
}
