//! Observer's scheduled work (the seed's Celery beat, now host timers) and the
//! AI call:
//!
//! | timer / job               | seed schedule                    | here                                      |
//! |---------------------------|----------------------------------|-------------------------------------------|
//! | `pattern_analysis`        | every 6 h (active users)         | the AI reads each active user's new entries, stripped ([`crate::privacy`]); the summary is sealed |
//! | `module_transition_check` | every 2 h                        | the module machine 0 → i → G → 8 → 0 from the entries' language |
//! | `ambient_refresh`         | hourly                           | the palette from the module (and friction from the emotion tags) |
//! | `planetary_update`        | daily at midnight                | the day's planetary ruler and Moon phase |
//! | `data_cleanup`            | weekly                           | AI summaries older than 30 days purged |
//! | job `journal_nlp`         | on a new entry, debounced 5 min  | scheduled 5 min after an entry, one pending per user |
//!
//! Active users: an entry in the last 7 days. The module rules (the seed names
//! the triggers, not thresholds), over the last 10 entries: 0 → i when ego
//! words (I, me, my, mine, myself) are ≥ 8 % of the words; i → G on two
//! paradox markers ("paradox", "contradiction", "and yet", "both … and");
//! G → 8 when ego words fall under 2 %; 8 → 0 when they are back over 5 %.

use crate::{db, entries_of, privacy, seal};
use guest_kit::postgres::{self as pg, Value};
use serde_json::{Value as Json, json};

const WEEK_MS: i64 = 7 * 86_400_000;

fn active_users(now_ms: i64) -> Result<Vec<i64>, String> {
    let rows = pg::query(
        "SELECT DISTINCT user_id FROM journal_entries WHERE created_ms > $1 ORDER BY user_id",
        &[Value::Int64(now_ms - WEEK_MS)],
    )
    .map_err(|e| db(e).1)?;
    Ok(rows
        .rows
        .iter()
        .filter_map(|r| r.first().and_then(Value::as_i64))
        .collect())
}

