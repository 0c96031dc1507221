//! PostgreSQL for guests (`alorig:host/postgres`), each app bound to its own
//! database, every connection owned and pooled by the host.
//!
//! * [`PostgresHost`] — one per host: the admin connection from `postgres_url`,
//!   used to create (or verify) each app's role and database, to cancel overdue
//!   statements, and to size the host-wide connection limit.
//! * [`PostgresApp`] — one per loaded app, built once in `App::load`: its pool
//!   (connecting as the app's own role to the app's own database), limits and
//!   metric handles.
//! * [`PostgresCtx`] — per instance, in the store: the app's state, if any.
//! * [`PostgresView`] — what the generated `Host` traits are implemented on.
//!
//! Isolation does not rely on the guest's good manners: the app's role can log in
//! only to its own database (`CONNECT` revoked from `PUBLIC`, a `CONNECTION LIMIT`),
//! is not a superuser, cannot create roles or databases and is a member of no
//! other role, so `SET ROLE`, `dblink`/`postgres_fdw` (untrusted extensions) and
//! cross-database names all fail on the server. The statement timeout is set on
//! each connection, and the host also cancels (on the server, with
//! `pg_cancel_backend`) any statement still running past it — so a guest that
//! runs `SET statement_timeout = 0` gains nothing. Transactions exist only as
//! the `transaction` resource (a raw `BEGIN` through `query` is refused), so a
//! pooled connection never carries one request's transaction into another.
//! The app's password lives in `<data_dir>/postgres/<role>.password` (0600);
//! the server is sent only its SCRAM verifier.
//!
//! Results are read as a stream and converted row by row; the running size is
//! checked against the instance's memory headroom, so an oversized result ends
//! as a `too-large` error before it is buffered, never as a host allocation
//! spike or a guest trap.

mod codec;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit/postgres.wit",
        inline: "package alorig:host-postgres; world postgres-host { import alorig:host/postgres@0.1.0; }",
        imports: { default: async | trappable },
        with: {
            "alorig:host/postgres.transaction": super::Transaction,
        },
    });
}

pub use generated::alorig::host::postgres::{Column, ConstraintInfo, Error, ErrorInfo, RowSet, Value};
use generated::alorig::host::postgres as bindings;

