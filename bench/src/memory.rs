//! Worker memory with 1,000 deliveries in flight: the receiver holds every request for a
//! quarter of a second, so one worker with `WEBHOOK_CONCURRENCY=1000` keeps all its slots busy.

use std::time::Duration;

use crate::bench::Bench;
use crate::results::MemoryRun;

const CONCURRENCY: usize = 1_000;
const HOLD: Duration = Duration::from_millis(250);

/// Runs the phase.
///
/// # Errors
/// Database errors, a dead worker, or deliveries that never arrived.
pub async fn run(bench: &Bench) -> anyhow::Result<MemoryRun> {
    let rows = bench.sizes.memory_rows;
    bench.rig.clear().await?;
    bench.rig.fill(rows).await?;
    bench.sink.reset(false);
    bench.sink.set_delay(HOLD);
    // Enough per-endpoint slots that the endpoint cap is not what limits in-flight work.
    let env = [
        ("WEBHOOK_CONCURRENCY", CONCURRENCY.to_string()),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", CONCURRENCY.to_string()),
    ];
    let mut fleet = bench.start_workers(1, &env)?;
    let waited = bench.wait_for_arrivals(&mut fleet, rows, Bench::limit_for(rows)).await;
    bench.sink.set_delay(Duration::ZERO);
    waited?;
    bench.wait_until_drained().await?;
    let peak_rss_mib = fleet.peak_rss_mib().first().copied().unwrap_or(0.0);
    fleet.stop().await;
    let run = MemoryRun {
        concurrency: CONCURRENCY,
        peak_in_flight: bench.sink.peak_in_flight(),
        deliveries: rows,
        receiver_delay_ms: u64::try_from(HOLD.as_millis())?,
        peak_rss_mib,
    };
    eprintln!("  {} in flight at most: worker peak RSS {:.1} MiB", run.peak_in_flight, run.peak_rss_mib);
    Ok(run)
}
