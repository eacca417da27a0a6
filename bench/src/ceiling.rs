//! Phase 1, the database ceiling: the worker's own claim and completion statements
//! (`queue::claim_batch`, `queue::complete_batch`) in a tight loop on several connections, with
//! no HTTP at all. What this reaches is what Postgres allows on this machine; every end-to-end
//! figure is compared with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use webhook_worker::engine::completion::{Completion, Facts, Step};
use webhook_worker::engine::queue::{self, Claim, ClaimedDelivery, ScanPosition};
use webhook_worker::policy::states::DeliveryOutcome;

use crate::bench::{Bench, ratio};
use crate::results::{Ceiling, CeilingRun};

const LEASE: Duration = Duration::from_secs(60);
const MAX_PAYLOAD: usize = 1 << 20;

/// Runs the cycle once per configured connection count.
///
/// # Errors
/// Database errors.
pub async fn run(bench: &Bench) -> anyhow::Result<Ceiling> {
    let mut runs = Vec::new();
    for &connections in &bench.sizes.ceiling_connections {
        bench.rig.clear().await?;
        bench.rig.fill(bench.sizes.ceiling_rows).await?;
        let pg_start = bench.postgres_cpu();
        let started = tokio::time::Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let mut loops = tokio::task::JoinSet::new();
        for n in 0..connections {
            loops.spawn(cycle(
                bench.rig.pool.clone(),
                format!("bench-ceiling-{n}"),
                bench.batch_size,
                Arc::clone(&done),
            ));
        }
        while let Some(finished) = loops.join_next().await {
            finished??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let deliveries = done.load(Ordering::SeqCst);
        let pg = bench.postgres_cpu() - pg_start;
        let run = CeilingRun {
            connections,
            deliveries,
            seconds,
            per_second: ratio(deliveries as f64, seconds),
            postgres_cpu_us_per_delivery: ratio(pg * 1e6, deliveries as f64),
        };
        eprintln!(
            "  ceiling, {connections} connection(s): {:.0} deliveries/s, Postgres {:.1} µs/delivery",
            run.per_second, run.postgres_cpu_us_per_delivery
        );
        runs.push(run);
    }
    let per_second = runs.iter().map(|r| r.per_second).fold(0.0, f64::max);
    Ok(Ceiling { runs, per_second })
}

/// Claims a batch, completes it as delivered, until the queue is empty. Scans the ready index
/// from a [`ScanPosition`] as the worker's dispatcher does.
async fn cycle(pool: sqlx::PgPool, worker_id: String, batch: usize, done: Arc<AtomicU64>) -> anyhow::Result<()> {
    let claim = Claim { worker_id: &worker_id, limit: batch, lease: LEASE, max_payload_bytes: MAX_PAYLOAD };
    let mut position = ScanPosition::default();
    loop {
        let now = tokio::time::Instant::now();
        let claimed = queue::claim_resuming(&pool, &claim, None, &mut position, now).await?.deliveries;
        if claimed.is_empty() {
            return Ok(());
        }
        let completions: Vec<Completion> = claimed.iter().map(delivered).collect();
        let applied = queue::complete_batch(&pool, &worker_id, &completions).await?.applied;
        done.fetch_add(u64::try_from(applied)?, Ordering::SeqCst);
    }
}

/// The completion a worker writes for a 200 answered in a millisecond.
pub fn delivered(delivery: &ClaimedDelivery) -> Completion {
    let facts =
        Facts { elapsed: Duration::from_millis(1), status_code: Some(200), ..Facts::none(DeliveryOutcome::Delivered) };
    Completion::new(delivery, Step::Delivered, facts)
}
