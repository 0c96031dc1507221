//! What an app version may reach, and what a new version may reach that the live
//! one could not. A deploy that widens grants needs the operator's approval
//! (`deploy --yes`, the API's `approve_grants=true`): a new outbound host, route,
//! database or a larger memory cap is a decision, not a side effect of a build.

use crate::{app::App, config::Manifest};

/// Everything `app` may reach, one line each.
pub fn all(app: &App) -> Vec<String> {
    let mut grants: Vec<String> = app.imports.iter().map(|i| format!("import {i}")).collect();
    grants.extend(manifest_grants(&app.manifest));
    grants
}

fn manifest_grants(m: &Manifest) -> Vec<String> {
    let mut grants = Vec::new();
    grants.extend(m.routes.iter().map(|r| format!("route {}{}", r.host, r.path)));
    grants.extend(m.outbound_http.allowed_hosts.iter().map(|h| format!("outbound HTTP to {h}")));
    if let Some(pg) = &m.postgres {
        grants.push(format!("PostgreSQL database {}", pg.database));
    }
    if let Some(redis) = &m.redis {
        grants.push(format!("Redis prefix {} (db {})", redis.prefix, redis.db));
    }
    grants.extend(m.secrets.keys().map(|k| format!("secret {k}")));
    grants.push(format!("memory cap {}", m.resources.memory));
    grants
}

/// An import's name without its version: `wasi:http/outgoing-handler`.
fn unversioned(import: &str) -> &str {
    import.split('@').next().unwrap_or(import)
}

/// What `new` may reach that `old` may not.
pub fn widened(old: &App, new: &App) -> Vec<String> {
    let mut added = Vec::new();
    for import in &new.imports {
        if !old.imports.iter().any(|o| unversioned(o) == unversioned(import)) {
            added.push(format!("new import {import}"));
        }
    }
    let (o, n) = (&old.manifest, &new.manifest);
    for route in &n.routes {
        if !o.routes.iter().any(|r| r.host == route.host && r.path == route.path) {
            added.push(format!("new route {}{}", route.host, route.path));
        }
    }
    for host in &n.outbound_http.allowed_hosts {
        if !o.outbound_http.allowed_hosts.contains(host) {
            added.push(format!("outbound HTTP to {host}"));
        }
    }
    if let Some(pg) = &n.postgres
        && o.postgres.as_ref().is_none_or(|old| old.database != pg.database)
    {
        added.push(format!("PostgreSQL database {}", pg.database));
    }
    if let Some(redis) = &n.redis
        && o.redis.as_ref().is_none_or(|old| old.prefix != redis.prefix || old.db != redis.db)
    {
        added.push(format!("Redis prefix {} (db {})", redis.prefix, redis.db));
    }
    for key in n.secrets.keys() {
        if !o.secrets.contains_key(key) {
            added.push(format!("secret {key}"));
        }
    }
    if n.resources.memory > o.resources.memory {
        added.push(format!("memory cap {} → {}", o.resources.memory, n.resources.memory));
    }
    added
}
