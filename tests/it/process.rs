//! The real binary: graceful shutdown under SIGTERM, and the operator commands.

use std::process::{Command, Stdio};
use std::time::Duration;

use webhook_worker::testkit::receiver::{Answer, Receiver};

use crate::support::worker::key_ring_text;
use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, settings, wait_until};

use crate::support::cli::{BIN, assert_no_secret, binary, collect, run};

async fn sigterm_run(db: &TestDb, receiver: &Receiver, drain: &str, in_flight: usize) -> String {
    let mut child = binary(db)
        .arg("run")
        .env("WEBHOOK_DRAIN_DEADLINE", drain)
        .env("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Debug logs outgrow the pipe's buffer: read them as they come, or the worker blocks on a
    // write before its deliveries go out.
    let logs = collect(child.stderr.take().unwrap());
    assert!(receiver.wait_for(in_flight, Duration::from_secs(30)).await, "deliveries never got in flight");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "worker exited with {status:?}");
    logs.join().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_drain_deadline_hands_in_flight_deliveries_back() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/slow")).await;
    receiver.expect_secrets("/slow", vec![secret.clone()]);
    receiver.answer("/slow", Answer { delay: Duration::from_secs(20), ..Answer::default() });
    insert_deliveries(&db.pool, id, 40).await;
    let logs = sigterm_run(&db, &receiver, "500ms", 40).await;
    assert!(logs.contains("handing in-flight deliveries back"), "{logs}");
    // Nothing lost, nothing stuck, no attempt spent.
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries WHERE state = 'pending' AND attempt = 0").await, 40);
    assert_eq!(db.count("SELECT count(*) FROM webhook.delivery_attempts").await, 0);
    assert_no_secret(&logs, &[&secret.expose_whsec(), key_ring_text().split_once(':').unwrap().1, "hunter2"]);
    // Another worker finishes them.
    receiver.answer("/slow", Answer::default());
    let worker = TestWorker::start(settings(&db, "1h"));
    assert!(receiver.wait_for(80, Duration::from_secs(30)).await);
    worker.stop().await;
    let mut delivered: Vec<String> = receiver.received().into_iter().skip(40).map(|r| r.msg_id).collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 40);
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_within_the_drain_deadline_finishes_in_flight_deliveries() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/slowish")).await;
    receiver.expect_secrets("/slowish", vec![secret]);
    receiver.answer("/slowish", Answer { delay: Duration::from_millis(1500), ..Answer::default() });
    insert_deliveries(&db.pool, id, 30).await;
    let logs = sigterm_run(&db, &receiver, "15s", 30).await;
    assert!(!logs.contains("handing in-flight deliveries back"), "{logs}");
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 0, "every in-flight delivery completed");
    assert_eq!(db.count("SELECT count(*) FROM webhook.delivery_attempts WHERE outcome = 'delivered'").await, 30);
    assert_eq!(receiver.count(), 30);
}

