//! The management API's options and their validated settings.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `WEBHOOK_API_ADDR` | the API's listen address | 0.0.0.0:8071 |
//! | `WEBHOOK_API_MAX_BODY_BYTES` | larger request bodies are refused with 413 | 1048576 |
//! | `WEBHOOK_API_BOOTSTRAP_TOKEN` | a token with full access, from a Secret (first setup) | — |
//! | `WEBHOOK_API_RATE_LIMIT` | requests per second per token, then 429 (0: no limit) | 1000 |
//! | `WEBHOOK_API_RATE_LIMIT_BURST` | requests a token may make at once above the rate | 2000 |
//!
//! With `DATABASE_URL`, `WEBHOOK_DB_POOL_SIZE`, the key ring variables, `WEBHOOK_METRICS_ADDR`,
//! `WEBHOOK_LOG_FORMAT`, and the delivery policy's `WEBHOOK_ALLOW_PRIVATE_CIDRS` and
//! `WEBHOOK_HTTPS_ONLY` (so a URL the workers would refuse is refused at registration).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use clap::Args;
use ipnet::IpNet;
use secrecy::{ExposeSecret as _, SecretString};

use super::{DatabaseArgs, DatabaseSettings, Error, KeyArgs, LogFormat};
use crate::policy::address::NetPolicy;
use crate::policy::crypto::KeyRing;

/// `webhook-worker api`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Listen address of the management API.
    #[arg(long, env = "WEBHOOK_API_ADDR", default_value = "0.0.0.0:8071")]
    pub api_addr: SocketAddr,
    /// Request bodies larger than this are refused (413).
    #[arg(long, env = "WEBHOOK_API_MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// A token with full access, accepted besides the stored ones (for the first setup).
    #[arg(long, env = "WEBHOOK_API_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<SecretString>,
    /// Requests per second each token may make, per API process (0: no limit); over it, 429.
    #[arg(long, env = "WEBHOOK_API_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// Requests a token may make at once above its rate.
    #[arg(long, env = "WEBHOOK_API_RATE_LIMIT_BURST", default_value_t = 2000)]
    pub rate_limit_burst: u32,
    /// CIDRs the delivery policy exempts from the SSRF guard (as the workers have it).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_CIDRS", value_delimiter = ',')]
    pub allow_private_cidrs: Vec<IpNet>,
    /// Refuse plain `http://` endpoint URLs (as the workers do).
    #[arg(long, env = "WEBHOOK_HTTPS_ONLY", default_value_t = false)]
    pub https_only: bool,
    /// Listen address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "WEBHOOK_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

impl ApiArgs {
    /// The options as if no flag or variable were given (for tests, which change what they need
    /// and then validate with [`ApiSettings::from_args`]).
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            api: ApiArgs,
        }
        let command = <Defaults as clap::CommandFactory>::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["defaults"]);
        <Defaults as clap::FromArgMatches>::from_arg_matches(&matches).expect("the defaults parse").api
    }
}

/// What the API runs with.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub database: DatabaseSettings,
    pub key_ring: Arc<KeyRing>,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub policy: Arc<NetPolicy>,
    pub bootstrap_token_sha256: Option<[u8; 32]>,
    /// Requests per second per token and the burst; `None`: no limit.
    pub rate_limit: Option<(NonZeroU32, NonZeroU32)>,
}

/// Bootstrap tokens shorter than this are refused: it grants everything.
const MIN_BOOTSTRAP_TOKEN: usize = 32;

impl ApiSettings {
    /// Validates the API's options.
    ///
    /// # Errors
    /// [`Error`] naming the first invalid option.
    pub fn from_args(args: &ApiArgs) -> Result<Self, Error> {
        if args.database.db_pool_size == 0 {
            return Err(Error::Zero("WEBHOOK_DB_POOL_SIZE"));
        }
        if args.max_body_bytes == 0 {
            return Err(Error::Zero("WEBHOOK_API_MAX_BODY_BYTES"));
        }
        let bootstrap = args.bootstrap_token.as_ref().map(|token| token.expose_secret().trim().to_owned());
        if bootstrap.as_ref().is_some_and(|token| token.len() < MIN_BOOTSTRAP_TOKEN) {
            return Err(Error::ShortToken { min: MIN_BOOTSTRAP_TOKEN });
        }
        let rate_limit = match (NonZeroU32::new(args.rate_limit), NonZeroU32::new(args.rate_limit_burst)) {
            (None, _) => None,
            (Some(rate), Some(burst)) => Some((rate, burst)),
            (Some(_), None) => return Err(Error::Zero("WEBHOOK_API_RATE_LIMIT_BURST")),
        };
        Ok(Self {
            rate_limit,
            database: DatabaseSettings { url: args.database.url()?, pool_size: args.database.db_pool_size },
            key_ring: Arc::new(args.keys.key_ring()?),
            addr: args.api_addr,
            metrics_addr: args.metrics_addr,
            max_body_bytes: args.max_body_bytes,
            policy: Arc::new(NetPolicy::new(args.allow_private_cidrs.clone(), args.https_only)),
            bootstrap_token_sha256: bootstrap.as_deref().map(crate::policy::token::hash),
        })
    }
}
