//! The process-wide TLS crypto provider, which reqwest (built without one) and the operator
//! commands that check client certificates both need.

use std::sync::Once;

/// Installs ring as rustls' process-wide crypto provider; idempotent.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
