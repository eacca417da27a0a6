//! The peers phase (issue 14, "Peers in the same run"): webhook-delivery with one worker,
//! graphile-worker and pg-boss (driven by `bench/peers/`) each drain the same number of
//! deliveries, in interleaved rounds, so machine drift hits every system alike.
//!
//! Everyone gets the same conditions: a fresh database on the run's cluster per system and round,
//! the same ~256-byte events, and one receiver — the bench's own [`Sink`], over plain HTTP
//! keep-alive for everyone (ours included, whatever `--plain-http` says), verifying every
//! Standard Webhooks signature against one `whsec_` secret that all three sign with. Time and CPU
//! cover the work only: from the worker's (driver's) start until every completion is committed;
//! the enqueue through each system's own path comes before and is not counted.

mod driver;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::PgPool;
use tokio::time::Instant;
use webhook_worker::admin::endpoints::{self, Changes};
use webhook_worker::policy::crypto::KeyRing;
use webhook_worker::policy::signing::SigningSecret;

use crate::bench::{Bench, ratio, wait_for_arrivals_at};
use crate::fleet::{Fleet, FleetConfig};
use crate::procstat;
use crate::results::{PeerRun, PeersRun};
use crate::rig::{Rig, fill_sql};
use crate::sink::Sink;
use driver::{Drivers, Job, Peer};

/// The receiver path (one endpoint) every system delivers to.
const PATH: &str = "/peers";
/// Our name in the results.
pub const OURS: &str = "webhook-delivery";

/// Installs the pinned peers, then runs the rounds.
///
/// # Errors
/// Node.js or npm missing, a driver or worker that fails, deliveries lost or badly signed.
pub async fn run(bench: &Bench, peers_dir: &Path) -> anyhow::Result<PeersRun> {
    driver::install(peers_dir).await?;
    // The earlier phases' rows (millions after the backlog) would keep autovacuum busy here.
    bench.rig.clear().await?;
    let secret = SigningSecret::generate();
    let sink = Sink::start(HashMap::from([(PATH.to_owned(), secret.clone())]), None).await?;
    let drivers = Drivers {
        dir: peers_dir.to_owned(),
        receiver: sink.url(PATH),
        secret: secret.expose_whsec().to_string(),
        log_dir: bench.fleet.log_dir.clone(),
    };
    let (deliveries, rounds) = (bench.sizes.peers_deliveries, bench.sizes.peers_rounds);
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let at = Round { bench, sink: &sink, secret: &secret, round, deliveries };
        let db = at.fresh_database("ours").await?;
        let run = at.ours(&db).await;
        db.remove(&bench.rig).await;
        runs.push(logged(run?));
        for peer in Peer::ALL {
            let db = at.fresh_database(peer.slug()).await?;
            let run = at.peer(&drivers, peer, &db).await;
            db.remove(&bench.rig).await;
            runs.push(logged(run?));
        }
    }
    Ok(PeersRun { rounds, deliveries, runs })
}

/// Prints a run's line as it ends.
fn logged(run: PeerRun) -> PeerRun {
    eprintln!(
        "  round {}, {}: {:.0} deliveries/s, Postgres {:.0} µs and worker {:.0} µs of CPU per delivery ({:.1} s)",
        run.round,
        run.system,
        run.per_second,
        run.postgres_cpu_us_per_delivery,
        run.worker_cpu_us_per_delivery,
        run.wall_seconds
    );
    run
}

/// What one round's runs share.
#[derive(Clone, Copy)]
struct Round<'a> {
    bench: &'a Bench,
    sink: &'a Sink,
    secret: &'a SigningSecret,
    round: usize,
    deliveries: u64,
}

/// CPU and clock readings at the start of a work phase.
struct Start {
    at: Instant,
    postgres: f64,
    receiver: f64,
}

