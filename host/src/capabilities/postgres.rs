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
//! The app's password lives in `<data_dir>/postgres/<role>.password` (0600),
//! or, on hosts given a `cluster_key`, sealed in PostgreSQL for all of them
//! ([`secrets`]); the server is sent only its SCRAM verifier.
//!
//! Results are read as a stream and converted row by row; the running size is
//! checked against the instance's memory headroom, so an oversized result ends
//! as a `too-large` error before it is buffered, never as a host allocation
//! spike or a guest trap.

pub mod codec;
mod guard;
mod provision;
mod query;
mod secrets;
mod share;

pub use provision::{PostgresHost, role_name};
pub use query::PostgresApp;
use query::{Mode, Outcome};

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

use generated::alorig::host::postgres as bindings;
pub use generated::alorig::host::postgres::{
    Column, ConstraintInfo, Error, ErrorInfo, RowSet, Value,
};

use anyhow::Result;
use std::{sync::Arc, time::Duration};
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

    /// The view the guest's calls run on: this context, the instance's
    /// resource table, and how much more memory the instance may take.
    pub fn view<'a>(&'a self, table: &'a mut ResourceTable, headroom: u64) -> PostgresView<'a> {
        PostgresView {
            ctx: self,
            table,
            headroom,
        }
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
    async fn query(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let headroom = self.headroom;
        let app = match self.app() {
            Ok(app) => app,
            Err(e) => return Ok(Err(e)),
        };
        Ok(app
            .pooled(&sql, params, Mode::Query { headroom })
            .await
            .map(Outcome::rows))
    }

    async fn execute(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let app = match self.app() {
            Ok(app) => app,
            Err(e) => return Ok(Err(e)),
        };
        Ok(app
            .pooled(&sql, params, Mode::Execute)
            .await
            .map(Outcome::affected))
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
    async fn query(
        &mut self,
        this: Resource<Transaction>,
        sql: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let headroom = self.headroom;
        let app = match self.app() {
            Ok(app) => app.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let tx = self.table.get_mut(&this)?;
        Ok(app
            .guarded(app.run(&mut tx.tx, &sql, params, Mode::Query { headroom }))
            .await
            .map(Outcome::rows))
    }

    async fn execute(
        &mut self,
        this: Resource<Transaction>,
        sql: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let app = match self.app() {
            Ok(app) => app.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let tx = self.table.get_mut(&this)?;
        Ok(app
            .guarded(app.run(&mut tx.tx, &sql, params, Mode::Execute))
            .await
            .map(Outcome::affected))
    }

    async fn commit(&mut self, this: Resource<Transaction>) -> wasmtime::Result<Result<(), Error>> {
        let Transaction { tx } = self.table.delete(this)?;
        let app = match self.app() {
            Ok(app) => app.clone(),
            Err(e) => return Ok(Err(e)),
        };
        Ok(app
            .guarded(async { tx.commit().await.map_err(|e| app.fail(e)) })
            .await)
    }

    async fn rollback(
        &mut self,
        this: Resource<Transaction>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let Transaction { tx } = self.table.delete(this)?;
        let app = match self.app() {
            Ok(app) => app.clone(),
            Err(e) => return Ok(Err(e)),
        };
        Ok(app
            .guarded(async { tx.rollback().await.map_err(|e| app.fail(e)) })
            .await)
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

/// Links `alorig:host/postgres` for any store whose state projects to a
/// [`PostgresView`]; every instance reaches only its own app's pool.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> PostgresView<'_>,
) -> Result<()> {
    bindings::add_to_linker::<T, HasPostgres>(linker, view)?;
    Ok(())
}

/// What `[postgres]` grants: the app's database.
pub fn grants(manifest: &crate::config::Manifest) -> Vec<super::Grant> {
    let database = |db: &str| super::Grant {
        key: format!("postgres {db}"),
        text: format!("PostgreSQL database {db}"),
        amount: None,
    };
    manifest
        .postgres
        .iter()
        .map(|pg| database(&pg.database))
        .collect()
}

impl PostgresApp {
    /// The app's database, when its manifest has `[postgres]`: its role and
    /// database provisioned on the host's cluster, its pool built (not when
    /// `offline`: `validate` reaches no service).
    pub async fn load(ctx: &super::LoadContext<'_>) -> Result<Option<Arc<Self>>, super::LoadError> {
        let Some(pg) = &ctx.manifest.postgres else {
            return Ok(None);
        };
        if ctx.offline {
            return Ok(None);
        }
        let Some(host) = ctx.postgres else {
            return Err(super::LoadError::operator(format!(
                "{}: postgres: this host has no postgres_url (set it in host.toml or ALORIG_POSTGRES_URL)",
                ctx.source()
            )));
        };
        let metrics = ctx.metrics.postgres(ctx.name);
        let app = Self::open(
            host.clone(),
            ctx.name,
            pg,
            &ctx.manifest.source,
            metrics,
            ctx.budget.clone(),
        )
        .await
        .map_err(|err| {
            // Provisioning marks an unreachable server as a dependency outage;
            // the rest (rights, a database owned by another app) is the operator's.
            err.downcast::<super::LoadError>()
                .unwrap_or_else(|other| super::LoadError::operator(format!("{other:#}")))
        })?;
        let app = Arc::new(app);
        let weak: std::sync::Weak<dyn crate::metrics::Refresh> = Arc::downgrade(&app) as _;
        ctx.metrics.on_scrape(weak);
        Ok(Some(app))
    }
}

/// Whose fault a failed admin statement is: an unreachable or failing server
/// is a dependency outage; anything else (rights, names) the operator's.
pub(crate) fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest's calls, straight on the `Host` trait (no wasm): an app
    /// without `[postgres]` gets `unavailable`, not a trap.
    #[tokio::test]
    async fn an_app_without_postgres_gets_unavailable() {
        use bindings::Host as _;
        let ctx = PostgresCtx::new(None);
        let mut table = ResourceTable::new();
        let mut view = ctx.view(&mut table, 1 << 20);
        assert!(matches!(
            view.query("SELECT 1".into(), vec![]).await.unwrap(),
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(
            view.execute("SELECT 1".into(), vec![]).await.unwrap(),
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(
            view.begin().await.unwrap(),
            Err(Error::Unavailable(_))
        ));
    }
}
