//! The in-process gateway harness: a [`TestGateway`] runs the real gateway on port 0, with a config written
//! to a temporary directory, in front of a [`TempPostgres`]; helpers connect real clients to it.
//!
//! Test-only helpers: they panic with a clear message instead of returning errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;
use warden_config::Config;
use warden_gateway::Gateway;

use crate::TempPostgres;

/// A database and a login role for it on a [`TempPostgres`]: what warden's connection points at.
#[derive(Debug, Clone)]
pub struct AppDatabase {
    pub database: String,
    pub role: String,
    pub password: String,
}

impl AppDatabase {
    /// Creates role `<name>_owner` (with a random password) and database `<name>` owned by it.
    pub fn create(postgres: &TempPostgres, name: &str) -> AppDatabase {
        let role = format!("{name}_owner");
        let password = format!("upstream-{}", random_hex(12));
        postgres.create_role(&role, &password, false).unwrap_or_else(|error| panic!("create role {role}: {error}"));
        postgres.create_database(name, &role).unwrap_or_else(|error| panic!("create database {name}: {error}"));
        AppDatabase { database: name.to_string(), role, password }
    }
}

fn random_hex(bytes: usize) -> String {
    warden_identity::generate_api_key()[3..3 + bytes * 2].to_string()
}

/// How to configure a [`TestGateway`]; every field has a working default.
pub struct GatewayBuilder<'a> {
    postgres: &'a TempPostgres,
    app: &'a AppDatabase,
    upstream_address: Option<String>,
    upstream_password: Option<String>,
    connection_tls: String,
    listen_extra: String,
    config_extra: String,
    limits: String,
    client_tls: Option<bool>,
    state_url: Option<String>,
    policies: String,
    masking: String,
}

/// The policies a test gateway runs with unless a test gives its own: the `agent` identity (group `agents`)
/// may do anything on its connection; the `reader` identity (group `readers`) may connect and read.
pub const DEFAULT_POLICIES: &str = r#"
@id("agents-do-anything")
permit (principal in Warden::Group::"agents", action, resource);

@id("readers-read")
permit (principal in Warden::Group::"readers",
        action in [Warden::Action::"connect", Warden::Action::"read"],
        resource);
"#;

impl<'a> GatewayBuilder<'a> {
    /// Keep state at this URL (e.g. a PostgreSQL one, given to warden through a secret file).
    pub fn state_url(mut self, url: &str) -> Self {
        self.state_url = Some(url.to_string());
        self
    }

    /// Point the connection somewhere else (e.g. a closed port).
    pub fn upstream_address(mut self, address: &str) -> Self {
        self.upstream_address = Some(address.to_string());
        self
    }

    /// Give warden a different upstream password than the role's real one.
    pub fn upstream_password(mut self, password: &str) -> Self {
        self.upstream_password = Some(password.to_string());
        self
    }

    /// The connection's `tls = { … }` inline table, e.g. `{ mode = "verify-full", ca = "ca.pem" }`.
    pub fn connection_tls(mut self, inline_table: &str) -> Self {
        self.connection_tls = inline_table.to_string();
        self
    }

    /// Extra lines for `[listen]`.
    pub fn listen_extra(mut self, lines: &str) -> Self {
        self.listen_extra = lines.to_string();
        self
    }

    /// Lines for `[limits]`.
    pub fn limits(mut self, lines: &str) -> Self {
        self.limits = lines.to_string();
        self
    }

    /// Whole sections appended to the config (`[[oidc]]`, `[tokens]`…).
    pub fn config_extra(mut self, text: &str) -> Self {
        self.config_extra = text.to_string();
        self
    }

    /// Subtables of the connection's table, written right after it: `[connection.masking]` and its
    /// `[[connection.masking.column]]` rules.
    pub fn masking(mut self, toml_text: &str) -> Self {
        self.masking = toml_text.to_string();
        self
    }

    /// Cedar policies to run with instead of [`DEFAULT_POLICIES`].
    pub fn policies(mut self, text: &str) -> Self {
        self.policies = text.to_string();
        self
    }

