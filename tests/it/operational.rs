//! Operational events (docs/operational-events.md): each fires once per transition across a fleet
//! of worker processes, arrives signed at the operational application's endpoints, and an
//! operational endpoint's own failures make no events about it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use webhook_worker::admin::applications::OPERATIONAL;
use webhook_worker::admin::endpoints::{self, Changes, StateChange};
use webhook_worker::admin::ids;
use webhook_worker::config::Settings;
use webhook_worker::policy::crypto::KeyRing;
use webhook_worker::policy::signing::SigningSecret;
use webhook_worker::testkit::receiver::{Answer, Received, Receiver};

use crate::support::cli::{binary, json, stop};
use crate::support::worker::key_ring_text;
use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, wait_until, worker_args};

const WAIT: Duration = Duration::from_secs(90);

/// Registers an endpoint of the operational application for `url`; returns its id and secret.
async fn operational_endpoint(pool: &PgPool, url: &str) -> (Uuid, SigningSecret) {
    let secret = SigningSecret::generate();
    let key_ring = KeyRing::parse(key_ring_text()).unwrap();
    let changes = Changes { url: Some(url.to_owned()), application: Some(OPERATIONAL), ..Changes::default() };
    (endpoints::create(pool, &key_ring, &changes, &secret).await.unwrap(), secret)
}

/// A worker process with fast retries (six attempts) and a quick breaker.
fn worker_process(db: &TestDb) -> Child {
    binary(db)
        .arg("run")
        .env("WEBHOOK_RETRY_SCHEDULE", "0s,0s,0s,0s,0s")
        .env("WEBHOOK_BREAKER_FAILURE_THRESHOLD", "3")
        .env("WEBHOOK_BREAKER_FAILURE_RATIO", "1.0")
        .env("WEBHOOK_BREAKER_COOLDOWN", "1s")
        .env("WEBHOOK_BREAKER_MAX_COOLDOWN", "2s")
        .env("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Worker processes, stopped (SIGTERM, then waited for) when dropped, also when a test fails.
struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        self.0.drain(..).for_each(stop);
    }
}

/// The operational application's messages: (event type, payload).
async fn emitted(pool: &PgPool) -> Vec<(String, Value)> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, payload::text FROM webhook.messages WHERE application_id = $1 ORDER BY created_at",
    )
    .bind(OPERATIONAL)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|(kind, payload)| (kind, serde_json::from_str(&payload).unwrap())).collect()
}

/// How many events of `kind` are about `endpoint`.
fn about(events: &[(String, Value)], kind: &str, endpoint: Uuid) -> usize {
    let id = ids::endpoint_id(endpoint);
    events.iter().filter(|(k, payload)| k == kind && payload["data"]["endpointId"] == id.as_str()).count()
}

/// Checks `got` with the Standard Webhooks reference implementation and returns its body.
fn verified(got: &Received, secret: &SigningSecret) -> Value {
    assert!(got.valid, "the receiver verified the signature");
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", got.msg_id.parse().unwrap());
    headers.insert("webhook-timestamp", got.timestamp.to_string().parse().unwrap());
    headers.insert("webhook-signature", got.signature.parse().unwrap());
    let verifier = standardwebhooks::Webhook::new(&secret.expose_whsec()).unwrap();
    verifier.verify(got.body.as_bytes(), &headers).expect("standardwebhooks accepts the operational event");
    serde_json::from_str(&got.body).unwrap()
}

