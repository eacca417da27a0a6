//! Phase 4, a large backlog and a long run: the queue is filled with at least 5,000,000 rows
//! (more if the workers could drain that before the long run ends), then drained for the long
//! run's duration while the attempt history grows. Throughput is sampled every second.

use std::time::Duration;

use crate::bench::{Bench, quantile, ratio};
use crate::results::{BacklogRun, ThroughputRun};

const WARM_UP: f64 = 5.0;

/// Runs the phase with the worker count that was fastest in phase 2.
///
/// # Errors
/// Database errors or a dead worker.
pub async fn run(bench: &Bench, small: &[ThroughputRun]) -> anyhow::Result<BacklogRun> {
    let best = small.iter().max_by(|a, b| a.per_second.total_cmp(&b.per_second));
    let (workers, small_rate) = best.map_or((1, 0.0), |b| (b.workers, b.per_second));
    let seconds = bench.sizes.long_run_seconds;
    let rows = bench.sizes.backlog_min_rows.max((small_rate * seconds * 1.1) as u64);
    bench.rig.clear().await?;
    eprintln!("  filling {rows} rows…");
    bench.rig.fill(rows).await?;
    bench.sink.reset(false);
    let mut fleet = bench.start_workers(workers, &[])?;
    bench.wait_for_arrivals(&mut fleet, 1, Duration::from_secs(60)).await?;
    // Seconds since the first arrival, and the count then.
    let started = tokio::time::Instant::now();
    let counters_at_start = bench.rig.counters().await.unwrap_or_default();
    let mut last = counters_at_start;
    let mut samples = vec![(0.0, bench.sink.count())];
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    while started.elapsed().as_secs_f64() < seconds && bench.sink.count() < rows {
        ticker.tick().await;
        fleet.check_alive(&bench.fleet.log_dir)?;
        samples.push((started.elapsed().as_secs_f64(), bench.sink.count()));
        let (t, n) = samples[samples.len() - 1];
        if samples.len() % 60 == 0 {
            let now = bench.rig.counters().await.unwrap_or_default();
            let minute = now - last;
            last = now;
            let delivered = (n - samples[samples.len().saturating_sub(61)].1).max(1) as f64;
            eprintln!(
                "  {:.0} s: {n} delivered, {:.0}/s over the last minute; WAL {:.0} B and {:.2} full pages per delivery, \
                 {} checkpoints, {} queue autovacuums, {} backend writes",
                t,
                rate(&samples, t - 60.0, t),
                minute.wal_bytes / delivered,
                minute.full_page_images as f64 / delivered,
                minute.checkpoints,
                minute.autovacuums,
                minute.backend_writes
            );
        }
    }
    let server = bench.rig.counters().await.unwrap_or_default() - counters_at_start;
    fleet.stop().await;
    let (end, delivered) = samples[samples.len() - 1];
    let first_minute = rate(&samples, WARM_UP, (WARM_UP + 60.0).min(end));
    let bucket = if seconds >= 300.0 { 30.0 } else { 5.0 };
    let buckets: Vec<f64> = (0..(end / bucket).floor() as usize)
        .map(|i| rate(&samples, i as f64 * bucket, (i + 1) as f64 * bucket))
        .collect();
    let mut sorted = buckets.clone();
    sorted.sort_by(f64::total_cmp);
    let median = quantile(&sorted, 0.5);
    let step = (seconds / 60.0).max(1.0);
    let series = (1..=(end / step).floor() as usize)
        .map(|i| (i as f64 * step, rate(&samples, (i - 1) as f64 * step, i as f64 * step)))
        .collect();
    let run = BacklogRun {
        pending_at_start: rows,
        workers,
        seconds: end,
        deliveries: delivered,
        first_minute_per_second: first_minute,
        small_queue_per_second: small_rate,
        ratio_to_small_queue: ratio(first_minute, small_rate),
        bucket_min_ratio: ratio(sorted.first().copied().unwrap_or(0.0), median),
        bucket_max_ratio: ratio(sorted.last().copied().unwrap_or(0.0), median),
        series,
        history_rows_at_end: u64::try_from(bench.rig.history_rows().await?)?,
        wal_bytes_per_delivery: ratio(server.wal_bytes, delivered as f64),
        full_page_images_per_delivery: ratio(server.full_page_images as f64, delivered as f64),
        checkpoints: server.checkpoints,
        queue_autovacuums: server.autovacuums,
        backend_writes: server.backend_writes,
    };
    eprintln!(
        "  backlog of {rows}: {first_minute:.0}/s in the first minute ({:.0} % of the small queue); \
         {bucket:.0}-s buckets {:.2}–{:.2} × median over {end:.0} s; WAL {:.0} B and {:.2} full pages per delivery, \
         {} checkpoints, {} queue autovacuums, {} backend writes",
        100.0 * run.ratio_to_small_queue,
        run.bucket_min_ratio,
        run.bucket_max_ratio,
        run.wal_bytes_per_delivery,
        run.full_page_images_per_delivery,
        run.checkpoints,
        run.queue_autovacuums,
        run.backend_writes
    );
    Ok(run)
}

/// Deliveries per second between `from` and `to` seconds, from the nearest samples.
fn rate(samples: &[(f64, u64)], from: f64, to: f64) -> f64 {
    let at = |t: f64| samples.iter().rev().find(|(s, _)| *s <= t + 1e-9).copied().unwrap_or((0.0, 0));
    let ((t0, n0), (t1, n1)) = (at(from.max(0.0)), at(to));
    ratio(n1.saturating_sub(n0) as f64, t1 - t0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_between_samples() {
        let samples: Vec<(f64, u64)> = (0..=10).map(|s| (f64::from(s), u64::from(s as u32) * 100)).collect();
        assert!((rate(&samples, 0.0, 10.0) - 100.0).abs() < 1e-9);
        assert!((rate(&samples, 2.0, 4.0) - 100.0).abs() < 1e-9);
        assert!(rate(&samples, 5.0, 5.0).abs() < 1e-9);
    }
}
