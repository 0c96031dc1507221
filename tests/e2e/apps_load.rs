//! Figures for the note on the Alorig apps (not a test of any goal: it asserts
//! only that the load ran): per app, guest memory idle and under 32 connections
//! on its main page against its cap, host RSS, and the page's req/s and p99 with
//! `wrk`. Run with `cargo test --release -p alorig-host --test e2e apps_load -- --ignored --nocapture`.

use crate::{harness::Host, postgres_server::PgServer, redis_server::RedisServer, stub::Stub};
use std::time::Duration;

fn wrk(host: &Host, name: &str, path: &str) -> (f64, String) {
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            "-d10s",
            "--latency",
            "-H",
            &format!("Host: {name}"),
            &format!("http://{}{path}", host.ingress),
        ])
        .output()
        .expect("running wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .map(|l| l.trim().trim_start_matches("99%").trim().to_string())
        .unwrap_or_default();
    assert!(!text.contains("Non-2xx"), "{text}");
    (rps, p99)
}

async fn report(host: &Host, app: &str, name: &str, path: &str) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mib = |v: f64| v / 1048576.0;
    let label = format!("app=\"{app}\"");
    let idle = host.metric("alorig_app_memory_bytes", &label).await;
    let rss_idle = host.metric("alorig_host_resident_memory_bytes", "").await;
    let (rps, p99) = wrk(host, name, path);
    let peak = host.metric("alorig_app_memory_peak_bytes", &label).await;
    let cap = host.metric("alorig_app_memory_limit_bytes", &label).await;
    let rss = host.metric("alorig_host_resident_memory_bytes", "").await;
    eprintln!(
        "{app:<12} {name}{path}: idle {:.1} MiB, peak under 32 conns {:.1} MiB of cap {:.0} MiB; host RSS idle {:.1} MiB, after load {:.1} MiB; {rps:.0} req/s, p99 {p99}",
        mib(idle),
        mib(peak),
        mib(cap),
        mib(rss_idle),
        mib(rss)
    );
    assert!(rps > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement for the report; run by hand"]
async fn apps_load_figures() {
    let (pg, redis) = (PgServer::start(), RedisServer::start());
    let stub = Stub::start(|_| (200, "{}".into()));

    let host = crate::snapify::snapify_host(&pg, &redis, &stub);
    let demo = host
        .request_with(
            "POST",
            "api.snapify.pk",
            "/v1/demo",
            &[("authorization", "Bearer snapify-test-token".to_string())],
            Vec::new(),
        )
        .await;
    assert_eq!(demo.status, 200);
    report(&host, "snapify", "snapify.pk", "/silk-house").await;
    drop(host);

    let host = crate::sitebuilder::sitebuilder_host(&pg, &redis);
    let demo = host
        .request_with(
            "POST",
            "api.alorig.com",
            "/builder/demo",
            &[("authorization", "Bearer builder-token".to_string())],
            Vec::new(),
        )
        .await;
    assert_eq!(demo.status, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    report(&host, "sitebuilder", "acme.sites.alorig.com", "/").await;
    drop(host);

    let host = crate::igny8::igny8_host(&pg, &redis, &stub);
    report(&host, "igny8", "api.igny8.com", "/api/v1/system/status/").await;
}
