//! Every backend of every worker terminated (`pg_terminate_backend`), again and again, mid-run:
//! pooled connections, the LISTEN connection and the leader's lock connection alike.

use std::time::Duration;

use webhook_worker::testkit::receiver::{Answer, Receiver};

use super::{Worker, drained, leaders, stuck};
use crate::faults::{delivered, long_profile, readyz};
use crate::support::{TestDb, endpoint, insert_deliveries};

/// Terminates the workers' backends; returns how many, and whether the LISTEN and the leader's
/// connection were among them.
async fn terminate_worker_backends(db: &TestDb) -> (i64, bool, bool) {
    let (killed, listen, leader): (i64, bool, bool) = sqlx::query_as(
        "WITH victims AS ( \
             SELECT a.pid, a.query LIKE 'LISTEN%' AS listen, \
                    EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted) AS leader \
             FROM pg_stat_activity a \
             WHERE a.datname = current_database() AND a.application_name LIKE 'chaos-%') \
         SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)), coalesce(bool_or(listen), false), \
                coalesce(bool_or(leader), false) FROM victims",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (killed, listen, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_lose_nothing_and_need_no_worker_restart() {
    let (total, rounds) = if long_profile() { (40_000, 30) } else { (5_000, 6) };
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    for n in 0..10 {
        let path = format!("/b{n}");
        let (id, _) = endpoint(&db.pool, &receiver.url(&path)).await;
        receiver.answer(&path, Answer { fail_ratio: 0.05, ..Answer::default() });
        insert_deliveries(&db.pool, id, total / 10).await;
    }
    // Paced so that the terminations land while deliveries are in flight.
    sqlx::query("UPDATE webhook.endpoints SET rate_limit_per_second = $1, rate_limit_burst = 10")
        .bind(i32::try_from(total / 10 / i64::try_from(rounds + 2).unwrap()).unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
    let env = [("RUST_LOG", "warn")];
    let mut workers: Vec<Worker> = (0..3).map(|i| Worker::start(&db, &format!("chaos-b{i}"), &env)).collect();
    let (mut terminated, mut hit_listen, mut hit_leader) = (0, false, false);
    for round in 1..=rounds {
        let progress = round * usize::try_from(total).unwrap() / (rounds + 2);
        assert!(
            receiver.wait_for(progress, Duration::from_secs(120)).await,
            "stalled before {progress} (round {round})"
        );
        let (killed, listen, leader) = terminate_worker_backends(&db).await;
        terminated += killed;
        hit_listen |= listen;
        hit_leader |= leader;
    }
    drained(&db, Duration::from_secs(180)).await;
    for worker in &mut workers {
        assert!(worker.alive(), "{} exited; its log:\n{}", worker.name, worker.log_text());
        assert!(readyz(worker.port, 200, Duration::from_secs(30)).await, "{} is not ready again", worker.name);
    }
    let errors: f64 = {
        let mut sum = 0.0;
        for worker in &workers {
            sum += worker.counter("webhook_database_errors_total").await;
        }
        sum
    };
    crate::support::wait_until(
        &db.pool,
        "SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        Duration::from_secs(30),
    )
    .await;
    let leader = leaders(&db).await;
    let (distinct, answered_ok) = delivered(&receiver);
    let dead = usize::try_from(db.count("SELECT count(*) FROM webhook.dead_letters").await).unwrap();
    let stuck = stuck(&db).await;
    let logs: String = workers.iter().map(Worker::log_text).collect();
    let log_lines = logs.lines().count();
    eprintln!(
        "backend kills: {total} deliveries, {rounds} rounds, {terminated} backends terminated (LISTEN: {hit_listen}, \
         leader: {hit_leader}), delivered {distinct}, dead {dead}, duplicates {}, stuck {stuck}, database errors counted \
         {errors}, log lines {log_lines}, leader now {leader:?}",
        answered_ok - distinct
    );
    assert_eq!(distinct + dead, usize::try_from(total).unwrap(), "nothing lost");
    assert_eq!(dead, 0, "no delivery was dead-lettered by a database fault");
    assert_eq!(stuck, 0);
    assert!(hit_listen && hit_leader, "the LISTEN and leader connections were among the terminated");
    assert!(errors > 0.0, "the operator sees the errors in webhook_database_errors_total");
    assert!(
        logs.contains("terminating connection due to administrator command"),
        "the workers' logs name the cause:\n{}",
        logs.lines().take(10).collect::<Vec<_>>().join("\n")
    );
    // A terminated connection can cost what it had answered and not committed: bounded by the
    // in-flight work of every worker at each round.
    assert!(answered_ok - distinct <= rounds * 3 * 256, "{} duplicates", answered_ok - distinct);
    workers.into_iter().for_each(Worker::stop);
}
