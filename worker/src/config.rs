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
//! | `WEBHOOK_DEAD_LETTER_RETENTION` | dead letters kept | 30d |
//! | `WEBHOOK_IDEMPOTENCY_RETENTION` | idempotency keys remembered | 7d |
//! | `WEBHOOK_LOG_FORMAT` | `json` or `pretty` | json |
//! | `RUST_LOG` | log filter | info |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::crypto::KeyRing;
use crate::deliver::ClientSettings;
use crate::netguard::NetPolicy;
use crate::retry::RetryPolicy;

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
    KeyRing(#[from] crate::crypto::Error),
    #[error("reading the CA bundle {path}")]
    CaBundle { path: PathBuf, source: std::io::Error },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("the lease ({lease:?}) must be longer than the HTTP timeout ({timeout:?}) plus 5 s")]
    LeaseTooShort { lease: Duration, timeout: Duration },
    #[error("the retry policy is invalid")]
    Retry(#[from] crate::retry::PolicyError),
}

/// webhook-delivery: deliver signed webhooks from a PostgreSQL queue.
#[derive(Debug, Parser)]
#[command(name = "webhook-worker", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker: claim, sign and deliver until SIGTERM or SIGINT.
    Run(Box<RunArgs>),
    /// Create or upgrade the database schema (safe to run twice and from several pods at once).
    Migrate(crate::cli::MigrateArgs),
    /// Manage endpoints: add, list, show, update, pause, resume, disable, enable, delete, rotate-secret.
    #[command(subcommand)]
    Endpoint(crate::cli::endpoint::EndpointCommand),
    /// Inspect deliveries and replay dead letters.
    #[command(subcommand)]
    Delivery(crate::cli::delivery::DeliveryCommand),
    /// Queue statistics.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Enqueue an event, fanned out to every subscribed endpoint (or to one).
    Enqueue(crate::cli::EnqueueArgs),
    /// Manage encryption keys: generate, status, rotate.
    #[command(subcommand)]
    Keys(crate::cli::keys::KeysCommand),
    /// Run a self-contained end-to-end demo: Postgres, a verifying HTTPS receiver, a worker.
    Demo(DemoArgs),
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
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
    /// CIDRs exempt from the SSRF guard (e.g. 127.0.0.0/8 for a local receiver).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_CIDRS", value_delimiter = ',')]
    pub allow_private_cidrs: Vec<IpNet>,
    /// Refuse plain `http://` endpoint URLs.
    #[arg(long, env = "WEBHOOK_HTTPS_ONLY", default_value_t = false)]
    pub https_only: bool,
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
    pub metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Depth by state, oldest ready age, top endpoints by backlog and by failures.
    Stats(crate::cli::QueueStatsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Events to enqueue.
    #[arg(long, env = "WEBHOOK_DEMO_EVENTS", default_value_t = 3000)]
    pub events: u32,
    /// Endpoints to register (each gets its own receiver path and secret).
    #[arg(long, env = "WEBHOOK_DEMO_ENDPOINTS", default_value_t = 4)]
    pub endpoints: u32,
    /// PostgreSQL to use; a throwaway cluster is started when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Deliveries in flight at most.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,
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

/// Validated worker settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: SecretString,
    pub db_pool_size: u32,
    pub key_ring: Arc<KeyRing>,
    pub worker_id: String,
    pub concurrency: usize,
    pub batch_size: usize,
    pub poll_interval: Duration,
    pub lease_duration: Duration,
    pub drain_deadline: Duration,
    pub retry: RetryPolicy,
    pub max_payload_bytes: usize,
    pub client: ClientSettings,
    /// `None`: no metrics/health listener (tests run several workers in one process).
    pub metrics_addr: Option<SocketAddr>,
    pub retention: crate::maintenance::Retention,
    pub protect: crate::protect::ProtectSettings,
}

