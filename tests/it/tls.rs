//! TLS policy and the SSRF guard against real local servers.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use time::OffsetDateTime;
use webhook_worker::testkit::receiver::{Receiver, TestCa, server_config, server_config_mtls};

use webhook_worker::config::Settings;

use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, wait_until, worker_args};

const WAIT: Duration = Duration::from_secs(30);

/// Delivers once to `url` with `ca` trusted (or not) and returns (recorded error, delivered?).
async fn attempt(db: &TestDb, url: &str, ca: Option<&TestCa>) -> (String, bool) {
    let (id, _) = endpoint(&db.pool, url).await;
    insert_deliveries(&db.pool, id, 1).await;
    let mut args = worker_args(db, "1h");
    let ca_file = ca.map(|ca| ca.pem_file().unwrap());
    args.worker.ca_bundle = ca_file.as_ref().map(|file| file.path().to_owned());
    let worker = TestWorker::start(Settings::from_args(&args).unwrap());
    let done = format!(
        "SELECT count(*) = 0 FROM webhook.deliveries WHERE endpoint_id = '{id}' AND (last_error IS NULL OR state = 'running')"
    );
    // Done when the delivery is gone (delivered) or has an error recorded.
    wait_until(
        &db.pool,
        &format!("SELECT ({done}) OR NOT EXISTS (SELECT 1 FROM webhook.deliveries WHERE endpoint_id = '{id}')"),
        WAIT,
    )
    .await;
    worker.stop().await;
    let error: Option<String> = sqlx::query_scalar("SELECT last_error FROM webhook.deliveries WHERE endpoint_id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten();
    (error.clone().unwrap_or_default(), error.is_none())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[tokio::test]
async fn tls_1_2_and_1_3_servers_are_accepted() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let receiver =
            Receiver::start(Some(server_config(ca.issue_localhost().unwrap(), &[version]).unwrap())).await.unwrap();
        let (error, delivered) = attempt(&db, &receiver.url("/v"), Some(&ca)).await;
        assert!(delivered, "{version:?}: {error}");
    }
}

/// `openssl s_server` speaking only `protocol` (`-tls1`, `-tls1_1`), with a CA-issued certificate.
fn legacy_server(ca: &TestCa, protocol: &str, dir: &std::path::Path) -> (Child, u16) {
    let issued = ca.issue_localhost().unwrap();
    std::fs::write(dir.join("cert.pem"), &issued.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &issued.key_pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // One connection, and two minutes at most: the server stops by itself even if the test panics.
    let mut child = Command::new("timeout")
        .args(["120", "openssl", "s_server", "-naccept", "1", "-accept", &format!("127.0.0.1:{port}"), protocol])
        .args(["-cipher", "DEFAULT@SECLEVEL=0", "-www"])
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is installed (Debian package `openssl`)");
    // s_server prints ACCEPT once it listens.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "ACCEPT" {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "openssl s_server exited before listening");
    }
    (child, port)
}

#[tokio::test]
async fn tls_1_0_and_1_1_servers_are_refused() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for protocol in ["-tls1", "-tls1_1"] {
        let (mut server, port) = legacy_server(&ca, protocol, dir.path());
        let (error, delivered) = attempt(&db, &format!("https://localhost:{port}/"), Some(&ca)).await;
        server.kill().unwrap();
        let _ = server.wait();
        assert!(!delivered);
        assert!(error.contains("ProtocolVersion") || error.contains("peer is incompatible"), "{protocol}: {error}");
    }
}

