//! Egress through an HTTP CONNECT proxy without giving the proxy the name to resolve.
//!
//! reqwest's own proxy support sends `CONNECT hostname:port` and lets the proxy resolve the name,
//! which would bypass the SSRF guard and DNS pinning. reqwest 0.13 has no hook between its TCP
//! connect and its TLS handshake either: a `connector_layer` wraps the whole connector (TCP *and*
//! TLS) and can only return reqwest's sealed connection type. So the proxied client is built with
//! `unix_socket` (every connection goes to one in-process socket, TLS is still done by reqwest
//! over it with the URL's hostname for SNI and verification, and `Host` stays the URL's) and a
//! connector layer, [`TunnelLayer`], which runs before reqwest connects to that socket:
//!
//! 1. resolve the request's host with the [`GuardedResolver`] (refused names never reach the
//!    proxy), and record the phases in the request's [`Probe`] (which also says where the request
//!    goes: reqwest hands a layer its destination in a sealed type it cannot read);
//! 2. open TCP to the proxy and send `CONNECT <checked address>:<port>` (with
//!    `Proxy-Authorization: Basic …` when configured), read the reply;
//! 3. park the open tunnel in the [`Handoff`] slot, let reqwest connect to the socket, and the
//!    forwarder task splices that connection to the parked tunnel.
//!
//! Hand-offs take turns: one tunnel is parked at a time, from before the client connects to the
//! socket until the forwarder accepted that connection (microseconds), and the forwarder takes
//! the tunnel in its accept loop, so connections and tunnels pair up in order and a connection
//! is never spliced to another request's tunnel. The socket is in the abstract namespace
//! (Linux): no file to create on a read-only root filesystem. Any process of the pod's network
//! namespace could connect to it; one that did so during a hand-off would take that tunnel (to
//! an address the guard already checked) and fail that one connection, nothing more.
//!
//! [`TimingLayer`] is the direct client's layer: it only times the connection for the probe.
//! `handoff` holds the slot and the forwarder, `layers` the two connector layers.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixListener};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use url::Host;

use self::handoff::{Handoff, Parked};
pub use self::layers::{TimingLayer, TunnelLayer};
use crate::engine::forensics::Probe;
use crate::engine::resolve::{GuardedResolver, Lookup};
use crate::policy::egress::{ConnectReply, NoProxy, ProxyConfig, parse_connect_reply};

mod handoff;
mod layers;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a connection through the egress proxy failed. Every message says it was the proxy and
/// names it by `host:port` (never its credentials).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("egress proxy {proxy}: its host name did not resolve")]
    Resolve { proxy: String, source: io::Error },
    #[error("egress proxy {proxy}: could not connect to it")]
    Connect { proxy: String, source: io::Error },
    #[error("egress proxy {proxy}: no tunnel to {target} within {after:?}")]
    Timeout { proxy: String, target: String, after: Duration },
    #[error("egress proxy {proxy} refused CONNECT {target}: HTTP {status} {reason}{hint}")]
    Refused { proxy: String, target: SocketAddr, status: u16, reason: String, hint: &'static str },
    #[error("egress proxy {proxy} closed the connection before answering CONNECT {target}")]
    Closed { proxy: String, target: SocketAddr },
    #[error("egress proxy {proxy}: the answer to CONNECT {target} is not an HTTP response")]
    Malformed { proxy: String, target: SocketAddr },
    #[error("egress proxy {proxy}: the CONNECT exchange failed")]
    Io { proxy: String, source: io::Error },
    #[error("egress proxy: the tunnel could not be handed to the HTTP client")]
    Handoff,
    #[error("egress proxy: a connection was requested outside a delivery (no checked destination)")]
    NoDestination,
}

/// The proxy, its bypass list and the hand-off socket. Dropping the last clone of the
/// [`TunnelLayer`] holding it stops the forwarder.
#[derive(Debug)]
pub struct Egress {
    proxy: ProxyConfig,
    no_proxy: NoProxy,
    resolver: GuardedResolver,
    lookup: Arc<dyn Lookup>,
    tunnel_timeout: Duration,
    handoff: Arc<Handoff>,
    socket: String,
    _stop: DropGuard,
}

