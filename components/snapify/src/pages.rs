//! The buyer-facing pages (seed 000 "Store Page Types"), server-rendered and
//! small (under 200 KB on 3G: one inline stylesheet, no script but JSON-LD,
//! 48 products a page):
//!
//! * `/{store}` — product grid, cheapest first, with category filters;
//! * `/{store}/{slug}` — a product (Schema.org `Product` JSON-LD) or a category;
//! * `/{store}/about`, `/{store}/search?q=` (pg_trgm), `/{store}/sitemap.xml`,
//!   `/{store}/delivery-to-{city}` (Pro, from `generate_city_pages`);
//! * `/{hub}` — a platform hub page (from `regenerate_hub_pages`).
//!
//! On a customer's domain the store is the domain's, and paths lose `/{store}`.
//!
//! **Cache.** A rendered page lives in Redis under `html:{store}:{version}:{path}`.
//! A change commits in PostgreSQL and then bumps `ver:{store}`: a reader that
//! saw the old version can only ever fill an old key nobody reads again, so a
//! page is never served stale; old keys go by their TTL.

use guest_kit::{postgres as pg, redis};
use pg::Value;
use serde_json::json;
use std::fmt::Write as _;

pub const PAGE_TTL_MS: u64 = 10 * 60_000;
const PER_PAGE: i64 = 48;

pub struct Store {
    pub id: i32,
    pub slug: String,
    pub name: String,
    pub city: String,
    pub about: String,
    pub tier: String,
    pub verified: bool,
    pub domain: Option<String>,
}

fn text(v: &Value) -> String {
    v.as_text().unwrap_or_default().to_string()
}

/// The store by slug, or by custom domain.
pub fn store(by: &str, domain: bool) -> Result<Option<Store>, pg::Error> {
    let sql = if domain {
        "SELECT id, slug, name, city, about, subscription_tier, is_verified, custom_domain FROM stores WHERE custom_domain = $1 AND subscription_tier = 'pro'"
    } else {
        "SELECT id, slug, name, city, about, subscription_tier, is_verified, custom_domain FROM stores WHERE slug = $1"
    };
    let rows = pg::query(sql, &[Value::Text(by.to_string())])?;
    Ok(rows.rows.first().map(|r| Store {
        id: match r[0] {
            Value::Int32(i) => i,
            _ => 0,
        },
        slug: text(&r[1]),
        name: text(&r[2]),
        city: text(&r[3]),
        about: text(&r[4]),
        tier: text(&r[5]),
        verified: matches!(r[6], Value::Boolean(true)),
        domain: r[7].as_text().map(str::to_string),
    }))
}

/// The cached page, and whether it was a hit. `render` runs on a miss.
pub fn cached(
    store: i32,
    path: &str,
    render: impl FnOnce() -> Result<Option<String>, pg::Error>,
) -> Result<(Option<String>, bool), pg::Error> {
    let version = redis::get(&format!("ver:{store}"))
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_else(|| "0".into());
    let key = format!("html:{store}:{version}:{path}");
    if let Ok(Some(html)) = redis::get(&key) {
        let _ = redis::incr(&format!("views:{store}"));
        return Ok((Some(String::from_utf8_lossy(&html).into_owned()), true));
    }
    let page = render()?;
    if let Some(html) = &page {
        let _ = redis::pipeline(
            &[
                redis::Command::Set((key, html.as_bytes().to_vec(), redis::ttl(Some(PAGE_TTL_MS)))),
                redis::Command::IncrBy((format!("views:{store}"), 1)),
            ],
            false,
        );
    }
    Ok((page, false))
}

/// After a committed change: every cached page of the store is out of date.
pub fn invalidate(store: i32) -> Result<(), String> {
    redis::incr(&format!("ver:{store}"))
        .map(|_| ())
        .map_err(|e| format!("redis: {e:?}"))
}

