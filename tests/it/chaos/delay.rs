//! A TCP relay that delays what a client sends, as `tc netem delay` does on the client's side of a
//! link: for a kernel without `sch_netem`. Each chunk read from the client is written to the
//! server `delay` after it arrived, in order and without holding up the chunks behind it (a delay
//! line, not stop-and-wait), so a pipelining client sees the same round trips as over a slow link.
//! The server's answers pass at once. The delay can be changed while connections are open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub struct DelayRelay {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl DelayRelay {
    /// Listens on `listen` (port 0: any) and relays every connection to `server`.
    pub async fn start(listen: SocketAddr, server: SocketAddr) -> Self {
        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let delay = Arc::clone(&delay);
                tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(server).await {
                        relay(client, upstream, delay).await;
                    }
                });
            }
        });
        Self { addr, delay_ms, accept }
    }

    /// What the client sends from now on reaches the server this much later.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(u64::try_from(delay.as_millis()).unwrap(), Ordering::Relaxed);
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, upstream: TcpStream, delay: Arc<AtomicU64>) {
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    // Unbounded: the line holds what one delay's worth of a client sends, and the client is a
    // worker whose connections carry a few kilobytes a second.
    let (line, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reading = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
            let at = Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
            if line.send((at, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writing = async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if upstream_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = upstream_write.shutdown().await;
    };
    let answering = async move {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    // Either side closing ends the connection, as a closed socket would.
    tokio::select! {
        () = async { tokio::join!(reading, writing); } => {}
        () = answering => {}
    }
}
