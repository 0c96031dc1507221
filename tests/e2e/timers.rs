//! `alorig:host/timers` against a real PostgreSQL: timers on schedule, overlap
//! skipped, catch-up, and durable jobs — exactly once across two hosts, a host
//! killed mid-job, retries with backoff ending in the dead-letter list. The
//! test guest writes every run it makes into its own database, so the counts
//! below are what the handlers did, read behind the host's back.

use crate::{
    harness::{Host, manifest, validate_error},
    postgres_server::PgServer,
};
use sqlx::{Connection as _, Row as _};
use std::time::{Duration, Instant};

/// The test guest as app `name` (database `<name>_db`), with extra TOML.
fn timers_app(name: &str, extra: &str) -> String {
    app_with_pool(name, 4, extra)
}

/// The same with a pool of `pool` connections. The app's role may hold
/// `pool + 1` connections (the postgres capability's CONNECTION LIMIT, sized
/// for one host), so an app two hosts run gets a pool of 1 here.
fn app_with_pool(name: &str, pool: u32, extra: &str) -> String {
    manifest(
        name,
        "test-timers",
        &format!(
            "[postgres]\ndatabase = \"{name}_db\"\nmax_connections = {pool}\n[[routes]]\nhost = \"{name}.test\"\n{extra}"
        ),
    )
}

fn up(pg: &PgServer, name: &str, text: &str) -> Host {
    Host::up_full(
        &[(name, text.to_string())],
        "",
        &[("ALORIG_POSTGRES_URL", &pg.admin_url())],
    )
}

/// A second host for the same app: it shares the first one's data dir (and so
/// the app role's password) and database.
fn second_host(pg: &PgServer, first: &Host, name: &str, text: &str) -> Host {
    let data = first.data.display().to_string();
    Host::up_full(
        &[(name, text.to_string())],
        "",
        &[
            ("ALORIG_POSTGRES_URL", &pg.admin_url()),
            ("ALORIG_DATA_DIR", &data),
        ],
    )
}

async fn post(host: &Host, app: &str, path: &str, body: &str) -> String {
    let reply = host
        .request(
            "POST",
            &format!("{app}.test"),
            path,
            body.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.text()
}

async fn connect(pg: &PgServer, database: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&pg.url_for(database))
        .await
        .unwrap()
}

/// Rows of `sql` as vectors of i64 (NULL as -1). A failing query or a column
/// that is not an integer fails the test: it must never read as "no rows".
async fn rows(pg: &PgServer, database: &str, sql: &str) -> Vec<Vec<i64>> {
    let mut conn = connect(pg, database).await;
    let rows = sqlx::query(sql)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.try_get::<Option<i64>, _>(i) {
                    Ok(v) => v.unwrap_or(-1),
                    Err(_) => match r.try_get::<Option<i32>, _>(i) {
                        Ok(v) => v.map(i64::from).unwrap_or(-1),
                        Err(e) => panic!("{sql}: column {i} is not an integer: {e}"),
                    },
                })
                .collect()
        })
        .collect()
}

