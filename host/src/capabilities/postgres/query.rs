//! The query engine of one app's PostgreSQL: its pool (connecting as the
//! app's own role to its own database), the statement timeout enforced on the
//! server and by the host, parameters encoded for the types the server
//! inferred, results read as a stream and bounded by the instance's memory
//! headroom, and sqlx errors turned into what a guest can act on.

use super::{
    CANCEL_GRACE, Column, ConstraintInfo, Error, ErrorInfo, RowSet, TIMEOUT_SLACK, Value, codec,
    describe, guard,
    provision::{PostgresHost, role_name},
    share::{PoolRecipe, SharedPool},
};
use crate::limits::{MemoryBudget, host_memory::HostCharge, relay::Relay};
use crate::{
    config::manifest::Postgres as PostgresManifest,
    metrics::{PgErrorKind, PgMetrics},
};
use anyhow::Result;
use futures::TryStreamExt as _;
use sqlx::{
    Arguments as _, Column as _, ConnectOptions as _, Either, Executor as _, Row as _,
    Statement as _, TypeInfo as _,
    postgres::{PgArguments, PgConnection},
};
use std::{
    future::Future,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// One app's PostgreSQL: built once when the app is loaded.
pub struct PostgresApp {
    app: Arc<str>,
    role: String,
    database: String,
    /// Sized to this host's share of the app's `max_connections` ([`share`]).
    pool: Arc<SharedPool>,
    timeout: Duration,
    host: Arc<PostgresHost>,
    metrics: PgMetrics,
    /// When a connection last failed (ms since the Unix epoch; 0: never).
    last_failure: Arc<AtomicU64>,
    /// Result rows are charged to it while the host holds them.
    budget: Arc<MemoryBudget>,
    /// The relay every connection of the pool goes through ([`guard`]).
    _guard: Option<Relay>,
}

impl PostgresApp {
    /// Provisions the app's role and database and builds its (lazy) pool.
    pub async fn open(
        host: Arc<PostgresHost>,
        app: &Arc<str>,
        pg: &PostgresManifest,
        source: &Path,
        metrics: PgMetrics,
        budget: Arc<MemoryBudget>,
    ) -> Result<Self> {
        let role = role_name(app);
        let password = host
            .provision(&role, pg, &source.display().to_string())
            .await?;
        let timeout_ms = pg.statement_timeout.as_millis().max(1).to_string();
        let guard = match crate::limits::relay::enabled() {
            true => Some(
                host.guard(app, budget.clone())
                    .map_err(|e| anyhow::anyhow!("{}: postgres: {e:#}", source.display()))?,
            ),
            false => None,
        };
        let mut options = host.admin_options.clone();
        if let Some(dir) = guard.as_ref().and_then(|g| g.socket().parent()) {
            options = options
                .socket(dir)
                .ssl_mode(sqlx::postgres::PgSslMode::Disable);
        }
        let options = options
            .username(&role)
            .password(&password)
            .database(&pg.database)
            .application_name(&format!("alorig:{app}"))
            .options([("statement_timeout", timeout_ms.as_str())])
            .disable_statement_logging();
        let last_failure = Arc::new(AtomicU64::new(0));
        let recipe = PoolRecipe {
            options,
            acquire_timeout: pg.statement_timeout.max(Duration::from_secs(1)),
            suspect: last_failure.clone(),
        };
        let pool = SharedPool::new(
            app.clone(),
            recipe,
            pg.max_connections.get(),
            host.standing().await,
            metrics.pool_max.clone(),
        );
        Ok(Self {
            app: app.clone(),
            role,
            database: pg.database.clone(),
            pool,
            timeout: pg.statement_timeout,
            host,
            metrics,
            last_failure,
            budget,
            _guard: guard,
        })
    }

    /// Updates the pool gauges (also called at every scrape).
    pub fn refresh_gauges(&self) {
        let pool = self.pool.get();
        self.metrics.connections.set(i64::from(pool.size()));
        self.metrics.idle.set(pool.num_idle() as i64);
    }

    /// Closes the pool: used when the app is unloaded.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(super) async fn acquire(
        &self,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, Error> {
        let pool = self.pool.get();
        if pool.num_idle() == 0 && pool.size() >= self.pool.size() {
            self.metrics.waits.inc();
        }
        let conn = self.pool.acquire().await.map_err(|e| self.fail(e));
        self.refresh_gauges();
        conn
    }

    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, Error> {
        let pool = self.pool.get();
        if pool.num_idle() == 0 && pool.size() >= self.pool.size() {
            self.metrics.waits.inc();
        }
        let tx = self.pool.begin().await.map_err(|e| self.fail(e));
        self.refresh_gauges();
        tx
    }

    /// Maps a sqlx error for the guest, counting it and noting connection failures.
    pub(super) fn fail(&self, e: sqlx::Error) -> Error {
        let err = to_guest_error(e);
        let kind = match &err {
            Error::ConstraintViolation(_) => PgErrorKind::Constraint,
            Error::Unavailable(_) => PgErrorKind::Unavailable,
            Error::Timeout(_) => PgErrorKind::Timeout,
            Error::BadParameter(_) => PgErrorKind::BadParameter,
            Error::TooLarge(_) => PgErrorKind::TooLarge,
            Error::Other(_) => PgErrorKind::Other,
        };
        self.metrics.error(kind);
        if kind == PgErrorKind::Unavailable {
            self.last_failure.store(now_ms(), Ordering::Relaxed);
            if let Error::Unavailable(info) = &err {
                tracing::warn!(app = %self.app, fault = "dependency", "PostgreSQL unavailable: {}", info.message);
            }
        }
        err
    }

    pub(super) fn refuse(&self, err: Error) -> Error {
        let kind = match &err {
            Error::BadParameter(_) => PgErrorKind::BadParameter,
            Error::TooLarge(_) => PgErrorKind::TooLarge,
            _ => PgErrorKind::Other,
        };
        self.metrics.error(kind);
        err
    }

    /// Runs `work` under the app's statement timeout. Past it, the host cancels
    /// the app's overdue statements on the server and waits briefly for the
    /// statement to report back; a statement that never does is abandoned.
    pub(super) async fn guarded<T>(
        &self,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.metrics.queries.inc();
        let work = std::pin::pin!(work);
        let mut work = work;
        let deadline = tokio::time::sleep(self.timeout + TIMEOUT_SLACK);
        tokio::select! {
            result = &mut work => return result,
            () = deadline => {}
        }
        tracing::warn!(app = %self.app, fault = "guest", "statement past statement_timeout ({:?}): cancelling it on the server", self.timeout);
        self.host
            .cancel_overdue(&self.role, &self.database, self.timeout)
            .await;
        let timed_out = || {
            Error::Timeout(ErrorInfo {
                sqlstate: "57014".into(),
                message: format!(
                    "canceling statement due to statement timeout ({:?})",
                    self.timeout
                ),
            })
        };
        match tokio::time::timeout(CANCEL_GRACE, &mut work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e @ Error::Timeout(_))) => Err(e),
            Ok(Err(_)) | Err(_) => {
                self.metrics.error(PgErrorKind::Timeout);
                Err(timed_out())
            }
        }
    }

    /// Prepares `sql` (cached per connection), encodes the parameters for the
    /// types the server inferred, and runs it.
    pub(super) async fn run(
        &self,
        conn: &mut PgConnection,
        sql: &str,
        params: Vec<Value>,
        mode: Mode,
    ) -> Result<Outcome, Error> {
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
            let param = codec::encode(value, ty)
                .map_err(|m| self.refuse(bad_parameter(format!("parameter ${}: {m}", i + 1))))?;
            args.add(param)
                .map_err(|e| self.refuse(bad_parameter(format!("parameter ${}: {e}", i + 1))))?;
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
                    columns.push(Column {
                        name: column.name().to_string(),
                        type_name: ty.name().to_lowercase(),
                    });
                    decoders.push(decoder);
                }
                let mut size: u64 = columns
                    .iter()
                    .map(|c| 32 + c.name.len() as u64 + c.type_name.len() as u64)
                    .sum();
                let mut rows = Vec::new();
                // The converted rows are the host's until the guest takes them.
                let mut held = HostCharge::new(self.budget.clone());
                let mut stream = query.fetch(&mut *conn);
                while let Some(row) = stream.try_next().await.map_err(|e| self.fail(e))? {
                    let before = size;
                    let mut values = Vec::with_capacity(decoders.len());
                    for (i, decoder) in decoders.iter().enumerate() {
                        let raw = row.try_get_raw(i).map_err(|e| self.fail(e))?;
                        let value = match sqlx::ValueRef::is_null(&raw) {
                            true => Value::Null,
                            false => {
                                let bytes = raw.as_bytes().map_err(|e| {
                                    self.refuse(other(format!("column {}: {e}", i + 1)))
                                })?;
                                decoder.decode(bytes).map_err(|m| {
                                    self.refuse(other(format!("column {}: {m}", i + 1)))
                                })?
                            }
                        };
                        size += codec::guest_size(&value);
                        values.push(value);
                    }
                    size += 16;
                    if let Err(no_room) = held.grow(size - before) {
                        return Err(self.refuse(Error::TooLarge(ErrorInfo {
                            sqlstate: String::new(),
                            message: format!("the result after {} rows: {no_room}; select fewer rows or columns (LIMIT)", rows.len() + 1),
                        })));
                    }
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

    pub(super) async fn pooled(
        &self,
        sql: &str,
        params: Vec<Value>,
        mode: Mode,
    ) -> Result<Outcome, Error> {
        if let Some(keyword) = transaction_control(sql) {
            return Err(self.refuse(other(format!(
                "{keyword} outside a transaction would leave a pooled connection mid-transaction; use begin() and the transaction resource"
            ))));
        }
        self.guarded(async {
            let mut conn = self.acquire().await?;
            let result = self.run(&mut conn, sql, params, mode).await;
            match &result {
                // A connection the guard cut (too-large) is closed as well.
                Err(Error::Unavailable(_) | Error::TooLarge(_)) => conn.close_on_drop(),
                // A large message leaves sqlx's read buffer as large: give it back.
                Ok(Outcome::Rows(rows))
                    if rows
                        .rows
                        .iter()
                        .flatten()
                        .any(|v| codec::guest_size(v) > guard::SMALL as u64) =>
                {
                    sqlx::Connection::shrink_buffers(&mut *conn);
                }
                Err(_) => sqlx::Connection::shrink_buffers(&mut *conn),
                _ => {}
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
pub(super) fn transaction_control(sql: &str) -> Option<String> {
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
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    matches!(
        word.as_str(),
        "BEGIN"
            | "START"
            | "COMMIT"
            | "END"
            | "ROLLBACK"
            | "ABORT"
            | "SAVEPOINT"
            | "RELEASE"
            | "PREPARE"
    )
    .then_some(word)
    .filter(|w| {
        w != "PREPARE" || rest.to_ascii_uppercase().split_whitespace().nth(1) == Some("TRANSACTION")
    })
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn bad_parameter(message: String) -> Error {
    Error::BadParameter(ErrorInfo {
        sqlstate: String::new(),
        message,
    })
}

fn other(message: String) -> Error {
    Error::Other(ErrorInfo {
        sqlstate: String::new(),
        message,
    })
}

/// The guest's view of a sqlx error: what it can act on, with SQLSTATE.
pub(super) fn to_guest_error(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::Database(db) => {
            let sqlstate = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = db.message().to_string();
            let info = || ErrorInfo {
                sqlstate: sqlstate.clone(),
                message: message.clone(),
            };
            match sqlstate.as_str() {
                s if s.starts_with("23") => Error::ConstraintViolation(ConstraintInfo {
                    constraint: db.constraint().unwrap_or_default().to_string(),
                    sqlstate: sqlstate.clone(),
                    message: message.clone(),
                }),
                "57014" => Error::Timeout(info()),
                guard::TOO_LARGE_SQLSTATE if message.starts_with(guard::TOO_LARGE_MARK) => {
                    Error::TooLarge(ErrorInfo {
                        sqlstate: sqlstate.clone(),
                        message: message
                            .trim_start_matches(guard::TOO_LARGE_MARK)
                            .trim_start()
                            .to_string(),
                    })
                }
                "08P01" | "42P18" | "42804" | "22P03" => Error::BadParameter(info()),
                s if s.starts_with("08") || s.starts_with("57P") || s == "53300" => {
                    Error::Unavailable(info())
                }
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
pub(super) enum Mode {
    Execute,
    /// Bytes the result may take in the guest.
    Query {
        headroom: u64,
    },
}

pub(super) enum Outcome {
    Affected(u64),
    Rows(RowSet),
}

impl Outcome {
    pub(super) fn rows(self) -> RowSet {
        match self {
            Outcome::Rows(rows) => rows,
            Outcome::Affected(_) => unreachable!("a query returns rows"),
        }
    }
    pub(super) fn affected(self) -> u64 {
        match self {
            Outcome::Affected(n) => n,
            Outcome::Rows(_) => unreachable!("an execute returns a count"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_recognised_behind_comments() {
        for sql in [
            "BEGIN",
            "  begin;",
            "-- x\nSTART TRANSACTION",
            "/* c */ commit",
            "Rollback",
            "prepare transaction 'x'",
        ] {
            assert!(transaction_control(sql).is_some(), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "prepare foo AS SELECT 1",
            "BEGINNING",
            "-- BEGIN\nSELECT 1",
            "UPDATE t SET begin = 1",
        ] {
            assert!(transaction_control(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn server_errors_become_what_a_guest_can_act_on() {
        assert!(matches!(
            to_guest_error(sqlx::Error::PoolTimedOut),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            to_guest_error(sqlx::Error::Io(
                std::io::ErrorKind::ConnectionRefused.into()
            )),
            Error::Unavailable(_)
        ));
    }
}
