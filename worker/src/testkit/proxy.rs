//! An HTTP CONNECT proxy for tests, on 127.0.0.1: it records every CONNECT it receives (the
//! requested target and `Proxy-Authorization`), optionally demands credentials (407), and
//! tunnels to the target as asked (resolving it if it is a name — which the worker never asks).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One CONNECT as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// What followed `CONNECT`, e.g. `127.0.0.1:4431`.
    pub target: String,
    pub authorization: Option<String>,
}

/// The running proxy; stops when dropped.
#[derive(Debug)]
pub struct ConnectProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Connect>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    count: watch::Receiver<usize>,
    stop: CancellationToken,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Shared {
    seen: Arc<Mutex<Vec<Connect>>>,
    count: watch::Sender<usize>,
    /// `Basic …` that must be presented, if any.
    required: Option<String>,
}

impl ConnectProxy {
    /// Listens on a free loopback port. `credentials` (`user`, `password`): answer 407 to any
    /// CONNECT without exactly these.
    pub async fn start(credentials: Option<(&str, &str)>) -> std::io::Result<Self> {
        use base64::Engine as _;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, counted) = watch::channel(0);
        let required = credentials
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let shared = Arc::new(Shared { seen: Arc::clone(&seen), count, required });
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (conns, token) = (Arc::clone(&connections), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = token.cancelled() => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&shared), token.clone()));
            }
        });
        Ok(Self { addr, seen, connections, count: counted, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, with `user:password@` when given.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("http://{user}:{password}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// Every CONNECT received so far.
    pub fn connects(&self) -> Vec<Connect> {
        self.seen.lock().expect("proxy log lock").clone()
    }

    /// TCP connections accepted so far (with or without a CONNECT).
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `n` CONNECTs were received, for `limit` at most; returns whether they were.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let mut count = self.count.clone();
        tokio::time::timeout(limit, count.wait_for(|seen| *seen >= n)).await.is_ok_and(|r| r.is_ok())
    }
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>, stop: CancellationToken) {
    let mut head = Vec::new();
    let mut chunk = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut words = request.split(' ');
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
        return;
    };
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim().to_owned());
    let connect = Connect { target: target.to_owned(), authorization: authorization.clone() };
    shared.seen.lock().expect("proxy log lock").push(connect);
    shared.count.send_modify(|count| *count += 1);
    if shared.required.is_some() && shared.required != authorization {
        let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
        return;
    }
    if end < head.len() && upstream.write_all(&head[end..]).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        () = stop.cancelled() => {}
    }
}
