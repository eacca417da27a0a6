//! Operating a fleet: endpoint lifecycle, pause, headers, secret and key rotation, replay,
//! queue statistics, retention and FIFO endpoints — through the real binary where an operator
//! would use it.

use std::time::Duration;

use serde_json::Value;
use webhook_worker::config::Settings;
use webhook_worker::policy::crypto::KeyRing;
use webhook_worker::testkit::receiver::Receiver;

use crate::support::cli::{binary, json, run};
use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, settings, wait_until, worker_args};

const WAIT: Duration = Duration::from_secs(30);

fn fails(args: &[&str], db: &TestDb, code: i32, message: &str) {
    let (got, _, err) = run(binary(db).args(args));
    assert_eq!(got, code, "{args:?}: {err}");
    assert!(err.contains(message), "{args:?}: expected {message:?} in\n{err}");
}

#[tokio::test]
async fn endpoint_lifecycle_from_the_command_line() {
    let db = TestDb::new().await;
    let added = json(
        &[
            "endpoint",
            "add",
            "--url",
            "https://hooks.example.com/a",
            "--event-type",
            "a.b",
            "--rate-limit",
            "50",
            "--burst",
            "10",
            "--max-in-flight",
            "4",
            "--timeout",
            "7s",
            "--header",
            "X-Api-Key: s3cr3t-header",
            "--ordered",
            "true",
            "--json",
        ],
        &db,
    );
    let id = added["id"].as_str().unwrap().to_owned();
    let shown = json(&["endpoint", "show", &id, "--json"], &db);
    assert_eq!(shown["rate_limit_per_second"], 50);
    assert_eq!(shown["rate_limit_burst"], 10);
    assert_eq!(shown["max_in_flight"], 4);
    assert_eq!(shown["timeout_ms"], 7000);
    assert_eq!(shown["ordered"], true);
    assert_eq!(shown["header_names"], serde_json::json!(["x-api-key"]));
    assert_eq!(shown["state"], "active");
    assert_eq!(shown["circuit_state"], "closed");
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT ciphertext FROM webhook.endpoint_headers").fetch_one(&db.pool).await.unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("s3cr3t"), "headers are stored encrypted");

    json(&["endpoint", "update", &id, "--url", "https://hooks.example.com/b", "--event-type", "x.y,z", "--json"], &db);
    let shown = json(&["endpoint", "show", &id, "--json"], &db);
    assert_eq!(shown["url"], "https://hooks.example.com/b");
    assert_eq!(shown["event_types"], serde_json::json!(["x.y", "z"]));

    let uuid: uuid::Uuid = id.parse().unwrap();
    insert_deliveries(&db.pool, uuid, 3).await;
    let paused = json(&["endpoint", "pause", &id, "--reason", "maintenance window", "--json"], &db);
    assert_eq!(paused["deliveries_moved"], 3);
    fails(&["endpoint", "pause", &id], &db, 1, &format!("endpoint {id} is paused; pausing needs it active"));
    let (_, text, _) = run(binary(&db).args(["endpoint", "show", &id]));
    assert!(text.contains("state         paused: maintenance window"), "{text}");
    assert!(text.contains("backlog       3 (3 paused)"), "{text}");
    assert_eq!(json(&["endpoint", "resume", &id, "--json"], &db)["deliveries_moved"], 3);
    json(&["endpoint", "disable", &id, "--json"], &db);
    fails(&["endpoint", "disable", &id], &db, 1, "is disabled; disabling needs it not disabled");
    json(&["endpoint", "enable", &id, "--json"], &db);

    fails(
        &["endpoint", "delete", &id],
        &db,
        1,
        &format!("endpoint {id} still has 3 deliveries in the queue; pass --force"),
    );
    assert_eq!(json(&["endpoint", "delete", &id, "--force", "--json"], &db)["deliveries_removed"], 3);
    assert_eq!(db.count("SELECT count(*) FROM webhook.endpoints").await, 0);

    let unknown = uuid::Uuid::new_v4().to_string();
    for command in ["show", "pause", "resume", "disable", "enable", "delete", "rotate-secret"] {
        fails(&["endpoint", command, &unknown], &db, 1, &format!("no endpoint with id {unknown}"));
    }
    fails(&["endpoint", "update", &unknown, "--description", "x"], &db, 1, &format!("no endpoint with id {unknown}"));
    fails(&["endpoint", "show", "not-a-uuid"], &db, 2, "invalid value 'not-a-uuid'");
    fails(&["endpoint", "update", &unknown, "--url", "nope"], &db, 1, "invalid endpoint URL `nope`");
    fails(
        &["endpoint", "add", "--url", "https://x.example.com/", "--timeout", "soon"],
        &db,
        2,
        "invalid value 'soon' for '--timeout",
    );
    fails(
        &["endpoint", "add", "--url", "https://x.example.com/", "--header", "webhook-id: forged"],
        &db,
        1,
        "header `webhook-id` is set by the worker and cannot be overridden",
    );
    fails(
        &["endpoint", "add", "--url", "https://x.example.com/", "--header", "no colon"],
        &db,
        1,
        "invalid header \"no colon\"",
    );
    fails(&["endpoint", "rotate-secret", &unknown, "--secret", "whsec_short"], &db, 1, "invalid --secret");
}

