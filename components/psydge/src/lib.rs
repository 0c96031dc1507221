//! Psydge's discipline engine (seed 000, Psydge section), one component:
//!
//! * [`gate`]: the checks every trade attempt passes (Redis, one round trip),
//!   the violation levels 1 → 4 (Alert, Overlay, Blackout, Session Lock) and
//!   the session lock;
//! * [`store`]: the attempts, the violations log, behaviour patterns,
//!   discipline scores and AI interactions in PostgreSQL;
//! * [`clock`]: the London and New York session windows and the trading day's
//!   end, from the clock;
//! * [`broker`]: MetaApi position sync (REST, every 5 s) and the Claude debrief;
//! * [`live`]: each user's browsers over WebSockets (group `user:<id>`).
//!
//! Routes (host `api.psydge.com`, all JSON):
//! * `POST /api/v1/trades/{user}` `{"symbol":"EURUSD","risk_pct":0.8}` — a trade
//!   attempt: 200 `{"allowed":true}`, or 403 with the reasons and, for a new
//!   violation, its level (logged, pushed, patterns job queued);
//! * `GET /api/v1/may-trade/{user}?risk_pct=&symbol=` — the same check, no record;
//! * `PUT /api/v1/gate/{user}` (`buffer_go=1` lines), `GET /api/v1/gate/{user}`;
//! * `POST /api/v1/result/{user}?r=-1.5` — a closed trade's R;
//! * `GET /api/v1/violations/{user}`, `/patterns/{user}`, `/scores/{user}`;
//! * `PUT /api/v1/accounts/{user}` (body: the MetaApi account id).
//!
//! Timers: `session_end` (the trading day's end: score, then the debrief job),
//! `sync_metaapi_positions` (5 s), `weekly_behavioral_report`. Jobs:
//! `detect_behavioral_patterns` (after every violation), `ai_session_debrief`.

wit_bindgen::generate!({
    inline: "
        package psydge:app;
        world app {
            import alorig:host/redis@0.1.0;
            import alorig:host/websocket@0.1.0;
            import alorig:host/postgres@0.1.0;
            import alorig:host/timers@0.1.0;
            export alorig:host/websocket-handler@0.1.0;
            export alorig:host/timer-handler@0.1.0;
            export alorig:host/job-handler@0.1.0;
        }
    ",
    path: "../../wit",
    generate_all,
});

pub mod broker;
pub mod clock;
pub mod gate;
mod live;
pub mod store;

use alorig::host::postgres::Value;
use alorig::host::timers;
use gate::Rules;
use guest_kit::wasip2;
use serde_json::{Value as Json, json};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

pub(crate) struct Psydge;

pub fn json_str(text: &str) -> String {
    Json::String(text.to_string()).to_string()
}

/// A user id as the routes and groups take it.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

type Answer = Result<(u16, Json), (u16, String)>;

fn redis_err(e: alorig::host::redis::Error) -> (u16, String) {
    use alorig::host::redis::Error;
    let status = match e {
        Error::Unavailable | Error::Timeout => 503,
        Error::Invalid(_) => 400,
        _ => 500,
    };
    (status, format!("redis: {e:?}"))
}

fn pg_err(e: String) -> (u16, String) {
    (
        if e.contains("[08") || e.contains("unavailable") {
            503
        } else {
            500
        },
        e,
    )
}

fn schedule(name: &str, payload: String, key: Option<String>) -> Result<(), String> {
    let job = timers::Job {
        name: name.into(),
        payload: payload.into_bytes(),
        when: timers::When::AfterMs(0),
        idempotency_key: key,
    };
    timers::schedule(&job)
        .map(|_| ())
        .map_err(|e| format!("cannot schedule {name}: {e:?}"))
}