    /// Serve client-facing TLS with a fresh self-signed CA; `required` refuses plaintext clients.
    pub fn client_tls(mut self, required: bool) -> Self {
        self.client_tls = Some(required);
        self
    }

    /// Writes the config and starts the gateway in this process.
    pub async fn start(self) -> TestGateway {
        let directory = tempfile::Builder::new().prefix("warden-test-").tempdir().expect("create gateway temp dir");
        let api_key = warden_identity::generate_api_key();
        let reader_key = warden_identity::generate_api_key();
        let admin_key = warden_identity::generate_api_key();
        std::fs::create_dir(directory.path().join("policies")).expect("create policies dir");
        std::fs::write(directory.path().join("policies/test.cedar"), &self.policies).expect("write policies");
        let upstream_password = self.upstream_password.unwrap_or_else(|| self.app.password.clone());
        std::fs::write(directory.path().join("upstream.password"), &upstream_password).expect("write password file");
        if let Some(ca) = self.postgres.ca_cert_pem() {
            std::fs::write(directory.path().join("upstream-ca.pem"), ca).expect("write upstream CA");
        }
        let mut tls_section = String::new();
        let mut client_ca = None;
        if let Some(required) = self.client_tls {
            let ca_path = write_server_certificate(directory.path());
            client_ca = Some(ca_path);
            tls_section =
                format!("\n[listen.tls]\ncert = \"server.crt\"\nkey = \"server.key\"\nrequired = {required}\n");
        }
        let (state_url, tokens_section) = match &self.state_url {
            Some(url) => {
                std::fs::write(directory.path().join("state.url"), url).expect("write state URL");
                // Gateways sharing a PostgreSQL store share a signing key, named in the config.
                let (_, pem) = warden_identity::SigningKey::generate().expect("generate a signing key");
                std::fs::write(directory.path().join("token-signing-key.pem"), pem).expect("write signing key");
                (
                    "{ file = \"state.url\" }".to_string(),
                    "\n[tokens]\nsigning_key = { file = \"token-signing-key.pem\" }\n".to_string(),
                )
            }
            None => ("\"sqlite://state/warden.db\"".to_string(), String::new()),
        };
        let config_text = format!(
            r#"[state]
url = {state_url}

[listen]
postgres = "127.0.0.1:0"
admin = "127.0.0.1:0"
{listen_extra}
{tls_section}
[limits]
{limits}

[[connection]]
name = "{database}"
kind = "postgres"
address = "{address}"
database = "{database}"
user = "{role}"
password = {{ file = "upstream.password" }}
tls = {connection_tls}
{masking}
[[api_key]]
name = "agent"
key = {{ sha256 = "{digest}" }}
groups = ["agents"]

[[api_key]]
name = "reader"
key = {{ sha256 = "{reader_digest}" }}
groups = ["readers"]

[[api_key]]
name = "operator"
key = {{ sha256 = "{admin_digest}" }}
groups = ["admin"]

[policy]
files = ["policies/*.cedar"]
{tokens_section}
{config_extra}"#,
            config_extra = self.config_extra,
            listen_extra = self.listen_extra,
            limits = self.limits,
            database = self.app.database,
            address = self.upstream_address.unwrap_or_else(|| self.postgres.address()),
            role = self.app.role,
            connection_tls = self.connection_tls,
            masking = self.masking,
            digest = warden_identity::api_key_digest(&api_key),
            reader_digest = warden_identity::api_key_digest(&reader_key),
            admin_digest = warden_identity::api_key_digest(&admin_key),
        );
        let config_path = directory.path().join("warden.toml");
        std::fs::write(&config_path, &config_text).expect("write config");
        let config = Config::load(&config_path, &|_: &str| None)
            .unwrap_or_else(|error| panic!("test config invalid:\n{error}\n---\n{config_text}"));
        let gateway = Gateway::start(config).await.expect("gateway starts");
        let address = gateway.postgres_address().expect("postgres listener");
        TestGateway {
            store: gateway.store().clone(),
            gateway: Some(gateway),
            address,
            api_key,
            reader_key,
            admin_key,
            upstream_password,
            database: self.app.database.clone(),
            config_path,
            client_ca,
            directory,
        }
    }
}

