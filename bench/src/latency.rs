//! Phase 3, latency at offered load: a producer inserts at a fixed rate (a few rows every 5 ms,
//! each statement its own transaction, like application services enqueueing alongside their own
//! changes) while one worker delivers. Latency is the receiver's arrival time minus the row's
//! `created_at`, both from this machine's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::bail;
use tokio::time::MissedTickBehavior;

use crate::bench::{Bench, quantile, ratio};
use crate::results::LatencyRun;

const TICK: Duration = Duration::from_millis(5);
const WORKERS: usize = 1;
const CDF_POINTS: usize = 200;

/// Runs one offered load after another.
///
/// # Errors
/// Database errors, a dead worker, or deliveries that never arrived.
pub async fn run(bench: &Bench) -> anyhow::Result<Vec<LatencyRun>> {
    let mut runs = Vec::new();
    for &rate in &bench.sizes.latency_rates {
        bench.rig.clear().await?;
        bench.sink.reset(false);
        let mut fleet = bench.start_workers(WORKERS, &[])?;
        // One delivery first, so the worker is up and its connections are open.
        let created = Arc::new(Mutex::new(HashMap::new()));
        produce(bench, 1, 0, &created).await?;
        bench.wait_for_arrivals(&mut fleet, 1, Duration::from_secs(60)).await?;
        bench.sink.reset(true);
        created.lock().unwrap_or_else(PoisonError::into_inner).clear();

        let (produced, seconds) = offer(bench, rate, &created).await?;
        bench.wait_for_arrivals(&mut fleet, produced, Duration::from_secs(120)).await?;
        fleet.stop().await;
        let run = summarise(rate, produced, seconds, &created, bench.sink.take_arrivals())?;
        eprintln!(
            "  {rate:.0}/s offered ({:.0}/s achieved): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            run.achieved_per_second, run.p50_ms, run.p95_ms, run.p99_ms, run.max_ms
        );
        runs.push(run);
    }
    Ok(runs)
}

/// Inserts at `rate` rows/s for the configured time; returns the rows inserted and the seconds.
async fn offer(bench: &Bench, rate: f64, created: &Arc<Mutex<HashMap<String, i64>>>) -> anyhow::Result<(u64, f64)> {
    let per_tick = rate * TICK.as_secs_f64();
    let ticks = (bench.sizes.latency_seconds / TICK.as_secs_f64()).round() as u64;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut inserts = tokio::task::JoinSet::new();
    let (mut owed, mut produced, mut offset) = (0.0, 0u64, 0u64);
    let started = tokio::time::Instant::now();
    for _ in 0..ticks {
        interval.tick().await;
        owed += per_tick;
        let rows = owed.floor() as u64;
        owed -= rows as f64;
        if rows == 0 {
            continue;
        }
        let (pool, endpoints, created) = (bench.rig.pool.clone(), bench.rig.endpoints.clone(), Arc::clone(created));
        inserts.spawn(async move { insert(&pool, &endpoints, rows, offset, &created).await });
        produced += rows;
        offset += rows;
        while let Some(done) = inserts.try_join_next() {
            done??;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    while let Some(done) = inserts.join_next().await {
        done??;
    }
    Ok((produced, seconds))
}

async fn produce(
    bench: &Bench,
    rows: u64,
    offset: u64,
    created: &Arc<Mutex<HashMap<String, i64>>>,
) -> anyhow::Result<()> {
    insert(&bench.rig.pool, &bench.rig.endpoints, rows, offset, created).await
}

/// One producer transaction of `rows` deliveries; remembers each row's `created_at`.
async fn insert(
    pool: &sqlx::PgPool,
    endpoints: &[uuid::Uuid],
    rows: u64,
    offset: u64,
    created: &Mutex<HashMap<String, i64>>,
) -> anyhow::Result<()> {
    let sql = crate::rig::fill_sql("RETURNING message_id, (extract(epoch FROM created_at) * 1000000)::bigint");
    let inserted: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(endpoints)
        .bind(i64::try_from(offset)?)
        .bind(i64::try_from(rows)?)
        .fetch_all(pool)
        .await?;
    created.lock().unwrap_or_else(PoisonError::into_inner).extend(inserted);
    Ok(())
}

fn summarise(
    rate: f64,
    produced: u64,
    seconds: f64,
    created: &Mutex<HashMap<String, i64>>,
    arrivals: Vec<(String, i64)>,
) -> anyhow::Result<LatencyRun> {
    let created = created.lock().unwrap_or_else(PoisonError::into_inner);
    let mut latencies: Vec<f64> =
        arrivals.iter().filter_map(|(id, arrived)| created.get(id).map(|at| (arrived - at) as f64 / 1000.0)).collect();
    if latencies.len() as u64 != produced {
        bail!("{} of {produced} produced deliveries were matched at the receiver", latencies.len());
    }
    latencies.sort_by(f64::total_cmp);
    let cdf = (1..=CDF_POINTS)
        .map(|i| {
            let q = i as f64 / CDF_POINTS as f64;
            (quantile(&latencies, q), q)
        })
        .collect();
    Ok(LatencyRun {
        offered_per_second: rate,
        achieved_per_second: ratio(produced as f64, seconds),
        seconds,
        deliveries: produced,
        workers: WORKERS,
        p50_ms: quantile(&latencies, 0.50),
        p95_ms: quantile(&latencies, 0.95),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        cdf,
    })
}
