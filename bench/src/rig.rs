//! What every phase stands on: a Postgres database (a throwaway durable cluster, or a fresh
//! database on a given server), the schema, endpoints pointing at the bench's receiver, and
//! helpers to fill and empty the queue.

use std::io::Write as _;

use anyhow::Context as _;
use sqlx::PgPool;
use uuid::Uuid;
use webhook_worker::admin::endpoints::{self, Changes};
use webhook_worker::policy::crypto::KeyRing;
use webhook_worker::policy::signing::SigningSecret;
use webhook_worker::testkit::pgcluster::Cluster;

use crate::pgstats::DbCounters;
use crate::results::StatementStat;

/// Settings of the throwaway cluster: durable (fsync, synchronous commit and full-page writes
/// stay on, as in production), with memory and checkpoint spacing sized for the machine so a
/// multi-gigabyte backlog does not turn into a checkpoint storm.
pub const CLUSTER_SETTINGS: &[(&str, &str)] = &[
    ("max_connections", "300"),
    ("shared_buffers", "1GB"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "30min"),
    // Where the database's time goes, per statement, for the report (a few per cent overhead).
    ("shared_preload_libraries", "pg_stat_statements"),
    // Planning time counts too: a statement re-planned per call costs as much as it runs.
    ("pg_stat_statements.track_planning", "on"),
];

/// [`CLUSTER_SETTINGS`] with `extra` added, an extra setting replacing the bench's own of the
/// same name.
pub fn cluster_settings(extra: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut settings: Vec<(&str, &str)> =
        CLUSTER_SETTINGS.iter().copied().filter(|(name, _)| !extra.iter().any(|(n, _)| n == name)).collect();
    settings.extend(extra.iter().map(|(name, value)| (name.as_str(), value.as_str())));
    settings
}

/// Every payload is this many bytes: a typical event.
pub const PAYLOAD_BYTES: usize = 256;

/// The database under test.
pub struct Rig {
    pub url: String,
    pub pool: PgPool,
    /// The postmaster of the throwaway cluster (None for a given server).
    pub postmaster: Option<u32>,
    pub source: String,
    pub key_ring_text: String,
    pub endpoints: Vec<Uuid>,
    cluster: Option<Cluster>,
    given: Option<(PgPool, String)>,
}

