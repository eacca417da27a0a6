//! The generated part of `BENCHMARKS.md`, and splicing it into the hand-written document.
//!
//! Everything here is pure (a `Results` in, text out) so the report can be re-rendered from a
//! stored JSON file without running anything. The number formatting helpers live here too, so
//! the targets, the tables and the plots all print the same figure the same way.

mod peers;

use crate::results::Results;

/// First line of the section the runner owns; kept in the document.
pub const BEGIN_MARKER: &str = "<!-- bench:results:begin -->";
/// Last line of the section the runner owns; kept in the document.
pub const END_MARKER: &str = "<!-- bench:results:end -->";

/// Where the three plots of a run are, as paths relative to the repository root (where
/// `BENCHMARKS.md` lives), e.g. `bench/results/2026-11-29-vm-throughput.svg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plots {
    pub throughput_vs_workers: String,
    pub latency_cdf: String,
    pub throughput_over_time: String,
}

impl Plots {
    /// The conventional names next to the run's JSON: `{prefix}-throughput.svg`,
    /// `{prefix}-latency.svg` and `{prefix}-over-time.svg`.
    pub fn with_prefix(prefix: &str) -> Plots {
        Plots {
            throughput_vs_workers: format!("{prefix}-throughput.svg"),
            latency_cdf: format!("{prefix}-latency.svg"),
            throughput_over_time: format!("{prefix}-over-time.svg"),
        }
    }
}

/// The markdown that goes between the markers: run line, targets, one section per phase, plots.
pub fn markdown(r: &Results, plots: &Plots) -> String {
    [
        run_line(r),
        targets_section(r),
        ceiling_section(r),
        throughput_section(r),
        latency_section(r),
        memory_section(r),
        backlog_section(r),
        skew_section(r),
        api_section(r),
        peers::section(r),
        plots_section(plots),
    ]
    .join("\n")
}

/// Replaces the text between the marker lines of `existing` with `generated`, keeping the
/// markers. Without both markers (begin before end), the markers and a note are added: to a
/// fresh `# Benchmarks` document if `existing` is blank, else after its text, so hand-written
/// content is never lost. Applying it twice with the same `generated` changes nothing.
pub fn splice(existing: &str, generated: &str) -> String {
    let mut body = generated.trim_end().to_owned();
    body.push('\n');
    let Some((before, after)) = split_at_markers(existing) else {
        let note = "The section between the markers below is written by the benchmark runner \
                    (`webhook-bench`); edits inside it are overwritten on the next run.";
        let head = if existing.trim().is_empty() { "# Benchmarks".to_owned() } else { existing.trim_end().to_owned() };
        return format!("{head}\n\n{note}\n\n{BEGIN_MARKER}\n{body}{END_MARKER}\n");
    };
    format!("{before}{body}{after}")
}

/// `existing` cut into (up to and including the begin line, from the end line on).
fn split_at_markers(existing: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    let mut begin_end = None;
    for line in existing.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        match (begin_end, line.trim()) {
            (None, BEGIN_MARKER) => begin_end = Some(offset),
            (Some(b), END_MARKER) => return Some((&existing[..b], &existing[start..])),
            _ => {}
        }
    }
    None
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate or count as a whole number with thousands separators; `–` if it is not a number.
pub(crate) fn rate(value: f64) -> String {
    if value.is_finite() { thousands(value.max(0.0).round() as u64) } else { "–".to_owned() }
}

/// A ratio as a whole percentage, `0.614` → `61 %`; `–` if it is not a number.
pub(crate) fn percent(ratio: f64) -> String {
    if ratio.is_finite() { format!("{:.0} %", ratio * 100.0) } else { "–".to_owned() }
}

/// `value ÷ ceiling` as [`percent`]; `–` without a ceiling.
pub(crate) fn share(value: f64, ceiling: f64) -> String {
    if ceiling > 0.0 { percent(value / ceiling) } else { "–".to_owned() }
}

/// A duration in minutes, whole minutes from ten on: `1800.0` → `30 min`, `150.0` → `2.5 min`.
pub(crate) fn minutes(seconds: f64) -> String {
    let m = seconds / 60.0;
    if m >= 10.0 { format!("{m:.0} min") } else { format!("{m:.1} min") }
}

/// One decimal, for µs, ms, MiB and seconds.
fn dec1(value: f64) -> String {
    format!("{value:.1}")
}

