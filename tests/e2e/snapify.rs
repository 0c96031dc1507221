//! Snapify (components/snapify) from its shipped manifest, against real
//! PostgreSQL and Redis and a stub WhatsApp Graph API: the seeded store page in
//! Rs., cheapest first, under 200 000 bytes; a misspelled search; the product's
//! JSON-LD; a Pro store on its own domain (routing and Caddy's TLS question);
//! a cache hit, then a price change never served stale; the Free plan's 16th
//! product refused; the WhatsApp webhook's verification, signature, retries
//! (one job per message id) and the onboarding state machine.

use crate::{
    harness::{Host, Reply},
    postgres_server::PgServer,
    redis_server::RedisServer,
    shipped_apps::snapify::{APP_SECRET, TOKEN, host as snapify_host},
    stub::Stub,
};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sqlx::{Connection as _, Row as _};
use std::time::{Duration, Instant};

async fn api(host: &Host, method: &str, path: &str, body: Value) -> Reply {
    host.request_with(
        method,
        "api.snapify.pk",
        path,
        &[("authorization", format!("Bearer {TOKEN}"))],
        body.to_string().into_bytes(),
    )
    .await
}

async fn scalar(pg: &PgServer, sql: &str) -> String {
    let mut conn = sqlx::PgConnection::connect(&pg.url_for("snapify_db"))
        .await
        .unwrap();
    let row = sqlx::query(sql).fetch_one(&mut conn).await.unwrap();
    row.try_get::<Option<String>, _>(0)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn cache(reply: &Reply) -> &str {
    reply
        .headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn signed(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn delivery(id: &str, from: &str, text: &str) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": "1055"},
        "messages": [{"id": id, "from": from, "type": "text", "text": {"body": text}, "timestamp": "1764640000"}]}}]}]})
    .to_string()
    .into_bytes()
}

