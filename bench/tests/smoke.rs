//! The benchmark's quick mode, end to end, as CI runs it: every phase runs against real Postgres
//! (the throwaway cluster, or a fresh database on `DATABASE_URL`'s server), real worker processes
//! and the HTTPS receiver, and the outputs are complete and consistent. Speed is not asserted:
//! this is a debug build on a shared machine; `BENCHMARKS.md` holds the measurements.

use std::path::Path;
use std::process::Command;

#[test]
fn quick_mode_runs_every_phase_and_writes_every_output() {
    let bench = Path::new(env!("CARGO_BIN_EXE_webhook-bench"));
    // `cargo test --workspace` builds the worker binary beside the bench's.
    let worker = bench.with_file_name("webhook-worker");
    assert!(worker.is_file(), "{} is missing: run `cargo build` first", worker.display());
    let out = std::env::temp_dir().join(format!("webhook-bench-smoke-{}", std::process::id()));
    let report = out.join("BENCHMARKS.md");
    let status = Command::new(bench)
        .args(["--quick", "--machine", "smoke"])
        .arg("--out-dir")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .arg("--worker-bin")
        .arg(&worker)
        .status()
        .expect("the bench starts");
    assert!(status.success(), "the quick benchmark failed: {status}");

    let json = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a results file");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(results["mode"], "quick");
    assert!(results["ceiling"]["per_second"].as_f64().unwrap() > 0.0);
    let runs = results["throughput"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["workers"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 4]);
    for run in runs {
        assert_eq!(run["invalid_signatures"], 0, "every delivery carried a valid signature: {run}");
        assert_eq!(run["duplicates"], 0, "no delivery arrived twice without faults: {run}");
        assert!(run["worker_cpu_us_per_delivery"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["postgres_cpu_us_per_delivery"].as_f64().unwrap() > 0.0, "{run}");
    }
    let latency = results["latency"].as_array().unwrap();
    assert_eq!(latency.len(), 2);
    for run in latency {
        let (p50, p99, max) =
            (run["p50_ms"].as_f64().unwrap(), run["p99_ms"].as_f64().unwrap(), run["max_ms"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{run}");
    }
    assert!(results["memory"]["peak_rss_mib"].as_f64().unwrap() > 0.0);
    assert!(results["naive"]["per_second"].as_f64().unwrap() > 0.0);
    assert!(results["backlog"]["deliveries"].as_u64().unwrap() > 0);
    let skew = &results["skew"];
    for case in ["hot_default", "hot_open", "zipf", "even"] {
        assert!(skew[case]["per_second"].as_f64().unwrap() > 0.0, "the skew phase drained {case}: {skew}");
    }
    assert!(skew["hot_default"]["peak_in_flight"].as_u64().unwrap() <= 32, "the default cap held: {skew}");
    let api = &results["api"];
    assert_eq!(api["ingest"]["messages"], 2_000, "the API phase's clients had every message accepted: {api}");
    assert!(api["ingest"]["per_second"].as_f64().unwrap() > 0.0, "{api}");
    let offered = &api["offered"];
    assert!(offered["messages"].as_u64().unwrap() > 0, "{api}");
    assert!(offered["delivered_p50_ms"].as_f64().unwrap() <= offered["delivered_p99_ms"].as_f64().unwrap(), "{api}");
    assert_eq!(results["targets"].as_array().unwrap().len(), 12);
    // The peers phase needs npm: the quick run leaves it out (tests/peers.rs runs it alone).
    assert_eq!(results["peers"]["runs"].as_array().unwrap().len(), 0, "{}", results["peers"]);

    let report = std::fs::read_to_string(&report).unwrap();
    assert!(report.contains("<!-- bench:results:begin -->") && report.contains("<!-- bench:results:end -->"));
    assert!(report.contains("## The management API"), "the report has the API phase");
    assert!(
        report.contains("## Peers, same run\n\nNot measured in this run."),
        "the report says the peers did not run"
    );
    for plot in ["throughput", "latency", "over-time"] {
        let svg = std::fs::read_to_string(
            json.with_file_name(format!("{}-{plot}.svg", json.file_stem().unwrap().to_str().unwrap())),
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{plot}");
        assert!(report.contains(&format!("-{plot}.svg")), "the report links the {plot} plot");
    }
    std::fs::remove_dir_all(&out).unwrap();
}