use crate::{config::manifest::Postgres as PostgresManifest, state::InstanceState};
use anyhow::{Context as _, Result, anyhow, bail};
use futures::TryStreamExt as _;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use sqlx::{
    Arguments as _, Column as _, ConnectOptions as _, Either, Executor as _, Row as _, Statement as _, TypeInfo as _,
    postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions},
};
use std::{
    future::Future,
    path::{Path, PathBuf},
    str::FromStr as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

/// How long after `statement_timeout` the host steps in (the server's own
/// timeout normally ends the statement first).
const TIMEOUT_SLACK: Duration = Duration::from_millis(200);
/// How long a cancelled statement gets to report back before its connection is
/// abandoned.
const CANCEL_GRACE: Duration = Duration::from_secs(2);
/// After a connection failure, idle connections are pinged before use for this
/// long, so that after a server restart stale connections are replaced quietly.
const SUSPECT_WINDOW: Duration = Duration::from_secs(30);

/// The host's side: admin connection, secrets folder and connection limit.
pub struct PostgresHost {
    admin_options: PgConnectOptions,
    admin: PgPool,
    secrets_dir: PathBuf,
    configured_limit: Option<u32>,
}

impl PostgresHost {
    /// Parses `postgres_url`; connects lazily (nothing is opened until an app needs it).
    pub fn new(url: &str, data_dir: &Path, max_connections: Option<u32>) -> Result<Self> {
        // Never echo the URL: it may carry the admin password.
        let admin_options = PgConnectOptions::from_str(url)
            .map_err(|_| anyhow!("postgres_url: not a valid postgres:// URL"))?
            .application_name("alorig-host")
            .disable_statement_logging();
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(admin_options.clone());
        Ok(Self { admin_options, admin, secrets_dir: data_dir.join("postgres"), configured_limit: max_connections })
    }

    /// The most connections all apps together may hold: `postgres_max_connections`,
    /// or 80% of what the server allows non-superusers.
    pub async fn connection_limit(&self) -> Result<u32> {
        if let Some(limit) = self.configured_limit {
            return Ok(limit);
        }
        let (max, reserved): (String, String) = sqlx::query_as(
            "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections')",
        )
        .fetch_one(&self.admin)
        .await
        .map_err(|e| anyhow!("postgres_url: cannot reach PostgreSQL: {}", describe(&e)))?;
        let max: u32 = max.parse().unwrap_or(100);
        let reserved: u32 = reserved.parse().unwrap_or(3);
        Ok(max.saturating_sub(reserved) * 4 / 5)
    }

    /// Refuses a set of apps whose pools could together exceed the limit.
    pub async fn check_connections<'a>(&self, apps: impl Iterator<Item = (&'a str, &'a PostgresManifest)>) -> Result<()> {
        let apps: Vec<_> = apps.collect();
        if apps.is_empty() {
            return Ok(());
        }
        let total: u32 = apps.iter().map(|(_, pg)| pg.max_connections.get()).sum();
        let limit = self.connection_limit().await?;
        if total > limit {
            let each: Vec<String> = apps.iter().map(|(name, pg)| format!("{name} {}", pg.max_connections)).collect();
            bail!(
                "the apps' postgres.max_connections add up to {total} ({}), more than the host's limit of {limit} \
                 (postgres_max_connections, by default 80% of PostgreSQL's max_connections)",
                each.join(", ")
            );
        }
        Ok(())
    }

    /// Creates the app's role and database if they do not exist (or verifies
    /// them when the admin may not create them) and locks them down.
    pub async fn provision(&self, role: &str, pg: &PostgresManifest, source: &str) -> Result<String> {
        let at = |what: &str| format!("{source}: postgres: {what}");
        let mut admin = self.admin.acquire().await.map_err(|e| anyhow!("{}", at(&format!("cannot reach PostgreSQL at postgres_url: {}", describe(&e)))))?;
        let (superuser, createrole, createdb): (bool, bool, bool) =
            sqlx::query_as("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user")
                .fetch_one(&mut *admin)
                .await
                .map_err(|e| anyhow!("{}", at(&describe(&e))))?;
        let role_exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut *admin)
            .await?
            .is_some();
        let owner: Option<(String,)> = sqlx::query_as(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        )
        .bind(&pg.database)
        .fetch_optional(&mut *admin)
        .await?;
        let password_file = self.secrets_dir.join(format!("{role}.password"));
        let limit = pg.max_connections.get() + 1;
        let qrole = quote_ident(role);
        let qdb = quote_ident(&pg.database);

        if !(superuser || createrole) {
            // Without the rights to manage roles the host can only use what an
            // operator prepared: the role, the database and the password file.
            if !role_exists || owner.is_none() || !password_file.exists() {
                bail!(
                    "{}",
                    at(&format!(
                        "role {role} or database {} does not exist (or {} is missing), and the postgres_url user may not create them",
                        pg.database,
                        password_file.display()
                    ))
                );
            }
            return read_secret(&password_file);
        }
        if let Some((owner,)) = &owner {
            if owner != role && owner.starts_with("alorig_") {
                bail!("{}", at(&format!("database {} already belongs to another app ({owner})", pg.database)));
            }
        }
        let password = match password_file.exists() {
            true => read_secret(&password_file)?,
            false => {
                let secret = new_secret()?;
                write_secret(&password_file, &secret)?;
                secret
            }
        };
        // Utility statements take no parameters, and statement logs may be on:
        // the server gets only a SCRAM verifier, never the password itself.
        let verifier = scram_verifier(&password, &new_salt()?);
        let attributes = format!(
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {limit} PASSWORD '{verifier}'"
        );
        let verb = if role_exists { "ALTER" } else { "CREATE" };
        admin.execute(format!("{verb} ROLE {qrole} {attributes}").as_str()).await.map_err(|e| anyhow!("{}", at(&describe(&e))))?;
        match owner {
            None if createdb || superuser => {
                admin
                    .execute(format!("CREATE DATABASE {qdb} OWNER {qrole}").as_str())
                    .await
                    .map_err(|e| anyhow!("{}", at(&format!("cannot create database {}: {}", pg.database, describe(&e)))))?;
            }
            None => bail!("{}", at(&format!("database {} does not exist and the postgres_url user may not create it", pg.database))),
            Some((owner,)) if owner != role => {
                admin.execute(format!("ALTER DATABASE {qdb} OWNER TO {qrole}").as_str()).await?;
            }
            Some(_) => {}
        }
        for sql in [
            format!("REVOKE ALL ON DATABASE {qdb} FROM PUBLIC"),
            format!("GRANT CONNECT, TEMPORARY ON DATABASE {qdb} TO {qrole}"),
        ] {
            admin.execute(sql.as_str()).await.map_err(|e| anyhow!("{}", at(&describe(&e))))?;
        }
        Ok(password)
    }

    /// Cancels, on the server, the app's statements running past `timeout`.
    async fn cancel_overdue(&self, role: &str, database: &str, timeout: Duration) {
        let cancel = sqlx::query(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE usename = $1 AND datname = $2 AND state = 'active' \
             AND query_start < now() - make_interval(secs => $3)",
        )
        .bind(role)
        .bind(database)
        .bind(timeout.as_secs_f64())
        .execute(&self.admin);
        match tokio::time::timeout(CANCEL_GRACE, cancel).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(role, "cannot cancel an overdue statement: {}", describe(&e)),
            Err(_) => tracing::warn!(role, "cannot cancel an overdue statement: the admin connection timed out"),
        }
    }
}

