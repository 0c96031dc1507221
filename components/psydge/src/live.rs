//! The gate, live in the browser: `wss://ws.psydge.com/?user=42&token=…`.
//!
//! * `on-open` checks the user (see [`authorized`]), joins the group
//!   `user:<id>`, marks the user online (the Redis set `online`, which the
//!   5-second MetaApi sync walks) and sends the current gate status at once;
//! * the HTTP handlers push gate changes, violations (with their level) and
//!   the AI debrief to the user's group, on every host; the position sync
//!   pushes positions;
//! * a browser may send `status` to get its gate status again. Instances do not
//!   outlive an event, so the connection's user is kept in Redis
//!   (`ws_user:<connection>`, removed on close; `ws_count:<user>` counts them).
//!
//! Messages are JSON: `{"type":"gate","user":"42","allowed":false,"reasons":[…]}`,
//! `{"type":"violation","level":2,"response":"Overlay","codes":[…]}`,
//! `{"type":"positions",…}`, `{"type":"ai_message",…}`.

use crate::alorig::host::{redis, websocket as ws};
use crate::gate::{self, Rules};
use crate::json_str;
use hmac::{Hmac, Mac as _};

/// The user a connection is for, when the request may have it.
///
/// With the secret `WS_TOKEN_SECRET` (manifest `[secrets]`), the query must
/// carry `token` = hex HMAC-SHA256 of the user id under that secret — what
/// Psydge's API hands a logged-in browser. Without the secret (development)
/// the user id is taken as given: never deploy so.
pub fn authorized(query: &str) -> Result<String, String> {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let user = param("user")
        .filter(|u| crate::valid_user(u))
        .ok_or("a user id is needed: ?user=<id>")?;
    if let Ok(secret) = std::env::var("WS_TOKEN_SECRET") {
        let token = param("token")
            .and_then(|t| hex_decode(t))
            .ok_or("a signed token is needed: &token=<hex>")?;
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| "bad secret")?;
        mac.update(user.as_bytes());
        mac.verify_slice(&token)
            .map_err(|_| "the token is not valid for this user")?;
    }
    Ok(user.to_string())
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The user's gate, as the message the browser gets.
pub fn gate_status(user: &str) -> Result<String, String> {
    let rules = Rules::from_env()?;
    let state = gate::read_state(user).map_err(|e| format!("{e:?}"))?;
    let reasons = gate::closed_because(
        &state,
        None,
        rules.max_risk_pct,
        &rules,
        guest_kit::now_ms(),
    );
    let list: Vec<String> = reasons.iter().map(|r| json_str(&r.text)).collect();
    Ok(format!(
        "{{\"type\":\"gate\",\"user\":{},\"allowed\":{},\"reasons\":[{}]}}",
        json_str(user),
        reasons.is_empty(),
        list.join(",")
    ))
}

/// Sends a message to the user's browsers. A push that cannot be made (Redis
/// away) does not fail the request that caused it.
pub fn push(user: &str, message: String) {
    if let Err(err) = ws::send_group(&format!("user:{user}"), &ws::Message::Text(message)) {
        eprintln!("push to user {user} failed: {err:?}");
    }
}

/// Pushes the user's gate status to their browsers.
pub fn push_gate(user: &str) {
    match gate_status(user) {
        Ok(status) => push(user, status),
        Err(err) => eprintln!("gate status for user {user} not pushed: {err}"),
    }
}

impl crate::exports::alorig::host::websocket_handler::Guest for crate::Psydge {
    fn on_open(
        request: crate::exports::alorig::host::websocket_handler::OpenRequest,
    ) -> Result<(), String> {
        let user = authorized(&request.query)?;
        let id = &request.connection;
        let day = redis::SetOptions {
            ttl_ms: Some(86_400_000),
            condition: redis::SetCondition::Always,
        };
        let commands = [
            redis::Command::Set((format!("ws_user:{id}"), user.as_bytes().to_vec(), day)),
            redis::Command::IncrBy((format!("ws_count:{user}"), 1)),
            redis::Command::Sadd(("online".into(), vec![user.as_bytes().to_vec()])),
        ];
        redis::pipeline(&commands, true).map_err(|e| format!("{e:?}"))?;
        ws::join(id, &format!("user:{user}"))
            .map_err(|e| format!("cannot join the user's group: {e:?}"))?;
        let status = gate_status(&user)?;
        ws::send(id, &ws::Message::Text(status)).map_err(|e| format!("{e:?}"))
    }

    fn on_message(connection: String, message: ws::Message) -> Result<(), String> {
        // The only request a browser makes: its status again.
        if !matches!(&message, ws::Message::Text(text) if text == "status") {
            return Ok(());
        }
        let user = redis::get(&format!("ws_user:{connection}")).map_err(|e| format!("{e:?}"))?;
        let user = user
            .and_then(|u| String::from_utf8(u).ok())
            .ok_or("no user for this connection")?;
        let status = gate_status(&user)?;
        ws::send(&connection, &ws::Message::Text(status)).map_err(|e| format!("{e:?}"))
    }

    fn on_close(connection: String, _code: u16) {
        let key = format!("ws_user:{connection}");
        let Ok(Some(user)) = redis::get(&key) else {
            return;
        };
        let _ = redis::del(&[key]);
        let Ok(user) = String::from_utf8(user) else {
            return;
        };
        // The last browser of this user gone: no more position sync for them.
        if let Ok(left) = redis::incr_by(&format!("ws_count:{user}"), -1)
            && left <= 0
        {
            let _ = redis::del(&[format!("ws_count:{user}")]);
            let _ = redis::srem("online", &[user.into_bytes()]);
        }
    }
}
