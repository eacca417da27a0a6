//! The operator commands other than `run` and `demo`. Each prints a human-readable answer, or
//! JSON with `--json`; failures print one `error: …` line and exit 1 (usage errors exit 2).

pub mod delivery;
pub mod endpoint;
pub mod keys;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;
use sqlx::PgPool;

use crate::config::DatabaseArgs;
use crate::db;

/// Connects to the database (a small pool: these commands run a few statements).
///
/// # Errors
/// When `DATABASE_URL` is missing or the server does not answer.
pub async fn connect(database: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let pool = db::pool(&database.url()?, database.db_pool_size.clamp(1, 4))?;
    sqlx::query("SELECT 1").execute(&pool).await.context("connecting to PostgreSQL")?;
    Ok(pool)
}

/// Prints `value` as pretty JSON.
///
/// # Errors
/// Never in practice (the values are plain data).
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A point in time: RFC 3339 (`2026-11-23T10:00:00Z`) or a duration ago (`2h`, `30m`).
///
/// # Errors
/// A message naming both accepted forms.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a duration ago like `2h`"))?;
    Ok(Utc::now() - chrono::Duration::from_std(ago).map_err(|err| err.to_string())?)
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `migrate`.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub async fn migrate(args: &MigrateArgs) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    db::migrate(&pool).await?;
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM webhook._sqlx_migrations WHERE success").fetch_one(&pool).await?;
    if args.json {
        return print_json(&serde_json::json!({ "schema_version": version.unwrap_or(0) }));
    }
    println!("schema is at version {}", version.unwrap_or(0));
    Ok(())
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The event type, e.g. `invoice.paid`.
    #[arg(long)]
    pub event_type: String,
    /// The JSON payload, sent byte for byte.
    #[arg(long)]
    pub payload: String,
    /// Deliver to this endpoint only.
    #[arg(long)]
    pub endpoint: Option<uuid::Uuid>,
    /// A key seen before makes the call a no-op.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `enqueue`.
///
/// # Errors
/// For a payload that is not JSON or a database failure.
pub async fn enqueue(args: &EnqueueArgs) -> anyhow::Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(&args.payload).context("--payload is not valid JSON")?;
    let pool = connect(&args.database).await?;
    let (message_id, deliveries, duplicate): (String, i32, bool) =
        sqlx::query_as("SELECT message_id, deliveries, duplicate FROM webhook.enqueue($1, $2::json, $3, $4)")
            .bind(&args.event_type)
            .bind(&args.payload)
            .bind(&args.idempotency_key)
            .bind(args.endpoint)
            .fetch_one(&pool)
            .await?;
    if args.json {
        print_json(&serde_json::json!({ "message_id": message_id, "deliveries": deliveries, "duplicate": duplicate }))
    } else {
        if duplicate {
            println!("idempotency key seen before: nothing enqueued (message {message_id})");
        } else {
            println!("enqueued message {message_id} to {deliveries} endpoint(s)");
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct QueueStatsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// How many endpoints to show in each top list.
    #[arg(long, default_value_t = 5)]
    pub top: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `queue stats`.
///
/// # Errors
/// On a database failure.
pub async fn queue_stats(args: &QueueStatsArgs) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    let stats = crate::stats::queue_stats(&pool, args.top).await?;
    if args.json {
        return print_json(&stats);
    }
    println!("ready:              {}", stats.ready);
    println!("scheduled (retry):  {}", stats.scheduled);
    println!("running:            {}", stats.running);
    println!("paused:             {}", stats.paused);
    println!("dead letters:       {}", stats.dead_letters);
    println!("oldest ready age:   {:.1} s", stats.oldest_ready_age_seconds);
    println!("live workers:       {}", stats.live_workers);
    for (title, list) in [
        ("top endpoints by backlog", &stats.top_backlog),
        ("top endpoints by failed attempts (last hour)", &stats.top_failing_last_hour),
    ] {
        println!("\n{title}:");
        if list.is_empty() {
            println!("  (none)");
        }
        for entry in list {
            println!(
                "  {:>8}  {}  {}",
                entry.count,
                entry.endpoint_id,
                entry.url.as_deref().unwrap_or("(endpoint deleted)")
            );
        }
    }
    Ok(())
}
