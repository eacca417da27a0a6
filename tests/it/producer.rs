//! The producer surface: plain INSERT with defaults, the fan-out function, idempotency, wake-up.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::support::{TestDb, endpoint};

async fn subscribe(db: &TestDb, id: uuid::Uuid, types: &[&str]) {
    sqlx::query("UPDATE webhook.endpoints SET event_types = $2 WHERE id = $1")
        .bind(id)
        .bind(types)
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_plain_insert_with_defaults_is_a_ready_delivery() {
    let db = TestDb::new().await;
    let (id, _) = endpoint(&db.pool, "https://hooks.example.com/").await;
    sqlx::query("INSERT INTO webhook.deliveries (endpoint_id, event_type, payload) VALUES ($1, 'a.b', '{\"x\": 1}')")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let (state, attempt, message_id, ready): (String, i32, String, bool) =
        sqlx::query_as("SELECT state, attempt, message_id, run_at <= now() FROM webhook.deliveries")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempt, ready), ("pending", 0, true));
    assert!(message_id.starts_with("msg_") && message_id.len() == 36, "{message_id}");
}

#[tokio::test]
async fn enqueue_fans_out_to_active_subscribed_endpoints_with_one_message_id() {
    let db = TestDb::new().await;
    let (orders, _) = endpoint(&db.pool, "https://a.example.com/").await;
    let (everything, _) = endpoint(&db.pool, "https://b.example.com/").await;
    let (users, _) = endpoint(&db.pool, "https://c.example.com/").await;
    let (disabled, _) = endpoint(&db.pool, "https://d.example.com/").await;
    subscribe(&db, orders, &["order.paid"]).await;
    subscribe(&db, users, &["user.created"]).await;
    sqlx::query("UPDATE webhook.endpoints SET state = 'disabled' WHERE id = $1")
        .bind(disabled)
        .execute(&db.pool)
        .await
        .unwrap();

    let (message_id, count, duplicate): (String, i32, bool) =
        sqlx::query_as("SELECT * FROM webhook.enqueue('order.paid', '{\"order\": 7}')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((count, duplicate), (2, false));
    let targets: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT endpoint_id FROM webhook.deliveries WHERE message_id = $1 ORDER BY endpoint_id")
            .bind(&message_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut expected = vec![orders, everything];
    expected.sort();
    assert_eq!(targets, expected);
    // Payload bytes are kept exactly as given (json, not jsonb).
    let payload: String =
        sqlx::query_scalar("SELECT payload::text FROM webhook.deliveries LIMIT 1").fetch_one(&db.pool).await.unwrap();
    assert_eq!(payload, "{\"order\": 7}");
    // A single endpoint can be targeted.
    let (_, count, _): (String, i32, bool) =
        sqlx::query_as("SELECT * FROM webhook.enqueue('order.paid', '{}', NULL, $1)")
            .bind(everything)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn enqueueing_the_same_idempotency_key_twice_is_a_no_op() {
    let db = TestDb::new().await;
    endpoint(&db.pool, "https://a.example.com/").await;
    let first: (String, i32, bool) =
        sqlx::query_as("SELECT * FROM webhook.enqueue('x', '{}', 'key-1')").fetch_one(&db.pool).await.unwrap();
    let second: (String, i32, bool) =
        sqlx::query_as("SELECT * FROM webhook.enqueue('x', '{}', 'key-1')").fetch_one(&db.pool).await.unwrap();
    assert_eq!(first.1, 1);
    assert_eq!(second, (first.0.clone(), 0, true), "the duplicate returns the first message id and enqueues nothing");
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 1);
}

#[tokio::test]
async fn inserts_notify_once_per_statement_not_per_row() {
    let db = TestDb::new().await;
    // tgtype bit 0 is FOR EACH ROW; the wake-up trigger must be a statement trigger.
    let per_row: bool =
        sqlx::query_scalar("SELECT (tgtype & 1) = 1 FROM pg_trigger WHERE tgname = 'deliveries_notify'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!per_row);
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen("webhook_deliveries").await.unwrap();
    let (id, _) = endpoint(&db.pool, "https://a.example.com/").await;
    crate::support::insert_deliveries(&db.pool, id, 500).await;
    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.expect("a notification").unwrap();
    assert_eq!(note.channel(), "webhook_deliveries");
}
