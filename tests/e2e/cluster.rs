//! Several hosts as one: three `alorig-host serve` processes, each with its own
//! data dir, sharing a throwaway PostgreSQL and Redis — a deploy, a rollback and
//! a removal made on one host reach the others within seconds; a host started
//! while PostgreSQL is down serves its cache and catches up; `status --cluster`;
//! behind a real Caddy balancing them, jobs and timers run once and a host
//! killed under load costs no request. The Kubernetes manifests are checked in
//! `cluster_kubernetes`.

use crate::{
    deploy::{deploy_ok, echo_manifest},
    harness::Host,
    postgres_server::PgServer,
    redis_server::RedisServer,
};
use serde_json::Value;
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// The key every host of a test cluster is given (`cluster_key`).
const CLUSTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A host of the cluster: `serve` on its own data dir, named `node`.
pub fn node(pg: &PgServer, redis: &RedisServer, data: &Path, node: &str) -> Host {
    Host::serve_full(
        data,
        &format!("node_name = \"{node}\""),
        &[
            ("ALORIG_POSTGRES_URL", &pg.admin_url()),
            ("ALORIG_REDIS_URL", &redis.url()),
            ("ALORIG_CLUSTER_KEY", CLUSTER_KEY),
        ],
    )
}

async fn healthz(host: &Host) -> u16 {
    host.admin_request("GET", "/healthz", &[], Vec::new())
        .await
        .status
}

/// Waits until `/healthz` says the host caught up with the cluster.
pub async fn wait_ready(host: &Host) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while healthz(host).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the host never caught up:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `echo.test/env/VERSION` answers on `host` ("404" when no app has the route).
async fn version_on(host: &Host) -> String {
    match host.try_get("echo.test", "/env/VERSION").await {
        Ok(reply) if reply.status == 200 => reply.text(),
        Ok(reply) => reply.status.to_string(),
        Err(err) => format!("error: {err}"),
    }
}

