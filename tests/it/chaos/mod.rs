//! Reliability round 2: the faults that break Postgres queues in production. Each scenario keeps
//! deliveries in flight with the receiver as the ledger, then checks lost = 0, stuck = 0,
//! duplicates bounded, and what an operator saw (metrics, `/readyz`, logs). Every loop is bounded
//! in count and time; faults that break the server itself (connection exhaustion) use a cluster
//! of their own. `WEBHOOK_FAULTS_PROFILE=long` runs the long profile (docs/reliability.md).

mod backends;
mod connections;
mod delay;
mod leader;
mod network;
mod storm;
mod upgrade;
mod vacuum;

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::faults::FAULT_ENV;
use crate::support::TestDb;
use crate::support::cli::{binary_at, free_port};

/// A worker process named `name` in `pg_stat_activity.application_name`, so a test can tell its
/// connections (pooled, LISTEN, leader) apart; its metrics on `port`, its log in `log`.
pub struct Worker {
    pub name: String,
    /// Where its metrics listen: loopback, or its network namespace's address.
    pub host: std::net::IpAddr,
    pub port: u16,
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Worker {
    /// Starts a worker with the fault settings plus `env`.
    pub fn start(db: &TestDb, name: &str, env: &[(&str, &str)]) -> Self {
        Self::start_program(db, name, env, std::path::Path::new(crate::support::cli::BIN))
    }

    /// Starts `program` (this build's binary, or another release's) as a worker with the fault
    /// settings plus `env`.
    pub fn start_program(db: &TestDb, name: &str, env: &[(&str, &str)], program: &std::path::Path) -> Self {
        Self::launch(db, name, env, binary_at(db, program), std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Starts a worker through `command` (the binary, or a launcher such as `ip netns exec` with
    /// the binary as its argument), its metrics on `host`.
    pub fn launch(
        db: &TestDb,
        name: &str,
        env: &[(&str, &str)],
        mut command: std::process::Command,
        host: std::net::IpAddr,
    ) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("webhook-chaos-{}-{name}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let separator = if db.url.contains('?') { '&' } else { '?' };
        command
            .arg("run")
            .env("DATABASE_URL", format!("{}{separator}application_name={name}", db.url))
            .env("WEBHOOK_WORKER_ID", name)
            .env("WEBHOOK_METRICS_ADDR", std::net::SocketAddr::new(host, port).to_string());
        for (key, value) in FAULT_ENV.iter().chain(env) {
            command.env(key, value);
        }
        let child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Self { name: name.to_owned(), host, port, child, log }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; the log is removed.
    pub fn stop(mut self) {
        self.terminate();
        let _ = std::fs::remove_file(&self.log);
    }

    /// The worker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the worker's log contains `text`; returns the log.
    pub async fn log_says(&self, text: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let log = self.log_text();
            if log.contains(text) || tokio::time::Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The sum of a counter's series in the worker's `/metrics` (0 when absent).
    pub async fn counter(&self, name: &str) -> f64 {
        webhook_worker::tls::install_crypto_provider();
        let text = reqwest::get(format!("http://{}/metrics", std::net::SocketAddr::new(self.host, self.port)))
            .await
            .and_then(|r| r.error_for_status())
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A test that fails midway drops its workers: they must not outlive it (a worker whose database
/// is gone would wait for it forever).
impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `application_name`s holding the maintenance leader's advisory lock in `db`'s database.
pub async fn leaders(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Deliveries leased by a worker whose lease has expired: work nobody is doing.
pub async fn stuck(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM webhook.deliveries WHERE state = 'running' AND lease_expires_at < now()").await
}

/// Waits until the queue is empty; fails with what is left after `limit`.
pub async fn drained(db: &TestDb, limit: Duration) {
    crate::support::wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", limit).await;
}