#[tokio::test]
async fn a_paused_endpoint_keeps_its_deliveries_and_spends_no_attempts() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/p")).await;
    receiver.expect_secrets("/p", vec![secret]);
    let id_text = id.to_string();
    json(&["endpoint", "pause", &id_text, "--json"], &db);
    let worker = TestWorker::start(settings(&db, "1h"));
    // Inserted while paused: the worker claims them, sees the pause and parks them.
    insert_deliveries(&db.pool, id, 5).await;
    wait_until(&db.pool, "SELECT count(*) = 5 FROM webhook.deliveries WHERE state = 'paused' AND attempt = 0", WAIT)
        .await;
    assert_eq!(receiver.count(), 0);
    assert_eq!(db.count("SELECT count(*) FROM webhook.delivery_attempts").await, 0);
    json(&["endpoint", "resume", &id_text, "--json"], &db);
    assert!(receiver.wait_for(5, WAIT).await);
    worker.stop().await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook.delivery_attempts WHERE attempt = 1 AND outcome = 'delivered'").await,
        5
    );
}

#[tokio::test]
async fn custom_headers_are_sent_with_every_delivery() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let url = receiver.url("/h");
    let added = json(&["endpoint", "add", "--url", &url, "--header", "Authorization: Bearer t0ken", "--json"], &db);
    let id: uuid::Uuid = added["id"].as_str().unwrap().parse().unwrap();
    insert_deliveries(&db.pool, id, 1).await;
    let worker = TestWorker::start(settings(&db, "1h"));
    assert!(receiver.wait_for(1, WAIT).await);
    worker.stop().await;
    let got = receiver.received().remove(0);
    assert!(got.headers.contains(&("authorization".into(), "Bearer t0ken".into())), "{:?}", got.headers);
}