/// Waits until every host answers `want`; the time it took from `since`.
async fn every_host_serves(
    hosts: &[&Host],
    want: &str,
    since: Instant,
    limit: Duration,
) -> Duration {
    loop {
        let mut seen = Vec::new();
        for host in hosts {
            seen.push(version_on(host).await);
        }
        if seen.iter().all(|s| s == want) {
            return since.elapsed();
        }
        if since.elapsed() > limit {
            let logs: Vec<String> = hosts.iter().map(|h| h.log()).collect();
            panic!(
                "after {limit:?} the hosts answer {seen:?}, not {want:?}; their logs:\n{}",
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_manifest(dir: &Path, version: &str) -> String {
    let path = dir.join(format!("echo-{version}.toml"));
    std::fs::write(&path, echo_manifest("echo", "echo.test", version, "")).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_serve_a_deploy_a_rollback_and_a_removal_made_on_one_within_5s() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hosts: Vec<Host> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| node(&pg, &redis, d.path(), &format!("host-{}", i + 1)))
        .collect();
    for host in &hosts {
        wait_ready(host).await;
    }
    let all: Vec<&Host> = hosts.iter().collect();
    let limit = Duration::from_secs(5);
    let manifests = tempfile::tempdir().unwrap();

    // The first version is compiled by every host (each has its own cache):
    // counted from the deploy's answer, when it is in force on host 1.
    let started = Instant::now();
    deploy_ok(&hosts[0], &write_manifest(manifests.path(), "v1"), &[]);
    let deployed = started.elapsed();
    let v1 = every_host_serves(&all, "v1", Instant::now(), limit).await;
    eprintln!(
        "deploy v1 on host 1: answered in {deployed:.2?} (compiled), served by the 3 hosts {v1:.2?} later"
    );

    let started = Instant::now();
    deploy_ok(&hosts[0], &write_manifest(manifests.path(), "v2"), &[]);
    let v2 = every_host_serves(&all, "v2", started, limit).await;
    eprintln!("deploy v2 on host 1: served by all 3 after {v2:.2?}");

    // A rollback on another host than the one deployed to.
    let started = Instant::now();
    let (code, _, stderr) = hosts[1].cli(&["rollback", "echo"]);
    assert_eq!(code, 0, "rollback on host 2: {stderr}");
    let back = every_host_serves(&all, "v1", started, limit).await;
    eprintln!("rollback on host 2: served by all 3 after {back:.2?}");

    // Every host shows the same versions, and every host's row.
    for host in &hosts {
        let (code, out, stderr) = host.cli(&["apps", "--json"]);
        assert_eq!(code, 0, "{stderr}");
        let apps: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(apps[0]["version"], 1, "{out}");
    }
    // Heartbeats are written every 2 s: wait for one with the rolled-back version.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, out, stderr) = hosts[2].cli(&["status", "--cluster", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let cluster: Value = serde_json::from_str(&out).unwrap();
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{out}");
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["node_name"], format!("host-{}", i + 1), "{out}");
        assert_eq!(n["state"], "up", "{out}");
        assert_eq!(n["apps"][0]["name"], "echo", "{out}");
        assert_eq!(n["apps"][0]["version"], 1, "{out}");
        assert_eq!(n["address"], hosts[i].ingress.to_string(), "{out}");
    }
    let (code, table, _) = hosts[2].cli(&["status", "--cluster"]);
    assert_eq!(code, 0);
    eprintln!("{table}");
    assert!(
        table.contains("host-3 *") && table.contains("echo"),
        "{table}"
    );

    let started = Instant::now();
    let (code, _, stderr) = hosts[2].cli(&["remove", "echo"]);
    assert_eq!(code, 0, "remove on host 3: {stderr}");
    let gone = every_host_serves(&all, "404", started, limit).await;
    eprintln!("remove on host 3: gone from all 3 after {gone:.2?}");
}

/// Host 1 is down while host 2 deploys v2; host 1 then starts while PostgreSQL
/// is down too: it serves v1 from its data dir and says it is not caught up,
/// then serves v2 once PostgreSQL is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_started_while_postgres_is_down_serves_its_cache_then_catches_up() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let manifests = tempfile::tempdir().unwrap();
    let one = node(&pg, &redis, d1.path(), "host-1");
    let two = node(&pg, &redis, d2.path(), "host-2");
    wait_ready(&one).await;
    wait_ready(&two).await;
    deploy_ok(&two, &write_manifest(manifests.path(), "v1"), &[]);
    every_host_serves(&[&one, &two], "v1", Instant::now(), Duration::from_secs(5)).await;
    one.kill();
    deploy_ok(&two, &write_manifest(manifests.path(), "v2"), &[]);
    drop(two);
    pg.stop();

    let one = node(&pg, &redis, d1.path(), "host-1");
    assert_eq!(version_on(&one).await, "v1", "{}", one.log());
    assert_eq!(
        healthz(&one).await,
        503,
        "not caught up while PostgreSQL is down"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(version_on(&one).await, "v1");

    let back = Instant::now();
    pg.start_again();
    wait_ready(&one).await;
    let caught_up = every_host_serves(&[&one], "v2", back, Duration::from_secs(15)).await;
    eprintln!("PostgreSQL back: host 1 serves v2 after {caught_up:.2?}");
}

/// Rows of `sql` (two integer columns) in `database`, read behind the hosts' back.
async fn pairs(pg: &PgServer, database: &str, sql: &str) -> Vec<(i64, i64)> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&pg.url_for(database))
        .await
        .unwrap();
    sqlx::query_as(sql)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Seconds in `[from, to)` (Unix ms, whole seconds) with no firing, and with