impl Egress {
    /// Starts the forwarder on a fresh abstract socket. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub fn start(
        proxy: ProxyConfig,
        no_proxy: NoProxy,
        resolver: GuardedResolver,
        lookup: Arc<dyn Lookup>,
        tunnel_timeout: Duration,
    ) -> io::Result<Arc<Self>> {
        let socket = format!("\0webhook-egress-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let listener = UnixListener::bind(&socket)?;
        let handoff = Arc::new(Handoff::default());
        let stop = CancellationToken::new();
        tokio::spawn(handoff::forward(listener, Arc::clone(&handoff), stop.clone()));
        Ok(Arc::new(Self {
            proxy,
            no_proxy,
            resolver,
            lookup,
            tunnel_timeout,
            handoff,
            socket,
            _stop: stop.drop_guard(),
        }))
    }

    /// The socket the proxied client connects to.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Whether `host` is reached directly (`WEBHOOK_NO_PROXY`).
    pub fn bypasses(&self, host: &Host<&str>) -> bool {
        self.no_proxy.matches(host)
    }

    /// The proxy as `host:port`.
    pub fn proxy(&self) -> String {
        self.proxy.to_string()
    }

    pub(super) async fn connect<S, R>(
        &self,
        probe: Option<Arc<Probe>>,
        mut inner: S,
        request: R,
    ) -> Result<S::Response, BoxError>
    where
        S: tower_service::Service<R, Error = BoxError>,
    {
        let probe = probe.ok_or(ProxyError::NoDestination)?;
        let ips = self.checked_addresses(&probe).await?;
        let opened = Instant::now();
        let target = format!("{}:{}", probe.host, probe.port);
        let (tunnel, leftover, ip) = tokio::time::timeout(self.tunnel_timeout, self.open_tunnel(&ips, probe.port))
            .await
            .map_err(|_| ProxyError::Timeout { proxy: self.proxy(), target, after: self.tunnel_timeout })??;
        probe.record(|p| {
            p.connect = Some(opened.elapsed());
            p.remote_ip = Some(ip);
        });
        let handed = Instant::now();
        let conn = self.handoff.hand(Parked { tunnel, leftover, taken: None }, || inner.call(request)).await?;
        probe.record(|p| {
            p.tls = probe.tls.then(|| handed.elapsed());
            p.connected = true;
        });
        Ok(conn)
    }

    /// The request's host resolved and checked by the SSRF guard (an address literal is checked
    /// as it is).
    async fn checked_addresses(&self, probe: &Probe) -> Result<Vec<IpAddr>, BoxError> {
        if let Ok(ip) = probe.host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            self.resolver.policy().check_ip(ip)?;
            return Ok(vec![ip]);
        }
        let name: reqwest::dns::Name = probe.host.parse().map_err(|_| ProxyError::NoDestination)?;
        let addrs = reqwest::dns::Resolve::resolve(&self.resolver, name).await?;
        Ok(addrs.map(|addr| addr.ip()).collect())
    }

    /// A tunnel to the first checked address the proxy accepts.
    async fn open_tunnel(&self, ips: &[IpAddr], port: u16) -> Result<(TcpStream, Vec<u8>, IpAddr), ProxyError> {
        let proxy_addrs = self.proxy_addresses().await?;
        let mut refused = None;
        for &ip in ips {
            match self.tunnel_once(&proxy_addrs, SocketAddr::new(ip, port)).await {
                Ok((stream, leftover)) => return Ok((stream, leftover, ip)),
                Err(err @ ProxyError::Refused { .. }) => refused = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(refused.unwrap_or(ProxyError::NoDestination))
    }

    async fn proxy_addresses(&self) -> Result<Vec<SocketAddr>, ProxyError> {
        let port = self.proxy.port();
        let ips = match self.proxy.host() {
            Host::Ipv4(ip) => vec![IpAddr::V4(*ip)],
            Host::Ipv6(ip) => vec![IpAddr::V6(*ip)],
            Host::Domain(name) => self
                .lookup
                .lookup(name.clone())
                .await
                .map_err(|source| ProxyError::Resolve { proxy: self.proxy(), source })?,
        };
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }

    async fn tunnel_once(&self, proxy: &[SocketAddr], target: SocketAddr) -> Result<(TcpStream, Vec<u8>), ProxyError> {
        let name = || self.proxy();
        let mut stream =
            TcpStream::connect(proxy).await.map_err(|source| ProxyError::Connect { proxy: name(), source })?;
        stream.set_nodelay(true).map_err(|source| ProxyError::Io { proxy: name(), source })?;
        let request = self.proxy.connect_request(target);
        stream.write_all(&request).await.map_err(|source| ProxyError::Io { proxy: name(), source })?;
        let mut reply = Vec::with_capacity(256);
        let mut chunk = [0_u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|source| ProxyError::Io { proxy: name(), source })?;
            if n == 0 {
                return Err(ProxyError::Closed { proxy: name(), target });
            }
            reply.extend_from_slice(&chunk[..n]);
            match parse_connect_reply(&reply) {
                Ok(ConnectReply::Incomplete) => {}
                Ok(ConnectReply::Established { head_len }) => return Ok((stream, reply.split_off(head_len))),
                Ok(ConnectReply::Refused { status, reason }) => {
                    let hint = match (status, self.proxy.has_credentials()) {
                        (407, false) => " (the proxy wants credentials: put them in WEBHOOK_PROXY_URL)",
                        (407, true) => " (the proxy rejected the credentials of WEBHOOK_PROXY_URL)",
                        _ => "",
                    };
                    return Err(ProxyError::Refused { proxy: name(), target, status, reason, hint });
                }
                Err(_) => return Err(ProxyError::Malformed { proxy: name(), target }),
            }
        }
    }
}
