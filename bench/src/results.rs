//! What one benchmark run measured: serialised to `bench/results/<date>-<machine>.json` and
//! rendered into `BENCHMARKS.md` and the SVG plots. Every figure is measured in the same run, so
//! ratios to the database ceiling cancel most machine noise.

use serde::{Deserialize, Serialize};

/// One whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// `full` or `quick`.
    pub mode: String,
    pub machine: Machine,
    pub setup: Setup,
    pub ceiling: Ceiling,
    pub throughput: Vec<ThroughputRun>,
    pub latency: Vec<LatencyRun>,
    pub memory: MemoryRun,
    pub backlog: BacklogRun,
    pub naive: NaiveRun,
    /// Absent from runs before the phase existed.
    #[serde(default)]
    pub skew: SkewRun,
    /// Absent from runs before the phase existed.
    #[serde(default)]
    pub api: ApiRun,
    /// Absent from runs before the phase existed, and empty when it did not run.
    #[serde(default)]
    pub peers: PeersRun,
    pub targets: Vec<Target>,
    /// Wall-clock seconds the whole run took.
    pub total_seconds: f64,
}

/// Where it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub name: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu_model: String,
    pub postgres_version: String,
    /// `throwaway cluster (durable settings)` or `given server`.
    pub postgres_source: String,
    /// Non-default server settings of the throwaway cluster.
    pub postgres_settings: Vec<String>,
}

/// What every phase shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    pub endpoints: usize,
    pub payload_bytes: usize,
    /// HTTPS (rustls, keep-alive) to the local receiver, or plain HTTP.
    pub tls: bool,
    /// Rows per claim (the worker's `WEBHOOK_BATCH_SIZE`).
    pub batch_size: usize,
    /// Deliveries in flight per worker (`WEBHOOK_CONCURRENCY`).
    pub concurrency: usize,
}

/// Phase 1: the raw claim-and-complete cycle, the worker's own statements, no HTTP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ceiling {
    pub runs: Vec<CeilingRun>,
    /// The best of `runs`: what Postgres itself allows here.
    pub per_second: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CeilingRun {
    /// Concurrent claim-and-complete loops, one connection each.
    pub connections: usize,
    pub deliveries: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Postgres CPU per delivery, microseconds.
    pub postgres_cpu_us_per_delivery: f64,
}

/// Phase 2: a pre-filled queue drained by worker processes to the local receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputRun {
    pub workers: usize,
    pub deliveries: u64,
    /// First to last arrival at the receiver.
    pub seconds: f64,
    pub per_second: f64,
    /// `per_second` ÷ the ceiling.
    pub ratio_to_ceiling: f64,
    /// All workers' CPU (user + system) per delivery, microseconds.
    pub worker_cpu_us_per_delivery: f64,
    /// Peak RSS (VmHWM) of each worker, MiB.
    pub worker_peak_rss_mib: Vec<f64>,
    /// Postgres CPU over the run, seconds, and per delivery, microseconds.
    pub postgres_cpu_seconds: f64,
    pub postgres_cpu_us_per_delivery: f64,
    /// The receiver's (bench process) CPU per delivery, microseconds.
    pub receiver_cpu_us_per_delivery: f64,
    /// Requests beyond the first per webhook id (at-least-once; expected 0 without faults).
    pub duplicates: u64,
    pub invalid_signatures: u64,
    /// The statements Postgres spent most time on during the run (pg_stat_statements; empty on
    /// a given server without it).
    #[serde(default)]
    pub statements: Vec<StatementStat>,
    /// WAL written over the run per delivery, bytes (`pg_current_wal_lsn` before and after).
    #[serde(default)]
    pub wal_bytes_per_delivery: Option<f64>,
    /// Execution time of all statements per delivery, microseconds (pg_stat_statements; `None`
    /// without it): what Postgres spent in our statements, against what its processes used.
    #[serde(default)]
    pub statement_us_per_delivery: Option<f64>,
}

/// One statement's share of the database's work (from pg_stat_statements).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatementStat {
    /// The statement's first words, whitespace folded.
    pub query: String,
    pub calls: u64,
    pub rows_per_call: f64,
    /// Time per call, planning included: all of it over the calls. (Not `mean_plan_time`, which
    /// is per planning: a statement that reuses a cached plan is planned on few of its calls.)
    pub mean_ms: f64,
    /// Shared buffers touched per call (hit or read): the pages a call walked.
    #[serde(default)]
    pub blocks_per_call: f64,
    /// Share of all statements' execution time in the run.
    pub share: f64,
}

impl std::fmt::Display for StatementStat {
    /// One line of a phase's statement table on the terminal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>4.0} %  {:>7} calls  {:>6.1} rows/call  {:>7.3} ms  {:>7.1} blocks/call  {}",
            100.0 * self.share,
            self.calls,
            self.rows_per_call,
            self.mean_ms,
            self.blocks_per_call,
            self.query
        )
    }
}

/// Phase 3: producers inserting at a fixed rate; enqueue → delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRun {
    pub offered_per_second: f64,
    /// Rows the producer really inserted per second.
    pub achieved_per_second: f64,
    pub seconds: f64,
    pub deliveries: u64,
    pub workers: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// (latency ms, fraction of deliveries at or below it), increasing; for the CDF plot.
    pub cdf: Vec<(f64, f64)>,
}

/// Worker memory with many requests in flight (the receiver holds each for a while).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryRun {
    pub concurrency: usize,
    /// Most requests the receiver held at once.
    pub peak_in_flight: u64,
    pub deliveries: u64,
    pub receiver_delay_ms: u64,
    pub peak_rss_mib: f64,
}

