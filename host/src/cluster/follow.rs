//! `LISTEN alorig_deploys`: every change another host commits is announced on
//! it, and applied here by [`Apps::catch_up`]. Announcements sent while this
//! host was not listening (PostgreSQL down, the connection lost, the host
//! starting) are not replayed by PostgreSQL, so every (re)connection starts
//! with a catch-up read, and a quiet connection re-reads now and then (soon,
//! with a backoff, while an app failed to load here).

use super::Readiness;
use crate::deploy::{
    Apps,
    shared::{CHANNEL, Shared},
};
use std::{sync::Arc, time::Duration};

/// A connection with no announcement re-reads this often (a safety net: one
/// small query).
const QUIET_READ: Duration = Duration::from_secs(30);
/// Waits between attempts to reach PostgreSQL, doubling up to the longest.
const RETRY: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub async fn follow(apps: Arc<Apps>, shared: Arc<Shared>, ready: Readiness) {
    let mut retry = RETRY;
    let mut warned = false;
    loop {
        let listener = async {
            let pool = shared.ready().await?;
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(CHANNEL).await?;
            anyhow::Ok(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(err) => {
                if !warned {
                    tracing::warn!(
                        fault = "dependency",
                        "cannot follow the cluster's deploys (serving the versions in the data dir; retrying): {err:#}"
                    );
                    warned = true;
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        // Listening from here on: whatever changed before is in this read.
        let Ok(initial_failed) = catch_up(&apps, &ready).await else {
            tokio::time::sleep(retry).await;
            continue;
        };
        if warned {
            tracing::info!("following the cluster's deploys again");
            warned = false;
        }
        retry = RETRY;
        // After an app failed to load (PostgreSQL busy, a compile cut short),
        // the next read comes soon, not after a quiet period.
        let mut failed = initial_failed;
        let mut again = RETRY;
        loop {
            let wait = if failed { again } else { QUIET_READ };
            match tokio::time::timeout(wait, listener.try_recv()).await {
                // An announcement, or `None`: reconnected, announcements may be lost.
                Ok(Ok(_)) | Err(_) => match catch_up(&apps, &ready).await {
                    Ok(still_failed) => {
                        again = if still_failed && failed {
                            (again * 2).min(RETRY_MAX)
                        } else {
                            RETRY
                        };
                        failed = still_failed;
                    }
                    Err(_) => break,
                },
                Ok(Err(err)) => {
                    tracing::warn!(
                        fault = "dependency",
                        "lost the connection that follows the cluster's deploys: {err}"
                    );
                    warned = true;
                    break;
                }
            }
        }
    }
}

/// One catch-up; true if an app could not be brought to the cluster's version.
async fn catch_up(apps: &Apps, ready: &Readiness) -> anyhow::Result<bool> {
    match apps.catch_up().await {
        Ok(done) => {
            if !ready.is_caught_up() {
                tracing::info!(
                    changed = done.changed.len(),
                    imported = done.imported.len(),
                    removed = done.removed.len(),
                    "caught up with the cluster's versions: ready"
                );
                ready.set_caught_up();
            }
            Ok(!done.failed.is_empty())
        }
        Err(err) => {
            tracing::warn!(
                fault = "dependency",
                "cannot read the cluster's versions: {err:#}"
            );
            Err(err)
        }
    }
}