impl Rig {
    /// Starts a throwaway cluster, or creates a fresh database on the server `given` names.
    ///
    /// # Errors
    /// When Postgres cannot be started or reached, or migrating fails.
    pub async fn start(given: Option<&str>, extra_settings: &[(String, String)]) -> anyhow::Result<Self> {
        let (url, cluster, given, source) = match given {
            Some(url) => {
                let admin = PgPool::connect(url).await.context("connecting to the given DATABASE_URL")?;
                let name = format!("webhook_bench_{}", std::process::id());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .context("creating the benchmark database (the role needs CREATEDB)")?;
                let mut url = url::Url::parse(url).context("parsing DATABASE_URL")?;
                url.set_path(&format!("/{name}"));
                let url = url.to_string();
                (url, None, Some((admin, name)), "given server, fresh database".to_owned())
            }
            None => {
                let settings: Vec<(String, String)> = cluster_settings(extra_settings)
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect();
                let cluster = tokio::task::spawn_blocking(move || {
                    let settings: Vec<(&str, &str)> = settings.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                    Cluster::start_with(&settings)
                })
                .await??;
                let url = cluster.url("postgres");
                (url, Some(cluster), None, "throwaway cluster, durable settings".to_owned())
            }
        };
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(40).connect(&url).await?;
        webhook_worker::db::migrate(&pool).await.context("migrating the benchmark database")?;
        // Only where the library is preloaded (the throwaway cluster); otherwise no statistics.
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&pool).await;
        let (_, key_ring_text) = KeyRing::generate("bench");
        let postmaster = cluster.as_ref().and_then(Cluster::server_pid);
        Ok(Self {
            url,
            pool,
            postmaster,
            source,
            key_ring_text: key_ring_text.to_string(),
            endpoints: Vec::new(),
            cluster,
            given,
        })
    }

    /// The server's version string.
    pub async fn postgres_version(&self) -> String {
        sqlx::query_scalar("SHOW server_version").fetch_one(&self.pool).await.unwrap_or_else(|_| "unknown".to_owned())
    }

    /// Registers one endpoint per `(path, secret)`, at `url_of(path)`, in order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn add_endpoints(
        &mut self,
        secrets: &[(String, SigningSecret)],
        url_of: impl Fn(&str) -> String,
    ) -> anyhow::Result<()> {
        let created = self.create_endpoints(secrets, url_of).await?;
        self.endpoints.extend(created);
        Ok(())
    }

    /// Registers one endpoint per `(path, secret)` like [`Rig::add_endpoints`], for one phase:
    /// returns their ids in order, and [`Rig::fill`] does not use them.
    ///
    /// # Errors
    /// Database errors.
    pub async fn create_endpoints(
        &self,
        secrets: &[(String, SigningSecret)],
        url_of: impl Fn(&str) -> String,
    ) -> anyhow::Result<Vec<Uuid>> {
        let key_ring = KeyRing::parse(&self.key_ring_text)?;
        let mut ids = Vec::with_capacity(secrets.len());
        for (path, secret) in secrets {
            let changes = Changes { url: Some(url_of(path)), ..Changes::default() };
            ids.push(endpoints::create(&self.pool, &key_ring, &changes, secret).await?);
        }
        Ok(ids)
    }

    /// Inserts one ready delivery per entry of `endpoints`, for that endpoint, in that order, in
    /// one statement (like a producer's `INSERT … SELECT`); then VACUUM ANALYZE.
    ///
    /// # Errors
    /// Database errors.
    pub async fn fill_for(&self, endpoints: &[Uuid]) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(fill_sql("")))
            .bind(endpoints)
            .bind(0_i64)
            .bind(i64::try_from(endpoints.len())?)
            .execute(&self.pool)
            .await
            .context("filling the queue")?;
        self.vacuum().await
    }

    /// Inserts `n` ready deliveries spread over the endpoints, in statements of at most 250,000
    /// rows, with a progress line when it takes a while; then VACUUM ANALYZE, as autovacuum
    /// would have done to a queue that grew over time.
    ///
    /// # Errors
    /// Database errors.
    pub async fn fill(&self, n: u64) -> anyhow::Result<()> {
        const CHUNK: u64 = 250_000;
        let mut done = 0;
        while done < n {
            let rows = CHUNK.min(n - done);
            sqlx::query(sqlx::AssertSqlSafe(fill_sql("")))
                .bind(&self.endpoints)
                .bind(i64::try_from(done)?)
                .bind(i64::try_from(rows)?)
                .execute(&self.pool)
                .await
                .context("filling the queue")?;
            done += rows;
            if n > CHUNK {
                eprint!("\r  filling the queue: {done} / {n} rows");
                let _ = std::io::stderr().flush();
            }
        }
        if n > CHUNK {
            eprintln!();
        }
        self.vacuum().await
    }

    /// VACUUM ANALYZE of the queue and its history.
    ///
    /// # Errors
    /// Database errors.
    pub async fn vacuum(&self) -> anyhow::Result<()> {
        sqlx::query("VACUUM ANALYZE webhook.deliveries").execute(&self.pool).await?;
        sqlx::query("VACUUM ANALYZE webhook.delivery_attempts").execute(&self.pool).await?;
        Ok(())
    }

    /// Empties the queue, the history, the dead letters and the worker registry between phases.
    ///
    /// # Errors
    /// Database errors.
    pub async fn clear(&self) -> anyhow::Result<()> {
        sqlx::query(
            "TRUNCATE webhook.deliveries, webhook.delivery_attempts, webhook.dead_letters, webhook.workers, \
             webhook.queue_stats",
        )
        .execute(&self.pool)
        .await?;
        self.vacuum().await
    }

    /// Rows still in the queue.
    ///
    /// # Errors
    /// Database errors.
    pub async fn queued(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM webhook.deliveries").fetch_one(&self.pool).await?)
    }

    /// Rows in the attempt history.
    ///
    /// # Errors
    /// Database errors.
    pub async fn history_rows(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM webhook.delivery_attempts").fetch_one(&self.pool).await?)
    }

    /// Forgets the statement statistics (no-op without pg_stat_statements).
    pub async fn reset_statement_stats(&self) {
        let _ = sqlx::query("SELECT pg_stat_statements_reset()").execute(&self.pool).await;
    }

    /// What the server did so far (`None` when its views cannot be read).
    pub async fn counters(&self) -> Option<DbCounters> {
        let row: Result<(f64, i64, i64, i64, i64), _> = sqlx::query_as(
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8, \
                    (SELECT wal_fpi FROM pg_stat_wal), \
                    (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter), \
                    (SELECT buffers_backend FROM pg_stat_bgwriter), \
                    (SELECT autovacuum_count FROM pg_stat_user_tables \
                     WHERE schemaname = 'webhook' AND relname = 'deliveries')",
        )
        .fetch_one(&self.pool)
        .await;
        let (wal_bytes, full_page_images, checkpoints, backend_writes, autovacuums) = row.ok()?;
        Some(DbCounters { wal_bytes, full_page_images, checkpoints, backend_writes, autovacuums })
    }

    /// Execution time of every statement since the last reset, milliseconds (`None` without
    /// pg_stat_statements).
    pub async fn statement_ms(&self) -> Option<f64> {
        sqlx::query_scalar(
            "SELECT sum(total_exec_time + total_plan_time)::float8 FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&self.pool)
        .await
        .ok()
        .flatten()
    }

    /// The `limit` statements with the most execution time since the last reset (empty without
    /// pg_stat_statements).
    pub async fn statement_stats(&self, limit: i64) -> Vec<StatementStat> {
        let rows: Vec<(String, i64, i64, f64, f64, f64)> = sqlx::query_as(
            "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, rows, \
             coalesce((total_exec_time + total_plan_time) / nullif(calls, 0), 0), \
             coalesce((shared_blks_hit + shared_blks_read)::float8 / nullif(calls, 0), 0), \
             (total_exec_time + total_plan_time) / nullif(sum(total_exec_time + total_plan_time) OVER (), 0) \
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY total_exec_time + total_plan_time DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_else(|err| {
            eprintln!("  (no statement statistics: {err})");
            Vec::new()
        });
        rows.into_iter()
            .map(|(query, calls, rows, mean_ms, blocks_per_call, share)| StatementStat {
                query: query.trim().chars().take(70).collect(),
                calls: u64::try_from(calls).unwrap_or(0),
                rows_per_call: if calls > 0 { rows as f64 / calls as f64 } else { 0.0 },
                mean_ms,
                blocks_per_call,
                share,
            })
            .collect()
    }

    /// Closes the pool; drops the fresh database on a given server, or stops the cluster.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some((admin, name)) = self.given {
            let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&admin)
                .await;
            if let Err(err) = dropped {
                eprintln!("warning: could not drop the benchmark database {name}: {err}");
            }
        }
        drop(self.cluster);
    }
}