/// The first column of the first row of `sql` (a `count(*)` always has one).
async fn count(pg: &PgServer, database: &str, sql: &str) -> i64 {
    let rows = rows(pg, database, sql).await;
    rows.first()
        .and_then(|r| r.first().copied())
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Waits up to `limit` for `sql`'s count to reach `want`; answers the last count.
/// While waiting, a table the guest has not created yet counts as not there
/// yet; any other failure, or a missing table at the end, fails the test.
async fn wait_count(pg: &PgServer, database: &str, sql: &str, want: i64, limit: Duration) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        if Instant::now() > deadline {
            return count(pg, database, sql).await;
        }
        let mut conn = connect(pg, database).await;
        match sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await {
            Ok(seen) if seen >= want => return seen,
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {} // undefined_table
            Err(e) => panic!("{sql}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_every_second_timer_fires_on_schedule_within_100ms() {
    let pg = PgServer::start();
    let host = up(
        &pg,
        "tick",
        &timers_app("tick", "[[timers]]\nname = \"tick\"\nevery = \"1s\""),
    );
    post(&host, "tick", "/setup", "").await;
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let runs = rows(
        &pg,
        "tick_db",
        "SELECT scheduled_ms, started_ms FROM runs WHERE name = 'tick' ORDER BY scheduled_ms",
    )
    .await;
    assert!(
        runs.len() >= 10,
        "only {} firings in 10.5 s: {runs:?}",
        runs.len()
    );
    let late: Vec<i64> = runs.iter().map(|r| r[1] - r[0]).collect();
    for pair in runs.windows(2) {
        assert_eq!(
            pair[1][0] - pair[0][0],
            1000,
            "firings one second apart, none missed or doubled: {runs:?}"
        );
    }
    for (run, late) in runs.iter().zip(&late) {
        assert_eq!(run[0] % 1000, 0, "on whole seconds");
        assert!(
            late.abs() <= 100,
            "a firing started {late} ms from its schedule: {runs:?}"
        );
    }
    eprintln!(
        "every=1s over {} firings: start - scheduled min {} ms, max {} ms, mean {:.1} ms",
        late.len(),
        late.iter().min().unwrap(),
        late.iter().max().unwrap(),
        late.iter().sum::<i64>() as f64 / late.len() as f64
    );
    assert!(
        host.metric(
            "alorig_app_timer_runs_total",
            "app=\"tick\",timer=\"tick\",outcome=\"ok\""
        )
        .await
            >= 10.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firing_still_running_makes_the_next_ones_skipped_and_counted() {
    let pg = PgServer::start();
    let text = timers_app(
        "slow",
        "[[timers]]\nname = \"sleep-2500-slow\"\nevery = \"1s\"\ntimeout = \"10s\"",
    );
    let host = up(&pg, "slow", &text);
    post(&host, "slow", "/setup", "").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let runs = rows(&pg, "slow_db", "SELECT started_ms, finished_ms FROM runs WHERE finished_ms IS NOT NULL ORDER BY started_ms").await;
    assert!(runs.len() >= 2, "{runs:?}");
    for pair in runs.windows(2) {
        assert!(
            pair[1][0] >= pair[0][1],
            "two firings of one timer overlapped: {runs:?}"
        );
    }
    let skipped = host
        .metric(
            "alorig_app_timer_runs_total",
            "app=\"slow\",timer=\"sleep-2500-slow\",outcome=\"skipped\"",
        )
        .await;
    let ok = host
        .metric(
            "alorig_app_timer_runs_total",
            "app=\"slow\",timer=\"sleep-2500-slow\",outcome=\"ok\"",
        )
        .await;
    assert!(skipped >= 2.0 * (ok - 1.0), "{ok} ran, {skipped} skipped");
    assert!(skipped >= 3.0, "{skipped} skipped");
}

/// `catch_up = "once"` runs the latest missed firing once at start (at the
/// first deploy too: nothing has run yet); `skip` waits for the next. An hourly
/// timer makes "missed" deterministic: the test moves the recorded last firing
/// back an hour, which is what the store holds when every host was down across
/// an hour boundary.
#[tokio::test(flavor = "multi_thread")]
async fn catch_up_once_runs_one_missed_firing_and_skip_runs_none() {
    use chrono::Timelike as _;
    // Not across an hour boundary: that would fire both timers for real.
    let now = chrono::Utc::now();
    if now.minute() == 59 && now.second() > 20 {
        tokio::time::sleep(Duration::from_secs(62 - u64::from(now.second()))).await;
    }
    let pg = PgServer::start();
    let text = timers_app(
        "beat",
        "[[timers]]\nname = \"hourly-once\"\nevery = \"1h\"\ncatch_up = \"once\"\n[[timers]]\nname = \"hourly-skip\"\nevery = \"1h\"",
    );
    let hour_ms = chrono::Utc::now().timestamp_millis() / 3_600_000 * 3_600_000;
    let once = "SELECT count(*) FROM runs WHERE name = 'hourly-once'";
    let skip = "SELECT count(*) FROM runs WHERE name = 'hourly-skip'";

    let host = up(&pg, "beat", &text);
    assert_eq!(
        wait_count(&pg, "beat_db", once, 1, Duration::from_secs(10)).await,
        1,
        "{}",
        host.log()
    );
    let scheduled = rows(
        &pg,
        "beat_db",
        "SELECT scheduled_ms FROM runs WHERE name = 'hourly-once'",
    )
    .await;
    assert_eq!(
        scheduled,
        vec![vec![hour_ms]],
        "the latest due instant: this hour's start"
    );
    host.kill();

    // Back up with nothing missed: no second run of the same firing.
    let host = up(&pg, "beat", &text);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&pg, "beat_db", once).await, 1);
    host.kill();

    // All hosts were down across the last firing: it runs once on start.
    let mut admin = connect(&pg, "postgres").await;
    sqlx::query("UPDATE alorig_jobs.timer_firings SET scheduled_at = scheduled_at - interval '1 hour' WHERE app = 'beat'")
        .execute(&mut admin)
        .await
        .unwrap();
    let host = up(&pg, "beat", &text);
    assert_eq!(
        wait_count(&pg, "beat_db", once, 2, Duration::from_secs(10)).await,
        2
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&pg, "beat_db", once).await,
        2,
        "once, not once per missed firing"
    );
    assert_eq!(
        count(&pg, "beat_db", skip).await,
        0,
        "skip never catches up"
    );
    assert!(host.log().contains("catching up a missed firing"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_run_a_thousand_jobs_exactly_once() {
    let pg = PgServer::start();
    let text = app_with_pool("batch", 1, "");
    let a = up(&pg, "batch", &text);
    let b = second_host(&pg, &a, "batch", &text);
    post(&a, "batch", "/setup", "").await;
    let started = Instant::now();
    let ids = post(&a, "batch", "/enqueue?n=1000&name=work", "").await;
    assert_eq!(ids.lines().count(), 1000);
    let runs = "SELECT count(*) FROM runs WHERE kind = 'job'";
    let done = wait_count(&pg, "batch_db", runs, 1000, Duration::from_secs(90)).await;
    eprintln!("1000 jobs through 2 hosts in {:.2?}", started.elapsed());
    // Time for any duplicate to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = rows(
        &pg,
        "batch_db",
        "SELECT job_id, attempt FROM runs WHERE attempt > 1",
    )
    .await;
    assert!(
        again.is_empty(),
        "jobs retried: {again:?}\n{}\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(done, 1000);
    assert_eq!(count(&pg, "batch_db", runs).await, 1000, "no job ran twice");
    assert_eq!(
        count(&pg, "batch_db", "SELECT count(DISTINCT job_id) FROM runs").await,
        1000
    );
    let state = "SELECT count(*) FROM alorig_jobs.jobs WHERE app = 'batch' AND state = 'done'";
    assert_eq!(
        wait_count(&pg, "postgres", state, 1000, Duration::from_secs(10)).await,
        1000
    );
    let (on_a, on_b) = (
        a.metric("alorig_app_job_runs_total", "app=\"batch\",outcome=\"ok\"")
            .await,
        b.metric("alorig_app_job_runs_total", "app=\"batch\",outcome=\"ok\"")
            .await,
    );
    assert_eq!(
        on_a + on_b,
        1000.0,
        "a:\n{}\nb:\n{}",
        a.metrics().await,
        b.metrics().await
    );
    assert!(
        on_a > 0.0 && on_b > 0.0,
        "both hosts took jobs: {on_a} and {on_b}"
    );
    eprintln!("host a ran {on_a}, host b {on_b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_on_a_host_killed_mid_run_completes_on_the_other_after_its_lease() {
    let pg = PgServer::start();
    // Lease = timeout 3s + 5s of slack.
    let text = app_with_pool("crash", 1, "[jobs]\ntimeout = \"3s\"");
    let a = up(&pg, "crash", &text);
    post(&a, "crash", "/setup", "").await;
    post(&a, "crash", "/enqueue?name=long", "sleep:2000").await;
    let first = "SELECT count(*) FROM runs WHERE attempt = 1";
    assert_eq!(
        wait_count(&pg, "crash_db", first, 1, Duration::from_secs(10)).await,
        1
    );
    let b = second_host(&pg, &a, "crash", &text);
    a.kill();
    let killed = Instant::now();
    let finished = "SELECT count(*) FROM runs WHERE finished_ms IS NOT NULL";
    assert_eq!(
        wait_count(&pg, "crash_db", finished, 1, Duration::from_secs(30)).await,
        1,
        "{}",
        b.log()
    );
    let runs = rows(
        &pg,
        "crash_db",
        "SELECT job_id, attempt, started_ms, finished_ms FROM runs ORDER BY attempt",
    )
    .await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0][0], runs[1][0], "the same job");
    assert_eq!(
        (runs[0][1], runs[0][3]),
        (1, -1),
        "the first run never finished: {runs:?}"
    );
    assert_eq!(runs[1][1], 2);
    assert!(
        runs[1][2] - runs[0][2] >= 7_500,
        "the second run waited for the lease: {runs:?}"
    );
    eprintln!(
        "second run started {} ms after the first, {:.1?} after the kill",
        runs[1][2] - runs[0][2],
        killed.elapsed()
    );
    let state = "SELECT count(*) FROM alorig_jobs.jobs WHERE app = 'crash' AND state = 'done' AND attempts = 2";
    assert_eq!(
        wait_count(&pg, "postgres", state, 1, Duration::from_secs(5)).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_is_retried_with_backoff_then_dead_lettered_with_its_error() {
    let pg = PgServer::start();
    let text = timers_app(
        "flaky",
        "[jobs]\nmax_attempts = 3\nbackoff = \"300ms\"\nmax_backoff = \"1s\"\ntimeout = \"5s\"",
    );
    let host = up(&pg, "flaky", &text);
    post(&host, "flaky", "/setup", "").await;
    post(&host, "flaky", "/enqueue?name=report", "fail").await;
    post(&host, "flaky", "/enqueue?name=crashy", "trap").await;
    let dead = "SELECT count(*) FROM alorig_jobs.jobs WHERE app = 'flaky' AND state = 'dead'";
    assert_eq!(
        wait_count(&pg, "postgres", dead, 2, Duration::from_secs(20)).await,
        2,
        "{}",
        host.log()
    );

    let runs = rows(
        &pg,
        "flaky_db",
        "SELECT attempt, started_ms FROM runs WHERE name = 'report' ORDER BY attempt",
    )
    .await;
    assert_eq!(
        runs.iter().map(|r| r[0]).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{runs:?}"
    );
    let (gap1, gap2) = (runs[1][1] - runs[0][1], runs[2][1] - runs[1][1]);
    assert!(
        gap1 >= 290 && gap2 >= 590,
        "backoff 300 ms then 600 ms: gaps {gap1} and {gap2} ms"
    );
    assert!(gap2 < 3000, "not much later either: {gap2} ms");

    let (code, out, err) = host.cli(&["jobs", "flaky"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("flaky: 0 pending, 0 running, 2 dead"),
        "{out}"
    );
    assert!(
        out.contains("handler error: failed on purpose (attempt 3)"),
        "{out}"
    );
    assert!(out.contains("trap: "), "{out}");
    let (_, json, _) = host.cli(&["jobs", "flaky", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let report = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "report")
        .unwrap();
    assert_eq!(
        (report["state"].as_str(), report["attempts"].as_i64()),
        (Some("dead"), Some(3))
    );

    assert_eq!(
        host.metric("alorig_app_job_dead_letters_total", "app=\"flaky\"")
            .await,
        2.0
    );
    assert_eq!(
        host.metric(
            "alorig_app_job_runs_total",
            "app=\"flaky\",outcome=\"error\""
        )
        .await,
        3.0
    );
    assert_eq!(
        host.metric(
            "alorig_app_job_runs_total",
            "app=\"flaky\",outcome=\"trap\""
        )
        .await,
        3.0
    );
    assert_eq!(
        host.wait_metric("alorig_app_jobs", "app=\"flaky\",state=\"dead\"", 2.0)
            .await,
        2.0
    );

    // An idempotency key answers the job already pending; cancel takes it away.
    let first = post(
        &host,
        "flaky",
        "/enqueue?name=later&after_ms=60000&key=k1",
        "",
    )
    .await;
    let again = post(
        &host,
        "flaky",
        "/enqueue?name=later&after_ms=60000&key=k1",
        "",
    )
    .await;
    assert_eq!(first, again);
    let id = first.trim();
    assert_eq!(
        post(&host, "flaky", &format!("/cancel?id={id}"), "").await,
        "true"
    );
    assert_eq!(
        post(&host, "flaky", &format!("/cancel?id={id}"), "").await,
        "false"
    );
    let (_, out, _) = host.cli(&["jobs", "flaky"]);
    assert!(out.starts_with("flaky: 0 pending"), "{out}");
    // Unknown apps are a clear one-line error.
    let (code, _, err) = host.cli(&["jobs", "nope"]);
    assert_ne!(code, 0);
    assert!(
        crate::harness::one_error_line(&err).contains("no app named nope"),
        "{err}"
    );
}

#[test]
fn timers_without_an_exported_handler_are_refused() {
    let (_, stderr) = validate_error(
        "notimer",
        "hello",
        "[[timers]]\nname = \"t\"\nevery = \"5s\"",
    );
    assert!(
        stderr.contains("notimer.toml: [[timers]] is set but the component does not export alorig:host/timer-handler"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The reference app from its shipped manifest: sunrise by NOAA's algorithm
/// against a published time, a saved location cached by a job at once, the
/// current planetary hour from that cache (agreeing with the uncached
/// computation), and the daily timer refilling the cache on catch-up.
#[tokio::test(flavor = "multi_thread")]
async fn astrotiming_caches_planetary_days_by_timer_and_job_and_serves_the_current_hour() {
    let pg = PgServer::start();
    let redis = crate::redis_server::RedisServer::start();
    let shipped = std::fs::read_to_string(
        crate::harness::workspace_root().join("manifests/astrotiming.toml"),
    )
    .unwrap();
    let text: String = shipped
        .lines()
        .map(|l| match l.starts_with("component") {
            true => format!(
                "component = \"{}\"",
                crate::harness::guest("astrotiming").display()
            ),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let start = || {
        Host::up_full(
            &[("astrotiming", text.clone())],
            &format!("redis_url = \"{}\"", redis.url()),
            &[
                ("ALORIG_POSTGRES_URL", &pg.admin_url()),
                ("ASTROTIMING_ADMIN_TOKEN", "admin-test-token"),
            ],
        )
    };
    let host = start();
    let site = "api.astrotiming.com";
    let json = |reply: crate::harness::Reply| -> serde_json::Value {
        assert_eq!(reply.status, 200, "{}", reply.text());
        serde_json::from_slice(&reply.body).unwrap()
    };

    // London, 21 June 2024: sunrise 04:43 BST = 03:43 UTC, sunset 21:21 BST (timeanddate.com).
    let sun = json(
        host.get(site, "/sun?lat=51.5074&lon=-0.1278&date=2024-06-21")
            .await,
    );
    let published_rise = chrono::DateTime::parse_from_rfc3339("2024-06-21T03:43:00Z")
        .unwrap()
        .timestamp_millis();
    let published_set = chrono::DateTime::parse_from_rfc3339("2024-06-21T20:21:00Z")
        .unwrap()
        .timestamp_millis();
    assert!(
        (sun["sunrise_ms"].as_i64().unwrap() - published_rise).abs() <= 120_000,
        "{sun}"
    );
    assert!(
        (sun["sunset_ms"].as_i64().unwrap() - published_set).abs() <= 120_000,
        "{sun}"
    );

    // The deploy's catch-up ran the daily timer once (no locations yet).
    let daily = "app=\"astrotiming\",timer=\"precompute_daily_planetary_data\",outcome=\"ok\"";
    assert_eq!(
        host.wait_metric("alorig_app_timer_runs_total", daily, 1.0)
            .await,
        1.0,
        "{}",
        host.log()
    );

    let saved = json(
        host.request(
            "POST",
            site,
            "/locations?name=London&lat=51.5074&lon=-0.1278",
            vec![],
        )
        .await,
    );
    let id = saved["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while host
        .get(site, &format!("/locations/{id}/today"))
        .await
        .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the compute-location job did not cache the day: {}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = json(host.get(site, "/now?lat=51.5074&lon=-0.1278").await);
    assert_eq!(now["cached"], true, "{now}");
    let computed = json(host.get(site, "/now?lat=51.50741&lon=-0.1278").await);
    assert_eq!(computed["cached"], false);
    assert_eq!(
        (&now["planet"], &now["hour"]),
        (&computed["planet"], &computed["hour"]),
        "{now} vs {computed}"
    );
    const CHALDEAN: [&str; 7] = [
        "Saturn", "Jupiter", "Mars", "Sun", "Venus", "Mercury", "Moon",
    ];
    let ruler = CHALDEAN
        .iter()
        .position(|p| now["day_ruler"] == *p)
        .expect("a Chaldean day ruler");
    let hour = now["hour"].as_u64().unwrap() as usize;
    assert_eq!(
        now["planet"],
        CHALDEAN[(ruler + hour - 1) % 7],
        "hour {hour} of a day ruled by {}",
        now["day_ruler"]
    );
    assert!(
        now["start_ms"].as_i64() <= now["at_ms"].as_i64()
            && now["at_ms"].as_i64() < now["end_ms"].as_i64()
    );
    host.kill();

    // All hosts down across midnight (the store says the last firing was a day
    // ago) and the cache lost: on start the daily timer refills it for the saved place.
    let mut app_db = connect(&pg, "astrotiming_db").await;
    sqlx::query("DELETE FROM planetary_cache")
        .execute(&mut app_db)
        .await
        .unwrap();
    let mut admin = connect(&pg, "postgres").await;
    sqlx::query("UPDATE alorig_jobs.timer_firings SET scheduled_at = scheduled_at - interval '1 day' WHERE app = 'astrotiming'")
        .execute(&mut admin)
        .await
        .unwrap();
    let _host = start();
    let today = chrono::Utc::now().timestamp_millis() / 86_400_000;
    let cached =
        format!("SELECT count(*) FROM planetary_cache WHERE day = DATE '1970-01-01' + {today}");
    assert_eq!(
        wait_count(&pg, "astrotiming_db", &cached, 1, Duration::from_secs(10)).await,
        1
    );
}

/// `(scheduled, started)` of each `fired <timer> …` line the ticker guest printed.
fn ticker_firings(log: &str, timer: &str) -> Vec<(i64, i64)> {
    let marker = format!("fired {timer} ");
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find(&marker)? + marker.len()..];
            let mut numbers = rest.split_whitespace().map(|n| n.parse::<i64>());
            Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
        })
        .collect()
}

/// No `postgres_url`: timers still fire, from memory on this one host (said
/// once in the log), on schedule, and an overlapping firing is skipped.
#[tokio::test(flavor = "multi_thread")]
async fn without_postgres_timers_fire_from_memory_and_still_skip_overlaps() {
    let text = manifest(
        "ticker",
        "test-ticker",
        "[[routes]]\nhost = \"ticker.test\"\n[[timers]]\nname = \"tick\"\nevery = \"1s\"\n\
         [[timers]]\nname = \"sleep-1500-slow\"\nevery = \"1s\"\ntimeout = \"5s\"",
    );
    let host = Host::up(&[("ticker", text)]);
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let log = host.log();
    let ticks = ticker_firings(&log, "tick");
    assert!(ticks.len() >= 5, "{log}");
    for pair in ticks.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 1000, "{ticks:?}");
    }
    assert!(
        ticks
            .iter()
            .all(|(scheduled, started)| (started - scheduled).abs() <= 100),
        "{ticks:?}"
    );
    assert_eq!(log.matches("not durable").count(), 1, "{log}");
    let slow = ticker_firings(&log, "sleep-1500-slow");
    for pair in slow.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= 2000,
            "a slow firing overlapped the one before: {slow:?}"
        );
    }
    let skipped = host
        .metric(
            "alorig_app_timer_runs_total",
            "app=\"ticker\",timer=\"sleep-1500-slow\",outcome=\"skipped\"",
        )
        .await;
    assert!(skipped >= 2.0, "{skipped}");
}
