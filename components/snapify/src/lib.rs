//! Snapify on the host (seed 000, Snapify): the buyer-facing stores and the
//! WhatsApp onboarding bot — the parts that stress the platform: small
//! server-rendered pages cached in Redis and never stale, tenancy by path and
//! by customers' own domains, and a webhook turned into durable jobs.
//!
//! * `snapify.pk/{store}/…` and a Pro store's own domain: [`pages`];
//! * `api.snapify.pk` (also under `/api`, as the seed's Caddy mapped it):
//!   `GET|POST /webhooks/whatsapp` ([`whatsapp`]), `POST /v1/stores/{slug}/products`,
//!   `PATCH /v1/products/{id}` ([`catalog`]), `POST /v1/demo` (demo stores);
//!   writes need `Authorization: Bearer $API_TOKEN` when that secret is set;
//! * `GET /.well-known/alorig/custom-domain` — 200 when the request's `Host`
//!   is a Pro store's domain: how the host learns the domains to route here and
//!   to give certificates for (`[custom_domains]`).
//!
//! Beat (timers): `regenerate_sitemap`, `regenerate_hub_pages`,
//! `generate_city_pages`, `aggregate_analytics`; see [`beat`].

pub mod beat;
pub mod catalog;
pub mod pages;
pub mod schema;
pub mod whatsapp;

use guest_kit::{postgres as pg, timers, wasip2};
use serde_json::{Value as Json, json};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Snapify;

struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    cache: Option<bool>,
}

fn answer(status: u16, content_type: &'static str, body: String) -> Answer {
    Answer {
        status,
        content_type,
        body,
        cache: None,
    }
}

fn json_answer(status: u16, value: Json) -> Answer {
    answer(status, "application/json", format!("{value}\n"))
}

fn not_found() -> Answer {
    answer(404, "text/plain; charset=utf-8", "not found\n".into())
}

fn db(e: pg::Error) -> Answer {
    let status = if matches!(e, pg::Error::Unavailable(_) | pg::Error::Timeout(_)) {
        503
    } else {
        500
    };
    eprintln!("snapify: database: {}", e.describe());
    answer(
        status,
        "text/plain; charset=utf-8",
        format!("the store is unavailable right now ({})\n", e.kind()),
    )
}

fn setting(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn authorized(req: &IncomingRequest) -> bool {
    match std::env::var("API_TOKEN") {
        Ok(token) if !token.is_empty() => {
            guest_kit::header(req, "authorization").is_some_and(|h| h == format!("Bearer {token}"))
        }
        _ => true,
    }
}

fn page(result: Result<(Option<String>, bool), pg::Error>) -> Answer {
    match result {
        Ok((Some(html), hit)) => Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: html,
            cache: Some(hit),
        },
        Ok((None, _)) => not_found(),
        Err(e) => db(e),
    }
}

