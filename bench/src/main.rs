//! `webhook-bench`: measures webhook-delivery end to end on this machine against the ceiling of
//! the database it runs on, in one run, and writes the results (JSON, `BENCHMARKS.md`, SVG plots).
//!
//! # Layout
//! - [`rig`]: the database (throwaway durable cluster or a fresh database on a given server),
//!   endpoints, filling and emptying the queue; [`sink`]: the receiver; [`fleet`]: worker
//!   processes; [`procstat`]: CPU and memory from `/proc`; [`bench`]: the shared context.
//! - Phases: [`ceiling`], [`throughput`], [`latency`], [`memory`], [`naive`], [`backlog`],
//!   [`skew`], [`api`], [`peers`].
//! - Output: [`results`] (the JSON), [`targets`], [`report`] (Markdown), [`plot`] (SVG).

mod api;
mod backlog;
mod bench;
mod ceiling;
mod fleet;
mod latency;
mod memory;
mod naive;
mod peers;
mod pgstats;
mod plot;
mod procstat;
mod report;
mod results;
mod rig;
mod sink;
mod skew;
mod targets;
mod throughput;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use webhook_worker::policy::signing::SigningSecret;
use webhook_worker::testkit::receiver::{TestCa, server_config};

use crate::bench::{Bench, Sizes};
use crate::fleet::FleetConfig;
use crate::results::{ApiRun, BacklogRun, Ceiling, Machine, MemoryRun, NaiveRun, PeersRun, Results, Setup, SkewRun};
use crate::rig::Rig;
use crate::sink::Sink;

/// Benchmarks webhook-delivery on this machine: database ceiling, end-to-end throughput with 1,
/// 2 and 4 workers, latency at offered load, memory, a large backlog over a long run, a naive
/// baseline, the in-flight cap under skewed traffic, the management API, and the peers
/// (graphile-worker, pg-boss) in the same run. Starts everything it needs on loopback.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The same phases at small sizes, in under two minutes: a smoke test, not a measurement.
    /// Leaves out the peers phase unless `--only peers` asks for it.
    #[arg(long)]
    quick: bool,
    /// A server to benchmark on (a fresh database is created on it and dropped after); without
    /// it a throwaway cluster with durable settings is started from the local binaries.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where the JSON results and SVG plots go.
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
    /// The Markdown report to update (between its bench markers). Default: BENCHMARKS.md for a
    /// full run; a quick run updates none unless this is given.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The machine's name in file names (default: the host name).
    #[arg(long)]
    machine: Option<String>,
    /// Deliver over plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// The worker binary (default: `webhook-worker` beside this binary).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Deliveries in flight per worker.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Rows per claim.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Endpoints the deliveries are spread over.
    #[arg(long, default_value_t = 100)]
    endpoints: usize,
    /// Run only this phase, write no files, and print the results JSON on stdout (for profiling
    /// one phase, e.g. with `perf`, or keeping one phase's figures).
    #[arg(long, value_enum)]
    only: Option<Phase>,
    /// A setting of the throwaway cluster, `NAME=VALUE`, beside (or instead of) the bench's own;
    /// repeatable. For trying an operator's settings, e.g. `--pg-setting wal_compression=lz4`.
    #[arg(long = "pg-setting", value_name = "NAME=VALUE", value_parser = parse_setting)]
    pg_settings: Vec<(String, String)>,
    /// The peers' drivers (`bench/peers`: install.sh, graphile.mjs, pgboss.mjs).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/peers"))]
    peers_dir: PathBuf,
}

