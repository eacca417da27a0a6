//! The shared context of a run: the database, the receiver, how to start workers, and the sizes
//! of the full and quick modes. Phases take a `&Bench` and return their results.

use std::time::Duration;

use anyhow::bail;

use crate::fleet::{Fleet, FleetConfig};
use crate::procstat;
use crate::rig::Rig;
use crate::sink::Sink;

/// How big each phase is.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub ceiling_rows: u64,
    pub ceiling_connections: Vec<usize>,
    pub throughput_rows: u64,
    pub worker_counts: Vec<usize>,
    pub latency_rates: Vec<f64>,
    pub latency_seconds: f64,
    pub memory_rows: u64,
    pub backlog_min_rows: u64,
    pub long_run_seconds: f64,
    pub naive_rows: u64,
    pub naive_connections: usize,
    /// Deliveries to the one hot endpoint, and over the skewed endpoints, of the skew phase.
    pub skew_hot_rows: u64,
    pub skew_rows: u64,
    pub skew_endpoints: usize,
    /// Messages the API phase's clients post back to back.
    pub api_ingest_messages: u64,
    /// Deliveries per system and round of the peers phase, and its interleaved rounds.
    pub peers_deliveries: u64,
    pub peers_rounds: usize,
}

impl Sizes {
    /// The published benchmark (about 25 minutes here).
    pub fn full() -> Self {
        Self {
            ceiling_rows: 200_000,
            ceiling_connections: vec![1, 2, 4, 8],
            throughput_rows: 200_000,
            worker_counts: vec![1, 2, 4],
            latency_rates: vec![1_000.0, 5_000.0],
            latency_seconds: 30.0,
            memory_rows: 40_000,
            backlog_min_rows: 5_000_000,
            long_run_seconds: 600.0,
            naive_rows: 20_000,
            naive_connections: 32,
            skew_hot_rows: 30_000,
            skew_rows: 60_000,
            skew_endpoints: 1_000,
            api_ingest_messages: 50_000,
            peers_deliveries: 50_000,
            peers_rounds: 3,
        }
    }

    /// The same code at small sizes (under two minutes): a smoke test, not a measurement.
    pub fn quick() -> Self {
        Self {
            ceiling_rows: 20_000,
            ceiling_connections: vec![4],
            throughput_rows: 20_000,
            worker_counts: vec![1, 2, 4],
            latency_rates: vec![1_000.0, 5_000.0],
            latency_seconds: 5.0,
            memory_rows: 5_000,
            backlog_min_rows: 100_000,
            long_run_seconds: 15.0,
            naive_rows: 2_000,
            naive_connections: 32,
            skew_hot_rows: 3_000,
            skew_rows: 5_000,
            skew_endpoints: 100,
            api_ingest_messages: 2_000,
            peers_deliveries: 2_000,
            peers_rounds: 1,
        }
    }
}

/// Everything a phase needs.
pub struct Bench {
    pub rig: Rig,
    pub sink: Sink,
    pub fleet: FleetConfig,
    pub sizes: Sizes,
    pub concurrency: usize,
    pub batch_size: usize,
}

impl Bench {
    /// Starts `n` workers with the run's concurrency and batch size plus `env`.
    ///
    /// # Errors
    /// When a worker cannot be started.
    pub fn start_workers(&self, n: usize, env: &[(&str, String)]) -> anyhow::Result<Fleet> {
        let mut all = vec![
            ("WEBHOOK_CONCURRENCY", self.concurrency.to_string()),
            ("WEBHOOK_BATCH_SIZE", self.batch_size.to_string()),
        ];
        all.extend(env.iter().cloned());
        Fleet::start(&self.fleet, n, &all)
    }

    /// Waits until the receiver has seen `n` requests, checking every second that no worker
    /// died; fails after `limit`.
    ///
    /// # Errors
    /// A dead worker, or `limit` passed.
    pub async fn wait_for_arrivals(&self, fleet: &mut Fleet, n: u64, limit: Duration) -> anyhow::Result<()> {
        wait_for_arrivals_at(&self.sink, fleet, n, limit, &self.fleet.log_dir).await
    }

    /// Waits until the queue is empty: every answered delivery's completion is committed.
    ///
    /// # Errors
    /// Rows still queued after a minute.
    pub async fn wait_until_drained(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let queued = self.rig.queued().await?;
            if queued == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{queued} deliveries still queued a minute after the last arrival");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Postgres CPU seconds so far.
    pub fn postgres_cpu(&self) -> f64 {
        procstat::postgres_cpu_seconds(self.rig.postmaster)
    }

    /// A generous time limit for `rows` deliveries.
    pub fn limit_for(rows: u64) -> Duration {
        Duration::from_secs(120 + rows / 200)
    }
}

/// [`Bench::wait_for_arrivals`] at another receiver (a phase's own); `log_dir` holds the
/// workers' logs.
///
/// # Errors
/// A dead worker, or `limit` passed.
pub async fn wait_for_arrivals_at(
    sink: &Sink,
    fleet: &mut Fleet,
    n: u64,
    limit: Duration,
    log_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !sink.wait_for(n, Duration::from_secs(1)).await {
        fleet.check_alive(log_dir)?;
        if tokio::time::Instant::now() > deadline {
            bail!("only {} of {n} deliveries arrived within {limit:?}", sink.count());
        }
    }
    Ok(())
}

/// The `q`-quantile (0..=1) of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_small_sample() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&values, 0.5) - 51.0).abs() < 1.0);
        assert!((quantile(&values, 0.99) - 99.0).abs() < 1.01);
        assert!((quantile(&values, 1.0) - 100.0).abs() < f64::EPSILON);
        assert!(quantile(&[], 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn ratio_of_nothing_is_zero() {
        assert!(ratio(1.0, 0.0).abs() < f64::EPSILON);
        assert!((ratio(1.0, 2.0) - 0.5).abs() < f64::EPSILON);
    }
}
