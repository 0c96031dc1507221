//! Psydge from its shipped manifest against real PostgreSQL and Redis, with
//! MetaApi and Claude as loopback stubs: the discipline engine end to end —
//! violation levels 1 → 4 and the session lock, the log and patterns in
//! PostgreSQL, the live feed to the user's browsers only, the 5-second
//! position sync, and `session_end` scoring with the seed's weights, then the
//! AI debrief as a job.

use crate::{
    harness::{Host, shipped_manifest},
    postgres_server::PgServer,
    redis_server::RedisServer,
    stub::Stub,
};
use futures::StreamExt as _;
use sqlx::{Connection as _, Row as _};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const API: &str = "api.psydge.com";
const SECRET: &str = "ws-test-secret";

fn token(user: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(user.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn browser(
    host: &Host,
    user: &str,
    token: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{}/?user={user}&token={token}", host.ingress)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("host", "ws.psydge.com".parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// The next JSON message of `kind` within `limit`; the others are skipped
/// (and kept in `skipped`, when given).
async fn next_of(ws: &mut Ws, kind: &str, limit: Duration) -> serde_json::Value {
    next_keeping(ws, kind, limit, &mut Vec::new()).await
}

async fn next_keeping(
    ws: &mut Ws,
    kind: &str,
    limit: Duration,
    skipped: &mut Vec<serde_json::Value>,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                if message["type"] == kind {
                    return message;
                }
                skipped.push(message);
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no {kind} message within {limit:?}: {other:?}"),
        }
    }
}

/// The app's shipped manifest with the stubs' origins, a session window open
/// now (any day), the secrets from the test's environment, and `edits`.
fn psydge(metaapi: &Stub, claude: &Stub, edits: &[(&str, String)]) -> String {
    let mut all: Vec<(&str, String)> = edits.to_vec();
    all.extend([
        (
            "allowed_hosts",
            format!(
                "allowed_hosts = [\"{}\", \"{}\"]",
                metaapi.origin(),
                claude.origin()
            ),
        ),
        (
            "SESSIONS",
            "SESSIONS = \"UTC 00:00-24:00 daily\"".to_string(),
        ),
        (
            "METAAPI_URL",
            format!(
                "METAAPI_URL = \"{}\"\nANTHROPIC_URL = \"{}\"",
                metaapi.origin(),
                claude.origin()
            ),
        ),
    ]);
    shipped_manifest("psydge", "psydge", &all)
}

fn start(pg: &PgServer, redis: &RedisServer, manifest: String) -> Host {
    Host::up_full(
        &[("psydge", manifest)],
        &format!("redis_url = \"{}\"", redis.url()),
        &[
            ("ALORIG_POSTGRES_URL", &pg.admin_url()),
            ("PSYDGE_WS_TOKEN_SECRET", SECRET),
            ("PSYDGE_METAAPI_TOKEN", "metaapi-test-token"),
            ("PSYDGE_ANTHROPIC_API_KEY", "claude-test-key"),
        ],
    )
}

async fn attempt(host: &Host, user: &str, risk_pct: f64) -> (u16, serde_json::Value) {
    let body = format!("{{\"symbol\":\"EURUSD\",\"risk_pct\":{risk_pct}}}");
    let reply = host
        .request(
            "POST",
            API,
            &format!("/api/v1/trades/{user}"),
            body.into_bytes(),
        )
        .await;
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("{}", reply.text())),
    )
}

const OPEN: &str = "buffer_go=1\nbuffer_whitelist=1\nbuffer_session=1\nbuffer_equity=1\nbuffer_cooldown=1\nbuffer_risk=1\n";

