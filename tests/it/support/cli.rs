//! The real binary, pointed at a test database.

use std::process::{Child, Command};

use super::TestDb;
use super::worker::key_ring_text;

pub const BIN: &str = env!("CARGO_BIN_EXE_webhook-worker");

/// The binary with a clean environment pointing at `db`. The URL carries a password the server
/// ignores (trust auth), so that tests can check it never appears in output.
pub fn binary(db: &TestDb) -> Command {
    binary_at(db, std::path::Path::new(BIN))
}

/// [`binary`] for another build of the worker (e.g. the previous release's).
pub fn binary_at(db: &TestDb, program: &std::path::Path) -> Command {
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some("hunter2-db-password")).unwrap();
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url.as_str())
        .env("WEBHOOK_ENCRYPTION_KEYS", key_ring_text())
        .env("WEBHOOK_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8")
        .env("WEBHOOK_METRICS_ADDR", "127.0.0.1:0")
        .env("WEBHOOK_POLL_INTERVAL", "100ms")
        .env("WEBHOOK_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug");
    command
}

pub fn assert_no_secret(output: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!output.contains(secret), "output leaks a secret:\n{output}");
    }
}

/// Runs to completion: (exit code, stdout, stderr).
pub fn run(command: &mut Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the binary and parses its `--json` output; the command must succeed.
pub fn json(args: &[&str], db: &TestDb) -> serde_json::Value {
    let (code, out, err) = run(binary(db).args(args));
    assert_eq!(code, 0, "{args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

/// Reads `stream` to its end on a thread of its own, so that the child never blocks on a full
/// pipe; the thread returns the text.
pub fn collect(mut stream: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// SIGTERM, then wait for the process to exit.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}
