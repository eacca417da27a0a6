//! Phase 7, the management API: one `webhook-worker api` process (the shipped binary, as an
//! operator runs it) takes messages for one application with one endpoint.
//! - **Ingest**: clients post messages as fast as the API accepts them, no worker running;
//!   accepted messages per second, and the API's and Postgres's CPU per message.
//! - **Offered load**: messages at a fixed rate (open loop: a request is sent on time whether or
//!   not earlier ones were answered) while one worker delivers them; the request latency, and API
//!   → delivered (request sent → arrival at the receiver, both on this machine's clock).
//!
//! The clients run in this process, on the same two cores as the API, Postgres and the worker.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use secrecy::ExposeSecret as _;
use tokio::time::{Instant, MissedTickBehavior};
use webhook_worker::admin::applications::{self, Settings};
use webhook_worker::admin::endpoints::{self, Changes};
use webhook_worker::admin::ids::Scope;
use webhook_worker::admin::tokens;
use webhook_worker::policy::crypto::KeyRing;
use webhook_worker::policy::signing::SigningSecret;

use crate::bench::{Bench, quantile, ratio};
use crate::procstat;
use crate::results::{ApiIngest, ApiOffered, ApiRun};

/// Concurrent clients of the ingest run.
const INGEST_CLIENTS: usize = 64;
/// The API's database connections (the pool the clients' requests share).
const API_POOL: usize = 32;
/// The offered load's rate and tick.
const OFFERED_PER_SECOND: f64 = 1_000.0;
const TICK: Duration = Duration::from_millis(5);
/// The receiver path of the phase's endpoint.
const PATH: &str = "/api-bench";

/// Runs ingest, then the offered load.
///
/// # Errors
/// Database errors, an API that does not start or refuses messages, deliveries that never arrive.
pub async fn run(bench: &Bench) -> anyhow::Result<ApiRun> {
    bench.rig.clear().await?;
    let app = setup(bench).await?;
    let created = tokens::create(&bench.rig.pool, "bench", None).await?;
    let token = created.token.expose_secret().to_owned();
    let api = ApiProcess::start(bench)?;
    let client = Client::new(&api.url, &app, &token)?;
    api.wait_until_listening(&client).await?;
    let ingest = ingest(bench, &api, &client, bench.sizes.api_ingest_messages).await?;
    eprintln!(
        "  ingest: {:.0} messages/s accepted by {INGEST_CLIENTS} clients (p50 {:.1} ms, p99 {:.1} ms); \
         API {:.0} µs, Postgres {:.0} µs of CPU per message",
        ingest.per_second,
        ingest.p50_ms,
        ingest.p99_ms,
        ingest.api_cpu_us_per_message,
        ingest.postgres_cpu_us_per_message
    );
    bench.rig.clear().await?;
    let offered = offered(bench, &client, bench.sizes.latency_seconds).await?;
    eprintln!(
        "  {OFFERED_PER_SECOND:.0}/s offered ({:.0}/s achieved): request p50 {:.1} ms, p99 {:.1} ms; \
         API → delivered p50 {:.1} ms, p99 {:.1} ms",
        offered.achieved_per_second, offered.p50_ms, offered.p99_ms, offered.delivered_p50_ms, offered.delivered_p99_ms
    );
    api.stop().await;
    Ok(ApiRun { clients: INGEST_CLIENTS, pool_size: API_POOL, ingest, offered })
}

/// An application with one endpoint at the receiver; returns the application's id.
async fn setup(bench: &Bench) -> anyhow::Result<String> {
    let pool = &bench.rig.pool;
    let settings = Settings { name: "API bench".to_owned(), uid: Some("api-bench".to_owned()), ..Settings::default() };
    let (app, _) =
        applications::create(pool, Scope::All, &settings, true).await.context("creating the bench application")?;
    let secret = SigningSecret::generate();
    bench.sink.add_secrets([(PATH.to_owned(), secret.clone())]);
    let changes = Changes { url: Some(bench.sink.url(PATH)), application: Some(app.id), ..Changes::default() };
    endpoints::create(pool, &KeyRing::parse(&bench.rig.key_ring_text)?, &changes, &secret).await?;
    Ok(webhook_worker::admin::ids::app_id(app.id))
}

