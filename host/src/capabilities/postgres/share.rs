//! Each host's share of an app's `[postgres] max_connections`. All hosts of a
//! cluster use one PostgreSQL server, so the manifest's figure is what the
//! app may hold there in all, whatever the number of hosts: with N hosts up
//! (their heartbeat rows, `crate::cluster::nodes`), each host's pool gets
//! `max_connections / N`, the remainder going one each to the first hosts by
//! `node_name`, and never less than 1. The shares of the hosts up add up to
//! `max_connections` (or to N when there are more hosts than connections),
//! which is also what the role's `CONNECTION LIMIT` allows (`provision.rs`),
//! and what `postgres_max_connections` is checked against.
//!
//! Every host counts the hosts up every [`RECOUNT`]; when its share changes,
//! each app's pool is rebuilt at the new size ([`SharedPool`]): new statements
//! go to the new pool at once, the old one closes its idle connections now and
//! each busy one as it is given back. So a host that joins takes its share
//! within a few seconds of its first heartbeat; a host stopped gracefully
//! gives its share back at once (its row says stopped), one that died without
//! a word once its row is older than 10 s. Until the others have shrunk, a
//! new host may briefly find the role at its limit: its statements then fail
//! `unavailable`, as on any connection refusal.

use sqlx::{
    Postgres,
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};
use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::watch;

/// How often a host counts the hosts up.
pub(super) const RECOUNT: Duration = Duration::from_secs(2);

/// Where this host stands among the hosts up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Hosts up, this one included.
    pub hosts: u32,
    /// How many of them sort before this one by `node_name`.
    pub rank: u32,
}

impl Standing {
    /// A host on its own.
    pub const ALONE: Standing = Standing { hosts: 1, rank: 0 };

    /// This host's pool for an app allowed `max` connections in all.
    pub fn share(self, max: u32) -> u32 {
        let hosts = self.hosts.max(1);
        let extra = u32::from(self.rank < max % hosts);
        (max / hosts + extra).max(1)
    }
}

/// Hosts up by their heartbeat rows, this one counted whether or not its row
/// is written yet. Fails before any host has created the table.
pub(super) async fn count(admin: &PgPool, node: &str) -> Result<Standing, sqlx::Error> {
    let (others, before): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE node_name < $1) FROM alorig_cluster.nodes
         WHERE node_name <> $1 AND stopped_at IS NULL AND last_seen > now() - interval '10 seconds'",
    )
    .bind(node)
    .fetch_one(admin)
    .await?;
    Ok(Standing {
        hosts: 1 + others.max(0) as u32,
        rank: before.max(0) as u32,
    })
}

/// Recounts every [`RECOUNT`] for as long as someone listens; a failed count
/// (PostgreSQL away) keeps the last standing.
pub(super) async fn recount(admin: PgPool, node: String, standing: watch::Sender<Standing>) {
    let mut every = tokio::time::interval(RECOUNT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = standing.closed() => return,
        }
        if let Ok(now) = count(&admin, &node).await {
            standing.send_if_modified(|was| std::mem::replace(was, now) != now);
        }
    }
}

/// How an app's pool is (re)built.
pub(super) struct PoolRecipe {
    pub options: PgConnectOptions,
    pub acquire_timeout: Duration,
    /// When a connection last failed (ms since the Unix epoch): connections
    /// are pinged before use for a while after it.
    pub suspect: Arc<AtomicU64>,
}

