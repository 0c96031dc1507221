//! Psydge's discipline gate on `alorig:host/redis`, with the seeds' state schema
//! (keys shown without the app's `psydge:` prefix, which the host adds):
//!
//! | key                 | type   | TTL            | content                               |
//! |---------------------|--------|----------------|---------------------------------------|
//! | `gate:{user}`       | hash   | none           | the six buffers, `1` open / `0` closed |
//! | `cooldown:{user}`   | string | cooldown       | set after a losing trade              |
//! | `session_r:{user}`  | string | session        | cumulative R, in hundredths           |
//! | `lock:{user}`       | string | session        | session lock (loss or profit lock)    |
//!
//! Routes:
//! * `PUT /gate/{user}` — body `buffer_go=1` lines: sets gate buffers;
//! * `POST /result/{user}?r=-1.5` — records a closed trade's R (one transaction:
//!   session R, its expiry, the cooldown after a loss, the lock past a limit);
//! * `GET /may-trade/{user}?risk_pct=0.8` — 200 `{"allowed":true}` or 403 with
//!   every reason the gate is closed;
//! * `GET /gate/{user}` — the state, as JSON.
//!
//! Limits come from the manifest's `[env]`. Browsers follow their gate live
//! over a WebSocket, with price ticks from a timer: see [`live`].

wit_bindgen::generate!({
    inline: "
        package psydge:gate;
        world gate {
            import alorig:host/redis@0.1.0;
            import alorig:host/websocket@0.1.0;
            export alorig:host/websocket-handler@0.1.0;
            export alorig:host/timer-handler@0.1.0;
        }
    ",
    path: "../../wit",
    generate_all,
});

mod live;

use alorig::host::redis::{self, Command, Error, KeyTtl, Reply, SetCondition, SetOptions};
use guest_kit::wasip2;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

const BUFFERS: [&str; 6] = ["buffer_go", "buffer_whitelist", "buffer_session", "buffer_equity", "buffer_cooldown", "buffer_risk"];

struct Gate;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Rules {
    loss_lock_centi_r: i64,
    profit_lock_centi_r: i64,
    cooldown_ms: u64,
    max_risk_pct: f64,
    session_ms: u64,
}

impl Rules {
    fn from_env() -> Rules {
        Rules {
            loss_lock_centi_r: (env("LOSS_LOCK_R", -2.0f64) * 100.0).round() as i64,
            profit_lock_centi_r: (env("PROFIT_LOCK_R", 3.0f64) * 100.0).round() as i64,
            cooldown_ms: env("COOLDOWN_MS", 4 * 3_600_000),
            max_risk_pct: env("MAX_RISK_PCT", 1.0),
            session_ms: env("SESSION_MS", 12 * 3_600_000),
        }
    }
}

fn json_str(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn fail(out: ResponseOutparam, err: Error) {
    let status = match err {
        Error::Unavailable | Error::Timeout => 503,
        Error::Invalid(_) => 400,
        _ => 500,
    };
    guest_kit::respond(out, status, "application/json", format!("{{\"error\":{}}}", json_str(&format!("{err:?}"))).as_bytes());
}

/// Every reason the gate is closed for this user and this risk (empty: open).
fn closed_because(user: &str, risk_pct: f64, rules: &Rules) -> Result<Vec<String>, Error> {
    // One round trip for the whole state.
    let replies = redis::pipeline(
        &[
            Command::Hgetall(format!("gate:{user}")),
            Command::Exists(vec![format!("lock:{user}")]),
            Command::Get(format!("session_r:{user}")),
        ],
        false,
    )?;
    let mut reasons = Vec::new();
    let buffers: Vec<Vec<u8>> = match &replies[0] {
        Reply::Array(flat) => flat.clone(),
        _ => Vec::new(),
    };
    for name in BUFFERS {
        let open = buffers.chunks(2).any(|pair| pair[0] == name.as_bytes() && pair.get(1).is_some_and(|v| v == b"1"));
        if !open {
            reasons.push(format!("{name} closed"));
        }
    }
    if matches!(replies[1], Reply::Integer(n) if n > 0) {
        reasons.push("session locked".into());
    }
    let session_r = match &replies[2] {
        Reply::Data(v) => std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0),
        _ => 0,
    };
    if session_r <= rules.loss_lock_centi_r {
        reasons.push("loss lock reached".into());
    }
    if session_r >= rules.profit_lock_centi_r {
        reasons.push("profit lock reached".into());
    }
    if let KeyTtl::ExpiresInMs(ms) = redis::ttl(&format!("cooldown:{user}"))? {
        reasons.push(format!("cooldown: {} s left", ms.div_ceil(1000)));
    }
    if !(risk_pct > 0.0 && risk_pct <= rules.max_risk_pct) {
        reasons.push(format!("risk {risk_pct}% is not within (0, {}]%", rules.max_risk_pct));
    }
    Ok(reasons)
}

