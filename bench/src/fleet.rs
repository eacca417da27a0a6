//! Worker processes: the shipped `webhook-worker` binary, started with the environment an
//! operator would give it, measured through `/proc`, stopped with SIGTERM like a pod.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::procstat;

/// How to start workers.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub binary: PathBuf,
    pub database_url: String,
    pub key_ring: String,
    /// PEM file of the receiver's CA (HTTPS runs).
    pub ca_bundle: Option<PathBuf>,
    /// Where each worker's log goes (`worker-N.log`).
    pub log_dir: PathBuf,
}

/// Running workers. Dropping the fleet (a phase failed or the run was interrupted) kills them.
pub struct Fleet {
    children: Vec<Child>,
    cpu_at_start: Vec<f64>,
}

impl Fleet {
    /// Starts `n` workers with the extra environment `env` (e.g. `WEBHOOK_CONCURRENCY`).
    ///
    /// # Errors
    /// When the binary is missing or cannot be started.
    pub fn start(config: &FleetConfig, n: usize, env: &[(&str, String)]) -> anyhow::Result<Self> {
        if !config.binary.is_file() {
            bail!(
                "the worker binary {} does not exist: build it first (`bash bench/run` builds it)",
                config.binary.display()
            );
        }
        let mut children = Vec::with_capacity(n);
        for i in 0..n {
            let log = std::fs::File::create(config.log_dir.join(format!("worker-{i}.log")))?;
            let mut command = Command::new(&config.binary);
            command
                .arg("run")
                .env("DATABASE_URL", &config.database_url)
                .env("WEBHOOK_ENCRYPTION_KEYS", &config.key_ring)
                .env("WEBHOOK_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8,::1/128")
                .env("WEBHOOK_METRICS_ADDR", "127.0.0.1:0")
                .env("WEBHOOK_WORKER_ID", format!("bench-{i}"))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            if let Some(ca) = &config.ca_bundle {
                command.env("WEBHOOK_CA_BUNDLE", ca);
            }
            for (key, value) in env {
                command.env(key, value);
            }
            children.push(command.spawn().with_context(|| format!("starting {}", config.binary.display()))?);
        }
        let cpu_at_start = children.iter().map(|c| procstat::cpu_seconds(c.id())).collect();
        Ok(Self { children, cpu_at_start })
    }

    /// CPU seconds all workers used since they started.
    pub fn cpu_seconds(&self) -> f64 {
        self.children.iter().zip(&self.cpu_at_start).map(|(c, start)| procstat::cpu_seconds(c.id()) - start).sum()
    }

    /// Peak RSS of each worker so far, MiB.
    pub fn peak_rss_mib(&self) -> Vec<f64> {
        self.children.iter().map(|c| procstat::peak_rss_mib(c.id())).collect()
    }

    /// Fails if a worker exited (a crash would silently stall the run otherwise).
    ///
    /// # Errors
    /// Names the worker and its exit status; its log is in the log directory.
    pub fn check_alive(&mut self, log_dir: &Path) -> anyhow::Result<()> {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(log_dir.join(format!("worker-{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "worker {i} exited with {status}; last log lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// SIGTERM to every worker, then waits for them (SIGKILL after 30 s).
    pub async fn stop(mut self) {
        for child in &self.children {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        for child in &mut self.children {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while matches!(child.try_wait(), Ok(None)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
