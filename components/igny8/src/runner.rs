//! The automation rule runner: what `automation_tasks.py` and the Celery worker
//! did (002 §5.2–5.4, §10.4; 003 "AI Task Flow").
//!
//! * [`tick`] — the `automation_tick` timer (every minute): for each active
//!   `schedule` rule, the slots of its own cron and zone since the last tick
//!   each become one `rule_runs` row (unique per rule and slot) and one job
//!   `run_rule` with the idempotency key `rule:{id}:{slot}`. Two hosts, a
//!   repeated tick or a restart all land on the same row: a slot runs once.
//! * [`run_rule`] — one transaction checks the per-day limit, the per-execution
//!   limit and the account's credits, and deducts them (with a usage-log row)
//!   before any AI call; then one AI call per action, the content stored, and a
//!   `publish` job for the site's WordPress. A retry never charges twice (the
//!   run is already `charged`) and never calls the AI twice for stored content.
//! * [`publish`] — `POST {wp_url}/wp-json/wp/v2/posts` with the site's
//!   application password (003 "WordPress Integration").
//!
//! Progress of every task is kept in Redis (`task:{id}`, a hash with a 1-day
//! TTL, as Celery's result backend did) for `GET /api/v1/tasks/{id}/progress`;
//! only the job writes it (a task with no state yet is `PENDING`), so a job that
//! finishes before its scheduler returns is never overwritten.

use crate::{credits, slots::RuleSchedule};
use base64::Engine as _;
use guest_kit::{outbound, postgres as pg, redis, timers};
use pg::Value;
use serde_json::{Value as Json, json};

/// How far back a tick looks for slots: a tick missed by a restart (or a
/// host down for a few minutes) still runs its slots, once.
const LOOKBACK_MS: i64 = 5 * 60_000;

fn db(e: pg::Error) -> String {
    e.describe()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn text(v: &Value) -> String {
    v.as_text().unwrap_or_default().to_string()
}

fn json_of(v: &Value) -> Json {
    v.as_text()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Json::Null)
}

/// Writes a task's state for the progress endpoint (best effort: Redis down
/// must not fail the work itself).
pub fn progress(task: u64, state: &str, percent: i64, message: &str) {
    let key = format!("task:{task}");
    let fields = vec![
        ("state".to_string(), state.as_bytes().to_vec()),
        ("progress".to_string(), percent.to_string().into_bytes()),
        ("message".to_string(), message.as_bytes().to_vec()),
    ];
    let _ = redis::pipeline(
        &[
            redis::Command::Hset((key.clone(), fields)),
            redis::Command::Expire((key, 86_400_000)),
        ],
        true,
    );
}

/// The `automation_tick` firing at `now_ms`.
pub fn tick(now_ms: i64) -> Result<(), String> {
    let rules = pg::query(
        "SELECT id, schedule, created_ms FROM automation_rules WHERE is_active AND trigger = 'schedule' ORDER BY id",
        &[],
    )
    .map_err(db)?;
    for row in &rules.rows {
        let (rule, created) = (int(&row[0]), int(&row[2]));
        let schedule = match RuleSchedule::parse(&json_of(&row[1])) {
            Ok(s) => s,
            Err(why) => {
                eprintln!("igny8: rule {rule} has no usable schedule: {why}");
                continue;
            }
        };
        for slot in schedule.slots((now_ms - LOOKBACK_MS).max(created), now_ms, 10) {
            enqueue(rule, slot, schedule.day(slot), "schedule")?;
        }
    }
    // A run whose row was written but whose job was never scheduled (the
    // instance ended in between) is scheduled again under the same key.
    let orphans = pg::query(
        "SELECT id, rule_id, slot_ms FROM rule_runs WHERE status = 'queued' AND task_id IS NULL AND created_ms < $1",
        &[Value::Int64(now_ms - 60_000)],
    )
    .map_err(db)?;
    for row in &orphans.rows {
        schedule_run(int(&row[0]), int(&row[1]), int(&row[2]))?;
    }
    Ok(())
}

/// The runs of rules attached to a beat workflow (`trigger` = the timer's
/// name: `auto_cluster_keywords`, `auto_create_tasks`, `auto_generate_content`,
/// `auto_publish`), one per rule and firing.
pub fn workflow(name: &str, at_ms: i64) -> Result<(), String> {
    let rules = pg::query(
        "SELECT id FROM automation_rules WHERE is_active AND trigger = $1",
        &[Value::Text(name.into())],
    )
    .map_err(db)?;
    for row in &rules.rows {
        enqueue(
            int(&row[0]),
            at_ms,
            crate::slots::day_in(chrono_tz::Tz::UTC, at_ms),
            name,
        )?;
    }
    Ok(())
}