/// A markdown table; columns from `right_from` on are right-aligned (the numeric ones).
fn table(header: &str, right_from: usize, rows: &[Vec<String>]) -> String {
    let align: Vec<&str> = (0..header.split('|').count()).map(|i| if i < right_from { "---" } else { "--:" }).collect();
    let mut out = format!("| {header} |\n|{}|\n", align.join("|"));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

fn run_line(r: &Results) -> String {
    let (m, s) = (&r.machine, &r.setup);
    let pg = if m.postgres_version.to_lowercase().starts_with("postgres") {
        m.postgres_version.clone()
    } else {
        format!("PostgreSQL {}", m.postgres_version)
    };
    let settings = if m.postgres_settings.is_empty() {
        "default settings".to_owned()
    } else {
        let quoted: Vec<String> = m.postgres_settings.iter().map(|s| format!("`{s}`")).collect();
        format!("non-default settings {}", quoted.join(", "))
    };
    let transport = if s.tls { "HTTPS (rustls, keep-alive)" } else { "plain HTTP" };
    let run = format!("Run of {} (`{}` mode, {}) on **{}**", r.date, r.mode, minutes(r.total_seconds), m.name);
    let machine = format!("{} cores, {:.1} GiB, {}", m.cores, m.memory_gib, m.cpu_model);
    let endpoints = thousands(s.endpoints as u64);
    let payload = thousands(s.payload_bytes as u64);
    format!(
        "{run}: {machine}; {pg}, {}, {settings}. Setup: {endpoints} endpoints, {payload}-byte payloads over \
         {transport} to a local receiver, claim batch {}, {} deliveries in flight per worker.\n",
        m.postgres_source, s.batch_size, s.concurrency
    )
}

fn targets_section(r: &Results) -> String {
    // The run stores what it evaluated; re-evaluate only for a file written without them.
    let evaluated;
    let targets = if r.targets.is_empty() {
        evaluated = crate::targets::evaluate(r);
        &evaluated
    } else {
        &r.targets
    };
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let met = if t.met { "✅" } else { "❌" };
            vec![format!("{}: {}", t.name, t.target), t.measured.clone(), met.to_owned()]
        })
        .collect();
    let met = targets.iter().filter(|t| t.met).count();
    format!("## Targets\n\n{}\n{met} of {} targets met.\n", table("Target | Measured | Met?", 3, &rows), targets.len())
}

fn ceiling_section(r: &Results) -> String {
    let c = &r.ceiling;
    let rows: Vec<Vec<String>> = c
        .runs
        .iter()
        .map(|run| {
            vec![
                run.connections.to_string(),
                thousands(run.deliveries),
                dec1(run.seconds),
                rate(run.per_second),
                share(run.per_second, c.per_second),
                dec1(run.postgres_cpu_us_per_delivery),
            ]
        })
        .collect();
    let header = "Connections | Deliveries | Seconds | Deliveries/s | % of ceiling | Postgres µs/delivery";
    format!(
        "## Database ceiling\n\nThe worker's own claim-and-complete statements in a loop, no HTTP: what Postgres \
         allows on this machine. Ceiling: **{} deliveries/s**.\n\n{}",
        rate(c.per_second),
        table(header, 0, &rows)
    )
}

fn throughput_section(r: &Results) -> String {
    let rows: Vec<Vec<String>> = r
        .throughput
        .iter()
        .map(|t| {
            let rss: Vec<String> = t.worker_peak_rss_mib.iter().map(|m| dec1(*m)).collect();
            vec![
                t.workers.to_string(),
                thousands(t.deliveries),
                rate(t.per_second),
                percent(t.ratio_to_ceiling),
                dec1(t.worker_cpu_us_per_delivery),
                rss.join(" / "),
                dec1(t.postgres_cpu_seconds),
                dec1(t.postgres_cpu_us_per_delivery),
                dec1(t.receiver_cpu_us_per_delivery),
                thousands(t.duplicates),
                thousands(t.invalid_signatures),
            ]
        })
        .collect();
    let header = "Workers | Deliveries | Deliveries/s | % of ceiling | Worker CPU µs/delivery | \
                  Peak RSS per worker (MiB) | Postgres CPU s | Postgres µs/delivery | Receiver µs/delivery | \
                  Duplicates | Invalid signatures";
    let n = &r.naive;
    let naive_row = vec![
        n.connections.to_string(),
        thousands(n.deliveries),
        rate(n.per_second),
        percent(n.ratio_to_ceiling),
        dec1(n.postgres_cpu_us_per_delivery),
    ];
    let naive_header = "Connections | Deliveries | Deliveries/s | % of ceiling | Postgres µs/delivery";
    let best = r.throughput.iter().max_by(|a, b| a.per_second.total_cmp(&b.per_second));
    let speedup = match best {
        Some(b) if n.per_second > 0.0 => format!(
            "The best end-to-end run ({} workers, {} deliveries/s) is **{:.1}×** as fast as the naive baseline.\n",
            b.workers,
            rate(b.per_second),
            b.per_second / n.per_second
        ),
        _ => "No speed-up over the naive baseline can be given: one of the two delivered nothing.\n".to_owned(),
    };
    format!(
        "## End-to-end throughput\n\nA pre-filled queue drained by worker processes to the local receiver.\n\n{}\n\
         Naive baseline: one delivery per claim, the transaction held open during the HTTP call.\n\n{}\n{speedup}",
        table(header, 0, &rows),
        table(naive_header, 0, &[naive_row])
    ) + &statements_section(best)
}