/// A trade attempt: the gate's checks; a refusal is a violation (unless the
/// session is already locked, which only refuses).
fn attempt(user: &str, req: &IncomingRequest, rules: &Rules) -> Answer {
    let body: Json = serde_json::from_slice(&guest_kit::read_body(req))
        .map_err(|e| (400, format!("the body is not JSON: {e}")))?;
    let symbol = body["symbol"]
        .as_str()
        .ok_or((400, "symbol is required (e.g. \"EURUSD\")".to_string()))?
        .to_string();
    let risk_pct = body["risk_pct"]
        .as_f64()
        .ok_or((400, "risk_pct is required (a number)".to_string()))?;
    let now = guest_kit::now_ms();
    let state = gate::read_state(user).map_err(redis_err)?;
    let reasons = gate::closed_because(&state, Some(&symbol), risk_pct, rules, now);
    let codes: Vec<&str> = reasons.iter().map(|r| r.code).collect();
    store::schema().map_err(pg_err)?;
    store::record_attempt(
        user,
        now,
        Some(&symbol),
        risk_pct,
        reasons.is_empty(),
        &codes,
    )
    .map_err(pg_err)?;
    if reasons.is_empty() {
        return Ok((200, json!({"allowed": true})));
    }
    let texts: Vec<&str> = reasons.iter().map(|r| r.text.as_str()).collect();
    if state.locked {
        return Ok((
            403,
            json!({"allowed": false, "level": 4, "response": gate::LEVELS[3], "reasons": texts}),
        ));
    }
    let level = gate::count_violation(user, rules, now).map_err(redis_err)?;
    let action = json!({"type": "open_trade", "symbol": symbol, "risk_pct": risk_pct});
    let id = store::record_violation(user, now, codes[0], level, &action, &state.json())
        .map_err(pg_err)?;
    if let Err(why) = schedule(
        "detect_behavioral_patterns",
        user.to_string(),
        Some(format!("patterns:{id}")),
    ) {
        eprintln!("{why}");
    }
    let response = gate::LEVELS[level - 1];
    live::push(user, json!({"type": "violation", "user": user, "level": level, "response": response, "codes": codes, "reasons": texts}).to_string());
    live::push_gate(user);
    Ok((
        403,
        json!({"allowed": false, "level": level, "response": response, "violation_id": id, "reasons": texts}),
    ))
}