/// `2500.00` → `Rs. 2,500`; `99.50` → `Rs. 99.50`.
pub fn rupees(price: &str) -> String {
    let (whole, cents) = price.split_once('.').unwrap_or((price, "00"));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if cents.trim_end_matches('0').is_empty() {
        format!("Rs. {grouped}")
    } else {
        format!("Rs. {grouped}.{cents}")
    }
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 1rem;color:#222}\
header{display:flex;justify-content:space-between;align-items:center}a{color:#0a6}ul.grid{list-style:none;padding:0;\
display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:1rem}ul.grid li{border:1px solid #ddd;\
border-radius:.5rem;padding:.5rem}img{max-width:100%;height:auto}.price{font-weight:700}nav a{margin-right:.75rem}";

/// The page around `body`; `base` is how links to the store start ("" on its own domain).
fn layout(store: &Store, base: &str, title: &str, head: &str, body: &str) -> String {
    let mut html = String::with_capacity(body.len() + 2048);
    let _ = write!(
        html,
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style>{head}<header><h1><a href=\"{base}/\">{}</a></h1>{}</header>{body}<footer>{}</footer></html>",
        escape(title),
        escape(&store.name),
        if store.verified {
            "<span>✔ verified</span>"
        } else {
            ""
        },
        if store.tier == "free" {
            "Made with Snapify"
        } else {
            ""
        },
    );
    html
}

fn grid(base: &str, rows: &[Vec<Value>]) -> String {
    let mut html = String::from("<ul class=grid>");
    for r in rows {
        let image = r[4]
            .as_text()
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .and_then(|j| j.get(0).and_then(|i| i.as_str()).map(str::to_string))
            .unwrap_or_default();
        let _ = write!(
            html,
            "<li><a href=\"{base}/{}\"><img src=\"{}\" alt=\"{}\" width=240 height=240 loading=lazy><br>{}</a><br><span class=price>{}</span></li>",
            escape(&text(&r[1])),
            escape(&image),
            escape(&text(&r[0])),
            escape(&text(&r[0])),
            rupees(&text(&r[2])),
        );
    }
    html.push_str("</ul>");
    html
}

const PRODUCT_COLUMNS: &str = "p.title, p.slug, p.price::text, p.description, p.images::text";

pub fn home(store: &Store, base: &str, page: i64) -> Result<Option<String>, pg::Error> {
    let id = Value::Int32(store.id);
    let products = pg::query(
        &format!(
            "SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.store_id = $1 AND p.is_active ORDER BY p.price, p.title LIMIT $2 OFFSET $3"
        ),
        &[
            id.clone(),
            Value::Int64(PER_PAGE),
            Value::Int64(PER_PAGE * page),
        ],
    )?;
    let categories = pg::query(
        "SELECT name, slug, product_count FROM categories WHERE store_id = $1 ORDER BY name",
        &[id],
    )?;
    let mut body = String::from("<nav>");
    for c in &categories.rows {
        let _ = write!(
            body,
            "<a href=\"{base}/{}\">{} ({})</a>",
            escape(&text(&c[1])),
            escape(&text(&c[0])),
            c[2].as_i64().unwrap_or(0)
        );
    }
    let _ = write!(
        body,
        "</nav><form action=\"{base}/search\"><input name=q placeholder=Search></form>"
    );
    body.push_str(&grid(base, &products.rows));
    if products.rows.len() as i64 == PER_PAGE {
        let _ = write!(body, "<a href=\"{base}/?page={}\">More</a>", page + 1);
    }
    Ok(Some(layout(
        store,
        base,
        &format!("{} — {}", store.name, store.city),
        "",
        &body,
    )))
}

/// A product page, a category page, or `None`.
pub fn item(store: &Store, base: &str, slug: &str) -> Result<Option<String>, pg::Error> {
    let rows = pg::query(
        &format!("SELECT {PRODUCT_COLUMNS}, coalesce(c.name, '') FROM products p LEFT JOIN categories c ON c.id = p.category_id
                  WHERE p.store_id = $1 AND p.slug = $2 AND p.is_active"),
        &[Value::Int32(store.id), Value::Text(slug.to_string())],
    )?;
    if let Some(p) = rows.rows.first() {
        let url = match &store.domain {
            Some(d) if base.is_empty() => format!("https://{d}/{slug}"),
            _ => format!("https://snapify.pk/{}/{slug}", store.slug),
        };
        let images: serde_json::Value = p[4]
            .as_text()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let ld = json!({
            "@context": "https://schema.org",
            "@type": "Product",
            "name": text(&p[0]),
            "description": text(&p[3]),
            "image": images,
            "category": text(&p[5]),
            "brand": {"@type": "Brand", "name": store.name},
            "offers": {"@type": "Offer", "price": text(&p[2]), "priceCurrency": "PKR", "availability": "https://schema.org/InStock", "url": url},
        });
        let head = format!(
            "<script type=\"application/ld+json\">{}</script>",
            ld.to_string().replace("</", "<\\/")
        );
        let image = images.get(0).and_then(|i| i.as_str()).unwrap_or_default();
        let body = format!(
            "<article><img src=\"{}\" alt=\"{}\" width=480 height=480><h2>{}</h2><p class=price>{}</p><p>{}</p>\
             <a href=\"https://wa.me/?text={}\">Order on WhatsApp</a></article>",
            escape(image),
            escape(&text(&p[0])),
            escape(&text(&p[0])),
            rupees(&text(&p[2])),
            escape(&text(&p[3])),
            escape(&text(&p[1])),
        );
        return Ok(Some(layout(
            store,
            base,
            &format!("{} — {}", text(&p[0]), store.name),
            &head,
            &body,
        )));
    }
    let category = pg::query(
        "SELECT id, name FROM categories WHERE store_id = $1 AND slug = $2",
        &[Value::Int32(store.id), Value::Text(slug.to_string())],
    )?;
    let Some(c) = category.rows.first() else {
        return Ok(None);
    };
    let products = pg::query(
        &format!(
            "SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.category_id = $1 AND p.is_active ORDER BY p.price, p.title LIMIT $2"
        ),
        &[c[0].clone(), Value::Int64(PER_PAGE)],
    )?;
    let body = format!(
        "<h2>{}</h2>{}",
        escape(&text(&c[1])),
        grid(base, &products.rows)
    );
    Ok(Some(layout(
        store,
        base,
        &format!("{} — {}", text(&c[1]), store.name),
        "",
        &body,
    )))
}

pub fn about(store: &Store, base: &str) -> Result<Option<String>, pg::Error> {
    let body = format!(
        "<h2>About {}</h2><p>{}</p><p>{}</p>",
        escape(&store.name),
        escape(&store.about),
        escape(&store.city)
    );
    Ok(Some(layout(
        store,
        base,
        &format!("About {}", store.name),
        "",
        &body,
    )))
}

pub fn search(store: &Store, base: &str, q: &str) -> Result<Option<String>, pg::Error> {
    let rows = pg::query(
        &format!("SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.store_id = $1 AND p.is_active
                  AND (p.title % $2 OR word_similarity($2, p.title) > 0.4 OR p.title ILIKE '%' || $2 || '%')
                  ORDER BY word_similarity($2, p.title) DESC, p.title LIMIT 20"),
        &[Value::Int32(store.id), Value::Text(q.to_string())],
    )?;
    let body = format!(
        "<p>Results for “{}”: {}</p>{}",
        escape(q),
        rows.rows.len(),
        grid(base, &rows.rows)
    );
    Ok(Some(layout(
        store,
        base,
        &format!("Search {}", store.name),
        "",
        &body,
    )))
}

pub fn sitemap(store: &Store) -> Result<Option<String>, pg::Error> {
    let rows = pg::query(
        "SELECT xml FROM sitemaps WHERE store_id = $1",
        &[Value::Int32(store.id)],
    )?;
    Ok(rows.rows.first().map(|r| text(&r[0])))
}

pub fn city_page(store: &Store, base: &str, city: &str) -> Result<Option<String>, pg::Error> {
    let rows = pg::query(
        "SELECT city FROM city_pages WHERE store_id = $1 AND lower(city) = $2",
        &[Value::Int32(store.id), Value::Text(city.to_string())],
    )?;
    let Some(r) = rows.rows.first() else {
        return Ok(None);
    };
    let city = text(&r[0]);
    let products = pg::query(
        &format!(
            "SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.store_id = $1 AND p.is_active ORDER BY p.price LIMIT 12"
        ),
        &[Value::Int32(store.id)],
    )?;
    let body = format!(
        "<h2>{} — delivery to {}</h2><p>Order from {} and get it delivered in {}.</p>{}",
        escape(&store.name),
        escape(&city),
        escape(&store.city),
        escape(&city),
        grid(base, &products.rows)
    );
    Ok(Some(layout(
        store,
        base,
        &format!("{} delivery to {}", store.name, city),
        "",
        &body,
    )))
}

pub fn hub(slug: &str) -> Result<Option<String>, pg::Error> {
    let rows = pg::query(
        "SELECT h.title, s.name, s.slug, s.city FROM hub_pages h JOIN stores s ON s.id = ANY(h.store_ids) WHERE h.slug = $1 ORDER BY s.name",
        &[Value::Text(slug.to_string())],
    )?;
    let Some(first) = rows.rows.first() else {
        return Ok(None);
    };
    let mut html = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>{0}</title><style>{STYLE}</style><h1>{0}</h1><ul>",
        escape(&text(&first[0]))
    );
    for r in &rows.rows {
        let _ = write!(
            html,
            "<li><a href=\"/{}\">{}</a> — {}</li>",
            escape(&text(&r[2])),
            escape(&text(&r[1])),
            escape(&text(&r[3]))
        );
    }
    html.push_str("</ul></html>");
    Ok(Some(html))
}

#[cfg(test)]
mod tests {
    #[test]
    fn prices_read_as_rupees() {
        assert_eq!(super::rupees("2500.00"), "Rs. 2,500");
        assert_eq!(super::rupees("85000.00"), "Rs. 85,000");
        assert_eq!(super::rupees("1234567.50"), "Rs. 1,234,567.50");
        assert_eq!(super::rupees("99.00"), "Rs. 99");
    }
}
