//! Phase 6, skew: what the per-endpoint in-flight cap costs a healthy endpoint. Real traffic is
//! skewed (a few customers send most events), so two comparisons, each in the same run:
//!
//! - one fast endpoint receives every delivery, drained with the default cap and with the cap at
//!   512 (effectively off);
//! - a Zipf-like distribution over many endpoints, the hottest taking about 30 %, against the same
//!   number of deliveries spread evenly over them.
//!
//! Each drain starts one worker process on a pre-filled queue (rows shuffled as producers would
//! interleave them, with a fixed seed) and measures first to last arrival, like phase 2.

use std::time::Duration;

use anyhow::Context as _;
use uuid::Uuid;
use webhook_worker::config::RunArgs;
use webhook_worker::policy::signing::SigningSecret;

use crate::bench::{Bench, ratio};
use crate::results::{Drain, SkewRun};

/// The hottest endpoint's share of the skewed traffic.
pub const HOTTEST_SHARE: f64 = 0.30;
/// The in-flight cap that is effectively no cap for one worker.
const OPEN_CAP: u32 = 512;
const WORKERS: usize = 1;

/// Runs the four drains.
///
/// # Errors
/// Database errors, a worker that died, or deliveries that never arrived.
pub async fn run(bench: &Bench) -> anyhow::Result<SkewRun> {
    let sizes = &bench.sizes;
    let secrets: Vec<(String, SigningSecret)> =
        (0..sizes.skew_endpoints).map(|i| (format!("/skew{i}"), SigningSecret::generate())).collect();
    bench.sink.add_secrets(secrets.iter().cloned());
    let endpoints = bench.rig.create_endpoints(&secrets, |path| bench.sink.url(path)).await?;
    let default_cap = RunArgs::defaults().worker.max_in_flight_per_endpoint;

    let hot = vec![endpoints[0]; usize::try_from(sizes.skew_hot_rows)?];
    let hot_default = drain(bench, "one endpoint, default cap", &hot, default_cap).await?;
    let hot_open = drain(bench, "one endpoint, cap 512", &hot, OPEN_CAP).await?;

    let rows = usize::try_from(sizes.skew_rows)?;
    let exponent = zipf_exponent(endpoints.len(), HOTTEST_SHARE);
    let counts = zipf_counts(endpoints.len(), rows, exponent);
    let mut skewed: Vec<Uuid> =
        counts.iter().zip(&endpoints).flat_map(|(n, id)| std::iter::repeat_n(*id, *n)).collect();
    shuffle(&mut skewed, 17);
    let even: Vec<Uuid> = (0..rows).map(|i| endpoints[i % endpoints.len()]).collect();
    let zipf = drain(bench, "Zipf-like, default cap", &skewed, default_cap).await?;
    let even = drain(bench, "even, default cap", &even, default_cap).await?;
    bench.rig.clear().await?;
    Ok(SkewRun {
        workers: WORKERS,
        hot_ratio: ratio(hot_default.per_second, hot_open.per_second),
        hot_default,
        hot_open,
        endpoints: endpoints.len(),
        hottest_share: ratio(counts[0] as f64, rows as f64),
        zipf_exponent: exponent,
        zipf_ratio: ratio(zipf.per_second, even.per_second),
        zipf,
        even,
    })
}

/// Drains one delivery per entry of `rows` (for that endpoint) with one worker whose in-flight
/// cap is `cap`.
async fn drain(bench: &Bench, label: &str, rows: &[Uuid], cap: u32) -> anyhow::Result<Drain> {
    let n = rows.len() as u64;
    bench.rig.clear().await?;
    bench.rig.fill_for(rows).await?;
    bench.sink.reset(false);
    bench.rig.reset_statement_stats().await;
    let port = free_port()?;
    let env = [
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", cap.to_string()),
        ("WEBHOOK_METRICS_ADDR", format!("127.0.0.1:{port}")),
    ];
    let mut fleet = bench.start_workers(WORKERS, &env)?;
    bench.wait_for_arrivals(&mut fleet, n, Bench::limit_for(n)).await?;
    bench.wait_until_drained().await?;
    let deferred = deferred_by_protection(port).await.unwrap_or_else(|err| {
        eprintln!("  (could not read the worker's metrics: {err:#})");
        0
    });
    let statements = bench.rig.statement_stats(3).await;
    fleet.stop().await;
    let seconds = bench.sink.window_seconds();
    let run = Drain {
        cap,
        deliveries: n,
        seconds,
        per_second: ratio(n.saturating_sub(1) as f64, seconds),
        peak_in_flight: bench.sink.peak_in_flight(),
        deferred,
    };
    eprintln!(
        "  {label}: {} deliveries in {:.1} s, {:.0} deliveries/s, at most {} in flight, {} deferred by protection",
        run.deliveries, run.seconds, run.per_second, run.peak_in_flight, run.deferred
    );
    for statement in &statements {
        eprintln!("    {statement}");
    }
    Ok(run)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The sum of `webhook_protection_deferred_total` over its reasons, scraped from a worker.
async fn deferred_by_protection(port: u16) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let scrape = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nhost: bench\r\n\r\n").await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), scrape).await.context("scraping /metrics")??;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("webhook_protection_deferred_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// The exponent `s` of weights `k^-s` (k = 1..=`n`) that gives the first `share` of the total.
pub fn zipf_exponent(n: usize, share: f64) -> f64 {
    let first_share = |s: f64| 1.0 / (1..=n).map(|k| (k as f64).powf(-s)).sum::<f64>();
    // The first share grows with s: bisect.
    let (mut low, mut high) = (0.0_f64, 10.0_f64);
    for _ in 0..60 {
        let mid = f64::midpoint(low, high);
        if first_share(mid) < share {
            low = mid;
        } else {
            high = mid;
        }
    }
    f64::midpoint(low, high)
}

/// `rows` split over `n` endpoints in proportion to `k^-exponent`, largest remainders rounded up,
/// so the counts sum to `rows`.
pub fn zipf_counts(n: usize, rows: usize, exponent: f64) -> Vec<usize> {
    let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-exponent)).collect();
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| w / total * rows as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| (exact[*b] - exact[*b].floor()).total_cmp(&(exact[*a] - exact[*a].floor())));
    let missing = rows - counts.iter().sum::<usize>();
    for i in order.into_iter().take(missing) {
        counts[i] += 1;
    }
    counts
}

/// Fisher–Yates with a fixed-seed xorshift: the same interleaving on every run.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed.max(1);
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = usize::try_from(state % (i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hottest_of_a_thousand_endpoints_takes_thirty_percent() {
        let s = zipf_exponent(1000, HOTTEST_SHARE);
        let counts = zipf_counts(1000, 60_000, s);
        assert_eq!(counts.iter().sum::<usize>(), 60_000);
        assert!((counts[0] as f64 / 60_000.0 - 0.30).abs() < 0.001, "{}", counts[0]);
        assert!(counts.windows(2).all(|w| w[0] >= w[1]), "hottest first");
        assert!(counts[999] >= 1, "every endpoint gets traffic: {}", counts[999]);
    }

    #[test]
    fn a_shuffle_keeps_every_item() {
        let mut items: Vec<u32> = (0..1000).collect();
        shuffle(&mut items, 17);
        assert_ne!(items, (0..1000).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..1000).collect::<Vec<_>>());
    }
}
