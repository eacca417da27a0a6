//! A bad network between a worker and Postgres, in a network namespace the test creates: the
//! worker runs in it (`ip netns exec`) and reaches the test's own cluster and the receiver over a
//! veth pair. A partition (the link down, then a SIGTERM while it is down); and 300 ms of latency
//! and 20 % loss on the worker's side. This machine's kernel has no `sch_netem`, so the loss is an
//! nftables rule in the namespace that drops a fifth of the packets the worker sends (`numgen
//! random`), and the latency a relay in the test that delays what the worker sends to Postgres
//! ([`DelayRelay`]). A second worker on loopback keeps the fleet going and reaps the partitioned
//! worker's expired leases. Nothing may be lost; leases and the drain behave as documented. Needs
//! root, `ip netns` and `nft` (CI and this machine run tests as root; `.ci/run` installs
//! nftables): without them the tests fail, saying so.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use webhook_worker::testkit::pgcluster::{Cluster, THROWAWAY_SETTINGS};
use webhook_worker::testkit::receiver::{Answer, Receiver};

use super::delay::DelayRelay;
use super::{Worker, drained, stuck};
use crate::faults::{delivered, long_profile};
use crate::support::cli::{BIN, binary_at};
use crate::support::{TestDb, endpoint, insert_deliveries};

/// A network namespace joined to the host by a veth pair (`/30`: host .1, namespace .2), removed
/// on drop.
struct Netns {
    name: String,
    host_link: String,
    inner_link: String,
    host: Ipv4Addr,
    inner: Ipv4Addr,
}