impl Round<'_> {
    /// A database of its own for `slug` (a system) in this round, on the run's server.
    async fn fresh_database(&self, slug: &str) -> anyhow::Result<FreshDatabase> {
        let name = format!("webhook_bench_{}_r{}_{slug}", std::process::id(), self.round);
        FreshDatabase::create(&self.bench.rig, name).await
    }

    /// Ours: one worker, one endpoint at the receiver, the queue filled by one `INSERT … SELECT`.
    async fn ours(self, db: &FreshDatabase) -> anyhow::Result<PeerRun> {
        let (bench, n) = (self.bench, self.deliveries);
        webhook_worker::db::migrate(&db.pool).await.context("migrating the peers phase's database")?;
        let key_ring = KeyRing::parse(&bench.rig.key_ring_text)?;
        let changes = Changes { url: Some(self.sink.url(PATH)), ..Changes::default() };
        let endpoint = endpoints::create(&db.pool, &key_ring, &changes, self.secret).await?;
        let enqueue = Instant::now();
        sqlx::query(sqlx::AssertSqlSafe(fill_sql("")))
            .bind(vec![endpoint])
            .bind(0_i64)
            .bind(i64::try_from(n)?)
            .execute(&db.pool)
            .await
            .context("filling the queue")?;
        let enqueue_per_second = ratio(n as f64, enqueue.elapsed().as_secs_f64());
        sqlx::query("VACUUM ANALYZE webhook.deliveries").execute(&db.pool).await?;
        sqlx::query("VACUUM ANALYZE webhook.delivery_attempts").execute(&db.pool).await?;
        // One endpoint, as the peers deliver to one URL: its in-flight cap (32 by default, a
        // protection for receivers) is opened to the worker's concurrency.
        let env = [
            ("WEBHOOK_CONCURRENCY", bench.concurrency.to_string()),
            ("WEBHOOK_BATCH_SIZE", bench.batch_size.to_string()),
            ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", bench.concurrency.to_string()),
        ];
        let config = FleetConfig { database_url: db.url.clone(), ca_bundle: None, ..bench.fleet.clone() };
        let start = self.start().await;
        let mut fleet = Fleet::start(&config, 1, &env)?;
        wait_for_arrivals_at(self.sink, &mut fleet, n, Bench::limit_for(n), &config.log_dir).await?;
        wait_until_drained(&db.pool).await?;
        let worker_cpu = fleet.cpu_seconds();
        let mut run = self.finish(&start, OURS, worker_cpu)?;
        fleet.stop().await;
        run.version = env!("CARGO_PKG_VERSION").to_owned();
        run.config = format!(
            "1 worker, concurrency {}, batch {}, 1 endpoint with in-flight cap {}",
            bench.concurrency, bench.batch_size, bench.concurrency
        );
        run.enqueue_per_second = enqueue_per_second;
        Ok(run)
    }

    /// A peer: its driver's enqueue, then its work phase, measured.
    async fn peer(self, drivers: &Drivers, peer: Peer, db: &FreshDatabase) -> anyhow::Result<PeerRun> {
        let job = Job { peer, database_url: &db.url, count: self.deliveries, round: self.round };
        let enqueued = drivers.enqueue(job).await?;
        let start = self.start().await;
        let sink = self.sink;
        let abort = || {
            let invalid = sink.invalid_signatures();
            (invalid > 0).then(|| format!("the receiver rejected {invalid} signatures from {}", peer.system()))
        };
        let report = drivers.work(job, &abort).await?;
        let line = &report.line;
        if line["completed"].as_u64() != Some(self.deliveries) {
            bail!("{} reported {} of {} jobs completed: {line}", peer.system(), line["completed"], self.deliveries);
        }
        let mut run = self.finish(&start, peer.system(), report.cpu_seconds)?;
        run.wall_seconds = report.wall_seconds;
        run.version = line["version"].as_str().unwrap_or("unknown").to_owned();
        run.config = describe(&line["config"]);
        run.enqueue_per_second = enqueued["per_second"].as_f64().unwrap_or(0.0);
        Ok(run)
    }

    /// Just before a worker or driver starts: a checkpoint, so that no earlier run's or this
    /// enqueue's dirty pages are written during the measurement (skipped where the role may not
    /// checkpoint), then resets the receiver and reads the clocks.
    async fn start(&self) -> Start {
        let _ = sqlx::query("CHECKPOINT").execute(&self.bench.rig.pool).await;
        self.sink.reset(false);
        Start { at: Instant::now(), postgres: self.bench.postgres_cpu(), receiver: procstat::own_cpu_seconds() }
    }

    /// The figures of a work phase that started at `start` and just committed its last
    /// completion; fails unless every delivery arrived exactly once, validly signed.
    fn finish(&self, start: &Start, system: &str, worker_cpu: f64) -> anyhow::Result<PeerRun> {
        let postgres = self.bench.postgres_cpu() - start.postgres;
        let receiver = procstat::own_cpu_seconds() - start.receiver;
        let n = self.deliveries;
        let (arrived, duplicates, invalid) =
            (self.sink.count(), self.sink.duplicates(), self.sink.invalid_signatures());
        if arrived - duplicates != n || invalid > 0 {
            bail!(
                "{system}: {} distinct of {n} deliveries arrived ({duplicates} duplicates, {invalid} invalid signatures)",
                arrived - duplicates
            );
        }
        let seconds = self.sink.window_seconds();
        let per_delivery_us = |cpu: f64| ratio(cpu * 1e6, n as f64);
        Ok(PeerRun {
            round: self.round,
            system: system.to_owned(),
            deliveries: n,
            seconds,
            per_second: ratio((n - 1) as f64, seconds),
            wall_seconds: start.at.elapsed().as_secs_f64(),
            postgres_cpu_us_per_delivery: per_delivery_us(postgres),
            worker_cpu_us_per_delivery: per_delivery_us(worker_cpu),
            receiver_cpu_us_per_delivery: per_delivery_us(receiver),
            duplicates,
            invalid_signatures: invalid,
            ..PeerRun::default()
        })
    }
}

