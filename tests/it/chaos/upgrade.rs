//! A rolling upgrade under load: workers of the previous release deliver on the previous schema;
//! this release's `migrate` applies the new migrations while they work; workers of this release
//! start; the old ones get SIGTERM one by one. Nothing is lost, nothing sticks, the old workers
//! see no error storm — because every migration since the previous release only expands
//! (`schema/README.md`). The previous release is built from git by the test itself, once, and
//! cached under the target directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use webhook_worker::testkit::receiver::{Answer, Receiver};

use super::{Worker, drained, stuck};
use crate::faults::{delivered, long_profile};
use crate::support::cli::{binary, binary_at, run};
use crate::support::{TestDb, endpoint, insert_deliveries, latest_migration};

/// The previous release: `main` before the chaos round that added this test.
const PREVIOUS_RELEASE: &str = "6ede5538c446ec7e99849dfd33dec401a60c2fd7";
/// The newest migration the previous release carries.
const PREVIOUS_SCHEMA: i64 = 5;
/// A cold build of the previous release (its dependencies too) on a 2-core machine.
const BUILD_LIMIT: Duration = Duration::from_secs(1500);

/// The target directory this test binary was built in (`…/target/debug/deps/it-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("the test binary lives in <target>/<profile>/deps").to_path_buf()
}

