//! Delivery behaviour end to end: dispositions, signatures, TLS, bad rows, secrets that fail.

use std::time::Duration;

use webhook_worker::config::Settings;
use webhook_worker::policy::crypto::KeyRing;
use webhook_worker::policy::signing::SigningSecret;
use webhook_worker::testkit::receiver::{Answer, Receiver, TestCa, server_config};

use crate::support::worker::key_ring_text;
use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, settings, wait_until, worker_args};

const WAIT: Duration = Duration::from_secs(30);

async fn last_error(db: &TestDb) -> String {
    sqlx::query_scalar("SELECT coalesce(last_error, '') FROM webhook.deliveries").fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn gone_410_disables_the_endpoint_and_dead_letters_its_deliveries() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/gone")).await;
    receiver.expect_secrets("/gone", vec![secret]);
    receiver.answer("/gone", Answer { status: 410, ..Answer::default() });
    insert_deliveries(&db.pool, id, 1).await;
    let worker = TestWorker::start(settings(&db, "1s,1s"));
    assert!(receiver.wait_for(1, WAIT).await);
    wait_until(&db.pool, "SELECT count(*) = 1 FROM webhook.dead_letters", WAIT).await;
    let (state, reason): (String, String) =
        sqlx::query_as("SELECT state, state_reason FROM webhook.endpoints").fetch_one(&db.pool).await.unwrap();
    assert_eq!((state.as_str(), reason.as_str()), ("disabled", "the receiver answered 410 Gone"));
    // Later deliveries to the disabled endpoint are not sent.
    insert_deliveries(&db.pool, id, 2).await;
    wait_until(&db.pool, "SELECT count(*) = 3 FROM webhook.dead_letters", WAIT).await;
    worker.stop().await;
    assert_eq!(receiver.count(), 1);
    let errors: Vec<String> = sqlx::query_scalar("SELECT last_error FROM webhook.dead_letters ORDER BY delivery_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(errors[0], "receiver answered HTTP 410");
    assert_eq!(errors[1], format!("endpoint {id} is disabled: the receiver answered 410 Gone"));
}

#[tokio::test]
async fn exhausted_retries_become_dead_letters_with_their_last_error() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/fails")).await;
    receiver.expect_secrets("/fails", vec![secret]);
    receiver.answer("/fails", Answer { status: 500, ..Answer::default() });
    insert_deliveries(&db.pool, id, 1).await;
    let worker = TestWorker::start(settings(&db, "0s,0s"));
    assert!(receiver.wait_for(3, WAIT).await);
    wait_until(&db.pool, "SELECT count(*) = 1 FROM webhook.dead_letters", WAIT).await;
    worker.stop().await;
    assert_eq!(receiver.count(), 3, "three attempts in all");
    let (attempts, error, status): (i32, String, Option<i32>) =
        sqlx::query_as("SELECT attempts, last_error, last_status FROM webhook.dead_letters")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((attempts, status), (3, Some(500)));
    assert_eq!(error, "receiver answered HTTP 500 (attempt 3 of 3, no retries left)");
    assert_eq!(db.count("SELECT count(*) FROM webhook.delivery_attempts WHERE status_code = 500").await, 3);
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 0);
}

#[tokio::test]
async fn retry_after_from_a_429_sets_the_next_attempt_time() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/busy")).await;
    receiver.expect_secrets("/busy", vec![secret]);
    receiver.answer("/busy", Answer { status: 429, retry_after: Some("120".into()), ..Answer::default() });
    insert_deliveries(&db.pool, id, 1).await;
    let worker = TestWorker::start(settings(&db, "1s"));
    wait_until(&db.pool, "SELECT count(*) = 1 FROM webhook.deliveries WHERE state = 'pending' AND attempt = 1", WAIT)
        .await;
    worker.stop().await;
    let wait: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM d.run_at - a.attempted_at)::float8 FROM webhook.deliveries d JOIN webhook.delivery_attempts a USING (message_id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!((119.0..=122.0).contains(&wait), "next attempt {wait} s after the 429, expected the asked 120 s");
    assert_eq!(last_error(&db).await, "receiver answered HTTP 429");
}

