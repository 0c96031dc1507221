//! IGNY8's automation rule runner on the host (seeds 002 §5, §10 and 003): the
//! part of IGNY8 that stresses the platform — tenant-defined cron schedules
//! feeding durable jobs, a credit ledger charged before each AI call, and
//! publishing to each customer's WordPress.
//!
//! One component, two deployments: `igny8` and `igny8-staging` differ only in
//! their manifests (database, Redis DB and prefix, hosts); nothing here knows
//! which one it is.
//!
//! HTTP (`api.igny8.com`; a trailing `/` is optional):
//! * `GET /system/ping/` — the WordPress plugin's liveness check (001 L181);
//! * `GET /api/v1/system/status/` — the health check (003 L309): database and Redis;
//! * `POST /api/v1/accounts/`, `GET /api/v1/accounts/{id}/` — credits and usage;
//! * `POST /api/v1/sites/` — a site with its WordPress URL and application password;
//! * `POST /api/v1/automation/rules/` — a rule (002 §5.2);
//! * `POST /api/v1/automation/rules/{id}/run/` — run now: `202 {"task_id"}`;
//! * `GET /api/v1/automation/rules/{id}/runs/` — its runs and their status;
//! * `GET /api/v1/tasks/{id}/progress/` — Celery-style `{state, progress, message}`;
//! * `POST /api/v1/demo/` — demo data (an agency, a site, an inactive rule).
//!
//! Writes need `Authorization: Bearer $API_TOKEN` when the `API_TOKEN` secret is set.
//! Timers and jobs: see [`runner`].

pub mod ai;
pub mod credits;
pub mod runner;
pub mod schema;
pub mod slots;

use guest_kit::timers;
use guest_kit::{postgres as pg, redis, wasip2};
use pg::Value;
use serde_json::{Value as Json, json};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Igny8;

type Answer = (u16, Json);

fn fail(status: u16, message: impl Into<String>) -> Answer {
    (status, json!({"error": message.into()}))
}

fn db(e: pg::Error) -> Answer {
    let status = if matches!(e, pg::Error::Unavailable(_) | pg::Error::Timeout(_)) {
        503
    } else {
        500
    };
    eprintln!("igny8: database: {}", e.describe());
    fail(status, format!("database {}", e.kind()))
}

fn authorized(req: &IncomingRequest) -> bool {
    match std::env::var("API_TOKEN") {
        Ok(token) if !token.is_empty() => {
            guest_kit::header(req, "authorization").is_some_and(|h| h == format!("Bearer {token}"))
        }
        _ => true,
    }
}

fn body_json(req: &IncomingRequest) -> Result<Json, Answer> {
    serde_json::from_slice(&guest_kit::read_body(req))
        .map_err(|e| fail(400, format!("the body is not JSON: {e}")))
}

fn field_i64(body: &Json, name: &str) -> Result<i64, Answer> {
    body.get(name)
        .and_then(Json::as_i64)
        .ok_or_else(|| fail(400, format!("field {name:?} must be an integer")))
}

fn field_str<'a>(body: &'a Json, name: &str) -> Result<&'a str, Answer> {
    body.get(name)
        .and_then(Json::as_str)
        .ok_or_else(|| fail(400, format!("field {name:?} must be a string")))
}

fn returning_id(rows: Result<pg::RowSet, pg::Error>) -> Result<Answer, Answer> {
    let rows = rows.map_err(|e| match e {
        pg::Error::ConstraintViolation(c) => {
            fail(400, format!("refused by {}: {}", c.constraint, c.message))
        }
        other => db(other),
    })?;
    let id = rows.rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0);
    Ok((201, json!({"id": id})))
}

fn route(req: &IncomingRequest) -> Result<Answer, Answer> {
    let path = guest_kit::path(req);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method();
    if let (Method::Get, ["system", "ping"]) = (&method, segments.as_slice()) {
        return Ok((200, json!({"status": "ok"})));
    }
    schema::migrate().map_err(db)?;
    let api = match segments.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        _ => return Err(fail(404, "not found")),
    };
    if let (Method::Get, ["system", "status"]) = (&method, api) {
        return status();
    }
    if !authorized(req) {
        return Err(fail(401, "missing or wrong API token"));
    }
    match (method, api) {
        (Method::Post, ["accounts"]) => {
            let body = body_json(req)?;
            let credits = field_i64(&body, "credits")?;
            returning_id(pg::query(
                "INSERT INTO accounts (name, credits, monthly_credits) VALUES ($1, $2, $3) RETURNING id",
                &[
                    Value::Text(field_str(&body, "name")?.into()),
                    Value::Int32(credits as i32),
                    Value::Int32(
                        body.get("monthly_credits")
                            .and_then(Json::as_i64)
                            .unwrap_or(credits) as i32,
                    ),
                ],
            ))
        }
        (Method::Get, ["accounts", id]) => {
            account(id.parse().map_err(|_| fail(404, "no such account"))?)
        }
        (Method::Post, ["sites"]) => {
            let body = body_json(req)?;
            returning_id(pg::query(
                "INSERT INTO sites (account_id, name, wp_url, wp_username, wp_app_password) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[
                    Value::Int32(field_i64(&body, "account_id")? as i32),
                    Value::Text(field_str(&body, "name")?.into()),
                    Value::Text(field_str(&body, "wp_url")?.into()),
                    Value::Text(
                        body.get("wp_username")
                            .and_then(Json::as_str)
                            .unwrap_or("")
                            .into(),
                    ),
                    Value::Text(
                        body.get("wp_app_password")
                            .and_then(Json::as_str)
                            .unwrap_or("")
                            .into(),
                    ),
                ],
            ))
        }
        (Method::Post, ["automation", "rules"]) => create_rule(&body_json(req)?),
        (Method::Post, ["automation", "rules", id, "run"]) => {
            run_now(id.parse().map_err(|_| fail(404, "no such rule"))?)
        }
        (Method::Get, ["automation", "rules", id, "runs"]) => {
            runs(id.parse().map_err(|_| fail(404, "no such rule"))?)
        }
        (Method::Get, ["tasks", id, "progress"]) => {
            task_progress(id.parse().map_err(|_| fail(404, "no such task"))?)
        }
        (Method::Post, ["demo"]) => demo(),
        _ => Err(fail(404, "not found")),
    }
}

