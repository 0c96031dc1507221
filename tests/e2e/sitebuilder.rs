//! Site Builder (components/sitebuilder) from its shipped manifest, against
//! real PostgreSQL and Redis: two tenants' sites told apart by `Host` under
//! `*.sites.alorig.com`, a new version published by a job and switched
//! atomically (no reader ever sees half of it), rollback, and 404s for unknown
//! and nested subdomains and for paths outside `/builder` on the API host.

use crate::{
    harness::Host,
    postgres_server::PgServer,
    redis_server::RedisServer,
    shipped_apps::sitebuilder::{TOKEN, host as sitebuilder_host},
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn api(host: &Host, method: &str, path: &str, body: Value) -> (u16, Value) {
    let reply = host
        .request_with(
            method,
            "api.alorig.com",
            path,
            &[("authorization", format!("Bearer {TOKEN}"))],
            body.to_string().into_bytes(),
        )
        .await;
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sitebuilder_serves_tenants_by_host_and_publishes_versions_atomically() {
    let (pg, redis) = (PgServer::start(), RedisServer::start());
    let host = sitebuilder_host(&pg, &redis);
    assert_eq!(
        host.request("POST", "api.alorig.com", "/builder/demo", Vec::new())
            .await
            .status,
        401
    );
    assert_eq!(
        api(&host, "POST", "/builder/demo", Value::Null).await.0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.get("beta.sites.alorig.com", "/").await.status != 200
        || host.get("acme.sites.alorig.com", "/").await.status != 200
    {
        assert!(
            Instant::now() < deadline,
            "the demo builds never went live\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acme = host.get("acme.sites.alorig.com", "/").await.text();
    let beta = host.get("beta.sites.alorig.com", "/").await.text();
    assert!(
        acme.contains("<h1>Acme Bakery</h1>") && !acme.contains("Beta"),
        "{acme}"
    );
    assert!(
        beta.contains("<h1>Beta Studio</h1>") && !beta.contains("Acme"),
        "{beta}"
    );
    assert!(
        host.get("acme.sites.alorig.com", "/contact")
            .await
            .text()
            .contains("hello@acme.example")
    );
    assert!(
        host.get("Beta.Sites.Alorig.com:443", "/contact")
            .await
            .text()
            .contains("hello@beta.example"),
        "host case and port"
    );
    for (name, path) in [
        ("nobody.sites.alorig.com", "/"),
        ("x.acme.sites.alorig.com", "/"),
        ("acme.sites.alorig.com", "/missing"),
        ("api.alorig.com", "/other"),
    ] {
        assert_eq!(host.get(name, path).await.status, 404, "{name}{path}");
    }

    // Version 2 of acme: a changed home page and a new page, published by a job.
    let pages = json!({
        "/": [{"type": "hero", "title": "Acme Bakery — now open Sundays", "subtitle": "v2"}],
        "/pricing": [{"type": "text", "body": "Loaf: Rs. 250"}],
        "/contact": [{"type": "text", "body": "Write to hello@acme.example"}],
    });
    let (status, draft) = api(
        &host,
        "PUT",
        "/builder/sites/1/draft",
        json!({"pages": pages}),
    )
    .await;
    assert_eq!(
        (status, draft["version"].as_i64()),
        (201, Some(2)),
        "{draft}"
    );
    assert!(
        !host
            .get("acme.sites.alorig.com", "/")
            .await
            .text()
            .contains("Sundays"),
        "a draft is not live"
    );
    let (status, deployed) = api(&host, "POST", "/builder/sites/1/deploy", json!({})).await;
    assert_eq!(status, 202, "{deployed}");
    // While the job runs, every reader sees all of v1 or all of v2.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut seen_v1, mut seen_v2) = (0, 0);
    loop {
        let home = host.get("acme.sites.alorig.com", "/").await.text();
        let pricing = host.get("acme.sites.alorig.com", "/pricing").await.status;
        if home.contains("Sundays") {
            assert_eq!(pricing, 200, "v2's home is live, so its other pages are");
            seen_v2 += 1;
            if seen_v2 > 3 {
                break;
            }
        } else {
            assert!(home.contains("<h1>Acme Bakery</h1>"), "{home}");
            seen_v1 += 1;
        }
        assert!(Instant::now() < deadline, "v2 never went live");
    }
    eprintln!("during the publish: {seen_v1} reads of v1, then v2");
    assert_eq!(
        host.get("beta.sites.alorig.com", "/").await.text(),
        beta,
        "the other tenant is unchanged"
    );

    // Rollback: v1 again, at once, without a build.
    let (status, back) = api(&host, "POST", "/builder/sites/1/rollback", Value::Null).await;
    assert_eq!(
        (status, back["version"].as_i64(), back["from"].as_i64()),
        (200, Some(1), Some(2)),
        "{back}"
    );
    assert!(
        host.get("acme.sites.alorig.com", "/")
            .await
            .text()
            .contains("<h1>Acme Bakery</h1>")
    );
    assert_eq!(
        host.get("acme.sites.alorig.com", "/pricing").await.status,
        404
    );
    let (_, info) = api(&host, "GET", "/builder/sites/1", Value::Null).await;
    let history: Vec<(i64, String)> = info["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["version"].as_i64().unwrap(),
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["status"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            (1, "deploy/live".into()),
            (2, "deploy/live".into()),
            (1, "rollback/live".into())
        ]
    );
    assert_eq!(info["current_version"].as_i64(), Some(1));
    let (status, _) = api(
        &host,
        "PUT",
        "/builder/sites/1/draft",
        json!({"pages": {"/x": []}}),
    )
    .await;
    assert_eq!(status, 400, "a draft without a home page is refused");
}
