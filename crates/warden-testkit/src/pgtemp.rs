//! A throwaway PostgreSQL server ([`TempPostgres`]): `initdb` into a temporary directory, start it on a free
//! port of 127.0.0.1 with password authentication everywhere (optionally TLS), and stop it and delete
//! everything when it is dropped.
//!
//! PostgreSQL refuses to run as root, so when this process is root every server command runs through
//! `runuser -u postgres`, and the files the server writes are handed to that user.
//!
//! Each server has a watchdog: a shell in its own process group that blocks reading a pipe from this
//! process. If the process dies without running `Drop` (a test runner's timeout, Ctrl-C), the pipe closes and
//! the watchdog stops the server and deletes its directory, so no server outlives the process that started it.
//! That also covers a server kept in a `static`, which is never dropped.

use std::fmt;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The address every server listens on; never a wildcard, so tests do not expose anything.
const HOST: &str = "127.0.0.1";
/// The superuser `initdb` creates, and also the operating-system user the server runs as when we are root.
const SUPERUSER: &str = "postgres";
/// How many ports `start_with` tries before giving up when another process takes the port first.
const START_ATTEMPTS: u32 = 5;
/// How long `pg_ctl` may wait for the server to start or stop, in seconds.
const PG_CTL_TIMEOUT_SECONDS: &str = "30";
/// The most of the server log an error quotes; the end of the log is where the reason is.
const LOG_TAIL_CHARS: usize = 8_000;

/// How clients prove their password: in `pg_hba.conf`, in `initdb --auth`, and as `password_encryption`,
/// so roles created through [`TempPostgres::create_role`] store their password in the matching form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// SCRAM-SHA-256, PostgreSQL's default since version 14.
    #[default]
    ScramSha256,
    /// The legacy MD5 challenge; passwords are stored as MD5 hashes.
    Md5,
}

impl AuthMethod {
    /// The method's name as `pg_hba.conf` and `password_encryption` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
        }
    }
}

/// What kind of server [`TempPostgres::start_with`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempPostgresOptions {
    /// Serve TLS with a certificate for `localhost` and 127.0.0.1 signed by a fresh CA, whose PEM
    /// [`TempPostgres::ca_cert_pem`] returns. Plain connections stay allowed.
    pub tls: bool,
    /// `max_connections`.
    pub max_connections: u32,
    /// How every connection (TCP and Unix socket) authenticates.
    pub auth: AuthMethod,
    /// More `postgresql.conf` settings as (name, value), written after the kit's own so they win. The value is
    /// quoted here, so pass it bare: `("log_statement", "all")`, `("statement_timeout", "5s")`.
    pub extra_settings: Vec<(String, String)>,
}

impl Default for TempPostgresOptions {
    fn default() -> Self {
        TempPostgresOptions {
            tls: false,
            max_connections: 300,
            auth: AuthMethod::ScramSha256,
            extra_settings: Vec::new(),
        }
    }
}

/// What went wrong starting or using a [`TempPostgres`]. Every variant names what failed; those about a
/// command carry its stderr, and a failed start carries the server log.
#[derive(Debug, thiserror::Error)]
pub enum PgTempError {
    /// No directory with `initdb` and `pg_ctl` was found.
    #[error(
        "cannot find the PostgreSQL server binaries (initdb, pg_ctl): {searched}; set WARDEN_PG_BIN to the \
         directory that holds them"
    )]
    BinariesNotFound { searched: String },
    /// The current user, or the `postgres` user the server must run as when we are root, could not be found.
    #[error("cannot find {what}: {reason}")]
    UserLookup { what: &'static str, reason: String },
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A command could not be run at all (missing program, bad argument).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("{what} failed ({status}): `{command}`: {stderr}")]
    CommandFailed { what: String, command: String, status: ExitStatus, stderr: String },
    /// `pg_ctl start` failed, or the server it started does not accept connections.
    #[error(
        "PostgreSQL did not start (attempt {attempts} of {START_ATTEMPTS}, on port {port}): {reason}\n\
         --- server log ---\n{log}"
    )]
    StartFailed { attempts: u32, port: u16, reason: String, log: String },
    /// The TLS certificates could not be generated.
    #[error("cannot generate the TLS certificates for PostgreSQL: {0}")]
    Certificate(#[from] rcgen::Error),
    /// An entry of [`TempPostgresOptions::extra_settings`] has a name PostgreSQL could not accept.
    #[error("invalid postgresql.conf setting name {name:?}: use letters, digits, `_` and `.` only")]
    InvalidSetting { name: String },
}