/// As many clients as [`INGEST_CLIENTS`] post `total` messages between them, back to back.
async fn ingest(bench: &Bench, api: &ApiProcess, client: &Client, total: u64) -> anyhow::Result<ApiIngest> {
    let next = Arc::new(AtomicU64::new(0));
    let (api_cpu, pg_cpu) = (api.cpu_seconds(), bench.postgres_cpu());
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..INGEST_CLIENTS {
        let (client, next) = (client.clone(), Arc::clone(&next));
        clients.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let sent = Instant::now();
                client.send(n).await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = clients.join_next().await {
        latencies.extend(done??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let (api_cpu, pg_cpu) = (api.cpu_seconds() - api_cpu, bench.postgres_cpu() - pg_cpu);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook.deliveries").fetch_one(&bench.rig.pool).await?;
    if u64::try_from(stored)? != total {
        bail!("{total} messages were accepted but {stored} deliveries are queued");
    }
    latencies.sort_by(f64::total_cmp);
    let per_message = |cpu: f64| ratio(cpu * 1e6, total as f64);
    Ok(ApiIngest {
        messages: total,
        seconds,
        per_second: ratio(total as f64, seconds),
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        api_cpu_us_per_message: per_message(api_cpu),
        postgres_cpu_us_per_message: per_message(pg_cpu),
    })
}

/// Messages at [`OFFERED_PER_SECOND`] for `seconds` while one worker delivers them.
async fn offered(bench: &Bench, client: &Client, seconds: f64) -> anyhow::Result<ApiOffered> {
    let mut fleet = bench.start_workers(1, &[])?;
    // One message first, so the worker is up and its connection to the receiver is open.
    bench.sink.reset(false);
    client.send(0).await?;
    bench.wait_for_arrivals(&mut fleet, 1, Duration::from_secs(60)).await?;
    bench.sink.reset(true);
    let ticks = (seconds / TICK.as_secs_f64()).round() as u64;
    let per_tick = OFFERED_PER_SECOND * TICK.as_secs_f64();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut requests = tokio::task::JoinSet::new();
    let (mut owed, mut sent) = (0.0, 0u64);
    let started = Instant::now();
    for _ in 0..ticks {
        interval.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            sent += 1;
            let (client, n) = (client.clone(), sent);
            requests.spawn(async move {
                let (at_us, started) = (unix_micros(), Instant::now());
                let id = client.send(n).await?;
                anyhow::Ok((id, at_us, started.elapsed().as_secs_f64() * 1000.0))
            });
        }
    }
    let offered_seconds = started.elapsed().as_secs_f64();
    let mut sent_at = std::collections::HashMap::new();
    let mut latencies = Vec::new();
    while let Some(done) = requests.join_next().await {
        let (id, at_us, ms) = done??;
        sent_at.insert(id, at_us);
        latencies.push(ms);
    }
    bench.wait_for_arrivals(&mut fleet, sent, Duration::from_secs(120)).await?;
    fleet.stop().await;
    let mut delivered: Vec<f64> = bench
        .sink
        .take_arrivals()
        .iter()
        .filter_map(|(id, arrived)| sent_at.get(id).map(|at| (arrived - at) as f64 / 1000.0))
        .collect();
    if delivered.len() as u64 != sent {
        bail!("{} of {sent} messages sent through the API were matched at the receiver", delivered.len());
    }
    latencies.sort_by(f64::total_cmp);
    delivered.sort_by(f64::total_cmp);
    Ok(ApiOffered {
        offered_per_second: OFFERED_PER_SECOND,
        achieved_per_second: ratio(sent as f64, offered_seconds),
        messages: sent,
        seconds: offered_seconds,
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        delivered_p50_ms: quantile(&delivered, 0.50),
        delivered_p99_ms: quantile(&delivered, 0.99),
    })
}

fn unix_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A keep-alive HTTP client posting messages to one application.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: Arc<str>,
    token: Arc<str>,
}

impl Client {
    fn new(base: &str, app: &str, token: &str) -> anyhow::Result<Self> {
        webhook_worker::tls::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(256).build()?;
        Ok(Self { http, url: format!("{base}/api/v1/app/{app}/msg").into(), token: token.into() })
    }

    /// Posts message `n` (a payload of the run's size); returns its id.
    async fn send(&self, n: u64) -> anyhow::Result<String> {
        let body = crate::rig::payload(n);
        let response = self
            .http
            .post(&*self.url)
            .bearer_auth(&*self.token)
            .header("content-type", "application/json")
            .body(format!(r#"{{"eventType":"invoice.paid","payload":{body}}}"#))
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if status != reqwest::StatusCode::ACCEPTED {
            bail!("the API answered {status} to a message: {text}");
        }
        let out: serde_json::Value = serde_json::from_str(&text)?;
        out["id"].as_str().map(str::to_owned).context("the API's answer has no message id")
    }
}

/// The `webhook-worker api` process. Killed when dropped (a failed or interrupted phase).
struct ApiProcess {
    child: Child,
    url: String,
    cpu_at_start: f64,
}

impl ApiProcess {
    fn start(bench: &Bench) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(bench.fleet.log_dir.join("api.log"))?;
        let child = Command::new(&bench.fleet.binary)
            .arg("api")
            .env("DATABASE_URL", &bench.fleet.database_url)
            .env("WEBHOOK_ENCRYPTION_KEYS", &bench.fleet.key_ring)
            .env("WEBHOOK_API_ADDR", format!("127.0.0.1:{port}"))
            .env("WEBHOOK_METRICS_ADDR", "127.0.0.1:0")
            .env("WEBHOOK_DB_POOL_SIZE", API_POOL.to_string())
            // The clients share one token: its request rate is what is measured.
            .env("WEBHOOK_API_RATE_LIMIT", "0")
            .env("WEBHOOK_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8,::1/128")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} api", bench.fleet.binary.display()))?;
        let cpu_at_start = procstat::cpu_seconds(child.id());
        Ok(Self { child, url: format!("http://127.0.0.1:{port}"), cpu_at_start })
    }

    /// Polls the health route (bounded), failing if the process exits.
    async fn wait_until_listening(&self, client: &Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if client.http.get(format!("{}/api/v1/health", self.url)).send().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the API did not answer on {} within 30 s", self.url)
    }

    fn cpu_seconds(&self) -> f64 {
        procstat::cpu_seconds(self.child.id()) - self.cpu_at_start
    }

    async fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