#[tokio::test]
async fn during_rotation_both_secrets_sign() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, old) = endpoint(&db.pool, &receiver.url("/rotating")).await;
    let new = SigningSecret::generate();
    let sealed = KeyRing::parse(key_ring_text()).unwrap().seal(new.expose_bytes(), id.as_bytes()).unwrap();
    sqlx::query("UPDATE webhook.endpoint_secrets SET expires_at = now() + interval '1 day'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO webhook.endpoint_secrets (endpoint_id, key_id, ciphertext) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(&sealed.key_id)
        .bind(&sealed.ciphertext)
        .execute(&db.pool)
        .await
        .unwrap();
    receiver.expect_secrets("/rotating", vec![old.clone(), new.clone()]);
    insert_deliveries(&db.pool, id, 1).await;
    let worker = TestWorker::start(settings(&db, "1h"));
    assert!(receiver.wait_for(1, WAIT).await);
    worker.stop().await;
    let got = receiver.received().remove(0);
    assert_eq!(got.signature.split(' ').count(), 2);
    assert_eq!(got.secrets_matched, 2, "each secret verifies on its own");
    // The reference implementation accepts the request with either secret.
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", got.msg_id.parse().unwrap());
    headers.insert("webhook-timestamp", got.timestamp.to_string().parse().unwrap());
    headers.insert("webhook-signature", got.signature.parse().unwrap());
    for secret in [&old, &new] {
        let verifier = standardwebhooks::Webhook::new(&secret.expose_whsec()).unwrap();
        verifier.verify(got.body.as_bytes(), &headers).expect("standardwebhooks accepts the signature");
    }
}

#[tokio::test]
async fn https_with_the_extra_ca_delivers_and_without_it_records_the_tls_error() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    let receiver = Receiver::start(Some(server_config(ca.issue_localhost().unwrap(), &[]).unwrap())).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/tls")).await;
    receiver.expect_secrets("/tls", vec![secret]);
    insert_deliveries(&db.pool, id, 1).await;

    let worker = TestWorker::start(settings(&db, "1h"));
    wait_until(&db.pool, "SELECT count(*) = 1 FROM webhook.deliveries WHERE last_error IS NOT NULL", WAIT).await;
    worker.stop().await;
    let error = last_error(&db).await;
    assert!(error.contains("invalid peer certificate") && error.contains("UnknownIssuer"), "{error}");
    assert_eq!(receiver.count(), 0);

    sqlx::query("UPDATE webhook.deliveries SET run_at = now()").execute(&db.pool).await.unwrap();
    let mut with_ca = worker_args(&db, "1h");
    let ca_file = ca.pem_file().unwrap();
    with_ca.worker.ca_bundle = Some(ca_file.path().to_owned());
    let worker = TestWorker::start(Settings::from_args(&with_ca).unwrap());
    assert!(receiver.wait_for(1, WAIT).await);
    worker.stop().await;
    assert!(receiver.received()[0].valid);
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 0);
}

#[tokio::test]
async fn bad_rows_become_readable_dead_letters_while_good_ones_flow() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (good, secret) = endpoint(&db.pool, &receiver.url("/good")).await;
    receiver.expect_secrets("/good", vec![secret]);
    let (bad_url, _) = endpoint(&db.pool, "https://placeholder.example.com/").await;
    sqlx::query("UPDATE webhook.endpoints SET url = 'not a url' WHERE id = $1")
        .bind(bad_url)
        .execute(&db.pool)
        .await
        .unwrap();
    let unknown = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO webhook.deliveries (endpoint_id, event_type, payload) VALUES \
         ($1, 'x', '{}'), ($2, 'x', '{}'), ($3, 'x', json_build_object('blob', repeat('a', 2000000)))",
    )
    .bind(unknown)
    .bind(bad_url)
    .bind(good)
    .execute(&db.pool)
    .await
    .unwrap();
    insert_deliveries(&db.pool, good, 100).await;
    let worker = TestWorker::start(settings(&db, "1h"));
    assert!(receiver.wait_for(100, WAIT).await);
    wait_until(&db.pool, "SELECT count(*) = 3 FROM webhook.dead_letters", WAIT).await;
    worker.stop().await;
    assert_eq!(receiver.count(), 100, "the oversized payload was not sent");
    let errors: Vec<String> = sqlx::query_scalar("SELECT last_error FROM webhook.dead_letters ORDER BY delivery_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(errors[0], format!("endpoint {unknown} does not exist"));
    assert_eq!(errors[1], "endpoint URL `not a url` is invalid: relative URL without a base");
    assert_eq!(errors[2], "payload is 2000013 bytes, over the limit of 1048576 bytes (WEBHOOK_MAX_PAYLOAD_BYTES)");
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 0);
}