/// A running throwaway PostgreSQL server. Dropping it (or [`TempPostgres::stop`]) shuts the server down
/// with `pg_ctl stop -m immediate` and deletes its directory; that never panics.
pub struct TempPostgres {
    runner: Runner,
    bin_dir: PathBuf,
    psql_program: PathBuf,
    auth: AuthMethod,
    port: u16,
    password: String,
    ca_cert_pem: Option<String>,
    ca_cert_path: Option<PathBuf>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    watchdog: Option<Watchdog>,
    stopped: bool,
    /// Holds the data, socket and log; declared last so it is deleted after everything above is dropped.
    root: TempDir,
}

impl TempPostgres {
    /// Starts a server with the default options: no TLS, 300 connections, SCRAM-SHA-256.
    pub fn start() -> Result<TempPostgres, PgTempError> {
        TempPostgres::start_with(TempPostgresOptions::default())
    }

    /// Starts a server: finds the binaries, runs `initdb`, writes the configuration, starts it on a free
    /// port (trying another port if one is taken meanwhile) and checks that it accepts connections.
    pub fn start_with(options: TempPostgresOptions) -> Result<TempPostgres, PgTempError> {
        let started_at = Instant::now();
        for (name, _) in &options.extra_settings {
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !valid {
                return Err(PgTempError::InvalidSetting { name: name.clone() });
            }
        }

        let bin_dir = find_bin_dir()?;
        let psql_program = find_psql(&bin_dir);
        let postgres_ids = if effective_uid()? == 0 { Some(postgres_user_ids()?) } else { None };

        let root = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir()
            .map_err(io_error("create a temporary directory in", std::env::temp_dir()))?;
        // The server runs as another user when we are root: it must be able to enter the directory.
        set_mode(root.path(), 0o755)?;
        let runner = Runner { postgres_ids, cwd: root.path().to_owned() };

        let data_dir = root.path().join("data");
        let socket_dir = root.path().join("socket");
        let log_path = root.path().join("postgres.log");
        runner.create_dir(&data_dir, 0o700)?;
        runner.create_dir(&socket_dir, 0o755)?;
        runner.create_file(&log_path, 0o600, b"")?;

        let password = random_password()?;
        init_data_dir(&runner, &bin_dir, &data_dir, &password, options.auth)?;

        let (ca_cert_pem, ca_cert_path) = if options.tls {
            let ca_cert_pem = write_tls_files(&runner, &data_dir)?;
            let ca_cert_path = root.path().join("ca.crt");
            create_file_with_mode(&ca_cert_path, 0o644, ca_cert_pem.as_bytes())?;
            (Some(ca_cert_pem), Some(ca_cert_path))
        } else {
            (None, None)
        };

        let method = options.auth.as_str();
        let hba = format!(
            "# Written by warden-testkit: a password everywhere, so credential handling is really exercised.\n\
             local all all {method}\n\
             host all all 127.0.0.1/32 {method}\n\
             host all all ::1/128 {method}\n"
        );
        write_existing_file(&data_dir.join("pg_hba.conf"), hba.as_bytes())?;

        let watchdog = Watchdog::spawn(&runner, &bin_dir, &data_dir, root.path())?;
        let mut server = TempPostgres {
            runner,
            bin_dir,
            psql_program,
            auth: options.auth,
            port: 0,
            password,
            ca_cert_pem,
            ca_cert_path,
            data_dir,
            socket_dir,
            log_path,
            watchdog: Some(watchdog),
            stopped: true,
            root,
        };
        // From here on, dropping `server` on an error path cleans up whatever was started.
        server.port = server.start_on_free_port(&options)?;

        if options.auth == AuthMethod::Md5 {
            // initdb stored the superuser's password as SCRAM (the compiled-in default), and a SCRAM hash
            // makes an `md5` pg_hba line fall back to SCRAM; store it as MD5 so MD5 is what clients meet.
            let sql = format!(
                "SET password_encryption = 'md5';\nALTER ROLE {} PASSWORD {};\n",
                quote_identifier(SUPERUSER),
                quote_literal(&server.password)
            );
            server.psql_script(&sql)?;
        }

        tracing::debug!(
            address = %server.address(),
            data_dir = %server.data_dir.display(),
            elapsed_ms = started_at.elapsed().as_millis() as u64,
            "throwaway PostgreSQL started"
        );
        Ok(server)
    }

