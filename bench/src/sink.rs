//! The benchmark's receiver: as cheap as a receiver can be while still proving every delivery.
//! It verifies each Standard Webhooks signature, counts each (endpoint, webhook-id) once to find
//! duplicates, and, when asked, records arrival times for latency. HTTP/1.1 with keep-alive, over
//! TLS unless the run asks for plain HTTP. It can hold each request for a while, to put many
//! deliveries in flight.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use webhook_worker::policy::signing::{self, SigningSecret};

#[derive(Debug, Default)]
struct State {
    secrets: RwLock<HashMap<String, SigningSecret>>,
    seen: Mutex<HashSet<u64, BuildHasherDefault<DefaultHasher>>>,
    arrivals: Mutex<Option<Vec<(String, i64)>>>,
    delay_ms: AtomicU64,
    duplicates: AtomicU64,
    invalid: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    count: Option<watch::Sender<u64>>,
    window: Mutex<Option<(tokio::time::Instant, tokio::time::Instant)>>,
}

/// A running receiver. Stops when dropped (its accept loop is aborted).
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    count: watch::Receiver<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Listens on 127.0.0.1; `secrets` maps each path (`/e0`, `/e1`…) to its endpoint's secret.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(
        secrets: HashMap<String, SigningSecret>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (count_tx, count) = watch::channel(0);
        let state = Arc::new(State { secrets: RwLock::new(secrets), count: Some(count_tx), ..State::default() });
        let accept =
            tokio::spawn(accept_loop(listener, tls.clone().map(tokio_rustls::TlsAcceptor::from), Arc::clone(&state)));
        Ok(Self { addr, tls: tls.is_some(), state, count, accept })
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https://localhost" } else { "http://127.0.0.1" };
        format!("{scheme}:{}{path}", self.addr.port())
    }

    /// Verifies signatures on more paths from now on (endpoints a phase adds).
    pub fn add_secrets(&self, more: impl IntoIterator<Item = (String, SigningSecret)>) {
        self.state.secrets.write().unwrap_or_else(PoisonError::into_inner).extend(more);
    }

    /// Requests so far.
    pub fn count(&self) -> u64 {
        *self.count.borrow()
    }

    /// Waits until `n` requests arrived; `false` if `limit` passed first.
    pub async fn wait_for(&self, n: u64, limit: Duration) -> bool {
        let mut count = self.count.clone();
        tokio::time::timeout(limit, count.wait_for(|c| *c >= n)).await.is_ok_and(|r| r.is_ok())
    }

    /// Forgets counts, duplicates, the arrival window and the in-flight peak; records arrival
    /// times from now on when `record` is set.
    pub fn reset(&self, record: bool) {
        let state = &self.state;
        state.seen.lock().unwrap_or_else(PoisonError::into_inner).clear();
        *state.arrivals.lock().unwrap_or_else(PoisonError::into_inner) = record.then(Vec::new);
        *state.window.lock().unwrap_or_else(PoisonError::into_inner) = None;
        for counter in [&state.duplicates, &state.invalid, &state.peak_in_flight] {
            counter.store(0, Ordering::SeqCst);
        }
        if let Some(count) = &state.count {
            count.send_replace(0);
        }
    }

    /// Holds every request this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Seconds between the first and the last request since the last reset.
    pub fn window_seconds(&self) -> f64 {
        self.state
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(0.0, |(first, last)| (last - first).as_secs_f64())
    }

    /// (webhook-id, arrival as Unix microseconds) of every request since a recording reset.
    pub fn take_arrivals(&self) -> Vec<(String, i64)> {
        self.state.arrivals.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_default()
    }

    pub fn duplicates(&self) -> u64 {
        self.state.duplicates.load(Ordering::SeqCst)
    }

    pub fn invalid_signatures(&self) -> u64 {
        self.state.invalid.load(Ordering::SeqCst)
    }

    pub fn peak_in_flight(&self) -> u64 {
        self.state.peak_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (tls, state) = (tls.clone(), Arc::clone(&state));
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(Arc::clone(&state), request));
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (msg_id, timestamp, signature) =
        (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let body = request.into_body().collect().await?.to_bytes();
    let now = tokio::time::Instant::now();
    let arrived_us = chrono::Utc::now().timestamp_micros();
    let in_flight = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak_in_flight.fetch_max(in_flight, Ordering::SeqCst);
    let valid = state.secrets.read().unwrap_or_else(PoisonError::into_inner).get(&path).is_some_and(|secret| {
        timestamp.parse().is_ok_and(|ts| signing::verify(secret, &msg_id, ts, &body, &signature))
    });
    if !valid {
        state.invalid.fetch_add(1, Ordering::SeqCst);
    }
    let key = BuildHasherDefault::<DefaultHasher>::default().hash_one((&path, &msg_id));
    if !state.seen.lock().unwrap_or_else(PoisonError::into_inner).insert(key) {
        state.duplicates.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(arrivals) = state.arrivals.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        arrivals.push((msg_id, arrived_us));
    }
    {
        let mut window = state.window.lock().unwrap_or_else(PoisonError::into_inner);
        *window = Some(window.map_or((now, now), |(first, _)| (first, now)));
    }
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    if let Some(count) = &state.count {
        count.send_modify(|c| *c += 1);
    }
    let status = if valid { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}
