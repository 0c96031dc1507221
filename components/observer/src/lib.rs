//! Observer OS (seed 000, Observer section): the journal, sealed at rest.
//!
//! **The seed's contradiction, decided.** Its privacy table puts journal
//! entries in "Tier 1 (Local Only) … Device storage", while its data model
//! (`JournalEntry … text (encrypted)`) and build step 4 ("JournalEntry text
//! field encrypted at rest") store them in the cloud database, and its
//! Journal NLP task reads them on the server. This component follows the data
//! model and the build plan: entries are stored in PostgreSQL, **sealed with
//! AES-256-GCM inside the app** ([`seal`]) under a key the database never
//! sees (a secret of the manifest), so the database and its backups hold no
//! plaintext — what Tier 1 protects. A client that wants device-only keeps
//! its entries and never calls `POST /api/v1/journal/`; nothing here needs them.
//! What reaches the AI is Tier 3: anonymized snippets ([`privacy`]), never stored.
//!
//! Routes (host `api.observeros.app`, JSON; `Authorization: Bearer <token>`
//! from the anonymous login):
//! * `POST /api/v1/auth/anonymous-login` → `{"token": …}`;
//! * `POST /api/v1/journal/` `{"text":…, "emotion_tag":…}` → 201 `{"id": …}`
//!   (and the `journal_nlp` job 5 minutes later, one pending per user);
//! * `GET /api/v1/journal/` — the entries, opened; one that cannot be opened
//!   says so and the others still read;
//! * `DELETE /api/v1/journal/delete-all`;
//! * `GET /api/v1/patterns/` — the AI summaries, opened;
//! * `GET /api/v1/observer/module/` — the module and the ambient palette.
//!
//! Timers and jobs: [`analysis`].

pub mod analysis;
pub mod privacy;
pub mod seal;

use guest_kit::timers::{self, Job, When};
use guest_kit::{postgres as pg, wasip2};
use pg::Value;
use serde_json::{Value as Json, json};
use sha2::{Digest as _, Sha256};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Observer;

pub type Failure = (u16, String);

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id bigserial PRIMARY KEY,
        token_hash text NOT NULL UNIQUE,
        module text NOT NULL DEFAULT '0',
        palette text NOT NULL DEFAULT 'charcoal, muted slate, near-black',
        created_ms bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS journal_entries (
        id bigserial PRIMARY KEY,
        user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        emotion_tag text NOT NULL,
        created_ms bigint NOT NULL,
        key_id smallint NOT NULL,
        nonce bytea NOT NULL,
        ciphertext bytea NOT NULL)",
    "CREATE INDEX IF NOT EXISTS journal_entries_user ON journal_entries (user_id, id)",
    "CREATE TABLE IF NOT EXISTS patterns (
        id bigserial PRIMARY KEY,
        user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        computed_ms bigint NOT NULL,
        entries int NOT NULL,
        key_id smallint NOT NULL,
        nonce bytea NOT NULL,
        summary bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS module_transitions (
        user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        from_module text NOT NULL,
        to_module text NOT NULL,
        at_ms bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS planetary_snapshots (
        day date PRIMARY KEY,
        ruler text NOT NULL,
        moon_phase_pct int NOT NULL)",
];

pub fn db(e: pg::Error) -> Failure {
    (
        if matches!(e, pg::Error::Unavailable(_) | pg::Error::Timeout(_)) {
            503
        } else {
            500
        },
        e.describe(),
    )
}