    /// The address the server listens on: always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// The server's Unix socket file, `<socket dir>/.s.PGSQL.<port>`.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(format!(".s.PGSQL.{}", self.port))
    }

    /// The directory holding the Unix socket (what libpq's `host=` takes for a socket connection).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The superuser's name: `postgres`.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password: random, 36 hexadecimal characters.
    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// How clients authenticate.
    pub fn auth_method(&self) -> AuthMethod {
        self.auth
    }

    /// With TLS, the PEM of the CA that signed the server certificate (valid for `localhost` and 127.0.0.1).
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_cert_pem.as_deref()
    }

    /// With TLS, a file holding [`TempPostgres::ca_cert_pem`], for clients that take a path (`sslrootcert`).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert_path.as_deref()
    }

    /// The psql this kit runs: the one beside the server binaries, else `/usr/bin/psql`.
    pub fn psql_program(&self) -> &Path {
        &self.psql_program
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log (`pg_ctl -l`); warnings and errors only.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `postgresql://postgres:PASSWORD@127.0.0.1:PORT/DATABASE?sslmode=disable`. It contains the
    /// superuser's password: for tests and the demo only.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@{HOST}:{}/{}?sslmode=disable",
            percent_encode(&self.password),
            self.port,
            percent_encode(database)
        )
    }

    /// Runs `sql` as the superuser with `psql -X -v ON_ERROR_STOP=1 -At -c` and returns its standard
    /// output without the final newline (rows on separate lines, columns separated by `|`).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgTempError> {
        self.psql_as(SUPERUSER, &self.password, database, sql)
    }

    /// Like [`TempPostgres::psql`], connecting as `user` with `password` over TCP without TLS. The password
    /// goes to psql through `PGPASSWORD`, never on its command line.
    pub fn psql_as(&self, user: &str, password: &str, database: &str, sql: &str) -> Result<String, PgTempError> {
        let mut command = self.psql_command(user, password, database);
        command.arg("-c").arg(sql).stdin(Stdio::null());
        let output = run(&format!("psql as {user:?} on database {database:?}"), command)?;
        Ok(stdout_text(&output))
    }

    /// Creates a role that can log in with `password`, stored as SCRAM or MD5 to match the
    /// [`AuthMethod`]. The password reaches psql on its standard input, not its command line.
    pub fn create_role(&self, name: &str, password: &str, superuser: bool) -> Result<(), PgTempError> {
        let sql = format!(
            "SET password_encryption = {};\nCREATE ROLE {} LOGIN {} PASSWORD {};\n",
            quote_literal(self.auth.as_str()),
            quote_identifier(name),
            if superuser { "SUPERUSER" } else { "NOSUPERUSER" },
            quote_literal(password)
        );
        self.psql_script(&sql)
    }

    /// Creates a database owned by `owner`.
    pub fn create_database(&self, name: &str, owner: &str) -> Result<(), PgTempError> {
        let sql = format!("CREATE DATABASE {} OWNER {}", quote_identifier(name), quote_identifier(owner));
        self.psql("postgres", &sql).map(drop)
    }

    /// Shuts the server down now (`pg_ctl stop -m immediate`) and deletes its directory; dropping does the
    /// same.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Writes `postgresql.conf` for a fresh free port and runs `pg_ctl start`, up to [`START_ATTEMPTS`] times
    /// when the port was taken between choosing it and the server binding it.
    fn start_on_free_port(&mut self, options: &TempPostgresOptions) -> Result<u16, PgTempError> {
        let conf_path = self.data_dir.join("postgresql.conf");
        let initdb_conf = fs::read_to_string(&conf_path).map_err(io_error("read", &conf_path))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let conf = format!("{initdb_conf}\n{}", settings(self, options, port));
            write_existing_file(&conf_path, conf.as_bytes())?;
            write_existing_file(&self.log_path, b"")?;

            let mut command = self.runner.command(&self.bin_dir.join("pg_ctl"));
            command.arg("-D").arg(&self.data_dir).arg("-l").arg(&self.log_path).args([
                "-w",
                "-t",
                PG_CTL_TIMEOUT_SECONDS,
                "start",
            ]);
            let description = describe(&command);
            let output = command.output().map_err(|source| PgTempError::Spawn { command: description, source })?;
            // Even a failed start may have left a postmaster behind (a timeout), so stop on drop regardless.
            self.stopped = false;
            if output.status.success() {
                return match TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    Duration::from_secs(5),
                ) {
                    Ok(_) => Ok(port),
                    Err(error) => Err(PgTempError::StartFailed {
                        attempts: attempt,
                        port,
                        reason: format!("pg_ctl reported success, but {HOST}:{port} refuses connections: {error}"),
                        log: self.log_tail(),
                    }),
                };
            }
            let log = self.log_tail();
            if log.contains("Address already in use") && attempt < START_ATTEMPTS {
                tracing::debug!(port, attempt, "port taken before PostgreSQL could bind it; trying another");
                continue;
            }
            return Err(PgTempError::StartFailed {
                attempts: attempt,
                port,
                reason: command_failure_text(&output),
                log,
            });
        }
    }

    /// The end of the server log, for error messages.
    fn log_tail(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let start = text.len().saturating_sub(LOG_TAIL_CHARS);
                let start = (start..text.len()).find(|&index| text.is_char_boundary(index)).unwrap_or(text.len());
                text[start..].trim_end().to_owned()
            }
            Err(error) => format!("(cannot read {}: {error})", self.log_path.display()),
        }
    }

    /// A psql command connecting over TCP without TLS, with the password in the environment.
    fn psql_command(&self, user: &str, password: &str, database: &str) -> Command {
        let conninfo = format!(
            "host={HOST} port={} user={} dbname={} sslmode=disable connect_timeout=10",
            self.port,
            quote_conninfo(user),
            quote_conninfo(database)
        );
        let mut command = Command::new(&self.psql_program);
        command
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-d"])
            .arg(conninfo)
            .env("PGPASSWORD", password)
            .env("PGCLIENTENCODING", "UTF8")
            // Settings from the caller's environment that the connection string does not override.
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .current_dir(self.root.path());
        command
    }

    /// Runs a script as the superuser on database `postgres`, feeding it on psql's standard input so
    /// passwords in it stay off command lines.
    fn psql_script(&self, sql: &str) -> Result<(), PgTempError> {
        let mut command = self.psql_command(SUPERUSER, &self.password, "postgres");
        command.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let description = describe(&command);
        let spawn_error = |source| PgTempError::Spawn { command: description.clone(), source };
        let mut child = command.spawn().map_err(spawn_error)?;
        // The script is far smaller than a pipe buffer, so writing it all before reading cannot deadlock.
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).map_err(spawn_error)?;
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        check_status("psql as the superuser", description, output).map(drop)
    }

    /// Stops the server and the watchdog; never panics, and does nothing the second time.
    fn shutdown(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let mut command = self.runner.command(&self.bin_dir.join("pg_ctl"));
            command.arg("-D").arg(&self.data_dir).args(["-m", "immediate", "-w", "-t", PG_CTL_TIMEOUT_SECONDS, "stop"]);
            if let Err(error) = run("pg_ctl stop", command) {
                tracing::warn!(%error, "cannot stop the throwaway PostgreSQL; signalling it directly");
                self.signal_postmaster();
            }
        }
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.dismiss();
        }
    }

    /// The fallback when `pg_ctl stop` fails: SIGQUIT (immediate shutdown) to the pid in `postmaster.pid`.
    fn signal_postmaster(&self) {
        let pid_file = self.data_dir.join("postmaster.pid");
        let Ok(contents) = fs::read_to_string(&pid_file) else {
            return; // No pid file: the server is not running.
        };
        let Some(pid) = contents.lines().next().and_then(|line| line.trim().parse::<u32>().ok()) else {
            return;
        };
        let mut command = Command::new("kill");
        command.args(["-QUIT", &pid.to_string()]);
        if let Err(error) = run("kill -QUIT", command) {
            tracing::warn!(%error, pid, "cannot signal the throwaway PostgreSQL");
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for TempPostgres {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TempPostgres")
            .field("address", &self.address())
            .field("auth", &self.auth)
            .field("tls", &self.ca_cert_pem.is_some())
            .field("data_dir", &self.data_dir)
            .field("running", &!self.stopped)
            .finish_non_exhaustive()
    }
}

/// How server commands run: directly, or as the `postgres` user through `runuser` when we are root.
#[derive(Debug, Clone)]
struct Runner {
    /// The uid and gid of `postgres`, when commands run as that user.
    postgres_ids: Option<(u32, u32)>,
    /// Every command's working directory: one the server's user can enter (initdb fails in one it cannot).
    cwd: PathBuf,
}

impl Runner {
    fn command(&self, program: &Path) -> Command {
        let mut command = if self.postgres_ids.is_some() {
            let mut command = Command::new(runuser_program());
            command.args(["-u", SUPERUSER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(&self.cwd).stdin(Stdio::null());
        command
    }

    /// Hands a path this process created to the user the server runs as.
    fn give(&self, path: &Path) -> Result<(), PgTempError> {
        match self.postgres_ids {
            Some((uid, gid)) => chown(path, Some(uid), Some(gid)).map_err(io_error("change the owner of", path)),
            None => Ok(()),
        }
    }

    fn create_dir(&self, path: &Path, mode: u32) -> Result<(), PgTempError> {
        fs::create_dir(path).map_err(io_error("create directory", path))?;
        set_mode(path, mode)?;
        self.give(path)
    }

    fn create_file(&self, path: &Path, mode: u32, contents: &[u8]) -> Result<(), PgTempError> {
        create_file_with_mode(path, mode, contents)?;
        self.give(path)
    }
}

/// A shell in its own process group that stops the server and deletes its directory once the pipe from this
/// process closes without being dismissed first, that is when this process died without dropping the server.
struct Watchdog {
    child: Child,
    /// Never written; its closing (this process exiting) is the signal.
    _pipe: ChildStdin,
}

impl Watchdog {
    const SCRIPT: &'static str = r#"directory=$1; shift
read -r _ignored
"$@" >/dev/null 2>&1
rm -rf -- "$directory"
"#;

    fn spawn(runner: &Runner, bin_dir: &Path, data_dir: &Path, root: &Path) -> Result<Watchdog, PgTempError> {
        let mut stop = runner.command(&bin_dir.join("pg_ctl"));
        stop.arg("-D").arg(data_dir).args(["-m", "immediate", "-w", "stop"]);
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(Watchdog::SCRIPT)
            .arg("warden-pg-watchdog")
            .arg(root)
            .arg(stop.get_program())
            .args(stop.get_args())
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // It keeps our standard error open (writing nothing to it), so whoever reads this process's
            // output to the end, such as a test runner, also waits for the clean-up to finish.
            .stderr(Stdio::inherit())
            // Out of our process group, so a signal to the whole test (Ctrl-C) does not reach it.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|source| PgTempError::Spawn { command: "/bin/sh -c <watchdog script>".to_owned(), source })?;
        let pipe = child.stdin.take().expect("stdin was configured as a pipe");
        Ok(Watchdog { child, _pipe: pipe })
    }

    /// Ends the watchdog without it doing anything: the server has been stopped already.
    fn dismiss(mut self) {
        if let Err(error) = self.child.kill() {
            tracing::warn!(%error, "cannot end the throwaway PostgreSQL watchdog");
        }
        let _ = self.child.wait();
    }
}

/// The kit's `postgresql.conf` settings, appended to what initdb wrote so they take precedence.
fn settings(server: &TempPostgres, options: &TempPostgresOptions, port: u16) -> String {
    let mut settings = vec![
        ("listen_addresses", HOST.to_owned()),
        ("port", port.to_string()),
        ("unix_socket_directories", server.socket_dir.display().to_string()),
        ("max_connections", options.max_connections.to_string()),
        ("password_encryption", options.auth.as_str().to_owned()),
        // Small and fast: tests share 2 cores and never need durability.
        ("shared_buffers", "32MB".to_owned()),
        ("fsync", "off".to_owned()),
        ("synchronous_commit", "off".to_owned()),
        ("full_page_writes", "off".to_owned()),
        ("log_min_messages", "warning".to_owned()),
    ];
    if options.tls {
        settings.push(("ssl", "on".to_owned()));
        settings.push(("ssl_cert_file", "server.crt".to_owned()));
        settings.push(("ssl_key_file", "server.key".to_owned()));
    }
    let mut text = String::from("# Added by warden-testkit.\n");
    let extra = options.extra_settings.iter().map(|(name, value)| (name.as_str(), value.clone()));
    for (name, value) in settings.into_iter().chain(extra) {
        text.push_str(&format!("{name} = {}\n", quote_conf_value(&value)));
    }
    text
}

/// Runs initdb with the superuser password in a file only the server's user can read, deleted afterwards.
/// The C.UTF-8 locale is preferred; systems without it get plain C.
fn init_data_dir(
    runner: &Runner,
    bin_dir: &Path,
    data_dir: &Path,
    password: &str,
    auth: AuthMethod,
) -> Result<(), PgTempError> {
    let password_file = runner.cwd.join("superuser-password");
    runner.create_file(&password_file, 0o600, format!("{password}\n").as_bytes())?;
    let initdb = |locale: &str| {
        let mut command = runner.command(&bin_dir.join("initdb"));
        command
            .arg("-D")
            .arg(data_dir)
            .arg(format!("--auth={}", auth.as_str()))
            .arg(format!("--username={SUPERUSER}"))
            .arg(format!("--pwfile={}", password_file.display()))
            .args(["-E", "UTF8", &format!("--locale={locale}"), "--no-sync"]);
        run(&format!("initdb with locale {locale}"), command)
    };
    let result = match initdb("C.UTF-8") {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::debug!(%error, "initdb with C.UTF-8 failed; trying locale C");
            // initdb empties the directory it failed in, but start from a fresh one to be sure.
            fs::remove_dir_all(data_dir)
                .map_err(io_error("remove directory", data_dir))
                .and_then(|()| runner.create_dir(data_dir, 0o700))
                .and_then(|()| initdb("C").map(drop))
        }
    };
    let removed = fs::remove_file(&password_file).map_err(io_error("remove", &password_file));
    result.and(removed)
}

/// Generates a CA and a server certificate for `localhost` and 127.0.0.1 it signed, writes the server's
/// certificate and key into the data directory (the key private to the server's user, as PostgreSQL
/// demands), and returns the CA's PEM.
fn write_tls_files(runner: &Runner, data_dir: &Path) -> Result<String, PgTempError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "warden-testkit throwaway CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server_params = CertificateParams::new(vec!["localhost".to_owned(), HOST.to_owned()])?;
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    runner.create_file(&data_dir.join("server.crt"), 0o644, server_cert.pem().as_bytes())?;
    runner.create_file(&data_dir.join("server.key"), 0o600, server_key.serialize_pem().as_bytes())?;
    Ok(ca_cert.pem())
}

/// The directory with `initdb` and `pg_ctl`: `WARDEN_PG_BIN`, else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn find_bin_dir() -> Result<PathBuf, PgTempError> {
    let has_server_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();

    if let Some(dir) = std::env::var_os("WARDEN_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
        // An explicit choice that is wrong is an error, not a reason to pick something else silently.
        return Err(PgTempError::BinariesNotFound {
            searched: format!("WARDEN_PG_BIN is {}, which has no initdb and pg_ctl", dir.display()),
        });
    }

    let mut searched = Vec::new();
    match Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).output() {
        Ok(output) if output.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
            searched.push(format!("`pg_config --bindir` names {}, which has no initdb", dir.display()));
        }
        Ok(output) => searched.push(format!("`pg_config --bindir` failed: {}", command_failure_text(&output))),
        Err(error) => searched.push(format!("cannot run pg_config: {error}")),
    }

    let versions_dir = Path::new("/usr/lib/postgresql");
    let mut candidates: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(versions_dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.split('.').map(|part| part.parse().ok()).collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server_binaries(dir))
        .collect();
    candidates.sort();
    if let Some((_, dir)) = candidates.pop() {
        return Ok(dir);
    }
    searched.push(format!("no {}/<version>/bin has initdb", versions_dir.display()));
    Err(PgTempError::BinariesNotFound { searched: searched.join("; ") })
}

