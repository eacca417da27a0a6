//! The queue protocol: claims lock, completions are fenced, leases expire, migrations are safe.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use webhook_worker::engine::completion::{Completion, Facts, Step};
use webhook_worker::engine::queue::{self, ScanFrom, ScanPosition};
use webhook_worker::policy::states::DeliveryOutcome;
use webhook_worker::testkit::receiver::Receiver;

use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, settings, wait_until};

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_are_locked_when_claimed() {
    let db = TestDb::new().await;
    let (id, _) = endpoint(&db.pool, "http://127.0.0.1:9/").await;
    insert_deliveries(&db.pool, id, 2000).await;
    let claimers = 8;
    let barrier = Arc::new(Barrier::new(claimers));
    let mut tasks = Vec::new();
    for n in 0..claimers {
        let pool = db.pool.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            loop {
                let batch = queue::claim_batch(&pool, &format!("w{n}"), 50, LEASE, 1 << 20).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(seen.insert(id), "delivery {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 2000);
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries WHERE state = 'running' AND attempt = 1").await, 2000);
}

#[tokio::test]
async fn a_claim_takes_no_more_than_asked_and_oldest_first() {
    let db = TestDb::new().await;
    let (id, _) = endpoint(&db.pool, "http://127.0.0.1:9/").await;
    insert_deliveries(&db.pool, id, 10).await;
    sqlx::query("UPDATE webhook.deliveries SET run_at = now() + interval '1 hour' WHERE id % 2 = 0")
        .execute(&db.pool)
        .await
        .unwrap();
    let batch = queue::claim_batch(&db.pool, "w", 3, LEASE, 1 << 20).await.unwrap();
    assert_eq!(batch.len(), 3);
    let ids: Vec<i64> = batch.iter().map(|d| d.id).collect();
    assert!(ids.iter().all(|id| id % 2 == 1), "claimed a delivery scheduled for later: {ids:?}");
    let rest = queue::claim_batch(&db.pool, "w", 100, LEASE, 1 << 20).await.unwrap();
    assert_eq!(rest.len(), 2, "only the 5 ready deliveries are claimable");
}

#[tokio::test]
async fn a_claimer_resumes_at_its_position_and_rewinds_for_rows_due_behind_it() {
    let db = TestDb::new().await;
    let (id, _) = endpoint(&db.pool, "http://127.0.0.1:9/").await;
    insert_deliveries(&db.pool, id, 10).await;
    let claim = queue::Claim { worker_id: "w", limit: 4, lease: LEASE, max_payload_bytes: 1 << 20 };
    let mut position = ScanPosition::default();
    let now = tokio::time::Instant::now();
    assert_eq!(position.scan_from(now), ScanFrom::Start);
    let first = queue::claim_batch_from(&db.pool, &claim, ScanFrom::Start).await.unwrap();
    position.claimed(ScanFrom::Start, &first, 4, now);
    let from = position.scan_from(now);
    let oldest = first.iter().map(|d| (d.run_at, d.id)).min().unwrap();
    assert_eq!(from, ScanFrom::After(oldest.0, oldest.1), "resumes where its batch began");

    // A row due long ago appears behind the position (a producer's long transaction).
    sqlx::query(
        "INSERT INTO webhook.deliveries (endpoint_id, event_type, payload, run_at) \
         VALUES ($1, 'late', '{}', now() - interval '1 hour')",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
    let second = queue::claim_batch_from(&db.pool, &claim, from).await.unwrap();
    assert_eq!(second.len(), 4);
    assert!(second.iter().all(|d| d.event_type != "late"), "the scan starts at the position");
    assert!(second.iter().all(|d| (d.run_at, d.id) > oldest), "and after it");
    position.claimed(from, &second, 4, now);

    // The position takes time as an argument: one rewind interval later.
    let later = now + ScanPosition::REWIND;
    let from = position.scan_from(later);
    assert_eq!(from, ScanFrom::Start, "rewinds after {:?}", ScanPosition::REWIND);
    let third = queue::claim_batch_from(&db.pool, &claim, from).await.unwrap();
    assert_eq!(third.first().map(|d| d.event_type.as_str()), Some("late"), "the late row is first from the start");
    position.claimed(from, &third, 4, later);
    assert_eq!(third.len(), 3, "2 original rows and the late one were left");
    assert_eq!(position.scan_from(later), ScanFrom::Start, "a short claim rewinds at once");
}

fn completion(d: &queue::ClaimedDelivery, step: Step) -> Completion {
    let facts =
        Facts { elapsed: Duration::from_millis(1), status_code: Some(200), ..Facts::none(DeliveryOutcome::Delivered) };
    Completion::new(d, step, facts)
}

async fn complete(db: &TestDb, worker: &str, batch: &[Completion]) -> i64 {
    queue::complete_batch(&db.pool, worker, batch).await.unwrap().applied
}

#[tokio::test]
async fn stale_lease_cannot_complete_delivery() {
    let db = TestDb::new().await;
    let (id, _) = endpoint(&db.pool, "http://127.0.0.1:9/").await;
    insert_deliveries(&db.pool, id, 1).await;
    let first = queue::claim_batch(&db.pool, "old", 10, LEASE, 1 << 20).await.unwrap().remove(0);
    // The old worker stalls past its lease; the leader reaps, and another worker claims.
    sqlx::query("UPDATE webhook.deliveries SET lease_expires_at = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(queue::reap_expired_leases(&db.pool, 100, 8).await.unwrap(), 1);
    // A completion from the stale worker right after the reap changes nothing…
    assert_eq!(complete(&db, "old", &[completion(&first, Step::Delivered)]).await, 0);
    let second = queue::claim_batch(&db.pool, "new", 10, LEASE, 1 << 20).await.unwrap().remove(0);
    assert_eq!(second.id, first.id);
    assert!(second.lease_token > first.lease_token + 1, "claim and reap each bump the token");
    // …nor while the new worker holds the lease.
    assert_eq!(complete(&db, "old", &[completion(&first, Step::Dead { disable_endpoint: None })]).await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM webhook.deliveries WHERE state = 'running' AND leased_by = 'new'").await,
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook.dead_letters").await, 0);
    // The current holder completes.
    assert_eq!(complete(&db, "new", &[completion(&second, Step::Delivered)]).await, 1);
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 0);
}

#[tokio::test]
async fn expired_lease_is_delivered_again() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/hook")).await;
    receiver.expect_secrets("/hook", vec![secret]);
    insert_deliveries(&db.pool, id, 1).await;
    // A worker that claimed it and then died: its lease runs out.
    queue::claim_batch(&db.pool, "crashed-worker", 10, LEASE, 1 << 20).await.unwrap();
    sqlx::query("UPDATE webhook.deliveries SET lease_expires_at = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    let worker = TestWorker::start(settings(&db, "1h"));
    assert!(receiver.wait_for(1, Duration::from_secs(20)).await, "the reaped delivery was not delivered");
    worker.stop().await;
    let got = receiver.received();
    assert!(got[0].valid);
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 0);
    assert_eq!(
        db.count("SELECT max(attempt)::bigint FROM webhook.delivery_attempts").await,
        2,
        "the crashed attempt counts"
    );
}

#[tokio::test]
async fn a_reaped_delivery_past_its_last_attempt_becomes_a_dead_letter() {
    let db = TestDb::new().await;
    let (id, _) = endpoint(&db.pool, "http://127.0.0.1:9/").await;
    insert_deliveries(&db.pool, id, 1).await;
    queue::claim_batch(&db.pool, "crashed-worker", 10, LEASE, 1 << 20).await.unwrap();
    sqlx::query("UPDATE webhook.deliveries SET lease_expires_at = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(queue::reap_expired_leases(&db.pool, 100, 1).await.unwrap(), 1);
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM webhook.dead_letters").fetch_one(&db.pool).await.unwrap();
    assert_eq!(error, "the lease of worker crashed-worker expired during the last allowed attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_deliver_ten_thousand_deliveries_exactly_once() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let mut endpoints = Vec::new();
    for n in 0..10 {
        let path = format!("/e{n}");
        let (id, secret) = endpoint(&db.pool, &receiver.url(&path)).await;
        receiver.expect_secrets(&path, vec![secret]);
        endpoints.push(id);
    }
    for id in &endpoints {
        insert_deliveries(&db.pool, *id, 1000).await;
    }
    let workers: Vec<TestWorker> = (0..4).map(|_| TestWorker::start(settings(&db, "1h"))).collect();
    assert!(receiver.wait_for(10_000, Duration::from_secs(240)).await, "only {} arrived", receiver.count());
    for worker in workers {
        worker.stop().await;
    }
    let received = receiver.received();
    assert_eq!(received.len(), 10_000, "a delivery arrived twice");
    let distinct: HashSet<(&str, &str)> = received.iter().map(|r| (r.path.as_str(), r.msg_id.as_str())).collect();
    assert_eq!(distinct.len(), 10_000);
    assert!(received.iter().all(|r| r.valid), "every signature verifies");
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM webhook.delivery_attempts WHERE outcome = 'delivered'").await, 10_000);
    assert_eq!(
        db.count("SELECT count(DISTINCT worker_id) FROM webhook.delivery_attempts").await,
        4,
        "all four workers took part"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_safe_to_run_twice_and_concurrently() {
    let db = TestDb::empty().await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move { webhook_worker::db::migrate(&pool).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap().expect("a concurrent migration failed");
    }
    webhook_worker::db::migrate(&db.pool).await.expect("a second migration failed");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook._sqlx_migrations WHERE success").await,
        crate::support::migration_count()
    );
    wait_until(&db.pool, "SELECT to_regclass('webhook.deliveries') IS NOT NULL", Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_spread_again_at_the_same_pace_is_not_rewritten() {
    let db = TestDb::new().await;
    let (id, _) = endpoint(&db.pool, "http://127.0.0.1:9/").await;
    insert_deliveries(&db.pool, id, 1000).await;
    let horizon = Duration::from_secs(3600);
    // A second apart: the time that passes between the statements is small beside it.
    let first = queue::spread_backlog(&db.pool, id, 1000.0, horizon).await.unwrap();
    assert_eq!((first.moved, first.later), (1000, 1000), "the ready backlog is spread a second apart");
    let again = queue::spread_backlog(&db.pool, id, 1000.0, horizon).await.unwrap();
    assert!(again.moved < 10, "spread again at the same pace, {} of 1000 rows were rewritten", again.moved);
    // A backlog that fell behind: one more row is due now, ahead of it, which shifts every row by a
    // second. Only the rows less than about ten seconds ahead are off by more than a tenth.
    insert_deliveries(&db.pool, id, 1).await;
    let behind = queue::spread_backlog(&db.pool, id, 1000.0, horizon).await.unwrap();
    assert!((1..100).contains(&behind.moved), "{} rows rewritten for one new one", behind.moved);
    let faster = queue::spread_backlog(&db.pool, id, 100.0, horizon).await.unwrap();
    // Row n moves from about n s to n / 10 s: all but the first one or two.
    assert!((950..=1001).contains(&faster.moved), "a faster pace brings {} rows sooner", faster.moved);
    assert!(faster.later < 10, "only rows that had come due are placed later: {}", faster.later);
    let last =
        db.count("SELECT (extract(epoch FROM max(run_at) - now()) * 1000)::bigint FROM webhook.deliveries").await;
    assert!(last < 150_000, "the last row is due {last} ms from now, within the faster spread's 100 s");
}

/// Our statements are short; JIT compiling them cost the leader 18 ms a call (BENCHMARKS.md).
#[tokio::test]
async fn every_session_of_ours_runs_without_jit() {
    let db = TestDb::new().await;
    let url = secrecy::SecretString::from(db.url.clone());
    let pool = webhook_worker::db::pool(&url, 2).unwrap();
    let pooled: String = sqlx::query_scalar("SHOW jit").fetch_one(&pool).await.unwrap();
    assert_eq!(pooled, "off", "a pooled session");
    let mut leader = webhook_worker::db::connect(&webhook_worker::db::options(&url).unwrap()).await.unwrap();
    let own: String = sqlx::query_scalar("SHOW jit").fetch_one(&mut leader).await.unwrap();
    assert_eq!(own, "off", "a session of its own (the maintenance leader's)");
    pool.close().await;
}
