//! A product page built from one PostgreSQL query and one Redis GET:
//!
//! * `POST /setup` — creates and fills the `products` table;
//! * `GET /p/{id}` — the product's row from PostgreSQL and its live stock count
//!   from Redis (`stock:{id}`), as a small JSON document;
//! * `GET /h/{id}` — the same, rendered into an HTML page (the Python and Django
//!   rows of the benchmark render the same bytes).
//!
//! The benchmark serves the same bytes from a native hyper + sqlx + redis server
//! and compares the two end to end.

wit_bindgen::generate!({
    path: "../../wit",
    world: "alorig:host/redis-imports",
});

use alorig::host::redis;
use guest_kit::{postgres as pg, wasip2};
use pg::Value;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Page;

/// The page's query; the native baseline runs the same text.
const QUERY: &str = "SELECT name, price::text FROM products WHERE id = $1";

impl wasip2::exports::http::incoming_handler::Guest for Page {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = guest_kit::path(&request);
        let (status, body) = match (request.method(), path.trim_matches('/').split_once('/')) {
            (Method::Post, None) if path == "/setup" => setup(),
            (Method::Get, Some(("p", id))) => match id.parse::<i32>() {
                Ok(id) => product(id),
                Err(_) => (400, "bad product id\n".to_string()),
            },
            (Method::Get, Some(("h", id))) => {
                let page = id
                    .parse::<i32>()
                    .map_err(|_| (400, "bad product id\n".to_string()))
                    .and_then(html);
                let (status, body) = page.map_or_else(|e| e, |body| (200, body));
                guest_kit::respond(out, status, "text/html; charset=utf-8", body.as_bytes());
                return;
            }
            _ => (404, "not found\n".to_string()),
        };
        guest_kit::respond(out, status, "application/json", body.as_bytes());
    }
}

fn setup() -> (u16, String) {
    let statements = [
        "CREATE TABLE IF NOT EXISTS products (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL)",
        "INSERT INTO products SELECT i, 'Product ' || i, i * 1.25 FROM generate_series(1, 1000) i ON CONFLICT DO NOTHING",
    ];
    for sql in statements {
        if let Err(e) = pg::execute(sql, &[]) {
            return (500, format!("setup failed: {}\n", e.describe()));
        }
    }
    for id in 1..=1000 {
        if let Err(e) = redis::set(
            &format!("stock:{id}"),
            (id % 17).to_string().as_bytes(),
            redis::SetOptions {
                ttl_ms: None,
                condition: redis::SetCondition::Always,
            },
        ) {
            return (500, format!("setup failed: {e:?}\n"));
        }
    }
    (200, "ready\n".to_string())
}

fn product(id: i32) -> (u16, String) {
    let rows = match pg::query(QUERY, &[Value::Int32(id)]) {
        Ok(rows) => rows,
        Err(e) => return (503, format!("database: {}\n", e.kind())),
    };
    let Some([Value::Text(name), Value::Text(price)]) = rows.rows.first().map(Vec::as_slice) else {
        return (404, "no such product\n".to_string());
    };
    let stock = match redis::get(&format!("stock:{id}")) {
        Ok(stock) => stock
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_else(|| "0".into()),
        Err(e) => return (503, format!("redis: {e:?}\n")),
    };
    (
        200,
        format!("{{\"id\":{id},\"name\":\"{name}\",\"price\":\"{price}\",\"stock\":{stock}}}\n"),
    )
}

/// The HTML page: the same template as the Python and Django rows.
fn html(id: i32) -> Result<String, (u16, String)> {
    let rows = pg::query(QUERY, &[Value::Int32(id)])
        .map_err(|e| (503, format!("database: {}\n", e.kind())))?;
    let Some([Value::Text(name), Value::Text(price)]) = rows.rows.first().map(Vec::as_slice) else {
        return Err((404, "no such product\n".to_string()));
    };
    let stock = redis::get(&format!("stock:{id}")).map_err(|e| (503, format!("redis: {e:?}\n")))?;
    let stock: i64 = stock
        .and_then(|s| String::from_utf8_lossy(&s).parse().ok())
        .unwrap_or(0);
    let (name, price) = (escape(name), escape(price));
    Ok(format!(
        "<!doctype html>\n<html><head><title>{name}</title></head>\n\
         <body><h1>{name}</h1><p class=\"price\">{price}</p><p class=\"stock\">In stock: {stock}</p></body></html>\n"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

wasip2::http::proxy::export!(Page with_types_in wasip2);
