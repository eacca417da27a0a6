//! A local webhook receiver that verifies every Standard Webhooks signature: the demo's receiver
//! and the tests' HTTP/HTTPS peer. Each path (one per endpoint) has its expected secrets and a
//! configurable answer (status, delay, `Retry-After`), so tests can play a failing, slow or
//! rate-limiting receiver. [`TestCa`] makes certificates for its HTTPS mode.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use chrono::{DateTime, Utc};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::policy::signing::{self, SigningSecret};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub msg_id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
    /// Whether the signature verified against one of the path's expected secrets.
    pub valid: bool,
    /// How many of the path's expected secrets each verify on their own.
    pub secrets_matched: usize,
    /// The status the receiver answered.
    pub status: u16,
    /// Every request header (names lower-case).
    pub headers: Vec<(String, String)>,
    pub arrived_at: DateTime<Utc>,
}

/// How the receiver answers on a path.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub delay: Duration,
    pub retry_after: Option<String>,
    /// Answer 500 to this many requests on the path before answering `status`.
    pub fail_first: usize,
    /// Answer 500 to this fraction of requests, at random.
    pub fail_ratio: f64,
    /// Answer this fraction of requests only after `slow_delay`, at random.
    pub slow_ratio: f64,
    pub slow_delay: Duration,
}

impl Default for Answer {
    fn default() -> Self {
        Self {
            status: 200,
            delay: Duration::ZERO,
            retry_after: None,
            fail_first: 0,
            fail_ratio: 0.0,
            slow_ratio: 0.0,
            slow_delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    secrets: Mutex<HashMap<String, Vec<SigningSecret>>>,
    answers: Mutex<HashMap<String, Answer>>,
    received: Mutex<Vec<Received>>,
    per_path: Mutex<HashMap<String, usize>>,
    connections: AtomicUsize,
    count: Option<watch::Sender<usize>>,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    https: bool,
    shared: Arc<Shared>,
    count: watch::Receiver<usize>,
    stop: CancellationToken,
}

impl Receiver {
    /// Listens on 127.0.0.1 at a free port; HTTPS when `tls` is given. Errors: the port cannot be bound.
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), tls).await
    }

    /// [`Receiver::start`] on `ip` (e.g. the address of a test's network namespace link).
    pub async fn start_on(ip: std::net::IpAddr, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (count_tx, count) = watch::channel(0);
        let shared = Arc::new(Shared { count: Some(count_tx), ..Shared::default() });
        let stop = CancellationToken::new();
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        tokio::spawn(accept_loop(
            listener,
            app,
            tls.clone().map(tokio_rustls::TlsAcceptor::from),
            Arc::clone(&shared),
            stop.clone(),
        ));
        Ok(Self { addr, https: tls.is_some(), shared, count, stop })
    }

    /// The URL of `path`: `https://localhost:PORT/path` in HTTPS mode (the cert's name), else `http://IP:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        if self.https {
            format!("https://localhost:{}/{path}", self.addr.port())
        } else {
            format!("http://{}/{path}", self.addr)
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Signatures on `path` must verify against one of `secrets`.
    pub fn expect_secrets(&self, path: &str, secrets: Vec<SigningSecret>) {
        self.shared.secrets.lock().expect("receiver lock").insert(normalize(path), secrets);
    }

    /// Answer requests on `path` like this from now on.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.shared.answers.lock().expect("receiver lock").insert(normalize(path), answer);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("receiver lock").clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// How many TCP connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have arrived; `false` if `limit` passed first.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let mut count = self.count.clone();
        tokio::time::timeout(limit, count.wait_for(|c| *c >= n)).await.is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn normalize(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = hyper::server::conn::http1::Builder::new();
            let served = async {
                match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Err(err) => tracing::debug!(error = %err, "Receiver TLS handshake failed"),
                    },
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            };
            tokio::select! {
                () = served => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let path = uri.path().to_owned();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let msg_id = header("webhook-id");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(0);
    let signature = header("webhook-signature");
    let secrets = shared.secrets.lock().expect("receiver lock").get(&path).cloned().unwrap_or_default();
    let secrets_matched = secrets.iter().filter(|s| signing::verify(s, &msg_id, timestamp, &body, &signature)).count();
    let answer = shared.answers.lock().expect("receiver lock").get(&path).cloned().unwrap_or_default();
    let all_headers = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let on_path = {
        let mut per_path = shared.per_path.lock().expect("receiver lock");
        let count = per_path.entry(path.clone()).or_insert(0);
        *count += 1;
        *count - 1
    };
    let status = if on_path < answer.fail_first || rand::random_bool(answer.fail_ratio.clamp(0.0, 1.0)) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    };
    let received = Received {
        path,
        msg_id,
        timestamp,
        signature,
        body: String::from_utf8_lossy(&body).into_owned(),
        valid: secrets_matched > 0,
        secrets_matched,
        status: status.as_u16(),
        headers: all_headers,
        arrived_at: Utc::now(),
    };
    let total = {
        let mut all = shared.received.lock().expect("receiver lock");
        all.push(received);
        all.len()
    };
    if let Some(count) = &shared.count {
        count.send_replace(total);
    }
    let delay = if rand::random_bool(answer.slow_ratio.clamp(0.0, 1.0)) { answer.slow_delay } else { answer.delay };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response_headers = HeaderMap::new();
    if let Some(value) = answer.retry_after.as_deref().and_then(|v| v.parse().ok()) {
        response_headers.insert("retry-after", value);
    }
    (status, response_headers, format!("{}\n", status.as_u16()))
}

/// A certificate authority made up on the spot, for HTTPS tests and the demo.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A server certificate chain and key issued by a [`TestCa`].
#[derive(Debug)]
pub struct Issued {
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The same certificate and key in PEM, for servers other than rustls (e.g. `openssl s_server`).
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A fresh CA.
    ///
    /// # Errors
    /// If key generation fails.
    pub fn new() -> Result<Self, rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "webhook-delivery test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        Ok(Self { pem: certificate.pem(), der: certificate.der().clone(), issuer: rcgen::Issuer::new(params, key) })
    }

    /// The CA certificate in PEM, for the worker's extra CA bundle.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate in a temporary PEM file (removed when dropped), for
    /// `WEBHOOK_CA_BUNDLE`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn pem_file(&self) -> std::io::Result<tempfile::NamedTempFile> {
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), &self.pem)?;
        Ok(file)
    }

    /// A server certificate for `names`, valid from `not_before` to `not_after`.
    ///
    /// # Errors
    /// If signing fails.
    pub fn issue(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = rcgen::KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            chain: vec![certificate.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server certificate for `localhost` and 127.0.0.1, valid now.
    ///
    /// # Errors
    /// If signing fails.
    pub fn issue_localhost(&self) -> Result<Issued, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        self.issue(&["localhost", "127.0.0.1"], now - time::Duration::days(1), now + time::Duration::days(30))
    }
}

/// A rustls server config for `issued`, speaking the given TLS versions (all when empty).
///
/// # Errors
/// If the key does not match or the versions are unsupported.
pub fn server_config(
    issued: Issued,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = if versions.is_empty() { rustls::ALL_VERSIONS } else { versions };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(issued.chain, issued.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Like [`server_config`], but the server requires a client certificate issued by `client_ca`
/// (mutual TLS).
///
/// # Errors
/// If the key does not match or the CA is unusable.
pub fn server_config_mtls(issued: Issued, client_ca: &TestCa) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.der.clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|err| rustls::Error::General(err.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(issued.chain, issued.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