/// A store's pages; `rest` is the path inside the store, `base` how its links start.
fn store_pages(req: &IncomingRequest, store: &pages::Store, base: &str, rest: &[&str]) -> Answer {
    // The base is part of the key: the same page on the store's own domain links differently.
    let path = format!("{base}/{}", rest.join("/"));
    match rest {
        [] | [""] => {
            let n: i64 = guest_kit::query_param(req, "page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
                .clamp(0, 1000);
            page(pages::cached(
                store.id,
                &format!("{base}/?page={n}"),
                || pages::home(store, base, n),
            ))
        }
        ["about"] => page(pages::cached(store.id, &path, || pages::about(store, base))),
        ["search"] => {
            let q = guest_kit::url_decode(&guest_kit::query_param(req, "q").unwrap_or_default());
            page(pages::search(store, base, q.trim()).map(|p| (p, false)))
        }
        ["sitemap.xml"] => match pages::sitemap(store) {
            Ok(Some(xml)) => answer(200, "application/xml", xml),
            Ok(None) => not_found(),
            Err(e) => db(e),
        },
        [slug] if slug.starts_with("delivery-to-") && store.tier == "pro" => {
            let city = slug.trim_start_matches("delivery-to-").to_string();
            page(pages::cached(store.id, &path, || {
                pages::city_page(store, base, &city)
            }))
        }
        [slug] => page(pages::cached(store.id, &path, || {
            pages::item(store, base, slug)
        })),
        _ => not_found(),
    }
}

fn api(req: &IncomingRequest, segments: &[&str]) -> Answer {
    let segments = match segments {
        ["api", rest @ ..] => rest,
        other => other,
    };
    match (req.method(), segments) {
        (Method::Get, ["webhooks", "whatsapp"]) => {
            let q = |n: &str| guest_kit::query_param(req, n).map(|v| guest_kit::url_decode(&v));
            let (status, body) =
                whatsapp::verify(q("hub.mode"), q("hub.verify_token"), q("hub.challenge"));
            answer(status, "text/plain", body)
        }
        (Method::Post, ["webhooks", "whatsapp"]) => {
            let signature = guest_kit::header(req, "x-hub-signature-256");
            let body = guest_kit::read_body(req);
            if !whatsapp::signed(signature.as_deref(), &body) {
                return answer(401, "text/plain", "bad signature\n".into());
            }
            match whatsapp::receive(&body) {
                Ok(new) => json_answer(200, json!({"received": new})),
                Err(why) => {
                    eprintln!("snapify: webhook: {why}");
                    answer(503, "text/plain", "try again\n".into())
                }
            }
        }
        _ if !authorized(req) => json_answer(401, json!({"error": "missing or wrong API token"})),
        (Method::Post, ["v1", "stores", slug, "products"]) => {
            let body: Json = serde_json::from_slice(&guest_kit::read_body(req)).unwrap_or_default();
            let price = match &body["price"] {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                _ => String::new(),
            };
            match catalog::add_product(
                slug,
                body["title"].as_str().unwrap_or(""),
                &price,
                body["category"].as_str().unwrap_or(""),
            ) {
                Ok(id) => json_answer(201, json!({"id": id})),
                Err((status, why)) => json_answer(status, json!({"error": why})),
            }
        }
        (Method::Patch, ["v1", "products", id]) => {
            let Ok(id) = id.parse::<i32>() else {
                return not_found();
            };
            let body: Json = serde_json::from_slice(&guest_kit::read_body(req)).unwrap_or_default();
            let price = match &body["price"] {
                Json::String(s) => Some(s.clone()),
                Json::Number(n) => Some(n.to_string()),
                _ => None,
            };
            match catalog::update_product(
                id,
                price.as_deref(),
                body["title"].as_str(),
                body["is_active"].as_bool(),
            ) {
                Ok(()) => json_answer(200, json!({"id": id})),
                Err((status, why)) => json_answer(status, json!({"error": why})),
            }
        }
        (Method::Post, ["v1", "demo"]) => match schema::demo() {
            Ok(()) => json_answer(200, json!({"demo": "ready"})),
            Err(e) => db(e),
        },
        _ => not_found(),
    }
}

fn route(req: &IncomingRequest) -> Answer {
    if let Err(e) = schema::migrate() {
        return db(e);
    }
    let host = guest_kit::host(req);
    let path = guest_kit::path(req);
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if path == "/.well-known/alorig/custom-domain" {
        return match pages::store(&host, true) {
            Ok(Some(_)) => answer(200, "text/plain", "mine\n".into()),
            Ok(None) => not_found(),
            Err(e) => db(e),
        };
    }
    if host == setting("API_HOST", "api.snapify.pk") {
        return api(req, &segments);
    }
    if !matches!(req.method(), Method::Get | Method::Head) {
        return answer(405, "text/plain", "method not allowed\n".into());
    }
    if host == setting("PLATFORM_HOST", "snapify.pk") {
        let Some((first, rest)) = segments.split_first() else {
            return answer(
                200,
                "text/html; charset=utf-8",
                "<!doctype html><title>Snapify</title><h1>Snapify.pk</h1>".into(),
            );
        };
        return match pages::store(first, false) {
            Ok(Some(store)) => store_pages(req, &store, &format!("/{}", store.slug), rest),
            Ok(None) if rest.is_empty() => page(pages::hub(first).map(|p| (p, false))),
            Ok(None) => not_found(),
            Err(e) => db(e),
        };
    }
    match pages::store(&host, true) {
        Ok(Some(store)) => store_pages(req, &store, "", &segments),
        Ok(None) => not_found(),
        Err(e) => db(e),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Snapify {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let a = route(&request);
        let mut headers = vec![("content-type", a.content_type)];
        match a.cache {
            Some(true) => headers.push(("x-cache", "hit")),
            Some(false) => headers.push(("x-cache", "miss")),
            None => {}
        }
        guest_kit::respond_with(out, a.status, &headers, a.body.as_bytes());
    }
}

impl timers::TimerHandler for Snapify {
    fn on_timer(name: String, _scheduled_at_ms: u64) -> Result<(), String> {
        schema::migrate().map_err(|e| e.describe())?;
        match name.as_str() {
            "regenerate_sitemap" => beat::sitemaps(),
            "regenerate_hub_pages" => beat::hub_pages(),
            "generate_city_pages" => beat::city_pages(),
            "aggregate_analytics" => beat::analytics(),
            other => Err(format!("no timer named {other:?}")),
        }
    }
}

impl timers::JobHandler for Snapify {
    fn on_job(_id: u64, name: String, payload: Vec<u8>, _attempt: u32) -> Result<(), String> {
        schema::migrate().map_err(|e| e.describe())?;
        match name.as_str() {
            "process_whatsapp_webhook" => whatsapp::process(&payload),
            other => Err(format!("no job named {other:?}")),
        }
    }
}

timers::export!(Snapify);
wasip2::http::proxy::export!(Snapify with_types_in wasip2);
