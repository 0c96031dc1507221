//! The two outside services, over outbound HTTP (`[outbound_http]`):
//!
//! * MetaApi (seed: "position polling via REST + WebSocket"; the host has no
//!   outbound WebSocket, so REST): the `sync_metaapi_positions` timer, every
//!   5 s, pulls the positions of each user who has a browser open (the Redis
//!   set `online`) and a MetaApi account, keeps them in `positions:{user}`,
//!   the latest prices in `prices:{symbol}` (TTL 5 s, as the seed's schema),
//!   and pushes them to the user's group. `METAAPI_URL` + secret `METAAPI_TOKEN`.
//! * Claude (the AI debrief at session end): the job `ai_session_debrief`
//!   sends the session's score breakdown (no names, no account ids) and logs
//!   prompt and answer in `ai_interactions`. `ANTHROPIC_URL` + secret
//!   `ANTHROPIC_API_KEY`.

use crate::alorig::host::{redis, websocket as ws};
use crate::store;
use serde_json::{Value as Json, json};

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One user's positions from MetaApi, into Redis and their browsers.
fn sync_user(user: &str, account: &str) -> Result<usize, String> {
    let base = var(
        "METAAPI_URL",
        "https://mt-client-api-v1.london.agiliumtrade.ai",
    );
    let token =
        std::env::var("METAAPI_TOKEN").map_err(|_| "no METAAPI_TOKEN secret".to_string())?;
    let url = format!(
        "{}/users/current/accounts/{account}/positions",
        base.trim_end_matches('/')
    );
    let (status, body) = guest_kit::outbound::send_pair(
        "GET",
        &url,
        &[("auth-token", &token), ("accept", "application/json")],
        &[],
    )?;
    if status != 200 {
        return Err(format!("MetaApi answered {status} for user {user}"));
    }
    let positions: Vec<Json> =
        serde_json::from_slice(&body).map_err(|e| format!("MetaApi positions: {e}"))?;
    let mut fields = Vec::new();
    let mut commands = Vec::new();
    for p in &positions {
        let id = p["id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| p["id"].to_string());
        fields.push((id, p.to_string().into_bytes()));
        if let (Some(symbol), Some(price)) = (p["symbol"].as_str(), p["currentPrice"].as_f64()) {
            let ttl = redis::SetOptions {
                ttl_ms: Some(5_000),
                condition: redis::SetCondition::Always,
            };
            commands.push(redis::Command::Set((
                format!("prices:{symbol}"),
                price.to_string().into_bytes(),
                ttl,
            )));
        }
    }
    let key = format!("positions:{user}");
    commands.insert(0, redis::Command::Del(vec![key.clone()]));
    if !fields.is_empty() {
        commands.insert(1, redis::Command::Hset((key, fields)));
    }
    redis::pipeline(&commands, true).map_err(|e| format!("redis: {e:?}"))?;
    let message = json!({"type": "positions", "user": user, "positions": positions});
    ws::send_group(
        &format!("user:{user}"),
        &ws::Message::Text(message.to_string()),
    )
    .map_err(|e| format!("push: {e:?}"))?;
    Ok(positions.len())
}

/// The 5-second timer: every online user with an account. One user's failure
/// is logged and does not stop the others; the firing fails if all did.
pub fn sync_positions() -> Result<(), String> {
    let online = redis::smembers("online").map_err(|e| format!("redis: {e:?}"))?;
    if online.is_empty() {
        return Ok(());
    }
    store::schema()?;
    let (mut failed, mut tried) = (Vec::new(), 0);
    for user in online
        .iter()
        .filter_map(|u| String::from_utf8(u.clone()).ok())
    {
        let Some(account) = store::account(&user)? else {
            continue;
        };
        tried += 1;
        if let Err(why) = sync_user(&user, &account) {
            eprintln!("position sync: {why}");
            failed.push(why);
        }
    }
    if tried > 0 && failed.len() == tried {
        return Err(format!("no user synced: {}", failed.join("; ")));
    }
    Ok(())
}

/// The job `ai_session_debrief` (payload `user\nYYYY-MM-DD`): Claude's summary
/// of the session's score, logged as an AI interaction.
pub fn debrief(payload: &[u8], now_ms: i64) -> Result<(), String> {
    let text = String::from_utf8_lossy(payload);
    let (user, day) = text
        .split_once('\n')
        .ok_or("the payload is not `user\\ndate`")?;
    store::schema()?;
    let scores = store::json_rows(
        "SELECT metric_breakdown || jsonb_build_object('score', score) FROM discipline_scores WHERE user_id = $1 AND session_date = $2::text::date",
        &[
            crate::alorig::host::postgres::Value::Text(user.into()),
            crate::alorig::host::postgres::Value::Text(day.into()),
        ],
    )?;
    let score = scores
        .first()
        .ok_or_else(|| format!("no score for user {user} on {day}"))?;
    let prompt = format!(
        "You are a trading discipline coach. Debrief this trading session in three short sentences. \
         Discipline score breakdown (weights, ratios, points): {score}"
    );
    let key = std::env::var("ANTHROPIC_API_KEY")
        .map_err(|_| "no ANTHROPIC_API_KEY secret".to_string())?;
    let url = format!(
        "{}/v1/messages",
        var("ANTHROPIC_URL", "https://api.anthropic.com").trim_end_matches('/')
    );
    let body = json!({
        "model": var("CLAUDE_MODEL", "claude-sonnet-4-5"),
        "max_tokens": 300,
        "messages": [{"role": "user", "content": prompt}],
    });
    let (status, answer) = guest_kit::outbound::send_pair(
        "POST",
        &url,
        &[
            ("x-api-key", &key),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )?;
    if status != 200 {
        return Err(format!(
            "Claude answered {status}: {}",
            String::from_utf8_lossy(&answer)
                .chars()
                .take(200)
                .collect::<String>()
        ));
    }
    let answer: Json =
        serde_json::from_slice(&answer).map_err(|e| format!("Claude's answer: {e}"))?;
    let summary = answer["content"][0]["text"]
        .as_str()
        .ok_or("Claude's answer has no content[0].text")?;
    store::save_interaction(user, "session_debrief", Some(day), &prompt, summary, now_ms)?;
    let message =
        json!({"type": "ai_message", "role": "session_debrief", "date": day, "text": summary});
    let _ = ws::send_group(
        &format!("user:{user}"),
        &ws::Message::Text(message.to_string()),
    );
    Ok(())
}