/// The per-delivery transitions of `endpoint` as the database recorded them: dead letters, retries
/// after a fourth failed attempt, deliveries after one. The events must match them one for one.
async fn delivery_transitions(db: &TestDb, endpoint: Uuid) -> [(&'static str, usize); 3] {
    let count = |sql: String| async move { usize::try_from(db.count(&sql).await).unwrap() };
    let attempts = format!("SELECT count(*) FROM webhook.delivery_attempts WHERE endpoint_id = '{endpoint}'");
    [
        (
            "message.attempt.exhausted",
            count(format!("SELECT count(*) FROM webhook.dead_letters WHERE endpoint_id = '{endpoint}'")).await,
        ),
        ("message.attempt.failing", count(format!("{attempts} AND attempt = 4 AND outcome = 'retried'")).await),
        ("message.attempt.recovered", count(format!("{attempts} AND attempt > 4 AND outcome = 'delivered'")).await),
    ]
}

/// The same three counts from the events about `endpoint`.
fn delivery_events(events: &[(String, Value)], endpoint: Uuid) -> [(&'static str, usize); 3] {
    ["message.attempt.exhausted", "message.attempt.failing", "message.attempt.recovered"]
        .map(|kind| (kind, about(events, kind, endpoint)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operational_event_fires_once_per_transition_across_three_workers() {
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (ops, ops_secret) = operational_endpoint(&db.pool, &receiver.url("/ops")).await;
    receiver.expect_secrets("/ops", vec![ops_secret.clone()]);
    let (gone, _) = endpoint(&db.pool, &receiver.url("/gone")).await;
    receiver.answer("/gone", Answer { status: 410, ..Answer::default() });
    let (flaky, _) = endpoint(&db.pool, &receiver.url("/flaky")).await;
    receiver.answer("/flaky", Answer { status: 500, ..Answer::default() });
    let (dying, _) = endpoint(&db.pool, &receiver.url("/dying")).await;
    receiver.answer("/dying", Answer { status: 500, ..Answer::default() });
    let (recovering, _) = endpoint(&db.pool, &receiver.url("/recovering")).await;
    receiver.answer("/recovering", Answer { fail_first: 4, ..Answer::default() });
    let (rotated, _) = endpoint(&db.pool, &receiver.url("/rotated")).await;
    let key_ring = KeyRing::parse(key_ring_text()).unwrap();
    let grace = Duration::from_secs(1800);
    endpoints::rotate_secret(&db.pool, &key_ring, rotated, &SigningSecret::generate(), grace).await.unwrap();

    let fleet = Fleet((0..3).map(|_| worker_process(&db)).collect());
    wait_until(&db.pool, "SELECT count(*) = 3 FROM webhook.workers", WAIT).await;
    insert_deliveries(&db.pool, gone, 30).await;
    insert_deliveries(&db.pool, flaky, 30).await;
    insert_deliveries(&db.pool, dying, 2).await;
    insert_deliveries(&db.pool, recovering, 1).await;
    // The 410 disables one endpoint; another trips its circuit and recovers once it is open.
    let open = format!("SELECT circuit_state = 'open' FROM webhook.endpoints WHERE id = '{flaky}'");
    wait_until(&db.pool, &open, WAIT).await;
    receiver.answer("/flaky", Answer::default());
    let settled = format!(
        "SELECT (SELECT count(*) = 0 FROM webhook.deliveries) \
         AND (SELECT circuit_state = 'closed' FROM webhook.endpoints WHERE id = '{flaky}')"
    );
    wait_until(&db.pool, &settled, WAIT).await;
    drop(fleet);

    let events = emitted(&db.pool).await;
    // The endpoint.disabled race was real: more than one worker got a 410 for it.
    let racing = db
        .count(&format!(
            "SELECT count(DISTINCT worker_id) FROM webhook.delivery_attempts WHERE endpoint_id = '{gone}' AND status_code = 410"
        ))
        .await;
    eprintln!("operational events: {} ({racing} workers saw the 410)", events.len());
    assert!(racing >= 2, "only {racing} worker(s) saw the 410: the race was not exercised");
    assert_eq!(about(&events, "endpoint.disabled", gone), 1, "{events:#?}");
    let none = ["message.attempt.exhausted", "message.attempt.failing", "message.attempt.recovered"].map(|k| (k, 0));
    assert_eq!(delivery_events(&events, gone), none, "the disabled endpoint's messages are its one event");
    assert_eq!(about(&events, "endpoint.circuit.opened", flaky), 1, "{events:#?}");
    assert_eq!(about(&events, "endpoint.circuit.closed", flaky), 1, "{events:#?}");
    for id in [flaky, dying, recovering] {
        assert_eq!(delivery_events(&events, id), delivery_transitions(&db, id).await, "{events:#?}");
    }
    assert_eq!(delivery_events(&events, dying)[0], ("message.attempt.exhausted", 2), "both died");
    assert_eq!(delivery_events(&events, dying)[1], ("message.attempt.failing", 2), "both failed a fourth time");
    assert_eq!(
        delivery_events(&events, recovering)[1..],
        [("message.attempt.failing", 1), ("message.attempt.recovered", 1)]
    );
    // Every circuit is reported open exactly while it is: opened once more than closed if it is
    // open now (one left open with nothing waiting stays so), as often otherwise.
    for id in [gone, flaky, dying, recovering] {
        let state = format!("SELECT count(*) FROM webhook.endpoints WHERE id = '{id}' AND circuit_state <> 'closed'");
        let open_now = usize::try_from(db.count(&state).await).unwrap();
        let (opened, closed) =
            (about(&events, "endpoint.circuit.opened", id), about(&events, "endpoint.circuit.closed", id));
        assert_eq!(opened, closed + open_now, "{events:#?}");
        assert!(opened <= 1, "no circuit here opened twice, so no event may repeat: {events:#?}");
    }
    assert_eq!(about(&events, "endpoint.secret.expiring", rotated), 1, "one leader at a time, once");
    assert!(events.iter().all(|(_, payload)| payload["data"]["endpointId"] != ids::endpoint_id(ops).as_str()));

    // Each event reached the subscriber once, signed, in the Svix shape.
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM webhook.messages WHERE application_id = $1")
        .bind(OPERATIONAL)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let stored: BTreeSet<String> = stored.into_iter().collect();
    let arrived: Vec<Received> = receiver.received().into_iter().filter(|r| r.path == "/ops").collect();
    let arrived_ids: BTreeSet<String> = arrived.iter().map(|r| r.msg_id.clone()).collect();
    assert_eq!(arrived.len(), arrived_ids.len(), "no event arrived twice");
    assert_eq!(arrived_ids, stored, "every event arrived");
    let mut kinds = BTreeMap::new();
    for got in &arrived {
        let body = verified(got, &ops_secret);
        let data = &body["data"];
        assert_eq!(data["appId"], ids::app_id(Uuid::nil()).as_str());
        assert_eq!(data["appUid"], "default");
        *kinds.entry(body["type"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        let status = &data["lastAttempt"]["responseStatusCode"];
        match body["type"].as_str().unwrap() {
            "endpoint.disabled" => {
                assert_eq!(data["trigger"], "automatic");
                assert!(data["failSince"].is_string(), "{body}");
            }
            "message.attempt.exhausted" | "message.attempt.failing" => {
                assert!(data["msgId"].as_str().unwrap().starts_with("msg_"), "{body}");
                assert!(data["lastAttempt"]["id"].as_str().unwrap().starts_with("atmpt_"), "{body}");
                assert_eq!(*status, 500, "{body}");
            }
            "message.attempt.recovered" => assert_eq!(*status, 200, "{body}"),
            "endpoint.circuit.opened" => assert!(data["openUntil"].is_string(), "{body}"),
            "endpoint.circuit.closed" => {}
            "endpoint.secret.expiring" => assert!(data["expiresAt"].is_string(), "{body}"),
            other => panic!("unexpected operational event {other}: {body}"),
        }
    }
    eprintln!("operational events by type: {kinds:?}");
}

#[tokio::test]
async fn a_failing_operational_endpoint_makes_no_events_about_itself() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (ops_down, _) = operational_endpoint(&db.pool, &receiver.url("/ops-down")).await;
    receiver.answer("/ops-down", Answer { status: 500, ..Answer::default() });
    let (ops_gone, _) = operational_endpoint(&db.pool, &receiver.url("/ops-gone")).await;
    receiver.answer("/ops-gone", Answer { status: 410, ..Answer::default() });
    let (gone, _) = endpoint(&db.pool, &receiver.url("/gone")).await;
    receiver.answer("/gone", Answer { status: 410, ..Answer::default() });
    let (dying, _) = endpoint(&db.pool, &receiver.url("/dying")).await;
    receiver.answer("/dying", Answer { status: 500, ..Answer::default() });
    // Two attempts per delivery; probes as often as the leader runs.
    let mut args = worker_args(&db, "0s");
    args.worker.breaker_failure_threshold = 2;
    args.worker.breaker_failure_ratio = 1.0;
    args.worker.breaker_cooldown = Duration::from_secs(1);
    args.worker.breaker_max_cooldown = Duration::from_secs(1);
    let worker = TestWorker::start(Settings::from_args(&args).unwrap());
    insert_deliveries(&db.pool, gone, 1).await;
    insert_deliveries(&db.pool, dying, 2).await;
    // Every customer event goes to both operational endpoints, which fail: one is disabled by its
    // 410, the other exhausts every delivery and opens its circuit. Once the queue is empty nothing
    // is left that could make another event.
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", WAIT).await;
    worker.stop().await;

    let events = emitted(&db.pool).await;
    eprintln!("operational events: {}", events.len());
    let customer: BTreeSet<String> = [gone, dying].into_iter().map(ids::endpoint_id).collect();
    for (kind, payload) in &events {
        let about = payload["data"]["endpointId"].as_str().unwrap();
        assert!(customer.contains(about), "{kind} about an operational endpoint: {payload}");
    }
    assert_eq!(about(&events, "endpoint.disabled", gone), 1);
    assert_eq!(about(&events, "message.attempt.exhausted", dying), 2);
    assert!(events.len() <= 4, "only the customer transitions were reported: {events:#?}");
    // The operational endpoints did fail in every way that makes an event for others.
    let state = |id: Uuid| format!("SELECT state || '/' || circuit_state FROM webhook.endpoints WHERE id = '{id}'");
    let gone_state: String =
        sqlx::query_scalar(sqlx::AssertSqlSafe(state(ops_gone))).fetch_one(&db.pool).await.unwrap();
    assert!(gone_state.starts_with("disabled/"), "{gone_state}");
    let down_state: String =
        sqlx::query_scalar(sqlx::AssertSqlSafe(state(ops_down))).fetch_one(&db.pool).await.unwrap();
    assert_eq!(down_state, "active/open");
    let down_dead =
        db.count(&format!("SELECT count(*) FROM webhook.dead_letters WHERE endpoint_id = '{ops_down}'")).await;
    assert_eq!(usize::try_from(down_dead).unwrap(), events.len(), "each event died at the failing endpoint, silently");
}

#[tokio::test]
async fn operator_changes_and_expiring_secrets_are_reported_once() {
    let db = TestDb::new().await;
    let key_ring = KeyRing::parse(key_ring_text()).unwrap();
    let (customer, _) = endpoint(&db.pool, "http://127.0.0.1:9/customer").await;
    let (later, _) = endpoint(&db.pool, "http://127.0.0.1:9/later").await;
    let (ops, _) = operational_endpoint(&db.pool, "http://127.0.0.1:9/ops").await;

    endpoints::change_state(&db.pool, customer, StateChange::Disable, None).await.unwrap();
    assert!(endpoints::change_state(&db.pool, customer, StateChange::Disable, None).await.is_err(), "already disabled");
    endpoints::change_state(&db.pool, customer, StateChange::Enable, None).await.unwrap();
    endpoints::change_state(&db.pool, customer, StateChange::Pause, None).await.unwrap();
    endpoints::change_state(&db.pool, customer, StateChange::Resume, None).await.unwrap();
    endpoints::change_state(&db.pool, ops, StateChange::Disable, None).await.unwrap();

    let grace = Duration::from_secs(1800);
    endpoints::rotate_secret(&db.pool, &key_ring, customer, &SigningSecret::generate(), grace).await.unwrap();
    endpoints::rotate_secret(&db.pool, &key_ring, ops, &SigningSecret::generate(), grace).await.unwrap();
    let notice = webhook_worker::engine::maintenance::SECRET_EXPIRY_NOTICE;
    let far = notice + Duration::from_secs(3600);
    endpoints::rotate_secret(&db.pool, &key_ring, later, &SigningSecret::generate(), far).await.unwrap();
    // Two leader rounds (or two leaders one after the other) report it once.
    let mut connection = db.pool.acquire().await.unwrap();
    let report = webhook_worker::engine::maintenance::report_expiring_secrets;
    assert_eq!(report(&mut connection).await.unwrap(), 1, "the customer's secret; never the operational one");
    assert_eq!(report(&mut connection).await.unwrap(), 0, "reported once");

    let events = emitted(&db.pool).await;
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["endpoint.disabled", "endpoint.enabled", "endpoint.secret.expiring"], "{events:#?}");
    assert_eq!(events[0].1["data"]["trigger"], "manual");
    assert!(events[0].1["data"]["failSince"].is_null());
    assert!(events.iter().all(|(_, payload)| payload["data"]["endpointId"] == ids::endpoint_id(customer).as_str()));
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(events[2].1["data"]["expiresAt"].clone()).unwrap();
    let expected = chrono::Utc::now() + chrono::Duration::from_std(grace).unwrap();
    assert!((expires - expected).num_seconds().abs() < 60, "expiresAt {expires}");
}

#[tokio::test]
async fn without_the_operational_application_transitions_still_apply() {
    let db = TestDb::new().await;
    let scope = ids::Scope::All;
    webhook_worker::admin::applications::delete(&db.pool, scope, "operational").await.unwrap();
    let (customer, _) = endpoint(&db.pool, "http://127.0.0.1:9/customer").await;
    endpoints::change_state(&db.pool, customer, StateChange::Disable, None).await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM webhook.messages").await, 0, "nothing to tell, nobody to tell it to");
    let state: String = sqlx::query_scalar("SELECT state FROM webhook.endpoints").fetch_one(&db.pool).await.unwrap();
    assert_eq!(state, "disabled");
}

#[tokio::test]
async fn the_cli_subscribes_an_operational_endpoint_to_the_events_it_names() {
    let db = TestDb::new().await;
    let url = "http://127.0.0.1:9/ops";
    let args = ["endpoint", "add", "--app", "operational", "--url", url, "--event-type", "endpoint.enabled", "--json"];
    let ops: Uuid = json(&args, &db)["id"].as_str().unwrap().parse().unwrap();
    let app: Uuid = sqlx::query_scalar("SELECT application_id FROM webhook.endpoints WHERE id = $1")
        .bind(ops)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(app, OPERATIONAL);
    let customer = json(&["endpoint", "add", "--url", "http://127.0.0.1:9/customer", "--json"], &db);
    let customer = customer["id"].as_str().unwrap().to_owned();
    json(&["endpoint", "disable", &customer, "--json"], &db);
    json(&["endpoint", "enable", &customer, "--json"], &db);
    // Both events are stored; only the one it subscribed to is queued for the endpoint.
    assert_eq!(emitted(&db.pool).await.len(), 2);
    let queued: Vec<String> = sqlx::query_scalar("SELECT event_type FROM webhook.deliveries WHERE endpoint_id = $1")
        .bind(ops)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(queued, ["endpoint.enabled"]);
}

#[tokio::test]
async fn a_delivery_failing_four_times_is_reported_failing_then_recovered() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (_, ops_secret) = operational_endpoint(&db.pool, &receiver.url("/ops")).await;
    receiver.expect_secrets("/ops", vec![ops_secret.clone()]);
    let (recovering, _) = endpoint(&db.pool, &receiver.url("/recovering")).await;
    receiver.answer("/recovering", Answer { fail_first: 4, ..Answer::default() });
    let (blip, _) = endpoint(&db.pool, &receiver.url("/blip")).await;
    let blip_id = ids::endpoint_id(blip);
    receiver.answer("/blip", Answer { fail_first: 2, ..Answer::default() });
    let worker = TestWorker::start(crate::support::settings(&db, "0s,0s,0s,0s,0s"));
    insert_deliveries(&db.pool, recovering, 1).await;
    insert_deliveries(&db.pool, blip, 1).await;
    // Five attempts and two events to /recovering, three attempts to /blip.
    assert!(receiver.wait_for(5 + 2 + 3, WAIT).await, "only {} requests arrived", receiver.count());
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", WAIT).await;
    worker.stop().await;

    let events = emitted(&db.pool).await;
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["message.attempt.failing", "message.attempt.recovered"], "{events:#?}");
    assert_eq!(about(&events, "message.attempt.failing", recovering), 1);
    assert_eq!(about(&events, "message.attempt.recovered", recovering), 1);
    assert!(
        events.iter().all(|(_, payload)| payload["data"]["endpointId"] != blip_id.as_str()),
        "two failures are no event"
    );
    let arrived: Vec<Value> =
        receiver.received().iter().filter(|r| r.path == "/ops").map(|r| verified(r, &ops_secret)).collect();
    assert_eq!(arrived.len(), 2);
    let last = |n: usize| {
        (
            arrived[n]["data"]["lastAttempt"]["id"].clone(),
            arrived[n]["data"]["lastAttempt"]["responseStatusCode"].clone(),
        )
    };
    let delivery: i64 =
        sqlx::query_scalar("SELECT delivery_id FROM webhook.delivery_attempts WHERE endpoint_id = $1 LIMIT 1")
            .bind(recovering)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(last(0), (Value::from(format!("atmpt_{delivery}_4")), Value::from(500)));
    assert_eq!(last(1), (Value::from(format!("atmpt_{delivery}_5")), Value::from(200)));
}