impl WorkerArgs {
    /// Validates the worker options into [`Settings`].
    ///
    /// # Errors
    /// [`Error`] naming the first invalid option.
    pub fn settings(&self, database: &DatabaseArgs, key_ring: KeyRing) -> Result<Settings, Error> {
        for (name, value) in [("WEBHOOK_CONCURRENCY", self.concurrency), ("WEBHOOK_BATCH_SIZE", self.batch_size)] {
            if value == 0 {
                return Err(Error::Zero(name));
            }
        }
        if database.db_pool_size == 0 {
            return Err(Error::Zero("WEBHOOK_DB_POOL_SIZE"));
        }
        if self.lease_duration < self.http_timeout + Duration::from_secs(5) {
            return Err(Error::LeaseTooShort { lease: self.lease_duration, timeout: self.http_timeout });
        }
        let extra_ca_pem = match &self.ca_bundle {
            Some(path) => Some(std::fs::read(path).map_err(|source| Error::CaBundle { path: path.clone(), source })?),
            None => None,
        };
        Ok(Settings {
            database_url: database.url()?,
            db_pool_size: database.db_pool_size,
            key_ring: Arc::new(key_ring),
            worker_id: self.worker_id.clone().unwrap_or_else(default_worker_id),
            concurrency: self.concurrency,
            batch_size: self.batch_size,
            poll_interval: self.poll_interval,
            lease_duration: self.lease_duration,
            drain_deadline: self.drain_deadline,
            retry: RetryPolicy::try_new(self.retry_schedule.0.clone(), 0.2, self.retry_after_max)?,
            max_payload_bytes: self.max_payload_bytes,
            client: ClientSettings {
                connect_timeout: self.connect_timeout,
                timeout: self.http_timeout,
                max_response_bytes: self.max_response_bytes,
                extra_ca_pem,
                policy: Arc::new(NetPolicy::new(self.allow_private_cidrs.clone(), self.https_only)),
            },
            metrics_addr: None,
            protect: crate::protect::ProtectSettings {
                breaker: crate::breaker::BreakerSettings {
                    consecutive_failures: self.breaker_failure_threshold.max(1),
                    failure_ratio: self.breaker_failure_ratio.clamp(0.0, 1.0),
                    min_requests: 20,
                    window: self.breaker_window,
                    cooldown: self.breaker_cooldown,
                    max_cooldown: self.breaker_max_cooldown,
                },
                rate_limit: (self.rate_limit_per_second > 0).then_some(self.rate_limit_per_second),
                burst: (self.rate_limit_burst > 0).then_some(self.rate_limit_burst),
                max_in_flight: self.max_in_flight_per_endpoint.max(1),
            },
            retention: crate::maintenance::Retention {
                attempts: self.attempt_retention,
                dead_letters: self.dead_letter_retention,
                idempotency_keys: self.idempotency_retention,
            },
        })
    }
}

impl RunArgs {
    /// Validates everything `run` needs.
    ///
    /// # Errors
    /// [`Error`] naming the first invalid option.
    pub fn settings(&self) -> Result<Settings, Error> {
        let mut settings = self.worker.settings(&self.database, self.keys.key_ring()?)?;
        settings.metrics_addr = Some(self.metrics_addr);
        Ok(settings)
    }
}

/// `hostname-pid-xxxx`: unique per process, recognisable in `webhook.workers`.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "worker".into());
    let suffix = &Uuid::new_v4().simple().to_string()[..6];
    format!("{}-{}-{suffix}", host.trim(), std::process::id())
}

/// Default worker options, as if no flag or variable were given (for the demo and tests).
pub fn default_worker_args() -> WorkerArgs {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        worker: WorkerArgs,
    }
    // Parse from an empty command line, ignoring the environment, so defaults live in one place.
    let mut command = <Defaults as clap::CommandFactory>::command();
    command = command.mut_args(|arg| arg.env(None::<&str>));
    let matches = command.get_matches_from(["defaults"]);
    <Defaults as clap::FromArgMatches>::from_arg_matches(&matches).expect("the defaults parse").worker
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_cli() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn retry_schedules_parse_and_report_the_bad_part() {
        assert_eq!(
            "5s, 5m,1h".parse::<RetrySchedule>().unwrap().0,
            vec![Duration::from_secs(5), Duration::from_secs(300), Duration::from_secs(3600)]
        );
        assert!("".parse::<RetrySchedule>().unwrap().0.is_empty());
        assert!("5s,soon".parse::<RetrySchedule>().unwrap_err().starts_with("`soon`"));
    }

    #[test]
    fn defaults_are_sane_and_validate() {
        let args = default_worker_args();
        assert_eq!(args.concurrency, 256);
        assert_eq!(args.retry_schedule.0.len(), 7);
        let database = DatabaseArgs { database_url: Some("postgres://x".to_owned().into()), db_pool_size: 10 };
        let settings = args.settings(&database, KeyRing::generate("k").0).unwrap();
        assert_eq!(settings.retry.max_attempts(), 8);
    }

    #[test]
    fn a_lease_shorter_than_the_timeout_is_refused() {
        let mut args = default_worker_args();
        args.lease_duration = Duration::from_secs(10);
        let database = DatabaseArgs { database_url: Some("postgres://x".to_owned().into()), db_pool_size: 10 };
        let err = args.settings(&database, KeyRing::generate("k").0).unwrap_err();
        assert!(matches!(err, Error::LeaseTooShort { .. }), "{err}");
    }
}
