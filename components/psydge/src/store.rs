//! Psydge's PostgreSQL (`psydge_db`): the attempts and the violations log
//! (seed: `Violation … gate_state_snapshot`), behaviour patterns
//! (`BehavioralPattern`, updated by the job `detect_behavioral_patterns` after
//! every violation), discipline scores (`DisciplineScore`, written by the
//! `session_end` timer) and AI interactions (`AIInteraction`).
//!
//! The seed gives the score's weights and no rules; each factor here is a
//! ratio in [0, 1] over the session's attempts (A), times its weight:
//!
//! | factor (weight)          | ratio                                                        |
//! |--------------------------|--------------------------------------------------------------|
//! | rule_compliance (25)     | attempts the gate allowed / A                                 |
//! | session_discipline (15)  | 1 − attempts outside the London/NY windows / A                |
//! | risk_management (15)     | 1 − attempts over the risk limit / A                          |
//! | patience (15)            | 1 − attempts within 60 s after a refused one / A              |
//! | post_win_control (15)    | 1 − attempts past the profit lock / A                         |
//! | cooldown_respect (10)    | 1 − attempts during a cooldown / A                            |
//! | revenge_prevention (5)   | 1 − attempts past the loss lock or the session lock / A       |
//!
//! A session without attempts scores 100.

use crate::alorig::host::postgres::{self as pg, Value};
use serde_json::json;

pub const WEIGHTS: [(&str, u32); 7] = [
    ("rule_compliance", 25),
    ("session_discipline", 15),
    ("risk_management", 15),
    ("patience", 15),
    ("post_win_control", 15),
    ("cooldown_respect", 10),
    ("revenge_prevention", 5),
];

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS trade_attempts (
        id bigserial PRIMARY KEY,
        user_id text NOT NULL,
        at_ms bigint NOT NULL,
        symbol text,
        risk_pct double precision,
        allowed boolean NOT NULL,
        codes jsonb NOT NULL)",
    "CREATE INDEX IF NOT EXISTS trade_attempts_user_at ON trade_attempts (user_id, at_ms)",
    "CREATE TABLE IF NOT EXISTS violations (
        id bigserial PRIMARY KEY,
        user_id text NOT NULL,
        at_ms bigint NOT NULL,
        violation_code text NOT NULL,
        level smallint NOT NULL CHECK (level BETWEEN 1 AND 4),
        attempted_action jsonb NOT NULL,
        gate_state_snapshot jsonb NOT NULL)",
    "CREATE INDEX IF NOT EXISTS violations_user_at ON violations (user_id, at_ms)",
    "CREATE TABLE IF NOT EXISTS behavioral_patterns (
        user_id text NOT NULL,
        pattern_type text NOT NULL,
        occurrence_count int NOT NULL,
        last_instance_ms bigint NOT NULL,
        trend text NOT NULL,
        PRIMARY KEY (user_id, pattern_type))",
    "CREATE TABLE IF NOT EXISTS discipline_scores (
        user_id text NOT NULL,
        session_date date NOT NULL,
        score double precision NOT NULL,
        metric_breakdown jsonb NOT NULL,
        computed_ms bigint NOT NULL,
        PRIMARY KEY (user_id, session_date))",
    "CREATE TABLE IF NOT EXISTS ai_interactions (
        id bigserial PRIMARY KEY,
        user_id text NOT NULL,
        role text NOT NULL,
        session_date date,
        prompt text NOT NULL,
        response text NOT NULL,
        at_ms bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS metaapi_accounts (
        user_id text PRIMARY KEY,
        account_id text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS weekly_reports (
        user_id text NOT NULL,
        week_ending date NOT NULL,
        violations int NOT NULL,
        average_score double precision,
        PRIMARY KEY (user_id, week_ending))",
];

pub fn err(e: pg::Error) -> String {
    let (sqlstate, message) = match &e {
        pg::Error::ConstraintViolation(c) => (&c.sqlstate, &c.message),
        pg::Error::Unavailable(i)
        | pg::Error::Timeout(i)
        | pg::Error::BadParameter(i)
        | pg::Error::TooLarge(i)
        | pg::Error::Other(i) => (&i.sqlstate, &i.message),
    };
    format!("postgres [{sqlstate}]: {message}")
}

/// Creates the tables on first use: a cheap check first (every request runs
/// in a fresh instance), then the DDL under an advisory lock, because
/// concurrent `CREATE TABLE IF NOT EXISTS` race in PostgreSQL's catalogs.
pub fn schema() -> Result<(), String> {
    let done = pg::query("SELECT to_regclass('weekly_reports') IS NOT NULL", &[]).map_err(err)?;
    if matches!(
        done.rows.first().and_then(|r| r.first()),
        Some(Value::Boolean(true))
    ) {
        return Ok(());
    }
    let tx = pg::begin().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock(727001)", &[])
        .map_err(err)?;
    for statement in SCHEMA {
        tx.execute(statement, &[]).map_err(err)?;
    }
    pg::Transaction::commit(tx).map_err(err)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

pub fn record_attempt(
    user: &str,
    at_ms: i64,
    symbol: Option<&str>,
    risk_pct: f64,
    allowed: bool,
    codes: &[&str],
) -> Result<(), String> {
    pg::execute(
        "INSERT INTO trade_attempts (user_id, at_ms, symbol, risk_pct, allowed, codes) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            text(user),
            Value::Int64(at_ms),
            symbol.map(text).unwrap_or(Value::Null),
            if risk_pct.is_finite() { Value::Float64(risk_pct) } else { Value::Null },
            Value::Boolean(allowed),
            Value::Jsonb(json!(codes).to_string()),
        ],
    )
    .map_err(err)?;
    Ok(())
}