/// Per-app metric handles (`alorig_app_pg_*`), resolved once.
#[derive(Clone)]
pub struct PgMetrics {
    pub connections: Gauge,
    pub idle: Gauge,
    pub waits: Counter,
    pub queries: Counter,
    /// By kind: constraint, unavailable, timeout, bad_parameter, too_large, other.
    pub errors: [Counter; 6],
}

pub const ERROR_KINDS: [&str; 6] = ["constraint", "unavailable", "timeout", "bad_parameter", "too_large", "other"];

/// One app's PostgreSQL: built once when the app is loaded.
pub struct PostgresApp {
    app: Arc<str>,
    role: String,
    database: String,
    pool: PgPool,
    max_connections: u32,
    timeout: Duration,
    host: Arc<PostgresHost>,
    metrics: PgMetrics,
    /// When a connection last failed (ms since the Unix epoch; 0: never).
    last_failure: Arc<AtomicU64>,
}

impl PostgresApp {
    /// Provisions the app's role and database and builds its (lazy) pool.
    pub async fn open(host: Arc<PostgresHost>, app: &Arc<str>, pg: &PostgresManifest, source: &Path, metrics: PgMetrics) -> Result<Self> {
        let role = role_name(app);
        let password = host.provision(&role, pg, &source.display().to_string()).await?;
        let timeout_ms = pg.statement_timeout.as_millis().max(1).to_string();
        let options = host
            .admin_options
            .clone()
            .username(&role)
            .password(&password)
            .database(&pg.database)
            .application_name(&format!("alorig:{app}"))
            .options([("statement_timeout", timeout_ms.as_str())])
            .disable_statement_logging();
        let last_failure = Arc::new(AtomicU64::new(0));
        let suspect = last_failure.clone();
        let pool = PgPoolOptions::new()
            .max_connections(pg.max_connections.get())
            .min_connections(0)
            .acquire_timeout(pg.statement_timeout.max(Duration::from_secs(1)))
            .idle_timeout(Duration::from_secs(300))
            // A ping per acquire would double the latency of a one-row query;
            // pinging only while connections are suspect recovers from restarts.
            .test_before_acquire(false)
            .before_acquire(move |conn, _meta| {
                let suspect = suspect.clone();
                Box::pin(async move {
                    let since = now_ms().saturating_sub(suspect.load(Ordering::Relaxed));
                    if since < SUSPECT_WINDOW.as_millis() as u64 {
                        use sqlx::Connection as _;
                        return Ok(conn.ping().await.is_ok());
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        Ok(Self {
            app: app.clone(),
            role,
            database: pg.database.clone(),
            pool,
            max_connections: pg.max_connections.get(),
            timeout: pg.statement_timeout,
            host,
            metrics,
            last_failure,
        })
    }

    /// Updates the pool gauges (also called at every scrape).
    pub fn refresh_gauges(&self) {
        self.metrics.connections.set(i64::from(self.pool.size()));
        self.metrics.idle.set(self.pool.num_idle() as i64);
    }

    /// Closes the pool: used when the app is unloaded.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, Error> {
        if self.pool.num_idle() == 0 && self.pool.size() >= self.max_connections {
            self.metrics.waits.inc();
        }
        let conn = self.pool.acquire().await.map_err(|e| self.fail(e));
        self.refresh_gauges();
        conn
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, Error> {
        if self.pool.num_idle() == 0 && self.pool.size() >= self.max_connections {
            self.metrics.waits.inc();
        }
        let tx = self.pool.begin().await.map_err(|e| self.fail(e));
        self.refresh_gauges();
        tx
    }

    /// Maps a sqlx error for the guest, counting it and noting connection failures.
    fn fail(&self, e: sqlx::Error) -> Error {
        let err = to_guest_error(e);
        let kind = match &err {
            Error::ConstraintViolation(_) => 0,
            Error::Unavailable(_) => 1,
            Error::Timeout(_) => 2,
            Error::BadParameter(_) => 3,
            Error::TooLarge(_) => 4,
            Error::Other(_) => 5,
        };
        self.metrics.errors[kind].inc();
        if kind == 1 {
            self.last_failure.store(now_ms(), Ordering::Relaxed);
            if let Error::Unavailable(info) = &err {
                tracing::warn!(app = %self.app, fault = "database", "PostgreSQL unavailable: {}", info.message);
            }
        }
        err
    }

    fn refuse(&self, err: Error) -> Error {
        let kind = match &err {
            Error::BadParameter(_) => 3,
            Error::TooLarge(_) => 4,
            _ => 5,
        };
        self.metrics.errors[kind].inc();
        err
    }

    /// Runs `work` under the app's statement timeout. Past it, the host cancels
    /// the app's overdue statements on the server and waits briefly for the
    /// statement to report back; a statement that never does is abandoned.
    async fn guarded<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        self.metrics.queries.inc();
        let work = std::pin::pin!(work);
        let mut work = work;
        let deadline = tokio::time::sleep(self.timeout + TIMEOUT_SLACK);
        tokio::select! {
            result = &mut work => return result,
            () = deadline => {}
        }
        tracing::warn!(app = %self.app, fault = "guest", "statement past statement_timeout ({:?}): cancelling it on the server", self.timeout);
        self.host.cancel_overdue(&self.role, &self.database, self.timeout).await;
        let timed_out = || {
            Error::Timeout(ErrorInfo {
                sqlstate: "57014".into(),
                message: format!("canceling statement due to statement timeout ({:?})", self.timeout),
            })
        };
        match tokio::time::timeout(CANCEL_GRACE, &mut work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e @ Error::Timeout(_))) => Err(e),
            Ok(Err(_)) | Err(_) => {
                self.metrics.errors[2].inc();
                Err(timed_out())
            }
        }
    }

    /// Prepares `sql` (cached per connection), encodes the parameters for the
    /// types the server inferred, and runs it.
    async fn run(&self, conn: &mut PgConnection, sql: &str, params: Vec<Value>, mode: Mode) -> Result<Outcome, Error> {
        let statement = (&mut *conn).prepare(sql).await.map_err(|e| self.fail(e))?;
        let types = match statement.parameters() {
            Some(Either::Left(types)) => types,
            _ => &[][..],
        };
        if types.len() != params.len() {
            return Err(self.refuse(bad_parameter(format!(
                "the statement takes {} parameter(s), {} given",
                types.len(),
                params.len()
            ))));
        }
        let mut args = PgArguments::default();
        for (i, (value, ty)) in params.iter().zip(types).enumerate() {
            let param = codec::encode(value, ty).map_err(|m| self.refuse(bad_parameter(format!("parameter ${}: {m}", i + 1))))?;
            args.add(param).map_err(|e| self.refuse(bad_parameter(format!("parameter ${}: {e}", i + 1))))?;
        }
        let query = sqlx::query_with(sql, args);
        match mode {
            Mode::Execute => {
                let done = query.execute(&mut *conn).await.map_err(|e| self.fail(e))?;
                Ok(Outcome::Affected(done.rows_affected()))
            }
            Mode::Query { headroom } => {
                let mut columns = Vec::with_capacity(statement.columns().len());
                let mut decoders = Vec::with_capacity(columns.capacity());
                for column in statement.columns() {
                    let ty = column.type_info();
                    let Some(decoder) = codec::Decoder::for_type(ty) else {
                        return Err(self.refuse(Error::Other(ErrorInfo {
                            sqlstate: String::new(),
                            message: format!(
                                "column {:?} has type {}, which alorig:host/postgres does not carry; cast it in SQL (e.g. ::text)",
                                column.name(),
                                ty.name().to_lowercase()
                            ),
                        })));
                    };
                    columns.push(Column { name: column.name().to_string(), type_name: ty.name().to_lowercase() });
                    decoders.push(decoder);
                }
                let mut size: u64 = columns.iter().map(|c| 32 + c.name.len() as u64 + c.type_name.len() as u64).sum();
                let mut rows = Vec::new();
                let mut stream = query.fetch(&mut *conn);
                while let Some(row) = stream.try_next().await.map_err(|e| self.fail(e))? {
                    let mut values = Vec::with_capacity(decoders.len());
                    for (i, decoder) in decoders.iter().enumerate() {
                        let raw = row.try_get_raw(i).map_err(|e| self.fail(e))?;
                        let value = match sqlx::ValueRef::is_null(&raw) {
                            true => Value::Null,
                            false => {
                                let bytes = raw.as_bytes().map_err(|e| self.refuse(other(format!("column {}: {e}", i + 1))))?;
                                decoder.decode(bytes).map_err(|m| self.refuse(other(format!("column {}: {m}", i + 1))))?
                            }
                        };
                        size += codec::guest_size(&value);
                        values.push(value);
                    }
                    size += 16;
                    if size > headroom {
                        return Err(self.refuse(Error::TooLarge(ErrorInfo {
                            sqlstate: String::new(),
                            message: format!(
                                "the result passed {} after {} rows, more than this instance's remaining memory allows; \
                                 select fewer rows or columns (LIMIT)",
                                crate::config::ByteSize(size),
                                rows.len() + 1
                            ),
                        })));
                    }
                    rows.push(values);
                }
                Ok(Outcome::Rows(RowSet { columns, rows }))
            }
        }
    }

    async fn pooled(&self, sql: &str, params: Vec<Value>, mode: Mode) -> Result<Outcome, Error> {
        if let Some(keyword) = transaction_control(sql) {
            return Err(self.refuse(other(format!(
                "{keyword} outside a transaction would leave a pooled connection mid-transaction; use begin() and the transaction resource"
            ))));
        }
        self.guarded(async {
            let mut conn = self.acquire().await?;
            let result = self.run(&mut conn, sql, params, mode).await;
            if matches!(result, Err(Error::Unavailable(_))) {
                conn.close_on_drop();
            }
            result
        })
        .await
    }
}

impl crate::metrics::Refresh for PostgresApp {
    fn refresh(&self) {
        self.refresh_gauges();
    }
}

/// The statement's first keyword if it starts or ends a transaction. Outside
/// the `transaction` resource these would outlive the call on a pooled
/// connection and capture later statements of other requests.
fn transaction_control(sql: &str) -> Option<String> {
    let mut rest = sql.trim_start();
    loop {
        if let Some(line) = rest.strip_prefix("--") {
            rest = line.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(block) = rest.strip_prefix("/*") {
            rest = block.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase();
    matches!(word.as_str(), "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE" | "PREPARE")
        .then_some(word)
        .filter(|w| w != "PREPARE" || rest.to_ascii_uppercase().split_whitespace().nth(1) == Some("TRANSACTION"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The app's role: `alorig_<name>` (app names are `[a-z0-9-]`).
pub fn role_name(app: &str) -> String {
    format!("alorig_{}", app.replace('-', "_"))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a database password")?;
    Ok(bytes)
}

fn new_secret() -> Result<String> {
    Ok(hex::encode(random::<24>()?))
}

fn new_salt() -> Result<[u8; 16]> {
    random::<16>()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
fn scram_verifier(password: &str, salt: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    const ITERATIONS: u32 = 4096;
    // PBKDF2-HMAC-SHA-256 with one 32-byte block.
    let mut u = hmac_sha256(password.as_bytes(), &[salt, &1u32.to_be_bytes()].concat());
    let mut salted = u;
    for _ in 1..ITERATIONS {
        u = hmac_sha256(password.as_bytes(), &u);
        salted.iter_mut().zip(u).for_each(|(s, x)| *s ^= x);
    }
    let stored_key = Sha256::digest(hmac_sha256(&salted, b"Client Key"));
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!("SCRAM-SHA-256${ITERATIONS}:{}${}:{}", base64(salt), base64(&stored_key), base64(&server_key))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn read_secret(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = text.trim().to_string();
    anyhow::ensure!(
        !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{}: not a password written by alorig-host",
        path.display()
    );
    Ok(secret)
}

fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let dir = path.parent().expect("secrets live in a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(())
}

/// A sqlx error as one line without addresses or secrets.
pub(crate) fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => format!("connection failed: {io}"),
        sqlx::Error::PoolTimedOut => "no connection available in time".into(),
        sqlx::Error::PoolClosed => "the connection pool is closed".into(),
        other => other.to_string(),
    }
}

fn bad_parameter(message: String) -> Error {
    Error::BadParameter(ErrorInfo { sqlstate: String::new(), message })
}

fn other(message: String) -> Error {
    Error::Other(ErrorInfo { sqlstate: String::new(), message })
}

/// The guest's view of a sqlx error: what it can act on, with SQLSTATE.
fn to_guest_error(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::Database(db) => {
            let sqlstate = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = db.message().to_string();
            let info = || ErrorInfo { sqlstate: sqlstate.clone(), message: message.clone() };
            match sqlstate.as_str() {
                s if s.starts_with("23") => Error::ConstraintViolation(ConstraintInfo {
                    constraint: db.constraint().unwrap_or_default().to_string(),
                    sqlstate: sqlstate.clone(),
                    message: message.clone(),
                }),
                "57014" => Error::Timeout(info()),
                "08P01" | "42P18" | "42804" | "22P03" => Error::BadParameter(info()),
                s if s.starts_with("08") || s.starts_with("57P") || s == "53300" => Error::Unavailable(info()),
                _ => Error::Other(info()),
            }
        }
        sqlx::Error::Encode(e) => bad_parameter(e.to_string()),
        e @ (sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed) => Error::Unavailable(ErrorInfo {
            sqlstate: String::new(),
            message: format!("the database is unavailable: {}", describe(&e)),
        }),
        e => other(describe(&e)),
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Execute,
    /// Bytes the result may take in the guest.
    Query { headroom: u64 },
}

enum Outcome {
    Affected(u64),
    Rows(RowSet),
}

impl Outcome {
    fn rows(self) -> RowSet {
        match self {
            Outcome::Rows(rows) => rows,
            Outcome::Affected(_) => unreachable!("a query returns rows"),
        }
    }
    fn affected(self) -> u64 {
        match self {
            Outcome::Affected(n) => n,
            Outcome::Rows(_) => unreachable!("an execute returns a count"),
        }
    }
}

/// An open transaction held by a guest (the `transaction` resource). Dropping it
/// uncommitted — by the guest, or with its store when the instance ends or
/// traps — rolls it back before the connection is reused.
pub struct Transaction {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

/// Per-instance state in the store.
pub struct PostgresCtx {
    app: Option<Arc<PostgresApp>>,
}

impl PostgresCtx {
    pub fn new(app: Option<Arc<PostgresApp>>) -> Self {
        Self { app }
    }
}

/// What the generated traits are implemented on: the instance's context, its
/// resource table and how much more memory it may take.
pub struct PostgresView<'a> {
    ctx: &'a PostgresCtx,
    table: &'a mut ResourceTable,
    headroom: u64,
}

impl<'a> PostgresView<'a> {
    fn app(&self) -> Result<&Arc<PostgresApp>, Error> {
        self.ctx.app.as_ref().ok_or_else(|| {
            Error::Unavailable(ErrorInfo {
                sqlstate: String::new(),
                message: "this app has no [postgres] section in its manifest".into(),
            })
        })
    }
}

impl bindings::Host for PostgresView<'_> {
    async fn query(&mut self, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<RowSet, Error>> {
        let headroom = self.headroom;
        let app = match self.app() {
            Ok(app) => app,
            Err(e) => return Ok(Err(e)),
        };
        Ok(app.pooled(&sql, params, Mode::Query { headroom }).await.map(Outcome::rows))
    }

    async fn execute(&mut self, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<u64, Error>> {
        let app = match self.app() {
            Ok(app) => app,
            Err(e) => return Ok(Err(e)),
        };
        Ok(app.pooled(&sql, params, Mode::Execute).await.map(Outcome::affected))
    }

    async fn begin(&mut self) -> wasmtime::Result<Result<Resource<Transaction>, Error>> {
        let app = match self.app() {
            Ok(app) => app.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let started = app.guarded(app.begin()).await;
        match started {
            Ok(tx) => Ok(Ok(self.table.push(Transaction { tx })?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

impl bindings::HostTransaction for PostgresView<'_> {
    async fn query(&mut self, this: Resource<Transaction>, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<RowSet, Error>> {
        let headroom = self.headroom;
        let app = match self.app() {
            Ok(app) => app.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let tx = self.table.get_mut(&this)?;
        Ok(app.guarded(app.run(&mut tx.tx, &sql, params, Mode::Query { headroom })).await.map(Outcome::rows))
    }

    async fn execute(&mut self, this: Resource<Transaction>, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<u64, Error>> {
        let app = match self.app() {
            Ok(app) => app.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let tx = self.table.get_mut(&this)?;
        Ok(app.guarded(app.run(&mut tx.tx, &sql, params, Mode::Execute)).await.map(Outcome::affected))
    }

    async fn commit(&mut self, this: Resource<Transaction>) -> wasmtime::Result<Result<(), Error>> {
        let Transaction { tx } = self.table.delete(this)?;
        let app = match self.app() {
            Ok(app) => app.clone(),
            Err(e) => return Ok(Err(e)),
        };
        Ok(app.guarded(async { tx.commit().await.map_err(|e| app.fail(e)) }).await)
    }

    async fn rollback(&mut self, this: Resource<Transaction>) -> wasmtime::Result<Result<(), Error>> {
        let Transaction { tx } = self.table.delete(this)?;
        let app = match self.app() {
            Ok(app) => app.clone(),
            Err(e) => return Ok(Err(e)),
        };
        Ok(app.guarded(async { tx.rollback().await.map_err(|e| app.fail(e)) }).await)
    }

    async fn drop(&mut self, this: Resource<Transaction>) -> wasmtime::Result<()> {
        // sqlx queues the ROLLBACK; it runs before the connection is used again.
        self.table.delete(this)?;
        Ok(())
    }
}

struct HasPostgres;

impl HasData for HasPostgres {
    type Data<'a> = PostgresView<'a>;
}

/// Links `alorig:host/postgres`; every instance reaches only its own app's pool.
pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> Result<()> {
    bindings::add_to_linker::<InstanceState, HasPostgres>(linker, |state| {
        let headroom = state.limiter.headroom();
        PostgresView { ctx: &state.postgres, table: &mut state.table, headroom }
    })?;
    Ok(())
}

/// Whether a component imports this interface (any version).
pub fn is_imported(engine: &wasmtime::Engine, component: &wasmtime::component::Component) -> bool {
    component.component_type().imports(engine).any(|(name, _)| name.starts_with("alorig:host/postgres"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_recognised_behind_comments() {
        for sql in ["BEGIN", "  begin;", "-- x\nSTART TRANSACTION", "/* c */ commit", "Rollback", "prepare transaction 'x'"] {
            assert!(transaction_control(sql).is_some(), "{sql}");
        }
        for sql in ["SELECT 1", "prepare foo AS SELECT 1", "BEGINNING", "-- BEGIN\nSELECT 1", "UPDATE t SET begin = 1"] {
            assert!(transaction_control(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn hmac_and_base64_match_their_test_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
        assert_eq!(base64(b"any carnal pleasu"), "YW55IGNhcm5hbCBwbGVhc3U=");
        assert!(scram_verifier("pw", &[0; 16]).starts_with("SCRAM-SHA-256$4096:AAAAAAAAAAAAAAAAAAAAAA==$"));
    }

    #[test]
    fn server_errors_become_what_a_guest_can_act_on() {
        assert!(matches!(to_guest_error(sqlx::Error::PoolTimedOut), Error::Unavailable(_)));
        assert!(matches!(to_guest_error(sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into())), Error::Unavailable(_)));
        assert_eq!(role_name("snap-ify"), "alorig_snap_ify");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
