//! What every handler shares.

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{Caller, Tokens};
use super::ingest::Ingest;
use super::throttle::Throttle;
use crate::admin::applications;
use crate::policy::address::NetPolicy;
use crate::policy::crypto::KeyRing;

/// The API's shared state.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Seals and opens endpoint secrets and headers (the database never holds it).
    pub key_ring: Arc<KeyRing>,
    /// The delivery policy, so that a URL the workers would refuse is refused at registration.
    pub policy: Arc<NetPolicy>,
    pub tokens: Tokens,
    /// The hash of the bootstrap token from `WEBHOOK_API_BOOTSTRAP_TOKEN`, if set.
    pub bootstrap: Option<[u8; 32]>,
    /// Requests per second per token (`WEBHOOK_API_RATE_LIMIT`).
    pub throttle: Arc<Throttle>,
    /// Writes messages in batches.
    pub ingest: Ingest,
}

impl AppState {
    /// The application `reference` (id or uid) names, if the caller may see it.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] otherwise.
    pub async fn application(&self, caller: Caller, reference: &str) -> Result<Uuid, ApiError> {
        Ok(applications::find(&self.pool, caller.0, reference).await?.id)
    }
}