/// Logs a violation; answers its id.
pub fn record_violation(
    user: &str,
    at_ms: i64,
    code: &str,
    level: usize,
    action: &serde_json::Value,
    snapshot: &serde_json::Value,
) -> Result<i64, String> {
    let rows = pg::query(
        "INSERT INTO violations (user_id, at_ms, violation_code, level, attempted_action, gate_state_snapshot)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[text(user), Value::Int64(at_ms), text(code), Value::Int16(level as i16), Value::Jsonb(action.to_string()), Value::Jsonb(snapshot.to_string())],
    )
    .map_err(err)?;
    match rows.rows.first().and_then(|r| r.first()) {
        Some(Value::Int64(id)) => Ok(*id),
        _ => Err("no violation id".into()),
    }
}

/// The job after every violation: the user's patterns from their whole log —
/// one per violation code, with its count, last time and the trend (the last
/// 7 days against the 7 before).
pub fn detect_patterns(user: &str, now_ms: i64) -> Result<u64, String> {
    schema()?;
    const WEEK: i64 = 7 * 86_400_000;
    pg::execute(
        "INSERT INTO behavioral_patterns (user_id, pattern_type, occurrence_count, last_instance_ms, trend)
         SELECT user_id, violation_code, count(*), max(at_ms),
                CASE WHEN count(*) FILTER (WHERE at_ms > $2::bigint - $3::bigint) > count(*) FILTER (WHERE at_ms <= $2::bigint - $3::bigint AND at_ms > $2::bigint - 2 * $3::bigint) THEN 'rising'
                     WHEN count(*) FILTER (WHERE at_ms > $2::bigint - $3::bigint) < count(*) FILTER (WHERE at_ms <= $2::bigint - $3::bigint AND at_ms > $2::bigint - 2 * $3::bigint) THEN 'falling'
                     ELSE 'steady' END
         FROM violations WHERE user_id = $1 GROUP BY user_id, violation_code
         ON CONFLICT (user_id, pattern_type) DO UPDATE SET occurrence_count = EXCLUDED.occurrence_count,
           last_instance_ms = EXCLUDED.last_instance_ms, trend = EXCLUDED.trend",
        &[text(user), Value::Int64(now_ms), Value::Int64(WEEK)],
    )
    .map_err(err)
}

/// Users with attempts in `[from_ms, to_ms)`.
pub fn active_users(from_ms: i64, to_ms: i64) -> Result<Vec<String>, String> {
    let rows = pg::query(
        "SELECT DISTINCT user_id FROM trade_attempts WHERE at_ms >= $1 AND at_ms < $2 ORDER BY user_id",
        &[Value::Int64(from_ms), Value::Int64(to_ms)],
    )
    .map_err(err)?;
    Ok(rows
        .rows
        .iter()
        .filter_map(|r| {
            r.first().and_then(|v| match v {
                Value::Text(t) => Some(t.clone()),
                _ => None,
            })
        })
        .collect())
}

/// The discipline score of one user's session `[from_ms, to_ms)`: (score, breakdown).
pub fn discipline_score(
    user: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<(f64, serde_json::Value), String> {
    let rows = pg::query(
        "WITH a AS (
           SELECT allowed, codes, at_ms,
                  lag(allowed) OVER (ORDER BY at_ms, id) AS prev_allowed,
                  lag(at_ms) OVER (ORDER BY at_ms, id) AS prev_at
           FROM trade_attempts WHERE user_id = $1 AND at_ms >= $2 AND at_ms < $3)
         SELECT count(*),
                count(*) FILTER (WHERE allowed),
                count(*) FILTER (WHERE codes ? 'OUTSIDE_SESSION'),
                count(*) FILTER (WHERE codes ? 'RISK_EXCEEDED'),
                count(*) FILTER (WHERE prev_allowed = false AND at_ms - prev_at < 60000),
                count(*) FILTER (WHERE codes ? 'PROFIT_LOCK'),
                count(*) FILTER (WHERE codes ? 'COOLDOWN_ACTIVE'),
                count(*) FILTER (WHERE codes ? 'LOSS_LOCK' OR codes ? 'SESSION_LOCKED')
         FROM a",
        &[text(user), Value::Int64(from_ms), Value::Int64(to_ms)],
    )
    .map_err(err)?;
    let counts: Vec<i64> = rows
        .rows
        .first()
        .map(|r| {
            r.iter()
                .map(|v| if let Value::Int64(n) = v { *n } else { 0 })
                .collect()
        })
        .unwrap_or_default();
    let n = |i: usize| counts.get(i).copied().unwrap_or(0) as f64;
    let attempts = n(0);
    let ratio = |bad: f64| {
        if attempts == 0.0 {
            1.0
        } else {
            (1.0 - bad / attempts).clamp(0.0, 1.0)
        }
    };
    let ratios = [
        if attempts == 0.0 {
            1.0
        } else {
            n(1) / attempts
        },
        ratio(n(2)),
        ratio(n(3)),
        ratio(n(4)),
        ratio(n(5)),
        ratio(n(6)),
        ratio(n(7)),
    ];
    let mut breakdown = serde_json::Map::new();
    let mut score = 0.0;
    for ((name, weight), ratio) in WEIGHTS.iter().zip(ratios) {
        let points = (ratio * f64::from(*weight) * 100.0).round() / 100.0;
        score += points;
        breakdown.insert(
            name.to_string(),
            json!({"weight": weight, "ratio": (ratio * 1000.0).round() / 1000.0, "points": points}),
        );
    }
    breakdown.insert("attempts".into(), json!(attempts as i64));
    Ok((
        (score * 100.0).round() / 100.0,
        serde_json::Value::Object(breakdown),
    ))
}