/// Records a closed trade's R: returns the session's R in hundredths.
fn record_result(user: &str, r: f64, rules: &Rules) -> Result<i64, Error> {
    let centi = (r * 100.0).round() as i64;
    let mut commands = vec![Command::IncrBy((format!("session_r:{user}"), centi))];
    if centi < 0 {
        commands.push(Command::Set((format!("cooldown:{user}"), b"1".to_vec(), SetOptions { ttl_ms: Some(rules.cooldown_ms), condition: SetCondition::Always })));
    }
    let replies = redis::pipeline(&commands, true)?;
    let total = match replies[0] {
        Reply::Integer(n) => n,
        _ => 0,
    };
    // The session's R lasts the session, from its first trade.
    if let KeyTtl::Persistent = redis::ttl(&format!("session_r:{user}"))? {
        redis::expire(&format!("session_r:{user}"), rules.session_ms)?;
    }
    if total <= rules.loss_lock_centi_r || total >= rules.profit_lock_centi_r {
        redis::set(&format!("lock:{user}"), b"1", SetOptions { ttl_ms: Some(rules.session_ms), condition: SetCondition::Always })?;
    }
    Ok(total)
}

/// A user id as the routes and groups take it.
fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= 64 && user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn handle(req: &IncomingRequest) -> Result<(u16, String), Error> {
    let rules = Rules::from_env();
    let path = guest_kit::path(req);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let user = match parts.as_slice() {
        [_, user] if valid_user(user) => *user,
        _ => return Ok((404, "{\"error\":\"no such route\"}".into())),
    };
    match (req.method(), parts[0]) {
        (Method::Put, "gate") => {
            let body = String::from_utf8(guest_kit::read_body(req)).unwrap_or_default();
            let mut fields = Vec::new();
            for line in body.lines().filter(|l| !l.trim().is_empty()) {
                match line.split_once('=') {
                    Some((name, value)) if BUFFERS.contains(&name.trim()) && ["0", "1"].contains(&value.trim()) => {
                        fields.push((name.trim().to_string(), value.trim().as_bytes().to_vec()));
                    }
                    _ => return Ok((400, format!("{{\"error\":{}}}", json_str(&format!("bad buffer line {line:?}"))))),
                }
            }
            if fields.is_empty() {
                return Ok((400, "{\"error\":\"no buffers given\"}".into()));
            }
            redis::hset(&format!("gate:{user}"), &fields)?;
            live::push_gate(user);
            Ok((204, String::new()))
        }
        (Method::Post, "result") => {
            let Some(r) = guest_kit::query_param(req, "r").and_then(|r| r.parse::<f64>().ok()).filter(|r| r.is_finite()) else {
                return Ok((400, "{\"error\":\"r must be a number\"}".into()));
            };
            let total = record_result(user, r, &rules)?;
            live::push_gate(user);
            Ok((200, format!("{{\"session_r\":{:.2}}}", total as f64 / 100.0)))
        }
        (Method::Get, "may-trade") => {
            let risk_pct = guest_kit::query_param(req, "risk_pct").and_then(|r| r.parse::<f64>().ok()).unwrap_or(f64::NAN);
            let reasons = closed_because(user, risk_pct, &rules)?;
            if reasons.is_empty() {
                Ok((200, "{\"allowed\":true}".into()))
            } else {
                let list: Vec<String> = reasons.iter().map(|r| json_str(r)).collect();
                Ok((403, format!("{{\"allowed\":false,\"reasons\":[{}]}}", list.join(","))))
            }
        }
        (Method::Get, "gate") => {
            let buffers = redis::hgetall(&format!("gate:{user}"))?;
            let fields: Vec<String> = buffers
                .iter()
                .map(|(name, value)| format!("{}:{}", json_str(name), json_str(&String::from_utf8_lossy(value))))
                .collect();
            let session_r = redis::get(&format!("session_r:{user}"))?
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            let locked = redis::exists(&[format!("lock:{user}")])? > 0;
            Ok((200, format!("{{\"buffers\":{{{}}},\"session_r\":{:.2},\"locked\":{locked}}}", fields.join(","), session_r as f64 / 100.0)))
        }
        _ => Ok((404, "{\"error\":\"no such route\"}".into())),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Gate {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        match handle(&req) {
            Ok((status, body)) => guest_kit::respond(out, status, "application/json", body.as_bytes()),
            Err(err) => fail(out, err),
        }
    }
}

use live::Live;
export!(Live);
wasip2::http::proxy::export!(Gate with_types_in wasip2);
