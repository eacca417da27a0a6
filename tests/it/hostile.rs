//! Receivers that misbehave at the TCP, HTTP and TLS level, and a process shutting down with
//! 1,000 requests in flight. Every misbehaviour ends in a precise, recorded error and a retry,
//! with the worker's memory bounded.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use webhook_worker::testkit::receiver::{Answer, Receiver};

use crate::support::cli::{binary, free_port};
use crate::support::{TestDb, endpoint, insert_deliveries, wait_until};

#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    CloseWithoutAnswer,
    Silence,
    Slowloris,
    EndlessBody,
    HugeDeclaredBody,
    InvalidHttp,
}

/// A server on 127.0.0.1 that reads a request and then misbehaves as told. Runs until the test
/// ends (its tasks die with the runtime).
async fn hostile(kind: Misbehaviour) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buffer = [0u8; 65536];
                let _ = stream.read(&mut buffer).await;
                match kind {
                    Misbehaviour::CloseWithoutAnswer => drop(stream),
                    Misbehaviour::Silence => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Misbehaviour::Slowloris => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
                        for n in 0..3600 {
                            if stream.write_all(format!("x-drip-{n}: a\r\n").as_bytes()).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    Misbehaviour::EndlessBody => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
                        let chunk = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
                        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                    }
                    Misbehaviour::HugeDeclaredBody => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5000000000\r\n\r\n").await;
                        let block = vec![b'y'; 65536];
                        while stream.write_all(&block).await.is_ok() {}
                    }
                    Misbehaviour::InvalidHttp => {
                        let _ = stream.write_all(b"SMTP READY\r\n\r\n").await;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_receivers_end_in_precise_errors_and_bounded_memory() {
    let db = TestDb::new().await;
    let cases = [
        (Misbehaviour::CloseWithoutAnswer, "http", "connection closed before message completed"),
        (Misbehaviour::Silence, "http", "timed out after 2s"),
        (Misbehaviour::Slowloris, "http", "timed out after 2s"),
        (Misbehaviour::InvalidHttp, "http", "invalid HTTP"),
        (Misbehaviour::CloseWithoutAnswer, "https", "tls handshake eof"),
        (Misbehaviour::InvalidHttp, "https", "InvalidContentType"),
    ];
    let mut expectations = Vec::new();
    for (kind, scheme, expected) in cases {
        let port = hostile(kind).await;
        let (id, _) = endpoint(&db.pool, &format!("{scheme}://localhost:{port}/{kind:?}")).await;
        insert_deliveries(&db.pool, id, 1).await;
        expectations.push((id, format!("{scheme} {kind:?}"), expected));
    }
    let (dns, _) = endpoint(&db.pool, "http://no-such-host.invalid/").await;
    insert_deliveries(&db.pool, dns, 1).await;
    expectations.push((dns, "dns failure".into(), "dns error"));
    // Bodies that never end: the status counts, the body is read up to the cap only.
    let mut endless = Vec::new();
    for kind in [Misbehaviour::EndlessBody, Misbehaviour::HugeDeclaredBody] {
        let (id, _) = endpoint(&db.pool, &format!("http://127.0.0.1:{}/", hostile(kind).await)).await;
        insert_deliveries(&db.pool, id, 3).await;
        endless.push(id);
    }
    let port = free_port();
    let mut worker = binary(&db)
        .arg("run")
        .env("WEBHOOK_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("WEBHOOK_HTTP_TIMEOUT", "2s")
        .env("WEBHOOK_RETRY_SCHEDULE", "1h")
        .env("WEBHOOK_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8,::1/128")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        &db.pool,
        &format!(
            "SELECT count(*) = {} FROM webhook.deliveries WHERE attempt = 1 AND state = 'pending'",
            expectations.len()
        ),
        Duration::from_secs(60),
    )
    .await;
    wait_until(
        &db.pool,
        "SELECT count(*) = 6 FROM webhook.delivery_attempts WHERE outcome = 'delivered'",
        Duration::from_secs(60),
    )
    .await;
    let peak_kib = std::fs::read_to_string(format!("/proc/{}/status", worker.id()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap();
    worker.kill().unwrap();
    worker.wait().unwrap();
    for (id, what, expected) in expectations {
        let error: String = sqlx::query_scalar("SELECT last_error FROM webhook.deliveries WHERE endpoint_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(error.contains(expected), "{what}: expected {expected:?} in {error:?}");
    }
    eprintln!("hostile receivers: worker peak RSS {} MiB after endless and 5 GB bodies", peak_kib / 1024);
    assert!(peak_kib < 128 * 1024, "the worker grew to {peak_kib} KiB reading endless bodies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_thousand_in_flight_exits_within_the_deadline_losing_nothing() {
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    for n in 0..10 {
        let path = format!("/busy{n}");
        let (id, _) = endpoint(&db.pool, &receiver.url(&path)).await;
        receiver.answer(&path, Answer { delay: Duration::from_secs(30), ..Answer::default() });
        insert_deliveries(&db.pool, id, 100).await;
    }
    let mut worker = binary(&db)
        .arg("run")
        .env("WEBHOOK_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("WEBHOOK_CONCURRENCY", "1000")
        .env("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "1000")
        .env("WEBHOOK_DB_POOL_SIZE", "20")
        .env("WEBHOOK_DRAIN_DEADLINE", "2s")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(receiver.wait_for(1000, Duration::from_secs(60)).await, "only {} in flight", receiver.count());
    let signalled = tokio::time::Instant::now();
    std::process::Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || worker.wait()).await.unwrap().unwrap();
    let took = signalled.elapsed();
    eprintln!("shutdown: 1000 in flight, exited in {:.2} s (drain deadline 2 s)", took.as_secs_f64());
    assert!(status.success());
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook.deliveries WHERE state = 'pending' AND attempt = 0").await,
        1000,
        "all handed back unspent"
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries WHERE state = 'running'").await, 0);
}
