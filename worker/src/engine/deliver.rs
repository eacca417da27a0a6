//! Sends one signed webhook over HTTP(S) and reports what happened. Decides nothing about retries.
//!
//! reqwest on rustls (ring), TLS 1.2 minimum, the system trust store plus an optional extra CA
//! bundle, pooled keep-alive connections (HTTP/2 when the server offers it by ALPN), connect and
//! total timeouts, no redirects (a 3xx is reported as it is), every name resolved by the
//! [`GuardedResolver`], and the response body read only up to a cap. With `WEBHOOK_PROXY_URL` set,
//! requests to hosts not in `WEBHOOK_NO_PROXY` go through a second client that tunnels through
//! the proxy to the checked address ([`crate::engine::egress`]). Every request reports its
//! [`Forensics`].

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use url::Url;

use crate::engine::egress::{Egress, TimingLayer, TunnelLayer};
use crate::engine::forensics::{self, Forensics, Probe};
use crate::engine::resolve::{GuardedResolver, Lookup};
use crate::policy::address::{NetPolicy, Refusal};
use crate::policy::retry::parse_retry_after;

/// How much of a response body is kept for the attempt history.
pub const EXCERPT_BYTES: usize = 512;

pub use crate::config::ClientSettings;

/// Why a client could not be built or a request failed. Messages never include headers or bodies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the extra CA bundle is not valid PEM")]
    CaBundle(#[source] reqwest::Error),
    #[error("building the HTTP client failed")]
    Build(#[source] reqwest::Error),
    #[error("the endpoint's client certificate is not a valid PEM certificate chain and private key")]
    Identity(#[source] reqwest::Error),
    #[error("the egress proxy's hand-off socket could not be opened")]
    Egress(#[source] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Transport(TransportError),
}

/// A request that failed in transport (connect, TLS, reset, bad HTTP), shown with its causes and
/// never its URL (which may carry a token). The causes are in the message, so it has no source.
#[derive(Debug)]
pub struct TransportError(reqwest::Error);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&chain(&self.0))
    }
}

impl std::error::Error for TransportError {}

impl TransportError {
    /// Whether no connection could be made.
    pub fn is_connect(&self) -> bool {
        self.0.is_connect()
    }
}

/// What the receiver answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The start of the body, lossily decoded.
    pub excerpt: String,
}

/// One request to send.
#[derive(Debug)]
pub struct OutboundRequest<'a> {
    pub url: &'a Url,
    pub msg_id: &'a str,
    pub timestamp: i64,
    pub signature: &'a str,
    pub body: String,
    /// Overrides the client's total timeout.
    pub timeout: Option<Duration>,
    /// PEM client certificate chain and key to present (mTLS).
    pub identity: Option<&'a [u8]>,
    /// The endpoint's custom headers, added before the signature headers.
    pub headers: &'a [(String, String)],
}

/// Clients by (SHA-256 of the identity PEM, through the proxy).
type IdentityClients = Arc<std::sync::Mutex<std::collections::HashMap<([u8; 32], bool), reqwest::Client>>>;

/// A pooled HTTP(S) client that delivers webhooks, plus one per mTLS client identity.
#[derive(Debug, Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    /// The client through the egress proxy, when one is configured.
    proxied: Option<(reqwest::Client, Arc<Egress>)>,
    settings: ClientSettings,
    lookup: Arc<dyn Lookup>,
    /// Clients presenting a client certificate, by SHA-256 of the identity PEM and whether proxied.
    with_identity: IdentityClients,
}

impl Deliverer {
    /// Builds the client.
    ///
    /// # Errors
    /// [`Error::CaBundle`] for an unreadable bundle, [`Error::Build`] if the TLS stack fails,
    /// [`Error::Egress`] if the proxy's hand-off socket cannot be bound. With a proxy configured,
    /// must be called inside a tokio runtime (it starts the forwarder).
    pub fn new(settings: ClientSettings, lookup: Arc<dyn Lookup>) -> Result<Self, Error> {
        crate::tls::install_crypto_provider();
        let client = builder(&settings, &lookup, None)?.build().map_err(Error::Build)?;
        let proxied = match &settings.egress {
            Some(egress) => {
                let resolver = GuardedResolver::new(Arc::clone(&settings.policy), Arc::clone(&lookup));
                let egress = Egress::start(
                    egress.proxy.clone(),
                    egress.no_proxy.clone(),
                    resolver,
                    Arc::clone(&lookup),
                    settings.connect_timeout,
                )
                .map_err(Error::Egress)?;
                let client = builder(&settings, &lookup, Some(&egress))?.build().map_err(Error::Build)?;
                Some((client, egress))
            }
            None => None,
        };
        Ok(Self { client, proxied, settings, lookup, with_identity: Arc::default() })
    }

