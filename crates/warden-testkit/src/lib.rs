//! warden's test kit: a throwaway PostgreSQL server started from the system binaries ([`TempPostgres`]), and,
//! with the `harness` feature, the in-process gateway harness ([`TestGateway`]); with `receivers` (which `harness`
//! enables), loopback receivers for the audit export sinks (`receivers`: syslog over UDP and TCP, a webhook).
//!
//! It is an ordinary library, not test-only code, because `warden demo` starts its demonstration database
//! with it too. The server is driven only through its own command-line tools (`initdb`, `pg_ctl`, `psql`);
//! only the harness links a client library (tokio-postgres), for tests.
#![forbid(unsafe_code)]

#[cfg(feature = "harness")]
mod harness;
#[cfg(feature = "oidc")]
pub mod oidc;
mod pgtemp;
#[cfg(feature = "receivers")]
pub mod receivers;

#[cfg(feature = "harness")]
pub use harness::{AppDatabase, GatewayBuilder, TestGateway};

pub use pgtemp::{AuthMethod, PgTempError, TempPostgres, TempPostgresOptions};
