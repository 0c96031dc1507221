//! The Developer API's keys and their daily limits (seed: `APIKey (key_hash,
//! tier, requests_today, rate_limit)`). A key is shown once when issued and
//! only its SHA-256 is stored (PostgreSQL `api_keys`); each call of a `/v1/`
//! route counts in Redis, `rl:{hash}:{YYYY-MM-DD}` (UTC day, expiring after
//! two days), and past the key's `rate_limit` the answer is 429 until
//! midnight UTC. Keys are issued by the operator with the secret `ADMIN_TOKEN`.

wit_bindgen::generate!({
    inline: "package astrotiming:keys; world keys { import alorig:host/redis@0.1.0; }",
    path: "../../wit",
    generate_all,
});

use alorig::host::redis;
use guest_kit::postgres::{self as pg, Value};
use guest_kit::wasip2::http::types::IncomingRequest;
use sha2::{Digest as _, Sha256};

type Failure = (u16, String);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS api_keys (
    key_hash text PRIMARY KEY,
    tier text NOT NULL CHECK (tier IN ('free', 'developer', 'premium')),
    rate_limit int NOT NULL CHECK (rate_limit > 0),
    created_ms bigint NOT NULL)";

/// The keys' table, created once (under an advisory lock: concurrent DDL races).
fn ensure_table() -> Result<(), Failure> {
    let done = pg::query("SELECT to_regclass('api_keys') IS NOT NULL", &[]).map_err(db)?;
    if matches!(
        done.rows.first().and_then(|r| r.first()),
        Some(Value::Boolean(true))
    ) {
        return Ok(());
    }
    let tx = pg::begin().map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock(727004)", &[])
        .map_err(db)?;
    tx.execute(SCHEMA, &[]).map_err(db)?;
    pg::Transaction::commit(tx).map_err(db)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .first()
        .and_then(|v| String::from_utf8(v.clone()).ok())
}

fn db(e: pg::Error) -> Failure {
    (
        if matches!(e, pg::Error::Unavailable(_) | pg::Error::Timeout(_)) {
            503
        } else {
            500
        },
        e.describe(),
    )
}

/// `POST /v1/keys?tier=developer[&rate_limit=N]` with `Authorization: Bearer <ADMIN_TOKEN>`.
pub fn issue(req: &IncomingRequest) -> Result<serde_json::Value, Failure> {
    let admin = std::env::var("ADMIN_TOKEN")
        .map_err(|_| (403, "issuing keys needs the secret ADMIN_TOKEN".to_string()))?;
    if header(req, "authorization").as_deref() != Some(&format!("Bearer {admin}")) {
        return Err((
            401,
            "a valid Authorization: Bearer <admin token> is needed".into(),
        ));
    }
    let tier = guest_kit::query_param(req, "tier").unwrap_or_else(|| "free".into());
    let default_limit = match tier.as_str() {
        "free" => 100,
        "developer" => 10_000,
        "premium" => 100_000,
        _ => return Err((400, "tier must be free, developer or premium".into())),
    };
    let limit = match guest_kit::query_param(req, "rate_limit") {
        Some(n) => n
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or((400, "rate_limit must be a positive number".to_string()))?,
        None => default_limit,
    };
    let key = format!(
        "at_{}",
        hex(&guest_kit::wasip2::random::random::get_random_bytes(16))
    );
    ensure_table()?;
    pg::execute(
        "INSERT INTO api_keys (key_hash, tier, rate_limit, created_ms) VALUES ($1, $2, $3, $4)",
        &[
            Value::Text(hex(&Sha256::digest(key.as_bytes()))),
            Value::Text(tier.clone()),
            Value::Int32(limit),
            Value::Int64(guest_kit::now_ms()),
        ],
    )
    .map_err(db)?;
    Ok(serde_json::json!({"key": key, "tier": tier, "rate_limit": limit}))
}

/// Checks the request's `X-API-Key` and counts the call: the key's tier, or
/// 401 (no or unknown key) / 429 (past today's limit).
pub fn admit(req: &IncomingRequest) -> Result<String, Failure> {
    let key = header(req, "x-api-key")
        .ok_or((401, "an X-API-Key header is needed for /v1/".to_string()))?;
    let hash = hex(&Sha256::digest(key.as_bytes()));
    ensure_table()?;
    let rows = pg::query(
        "SELECT tier, rate_limit FROM api_keys WHERE key_hash = $1",
        &[Value::Text(hash.clone())],
    )
    .map_err(db)?;
    let row = rows
        .rows
        .first()
        .ok_or((401, "unknown API key".to_string()))?;
    let tier = row
        .first()
        .and_then(Value::as_text)
        .unwrap_or("free")
        .to_string();
    let limit = row.get(1).and_then(Value::as_i64).unwrap_or(0);
    let now = guest_kit::now_ms();
    let counter = format!(
        "rl:{hash}:{}",
        crate::astro::date_text(now.div_euclid(86_400_000))
    );
    let replies = redis::pipeline(
        &[
            redis::Command::IncrBy((counter.clone(), 1)),
            redis::Command::Expire((counter, 2 * 86_400_000)),
        ],
        true,
    )
    .map_err(|e| (503, format!("rate limiter: {e:?}")))?;
    let used = match replies.first() {
        Some(redis::Reply::Integer(n)) => *n,
        _ => 0,
    };
    if used > limit {
        let retry = (86_400_000 - now.rem_euclid(86_400_000)) / 1000;
        return Err((
            429,
            format!(
                "rate limit of {limit} requests a day reached for this key; retry in {retry} s (midnight UTC)"
            ),
        ));
    }
    Ok(tier)
}