fn status() -> Result<Answer, Answer> {
    let database =
        pg::query("SELECT count(*) FROM automation_rules WHERE is_active", &[]).map_err(db)?;
    let active = database
        .rows
        .first()
        .and_then(|r| r[0].as_i64())
        .unwrap_or(0);
    let redis_ok = redis::exists(&["status-probe".to_string()]).is_ok();
    let status = if redis_ok { 200 } else { 503 };
    Ok((
        status,
        json!({"status": if redis_ok { "ok" } else { "degraded" }, "database": "ok", "redis": if redis_ok { "ok" } else { "unavailable" }, "active_rules": active}),
    ))
}

fn create_rule(body: &Json) -> Result<Answer, Answer> {
    let trigger = body
        .get("trigger")
        .and_then(Json::as_str)
        .unwrap_or("schedule");
    let actions = body.get("actions").cloned().unwrap_or(Json::Null);
    credits::total(&actions).map_err(|why| fail(400, format!("actions: {why}")))?;
    let schedule = body.get("schedule").cloned().unwrap_or(json!({}));
    if trigger == "schedule" {
        slots::RuleSchedule::parse(&schedule)
            .map_err(|why| fail(400, format!("schedule: {why}")))?;
    }
    returning_id(pg::query(
        "INSERT INTO automation_rules (site_id, name, trigger, conditions, actions, schedule, is_active,
            max_executions_per_day, credit_limit_per_execution, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        &[
            Value::Int32(field_i64(body, "site_id")? as i32),
            Value::Text(field_str(body, "name")?.into()),
            Value::Text(trigger.into()),
            Value::Jsonb(body.get("conditions").cloned().unwrap_or(json!({})).to_string()),
            Value::Jsonb(actions.to_string()),
            Value::Jsonb(schedule.to_string()),
            Value::Boolean(body.get("is_active").and_then(Json::as_bool).unwrap_or(true)),
            Value::Int32(body.get("max_executions_per_day").and_then(Json::as_i64).unwrap_or(10) as i32),
            Value::Int32(body.get("credit_limit_per_execution").and_then(Json::as_i64).unwrap_or(100) as i32),
            Value::Int64(guest_kit::now_ms()),
        ],
    ))
}

/// A manual run: a slot at "now" in the rule's zone, through the same job as the tick's.
fn run_now(rule: i64) -> Result<Answer, Answer> {
    let rows = pg::query(
        "SELECT schedule FROM automation_rules WHERE id = $1",
        &[Value::Int32(rule as i32)],
    )
    .map_err(db)?;
    let Some(row) = rows.rows.first() else {
        return Err(fail(404, "no such rule"));
    };
    let schedule = row[0]
        .as_text()
        .and_then(|t| serde_json::from_str::<Json>(t).ok())
        .unwrap_or_default();
    let zone = schedule
        .get("timezone")
        .and_then(Json::as_str)
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::Tz::UTC);
    let now = guest_kit::now_ms();
    match runner::enqueue(rule, now, slots::day_in(zone, now), "manual") {
        Ok(Some(task)) => Ok((202, json!({"task_id": task}))),
        Ok(None) => Err(fail(409, "a run of this rule was just started")),
        Err(why) => Err(fail(503, why)),
    }
}

fn runs(rule: i64) -> Result<Answer, Answer> {
    let rows = pg::query(
        "SELECT id, slot_ms, source, status, credits_used, task_id, coalesce(error, '') FROM rule_runs WHERE rule_id = $1 ORDER BY slot_ms",
        &[Value::Int32(rule as i32)],
    )
    .map_err(db)?;
    let list: Vec<Json> = rows
        .rows
        .iter()
        .map(|r| json!({"id": r[0].as_i64(), "slot_ms": r[1].as_i64(), "source": r[2].as_text(), "status": r[3].as_text(),
                        "credits_used": r[4].as_i64(), "task_id": r[5].as_i64(), "error": r[6].as_text()}))
        .collect();
    Ok((200, json!({"runs": list})))
}

