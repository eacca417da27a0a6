//! Command line and environment: the only code that reads either.
//!
//! Every option is a flag and an environment variable (`--help` shows both):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | PostgreSQL connection string | (required; the demo starts a throwaway cluster) |
//! | `WEBHOOK_ENCRYPTION_KEYS` | key ring `id:base64key[,id:base64key…]`; the first key encrypts | — |
//! | `WEBHOOK_ENCRYPTION_KEYS_FILE` | the key ring from a file (one `id:base64key` per line) | — |
//! | `WEBHOOK_ALLOW_PRIVATE_CIDRS` | CIDRs exempt from the SSRF guard, comma-separated | none |
//! | `WEBHOOK_HTTPS_ONLY` | refuse `http://` endpoint URLs | false |
//! | `WEBHOOK_PROXY_URL` | egress through this HTTP CONNECT proxy, `http://[user:password@]host:port` | — (direct) |
//! | `WEBHOOK_NO_PROXY` | hosts reached directly: names (and their subdomains), IPs, CIDRs, `*` | — |
//! | `WEBHOOK_CA_BUNDLE` | PEM file of CAs trusted besides the system roots | — |
//! | `WEBHOOK_WORKER_ID` | this worker's name in leases and heartbeats | hostname-pid |
//! | `WEBHOOK_CONCURRENCY` | deliveries in flight at most | 256 |
//! | `WEBHOOK_BATCH_SIZE` | rows claimed per statement at most | 100 |
//! | `WEBHOOK_POLL_INTERVAL` | idle poll interval (±20 % jitter) | 1s |
//! | `WEBHOOK_LEASE_DURATION` | how long a claim is held before another worker may retry it | 60s |
//! | `WEBHOOK_HTTP_TIMEOUT` | total time for one request | 30s |
//! | `WEBHOOK_CONNECT_TIMEOUT` | time to establish a connection | 5s |
//! | `WEBHOOK_RETRY_SCHEDULE` | waits between attempts | 5s,5m,30m,2h,5h,10h,10h |
//! | `WEBHOOK_RETRY_AFTER_MAX` | ceiling on a receiver's `Retry-After` | 1h |
//! | `WEBHOOK_MAX_PAYLOAD_BYTES` | larger payloads become dead letters | 1048576 |
//! | `WEBHOOK_MAX_RESPONSE_BYTES` | response body bytes read at most | 65536 |
//! | `WEBHOOK_DRAIN_DEADLINE` | on SIGTERM, how long in-flight deliveries may finish | 20s |
//! | `WEBHOOK_STALL_TIMEOUT` | `/healthz` fails when the dispatcher stalls this long while the database answers | 120s |
//! | `WEBHOOK_METRICS_ADDR` | `/metrics`, `/healthz`, `/readyz` listen address | 0.0.0.0:9090 |
//! | `WEBHOOK_DB_POOL_SIZE` | database connections per worker | 10 |
//! | `WEBHOOK_RATE_LIMIT_PER_SECOND` | default per-endpoint rate across the fleet (0: none) | 0 |
//! | `WEBHOOK_RATE_LIMIT_BURST` | default burst (0: the rate) | 0 |
//! | `WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT` | requests in flight per endpoint per worker | 32 |
//! | `WEBHOOK_BREAKER_FAILURE_THRESHOLD` | failures in a row that open a circuit | 5 |
//! | `WEBHOOK_BREAKER_FAILURE_RATIO` | or this failed fraction (≥ 20 attempts in the window) | 0.5 |
//! | `WEBHOOK_BREAKER_WINDOW` | failure-ratio window | 60s |
//! | `WEBHOOK_BREAKER_COOLDOWN` | first cool-down (doubles per failed probe) | 30s |
//! | `WEBHOOK_BREAKER_MAX_COOLDOWN` | longest cool-down | 10m |
//! | `WEBHOOK_ATTEMPT_RETENTION` | attempt history kept (whole days) | 14d |
//! | `WEBHOOK_MESSAGE_RETENTION` | messages kept by the message store (whole days) | 14d |
//! | `WEBHOOK_DEAD_LETTER_RETENTION` | dead letters kept | 30d |
//! | `WEBHOOK_IDEMPOTENCY_RETENTION` | idempotency keys remembered | 7d |
//! | `WEBHOOK_LOG_FORMAT` | `json` or `pretty` | json |
//! | `RUST_LOG` | log filter | info |

