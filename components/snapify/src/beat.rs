//! Snapify's Celery beat as host timers (seed 000 "Celery Tasks"):
//! `regenerate_sitemap` (daily 2 AM), `regenerate_hub_pages` (weekly, Sunday
//! 3 AM), `generate_city_pages` (weekly, Pro stores), `aggregate_analytics`
//! (the beat's "analytics aggregation"; hourly here — the seed gives no time).

use guest_kit::{postgres as pg, redis};
use pg::Value;

fn db(e: pg::Error) -> String {
    e.describe()
}

/// Cities a Pro store gets a delivery page for.
const CITIES: &[&str] = &[
    "Lahore",
    "Karachi",
    "Islamabad",
    "Rawalpindi",
    "Faisalabad",
    "Multan",
    "Peshawar",
];

pub fn sitemaps() -> Result<(), String> {
    pg::execute(
        "INSERT INTO sitemaps (store_id, xml, generated_ms)
         SELECT s.id,
            '<?xml version=\"1.0\" encoding=\"UTF-8\"?><urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">'
            || '<url><loc>https://snapify.pk/' || s.slug || '</loc></url>'
            || coalesce(string_agg('<url><loc>https://snapify.pk/' || s.slug || '/' || p.slug || '</loc></url>', '' ORDER BY p.id), '')
            || '</urlset>', $1
         FROM stores s LEFT JOIN products p ON p.store_id = s.id AND p.is_active
         GROUP BY s.id
         ON CONFLICT (store_id) DO UPDATE SET xml = EXCLUDED.xml, generated_ms = EXCLUDED.generated_ms",
        &[Value::Int64(guest_kit::now_ms())],
    )
    .map(|_| ())
    .map_err(db)
}

/// `best-{category}-stores-{city}` for every category and city with a store.
pub fn hub_pages() -> Result<(), String> {
    pg::execute(
        "INSERT INTO hub_pages (slug, title, store_ids, generated_ms)
         SELECT 'best-' || lower(category) || '-stores-' || lower(city), 'Best ' || category || ' stores in ' || city,
                array_agg(id ORDER BY is_verified DESC, id), $1
         FROM stores WHERE category <> '' AND city <> '' AND lower(category) ~ '^[a-z]+$' AND lower(city) ~ '^[a-z]+$'
         GROUP BY category, city
         ON CONFLICT (slug) DO UPDATE SET title = EXCLUDED.title, store_ids = EXCLUDED.store_ids, generated_ms = EXCLUDED.generated_ms",
        &[Value::Int64(guest_kit::now_ms())],
    )
    .map(|_| ())
    .map_err(db)
}

pub fn city_pages() -> Result<(), String> {
    pg::execute(
        "INSERT INTO city_pages (store_id, city, generated_ms)
         SELECT s.id, c, $2 FROM stores s, unnest($1::text[]) c WHERE s.subscription_tier = 'pro'
         ON CONFLICT (store_id, city) DO UPDATE SET generated_ms = EXCLUDED.generated_ms",
        &[
            Value::TextArray(CITIES.iter().map(|c| Some(c.to_string())).collect()),
            Value::Int64(guest_kit::now_ms()),
        ],
    )
    .map(|_| ())
    .map_err(db)
}

/// Page views counted in Redis (`views:{store}`) move into `analytics_daily`.
pub fn analytics() -> Result<(), String> {
    let stores = pg::query("SELECT id FROM stores", &[]).map_err(db)?;
    for row in &stores.rows {
        let Value::Int32(id) = row[0] else { continue };
        let key = format!("views:{id}");
        // Read and reset in one step: views counted meanwhile go to the next run.
        let replies = redis::pipeline(
            &[
                redis::Command::Get(key.clone()),
                redis::Command::Del(vec![key]),
            ],
            true,
        )
        .map_err(|e| format!("redis: {e:?}"))?;
        let views = match replies.first() {
            Some(redis::Reply::Data(v)) => String::from_utf8_lossy(v).parse::<i64>().unwrap_or(0),
            _ => 0,
        };
        if views > 0 {
            pg::execute(
                "INSERT INTO analytics_daily (store_id, day, page_views) VALUES ($1, current_date, $2)
                 ON CONFLICT (store_id, day) DO UPDATE SET page_views = analytics_daily.page_views + EXCLUDED.page_views",
                &[Value::Int32(id), Value::Int64(views)],
            )
            .map_err(db)?;
        }
    }
    Ok(())
}
