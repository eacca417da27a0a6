//! The validated settings of a worker, one struct per component, built in one place
//! ([`Settings::from_args`]) and never changed afterwards. The demo and the tests change
//! [`RunArgs`] before validation, never the result.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::{Error, RunArgs, WorkerArgs};
use crate::policy::address::NetPolicy;
use crate::policy::circuit::BreakerSettings;
use crate::policy::crypto::KeyRing;
use crate::policy::egress::{NoProxy, ProxyConfig};
use crate::policy::retry::RetryPolicy;

/// How often heartbeats and leader maintenance run.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(2);
/// How long endpoint rows are cached by a worker.
const ENDPOINT_CACHE_TTL: Duration = Duration::from_secs(2);
/// Attempts in the failure-ratio window before the ratio may trip a circuit.
const BREAKER_MIN_REQUESTS: u32 = 20;
/// Jitter of the retry schedule, as a fraction of each wait.
const RETRY_JITTER: f64 = 0.2;
/// Longest back-off of the dispatcher between failing claims.
const DISPATCH_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The dispatcher's idle poll waits up to this factor of the poll interval (±20 % jitter).
const POLL_JITTER_MAX: f64 = 1.2;

/// Everything a worker process runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub worker_id: String,
    pub database: DatabaseSettings,
    pub key_ring: Arc<KeyRing>,
    pub dispatch: DispatchSettings,
    pub attempt: AttemptSettings,
    pub completion: CompletionSettings,
    pub protect: ProtectSettings,
    pub maintenance: MaintenanceSettings,
    pub server: ServerSettings,
    /// On shutdown, how long in-flight deliveries may finish before they are handed back.
    pub drain_deadline: Duration,
}

/// The database connection.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub pool_size: u32,
}

/// The claim loop.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub worker_id: String,
    /// Deliveries in flight at most.
    pub concurrency: usize,
    /// Rows per claim at most (never more than the free slots).
    pub batch_size: usize,
    /// Idle poll interval before jitter.
    pub poll_interval: Duration,
    pub lease_duration: Duration,
    /// Payloads larger than this are not fetched (and become dead letters).
    pub max_payload_bytes: usize,
    /// How long endpoint rows are cached.
    pub endpoint_cache_ttl: Duration,
    /// Longest back-off between failing claims.
    pub error_backoff_max: Duration,
}

/// One attempt: the HTTP client and the retry policy.
#[derive(Debug, Clone)]
pub struct AttemptSettings {
    pub retry: RetryPolicy,
    pub max_payload_bytes: usize,
    pub client: ClientSettings,
}

/// The HTTPS client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Bytes of a response body read at most; the rest is not read.
    pub max_response_bytes: usize,
    /// PEM certificates trusted in addition to the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    pub policy: Arc<NetPolicy>,
    /// The egress proxy (`WEBHOOK_PROXY_URL`), if any.
    pub egress: Option<EgressSettings>,
}

/// Egress through an HTTP CONNECT proxy.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    pub proxy: ProxyConfig,
    /// Hosts reached directly.
    pub no_proxy: NoProxy,
}

/// The completion writer.
#[derive(Debug, Clone)]
pub struct CompletionSettings {
    pub worker_id: String,
    /// Completions queued for the writer at most before attempts wait.
    pub capacity: usize,
}

/// Fleet protection: defaults for endpoints that set nothing.
#[derive(Debug, Clone, Copy)]
pub struct ProtectSettings {
    pub breaker: BreakerSettings,
    /// Requests per second per endpoint across the fleet; `None`: unlimited.
    pub rate_limit: Option<u32>,
    pub burst: Option<u32>,
    /// Requests in flight per endpoint per worker.
    pub max_in_flight: u32,
}

