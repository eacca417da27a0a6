//! Applications from the command line: the tenant walkthrough of the README, tokens, and what
//! a plain INSERT or an unknown application does.

use std::time::Duration;

use webhook_worker::policy::signing::SigningSecret;
use webhook_worker::testkit::receiver::Receiver;

use crate::support::cli::{binary, json, run};
use crate::support::{TestDb, TestWorker, settings, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_walkthrough_works_from_the_command_line() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let app = json(&["app", "create", "--name", "Acme", "--uid", "acme", "--json"], &db);
    let app_id = app["id"].as_str().unwrap().to_owned();
    assert!(app_id.starts_with("app_"), "{app}");
    let again = json(&["app", "create", "--name", "Acme", "--uid", "acme", "--get-if-exists", "--json"], &db);
    assert_eq!(again["id"], app["id"], "get-if-exists returns the same application");
    let url = receiver.url("/acme");
    let endpoint =
        json(&["endpoint", "add", "--app", "acme", "--url", &url, "--event-type", "invoice.paid", "--json"], &db);
    let secret = SigningSecret::parse(endpoint["secret"].as_str().unwrap()).unwrap();
    receiver.expect_secrets("/acme", vec![secret]);
    // Another tenant subscribed to the same type must not receive Acme's event.
    json(&["app", "create", "--name", "Other", "--uid", "other", "--json"], &db);
    let other_url = receiver.url("/other");
    json(&["endpoint", "add", "--app", "other", "--url", &other_url, "--event-type", "invoice.paid", "--json"], &db);
    let listed = json(&["endpoint", "list", "--app", "acme", "--json"], &db);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let sent = json(
        &["enqueue", "--app", &app_id, "--event-type", "invoice.paid", "--payload", r#"{"amount":42}"#, "--json"],
        &db,
    );
    assert_eq!(sent["deliveries"], 1, "{sent}");
    let worker = TestWorker::start(settings(&db, "1s"));
    assert!(receiver.wait_for(1, Duration::from_secs(30)).await);
    wait_until(
        &db.pool,
        "SELECT count(*) = 1 FROM webhook.delivery_attempts WHERE outcome = 'delivered'",
        Duration::from_secs(30),
    )
    .await;
    worker.stop().await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!((received[0].path.as_str(), received[0].valid), ("/acme", true));
    let (code, _, err) = run(binary(&db).args(["enqueue", "--app", "nobody", "--event-type", "x", "--payload", "{}"]));
    assert_eq!(code, 1);
    assert!(err.contains("no application nobody"), "{err}");
}

#[tokio::test]
async fn tokens_are_shown_once_stored_as_hashes_and_revocable() {
    let db = TestDb::new().await;
    json(&["app", "create", "--name", "Acme", "--uid", "acme", "--json"], &db);
    let created = json(&["tokens", "create", "--name", "billing", "--app", "acme", "--json"], &db);
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("wdt_"), "{created}");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook.api_tokens WHERE token_sha256 = sha256($1::bytea)")
            .bind(token.as_bytes())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1, "the token is stored as its SHA-256");
    let (_, listing, _) = run(binary(&db).args(["tokens", "list"]));
    assert!(!listing.contains(&token) && listing.contains("billing"), "{listing}");
    let id = created["id"].as_str().unwrap();
    json(&["tokens", "revoke", id, "--json"], &db);
    let scope = webhook_worker::admin::tokens::authenticate(&db.pool, &token).await.unwrap();
    assert_eq!(scope, None, "a revoked token is refused");
}

#[tokio::test]
async fn a_plain_insert_reaches_the_endpoint_it_names_whatever_its_application() {
    let db = TestDb::new().await;
    json(&["app", "create", "--name", "Acme", "--uid", "acme", "--json"], &db);
    let endpoint = json(&["endpoint", "add", "--app", "acme", "--url", "http://127.0.0.1:9/x", "--json"], &db);
    let id: uuid::Uuid = endpoint["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("INSERT INTO webhook.deliveries (endpoint_id, event_type, payload) VALUES ($1, 'e', '{}')")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let queued: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook.deliveries WHERE endpoint_id = $1), (SELECT count(*) FROM webhook.messages)",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(queued, (1, 0), "queued for the endpoint it names; a plain INSERT stores no message");
}

#[tokio::test]
async fn delivery_list_and_queue_stats_show_one_application_with_app() {
    let db = TestDb::new().await;
    for uid in ["acme", "other"] {
        json(&["app", "create", "--name", uid, "--uid", uid, "--json"], &db);
        // Port 9 (discard): nothing delivers in this test; the rows only wait in the queue.
        json(&["endpoint", "add", "--app", uid, "--url", &format!("http://127.0.0.1:9/{uid}"), "--json"], &db);
    }
    for (uid, events) in [("acme", 2), ("other", 3)] {
        for _ in 0..events {
            json(&["enqueue", "--app", uid, "--event-type", "invoice.paid", "--payload", "{}", "--json"], &db);
        }
    }
    let acme = json(&["delivery", "list", "--app", "acme", "--json"], &db);
    let other = json(&["delivery", "list", "--app", "other", "--json"], &db);
    let all = json(&["delivery", "list", "--json"], &db);
    let counts = (acme.as_array().unwrap().len(), other.as_array().unwrap().len(), all.as_array().unwrap().len());
    assert_eq!(counts, (2, 3, 5), "--app lists only that application's deliveries");
    let acme_endpoint = json(&["endpoint", "list", "--app", "acme", "--json"], &db)[0]["id"].clone();
    assert!(acme.as_array().unwrap().iter().all(|d| d["endpoint_id"] == acme_endpoint), "{acme}");

    let stats = json(&["queue", "stats", "--app", "acme", "--json"], &db);
    assert_eq!(stats["ready"], 2, "{stats}");
    assert_eq!(stats["top_backlog"].as_array().unwrap().len(), 1, "{stats}");
    assert_eq!(stats["top_backlog"][0]["endpoint_id"], acme_endpoint, "{stats}");
    assert_eq!(json(&["queue", "stats", "--json"], &db)["ready"], 5);
    let (code, _, err) = run(binary(&db).args(["queue", "stats", "--app", "nobody"]));
    assert_eq!(code, 1);
    assert!(err.contains("nobody"), "an unknown application is named: {err}");
}