/// Asks the AI (OpenAI, the seed's primary) about anonymized snippets.
pub fn ask_ai(instruction: &str, snippets: &[String]) -> Result<String, String> {
    let key =
        std::env::var("OPENAI_API_KEY").map_err(|_| "no OPENAI_API_KEY secret".to_string())?;
    let base = std::env::var("OPENAI_URL").unwrap_or_else(|_| "https://api.openai.com".into());
    let body = json!({
        "model": std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o".into()),
        "messages": [
            {"role": "system", "content": instruction},
            {"role": "user", "content": snippets.join("\n---\n")},
        ],
    });
    let url = format!("{}/v1/chat/completions", base.trim_end_matches('/'));
    let auth = format!("Bearer {key}");
    let (status, answer) = guest_kit::outbound::send_pair(
        "POST",
        &url,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )?;
    if status != 200 {
        return Err(format!("OpenAI answered {status}"));
    }
    let answer: Json =
        serde_json::from_slice(&answer).map_err(|e| format!("OpenAI's answer: {e}"))?;
    answer["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "OpenAI's answer has no content".into())
}

/// One user's pattern analysis over their entries of the last 7 days.
fn analyse(user: i64, now_ms: i64) -> Result<(), String> {
    let entries = entries_of(user, Some(now_ms - WEEK_MS), 50)?;
    let snippets: Vec<String> = entries
        .iter()
        .filter_map(|e| {
            e.text
                .as_ref()
                .ok()
                .map(|t| format!("[{}] {}", e.emotion_tag, privacy::strip(t)))
        })
        .collect();
    if snippets.is_empty() {
        return Ok(());
    }
    let summary = ask_ai(
        "You observe a person's journal snippets (personal details removed). Name recurring loops, flow states and contradictions in three short lines. Never address the person.",
        &snippets,
    )?;
    let sealed = seal::seal(summary.as_bytes(), &format!("pattern:{user}:{now_ms}"))?;
    pg::execute(
        "INSERT INTO patterns (user_id, computed_ms, entries, key_id, nonce, summary) VALUES ($1, $2, $3, $4, $5, $6)",
        &[Value::Int64(user), Value::Int64(now_ms), Value::Int32(snippets.len() as i32), Value::Int16(sealed.key_id), Value::Bytea(sealed.nonce), Value::Bytea(sealed.ciphertext)],
    )
    .map_err(|e| db(e).1)?;
    Ok(())
}

/// Every 6 hours: each active user's analysis; one user's failure does not stop the others.
pub fn pattern_analysis(now_ms: i64) -> Result<(), String> {
    crate::schema().map_err(|e| e.1)?;
    let mut failed = Vec::new();
    let users = active_users(now_ms)?;
    for user in &users {
        if let Err(why) = analyse(*user, now_ms) {
            eprintln!("pattern analysis for user {user}: {why}");
            failed.push(why);
        }
    }
    if !users.is_empty() && failed.len() == users.len() {
        return Err(format!("no analysis succeeded: {}", failed.join("; ")));
    }
    Ok(())
}

/// The job `journal_nlp`, 5 minutes after a user's entry (one pending per user).
pub fn journal_nlp(payload: &[u8]) -> Result<(), String> {
    let user: i64 = String::from_utf8_lossy(payload)
        .parse()
        .map_err(|_| "the payload is not a user id".to_string())?;
    crate::schema().map_err(|e| e.1)?;
    analyse(user, guest_kit::now_ms())
}

fn ego_ratio(texts: &[String]) -> f64 {
    let (mut ego, mut all) = (0usize, 0usize);
    for word in texts.iter().flat_map(|t| t.split_whitespace()) {
        let w = word
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_ascii_lowercase();
        if w.is_empty() {
            continue;
        }
        all += 1;
        ego += usize::from(matches!(
            w.as_str(),
            "i" | "me" | "my" | "mine" | "myself" | "i'm"
        ));
    }
    if all == 0 {
        0.0
    } else {
        ego as f64 / all as f64
    }
}

/// The next module for these entries' texts, if it moves.
pub fn next_module(module: &str, texts: &[String]) -> Option<&'static str> {
    let ego = ego_ratio(texts);
    let joined = texts.join(" ").to_ascii_lowercase();
    let paradox = ["paradox", "contradiction", "and yet", "both"]
        .iter()
        .map(|m| joined.matches(m).count())
        .sum::<usize>();
    match module {
        "0" if ego >= 0.08 => Some("i"),
        "i" if paradox >= 2 => Some("G"),
        "G" if ego < 0.02 => Some("8"),
        "8" if ego > 0.05 => Some("0"),
        _ => None,
    }
}

/// Every 2 hours: each active user's module, from their last 10 entries.
pub fn module_transition_check(now_ms: i64) -> Result<(), String> {
    crate::schema().map_err(|e| e.1)?;
    for user in active_users(now_ms)? {
        let texts: Vec<String> = entries_of(user, None, 10)?
            .into_iter()
            .filter_map(|e| e.text.ok())
            .collect();
        let rows = pg::query(
            "SELECT module FROM users WHERE id = $1",
            &[Value::Int64(user)],
        )
        .map_err(|e| db(e).1)?;
        let module = rows
            .rows
            .first()
            .and_then(|r| r.first())
            .and_then(Value::as_text)
            .unwrap_or("0")
            .to_string();
        if let Some(next) = next_module(&module, &texts) {
            pg::execute(
                "UPDATE users SET module = $2 WHERE id = $1",
                &[Value::Int64(user), Value::Text(next.into())],
            )
            .map_err(|e| db(e).1)?;
            pg::execute(
                "INSERT INTO module_transitions (user_id, from_module, to_module, at_ms) VALUES ($1, $2, $3, $4)",
                &[Value::Int64(user), Value::Text(module), Value::Text(next.into()), Value::Int64(now_ms)],
            )
            .map_err(|e| db(e).1)?;
        }
    }
    Ok(())
}

