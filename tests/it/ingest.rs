//! The API's message writer against real Postgres: concurrent messages go out in one statement,
//! in arrival order, each to its own application only; a message Postgres refuses fails alone.

use futures_util::future::join_all;
use webhook_worker::admin::endpoints::{self, Changes};
use webhook_worker::admin::ids::Scope;
use webhook_worker::admin::message_batch::Batched;
use webhook_worker::api::error::ApiError;
use webhook_worker::api::ingest::Ingest;
use webhook_worker::policy::crypto::KeyRing;
use webhook_worker::policy::signing::SigningSecret;

use crate::support::TestDb;
use crate::support::worker::key_ring_text;

/// Applications `uid`s, each with one endpoint; returns their ids.
async fn applications(db: &TestDb, uids: &[&str]) -> Vec<uuid::Uuid> {
    let key_ring = KeyRing::parse(key_ring_text()).unwrap();
    let mut ids = Vec::new();
    for uid in uids {
        let settings = webhook_worker::admin::applications::Settings {
            name: (*uid).to_owned(),
            uid: Some((*uid).to_owned()),
            ..Default::default()
        };
        let (app, _) =
            webhook_worker::admin::applications::create(&db.pool, Scope::All, &settings, false).await.unwrap();
        let changes = Changes {
            url: Some(format!("https://{uid}.example/hook")),
            application: Some(app.id),
            ..Changes::default()
        };
        endpoints::create(&db.pool, &key_ring, &changes, &SigningSecret::generate()).await.unwrap();
        ids.push(app.id);
    }
    ids
}

fn message(reference: &str, scope: Scope, event_type: &str, n: usize) -> Batched {
    Batched {
        reference: reference.to_owned(),
        scope,
        event_type: event_type.to_owned(),
        payload: format!(r#"{{"n": {n}}}"#),
        event_id: None,
    }
}

// On this single-threaded runtime every send below is queued before the writer task first runs,
// so they all meet in one batch.
#[tokio::test]
async fn concurrent_messages_share_one_statement_in_arrival_order_and_stay_in_their_application() {
    let db = TestDb::new().await;
    let apps = applications(&db, &["acme", "other"]).await;
    let ingest = Ingest::start(db.pool.clone(), 1);
    let mut batch: Vec<Batched> =
        (0..60).map(|n| message(if n % 3 == 0 { "other" } else { "acme" }, Scope::All, "invoice.paid", n)).collect();
    batch.push(message("nobody", Scope::All, "invoice.paid", 60));
    batch.push(message("other", Scope::Application(apps[0]), "invoice.paid", 61));
    let replies = join_all(batch.into_iter().map(|m| ingest.send(m))).await;
    for (n, reply) in replies.iter().enumerate().take(60) {
        let sent = reply.as_ref().unwrap().as_ref().unwrap_or_else(|| panic!("message {n} was not sent"));
        assert_eq!(sent.deliveries, 1, "message {n} reaches its application's one endpoint");
    }
    assert!(matches!(replies[60], Ok(None)), "an unknown application: {:?}", replies[60]);
    assert!(matches!(replies[61], Ok(None)), "outside the caller's scope, as if unknown: {:?}", replies[61]);
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT created_at) FROM webhook.messages")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(transactions, 1, "the sixty messages were written by one statement");
    let order: Vec<(i64, uuid::Uuid)> = sqlx::query_as(
        "SELECT (d.payload->>'n')::bigint, e.application_id FROM webhook.deliveries d \
         JOIN webhook.endpoints e ON e.id = d.endpoint_id ORDER BY d.id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected: Vec<(i64, uuid::Uuid)> = (0..60).map(|n| (n, if n % 3 == 0 { apps[1] } else { apps[0] })).collect();
    assert_eq!(order, expected, "queued in arrival order, each for its own application");
}

#[tokio::test]
async fn a_message_postgres_refuses_fails_alone_and_the_rest_of_its_batch_is_sent() {
    let db = TestDb::new().await;
    applications(&db, &["acme"]).await;
    let ingest = Ingest::start(db.pool.clone(), 1);
    let mut batch: Vec<Batched> = (0..20).map(|n| message("acme", Scope::All, "invoice.paid", n)).collect();
    // Text cannot hold a NUL byte: Postgres refuses the value, and with it the batch's statement.
    batch[7] = message("acme", Scope::All, "invoice\0paid", 7);
    let replies = join_all(batch.into_iter().map(|m| ingest.send(m))).await;
    assert!(matches!(replies[7], Err(ApiError::Invalid { .. })), "a 422 for the message at fault: {:?}", replies[7]);
    for (n, reply) in replies.iter().enumerate().filter(|(n, _)| *n != 7) {
        assert!(matches!(reply, Ok(Some(_))), "message {n} is sent: {reply:?}");
    }
    let stored: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM webhook.messages), (SELECT count(*) FROM webhook.deliveries)")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, (19, 19), "every other message is stored and queued once");
}