mod api;
mod settings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

pub use self::api::{ApiArgs, ApiSettings};
pub use self::settings::{
    AttemptSettings, ClientSettings, CompletionSettings, DatabaseSettings, DispatchSettings, EgressSettings,
    MaintenanceSettings, ProtectSettings, Retention, ServerSettings, Settings,
};
pub use crate::observe::telemetry::LogFormat;
use crate::policy::crypto::KeyRing;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("DATABASE_URL is not set (use --database-url or the DATABASE_URL variable)")]
    MissingDatabaseUrl,
    #[error(
        "no encryption key ring: set WEBHOOK_ENCRYPTION_KEYS or WEBHOOK_ENCRYPTION_KEYS_FILE \
         (make one with `webhook-worker keys generate`)"
    )]
    MissingKeyRing,
    #[error("WEBHOOK_ENCRYPTION_KEYS and WEBHOOK_ENCRYPTION_KEYS_FILE are both set; use one")]
    TwoKeyRings,
    #[error("reading the key ring file {path}")]
    KeyRingFile { path: PathBuf, source: std::io::Error },
    #[error("the encryption key ring is invalid")]
    KeyRing(#[from] crate::policy::crypto::Error),
    #[error("reading the CA bundle {path}")]
    CaBundle { path: PathBuf, source: std::io::Error },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("{name} must be in (0, 1], got {value}")]
    Ratio { name: &'static str, value: f64 },
    #[error("WEBHOOK_BREAKER_MAX_COOLDOWN ({max:?}) must not be shorter than WEBHOOK_BREAKER_COOLDOWN ({cooldown:?})")]
    CooldownOrder { cooldown: Duration, max: Duration },
    #[error("the lease ({lease:?}) must be longer than the HTTP timeout ({timeout:?}) plus 5 s")]
    LeaseTooShort { lease: Duration, timeout: Duration },
    #[error(
        "WEBHOOK_STALL_TIMEOUT ({stall:?}) must be longer than WEBHOOK_HTTP_TIMEOUT ({timeout:?}): a dispatcher \
         whose every slot holds an attempt waits that long"
    )]
    StallBelowHttpTimeout { stall: Duration, timeout: Duration },
    #[error(
        "WEBHOOK_STALL_TIMEOUT ({stall:?}) must be longer than the dispatcher's longest wait ({wait:?}: the poll \
         interval plus 20 % jitter, or the back-off after a database error)"
    )]
    StallBelowIdle { stall: Duration, wait: Duration },
    #[error(
        "WEBHOOK_API_BOOTSTRAP_TOKEN must be at least {min} characters (make one with `webhook-worker tokens create`)"
    )]
    ShortToken { min: usize },
    #[error("WEBHOOK_PROXY_URL {0}")]
    ProxyUrl(crate::policy::egress::ProxyUrlError),
    #[error(transparent)]
    NoProxy(#[from] crate::policy::egress::NoProxyError),
    #[error("the retry policy is invalid")]
    Retry(#[from] crate::policy::retry::PolicyError),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Database connections per process.
    #[arg(long, env = "WEBHOOK_DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
}

impl DatabaseArgs {
    /// The connection string.
    ///
    /// # Errors
    /// [`Error::MissingDatabaseUrl`] when unset.
    pub fn url(&self) -> Result<SecretString, Error> {
        self.database_url.clone().ok_or(Error::MissingDatabaseUrl)
    }
}

#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Encryption key ring, `id:base64key[,id:base64key…]`; the first key encrypts, all decrypt.
    #[arg(long, env = "WEBHOOK_ENCRYPTION_KEYS", hide_env_values = true)]
    pub encryption_keys: Option<SecretString>,
    /// File holding the key ring, one `id:base64key` per line.
    #[arg(long, env = "WEBHOOK_ENCRYPTION_KEYS_FILE")]
    pub encryption_keys_file: Option<PathBuf>,
}

