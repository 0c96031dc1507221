//! Observer OS from its shipped manifest against a real PostgreSQL, OpenAI as
//! a loopback stub: the journal is ciphertext in the database and text through
//! the app, a tampered row fails alone, and the 6-hourly pattern analysis runs
//! as a timer whose outbound request carries no personal data.

use crate::{
    harness::{Host, shipped_manifest},
    postgres_server::PgServer,
    redis_server::RedisServer,
    stub::Stub,
};
use sqlx::{Connection as _, Row as _};
use std::time::{Duration, Instant};

const API: &str = "api.observeros.app";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

async fn login(host: &Host) -> String {
    let reply = host
        .request("POST", API, "/api/v1/auth/anonymous-login", vec![])
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    serde_json::from_slice::<serde_json::Value>(&reply.body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn call(
    host: &Host,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let reply = host
        .request_with(
            method,
            API,
            path,
            &[("authorization", &auth)],
            body.as_bytes().to_vec(),
        )
        .await;
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn observer_keeps_the_journal_sealed_and_sends_the_ai_no_personal_data() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let openai = Stub::start(|_| {
        (200, r#"{"choices":[{"message":{"role":"assistant","content":"A loop of restless evenings, then stillness."}}]}"#.into())
    });
    // The 6-hourly analysis every 2 s here.
    let manifest = shipped_manifest(
        "observer",
        "observer",
        &[
            (
                "allowed_hosts",
                format!("allowed_hosts = [\"{}\"]", openai.origin()),
            ),
            (
                "JOURNAL_KEY_ID",
                format!(
                    "JOURNAL_KEY_ID = \"1\"\nOPENAI_URL = \"{}\"",
                    openai.origin()
                ),
            ),
            ("every = \"6h\"", "every = \"2s\"".into()),
        ],
    );
    let start = |key: &str| {
        Host::up_full(
            &[("observer", manifest.clone())],
            &format!("redis_url = \"{}\"", redis.url()),
            &[
                ("ALORIG_POSTGRES_URL", &pg.admin_url()),
                ("OBSERVER_JOURNAL_KEY", key),
                ("OBSERVER_OPENAI_API_KEY", "openai-test-key"),
            ],
        )
    };
    let host = start(KEY);
    let (alice, bob) = (login(&host).await, login(&host).await);
    assert_eq!(
        call(&host, "GET", "/api/v1/journal/", "nope", "").await.0,
        401
    );

    let secret = "Marker quokka-umbra-7. I told Alice Brown at alice.brown@example.com, call me on +44 7700 900123.";
    let (status, first) = call(
        &host,
        "POST",
        "/api/v1/journal/",
        &alice,
        &serde_json::json!({"text": secret, "emotion_tag": "restless"}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let (_, second) = call(
        &host,
        "POST",
        "/api/v1/journal/",
        &alice,
        r#"{"text":"Evening walk, the river was loud and I was quiet.","emotion_tag":"calm"}"#,
    )
    .await;
    assert_eq!(
        call(
            &host,
            "POST",
            "/api/v1/journal/",
            &bob,
            r#"{"text":"Bob's own page.","emotion_tag":"calm"}"#
        )
        .await
        .0,
        201
    );

    // The database holds ciphertext only: no 8-byte piece of the text, the length text + 16 (the tag).
    let mut db = sqlx::PgConnection::connect(&pg.url_for("observer_db"))
        .await
        .unwrap();
    let row = sqlx::query("SELECT ciphertext, nonce FROM journal_entries WHERE id = $1")
        .bind(first["id"].as_i64().unwrap())
        .fetch_one(&mut db)
        .await
        .unwrap();
    let (cipher, nonce): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
    assert_eq!((cipher.len(), nonce.len()), (secret.len() + 16, 12));
    for piece in secret.as_bytes().windows(8) {
        assert!(
            !cipher.windows(8).any(|w| w == piece),
            "plaintext {:?} in the database",
            String::from_utf8_lossy(piece)
        );
    }
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM journal_entries t")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(
        !dump.contains("quokka") && !dump.contains("alice.brown") && !dump.contains("river"),
        "{dump}"
    );

    // Through the app: text again, each user only their own.
    let (_, mine) = call(&host, "GET", "/api/v1/journal/", &alice, "").await;
    let texts: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["Evening walk, the river was loud and I was quiet.", secret]
    );
    let (_, theirs) = call(&host, "GET", "/api/v1/journal/", &bob, "").await;
    assert_eq!(theirs.as_array().unwrap().len(), 1);

    // One flipped byte: that entry alone cannot be opened.
    sqlx::query("UPDATE journal_entries SET ciphertext = set_byte(ciphertext, 3, get_byte(ciphertext, 3) # 1) WHERE id = $1")
        .bind(first["id"].as_i64().unwrap()).execute(&mut db).await.unwrap();
    let (status, after) = call(&host, "GET", "/api/v1/journal/", &alice, "").await;
    assert_eq!(status, 200);
    let entries = after.as_array().unwrap();
    assert_eq!(entries[0]["id"], second["id"]);
    assert_eq!(
        entries[0]["text"],
        "Evening walk, the river was loud and I was quiet."
    );
    assert!(
        entries[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot be decrypted"),
        "{after}"
    );
    assert!(entries[1].get("text").is_none());

    // The pattern analysis timer: OpenAI hears anonymized snippets, nothing that names anyone.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !openai
        .requests()
        .iter()
        .any(|r| r.body.contains("river was loud"))
    {
        if Instant::now() > deadline {
            let metrics = host.metrics().await;
            let lines: Vec<&str> = metrics
                .lines()
                .filter(|l| l.contains("timer") || l.contains("outbound") || l.contains("job"))
                .collect();
            panic!(
                "the analysis timer made no AI call with the entries: {}\n{}",
                host.log(),
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for asked in openai.requests() {
        assert_eq!(
            (asked.method.as_str(), asked.path.as_str()),
            ("POST", "/v1/chat/completions")
        );
        assert_eq!(
            asked.header("authorization"),
            Some("Bearer openai-test-key")
        );
        for personal in [
            "Alice",
            "Brown",
            "alice.brown",
            "example.com",
            "7700",
            "900123",
            &alice,
            &bob,
        ] {
            assert!(
                !asked.body.contains(personal),
                "{personal:?} reached the AI: {}",
                asked.body
            );
        }
    }
    let body = &openai.requests().last().unwrap().body.clone();
    let user_id: i64 = sqlx::query_scalar("SELECT user_id FROM journal_entries WHERE id = $1")
        .bind(second["id"].as_i64().unwrap())
        .fetch_one(&mut db)
        .await
        .unwrap();
    let request: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        request.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["messages", "model"],
        "no field beyond the model and the messages"
    );
    assert!(
        !body.contains(&format!("\"{user_id}\"")) && !body.contains("user_id"),
        "{body}"
    );
    // The summary is sealed too, and opens through the app.
    let summary: Vec<u8> = loop {
        if let Some(row) = sqlx::query("SELECT summary FROM patterns WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut db)
            .await
            .unwrap()
        {
            break row.get(0);
        }
        assert!(Instant::now() < deadline, "no pattern stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!String::from_utf8_lossy(&summary).contains("restless"));
    let (_, patterns) = call(&host, "GET", "/api/v1/patterns/", &alice, "").await;
    assert_eq!(
        patterns[0]["summary"], "A loop of restless evenings, then stillness.",
        "{patterns}"
    );
    host.kill();

    // Another key: nothing opens (the secret, not the database, holds the journal).
    let other = start(&KEY.replace("00", "ff"));
    let (_, unreadable) = call(&other, "GET", "/api/v1/journal/", &alice, "").await;
    assert!(
        unreadable.as_array().unwrap().iter().all(|e| e["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("cannot be decrypted"))),
        "{unreadable}"
    );
    let (_, gone) = call(&other, "DELETE", "/api/v1/journal/delete-all", &alice, "").await;
    assert_eq!(gone["deleted"], 2);
    assert_eq!(
        call(&other, "GET", "/api/v1/journal/", &alice, "")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        0
    );
}