/// Where Postgres spent its time in the best run, statement by statement.
fn statements_section(best: Option<&crate::results::ThroughputRun>) -> String {
    let Some(best) = best.filter(|b| !b.statements.is_empty()) else { return String::new() };
    let rows: Vec<Vec<String>> = best
        .statements
        .iter()
        .map(|s| {
            vec![
                format!("`{}…`", s.query.replace('`', "'").replace('|', "\\|")),
                thousands(s.calls),
                dec1(s.rows_per_call),
                format!("{:.3}", s.mean_ms),
                dec1(s.blocks_per_call),
                percent(s.share),
            ]
        })
        .collect();
    format!(
        "\nWhere Postgres spent its execution time in the best run ({} workers; `pg_stat_statements`):\n\n{}",
        best.workers,
        table("Statement | Calls | Rows/call | Mean ms | Blocks/call | Share of time", 1, &rows)
    )
}

fn latency_section(r: &Results) -> String {
    let rows: Vec<Vec<String>> = r
        .latency
        .iter()
        .map(|l| {
            vec![
                rate(l.offered_per_second),
                rate(l.achieved_per_second),
                share(l.achieved_per_second, r.ceiling.per_second),
                l.workers.to_string(),
                thousands(l.deliveries),
                dec1(l.p50_ms),
                dec1(l.p95_ms),
                dec1(l.p99_ms),
                dec1(l.max_ms),
            ]
        })
        .collect();
    let header = "Offered/s | Achieved/s | % of ceiling | Workers | Deliveries | p50 ms | p95 ms | p99 ms | max ms";
    format!(
        "## Latency\n\nProducers insert at a fixed rate; latency is enqueue → delivered at the receiver.\n\n{}",
        table(header, 0, &rows)
    )
}

fn memory_section(r: &Results) -> String {
    let m = &r.memory;
    format!(
        "## Memory\n\nOne worker with concurrency {}, the receiver holding each request {} ms: up to {} requests in \
         flight over {} deliveries, peak RSS **{} MiB**.\n",
        thousands(m.concurrency as u64),
        thousands(m.receiver_delay_ms),
        thousands(m.peak_in_flight),
        thousands(m.deliveries),
        dec1(m.peak_rss_mib)
    )
}

fn backlog_section(r: &Results) -> String {
    let b = &r.backlog;
    let ceiling = r.ceiling.per_second;
    let rows = [
        ("Pending at start", thousands(b.pending_at_start)),
        ("Workers", b.workers.to_string()),
        (
            "First-minute deliveries/s",
            format!("{} ({} of ceiling)", rate(b.first_minute_per_second), share(b.first_minute_per_second, ceiling)),
        ),
        (
            "Small-queue deliveries/s",
            format!("{} ({} of ceiling)", rate(b.small_queue_per_second), share(b.small_queue_per_second, ceiling)),
        ),
        ("Ratio to small queue", percent(b.ratio_to_small_queue)),
        (
            "30-s buckets vs median (min / max)",
            format!("{} / {}", percent(b.bucket_min_ratio), percent(b.bucket_max_ratio)),
        ),
        ("Duration", minutes(b.seconds)),
        ("Deliveries", thousands(b.deliveries)),
        ("History rows at end", thousands(b.history_rows_at_end)),
    ];
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(k, v)| vec![k.to_owned(), v]).collect();
    format!(
        "## Backlog and long run\n\nA large backlog drained for a long time while the attempt history grows.\n\n{}",
        table("Measure | Value", 1, &rows)
    )
}

fn skew_section(r: &Results) -> String {
    let k = &r.skew;
    let row = |case: &str, d: &crate::results::Drain| {
        vec![
            case.to_owned(),
            thousands(u64::from(d.cap)),
            thousands(d.deliveries),
            dec1(d.seconds),
            rate(d.per_second),
            thousands(d.peak_in_flight),
            thousands(d.deferred),
        ]
    };
    let rows = [
        row("one endpoint, default cap", &k.hot_default),
        row("one endpoint, cap 512", &k.hot_open),
        row(
            &format!(
                "Zipf-like over {} endpoints, hottest {}",
                thousands(k.endpoints as u64),
                percent(k.hottest_share)
            ),
            &k.zipf,
        ),
        row(&format!("even over {} endpoints", thousands(k.endpoints as u64)), &k.even),
    ];
    let header =
        "Traffic | In-flight cap | Deliveries | Seconds | Deliveries/s | Peak in flight | Deferred by protection";
    format!(
        "## Skew and the in-flight cap\n\nOne worker drains a pre-filled queue. One endpoint with the default cap runs \
         at **{}** of its rate with the cap at 512; Zipf-like traffic (exponent {:.2}) runs at **{}** of the same \
         deliveries spread evenly.\n\n{}",
        percent(k.hot_ratio),
        k.zipf_exponent,
        percent(k.zipf_ratio),
        table(header, 1, &rows)
    )
}

