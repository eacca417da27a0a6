//! The management API against real Postgres, real workers and real clients: the official Svix
//! SDK, tenant isolation under mixed API and SQL producers, scoped tokens, bad input, and
//! schemathesis against the API's own OpenAPI document.

use std::time::Duration;

use serde_json::{Value, json};
use webhook_worker::policy::signing::SigningSecret;
use webhook_worker::testkit::receiver::Receiver;

use webhook_worker::admin::ids::Scope;

use crate::support::api::TestApi;
use crate::support::python::{python, script};
use crate::support::{TestDb, TestWorker, settings};

const WAIT: Duration = Duration::from_secs(120);

/// Runs a Python script with the API's URL and token; returns (success, stdout, stderr).
async fn run_python(api: &TestApi, args: &[&str]) -> (bool, String, String) {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let mut command = tokio::process::Command::new(python);
    command.args(args).env("WEBHOOK_API_URL", &api.url).env("WEBHOOK_API_TOKEN", &api.token).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(600), command.output()).await.expect("bounded").unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// Creates an application with `uid` and an endpoint at `url` for `event_type`; returns their
/// ids and the endpoint's secret, all through the API.
async fn tenant(api: &TestApi, uid: &str, url: &str, event_type: &str) -> (String, String, SigningSecret) {
    let app = api.request("POST", "/api/v1/app", Some(&json!({"name": uid, "uid": uid}).to_string())).await;
    assert_eq!(app.status, 201, "{:?}", app.body);
    let app_id = app.body["id"].as_str().unwrap().to_owned();
    let body = json!({"url": url, "filterTypes": [event_type]}).to_string();
    let endpoint = api.request("POST", &format!("/api/v1/app/{app_id}/endpoint"), Some(&body)).await;
    assert_eq!(endpoint.status, 201, "{:?}", endpoint.body);
    let endpoint_id = endpoint.body["id"].as_str().unwrap().to_owned();
    let secret = api.request("GET", &format!("/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret"), None).await;
    (app_id, endpoint_id, SigningSecret::parse(secret.body["key"].as_str().unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_drives_the_api_and_verifies_what_the_worker_delivers() {
    let db = TestDb::new().await;
    let api = TestApi::start(&db, 1 << 20).await;
    let worker = TestWorker::start(settings(&db, "1s"));
    let (ok, stdout, stderr) = run_python(&api, &[script("svix_sdk.py").to_str().unwrap()]).await;
    worker.stop().await;
    api.stop().await;
    assert!(ok, "the SDK run failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("svix sdk: ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_application_receives_exactly_its_own_events_from_api_and_sql_producers() {
    let db = TestDb::new().await;
    let api = TestApi::start(&db, 1 << 20).await;
    let receiver = Receiver::start(None).await.unwrap();
    let mut apps = Vec::new();
    for tenant_uid in ["tenant-a", "tenant-b"] {
        let path = format!("/{tenant_uid}");
        let (app, _, secret) = tenant(&api, tenant_uid, &receiver.url(&path), "order.created").await;
        receiver.expect_secrets(&path, vec![secret]);
        apps.push((tenant_uid, app));
    }
    let worker = TestWorker::start(settings(&db, "1s"));
    for (uid, app) in &apps {
        // Even events through the API, odd ones through webhook.enqueue() in SQL, by uid.
        for n in (0..1000).step_by(2) {
            let body = json!({"eventType": "order.created", "payload": {"tenant": uid, "n": n}}).to_string();
            let sent = api.request("POST", &format!("/api/v1/app/{app}/msg"), Some(&body)).await;
            assert_eq!(sent.status, 202, "{:?}", sent.body);
        }
        sqlx::query(
            "SELECT count(*) FROM generate_series(0, 499) AS i, LATERAL webhook.enqueue('order.created', \
             json_build_object('tenant', $1::text, 'n', 2 * i + 1)::json, app => $1) AS e",
        )
        .bind(uid)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    assert!(receiver.wait_for(2000, WAIT).await, "only {} of 2000 arrived", receiver.count());
    worker.stop().await;
    api.stop().await;
    let received = receiver.received();
    assert_eq!(received.len(), 2000, "nothing more than the 2000 events arrived");
    for (uid, _) in &apps {
        let mine: Vec<_> = received.iter().filter(|r| r.path == format!("/{uid}")).collect();
        assert_eq!(mine.len(), 1000, "{uid} received {} events", mine.len());
        let mut seen: Vec<i64> = mine
            .iter()
            .map(|r| {
                assert!(r.valid, "an invalid signature reached {uid}");
                let payload: Value = serde_json::from_str(&r.body).unwrap();
                assert_eq!(payload["tenant"], *uid, "{uid} received another tenant's event: {payload}");
                payload["n"].as_i64().unwrap()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>(), "{uid} received each of its events exactly once");
    }
}

/// Every route, with `app` and `endpoint` and `msg` filled in.
fn routes(app: &str, endpoint: &str, msg: &str) -> Vec<(&'static str, String, Option<String>)> {
    let a = format!("/api/v1/app/{app}");
    let e = format!("{a}/endpoint/{endpoint}");
    let app_body = Some(json!({"name": "taken over"}).to_string());
    let ep_body = Some(json!({"url": "http://127.0.0.1:9/x"}).to_string());
    let headers = Some(json!({"headers": {"x-a": "1"}}).to_string());
    vec![
        ("GET", a.clone(), None),
        ("PUT", a.clone(), app_body.clone()),
        ("PATCH", a.clone(), app_body),
        ("GET", format!("{a}/endpoint"), None),
        ("POST", format!("{a}/endpoint"), ep_body.clone()),
        ("GET", e.clone(), None),
        ("PUT", e.clone(), ep_body.clone()),
        ("PATCH", e.clone(), Some(json!({"description": "x"}).to_string())),
        ("GET", format!("{e}/secret"), None),
        ("POST", format!("{e}/secret/rotate"), Some("{}".into())),
        ("GET", format!("{e}/headers"), None),
        ("PUT", format!("{e}/headers"), headers.clone()),
        ("PATCH", format!("{e}/headers"), headers),
        ("POST", format!("{e}/recover"), Some(json!({"since": "2020-01-01T00:00:00Z"}).to_string())),
        ("GET", format!("{a}/msg"), None),
        ("POST", format!("{a}/msg"), Some(json!({"eventType": "x.y", "payload": {}}).to_string())),
        ("GET", format!("{a}/msg/{msg}"), None),
        ("POST", format!("{a}/msg/{msg}/endpoint/{endpoint}/resend"), None),
        ("GET", format!("{a}/attempt/msg/{msg}"), None),
        ("GET", format!("{a}/attempt/endpoint/{endpoint}"), None),
        ("DELETE", e, None),
        ("DELETE", a, None),
    ]
}

/// What a tenant's rows look like, to compare before and after.
async fn snapshot(db: &TestDb, app: &str) -> String {
    let id = webhook_worker::admin::ids::parse(webhook_worker::admin::ids::Kind::Application, app).unwrap();
    sqlx::query_scalar(
        "SELECT json_build_object(
            'app', (SELECT row_to_json(a) FROM webhook.applications a WHERE a.id = $1),
            'endpoints', (SELECT json_agg(e ORDER BY e.id) FROM webhook.endpoints e WHERE e.application_id = $1),
            'secrets', (SELECT json_agg(s ORDER BY s.id) FROM webhook.endpoint_secrets s
                        JOIN webhook.endpoints e ON e.id = s.endpoint_id WHERE e.application_id = $1),
            'messages', (SELECT count(*) FROM webhook.messages m WHERE m.application_id = $1),
            'deliveries', (SELECT count(*) FROM webhook.deliveries d JOIN webhook.endpoints e ON e.id = d.endpoint_id
                           WHERE e.application_id = $1))::text",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_cannot_see_or_change_another_application_and_no_token_sees_nothing() {
    let db = TestDb::new().await;
    let api = TestApi::start(&db, 1 << 20).await;
    let (a, ea, _) = tenant(&api, "tenant-a", "http://127.0.0.1:9/a", "e.t").await;
    let (b, eb, _) = tenant(&api, "tenant-b", "http://127.0.0.1:9/b", "e.t").await;
    let sent =
        api.request("POST", &format!("/api/v1/app/{b}/msg"), Some(r#"{"eventType":"e.t","payload":{"x":1}}"#)).await;
    let mb = sent.body["id"].as_str().unwrap().to_owned();
    let app_a = webhook_worker::admin::ids::parse(webhook_worker::admin::ids::Kind::Application, &a).unwrap();
    let token_a = TestApi::scoped_token(&db, app_a).await;
    let before = snapshot(&db, &b).await;
    // B's ids, and A's application with B's endpoint and message.
    let mut foreign = routes(&b, &eb, &mb);
    foreign.extend(routes(&a, &eb, &mb).into_iter().filter(|(_, path, _)| path.contains(&eb) || path.contains(&mb)));
    for (method, path, body) in &foreign {
        let reply = api.call(method, path, body.as_deref(), Some(&token_a)).await;
        assert!(
            [403, 404].contains(&reply.status),
            "A's token got {} on {method} {path}: {:?}",
            reply.status,
            reply.body
        );
    }
    assert_eq!(snapshot(&db, &b).await, before, "B's rows changed");
    let listed = api.call("GET", "/api/v1/app", None, Some(&token_a)).await;
    let ids: Vec<&str> = listed.body["data"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a.as_str()], "A's token lists only A");
    let create = api.call("POST", "/api/v1/app", Some(r#"{"name":"c"}"#), Some(&token_a)).await;
    assert_eq!(create.status, 403, "{:?}", create.body);
    let own = api.call("GET", &format!("/api/v1/app/{a}/endpoint/{ea}"), None, Some(&token_a)).await;
    assert_eq!(own.status, 200, "A's token works on A: {:?}", own.body);
    let mut every = routes(&a, &ea, &mb);
    every.push(("GET", "/api/v1/app".into(), None));
    every.push(("POST", "/api/v1/app".into(), Some(r#"{"name":"x"}"#.into())));
    every.push(("GET", "/api/v1/event-type".into(), None));
    every.push(("POST", "/api/v1/event-type".into(), Some(r#"{"name":"a.b","description":""}"#.into())));
    for (method, path, body) in &every {
        for token in [None, Some("wdt_not-a-token")] {
            let reply = api.call(method, path, body.as_deref(), token).await;
            assert_eq!(reply.status, 401, "{method} {path} with {token:?}: {:?}", reply.body);
        }
    }
    assert_eq!(api.call("GET", "/api/v1/health", None, None).await.status, 204);
    api.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_precise_4xx_and_changes_nothing() {
    let db = TestDb::new().await;
    let api = TestApi::start(&db, 4096).await;
    let (app, _, _) = tenant(&api, "tenant-a", "http://127.0.0.1:9/a", "e.t").await;
    let big = json!({"eventType": "e.t", "payload": {"blob": "x".repeat(8192)}}).to_string();
    let too_large = api.request("POST", &format!("/api/v1/app/{app}/msg"), Some(&big)).await;
    assert_eq!((too_large.status, too_large.body["code"].as_str()), (413, Some("payload_too_large")));
    let wrong_type = api.request("POST", "/api/v1/app", Some(r#"{"name": 5}"#)).await;
    assert_eq!(wrong_type.status, 422);
    assert_eq!(wrong_type.body["detail"][0]["loc"], json!(["body", "name"]), "{:?}", wrong_type.body);
    let malformed = api.request("POST", "/api/v1/app", Some(r#"{"name": "#)).await;
    assert_eq!(malformed.status, 422, "{:?}", malformed.body);
    let missing = api.request("POST", &format!("/api/v1/app/{app}/endpoint"), Some("{}")).await;
    assert_eq!(missing.status, 422);
    assert!(missing.body["detail"][0]["msg"].as_str().unwrap().contains("`url`"), "{:?}", missing.body);
    let private = json!({"url": "http://10.1.2.3/hook"}).to_string();
    let refused = api.request("POST", &format!("/api/v1/app/{app}/endpoint"), Some(&private)).await;
    assert_eq!(refused.status, 422);
    assert_eq!(refused.body["detail"][0]["loc"], json!(["body", "url"]));
    assert!(refused.body["detail"][0]["msg"].as_str().unwrap().contains("forbidden range"), "{:?}", refused.body);
    let unknown_app = format!("/api/v1/app/app_{}", uuid::Uuid::new_v4().simple());
    assert_eq!(api.request("GET", &unknown_app, None).await.status, 404);
    let unknown_endpoint = format!("/api/v1/app/{app}/endpoint/ep_{}", uuid::Uuid::new_v4().simple());
    assert_eq!(api.request("GET", &unknown_endpoint, None).await.status, 404);
    let taken = api.request("POST", "/api/v1/app", Some(r#"{"name": "again", "uid": "tenant-a"}"#)).await;
    assert_eq!((taken.status, taken.body["code"].as_str()), (409, Some("conflict")));
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook.applications), (SELECT count(*) FROM webhook.endpoints), \
         (SELECT count(*) FROM webhook.messages)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        counts,
        (3, 1, 0),
        "the default and operational applications, tenant-a and its one endpoint; no message"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_openapi_document_under_schemathesis() {
    let db = TestDb::new().await;
    let api = TestApi::start(&db, 1 << 20).await;
    tenant(&api, "tenant-a", "http://127.0.0.1:9/a", "e.t").await;
    let document = api.request("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(document.status, 200);
    assert!(document.body["paths"]["/api/v1/app/{app_id}/msg"]["post"].is_object(), "the document lists the routes");
    let schema = format!("{}/api/v1/openapi.json", api.url);
    let auth = format!("Authorization: Bearer {}", api.token);
    let args = [
        "-m",
        "schemathesis.cli",
        "run",
        &schema,
        "--header",
        &auth,
        "--checks",
        "not_a_server_error,response_schema_conformance,status_code_conformance",
        "--max-examples",
        "15",
        "--seed",
        "1",
        "--suppress-health-check",
        "all",
    ];
    let (ok, stdout, stderr) = run_python(&api, &args).await;
    api.stop().await;
    assert!(ok, "schemathesis found a problem:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected() {
    let db = TestDb::new().await;
    let api = TestApi::start_with(&db, 1 << 20, |args| {
        args.rate_limit = 1;
        args.rate_limit_burst = 3;
    })
    .await;
    let app = webhook_worker::admin::applications::find(&db.pool, Scope::All, "default").await.unwrap().id;
    let scoped = TestApi::scoped_token(&db, app).await;
    for n in 0..3 {
        let reply = api.request("GET", "/api/v1/app", None).await;
        assert_eq!(reply.status, 200, "request {n} is within the burst: {:?}", reply.body);
    }
    // The bucket refills at one request a second: of a few more quick ones, one is refused.
    let (mut created, mut refused) = (0, None);
    for n in 0..5 {
        let reply = api.request("POST", "/api/v1/app", Some(&json!({"name": format!("over-{n}")}).to_string())).await;
        match reply.status {
            201 => created += 1,
            _ => {
                refused = Some(reply);
                break;
            }
        }
    }
    let refused = refused.expect("a token over its rate is refused");
    assert_eq!((refused.status, refused.body["code"].as_str()), (429, Some("rate_limited")), "{:?}", refused.body);
    assert_eq!(refused.retry_after.as_deref(), Some("1"), "one request per second: come back in a second");
    assert!(refused.body["detail"].as_str().unwrap().contains("WEBHOOK_API_RATE_LIMIT"), "{:?}", refused.body);
    let apps: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook.applications").fetch_one(&db.pool).await.unwrap();
    let before = 2; // the default and the operational applications
    assert_eq!(apps, before + created, "a refused request changes nothing");
    let other = api.call("GET", "/api/v1/app", None, Some(&scoped)).await;
    assert_eq!(other.status, 200, "another token has its own allowance: {:?}", other.body);
    assert_eq!(api.call("GET", "/api/v1/app", None, None).await.status, 401, "no token is refused before counting");
    api.stop().await;
}

#[tokio::test]
async fn put_replaces_an_endpoint_and_patch_with_null_clears_a_field() {
    let db = TestDb::new().await;
    let api = TestApi::start(&db, 1 << 20).await;
    let (app, endpoint, _) = tenant(&api, "tenant-a", "http://127.0.0.1:9/a", "e.t").await;
    let path = format!("/api/v1/app/{app}/endpoint/{endpoint}");
    let set = json!({"rateLimit": 5, "uid": "ep-a", "description": "first", "metadata": {"k": "v"}}).to_string();
    let patched = api.request("PATCH", &path, Some(&set)).await;
    assert_eq!((patched.status, &patched.body["rateLimit"], &patched.body["uid"]), (200, &json!(5), &json!("ep-a")));
    let untouched = api.request("PATCH", &path, Some(r#"{"description": "second"}"#)).await;
    assert_eq!(untouched.body["rateLimit"], 5, "an absent field is left as it was: {:?}", untouched.body);
    let cleared = api.request("PATCH", &path, Some(r#"{"rateLimit": null}"#)).await;
    assert_eq!(cleared.status, 200, "{:?}", cleared.body);
    assert_eq!((&cleared.body["rateLimit"], &cleared.body["uid"]), (&Value::Null, &json!("ep-a")), "null clears");
    api.request("PATCH", &path, Some(&set)).await;
    let replaced = api.request("PUT", &path, Some(r#"{"url": "http://127.0.0.1:9/b"}"#)).await;
    assert_eq!(replaced.status, 200, "{:?}", replaced.body);
    let b = &replaced.body;
    assert_eq!(
        (&b["url"], &b["rateLimit"], &b["uid"], &b["description"], &b["metadata"], &b["disabled"]),
        (&json!("http://127.0.0.1:9/b"), &Value::Null, &Value::Null, &json!(""), &json!({}), &json!(false)),
        "PUT replaces: what the body leaves out takes its default"
    );
    let stored: Option<i32> =
        sqlx::query_scalar("SELECT rate_limit_per_second FROM webhook.endpoints").fetch_one(&db.pool).await.unwrap();
    assert_eq!(stored, None, "the endpoint's own limit is gone, so the application's default applies");
    let zero = api.request("PATCH", &path, Some(r#"{"rateLimit": 0}"#)).await;
    assert_eq!((zero.status, &zero.body["detail"][0]["loc"]), (422, &json!(["body", "rateLimit"])));
    api.stop().await;
}
