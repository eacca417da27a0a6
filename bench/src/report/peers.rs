//! The "Peers, same run" section: each system's figures over the interleaved rounds, as
//! min / median / max, ours first.

use super::{rate, table, thousands};
use crate::results::{PeerRun, Results};

/// The section's heading.
pub const HEADING: &str = "## Peers, same run";

/// (min, median, max) of `values`; the median of an even count is the mean of the middle two.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let median = if values.len().is_multiple_of(2) { f64::midpoint(values[mid - 1], values[mid]) } else { values[mid] };
    (values[0], median, values[values.len() - 1])
}

/// `min / median / max` with `format`; one value when there was one round.
fn spread_text(runs: &[&PeerRun], value: impl Fn(&PeerRun) -> f64, format: impl Fn(f64) -> String) -> String {
    let (min, median, max) = spread(runs.iter().map(|r| value(r)).collect());
    if runs.len() == 1 { format(median) } else { format!("{} / {} / {}", format(min), format(median), format(max)) }
}

fn whole(value: f64) -> String {
    if value.is_finite() { format!("{value:.0}") } else { "–".to_owned() }
}

/// The systems in the order they first ran (ours first), each with its runs.
fn by_system(runs: &[PeerRun]) -> Vec<(&str, Vec<&PeerRun>)> {
    let mut systems: Vec<(&str, Vec<&PeerRun>)> = Vec::new();
    for run in runs {
        match systems.iter_mut().find(|(system, _)| *system == run.system) {
            Some((_, runs)) => runs.push(run),
            None => systems.push((&run.system, vec![run])),
        }
    }
    systems
}

/// The section, or a note that the phase did not run.
pub fn section(r: &Results) -> String {
    let p = &r.peers;
    if p.runs.is_empty() {
        return format!("{HEADING}\n\nNot measured in this run.\n");
    }
    let systems = by_system(&p.runs);
    let rows: Vec<Vec<String>> = systems
        .iter()
        .map(|(system, runs)| {
            let total = |r: &PeerRun| r.postgres_cpu_us_per_delivery + r.worker_cpu_us_per_delivery;
            vec![
                format!("{system} {}", runs[0].version),
                runs[0].config.clone(),
                spread_text(runs, |r| r.per_second, rate),
                spread_text(runs, |r| r.postgres_cpu_us_per_delivery, whole),
                spread_text(runs, |r| r.worker_cpu_us_per_delivery, whole),
                whole(spread(runs.iter().map(|r| total(r)).collect()).1),
                format!("{:.1}", spread(runs.iter().map(|r| r.wall_seconds).collect()).1),
            ]
        })
        .collect();
    let header = "System | Configuration | Deliveries/s | Postgres µs/delivery | Worker µs/delivery | \
                  Postgres + worker µs/delivery (median) | Start → all committed, s (median)";
    let spread_note = if p.rounds > 1 { "min / median / max over the rounds" } else { "one round" };
    format!(
        "{HEADING}\n\nEach system drains {} deliveries from a fresh database on the same cluster, in {} interleaved \
         round(s), over plain HTTP keep-alive to the same receiver, which verified every signature; every id arrived \
         exactly once. Deliveries/s: first to last arrival. Time and CPU from the worker's (for the peers, the Node.js \
         driver's) start to its last completion committed: the whole cluster's, and the worker or driver \
         process's; the enqueue is not counted. Figures: {spread_note}.\n\n{}",
        thousands(p.deliveries),
        p.rounds,
        table(header, 2, &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::tests::sample;

    fn run(round: usize, system: &str, per_second: f64, postgres: f64) -> PeerRun {
        PeerRun {
            round,
            system: system.to_owned(),
            version: "1.0".to_owned(),
            config: "c".to_owned(),
            deliveries: 50_000,
            per_second,
            postgres_cpu_us_per_delivery: postgres,
            worker_cpu_us_per_delivery: 100.0,
            wall_seconds: 50_000.0 / per_second + 0.5,
            ..PeerRun::default()
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(spread(vec![4.0, 1.0]), (1.0, 2.5, 4.0));
        assert!(spread(Vec::new()).1.is_nan());
    }

    #[test]
    fn a_row_per_system_in_running_order_with_its_spread() {
        let mut r = sample();
        r.peers.rounds = 3;
        r.peers.deliveries = 50_000;
        for round in 1..=3 {
            let k = round as f64;
            r.peers.runs.push(run(round, "webhook-delivery", 8_000.0 + k * 100.0, 80.0));
            r.peers.runs.push(run(round, "graphile-worker", 2_000.0 * k, 60.0 + k));
        }
        let md = section(&r);
        let ours = md.lines().find(|l| l.starts_with("| webhook-delivery")).unwrap();
        let graphile = md.lines().find(|l| l.starts_with("| graphile-worker")).unwrap();
        assert!(md.find(ours).unwrap() < md.find(graphile).unwrap(), "ours first:\n{md}");
        assert!(ours.contains("8,100 / 8,200 / 8,300"), "{ours}");
        assert!(graphile.contains("2,000 / 4,000 / 6,000"), "{graphile}");
        assert!(graphile.contains("| 61 / 62 / 63 |") && graphile.ends_with("| 162 | 13.0 |"), "{graphile}");
        assert!(md.contains("50,000 deliveries") && md.contains("min / median / max"));
    }

    #[test]
    fn a_run_without_the_phase_says_so() {
        assert_eq!(section(&sample()), format!("{HEADING}\n\nNot measured in this run.\n"));
    }
}
