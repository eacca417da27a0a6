//! One PostgreSQL server for the whole test binary and one fresh database per test.
//!
//! `DATABASE_URL` picks the server; without it a throwaway cluster is started from the local
//! binaries (see `webhook_worker::testkit::pgcluster`). The schema is migrated once into a template database
//! and every test gets a copy, which is fast and keeps tests independent.

use std::sync::OnceLock;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;
use webhook_worker::testkit::pgcluster::Cluster;

struct Server {
    /// URL of a maintenance database on the server, with `{db}` where the name goes.
    url_pattern: String,
    _cluster: Option<Cluster>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let mut parsed = url::Url::parse(&url).expect("DATABASE_URL is a URL");
            parsed.set_path("/{db}");
            Server { url_pattern: parsed.to_string().replace("%7Bdb%7D", "{db}"), _cluster: None }
        }
        _ => {
            let cluster = Cluster::start().expect("starting a throwaway PostgreSQL cluster");
            Server { url_pattern: cluster.url("{db}"), _cluster: Some(cluster) }
        }
    })
}

pub fn url(database: &str) -> String {
    server().url_pattern.replace("{db}", database)
}

/// The template database, migrated once per test binary.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("webhook_template_{}", std::process::id());
            let mut admin = PgConnection::connect(&url("postgres")).await.expect("connecting to the test server");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
                .execute(&mut admin)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
            let pool = PgPool::connect(&url(&name)).await.unwrap();
            webhook_worker::db::migrate(&pool).await.expect("migrating the template");
            pool.close().await;
            name
        })
        .await
}

/// Tests run in parallel on two cores; the few that load the machine with several worker
/// processes and measure timing (fleet limits, crashes, shutdown under load) need it to
/// themselves. Every test database holds this gate shared; those tests hold it exclusively.
static GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// How a test holds the machine.
pub enum Gate {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
    /// For a database on a test's own cluster: the caller holds the gate already.
    Held,
}

/// Takes the machine exclusively until the guard is dropped.
pub async fn exclusive() -> Gate {
    Gate::Exclusive(GATE.write().await)
}

/// A fresh, migrated database, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    pub gate: Gate,
}

impl TestDb {
    /// A database for a test that runs beside others.
    pub async fn new() -> Self {
        let gate = Gate::Shared(GATE.read().await);
        Self::create(gate).await
    }

    /// A database for a test that needs the machine to itself.
    pub async fn exclusive() -> Self {
        Self::create(exclusive().await).await
    }

    /// A handle on a database the test made on its own cluster (not dropped by this harness).
    pub fn on_own_cluster(url: String, pool: PgPool) -> Self {
        Self { name: String::new(), url, pool, gate: Gate::Held }
    }

    async fn create(gate: Gate) -> Self {
        let template = template().await;
        let name = format!("webhook_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&url("postgres")).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} TEMPLATE {template}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = url(&name);
        let pool = PgPool::connect(&url).await.unwrap();
        Self { name, url, pool, gate }
    }

    /// An empty database with no schema at all.
    pub async fn empty() -> Self {
        Self::create_empty(Gate::Shared(GATE.read().await)).await
    }

    /// An empty database for a test that needs the machine to itself (and migrates it itself).
    pub async fn empty_exclusive() -> Self {
        Self::create_empty(exclusive().await).await
    }

    async fn create_empty(gate: Gate) -> Self {
        let name = format!("webhook_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&url("postgres")).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        let url = url(&name);
        let pool = PgPool::connect(&url).await.unwrap();
        Self { name, url, pool, gate }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&self.pool).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if matches!(self.gate, Gate::Held) {
            return;
        }
        // Drop the database from a separate thread: Drop cannot await, and the test's runtime may
        // be shutting down.
        let name = self.name.clone();
        let admin = url("postgres");
        // WITH (FORCE) ends the test pool's sessions server-side; closing the pool here instead
        // would wait on the test's own runtime, which this thread blocks.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
