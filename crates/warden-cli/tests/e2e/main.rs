//! End-to-end tests: the real gateway in process, a throwaway PostgreSQL, and real clients
//! (psql, pgbench, tokio-postgres, and a raw-socket client for what libraries will not send).

mod approvals;
mod audit;
mod auth;
mod cli;
mod crash;
mod durability;
mod http;
mod masking;
mod policy;
mod protocol;
mod raw;
mod replay;
mod retention;
mod sinks;
mod tls;
mod tokens;
mod tools;
mod usage;

use warden_testkit::{AppDatabase, TempPostgres, TestGateway};

/// Runs a command to its end from an async test without stalling the runtime the in-process gateway shares: on a
/// multi-threaded runtime the worker hands its tasks to another thread first (`block_in_place`), so a task it had
/// just woken (the admin API's, the state writer's) is not left waiting for the very command that waits on it.
pub trait OutputInPlace {
    fn output_in_place(&mut self) -> std::io::Result<std::process::Output>;
}

impl OutputInPlace for std::process::Command {
    fn output_in_place(&mut self) -> std::io::Result<std::process::Output> {
        let flavor = tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor());
        match flavor {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| self.output()),
            _ => self.output(),
        }
    }
}

/// A throwaway PostgreSQL with an `app` database, and a gateway in front of it.
pub struct Fixture {
    pub gateway: TestGateway,
    pub app: AppDatabase,
    pub postgres: TempPostgres,
}

pub async fn start_postgres(options: warden_testkit::TempPostgresOptions) -> (TempPostgres, AppDatabase) {
    tokio::task::spawn_blocking(move || {
        let postgres = TempPostgres::start_with(options).expect("throwaway PostgreSQL starts");
        let app = AppDatabase::create(&postgres, "app");
        (postgres, app)
    })
    .await
    .expect("join")
}

pub async fn fixture() -> Fixture {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::start(&postgres, &app).await;
    Fixture { gateway, app, postgres }
}

impl Fixture {
    /// A direct (not through warden) tokio-postgres client as the superuser, for checking upstream state.
    pub async fn direct_superuser(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.postgres.url(&self.app.database), tokio_postgres::NoTls)
                .await
                .expect("direct superuser connection");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

/// Polls `condition` every 20 ms until it holds, failing after `seconds`. For conditions that another
/// process makes true on its own schedule (e.g. a backend exiting), never as a stand-in for ordering.
pub async fn wait_until<F, Fut>(seconds: u64, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !condition().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The SQLSTATE of a tokio-postgres error, or a panic naming what the error was.
pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    error.code().map(|code| code.code().to_string()).unwrap_or_else(|| panic!("error without SQLSTATE: {error:?}"))
}

/// The server's message of a tokio-postgres error.
pub fn server_message(error: &tokio_postgres::Error) -> String {
    error.as_db_error().map(|db| db.message().to_string()).unwrap_or_else(|| error.to_string())
}