/// Event `n`'s payload as [`fill_sql`] makes it in SQL ([`PAYLOAD_BYTES`] bytes), for producers
/// that send it from here (the API phase).
pub fn payload(n: u64) -> String {
    format!(
        concat!(
            r#"{{"type":"invoice.paid","data":{{"invoice":"in_{:010}","amount":{},"currency":"eur","customer":"cus_{:06}","#,
            r#""lines":[{{"sku":"plan-pro","quantity":1,"unit_amount":4200}}],"paid_at":"2026-11-29T00:00:00Z","#,
            r#""note":"{}"}}}}"#
        ),
        n,
        1000 + n % 9000,
        n % 100_000,
        "x".repeat(39)
    )
}

/// Inserts deliveries `$2 + 1 ..= $2 + $3` spread over the endpoints `$1`, each with a
/// [`PAYLOAD_BYTES`]-byte event payload numbered so every row differs; `returning` is appended.
pub fn fill_sql(returning: &str) -> String {
    format!(
        r#"
INSERT INTO webhook.deliveries (endpoint_id, event_type, payload)
SELECT ($1::uuid[])[1 + (n % cardinality($1::uuid[]))], 'invoice.paid',
       format('{{"type":"invoice.paid","data":{{"invoice":"in_%s","amount":%s,"currency":"eur","customer":"cus_%s",'
              '"lines":[{{"sku":"plan-pro","quantity":1,"unit_amount":4200}}],"paid_at":"2026-11-29T00:00:00Z",'
              '"note":"%s"}}}}',
              lpad(n::text, 10, '0'), 1000 + n % 9000, lpad((n % 100000)::text, 6, '0'), repeat('x', 39))::json
FROM generate_series($2::bigint + 1, $2::bigint + $3::bigint) AS n
{returning}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extra_setting_replaces_the_benchs_own_of_the_same_name() {
        let extra = [("shared_buffers".to_owned(), "4GB".to_owned()), ("wal_compression".to_owned(), "lz4".to_owned())];
        let settings = cluster_settings(&extra);
        assert_eq!(settings.iter().filter(|(name, _)| *name == "shared_buffers").count(), 1);
        assert!(settings.contains(&("shared_buffers", "4GB")));
        assert!(settings.contains(&("wal_compression", "lz4")));
        assert!(settings.contains(&("max_connections", "300")));
        assert_eq!(cluster_settings(&[]), CLUSTER_SETTINGS.to_vec());
    }
}