async fn wait_for(host: &Host, what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            let metrics = host.metrics().await;
            let lines: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("timer_runs")
                            || l.contains("outbound")
                            || l.contains("job_runs")
                            || l.contains("jobs{"))
                })
                .collect();
            let (_, jobs, _) = host.cli(&["jobs", "psydge"]);
            panic!(
                "{what} did not happen within {limit:?}; host log:\n{}\n{}\n{jobs}",
                host.log(),
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn psydge_climbs_violation_levels_locks_the_session_pushes_live_and_scores_the_session() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let metaapi = Stub::start(|seen| {
        match seen.path.as_str() {
        "/users/current/accounts/acc-42/positions" => (
            200,
            r#"[{"id":"p1","symbol":"EURUSD","type":"POSITION_TYPE_BUY","volume":0.1,"openPrice":1.08,"currentPrice":1.08123,"profit":12.3}]"#.into(),
        ),
        _ => (404, "{}".into()),
    }
    });
    let claude = Stub::start(|_| {
        (200, r#"{"content":[{"type":"text","text":"Four oversized attempts, then the lock held. Size down."}]}"#.into())
    });
    // The session ends every 2 s here instead of at 17:00 New York.
    let manifest = psydge(
        &metaapi,
        &claude,
        &[
            (
                "cron     = \"0 17 * * MON-FRI\"",
                "every    = \"2s\"".into(),
            ),
            ("timezone = \"America/New_York\"", String::new()),
        ],
    );
    let host = start(&pg, &redis, manifest);

    assert_eq!(
        host.request("PUT", API, "/api/v1/gate/42", OPEN.into())
            .await
            .status,
        204
    );
    assert_eq!(
        host.request("PUT", API, "/api/v1/accounts/42", b"acc-42".to_vec())
            .await
            .status,
        204
    );
    // Without the right token, no connection.
    assert!(browser(&host, "42", &token("7")).await.is_err());
    let mut mine = browser(&host, "42", &token("42")).await.expect("upgrade");
    let mut theirs = browser(&host, "7", &token("7")).await.expect("upgrade");
    let mut skipped = Vec::new();
    let first = next_keeping(&mut mine, "gate", Duration::from_secs(5), &mut skipped).await;
    assert_eq!(first["allowed"], true, "{first}");
    assert_eq!(
        next_of(&mut theirs, "gate", Duration::from_secs(5)).await["user"],
        "7"
    );

    // Four attempts over the 1.0 % risk rule climb the levels; each reaches 42's browser.
    let responses = ["Alert", "Overlay", "Blackout", "Session Lock"];
    for level in 1..=4 {
        let (status, body) = attempt(&host, "42", 1.5).await;
        assert_eq!(
            (status, body["level"].as_i64()),
            (403, Some(level)),
            "{body}"
        );
        assert_eq!(body["response"], responses[level as usize - 1]);
        assert_eq!(
            body["reasons"],
            serde_json::json!(["risk 1.5% is not within (0, 1]%"]),
            "{body}"
        );
        let pushed =
            next_keeping(&mut mine, "violation", Duration::from_secs(5), &mut skipped).await;
        assert_eq!(
            (pushed["level"].as_i64(), &pushed["codes"]),
            (Some(level), &serde_json::json!(["RISK_EXCEEDED"])),
            "{pushed}"
        );
    }
    // Then even a proper trade is refused: the session is locked.
    let (status, body) = attempt(&host, "42", 0.8).await;
    assert_eq!(
        (status, &body["reasons"]),
        (403, &serde_json::json!(["session locked"])),
        "{body}"
    );
    let locked = next_keeping(&mut mine, "gate", Duration::from_secs(5), &mut skipped).await;
    // (a gate status follows each violation; the last one says locked)
    let mut last = locked;
    while last["reasons"] != serde_json::json!(["session locked"]) {
        last = next_keeping(&mut mine, "gate", Duration::from_secs(5), &mut skipped).await;
    }
    assert_eq!(last["allowed"], false);
    // The lock lasts to the trading day's end (17:00 New York), not 12 h.
    let mut db2 = redis.connection(2);
    let lock_ttl: i64 = ::redis::cmd("PTTL")
        .arg("psydge:lock:42")
        .query(&mut db2)
        .unwrap();
    let day_end = {
        use chrono::{Datelike as _, TimeZone as _};
        let ny = chrono::Utc::now().with_timezone(&chrono_tz::America::New_York);
        let mut end = chrono_tz::America::New_York
            .with_ymd_and_hms(ny.year(), ny.month(), ny.day(), 17, 0, 0)
            .unwrap();
        if end <= ny {
            end += chrono::Duration::days(1);
        }
        end.timestamp_millis() - chrono::Utc::now().timestamp_millis()
    };
    assert!(
        (lock_ttl - day_end).abs() < 120_000,
        "lock TTL {lock_ttl} ms, day end in {day_end} ms"
    );

    // The log and the patterns in PostgreSQL.
    let mut db = sqlx::PgConnection::connect(&pg.url_for("psydge_db"))
        .await
        .unwrap();
    let levels: Vec<i16> =
        sqlx::query("SELECT level FROM violations WHERE user_id = '42' ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(levels, [1, 2, 3, 4]);
    let snapshot: serde_json::Value = sqlx::query(
        "SELECT gate_state_snapshot FROM violations WHERE level = 4 AND user_id = '42'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap()
    .get(0);
    assert_eq!(snapshot["buffers"]["buffer_risk"], true, "{snapshot}");
    wait_for(&host, "the pattern job", Duration::from_secs(15), async || {
        sqlx::query("SELECT occurrence_count FROM behavioral_patterns WHERE user_id = '42' AND pattern_type = 'RISK_EXCEEDED'")
            .fetch_optional(&mut db).await.unwrap().map(|r| r.get::<i32, _>(0)) == Some(4)
    }).await;

    // The 5-second MetaApi sync: positions to 42's browser, prices with the seed's 5 s TTL.
    let positions = next_keeping(
        &mut mine,
        "positions",
        Duration::from_secs(12),
        &mut skipped,
    )
    .await;
    assert_eq!(positions["positions"][0]["symbol"], "EURUSD", "{positions}");
    let price_ttl: i64 = ::redis::cmd("PTTL")
        .arg("psydge:prices:EURUSD")
        .query(&mut db2)
        .unwrap();
    assert!((0..=5000).contains(&price_ttl), "{price_ttl}");
    let sync = metaapi.requests();
    assert!(
        sync.iter()
            .all(|r| r.header("auth-token") == Some("metaapi-test-token")),
        "{sync:?}"
    );

    // session_end (every 2 s here): the score of all five attempts, with the seed's
    // weights; then the debrief through Claude.
    let mut breakdown = serde_json::Value::Null;
    let mut score = 0.0;
    wait_for(
        &host,
        "session_end's score",
        Duration::from_secs(15),
        async || match sqlx::query(
            "SELECT score, metric_breakdown FROM discipline_scores WHERE user_id = '42'",
        )
        .fetch_optional(&mut db)
        .await
        .unwrap()
        {
            Some(row) => {
                (score, breakdown) = (row.get(0), row.get(1));
                breakdown["attempts"] == 5
            }
            None => false,
        },
    )
    .await;
    let weights: Vec<(&str, i64)> = [
        "rule_compliance",
        "session_discipline",
        "risk_management",
        "patience",
        "post_win_control",
        "cooldown_respect",
        "revenge_prevention",
    ]
    .iter()
    .map(|k| (*k, breakdown[k]["weight"].as_i64().unwrap_or(-1)))
    .collect();
    assert_eq!(
        weights,
        [
            ("rule_compliance", 25),
            ("session_discipline", 15),
            ("risk_management", 15),
            ("patience", 15),
            ("post_win_control", 15),
            ("cooldown_respect", 10),
            ("revenge_prevention", 5),
        ],
        "{breakdown}"
    );
    let points: f64 = weights
        .iter()
        .map(|(k, _)| breakdown[k]["points"].as_f64().unwrap())
        .sum();
    assert!((points - score).abs() < 0.01, "{score} vs {breakdown}");
    // 5 attempts: none allowed, 4 over the risk limit, 4 right after a refusal, 1 past the lock.
    assert_eq!(breakdown["attempts"], 5);
    assert_eq!(breakdown["rule_compliance"]["points"], 0.0);
    assert_eq!(breakdown["risk_management"]["ratio"], 0.2);
    assert_eq!(breakdown["revenge_prevention"]["ratio"], 0.8);
    assert!(
        (score - 50.0).abs() < 0.01,
        "{score}: 0 + 15 + 3 + 3 + 15 + 10 + 4"
    );
    wait_for(&host, "the debrief job", Duration::from_secs(15), async || {
        sqlx::query("SELECT count(*) FROM ai_interactions WHERE user_id = '42' AND response LIKE 'Four oversized%'")
            .fetch_one(&mut db).await.unwrap().get::<i64, _>(0) >= 1
    }).await;
    let asked = claude.requests();
    assert_eq!(asked[0].header("x-api-key"), Some("claude-test-key"));
    assert!(
        asked[0].path == "/v1/messages" && asked[0].body.contains("rule_compliance"),
        "{:?}",
        asked[0]
    );
    let debrief = match skipped.iter().find(|m| m["type"] == "ai_message") {
        Some(m) => m.clone(),
        None => next_of(&mut mine, "ai_message", Duration::from_secs(10)).await,
    };
    assert!(
        debrief["text"]
            .as_str()
            .unwrap()
            .starts_with("Four oversized")
    );

    // User 7 saw none of it: only their own gate (and no positions: no account).
    let _ = tokio::time::timeout(Duration::from_millis(300), theirs.next())
        .await
        .map(|m| {
            let m = m.unwrap().unwrap();
            assert!(
                !m.to_text().unwrap().contains("\"42\""),
                "7 got 42's message: {m:?}"
            );
        });
    assert!(redis_keys(&redis).iter().all(|k| k.starts_with("psydge:")));
}

fn redis_keys(redis: &RedisServer) -> Vec<String> {
    ::redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection(2))
        .unwrap()
}

/// The locked rules on `may-trade` (no record): cooldown after a loss, the
/// −2R loss lock, outside the session windows.
#[tokio::test(flavor = "multi_thread")]
async fn psydge_gate_applies_the_locked_rules() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let (metaapi, claude) = (
        Stub::start(|_| (404, "{}".into())),
        Stub::start(|_| (500, "{}".into())),
    );
    let host = start(
        &pg,
        &redis,
        psydge(
            &metaapi,
            &claude,
            &[("COOLDOWN_MS", "COOLDOWN_MS = \"1500\"".into())],
        ),
    );
    let may = async |user: &str, risk: &str| {
        host.get(API, &format!("/api/v1/may-trade/{user}?risk_pct={risk}"))
            .await
    };

    let closed = may("42", "0.8").await;
    assert_eq!(closed.status, 403);
    for buffer in [
        "buffer_go",
        "buffer_whitelist",
        "buffer_session",
        "buffer_equity",
        "buffer_cooldown",
        "buffer_risk",
    ] {
        assert!(
            closed.text().contains(&format!("{buffer} closed")),
            "{}",
            closed.text()
        );
    }
    assert_eq!(
        host.request("PUT", API, "/api/v1/gate/42", OPEN.into())
            .await
            .status,
        204
    );
    assert_eq!(
        (may("42", "0.8").await.status, may("42", "0.8").await.text()),
        (200, "{\"allowed\":true}".to_string())
    );
    assert_eq!(
        may("7", "0.8").await.status,
        403,
        "another user's gate is their own"
    );

    assert_eq!(
        host.request("POST", API, "/api/v1/result/42?r=-1", vec![])
            .await
            .text(),
        "{\"session_r\":-1.0}"
    );
    let cooling = may("42", "0.8").await.text();
    assert!(
        cooling.contains("cooldown: 2 s left") || cooling.contains("cooldown: 1 s left"),
        "{cooling}"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(may("42", "0.8").await.status, 200);
    assert_eq!(
        host.request("POST", API, "/api/v1/result/42?r=-1.25", vec![])
            .await
            .text(),
        "{\"session_r\":-2.25}"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        may("42", "0.8").await.text(),
        "{\"allowed\":false,\"reasons\":[\"session locked\",\"loss lock reached\"]}"
    );
    let mut db2 = redis.connection(2);
    assert_eq!(
        ::redis::Commands::get::<_, i64>(&mut db2, "psydge:session_r:42").unwrap(),
        -225
    );
    drop(host);

    // A session window that is never open now: the clock closes the gate.
    let now = chrono::Utc::now();
    let shut = format!(
        "SESSIONS = \"UTC {}-{} daily\"",
        (now + chrono::Duration::hours(2)).format("%H:00"),
        (now + chrono::Duration::hours(3)).format("%H:00")
    );
    let shut = if shut.contains("-00:00") {
        "SESSIONS = \"UTC 00:00-00:00 daily\"".to_string()
    } else {
        shut
    };
    let host = start(
        &pg,
        &redis,
        psydge(&metaapi, &claude, &[("SESSIONS", shut)]),
    );
    assert_eq!(
        host.request("PUT", API, "/api/v1/gate/9", OPEN.into())
            .await
            .status,
        204
    );
    let outside = host
        .get(API, "/api/v1/may-trade/9?risk_pct=0.5")
        .await
        .text();
    assert_eq!(
        outside,
        "{\"allowed\":false,\"reasons\":[\"outside the London and New York sessions\"]}"
    );
}