/// The psql of the server's own version when it is there (it also skips Debian's Perl wrapper), else the
/// one on the system.
fn find_psql(bin_dir: &Path) -> PathBuf {
    let beside = bin_dir.join("psql");
    if beside.is_file() {
        return beside;
    }
    let system = PathBuf::from("/usr/bin/psql");
    if system.is_file() {
        system
    } else {
        PathBuf::from("psql")
    }
}

fn runuser_program() -> &'static str {
    if Path::new("/usr/sbin/runuser").is_file() {
        "/usr/sbin/runuser"
    } else {
        "runuser"
    }
}

/// This process's effective uid, from `/proc/self/status` (no `unsafe` for `geteuid`), else `id -u`.
fn effective_uid() -> Result<u32, PgTempError> {
    let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
        // Real, effective, saved, file-system.
        ids.split_whitespace().nth(1)?.parse().ok()
    });
    if let Some(uid) = from_proc {
        return Ok(uid);
    }
    id_number(&["-u"], "the effective uid of this process")
}

/// The uid and gid of the `postgres` user, from `/etc/passwd`, else `id`.
fn postgres_user_ids() -> Result<(u32, u32), PgTempError> {
    let from_passwd = fs::read_to_string("/etc/passwd").ok().and_then(|passwd| {
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != SUPERUSER {
                return None;
            }
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
    });
    if let Some(ids) = from_passwd {
        return Ok(ids);
    }
    let what = "the uid and gid of the `postgres` user, which runs PostgreSQL when this process is root";
    Ok((id_number(&["-u", SUPERUSER], what)?, id_number(&["-g", SUPERUSER], what)?))
}

