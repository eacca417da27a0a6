//! `delivery …` commands.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use uuid::Uuid;

use super::{application, connect, parse_time, print_json};
use crate::admin::attempts::Forensics;
use crate::admin::deliveries::{self, Filter, Replayed};
use crate::config::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub enum DeliveryCommand {
    /// List deliveries, newest first.
    List(ListArgs),
    /// Show one delivery with every attempt (status, duration, error, response excerpt, and the
    /// connection's forensics: dialled address, timings, response headers).
    Show(ShowArgs),
    /// Replay dead letters as new deliveries with the same webhook-id (safe to repeat).
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this endpoint's deliveries.
    #[arg(long)]
    pub endpoint: Option<Uuid>,
    /// Only deliveries to this application's endpoints (id or uid).
    #[arg(long)]
    pub app: Option<String>,
    /// pending, scheduled, running, paused, dead, replayed or delivered.
    #[arg(long)]
    pub state: Option<String>,
    /// Only this event type.
    #[arg(long)]
    pub event_type: Option<String>,
    /// Enqueued (delivered, for `delivered`) at or after: RFC 3339 or a duration ago (`2h`).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Before: RFC 3339 or a duration ago.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The delivery id.
    pub id: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["id", "endpoint", "since", "until"])))]
pub struct ReplayArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// One dead letter's delivery id.
    #[arg(conflicts_with_all = ["endpoint", "since", "until"])]
    pub id: Option<i64>,
    /// Every dead letter of this endpoint.
    #[arg(long)]
    pub endpoint: Option<Uuid>,
    /// Dead letters that failed at or after: RFC 3339 or a duration ago (`2h`).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Dead letters that failed before.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `delivery` subcommand.
///
/// # Errors
/// Unknown ids, invalid filters and database failures, as one-line messages.
pub async fn run(command: DeliveryCommand) -> anyhow::Result<()> {
    match command {
        DeliveryCommand::List(args) => list(args).await,
        DeliveryCommand::Show(args) => show(args).await,
        DeliveryCommand::Replay(args) => replay(args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    let filter = Filter {
        endpoint: args.endpoint,
        application: application(&pool, args.app.as_deref()).await?,
        state: args.state,
        event_type: args.event_type,
        since: args.since,
        until: args.until,
        limit: args.limit.max(1),
    };
    let rows = deliveries::list(&pool, &filter).await?;
    if args.json {
        return print_json(&rows);
    }
    println!(
        "{:>10}  {:<9}  {:>3}  {:<20}  {:<36}  {:<16}  LAST ERROR",
        "ID", "STATE", "TRY", "AT (UTC)", "ENDPOINT", "EVENT TYPE"
    );
    for r in &rows {
        println!(
            "{:>10}  {:<9}  {:>3}  {:<20}  {:<36}  {:<16}  {}",
            r.id,
            r.state,
            r.attempts,
            r.at.format("%Y-%m-%d %H:%M:%S"),
            r.endpoint_id,
            r.event_type.as_deref().unwrap_or("-"),
            r.last_error.as_deref().unwrap_or("")
        );
    }
    if rows.is_empty() {
        println!("(no deliveries match)");
    }
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    let d = deliveries::show(&pool, args.id).await?;
    if args.json {
        return print_json(&d);
    }
    println!("delivery      {}", d.id);
    println!("message id    {} (sent as webhook-id)", d.message_id);
    println!("endpoint      {}", d.endpoint_id);
    println!("event type    {}", d.event_type.as_deref().unwrap_or("-"));
    let replay = d.replayed_as.map(|id| format!(" as delivery {id}")).unwrap_or_default();
    println!("state         {}{replay}", d.state);
    println!(
        "payload       {}",
        d.payload_bytes.map_or("(not kept after delivery)".to_owned(), |b| format!("{b} bytes"))
    );
    if let Some(at) = d.enqueued_at {
        println!("enqueued      {}", at.format("%Y-%m-%d %H:%M:%S%.3f UTC"));
    }
    if let Some(at) = d.next_attempt_at {
        println!("next attempt  {}", at.format("%Y-%m-%d %H:%M:%S%.3f UTC"));
    }
    if let Some(error) = &d.last_error {
        println!("last error    {error}");
    }
    println!("\nattempts ({}):", d.attempts.len());
    for a in &d.attempts {
        let status = a.status_code.map_or("-".to_owned(), |s| s.to_string());
        println!(
            "  #{:<2} {}  {:>6} ms  {:<9} HTTP {:<3}  {}{}",
            a.attempt,
            a.attempted_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            a.duration_ms,
            a.outcome,
            status,
            a.error.as_deref().unwrap_or(""),
            a.response_excerpt.as_deref().map(|e| format!("  response: {}", e.trim())).unwrap_or_default()
        );
        if let Some(line) = forensics_line(&a.forensics) {
            println!("      {line}");
        }
        if let Some(headers) = &a.forensics.response_headers {
            println!("      headers: {}", headers.trim_end().replace('\n', " | "));
        }
    }
    Ok(())
}

/// `via proxy · dialled 203.0.113.7 · dns 3 ms · connect 12 ms · tls 25 ms · first byte 80 ms`;
/// `None` when nothing was recorded.
fn forensics_line(f: &Forensics) -> Option<String> {
    let ms = |name: &str, value: Option<i32>| value.map(|v| format!("{name} {v} ms"));
    let parts: Vec<String> = [
        f.via_proxy.and_then(|yes| yes.then(|| "via proxy".to_owned())),
        f.remote_ip.as_ref().map(|ip| format!("dialled {ip}")),
        f.connection_reused.and_then(|yes| yes.then(|| "connection reused".to_owned())),
        ms("dns", f.dns_ms),
        ms("connect", f.connect_ms),
        ms("tls", f.tls_ms),
        ms("first byte", f.first_byte_ms),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(" · "))
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    let result: Replayed = match args.id {
        Some(id) => deliveries::replay_one(&pool, id).await?,
        None => deliveries::replay_matching(&pool, args.endpoint, args.since, args.until).await?,
    };
    if args.json {
        return print_json(&result);
    }
    for (dead, new) in &result.replayed {
        println!("replayed dead letter {dead} as delivery {new}");
    }
    for (dead, previous) in &result.already_replayed {
        println!("dead letter {dead} was already replayed as delivery {previous}; left alone");
    }
    if !result.skipped_disabled.is_empty() {
        println!("skipped {} dead letters whose endpoint is disabled or deleted", result.skipped_disabled.len());
    }
    println!(
        "{} replayed, {} already replayed, {} skipped",
        result.replayed.len(),
        result.already_replayed.len(),
        result.skipped_disabled.len()
    );
    Ok(())
}