#[tokio::test]
async fn bad_certificates_are_refused_with_the_reason() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    let day = time::Duration::days(1);
    let cases = [
        ("expired", ca.issue(&["localhost"], now() - day * 10, now() - day).unwrap(), Some(&ca), "expired"),
        (
            "wrong host",
            ca.issue(&["other.example.com"], now() - day, now() + day).unwrap(),
            Some(&ca),
            "not valid for name \"localhost\"",
        ),
        ("unknown CA", ca.issue_localhost().unwrap(), None, "UnknownIssuer"),
    ];
    for (name, issued, trusted, expected) in cases {
        let receiver = Receiver::start(Some(server_config(issued, &[]).unwrap())).await.unwrap();
        let (error, delivered) = attempt(&db, &receiver.url("/c"), trusted).await;
        assert!(!delivered, "{name}");
        assert!(error.contains("invalid peer certificate") && error.contains(expected), "{name}: {error}");
        assert_eq!(receiver.count(), 0, "{name}: no request is sent over an unverified connection");
    }
}

#[tokio::test]
async fn every_loopback_form_is_refused_and_no_connection_is_made() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
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
    ];
    for url in &forms {
        let (id, _) = endpoint(&db.pool, url).await;
        insert_deliveries(&db.pool, id, 1).await;
    }
    let mut strict = worker_args(&db, "1h");
    strict.worker.allow_private_cidrs = Vec::new();
    let worker = TestWorker::start(Settings::from_args(&strict).unwrap());
    wait_until(&db.pool, &format!("SELECT count(*) = {} FROM webhook.dead_letters", forms.len()), WAIT).await;
    worker.stop().await;
    assert_eq!(receiver.connections(), 0, "the guard refused before connecting");
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
async fn https_only_mode_refuses_plain_http() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, _) = endpoint(&db.pool, &receiver.url("/plain")).await;
    insert_deliveries(&db.pool, id, 1).await;
    let mut strict = worker_args(&db, "1h");
    strict.worker.allow_private_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
    strict.worker.https_only = true;
    let worker = TestWorker::start(Settings::from_args(&strict).unwrap());
    wait_until(&db.pool, "SELECT count(*) = 1 FROM webhook.dead_letters", WAIT).await;
    worker.stop().await;
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM webhook.dead_letters").fetch_one(&db.pool).await.unwrap();
    assert_eq!(error, "refused: plain http URLs are refused: HTTPS-only mode is on");
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn an_endpoint_with_a_client_certificate_presents_it() {
    let db = TestDb::new().await;
    let ca = TestCa::new().unwrap();
    let receiver =
        Receiver::start(Some(server_config_mtls(ca.issue_localhost().unwrap(), &ca).unwrap())).await.unwrap();
    // With the certificate: accepted by a server that requires one.
    let client =
        ca.issue(&["webhook-worker"], now() - time::Duration::days(1), now() + time::Duration::days(1)).unwrap();
    let (with_cert, _) = endpoint(&db.pool, &receiver.url("/mtls")).await;
    let key_ring = webhook_worker::policy::crypto::KeyRing::parse(crate::support::worker::key_ring_text()).unwrap();
    let changes = webhook_worker::admin::endpoints::Changes {
        client_identity: Some(Some(format!("{}\n{}", client.cert_pem, client.key_pem).into_bytes())),
        ..Default::default()
    };
    webhook_worker::admin::endpoints::update(&db.pool, Some(&key_ring), with_cert, &changes).await.unwrap();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT ciphertext FROM webhook.endpoint_client_identities")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("PRIVATE KEY"), "the key is stored encrypted");
    insert_deliveries(&db.pool, with_cert, 1).await;
    let mut args = worker_args(&db, "1h");
    let ca_file = ca.pem_file().unwrap();
    args.worker.ca_bundle = Some(ca_file.path().to_owned());
    let worker = TestWorker::start(Settings::from_args(&args).unwrap());
    assert!(receiver.wait_for(1, WAIT).await, "the delivery with a client certificate was refused");
    worker.stop().await;
    // Without one: the handshake fails and the error says why.
    let (error, delivered) = attempt(&db, &receiver.url("/no-cert"), Some(&ca)).await;
    assert!(!delivered);
    assert!(error.contains("CertificateRequired") || error.contains("certificate required"), "{error}");
    assert_eq!(receiver.count(), 1);
}
