//! The host's own job store in PostgreSQL: schema `alorig_jobs` in the database
//! of `postgres_url` (never an app's database; apps' roles have no rights on it).
//! Every host of a cluster shares it, and correctness rests on the database:
//!
//! * a job is run by whoever flips it `pending → running` in [`JobStore::claim`]
//!   (`FOR UPDATE SKIP LOCKED`, so hosts never wait on each other), with a lease;
//!   a running job whose lease passed (its host died) is claimed again;
//! * a result is written only by the holder of the lease (`leased_by` and the
//!   attempt number must still match), so a host that lost its lease cannot
//!   overwrite the new run's outcome;
//! * a timer firing is the row `(app, timer, scheduled_at)`: the one host whose
//!   `INSERT … ON CONFLICT DO NOTHING` lands runs it.
//!
//! New jobs `NOTIFY alorig_jobs, '<app>'` (a trigger), so idle workers on every
//! host wake at once instead of polling.

use chrono::{DateTime, Utc};
use sqlx::{
    ConnectOptions as _, Executor as _, Row as _,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};
use std::{str::FromStr as _, time::Duration};

/// The NOTIFY channel new jobs are announced on (payload: the app's name).
pub const CHANNEL: &str = "alorig_jobs";

const SCHEMA: &[&str] = &[
    "CREATE SCHEMA IF NOT EXISTS alorig_jobs",
    "REVOKE ALL ON SCHEMA alorig_jobs FROM PUBLIC",
    "CREATE TABLE IF NOT EXISTS alorig_jobs.jobs (
        id bigserial PRIMARY KEY,
        app text NOT NULL,
        name text NOT NULL,
        payload bytea NOT NULL,
        run_at timestamptz NOT NULL,
        state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'dead')),
        attempts int NOT NULL DEFAULT 0,
        lease_until timestamptz,
        leased_by text,
        last_error text,
        idempotency_key text,
        created_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz)",
    "CREATE INDEX IF NOT EXISTS jobs_due ON alorig_jobs.jobs (app, state, run_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON alorig_jobs.jobs (app, idempotency_key)
        WHERE idempotency_key IS NOT NULL AND state IN ('pending', 'running')",
    "CREATE TABLE IF NOT EXISTS alorig_jobs.timer_firings (
        app text NOT NULL,
        timer text NOT NULL,
        scheduled_at timestamptz NOT NULL,
        host text NOT NULL,
        state text NOT NULL,
        lease_until timestamptz NOT NULL,
        finished_at timestamptz,
        PRIMARY KEY (app, timer, scheduled_at))",
    "CREATE OR REPLACE FUNCTION alorig_jobs.announce() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('alorig_jobs', NEW.app); RETURN NULL; END $$",
    "CREATE OR REPLACE TRIGGER jobs_announce AFTER INSERT ON alorig_jobs.jobs FOR EACH ROW EXECUTE FUNCTION alorig_jobs.announce()",
];

/// Why the store could not do something; the guest sees `unavailable`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError(crate::capabilities::postgres::describe(&err))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub struct JobStore {
    pool: PgPool,
    options: PgConnectOptions,
    schema: tokio::sync::OnceCell<()>,
}

/// A job this host now runs, under its lease.
#[derive(Debug)]
pub struct Claimed {
    pub id: i64,
    pub name: String,
    pub payload: Vec<u8>,
    /// 1 for the first run.
    pub attempt: i32,
    pub run_at: DateTime<Utc>,
}

/// What `schedule` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Scheduled {
    New(i64),
    /// A pending or running job already has this idempotency key.
    Existing(i64),
    /// The app already has `max_pending` pending jobs.
    Full,
}

/// Who runs a timer firing.
#[derive(Debug, PartialEq, Eq)]
pub enum FiringClaim {
    Run,
    /// This host claimed it, but the previous firing is still running.
    Skip,
    /// Another host has it.
    Taken,
}

/// A job as operators see it (`alorig-host jobs`).
/// How many of an app's jobs are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JobCounts {
    pub pending: i64,
    pub running: i64,
    pub dead: i64,
    pub done: i64,
}