fn account(id: i64) -> Result<Answer, Answer> {
    let rows = pg::query(
        "SELECT name, credits, monthly_credits FROM accounts WHERE id = $1",
        &[Value::Int32(id as i32)],
    )
    .map_err(db)?;
    let Some(row) = rows.rows.first() else {
        return Err(fail(404, "no such account"));
    };
    let usage = pg::query(
        "SELECT operation_type, sum(credits_used)::bigint FROM credit_usage_log WHERE account_id = $1 GROUP BY 1 ORDER BY 1",
        &[Value::Int32(id as i32)],
    )
    .map_err(db)?;
    let by_type: serde_json::Map<String, Json> = usage
        .rows
        .iter()
        .map(|r| {
            (
                r[0].as_text().unwrap_or_default().to_string(),
                json!(r[1].as_i64()),
            )
        })
        .collect();
    Ok((
        200,
        json!({"id": id, "name": row[0].as_text(), "credits": row[1].as_i64(), "monthly_credits": row[2].as_i64(), "usage": by_type}),
    ))
}

fn task_progress(task: u64) -> Result<Answer, Answer> {
    let fields =
        redis::hgetall(&format!("task:{task}")).map_err(|e| fail(503, format!("redis: {e:?}")))?;
    if fields.is_empty() {
        return Ok((
            200,
            json!({"task_id": task, "state": "PENDING", "progress": 0, "message": ""}),
        ));
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    Ok((
        200,
        json!({"task_id": task, "state": get("state"), "progress": get("progress").parse::<i64>().unwrap_or(0), "message": get("message")}),
    ))
}

fn demo() -> Result<Answer, Answer> {
    let tx = pg::begin().map_err(db)?;
    let existing = tx
        .query("SELECT id FROM accounts WHERE name = 'Demo Agency'", &[])
        .map_err(db)?;
    if existing.rows.is_empty() {
        let now = Value::Int64(guest_kit::now_ms());
        for sql in [
            "INSERT INTO accounts (name, credits, monthly_credits) VALUES ('Demo Agency', 1000, 1000)",
            "INSERT INTO sites (account_id, name, wp_url) SELECT id, 'Demo Blog', 'https://blog.example.com' FROM accounts WHERE name = 'Demo Agency'",
        ] {
            tx.execute(sql, &[]).map_err(db)?;
        }
        tx.execute(
            "INSERT INTO automation_rules (site_id, name, trigger, actions, schedule, is_active, created_ms)
             SELECT s.id, 'Daily article', 'schedule',
                '[{\"type\": \"generate_content\", \"params\": {\"word_count\": 1200, \"topic\": \"Local SEO basics\"}}, {\"type\": \"publish\"}]',
                '{\"cron\": \"0 9 * * *\", \"timezone\": \"Asia/Karachi\"}', false, $1
             FROM sites s WHERE s.name = 'Demo Blog'",
            &[now],
        )
        .map_err(db)?;
    }
    pg::Transaction::commit(tx).map_err(db)?;
    Ok((200, json!({"demo": "ready"})))
}

impl wasip2::exports::http::incoming_handler::Guest for Igny8 {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = route(&request).unwrap_or_else(|e| e);
        guest_kit::respond(
            out,
            status,
            "application/json",
            format!("{body}\n").as_bytes(),
        );
    }
}

impl timers::TimerHandler for Igny8 {
    fn on_timer(name: String, scheduled_at_ms: u64) -> Result<(), String> {
        schema::migrate().map_err(|e| e.describe())?;
        let at = scheduled_at_ms as i64;
        match name.as_str() {
            "automation_tick" => runner::tick(at),
            "auto_cluster_keywords"
            | "auto_create_tasks"
            | "auto_generate_content"
            | "auto_publish" => runner::workflow(&name, at),
            "monthly_credit_replenishment" => runner::replenish(),
            "sag_health_check" => runner::health_check(),
            other => Err(format!("no timer named {other:?}")),
        }
    }
}

impl timers::JobHandler for Igny8 {
    fn on_job(id: u64, name: String, payload: Vec<u8>, _attempt: u32) -> Result<(), String> {
        schema::migrate().map_err(|e| e.describe())?;
        let arg: i64 = String::from_utf8_lossy(&payload)
            .parse()
            .map_err(|_| format!("job {name}: payload is not an id"))?;
        let result = match name.as_str() {
            "run_rule" => runner::run_rule(id, arg),
            "publish" => runner::publish(id, arg),
            other => Err(format!("no job named {other:?}")),
        };
        if let Err(why) = &result {
            runner::progress(id, "RETRY", 0, why);
        }
        result
    }
}

timers::export!(Igny8);
wasip2::http::proxy::export!(Igny8 with_types_in wasip2);