/// A driver's `config` object as `key value, …`, keys in alphabetical order.
fn describe(config: &serde_json::Value) -> String {
    config.as_object().map_or_else(String::new, |fields| {
        fields.iter().map(|(key, value)| format!("{} {value}", key.replace('_', " "))).collect::<Vec<_>>().join(", ")
    })
}

/// Waits until our queue in `pool` is empty: every completion committed.
async fn wait_until_drained(pool: &PgPool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook.deliveries").fetch_one(pool).await?;
        if queued == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{queued} deliveries still queued a minute after the last arrival");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A database of its own for one system and round, on the run's server.
struct FreshDatabase {
    name: String,
    url: String,
    pool: PgPool,
}

impl FreshDatabase {
    async fn create(rig: &Rig, name: String) -> anyhow::Result<Self> {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&rig.pool)
            .await
            .with_context(|| format!("creating the database {name}"))?;
        let mut url = url::Url::parse(&rig.url).context("parsing the run's database URL")?;
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&url).await?;
        Ok(Self { name, url, pool })
    }

    /// Closes the pool and drops the database (`FORCE` ends any connection a failed run left).
    async fn remove(self, rig: &Rig) {
        self.pool.close().await;
        let name = self.name;
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&rig.pool)
            .await;
        if let Err(err) = dropped {
            eprintln!("warning: could not drop the database {name}: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drivers_config_reads_as_words() {
        let config = serde_json::json!({"concurrency": 32, "local_queue": 64, "complete_job_batch_delay_ms": 10});
        // serde_json's objects keep their keys sorted.
        assert_eq!(describe(&config), "complete job batch delay ms 10, concurrency 32, local queue 64");
        assert_eq!(describe(&serde_json::Value::Null), "");
    }
}