#[tokio::test]
async fn operator_commands_add_list_and_enqueue() {
    let db = TestDb::new().await;
    let (code, out, _) = run(binary(&db).args(["migrate", "--json"]));
    assert_eq!((code, out.contains("\"schema_version\"")), (0, true), "{out}");
    let (code, out, err) = run(binary(&db).args(["migrate"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("schema is at version {}", crate::support::latest_migration()));

    let (code, out, err) = run(binary(&db).args([
        "endpoint",
        "add",
        "--url",
        "https://hooks.example.com/in",
        "--event-type",
        "a.b,c.d",
        "--json",
    ]));
    assert_eq!(code, 0, "{err}");
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = added["id"].as_str().unwrap().to_owned();
    assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));

    let (code, out, _) = run(binary(&db).args([
        "endpoint",
        "add",
        "--url",
        "https://hooks.example.com/2",
        "--secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ]));
    assert_eq!(code, 0);
    assert!(out.starts_with("endpoint ") && !out.contains("whsec_"), "a given secret is never printed: {out}");

    let (code, out, _) = run(binary(&db).args(["endpoint", "list", "--json"]));
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["id"].as_str().unwrap(), id);
    assert_eq!(list[0]["event_types"], serde_json::json!(["a.b", "c.d"]));
    let (code, out, _) = run(binary(&db).args(["endpoint", "list"]));
    assert_eq!(code, 0);
    assert!(out.lines().count() == 3 && out.contains("https://hooks.example.com/in"), "{out}");

    let (code, out, _) = run(binary(&db).args([
        "enqueue",
        "--event-type",
        "a.b",
        "--payload",
        r#"{"k": 1}"#,
        "--idempotency-key",
        "once",
        "--json",
    ]));
    assert_eq!(code, 0);
    let enqueued: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((enqueued["deliveries"].as_i64(), enqueued["duplicate"].as_bool()), (Some(2), Some(false)));
    let (_, out, _) = run(binary(&db).args([
        "enqueue",
        "--event-type",
        "a.b",
        "--payload",
        r#"{"k": 1}"#,
        "--idempotency-key",
        "once",
    ]));
    assert!(out.starts_with("idempotency key seen before: nothing enqueued"), "{out}");
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 2);
}

#[tokio::test]
async fn operator_commands_fail_clearly_on_bad_input() {
    let db = TestDb::new().await;
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["endpoint", "add", "--url", "not a url"],
            1,
            "error: invalid endpoint URL `not a url`: relative URL without a base",
        ),
        (&["endpoint", "add", "--url", "ftp://x.example.com/"], 1, "error: URL scheme `ftp` is not allowed"),
        (
            &["endpoint", "add", "--url", "https://x.example.com/", "--secret", "nope"],
            1,
            "error: invalid --secret: a signing secret must start with `whsec_`",
        ),
        (
            &["endpoint", "add", "--url", "https://x.example.com/", "--event-type", "has space"],
            1,
            "error: invalid event type \"has space\"",
        ),
        (&["enqueue", "--event-type", "a", "--payload", "{not json"], 1, "error: --payload is not valid JSON"),
        (&["run", "--http-timeout", "soon"], 2, "invalid value 'soon' for '--http-timeout <HTTP_TIMEOUT>'"),
        (
            &["run", "--stall-timeout", "30s"],
            1,
            "error: WEBHOOK_STALL_TIMEOUT (30s) must be longer than WEBHOOK_HTTP_TIMEOUT (30s)",
        ),
        (&["frobnicate"], 2, "unrecognized subcommand 'frobnicate'"),
        (
            &["keys", "generate", "--id", "bad id"],
            1,
            "error: --id: encryption key entry 1 has the id \"bad id\": use 1 to 64 of A-Z a-z 0-9 . _ -",
        ),
    ];
    for (args, expected_code, expected) in cases {
        let (code, _, err) = run(binary(&db).args(*args));
        assert_eq!(code, *expected_code, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: expected {expected:?} in\n{err}");
        assert_no_secret(&err, &["hunter2"]);
    }
    let (code, _, err) = run(binary(&db).env_remove("DATABASE_URL").args(["endpoint", "list"]));
    assert_eq!(code, 1);
    assert!(err.contains("DATABASE_URL is not set"), "{err}");
    let (code, _, err) = run(binary(&db).env_remove("WEBHOOK_ENCRYPTION_KEYS").args(["run"]));
    assert_eq!(code, 1);
    assert!(err.contains("no encryption key ring: set WEBHOOK_ENCRYPTION_KEYS"), "{err}");
    let (code, _, err) = run(binary(&db).env("WEBHOOK_ENCRYPTION_KEYS", "k1:c2hvcnQ=").args(["run"]));
    assert_eq!(code, 1);
    assert!(err.contains("encryption key `k1` is 5 bytes long; AES-256 needs exactly 32"), "{err}");
    // A bare key, as `openssl rand -base64 32` prints it: the fix is named, the key never shown.
    let bare = webhook_worker::policy::crypto::KeyRing::generate("k1").1.split_once(':').unwrap().1.to_owned();
    let (code, _, err) = run(binary(&db).env("WEBHOOK_ENCRYPTION_KEYS", &bare).args(["run"]));
    assert_eq!(code, 1);
    assert!(err.contains("entry 1 has no key id: write it as `<id>:<key>`, e.g. `k1:` followed by this key"), "{err}");
    assert_no_secret(&err, &[&bare]);
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.endpoints", Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_end_to_end_with_its_own_postgres() {
    let output = tokio::task::spawn_blocking(|| {
        Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["demo", "--events", "300", "--endpoints", "3"])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("starting a throwaway PostgreSQL cluster"), "{stderr}");
    assert!(stdout.contains("invalid signatures: 0"), "{stdout}");
    assert!(stdout.contains("OK: every delivery arrived with a valid signature."), "{stdout}");
}