/// Records the run of `rule` at `slot` once; answers its task id, or `None`
/// when the slot already has a run.
pub fn enqueue(rule: i64, slot: i64, day: i32, source: &str) -> Result<Option<u64>, String> {
    let inserted = pg::query(
        "INSERT INTO rule_runs (rule_id, slot_ms, run_day, source, status, created_ms)
         VALUES ($1, $2, $3, $4, 'queued', $5) ON CONFLICT (rule_id, slot_ms) DO NOTHING RETURNING id",
        &[Value::Int32(rule as i32), Value::Int64(slot), Value::Date(day), Value::Text(source.into()), Value::Int64(guest_kit::now_ms())],
    )
    .map_err(db)?;
    match inserted.rows.first() {
        Some(row) => schedule_run(int(&row[0]), rule, slot).map(Some),
        None => Ok(None),
    }
}

fn schedule_run(run: i64, rule: i64, slot: i64) -> Result<u64, String> {
    let job = timers::schedule(&timers::Job {
        name: "run_rule".into(),
        payload: run.to_string().into_bytes(),
        when: timers::When::AfterMs(0),
        idempotency_key: Some(format!("rule:{rule}:{slot}")),
    })
    .map_err(|e| format!("scheduling run {run}: {e:?}"))?;
    pg::execute(
        "UPDATE rule_runs SET task_id = $1 WHERE id = $2",
        &[Value::Int64(job as i64), Value::Int64(run)],
    )
    .map_err(db)?;
    Ok(job)
}

/// What the charge step decided.
enum Charge {
    Charged,
    Refused(&'static str, String),
}

/// The limits and the credits, in one transaction, before any outbound call.
fn charge(run: i64) -> Result<Charge, String> {
    let tx = pg::begin().map_err(db)?;
    let rows = tx
        .query(
            "SELECT r.id, r.max_executions_per_day, r.credit_limit_per_execution, r.actions, s.account_id, rr.run_day, rr.status
             FROM rule_runs rr JOIN automation_rules r ON r.id = rr.rule_id JOIN sites s ON s.id = r.site_id
             WHERE rr.id = $1 FOR UPDATE OF r, rr",
            &[Value::Int64(run)],
        )
        .map_err(db)?;
    let Some(row) = rows.rows.first() else {
        return Err(format!("run {run} does not exist"));
    };
    if text(&row[6]) != "queued" {
        return Ok(Charge::Charged);
    }
    let (rule, per_day, per_execution, account) =
        (int(&row[0]), int(&row[1]), int(&row[2]), int(&row[4]));
    let actions = json_of(&row[3]);
    let day = row[5].clone();
    let refuse =
        |tx: pg::Transaction, status: &'static str, why: String| -> Result<Charge, String> {
            tx.execute(
                "UPDATE rule_runs SET status = $1, error = $2 WHERE id = $3",
                &[
                    Value::Text(status.into()),
                    Value::Text(why.clone()),
                    Value::Int64(run),
                ],
            )
            .map_err(db)?;
            pg::Transaction::commit(tx).map_err(db)?;
            Ok(Charge::Refused(status, why))
        };
    let today = tx
        .query(
            "SELECT count(*) FROM rule_runs WHERE rule_id = $1 AND run_day = $2 AND status IN ('charged', 'done')",
            &[Value::Int32(rule as i32), day],
        )
        .map_err(db)?;
    let ran = today.rows.first().map(|r| int(&r[0])).unwrap_or(0);
    if ran >= per_day {
        return refuse(
            tx,
            "refused_daily_limit",
            format!("rule {rule} already ran {ran} times today (max_executions_per_day {per_day})"),
        );
    }
    let cost = match credits::total(&actions) {
        Ok(cost) => cost,
        Err(why) => return refuse(tx, "failed", why),
    };
    if cost > per_execution {
        return refuse(
            tx,
            "refused_execution_limit",
            format!("costs {cost} credits, over credit_limit_per_execution {per_execution}"),
        );
    }
    let balance = tx
        .query(
            "SELECT credits, monthly_credits FROM accounts WHERE id = $1 FOR UPDATE",
            &[Value::Int32(account as i32)],
        )
        .map_err(db)?;
    let (have, monthly) = balance
        .rows
        .first()
        .map(|r| (int(&r[0]), int(&r[1])))
        .unwrap_or((0, 0));
    if have < cost {
        return refuse(
            tx,
            "insufficient_credits",
            format!("needs {cost} credits, the account has {have}"),
        );
    }
    let now = Value::Int64(guest_kit::now_ms());
    let acc = Value::Int32(account as i32);
    tx.execute(
        "UPDATE accounts SET credits = credits - $1 WHERE id = $2",
        &[Value::Int32(cost as i32), acc.clone()],
    )
    .map_err(db)?;
    for (kind, words, _) in credits::actions(&actions) {
        let used = credits::cost(&kind, words).unwrap_or(0);
        if used == 0 {
            continue;
        }
        tx.execute(
            "INSERT INTO credit_usage_log (account_id, operation_type, credits_used, related_object_type, related_object_id, metadata, created_ms)
             VALUES ($1, $2, $3, 'rule_run', $4, $5, $6)",
            &[acc.clone(), Value::Text(kind), Value::Int32(used as i32), Value::Int64(run), Value::Jsonb(json!({"rule": rule, "words": words}).to_string()), now.clone()],
        )
        .map_err(db)?;
    }
    tx.execute(
        "INSERT INTO credit_transactions (account_id, transaction_type, amount, description, created_ms) VALUES ($1, 'deduction', $2, $3, $4)",
        &[acc.clone(), Value::Int32(-(cost as i32)), Value::Text(format!("rule {rule} run {run}")), now.clone()],
    )
    .map_err(db)?;
    tx.execute(
        "UPDATE rule_runs SET status = 'charged', credits_used = $1 WHERE id = $2",
        &[Value::Int32(cost as i32), Value::Int64(run)],
    )
    .map_err(db)?;
    // "Low Credit Warning: when < 10% remaining" (002 §10.7), once a month.
    if monthly > 0 && (have - cost) * 10 < monthly {
        tx.execute(
            "INSERT INTO notifications (account_id, kind, period, message, created_ms)
             VALUES ($1, 'low_credit', to_char(now(), 'YYYY-MM'), $2, $3) ON CONFLICT DO NOTHING",
            &[
                acc,
                Value::Text(format!("{} of {monthly} credits left", have - cost)),
                now,
            ],
        )
        .map_err(db)?;
    }
    pg::Transaction::commit(tx).map_err(db)?;
    Ok(Charge::Charged)
}

