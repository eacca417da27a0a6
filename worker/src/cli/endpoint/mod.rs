//! `endpoint …` commands.

mod show;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::{application, connect, print_json};
use crate::admin::endpoints::{self, Changes, StateChange, read};
use crate::config::{DatabaseArgs, KeyArgs};
use crate::policy::signing::SigningSecret;

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Register an endpoint. Prints its id, and its signing secret once when one is generated.
    Add(AddArgs),
    /// List endpoints with their state and backlog.
    List(ListArgs),
    /// Show an endpoint's settings and health (success ratio, last error, backlog).
    Show(IdArgs),
    /// Change an endpoint's settings.
    Update(UpdateArgs),
    /// Stop sending to an endpoint; its deliveries wait and spend no attempts.
    Pause(StateArgs),
    /// Send to a paused endpoint again.
    Resume(StateArgs),
    /// Disable an endpoint: its deliveries become dead letters (replayable after `enable`).
    Disable(StateArgs),
    /// Enable a disabled endpoint.
    Enable(StateArgs),
    /// Delete an endpoint (its dead letters and history are kept).
    Delete(DeleteArgs),
    /// Add a new signing secret; the old one keeps signing until the grace period ends.
    RotateSecret(RotateArgs),
}

/// Settings shared by `add` and `update`.
#[derive(Debug, Clone, Args)]
pub struct SettingArgs {
    /// Event types to subscribe to (repeat or comma-separate); none means every type.
    #[arg(long = "event-type", value_delimiter = ',')]
    pub event_types: Option<Vec<String>>,
    /// Free text shown in listings.
    #[arg(long)]
    pub description: Option<String>,
    /// Requests per second for this endpoint, across the fleet.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Requests allowed in a burst above the rate.
    #[arg(long)]
    pub burst: Option<u32>,
    /// Requests in flight at once per worker.
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Total time for one request to this endpoint (e.g. `10s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Custom header `Name: value` (repeatable; replaces all custom headers). Stored encrypted.
    #[arg(long = "header")]
    pub headers: Option<Vec<String>>,
    /// Deliver strictly in enqueue order, one at a time (`true`/`false`).
    #[arg(long)]
    pub ordered: Option<bool>,
    /// PEM client certificate (chain) to present to this endpoint (mTLS); needs --client-key.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --client-cert. Stored encrypted.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
    /// Stop presenting a client certificate (update only).
    #[arg(long, conflicts_with = "client_cert")]
    pub no_client_cert: bool,
}

impl SettingArgs {
    fn changes(&self, url: Option<&str>) -> anyhow::Result<Changes> {
        let int = |value: Option<u32>, name: &str| -> anyhow::Result<Option<i32>> {
            value
                .map(|v| {
                    i32::try_from(v)
                        .ok()
                        .filter(|v| *v > 0)
                        .with_context(|| format!("--{name} must be a positive number"))
                })
                .transpose()
        };
        let timeout_ms = self
            .timeout
            .map(|t| {
                i32::try_from(t.as_millis())
                    .ok()
                    .filter(|ms| *ms > 0)
                    .context("--timeout must be between 1 ms and 24 days")
            })
            .transpose()?;
        Ok(Changes {
            url: url.map(str::to_owned),
            event_types: self.event_types.clone(),
            description: self.description.clone(),
            rate_limit_per_second: int(self.rate_limit, "rate-limit")?.map(Some),
            rate_limit_burst: int(self.burst, "burst")?,
            max_in_flight: int(self.max_in_flight, "max-in-flight")?,
            timeout_ms,
            ordered: self.ordered,
            headers: self.headers.clone(),
            client_identity: self.client_identity()?,
            ..Changes::default()
        })
    }

    fn client_identity(&self) -> anyhow::Result<Option<Option<Vec<u8>>>> {
        if self.no_client_cert {
            return Ok(Some(None));
        }
        let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) else { return Ok(None) };
        let mut pem = std::fs::read(cert).with_context(|| format!("reading --client-cert {}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).with_context(|| format!("reading --client-key {}", key.display()))?);
        Ok(Some(Some(pem)))
    }
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Where to POST webhooks (https://…).
    #[arg(long)]
    pub url: String,
    /// The application (id or uid) it belongs to; default: the default application.
    #[arg(long)]
    pub app: Option<String>,
    #[command(flatten)]
    pub settings: SettingArgs,
    /// Signing secret `whsec_<base64>`; generated when omitted.
    #[arg(long, env = "WEBHOOK_ENDPOINT_SECRET", hide_env_values = true)]
    pub secret: Option<SecretString>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this application's endpoints (id or uid).
    #[arg(long)]
    pub app: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The endpoint id.
    pub id: Uuid,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// The endpoint id.
    pub id: Uuid,
    /// A new URL.
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub settings: SettingArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The endpoint id.
    pub id: Uuid,
    /// Why (shown by `endpoint show`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The endpoint id.
    pub id: Uuid,
    /// Also delete its queued deliveries.
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// The endpoint id.
    pub id: Uuid,
    /// How long the previous secret keeps signing.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// The new secret `whsec_<base64>`; generated when omitted.
    #[arg(long, env = "WEBHOOK_ENDPOINT_SECRET", hide_env_values = true)]
    pub secret: Option<SecretString>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn secret_or_generate(given: Option<&SecretString>) -> anyhow::Result<(SigningSecret, bool)> {
    match given {
        Some(text) => Ok((SigningSecret::parse(text.expose_secret()).context("invalid --secret")?, false)),
        None => Ok((SigningSecret::generate(), true)),
    }
}

/// Runs an `endpoint` subcommand.
///
/// # Errors
/// Validation, unknown ids and database failures, as one-line messages.
pub async fn run(command: EndpointCommand) -> anyhow::Result<()> {
    match command {
        EndpointCommand::Add(args) => add(args).await,
        EndpointCommand::List(args) => list(args).await,
        EndpointCommand::Show(args) => show(args).await,
        EndpointCommand::Update(args) => {
            let changes = args.settings.changes(args.url.as_deref())?;
            // The key ring is needed only to seal new headers or a client certificate.
            let sealing = changes.headers.is_some() || matches!(changes.client_identity, Some(Some(_)));
            let ring = sealing.then(|| args.keys.key_ring()).transpose()?;
            let pool = connect(&args.database).await?;
            endpoints::update(&pool, ring.as_ref(), args.id, &changes).await?;
            if args.json {
                return print_json(&serde_json::json!({ "id": args.id, "updated": true }));
            }
            println!("endpoint {} updated", args.id);
            Ok(())
        }
        EndpointCommand::Pause(args) => state(args, StateChange::Pause).await,
        EndpointCommand::Resume(args) => state(args, StateChange::Resume).await,
        EndpointCommand::Disable(args) => state(args, StateChange::Disable).await,
        EndpointCommand::Enable(args) => state(args, StateChange::Enable).await,
        EndpointCommand::Delete(args) => {
            let pool = connect(&args.database).await?;
            let removed = endpoints::delete(&pool, args.id, args.force).await?;
            if args.json {
                return print_json(
                    &serde_json::json!({ "id": args.id, "deleted": true, "deliveries_removed": removed }),
                );
            }
            println!("endpoint {} deleted ({removed} queued deliveries removed)", args.id);
            Ok(())
        }
        EndpointCommand::RotateSecret(args) => rotate(args).await,
    }
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let key_ring = args.keys.key_ring()?;
    let (secret, generated) = secret_or_generate(args.secret.as_ref())?;
    let mut changes = args.settings.changes(Some(&args.url))?;
    let pool = connect(&args.database).await?;
    changes.application = application(&pool, args.app.as_deref()).await?;
    let id = endpoints::create(&pool, &key_ring, &changes, &secret).await?;
    let shown = generated.then(|| secret.expose_whsec());
    if args.json {
        return print_json(
            &serde_json::json!({ "id": id, "url": args.url, "secret": shown.as_deref().map(|s| s.as_str()) }),
        );
    }
    println!("endpoint {id} added for {}", args.url);
    if let Some(secret) = shown {
        println!("signing secret (shown once, store it now): {}", secret.as_str());
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    let list = read::list(&pool, application(&pool, args.app.as_deref()).await?).await?;
    if args.json {
        return print_json(&list);
    }
    println!("{:<36}  {:<8}  {:>7}  {:<24}  URL", "ID", "STATE", "BACKLOG", "EVENT TYPES");
    for e in &list {
        let types = if e.event_types.is_empty() { "*".to_owned() } else { e.event_types.join(",") };
        println!("{:<36}  {:<8}  {:>7}  {:<24}  {}", e.id, e.state, e.backlog, types, e.url);
    }
    if list.is_empty() {
        println!("(no endpoints; add one with `webhook-worker endpoint add --url https://…`)");
    }
    Ok(())
}