/// The phases, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Ceiling,
    Throughput,
    Latency,
    Memory,
    Naive,
    Backlog,
    Skew,
    Api,
    /// graphile-worker and pg-boss beside ours (needs Node.js >= 20 and npm).
    Peers,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let sizes = if args.quick { Sizes::quick() } else { Sizes::full() };
    let work_dir = std::env::temp_dir().join(format!("webhook-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    eprintln!("Starting PostgreSQL…");
    let mut rig = Rig::start(args.database_url.as_deref(), &args.pg_settings).await?;
    let secrets: Vec<(String, SigningSecret)> =
        (0..args.endpoints).map(|i| (format!("/e{i}"), SigningSecret::generate())).collect();
    let (tls, ca_bundle) = if args.plain_http {
        (None, None)
    } else {
        let ca = TestCa::new()?;
        let bundle = work_dir.join("receiver-ca.pem");
        std::fs::write(&bundle, ca.pem())?;
        (Some(server_config(ca.issue_localhost()?, &[])?), Some(bundle))
    };
    let sink = Sink::start(secrets.iter().cloned().collect::<HashMap<_, _>>(), tls).await?;
    rig.add_endpoints(&secrets, |path| sink.url(path)).await?;
    let fleet = FleetConfig {
        binary: worker_binary(args.worker_bin.as_deref())?,
        database_url: rig.url.clone(),
        key_ring: rig.key_ring_text.clone(),
        ca_bundle,
        log_dir: work_dir.clone(),
    };
    let machine = machine(&args, &rig).await;
    let bench = Bench { rig, sink, fleet, sizes, concurrency: args.concurrency, batch_size: args.batch_size };
    // Interrupted (Ctrl-C, SIGTERM): the phase in progress is dropped, which stops its workers,
    // and the database is cleaned up below like after a failure.
    let outcome = tokio::select! {
        outcome = phases(&bench, &secrets, machine, &args) => outcome,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    let Bench { rig, .. } = bench;
    rig.close().await;
    let mut results = outcome.with_context(|| format!("worker logs are in {}", work_dir.display()))?;
    results.total_seconds = started.elapsed().as_secs_f64();
    if args.only.is_none() {
        write_outputs(&results, &args)?;
    } else {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}

async fn phases(
    bench: &Bench,
    secrets: &[(String, SigningSecret)],
    machine: Machine,
    args: &Args,
) -> anyhow::Result<Results> {
    let runs = |phase: Phase| args.only.is_none_or(|only| only == phase);
    let mut ceiling = Ceiling::default();
    if runs(Phase::Ceiling) {
        eprintln!("Phase 1: database ceiling (claim + complete, no HTTP)");
        ceiling = ceiling::run(bench).await?;
    }
    let mut throughput = Vec::new();
    if runs(Phase::Throughput) {
        eprintln!("Phase 2: end-to-end throughput");
        throughput = throughput::run(bench, ceiling.per_second).await?;
    }
    let mut latency = Vec::new();
    if runs(Phase::Latency) {
        eprintln!("Phase 3: latency at offered load");
        latency = latency::run(bench).await?;
    }
    let mut memory = MemoryRun::default();
    if runs(Phase::Memory) {
        eprintln!("Memory: 1,000 deliveries in flight");
        memory = memory::run(bench).await?;
    }
    let mut naive = NaiveRun::default();
    if runs(Phase::Naive) {
        eprintln!("Naive baseline: one delivery per claim, transaction open during HTTP");
        naive = naive::run(bench, secrets, ceiling.per_second).await?;
    }
    let mut skew = SkewRun::default();
    if runs(Phase::Skew) {
        eprintln!("Phase 6: skew (one hot endpoint; a Zipf-like distribution) under the in-flight cap");
        skew = skew::run(bench).await?;
        eprintln!(
            "  one endpoint: default cap at {:.0} % of cap 512; Zipf-like (hottest {:.0} %) at {:.0} % of even",
            100.0 * skew.hot_ratio,
            100.0 * skew.hottest_share,
            100.0 * skew.zipf_ratio
        );
    }
    let mut api = ApiRun::default();
    if runs(Phase::Api) {
        eprintln!("Phase 7: the management API (ingest; 1,000 messages/s offered while a worker delivers)");
        api = api::run(bench).await?;
    }
    // Not in the quick run: it needs npm (and the registry, the first time), and CI runs it on
    // its own (`tests/peers.rs`).
    let mut peers = PeersRun::default();
    if args.only == Some(Phase::Peers) || (args.only.is_none() && !args.quick) {
        eprintln!("Phase 8: peers in the same run (webhook-delivery, graphile-worker, pg-boss; plain HTTP)");
        peers = peers::run(bench, &args.peers_dir).await?;
    }
    // Last: after it, Postgres spends minutes vacuuming and checkpointing its ten million rows,
    // which cost the phases that once ran after it (skew, the API, the peers) up to two thirds of
    // their throughput.
    let mut backlog = BacklogRun::default();
    if runs(Phase::Backlog) {
        eprintln!("Phase 4 (run last): backlog and long run");
        backlog = backlog::run(bench, &throughput).await?;
    }
    let mut results = Results {
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        mode: if args.quick { "quick" } else { "full" }.to_owned(),
        machine,
        setup: Setup {
            endpoints: args.endpoints,
            payload_bytes: rig::PAYLOAD_BYTES,
            tls: !args.plain_http,
            batch_size: args.batch_size,
            concurrency: args.concurrency,
        },
        ceiling,
        throughput,
        latency,
        memory,
        backlog,
        naive,
        skew,
        api,
        peers,
        targets: Vec::new(),
        total_seconds: 0.0,
    };
    results.targets = targets::evaluate(&results);
    Ok(results)
}

async fn machine(args: &Args, rig: &Rig) -> Machine {
    let (cpu_model, cores, memory_gib) = procstat::machine();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "machine".to_owned());
    Machine {
        name: args.machine.clone().unwrap_or_else(|| hostname.trim().to_owned()),
        cores,
        memory_gib,
        cpu_model,
        postgres_version: rig.postgres_version().await,
        postgres_source: rig.source.clone(),
        postgres_settings: if rig.postmaster.is_some() {
            rig::cluster_settings(&args.pg_settings).iter().map(|(k, v)| format!("{k}={v}")).collect()
        } else {
            Vec::new()
        },
    }
}

/// `NAME=VALUE`, for `--pg-setting`.
fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn worker_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let me = std::env::current_exe().context("finding this binary")?;
    Ok(me.with_file_name("webhook-worker"))
}

fn write_outputs(results: &Results, args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir)?;
    let suffix = if args.quick { "-quick" } else { "" };
    let stem = format!("{}-{}{suffix}", results.date, results.machine.name);
    let json = args.out_dir.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(results)?)?;
    // Paths as given (relative to the repository root when run from it, as `bench/run` does),
    // which is how BENCHMARKS.md links them.
    let plots = report::Plots::with_prefix(&args.out_dir.join(&stem).display().to_string());
    std::fs::write(&plots.throughput_vs_workers, plot::throughput_vs_workers(results))?;
    std::fs::write(&plots.latency_cdf, plot::latency_cdf(results))?;
    std::fs::write(&plots.throughput_over_time, plot::throughput_over_time(results))?;
    eprintln!("Results: {}", json.display());
    let report_path = args.report.clone().or_else(|| (!args.quick).then(|| PathBuf::from("BENCHMARKS.md")));
    if let Some(path) = report_path {
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, report::splice(&existing, &report::markdown(results, &plots)))?;
        eprintln!("Report: {}", path.display());
    }
    for target in &results.targets {
        eprintln!("  {} {}: {}", if target.met { "met    " } else { "MISSED " }, target.name, target.measured);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_setting;

    #[test]
    fn a_setting_is_name_equals_value() {
        assert_eq!(parse_setting("wal_compression=lz4"), Ok(("wal_compression".to_owned(), "lz4".to_owned())));
        assert_eq!(parse_setting("options=-c a=b"), Ok(("options".to_owned(), "-c a=b".to_owned())));
        assert!(parse_setting("wal_compression").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_setting("=lz4").is_err());
    }
}