/// Creates the tables on first use: a cheap check first (every request runs
/// in a fresh instance), then the DDL under an advisory lock, because
/// concurrent `CREATE TABLE IF NOT EXISTS` race in PostgreSQL's catalogs.
pub fn schema() -> Result<(), Failure> {
    let done =
        pg::query("SELECT to_regclass('planetary_snapshots') IS NOT NULL", &[]).map_err(db)?;
    if matches!(
        done.rows.first().and_then(|r| r.first()),
        Some(Value::Boolean(true))
    ) {
        return Ok(());
    }
    let tx = pg::begin().map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock(727002)", &[])
        .map_err(db)?;
    for statement in SCHEMA {
        tx.execute(statement, &[]).map_err(db)?;
    }
    pg::Transaction::commit(tx).map_err(db)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The user of the request's bearer token.
fn user_of(req: &IncomingRequest) -> Result<i64, Failure> {
    let header = req.headers().get("authorization");
    let token = header
        .first()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or((
            401,
            "Authorization: Bearer <token> is needed (POST /api/v1/auth/anonymous-login)"
                .to_string(),
        ))?;
    let rows = pg::query(
        "SELECT id FROM users WHERE token_hash = $1",
        &[Value::Text(hex(&Sha256::digest(token.trim().as_bytes())))],
    )
    .map_err(db)?;
    rows.rows
        .first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .ok_or((401, "unknown token".to_string()))
}

/// An entry as read back: its text, or why it cannot be opened.
pub struct Entry {
    pub id: i64,
    pub emotion_tag: String,
    pub created_ms: i64,
    pub text: Result<String, String>,
}

fn bytes(v: Option<&Value>) -> Vec<u8> {
    match v {
        Some(Value::Bytea(b)) => b.clone(),
        _ => Vec::new(),
    }
}

/// A user's entries (newest first, at most `limit`, since `since_ms`), opened one by one.
pub fn entries_of(user: i64, since_ms: Option<i64>, limit: i64) -> Result<Vec<Entry>, String> {
    let rows = pg::query(
        "SELECT id, emotion_tag, created_ms, key_id, nonce, ciphertext FROM journal_entries
         WHERE user_id = $1 AND created_ms >= $2 ORDER BY id DESC LIMIT $3",
        &[
            Value::Int64(user),
            Value::Int64(since_ms.unwrap_or(0)),
            Value::Int64(limit),
        ],
    )
    .map_err(|e| db(e).1)?;
    Ok(rows
        .rows
        .iter()
        .map(|r| {
            let id = r[0].as_i64().unwrap_or(0);
            let sealed = seal::Sealed {
                key_id: match r[3] {
                    Value::Int16(k) => k,
                    _ => 0,
                },
                nonce: bytes(r.get(4)),
                ciphertext: bytes(r.get(5)),
            };
            let text = seal::open(&sealed, &format!("journal:{user}:{id}")).and_then(|b| {
                String::from_utf8(b).map_err(|_| "cannot be decrypted: not text".to_string())
            });
            Entry {
                id,
                emotion_tag: r[1].as_text().unwrap_or("").to_string(),
                created_ms: r[2].as_i64().unwrap_or(0),
                text,
            }
        })
        .collect())
}

fn create_entry(req: &IncomingRequest, user: i64) -> Result<(u16, Json), Failure> {
    let body: Json = serde_json::from_slice(&guest_kit::read_body(req))
        .map_err(|e| (400, format!("the body is not JSON: {e}")))?;
    let text = body["text"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or((400, "text is required".to_string()))?;
    let tag = body["emotion_tag"].as_str().unwrap_or("none");
    if text.len() > 100_000 || tag.len() > 32 {
        return Err((
            400,
            "text is at most 100000 bytes and emotion_tag 32".into(),
        ));
    }
    // The id first: it is part of what the seal binds.
    let rows = pg::query(
        "SELECT nextval(pg_get_serial_sequence('journal_entries', 'id'))",
        &[],
    )
    .map_err(db)?;
    let id = rows
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .ok_or((500, "no id".to_string()))?;
    let sealed =
        seal::seal(text.as_bytes(), &format!("journal:{user}:{id}")).map_err(|e| (500, e))?;
    pg::execute(
        "INSERT INTO journal_entries (id, user_id, emotion_tag, created_ms, key_id, nonce, ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[Value::Int64(id), Value::Int64(user), Value::Text(tag.into()), Value::Int64(guest_kit::now_ms()), Value::Int16(sealed.key_id), Value::Bytea(sealed.nonce), Value::Bytea(sealed.ciphertext)],
    )
    .map_err(db)?;
    // The seed's Journal NLP: debounced 5 min, one pending per user.
    let job = Job {
        name: "journal_nlp".into(),
        payload: user.to_string().into_bytes(),
        when: When::AfterMs(300_000),
        idempotency_key: Some(format!("nlp:{user}")),
    };
    if let Err(e) = timers::schedule(&job) {
        eprintln!("journal_nlp for user {user} not scheduled: {e:?}");
    }
    Ok((201, json!({"id": id})))
}

fn handle(req: &IncomingRequest) -> Result<(u16, Json), Failure> {
    let path = guest_kit::path(req);
    let route: Vec<&str> = path.trim_matches('/').split('/').collect();
    schema()?;
    match (req.method(), route.as_slice()) {
        (Method::Get, ["api", "v1", "health"]) => Ok((200, json!({"ok": true}))),
        (Method::Post, ["api", "v1", "auth", "anonymous-login"]) => {
            let token = hex(&wasip2::random::random::get_random_bytes(24));
            pg::execute(
                "INSERT INTO users (token_hash, created_ms) VALUES ($1, $2)",
                &[
                    Value::Text(hex(&Sha256::digest(token.as_bytes()))),
                    Value::Int64(guest_kit::now_ms()),
                ],
            )
            .map_err(db)?;
            Ok((201, json!({"token": token})))
        }
        (Method::Post, ["api", "v1", "journal"]) => create_entry(req, user_of(req)?),
        (Method::Get, ["api", "v1", "journal"]) => {
            let user = user_of(req)?;
            let entries = entries_of(user, None, 200).map_err(|e| (500, e))?;
            let list: Vec<Json> = entries
                .into_iter()
                .map(|e| match e.text {
                    Ok(text) => json!({"id": e.id, "emotion_tag": e.emotion_tag, "created_ms": e.created_ms, "text": text}),
                    Err(why) => json!({"id": e.id, "emotion_tag": e.emotion_tag, "created_ms": e.created_ms, "error": why}),
                })
                .collect();
            Ok((200, Json::Array(list)))
        }
        (Method::Delete, ["api", "v1", "journal", "delete-all"]) => {
            let user = user_of(req)?;
            let deleted = pg::execute(
                "DELETE FROM journal_entries WHERE user_id = $1",
                &[Value::Int64(user)],
            )
            .map_err(db)?;
            Ok((200, json!({"deleted": deleted})))
        }
        (Method::Get, ["api", "v1", "patterns"]) => {
            let user = user_of(req)?;
            let rows = pg::query("SELECT computed_ms, entries, key_id, nonce, summary FROM patterns WHERE user_id = $1 ORDER BY id DESC LIMIT 20", &[Value::Int64(user)])
                .map_err(db)?;
            let list: Vec<Json> = rows
                .rows
                .iter()
                .map(|r| {
                    let computed = r[0].as_i64().unwrap_or(0);
                    let sealed = seal::Sealed { key_id: if let Value::Int16(k) = r[2] { k } else { 0 }, nonce: bytes(r.get(3)), ciphertext: bytes(r.get(4)) };
                    match seal::open(&sealed, &format!("pattern:{user}:{computed}")) {
                        Ok(text) => json!({"computed_ms": computed, "summary": String::from_utf8_lossy(&text)}),
                        Err(why) => json!({"computed_ms": computed, "error": why}),
                    }
                })
                .collect();
            Ok((200, Json::Array(list)))
        }
        (Method::Get, ["api", "v1", "observer", "module"]) => {
            let user = user_of(req)?;
            let rows = pg::query(
                "SELECT module, palette FROM users WHERE id = $1",
                &[Value::Int64(user)],
            )
            .map_err(db)?;
            let row = rows.rows.first().ok_or((404, "no such user".to_string()))?;
            Ok((
                200,
                json!({"module": row[0].as_text(), "palette": row[1].as_text()}),
            ))
        }
        _ => Err((404, "not found".into())),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Observer {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        match handle(&req) {
            Ok((status, body)) => {
                guest_kit::respond(out, status, "application/json", body.to_string().as_bytes())
            }
            Err((status, why)) => guest_kit::respond(
                out,
                status,
                "application/json",
                json!({"error": why}).to_string().as_bytes(),
            ),
        }
    }
}

impl timers::TimerHandler for Observer {
    fn on_timer(name: String, scheduled_at_ms: u64) -> Result<(), String> {
        let t = scheduled_at_ms as i64;
        match name.as_str() {
            "pattern_analysis" => analysis::pattern_analysis(t),
            "module_transition_check" => analysis::module_transition_check(t),
            "ambient_refresh" => analysis::ambient_refresh(),
            "planetary_update" => analysis::planetary_update(t),
            "data_cleanup" => analysis::data_cleanup(t),
            other => Err(format!("no timer {other:?}")),
        }
    }
}

impl timers::JobHandler for Observer {
    fn on_job(_id: u64, name: String, payload: Vec<u8>, _attempt: u32) -> Result<(), String> {
        match name.as_str() {
            "journal_nlp" => analysis::journal_nlp(&payload),
            other => Err(format!("no job {other:?}")),
        }
    }
}

timers::export!(Observer);
wasip2::http::proxy::export!(Observer with_types_in wasip2);
