//! A small store, in the spirit of Snapify, on the app's own PostgreSQL database:
//!
//! * `POST /setup` — creates the schema (with `pg_trgm`) and demo stores, once;
//! * `GET /s/{slug}` — the store's page: its products, cheapest first;
//! * `GET /s/{slug}/search?q=…` — fuzzy product search (trigram similarity, so
//!   "headphnes" finds "Wireless Headphones").
//!
//! Every query takes its inputs as parameters; the host binds the app to its own
//! database and role, so there is no connection string here at all.

use guest_kit::{postgres as pg, wasip2};
use pg::Value;
use std::fmt::Write as _;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Store;

const SCHEMA: &[&str] = &[
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE TABLE IF NOT EXISTS stores (
        id serial PRIMARY KEY,
        slug text UNIQUE NOT NULL CHECK (slug ~ '^[a-z0-9-]+$'),
        name text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS products (
        id serial PRIMARY KEY,
        store_id int NOT NULL REFERENCES stores(id),
        name text NOT NULL,
        description text NOT NULL DEFAULT '',
        price numeric(10,2) NOT NULL CHECK (price >= 0),
        tags text[] NOT NULL DEFAULT '{}',
        UNIQUE (store_id, name))",
    "CREATE INDEX IF NOT EXISTS products_name_trgm ON products USING gin (name gin_trgm_ops)",
];

const DEMO: &[(&str, &str, &[(&str, &str, &str)])] = &[
    (
        "snap-audio",
        "Snap Audio",
        &[
            ("Wireless Headphones", "Over-ear, 30 h battery", "89.90"),
            ("Bluetooth Speaker", "Waterproof, pocket size", "39.00"),
            ("USB-C Cable", "1 m, braided", "7.50"),
            (
                "Studio Monitor Headphones",
                "Closed back, flat response",
                "129.00",
            ),
        ],
    ),
    (
        "snap-home",
        "Snap Home",
        &[
            ("Ceramic Mug", "350 ml, dishwasher safe", "12.00"),
            ("Linen Napkins", "Set of four", "18.50"),
        ],
    ),
];

impl wasip2::exports::http::incoming_handler::Guest for Store {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = guest_kit::path(&request);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let result = match (request.method(), segments.as_slice()) {
            (Method::Post, ["setup"]) => {
                setup().map(|()| (200, "text/plain", "ready\n".to_string()))
            }
            (Method::Get, ["s", slug]) => store_page(slug).map(page_or_404),
            (Method::Get, ["s", slug, "search"]) => {
                let q = guest_kit::query_param(&request, "q")
                    .map(|q| url_decode(&q))
                    .unwrap_or_default();
                search_page(slug, &q).map(page_or_404)
            }
            _ => Ok((404, "text/plain", "not found\n".to_string())),
        };
        let (status, content_type, body) = result.unwrap_or_else(|e| {
            let status = if matches!(e, pg::Error::Unavailable(_) | pg::Error::Timeout(_)) {
                503
            } else {
                500
            };
            eprintln!("store: database error: {}", e.describe());
            (
                status,
                "text/plain",
                format!("the store is unavailable right now ({})\n", e.kind()),
            )
        });
        guest_kit::respond(out, status, content_type, body.as_bytes());
    }
}

fn page_or_404(page: Option<String>) -> (u16, &'static str, String) {
    match page {
        Some(html) => (200, "text/html; charset=utf-8", html),
        None => (404, "text/plain", "no such store\n".to_string()),
    }
}

/// Creates the schema and the demo stores in one transaction (idempotent).
fn setup() -> Result<(), pg::Error> {
    let tx = pg::begin()?;
    for sql in SCHEMA {
        tx.execute(sql, &[])?;
    }
    for (slug, name, products) in DEMO {
        tx.execute(
            "INSERT INTO stores (slug, name) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING",
            &[Value::Text(slug.to_string()), Value::Text(name.to_string())],
        )?;
        for (product, description, price) in *products {
            tx.execute(
                "INSERT INTO products (store_id, name, description, price, tags)
                 SELECT id, $2, $3, $4, $5 FROM stores WHERE slug = $1
                 ON CONFLICT (store_id, name) DO NOTHING",
                &[
                    Value::Text(slug.to_string()),
                    Value::Text(product.to_string()),
                    Value::Text(description.to_string()),
                    Value::Numeric(price.to_string()),
                    Value::TextArray(vec![Some("demo".to_string())]),
                ],
            )?;
        }
    }
    pg::Transaction::commit(tx)
}

/// The store's name, or `None` when there is no such store.
fn store_name(slug: &str) -> Result<Option<String>, pg::Error> {
    let rows = pg::query(
        "SELECT name FROM stores WHERE slug = $1",
        &[Value::Text(slug.to_string())],
    )?;
    Ok(rows
        .rows
        .first()
        .and_then(|r| r[0].as_text())
        .map(str::to_string))
}

fn store_page(slug: &str) -> Result<Option<String>, pg::Error> {
    let Some(name) = store_name(slug)? else {
        return Ok(None);
    };
    let rows = pg::query(
        "SELECT p.name, p.description, p.price FROM products p JOIN stores s ON s.id = p.store_id
         WHERE s.slug = $1 ORDER BY p.price, p.name",
        &[Value::Text(slug.to_string())],
    )?;
    Ok(Some(render(&name, None, &rows)))
}

fn search_page(slug: &str, q: &str) -> Result<Option<String>, pg::Error> {
    let Some(name) = store_name(slug)? else {
        return Ok(None);
    };
    let rows = pg::query(
        "SELECT p.name, p.description, p.price FROM products p JOIN stores s ON s.id = p.store_id
         WHERE s.slug = $1 AND (p.name % $2 OR word_similarity($2, p.name) > 0.4 OR p.name ILIKE '%' || $2 || '%')
         ORDER BY word_similarity($2, p.name) DESC, p.name LIMIT 20",
        &[Value::Text(slug.to_string()), Value::Text(q.to_string())],
    )?;
    Ok(Some(render(&name, Some(q), &rows)))
}

fn render(store: &str, query: Option<&str>, rows: &pg::RowSet) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><meta charset=utf-8><title>{0}</title><h1>{0}</h1>",
        escape(store)
    );
    if let Some(q) = query {
        let _ = write!(
            html,
            "<p>Results for “{}”: {}</p>",
            escape(q),
            rows.rows.len()
        );
    }
    html.push_str("<ul>\n");
    for row in &rows.rows {
        let text = |i: usize| row[i].as_text().unwrap_or_default();
        let _ = writeln!(
            html,
            "<li><b>{}</b> — {} — €{}</li>",
            escape(text(0)),
            escape(text(1)),
            escape(text(2))
        );
    }
    html.push_str("</ul>\n");
    html
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

wasip2::http::proxy::export!(Store with_types_in wasip2);
