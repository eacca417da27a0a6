//! The shape of the code, checked: rooms import only the rooms below them, every statement is a
//! named constant in the registry and prepares against the schema, stored states match the
//! schema's constraints, and files stay small.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sqlx::Executor as _;

use webhook_worker::policy::states::{CircuitState, DeliveryState, EndpointState};

use crate::support::TestDb;

/// Each room and the rooms it may use (besides itself). See `docs/architecture.md`.
const ROOMS: &[(&str, &[&str])] = &[
    ("cli", &["api", "admin", "engine", "config", "observe", "db", "tls", "policy", "testkit"]),
    ("api", &["admin", "config", "observe", "db", "tls", "policy"]),
    ("testkit", &["admin", "engine", "config", "observe", "db", "tls", "policy"]),
    ("sql", &["admin", "engine", "db", "testkit"]),
    ("admin", &["db", "tls", "policy"]),
    ("engine", &["config", "observe", "db", "tls", "policy"]),
    ("config", &["observe", "policy"]),
    ("observe", &["policy"]),
    ("db", &[]),
    ("tls", &[]),
    ("policy", &[]),
];

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its path relative to the source root.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(source_root()).unwrap().to_string_lossy().into_owned();
            found.push((relative, std::fs::read_to_string(&path).unwrap()));
        }
    }
    found.sort();
    found
}

/// The code of a file without comments (doc comments name other rooms freely).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter(|(_, line)| !line.trim_start().starts_with("//")).map(|(n, line)| (n + 1, line))
}

#[test]
fn rooms_import_only_the_rooms_below_them() {
    let mut violations = Vec::new();
    for (file, text) in sources(&source_root()) {
        let room = file.split(['/', '.']).next().unwrap();
        let Some((_, allowed)) = ROOMS.iter().find(|(name, _)| *name == room) else {
            assert!(["lib.rs", "main.rs"].contains(&file.as_str()), "{file} is in no room; add it to ROOMS");
            continue;
        };
        for (n, line) in code_lines(&text) {
            for used in line.split("crate::").skip(1) {
                let target: String = used.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if target != room && !allowed.contains(&target.as_str()) && !target.is_empty() {
                    violations.push(format!("{file}:{n}: {room} uses {target}"));
                }
            }
        }
    }
    assert!(violations.is_empty(), "imports against the room order:\n{}", violations.join("\n"));
}

#[test]
fn no_statement_is_written_inline() {
    let calls = ["sqlx::query(", "sqlx::query_as(", "sqlx::query_scalar("];
    let mut found = Vec::new();
    for (file, text) in sources(&source_root()) {
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in code_lines(&text) {
            for call in calls {
                let Some(at) = line.find(call) else { continue };
                // The literal on the call's line, or on the next one when the formatter wrapped it.
                let after = &line[at + call.len()..];
                let argument = if after.trim().is_empty() { lines.get(n).copied().unwrap_or_default() } else { after };
                let argument = argument.trim_start();
                if argument.starts_with('"') || argument.starts_with("r#") {
                    found.push(format!("{file}:{n}: {}", line.trim()));
                }
            }
            // Built at run time: allowed only for the partition DDL, from dates and catalogue names.
            if line.contains("AssertSqlSafe") && file != "engine/maintenance.rs" {
                found.push(format!("{file}:{n}: a statement built at run time"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "statements written inline instead of a named constant in the registry:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_sql_constant_is_in_the_registry() {
    let registered: BTreeSet<String> = webhook_worker::sql::statements().map(|(name, _)| name).collect();
    let mut missing = Vec::new();
    for (file, text) in sources(&source_root()) {
        let module = file.trim_end_matches(".rs").trim_end_matches("/mod").replace('/', "::");
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let Some(rest) = line.trim_start().split("const ").nth(1) else { continue };
            let Some((name, kind)) = rest.split_once(':') else { continue };
            let next = lines.get(n + 1).copied().unwrap_or_default();
            let value = format!("{}{}", kind, next).to_ascii_uppercase();
            let is_sql = kind.trim_start().starts_with("&str")
                && ["\"SELECT", "\"INSERT", "\"UPDATE", "\"DELETE", "\"WITH", "R#\""].iter().any(|k| value.contains(k));
            if !is_sql || name.trim().chars().any(|c| c.is_ascii_lowercase()) {
                continue;
            }
            let statement = name.trim().to_ascii_lowercase();
            let known = registered.iter().any(|qualified| {
                let (owner, entry) = qualified.rsplit_once("::").unwrap();
                entry == statement && module.starts_with(owner)
            });
            if !known {
                missing.push(format!("{file}:{}: {}", n + 1, name.trim()));
            }
        }
    }
    assert!(missing.is_empty(), "SQL constants missing from `webhook_worker::sql::REGISTRY`:\n{}", missing.join("\n"));
}

#[tokio::test]
async fn every_statement_prepares_against_the_schema() {
    let db = TestDb::new().await;
    let mut count = 0;
    for (name, sql) in webhook_worker::sql::statements() {
        if let Err(err) = db.pool.prepare(sqlx::SqlSafeStr::into_sql_str(sql)).await {
            panic!("statement {name} does not prepare: {err}");
        }
        count += 1;
    }
    assert!(count > 60, "only {count} statements registered");
}

#[tokio::test]
async fn stored_states_are_exactly_the_values_the_schema_allows() {
    let db = TestDb::new().await;
    let allowed = |constraint: &'static str| {
        let pool = db.pool.clone();
        async move {
            let definition: String = sqlx::query_scalar(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1 AND connamespace = 'webhook'::regnamespace",
            )
            .bind(constraint)
            .fetch_one(&pool)
            .await
            .unwrap();
            definition.split('\'').skip(1).step_by(2).map(str::to_owned).collect::<BTreeSet<_>>()
        }
    };
    let names = |all: &[&'static str]| all.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    let delivery: Vec<_> = DeliveryState::ALL.iter().map(|s| s.as_str()).collect();
    let endpoint: Vec<_> = EndpointState::ALL.iter().map(|s| s.as_str()).collect();
    let circuit: Vec<_> = CircuitState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(allowed("deliveries_state_valid").await, names(&delivery));
    assert_eq!(allowed("endpoints_state_valid").await, names(&endpoint));
    assert_eq!(allowed("endpoints_circuit_state_valid").await, names(&circuit));
}

#[test]
fn source_files_stay_under_400_lines() {
    let long: Vec<String> = sources(&source_root())
        .into_iter()
        .filter(|(_, text)| text.lines().count() > 400)
        .map(|(file, text)| format!("{file}: {} lines", text.lines().count()))
        .collect();
    assert!(long.is_empty(), "files over 400 lines:\n{}", long.join("\n"));
}
