//! `migrate`.

use clap::Args;

use super::{connect, print_json};
use crate::admin;
use crate::config::DatabaseArgs;

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
    let version = admin::schema::migrate(&pool).await?;
    if args.json {
        return print_json(&serde_json::json!({ "schema_version": version }));
    }
    println!("schema is at version {version}");
    Ok(())
}