fn id_number(args: &[&str], what: &'static str) -> Result<u32, PgTempError> {
    let mut command = Command::new("id");
    command.args(args);
    let output = run("id", command).map_err(|error| PgTempError::UserLookup { what, reason: error.to_string() })?;
    let text = stdout_text(&output);
    text.trim()
        .parse()
        .map_err(|_| PgTempError::UserLookup { what, reason: format!("`id {}` printed {text:?}", args.join(" ")) })
}

/// A port of 127.0.0.1 that was free a moment ago (the kernel's choice for port 0).
fn free_port() -> Result<u16, PgTempError> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let listener = TcpListener::bind(address).map_err(io_error("bind a free port on", "127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(io_error("read the port of", "127.0.0.1:0"))?.port();
    Ok(port)
}

/// 36 hexadecimal characters from the kernel's random source.
fn random_password() -> Result<String, PgTempError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 18];
    fs::File::open(path).and_then(|mut file| file.read_exact(&mut bytes)).map_err(io_error("read", path))?;
    Ok(hex::encode(bytes))
}

/// Runs a command to completion and turns a non-zero exit into [`PgTempError::CommandFailed`].
fn run(what: &str, mut command: Command) -> Result<Output, PgTempError> {
    let description = describe(&command);
    let output = command.output().map_err(|source| PgTempError::Spawn { command: description.clone(), source })?;
    check_status(what, description, output)
}

