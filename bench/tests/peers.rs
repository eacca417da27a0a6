//! The peers phase on its own at quick sizes (`--only peers --quick`), as CI runs it: the pinned
//! graphile-worker and pg-boss (`bench/peers/`, Node.js) and our worker each deliver every job,
//! validly signed and once, through the bench's receiver, from fresh databases on a real cluster,
//! and the phase's figures come out whole. Speed is not asserted.
//!
//! Needs Node.js >= 20 and npm: `.ci/run` installs the pinned packages first
//! (`bash bench/peers/install.sh`). Without them this test fails; it never skips.

use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn peers_phase_delivers_every_system_through_the_same_receiver() {
    let bench = Path::new(env!("CARGO_BIN_EXE_webhook-bench"));
    let worker = bench.with_file_name("webhook-worker");
    assert!(worker.is_file(), "{} is missing: run `cargo build` first", worker.display());
    let out = Command::new(bench)
        .args(["--only", "peers", "--quick"])
        .arg("--worker-bin")
        .arg(&worker)
        .stderr(Stdio::inherit())
        .output()
        .expect("the bench starts");
    assert!(out.status.success(), "the peers phase failed ({}); it needs Node.js >= 20 and npm", out.status);

    let results: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the results JSON on stdout");
    let peers = &results["peers"];
    assert_eq!(peers["rounds"], 1, "{peers}");
    assert_eq!(peers["deliveries"], 2_000, "{peers}");
    let runs = peers["runs"].as_array().expect("runs");
    let systems: Vec<&str> = runs.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(systems, ["webhook-delivery", "graphile-worker", "pg-boss"], "ours first, then the peers");
    for run in runs {
        assert_eq!(run["deliveries"], 2_000, "{run}");
        assert_eq!(run["duplicates"], 0, "no id arrived twice: {run}");
        assert_eq!(run["invalid_signatures"], 0, "the receiver verified every signature: {run}");
        for figure in ["per_second", "postgres_cpu_us_per_delivery", "worker_cpu_us_per_delivery", "enqueue_per_second"]
        {
            assert!(run[figure].as_f64().unwrap() > 0.0, "{figure}: {run}");
        }
        assert!(run["wall_seconds"].as_f64().unwrap() >= run["seconds"].as_f64().unwrap(), "{run}");
        assert!(!run["config"].as_str().unwrap().is_empty(), "{run}");
    }
    // The pinned versions (bench/peers/package-lock.json) are the ones that ran.
    assert_eq!(runs[1]["version"], "0.17.3");
    assert_eq!(runs[2]["version"], "10.4.2");
}