/// Heartbeats and the leader's maintenance.
#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    pub worker_id: String,
    pub interval: Duration,
    /// Attempts a delivery gets; a reaped lease on the last one makes a dead letter.
    pub max_attempts: u32,
    /// For the leader's own connection, which holds the advisory lock.
    pub database_url: SecretString,
    pub retention: Retention,
    /// For the circuits' cool-downs, which the leader ends.
    pub breaker: BreakerSettings,
}

/// How long history is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Attempt history: whole days older than this are dropped (at least one day is kept).
    pub attempts: Duration,
    /// The message store: whole days older than this are dropped (at least one day is kept).
    pub messages: Duration,
    pub dead_letters: Duration,
    pub idempotency_keys: Duration,
}

/// The `/metrics`, `/healthz` and `/readyz` listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// `None`: no listener (tests run several workers in one process).
    pub metrics_addr: Option<SocketAddr>,
    /// `/readyz` fails when the dispatcher or the database showed no progress for this long.
    pub ready_window: Duration,
    /// `/healthz` fails when the dispatcher made no progress for this long while the database
    /// answers (longer than the HTTP timeout and any wait of the dispatcher's own).
    pub stall_timeout: Duration,
}

impl Settings {
    /// Validates every option into the settings of each component.
    ///
    /// # Errors
    /// [`Error`] naming the first invalid option, or a key ring or CA bundle that cannot be read.
    pub fn from_args(args: &RunArgs) -> Result<Self, Error> {
        let w = &args.worker;
        check_limits(args)?;
        let worker_id = w.worker_id.clone().unwrap_or_else(default_worker_id);
        let database = DatabaseSettings { url: args.database.url()?, pool_size: args.database.db_pool_size };
        let retry = RetryPolicy::try_new(w.retry_schedule.0.clone(), RETRY_JITTER, w.retry_after_max)?;
        let max_attempts = retry.max_attempts();
        let protect = protect(w);
        Ok(Self {
            dispatch: DispatchSettings {
                worker_id: worker_id.clone(),
                concurrency: w.concurrency,
                batch_size: w.batch_size,
                poll_interval: w.poll_interval,
                lease_duration: w.lease_duration,
                max_payload_bytes: w.max_payload_bytes,
                endpoint_cache_ttl: ENDPOINT_CACHE_TTL,
                error_backoff_max: DISPATCH_ERROR_BACKOFF_MAX,
            },
            attempt: AttemptSettings { retry, max_payload_bytes: w.max_payload_bytes, client: client(w)? },
            completion: CompletionSettings { worker_id: worker_id.clone(), capacity: w.concurrency * 2 },
            protect,
            maintenance: MaintenanceSettings {
                worker_id: worker_id.clone(),
                interval: MAINTENANCE_INTERVAL,
                max_attempts,
                database_url: database.url.clone(),
                retention: Retention {
                    attempts: w.attempt_retention,
                    messages: w.message_retention,
                    dead_letters: w.dead_letter_retention,
                    idempotency_keys: w.idempotency_retention,
                },
                breaker: protect.breaker,
            },
            server: ServerSettings {
                metrics_addr: args.metrics_addr,
                ready_window: (w.poll_interval * 3).max(Duration::from_secs(10)),
                stall_timeout: w.stall_timeout,
            },
            drain_deadline: w.drain_deadline,
            key_ring: Arc::new(args.keys.key_ring()?),
            database,
            worker_id,
        })
    }
}