fn check_status(what: &str, description: String, output: Output) -> Result<Output, PgTempError> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(PgTempError::CommandFailed {
            what: what.to_owned(),
            command: description,
            status: output.status,
            stderr: command_failure_text(&output),
        })
    }
}

/// A failed command's standard error, or its standard output when it wrote nothing to standard error.
fn command_failure_text(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = if stderr.trim().is_empty() { String::from_utf8_lossy(&output.stdout) } else { stderr };
    text.trim_end().to_owned()
}

fn stdout_text(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout);
    text.strip_suffix('\n').unwrap_or(&text).to_owned()
}

/// A command line for messages. No secrets are ever passed as arguments, so it is safe to show.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn io_error(action: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> PgTempError {
    let path = path.as_ref().to_owned();
    move |source| PgTempError::Io { action, path, source }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PgTempError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error("change the mode of", path))
}

fn create_file_with_mode(path: &Path, mode: u32, contents: &[u8]) -> Result<(), PgTempError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .map_err(io_error("write", path))
}

/// Replaces the contents of a file that already exists, keeping its owner and mode.
fn write_existing_file(path: &Path, contents: &[u8]) -> Result<(), PgTempError> {
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .map_err(io_error("write", path))
}

/// An SQL identifier in double quotes.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal; with a backslash in the text it is an escape string (`E'…'`), so the text means the
/// same whatever `standard_conforming_strings` says.
fn quote_literal(text: &str) -> String {
    if text.contains('\\') {
        format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

/// A quoted `postgresql.conf` value; the file's parser reads backslash escapes in quotes.
fn quote_conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// A value in a libpq connection string.
fn quote_conninfo(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a URL's user info and path.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
