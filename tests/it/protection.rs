//! The in-flight cap, as a receiver sees it: an endpoint never has more requests in flight than
//! its cap in a worker, a fast endpoint's backlog is not pushed into the future by its cap, and a
//! slow endpoint's backlog is spread at the pace the worker measured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use tokio::sync::watch;
use webhook_worker::config::Settings;

use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, wait_until, worker_args};

/// A receiver that answers 200 after `delay` and counts, per path, the requests it holds at once.
struct CountingReceiver {
    url: String,
    state: Arc<Counts>,
}

struct Counts {
    delay: Duration,
    /// Per path: requests held now, and the most held at once.
    paths: Mutex<HashMap<String, (usize, usize)>>,
    answered: watch::Sender<usize>,
}

impl CountingReceiver {
    async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Counts { delay, paths: Mutex::default(), answered: watch::Sender::new(0) });
        let app = Router::new().fallback(hold).with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The most requests on `path` held at once so far.
    fn peak(&self, path: &str) -> usize {
        self.state.paths.lock().unwrap().get(path).map_or(0, |(_, peak)| *peak)
    }

    /// Waits until `n` requests were answered; `false` if `limit` passed first.
    async fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let mut answered = self.state.answered.subscribe();
        tokio::time::timeout(limit, answered.wait_for(|a| *a >= n)).await.is_ok_and(|r| r.is_ok())
    }
}

async fn hold(State(state): State<Arc<Counts>>, uri: Uri) -> StatusCode {
    let path = uri.path().to_owned();
    {
        let mut paths = state.paths.lock().unwrap();
        let (now, peak) = paths.entry(path.clone()).or_default();
        *now += 1;
        *peak = (*peak).max(*now);
    }
    tokio::time::sleep(state.delay).await;
    state.paths.lock().unwrap().get_mut(&path).unwrap().0 -= 1;
    state.answered.send_modify(|a| *a += 1);
    StatusCode::OK
}

/// A worker whose endpoints default to `cap` requests in flight.
fn worker(db: &TestDb, cap: u32) -> TestWorker {
    let mut args = worker_args(db, "5s");
    args.worker.max_in_flight_per_endpoint = cap;
    args.worker.concurrency = 64;
    TestWorker::start(Settings::from_args(&args).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_in_flight_count_never_exceeds_its_cap() {
    let db = TestDb::new().await;
    let receiver = CountingReceiver::start(Duration::from_millis(20)).await;
    // One endpoint with a cap of its own, one with the worker's.
    let (own, _) = endpoint(&db.pool, &receiver.url("/own")).await;
    sqlx::query("UPDATE webhook.endpoints SET max_in_flight = 3 WHERE id = $1")
        .bind(own)
        .execute(&db.pool)
        .await
        .unwrap();
    let (default, _) = endpoint(&db.pool, &receiver.url("/default")).await;
    insert_deliveries(&db.pool, own, 150).await;
    insert_deliveries(&db.pool, default, 150).await;
    let worker = worker(&db, 5);
    let all = receiver.wait_for(300, Duration::from_secs(120)).await;
    worker.stop().await;
    assert!(all, "every delivery arrived");
    let (own_peak, default_peak) = (receiver.peak("/own"), receiver.peak("/default"));
    eprintln!("in flight at most: {own_peak} (cap 3), {default_peak} (cap 5)");
    assert!(own_peak <= 3, "{own_peak} requests in flight, the endpoint's cap is 3");
    assert!(default_peak <= 5, "{default_peak} requests in flight, the worker's cap is 5");
    assert!(own_peak >= 2 && default_peak >= 2, "the cap allowed concurrency: {own_peak}, {default_peak}");
    assert_eq!(db.count("SELECT count(*) FROM webhook.deliveries").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM webhook.delivery_attempts").await, 300, "one attempt each");
}

/// The average spacing, in milliseconds, of the pending rows scheduled in the future (0 when
/// none are), and how many there are.
async fn future_spacing_ms(db: &TestDb) -> (f64, i64) {
    sqlx::query_as(
        "SELECT coalesce(extract(epoch FROM max(run_at) - min(run_at)) * 1000 / nullif(count(*) - 1, 0), 0)::float8, \
                count(*) \
         FROM webhook.deliveries WHERE state = 'pending' AND run_at > now()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_endpoints_backlog_is_not_scheduled_as_if_it_took_100_ms() {
    let db = TestDb::new().await;
    let receiver = CountingReceiver::start(Duration::ZERO).await;
    let (fast, _) = endpoint(&db.pool, &receiver.url("/fast")).await;
    insert_deliveries(&db.pool, fast, 2000).await;
    // One slot: every claim leaves most of the window behind. The old first deferral spread the
    // whole backlog at a 100-ms guess per slot, 100 ms apart: over 200 s.
    let worker = worker(&db, 1);
    assert!(receiver.wait_for(300, Duration::from_secs(60)).await, "deliveries flow");
    let (spacing_ms, scheduled) = future_spacing_ms(&db).await;
    let pending = db.count("SELECT count(*) FROM webhook.deliveries").await;
    worker.stop().await;
    eprintln!("fast endpoint: {scheduled} of {pending} pending rows scheduled ahead, {spacing_ms:.2} ms apart");
    assert!(spacing_ms < 25.0, "spread {spacing_ms:.1} ms apart: as if a request took {spacing_ms:.0} ms");
    assert!(receiver.peak("/fast") <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoints_backlog_is_spread_at_its_measured_pace() {
    let db = TestDb::new().await;
    let receiver = CountingReceiver::start(Duration::from_millis(100)).await;
    let (slow, _) = endpoint(&db.pool, &receiver.url("/slow")).await;
    insert_deliveries(&db.pool, slow, 500).await;
    let worker = worker(&db, 2);
    // 100 ms per request over 2 slots: one every 50 ms; the backlog is spread over ~25 s (less what
    // was sent before the pace was measured, more on a slow machine).
    wait_until(
        &db.pool,
        "SELECT count(*) > 400 FROM webhook.deliveries WHERE run_at > now() + interval '2 seconds'",
        Duration::from_secs(30),
    )
    .await;
    assert!(receiver.wait_for(10, Duration::from_secs(30)).await, "the measurement has answers");
    let (spacing_ms, scheduled) = future_spacing_ms(&db).await;
    worker.stop().await;
    eprintln!("slow endpoint: {scheduled} rows scheduled ahead, {spacing_ms:.1} ms apart");
    assert!((20.0..200.0).contains(&spacing_ms), "spread {spacing_ms:.1} ms apart for one request per 50 ms");
    assert!(receiver.peak("/slow") <= 2);
}