/// Writes a CA and a server certificate for "localhost"/127.0.0.1 into `directory`; returns the CA's path.
fn write_server_certificate(directory: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "warden test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("server params");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server = server_params.signed_by(&server_key, &issuer).expect("server certificate");
    std::fs::write(directory.join("server.crt"), server.pem()).expect("write server.crt");
    std::fs::write(directory.join("server.key"), server_key.serialize_pem()).expect("write server.key");
    let ca_path = directory.join("client-ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write CA");
    ca_path
}

/// A gateway running in this process, in front of a [`TempPostgres`].
pub struct TestGateway {
    gateway: Option<Gateway>,
    store: warden_state::StateStore,
    address: SocketAddr,
    /// The key clients authenticate with (the `agent` identity).
    pub api_key: String,
    /// The key of the `reader` identity (group `readers`).
    pub reader_key: String,
    /// The `operator` identity (group `admin`): may revoke through the admin API; no policy grants it data access.
    pub admin_key: String,
    /// The upstream password warden holds; must never reach a client.
    pub upstream_password: String,
    pub database: String,
    pub config_path: PathBuf,
    /// The CA that signed the client-facing certificate, when client TLS is on.
    pub client_ca: Option<PathBuf>,
    directory: TempDir,
}

impl TestGateway {
    pub fn builder<'a>(postgres: &'a TempPostgres, app: &'a AppDatabase) -> GatewayBuilder<'a> {
        GatewayBuilder {
            postgres,
            app,
            upstream_address: None,
            upstream_password: None,
            connection_tls: "{ mode = \"disable\" }".to_string(),
            listen_extra: String::new(),
            config_extra: String::new(),
            limits: String::new(),
            client_tls: None,
            state_url: None,
            policies: DEFAULT_POLICIES.to_string(),
            masking: String::new(),
        }
    }

    /// A gateway with defaults in front of `app`.
    pub async fn start(postgres: &TempPostgres, app: &AppDatabase) -> TestGateway {
        TestGateway::builder(postgres, app).start().await
    }

    /// The admin API's base URL, e.g. `http://127.0.0.1:40123`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.gateway().admin_address().expect("the test gateway has an admin listener"))
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway running")
    }

    /// A libpq-style connection string for `agent` with the API key as password.
    pub fn connection_string(&self) -> String {
        self.connection_string_with(&self.api_key)
    }

    /// A libpq-style connection string presenting `key`.
    pub fn connection_string_with(&self, key: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=agent dbname={} password={key} sslmode=disable",
            self.port(),
            self.database
        )
    }

    /// Connects tokio-postgres (no TLS) and drives the connection on a task.
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.try_connect(&self.connection_string())
            .await
            .unwrap_or_else(|error| panic!("connect through warden: {error:?}"))
    }

    pub async fn try_connect(&self, connection_string: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(connection_string, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Runs `psql` against the gateway with the API key in PGPASSWORD; extra `args` follow the connection.
    pub fn psql(&self, args: &[&str]) -> Output {
        self.psql_with_stdin(args, None)
    }

    pub fn psql_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut command = Command::new("psql");
        command
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.port().to_string())
            .args(["-U", "agent", "-d", &self.database])
            .args(args)
            .env("PGPASSWORD", &self.api_key)
            .env("PGSSLMODE", "disable")
            .env_remove("PGSERVICE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("run psql");
        let mut child_stdin = child.stdin.take().expect("stdin piped");
        if let Some(input) = stdin {
            child_stdin.write_all(input).expect("write psql stdin");
        }
        drop(child_stdin);
        child.wait_with_output().expect("psql output")
    }

    /// The state store, usable after [`TestGateway::stop`].
    pub fn store(&self) -> warden_state::StateStore {
        self.store.clone()
    }

    /// Waits until everything the gateway recorded so far is in the state store.
    pub async fn flush(&self) {
        self.gateway().flush().await.expect("state flush");
    }

    /// Shuts the gateway down (ending live sessions); the directory with its state stays until drop.
    pub async fn stop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }
}
