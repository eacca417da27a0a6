//! Egress through an HTTP CONNECT proxy (issue 16): the worker resolves and checks each target
//! itself and asks the proxy for the checked address; TLS still verifies the hostname; bypassed
//! hosts go direct; refused targets never reach the proxy; a dead proxy is a retried, readable
//! error. And the forensics of each attempt, as stored, shown and listed.

use std::time::Duration;

use time::OffsetDateTime;
use webhook_worker::config::{RunArgs, Settings};
use webhook_worker::testkit::proxy::ConnectProxy;
use webhook_worker::testkit::receiver::{Receiver, TestCa, server_config};

use crate::support::cli::{assert_no_secret, binary, free_port, run};
use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, wait_until, worker_args};

const WAIT: Duration = Duration::from_secs(30);
const USER: (&str, &str) = ("hook-egress", "pr0xy-p@ss:word");

/// Worker options for `db` through `proxy_url`, trusting `ca`.
fn through(db: &TestDb, proxy_url: String, ca: Option<&tempfile::NamedTempFile>) -> RunArgs {
    let mut args = worker_args(db, "1h");
    args.worker.proxy_url = Some(proxy_url.into());
    args.worker.ca_bundle = ca.map(|file| file.path().to_owned());
    args
}

/// An HTTPS receiver whose certificate names only `names` (no IP address).
async fn https_receiver(ca: &TestCa, names: &[&str]) -> Receiver {
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let issued = ca.issue(names, now - day, now + day).unwrap();
    Receiver::start(Some(server_config(issued, &[]).unwrap())).await.unwrap()
}

async fn wait_gone_or_failed(db: &TestDb, endpoint: uuid::Uuid) {
    let sql = format!(
        "SELECT NOT EXISTS (SELECT 1 FROM webhook.deliveries WHERE endpoint_id = '{endpoint}' \
         AND (last_error IS NULL OR state = 'running'))"
    );
    wait_until(&db.pool, &sql, WAIT).await;
}

#[tokio::test]
async fn deliveries_go_through_the_proxy_to_the_checked_address_with_its_credentials() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    let receiver = https_receiver(&ca, &["localhost"]).await;
    let proxy = ConnectProxy::start(Some(USER)).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/p")).await;
    receiver.expect_secrets("/p", vec![secret]);
    insert_deliveries(&db.pool, id, 3).await;
    let ca_file = ca.pem_file().unwrap();
    let worker = TestWorker::start(Settings::from_args(&through(&db, proxy.url(Some(USER)), Some(&ca_file))).unwrap());
    assert!(receiver.wait_for(3, WAIT).await, "delivered through the proxy");
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", WAIT).await;
    // One more, once the others are done: it goes over a pooled tunnel, without a new CONNECT.
    let tunnels = proxy.connects().len();
    insert_deliveries(&db.pool, id, 1).await;
    assert!(receiver.wait_for(4, WAIT).await);
    wait_until(&db.pool, "SELECT count(*) = 4 FROM webhook.delivery_attempts", WAIT).await;
    worker.stop().await;
    assert_eq!(proxy.connects().len(), tunnels, "the pooled connection was reused");

    let port = receiver.addr().port();
    let connects = proxy.connects();
    assert!(!connects.is_empty());
    let token = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", USER.0, USER.1))
    };
    for connect in &connects {
        assert_eq!(connect.target, format!("127.0.0.1:{port}"), "CONNECT to the checked address, never the name");
        assert_eq!(connect.authorization.as_deref(), Some(format!("Basic {token}").as_str()));
    }
    for request in receiver.received() {
        assert!(request.valid, "signed as usual");
        let host = request.headers.iter().find(|(name, _)| name == "host").map(|(_, v)| v.clone());
        assert_eq!(host, Some(format!("localhost:{port}")), "Host stays the URL's");
    }
    let rows: Vec<(Option<String>, Option<bool>, Option<bool>)> = sqlx::query_as(
        "SELECT host(remote_ip), via_proxy, connection_reused FROM webhook.delivery_attempts ORDER BY attempted_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|(_, via, _)| *via == Some(true)));
    assert!(rows[..3].iter().all(|(ip, _, reused)| ip.as_deref() == Some("127.0.0.1") && *reused == Some(false)));
    // Reused: no connection phases of its own, and the tunnel's address is not known to it.
    assert_eq!(rows[3], (None, Some(true), Some(true)));
}