/// Runs `command` to completion within `limit`; panics with `what` and its output otherwise.
fn run_bounded(command: &mut Command, what: &str, limit: Duration) {
    let log = std::env::temp_dir().join(format!("webhook-upgrade-build-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = command.stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
    let started = tokio::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took over {limit:?}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(status.success(), "{what} failed:\n{output}");
}

/// The previous release's worker binary: built from git on first use (the production build,
/// `--no-default-features`, in a target directory of its own), then reused. Returns it and how
/// long the build took (zero when cached).
fn previous_release() -> (PathBuf, Duration) {
    let home = target_dir().join("previous-release").join(&PREVIOUS_RELEASE[..12]);
    let built = home.join("target/debug/webhook-worker");
    if built.exists() {
        return (built, Duration::ZERO);
    }
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (code, _, err) = run(Command::new("git").arg("-C").arg(&repository).args([
        "cat-file",
        "-e",
        &format!("{PREVIOUS_RELEASE}^{{commit}}"),
    ]));
    assert_eq!(
        code, 0,
        "the previous release {PREVIOUS_RELEASE} is not in this clone ({err}); a shallow clone needs \
         `git fetch --unshallow` (or a depth that reaches it) for the rolling-upgrade test"
    );
    let started = tokio::time::Instant::now();
    let source = home.join("source");
    let _ = std::fs::remove_dir_all(&source);
    std::fs::create_dir_all(&source).unwrap();
    // `git archive`, not a worktree: it leaves the repository's metadata alone.
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(&repository)
        .args(["archive", "--format=tar", PREVIOUS_RELEASE])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let unpacked = Command::new("tar").arg("-x").arg("-C").arg(&source).stdin(archive.stdout.take().unwrap()).status();
    assert!(
        archive.wait().unwrap().success() && unpacked.unwrap().success(),
        "git archive of {PREVIOUS_RELEASE} failed"
    );
    // Seed its target directory with a copy of this build's dependencies (a copy, not links:
    // a rebuilt file must never change this build's): most are the same crates with the same
    // features, so only what differs is compiled.
    let seeded = home.join("target/debug");
    std::fs::create_dir_all(&seeded).unwrap();
    for part in ["deps", "build", ".fingerprint"] {
        let from = target_dir().join("debug").join(part);
        if from.is_dir() {
            let _ = Command::new("cp").arg("-a").arg(&from).arg(&seeded).status();
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run_bounded(
        Command::new(cargo)
            .current_dir(&source)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .args(["build", "--locked", "-p", "webhook-worker", "--bin", "webhook-worker", "--no-default-features"])
            .arg("--target-dir")
            .arg(home.join("target")),
        "building the previous release",
        BUILD_LIMIT,
    );
    let _ = std::fs::remove_dir_all(&source);
    (built, started.elapsed())
}

/// The schema version the database is at.
async fn schema_version(db: &TestDb) -> i64 {
    db.count("SELECT max(version) FROM webhook._sqlx_migrations WHERE success").await
}

/// Sums a counter over workers.
async fn errors(workers: &[Worker]) -> f64 {
    let mut sum = 0.0;
    for worker in workers {
        sum += worker.counter("webhook_database_errors_total").await;
    }
    sum
}

/// The queue by state and what the receiver got, for a stall's message.
async fn queue_now(db: &TestDb, receiver: &Receiver) -> String {
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state || CASE WHEN run_at > now() THEN ' (future)' ELSE '' END, count(*) FROM webhook.deliveries GROUP BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    format!("received {}, queue {states:?}", receiver.count())
}

/// The log lines of `level` (JSON logs).
fn lines_at(log: &str, level: &str) -> Vec<String> {
    log.lines().filter(|line| line.contains(&format!("\"level\":\"{level}\""))).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_under_load_loses_nothing_and_raises_no_error_storm() {
    // The machine to itself first: the build of the previous release would slow the tests beside it.
    let db = TestDb::empty_exclusive().await;
    let (old, build_time) = tokio::task::spawn_blocking(previous_release).await.unwrap();
    let (total, per_second): (i64, i32) = if long_profile() { (60_000, 300) } else { (6_000, 150) };
    // The previous release's own `migrate`: the schema it was released with.
    let (code, out, err) = run(binary_at(&db, &old).arg("migrate"));
    assert_eq!(code, 0, "the previous release's migrate failed: {out}{err}");
    assert_eq!(schema_version(&db).await, PREVIOUS_SCHEMA);

    let receiver = Receiver::start(None).await.unwrap();
    for n in 0..4 {
        let path = format!("/u{n}");
        let (id, _) = endpoint(&db.pool, &receiver.url(&path)).await;
        receiver.answer(&path, Answer { fail_ratio: 0.02, ..Answer::default() });
        insert_deliveries(&db.pool, id, total / 4).await;
    }
    // Paced so that the upgrade happens while deliveries flow.
    sqlx::query("UPDATE webhook.endpoints SET rate_limit_per_second = $1, rate_limit_burst = 10")
        .bind(per_second / 4)
        .execute(&db.pool)
        .await
        .unwrap();
    let env = [("RUST_LOG", "warn")];
    let mut old_workers: Vec<Worker> =
        (0..2).map(|i| Worker::start_program(&db, &format!("chaos-old{i}"), &env, &old)).collect();
    let step = usize::try_from(total / 10).unwrap();
    assert!(receiver.wait_for(step, Duration::from_secs(120)).await, "the previous release never delivered");

    // This release's migrate, while the old workers deliver.
    let (errors_before, migrated_at) = (errors(&old_workers).await, chrono::Utc::now());
    let started = tokio::time::Instant::now();
    let (code, out, err) = run(binary(&db).arg("migrate"));
    let migrate_time = started.elapsed();
    assert_eq!(code, 0, "migrate failed beside the previous release: {out}{err}");
    assert_eq!(schema_version(&db).await, latest_migration());
    let new_workers: Vec<Worker> = (0..2).map(|i| Worker::start(&db, &format!("chaos-new{i}"), &env)).collect();
    // The old workers keep delivering on the new schema, beside the new ones.
    assert!(
        receiver.wait_for(receiver.count() + step / 4, Duration::from_secs(120)).await,
        "stalled after migrate: {}",
        queue_now(&db, &receiver).await
    );
    let old_errors = errors(&old_workers).await - errors_before;
    let mut old_logs = String::new();
    // Rolling: one old worker at a time gets SIGTERM and drains; the rest carry on.
    while let Some(mut worker) = old_workers.pop() {
        assert!(worker.alive(), "{} exited before its SIGTERM:\n{}", worker.name, worker.log_text());
        worker.terminate();
        old_logs.push_str(&std::fs::read_to_string(&worker.log).unwrap_or_default());
        let _ = std::fs::remove_file(&worker.log);
        assert!(
            receiver.wait_for(receiver.count() + step / 4, Duration::from_secs(120)).await,
            "stalled after a stop: {}",
            queue_now(&db, &receiver).await
        );
    }
    // Protection may spread a rate-limited backlog over several minutes (docs/protection.md).
    drained(&db, Duration::from_secs(if long_profile() { 900 } else { 300 })).await;

    let by_old_after_migrate = db
        .count(&format!(
            "SELECT count(*) FROM webhook.delivery_attempts WHERE worker_id LIKE 'chaos-old%' AND attempted_at > '{}'",
            migrated_at.to_rfc3339()
        ))
        .await;
    let by_new = db.count("SELECT count(*) FROM webhook.delivery_attempts WHERE worker_id LIKE 'chaos-new%'").await;
    let (distinct, answered_ok) = delivered(&receiver);
    let stuck = stuck(&db).await;
    let new_errors = errors(&new_workers).await;
    let old_error_lines = lines_at(&old_logs, "ERROR");
    eprintln!(
        "rolling upgrade: {total} deliveries at {per_second}/s; previous release built in {:.0} s (0: cached); migrate \
         {PREVIOUS_SCHEMA} -> {} took {:.2} s beside 2 old workers; attempts by old workers after migrate {by_old_after_migrate}, \
         by new workers {by_new}; database errors: old workers {old_errors} during the migration, new workers {new_errors}; \
         ERROR lines in the old workers' logs {}; delivered {distinct}, duplicates {}, stuck {stuck}",
        build_time.as_secs_f64(),
        latest_migration(),
        migrate_time.as_secs_f64(),
        old_error_lines.len(),
        answered_ok - distinct
    );
    assert_eq!(distinct, usize::try_from(total).unwrap(), "nothing lost");
    assert_eq!(db.count("SELECT count(*) FROM webhook.dead_letters").await, 0);
    assert_eq!(stuck, 0);
    assert!(by_old_after_migrate > 0, "the previous release delivered on the new schema");
    assert!(by_new > 0, "this release delivered");
    assert!(old_errors == 0.0, "the old workers counted {old_errors} database errors during the migration");
    assert!(old_error_lines.is_empty(), "the old workers logged errors:\n{}", old_error_lines.join("\n"));
    assert_eq!(new_errors, 0.0, "the new workers counted database errors");
    // SIGTERM drains (the old workers hand back what they could not finish): no duplicates expected;
    // bounded by one worker's concurrency per stop.
    assert!(answered_ok - distinct <= 2 * 256, "{} duplicates", answered_ok - distinct);
    new_workers.into_iter().for_each(Worker::stop);
}