impl KeyArgs {
    /// Loads the key ring.
    ///
    /// # Errors
    /// [`Error`] when none or both sources are set, the file is unreadable or a key is malformed.
    pub fn key_ring(&self) -> Result<KeyRing, Error> {
        match (&self.encryption_keys, &self.encryption_keys_file) {
            (Some(_), Some(_)) => Err(Error::TwoKeyRings),
            (Some(text), None) => Ok(KeyRing::parse(text.expose_secret())?),
            (None, Some(path)) => {
                let text = zeroize::Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|source| Error::KeyRingFile { path: path.clone(), source })?,
                );
                Ok(KeyRing::parse(&text)?)
            }
            (None, None) => Err(Error::MissingKeyRing),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// This worker's name in leases and heartbeats.
    #[arg(long, env = "WEBHOOK_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Deliveries in flight at most.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,
    /// Rows claimed per statement at most (never more than the free delivery slots).
    #[arg(long, env = "WEBHOOK_BATCH_SIZE", default_value_t = 100)]
    pub batch_size: usize,
    /// Idle poll interval, jittered ±20 %; LISTEN/NOTIFY wakes the worker sooner.
    #[arg(long, env = "WEBHOOK_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// How long a claim is held before another worker may retry the delivery.
    #[arg(long, env = "WEBHOOK_LEASE_DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// Total time for one request, body included.
    #[arg(long, env = "WEBHOOK_HTTP_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http_timeout: Duration,
    /// Time to establish a connection.
    #[arg(long, env = "WEBHOOK_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Waits between attempts, comma-separated; their count + 1 is the number of attempts.
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,10h")]
    pub retry_schedule: RetrySchedule,
    /// Ceiling on the wait a receiver asks for with `Retry-After` (429 and 503).
    #[arg(long, env = "WEBHOOK_RETRY_AFTER_MAX", default_value = "1h", value_parser = humantime::parse_duration)]
    pub retry_after_max: Duration,
    /// Payloads larger than this become dead letters.
    #[arg(long, env = "WEBHOOK_MAX_PAYLOAD_BYTES", default_value_t = 1_048_576)]
    pub max_payload_bytes: usize,
    /// Response body bytes read at most.
    #[arg(long, env = "WEBHOOK_MAX_RESPONSE_BYTES", default_value_t = 65_536)]
    pub max_response_bytes: usize,
    /// On SIGTERM, how long in-flight deliveries may finish before they are handed back.
    #[arg(long, env = "WEBHOOK_DRAIN_DEADLINE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_deadline: Duration,
    /// `/healthz` fails (and the kubelet restarts the pod) when the dispatcher has made no progress
    /// for this long while the database answers; longer than WEBHOOK_HTTP_TIMEOUT.
    #[arg(long, env = "WEBHOOK_STALL_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,
    /// CIDRs exempt from the SSRF guard (e.g. 127.0.0.0/8 for a local receiver).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_CIDRS", value_delimiter = ',')]
    pub allow_private_cidrs: Vec<IpNet>,
    /// Refuse plain `http://` endpoint URLs.
    #[arg(long, env = "WEBHOOK_HTTPS_ONLY", default_value_t = false)]
    pub https_only: bool,
    /// Send webhooks through this HTTP CONNECT proxy: `http://[user:password@]host:port`. The
    /// worker resolves and checks each target itself and asks the proxy for the checked address.
    #[arg(long, env = "WEBHOOK_PROXY_URL", hide_env_values = true)]
    pub proxy_url: Option<SecretString>,
    /// Hosts reached without the proxy, comma-separated: names (subdomains included), IPs, CIDRs, `*`.
    #[arg(long, env = "WEBHOOK_NO_PROXY")]
    pub no_proxy: Option<String>,
    /// PEM file of certificate authorities trusted besides the system roots.
    #[arg(long, env = "WEBHOOK_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Default requests per second per endpoint, across the fleet (0: unlimited).
    #[arg(long, env = "WEBHOOK_RATE_LIMIT_PER_SECOND", default_value_t = 0)]
    pub rate_limit_per_second: u32,
    /// Default burst above the rate per endpoint (0: equal to the rate).
    #[arg(long, env = "WEBHOOK_RATE_LIMIT_BURST", default_value_t = 0)]
    pub rate_limit_burst: u32,
    /// Default requests in flight per endpoint per worker.
    #[arg(long, env = "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", default_value_t = 32)]
    pub max_in_flight_per_endpoint: u32,
    /// Trip an endpoint's circuit after this many failures in a row.
    #[arg(long, env = "WEBHOOK_BREAKER_FAILURE_THRESHOLD", default_value_t = 5)]
    pub breaker_failure_threshold: u32,
    /// Or when this fraction of attempts in the window failed (with at least 20 attempts).
    #[arg(long, env = "WEBHOOK_BREAKER_FAILURE_RATIO", default_value_t = 0.5)]
    pub breaker_failure_ratio: f64,
    /// The failure-ratio window.
    #[arg(long, env = "WEBHOOK_BREAKER_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub breaker_window: Duration,
    /// First cool-down of an open circuit (doubles after each failed probe).
    #[arg(long, env = "WEBHOOK_BREAKER_COOLDOWN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub breaker_cooldown: Duration,
    /// Longest cool-down.
    #[arg(long, env = "WEBHOOK_BREAKER_MAX_COOLDOWN", default_value = "10m", value_parser = humantime::parse_duration)]
    pub breaker_max_cooldown: Duration,
    /// How long the attempt history is kept (whole days; at least one).
    #[arg(long, env = "WEBHOOK_ATTEMPT_RETENTION", default_value = "14d", value_parser = humantime::parse_duration)]
    pub attempt_retention: Duration,
    /// How long messages are kept in the message store (whole days; at least one).
    #[arg(long, env = "WEBHOOK_MESSAGE_RETENTION", default_value = "14d", value_parser = humantime::parse_duration)]
    pub message_retention: Duration,
    /// How long dead letters are kept.
    #[arg(long, env = "WEBHOOK_DEAD_LETTER_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub dead_letter_retention: Duration,
    /// How long an idempotency key of `webhook.enqueue()` is remembered.
    #[arg(long, env = "WEBHOOK_IDEMPOTENCY_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub idempotency_retention: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Listen address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "WEBHOOK_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// A comma-separated list of durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        text.split(',')
            .map(|part| humantime::parse_duration(part.trim()).map_err(|err| format!("`{}`: {err}", part.trim())))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl RunArgs {
    /// The options as if no flag or variable were given (for the demo and tests, which change
    /// what they need and then validate with [`Settings::from_args`]).
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            run: RunArgs,
        }
        // Parse an empty command line, ignoring the environment, so defaults live in one place.
        let command = <Defaults as clap::CommandFactory>::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["defaults"]);
        <Defaults as clap::FromArgMatches>::from_arg_matches(&matches).expect("the defaults parse").run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedules_parse_and_report_the_bad_part() {
        assert_eq!(
            "5s, 5m,1h".parse::<RetrySchedule>().unwrap().0,
            vec![Duration::from_secs(5), Duration::from_secs(300), Duration::from_secs(3600)]
        );
        assert!("".parse::<RetrySchedule>().unwrap().0.is_empty());
        assert!("5s,soon".parse::<RetrySchedule>().unwrap_err().starts_with("`soon`"));
    }
}
