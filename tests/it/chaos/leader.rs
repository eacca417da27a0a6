//! The maintenance leader SIGKILLed again and again under load: exactly one leader at a time,
//! and what only the leader does — reaping the dead leader's leases, queue statistics, partition
//! creation, retention — carries on.

use std::time::Duration;

use webhook_worker::testkit::receiver::Receiver;

use super::{Worker, drained, leaders, stuck};
use crate::faults::{delivered, long_profile};
use crate::support::{TestDb, endpoint, insert_deliveries, wait_until};

/// Waits for one of `live` to lead and returns its name, checking on every look that there is
/// at most one leader (a SIGKILLed leader holds the lock until its backend sees the socket close).
async fn the_leader(db: &TestDb, live: &[Worker]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let holders = leaders(db).await;
        assert!(holders.len() <= 1, "two leaders at once: {holders:?}");
        if let Some(name) = holders.into_iter().next().filter(|name| live.iter().any(|w| &w.name == name)) {
            return name;
        }
        assert!(tokio::time::Instant::now() < deadline, "no live leader for a minute");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Work only a leader does, made right after a leader died: an expired dead letter to delete
/// and a future partition to create again.
async fn leaders_work(db: &TestDb, endpoint: uuid::Uuid, future: &str) {
    sqlx::query(
        "INSERT INTO webhook.dead_letters (delivery_id, message_id, endpoint_id, event_type, payload, attempts, \
         enqueued_at, failed_at, last_error) VALUES (-1, 'msg_old', $1, 'e', '{}', 1, now() - interval '90 days', \
         now() - interval '90 days', 'old')",
    )
    .bind(endpoint)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE webhook.delivery_attempts_{future}")))
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_maintenance_to_exactly_one_other_worker() {
    let (total, kills) = if long_profile() { (30_000, 20) } else { (4_000, 4) };
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, _) = endpoint(&db.pool, &receiver.url("/lead")).await;
    insert_deliveries(&db.pool, id, total).await;
    // Paced to outlast the kills (the fault settings lease for 7 s, so dead claims come back soon).
    let per_second = i32::try_from(total / (i64::from(kills) * 4)).unwrap();
    sqlx::query("UPDATE webhook.endpoints SET rate_limit_per_second = $1, rate_limit_burst = 5")
        .bind(per_second)
        .execute(&db.pool)
        .await
        .unwrap();
    let env: [(&str, &str); 0] = [];
    let mut workers: Vec<Worker> = (0..3).map(|i| Worker::start(&db, &format!("chaos-l{i}"), &env)).collect();
    let future = (chrono::Utc::now() + chrono::TimeDelta::days(7)).format("%Y%m%d").to_string();
    let (mut next, mut killed) = (3, Vec::new());
    for round in 1..=kills {
        let leader = the_leader(&db, &workers).await;
        let at =
            usize::try_from(round).unwrap() * usize::try_from(total).unwrap() / (usize::try_from(kills).unwrap() + 2);
        assert!(receiver.wait_for(at, Duration::from_secs(120)).await, "stalled before {at}");
        let index = workers.iter().position(|w| w.name == leader).expect("the leader is one of ours");
        let mut victim = workers.remove(index);
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
        killed.push(victim.name.clone());
        let _ = std::fs::remove_file(&victim.log);
        workers.push(Worker::start(&db, &format!("chaos-l{next}"), &env));
        next += 1;
        if round == kills / 2 {
            leaders_work(&db, id, &future).await;
        }
    }
    let killed_at = chrono::Utc::now();
    let successor = the_leader(&db, &workers).await;
    drained(&db, Duration::from_secs(if long_profile() { 900 } else { 180 })).await;
    wait_until(
        &db.pool,
        &format!("SELECT to_regclass('webhook.delivery_attempts_{future}') IS NOT NULL"),
        Duration::from_secs(30),
    )
    .await;
    wait_until(
        &db.pool,
        "SELECT count(*) = 0 FROM webhook.dead_letters WHERE message_id = 'msg_old'",
        Duration::from_secs(30),
    )
    .await;
    let stats_after: bool = sqlx::query_scalar("SELECT max(computed_at) > $1 FROM webhook.queue_stats")
        .bind(killed_at)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let (distinct, answered_ok) = delivered(&receiver);
    let stuck = stuck(&db).await;
    eprintln!(
        "leader kills: {total} deliveries, {kills} leaders SIGKILLed ({killed:?}), leader now {successor}, delivered \
         {distinct}, duplicates {}, stuck {stuck}",
        answered_ok - distinct
    );
    assert_eq!(distinct, usize::try_from(total).unwrap(), "nothing lost: the dead leaders' leases were reaped");
    assert_eq!(stuck, 0);
    assert!(stats_after, "queue statistics are computed by the new leader");
    assert!(!killed.contains(&successor), "a killed worker cannot lead");
    assert_eq!(the_leader(&db, &workers).await, successor, "still exactly one leader");
    workers.into_iter().for_each(Worker::stop);
}
