//! The gate, live in the browser: `wss://ws.psydge.com/?user=42&token=…`.
//!
//! * `on-open` checks the user (see [`authorized`]), joins the groups `user:<id>`
//!   and `prices`, and sends the current gate status at once;
//! * the HTTP handlers that change a gate (`PUT /gate/{user}`, `POST
//!   /result/{user}`) push the new status to the user's group, on every host;
//! * the `price_tick` timer (`every = "1s"`) publishes a tick to `prices`;
//! * a browser may send `status` to get its gate status again. Instances do not
//!   outlive an event, so the connection's user is kept in Redis
//!   (`ws_user:<connection>`, removed on close).
//!
//! Messages are JSON: `{"type":"gate","user":"42","allowed":false,"reasons":[…]}`
//! and `{"type":"price","symbol":"EURUSD","price":1.08012,"at":…}`.

use crate::alorig::host::{redis, websocket as ws};
use crate::{Rules, closed_because, json_str};
use hmac::{Hmac, Mac as _};

/// The user a connection is for, when the request may have it.
///
/// With the secret `WS_TOKEN_SECRET` (manifest `[secrets]`), the query must
/// carry `token` = hex HMAC-SHA256 of the user id under that secret — what
/// Psydge's API hands a logged-in browser. Without the secret (development)
/// the user id is taken as given: never deploy so.
pub fn authorized(query: &str) -> Result<String, String> {
    let param = |name: &str| query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='));
    let user = param("user").filter(|u| crate::valid_user(u)).ok_or("a user id is needed: ?user=<id>")?;
    if let Ok(secret) = std::env::var("WS_TOKEN_SECRET") {
        let token = param("token").and_then(|t| hex_decode(t)).ok_or("a signed token is needed: &token=<hex>")?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| "bad secret")?;
        mac.update(user.as_bytes());
        mac.verify_slice(&token).map_err(|_| "the token is not valid for this user")?;
    }
    Ok(user.to_string())
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len() / 2).map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

/// The user's gate, as the message the browser gets.
pub fn gate_status(user: &str) -> Result<String, redis::Error> {
    let rules = Rules::from_env();
    let reasons = closed_because(user, rules.max_risk_pct, &rules)?;
    let list: Vec<String> = reasons.iter().map(|r| json_str(r)).collect();
    Ok(format!(
        "{{\"type\":\"gate\",\"user\":{},\"allowed\":{},\"reasons\":[{}]}}",
        json_str(user),
        reasons.is_empty(),
        list.join(",")
    ))
}

/// Pushes the user's gate status to their browsers. A push that cannot be made
/// (Redis away) does not fail the request that changed the gate.
pub fn push_gate(user: &str) {
    let result = gate_status(user)
        .map_err(|e| format!("{e:?}"))
        .and_then(|status| ws::send_group(&format!("user:{user}"), &ws::Message::Text(status)).map_err(|e| format!("{e:?}")));
    if let Err(err) = result {
        eprintln!("gate status for user {user} not pushed: {err}");
    }
}

/// The next EURUSD price, in hundred-thousandths: a small step of a random
/// walk kept in Redis (so every host's ticks continue one series).
fn next_price(scheduled_at_ms: u64) -> Result<i64, redis::Error> {
    let step = (scheduled_at_ms / 1000).wrapping_mul(2_654_435_761) % 21;
    let price = redis::incr_by("price:EURUSD", step as i64 - 10)?;
    if price < 50_000 {
        // A fresh series (or one that wandered off): start from 1.08000.
        redis::set("price:EURUSD", b"108000", redis::SetOptions { ttl_ms: None, condition: redis::SetCondition::Always })?;
        return Ok(108_000);
    }
    Ok(price)
}

pub struct Live;

impl crate::exports::alorig::host::websocket_handler::Guest for Live {
    fn on_open(request: crate::exports::alorig::host::websocket_handler::OpenRequest) -> Result<(), String> {
        let user = authorized(&request.query)?;
        let id = &request.connection;
        let day = redis::SetOptions { ttl_ms: Some(86_400_000), condition: redis::SetCondition::Always };
        redis::set(&format!("ws_user:{id}"), user.as_bytes(), day).map_err(|e| format!("{e:?}"))?;
        for group in [format!("user:{user}"), "prices".to_string()] {
            ws::join(id, &group).map_err(|e| format!("cannot join {group}: {e:?}"))?;
        }
        let status = gate_status(&user).map_err(|e| format!("gate status: {e:?}"))?;
        ws::send(id, &ws::Message::Text(status)).map_err(|e| format!("{e:?}"))
    }

    fn on_message(connection: String, message: ws::Message) -> Result<(), String> {
        // The only request a browser makes: its status again.
        if !matches!(&message, ws::Message::Text(text) if text == "status") {
            return Ok(());
        }
        let user = redis::get(&format!("ws_user:{connection}")).map_err(|e| format!("{e:?}"))?;
        let user = user.and_then(|u| String::from_utf8(u).ok()).ok_or("no user for this connection")?;
        let status = gate_status(&user).map_err(|e| format!("{e:?}"))?;
        ws::send(&connection, &ws::Message::Text(status)).map_err(|e| format!("{e:?}"))
    }

    fn on_close(connection: String, _code: u16) {
        let _ = redis::del(&[format!("ws_user:{connection}")]);
    }
}

impl crate::exports::alorig::host::timer_handler::Guest for Live {
    fn on_timer(name: String, scheduled_at_ms: u64) -> Result<(), String> {
        if name != "price_tick" {
            return Err(format!("no timer {name:?}"));
        }
        let price = next_price(scheduled_at_ms).map_err(|e| format!("{e:?}"))?;
        let tick = format!(
            "{{\"type\":\"price\",\"symbol\":\"EURUSD\",\"price\":{}.{:05},\"at\":{scheduled_at_ms}}}",
            price / 100_000,
            price % 100_000
        );
        ws::send_group("prices", &ws::Message::Text(tick)).map_err(|e| format!("{e:?}"))
    }
}
