//! The AI call: OpenAI chat completions (003 "External Services": OpenAI GPT),
//! the platform key from the `OPENAI_API_KEY` secret. `AI_BASE_URL` (default
//! `https://api.openai.com`) and `AI_MODEL` come from the manifest's `[env]`.

use guest_kit::outbound;
use serde_json::{Value as Json, json};

fn env(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn prompt(action: &str, topic: &str, words: i64) -> String {
    match action {
        "generate_content" => format!(
            "Write a blog article of about {words} words on: {topic}. First line: the title."
        ),
        "auto_cluster" => format!("Group these keywords into topic clusters: {topic}"),
        "generate_ideas" => format!("List article ideas for the topic cluster: {topic}"),
        "optimize_content" => {
            format!("Improve this article for search, keeping its meaning: {topic}")
        }
        other => format!("{other}: {topic}"),
    }
}

/// One completion; answers the text.
pub fn complete(action: &str, topic: &str, words: i64) -> Result<String, String> {
    let url = format!(
        "{}/v1/chat/completions",
        env("AI_BASE_URL", "https://api.openai.com").trim_end_matches('/')
    );
    let body = json!({
        "model": env("AI_MODEL", "gpt-4o-mini"),
        "messages": [
            {"role": "system", "content": "You are IGNY8's content engine."},
            {"role": "user", "content": prompt(action, topic, words)},
        ],
    })
    .to_string();
    let auth = format!("Bearer {}", env("OPENAI_API_KEY", ""));
    let response = outbound::send(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.as_bytes(),
    )?;
    if response.status != 200 {
        return Err(format!("the AI answered {} for {url}", response.status));
    }
    let reply: Json = serde_json::from_slice(&response.body)
        .map_err(|e| format!("the AI's answer is not JSON: {e}"))?;
    reply
        .pointer("/choices/0/message/content")
        .and_then(Json::as_str)
        .map(str::to_string)
        .ok_or_else(|| "the AI's answer has no choices[0].message.content".to_string())
}