/// Runs `ip`/`tc` with `args`; panics naming the command and its error.
fn sh(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} not found: {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed (this test needs root and network namespaces): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Netns {
    fn create() -> Self {
        let tag = std::process::id() % 100_000;
        let subnet = u8::try_from(tag % 250).unwrap();
        let netns = Self {
            name: format!("webhook-chaos-{tag}"),
            host_link: format!("whc{tag}h"),
            inner_link: format!("whc{tag}n"),
            host: Ipv4Addr::new(10, 213, subnet, 1),
            inner: Ipv4Addr::new(10, 213, subnet, 2),
        };
        sh("ip", &["netns", "add", &netns.name]);
        sh("ip", &["link", "add", &netns.host_link, "type", "veth", "peer", "name", &netns.inner_link]);
        sh("ip", &["link", "set", &netns.inner_link, "netns", &netns.name]);
        sh("ip", &["addr", "add", &format!("{}/30", netns.host), "dev", &netns.host_link]);
        sh("ip", &["link", "set", &netns.host_link, "up"]);
        netns.inside(&["ip", "addr", "add", &format!("{}/30", netns.inner), "dev", &netns.inner_link]);
        netns.inside(&["ip", "link", "set", &netns.inner_link, "up"]);
        netns.inside(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    fn inside(&self, command: &[&str]) {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(command);
        sh("ip", &args);
    }

    /// Drops `percent` % of the packets the namespace sends, at random (what `tc netem loss`
    /// does on its side of the link); `None` drops none.
    fn loss(&self, percent: Option<u32>) {
        let _ =
            Command::new("ip").args(["netns", "exec", &self.name, "nft", "delete", "table", "inet", "chaos"]).output();
        if let Some(percent) = percent {
            self.inside(&["nft", "add", "table", "inet", "chaos"]);
            self.inside(&["nft", "add chain inet chaos out { type filter hook output priority 0; }"]);
            self.inside(&["nft", &format!("add rule inet chaos out numgen random mod 100 < {percent} drop")]);
        }
    }

    /// The host's side of the link down (`false`) or up again.
    fn link(&self, up: bool) {
        sh("ip", &["link", "set", &self.host_link, if up { "up" } else { "down" }]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Whether the far worker holds the maintenance leader's advisory lock.
const LEADS_FAR: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
     WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'chaos-far')";

/// Deliveries attempted by `worker` so far.
async fn attempts_by(db: &TestDb, worker: &str) -> i64 {
    db.count(&format!("SELECT count(*) FROM webhook.delivery_attempts WHERE worker_id = '{worker}'")).await
}

/// Whether `worker`'s `/readyz` answers `status` within `limit`.
async fn ready(worker: &Worker, status: u16, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let url = format!("http://{}/readyz", std::net::SocketAddr::new(worker.host, worker.port));
    while tokio::time::Instant::now() < deadline {
        if client.get(&url).send().await.is_ok_and(|r| r.status().as_u16() == status) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A cluster reachable on loopback and from the namespace, a receiver on the host's end of the
/// link, deliveries paced to last `seconds`, a worker on loopback and one in the namespace.
struct Rig {
    netns: Netns,
    db: TestDb,
    receiver: Receiver,
    near: Worker,
    far: Worker,
    hba: std::path::PathBuf,
    /// When the far worker reaches Postgres through a delay line (the latency test).
    relay: Option<DelayRelay>,
    cluster: Cluster,
}

impl Rig {
    async fn start(total: i64, seconds: u64, through_relay: bool) -> Self {
        webhook_worker::tls::install_crypto_provider();
        let netns = Netns::create();
        // The cluster listens on loopback and on the host's end of the link, and lets the namespace in.
        let hba = std::env::temp_dir().join(format!("webhook-chaos-hba-{}.conf", std::process::id()));
        let rules =
            format!("local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all {}/32 trust\n", netns.inner);
        std::fs::write(&hba, rules).unwrap();
        let (listen, hba_file) = (format!("127.0.0.1,{}", netns.host), hba.display().to_string());
        let cluster = tokio::task::spawn_blocking(move || {
            let mut settings: Vec<(&str, &str)> = THROWAWAY_SETTINGS.to_vec();
            settings.extend([("listen_addresses", listen.as_str()), ("hba_file", hba_file.as_str())]);
            Cluster::start_with(&settings)
        })
        .await
        .unwrap()
        .unwrap();
        let url = cluster.url("postgres");
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        webhook_worker::db::migrate(&pool).await.unwrap();
        let db = TestDb::on_own_cluster(url.clone(), pool.clone());
        let relay = if through_relay {
            let server = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, cluster.port()));
            Some(DelayRelay::start((netns.host, 0).into(), server).await)
        } else {
            None
        };
        let far_address =
            relay.as_ref().map_or_else(|| format!("{}:{}", netns.host, cluster.port()), |relay| relay.addr.to_string());
        let far_url = url.replace(&format!("127.0.0.1:{}", cluster.port()), &far_address);
        let far_db = TestDb::on_own_cluster(far_url, pool.clone());
        let receiver = Receiver::start_on(IpAddr::V4(netns.host), None).await.unwrap();
        for n in 0..4 {
            let path = format!("/n{n}");
            let (id, _) = endpoint(&pool, &receiver.url(&path)).await;
            receiver.answer(&path, Answer::default());
            insert_deliveries(&pool, id, total / 4).await;
        }
        sqlx::query("UPDATE webhook.endpoints SET rate_limit_per_second = $1, rate_limit_burst = 5")
            .bind(i32::try_from(total / 4 / i64::try_from(seconds).unwrap()).unwrap().max(1))
            .execute(&pool)
            .await
            .unwrap();
        let cidrs = format!("127.0.0.0/8,{}/30", netns.host);
        let env =
            [("RUST_LOG", "warn"), ("WEBHOOK_ALLOW_PRIVATE_CIDRS", cidrs.as_str()), ("WEBHOOK_DRAIN_DEADLINE", "5s")];
        // The far worker first, so that it leads maintenance: the partitions cut the leader off.
        let mut launcher = binary_at(&far_db, std::path::Path::new("ip"));
        launcher.args(["netns", "exec", &netns.name, BIN]);
        let far = Worker::launch(&far_db, "chaos-far", &env, launcher, IpAddr::V4(netns.inner));
        assert!(
            ready(&far, 200, Duration::from_secs(30)).await,
            "the worker in the namespace never became ready:\n{}",
            far.log_text()
        );
        crate::support::wait_until(&pool, LEADS_FAR, Duration::from_secs(30)).await;
        let near = Worker::start(&db, "chaos-near", &env);
        Self { netns, db, receiver, near, far, hba, relay, cluster }
    }

    /// SIGTERMs the far worker; returns whether it exited within `limit`, and after how long.
    async fn terminate_far(&mut self, limit: Duration) -> (bool, f64) {
        let _ = Command::new("kill").args(["-TERM", &self.far.child.id().to_string()]).status();
        self.far_exits(tokio::time::Instant::now(), limit).await
    }

    /// Whether the far worker exits within `limit`, and how long after `since`.
    async fn far_exits(&mut self, since: tokio::time::Instant, limit: Duration) -> (bool, f64) {
        let stopping = since;
        loop {
            let exited = self.far.child.try_wait().unwrap().is_some();
            if exited || tokio::time::Instant::now() > since + limit {
                return (exited, stopping.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the queue to drain; returns (delivered, duplicates, stuck) and stops everything.
    async fn finish(mut self) -> (usize, usize, i64, i64) {
        drained(&self.db, Duration::from_secs(180)).await;
        let (distinct, answered_ok) = delivered(&self.receiver);
        let stuck = stuck(&self.db).await;
        let dead = self.db.count("SELECT count(*) FROM webhook.dead_letters").await;
        if self.far.child.try_wait().unwrap().is_none() {
            let _ = self.far.child.kill();
            let _ = self.far.child.wait();
        }
        let _ = std::fs::remove_file(&self.far.log);
        self.near.stop();
        let _ = std::fs::remove_file(&self.hba);
        drop(self.relay);
        self.db.pool.close().await;
        drop(self.cluster);
        (distinct, answered_ok - distinct, stuck, dead)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_postgres_loses_nothing_and_the_worker_recovers_and_drains() {
    let (total, partition) =
        if long_profile() { (20_000_i64, Duration::from_secs(30)) } else { (3_000, Duration::from_secs(8)) };
    let _gate = crate::support::db::exclusive().await;
    let mut rig = Rig::start(total, 3 * partition.as_secs() + 20, false).await;
    assert!(rig.receiver.wait_for(usize::try_from(total / 10).unwrap(), Duration::from_secs(60)).await);

    // A partition: the worker's link to Postgres (and to the receiver) goes down and comes back.
    let before = (attempts_by(&rig.db, "chaos-far").await, rig.receiver.count());
    rig.netns.link(false);
    // The partition is held this long.
    tokio::time::sleep(partition).await;
    let near_during = rig.receiver.count() - before.1;
    rig.netns.link(true);
    let healed = tokio::time::Instant::now();
    let back = ready(&rig.far, 200, Duration::from_secs(60)).await;
    let ready_after = healed.elapsed().as_secs_f64();
    let far_errors = rig.far.counter("webhook_database_errors_total").await;
    let stale_logged = rig.far.log_text().contains("completions were stale");
    assert!(
        rig.receiver.wait_for(rig.receiver.count() + 100, Duration::from_secs(60)).await,
        "stalled after the partition"
    );
    let far_after = attempts_by(&rig.db, "chaos-far").await - before.0;

    // A SIGTERM while partitioned: the drain cannot write its results until the link is back.
    rig.netns.link(false);
    let sigterm = tokio::time::Instant::now();
    let (exited_partitioned, _) = rig.terminate_far(Duration::from_secs(10)).await;
    rig.netns.link(true);
    let (exited, after_sigterm) = rig.far_exits(sigterm, Duration::from_secs(70)).await;
    let far_log = rig.far.log_text();
    let (distinct, duplicates, stuck, dead) = rig.finish().await;
    eprintln!(
        "partition: {total} deliveries, 2 workers (one in a namespace); link down {partition:?}: the loopback worker \
         delivered {near_during} meanwhile; the partitioned worker counted {far_errors} database errors, was ready again \
         {ready_after:.1} s after the link came back (stale completions logged: {stale_logged}) and attempted \
         {far_after} since. SIGTERM with the link down: exited within 10 s {exited_partitioned}; after the link came \
         back it exited {exited} ({after_sigterm:.1} s after the SIGTERM, the link down for the first 10 s; drain \
         deadline 5 s). Delivered {distinct}, \
         dead {dead}, duplicates {duplicates}, stuck {stuck}"
    );
    assert!(back, "the far worker did not become ready after the partition:\n{far_log}");
    assert!(far_errors > 0.0, "the far worker counted no database error during the partition");
    assert!(near_during > 0, "the loopback worker kept delivering during the partition");
    assert_eq!(distinct, usize::try_from(total).unwrap(), "nothing lost");
    assert_eq!((stuck, dead), (0, 0));
    // A partition outlives the 7-s leases: what the far worker had answered then is redelivered.
    assert!(duplicates <= 2 * 256, "{duplicates} duplicates");
    assert!(exited, "the far worker did not exit after SIGTERM once the link was back:\n{far_log}");
}

/// The leader's node lost behind a partition: the worker is SIGKILLed while its link is down and
/// the link stays down. Its leader connection's backend never hears of it (no FIN, no RST, no
/// traffic on an idle connection), so it keeps the advisory lock until the server's TCP keepalive
/// notices; until then no worker can lead, and the dead worker's leases are never reaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_lost_behind_a_partition_is_replaced_and_its_leases_reaped() {
    let total = if long_profile() { 10_000_i64 } else { 2_000 };
    let _gate = crate::support::db::exclusive().await;
    let mut rig = Rig::start(total, 40, false).await;
    assert!(rig.receiver.wait_for(usize::try_from(total / 10).unwrap(), Duration::from_secs(60)).await);
    rig.netns.link(false);
    rig.far.child.kill().unwrap();
    rig.far.child.wait().unwrap();
    let lost = tokio::time::Instant::now();
    let held_by_dead = rig.db.count("SELECT count(*) FROM webhook.deliveries WHERE leased_by = 'chaos-far'").await;
    let deadline = lost + Duration::from_secs(120);
    let takeover = loop {
        if super::leaders(&rig.db).await.iter().any(|name| name == "chaos-near") {
            break Some(lost.elapsed().as_secs_f64());
        }
        if tokio::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let holders = super::leaders(&rig.db).await;
    let stuck_now = stuck(&rig.db).await;
    assert!(
        takeover.is_some(),
        "no worker could lead for 120 s after the leader was lost behind a partition (lock held by {holders:?}); \
         {stuck_now} deliveries stuck past their lease"
    );
    let (distinct, duplicates, stuck, dead) = rig.finish().await;
    eprintln!(
        "leader lost behind a partition: {total} deliveries; the dead leader held {held_by_dead} leases; the loopback \
         worker took over after {takeover:.1?} s; delivered {distinct}, dead {dead}, duplicates {duplicates}, stuck {stuck}"
    );
    assert_eq!(distinct, usize::try_from(total).unwrap(), "nothing lost");
    assert_eq!((stuck, dead), (0, 0));
    assert!(duplicates <= 256, "{duplicates} duplicates");
}

/// 300 ms more on every round trip to Postgres, then a fifth of the worker's packets lost, each
/// held for a while under load; then a SIGTERM with both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_loss_to_postgres_lose_nothing() {
    let (total, fault) =
        if long_profile() { (20_000_i64, Duration::from_secs(60)) } else { (3_000, Duration::from_secs(8)) };
    let _gate = crate::support::db::exclusive().await;
    let mut rig = Rig::start(total, 3 * fault.as_secs() + 20, true).await;
    let relay = |rig: &Rig, delay| rig.relay.as_ref().expect("the far worker goes through the relay").set_delay(delay);
    let latency = Duration::from_millis(300);
    let mut figures = Vec::new();
    for what in ["300 ms latency", "20 % loss"] {
        let before = (attempts_by(&rig.db, "chaos-far").await, rig.receiver.count());
        if what.contains("latency") {
            relay(&rig, latency);
        } else {
            rig.netns.loss(Some(20));
        }
        // The fault is held this long.
        tokio::time::sleep(fault).await;
        relay(&rig, Duration::ZERO);
        rig.netns.loss(None);
        // What the far worker gets done is a figure, not a check: rows come due at the rate
        // limit's pace and the loopback worker may claim every one before it (CI saw 0).
        let far = attempts_by(&rig.db, "chaos-far").await - before.0;
        figures.push(format!(
            "{what}: the far worker attempted {far}, the fleet delivered {} in {fault:?}",
            rig.receiver.count() - before.1
        ));
    }
    relay(&rig, latency);
    rig.netns.loss(Some(20));
    let (exited, after) = rig.terminate_far(Duration::from_secs(60)).await;
    relay(&rig, Duration::ZERO);
    rig.netns.loss(None);
    let (distinct, duplicates, stuck, dead) = rig.finish().await;
    eprintln!(
        "latency and loss: {total} deliveries\n  {}\n  SIGTERM under 300 ms + 20 % loss: exited {exited} after {after:.1} s \
         (drain deadline 5 s); delivered {distinct}, dead {dead}, duplicates {duplicates}, stuck {stuck}",
        figures.join("\n  ")
    );
    assert_eq!(distinct, usize::try_from(total).unwrap(), "nothing lost");
    assert_eq!((stuck, dead), (0, 0));
    assert!(duplicates <= 2 * 256, "{duplicates} duplicates");
    assert!(exited, "the far worker did not exit within 60 s of SIGTERM over a bad link");
}
