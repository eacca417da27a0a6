//! The operator commands other than `run` and `demo`: each prints a human-readable answer, or JSON
//! with `--json`.

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use sqlx::PgPool;

use crate::config::{DatabaseArgs, EndpointAddArgs, EndpointListArgs, EnqueueArgs};
use crate::endpoints::{self, NewEndpoint};
use crate::netguard::NetPolicy;
use crate::signing::SigningSecret;
use crate::{crypto, db};

async fn connect(database: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let pool = db::pool(&database.url()?, database.db_pool_size.min(4))?;
    sqlx::query("SELECT 1").execute(&pool).await.context("connecting to PostgreSQL")?;
    Ok(pool)
}

/// `migrate`.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub async fn migrate(database: &DatabaseArgs) -> anyhow::Result<()> {
    let pool = connect(database).await?;
    db::migrate(&pool).await?;
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM webhook._sqlx_migrations WHERE success").fetch_one(&pool).await?;
    println!("schema is at version {}", version.unwrap_or(0));
    Ok(())
}

/// `endpoint add`.
///
/// # Errors
/// For an invalid URL, event type or secret, or a database failure.
pub async fn endpoint_add(args: &EndpointAddArgs) -> anyhow::Result<()> {
    let key_ring = args.keys.key_ring()?;
    let (secret, generated) = match &args.secret {
        Some(text) => (SigningSecret::parse(text.expose_secret()).context("invalid --secret")?, false),
        None => (SigningSecret::generate(), true),
    };
    let pool = connect(&args.database).await?;
    // The SSRF guard applies to deliveries; at registration we check the form only, so that an
    // operator can register an internal receiver that an allow-listed fleet may reach.
    let policy = NetPolicy::new(vec!["0.0.0.0/0".parse()?, "::/0".parse()?], false);
    let new =
        NewEndpoint { url: &args.url, event_types: &args.event_types, description: &args.description, secret: &secret };
    let id = endpoints::add(&pool, &key_ring, &policy, &new).await?;
    let shown = generated.then(|| secret.expose_whsec());
    if args.json {
        let value = serde_json::json!({ "id": id, "url": args.url, "secret": shown.as_deref().map(|s| s.as_str()) });
        println!("{value}");
    } else {
        println!("endpoint {id} added for {}", args.url);
        if let Some(secret) = shown {
            println!("signing secret (shown once, store it now): {}", secret.as_str());
        }
    }
    Ok(())
}

/// `endpoint list`.
///
/// # Errors
/// On a database failure.
pub async fn endpoint_list(args: &EndpointListArgs) -> anyhow::Result<()> {
    let pool = connect(&args.database).await?;
    let list = endpoints::list(&pool).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
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
        println!(
            "{}",
            serde_json::json!({ "message_id": message_id, "deliveries": deliveries, "duplicate": duplicate })
        );
    } else if duplicate {
        println!("idempotency key seen before: nothing enqueued (message {message_id})");
    } else {
        println!("enqueued message {message_id} to {deliveries} endpoint(s)");
    }
    Ok(())
}

/// `keys generate`.
pub fn keys_generate(id: Option<&str>) {
    let id = id.map_or_else(|| format!("k{}", chrono::Utc::now().format("%Y%m%d")), str::to_owned);
    let (_, text) = crypto::KeyRing::generate(&id);
    println!("{}", text.as_str());
}
