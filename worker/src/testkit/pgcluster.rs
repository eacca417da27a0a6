//! A throwaway PostgreSQL cluster from the local binaries, for the demo and the tests.
//!
//! `initdb` and `postgres` refuse to run as root, so when this process is root they run as the
//! `postgres` user. The cluster listens on 127.0.0.1 at a free port with durability switched off
//! (it is thrown away). A watchdog process stops the server and deletes its directory when this
//! process exits, even by SIGKILL, so no cluster outlives its owner.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and for `pg_config` on PATH); \
         install PostgreSQL or set DATABASE_URL"
    )]
    NoBinaries,
    #[error("running as root but there is no `postgres` user to run the server as")]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("I/O error while {0}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("the server did not accept connections within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
}

/// A running (or stopped) throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    server: Option<Child>,
    settings: Vec<String>,
}

/// Server settings of a cluster that is thrown away: durability off, enough connections for
/// several test workers.
pub const THROWAWAY_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "300"),
    ("shared_buffers", "128MB"),
];

impl Cluster {
    /// Creates and starts a cluster with [`THROWAWAY_SETTINGS`].
    ///
    /// # Errors
    /// [`Error`] naming the step that failed.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(THROWAWAY_SETTINGS)
    }

    /// Creates and starts a cluster with these server settings (`-c name=value` each); the
    /// benchmark uses it for a durable, production-like server.
    ///
    /// # Errors
    /// [`Error`] naming the step that failed.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<Self, Error> {
        let bin = find_binaries()?;
        let run_as = if fs::metadata("/proc/self").map_err(|e| Error::Io("checking the user", e))?.uid() == 0 {
            Some(postgres_user()?)
        } else {
            None
        };
        let dir =
            std::env::temp_dir().join(format!("webhook-pg-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(dir.join("data")).map_err(|e| Error::Io("creating the cluster directory", e))?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.as_path(), &dir.join("data")] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| Error::Io("handing the directory to postgres", e))?;
            }
        }
        let settings = settings.iter().map(|(name, value)| format!("{name}={value}")).collect();
        let mut cluster = Self { dir, bin, port: free_port()?, run_as, server: None, settings };
        cluster.watchdog()?;
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            cluster.command("initdb").args(["-D"]).arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]),
        )?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The postmaster's process id while the server runs (for the benchmark's CPU accounting).
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server again after [`Cluster::stop`], on the same port and data.
    ///
    /// # Errors
    /// [`Error`] if it does not come up.
    pub fn start_server(&mut self) -> Result<(), Error> {
        if self.server.is_some() {
            return Ok(());
        }
        let log = fs::File::create(self.dir.join("server.log")).map_err(|e| Error::Io("creating the server log", e))?;
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(self.dir.join("server.log"), Some(uid), Some(gid));
        }
        let err_log = log.try_clone().map_err(|e| Error::Io("opening the server log", e))?;
        let socket_dir = self.dir.display().to_string();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k", &socket_dir])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(self.settings.iter().flat_map(|setting| ["-c", setting.as_str()]))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| Error::Io("starting postgres", e))?;
        self.server = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Stops the server (fast shutdown: connections are cut, data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = self.command("pg_ctl").arg("-D").arg(self.data_dir()).args(["-m", "fast", "-w", "stop"]).output();
            let _ = child.wait();
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid).current_dir(&self.dir);
        }
        command
    }

    fn run(&self, step: &'static str, command: &mut Command) -> Result<(), Error> {
        let output = command.output().map_err(|e| Error::Io(step, e))?;
        if output.status.success() {
            return Ok(());
        }
        let detail = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        Err(Error::Step { step, detail })
    }

    /// Polls `pg_isready` (an external process's readiness: there is no signal to await).
    fn wait_ready(&self, limit: Duration) -> Result<(), Error> {
        let started = std::time::SystemTime::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-q"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return Ok(());
            }
            if started.elapsed().unwrap_or_default() > limit {
                let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(Error::NotReady(limit, log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a shell that outlives nothing: when this process is gone it stops the server and
    /// removes the directory.
    fn watchdog(&self) -> Result<(), Error> {
        let script = format!(
            "while [ -d /proc/{parent} ]; do sleep 1; done; \
             {bin}/pg_ctl -D {dir}/data -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            parent = std::process::id(),
            bin = self.bin.display(),
            dir = self.dir.display(),
        );
        let mut command = Command::new("sh");
        command.args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            // pg_ctl refuses root too; the directory belongs to postgres, so it can remove it.
            command.uid(uid).gid(gid);
        }
        command.spawn().map_err(|e| Error::Io("starting the cluster watchdog", e))?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn find_binaries() -> Result<PathBuf, Error> {
    let mut candidates: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    candidates.sort_by_key(|path| {
        path.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        candidates.insert(0, PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    }
    candidates
        .into_iter()
        .rev()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .ok_or(Error::NoBinaries)
}

fn postgres_user() -> Result<(u32, u32), Error> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| Error::Io("reading /etc/passwd", e))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres") && fields.len() > 3)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .ok_or(Error::NoPostgresUser)
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Io("finding a free port", e))?;
    Ok(listener.local_addr().map_err(|e| Error::Io("finding a free port", e))?.port())
}
