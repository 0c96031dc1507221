//! Snapify's schema (seed 000 "Core Data Models"), applied by the component
//! itself (`guest_kit::postgres::migrate`), and the demo stores.

use guest_kit::postgres as pg;
use pg::Value;

const MIGRATIONS: &[&str] = &[
    "CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE TABLE stores (
        id serial PRIMARY KEY,
        seller_phone_hash text,
        name text NOT NULL,
        slug text UNIQUE NOT NULL CHECK (slug ~ '^[a-z0-9-]{2,60}$'),
        city text NOT NULL DEFAULT '',
        category text NOT NULL DEFAULT '',
        custom_domain text UNIQUE,
        template text NOT NULL DEFAULT 'classic',
        subscription_tier text NOT NULL DEFAULT 'free' CHECK (subscription_tier IN ('free', 'pro')),
        is_verified boolean NOT NULL DEFAULT false,
        about text NOT NULL DEFAULT '');
    CREATE TABLE categories (
        id serial PRIMARY KEY,
        store_id integer NOT NULL REFERENCES stores(id),
        name text NOT NULL,
        slug text NOT NULL,
        product_count integer NOT NULL DEFAULT 0,
        UNIQUE (store_id, slug));
    CREATE TABLE products (
        id serial PRIMARY KEY,
        store_id integer NOT NULL REFERENCES stores(id),
        title text NOT NULL,
        slug text NOT NULL,
        description text NOT NULL DEFAULT '',
        price numeric(12,2) NOT NULL CHECK (price >= 0),
        images jsonb NOT NULL DEFAULT '[]',
        category_id integer REFERENCES categories(id),
        variants jsonb NOT NULL DEFAULT '[]',
        is_active boolean NOT NULL DEFAULT true,
        seo_meta jsonb NOT NULL DEFAULT '{}',
        UNIQUE (store_id, slug));
    CREATE INDEX products_title_trgm ON products USING gin (title gin_trgm_ops);
    CREATE TABLE orders (
        id serial PRIMARY KEY,
        store_id integer NOT NULL REFERENCES stores(id),
        buyer_name text NOT NULL,
        buyer_phone text NOT NULL,
        products jsonb NOT NULL,
        total numeric(12,2) NOT NULL,
        status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'confirmed', 'shipped', 'delivered', 'cancelled')),
        tracking_number text);
    CREATE TABLE whatsapp_sessions (
        id serial PRIMARY KEY,
        store_id integer REFERENCES stores(id),
        phone_hash text UNIQUE NOT NULL,
        state text NOT NULL,
        draft jsonb NOT NULL DEFAULT '{}',
        last_message_at bigint NOT NULL);
    CREATE TABLE whatsapp_messages (
        id text PRIMARY KEY,
        job_id bigint,
        processed boolean NOT NULL DEFAULT false,
        reply text,
        replied boolean NOT NULL DEFAULT false,
        received_ms bigint NOT NULL);
    CREATE TABLE analytics_daily (
        store_id integer NOT NULL REFERENCES stores(id),
        day date NOT NULL,
        page_views bigint NOT NULL,
        PRIMARY KEY (store_id, day));
    CREATE TABLE sitemaps (
        store_id integer PRIMARY KEY REFERENCES stores(id),
        xml text NOT NULL,
        generated_ms bigint NOT NULL);
    CREATE TABLE hub_pages (
        slug text PRIMARY KEY,
        title text NOT NULL,
        store_ids integer[] NOT NULL,
        generated_ms bigint NOT NULL);
    CREATE TABLE city_pages (
        store_id integer NOT NULL REFERENCES stores(id),
        city text NOT NULL,
        generated_ms bigint NOT NULL,
        PRIMARY KEY (store_id, city))",
];

pub fn migrate() -> Result<(), pg::Error> {
    pg::migrate("snapify_migrations", MIGRATIONS)
}

/// (slug, name, city, category, tier, custom domain, about, products (title, price, category))
type DemoStore = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static [(&'static str, &'static str, &'static str)],
);

const DEMO: &[DemoStore] = &[
    (
        "silk-house",
        "Silk House",
        "Lahore",
        "clothing",
        "pro",
        Some("silkhouse.pk"),
        "Hand-finished silk from Lahore since 1998.",
        &[
            ("Embroidered Lawn Suit", "4500.00", "Lawn"),
            ("Silk Dupatta", "2500.00", "Dupattas"),
            ("Chiffon Dupatta", "1800.00", "Dupattas"),
            ("Bridal Lehenga", "85000.00", "Bridal"),
            ("Cotton Kurta", "3200.00", "Lawn"),
        ],
    ),
    (
        "karachi-kicks",
        "Karachi Kicks",
        "Karachi",
        "shoes",
        "free",
        None,
        "Sneakers, delivered across Sindh.",
        &[
            ("Running Sneakers", "6500.00", "Sneakers"),
            ("Leather Chappal", "2200.00", "Chappals"),
            ("Kids Sneakers", "3900.00", "Sneakers"),
        ],
    ),
];

pub fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').chars().take(60).collect()
}

/// The demo stores, once (idempotent).
pub fn demo() -> Result<(), pg::Error> {
    let tx = pg::begin()?;
    for (slug, name, city, category, tier, domain, about, products) in DEMO {
        tx.execute(
            "INSERT INTO stores (name, slug, city, category, subscription_tier, custom_domain, about, is_verified)
             VALUES ($1, $2, $3, $4, $5, $6, $7, true) ON CONFLICT (slug) DO NOTHING",
            &[Value::Text(name.to_string()), Value::Text(slug.to_string()), Value::Text(city.to_string()), Value::Text(category.to_string()),
              Value::Text(tier.to_string()), domain.map(|d| Value::Text(d.to_string())).unwrap_or(Value::Null), Value::Text(about.to_string())],
        )?;
        for (title, price, cat) in *products {
            tx.execute(
                "INSERT INTO categories (store_id, name, slug) SELECT id, $2, $3 FROM stores WHERE slug = $1 ON CONFLICT DO NOTHING",
                &[Value::Text(slug.to_string()), Value::Text(cat.to_string()), Value::Text(slugify(cat))],
            )?;
            tx.execute(
                "INSERT INTO products (store_id, title, slug, description, price, category_id, images)
                 SELECT s.id, $2, $3, $4, $5, c.id, $6 FROM stores s JOIN categories c ON c.store_id = s.id AND c.slug = $7
                 WHERE s.slug = $1 ON CONFLICT DO NOTHING",
                &[Value::Text(slug.to_string()), Value::Text(title.to_string()), Value::Text(slugify(title)),
                  Value::Text(format!("{title} from {name}, {city}.")), Value::Numeric(price.to_string()),
                  Value::Jsonb(format!("[\"https://res.cloudinary.com/snapify/image/upload/w_480,f_auto/{}.jpg\"]", slugify(title))),
                  Value::Text(slugify(cat))],
            )?;
        }
    }
    tx.execute(
        "UPDATE categories c SET product_count = (SELECT count(*) FROM products p WHERE p.category_id = c.id AND p.is_active)",
        &[],
    )?;
    pg::Transaction::commit(tx)
}