    /// The client presenting `identity` (directly or through the proxy), built once per distinct
    /// identity and then pooled.
    fn client_for(&self, identity: Option<&[u8]>, proxied: Option<&Arc<Egress>>) -> Result<reqwest::Client, Error> {
        use sha2::Digest as _;
        let Some(pem) = identity else {
            return Ok(match (proxied, &self.proxied) {
                (Some(_), Some((client, _))) => client.clone(),
                _ => self.client.clone(),
            });
        };
        let key: ([u8; 32], bool) = (sha2::Sha256::digest(pem).into(), proxied.is_some());
        let mut clients = self.with_identity.lock().expect("client cache lock poisoned");
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let identity = reqwest::Identity::from_pem(pem).map_err(Error::Identity)?;
        let client =
            builder(&self.settings, &self.lookup, proxied)?.identity(identity).build().map_err(Error::Identity)?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The egress proxy `url` goes through, if any (`None`: direct).
    fn egress_for(&self, url: &Url) -> Option<&Arc<Egress>> {
        let (_, egress) = self.proxied.as_ref()?;
        let host = url.host()?;
        (!egress.bypasses(&host)).then_some(egress)
    }
}

/// A client builder with the delivery policy; through `egress` when given (every connection then
/// goes to the hand-off socket, after [`TunnelLayer`] opened the tunnel).
fn builder(
    settings: &ClientSettings,
    lookup: &Arc<dyn Lookup>,
    egress: Option<&Arc<Egress>>,
) -> Result<reqwest::ClientBuilder, Error> {
    let builder = reqwest::Client::builder()
        .tls_version_min(reqwest::tls::Version::TLS_1_2)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver::new(Arc::clone(&settings.policy), Arc::clone(lookup)))
        .timeout(settings.timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    let mut builder = match egress {
        // The tunnel has its own timeout (the connect timeout, so that its error names the
        // proxy); the TLS handshake through it gets another.
        Some(egress) => builder
            .unix_socket(egress.socket().to_owned())
            .connector_layer(TunnelLayer(Arc::clone(egress)))
            .connect_timeout(settings.connect_timeout * 2),
        None => builder.connector_layer(TimingLayer).connect_timeout(settings.connect_timeout),
    };
    if let Some(pem) = &settings.extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(Error::CaBundle)?;
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

impl Deliverer {
    /// The network policy this client enforces.
    pub fn policy(&self) -> &NetPolicy {
        &self.settings.policy
    }

    /// POSTs the signed request and reads the answer; also returns what is known of the
    /// connection, for failures too.
    ///
    /// # Errors
    /// [`Error::Refused`] before any connection for a forbidden URL or address,
    /// [`Error::Timeout`] or [`Error::Transport`] (with the full cause chain; a failure of the
    /// egress proxy says so) when the exchange fails.
    pub async fn send(&self, request: OutboundRequest<'_>) -> (Result<Response, Error>, Forensics) {
        let url = request.url;
        if let Err(refusal) = self.settings.policy.check_url(url) {
            return (Err(refusal.into()), Forensics::default());
        }
        let egress = self.egress_for(url).cloned();
        let host = url.host_str().unwrap_or_default().to_owned();
        let probe = Probe::new(host, url.port_or_known_default().unwrap_or(443), url.scheme() == "https");
        let timeout = request.timeout.unwrap_or(self.settings.timeout);
        let started = Instant::now();
        let sent = match self.client_for(request.identity, egress.as_ref()) {
            Ok(client) => Probe::scope(Arc::clone(&probe), prepare(&client, request).send())
                .await
                .map_err(|err| transport_error(err, timeout)),
            Err(err) => Err(err),
        };
        let first_byte = started.elapsed();
        let via_proxy = egress.is_some();
        match sent {
            Err(err) => (Err(err), Forensics::of(probe.phases(), via_proxy, None, None)),
            Ok(response) => {
                let peer = response.remote_addr().map(|addr| addr.ip()).filter(|_| !via_proxy);
                let mut forensics = Forensics::of(probe.phases(), via_proxy, Some(first_byte), peer);
                forensics.response_headers = forensics::header_excerpt(response.headers());
                (Ok(self.read(response).await), forensics)
            }
        }
    }

    /// The status, `Retry-After` and the start of the body (read up to the cap).
    async fn read(&self, mut response: reqwest::Response) -> Response {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, chrono::Utc::now()));
        let mut body = Vec::new();
        while body.len() < self.settings.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // The status is what counts; a body cut short is still an answer.
                Err(err) => {
                    tracing::debug!(error = %chain(&err.without_url()), "Reading the response body failed");
                    break;
                }
            }
        }
        body.truncate(EXCERPT_BYTES);
        Response { status, retry_after, excerpt: String::from_utf8_lossy(&body).into_owned() }
    }
}

/// The signed POST of `request` on `client`.
fn prepare(client: &reqwest::Client, request: OutboundRequest<'_>) -> reqwest::RequestBuilder {
    let mut builder = client.post(request.url.clone());
    for (name, value) in request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder = builder
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(USER_AGENT, HeaderValue::from_static(concat!("webhook-delivery/", env!("CARGO_PKG_VERSION"))))
        .header("webhook-id", request.msg_id)
        .header("webhook-timestamp", request.timestamp.to_string())
        .header("webhook-signature", request.signature)
        .body(request.body);
    match request.timeout {
        Some(timeout) => builder.timeout(timeout),
        None => builder,
    }
}

fn transport_error(err: reqwest::Error, timeout: Duration) -> Error {
    let err = err.without_url();
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return Error::Refused(refusal.clone());
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return Error::Timeout(timeout);
    }
    Error::Transport(TransportError(err))
}

/// `err` and its causes, `: `-separated. Callers strip the URL first: it may carry a token.
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