#[tokio::test]
async fn tls_through_the_proxy_verifies_the_hostname_not_the_address() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    let receiver = https_receiver(&ca, &["other.example.com"]).await;
    let proxy = ConnectProxy::start(None).await.unwrap();
    let (id, _) = endpoint(&db.pool, &receiver.url("/wrong-name")).await;
    insert_deliveries(&db.pool, id, 1).await;
    let ca_file = ca.pem_file().unwrap();
    let worker = TestWorker::start(Settings::from_args(&through(&db, proxy.url(None), Some(&ca_file))).unwrap());
    wait_gone_or_failed(&db, id).await;
    worker.stop().await;
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM webhook.deliveries").fetch_one(&db.pool).await.unwrap();
    assert!(
        error.contains("invalid peer certificate") && error.contains("not valid for name \"localhost\""),
        "{error}"
    );
    assert_eq!(proxy.connects()[0].target, format!("127.0.0.1:{}", receiver.addr().port()));
    assert_eq!(receiver.count(), 0, "nothing is sent over an unverified tunnel");
}

#[tokio::test]
async fn no_proxy_hosts_bypass_the_proxy_and_plain_http_is_tunnelled_too() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    let direct = https_receiver(&ca, &["localhost"]).await;
    let plain = Receiver::start(None).await.unwrap();
    let proxy = ConnectProxy::start(None).await.unwrap();
    let (bypassed, _) = endpoint(&db.pool, &direct.url("/direct")).await;
    let (proxied, _) = endpoint(&db.pool, &plain.url("/plain")).await;
    insert_deliveries(&db.pool, bypassed, 2).await;
    insert_deliveries(&db.pool, proxied, 2).await;
    let ca_file = ca.pem_file().unwrap();
    let mut args = through(&db, proxy.url(None), Some(&ca_file));
    args.worker.no_proxy = Some("example.org, LOCALHOST".into());
    let worker = TestWorker::start(Settings::from_args(&args).unwrap());
    wait_gone_or_failed(&db, bypassed).await;
    wait_gone_or_failed(&db, proxied).await;
    worker.stop().await;
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT last_error FROM webhook.deliveries WHERE last_error IS NOT NULL")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!((direct.count(), plain.count()), (2, 2));
    let targets: Vec<String> = proxy.connects().into_iter().map(|c| c.target).collect();
    assert!(!targets.is_empty());
    assert!(targets.iter().all(|t| *t == plain.addr().to_string()), "only the proxied endpoint: {targets:?}");
    let via: Vec<(uuid::Uuid, Option<bool>)> =
        sqlx::query_as("SELECT DISTINCT endpoint_id, via_proxy FROM webhook.delivery_attempts")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(via.contains(&(bypassed, Some(false))) && via.contains(&(proxied, Some(true))), "{via:?}");
}

#[tokio::test]
async fn concurrent_new_connections_through_the_proxy_each_reach_their_own_receiver() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    let proxy = ConnectProxy::start(None).await.unwrap();
    let mut receivers = Vec::new();
    for n in 0..4 {
        // Half over TLS, half plain: both kinds of hand-off, interleaved.
        let receiver =
            if n % 2 == 0 { https_receiver(&ca, &["localhost"]).await } else { Receiver::start(None).await.unwrap() };
        let path = format!("/r{n}");
        let (id, secret) = endpoint(&db.pool, &receiver.url(&path)).await;
        receiver.expect_secrets(&path, vec![secret]);
        insert_deliveries(&db.pool, id, 100).await;
        receivers.push((receiver, path));
    }
    let ca_file = ca.pem_file().unwrap();
    let worker = TestWorker::start(Settings::from_args(&through(&db, proxy.url(None), Some(&ca_file))).unwrap());
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", WAIT).await;
    worker.stop().await;
    for (receiver, path) in &receivers {
        let received = receiver.received();
        assert_eq!(received.len(), 100, "{path}");
        assert!(received.iter().all(|r| r.path == *path && r.valid), "{path}: a request reached the wrong receiver");
    }
    let connects = proxy.connects();
    let own = |receiver: &Receiver| connects.iter().filter(|c| c.target == receiver.addr().to_string()).count();
    // Many connections were opened at once (HTTP/1.1: one request in flight per connection).
    assert!(receivers.iter().all(|(receiver, _)| own(receiver) >= 2), "{connects:?}");
    assert_eq!(receivers.iter().map(|(receiver, _)| own(receiver)).sum::<usize>(), connects.len());
}