#[tokio::test]
async fn rotated_secrets_sign_together_until_the_grace_period_ends() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, old) = endpoint(&db.pool, &receiver.url("/r")).await;
    let rotated = json(&["endpoint", "rotate-secret", &id.to_string(), "--grace", "24h", "--json"], &db);
    let new = webhook_worker::policy::signing::SigningSecret::parse(rotated["secret"].as_str().unwrap()).unwrap();
    receiver.expect_secrets("/r", vec![old.clone(), new.clone()]);
    insert_deliveries(&db.pool, id, 1).await;
    let worker = TestWorker::start(settings(&db, "1h"));
    assert!(receiver.wait_for(1, WAIT).await);
    worker.stop().await;
    assert_eq!(receiver.received()[0].secrets_matched, 2, "during the grace period both secrets sign");

    // The grace period ends; the leader's maintenance removes the old secret.
    sqlx::query(
        "UPDATE webhook.endpoint_secrets SET expires_at = now() - interval '1 second' WHERE expires_at IS NOT NULL",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    webhook_worker::engine::maintenance::apply_retention(
        &mut conn,
        &settings(&db, "1h").maintenance.retention,
        chrono::Utc::now().date_naive(),
    )
    .await
    .unwrap();
    drop(conn);
    assert_eq!(db.count("SELECT count(*) FROM webhook.endpoint_secrets").await, 1);
    insert_deliveries(&db.pool, id, 1).await;
    let worker = TestWorker::start(settings(&db, "1h"));
    assert!(receiver.wait_for(2, WAIT).await);
    worker.stop().await;
    let after = receiver.received().remove(1);
    assert_eq!(after.signature.split(' ').count(), 1);
    assert!(webhook_worker::policy::signing::verify(
        &new,
        &after.msg_id,
        after.timestamp,
        after.body.as_bytes(),
        &after.signature
    ));
    assert!(!webhook_worker::policy::signing::verify(
        &old,
        &after.msg_id,
        after.timestamp,
        after.body.as_bytes(),
        &after.signature
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_load_completes_resumes_and_retires_the_old_key() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (old_ring, old_text) = KeyRing::generate("old");
    let new_text = format!("{},{}", KeyRing::generate("new").1.as_str(), old_text.as_str());
    let mut ids = Vec::new();
    for n in 0..30 {
        let secret = webhook_worker::policy::signing::SigningSecret::generate();
        let path = format!("/k{n}");
        let changes = webhook_worker::admin::endpoints::Changes {
            url: Some(receiver.url(&path)),
            headers: Some(vec![format!("x-tenant: t{n}")]),
            ..Default::default()
        };
        ids.push(webhook_worker::admin::endpoints::create(&db.pool, &old_ring, &changes, &secret).await.unwrap());
        receiver.expect_secrets(&path, vec![secret]);
    }
    // The fleet runs with both keys (new first) before the rotation starts, and keeps delivering.
    let mut both_keys = worker_args(&db, "1s");
    both_keys.keys.encryption_keys = Some(new_text.as_str().into());
    let worker = TestWorker::start(Settings::from_args(&both_keys).unwrap());
    for id in &ids {
        insert_deliveries(&db.pool, *id, 20).await;
    }
    let rotate = |batches: Option<&str>| {
        let mut command = binary(&db);
        command.env("WEBHOOK_ENCRYPTION_KEYS", &new_text).args(["keys", "rotate", "--batch-size", "7"]);
        if let Some(batches) = batches {
            command.args(["--batches", batches]);
        }
        run(&mut command)
    };
    let (code, out, err) = rotate(Some("2"));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("rotation paused: 14 re-encrypted now, 46 still use other keys"), "{out}");
    let status = json(&["keys", "status", "--json"], &db);
    assert_eq!(status.as_array().unwrap().len(), 2, "both keys in use mid-rotation: {status}");
    for id in &ids {
        insert_deliveries(&db.pool, *id, 10).await;
    }
    let (code, out, err) = rotate(None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("rotation complete: 46 re-encrypted now; every ciphertext uses `new`"), "{out}");
    let mut again = binary(&db);
    again.env("WEBHOOK_ENCRYPTION_KEYS", &new_text).args(["keys", "rotate", "--json"]);
    let (code, out, _) = run(&mut again);
    assert_eq!(code, 0);
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (again["re_encrypted"].as_i64(), again["complete"].as_bool()),
        (Some(0), Some(true)),
        "a finished rotation is a no-op"
    );
    let mut status_command = binary(&db);
    status_command.env("WEBHOOK_ENCRYPTION_KEYS", &new_text).args(["keys", "status", "--json"]);
    let (_, out, _) = run(&mut status_command);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        status,
        serde_json::json!([{ "key_id": "new", "secrets": 30, "headers": 30, "client_certificates": 0, "in_key_ring": true, "active": true }])
    );
    assert!(receiver.wait_for(900, Duration::from_secs(120)).await, "only {} of 900 delivered", receiver.count());
    worker.stop().await;
    assert_eq!(db.count("SELECT count(*) FROM webhook.delivery_attempts WHERE error LIKE '%decrypt%'").await, 0);
    assert!(receiver.received().iter().all(|r| r.valid));
    // The old key can go: a worker with only the new key delivers.
    let mut only_new = worker_args(&db, "1s");
    only_new.keys.encryption_keys = Some(new_text.split(',').next().unwrap().into());
    insert_deliveries(&db.pool, ids[0], 1).await;
    let worker = TestWorker::start(Settings::from_args(&only_new).unwrap());
    assert!(receiver.wait_for(901, WAIT).await);
    worker.stop().await;
}
