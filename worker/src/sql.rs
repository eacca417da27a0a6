//! The registry of every fixed SQL statement in the crate, by module. One integration test
//! (`every_statement_prepares_against_the_schema`) prepares each against the migrated schema,
//! so a renamed column or a type mismatch fails the suite, not a running worker; another
//! (`no_statement_is_written_inline`) fails when a statement is written outside a named
//! constant. The only statements built at run time are the attempt-history partition DDL
//! (`engine::maintenance`), from dates and catalogue names.

/// `(module, statements)` for every module that runs SQL.
pub const REGISTRY: &[(&str, &[(&str, &str)])] = &[
    ("engine::queue", crate::engine::queue::STATEMENTS),
    ("engine::circuit", crate::engine::circuit::STATEMENTS),
    ("engine::endpoints", crate::engine::endpoints::STATEMENTS),
    ("engine::maintenance", crate::engine::maintenance::STATEMENTS),
    ("engine::stats", crate::engine::stats::STATEMENTS),
    ("admin::applications", crate::admin::applications::STATEMENTS),
    ("admin::attempts", crate::admin::attempts::STATEMENTS),
    ("admin::endpoints", crate::admin::endpoints::STATEMENTS),
    ("admin::endpoints::tenant", crate::admin::endpoints::tenant::STATEMENTS),
    ("admin::event_types", crate::admin::event_types::STATEMENTS),
    ("admin::messages", crate::admin::messages::STATEMENTS),
    ("admin::message_batch", crate::admin::message_batch::STATEMENTS),
    ("admin::tokens", crate::admin::tokens::STATEMENTS),
    ("admin::endpoints::read", crate::admin::endpoints::read::STATEMENTS),
    ("admin::deliveries", crate::admin::deliveries::STATEMENTS),
    ("admin::enqueue", crate::admin::enqueue::STATEMENTS),
    ("admin::keys", crate::admin::keys::STATEMENTS),
    ("admin::schema", crate::admin::schema::STATEMENTS),
    ("admin::stats", crate::admin::stats::STATEMENTS),
    ("db", crate::db::STATEMENTS),
];

/// The demo's statements, when it is built.
#[cfg(feature = "testkit")]
const TESTKIT: &[(&str, &[(&str, &str)])] = &[("testkit::demo", crate::testkit::demo::STATEMENTS)];
#[cfg(not(feature = "testkit"))]
const TESTKIT: &[(&str, &[(&str, &str)])] = &[];

/// Every registered statement with its qualified name (`module::statement`).
pub fn statements() -> impl Iterator<Item = (String, &'static str)> {
    REGISTRY
        .iter()
        .chain(TESTKIT)
        .flat_map(|(module, list)| list.iter().map(move |(name, sql)| (format!("{module}::{name}"), *sql)))
}
