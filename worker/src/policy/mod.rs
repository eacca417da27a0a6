//! Pure decisions: no I/O; time and randomness come in as arguments.
//!
//! - [`states`]: the stored states and the outcome vocabulary, mapped to the database.
//! - [`retry`]: outcome → disposition → when.
//! - [`circuit`]: the circuit breaker's detector, state machine and cool-down policy.
//! - [`signing`]: Standard Webhooks HMAC-SHA256 signatures.
//! - [`crypto`]: the AES-256-GCM key ring for secrets at rest.
//! - [`address`]: the SSRF policy, which URLs and addresses a webhook may go to.
//! - [`egress`]: the egress proxy's URL and bypass list, and the CONNECT exchange.
//! - [`token`]: management API tokens, generated and compared by hash.

pub mod address;
pub mod circuit;
pub mod crypto;
pub mod egress;
pub mod retry;
pub mod signing;
pub mod states;
pub mod token;
