//! Deployed versions in PostgreSQL, for every host sharing `postgres_url`
//! (schema `alorig_cluster` in that database, never an app's):
//!
//! ```text
//! blobs     (digest, bytes)                         components, content-addressed (sha256)
//! versions  (app, version, manifest, digest, …)     each kept version of each app
//! apps      (app, current, last_version, …)         the version in force; current NULL = removed
//! history   (app, action, from, to, node, at)       every deploy, rollback, removal
//! ```
//!
//! A change is one transaction that ends with `NOTIFY alorig_deploys, '<app>'`,
//! so every host hears of it once it is committed, and a host that was not
//! listening finds it in [`Shared::state`] (the catch-up read). Version numbers
//! come from `apps.last_version` under the app's row lock: two hosts deploying
//! the same app at once get consecutive numbers. The data dir's [`super::store`]
//! stays each host's cache of the versions in force, so a host that starts
//! while PostgreSQL is down serves what it last knew.

use anyhow::{Context as _, Result, anyhow};
use sqlx::{
    ConnectOptions as _, Executor as _, Row as _,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};
use std::{collections::BTreeMap, path::Path, str::FromStr as _, time::Duration};

/// The channel changes are announced on (payload: the app's name).
pub const CHANNEL: &str = "alorig_deploys";

const SCHEMA: &[&str] = &[
    "CREATE SCHEMA IF NOT EXISTS alorig_cluster",
    "REVOKE ALL ON SCHEMA alorig_cluster FROM PUBLIC",
    "CREATE TABLE IF NOT EXISTS alorig_cluster.blobs (
        digest text PRIMARY KEY,
        bytes bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS alorig_cluster.versions (
        app text NOT NULL,
        version integer NOT NULL,
        manifest text NOT NULL,
        digest text NOT NULL REFERENCES alorig_cluster.blobs,
        deployed_at timestamptz NOT NULL DEFAULT now(),
        deployed_by text NOT NULL,
        PRIMARY KEY (app, version))",
    "CREATE TABLE IF NOT EXISTS alorig_cluster.apps (
        app text PRIMARY KEY,
        current integer,
        last_version integer NOT NULL,
        changed_at timestamptz NOT NULL DEFAULT now(),
        changed_by text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alorig_cluster.history (
        id bigserial PRIMARY KEY,
        app text NOT NULL,
        action text NOT NULL,
        from_version integer,
        to_version integer,
        node text NOT NULL,
        at timestamptz NOT NULL DEFAULT now())",
    // One row per host: its heartbeat (`crate::cluster::nodes`).
    "CREATE TABLE IF NOT EXISTS alorig_cluster.nodes (
        node_name text PRIMARY KEY,
        address text NOT NULL,
        version text NOT NULL,
        started_at timestamptz NOT NULL,
        last_seen timestamptz NOT NULL,
        stopped_at timestamptz,
        status jsonb NOT NULL DEFAULT '{}')",
];

/// The version in force of an app, as PostgreSQL has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    pub version: u32,
    /// sha256 of the component, hex (what `App::digest` is).
    pub digest: String,
}

/// A stored version: its manifest text, its component and the component's digest.
pub struct Fetched {
    pub manifest: String,
    pub component: Vec<u8>,
    pub digest: String,
}

pub struct Shared {
    pool: PgPool,
    options: PgConnectOptions,
    /// This host's `node_name`, in `history` and `deployed_by`.
    node: String,
    /// Versions kept per app (the current one always among them).
    keep: u32,
    schema: tokio::sync::OnceCell<()>,
}

fn pg(what: &str) -> impl FnOnce(sqlx::Error) -> anyhow::Error + '_ {
    move |e| {
        anyhow!(
            "PostgreSQL (postgres_url): cannot {what}: {}",
            crate::capabilities::postgres::describe(&e)
        )
    }
}