fn api_section(r: &Results) -> String {
    let (a, i, o) = (&r.api, &r.api.ingest, &r.api.offered);
    if i.messages == 0 {
        return "## The management API\n\nNot measured in this run.\n".to_owned();
    }
    let rows = [
        vec![
            format!("ingest, {} clients back to back, no worker", a.clients),
            thousands(i.messages),
            rate(i.per_second),
            dec1(i.p50_ms),
            dec1(i.p99_ms),
            "-".to_owned(),
        ],
        vec![
            format!("{}/s offered, one worker delivering", rate(o.offered_per_second)),
            thousands(o.messages),
            rate(o.achieved_per_second),
            dec1(o.p50_ms),
            dec1(o.p99_ms),
            format!("{} / {}", dec1(o.delivered_p50_ms), dec1(o.delivered_p99_ms)),
        ],
    ];
    let header = "Load | Messages | Messages/s | Request p50 ms | Request p99 ms | API → delivered p50 / p99 ms";
    format!(
        "## The management API\n\nOne `webhook-worker api` process ({} database connections) takes `POST \
         /api/v1/app/{{app}}/msg` for one application with one endpoint; the clients run in the bench process on the \
         same cores. Ingest costs **{:.0} µs of API CPU and {:.0} µs of Postgres CPU per message**.\n\n{}",
        a.pool_size,
        i.api_cpu_us_per_message,
        i.postgres_cpu_us_per_message,
        table(header, 1, &rows)
    )
}

fn plots_section(p: &Plots) -> String {
    // Spaces would end the link target early; the paths are ours, so nothing else needs escaping.
    let link = |path: &str| path.trim_start_matches("./").replace(' ', "%20");
    format!(
        "## Plots\n\n![End-to-end throughput by worker count]({})\n\n![Latency distribution]({})\n\n\
         ![Throughput while draining the backlog]({})\n",
        link(&p.throughput_vs_workers),
        link(&p.latency_cdf),
        link(&p.throughput_over_time)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::tests::sample;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(14_210), "14,210");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn splice_without_markers_creates_document_and_is_idempotent() {
        let once = splice("", "generated\n");
        assert!(once.starts_with("# Benchmarks\n"));
        assert!(once.contains(&format!("{BEGIN_MARKER}\ngenerated\n{END_MARKER}\n")));
        assert_eq!(splice(&once, "generated\n"), once);
    }

    #[test]
    fn splice_without_markers_keeps_hand_written_text() {
        let once = splice("# Benchmarks\n\nHand-written notes.\n", "generated");
        assert!(once.starts_with("# Benchmarks\n\nHand-written notes.\n\n"));
        assert!(once.ends_with(&format!("{BEGIN_MARKER}\ngenerated\n{END_MARKER}\n")));
        assert_eq!(splice(&once, "generated"), once);
    }

    #[test]
    fn splice_replaces_only_between_markers() {
        let doc = format!("# B\n\nintro\n{BEGIN_MARKER}\nold\nstuff\n{END_MARKER}\n\nafter\n");
        let once = splice(&doc, "new\n");
        assert_eq!(once, format!("# B\n\nintro\n{BEGIN_MARKER}\nnew\n{END_MARKER}\n\nafter\n"));
        assert_eq!(splice(&once, "new\n"), once);
    }

    #[test]
    fn markdown_has_every_section_and_a_mark_per_target() {
        let r = sample();
        let md = markdown(&r, &Plots::with_prefix("bench/results/2026-11-29-vm"));
        for heading in [
            "## Targets",
            "## Database ceiling",
            "## End-to-end throughput",
            "## Latency",
            "## Memory",
            "## Backlog and long run",
            "## Skew and the in-flight cap",
            peers::HEADING,
            "## Plots",
        ] {
            assert!(md.contains(heading), "missing {heading}");
        }
        let marks = md.matches('✅').count() + md.matches('❌').count();
        assert_eq!(marks, r.targets.len());
        assert!(md.contains("](bench/results/2026-11-29-vm-latency.svg)"));
        assert!(!md.contains("NaN"));
    }
}
