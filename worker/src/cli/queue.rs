//! `queue stats` and `enqueue`.

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{connect, print_json};
use crate::admin;
use crate::config::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Depth by state, oldest ready age, top endpoints by backlog and by failures.
    Stats(QueueStatsArgs),
}

/// `queue …`.
///
/// # Errors
/// On a database failure.
pub async fn run(command: QueueCommand) -> anyhow::Result<()> {
    match command {
        QueueCommand::Stats(args) => stats(&args).await,
    }
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
    /// The application (id or uid) whose endpoints receive it.
    #[arg(long)]
    pub app: Option<String>,
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
    let event = admin::enqueue::Event {
        event_type: &args.event_type,
        payload: &args.payload,
        idempotency_key: args.idempotency_key.as_deref(),
        endpoint: args.endpoint,
        app: args.app.as_deref(),
    };
    // Checked before connecting, so a typo is reported even without a database.
    admin::enqueue::check_payload(event.payload).context("--payload is not valid JSON")?;
    let pool = connect(&args.database).await?;
    let enqueued = admin::enqueue::enqueue(&pool, &event).await?;
    if args.json {
        return print_json(&enqueued);
    }
    if enqueued.duplicate {
        println!("idempotency key seen before: nothing enqueued (message {})", enqueued.message_id);
    } else {
        println!("enqueued message {} to {} endpoint(s)", enqueued.message_id, enqueued.deliveries);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct QueueStatsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this application's endpoints (id or uid); live workers are the fleet's.
    #[arg(long)]
    pub app: Option<String>,
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
async fn stats(args: &QueueStatsArgs) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    let app = super::application(&pool, args.app.as_deref()).await?;
    let stats = admin::stats::queue_stats(&pool, args.top, app).await?;
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
