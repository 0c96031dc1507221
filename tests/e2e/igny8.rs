//! IGNY8's automation rule runner (components/igny8) from its shipped manifests,
//! against real PostgreSQL and Redis, with stub AI and WordPress servers on
//! loopback: a rule's own cron slot runs exactly once across two hosts, with
//! one AI call, one WordPress post and the seed's exact credit cost; the 11th
//! run of a day, an over-limit run and an account short of credits make no
//! outbound call; staging writes only its own database and keys.

use crate::{
    harness::Host,
    postgres_server::PgServer,
    redis_server::RedisServer,
    shipped_apps::igny8::{TOKEN, envs, shipped, up},
    stub::Stub,
};
use serde_json::{Value, json};
use sqlx::{Connection as _, Row as _};
use std::time::{Duration, Instant};

fn ai_stub() -> Stub {
    Stub::start(|_| {
        let article =
            "# Ten local SEO wins\n\nClaim your business profile.\n\nCollect reviews every week.";
        (
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": article}}]})
                .to_string(),
        )
    })
}

fn wp_stub() -> Stub {
    Stub::start(|req| {
        if req.path == "/wp-json/wp/v2/posts" {
            (201, json!({"id": 501}).to_string())
        } else {
            (404, "{}".into())
        }
    })
}

async fn api(host: &Host, api_host: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let reply = host
        .request_with(
            method,
            api_host,
            path,
            &[("authorization", format!("Bearer {TOKEN}"))],
            body.to_string().into_bytes(),
        )
        .await;
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
    )
}

async fn create(host: &Host, api_host: &str, path: &str, body: Value) -> i64 {
    let (status, reply) = api(host, api_host, "POST", path, body).await;
    assert_eq!(status, 201, "{path}: {reply}");
    reply["id"].as_i64().unwrap()
}

