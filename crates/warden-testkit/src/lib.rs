//! warden's test kit: a throwaway PostgreSQL server started from the system binaries ([`TempPostgres`]), and,
//! with the `harness` feature, the in-process gateway harness ([`TestGateway`]); with `receivers` (which `harness`
//! enables), loopback receivers for the audit export sinks (`receivers`: syslog over UDP and TCP, a webhook); with
//! `llm` (which `harness` enables too), a stand-in for the OpenAI and Anthropic HTTP APIs that the providers' own
//! SDKs parse (`llm`: chat completions, responses, embeddings, models, messages; streamed or not).
//!
//! It is an ordinary library, not test-only code, because `warden demo` starts its demonstration database
//! with it too. The server is driven only through its own command-line tools (`initdb`, `pg_ctl`, `psql`);
//! only the harness links a client library (tokio-postgres), for tests.
#![forbid(unsafe_code)]

#[cfg(feature = "harness")]
mod harness;
#[cfg(feature = "llm")]
pub mod llm;
#[cfg(feature = "oidc")]
pub mod oidc;
mod pgtemp;
#[cfg(feature = "receivers")]
pub mod receivers;

#[cfg(feature = "harness")]
pub use harness::{AppDatabase, GatewayBuilder, TestGateway};

pub use pgtemp::{AuthMethod, PgTempError, TempPostgres, TempPostgresOptions};