async fn show(args: IdArgs) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    let detail = read::show(&pool, args.id).await?.with_context(|| format!("no endpoint with id {}", args.id))?;
    if args.json {
        return print_json(&detail);
    }
    show::print(&detail);
    Ok(())
}

async fn state(args: StateArgs, change: StateChange) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    let moved = endpoints::change_state(&pool, args.id, change, args.reason.as_deref()).await?;
    if args.json {
        let state = match change {
            StateChange::Pause => "paused",
            StateChange::Disable => "disabled",
            StateChange::Resume | StateChange::Enable => "active",
        };
        return print_json(&serde_json::json!({ "id": args.id, "state": state, "deliveries_moved": moved }));
    }
    let text = match change {
        StateChange::Pause => format!("endpoint {} paused ({moved} queued deliveries parked)", args.id),
        StateChange::Resume => format!("endpoint {} resumed ({moved} deliveries back in the queue)", args.id),
        StateChange::Disable => format!("endpoint {} disabled", args.id),
        StateChange::Enable => format!("endpoint {} enabled", args.id),
    };
    println!("{text}");
    Ok(())
}

async fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    let key_ring = args.keys.key_ring()?;
    let (secret, generated) = secret_or_generate(args.secret.as_ref())?;
    let pool = connect(&args.database).await?;
    let expires = endpoints::rotate_secret(&pool, &key_ring, args.id, &secret, args.grace).await?;
    let shown = generated.then(|| secret.expose_whsec());
    if args.json {
        return print_json(
            &serde_json::json!({ "id": args.id, "previous_expires_at": expires, "secret": shown.as_deref().map(|s| s.as_str()) }),
        );
    }
    println!(
        "endpoint {}: new secret added; the previous one signs too until {}",
        args.id,
        expires.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(secret) = shown {
        println!("new signing secret (shown once, store it now): {}", secret.as_str());
    }
    Ok(())
}