/// Breaks the endpoint's stored secret with `sql`, runs a worker, and returns the recorded error.
async fn error_after_breaking_the_secret(sql: &str) -> (String, usize) {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, _) = endpoint(&db.pool, &receiver.url("/x")).await;
    let (other, _) = endpoint(&db.pool, "https://other.example.com/").await;
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).bind(id).bind(other).execute(&db.pool).await.unwrap();
    insert_deliveries(&db.pool, id, 1).await;
    let worker = TestWorker::start(settings(&db, "1h"));
    wait_until(&db.pool, "SELECT count(*) = 1 FROM webhook.deliveries WHERE last_error IS NOT NULL", WAIT).await;
    worker.stop().await;
    let secret_id: i64 = sqlx::query_scalar("SELECT max(id) FROM webhook.endpoint_secrets WHERE endpoint_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    (last_error(&db).await.replace(&secret_id.to_string(), "N"), receiver.connections())
}

#[tokio::test]
async fn a_tampered_secret_is_a_clear_error_and_nothing_is_sent() {
    let (error, connections) =
        error_after_breaking_the_secret("UPDATE webhook.endpoint_secrets SET ciphertext = set_byte(ciphertext, 20, get_byte(ciphertext, 20) # 1) WHERE endpoint_id = $1 AND $2::uuid IS NOT NULL").await;
    assert_eq!(connections, 0);
    assert_eq!(
        error,
        "not sent: signing secret N could not be decrypted: ciphertext did not authenticate under key `test`: \
         it was tampered with, sealed for another endpoint, or sealed with a different key of the same id"
    );
}

#[tokio::test]
async fn an_unknown_key_id_is_a_clear_error_and_nothing_is_sent() {
    let (error, connections) = error_after_breaking_the_secret(
        "UPDATE webhook.endpoint_secrets SET key_id = 'retired-2024' WHERE endpoint_id = $1 AND $2::uuid IS NOT NULL",
    )
    .await;
    assert_eq!(connections, 0);
    assert_eq!(
        error,
        "not sent: signing secret N could not be decrypted: key id `retired-2024` is not in this worker's key ring"
    );
}

#[tokio::test]
async fn a_secret_moved_from_another_endpoint_does_not_open() {
    let (error, connections) = error_after_breaking_the_secret(
        "UPDATE webhook.endpoint_secrets SET ciphertext = (SELECT ciphertext FROM webhook.endpoint_secrets WHERE endpoint_id = $2) WHERE endpoint_id = $1",
    )
    .await;
    assert_eq!(connections, 0);
    assert!(
        error.starts_with("not sent: signing secret N could not be decrypted: ciphertext did not authenticate"),
        "{error}"
    );
}

#[tokio::test]
async fn a_loopback_url_is_refused_without_the_allow_list_and_no_connection_is_made() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (literal, _) = endpoint(&db.pool, &receiver.url("/a")).await;
    let (named, _) = endpoint(&db.pool, &format!("http://localhost:{}/b", receiver.addr().port())).await;
    insert_deliveries(&db.pool, literal, 1).await;
    insert_deliveries(&db.pool, named, 1).await;
    let mut strict = worker_args(&db, "1h");
    strict.worker.allow_private_cidrs = Vec::new();
    let worker = TestWorker::start(Settings::from_args(&strict).unwrap());
    wait_until(&db.pool, "SELECT count(*) = 2 FROM webhook.dead_letters", WAIT).await;
    worker.stop().await;
    assert_eq!(receiver.connections(), 0);
    let errors: Vec<String> = sqlx::query_scalar("SELECT last_error FROM webhook.dead_letters ORDER BY delivery_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(errors[0], "refused: address 127.0.0.1 is in a forbidden range (loopback 127.0.0.0/8)");
    assert!(errors[1].starts_with("refused: host `localhost` resolves to "), "{}", errors[1]);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM webhook.delivery_attempts").fetch_all(&db.pool).await.unwrap();
    assert_eq!(outcomes, ["refused", "refused"]);
}