#[tokio::test]
async fn a_proxy_that_wants_credentials_says_so_in_the_recorded_error() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let proxy = ConnectProxy::start(Some(USER)).await.unwrap();
    let (id, _) = endpoint(&db.pool, &receiver.url("/auth")).await;
    insert_deliveries(&db.pool, id, 1).await;
    let worker = TestWorker::start(Settings::from_args(&through(&db, proxy.url(None), None)).unwrap());
    wait_gone_or_failed(&db, id).await;
    worker.stop().await;
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM webhook.deliveries").fetch_one(&db.pool).await.unwrap();
    let expected = format!(
        "egress proxy {} refused CONNECT {}: HTTP 407 Proxy Authentication Required (the proxy wants credentials: \
         put them in WEBHOOK_PROXY_URL)",
        proxy.addr(),
        receiver.addr()
    );
    assert!(error.contains(&expected), "{error}");
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn every_loopback_form_is_refused_without_the_proxy_receiving_a_connect() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let proxy = ConnectProxy::start(None).await.unwrap();
    let port = receiver.addr().port();
    let forms = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::ffff:7f00:1]:{port}/"),
        format!("http://localhost:{port}/"),
        format!("https://localhost:{port}/"),
    ];
    for url in &forms {
        let (id, _) = endpoint(&db.pool, url).await;
        insert_deliveries(&db.pool, id, 1).await;
    }
    let mut strict = through(&db, proxy.url(None), None);
    strict.worker.allow_private_cidrs = Vec::new();
    let worker = TestWorker::start(Settings::from_args(&strict).unwrap());
    wait_until(&db.pool, &format!("SELECT count(*) = {} FROM webhook.dead_letters", forms.len()), WAIT).await;
    worker.stop().await;
    assert_eq!(proxy.connects(), Vec::new(), "no CONNECT for a refused target");
    assert_eq!(proxy.connections(), 0, "not even a connection to the proxy");
    assert_eq!(receiver.connections(), 0);
    let errors: Vec<String> = sqlx::query_scalar("SELECT last_error FROM webhook.dead_letters ORDER BY delivery_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    for (url, error) in forms.iter().zip(&errors) {
        let expected =
            if url.contains("localhost") { "refused: host `localhost` resolves to " } else { "refused: address " };
        assert!(error.starts_with(expected) && error.contains("loopback"), "{url}: {error}");
    }
}

#[tokio::test]
async fn a_dead_proxy_ends_in_a_recorded_retried_readable_error() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let dead = free_port();
    let (id, _) = endpoint(&db.pool, &receiver.url("/never")).await;
    insert_deliveries(&db.pool, id, 1).await;
    let mut args = through(&db, format!("http://{}:{}@127.0.0.1:{dead}", USER.0, "s3cret-word"), None);
    args.worker.retry_schedule = "0s,0s".parse().unwrap();
    let worker = TestWorker::start(Settings::from_args(&args).unwrap());
    wait_until(&db.pool, "SELECT count(*) = 1 FROM webhook.dead_letters", WAIT).await;
    worker.stop().await;
    let attempts: Vec<(i32, String, String, Option<bool>)> =
        sqlx::query_as("SELECT attempt, outcome, error, via_proxy FROM webhook.delivery_attempts ORDER BY attempt")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(outcomes, ["retried", "retried", "dead"], "retried like a transport error, then exhausted");
    for (_, _, error, via) in &attempts {
        assert!(error.contains(&format!("egress proxy 127.0.0.1:{dead}: could not connect to it")), "{error}");
        assert!(error.contains("refused"), "the cause is kept: {error}");
        assert!(!error.contains("s3cret-word"), "never the proxy's password: {error}");
        assert_eq!(*via, Some(true));
    }
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn a_proxy_that_never_answers_connect_times_out_with_its_name() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    // Accepts connections and reads nothing, answers nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let (id, _) = endpoint(&db.pool, &receiver.url("/silent")).await;
    insert_deliveries(&db.pool, id, 1).await;
    let mut args = through(&db, format!("http://{silent_addr}"), None);
    args.worker.connect_timeout = Duration::from_millis(500);
    let worker = TestWorker::start(Settings::from_args(&args).unwrap());
    wait_gone_or_failed(&db, id).await;
    worker.stop().await;
    held.abort();
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM webhook.deliveries").fetch_one(&db.pool).await.unwrap();
    let expected =
        format!("egress proxy {silent_addr}: no tunnel to 127.0.0.1:{} within 500ms", receiver.addr().port());
    assert!(error.contains(&expected), "{error}");
}

