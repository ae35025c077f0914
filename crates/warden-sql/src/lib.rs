//! What a PostgreSQL statement does, judged with PostgreSQL's own grammar.
//!
//! This crate owns statement analysis for the PostgreSQL front end: it parses a query with libpg_query (the
//! server's parser, through the `pg_query` crate) and reports, for each statement, its action class (`read`,
//! `write`, `ddl`, `dcl`, `admin`, `procedural`, or `unclassified`), its kind (`select`, `delete`, …), whether an
//! UPDATE or DELETE has a WHERE clause, the (class, table) pairs a policy must authorize, and the session-state
//! effects warden must follow (PREPARE/EXECUTE names, `search_path`). An [`Analyzer`] caches results by the
//! statement's token stream with literals blanked out, so the hot path parses each distinct statement once.
//!
//! It is pure logic: no IO, no policy, no sockets. What it cannot analyse it reports as `unclassified` (or an
//! error), never as harmless.
#![forbid(unsafe_code)]

mod analyze;
mod cache;
mod copy;
mod derived;
mod functions;
mod key;
mod settings;
mod split;

use std::fmt;

pub use analyze::analyze;
pub use cache::Analyzer;
pub use copy::{copy_to, CopyTo};
pub use derived::{derived_references, DerivedReferences};
pub use key::cache_key;
pub use settings::parse_search_path;
pub use split::split_statements;

/// The class of setting run-time parameter `name` to the literal `value` (as SET, `set_config` or a startup
/// parameter would).
pub fn setting_class(name: &str, value: &str) -> Class {
    settings::setting_class(name, settings::SettingValue::Literal(value))
}

/// The action class of a statement, as policies name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Read,
    Write,
    Ddl,
    Dcl,
    Procedural,
    Admin,
    /// warden could not tell what the statement does; denied unless a policy permits `unclassified`.
    Unclassified,
}

impl Class {
    pub const ALL: [Class; 7] =
        [Class::Read, Class::Write, Class::Ddl, Class::Dcl, Class::Procedural, Class::Admin, Class::Unclassified];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Ddl => "ddl",
            Class::Dcl => "dcl",
            Class::Procedural => "procedural",
            Class::Admin => "admin",
            Class::Unclassified => "unclassified",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table as the statement names it; an unqualified name has no schema until [`TableName::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// The schema an unqualified name refers to under `search_path` (already parsed, `$user` kept as written).
    ///
    /// PostgreSQL searches `pg_catalog` first, so names beginning `pg_` resolve there; otherwise the first
    /// schema of the path other than `$user` and `pg_temp` is taken. warden does not read the upstream catalog,
    /// so a table that exists only in a later schema of a multi-schema path is attributed to the first one.
    pub fn resolve(&self, search_path: &[String]) -> (String, String) {
        if let Some(schema) = &self.schema {
            return (schema.clone(), self.name.clone());
        }
        if self.name.starts_with("pg_") {
            return ("pg_catalog".to_string(), self.name.clone());
        }
        let schema = search_path
            .iter()
            .find(|schema| schema.as_str() != "$user" && !schema.starts_with("pg_temp"))
            .cloned()
            .unwrap_or_else(|| "public".to_string());
        (schema, self.name.clone())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What one access is against: the connection as a whole, or a table in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Connection,
    Table(TableName),
}

/// One (class, target) pair a policy must authorize.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access {
    pub class: Class,
    pub target: Target,
}

/// Session state a statement changes that later judgements depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `PREPARE name AS …`: the statement judged now is what `EXECUTE name` runs later.
    Prepare { name: String },
    /// `EXECUTE name`: its class is the prepared statement's; the session must substitute it.
    Execute { name: String },
    /// `DEALLOCATE name`, or every prepared statement when `None`.
    Deallocate { name: Option<String> },
    /// `SET search_path …` for the session (schemas parsed, `$user` kept as written).
    SearchPath(Vec<String>),
    /// `RESET search_path` / `SET search_path TO DEFAULT` / `RESET ALL`: back to the session's initial path.
    ResetSearchPath,
    /// `DISCARD ALL`: initial search_path, no prepared statements.
    DiscardAll,
}

/// One statement of a query, analysed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The most privileged class among the statement's accesses.
    pub class: Class,
    /// Lower-case statement kind: `select`, `insert`, `update`, `delete`, `merge`, `copy`, `create`, `drop`…
    /// A statement whose data-modifying part is nested (a CTE, EXPLAIN ANALYZE) takes that part's kind.
    pub kind: String,
    /// For UPDATE and DELETE: whether it has a WHERE clause.
    pub has_where: Option<bool>,
    /// Every (class, target) pair to authorize, sorted, without duplicates. Never empty.
    pub accesses: Vec<Access>,
    pub effect: Option<Effect>,
    /// Why the statement is unclassified, or a note on how it was judged.
    pub note: Option<String>,
}

impl Statement {
    /// The tables the statement touches, sorted, each once.
    pub fn tables(&self) -> impl Iterator<Item = &TableName> {
        let mut seen: Vec<&TableName> = Vec::new();
        for access in &self.accesses {
            if let Target::Table(table) = &access.target {
                if !seen.contains(&table) {
                    seen.push(table);
                }
            }
        }
        seen.sort();
        seen.into_iter()
    }
}

/// The statements of one query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub statements: Vec<Statement>,
    /// The classification read a literal's value (a SET value, a sequence name), so this result must not be
    /// reused for the same statement with other literals.
    pub depends_on_literals: bool,
}

/// How the session's server would lex the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ParseOptions {
    /// `standard_conforming_strings = off`: backslashes escape in plain '…' strings.
    pub backslash_escapes: bool,
}

/// Why a query could not be analysed. Each is a refusal: warden does not forward what it cannot judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// PostgreSQL's grammar rejects the text (the server would too).
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The text holds a NUL byte, which no PostgreSQL query may contain.
    #[error("query contains a NUL byte")]
    Nul,
    /// The parse tree is deeper than warden follows.
    #[error("statement is nested too deeply to analyse")]
    TooDeep,
    /// The parser failed unexpectedly.
    #[error("statement could not be analysed: {0}")]
    Internal(String),
}

impl SqlError {
    /// The SQLSTATE a client gets for this refusal.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SqlError::Syntax(_) => "42601",
            SqlError::Nul => "22021",
            SqlError::TooDeep => "54001",
            SqlError::Internal(_) => "XX000",
        }
    }
}
