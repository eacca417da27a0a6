//! Bad input, generated: random text for every parser, hostile payloads and broken stored rows
//! through a real worker. Never a panic, always a readable error, the rest of the queue unaffected.
//! Inputs come from a seeded generator, so a failure reproduces.

use std::time::Duration;

use clap::Parser as _;
use rand::{Rng as _, RngExt as _, SeedableRng as _};
use webhook_worker::cli::Cli;
use webhook_worker::config::RetrySchedule;
use webhook_worker::policy::address::NetPolicy;
use webhook_worker::policy::crypto::{KeyRing, Sealed};
use webhook_worker::policy::signing::SigningSecret;
use webhook_worker::testkit::receiver::Receiver;

use crate::support::{TestDb, TestWorker, endpoint, settings, wait_until};

const ALPHABET: &[u8] = b"abcz09:/.@[]%_-+=,;#?&!~$*'() \t\n\\\"{}\x00\x7f\xc3\xa9";

fn random_text(rng: &mut impl rand::Rng, max: usize) -> String {
    let len = rng.random_range(0..=max);
    let bytes: Vec<u8> = (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())]).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn every_parser_answers_random_text_with_a_value_or_a_readable_error() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let ring = KeyRing::generate("k").0;
    let policy = NetPolicy::default();
    for _ in 0..5_000 {
        let text = random_text(&mut rng, 80);
        if let Err(err) = KeyRing::parse(&text) {
            assert!(!err.to_string().is_empty());
        }
        if let Err(err) = SigningSecret::parse(&format!("whsec_{text}")) {
            assert!(!err.to_string().is_empty());
        }
        let _ = text.parse::<RetrySchedule>();
        let _ = webhook_worker::policy::retry::parse_retry_after(&text, chrono::Utc::now());
        for candidate in [text.clone(), format!("http://{text}"), format!("https://{text}/x")] {
            if let Ok(url) = url::Url::parse(&candidate)
                && let Err(refusal) = policy.check_url(&url)
            {
                assert!(!refusal.to_string().is_empty());
            }
        }
        let mut blob = vec![0u8; rng.random_range(0..64)];
        rng.fill_bytes(&mut blob);
        let err = ring.open(&Sealed { key_id: "k".into(), ciphertext: blob }, text.as_bytes()).unwrap_err();
        assert!(!err.to_string().is_empty());
        // Configuration values: clap refuses or accepts, it never panics.
        let _ = Cli::try_parse_from(["webhook-worker", "run", "--http-timeout", &text]);
        let _ = Cli::try_parse_from(["webhook-worker", "run", "--allow-private-cidrs", &text]);
        let _ = Cli::try_parse_from(["webhook-worker", "run", "--retry-schedule", &text, "--concurrency", &text]);
    }
}

/// Payloads a producer may legally insert that stress the pipeline.
fn hostile_payloads(rng: &mut impl rand::Rng) -> Vec<String> {
    let mut payloads = vec![
        format!("{}1{}", "[".repeat(2000), "]".repeat(2000)), // deeply nested
        format!("{{\"blob\": \"{}\"}}", "é".repeat(400_000)), // ~800 KB of multi-byte text
        r#"{"lone surrogate": "\ud800", "nul": "\u0000", "emoji": "🦀"}"#.to_owned(), // escapes json keeps as-is
        "  {\"spaces\" :   [ 1 , 2 ]   }  ".to_owned(),       // bytes kept exactly
        "\"just a string\"".to_owned(),
        "12345".to_owned(),
        "null".to_owned(),
    ];
    for _ in 0..20 {
        let value: Vec<String> =
            (0..rng.random_range(0..50)).map(|_| serde_json::to_string(&random_text(rng, 30)).unwrap()).collect();
        payloads.push(format!("[{}]", value.join(",")));
    }
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_and_broken_rows_never_stop_the_queue() {
    let db = TestDb::new().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let receiver = Receiver::start(None).await.unwrap();
    let (good, secret) = endpoint(&db.pool, &receiver.url("/good")).await;
    receiver.expect_secrets("/good", vec![secret]);
    let payloads = hostile_payloads(&mut rng);
    for payload in &payloads {
        sqlx::query(
            "INSERT INTO webhook.deliveries (endpoint_id, event_type, payload) VALUES ($1, 'hostile', $2::json)",
        )
        .bind(good)
        .bind(payload)
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("the producer could not insert {payload:.40}: {e}"));
    }
    // Broken rows: endpoints with unusable URLs, a truncated secret, NULLs where allowed.
    let mut broken = 0;
    for url in ["http://[::1", "https://", "mailto:x@example.com", "http://exa mple.com/", "http://example.com:99999/"]
    {
        let (id, _) = endpoint(&db.pool, "https://placeholder.example.com/").await;
        sqlx::query(
            "UPDATE webhook.endpoints SET url = $2, timeout_ms = NULL, rate_limit_per_second = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(url)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO webhook.deliveries (endpoint_id, event_type, payload) VALUES ($1, 'x', '{}')")
            .bind(id)
            .execute(&db.pool)
            .await
            .unwrap();
        broken += 1;
    }
    let (truncated, _) = endpoint(&db.pool, &receiver.url("/truncated")).await;
    sqlx::query(
        "UPDATE webhook.endpoint_secrets SET ciphertext = substring(ciphertext from 1 for 30) WHERE endpoint_id = $1",
    )
    .bind(truncated)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO webhook.deliveries (endpoint_id, event_type, payload) VALUES ($1, 'x', '{}')")
        .bind(truncated)
        .execute(&db.pool)
        .await
        .unwrap();

    let worker = TestWorker::start(settings(&db, "1h"));
    assert!(
        receiver.wait_for(payloads.len(), Duration::from_secs(60)).await,
        "only {} of {} hostile payloads arrived",
        receiver.count(),
        payloads.len()
    );
    wait_until(&db.pool, &format!("SELECT count(*) = {broken} FROM webhook.dead_letters"), Duration::from_secs(30))
        .await;
    wait_until(
        &db.pool,
        "SELECT count(*) = 1 FROM webhook.deliveries WHERE last_error IS NOT NULL",
        Duration::from_secs(30),
    )
    .await;
    worker.stop().await;

    let mut bodies: Vec<String> =
        receiver.received().iter().filter(|r| r.path == "/good").map(|r| r.body.clone()).collect();
    assert!(
        receiver.received().iter().filter(|r| r.path == "/good").all(|r| r.valid),
        "every signature covers the exact bytes"
    );
    let mut sent = payloads.clone();
    bodies.sort();
    sent.sort();
    assert_eq!(bodies, sent, "each payload arrived byte for byte");
    let errors: Vec<String> = sqlx::query_scalar("SELECT last_error FROM webhook.dead_letters ORDER BY delivery_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    for error in &errors {
        assert!(error.starts_with("endpoint URL `") || error.starts_with("refused: "), "unreadable error: {error}");
    }
    let truncated_error: String =
        sqlx::query_scalar("SELECT last_error FROM webhook.deliveries").fetch_one(&db.pool).await.unwrap();
    assert!(truncated_error.contains("could not be decrypted: ciphertext did not authenticate"), "{truncated_error}");
}
