//! `alorig-host status --cluster`: every host sharing the admin host's
//! PostgreSQL, from their heartbeat rows (`GET /v1/cluster`), one line per host
//! and app: state, address, version, memory.

use crate::{
    admin::client::Client,
    cli::{Target, size, table},
};
use anyhow::Result;
use serde_json::Value;

pub async fn show(target: &Target, as_json: bool) -> Result<()> {
    let client = target.client()?;
    let cluster = client
        .send(http::Method::GET, "/v1/cluster", &[], Client::empty())
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&cluster)?);
    } else {
        print!("{}", cluster_table(&cluster));
    }
    Ok(())
}

/// One row per (host, app); a host with no app gets one row of its own.
pub fn cluster_table(cluster: &Value) -> String {
    let mut rows = Vec::new();
    for node in cluster["nodes"].as_array().into_iter().flatten() {
        let name = node["node_name"].as_str().unwrap_or("").to_string();
        let marked = if node["self"] == true {
            format!("{name} *")
        } else {
            name
        };
        let host = [
            marked,
            node["state"].as_str().unwrap_or("").to_string(),
            node["address"].as_str().unwrap_or("").to_string(),
            format!(
                "{:.0}s",
                node["last_seen_seconds_ago"].as_f64().unwrap_or(0.0)
            ),
            size(&node["resident_memory_bytes"]),
        ];
        let apps = node["apps"].as_array().cloned().unwrap_or_default();
        if apps.is_empty() {
            let mut row = host.to_vec();
            row.extend(["-".into(), "-".into(), "-".into()]);
            rows.push(row);
        }
        for app in apps {
            let mut row = host.to_vec();
            row.push(app["name"].as_str().unwrap_or("").to_string());
            row.push(app["version"].to_string());
            row.push(format!(
                "{} / {}",
                size(&app["memory_bytes"]),
                size(&app["memory_limit_bytes"])
            ));
            rows.push(row);
        }
    }
    table(
        &[
            "NODE",
            "STATE",
            "ADDRESS",
            "SEEN",
            "HOST RSS",
            "APP",
            "VERSION",
            "MEM / LIMIT",
        ],
        &rows,
    )
}
