//! The schema migrations, one set per dialect, embedded in the binary.
//!
//! The SQL lives in `migrations/sqlite` and `migrations/postgres`; each file is listed here once, with
//! its version. sqlx records applied versions (and checksums) in `_sqlx_migrations`, so running the
//! set again is a no-op. Never edit an applied migration: add the next version instead.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// (version, description, SQL).
type EmbeddedMigration = (i64, &'static str, &'static str);

const SQLITE: &[EmbeddedMigration] = &[
    (1, "sessions and statements", include_str!("../migrations/sqlite/0001_sessions_and_statements.sql")),
    (2, "statement decisions", include_str!("../migrations/sqlite/0002_statement_decisions.sql")),
    (3, "session credentials", include_str!("../migrations/sqlite/0003_session_credentials.sql")),
    (4, "revocations", include_str!("../migrations/sqlite/0004_revocations.sql")),
    (5, "session masked counts", include_str!("../migrations/sqlite/0005_session_masked.sql")),
    (6, "audit log", include_str!("../migrations/sqlite/0006_audit_log.sql")),
    (7, "session tables", include_str!("../migrations/sqlite/0007_session_tables.sql")),
    (8, "approvals", include_str!("../migrations/sqlite/0008_approvals.sql")),
    (9, "llm usage", include_str!("../migrations/sqlite/0009_llm_usage.sql")),
    (10, "audit event indexes", include_str!("../migrations/sqlite/0010_audit_event_indexes.sql")),
    (11, "rate counts", include_str!("../migrations/sqlite/0011_rate_counts.sql")),
    (12, "batch results", include_str!("../migrations/sqlite/0012_batch_results.sql")),
];

const POSTGRES: &[EmbeddedMigration] = &[
    (1, "sessions and statements", include_str!("../migrations/postgres/0001_sessions_and_statements.sql")),
    (2, "statement decisions", include_str!("../migrations/postgres/0002_statement_decisions.sql")),
    (3, "session credentials", include_str!("../migrations/postgres/0003_session_credentials.sql")),
    (4, "revocations", include_str!("../migrations/postgres/0004_revocations.sql")),
    (5, "session masked counts", include_str!("../migrations/postgres/0005_session_masked.sql")),
    (6, "audit log", include_str!("../migrations/postgres/0006_audit_log.sql")),
    (7, "session tables", include_str!("../migrations/postgres/0007_session_tables.sql")),
    (8, "approvals", include_str!("../migrations/postgres/0008_approvals.sql")),
    (9, "llm usage", include_str!("../migrations/postgres/0009_llm_usage.sql")),
    (10, "audit event indexes", include_str!("../migrations/postgres/0010_audit_event_indexes.sql")),
    (11, "rate counts", include_str!("../migrations/postgres/0011_rate_counts.sql")),
    (12, "batch results", include_str!("../migrations/postgres/0012_batch_results.sql")),
];

pub(crate) async fn sqlite() -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(SQLITE)).await
}

pub(crate) async fn postgres() -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(POSTGRES)).await
}

/// A migration set compiled into the binary, so a deployed gateway needs no migrations directory.
#[derive(Debug)]
struct Embedded(&'static [EmbeddedMigration]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}
