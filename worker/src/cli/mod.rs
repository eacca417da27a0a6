//! The `webhook-worker` commands: the clap tree, and one module per command group. Commands
//! parse, call [`crate::admin`] (or [`crate::engine`] for `run`) and format the answer — text, or
//! JSON with `--json`. No SQL and no business rules live here. Failures print one `error: …`
//! line and exit 1 (usage errors exit 2).

pub mod app;
pub mod delivery;
pub mod endpoint;
pub mod keys;
pub mod queue;
pub mod schema;
pub mod tokens;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use sqlx::PgPool;

use crate::config::{ApiArgs, ApiSettings, DatabaseArgs, RunArgs, Settings};
use crate::db;
use crate::observe::telemetry;

/// webhook-delivery: deliver signed webhooks from a PostgreSQL queue.
#[derive(Debug, Parser)]
#[command(name = "webhook-worker", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker: claim, sign and deliver until SIGTERM or SIGINT.
    Run(Box<RunArgs>),
    /// Serve the management API (Svix v1 shape) until SIGTERM or SIGINT.
    Api(Box<ApiArgs>),
    /// Manage applications (tenants): create, list, show, delete.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Manage management API tokens: create, list, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Create or upgrade the database schema (safe to run twice and from several pods at once).
    Migrate(schema::MigrateArgs),
    /// Manage endpoints: add, list, show, update, pause, resume, disable, enable, delete, rotate-secret.
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCommand),
    /// Inspect deliveries and replay dead letters.
    #[command(subcommand)]
    Delivery(delivery::DeliveryCommand),
    /// Queue statistics.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Enqueue an event, fanned out to every subscribed endpoint (or to one).
    Enqueue(queue::EnqueueArgs),
    /// Manage encryption keys: generate, status, rotate.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Run a self-contained end-to-end demo: Postgres, a verifying HTTPS receiver, a worker.
    #[cfg(feature = "testkit")]
    Demo(crate::testkit::demo::DemoArgs),
}

/// Runs one command to completion.
///
/// # Errors
/// Whatever the command failed with, as one chain of messages.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let settings = Settings::from_args(&args)?;
            crate::engine::run(settings, crate::engine::shutdown::signal()).await
        }
        Command::Api(args) => {
            telemetry::init(args.log_format);
            let settings = ApiSettings::from_args(&args)?;
            crate::api::serve(settings, crate::engine::shutdown::signal()).await
        }
        Command::App(command) => app::run(command).await,
        Command::Tokens(command) => tokens::run(command).await,
        Command::Migrate(args) => schema::migrate(&args).await,
        Command::Endpoint(command) => endpoint::run(command).await,
        Command::Delivery(command) => delivery::run(command).await,
        Command::Queue(command) => queue::run(command).await,
        Command::Enqueue(args) => queue::enqueue(&args).await,
        Command::Keys(command) => keys::run(command).await,
        #[cfg(feature = "testkit")]
        Command::Demo(args) => {
            telemetry::init(telemetry::LogFormat::Pretty);
            crate::testkit::demo::run(args).await
        }
    }
}

/// Connects to the database (a small pool: these commands run a few statements).
///
/// # Errors
/// When `DATABASE_URL` is missing or the server does not answer.
pub async fn connect(database: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let pool = db::pool(&database.url()?, database.db_pool_size.clamp(1, 4))?;
    db::ping(&pool).await.context("connecting to PostgreSQL")?;
    Ok(pool)
}

/// The application `reference` (id or uid) names, if one is given.
///
/// # Errors
/// An unknown application, or a database failure.
pub async fn application(pool: &PgPool, reference: Option<&str>) -> anyhow::Result<Option<uuid::Uuid>> {
    match reference {
        Some(reference) => {
            Ok(Some(crate::admin::applications::find(pool, crate::admin::ids::Scope::All, reference).await?.id))
        }
        None => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_cli() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