async fn wait_for(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn snapify_serves_cached_store_pages_that_are_never_stale() {
    let (pg, redis, graph) = (
        PgServer::start(),
        RedisServer::start(),
        Stub::start(|_| (200, "{}".into())),
    );
    let host = snapify_host(&pg, &redis, &graph);
    assert_eq!(
        host.request("POST", "api.snapify.pk", "/v1/demo", Vec::new())
            .await
            .status,
        401,
        "the API needs its token"
    );
    assert_eq!(
        api(&host, "POST", "/v1/demo", Value::Null).await.status,
        200
    );

    let first = host.get("snapify.pk", "/silk-house").await;
    assert_eq!(
        (first.status, cache(&first)),
        (200, "miss"),
        "{}",
        first.text()
    );
    let page = first.text();
    assert!(first.body.len() < 200_000, "{} bytes", first.body.len());
    let order: Vec<usize> = [
        "Chiffon Dupatta",
        "Silk Dupatta",
        "Cotton Kurta",
        "Embroidered Lawn Suit",
        "Bridal Lehenga",
    ]
    .iter()
    .map(|p| {
        page.find(p)
            .unwrap_or_else(|| panic!("{p} missing from {page}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "cheapest first: {order:?}"
    );
    assert!(page.contains("Rs. 1,800") && page.contains("Rs. 85,000") && !page.contains('€'));
    assert!(
        !page.contains("Running Sneakers"),
        "another store's products stay out"
    );
    let second = host.get("snapify.pk", "/silk-house").await;
    assert_eq!((cache(&second), second.text()), ("hit", page.clone()));
    let mut conn = redis.connection(3);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("snapify:html:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");

    // The product page with its Schema.org JSON-LD; a category page.
    let product = host
        .get("snapify.pk", "/silk-house/silk-dupatta")
        .await
        .text();
    let ld = product
        .split("<script type=\"application/ld+json\">")
        .nth(1)
        .and_then(|s| s.split("</script>").next())
        .unwrap();
    let ld: Value = serde_json::from_str(ld).unwrap();
    assert_eq!(
        (ld["@type"].as_str(), ld["name"].as_str()),
        (Some("Product"), Some("Silk Dupatta"))
    );
    assert_eq!(
        (
            ld["offers"]["price"].as_str(),
            ld["offers"]["priceCurrency"].as_str()
        ),
        (Some("2500.00"), Some("PKR"))
    );
    assert!(product.contains("Rs. 2,500"));
    let category = host.get("snapify.pk", "/silk-house/dupattas").await.text();
    assert!(
        category.contains("Silk Dupatta")
            && category.contains("Chiffon Dupatta")
            && !category.contains("Cotton Kurta")
    );
    assert_eq!(
        host.get("snapify.pk", "/silk-house/no-such-thing")
            .await
            .status,
        404
    );
    assert_eq!(host.get("snapify.pk", "/no-such-store").await.status, 404);

    // A misspelled search finds the products; another store's stay out.
    let found = host
        .get("snapify.pk", "/silk-house/search?q=dupata")
        .await
        .text();
    assert!(
        found.contains("Results for “dupata”: 2")
            && found.contains("Silk Dupatta")
            && found.contains("Chiffon Dupatta"),
        "{found}"
    );
    let elsewhere = host
        .get("snapify.pk", "/karachi-kicks/search?q=dupata")
        .await
        .text();
    assert!(elsewhere.contains(": 0</p>"), "{elsewhere}");
    assert!(
        host.get("snapify.pk", "/karachi-kicks/search?q=snekers")
            .await
            .text()
            .contains("Running Sneakers")
    );

    // The Pro store on its own domain: routed to the app, links without the store prefix.
    let own = host.get("silkhouse.pk", "/").await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert!(
        own.text().contains("<h1><a href=\"/\">Silk House</a>") && own.text().contains("Rs. 1,800")
    );
    assert_eq!(host.get("silkhouse.pk", "/silk-dupatta").await.status, 200);
    assert_eq!(
        host.get("unknown-shop.pk", "/").await.status,
        404,
        "nobody's domain"
    );
    for (domain, status) in [
        ("silkhouse.pk", 200),
        ("snapify.pk", 200),
        ("unknown-shop.pk", 404),
        ("karachikicks.pk", 404),
        ("bad..name", 404),
    ] {
        let reply = host
            .admin_request(
                "GET",
                &format!("/v1/tls/allowed?domain={domain}"),
                &[],
                Vec::new(),
            )
            .await;
        assert_eq!(reply.status, status, "tls/allowed {domain}");
    }

    // A price change: the next page shows it, on both the path and the domain.
    let id = scalar(
        &pg,
        "SELECT id::text FROM products WHERE slug = 'chiffon-dupatta'",
    )
    .await;
    let patched = api(
        &host,
        "PATCH",
        &format!("/v1/products/{id}"),
        json!({"price": "1700"}),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let fresh = host.get("snapify.pk", "/silk-house").await;
    assert_eq!(cache(&fresh), "miss");
    assert!(fresh.text().contains("Rs. 1,700") && !fresh.text().contains("Rs. 1,800"));
    let again = host.get("snapify.pk", "/silk-house").await;
    assert_eq!(cache(&again), "hit");
    assert!(again.text().contains("Rs. 1,700"));
    assert!(
        host.get("silkhouse.pk", "/")
            .await
            .text()
            .contains("Rs. 1,700"),
        "the custom domain too"
    );

    // The Free plan lists 15 products; the 16th is refused. Pro has no limit.
    for i in 4..=15 {
        let added = api(
            &host,
            "POST",
            "/v1/stores/karachi-kicks/products",
            json!({"title": format!("Sneaker {i}"), "price": 4000 + i, "category": "Sneakers"}),
        )
        .await;
        assert_eq!(added.status, 201, "product {i}: {}", added.text());
    }
    let refused = api(
        &host,
        "POST",
        "/v1/stores/karachi-kicks/products",
        json!({"title": "Sneaker 16", "price": 5000}),
    )
    .await;
    assert_eq!(refused.status, 402, "{}", refused.text());
    assert!(refused.text().contains("Free plan lists up to 15 products"));
    assert_eq!(scalar(&pg, "SELECT count(*)::text FROM products p JOIN stores s ON s.id = p.store_id WHERE s.slug = 'karachi-kicks'").await, "15");
    assert_eq!(
        api(
            &host,
            "POST",
            "/v1/stores/silk-house/products",
            json!({"title": "Sixth", "price": "10"})
        )
        .await
        .status,
        201
    );
    let kicks = host.get("snapify.pk", "/karachi-kicks").await;
    assert!(
        kicks.text().contains("Sneaker 15") && kicks.body.len() < 200_000,
        "the new products show at once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn snapify_whatsapp_webhook_checks_signatures_and_runs_one_job_per_message() {
    let (pg, redis) = (PgServer::start(), RedisServer::start());
    let graph = Stub::start(|_| (200, json!({"messages": [{"id": "wamid.out"}]}).to_string()));
    let host = snapify_host(&pg, &redis, &graph);
    let q =
        "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444";
    let verify = host.get("api.snapify.pk", q).await;
    assert_eq!((verify.status, verify.text().as_str()), (200, "1158201444"));
    assert_eq!(
        host.get("api.snapify.pk", &q.replace("verify-me", "guess"))
            .await
            .status,
        403
    );

    let jobs = async || {
        let mut conn = sqlx::PgConnection::connect(&pg.admin_url()).await.unwrap();
        let row = sqlx::query("SELECT count(*) FROM alorig_jobs.jobs WHERE app = 'snapify' AND name = 'process_whatsapp_webhook'")
            .fetch_one(&mut conn).await.unwrap();
        row.get::<i64, _>(0)
    };
    let hi = delivery("wamid.HBgM1", "923001234567", "hi");
    for signature in [
        signed(&hi, "wrong-secret"),
        "sha256=00".into(),
        String::new(),
    ] {
        let reply = host
            .request_with(
                "POST",
                "api.snapify.pk",
                "/webhooks/whatsapp",
                &[("x-hub-signature-256", signature)],
                hi.clone(),
            )
            .await;
        assert_eq!(reply.status, 401);
    }
    let unsigned = host
        .request("POST", "api.snapify.pk", "/webhooks/whatsapp", hi.clone())
        .await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(jobs().await, 0, "no job for a bad signature");

    // Meta delivers, then retries the same message twice.
    let send = async |body: &Vec<u8>| {
        let started = Instant::now();
        let reply = host
            .request_with(
                "POST",
                "api.snapify.pk",
                "/webhooks/whatsapp",
                &[("x-hub-signature-256", signed(body, APP_SECRET))],
                body.clone(),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        started.elapsed()
    };
    let took = send(&hi).await;
    eprintln!("webhook answered in {took:?}");
    send(&hi).await;
    send(&hi).await;
    assert!(
        wait_for(Duration::from_secs(20), async || graph.count() >= 1).await,
        "{}",
        host.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(jobs().await, 1, "one job per message id");
    assert_eq!(graph.count(), 1, "one reply");
    let reply = &graph.seen()[0];
    assert_eq!(reply.path, "/v21.0/1055/messages");
    assert_eq!(
        reply.header("authorization"),
        Some("Bearer test-WHATSAPP_TOKEN")
    );
    let sent: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (sent["to"].as_str(), sent["text"]["body"].as_str()),
        (
            Some("923001234567"),
            Some("Welcome to Snapify! What is your store's name?")
        )
    );

    // The conversation creates the store.
    send(&delivery("wamid.HBgM2", "923001234567", "Lahore Lawn")).await;
    assert!(wait_for(Duration::from_secs(20), async || graph.count() >= 2).await);
    send(&delivery("wamid.HBgM3", "923001234567", "Lahore")).await;
    assert!(wait_for(Duration::from_secs(20), async || graph.count() >= 3).await);
    let last: Value = serde_json::from_str(&graph.seen()[2].body).unwrap();
    assert!(
        last["text"]["body"]
            .as_str()
            .unwrap()
            .contains("https://snapify.pk/lahore-lawn"),
        "{last}"
    );
    assert_eq!(
        scalar(&pg, "SELECT state FROM whatsapp_sessions").await,
        "active"
    );
    assert_eq!(
        scalar(&pg, "SELECT city FROM stores WHERE slug = 'lahore-lawn'").await,
        "Lahore"
    );
    send(&delivery(
        "wamid.HBgM4",
        "923001234567",
        "add Printed Lawn 3500",
    ))
    .await;
    assert!(wait_for(Duration::from_secs(20), async || graph.count() >= 4).await);
    let store = host.get("snapify.pk", "/lahore-lawn").await;
    assert_eq!(store.status, 200);
    assert!(
        store.text().contains("Printed Lawn") && store.text().contains("Rs. 3,500"),
        "{}",
        store.text()
    );
    assert_eq!(jobs().await, 4);
}