impl PoolRecipe {
    fn build(&self, size: u32) -> PgPool {
        let suspect = self.suspect.clone();
        PgPoolOptions::new()
            .max_connections(size)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
            // A ping per acquire would double the latency of a one-row query;
            // pinging only while connections are suspect recovers from restarts.
            .test_before_acquire(false)
            .before_acquire(move |conn, _meta| {
                let suspect = suspect.clone();
                Box::pin(async move {
                    let since =
                        super::query::now_ms().saturating_sub(suspect.load(Ordering::Relaxed));
                    if since < super::SUSPECT_WINDOW.as_millis() as u64 {
                        use sqlx::Connection as _;
                        return Ok(conn.ping().await.is_ok());
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(self.options.clone())
    }
}

/// An app's pool, sized to this host's share and rebuilt when it changes.
pub(super) struct SharedPool {
    app: Arc<str>,
    recipe: PoolRecipe,
    /// The app's `max_connections`, for all hosts together.
    max: u32,
    current: RwLock<PgPool>,
    size: AtomicU32,
    closed: AtomicBool,
    /// The pool's size, for `alorig_app_pg_connections_max`.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl SharedPool {
    /// Builds the pool for `standing` and follows the standing from then on.
    pub(super) fn new(
        app: Arc<str>,
        recipe: PoolRecipe,
        max: u32,
        mut standing: watch::Receiver<Standing>,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> Arc<Self> {
        let size = standing.borrow_and_update().share(max);
        gauge.set(i64::from(size));
        let pool = Arc::new(Self {
            current: RwLock::new(recipe.build(size)),
            app,
            recipe,
            max,
            size: AtomicU32::new(size),
            closed: AtomicBool::new(false),
            gauge,
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            while standing.changed().await.is_ok() {
                let now = *standing.borrow_and_update();
                match weak.upgrade() {
                    Some(pool) if !pool.closed.load(Ordering::Acquire) => pool.resize(now),
                    _ => return,
                }
            }
        });
        pool
    }

    /// The pool statements use now.
    pub(super) fn get(&self) -> PgPool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A connection of the pool in use. A statement that was waiting for one
    /// when the pool was rebuilt at another size waits again in the new pool.
    pub(super) async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        match self.get().acquire().await {
            Err(sqlx::Error::PoolClosed) if !self.closed.load(Ordering::Acquire) => {
                self.get().acquire().await
            }
            other => other,
        }
    }

    /// A transaction on a connection of the pool in use (as [`Self::acquire`]).
    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        match self.get().begin().await {
            Err(sqlx::Error::PoolClosed) if !self.closed.load(Ordering::Acquire) => {
                self.get().begin().await
            }
            other => other,
        }
    }

    /// This host's share: the most connections the pool opens.
    pub(super) fn size(&self) -> u32 {
        self.size.load(Ordering::Relaxed)
    }

    fn resize(&self, standing: Standing) {
        let size = standing.share(self.max);
        let old = {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            if size == self.size.load(Ordering::Relaxed) || self.closed.load(Ordering::Acquire) {
                return;
            }
            self.size.store(size, Ordering::Relaxed);
            std::mem::replace(&mut *current, self.recipe.build(size))
        };
        self.gauge.set(i64::from(size));
        tracing::info!(
            app = %self.app,
            hosts = standing.hosts,
            "PostgreSQL pool resized to {size} of the app's {} connections",
            self.max
        );
        // Idle connections close now, busy ones when their statement is done.
        tokio::spawn(async move { old.close().await });
    }

    /// Closes the pool for good: the app is unloaded.
    pub(super) async fn close(&self) {
        let pool = {
            let current = self.current.write().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::Release);
            current.clone()
        };
        pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_max_connections_and_are_never_zero() {
        let shares = |max: u32, hosts: u32| -> Vec<u32> {
            (0..hosts)
                .map(|rank| Standing { hosts, rank }.share(max))
                .collect()
        };
        assert_eq!(shares(7, 1), [7]);
        assert_eq!(shares(7, 2), [4, 3]);
        assert_eq!(shares(7, 3), [3, 2, 2]);
        assert_eq!(shares(10, 5), [2, 2, 2, 2, 2]);
        for max in 1..40 {
            for hosts in 1..=max {
                assert_eq!(shares(max, hosts).iter().sum::<u32>(), max, "{max}/{hosts}");
            }
        }
        // More hosts than connections: one each.
        assert_eq!(shares(2, 3), [1, 1, 1]);
        assert_eq!(Standing::ALONE.share(4), 4);
    }
}