/// The refusals that need more than one option, or a bound clap cannot express.
fn check_limits(args: &RunArgs) -> Result<(), Error> {
    let w = &args.worker;
    let counts = [
        ("WEBHOOK_CONCURRENCY", w.concurrency),
        ("WEBHOOK_BATCH_SIZE", w.batch_size),
        ("WEBHOOK_DB_POOL_SIZE", args.database.db_pool_size as usize),
        ("WEBHOOK_BREAKER_FAILURE_THRESHOLD", w.breaker_failure_threshold as usize),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", w.max_in_flight_per_endpoint as usize),
    ];
    if let Some((name, _)) = counts.iter().find(|(_, value)| *value == 0) {
        return Err(Error::Zero(name));
    }
    if !(w.breaker_failure_ratio > 0.0 && w.breaker_failure_ratio <= 1.0) {
        return Err(Error::Ratio { name: "WEBHOOK_BREAKER_FAILURE_RATIO", value: w.breaker_failure_ratio });
    }
    if w.breaker_max_cooldown < w.breaker_cooldown {
        return Err(Error::CooldownOrder { cooldown: w.breaker_cooldown, max: w.breaker_max_cooldown });
    }
    if w.lease_duration < w.http_timeout + Duration::from_secs(5) {
        return Err(Error::LeaseTooShort { lease: w.lease_duration, timeout: w.http_timeout });
    }
    check_stall_timeout(w)
}

/// The dispatcher waits, without being stalled, for a slot (up to an attempt's HTTP timeout), on
/// an idle poll or after a failing claim: a stall timeout within those waits would restart
/// healthy pods.
fn check_stall_timeout(w: &WorkerArgs) -> Result<(), Error> {
    if w.stall_timeout <= w.http_timeout {
        return Err(Error::StallBelowHttpTimeout { stall: w.stall_timeout, timeout: w.http_timeout });
    }
    let wait = w.poll_interval.mul_f64(POLL_JITTER_MAX).max(DISPATCH_ERROR_BACKOFF_MAX);
    if w.stall_timeout <= wait {
        return Err(Error::StallBelowIdle { stall: w.stall_timeout, wait });
    }
    Ok(())
}

fn client(w: &WorkerArgs) -> Result<ClientSettings, Error> {
    let extra_ca_pem = match &w.ca_bundle {
        Some(path) => Some(std::fs::read(path).map_err(|source| Error::CaBundle { path: path.clone(), source })?),
        None => None,
    };
    Ok(ClientSettings {
        connect_timeout: w.connect_timeout,
        timeout: w.http_timeout,
        max_response_bytes: w.max_response_bytes,
        extra_ca_pem,
        policy: Arc::new(NetPolicy::new(w.allow_private_cidrs.clone(), w.https_only)),
        egress: egress(w)?,
    })
}

fn egress(w: &WorkerArgs) -> Result<Option<EgressSettings>, Error> {
    let no_proxy = NoProxy::parse(w.no_proxy.as_deref().unwrap_or(""))?;
    let Some(url) = &w.proxy_url else {
        return Ok(None);
    };
    let proxy = ProxyConfig::parse(url.expose_secret()).map_err(Error::ProxyUrl)?;
    Ok(Some(EgressSettings { proxy, no_proxy }))
}

fn protect(w: &WorkerArgs) -> ProtectSettings {
    ProtectSettings {
        breaker: BreakerSettings {
            consecutive_failures: w.breaker_failure_threshold,
            failure_ratio: w.breaker_failure_ratio,
            min_requests: BREAKER_MIN_REQUESTS,
            window: w.breaker_window,
            cooldown: w.breaker_cooldown,
            max_cooldown: w.breaker_max_cooldown,
        },
        // 0 means "not set" for both, as the flags document.
        rate_limit: (w.rate_limit_per_second > 0).then_some(w.rate_limit_per_second),
        burst: (w.rate_limit_burst > 0).then_some(w.rate_limit_burst),
        max_in_flight: w.max_in_flight_per_endpoint,
    }
}

