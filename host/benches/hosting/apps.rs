//! Section 10: the Alorig apps, one host each, from their shipped manifests
//! (the e2e tests' deployments, `tests/e2e/shipped_apps.rs`): per app, guest
//! memory idle and at its peak under 32 connections on its main page, against
//! its cap; host RSS idle and after the load; the page's req/s and p99 with wrk.

use super::wrk;
use crate::{
    harness::Host,
    postgres_server::PgServer,
    redis_server::RedisServer,
    shipped_apps::{igny8, sitebuilder, snapify},
    stub::Stub,
};
use std::time::Duration;

const MIB: f64 = (1 << 20) as f64;

pub fn apps(seconds: u32) {
    println!("\n## 10. the Alorig apps: memory per app and its main page under 32 connections\n");
    println!(
        "One host per app, its shipped manifest, real PostgreSQL and Redis, stub outside services. \
         Guest memory is the app's gauge (all its live instances); peak its high-water mark over the load.\n"
    );
    println!(
        "| app | page | cap | guest idle | guest peak | host RSS idle | host RSS after | req/s | p99 ms | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (pg, redis) = (PgServer::start(), RedisServer::start());
    let stub = Stub::start(|_| (200, "{}".into()));
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let host = snapify::host(&pg, &redis, &stub);
    demo(
        &runtime,
        &host,
        "api.snapify.pk",
        "/v1/demo",
        snapify::TOKEN,
    );
    row(
        &runtime,
        &host,
        "snapify",
        "snapify.pk",
        "/silk-house",
        seconds,
    );
    drop(host);

    let host = sitebuilder::host(&pg, &redis);
    demo(
        &runtime,
        &host,
        "api.alorig.com",
        "/builder/demo",
        sitebuilder::TOKEN,
    );
    // The demo site is published by a job.
    std::thread::sleep(Duration::from_secs(3));
    row(
        &runtime,
        &host,
        "sitebuilder",
        "acme.sites.alorig.com",
        "/",
        seconds,
    );
    drop(host);

    let host = igny8::host(&pg, &redis, &stub);
    row(
        &runtime,
        &host,
        "igny8",
        "api.igny8.com",
        "/api/v1/system/status/",
        seconds,
    );
}

/// Loads the app's demo data (`POST path` on `api_host`).
fn demo(runtime: &tokio::runtime::Runtime, host: &Host, api_host: &str, path: &str, token: &str) {
    let reply = runtime.block_on(host.request_with(
        "POST",
        api_host,
        path,
        &[("authorization", format!("Bearer {token}"))],
        Vec::new(),
    ));
    assert_eq!(reply.status, 200, "{api_host}{path}: {}", reply.text());
}

/// One app's row: settles, reads idle figures, loads `name{path}` for `seconds`, reads the rest.
fn row(
    runtime: &tokio::runtime::Runtime,
    host: &Host,
    app: &str,
    name: &str,
    path: &str,
    seconds: u32,
) {
    std::thread::sleep(Duration::from_secs(2));
    let label = format!("app=\"{app}\"");
    let gauges = |names: &[&str]| -> Vec<f64> {
        runtime.block_on(async {
            let mut values = Vec::new();
            for name in names {
                let labels = if name.starts_with("alorig_host") {
                    ""
                } else {
                    &label
                };
                values.push(host.metric(name, labels).await);
            }
            values
        })
    };
    let idle = gauges(&[
        "alorig_app_memory_bytes",
        "alorig_host_resident_memory_bytes",
    ]);
    let load = wrk(host.ingress, name, path, 32, seconds);
    let after = gauges(&[
        "alorig_app_memory_peak_bytes",
        "alorig_app_memory_limit_bytes",
        "alorig_host_resident_memory_bytes",
    ]);
    println!(
        "| {app} | {name}{path} | {:.0} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} | {:.2} | {} |",
        after[1] / MIB,
        idle[0] / MIB,
        after[0] / MIB,
        idle[1] / MIB,
        after[2] / MIB,
        load.rps,
        load.p99_ms,
        load.errors
    );
}