#[derive(Debug, serde::Serialize)]
pub struct JobRow {
    pub id: i64,
    pub name: String,
    pub state: String,
    pub attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub leased_by: Option<String>,
    pub last_error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    pub payload_bytes: i32,
}

impl JobStore {
    /// Parses `postgres_url`; connects lazily.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| anyhow::anyhow!("postgres_url: not a valid postgres:// URL"))?
            .application_name("alorig-host jobs")
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            options,
            schema: tokio::sync::OnceCell::new(),
        })
    }

    /// Connection settings for the LISTEN connection.
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// Creates the schema once per process (under an advisory lock, as several
    /// hosts may start together); retried by the next call after a failure.
    pub async fn ready(&self) -> Result<&PgPool> {
        self.schema
            .get_or_try_init(|| async {
                let mut tx = self.pool.begin().await?;
                tx.execute("SELECT pg_advisory_xact_lock(7406519262)")
                    .await?;
                // "already exists, skipping" at every start is not news.
                tx.execute("SET LOCAL client_min_messages = warning")
                    .await?;
                for statement in SCHEMA {
                    tx.execute(*statement).await?;
                }
                tx.commit().await?;
                Ok::<_, StoreError>(())
            })
            .await?;
        Ok(&self.pool)
    }

    pub async fn schedule(
        &self,
        app: &str,
        name: &str,
        payload: &[u8],
        run_at: DateTime<Utc>,
        key: Option<&str>,
        max_pending: u32,
    ) -> Result<Scheduled> {
        let pool = self.ready().await?;
        let existing = || async {
            let Some(key) = key else {
                return Ok::<_, StoreError>(None);
            };
            let row = sqlx::query(
                "SELECT id FROM alorig_jobs.jobs WHERE app = $1 AND idempotency_key = $2 AND state IN ('pending', 'running')",
            )
            .bind(app)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| r.get::<i64, _>(0)))
        };
        if let Some(id) = existing().await? {
            return Ok(Scheduled::Existing(id));
        }
        // The count and the insert under one per-app lock, taken in its own
        // statement: a statement's snapshot predates a lock it waits for, so
        // concurrent schedulers would otherwise each count 499 and all insert.
        let mut tx = pool.begin().await?;
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('alorig_jobs.pending:' || $1, 0))",
        )
        .bind(app)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO alorig_jobs.jobs (app, name, payload, run_at, idempotency_key)
             SELECT $1, $2, $3, $4, $5
             WHERE (SELECT count(*) FROM alorig_jobs.jobs WHERE app = $1 AND state = 'pending') < $6
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(app)
        .bind(name)
        .bind(payload)
        .bind(run_at)
        .bind(key)
        .bind(i64::from(max_pending))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match inserted {
            Some(row) => Ok(Scheduled::New(row.get(0))),
            // Lost a race on the same key, or the queue is full.
            None => Ok(existing()
                .await?
                .map(Scheduled::Existing)
                .unwrap_or(Scheduled::Full)),
        }
    }

    /// Deletes a pending job of `app`; false when there is none with this id.
    pub async fn cancel(&self, app: &str, id: i64) -> Result<bool> {
        let pool = self.ready().await?;
        let done = sqlx::query(
            "DELETE FROM alorig_jobs.jobs WHERE id = $1 AND app = $2 AND state = 'pending'",
        )
        .bind(id)
        .bind(app)
        .execute(pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Leases up to `limit` due jobs of `app` for `lease`: pending ones whose
    /// time has come, and running ones whose lease expired (their host died).
    pub async fn claim(
        &self,
        app: &str,
        host: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Claimed>> {
        let pool = self.ready().await?;
        let rows = sqlx::query(
            "UPDATE alorig_jobs.jobs j
             SET state = 'running', attempts = j.attempts + 1, leased_by = $2,
                 lease_until = now() + make_interval(secs => $3)
             FROM (SELECT id FROM alorig_jobs.jobs
                   WHERE app = $1 AND ((state = 'pending' AND run_at <= now()) OR (state = 'running' AND lease_until < now()))
                   ORDER BY run_at LIMIT $4 FOR UPDATE SKIP LOCKED) due
             WHERE j.id = due.id
             RETURNING j.id, j.name, j.payload, j.attempts, j.run_at",
        )
        .bind(app)
        .bind(host)
        .bind(lease.as_secs_f64())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Claimed {
                id: r.get(0),
                name: r.get(1),
                payload: r.get(2),
                attempt: r.get(3),
                run_at: r.get(4),
            })
            .collect())
    }

    /// Gives back the job leases `host` holds (a graceful shutdown): its running
    /// jobs are pending again at once, the interrupted attempt not counted, so
    /// another host runs them now instead of after the lease. Answers how many.
    pub async fn release(&self, host: &str) -> Result<u64> {
        let pool = self.ready().await?;
        let done = sqlx::query(
            "UPDATE alorig_jobs.jobs
             SET state = 'pending', attempts = greatest(attempts - 1, 0), lease_until = NULL,
                 leased_by = NULL, run_at = least(run_at, now())
             WHERE leased_by = $1 AND state = 'running'",
        )
        .bind(host)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records a run's end, if this host still holds the job's lease: `done`,
    /// or (with an error) `pending` again after `retry_in`, or `dead` when
    /// `retry_in` is None. Answers the new state, or None when the lease was lost.
    pub async fn finish(
        &self,
        id: i64,
        host: &str,
        attempt: i32,
        error: Option<&str>,
        retry_in: Option<Duration>,
    ) -> Result<Option<String>> {
        let pool = self.ready().await?;
        let (state, delay) = match (error, retry_in) {
            (None, _) => ("done", 0.0),
            (Some(_), Some(delay)) => ("pending", delay.as_secs_f64()),
            (Some(_), None) => ("dead", 0.0),
        };
        let row = sqlx::query(
            "UPDATE alorig_jobs.jobs
             SET state = $4, last_error = COALESCE($5, last_error), lease_until = NULL,
                 leased_by = CASE WHEN $4 = 'pending' THEN NULL ELSE leased_by END,
                 run_at = CASE WHEN $4 = 'pending' THEN now() + make_interval(secs => $6) ELSE run_at END,
                 finished_at = CASE WHEN $4 = 'pending' THEN NULL ELSE now() END
             WHERE id = $1 AND leased_by = $2 AND attempts = $3 AND state = 'running'
             RETURNING state",
        )
        .bind(id)
        .bind(host)
        .bind(attempt)
        .bind(state)
        .bind(error)
        .bind(delay)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// When the app next has something to do: the earliest pending `run_at` or
    /// running `lease_until`.
    pub async fn next_due(&self, app: &str) -> Result<Option<DateTime<Utc>>> {
        let pool = self.ready().await?;
        let row = sqlx::query(
            "SELECT least(
                (SELECT min(run_at) FROM alorig_jobs.jobs WHERE app = $1 AND state = 'pending'),
                (SELECT min(lease_until) FROM alorig_jobs.jobs WHERE app = $1 AND state = 'running'))",
        )
        .bind(app)
        .fetch_one(pool)
        .await?;
        Ok(row.get(0))
    }

    /// Jobs of `app` by state.
    pub async fn counts(&self, app: &str) -> Result<JobCounts> {
        let pool = self.ready().await?;
        let rows = sqlx::query(
            "SELECT state, count(*) FROM alorig_jobs.jobs WHERE app = $1 GROUP BY state",
        )
        .bind(app)
        .fetch_all(pool)
        .await?;
        let mut counts = JobCounts::default();
        for row in rows {
            let count = row.get(1);
            match row.get::<String, _>(0).as_str() {
                "pending" => counts.pending = count,
                "running" => counts.running = count,
                "dead" => counts.dead = count,
                _ => counts.done = count,
            }
        }
        Ok(counts)
    }

    /// The app's pending, running and dead jobs, soonest first (at most `limit`).
    pub async fn list(&self, app: &str, limit: i64) -> Result<Vec<JobRow>> {
        let pool = self.ready().await?;
        let rows = sqlx::query(
            "SELECT id, name, state, attempts, run_at, created_at, lease_until, leased_by, last_error, finished_at, length(payload)
             FROM alorig_jobs.jobs WHERE app = $1 AND state IN ('pending', 'running', 'dead')
             ORDER BY CASE state WHEN 'running' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, run_at, id LIMIT $2",
        )
        .bind(app)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| JobRow {
                id: r.get(0),
                name: r.get(1),
                state: r.get(2),
                attempts: r.get(3),
                run_at: r.get(4),
                created_at: r.get(5),
                lease_until: r.get(6),
                leased_by: r.get(7),
                last_error: r.get(8),
                finished_at: r.get(9),
                payload_bytes: r.get(10),
            })
            .collect())
    }

    /// Claims the firing of `timer` at `scheduled_at` for this host: `Run`, or
    /// `Skip` when the timer's previous firing still runs (on any host).
    pub async fn claim_firing(
        &self,
        app: &str,
        timer: &str,
        scheduled_at: DateTime<Utc>,
        host: &str,
        lease: Duration,
    ) -> Result<FiringClaim> {
        let pool = self.ready().await?;
        let row = sqlx::query(
            "INSERT INTO alorig_jobs.timer_firings (app, timer, scheduled_at, host, state, lease_until)
             SELECT $1, $2, $3, $4,
                    CASE WHEN EXISTS (SELECT 1 FROM alorig_jobs.timer_firings
                                      WHERE app = $1 AND timer = $2 AND state = 'running'
                                        AND lease_until > now() AND scheduled_at < $3)
                         THEN 'skipped' ELSE 'running' END,
                    now() + make_interval(secs => $5)
             ON CONFLICT DO NOTHING RETURNING state",
        )
        .bind(app)
        .bind(timer)
        .bind(scheduled_at)
        .bind(host)
        .bind(lease.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        Ok(match row.map(|r| r.get::<String, _>(0)) {
            None => FiringClaim::Taken,
            Some(state) if state == "skipped" => FiringClaim::Skip,
            Some(_) => FiringClaim::Run,
        })
    }

    /// Records how a firing this host ran ended (`outcome` label).
    pub async fn finish_firing(
        &self,
        app: &str,
        timer: &str,
        scheduled_at: DateTime<Utc>,
        outcome: &str,
    ) -> Result<()> {
        let pool = self.ready().await?;
        sqlx::query(
            "UPDATE alorig_jobs.timer_firings SET state = $4, finished_at = now()
             WHERE app = $1 AND timer = $2 AND scheduled_at = $3",
        )
        .bind(app)
        .bind(timer)
        .bind(scheduled_at)
        .bind(outcome)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// The latest firing of `timer` any host claimed.
    pub async fn last_firing(&self, app: &str, timer: &str) -> Result<Option<DateTime<Utc>>> {
        let pool = self.ready().await?;
        let row = sqlx::query(
            "SELECT max(scheduled_at) FROM alorig_jobs.timer_firings WHERE app = $1 AND timer = $2",
        )
        .bind(app)
        .bind(timer)
        .fetch_one(pool)
        .await?;
        Ok(row.get(0))
    }

    /// Forgets finished jobs after a day and old firings (keeping each timer's
    /// latest, which catch-up needs).
    pub async fn tidy(&self) -> Result<()> {
        let pool = self.ready().await?;
        pool.execute("DELETE FROM alorig_jobs.jobs WHERE state = 'done' AND finished_at < now() - interval '1 day'").await?;
        pool.execute(
            "DELETE FROM alorig_jobs.timer_firings f WHERE scheduled_at < now() - interval '1 day'
             AND scheduled_at < (SELECT max(scheduled_at) FROM alorig_jobs.timer_firings g WHERE g.app = f.app AND g.timer = f.timer)",
        )
        .await?;
        Ok(())
    }
}
