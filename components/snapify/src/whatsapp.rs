//! The WhatsApp Business Cloud webhook and the onboarding bot (seed 000:
//! `process_whatsapp_webhook`, `WhatsAppSession(phone_hash, state)`).
//!
//! * `GET` answers Meta's verification: `hub.challenge` when `hub.verify_token`
//!   is the `WHATSAPP_VERIFY_TOKEN` secret, 403 otherwise.
//! * `POST` checks `X-Hub-Signature-256` (HMAC-SHA256 of the raw body under the
//!   `WHATSAPP_APP_SECRET` secret, compared in constant time): 401 and nothing
//!   else when it is wrong. Each message id is recorded once
//!   (`whatsapp_messages`) and gets one job `process_whatsapp_webhook`; Meta's
//!   retries of a delivery find the id and add nothing. The answer is 200 as
//!   soon as that is written — the work is the job's.
//! * The job moves the sender's session: `ask_name` → `ask_city` → `active`
//!   (the store is created, Free plan), then `add <title> <price>` adds a
//!   product (plan limits apply). The reply goes out through the Graph API
//!   after the state change commits, and is sent again on a retry until sent.

use crate::{catalog, schema::slugify};
use guest_kit::{outbound, postgres as pg, timers};
use hmac::{Hmac, Mac as _};
use pg::Value;
use serde_json::{Value as Json, json};
use sha2::{Digest as _, Sha256};

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// Meta's verification handshake.
pub fn verify(
    mode: Option<String>,
    token: Option<String>,
    challenge: Option<String>,
) -> (u16, String) {
    let expected = env("WHATSAPP_VERIFY_TOKEN");
    match (mode.as_deref(), token, challenge) {
        (Some("subscribe"), Some(token), Some(challenge))
            if !expected.is_empty() && token == expected =>
        {
            (200, challenge)
        }
        _ => (403, "verification failed\n".into()),
    }
}

