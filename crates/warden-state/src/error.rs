//! The state store's errors: what failed, who is at fault, and whether trying again can help.
//!
//! No message here ever contains a URL's password or query string: URLs are shown through
//! [`redact_url`], which keeps the scheme, user, host, port and path only.

use std::path::PathBuf;

/// A failure of the state store: opening it, migrating it, reading from it, or the background writer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store URL {url} is neither sqlite://… nor postgres://…")]
    UnsupportedUrl { url: String },
    #[error("state store URL {url} is invalid: {source}")]
    InvalidUrl { url: String, source: sqlx::Error },
    #[error("cannot create the directory {} for the state store: {source}", path.display())]
    CreateDirectory { path: PathBuf, source: std::io::Error },
    #[error("cannot connect to the state store at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot migrate the {backend} state store schema: {source}")]
    Migrate { backend: &'static str, source: sqlx::migrate::MigrateError },
    #[error("state store query failed while {operation}: {source}")]
    Query { operation: &'static str, source: sqlx::Error },
    #[error("state store holds an unreadable value: {what}")]
    CorruptRow { what: String },
    #[error("the state writer has stopped; recorded events can no longer be stored")]
    WriterStopped,
    #[error("the state writer failed to store {failed} recorded events since the previous flush")]
    WritesFailed { failed: u64 },
    #[error("the state writer's queue is full: the state store cannot keep up")]
    QueueFull,
    #[error("{what} kept changing under this update (other gateways writing it); try again")]
    Contended { what: String },
    #[error("pruning needs a recorder that signs audit checkpoints: its audit.pruned event must be sealed")]
    PruneUnsigned,
}

/// Who caused a [`StateError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The configuration names a store that cannot be used as given.
    Configuration,
    /// The database (SQLite file, PostgreSQL server) or the network to it.
    Database,
    /// warden itself: a bug, or a writer that stopped.
    Warden,
}

impl StateError {
    /// Who caused this error.
    pub fn fault(&self) -> Fault {
        match self {
            StateError::UnsupportedUrl { .. } | StateError::InvalidUrl { .. } => Fault::Configuration,
            StateError::CreateDirectory { .. }
            | StateError::Connect { .. }
            | StateError::Migrate { .. }
            | StateError::Query { .. }
            | StateError::CorruptRow { .. }
            | StateError::WritesFailed { .. }
            | StateError::QueueFull
            | StateError::Contended { .. } => Fault::Database,
            StateError::WriterStopped | StateError::PruneUnsigned => Fault::Warden,
        }
    }

    /// Whether doing the same thing again may succeed (the database was unreachable or busy).
    pub fn retry_is_safe(&self) -> bool {
        match self {
            StateError::Connect { .. } => true,
            StateError::Query { source, .. } => is_transient(source),
            _ => false,
        }
    }
}

/// Why the [`crate::Recorder`] refused an event. The event is dropped and counted either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bounded queue to the writer is full: the store is slower than the data path right now.
    #[error("state recorder queue is full; the event was dropped")]
    QueueFull,
    /// The writer task is gone (its runtime shut down, or it panicked).
    #[error("the state writer has stopped; the event was dropped")]
    WriterStopped,
}

/// Whether an error says the database could not be reached or was busy, rather than refusing the data.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

/// A URL fit for messages and logs: scheme, user, host, port and path; never a password or the query.
///
/// Errs on the side of showing too little: a password may hold unescaped `/`, `?` or `#`, so the user
/// information ends at the last `@`, and only its part before any `:`, `/`, `?` or `#` is kept.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL with an authority (e.g. "sqlite:relative.db"): keep only the part before any query.
        return url.split(['?', '#']).next().unwrap_or_default().to_string();
    };
    let (user, rest) = match rest.rsplit_once('@') {
        Some((user_info, host_and_path)) => {
            let user = user_info.split([':', '/', '?', '#']).next().unwrap_or_default();
            (Some(user), host_and_path)
        }
        None => (None, rest),
    };
    let host_and_path = rest.split(['?', '#']).next().unwrap_or_default();
    match user {
        Some(user) => format!("{scheme}://{user}@{host_and_path}"),
        None => format!("{scheme}://{host_and_path}"),
    }
}
