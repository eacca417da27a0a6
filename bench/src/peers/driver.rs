//! The peers' delivery drivers (`bench/peers/*.mjs`, Node.js): installing the pinned packages,
//! running a driver's enqueue phase, and running its work phase while measuring the driver
//! process and the cluster. What a driver does and prints is documented in `bench/peers/README.md`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::procstat;

/// A peer and the driver script that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    GraphileWorker,
    PgBoss,
}

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::GraphileWorker, Peer::PgBoss];

    /// The name its driver reports (`system`), used in the results.
    pub fn system(self) -> &'static str {
        match self {
            Peer::GraphileWorker => "graphile-worker",
            Peer::PgBoss => "pg-boss",
        }
    }

    /// A short name for database and log file names.
    pub fn slug(self) -> &'static str {
        match self {
            Peer::GraphileWorker => "graphile",
            Peer::PgBoss => "pgboss",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Peer::GraphileWorker => "graphile.mjs",
            Peer::PgBoss => "pgboss.mjs",
        }
    }
}

/// Where the drivers are and what every run of them shares.
#[derive(Debug, Clone)]
pub struct Drivers {
    /// `bench/peers`.
    pub dir: PathBuf,
    /// The receiver URL every driver posts to (plain HTTP).
    pub receiver: String,
    /// The receiver's `whsec_` secret for that URL.
    pub secret: String,
    /// Where each run's stderr goes (`peer-<slug>-r<round>-<phase>.log`).
    pub log_dir: PathBuf,
}

/// One driver run: which peer, on which database, how many jobs, in which round.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub peer: Peer,
    pub database_url: &'a str,
    pub count: u64,
    pub round: usize,
}

/// What the work phase measured.
#[derive(Debug, Clone)]
pub struct WorkReport {
    /// The driver's report line.
    pub line: Value,
    /// The driver process's CPU from its start to its report line.
    pub cpu_seconds: f64,
    /// Process start → report line (every completion committed).
    pub wall_seconds: f64,
}

/// Runs `bench/peers/install.sh` (`npm ci` of the pinned lock, nothing when already installed).
///
/// # Errors
/// When Node.js (≥ 20) or npm is missing, or npm fails (it needs the registry the first time).
pub async fn install(dir: &Path) -> anyhow::Result<()> {
    let script = dir.join("install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}\nthe peers phase needs Node.js >= 20 and npm on PATH (and the npm registry \
             the first time, for `npm ci` of bench/peers/package-lock.json)",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drivers {
    /// `--phase enqueue`: creates the peer's schema in `database_url` and enqueues `count` jobs
    /// through its own bulk path. Returns the driver's report line.
    ///
    /// # Errors
    /// When node cannot be started, or the driver fails or prints no report.
    pub async fn enqueue(&self, job: Job<'_>) -> anyhow::Result<Value> {
        let log = self.log_path(job, "enqueue");
        let mut child = self.spawn(job, &log, &["--phase", "enqueue"])?;
        let line = read_report(&mut child, Duration::from_secs(120 + job.count / 1_000), None).await;
        finish(&mut child, line, &format!("the {} enqueue", job.peer.system()), &log).await
    }

    /// `--phase work`: the peer delivers `count` jobs to the receiver and exits when every
    /// completion is committed. `abort` is asked every second while it runs; a `Some(reason)`
    /// stops the driver and fails the run (e.g. the receiver rejected signatures).
    ///
    /// # Errors
    /// When the driver fails, times out, or is aborted.
    pub async fn work(&self, job: Job<'_>, abort: &dyn Fn() -> Option<String>) -> anyhow::Result<WorkReport> {
        let log = self.log_path(job, "work");
        let limit = crate::bench::Bench::limit_for(job.count);
        let timeout_s = limit.as_secs().to_string();
        let started = tokio::time::Instant::now();
        let args = ["--phase", "work", "--receiver", &self.receiver, "--timeout-s", &timeout_s];
        let mut child = self.spawn(job, &log, &args)?;
        let pid = child.id().context("the driver exited at once")?;
        let line = read_report(&mut child, limit + Duration::from_secs(30), Some(abort)).await;
        // Read before waiting: until it is reaped, an exited driver's CPU is still in /proc.
        let (cpu_seconds, wall_seconds) = (procstat::cpu_seconds(pid), started.elapsed().as_secs_f64());
        let line = finish(&mut child, line, &format!("the {} driver", job.peer.system()), &log).await?;
        Ok(WorkReport { line, cpu_seconds, wall_seconds })
    }

    fn log_path(&self, job: Job<'_>, phase: &str) -> PathBuf {
        self.log_dir.join(format!("peer-{}-r{}-{phase}.log", job.peer.slug(), job.round))
    }

    fn spawn(&self, job: Job<'_>, log: &Path, args: &[&str]) -> anyhow::Result<Child> {
        let log = std::fs::File::create(log)?;
        Command::new("node")
            .arg(self.dir.join(job.peer.script()))
            .args(["--database-url", job.database_url, "--count", &job.count.to_string()])
            .args(args)
            .env("WEBHOOK_SECRET", &self.secret)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting node (the peers phase needs Node.js >= 20 on PATH)")
    }
}

/// Waits for the driver's JSON report line on stdout, for at most `limit`, asking `abort` every
/// second.
async fn read_report(
    child: &mut Child,
    limit: Duration,
    abort: Option<&dyn Fn() -> Option<String>>,
) -> anyhow::Result<Value> {
    let stdout = child.stdout.take().context("the driver's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { bail!("the driver exited without a report line") };
                if line.trim_start().starts_with('{') {
                    return serde_json::from_str(&line).with_context(|| format!("the driver's report line: {line}"));
                }
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Some(reason) = abort.and_then(|abort| abort()) {
                    bail!("stopped the driver: {reason}");
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("the driver printed no report within {limit:?}");
                }
            }
        }
    }
}

/// Ends a driver run (`what`, for messages): kills the driver when it gave no report, else reaps
/// it and fails on a bad exit status even after a report.
async fn finish(child: &mut Child, line: anyhow::Result<Value>, what: &str, log: &Path) -> anyhow::Result<Value> {
    let line = match line {
        Ok(line) => line,
        Err(err) => {
            let _ = child.kill().await;
            bail!("{what}: {err:#}\n{}", tail(log));
        }
    };
    let status = child.wait().await?;
    if !status.success() {
        bail!("{what} exited with {status}: {line}\n{}", tail(log));
    }
    Ok(line)
}

/// The last lines of a driver's log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(8).collect();
    format!("last lines of {}:\n{}", log.display(), lines.into_iter().rev().collect::<Vec<_>>().join("\n"))
}
