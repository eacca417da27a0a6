//! Deliveries after the fact: list, show, replay, queue statistics, retention, FIFO ordering.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde_json::Value;
use webhook_worker::testkit::receiver::{Answer, Receiver};

use crate::support::cli::{binary, json, run};
use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, settings, wait_until};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn dead_letters_are_listed_shown_and_replayed_once_with_the_same_webhook_id() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/d")).await;
    receiver.expect_secrets("/d", vec![secret]);
    receiver.answer("/d", Answer { status: 500, ..Answer::default() });
    insert_deliveries(&db.pool, id, 3).await;
    let worker = TestWorker::start(settings(&db, "0s"));
    wait_until(&db.pool, "SELECT count(*) = 3 FROM webhook.dead_letters", WAIT).await;
    worker.stop().await;

    let dead = json(&["delivery", "list", "--state", "dead", "--endpoint", &id.to_string(), "--json"], &db);
    assert_eq!(dead.as_array().unwrap().len(), 3);
    let first = dead[2]["id"].as_i64().unwrap();
    let message_id = dead[2]["message_id"].as_str().unwrap().to_owned();
    let shown = json(&["delivery", "show", &first.to_string(), "--json"], &db);
    assert_eq!(shown["state"], "dead");
    assert_eq!(shown["payload_bytes"], 9);
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1]["status_code"], 500);
    assert_eq!(attempts[1]["response_excerpt"], "500\n");
    let (code, text, _) = run(binary(&db).args(["delivery", "show", &first.to_string()]));
    assert_eq!(code, 0);
    assert!(text.contains("attempts (2):") && text.contains("HTTP 500"), "{text}");

    // Replay one: a new delivery with the same message id; replaying again changes nothing.
    receiver.answer("/d", Answer::default());
    let replayed = json(&["delivery", "replay", &first.to_string(), "--json"], &db);
    let new_id = replayed["replayed"][0][1].as_i64().unwrap();
    let again = json(&["delivery", "replay", &first.to_string(), "--json"], &db);
    assert_eq!(again["already_replayed"][0], serde_json::json!([first, new_id]));
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 1);
    // Replay the endpoint's remaining dead letters.
    let rest = json(&["delivery", "replay", "--endpoint", &id.to_string(), "--json"], &db);
    assert_eq!(rest["replayed"].as_array().unwrap().len(), 2);
    assert_eq!(rest["already_replayed"].as_array().unwrap().len(), 1);
    let worker = TestWorker::start(settings(&db, "0s"));
    assert!(receiver.wait_for(9, WAIT).await);
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", WAIT).await;
    worker.stop().await;
    let replayed_ids: Vec<String> = receiver.received().into_iter().skip(6).map(|r| r.msg_id).collect();
    assert!(replayed_ids.contains(&message_id), "the replay keeps the webhook-id");

    // Error cases: a delivered delivery, a queued one, an unknown id, no selector.
    let (code, _, err) = run(binary(&db).args(["delivery", "replay", &new_id.to_string()]));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("delivery {new_id} was delivered; delivered payloads are not kept")), "{err}");
    insert_deliveries(&db.pool, id, 1).await;
    let queued: i64 = sqlx::query_scalar("SELECT id FROM webhook.deliveries").fetch_one(&db.pool).await.unwrap();
    let (code, _, err) = run(binary(&db).args(["delivery", "replay", &queued.to_string()]));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("delivery {queued} is still in the queue (pending)")), "{err}");
    let (code, _, err) = run(binary(&db).args(["delivery", "show", "999999"]));
    assert_eq!((code, err.trim()), (1, "error: no delivery with id 999999"));
    let (code, _, _) = run(binary(&db).args(["delivery", "replay"]));
    assert_eq!(code, 2);
    let (code, _, err) = run(binary(&db).args(["delivery", "list", "--state", "lost"]));
    assert_eq!(code, 1);
    assert!(err.contains("state must be one of"), "{err}");
    let delivered = json(&["delivery", "list", "--state", "delivered", "--since", "1h", "--json"], &db);
    assert_eq!(delivered.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn queue_stats_answer_how_deep_how_old_and_who() {
    let db = TestDb::new().await;
    let (busy, _) = endpoint(&db.pool, "https://busy.example.com/").await;
    let (quiet, _) = endpoint(&db.pool, "https://quiet.example.com/").await;
    insert_deliveries(&db.pool, busy, 7).await;
    insert_deliveries(&db.pool, quiet, 2).await;
    sqlx::query("UPDATE webhook.deliveries SET created_at = now() - interval '5 minutes', run_at = now() - interval '5 minutes' WHERE endpoint_id = $1")
        .bind(quiet)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE webhook.deliveries SET run_at = now() + interval '1 hour' WHERE id IN (SELECT id FROM webhook.deliveries WHERE endpoint_id = $1 LIMIT 3)")
        .bind(busy)
        .execute(&db.pool)
        .await
        .unwrap();
    let stats = json(&["queue", "stats", "--json"], &db);
    assert_eq!(
        (stats["ready"].as_i64(), stats["scheduled"].as_i64(), stats["running"].as_i64()),
        (Some(6), Some(3), Some(0))
    );
    let age = stats["oldest_ready_age_seconds"].as_f64().unwrap();
    assert!((299.0..320.0).contains(&age), "{age}");
    assert_eq!(stats["top_backlog"][0]["endpoint_id"], busy.to_string());
    assert_eq!(stats["top_backlog"][0]["count"], 7);
    let (code, text, _) = run(binary(&db).args(["queue", "stats"]));
    assert_eq!(code, 0);
    assert!(text.contains("ready:              6") && text.contains("https://busy.example.com/"), "{text}");
}

#[tokio::test]
async fn retention_drops_old_history_and_keeps_partitions_ahead() {
    let db = TestDb::new().await;
    let today = Utc::now().date_naive();
    let mut conn = db.pool.acquire().await.unwrap();
    // History from 30 and 10 days ago (partitions created as the leader would have then).
    for days in [30, 10] {
        webhook_worker::engine::maintenance::ensure_partitions(&mut conn, today - chrono::Duration::days(days))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO webhook.delivery_attempts (delivery_id, message_id, endpoint_id, attempt, attempted_at, duration_ms, outcome, worker_id) \
             VALUES ($1, 'msg_old', gen_random_uuid(), 1, now() - make_interval(days => $1::int), 5, 'delivered', 'w')",
        )
        .bind(days)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO webhook.dead_letters (delivery_id, message_id, endpoint_id, event_type, payload, attempts, enqueued_at, failed_at, last_error) \
                 VALUES (1, 'm', gen_random_uuid(), 'x', '{}', 8, now() - interval '40 days', now() - interval '40 days', 'old'), \
                        (2, 'm', gen_random_uuid(), 'x', '{}', 8, now() - interval '1 day', now() - interval '1 day', 'recent')")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO webhook.idempotency_keys (key, message_id, created_at) VALUES ('old', 'm', now() - interval '8 days'), ('new', 'm', now())")
        .execute(&mut *conn)
        .await
        .unwrap();
    let retention = settings(&db, "1h").maintenance.retention;
    webhook_worker::engine::maintenance::ensure_partitions(&mut conn, today).await.unwrap();
    webhook_worker::engine::maintenance::apply_retention(&mut conn, &retention, today).await.unwrap();
    drop(conn);
    let partition = |day: NaiveDate| {
        format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'webhook' AND tablename = 'delivery_attempts_{}'",
            day.format("%Y%m%d")
        )
    };
    assert_eq!(
        db.count(&partition(today - chrono::Duration::days(30))).await,
        0,
        "beyond the 14-day retention: dropped"
    );
    assert_eq!(db.count(&partition(today - chrono::Duration::days(10))).await, 1, "within the retention: kept");
    for ahead in 0..=7 {
        assert_eq!(
            db.count(&partition(today + chrono::Duration::days(ahead))).await,
            1,
            "partition {ahead} days ahead exists"
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM webhook.delivery_attempts WHERE delivery_id = 10").await,
        1,
        "10-day-old attempts stay queryable"
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook.delivery_attempts WHERE delivery_id = 30").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM webhook.dead_letters").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM webhook.idempotency_keys").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_endpoint_receives_in_enqueue_order_despite_failures_and_several_workers() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/fifo")).await;
    receiver.expect_secrets("/fifo", vec![secret]);
    receiver.answer("/fifo", Answer { fail_first: 2, ..Answer::default() });
    sqlx::query("UPDATE webhook.endpoints SET ordered = true").execute(&db.pool).await.unwrap();
    // An unordered neighbour must not be held back.
    let (free, free_secret) = endpoint(&db.pool, &receiver.url("/free")).await;
    receiver.expect_secrets("/free", vec![free_secret]);
    insert_deliveries(&db.pool, id, 30).await;
    insert_deliveries(&db.pool, free, 30).await;
    let workers: Vec<TestWorker> = (0..3).map(|_| TestWorker::start(settings(&db, "0s,0s,0s"))).collect();
    assert!(receiver.wait_for(62, WAIT).await, "only {} arrived", receiver.count());
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", WAIT).await;
    for worker in workers {
        worker.stop().await;
    }
    let order: Vec<i64> = receiver
        .received()
        .iter()
        .filter(|r| r.path == "/fifo")
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["n"].as_i64().unwrap())
        .collect();
    let mut expected = vec![1, 1];
    expected.extend(1..=30);
    assert_eq!(order, expected, "the head failed twice, then everything in enqueue order");
    assert_eq!(receiver.received().iter().filter(|r| r.path == "/free").count(), 30);
}