fn handle(req: &IncomingRequest) -> Answer {
    let rules = Rules::from_env().map_err(|e| (500, e))?;
    let path = guest_kit::path(req);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (route, user) = match parts.as_slice() {
        ["api", "v1", "health"] => return Ok((200, json!({"ok": true}))),
        ["api", "v1", route, user] if valid_user(user) => (*route, *user),
        _ => return Err((404, "no such route".into())),
    };
    let text = |s: &str| Value::Text(s.to_string());
    match (req.method(), route) {
        (Method::Post, "trades") => attempt(user, req, &rules),
        (Method::Get, "may-trade") => {
            let risk_pct = guest_kit::query_param(req, "risk_pct")
                .and_then(|r| r.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            let symbol = guest_kit::query_param(req, "symbol");
            let state = gate::read_state(user).map_err(redis_err)?;
            let reasons = gate::closed_because(
                &state,
                symbol.as_deref(),
                risk_pct,
                &rules,
                guest_kit::now_ms(),
            );
            let texts: Vec<&str> = reasons.iter().map(|r| r.text.as_str()).collect();
            Ok(if reasons.is_empty() {
                (200, json!({"allowed": true}))
            } else {
                (403, json!({"allowed": false, "reasons": texts}))
            })
        }
        (Method::Put, "gate") => {
            let body = String::from_utf8(guest_kit::read_body(req)).unwrap_or_default();
            let mut fields = Vec::new();
            for line in body.lines().filter(|l| !l.trim().is_empty()) {
                match line.split_once('=') {
                    Some((name, value))
                        if gate::BUFFERS.contains(&name.trim())
                            && ["0", "1"].contains(&value.trim()) =>
                    {
                        fields.push((name.trim().to_string(), value.trim().as_bytes().to_vec()));
                    }
                    _ => {
                        return Err((
                            400,
                            format!("bad buffer line {line:?} (want e.g. buffer_go=1)"),
                        ));
                    }
                }
            }
            if fields.is_empty() {
                return Err((400, "no buffers given".into()));
            }
            alorig::host::redis::hset(&format!("gate:{user}"), &fields).map_err(redis_err)?;
            live::push_gate(user);
            Ok((204, Json::Null))
        }
        (Method::Get, "gate") => {
            let state = gate::read_state(user).map_err(redis_err)?;
            Ok((200, state.json()))
        }
        (Method::Post, "result") => {
            let Some(r) = guest_kit::query_param(req, "r")
                .and_then(|r| r.parse::<f64>().ok())
                .filter(|r| r.is_finite())
            else {
                return Err((400, "r must be a number".into()));
            };
            let total =
                gate::record_result(user, r, &rules, guest_kit::now_ms()).map_err(redis_err)?;
            live::push_gate(user);
            Ok((200, json!({"session_r": total as f64 / 100.0})))
        }
        (Method::Get, "violations" | "patterns" | "scores") => {
            store::schema().map_err(pg_err)?;
            let sql = match route {
                "violations" => "SELECT jsonb_build_object('id', id, 'at_ms', at_ms, 'code', violation_code, 'level', level,
                                   'attempted_action', attempted_action, 'gate_state_snapshot', gate_state_snapshot)
                                 FROM violations WHERE user_id = $1 ORDER BY id",
                "patterns" => "SELECT jsonb_build_object('pattern_type', pattern_type, 'occurrence_count', occurrence_count,
                                 'last_instance_ms', last_instance_ms, 'trend', trend)
                               FROM behavioral_patterns WHERE user_id = $1 ORDER BY pattern_type",
                _ => "SELECT jsonb_build_object('session_date', session_date::text, 'score', score, 'metric_breakdown', metric_breakdown)
                      FROM discipline_scores WHERE user_id = $1 ORDER BY session_date DESC",
            };
            let rows = store::json_rows(sql, &[text(user)]).map_err(pg_err)?;
            Ok((200, Json::Array(rows)))
        }
        (Method::Put, "accounts") => {
            let account = String::from_utf8(guest_kit::read_body(req)).unwrap_or_default();
            let account = account.trim();
            if account.is_empty()
                || account.len() > 64
                || !account
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err((400, "the body must be a MetaApi account id".into()));
            }
            store::schema().map_err(pg_err)?;
            store::set_account(user, account).map_err(pg_err)?;
            Ok((204, Json::Null))
        }
        _ => Err((404, "no such route".into())),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Psydge {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        match handle(&req) {
            Ok((204, _)) => guest_kit::respond(out, 204, "application/json", b""),
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

/// The trading session that ended at `end_ms`: each active user's score, then
/// their debrief job.
fn session_end(end_ms: i64) -> Result<(), String> {
    let rules = Rules::from_env()?;
    store::schema()?;
    let day = clock::trading_day(rules.day_end.0, rules.day_end.1, end_ms - 1);
    let from = end_ms - 86_400_000;
    for user in store::active_users(from, end_ms)? {
        let (score, breakdown) = store::discipline_score(&user, from, end_ms)?;
        store::save_score(&user, &day, score, &breakdown, guest_kit::now_ms())?;
        schedule(
            "ai_session_debrief",
            format!("{user}\n{day}"),
            Some(format!("debrief:{user}:{day}")),
        )?;
        live::push(
            &user,
            json!({"type": "discipline_score", "date": day, "score": score}).to_string(),
        );
    }
    Ok(())
}

impl exports::alorig::host::timer_handler::Guest for Psydge {
    fn on_timer(name: String, scheduled_at_ms: u64) -> Result<(), String> {
        match name.as_str() {
            "session_end" => session_end(scheduled_at_ms as i64),
            "sync_metaapi_positions" => broker::sync_positions(),
            "weekly_behavioral_report" => store::weekly_report(scheduled_at_ms as i64).map(|_| ()),
            other => Err(format!("no timer {other:?}")),
        }
    }
}

impl exports::alorig::host::job_handler::Guest for Psydge {
    fn on_job(_id: u64, name: String, payload: Vec<u8>, _attempt: u32) -> Result<(), String> {
        match name.as_str() {
            "detect_behavioral_patterns" => {
                let user = String::from_utf8(payload)
                    .map_err(|_| "the payload is not a user id".to_string())?;
                store::detect_patterns(&user, guest_kit::now_ms()).map(|_| ())
            }
            "ai_session_debrief" => broker::debrief(&payload, guest_kit::now_ms()),
            other => Err(format!("no job {other:?}")),
        }
    }
}

export!(Psydge);
wasip2::http::proxy::export!(Psydge with_types_in wasip2);
