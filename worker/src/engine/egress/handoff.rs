//! The hand-off of an open tunnel to the proxied client's connection on the socket (see the
//! parent module).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{BoxError, ProxyError};

/// How long a hand-off waits for the forwarder to accept a connection the client already made.
const ACCEPT_WAIT: Duration = Duration::from_secs(5);

/// An open tunnel waiting for the client's connection to the socket.
pub(super) struct Parked {
    pub(super) tunnel: TcpStream,
    /// Bytes the proxy sent after its reply head (the client gets them first).
    pub(super) leftover: Vec<u8>,
    pub(super) taken: Option<oneshot::Sender<()>>,
}

/// One parked tunnel at a time: `turn` is held from parking until the forwarder took it.
#[derive(Debug, Default)]
pub(super) struct Handoff {
    turn: tokio::sync::Mutex<()>,
    slot: Mutex<Option<Parked>>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked").field("tunnel", &self.tunnel).finish_non_exhaustive()
    }
}

/// Holds the turn; empties the slot when released, so no tunnel outlives its hand-off.
struct Turn<'a> {
    slot: &'a Mutex<Option<Parked>>,
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

impl Handoff {
    /// Parks `parked`, then starts and drives `connect` (the client connecting to the socket
    /// and, for https, its TLS handshake through the tunnel) to its end. The turn is held until
    /// the forwarder accepted the client's connection and took the tunnel.
    pub(super) async fn hand<T, F>(&self, mut parked: Parked, connect: impl FnOnce() -> F) -> Result<T, BoxError>
    where
        F: Future<Output = Result<T, BoxError>>,
    {
        let (taken, mut was_taken) = oneshot::channel();
        parked.taken = Some(taken);
        let turn = Turn { slot: &self.slot, _guard: self.turn.lock().await };
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(parked);
        // Only now: the client must not reach the socket before its tunnel is parked.
        let mut connecting = std::pin::pin!(connect());
        let connected = tokio::select! {
            result = &mut connecting => result,
            taken = &mut was_taken => {
                drop(turn);
                taken.map_err(|_| ProxyError::Handoff)?;
                return connecting.await;
            }
        };
        // Connected before the forwarder took the tunnel (plain http: no handshake to wait for).
        // The connection is already queued on the socket, so its acceptance is imminent.
        let conn = connected?;
        match tokio::time::timeout(ACCEPT_WAIT, was_taken).await {
            Ok(Ok(())) => Ok(conn),
            _ => Err(ProxyError::Handoff.into()),
        }
    }

    fn take(&self) -> Option<Parked> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Accepts the proxied client's connections and splices each to the tunnel parked for it. The
/// tunnel is taken in the accept loop itself, in the order the connections arrived: the one
/// accepted during a hand-off's turn is that hand-off's (a connection with no tunnel parked is
/// closed).
pub(super) async fn forward(listener: UnixListener, handoff: Arc<Handoff>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((conn, _)) => {
                let Some(mut parked) = handoff.take() else { continue };
                if let Some(taken) = parked.taken.take() {
                    let _ = taken.send(());
                }
                tokio::spawn(splice(conn, parked));
            }
            Err(err) => {
                tracing::warn!(error = %err, "The egress hand-off socket failed to accept: {err}");
                // Back off (descriptor exhaustion, for instance) instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Copies between the client's connection and its tunnel until either side closes.
async fn splice(mut conn: UnixStream, parked: Parked) {
    let mut tunnel = parked.tunnel;
    if !parked.leftover.is_empty() && conn.write_all(&parked.leftover).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut tunnel).await;
}
