//! Past one primary: two shards, each a cluster of its own with its own worker, behind the
//! PL/Proxy router of `schema/sharding/router.sql`. Producers enqueue through the router by
//! application uid; every application's messages are delivered from its own shard and nothing of
//! it is in the other. docs/scaling.md explains the design.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::{Connection as _, PgConnection, PgPool};
use webhook_worker::policy::signing::SigningSecret;
use webhook_worker::testkit::pgcluster::Cluster;
use webhook_worker::testkit::receiver::Receiver;

use crate::support::cli::json;
use crate::support::{TestDb, TestWorker, settings, wait_until};

const TENANTS: usize = 8;
const PER_TENANT: usize = 5;

/// One shard: a cluster of its own, migrated.
struct Shard {
    cluster: Cluster,
    db: TestDb,
}

async fn shard() -> Shard {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap().unwrap();
    let url = cluster.url("postgres");
    let pool = PgPool::connect(&url).await.unwrap();
    webhook_worker::db::migrate(&pool).await.unwrap();
    Shard { db: TestDb::on_own_cluster(url, pool), cluster }
}

/// The router database on `host`, its PL/Proxy cluster made of `shards` (partition i is shard i).
async fn router(host: &Cluster, shards: &[&Shard]) -> PgPool {
    let mut admin = PgConnection::connect(&host.url("postgres")).await.unwrap();
    sqlx::query("CREATE DATABASE router").execute(&mut admin).await.unwrap();
    let pool = PgPool::connect(&host.url("router")).await.unwrap();
    if let Err(err) = sqlx::raw_sql("CREATE EXTENSION plproxy").execute(&pool).await {
        panic!("PL/Proxy is not installed ({err}): the sharding test needs Debian's postgresql-15-plproxy");
    }
    let partitions: Vec<String> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| format!("p{i} 'host=127.0.0.1 port={} dbname=postgres user=postgres'", s.cluster.port()))
        .collect();
    let cluster = format!(
        "CREATE SERVER webhook_shards FOREIGN DATA WRAPPER plproxy OPTIONS ({});
         CREATE USER MAPPING FOR PUBLIC SERVER webhook_shards;",
        partitions.join(", ")
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(cluster)).execute(&pool).await.unwrap();
    sqlx::raw_sql(include_str!("../../schema/sharding/router.sql")).execute(&pool).await.unwrap();
    pool
}

async fn router_error(router: &PgPool, sql: &'static str) -> String {
    sqlx::query(sql).execute(router).await.expect_err(sql).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_behind_the_router_each_deliver_only_their_own_applications() {
    // Two clusters and two workers: the machine to itself.
    let _gate = crate::support::db::exclusive().await;
    let shards = [shard().await, shard().await];
    let router = router(&shards[0].cluster, &[&shards[0], &shards[1]]).await;
    let receiver = Receiver::start(None).await.unwrap();

    // An operator creates each application where the router says it lives, with the CLI pointed
    // at that shard.
    let mut home: HashMap<String, usize> = HashMap::new();
    for t in 0..TENANTS {
        let uid = format!("tenant-{t}");
        let port: i32 =
            sqlx::query_scalar("SELECT port FROM webhook.shard_of($1)").bind(&uid).fetch_one(&router).await.unwrap();
        let at = shards.iter().position(|s| i32::from(s.cluster.port()) == port).expect("the port of a shard");
        let db = &shards[at].db;
        json(&["app", "create", "--name", &uid, "--uid", &uid, "--json"], db);
        let path = format!("/{uid}");
        let url = receiver.url(&path);
        let added =
            json(&["endpoint", "add", "--app", &uid, "--url", &url, "--event-type", "invoice.paid", "--json"], db);
        receiver.expect_secrets(&path, vec![SigningSecret::parse(added["secret"].as_str().unwrap()).unwrap()]);
        home.insert(uid, at);
    }
    for at in 0..shards.len() {
        assert!(home.values().any(|&h| h == at), "no tenant hashes to shard {at}: {home:?}");
    }

    // Producers hold one connection string: the router's.
    let mut sent: HashMap<String, String> = HashMap::new();
    for (uid, n) in home.keys().flat_map(|uid| (0..PER_TENANT).map(move |n| (uid, n))) {
        let payload = serde_json::json!({ "tenant": uid, "n": n }).to_string();
        let (message, deliveries): (String, i32) =
            sqlx::query_as("SELECT message_id, deliveries FROM webhook.enqueue('invoice.paid', $1::json, app => $2)")
                .bind(payload)
                .bind(uid)
                .fetch_one(&router)
                .await
                .unwrap();
        assert_eq!(deliveries, 1, "{uid} has one subscribed endpoint");
        sent.insert(message, uid.clone());
    }

    let workers: Vec<TestWorker> = shards.iter().map(|s| TestWorker::start(settings(&s.db, "1s"))).collect();
    let total = TENANTS * PER_TENANT;
    assert!(receiver.wait_for(total, Duration::from_secs(60)).await, "{} of {total} arrived", receiver.count());
    for shard in &shards {
        let drained = "SELECT NOT EXISTS (SELECT 1 FROM webhook.deliveries)";
        wait_until(&shard.db.pool, drained, Duration::from_secs(30)).await;
    }
    for worker in workers {
        worker.stop().await;
    }

    let received = receiver.received();
    assert_eq!(received.len(), total, "every message once");
    for r in &received {
        let uid = sent.get(&r.msg_id).unwrap_or_else(|| panic!("{} was never sent", r.msg_id));
        assert_eq!((r.path.as_str(), r.valid), (format!("/{uid}").as_str(), true), "{}", r.msg_id);
    }
    // Each shard holds its own tenants' messages and history, and nothing of the other's.
    for (at, shard) in shards.iter().enumerate() {
        let expected: HashSet<&str> =
            sent.iter().filter(|(_, uid)| home[*uid] == at).map(|(message, _)| message.as_str()).collect();
        let delivered: Vec<String> =
            sqlx::query_scalar("SELECT message_id FROM webhook.delivery_attempts WHERE outcome = 'delivered'")
                .fetch_all(&shard.db.pool)
                .await
                .unwrap();
        assert_eq!(delivered.len(), expected.len(), "shard {at} delivered each of its messages once");
        assert_eq!(delivered.iter().map(String::as_str).collect::<HashSet<_>>(), expected, "shard {at}");
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT id FROM webhook.messages").fetch_all(&shard.db.pool).await.unwrap();
        assert_eq!(stored.iter().map(String::as_str).collect::<HashSet<_>>(), expected, "shard {at}'s messages");
    }

    // What the router cannot route says so, and the shard's own refusals come through.
    let err = router_error(&router, "SELECT * FROM webhook.enqueue('invoice.paid', '{}')").await;
    assert!(err.contains("the shard router needs app"), "{err}");
    let err = router_error(
        &router,
        "SELECT * FROM webhook.enqueue('invoice.paid', '{}', app => 'app_00000000000000000000000000000001')",
    )
    .await;
    assert!(err.contains("routes by application uid, not by id"), "{err}");
    let err = router_error(&router, "SELECT * FROM webhook.enqueue('invoice.paid', '{}', app => 'nobody')").await;
    assert!(err.contains("no application nobody"), "{err}");
}
