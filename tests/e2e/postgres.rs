//! `alorig:host/postgres` against a real PostgreSQL started by the harness: typed
//! values both ways, transactions (including a guest that traps mid-way), one
//! app's isolation from another's database, the statement timeout, an outage and
//! recovery, oversized results, the connection limit, and a latency benchmark
//! against native sqlx.

use crate::{
    harness::{Host, host_binary, manifest, metric_value, percentiles},
    postgres_server::PgServer,
};
use std::time::{Duration, Instant};

fn pg_manifest(name: &str, database: &str, extra: &str) -> String {
    manifest(
        name,
        "test-postgres",
        &format!(
            "[postgres]\ndatabase = \"{database}\"\nmax_connections = 4\nstatement_timeout = \"2s\"\n\
             [resources]\nmemory = \"256MiB\"\ninstance_memory = \"32MiB\"\nrequest_timeout = \"30s\"\n\
             [[routes]]\nhost = \"{name}.test\"\n{extra}"
        ),
    )
}

fn host_with(pg: &PgServer, apps: &[(&str, String)]) -> Host {
    Host::up_full(apps, "", &[("ALORIG_POSTGRES_URL", &pg.admin_url())])
}

/// Runs `sql` with `params` (the test guest's `kind:value` lines) as app `app`.
async fn query(host: &Host, app: &str, sql: &str, params: &[&str]) -> String {
    let body = std::iter::once(sql)
        .chain(params.iter().copied())
        .collect::<Vec<_>>()
        .join("\n");
    let reply = host
        .request("POST", &format!("{app}.test"), "/query", body.into_bytes())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

async fn script(host: &Host, app: &str, steps: &str) -> (u16, String) {
    let reply = host
        .request(
            "POST",
            &format!("{app}.test"),
            "/script",
            steps.as_bytes().to_vec(),
        )
        .await;
    (reply.status, reply.text())
}

/// The value line of a one-row, one-column answer.
fn value(answer: &str) -> &str {
    answer
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no row in {answer:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips() {
    let pg = PgServer::start();
    let host = host_with(&pg, &[("types", pg_manifest("types", "types_db", ""))]);

    // Parameters go in, typed by the server, and come back as the same value.
    let cases = [
        ("bool", "bool:true"),
        ("int2", "int16:-32768"),
        ("int4", "int32:2147483647"),
        ("int8", "int64:-9223372036854775808"),
        ("float4", "float32:1.5"),
        ("float8", "float64:-2.25"),
        ("numeric", "numeric:12345678901234567890.000123"),
        ("numeric", "numeric:-0.5"),
        ("numeric", "numeric:NaN"),
        ("text", "text:héllo, wörld"),
        ("bytea", "bytea:00ff10"),
        ("json", "json:{\"a\": [1, 2]}"),
        ("jsonb", "jsonb:{\"a\": [1, 2]}"),
        ("uuid", "uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ("date", "date:19724"),
        ("timestamp", "timestamp:1700000000123456"),
        ("timestamptz", "timestamptz:-1"),
        ("bool[]", "bool[]:true,null,false"),
        ("int2[]", "int16[]:1,null,-2"),
        ("int4[]", "int32[]:1,null,3"),
        ("int8[]", "int64[]:9000000000,null"),
        ("float4[]", "float32[]:0.5,null"),
        ("float8[]", "float64[]:1.25,null"),
        ("text[]", "text[]:a,null,b c"),
        ("text[]", "text[]:"),
        ("uuid[]", "uuid[]:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,null"),
    ];
    for (ty, param) in cases {
        let answer = query(&host, "types", &format!("SELECT $1::{ty} AS v"), &[param]).await;
        assert_eq!(value(&answer), param, "{ty}: {answer}");
    }
    assert_eq!(
        value(&query(&host, "types", "SELECT $1::int4 AS v", &["null"]).await),
        "null"
    );

    // Values written by PostgreSQL itself decode to the documented units.
    let answer = query(
        &host,
        "types",
        "SELECT '2024-01-02'::date, '2000-01-01 00:00:01'::timestamp, '1970-01-01 00:00:00+00'::timestamptz, \
         0.0001::numeric, 'ab'::char(3), 'x'::varchar, 42::oid, NULL::text",
        &[],
    )
    .await;
    assert_eq!(
        answer,
        "date:date,timestamp:timestamp,timestamptz:timestamptz,numeric:numeric,bpchar:char,varchar:varchar,oid:oid,text:text\n\
         date:19724 | timestamp:946684801000000 | timestamptz:0 | numeric:0.0001 | text:ab  | text:x | int64:42 | null"
    );

    // A guest's value is converted to the type the server expects, within range.
    assert_eq!(
        value(&query(&host, "types", "SELECT $1::int4", &["int64:7"]).await),
        "int32:7"
    );
    assert_eq!(
        value(&query(&host, "types", "SELECT $1::numeric", &["text:1.50"]).await),
        "numeric:1.50"
    );
    assert_eq!(
        value(
            &query(
                &host,
                "types",
                "SELECT $1::uuid",
                &["text:A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"]
            )
            .await
        ),
        "uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    for (sql, param, expected) in [
        ("SELECT $1::int2", "int32:100000", "out of range for int2"),
        (
            "SELECT $1::int4",
            "text:abc",
            "a text value cannot be sent as int4",
        ),
        ("SELECT $1::uuid", "text:nope", "is not a uuid"),
        (
            "SELECT $1::int4, $2::int4",
            "int32:1",
            "takes 2 parameter(s), 1 given",
        ),
    ] {
        let answer = query(&host, "types", sql, &[param]).await;
        assert!(
            answer.starts_with("error bad-parameter") && answer.contains(expected),
            "{sql}: {answer}"
        );
    }
    // A type the interface does not carry is named, with the way around it.
    let answer = query(&host, "types", "SELECT interval '1 day' AS i", &[]).await;
    assert!(
        answer.starts_with("error other") && answer.contains("cast it in SQL"),
        "{answer}"
    );
    // SQL errors carry PostgreSQL's SQLSTATE.
    assert!(
        query(&host, "types", "SELEC 1", &[])
            .await
            .starts_with("error other 42601:")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_commit_roll_back_and_end_with_the_instance() {
    let pg = PgServer::start();
    let host = host_with(&pg, &[("shop", pg_manifest("shop", "shop_db", ""))]);
    let (_, out) = script(
        &host,
        "shop",
        "exec CREATE TABLE t (id int PRIMARY KEY, note text)",
    )
    .await;
    assert_eq!(out.trim(), "affected 0");

    let (_, out) = script(
        &host,
        "shop",
        "begin\ntx-exec INSERT INTO t VALUES (1, 'kept')\ntx-query SELECT count(*) FROM t\ncommit",
    )
    .await;
    assert_eq!(out, "begun\naffected 1\ncount:int8 / int64:1\ncommitted\n");
    let (_, out) = script(
        &host,
        "shop",
        "begin\ntx-exec INSERT INTO t VALUES (2, 'undone')\nrollback",
    )
    .await;
    assert_eq!(out, "begun\naffected 1\nrolled back\n");
    let (_, out) = script(
        &host,
        "shop",
        "begin\ntx-exec INSERT INTO t VALUES (3, 'dropped')\ndrop-tx",
    )
    .await;
    assert_eq!(out, "begun\naffected 1\ndropped\n");
    // The guest traps with the transaction open: the instance ends, and so does it.
    let (status, _) = script(
        &host,
        "shop",
        "begin\ntx-exec INSERT INTO t VALUES (4, 'trapped')\ntrap",
    )
    .await;
    assert_eq!(status, 500);

    let (_, out) = script(&host, "shop", "query SELECT id FROM t ORDER BY id").await;
    assert_eq!(out.trim(), "id:int4 / int32:1");
    // No lock is left behind by the trapped transaction: row 4 can be written now.
    let (_, out) = script(&host, "shop", "exec INSERT INTO t VALUES (4, 'again')").await;
    assert_eq!(out.trim(), "affected 1");

    // Transaction control outside the transaction resource is refused: it would
    // leave a pooled connection mid-transaction for the next request.
    let (_, out) = script(&host, "shop", "exec BEGIN\nquery SELECT 1::int4").await;
    assert!(
        out.starts_with("error other : BEGIN outside a transaction")
            && out.ends_with("int4:int4 / int32:1\n"),
        "{out}"
    );

    // A constraint violation names the constraint.
    let (_, out) = script(&host, "shop", "exec INSERT INTO t VALUES (1, 'duplicate')").await;
    assert!(
        out.starts_with("error constraint 23505 t_pkey: duplicate key"),
        "{out}"
    );
    let (_, out) = script(
        &host,
        "shop",
        "begin\ntx-exec INSERT INTO t VALUES (1, 'dup')\ntx-query SELECT 1\nrollback",
    )
    .await;
    assert!(
        out.contains("error constraint 23505 t_pkey") && out.contains("error other 25P02"),
        "{out}"
    );

    let metrics = host.metrics().await;
    assert!(
        metric_value(&metrics, "alorig_app_pg_queries_total", "app=\"shop\"") >= 10.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "alorig_app_pg_errors_total",
            "app=\"shop\",kind=\"constraint\""
        ) >= 2.0
    );
    assert!(
        metric_value(&metrics, "alorig_app_pg_connections", "app=\"shop\"") >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("alorig_app_pg_waits_total{app=\"shop\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_cannot_reach_another_apps_database() {
    let pg = PgServer::start();
    let host = host_with(
        &pg,
        &[
            ("a", pg_manifest("a", "a_db", "")),
            ("b", pg_manifest("b", "b_db", "")),
        ],
    );
    let (_, out) = script(
        &host,
        "b",
        "exec CREATE TABLE secret (v text)\nexec INSERT INTO secret VALUES ('b only')",
    )
    .await;
    assert_eq!(out, "affected 0\naffected 1\n");

    // An operator installed dblink in a's database: it still cannot log in to b's.
    let admin_a = sqlx::PgPool::connect(&pg.url_for("a_db")).await.unwrap();
    sqlx::query("CREATE EXTENSION dblink")
        .execute(&admin_a)
        .await
        .unwrap();

    let attempts = [
        "SELECT v FROM b_db.public.secret",
        "SET ROLE alorig_b",
        "SET SESSION AUTHORIZATION alorig_b",
        "SET ROLE postgres",
        "CREATE EXTENSION postgres_fdw",
        "CREATE ROLE intruder LOGIN",
        "ALTER ROLE alorig_a SUPERUSER",
        "CREATE DATABASE other_db",
        "GRANT CONNECT ON DATABASE b_db TO alorig_a",
        "SELECT pg_read_file('pg_hba.conf')",
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "SELECT * FROM dblink('dbname=b_db user=alorig_b', 'SELECT v FROM secret') AS t(v text)",
        &format!(
            "SELECT * FROM dblink('host=127.0.0.1 port={} dbname=b_db user=alorig_a', 'SELECT v FROM secret') AS t(v text)",
            pg.port
        ),
        &format!(
            "SELECT * FROM dblink('host=127.0.0.1 port={} dbname=b_db user=postgres', 'SELECT v FROM secret') AS t(v text)",
            pg.port
        ),
        // Large objects, server files and programs, other schemas and catalogs.
        "SELECT lo_import('/etc/passwd')",
        "SELECT lo_export(lo_create(0), '/tmp/alorig-escape')",
        "SELECT pg_read_binary_file('/etc/passwd')",
        "SELECT pg_ls_dir('.')",
        "SELECT pg_stat_file('postgresql.conf')",
        "COPY (SELECT 1) TO '/tmp/alorig-escape'",
        "COPY mine FROM PROGRAM 'id'",
        "SELECT rolpassword FROM pg_authid",
        "SELECT passwd FROM pg_shadow",
        "ALTER SYSTEM SET log_statement = 'none'",
        "SELECT set_config('role', 'alorig_b', false)",
        "LOAD 'dblink'",
        "CREATE FUNCTION sh() RETURNS void AS 'libc.so.6', 'system' LANGUAGE c",
        "CREATE EXTENSION file_fdw",
        "SELECT pg_reload_conf()",
    ];
    assert_eq!(
        script(&host, "a", "exec CREATE TABLE mine (v text)")
            .await
            .1,
        "affected 0\n",
        "a table a owns, for COPY … FROM PROGRAM"
    );
    for sql in attempts {
        let answer = query(&host, "a", sql, &[]).await;
        assert!(
            answer.starts_with("error "),
            "{sql} must fail, got {answer}"
        );
        assert!(
            !answer.contains("b only") && !answer.contains("root:"),
            "{sql}: {answer}"
        );
        if sql.contains("PROGRAM") {
            assert!(
                answer.contains("permission denied")
                    || answer.contains("superuser")
                    || answer.contains("privileges"),
                "{sql}: {answer}"
            );
        }
    }
    // Ending b's sessions is refused too (or finds nothing it may end): b keeps serving.
    let _ = query(
        &host,
        "a",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'alorig_b'",
        &[],
    )
    .await;

    // Behind the host: a's own role and password cannot open b's database at all.
    let password =
        std::fs::read_to_string(host.dir.path().join("data/postgres/alorig_a.password")).unwrap();
    let err = sqlx::PgPool::connect(&format!(
        "postgres://alorig_a:{password}@127.0.0.1:{}/b_db",
        pg.port
    ))
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("permission denied for database"),
        "{err}"
    );
    let (limit, superuser): (i32, bool) =
        sqlx::query_as("SELECT rolconnlimit, rolsuper FROM pg_roles WHERE rolname = 'alorig_a'")
            .fetch_one(&admin_a)
            .await
            .unwrap();
    assert_eq!((limit, superuser), (5, false));
    // The password never reaches the host's logs, nor the server's statement log.
    assert!(!host.log().contains(password.trim()));
    let server_log = pg.server_log();
    assert!(
        server_log.contains("ALTER ROLE \"alorig_a\"")
            || server_log.contains("CREATE ROLE \"alorig_a\""),
        "{server_log}"
    );
    assert!(!server_log.contains(password.trim()), "{server_log}");

    // The activity view shows a's neighbours' sessions without their statements.
    let activity = query(&host, "a", "SELECT string_agg(coalesce(query, ''), ' | ') FROM pg_stat_activity WHERE usename <> 'alorig_a'", &[]).await;
    assert!(!activity.contains("secret"), "{activity}");

    let (_, out) = script(&host, "b", "query SELECT v FROM secret").await;
    assert_eq!(out.trim(), "v:text / text:b only", "b's data is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_importing_postgres_needs_a_postgres_section() {
    let (path, stderr) = crate::harness::validate_error("nopg", "test-postgres", "");
    assert_eq!(
        stderr,
        format!(
            "error: {}: the component imports alorig:host/postgres but the manifest has no [postgres] section",
            path.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_statement_timeout_holds_even_when_the_guest_turns_it_off() {
    let pg = PgServer::start();
    let host = host_with(&pg, &[("slow", pg_manifest("slow", "slow_db", ""))]);

    let started = Instant::now();
    let (_, out) = script(&host, "slow", "query SELECT pg_sleep(10)").await;
    assert!(out.starts_with("error timeout 57014:"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The guest switches the server's timeout off on its connection: the host
    // cancels the statement on the server anyway.
    let started = Instant::now();
    let (_, out) = script(
        &host,
        "slow",
        "begin\ntx-exec SET statement_timeout = 0\ntx-query SELECT pg_sleep(10)\nrollback",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["begun", "affected 0"]);
    assert!(lines[2].starts_with("error timeout 57014:"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // And the server is no longer running it.
    let admin = sqlx::PgPool::connect(&pg.url_for("postgres"))
        .await
        .unwrap();
    let (running,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(10)%' AND state = 'active' AND pid <> pg_backend_pid()")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(running, 0);
    assert!(
        host.metric(
            "alorig_app_pg_errors_total",
            "app=\"slow\",kind=\"timeout\""
        )
        .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_a_clear_error_and_queries_resume_without_a_restart() {
    let pg = PgServer::start();
    let host = host_with(&pg, &[("flaky", pg_manifest("flaky", "flaky_db", ""))]);
    assert_eq!(
        value(&query(&host, "flaky", "SELECT 1::int4", &[]).await),
        "int32:1"
    );

    pg.stop();
    for _ in 0..3 {
        let answer = query(&host, "flaky", "SELECT 1::int4", &[]).await;
        assert!(answer.starts_with("error unavailable"), "{answer}");
    }
    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = query(&host, "flaky", "SELECT 1::int4", &[]).await;
        if answer.ends_with("int32:1") {
            break;
        }
        assert!(answer.starts_with("error unavailable"), "{answer}");
        assert!(
            Instant::now() < deadline,
            "queries did not resume: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        host.metric(
            "alorig_app_pg_errors_total",
            "app=\"flaky\",kind=\"unavailable\""
        )
        .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_past_the_memory_budget_fails_cleanly() {
    let pg = PgServer::start();
    let host = host_with(&pg, &[("big", pg_manifest("big", "big_db", ""))]);
    // ~100 MB of rows for an instance allowed 32 MiB.
    let answer = query(
        &host,
        "big",
        "SELECT repeat('x', 1000000) FROM generate_series(1, 100)",
        &[],
    )
    .await;
    assert!(
        answer.starts_with("error too-large"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    // The same app keeps working, and a result that fits still comes through.
    let answer = query(
        &host,
        "big",
        "SELECT count(*) FROM (SELECT repeat('x', 1000) FROM generate_series(1, 1000)) s",
        &[],
    )
    .await;
    assert_eq!(value(&answer), "int64:1000");
    let answer = query(
        &host,
        "big",
        "SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
        &[],
    )
    .await;
    assert_eq!(answer.lines().count(), 2001);
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_past_the_host_connection_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, pg_manifest("a", "a_db", "")).unwrap();
    std::fs::write(&b, pg_manifest("b", "b_db", "")).unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npostgres_max_connections = 6\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(host_binary())
        .args([
            "up",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .env(
            "ALORIG_POSTGRES_URL",
            "postgres://postgres:x@127.0.0.1:1/postgres",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the apps' postgres.max_connections add up to 8 (a 4, b 4), more than the host's limit of 6"),
        "{stderr}"
    );
}

/// One-row query latency: a guest through the host vs native sqlx, same run.
#[tokio::test(flavor = "multi_thread")]
async fn benchmark_one_row_query_guest_vs_native_sqlx() {
    let pg = PgServer::start();
    let host = host_with(&pg, &[("bench", pg_manifest("bench", "bench_db", ""))]);
    let (_, out) = script(
        &host,
        "bench",
        "exec CREATE TABLE items (id int PRIMARY KEY, name text, price numeric)\n\
         exec INSERT INTO items SELECT i, 'item ' || i, i * 1.5 FROM generate_series(1, 100) i",
    )
    .await;
    assert_eq!(out, "affected 0\naffected 100\n");
    let sql = "SELECT id, name, price::text FROM items WHERE id = $1";
    let n = 400;

    // Native: the same query with sqlx on the same database, pool of 4 (as the
    // superuser: the app's role is already at its CONNECTION LIMIT with the host).
    let native = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .test_before_acquire(false)
        .connect(&pg.url_for("bench_db"))
        .await
        .unwrap();

    let guest_run = || async {
        let reply = host
            .request(
                "POST",
                "bench.test",
                &format!("/bench?n={n}"),
                sql.as_bytes().to_vec(),
            )
            .await;
        let text = reply.text();
        text.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| Duration::from_nanos(s.parse().unwrap_or_else(|_| panic!("{text}"))))
            .collect::<Vec<_>>()
    };
    let native_run = || async {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let started = Instant::now();
            let row: (i32, String, String) = sqlx::query_as(sql)
                .bind((i % 100) as i32 + 1)
                .fetch_one(&native)
                .await
                .unwrap();
            samples.push(started.elapsed());
            std::hint::black_box(row);
        }
        samples
    };
    // Warm up both, then alternate short runs so that load from elsewhere on
    // the machine hits both sides alike.
    let rounds = 10;
    guest_run().await;
    native_run().await;
    let (mut guest, mut nat) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        guest.extend(guest_run().await);
        nat.extend(native_run().await);
    }
    assert_eq!(guest.len(), rounds * n);
    let (g50, g99) = percentiles(guest);
    let (n50, n99) = percentiles(nat);
    println!(
        "postgres one-row query ({rounds}x{n} each): guest through host p50 {g50:.3} ms p99 {g99:.3} ms | native sqlx p50 {n50:.3} ms p99 {n99:.3} ms | ratio p50 {:.2}x p99 {:.2}x",
        g50 / n50,
        g99 / n99
    );
    // Target ≤ 1.3x at p50; the bound here is loose because the machine is shared.
    assert!(
        g50 / n50 < 3.0,
        "guest p50 {g50:.3} ms vs native {n50:.3} ms"
    );
}

/// The reference app: a store page and fuzzy search on its own database.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_app_lists_and_searches_products() {
    let pg = PgServer::start();
    let store = manifest(
        "store",
        "store",
        "[postgres]\ndatabase = \"store_db\"\nmax_connections = 5\nstatement_timeout = \"3s\"\n[[routes]]\nhost = \"store.test\"",
    );
    let host = host_with(&pg, &[("store", store)]);
    for _ in 0..2 {
        let reply = host
            .request("POST", "store.test", "/setup", Vec::new())
            .await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "ready\n"),
            "setup is idempotent"
        );
    }
    let page = host.get("store.test", "/s/snap-audio").await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("<h1>Snap Audio</h1>"), "{html}");
    let cable = html.find("USB-C Cable").unwrap();
    let studio = html.find("Studio Monitor Headphones").unwrap();
    assert!(cable < studio, "cheapest first: {html}");
    assert!(
        html.contains("€89.90") && !html.contains("Ceramic Mug"),
        "{html}"
    );

    let found = host
        .get("store.test", "/s/snap-audio/search?q=headphnes")
        .await
        .text();
    assert!(
        found.contains("Results for “headphnes”: 2") && found.contains("Wireless Headphones"),
        "{found}"
    );
    let found = host
        .get("store.test", "/s/snap-home/search?q=headphones")
        .await
        .text();
    assert!(
        found.contains(": 0"),
        "another store's products stay out: {found}"
    );
    assert_eq!(host.get("store.test", "/s/nope").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_past_the_host_connection_limit_is_refused_and_changes_nothing() {
    let pg = PgServer::start();
    let data = tempfile::tempdir().unwrap();
    let url = pg.admin_url();
    let host = Host::serve_full(
        data.path(),
        "postgres_max_connections = 6",
        &[("ALORIG_POSTGRES_URL", url.as_str())],
    );
    let files = crate::harness::write_files(
        data.path(),
        &[
            ("a.toml", pg_manifest("a", "a_db", "")),
            ("b.toml", pg_manifest("b", "b_db", "")),
        ],
    );
    let (code, _, stderr) = host.cli(&["deploy", &files[0]]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = host.cli(&["deploy", &files[1]]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("the apps' postgres.max_connections add up to 8 (a 4, b 4), more than the host's limit of 6"),
        "{stderr}"
    );
    let (_, apps, _) = host.cli(&["apps", "--json"]);
    assert!(apps.contains("\"a\"") && !apps.contains("\"b\""), "{apps}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_while_postgresql_is_down_is_a_503_naming_it_and_the_live_version_stays() {
    let pg = PgServer::start();
    let data = tempfile::tempdir().unwrap();
    let host = Host::serve_full(data.path(), "", &[("ALORIG_POSTGRES_URL", &pg.admin_url())]);
    let token = host.token();
    let component = std::fs::read(crate::harness::guest("test-postgres")).unwrap();
    let (status, answer) = crate::deploy::put(
        &host,
        "shop",
        &pg_manifest("shop", "shop_db", ""),
        &component,
        &token,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    query(&host, "shop", "SELECT 1", &[]).await;

    pg.stop();
    let newer = pg_manifest("shop", "shop_db", "[env]\nVERSION = \"2\"");
    let (status, answer) = crate::deploy::put(&host, "shop", &newer, &component, &token).await;
    assert_eq!(status, 503, "an outage is not a bad component: {answer}");
    assert_eq!(
        answer["error"]["code"], "dependency_unavailable",
        "{answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("PostgreSQL is unavailable: "),
        "{message}"
    );
    let apps = host
        .admin_request(
            "GET",
            "/v1/apps/shop",
            &[("authorization", format!("Bearer {token}"))],
            Vec::new(),
        )
        .await;
    let apps: serde_json::Value = serde_json::from_slice(&apps.body).unwrap();
    assert_eq!(apps["version"], 1, "the live version stays: {apps}");

    pg.start_again();
    let (status, answer) = crate::deploy::put(&host, "shop", &newer, &component, &token).await;
    assert_eq!(
        status, 201,
        "once PostgreSQL is back the same deploy goes through: {answer}"
    );
}