#[tokio::test]
async fn a_bad_proxy_url_stops_the_worker_with_a_precise_error_and_never_its_password() {
    let db = TestDb::new().await;
    let cases = [
        ("https://egress:pr0xy-secret@proxy.internal:3128", "WEBHOOK_PROXY_URL has scheme `https`; only http://"),
        ("http://egress:pr0xy-secret@proxy.internal:3128/path", "WEBHOOK_PROXY_URL must be only scheme"),
        ("egress:pr0xy-secret@proxy.internal:3128", "WEBHOOK_PROXY_URL has scheme `egress`"),
    ];
    for (url, expected) in cases {
        let (code, out, err) = run(binary(&db).args(["run"]).env("WEBHOOK_PROXY_URL", url));
        assert_ne!(code, 0, "{url}");
        assert!(err.contains(expected), "{url}: {err}");
        assert_no_secret(&format!("{out}{err}"), &["pr0xy-secret"]);
    }
}

#[tokio::test]
async fn delivery_show_and_the_attempt_listing_display_the_forensics_of_a_real_attempt() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    let receiver = https_receiver(&ca, &["localhost"]).await;
    let (id, _) = endpoint(&db.pool, &receiver.url("/forensics")).await;
    insert_deliveries(&db.pool, id, 1).await;
    let ca_file = ca.pem_file().unwrap();
    let mut args = worker_args(&db, "1h");
    args.worker.ca_bundle = Some(ca_file.path().to_owned());
    let worker = TestWorker::start(Settings::from_args(&args).unwrap());
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", WAIT).await;
    worker.stop().await;
    let (delivery, message): (i64, String) =
        sqlx::query_as("SELECT delivery_id, message_id FROM webhook.delivery_attempts")
            .fetch_one(&db.pool)
            .await
            .unwrap();

    let (code, text, err) = run(binary(&db).args(["delivery", "show", &delivery.to_string()]));
    assert_eq!(code, 0, "{err}");
    let line = text.lines().find(|l| l.contains("dialled")).unwrap_or_else(|| panic!("no forensics line:\n{text}"));
    assert!(line.contains("dialled 127.0.0.1") && !line.contains("via proxy"), "{line}");
    for phase in ["dns ", "connect ", "first byte "] {
        assert!(line.contains(phase), "{phase}missing: {line}");
    }
    assert!(text.contains("headers: ") && text.contains("content-length: "), "{text}");

    let application: uuid::Uuid = sqlx::query_scalar("SELECT application_id FROM webhook.endpoints WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let page = webhook_worker::admin::page::PageRequest { limit: None, iterator: None };
    let of = webhook_worker::admin::attempts::Of::Message(&message);
    let listed = webhook_worker::admin::attempts::list(&db.pool, application, of, &page).await.unwrap();
    let out = webhook_worker::api::models::MessageAttemptOut::from(listed.data.into_iter().next().unwrap());
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["responseStatusCode"], 200, "Svix's fields keep their meaning");
    assert_eq!(json["forensics"]["remoteIp"], "127.0.0.1", "{json}");
    assert_eq!(
        (json["forensics"]["viaProxy"].clone(), json["forensics"]["connectionReused"].clone()),
        (false.into(), false.into())
    );
    assert!(json["forensics"]["firstByteMs"].is_i64() && json["forensics"]["dnsMs"].is_i64(), "{json}");
}
