//! `warden demo`: a throwaway PostgreSQL with a small shop database, a local stand-in for the OpenAI and Anthropic
//! APIs (it answers like them and plants PII in every answer), and a gateway in front of both.
//!
//! Everything lives in one temporary directory (the server's data, the config, the credential files and
//! the gateway's SQLite state) and is removed on Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use anyhow::{Context, Result};
use warden_config::{Config, ProcessEnvironment};
use warden_testkit::llm::{LlmStandIn, LlmStandInOptions};
use warden_testkit::TempPostgres;

const SEED: &str = r#"
CREATE TABLE customers (
    id          serial PRIMARY KEY,
    full_name   text NOT NULL,
    email       text NOT NULL UNIQUE,
    phone       text,
    ssn         text,
    card_number text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id          serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    total_cents integer NOT NULL CHECK (total_cents >= 0),
    status      text NOT NULL DEFAULT 'placed',
    placed_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (full_name, email, phone, ssn, card_number) VALUES
    ('Ada Lovelace',    'ada@example.com',     '+44 20 7946 0958', '372-11-4420', '4111 1111 1111 1111'),
    ('Alan Turing',     'alan@example.org',    '+44 161 496 0123', '219-55-3467', '5500-0000-0000-0004'),
    ('Grace Hopper',    'grace@example.net',   '+1 202 555 0143',  '123-45-6789', '3400 0000 0000 009'),
    ('Edsger Dijkstra', 'edsger@example.nl',   '+31 20 555 0199',  '512-44-0912', '6011 0000 0000 0004'),
    ('Barbara Liskov',  'barbara@example.com', '+1 617 555 0175',  '432-11-0987', '4012 8888 8888 1881');
INSERT INTO orders (customer_id, total_cents, status)
SELECT 1 + (n % 5), 500 + (n * 137) % 20000, (ARRAY['placed','paid','shipped','refunded'])[1 + n % 4]
FROM generate_series(1, 40) AS n;
"#;

pub async fn run(port: u16) -> Result<()> {
    eprintln!("Starting a throwaway PostgreSQL from the system binaries…");
    let postgres = tokio::task::spawn_blocking(TempPostgres::start)
        .await?
        .context("cannot start the throwaway PostgreSQL (are the PostgreSQL server binaries installed?)")?;
    let shop_password = random_password();
    postgres.create_role("warden_shop", &shop_password, false)?;
    postgres.create_database("shop", "warden_shop")?;
    postgres.psql("shop", &format!("SET ROLE warden_shop;\n{SEED}"))?;

    let directory = tempfile::Builder::new().prefix("warden-demo-").tempdir()?;
    let password_file = directory.path().join("shop.password");
    std::fs::write(&password_file, &shop_password)?;
    restrict(&password_file)?;
    let api_key = warden_identity::generate_api_key();
    let dba_key = warden_identity::generate_api_key();
    let listen = free_port(port)?;
    let admin = free_port(0)?;
    let http = free_port(18080)?;
    // The LLM provider's key stays in warden, like the database's password.
    let llm_options =
        LlmStandInOptions { chunk_delay: std::time::Duration::from_millis(40), ..LlmStandInOptions::default() };
    let llm_key_file = directory.path().join("openai.key");
    std::fs::write(&llm_key_file, &llm_options.openai_key)?;
    restrict(&llm_key_file)?;
    let llm = LlmStandIn::start(llm_options).await;
    let config_path = directory.path().join("warden.toml");
    let config_text = format!(
        r#"# Written by `warden demo`.
[state]
url = "sqlite://warden-data/warden.db"

[listen]
postgres = "{listen}"
http = "{http}"
admin = "{admin}"

[[connection]]
name = "shop"
kind = "postgres"
address = "{upstream}"
database = "shop"
user = "warden_shop"
password = {{ file = "shop.password" }}
tls = {{ mode = "disable" }}

# PII is masked in every result the agent gets: detected by content (emails, phones, SSNs, cards…), and
# the full_name column whatever it holds.
[connection.masking]
detect = ["all"]
[[connection.masking.column]]
match = "public.customers.full_name"
strategy = "hash"

# An LLM API (here a local stand-in that answers like OpenAI); the agent's SDK points at
# http://{http}/openai/v1 with its warden key, and warden injects the provider's key.
[[connection]]
name = "openai"
kind = "http"
url = "{llm_url}"
api = "openai"
auth = {{ bearer = {{ file = "openai.key" }} }}
models = ["gpt-4o-mini"]
max_tokens = 1024

[connection.guard]
deny = [{{ id = "no-prompt-injection", pattern = "(?i)ignore (all )?previous instructions" }}]
prompt_pii = "mask"

[connection.limits]
budget = {{ tokens = 2000, per = "1h" }}
requests_per_minute = 30

[connection.masking]
detect = ["all"]

[[api_key]]
name = "demo-agent"
key = {{ sha256 = "{digest}" }}
groups = ["agents"]

# A DBA who approves the agent's deletes (policy "deletes-need-a-dba"), and who is in the admin group (`[admin] group`,
# by default "admin"), so reads every identity's sessions through the admin API and may revoke.
[[api_key]]
name = "demo-dba"
key = {{ sha256 = "{dba_digest}" }}
groups = ["dba", "admin"]

[policy]
files = ["policies/*.cedar"]
"#,
        upstream = postgres.address(),
        llm_url = llm.base_url(),
        digest = warden_identity::api_key_digest(&api_key),
        dba_digest = warden_identity::api_key_digest(&dba_key),
    );
    std::fs::write(&config_path, config_text)?;
    std::fs::create_dir(directory.path().join("policies"))?;
    std::fs::write(directory.path().join("policies/shop.cedar"), DEMO_POLICIES)?;
    let config = Config::load(&config_path, &ProcessEnvironment).map_err(|error| anyhow::anyhow!("{error}"))?;
    let gateway = warden_gateway::Gateway::start(config).await?;
    let address = gateway.postgres_address().context("gateway has no PostgreSQL listener")?;
    let http = gateway.http_address().context("gateway has no HTTP listener")?;

    println!(
        r#"
warden demo is running.

  throwaway PostgreSQL  {upstream}  database "shop" (customers with PII, orders); warden holds its password
  LLM stand-in          {llm_url}  answers like OpenAI, with PII in every answer; warden holds its key
  warden gateway        {address} (PostgreSQL), http://{http} (HTTP and LLM APIs)
  config                {config}

Connect through warden. The password is your API key; the database's own password never leaves warden:

  PGPASSWORD={api_key} psql "host={host} port={port} dbname=shop user=demo sslmode=disable"

Policies ({policies}) let the agent read the shop and write orders, and nothing else:

  SELECT full_name, email, ssn FROM customers LIMIT 3;   -- allowed (read), PII masked
  UPDATE orders SET status = 'shipped' WHERE id = 1;     -- allowed (write on orders)
  DELETE FROM orders;                                    -- refused outright: policy "no-delete-without-where"
  DROP TABLE customers;                                  -- refused: no policy permits ddl
  DELETE FROM orders WHERE id = 2;                       -- held until a DBA approves it (policy "deletes-need-a-dba")

Call the LLM through warden with the same key: the answer streams with its email, phone and card masked, a model
other than gpt-4o-mini is refused, and a prompt with PII leaves warden masked:

  curl -sN http://{http}/openai/v1/chat/completions -H "Authorization: Bearer {api_key}" \
    -H 'content-type: application/json' \
    -d '{{"model": "gpt-4o-mini", "stream": true, "messages": [{{"role": "user", "content": "Hello"}}]}}'

  OPENAI_BASE_URL=http://{http}/openai/v1 OPENAI_API_KEY={api_key} python3 -c \
    'import openai; print(openai.OpenAI().chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)'

Approve the held delete as the demo DBA (an admin too), from another terminal:

  export WARDEN_TOKEN={dba_key}
  cargo run --release -- approvals list --config {config}
  cargo run --release -- approvals approve <approval id> --config {config}

Then see what was recorded:

  cargo run --release -- sessions list --config {config}
  cargo run --release -- sessions replay <session id> --config {config}
  cargo run --release -- audit verify --config {config}

Press Ctrl-C to stop the gateway and remove the database.
"#,
        upstream = postgres.address(),
        llm_url = llm.base_url(),
        config = config_path.display(),
        policies = directory.path().join("policies/shop.cedar").display(),
        host = address.ip(),
        port = address.port(),
    );
    crate::wait_for_shutdown_signal().await?;
    eprintln!("Stopping…");
    gateway.shutdown().await;
    drop(llm);
    tokio::task::spawn_blocking(move || postgres.stop()).await?;
    drop(directory);
    eprintln!("Removed the demo database and its files.");
    Ok(())
}

/// `preferred` if it is free, else any free port.
fn free_port(preferred: u16) -> Result<SocketAddr> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, preferred));
    if preferred != 0 && TcpListener::bind(address).is_ok() {
        return Ok(address);
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

fn restrict(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A random password for the demo's upstream role.
fn random_password() -> String {
    warden_identity::generate_api_key().replace("wk_", "pg_")
}

/// What the demo agent may do: read the shop, write orders, never delete without a WHERE, no DDL or admin; call the
/// LLM.
const DEMO_POLICIES: &str = r#"// Written by `warden demo`. Edit and send warden SIGHUP to reload.

@id("agents-read-shop")
permit (principal in Warden::Group::"agents",
        action in [Warden::Action::"connect", Warden::Action::"read"],
        resource in Warden::Connection::"shop");

@id("agents-write-orders")
permit (principal in Warden::Group::"agents",
        action == Warden::Action::"write",
        resource == Warden::Table::"shop/public.orders");

@id("no-delete-without-where")
forbid (principal, action == Warden::Action::"write", resource)
when { context has statement && context.statement.kind == "delete"
       && context.statement has has_where && !context.statement.has_where };

// A delete the agent may make once a DBA approves it (the statement waits up to 5 minutes for the approval).
@id("deletes-need-a-dba")
@approval("dba") @approval_ttl("30m")
forbid (principal in Warden::Group::"agents", action == Warden::Action::"write", resource)
when { context has statement && context.statement.kind == "delete" }
unless { context.approved };

// The LLM: chat and the other POST endpoints, and listing models.
@id("agents-call-the-llm")
permit (principal in Warden::Group::"agents",
        action in [Warden::Action::"http:POST", Warden::Action::"http:GET"],
        resource == Warden::Connection::"openai");
"#;
