//! `tokens …` commands: management API tokens.

use clap::{Args, Subcommand};
use secrecy::ExposeSecret as _;

use super::{connect, print_json};
use crate::admin::applications;
use crate::admin::ids::{self, Scope};
use crate::admin::tokens;
use crate::config::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token (shown once; only its hash is stored).
    Create(CreateArgs),
    /// List tokens (never the tokens themselves).
    List(ListArgs),
    /// Revoke a token; the API refuses it within 5 s.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// What the token is for.
    #[arg(long)]
    pub name: String,
    /// Scope the token to one application (id or uid): it sees nothing else.
    #[arg(long)]
    pub app: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The token's id (from `tokens list`).
    pub id: uuid::Uuid,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `tokens` subcommand.
///
/// # Errors
/// An unknown application or token, or a database failure.
pub async fn run(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create(args) => {
            let pool = connect(&args.database).await?;
            let app = match &args.app {
                Some(reference) => Some(applications::find(&pool, Scope::All, reference).await?.id),
                None => None,
            };
            let created = tokens::create(&pool, &args.name, app).await?;
            let token = created.token.expose_secret();
            if args.json {
                let app = created.info.application_id.map(ids::app_id);
                return print_json(
                    &serde_json::json!({ "id": created.info.id, "name": created.info.name, "app": app, "token": token }),
                );
            }
            println!("token {} ({}), shown once, store it now:\n{token}", created.info.id, created.info.name);
            Ok(())
        }
        TokensCommand::List(args) => {
            let pool = connect(&args.database).await?;
            let list = tokens::list(&pool).await?;
            if args.json {
                return print_json(&list);
            }
            println!("{:<36}  {:<36}  {:<8}  NAME", "ID", "APPLICATION", "STATE");
            for token in &list {
                let app = token.application_id.map_or_else(|| "(all)".to_owned(), ids::app_id);
                let state = if token.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{:<36}  {:<36}  {state:<8}  {}", token.id, app, token.name);
            }
            Ok(())
        }
        TokensCommand::Revoke(args) => {
            let pool = connect(&args.database).await?;
            tokens::revoke(&pool, args.id).await?;
            if args.json {
                return print_json(&serde_json::json!({ "id": args.id, "revoked": true }));
            }
            println!("token {} revoked", args.id);
            Ok(())
        }
    }
}
