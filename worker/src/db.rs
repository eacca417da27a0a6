//! Connection pool and migrations.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// Why the database could not be reached or migrated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("DATABASE_URL is not a valid PostgreSQL connection string")]
    Url(#[source] sqlx::Error),
    #[error("connecting to PostgreSQL failed")]
    Connect(#[source] sqlx::Error),
    #[error("migrating the database failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stopped while waiting for the database")]
    Stopped,
}

/// Connection options from the URL (which may hold a password: it is never logged). The
/// connections are named `webhook-worker` in `pg_stat_activity` unless the URL names them
/// (`?application_name=…`, e.g. the pod's name).
///
/// # Errors
/// [`Error::Url`] for an unparseable URL.
pub fn options(url: &SecretString) -> Result<PgConnectOptions, Error> {
    let options: PgConnectOptions = url.expose_secret().parse().map_err(Error::Url)?;
    if options.get_application_name().is_some() {
        return Ok(options);
    }
    Ok(options.application_name("webhook-worker"))
}

/// A pool of `size` connections. Does not connect yet.
///
/// # Errors
/// [`Error::Url`] for an unparseable URL.
pub fn pool(url: &SecretString, size: u32) -> Result<PgPool, Error> {
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|connection, _| Box::pin(prepare_session(connection)))
        .connect_lazy_with(options(url)?))
}

/// Connects one session outside a pool (the maintenance leader's), set up like the pool's.
///
/// # Errors
/// The connection's error.
pub async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    let mut connection = PgConnection::connect_with(options).await?;
    prepare_session(&mut connection).await?;
    Ok(connection)
}

/// Turns off JIT compilation for the session. Every statement of ours is short, but a few are
/// estimated as costly (the leader's circuit query over a large queue: a cost of 355,000 for a
/// query that returns nothing), and Postgres then spends 18 ms compiling it on every call. A
/// `SET` after connecting, not a startup option: PgBouncer rejects startup options it does not
/// track.
async fn prepare_session(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(NO_JIT).execute(connection).await.map(|_| ())
}

const NO_JIT: &str = "SET jit = off";

/// Waits until the database answers, retrying with backoff (up to 30 s between tries) and logging
/// each failure, until `stop`. `failed` is called once per failed try: this module sits below
/// `observe`, so the caller counts it (`webhook_database_errors_total{operation="connect"}`).
///
/// # Errors
/// [`Error::Stopped`] when `stop` fires first.
pub async fn wait_until_reachable(pool: &PgPool, stop: &CancellationToken, failed: impl Fn()) -> Result<(), Error> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match sqlx::query(PING).execute(pool).await {
            Ok(_) => return Ok(()),
            Err(err) => {
                failed();
                let error = explain(pool, &err).await;
                tracing::warn!(%error, "PostgreSQL is not reachable yet; retrying in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return Err(Error::Stopped),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// `err` in words an operator can act on. A pool that timed out says only that; the server's own
/// refusal (`too many clients`, a wrong password, a database that does not exist) is what one
/// new connection, made here, answers.
pub async fn explain(pool: &PgPool, err: &sqlx::Error) -> String {
    if !matches!(err, sqlx::Error::PoolTimedOut) {
        return err.to_string();
    }
    match PgConnection::connect_with(&pool.connect_options()).await {
        Ok(_) => format!("{err} (a new connection succeeds now)"),
        Err(cause) => format!("{err}: a new connection fails: {cause}"),
    }
}

/// Applies the embedded migrations from `schema/migrations`. Safe to run twice and concurrently:
/// the migrator holds a Postgres advisory lock and skips applied versions. Its bookkeeping table
/// lives in the `webhook` schema, clear of an application's own `_sqlx_migrations`.
///
/// # Errors
/// [`Error::Migrate`] naming the failing migration.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    let mut migrator = sqlx::migrate!("../schema/migrations");
    migrator.create_schema("webhook");
    migrator.dangerous_set_table_name("webhook._sqlx_migrations");
    migrator.run(pool).await?;
    Ok(())
}

const PING: &str = "SELECT 1";

/// Whether the server answers.
///
/// # Errors
/// The database error.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(PING).execute(pool).await.map(|_| ())
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[("ping", PING), ("no_jit", NO_JIT)];