/// more than one.
fn firings_per_second(runs: &[(i64, i64)], from: i64, to: i64) -> (Vec<i64>, Vec<(i64, i64)>) {
    let missing = (from / 1000..to / 1000)
        .map(|s| s * 1000)
        .filter(|s| !runs.iter().any(|(at, _)| at == s))
        .collect();
    let doubled = runs.iter().filter(|(_, n)| *n > 1).copied().collect();
    (missing, doubled)
}

/// Three hosts behind a real Caddy balancing them (`caddyfile --upstream` with
/// the three addresses): 1,000 jobs enqueued through it run exactly once; an
/// every-second timer fires once a second cluster-wide; then host 2 is killed
/// with SIGKILL under load and the failed requests are counted, and the timer
/// goes on firing once a second on the two left.
#[tokio::test(flavor = "multi_thread")]
async fn behind_caddy_three_hosts_run_jobs_and_timers_once_and_a_killed_host_costs_no_request() {
    use crate::{
        caddy::{free_port, start_caddy},
        harness::{manifest, run_cli},
    };
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    };
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut hosts: Vec<Option<Arc<Host>>> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Some(Arc::new(node(
                &pg,
                &redis,
                d.path(),
                &format!("host-{}", i + 1),
            )))
        })
        .collect();
    for host in hosts.iter().flatten() {
        wait_ready(host).await;
    }
    let first = hosts[0].clone().unwrap();
    // Let every host's heartbeat land: the app role's connection limit counts them.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let manifests = tempfile::tempdir().unwrap();
    let echo = echo_manifest("echo", "echo.test", "v1", "");
    let tick = manifest(
        "tick",
        "test-timers",
        "[postgres]\ndatabase = \"tick_db\"\nmax_connections = 2\n[[routes]]\nhost = \"tick.test\"\n\
         [[timers]]\nname = \"tick\"\nevery = \"1s\"\ntimeout = \"1s\"",
    );
    for (name, text) in [("echo", &echo), ("tick", &tick)] {
        let path = manifests.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        deploy_ok(&first, path.to_str().unwrap(), &[]);
    }
    let all: Vec<&Host> = hosts.iter().flatten().map(|h| h.as_ref()).collect();
    every_host_serves(&all, "v1", Instant::now(), Duration::from_secs(10)).await;

    // Every host compiles tick too before Caddy sends it any request.
    let deadline = Instant::now() + Duration::from_secs(30);
    for host in &all {
        while host.try_get("tick.test", "/").await.map(|r| r.status) == Ok(404) {
            assert!(
                Instant::now() < deadline,
                "tick never reached a host:\n{}",
                host.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let port = free_port();
    let upstreams: Vec<String> = all.iter().map(|h| h.ingress.to_string()).collect();
    let (code, caddyfile, stderr) = run_cli(&[
        "caddyfile",
        "--manifests",
        manifests.path().to_str().unwrap(),
        "--upstream",
        &upstreams.join(" "),
        "--http-port",
        &port.to_string(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(caddyfile.contains("lb_try_duration"), "{caddyfile}");
    let _caddy = start_caddy(&caddyfile, port);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(32)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let through_caddy = move |method: &'static str, host: &'static str, path: String| {
        let client = client.clone();
        async move {
            use http_body_util::BodyExt as _;
            let req = http::Request::builder()
                .method(method)
                .uri(format!("http://127.0.0.1:{port}{path}"))
                .header("host", host)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((
                status,
                String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            ))
        }
    };

    // 1,000 jobs through Caddy, run exactly once by the three hosts.
    let (status, body) = through_caddy("POST", "tick.test", "/setup".into())
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let (status, ids) = through_caddy("POST", "tick.test", "/enqueue?n=1000&name=work".into())
        .await
        .unwrap();
    assert_eq!(status, 200, "{ids}");
    let job_runs =
        "SELECT count(*)::int8, count(DISTINCT job_id)::int8 FROM runs WHERE kind = 'job'";
    loop {
        let (runs, _) = pairs(&pg, "tick_db", job_runs).await[0];
        if runs >= 1000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{runs} of 1000 jobs ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ran_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (runs, distinct) = pairs(&pg, "tick_db", job_runs).await[0];
    assert_eq!((runs, distinct), (1000, 1000), "every job once");
    let mut per_host = Vec::new();
    for host in &all {
        per_host.push(
            host.metric("alorig_app_job_runs_total", "app=\"tick\",outcome=\"ok\"")
                .await,
        );
    }
    eprintln!("1000 jobs through Caddy in {ran_in:.2?}, per host {per_host:?}");
    assert_eq!(per_host.iter().sum::<f64>(), 1000.0);

    // Load through Caddy; host 2 killed with SIGKILL halfway.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok, failed, failures) =
                (stop.clone(), ok.clone(), failed.clone(), failures.clone());
            let get = through_caddy.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match get("GET", "echo.test", "/env/VERSION".into()).await {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            failures.lock().unwrap().push(format!("{other:?}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let timer_from = (chrono::Utc::now().timestamp() + 1) * 1000;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let killed_at = chrono::Utc::now().timestamp_millis();
    let before_kill = ok.load(Ordering::Relaxed);
    Arc::try_unwrap(hosts[1].take().unwrap())
        .ok()
        .expect("host 2 is not shared")
        .kill();
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let timer_to = chrono::Utc::now().timestamp() * 1000 - 1000;
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "through Caddy over 30 s: {ok} requests answered 200 ({before_kill} before the kill), {failed} failed: {:?}",
        failures.lock().unwrap().iter().take(5).collect::<Vec<_>>()
    );

    // The timer: each second claimed by one host, and run at most once, before
    // and after the kill. A firing may be claimed and not run: `skipped` while
    // the previous one still runs (a slow machine), or lost with host 2.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let runs = pairs(
        &pg,
        "tick_db",
        "SELECT scheduled_ms, count(*)::int8 FROM runs WHERE kind = 'timer' AND name = 'tick' GROUP BY scheduled_ms ORDER BY scheduled_ms",
    )
    .await;
    let claims = pairs(
        &pg,
        "postgres",
        "SELECT (extract(epoch FROM scheduled_at) * 1000)::int8, count(*)::int8 FROM alorig_jobs.timer_firings
         WHERE app = 'tick' AND timer = 'tick' GROUP BY 1 ORDER BY 1",
    )
    .await;
    let (not_run, doubled) = firings_per_second(&runs, timer_from, timer_to);
    let (unclaimed, _) = firings_per_second(&claims, timer_from, timer_to);
    let outcomes = pairs(
        &pg,
        "postgres",
        "SELECT 0::int8, count(*)::int8 FROM alorig_jobs.timer_firings WHERE app = 'tick' AND state <> 'ok'",
    )
    .await;
    eprintln!(
        "timer every 1s over {} s across the cluster (host 2 killed at {killed_at}): seconds not run {not_run:?} \
         ({} firings not ok), unclaimed {unclaimed:?}, run twice {doubled:?}",
        (timer_to - timer_from) / 1000,
        outcomes[0].1
    );
    assert!(doubled.is_empty(), "a firing ran twice: {doubled:?}");
    assert!(
        claims.iter().all(|(_, n)| *n == 1),
        "a firing claimed twice: {claims:?}"
    );
    // A firing host 2 had claimed when it died is lost with it, and its lease
    // (the timer's 1 s timeout + 5 s slack) makes the next ones `skipped`: any
    // second not run away from that window was skipped as still running.
    assert!(
        unclaimed.is_empty(),
        "seconds no host claimed: {unclaimed:?} (kill at {killed_at})"
    );
    assert!(
        runs.iter().any(|(at, _)| *at > killed_at + 7000),
        "the timer never ran again after host 2's lease: {runs:?} (kill at {killed_at})"
    );
    assert_eq!(failed, 0, "requests failed when host 2 was killed");
}