/// `hostname-pid-xxxx`: unique per process, recognisable in `webhook.workers`.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "worker".into());
    let suffix = &Uuid::new_v4().simple().to_string()[..6];
    format!("{}-{}-{suffix}", host.trim(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        let mut args = RunArgs::defaults();
        args.database.database_url = Some("postgres://x".to_owned().into());
        args.keys.encryption_keys = Some(KeyRing::generate("k").1.as_str().into());
        args
    }

    #[test]
    fn defaults_are_sane_and_validate() {
        let args = args();
        assert_eq!(args.worker.concurrency, 256);
        assert_eq!(args.worker.retry_schedule.0.len(), 7);
        let settings = Settings::from_args(&args).unwrap();
        assert_eq!(settings.attempt.retry.max_attempts(), 8);
        assert_eq!(settings.maintenance.max_attempts, 8);
        assert_eq!(settings.server.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(settings.server.stall_timeout, Duration::from_secs(120));
    }

    #[test]
    fn the_proxy_url_is_validated_with_a_precise_error_that_hides_the_password() {
        let mut proxied = args();
        proxied.worker.proxy_url = Some("https://egress:hunter2@proxy.internal:3128".to_owned().into());
        let err = Settings::from_args(&proxied).unwrap_err().to_string();
        assert!(err.starts_with("WEBHOOK_PROXY_URL has scheme `https`; only http://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        proxied.worker.proxy_url = Some("http://egress:hunter2@proxy.internal:3128".to_owned().into());
        proxied.worker.no_proxy = Some("internal.example, 10.0.0.0/8".into());
        let egress = Settings::from_args(&proxied).unwrap().attempt.client.egress.unwrap();
        assert_eq!(egress.proxy.to_string(), "proxy.internal:3128");
        assert!(!format!("{egress:?}").contains("hunter2"));
        proxied.worker.no_proxy = Some("internal.example:443".into());
        let err = Settings::from_args(&proxied).unwrap_err().to_string();
        assert!(err.starts_with("WEBHOOK_NO_PROXY entry `internal.example:443` is not"), "{err}");
    }

    #[test]
    fn a_stall_timeout_within_the_dispatchers_own_waits_is_refused() {
        let mut http = args();
        http.worker.stall_timeout = http.worker.http_timeout;
        let err = Settings::from_args(&http).unwrap_err();
        assert_eq!(
            err.to_string(),
            "WEBHOOK_STALL_TIMEOUT (30s) must be longer than WEBHOOK_HTTP_TIMEOUT (30s): a dispatcher whose every \
             slot holds an attempt waits that long"
        );
        let mut poll = args();
        poll.worker.poll_interval = Duration::from_secs(100);
        assert!(matches!(Settings::from_args(&poll).unwrap_err(), Error::StallBelowIdle { .. }));
        let mut backoff = args();
        backoff.worker.http_timeout = Duration::from_secs(2);
        backoff.worker.stall_timeout = Duration::from_secs(10);
        assert!(matches!(Settings::from_args(&backoff).unwrap_err(), Error::StallBelowIdle { .. }));
        backoff.worker.stall_timeout = Duration::from_secs(11);
        assert!(Settings::from_args(&backoff).is_ok());
    }

    #[test]
    fn a_lease_shorter_than_the_timeout_is_refused() {
        let mut args = args();
        args.worker.lease_duration = Duration::from_secs(10);
        let err = Settings::from_args(&args).unwrap_err();
        assert!(matches!(err, Error::LeaseTooShort { .. }), "{err}");
    }

    #[test]
    fn out_of_range_protection_settings_are_refused_not_clamped() {
        let mut zero = args();
        zero.worker.max_in_flight_per_endpoint = 0;
        let err = Settings::from_args(&zero).unwrap_err();
        assert_eq!(err.to_string(), "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT must be at least 1");
        let mut ratio = args();
        ratio.worker.breaker_failure_ratio = 1.5;
        let err = Settings::from_args(&ratio).unwrap_err();
        assert_eq!(err.to_string(), "WEBHOOK_BREAKER_FAILURE_RATIO must be in (0, 1], got 1.5");
        let mut order = args();
        order.worker.breaker_max_cooldown = Duration::from_secs(1);
        assert!(matches!(Settings::from_args(&order).unwrap_err(), Error::CooldownOrder { .. }));
    }
}
