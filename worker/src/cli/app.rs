//! `app …` commands: the applications (tenants).

use clap::{Args, Subcommand};

use super::{connect, print_json};
use crate::admin::applications::{self, Application, Settings};
use crate::admin::ids::{self, Scope};
use crate::admin::page::PageRequest;
use crate::config::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an application for one of your customers.
    Create(CreateArgs),
    /// List applications.
    List(ListArgs),
    /// Show one application (by id or uid).
    Show(RefArgs),
    /// Delete an application with its endpoints and their queued deliveries.
    Delete(RefArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A name for people.
    #[arg(long)]
    pub name: String,
    /// Your own id for this customer (unique).
    #[arg(long)]
    pub uid: Option<String>,
    /// Requests per second its endpoints get unless they set their own.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Return the existing application with this uid instead of failing.
    #[arg(long)]
    pub get_if_exists: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// How many at most.
    #[arg(long, default_value_t = 250)]
    pub limit: i64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RefArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The application's id (`app_…`) or uid.
    pub app: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn json(app: &Application) -> serde_json::Value {
    serde_json::json!({
        "id": ids::app_id(app.id), "uid": app.uid, "name": app.name,
        "rate_limit_per_second": app.rate_limit_per_second, "metadata": app.metadata.0,
        "created_at": app.created_at, "updated_at": app.updated_at,
    })
}

/// Runs an `app` subcommand.
///
/// # Errors
/// Validation, unknown applications and database failures, as one-line messages.
pub async fn run(command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Create(args) => {
            let rate = args
                .rate_limit
                .map(i32::try_from)
                .transpose()
                .map_err(|_| anyhow::anyhow!("--rate-limit is too large"))?;
            let settings =
                Settings { name: args.name, uid: args.uid, rate_limit_per_second: rate, ..Settings::default() };
            let pool = connect(&args.database).await?;
            let (app, created) = applications::create(&pool, Scope::All, &settings, args.get_if_exists).await?;
            if args.json {
                return print_json(&json(&app));
            }
            let verb = if created { "created" } else { "exists:" };
            println!("{verb} application {} ({})", ids::app_id(app.id), app.uid.as_deref().unwrap_or("no uid"));
            Ok(())
        }
        AppCommand::List(args) => {
            let pool = connect(&args.database).await?;
            let page = PageRequest { limit: Some(args.limit), iterator: None };
            let apps = applications::list(&pool, Scope::All, &page).await?;
            if args.json {
                return print_json(&apps.data.iter().map(json).collect::<Vec<_>>());
            }
            println!("{:<36}  {:<24}  NAME", "ID", "UID");
            for app in &apps.data {
                println!("{:<36}  {:<24}  {}", ids::app_id(app.id), app.uid.as_deref().unwrap_or("-"), app.name);
            }
            Ok(())
        }
        AppCommand::Show(args) => {
            let pool = connect(&args.database).await?;
            let app = applications::find(&pool, Scope::All, &args.app).await?;
            print_json(&json(&app))
        }
        AppCommand::Delete(args) => {
            let pool = connect(&args.database).await?;
            applications::delete(&pool, Scope::All, &args.app).await?;
            if args.json {
                return print_json(&serde_json::json!({ "deleted": args.app }));
            }
            println!("deleted application {} with its endpoints", args.app);
            Ok(())
        }
    }
}
