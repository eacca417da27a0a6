//! `keys …` commands.

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{connect, print_json};
use crate::config::{DatabaseArgs, KeyArgs};
use crate::policy::crypto::KeyRing;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random AES-256 key as `id:base64key`, for WEBHOOK_ENCRYPTION_KEYS.
    Generate {
        /// The key id; defaults to `k` + today's date.
        #[arg(long)]
        id: Option<String>,
        /// Print JSON (`{"key_id": …, "key": "id:base64key"}`) instead of the bare key.
        #[arg(long)]
        json: bool,
    },
    /// How many stored ciphertexts use each key id, and whether this key ring has it.
    Status(StatusArgs),
    /// Re-encrypt every secret and header under the ring's first key: online, in batches, resumable.
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Ciphertexts re-encrypted per transaction.
    #[arg(long, default_value_t = 100)]
    pub batch_size: i64,
    /// Stop after this many batches (run again to continue).
    #[arg(long)]
    pub batches: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `keys` subcommand.
///
/// # Errors
/// An invalid key ring, a ciphertext under a key the ring lacks, or a database failure.
pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate { id, json } => {
            let id = id.unwrap_or_else(|| format!("k{}", chrono::Utc::now().format("%Y%m%d")));
            crate::policy::crypto::check_key_id(1, &id).context("--id")?;
            let (_, text) = KeyRing::generate(&id);
            if json {
                return print_json(&serde_json::json!({ "key_id": id, "key": text.as_str() }));
            }
            println!("{}", text.as_str());
            Ok(())
        }
        KeysCommand::Status(args) => status(args).await,
        KeysCommand::Rotate(args) => rotate(args).await,
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    // Without a ring, status still shows the counts; it just cannot say which ids are loaded.
    let ring = args.keys.key_ring().ok();
    let pool = connect(&args.database).await?;
    let usage = crate::admin::keys::usage(&pool).await?;
    if args.json {
        let rows: Vec<_> = usage
            .iter()
            .map(|u| {
                serde_json::json!({
                    "key_id": u.key_id, "secrets": u.secrets, "headers": u.headers, "client_certificates": u.client_certificates,
                    "in_key_ring": ring.as_ref().map(|r| r.contains(&u.key_id)),
                    "active": ring.as_ref().map(|r| r.active_key_id() == u.key_id),
                })
            })
            .collect();
        return print_json(&rows);
    }
    println!("{:<20}  {:>8}  {:>8}  {:>8}  KEY RING", "KEY ID", "SECRETS", "HEADERS", "CLIENT CERTS");
    for u in &usage {
        let note = match &ring {
            Some(r) if r.active_key_id() == u.key_id => "active (encrypts)",
            Some(r) if r.contains(&u.key_id) => "loaded (decrypts only: run `keys rotate`)",
            Some(_) => "MISSING: these cannot be decrypted",
            None => "(no key ring given)",
        };
        println!("{:<20}  {:>8}  {:>8}  {:>12}  {note}", u.key_id, u.secrets, u.headers, u.client_certificates);
    }
    if usage.is_empty() {
        println!("(no ciphertexts stored)");
    }
    Ok(())
}

async fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    let ring = args.keys.key_ring()?;
    let pool = connect(&args.database).await?;
    let done = crate::admin::keys::rotate(&pool, &ring, args.batch_size.max(1), args.batches, |total| {
        eprintln!("  re-encrypted {total} ciphertexts under `{}`", ring.active_key_id());
    })
    .await?;
    let left: i64 = crate::admin::keys::usage(&pool)
        .await?
        .iter()
        .filter(|u| u.key_id != ring.active_key_id())
        .map(|u| u.secrets + u.headers)
        .sum();
    if args.json {
        return print_json(&serde_json::json!({
            "active_key_id": ring.active_key_id(), "re_encrypted": done, "remaining_under_other_keys": left, "complete": left == 0,
        }));
    }
    if left == 0 {
        println!("rotation complete: {done} re-encrypted now; every ciphertext uses `{}`", ring.active_key_id());
    } else {
        println!(
            "rotation paused: {done} re-encrypted now, {left} still use other keys; run `keys rotate` again to continue"
        );
    }
    Ok(())
}