async fn rows(pg: &PgServer, database: &str, sql: &str) -> Vec<Vec<String>> {
    let mut conn = sqlx::PgConnection::connect(&pg.url_for(database))
        .await
        .unwrap();
    let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<Option<String>, _>(i)
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

/// Waits up to `limit` for `done()`; answers whether it happened.
async fn wait_for(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A cron minute and hour in Asia/Karachi (UTC+5, no DST) at least 8 s from
/// now, and that slot's instant in UTC milliseconds.
fn next_karachi_slot() -> (String, i64) {
    let now = chrono::Utc::now().timestamp_millis();
    let slot = (now + 8_000) / 60_000 * 60_000 + 60_000;
    let local_minutes = (slot / 60_000 + 5 * 60) % (24 * 60);
    (
        format!("{} {} * * *", local_minutes % 60, local_minutes / 60),
        slot,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn igny8_a_rule_slot_runs_once_across_two_hosts_and_charges_the_seeds_cost() {
    let (pg, redis, ai, wp) = (
        PgServer::start(),
        RedisServer::start(),
        ai_stub(),
        wp_stub(),
    );
    let envs = envs(&pg);
    let text = shipped("igny8.toml", &ai, &wp, 1);
    let a = up(&[("igny8", text.clone())], &redis, &envs);
    let mut envs_b = envs.clone();
    envs_b.push(("ALORIG_DATA_DIR", a.data.display().to_string()));
    let b = up(&[("igny8", text)], &redis, &envs_b);
    let api_host = "api.igny8.com";

    assert_eq!(a.get(api_host, "/system/ping/").await.status, 200);
    let (status, _) = api(&a, api_host, "GET", "/api/v1/accounts/1/", Value::Null).await;
    assert_eq!(
        status, 404,
        "the schema is migrated on first use, and empty"
    );
    let refused = a
        .request("POST", api_host, "/api/v1/accounts/", b"{}".to_vec())
        .await;
    assert_eq!(refused.status, 401, "writes need the API token");

    let account = create(
        &a,
        api_host,
        "/api/v1/accounts/",
        json!({"name": "Agency", "credits": 1000}),
    )
    .await;
    let site = create(&b, api_host, "/api/v1/sites/",
        json!({"account_id": account, "name": "Blog", "wp_url": wp.origin(), "wp_username": "editor", "wp_app_password": "abcd efgh"})).await;
    let (cron, slot) = next_karachi_slot();
    let actions = json!([{"type": "generate_content", "params": {"word_count": 1500, "topic": "local SEO"}}, {"type": "publish"}]);
    let rule = create(
        &a,
        api_host,
        "/api/v1/automation/rules/",
        json!({"site_id": site, "name": "Daily article", "trigger": "schedule", "actions": actions,
               "schedule": {"cron": cron, "timezone": "Asia/Karachi"}}),
    )
    .await;

    // Both hosts tick every second; the slot comes within ~70 s.
    assert!(
        wait_for(Duration::from_secs(90), async || wp.count() >= 1).await,
        "no post\n{}\n{}",
        a.log(),
        b.log()
    );
    tokio::time::sleep(Duration::from_secs(4)).await; // room for any duplicate
    assert_eq!(ai.count(), 1, "exactly one AI call for the slot");
    assert_eq!(wp.count(), 1, "exactly one WordPress post");
    let call = &ai.seen()[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(call.header("authorization"), Some("Bearer sk-test-igny8"));
    assert!(
        call.body.contains("about 1500 words on: local SEO"),
        "{}",
        call.body
    );
    let post = &wp.seen()[0];
    assert_eq!(
        post.header("authorization"),
        Some("Basic ZWRpdG9yOmFiY2QgZWZnaA==")
    );
    let body: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(
        (body["title"].as_str(), body["status"].as_str()),
        (Some("Ten local SEO wins"), Some("publish"))
    );
    assert!(
        body["content"]
            .as_str()
            .unwrap()
            .contains("<p>Collect reviews every week.</p>"),
        "{body}"
    );

    let runs = rows(
        &pg,
        "igny8_db",
        "SELECT slot_ms::text, status, credits_used::text, source, task_id::text FROM rule_runs",
    )
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0][..4],
        [
            slot.to_string(),
            "done".into(),
            "15".into(),
            "schedule".into()
        ],
        "1 credit per 100 words, at the Karachi minute"
    );
    let (_, acc) = api(
        &b,
        api_host,
        "GET",
        &format!("/api/v1/accounts/{account}/"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (
            acc["credits"].as_i64(),
            acc["usage"]["generate_content"].as_i64()
        ),
        (Some(985), Some(15)),
        "{acc}"
    );
    let content = rows(
        &pg,
        "igny8_db",
        "SELECT status, wp_post_id::text, title FROM contents",
    )
    .await;
    assert_eq!(
        content,
        vec![vec![
            "published".to_string(),
            "501".into(),
            "Ten local SEO wins".into()
        ]]
    );
    let jobs = rows(
        &pg,
        "postgres",
        "SELECT count(*)::text FROM alorig_jobs.jobs WHERE app = 'igny8' AND name = 'run_rule'",
    )
    .await;
    assert_eq!(
        jobs[0][0], "1",
        "one job for the slot, however many ticks saw it"
    );
    let task = &runs[0][4];
    let (_, progress) = api(
        &a,
        api_host,
        "GET",
        &format!("/api/v1/tasks/{task}/progress/"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (progress["state"].as_str(), progress["progress"].as_i64()),
        (Some("SUCCESS"), Some(100)),
        "{progress}"
    );

    // Ten more runs at once, through both hosts: the day's 10 are allowed, the 11th refused.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let host = if i % 2 == 0 { &a } else { &b };
        let (status, reply) = api(
            host,
            api_host,
            "POST",
            &format!("/api/v1/automation/rules/{rule}/run/"),
            Value::Null,
        )
        .await;
        assert_eq!(status, 202, "{reply}");
        tasks.push(reply["task_id"].as_i64().unwrap());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let settled = "SELECT count(*)::text FROM rule_runs WHERE status NOT IN ('queued', 'charged')";
    assert!(
        wait_for(Duration::from_secs(60), async || rows(
            &pg, "igny8_db", settled
        )
        .await[0][0]
            == "11")
        .await
    );
    let by_status = rows(
        &pg,
        "igny8_db",
        "SELECT status, count(*)::text FROM rule_runs GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        by_status,
        vec![
            vec!["done".to_string(), "10".into()],
            vec!["refused_daily_limit".into(), "1".into()]
        ]
    );
    assert!(wait_for(Duration::from_secs(30), async || wp.count() == 10).await);
    assert_eq!(ai.count(), 10, "the refused run called nobody");
    let (_, acc) = api(
        &a,
        api_host,
        "GET",
        &format!("/api/v1/accounts/{account}/"),
        Value::Null,
    )
    .await;
    assert_eq!(acc["credits"].as_i64(), Some(1000 - 10 * 15));
    let mut states = Vec::new();
    for task in &tasks {
        let (_, p) = api(
            &a,
            api_host,
            "GET",
            &format!("/api/v1/tasks/{task}/progress/"),
            Value::Null,
        )
        .await;
        states.push(p["state"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(
        states.iter().filter(|s| *s == "FAILURE").count(),
        1,
        "{states:?}"
    );

    // Short of credits, or over the rule's per-execution limit: refused before any call.
    let poor = create(
        &a,
        api_host,
        "/api/v1/accounts/",
        json!({"name": "Poor", "credits": 10}),
    )
    .await;
    let poor_site = create(
        &a,
        api_host,
        "/api/v1/sites/",
        json!({"account_id": poor, "name": "P", "wp_url": wp.origin()}),
    )
    .await;
    let cheap = create(
        &a,
        api_host,
        "/api/v1/automation/rules/",
        json!({"site_id": poor_site, "name": "r", "trigger": "manual", "actions": actions}),
    )
    .await;
    let long = json!([{"type": "generate_content", "params": {"word_count": 20000}}]);
    let big = create(
        &a,
        api_host,
        "/api/v1/automation/rules/",
        json!({"site_id": site, "name": "big", "trigger": "manual", "actions": long}),
    )
    .await;
    for rule in [cheap, big] {
        let (status, _) = api(
            &b,
            api_host,
            "POST",
            &format!("/api/v1/automation/rules/{rule}/run/"),
            Value::Null,
        )
        .await;
        assert_eq!(status, 202);
    }
    let refused = "SELECT status FROM rule_runs WHERE status LIKE 'insufficient%' OR status LIKE 'refused_execution%' ORDER BY status";
    assert!(
        wait_for(Duration::from_secs(30), async || rows(
            &pg, "igny8_db", refused
        )
        .await
        .len()
            == 2)
        .await
    );
    assert_eq!(
        rows(&pg, "igny8_db", refused).await,
        vec![
            vec!["insufficient_credits".to_string()],
            vec!["refused_execution_limit".to_string()]
        ]
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (ai.count(), wp.count()),
        (10, 10),
        "no outbound call for a refused run"
    );
    let (_, acc) = api(
        &a,
        api_host,
        "GET",
        &format!("/api/v1/accounts/{poor}/"),
        Value::Null,
    )
    .await;
    assert_eq!(acc["credits"].as_i64(), Some(10), "nothing deducted");
    let ticks = a
        .metric(
            "alorig_app_timer_runs_total",
            "app=\"igny8\",timer=\"automation_tick\",outcome=\"ok\"",
        )
        .await
        + b.metric(
            "alorig_app_timer_runs_total",
            "app=\"igny8\",timer=\"automation_tick\",outcome=\"ok\"",
        )
        .await;
    assert!(ticks >= 10.0, "the tick ran: {ticks}");
}

#[tokio::test(flavor = "multi_thread")]
async fn igny8_staging_runs_the_same_component_on_its_own_database_and_keys() {
    let (pg, redis, ai, wp) = (
        PgServer::start(),
        RedisServer::start(),
        ai_stub(),
        wp_stub(),
    );
    let envs = envs(&pg);
    let host = up(
        &[
            ("igny8", shipped("igny8.toml", &ai, &wp, 2)),
            ("igny8-staging", shipped("igny8-staging.toml", &ai, &wp, 2)),
        ],
        &redis,
        &envs,
    );
    for (api_host, name) in [
        ("api.igny8.com", "Prod agency"),
        ("staging-api.igny8.com", "Staging agency"),
    ] {
        let account = create(
            &host,
            api_host,
            "/api/v1/accounts/",
            json!({"name": name, "credits": 100}),
        )
        .await;
        let site = create(
            &host,
            api_host,
            "/api/v1/sites/",
            json!({"account_id": account, "name": "S", "wp_url": wp.origin()}),
        )
        .await;
        let actions = json!([{"type": "generate_content", "params": {"word_count": 300}}]);
        let rule = create(
            &host,
            api_host,
            "/api/v1/automation/rules/",
            json!({"site_id": site, "name": "r", "trigger": "manual", "actions": actions}),
        )
        .await;
        let (status, _) = api(
            &host,
            api_host,
            "POST",
            &format!("/api/v1/automation/rules/{rule}/run/"),
            Value::Null,
        )
        .await;
        assert_eq!(status, 202);
    }
    for db in ["igny8_db", "igny8_staging_db"] {
        assert!(
            wait_for(Duration::from_secs(30), async || rows(
                &pg,
                db,
                "SELECT status FROM rule_runs"
            )
            .await
                == vec![vec!["done".to_string()]])
            .await,
            "{db}"
        );
    }
    assert_eq!(
        rows(&pg, "igny8_db", "SELECT name, credits::text FROM accounts").await,
        vec![vec!["Prod agency".to_string(), "97".into()]]
    );
    assert_eq!(
        rows(
            &pg,
            "igny8_staging_db",
            "SELECT name, credits::text FROM accounts"
        )
        .await,
        vec![vec!["Staging agency".to_string(), "97".into()]]
    );
    let keys = |db: u8| {
        let mut conn = redis.connection(db);
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        keys.sort();
        keys
    };
    let (prod, staging) = (keys(0), keys(1));
    assert!(
        !prod.is_empty() && prod.iter().all(|k| k.starts_with("igny8:task:")),
        "{prod:?}"
    );
    assert!(
        !staging.is_empty() && staging.iter().all(|k| k.starts_with("igny8_staging:task:")),
        "{staging:?}"
    );
    let calls: Vec<String> = ai
        .seen()
        .iter()
        .filter_map(|c| c.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(
        calls.contains(&"Bearer sk-test-igny8".to_string())
            && calls.contains(&"Bearer sk-test-igny8_staging".to_string()),
        "each twin its own key: {calls:?}"
    );
}
