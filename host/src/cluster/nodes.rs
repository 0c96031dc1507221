//! The heartbeat row of each host in `alorig_cluster.nodes`: node_name,
//! address, the host's version, when it started and was last seen, and what it
//! serves (apps, versions, memory). It is how hosts and operators know of each
//! other (`alorig-host status --cluster`, `GET /v1/cluster`): a host whose row
//! has not been refreshed for [`GONE_AFTER`] is shown as gone.

use super::Node;
use crate::deploy::{Apps, shared::Shared};
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};

/// How often a host refreshes its row.
pub const BEAT: Duration = Duration::from_secs(2);
/// A row older than this is a host that is gone (crashed, cut off, stopped).
pub const GONE_AFTER: Duration = Duration::from_secs(10);

/// Refreshes this host's row every [`BEAT`], for as long as the host runs.
pub async fn heartbeat(apps: Arc<Apps>, shared: Arc<Shared>, node: Node) {
    let started = chrono::Utc::now();
    let mut every = tokio::time::interval(BEAT);
    let mut failing = false;
    loop {
        every.tick().await;
        let result = beat(&apps, &shared, &node, started).await;
        match (result, failing) {
            (Ok(()), true) => {
                tracing::info!("heartbeat row written again");
                failing = false;
            }
            (Err(err), false) => {
                tracing::warn!(
                    fault = "dependency",
                    "cannot write this host's heartbeat row: {err:#}"
                );
                failing = true;
            }
            _ => {}
        }
    }
}

/// What this host serves, as the row's `status` holds it.
fn status(apps: &Apps) -> Value {
    let apps_json: Vec<Value> = apps
        .snapshot()
        .iter()
        .map(|(name, d)| {
            json!({
                "name": name,
                "version": d.version,
                "digest": d.app.digest,
                "memory_bytes": d.app.budget.used(),
                "memory_peak_bytes": d.app.budget.peak(),
                "memory_limit_bytes": d.app.manifest.resources.memory.bytes(),
            })
        })
        .collect();
    json!({
        "apps": apps_json,
        "memory_budget_bytes": apps.memory_budget(),
        "resident_memory_bytes": crate::metrics::resident_memory_bytes(),
    })
}

async fn beat(
    apps: &Apps,
    shared: &Shared,
    node: &Node,
    started: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let pool = shared.ready().await?;
    sqlx::query(
        "INSERT INTO alorig_cluster.nodes (node_name, address, version, started_at, last_seen, status)
         VALUES ($1, $2, $3, $4, now(), $5::jsonb)
         ON CONFLICT (node_name) DO UPDATE SET address = $2, version = $3, started_at = $4,
             last_seen = now(), stopped_at = NULL, status = $5::jsonb",
    )
    .bind(&node.name)
    .bind(&node.address)
    .bind(env!("CARGO_PKG_VERSION"))
    .bind(started)
    .bind(status(apps).to_string())
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks this host stopped (a graceful shutdown), so it is not shown as lost.
pub async fn stopped(shared: &Shared, node: &str) -> anyhow::Result<()> {
    let pool = shared.ready().await?;
    sqlx::query("UPDATE alorig_cluster.nodes SET stopped_at = now() WHERE node_name = $1")
        .bind(node)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every host's row, with `state`: `up`, `gone` (no heartbeat for
/// [`GONE_AFTER`]) or `stopped`; what `GET /v1/cluster` answers.
pub async fn list(shared: &Shared) -> anyhow::Result<Value> {
    let pool = shared.ready().await?;
    type Time = chrono::DateTime<chrono::Utc>;
    type Row = (
        String,
        String,
        String,
        Time,
        Time,
        Option<Time>,
        f64,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT node_name, address, version, started_at, last_seen, stopped_at,
                    extract(epoch FROM now() - last_seen)::float8, status::text
             FROM alorig_cluster.nodes ORDER BY node_name",
    )
    .fetch_all(pool)
    .await?;
    let nodes: Vec<Value> = rows
        .into_iter()
        .map(
            |(name, address, version, started, seen, stopped, age, status)| {
                let status: Value = serde_json::from_str(&status).unwrap_or_default();
                let state = match (stopped, age > GONE_AFTER.as_secs_f64()) {
                    (Some(_), _) => "stopped",
                    (None, true) => "gone",
                    (None, false) => "up",
                };
                json!({
                    "node_name": name,
                    "address": address,
                    "version": version,
                    "started_at": started,
                    "last_seen": seen,
                    "last_seen_seconds_ago": age,
                    "state": state,
                    "self": name == shared.node(),
                    "apps": status["apps"],
                    "memory_budget_bytes": status["memory_budget_bytes"],
                    "resident_memory_bytes": status["resident_memory_bytes"],
                })
            },
        )
        .collect();
    Ok(json!({ "node_name": shared.node(), "nodes": nodes }))
}

/// How many hosts are up now (this one included, at least 1).
pub async fn live_count(shared: &Shared) -> anyhow::Result<u32> {
    let pool = shared.ready().await?;
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM alorig_cluster.nodes
         WHERE stopped_at IS NULL AND last_seen > now() - make_interval(secs => $1)",
    )
    .bind(GONE_AFTER.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok((count as u32).max(1))
}