/// The job `run_rule`.
pub fn run_rule(task: u64, run: i64) -> Result<(), String> {
    progress(task, "STARTED", 10, "checking credits");
    match charge(run)? {
        Charge::Refused(status, why) => {
            progress(task, "FAILURE", 100, &format!("{status}: {why}"));
            return Ok(());
        }
        Charge::Charged => {}
    }
    let rows = pg::query(
        "SELECT rr.status, r.actions, r.site_id, r.name FROM rule_runs rr JOIN automation_rules r ON r.id = rr.rule_id WHERE rr.id = $1",
        &[Value::Int64(run)],
    )
    .map_err(db)?;
    let Some(row) = rows.rows.first() else {
        return Err(format!("run {run} vanished"));
    };
    if text(&row[0]) != "charged" {
        return Ok(()); // done, or refused: nothing left to do
    }
    let (actions, site, rule_name) = (
        credits::actions(&json_of(&row[1])),
        int(&row[2]),
        text(&row[3]),
    );
    for (index, (kind, words, params)) in actions.iter().enumerate() {
        if !credits::calls_ai(kind) || content_of(run, index as i32)?.is_some() {
            continue;
        }
        progress(
            task,
            "PROGRESS",
            30 + 50 * index as i64 / actions.len().max(1) as i64,
            &format!("{kind}: calling the AI"),
        );
        let topic = params
            .get("topic")
            .and_then(Json::as_str)
            .unwrap_or(&rule_name);
        let body = crate::ai::complete(kind, topic, *words)?;
        let title = body
            .lines()
            .next()
            .unwrap_or(topic)
            .trim_start_matches('#')
            .trim()
            .to_string();
        let count = body.split_whitespace().count() as i32;
        pg::execute(
            "INSERT INTO contents (site_id, run_id, action_index, kind, title, body, word_count, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (run_id, action_index) DO NOTHING",
            &[Value::Int32(site as i32), Value::Int64(run), Value::Int32(index as i32), Value::Text(kind.clone()),
              Value::Text(title), Value::Text(body), Value::Int32(count), Value::Int64(guest_kit::now_ms())],
        )
        .map_err(db)?;
    }
    pg::execute(
        "UPDATE rule_runs SET status = 'done' WHERE id = $1",
        &[Value::Int64(run)],
    )
    .map_err(db)?;
    if actions.iter().any(|a| a.0 == "publish") {
        let made = pg::query(
            "SELECT id FROM contents WHERE run_id = $1 AND kind = 'generate_content' ORDER BY action_index LIMIT 1",
            &[Value::Int64(run)],
        )
        .map_err(db)?;
        if let Some(row) = made.rows.first() {
            schedule_publish(int(&row[0]))?;
        }
    }
    progress(task, "SUCCESS", 100, "done");
    Ok(())
}