pub fn save_score(
    user: &str,
    day: &str,
    score: f64,
    breakdown: &serde_json::Value,
    now_ms: i64,
) -> Result<(), String> {
    pg::execute(
        "INSERT INTO discipline_scores (user_id, session_date, score, metric_breakdown, computed_ms)
         VALUES ($1, $2::text::date, $3, $4, $5)
         ON CONFLICT (user_id, session_date) DO UPDATE SET score = EXCLUDED.score,
           metric_breakdown = EXCLUDED.metric_breakdown, computed_ms = EXCLUDED.computed_ms",
        &[text(user), text(day), Value::Float64(score), Value::Jsonb(breakdown.to_string()), Value::Int64(now_ms)],
    )
    .map_err(err)?;
    Ok(())
}

pub fn save_interaction(
    user: &str,
    role: &str,
    day: Option<&str>,
    prompt: &str,
    response: &str,
    now_ms: i64,
) -> Result<(), String> {
    pg::execute(
        "INSERT INTO ai_interactions (user_id, role, session_date, prompt, response, at_ms) VALUES ($1, $2, $3::text::date, $4, $5, $6)",
        &[text(user), text(role), day.map(text).unwrap_or(Value::Null), text(prompt), text(response), Value::Int64(now_ms)],
    )
    .map_err(err)?;
    Ok(())
}

/// One row as JSON text per row of `sql` (which selects one json value).
pub fn json_rows(sql: &str, params: &[Value]) -> Result<Vec<serde_json::Value>, String> {
    let rows = pg::query(sql, params).map_err(err)?;
    Ok(rows
        .rows
        .iter()
        .filter_map(|r| match r.first() {
            Some(Value::Json(t) | Value::Jsonb(t) | Value::Text(t)) => serde_json::from_str(t).ok(),
            _ => None,
        })
        .collect())
}

pub fn account(user: &str) -> Result<Option<String>, String> {
    let rows = pg::query(
        "SELECT account_id FROM metaapi_accounts WHERE user_id = $1",
        &[text(user)],
    )
    .map_err(err)?;
    Ok(rows.rows.first().and_then(|r| match r.first() {
        Some(Value::Text(t)) => Some(t.clone()),
        _ => None,
    }))
}

pub fn set_account(user: &str, account: &str) -> Result<(), String> {
    pg::execute(
        "INSERT INTO metaapi_accounts (user_id, account_id) VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET account_id = EXCLUDED.account_id",
        &[text(user), text(account)],
    )
    .map_err(err)?;
    Ok(())
}

/// The weekly behavioural report: violations and the average score of the
/// 7 days before `now_ms`, per user with either.
pub fn weekly_report(now_ms: i64) -> Result<u64, String> {
    schema()?;
    pg::execute(
        "INSERT INTO weekly_reports (user_id, week_ending, violations, average_score)
         SELECT u.user_id, (to_timestamp($1::bigint / 1000.0) AT TIME ZONE 'UTC')::date,
                (SELECT count(*) FROM violations v WHERE v.user_id = u.user_id AND v.at_ms > $1::bigint - 604800000),
                (SELECT avg(score) FROM discipline_scores s WHERE s.user_id = u.user_id AND s.computed_ms > $1::bigint - 604800000)
         FROM (SELECT user_id FROM violations WHERE at_ms > $1::bigint - 604800000
               UNION SELECT user_id FROM discipline_scores WHERE computed_ms > $1::bigint - 604800000) u
         ON CONFLICT (user_id, week_ending) DO UPDATE SET violations = EXCLUDED.violations, average_score = EXCLUDED.average_score",
        &[Value::Int64(now_ms)],
    )
    .map_err(err)
}
