//! Connection exhaustion: other clients take every connection the server allows. A running
//! worker keeps the connections it holds; a worker that starts (a new pod, a restart) cannot get
//! one: it must say why, stay alive and unready, and start working by itself once connections free
//! up — nothing lost. The server is the test's own: it is the server that runs out.

use std::time::Duration;

use sqlx::Connection as _;
use webhook_worker::testkit::pgcluster::Cluster;
use webhook_worker::testkit::receiver::Receiver;

use super::{Worker, drained};
use crate::faults::{delivered, long_profile, readyz};
use crate::support::{TestDb, endpoint, insert_deliveries};

const MAX_CONNECTIONS: &str = "30";

/// Opens connections until the server refuses one (bounded); returns them and the refusal.
async fn take_every_connection(url: &str) -> (Vec<sqlx::PgConnection>, String) {
    let mut taken = Vec::new();
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(connection) => taken.push(connection),
            Err(err) => return (taken, err.to_string()),
        }
        assert!(taken.len() <= 64, "the server accepted more connections than it allows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_connections_are_reported_and_a_starting_worker_recovers_by_itself() {
    let _gate = crate::support::db::exclusive().await;
    let (total, hold) =
        if long_profile() { (20_000, Duration::from_secs(60)) } else { (3_000, Duration::from_secs(5)) };
    let settings = [("fsync", "off"), ("synchronous_commit", "off"), ("max_connections", MAX_CONNECTIONS)];
    let cluster = tokio::task::spawn_blocking(move || Cluster::start_with(&settings)).await.unwrap().unwrap();
    let url = cluster.url("postgres");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    webhook_worker::db::migrate(&pool).await.unwrap();
    let db = TestDb::on_own_cluster(url.clone(), pool.clone());
    let receiver = Receiver::start(None).await.unwrap();
    let (id, _) = endpoint(&pool, &receiver.url("/conn")).await;
    insert_deliveries(&pool, id, total).await;
    // Paced to last three times the hold, so work is left for the worker that starts while full.
    let per_second = i32::try_from(total / (3 * i64::try_from(hold.as_secs()).unwrap())).unwrap();
    sqlx::query("UPDATE webhook.endpoints SET rate_limit_per_second = $1, rate_limit_burst = 5")
        .bind(per_second)
        .execute(&pool)
        .await
        .unwrap();
    let env = [("WEBHOOK_DB_POOL_SIZE", "4"), ("RUST_LOG", "warn")];
    let mut running = Worker::start(&db, "chaos-c0", &env);
    assert!(receiver.wait_for(usize::try_from(total / 5).unwrap(), Duration::from_secs(120)).await);

    let (hog, refusal) = take_every_connection(&url).await;
    let mut starting = Worker::start(&db, "chaos-c1", &env);
    let before = receiver.count();
    // The fault itself: the server stays full this long.
    tokio::time::sleep(hold).await;
    let while_full = receiver.count() - before;
    assert!(readyz(starting.port, 503, Duration::from_secs(5)).await, "a worker without a database is not ready");
    assert!(starting.alive(), "the starting worker gave up:\n{}", starting.log_text());
    assert!(running.alive(), "the running worker exited:\n{}", running.log_text());
    let said = starting.log_says("too many clients", Duration::from_secs(30)).await;
    let taken = hog.len();
    drop(hog);

    drained(&db, Duration::from_secs(180)).await;
    for worker in [&mut running, &mut starting] {
        assert!(worker.alive(), "{} exited", worker.name);
        assert!(readyz(worker.port, 200, Duration::from_secs(30)).await, "{} did not become ready", worker.name);
    }
    let claimed_by_late: i64 =
        db.count("SELECT count(*) FROM webhook.delivery_attempts WHERE worker_id = 'chaos-c1'").await;
    let (distinct, answered_ok) = delivered(&receiver);
    eprintln!(
        "connection exhaustion: {total} deliveries; {taken} more connections taken ({refusal}); the running worker delivered \
         {while_full} in {hold:?} on the connections it held; the starting worker delivered {claimed_by_late} once \
         connections freed; delivered {distinct}, duplicates {}",
        answered_ok - distinct
    );
    assert!(refusal.contains("too many clients"), "{refusal}");
    assert!(
        said.contains("PostgreSQL is not reachable yet") && said.contains("too many clients"),
        "the starting worker's log says why:\n{said}"
    );
    assert!(claimed_by_late > 0, "the starting worker started working by itself");
    assert_eq!(distinct, usize::try_from(total).unwrap(), "nothing lost");
    assert_eq!(db.count("SELECT count(*) FROM webhook.dead_letters").await, 0);
    running.stop();
    starting.stop();
    pool.close().await;
    drop(cluster);
}