/// The content a run made for action `index`.
fn content_of(run: i64, index: i32) -> Result<Option<i64>, String> {
    let rows = pg::query(
        "SELECT id FROM contents WHERE run_id = $1 AND action_index = $2",
        &[Value::Int64(run), Value::Int32(index)],
    )
    .map_err(db)?;
    Ok(rows.rows.first().map(|r| int(&r[0])))
}

pub fn schedule_publish(content: i64) -> Result<u64, String> {
    let job = timers::schedule(&timers::Job {
        name: "publish".into(),
        payload: content.to_string().into_bytes(),
        when: timers::When::AfterMs(0),
        idempotency_key: Some(format!("publish:{content}")),
    })
    .map_err(|e| format!("scheduling publish of {content}: {e:?}"))?;
    Ok(job)
}

/// The job `publish`: one WordPress post per content, recorded with its post id.
pub fn publish(task: u64, content: i64) -> Result<(), String> {
    let rows = pg::query(
        "SELECT c.title, c.body, c.status, s.wp_url, s.wp_username, s.wp_app_password
         FROM contents c JOIN sites s ON s.id = c.site_id WHERE c.id = $1",
        &[Value::Int64(content)],
    )
    .map_err(db)?;
    let Some(row) = rows.rows.first() else {
        return Err(format!("content {content} does not exist"));
    };
    if text(&row[2]) == "published" {
        return Ok(());
    }
    progress(task, "PROGRESS", 50, "posting to WordPress");
    let html: String = text(&row[1])
        .split("\n\n")
        .skip(1)
        .map(|p| format!("<p>{}</p>", escape(p.trim())))
        .collect();
    let post = json!({"title": text(&row[0]), "content": html, "status": "publish"}).to_string();
    let url = format!(
        "{}/wp-json/wp/v2/posts",
        text(&row[3]).trim_end_matches('/')
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            text(&row[4]),
            text(&row[5])
        ))
    );
    let response = outbound::send(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        post.as_bytes(),
    )?;
    if !(200..300).contains(&response.status) {
        return Err(format!("WordPress answered {} for {url}", response.status));
    }
    let id = serde_json::from_slice::<Json>(&response.body)
        .ok()
        .and_then(|j| j.get("id").and_then(Json::as_i64));
    pg::execute(
        "UPDATE contents SET status = 'published', wp_post_id = $1 WHERE id = $2",
        &[
            id.map(Value::Int64).unwrap_or(Value::Null),
            Value::Int64(content),
        ],
    )
    .map_err(db)?;
    progress(task, "SUCCESS", 100, "published");
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `monthly_credit_replenishment` (002 §10.7): every account back to its
/// plan's monthly credits, once per account and month.
pub fn replenish() -> Result<(), String> {
    let tx = pg::begin().map_err(db)?;
    tx.execute(
        "WITH due AS (
            INSERT INTO credit_transactions (account_id, transaction_type, amount, description, period, created_ms)
            SELECT id, 'replenishment', monthly_credits - credits, 'monthly replenishment', to_char(now(), 'YYYY-MM'), $1
            FROM accounts WHERE monthly_credits > 0
            ON CONFLICT DO NOTHING RETURNING account_id)
         UPDATE accounts SET credits = monthly_credits WHERE id IN (SELECT account_id FROM due)",
        &[Value::Int64(guest_kit::now_ms())],
    )
    .map_err(db)?;
    pg::Transaction::commit(tx).map_err(db)
}

/// `sag_health_check` (weekly, 001 L317): per site, its content, what got
/// published and the runs that failed in the last 7 days.
pub fn health_check() -> Result<(), String> {
    pg::execute(
        "INSERT INTO site_health (site_id, contents, published, failed_runs_7d, checked_ms)
         SELECT s.id,
            (SELECT count(*) FROM contents c WHERE c.site_id = s.id),
            (SELECT count(*) FROM contents c WHERE c.site_id = s.id AND c.status = 'published'),
            (SELECT count(*) FROM rule_runs rr JOIN automation_rules r ON r.id = rr.rule_id
              WHERE r.site_id = s.id AND rr.status NOT IN ('done', 'charged', 'queued') AND rr.created_ms > $1 - 604800000),
            $1
         FROM sites s
         ON CONFLICT (site_id) DO UPDATE SET contents = EXCLUDED.contents, published = EXCLUDED.published,
            failed_runs_7d = EXCLUDED.failed_runs_7d, checked_ms = EXCLUDED.checked_ms",
        &[Value::Int64(guest_kit::now_ms())],
    )
    .map(|_| ())
    .map_err(db)
}
