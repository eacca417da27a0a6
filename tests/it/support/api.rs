//! A management API served in this process on a loopback port, and a small HTTP client for it.

use std::time::Duration;

use secrecy::ExposeSecret as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use webhook_worker::config::{ApiArgs, ApiSettings};

use super::TestDb;
use super::cli::free_port;
use super::worker::key_ring_text;

/// A running API and an unscoped token for it.
pub struct TestApi {
    pub url: String,
    pub token: String,
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    client: reqwest::Client,
}

/// A response: status, JSON body (`Null` when empty) and `Retry-After`, if any.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
    pub retry_after: Option<String>,
}

impl TestApi {
    /// Serves the API for `db`, loopback endpoints allowed, bodies limited to `max_body` bytes.
    pub async fn start(db: &TestDb, max_body: usize) -> Self {
        Self::start_with(db, max_body, |_| {}).await
    }

    /// [`Self::start`], with `configure` changing the options last.
    pub async fn start_with(db: &TestDb, max_body: usize, configure: impl FnOnce(&mut ApiArgs)) -> Self {
        webhook_worker::tls::install_crypto_provider();
        let mut args = ApiArgs::defaults();
        args.database.database_url = Some(db.url.clone().into());
        args.database.db_pool_size = 5;
        args.keys.encryption_keys = Some(key_ring_text().into());
        args.api_addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        args.metrics_addr = None;
        args.max_body_bytes = max_body;
        args.allow_private_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
        configure(&mut args);
        let settings = ApiSettings::from_args(&args).unwrap();
        let url = format!("http://{}", settings.addr);
        let created = webhook_worker::admin::tokens::create(&db.pool, "tests", None).await.unwrap();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(webhook_worker::api::serve(settings, stop.clone().cancelled_owned()));
        let api = Self {
            url,
            token: created.token.expose_secret().to_owned(),
            stop,
            handle,
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        };
        api.wait_until_listening().await;
        api
    }

    /// Polls the health route until the listener answers (bounded).
    async fn wait_until_listening(&self) {
        for _ in 0..200 {
            if self.client.get(format!("{}/api/v1/health", self.url)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the API did not start listening on {}", self.url);
    }

    /// A token scoped to `application`.
    pub async fn scoped_token(db: &TestDb, application: Uuid) -> String {
        let created = webhook_worker::admin::tokens::create(&db.pool, "scoped", Some(application)).await.unwrap();
        created.token.expose_secret().to_owned()
    }

    /// `method path` with `body` (raw JSON text) and `token` (`None`: no Authorization header).
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> Reply {
        let mut request = self.client.request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("(not text)").to_owned());
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Reply { status, body, retry_after }
    }

    /// [`Self::call`] with the unscoped token.
    pub async fn request(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let token = self.token.clone();
        self.call(method, path, body, Some(&token)).await
    }

    /// Stops the API.
    pub async fn stop(self) {
        self.stop.cancel();
        self.handle.await.unwrap().unwrap();
    }
}
