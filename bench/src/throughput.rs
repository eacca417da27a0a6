//! Phase 2, end-to-end throughput: a pre-filled queue drained by 1, 2 and 4 worker processes to
//! the local receiver, with the CPU and memory each part used.

use crate::bench::{Bench, ratio};
use crate::procstat;
use crate::results::ThroughputRun;

/// Runs one drain per configured worker count; `ceiling` is phase 1's figure.
///
/// # Errors
/// Database errors, a worker that died, or deliveries that never arrived.
pub async fn run(bench: &Bench, ceiling: f64) -> anyhow::Result<Vec<ThroughputRun>> {
    let mut runs = Vec::new();
    for &workers in &bench.sizes.worker_counts {
        let rows = bench.sizes.throughput_rows;
        bench.rig.clear().await?;
        bench.rig.fill(rows).await?;
        bench.sink.reset(false);
        bench.rig.reset_statement_stats().await;
        let wal_start = bench.rig.counters().await;
        let (pg_start, own_start) = (bench.postgres_cpu(), procstat::own_cpu_seconds());
        let mut fleet = bench.start_workers(workers, &[])?;
        bench.wait_for_arrivals(&mut fleet, rows, Bench::limit_for(rows)).await?;
        bench.wait_until_drained().await?;
        let worker_cpu = fleet.cpu_seconds();
        let rss = fleet.peak_rss_mib();
        let (pg, own) = (bench.postgres_cpu() - pg_start, procstat::own_cpu_seconds() - own_start);
        let statements = bench.rig.statement_stats(6).await;
        let wal = bench.rig.counters().await.zip(wal_start).map(|(end, start)| (end - start).wal_bytes);
        let statement_ms = bench.rig.statement_ms().await;
        fleet.stop().await;
        let seconds = bench.sink.window_seconds();
        let per_second = ratio((rows - 1) as f64, seconds);
        let per_delivery_us = |cpu: f64| ratio(cpu * 1e6, rows as f64);
        let run = ThroughputRun {
            workers,
            deliveries: rows,
            seconds,
            per_second,
            ratio_to_ceiling: ratio(per_second, ceiling),
            worker_cpu_us_per_delivery: per_delivery_us(worker_cpu),
            worker_peak_rss_mib: rss,
            postgres_cpu_seconds: pg,
            postgres_cpu_us_per_delivery: per_delivery_us(pg),
            receiver_cpu_us_per_delivery: per_delivery_us(own),
            duplicates: bench.sink.duplicates(),
            invalid_signatures: bench.sink.invalid_signatures(),
            statements,
            wal_bytes_per_delivery: wal.map(|bytes| ratio(bytes, rows as f64)),
            statement_us_per_delivery: statement_ms.map(|ms| ratio(ms * 1e3, rows as f64)),
        };
        eprintln!(
            "  {workers} worker(s): {per_second:.0} deliveries/s ({:.0} % of the ceiling), worker {:.1} µs/delivery, \
             Postgres {:.1} µs/delivery (statements {:.1}), WAL {:.0} B/delivery, peak RSS {:?} MiB",
            100.0 * run.ratio_to_ceiling,
            run.worker_cpu_us_per_delivery,
            run.postgres_cpu_us_per_delivery,
            run.statement_us_per_delivery.unwrap_or(f64::NAN),
            run.wal_bytes_per_delivery.unwrap_or(f64::NAN),
            run.worker_peak_rss_mib.iter().map(|m| m.round()).collect::<Vec<_>>()
        );
        for statement in &run.statements {
            eprintln!("    {statement}");
        }
        runs.push(run);
    }
    Ok(runs)
}