/// Whether `header` (`sha256=<hex>`) signs `body` under the app secret.
pub fn signed(header: Option<&str>, body: &[u8]) -> bool {
    let secret = env("WHATSAPP_APP_SECRET");
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    if secret.is_empty() {
        return false;
    }
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// A signed delivery: one job per new message id. Answers how many were new.
pub fn receive(body: &[u8]) -> Result<usize, String> {
    let delivery: Json = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let mut new = 0;
    let messages = delivery["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["changes"].as_array().into_iter().flatten())
        .flat_map(|c| c["value"]["messages"].as_array().into_iter().flatten());
    for message in messages {
        let Some(id) = message["id"].as_str() else {
            continue;
        };
        let inserted = pg::query(
            "INSERT INTO whatsapp_messages (id, received_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id",
            &[Value::Text(id.to_string()), Value::Int64(guest_kit::now_ms())],
        )
        .map_err(|e| e.describe())?;
        if inserted.rows.is_empty() {
            continue; // Meta retrying a delivery we already have
        }
        let payload =
            json!({"id": id, "from": message["from"], "text": message["text"]["body"]}).to_string();
        let job = timers::schedule(&timers::Job {
            name: "process_whatsapp_webhook".into(),
            payload: payload.into_bytes(),
            when: timers::When::AfterMs(0),
            idempotency_key: Some(format!("wa:{id}")),
        });
        match job {
            Ok(job) => {
                let _ = pg::execute(
                    "UPDATE whatsapp_messages SET job_id = $1 WHERE id = $2",
                    &[Value::Int64(job as i64), Value::Text(id.into())],
                );
                new += 1;
            }
            Err(e) => {
                // Not recorded, so Meta's retry schedules it.
                let _ = pg::execute(
                    "DELETE FROM whatsapp_messages WHERE id = $1",
                    &[Value::Text(id.into())],
                );
                return Err(format!("scheduling: {e:?}"));
            }
        }
    }
    Ok(new)
}

fn phone_hash(phone: &str) -> String {
    hex::encode(Sha256::digest(phone.as_bytes()))
}

/// The job: the state change (once per message), then the reply (until sent).
pub fn process(payload: &[u8]) -> Result<(), String> {
    let message: Json = serde_json::from_slice(payload).map_err(|e| format!("payload: {e}"))?;
    let id = message["id"].as_str().unwrap_or_default().to_string();
    let from = message["from"].as_str().unwrap_or_default().to_string();
    let text = message["text"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string();
    let db = |e: pg::Error| e.describe();

    let tx = pg::begin().map_err(db)?;
    let seen = tx
        .query(
            "SELECT processed, reply, replied FROM whatsapp_messages WHERE id = $1 FOR UPDATE",
            &[Value::Text(id.clone())],
        )
        .map_err(db)?;
    let Some(row) = seen.rows.first() else {
        return Err(format!("message {id} was never recorded"));
    };
    let reply = if matches!(row[0], Value::Boolean(true)) {
        pg::Transaction::rollback(tx).map_err(db)?;
        if matches!(row[2], Value::Boolean(true)) {
            return Ok(());
        }
        row[1].as_text().unwrap_or_default().to_string()
    } else {
        let reply = step(&tx, &phone_hash(&from), &text)?;
        tx.execute(
            "UPDATE whatsapp_messages SET processed = true, reply = $1 WHERE id = $2",
            &[Value::Text(reply.clone()), Value::Text(id.clone())],
        )
        .map_err(db)?;
        pg::Transaction::commit(tx).map_err(db)?;
        reply
    };
    send(&from, &reply)?;
    pg::execute(
        "UPDATE whatsapp_messages SET replied = true WHERE id = $1",
        &[Value::Text(id)],
    )
    .map_err(db)?;
    Ok(())
}

/// One step of the onboarding state machine, inside the message's transaction.
fn step(tx: &pg::Transaction, phone: &str, text: &str) -> Result<String, String> {
    let db = |e: pg::Error| e.describe();
    let now = Value::Int64(guest_kit::now_ms());
    let rows = tx
        .query(
            "SELECT state, draft, store_id FROM whatsapp_sessions WHERE phone_hash = $1 FOR UPDATE",
            &[Value::Text(phone.into())],
        )
        .map_err(db)?;
    let Some(session) = rows.rows.first() else {
        tx.execute("INSERT INTO whatsapp_sessions (phone_hash, state, last_message_at) VALUES ($1, 'ask_name', $2)", &[Value::Text(phone.into()), now]).map_err(db)?;
        return Ok("Welcome to Snapify! What is your store's name?".into());
    };
    let state = session[0].as_text().unwrap_or_default().to_string();
    let set = |state: &str, draft: Json, store: Option<i32>| {
        tx.execute(
            "UPDATE whatsapp_sessions SET state = $1, draft = $2, store_id = coalesce($3, store_id), last_message_at = $4 WHERE phone_hash = $5",
            &[Value::Text(state.into()), Value::Jsonb(draft.to_string()), store.map(Value::Int32).unwrap_or(Value::Null), now.clone(), Value::Text(phone.into())],
        )
        .map(|_| ())
        .map_err(db)
    };
    match state.as_str() {
        "ask_name" if slugify(text).len() >= 2 => {
            set("ask_city", json!({"name": text}), None)?;
            Ok(format!("Great, “{text}”. Which city are you in?"))
        }
        "ask_name" => Ok("Please send your store's name (at least 2 letters).".into()),
        "ask_city" => {
            let draft: Json = session[1]
                .as_text()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            let name = draft["name"].as_str().unwrap_or("My Store").to_string();
            let base = slugify(&name);
            let taken = tx
                .query(
                    "SELECT count(*) FROM stores WHERE slug = $1 OR slug LIKE $1 || '-%'",
                    &[Value::Text(base.clone())],
                )
                .map_err(db)?;
            let n = taken.rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0);
            let slug = if n == 0 {
                base
            } else {
                format!("{base}-{}", n + 1)
            };
            let created = tx
                .query(
                    "INSERT INTO stores (seller_phone_hash, name, slug, city) VALUES ($1, $2, $3, $4) RETURNING id",
                    &[Value::Text(phone.into()), Value::Text(name), Value::Text(slug.clone()), Value::Text(text.into())],
                )
                .map_err(db)?;
            let store = created.rows.first().and_then(|r| match r[0] {
                Value::Int32(i) => Some(i),
                _ => None,
            });
            set("active", json!({}), store)?;
            Ok(format!(
                "Your store is live: https://snapify.pk/{slug} — send “add <title> <price>” to list a product."
            ))
        }
        "active" => {
            let store = match session[2] {
                Value::Int32(i) => i,
                _ => return Err("active session without a store".into()),
            };
            let Some(rest) = text.strip_prefix("add ") else {
                return Ok("Send “add <title> <price>” to list a product.".into());
            };
            let Some((title, price)) = rest.rsplit_once(' ') else {
                return Ok("Send “add <title> <price>”.".into());
            };
            match catalog::add_product_in(tx, store, title, price, "") {
                Ok(_) => Ok(format!(
                    "Listed “{title}” at {}.",
                    crate::pages::rupees(price)
                )),
                Err((_, why)) => Ok(why),
            }
        }
        other => Err(format!("unknown session state {other:?}")),
    }
}

/// A text message through the Graph API (`GRAPH_BASE_URL`, default
/// `https://graph.facebook.com`; `WHATSAPP_PHONE_NUMBER_ID`, `WHATSAPP_TOKEN`).
fn send(to: &str, body: &str) -> Result<(), String> {
    let base = std::env::var("GRAPH_BASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "https://graph.facebook.com".into());
    let url = format!(
        "{}/v21.0/{}/messages",
        base.trim_end_matches('/'),
        env("WHATSAPP_PHONE_NUMBER_ID")
    );
    let message =
        json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}})
            .to_string();
    let auth = format!("Bearer {}", env("WHATSAPP_TOKEN"));
    let response = outbound::send(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        message.as_bytes(),
    )?;
    if (200..300).contains(&response.status) {
        Ok(())
    } else {
        Err(format!("the Graph API answered {}", response.status))
    }
}