impl Shared {
    /// Parses `postgres_url`; connects lazily.
    pub fn new(url: &str, node: &str, keep: u32) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| anyhow!("postgres_url: not a valid postgres:// URL"))?
            .application_name("alorig-host deploys")
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            options,
            node: node.to_string(),
            keep: keep.max(1),
            schema: tokio::sync::OnceCell::new(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Creates the schema once per process (under an advisory lock: hosts start
    /// together); a failure is retried by the next call.
    pub async fn ready(&self) -> Result<&PgPool> {
        self.schema
            .get_or_try_init(|| async {
                let mut tx = self.pool.begin().await?;
                tx.execute("SELECT pg_advisory_xact_lock(7406519263)")
                    .await?;
                tx.execute("SET LOCAL client_min_messages = warning")
                    .await?;
                for statement in SCHEMA {
                    tx.execute(*statement).await?;
                }
                tx.commit().await
            })
            .await
            .map_err(pg("create the schema alorig_cluster"))?;
        Ok(&self.pool)
    }

    /// Every app PostgreSQL knows: `Some` with the version in force, `None`
    /// for an app removed cluster-wide.
    pub async fn state(&self) -> Result<BTreeMap<String, Option<Current>>> {
        let pool = self.ready().await?;
        let rows = sqlx::query(
            "SELECT a.app, a.current, v.digest FROM alorig_cluster.apps a
             LEFT JOIN alorig_cluster.versions v ON v.app = a.app AND v.version = a.current",
        )
        .fetch_all(pool)
        .await
        .map_err(pg("read the deployed versions"))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let current = match (
                    row.get::<Option<i32>, _>(1),
                    row.get::<Option<String>, _>(2),
                ) {
                    (Some(version), Some(digest)) => Some(Current {
                        version: version as u32,
                        digest,
                    }),
                    _ => None,
                };
                (row.get::<String, _>(0), current)
            })
            .collect())
    }

    /// The kept versions of an app, oldest first.
    pub async fn versions(&self, app: &str) -> Result<Vec<u32>> {
        let pool = self.ready().await?;
        let rows: Vec<(i32,)> = sqlx::query_as(
            "SELECT version FROM alorig_cluster.versions WHERE app = $1 ORDER BY version",
        )
        .bind(app)
        .fetch_all(pool)
        .await
        .map_err(pg("read the kept versions"))?;
        Ok(rows.into_iter().map(|(v,)| v as u32).collect())
    }

    /// One stored version, component included.
    pub async fn fetch(&self, app: &str, version: u32) -> Result<Fetched> {
        let pool = self.ready().await?;
        let row = sqlx::query(
            "SELECT v.manifest, b.bytes, v.digest FROM alorig_cluster.versions v
             JOIN alorig_cluster.blobs b ON b.digest = v.digest
             WHERE v.app = $1 AND v.version = $2",
        )
        .bind(app)
        .bind(version as i32)
        .fetch_optional(pool)
        .await
        .map_err(pg("read a deployed version"))?
        .ok_or_else(|| anyhow!("PostgreSQL has no version {version} of {app}"))?;
        Ok(Fetched {
            manifest: row.get(0),
            component: row.get(1),
            digest: row.get(2),
        })
    }

    /// Stores a new version of `app` and puts it in force, everywhere: answers
    /// its number. `component` is read here (the deploy's spooled upload).
    pub async fn publish(
        &self,
        app: &str,
        manifest: &str,
        component: &Path,
        digest: &str,
    ) -> Result<u32> {
        let bytes = tokio::fs::read(component)
            .await
            .with_context(|| format!("cannot read {}", component.display()))?;
        self.put(app, None, manifest, &bytes, digest, "deploy")
            .await
    }

    /// Puts this host's version of an app PostgreSQL has never heard of into
    /// PostgreSQL, under its own number (a host's data dir joining a cluster).
    /// Answers false, changing nothing, when PostgreSQL knows the app already.
    pub async fn import(
        &self,
        app: &str,
        version: u32,
        manifest: &str,
        component: &[u8],
        digest: &str,
    ) -> Result<bool> {
        match self
            .put(app, Some(version), manifest, component, digest, "import")
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.downcast_ref::<Known>().is_some() => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn put(
        &self,
        app: &str,
        number: Option<u32>,
        manifest: &str,
        component: &[u8],
        digest: &str,
        action: &str,
    ) -> Result<u32> {
        let pool = self.ready().await?;
        let write = pg("store the new version");
        let mut tx = pool.begin().await.map_err(pg("store the new version"))?;
        // The app's row, locked: version numbers are handed out one at a time.
        let previous: Option<(Option<i32>, i32)> = sqlx::query_as(
            "SELECT current, last_version FROM alorig_cluster.apps WHERE app = $1 FOR UPDATE",
        )
        .bind(app)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg("read the app's versions"))?;
        let (from, version) = match (number, &previous) {
            (Some(_), Some(_)) => return Err(anyhow::Error::new(Known)),
            (Some(n), None) => (None, n as i32),
            (None, Some((current, last))) => (*current, last + 1),
            (None, None) => (None, 1),
        };
        sqlx::query(
            "INSERT INTO alorig_cluster.blobs (digest, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(digest)
        .bind(component)
        .execute(&mut *tx)
        .await
        .map_err(pg("store the component"))?;
        sqlx::query(
            "INSERT INTO alorig_cluster.versions (app, version, manifest, digest, deployed_by)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (app, version) DO UPDATE SET manifest = $3, digest = $4, deployed_by = $5, deployed_at = now()",
        )
        .bind(app)
        .bind(version)
        .bind(manifest)
        .bind(digest)
        .bind(&self.node)
        .execute(&mut *tx)
        .await
        .map_err(pg("store the new version"))?;
        sqlx::query(
            "INSERT INTO alorig_cluster.apps (app, current, last_version, changed_by) VALUES ($1, $2, $2, $3)
             ON CONFLICT (app) DO UPDATE SET current = $2, last_version = $2, changed_at = now(), changed_by = $3",
        )
        .bind(app)
        .bind(version)
        .bind(&self.node)
        .execute(&mut *tx)
        .await
        .map_err(pg("put the new version in force"))?;
        self.changed(&mut tx, app, action, from, Some(version))
            .await?;
        self.prune(&mut tx, app, version).await?;
        tx.commit().await.map_err(write)?;
        Ok(version as u32)
    }

    /// Puts a kept version in force everywhere (a rollback).
    pub async fn set_current(&self, app: &str, version: u32) -> Result<()> {
        let pool = self.ready().await?;
        let mut tx = pool.begin().await.map_err(pg("roll back"))?;
        let from: Option<(Option<i32>,)> =
            sqlx::query_as("SELECT current FROM alorig_cluster.apps WHERE app = $1 FOR UPDATE")
                .bind(app)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg("roll back"))?;
        let updated = sqlx::query(
            "UPDATE alorig_cluster.apps SET current = $2, changed_at = now(), changed_by = $3
             WHERE app = $1 AND EXISTS (SELECT 1 FROM alorig_cluster.versions WHERE app = $1 AND version = $2)",
        )
        .bind(app)
        .bind(version as i32)
        .bind(&self.node)
        .execute(&mut *tx)
        .await
        .map_err(pg("roll back"))?;
        anyhow::ensure!(
            updated.rows_affected() == 1,
            "PostgreSQL has no version {version} of {app}"
        );
        self.changed(
            &mut tx,
            app,
            "rollback",
            from.and_then(|f| f.0),
            Some(version as i32),
        )
        .await?;
        tx.commit().await.map_err(pg("roll back"))
    }

    /// Removes an app everywhere: no version in force, its versions deleted,
    /// the row kept (so a host holding it in its data dir removes it too).
    pub async fn remove(&self, app: &str) -> Result<()> {
        let pool = self.ready().await?;
        let mut tx = pool.begin().await.map_err(pg("remove the app"))?;
        let from: Option<(Option<i32>,)> =
            sqlx::query_as("SELECT current FROM alorig_cluster.apps WHERE app = $1 FOR UPDATE")
                .bind(app)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg("remove the app"))?;
        sqlx::query(
            "UPDATE alorig_cluster.apps SET current = NULL, changed_at = now(), changed_by = $2 WHERE app = $1",
        )
        .bind(app)
        .bind(&self.node)
        .execute(&mut *tx)
        .await
        .map_err(pg("remove the app"))?;
        sqlx::query("DELETE FROM alorig_cluster.versions WHERE app = $1")
            .bind(app)
            .execute(&mut *tx)
            .await
            .map_err(pg("remove the app"))?;
        self.changed(&mut tx, app, "remove", from.and_then(|f| f.0), None)
            .await?;
        sqlx::query(
            "DELETE FROM alorig_cluster.blobs b WHERE NOT EXISTS
             (SELECT 1 FROM alorig_cluster.versions v WHERE v.digest = b.digest)",
        )
        .execute(&mut *tx)
        .await
        .map_err(pg("remove the app"))?;
        tx.commit().await.map_err(pg("remove the app"))
    }

    /// Records a change in `history` and announces it (delivered on commit).
    async fn changed(
        &self,
        tx: &mut sqlx::PgConnection,
        app: &str,
        action: &str,
        from: Option<i32>,
        to: Option<i32>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO alorig_cluster.history (app, action, from_version, to_version, node)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(app)
        .bind(action)
        .bind(from)
        .bind(to)
        .bind(&self.node)
        .execute(&mut *tx)
        .await
        .map_err(pg("record the change"))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(app)
            .execute(&mut *tx)
            .await
            .map_err(pg("announce the change"))?;
        Ok(())
    }

    /// Deletes the oldest versions past the kept count (never `current`), and
    /// the components no version uses any more.
    async fn prune(&self, tx: &mut sqlx::PgConnection, app: &str, current: i32) -> Result<()> {
        sqlx::query(
            "DELETE FROM alorig_cluster.versions WHERE app = $1 AND version <> $2 AND version NOT IN
             (SELECT version FROM alorig_cluster.versions WHERE app = $1 AND version <> $2
              ORDER BY version DESC LIMIT $3)",
        )
        .bind(app)
        .bind(current)
        .bind(self.keep as i64 - 1)
        .execute(&mut *tx)
        .await
        .map_err(pg("delete old versions"))?;
        sqlx::query(
            "DELETE FROM alorig_cluster.blobs b WHERE NOT EXISTS
             (SELECT 1 FROM alorig_cluster.versions v WHERE v.digest = b.digest)",
        )
        .execute(&mut *tx)
        .await
        .map_err(pg("delete unused components"))?;
        Ok(())
    }

    /// Connection settings for the LISTEN connection.
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }
}

/// `import` of an app PostgreSQL already knows.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL knows this app already")]
struct Known;