/// Phase 4: a large backlog drained for a long time while history accumulates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BacklogRun {
    pub pending_at_start: u64,
    pub workers: usize,
    pub seconds: f64,
    pub deliveries: u64,
    /// Throughput over the first minute (the first 60 s after warm-up, or the whole run if shorter).
    pub first_minute_per_second: f64,
    /// The small-queue throughput of the same worker count (phase 2).
    pub small_queue_per_second: f64,
    /// `first_minute_per_second` ÷ `small_queue_per_second`.
    pub ratio_to_small_queue: f64,
    /// Throughput per 30 s bucket, relative to their median: lowest and highest.
    pub bucket_min_ratio: f64,
    pub bucket_max_ratio: f64,
    /// (seconds since start, deliveries/s over the preceding sample interval).
    pub series: Vec<(f64, f64)>,
    /// Rows in the attempt history at the end.
    pub history_rows_at_end: u64,
    /// What the server did during the drain: WAL bytes and full-page images per delivery,
    /// checkpoints, autovacuum passes over the queue, pages backends wrote themselves.
    #[serde(default)]
    pub wal_bytes_per_delivery: f64,
    #[serde(default)]
    pub full_page_images_per_delivery: f64,
    #[serde(default)]
    pub checkpoints: i64,
    #[serde(default)]
    pub queue_autovacuums: i64,
    #[serde(default)]
    pub backend_writes: i64,
}

/// Phase 5: one delivery per claim, the transaction held open during the HTTP call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NaiveRun {
    pub connections: usize,
    pub deliveries: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub ratio_to_ceiling: f64,
    pub postgres_cpu_us_per_delivery: f64,
}

/// Phase 6: the per-endpoint in-flight cap under skewed traffic, each case against its baseline
/// in the same run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SkewRun {
    pub workers: usize,
    /// One endpoint receives every delivery: with the default in-flight cap, and with it at 512.
    pub hot_default: Drain,
    pub hot_open: Drain,
    /// `hot_default.per_second` ÷ `hot_open.per_second`.
    pub hot_ratio: f64,
    /// Zipf-like traffic over `endpoints` endpoints (the hottest takes `hottest_share`), and the
    /// same number of deliveries spread evenly over them; both with the default cap.
    pub endpoints: usize,
    pub hottest_share: f64,
    pub zipf_exponent: f64,
    pub zipf: Drain,
    pub even: Drain,
    /// `zipf.per_second` ÷ `even.per_second`.
    pub zipf_ratio: f64,
}

/// One drain of a pre-filled queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Drain {
    /// The workers' `WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT`.
    pub cap: u32,
    pub deliveries: u64,
    /// First to last arrival at the receiver.
    pub seconds: f64,
    pub per_second: f64,
    /// Most requests the receiver held at once (all endpoints).
    pub peak_in_flight: u64,
    /// Deliveries the workers' protection moved into the future, all reasons
    /// (`webhook_protection_deferred_total`).
    pub deferred: u64,
}

/// Phase 7: the management API, one process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiRun {
    /// Concurrent clients of the ingest run, and the API's database connections.
    pub clients: usize,
    pub pool_size: usize,
    pub ingest: ApiIngest,
    pub offered: ApiOffered,
}

/// Messages posted back to back by concurrent clients, no worker running.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiIngest {
    pub messages: u64,
    pub seconds: f64,
    /// Messages accepted (202) per second.
    pub per_second: f64,
    /// Request latency under that load.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub api_cpu_us_per_message: f64,
    pub postgres_cpu_us_per_message: f64,
}

/// Messages at a fixed offered rate while one worker delivers them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiOffered {
    pub offered_per_second: f64,
    pub achieved_per_second: f64,
    pub messages: u64,
    pub seconds: f64,
    /// Request latency (sent → 202 read).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Request sent → arrival at the receiver.
    pub delivered_p50_ms: f64,
    pub delivered_p99_ms: f64,
}

/// The peers phase: webhook-delivery, graphile-worker and pg-boss each drain the same number of
/// deliveries from a fresh database on the same cluster to the same plain-HTTP receiver, in
/// interleaved rounds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeersRun {
    pub rounds: usize,
    /// Deliveries per system and round.
    pub deliveries: u64,
    /// Every system's run of every round, in the order they ran.
    pub runs: Vec<PeerRun>,
}

/// One system draining its queue once. CPU and time cover the work only (not the enqueue).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerRun {
    /// 1-based.
    pub round: usize,
    /// `webhook-delivery`, `graphile-worker` or `pg-boss`.
    pub system: String,
    pub version: String,
    /// The configuration it ran with, e.g. `concurrency 32, local_queue 64`.
    pub config: String,
    pub deliveries: u64,
    /// First to last arrival at the receiver.
    pub seconds: f64,
    /// `(deliveries - 1) / seconds`, as phase 2 counts it.
    pub per_second: f64,
    /// Worker (or driver) process start → every completion committed.
    pub wall_seconds: f64,
    /// The whole cluster's CPU (every Postgres process) over `wall_seconds`, per delivery.
    pub postgres_cpu_us_per_delivery: f64,
    /// The worker or driver process's CPU, from its start, per delivery.
    pub worker_cpu_us_per_delivery: f64,
    /// The receiver's (bench process) CPU per delivery.
    pub receiver_cpu_us_per_delivery: f64,
    /// The system's own enqueue path, rows per second (not part of the figures above).
    pub enqueue_per_second: f64,
    pub duplicates: u64,
    pub invalid_signatures: u64,
}

/// One target of the benchmark issue and whether this run met it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}