/// The seed's palettes, by module; friction (an agitated last tag) overrides.
pub fn palette(module: &str, last_tag: &str) -> &'static str {
    if matches!(last_tag, "angry" | "anxious" | "frustrated" | "agitated") {
        return "desaturated tones, slight red warmth";
    }
    match module {
        "8" => "deep indigo, soft violet, midnight blue",
        "i" => "amber, warm gold, burnt orange",
        "G" => "silver-white, pale lavender, stark contrast",
        _ => "charcoal, muted slate, near-black",
    }
}

/// Hourly: every user's palette from their module and last emotion tag.
pub fn ambient_refresh() -> Result<(), String> {
    crate::schema().map_err(|e| e.1)?;
    let rows = pg::query(
        "SELECT u.id, u.module, coalesce((SELECT emotion_tag FROM journal_entries j WHERE j.user_id = u.id ORDER BY id DESC LIMIT 1), '') FROM users u",
        &[],
    )
    .map_err(|e| db(e).1)?;
    for row in &rows.rows {
        let (Some(id), Some(module), Some(tag)) =
            (row[0].as_i64(), row[1].as_text(), row[2].as_text())
        else {
            continue;
        };
        pg::execute(
            "UPDATE users SET palette = $2 WHERE id = $1",
            &[Value::Int64(id), Value::Text(palette(module, tag).into())],
        )
        .map_err(|e| db(e).1)?;
    }
    Ok(())
}

/// Daily at midnight: the day's planetary ruler (Chaldean weekdays) and the
/// Moon's phase (mean synodic month from the new moon of 6 January 2000).
pub fn planetary_update(now_ms: i64) -> Result<(), String> {
    crate::schema().map_err(|e| e.1)?;
    const RULERS: [&str; 7] = [
        "Sun", "Moon", "Mars", "Mercury", "Jupiter", "Venus", "Saturn",
    ];
    let days = now_ms.div_euclid(86_400_000);
    let ruler = RULERS[(days + 4).rem_euclid(7) as usize];
    let age = ((now_ms as f64 / 86_400_000.0 - 10_962.7597) % 29.530_588).rem_euclid(29.530_588);
    let phase = (age / 29.530_588 * 100.0).round() as i32;
    pg::execute(
        "INSERT INTO planetary_snapshots (day, ruler, moon_phase_pct) VALUES ($1, $2, $3)
         ON CONFLICT (day) DO UPDATE SET ruler = EXCLUDED.ruler, moon_phase_pct = EXCLUDED.moon_phase_pct",
        &[Value::Date(days as i32), Value::Text(ruler.into()), Value::Int32(phase)],
    )
    .map_err(|e| db(e).1)?;
    Ok(())
}

/// Weekly: ephemeral AI data goes after 30 days, transitions after a year.
pub fn data_cleanup(now_ms: i64) -> Result<(), String> {
    crate::schema().map_err(|e| e.1)?;
    pg::execute(
        "DELETE FROM patterns WHERE computed_ms < $1",
        &[Value::Int64(now_ms - 30 * 86_400_000)],
    )
    .map_err(|e| db(e).1)?;
    pg::execute(
        "DELETE FROM module_transitions WHERE at_ms < $1",
        &[Value::Int64(now_ms - 365 * 86_400_000)],
    )
    .map_err(|e| db(e).1)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_machine_moves_on_language() {
        let ego = vec!["I think my plan is mine and I want it for me".to_string()];
        assert_eq!(next_module("0", &ego), Some("i"));
        let paradox =
            vec!["the paradox: I want both stillness and motion, and yet I move".to_string()];
        assert_eq!(next_module("i", &paradox), Some("G"));
        let ambient = vec!["rain on the window, the kettle, the long afternoon light".to_string()];
        assert_eq!(next_module("G", &ambient), Some("8"));
        assert_eq!(next_module("0", &ambient), None);
        assert_eq!(palette("i", "calm"), "amber, warm gold, burnt orange");
        assert_eq!(
            palette("8", "anxious"),
            "desaturated tones, slight red warmth"
        );
    }
}
