//! SIGTERM/SIGINT handling and the two-phase stop: first stop claiming, then, after the drain
//! deadline, abort what is still in flight (it is handed back to the queue).

use tokio_util::sync::CancellationToken;

/// The two stop signals passed to the dispatcher and every attempt.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop claiming new deliveries; in-flight ones finish.
    pub stop_claiming: CancellationToken,
    /// Abandon in-flight deliveries and hand them back.
    pub abort_in_flight: CancellationToken,
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "Cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "Cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
