//! AstroTiming's Developer API from its shipped manifest, against real
//! PostgreSQL and Redis: the Timing Quality Score of a known moment factor by
//! factor, the forward search, and a key's daily limit (429).

use crate::{
    harness::{Host, shipped_manifest},
    postgres_server::PgServer,
    redis_server::RedisServer,
};

const SITE: &str = "api.astrotiming.com";
const ADMIN: &str = "admin-test-token";

async fn call(host: &Host, path: &str, key: &str) -> (u16, serde_json::Value) {
    let reply = host
        .request_with("GET", SITE, path, &[("x-api-key", key)], vec![])
        .await;
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("{path}: {}", reply.text())),
    )
}

async fn issue(host: &Host, query: &str) -> String {
    let reply = host
        .request_with(
            "POST",
            SITE,
            &format!("/v1/keys?{query}"),
            &[("authorization", &format!("Bearer {ADMIN}"))],
            vec![],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    body["key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn astrotiming_scores_a_known_moment_searches_forward_and_limits_each_key() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let host = Host::up_full(
        &[(
            "astrotiming",
            shipped_manifest("astrotiming", "astrotiming", &[]),
        )],
        &format!("redis_url = \"{}\"", redis.url()),
        &[
            ("ALORIG_POSTGRES_URL", &pg.admin_url()),
            ("ASTROTIMING_ADMIN_TOKEN", ADMIN),
        ],
    );
    let refused = host
        .request_with(
            "POST",
            SITE,
            "/v1/keys?tier=developer",
            &[("authorization", "Bearer wrong")],
            vec![],
        )
        .await;
    assert_eq!(refused.status, 401);
    let key = issue(&host, "tier=developer").await;
    assert_eq!(call(&host, "/v1/activities", "at_nope").await.0, 401);

    // Lahore, Wednesday 20 March 2024, 01:36 UTC: the first hour after sunrise
    // (01:06 UTC), Mercury's, on Mercury's day. Positions then (PyEphem): Mercury
    // 17.4° Aries (peregrine, direct), Moon 3.1° Leo, 123° from the Sun (waxing,
    // no aspect to Mercury); Venus 340°, Jupiter 45°, Mars 328°, Saturn 342°: no
    // major aspect to Mercury within 6°.
    let at = chrono::DateTime::parse_from_rfc3339("2024-03-20T01:36:00Z")
        .unwrap()
        .timestamp_millis();
    let (status, tqs) = call(
        &host,
        &format!("/v1/tqs?activity=commerce&lat=31.5204&lon=74.3587&at_ms={at}"),
        &key,
    )
    .await;
    assert_eq!(status, 200, "{tqs}");
    assert_eq!(
        (
            &tqs["planetary_hour"]["planet"],
            &tqs["planetary_hour"]["hour"],
            &tqs["planetary_hour"]["day_ruler"]
        ),
        (&"Mercury".into(), &1.into(), &"Mercury".into()),
        "{tqs}"
    );
    let b = &tqs["breakdown"];
    let points: Vec<(&str, f64, f64)> = [
        "hour_ruler_match",
        "day_ruler_harmony",
        "dignity",
        "lunar",
        "aspects",
        "retrograde",
    ]
    .iter()
    .map(|k| {
        (
            *k,
            b[k]["weight"].as_f64().unwrap(),
            b[k]["points"].as_f64().unwrap(),
        )
    })
    .collect();
    assert_eq!(
        points,
        [
            ("hour_ruler_match", 30.0, 30.0),
            ("day_ruler_harmony", 15.0, 15.0),
            ("dignity", 15.0, 7.5),
            ("lunar", 15.0, 11.25),
            ("aspects", 15.0, 7.5),
            ("retrograde", 10.0, 10.0),
        ],
        "{tqs}"
    );
    assert_eq!(
        (tqs["score"].as_f64(), tqs["band"].as_str()),
        (Some(81.25), Some("Excellent"))
    );
    assert_eq!(b["details"]["moon_sign"], "Leo");
    // Three weeks later Mercury is retrograde (1–25 April 2024): the factor drops to 0.
    let later = at + 21 * 86_400_000;
    let (_, retro) = call(
        &host,
        &format!("/v1/tqs?activity=writing&lat=31.5204&lon=74.3587&at_ms={later}"),
        &key,
    )
    .await;
    assert_eq!(retro["breakdown"]["retrograde"]["points"], 0.0, "{retro}");

    // Forward search over the week from Monday 18 March: 168 hours scored, the
    // best first, and the best hour for commerce is one of Mercury's.
    let from = chrono::DateTime::parse_from_rfc3339("2024-03-18T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    let (status, found) = call(
        &host,
        &format!(
            "/v1/search?activity=commerce&lat=31.5204&lon=74.3587&from_ms={from}&days=7&top=5"
        ),
        &key,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["hours_scanned"], 168, "{found}");
    let best = found["best"].as_array().unwrap();
    assert_eq!(best.len(), 5);
    assert_eq!(best[0]["planetary_hour"]["planet"], "Mercury", "{found}");
    let scores: Vec<f64> = best.iter().map(|w| w["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(
        best.iter()
            .all(|w| w["scored_at_ms"].as_i64().unwrap() >= from)
    );

    // The queries are logged with score and breakdown.
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url_for("astrotiming_db"))
        .await
        .unwrap();
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM timing_queries WHERE tqs_score IS NOT NULL AND breakdown ? 'lunar'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(logged, 3);

    // A key with a limit of 3 a day: the fourth call is 429; another key is unaffected.
    let small = issue(&host, "tier=free&rate_limit=3").await;
    for _ in 0..3 {
        assert_eq!(call(&host, "/v1/activities", &small).await.0, 200);
    }
    let (status, body) = call(&host, "/v1/activities", &small).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("rate limit of 3 requests a day"),
        "{body}"
    );
    assert_eq!(call(&host, "/v1/activities", &key).await.0, 200);
    // Polar day: equal hours around solar noon, said so.
    let (_, tromso) = call(
        &host,
        "/v1/tqs?activity=travel&lat=69.6492&lon=18.9553&at_ms=1718971200000",
        &key,
    )
    .await;
    assert_eq!(tromso["planetary_hour"]["polar"], "polar day", "{tromso}");
}
