//! Products and the plan limits (seed 000 "Pricing": Free — 15 products; Pro —
//! unlimited, custom domain). Every change commits first and then invalidates
//! the store's cached pages ([`crate::pages::invalidate`]).

use crate::schema::slugify;
use guest_kit::postgres as pg;
use pg::Value;

pub const FREE_PRODUCTS: i64 = 15;

type Refusal = (u16, String);

fn db(e: pg::Error) -> Refusal {
    let status = if matches!(e, pg::Error::Unavailable(_) | pg::Error::Timeout(_)) {
        503
    } else {
        500
    };
    (status, e.describe())
}

/// Adds a product inside `tx` (the store row locked, so two adds cannot both
/// take the 15th place). Answers the product id.
pub fn add_product_in(
    tx: &pg::Transaction,
    store: i32,
    title: &str,
    price: &str,
    category: &str,
) -> Result<i32, Refusal> {
    let valid_price = !price.is_empty() && price.parse::<f64>().is_ok_and(|p| p >= 0.0 && p < 1e10);
    if title.trim().is_empty() || !valid_price {
        return Err((
            400,
            format!("a product needs a title and a price in rupees (got {title:?}, {price:?})"),
        ));
    }
    let rows = tx
        .query(
            "SELECT subscription_tier FROM stores WHERE id = $1 FOR UPDATE",
            &[Value::Int32(store)],
        )
        .map_err(db)?;
    let Some(tier) = rows
        .rows
        .first()
        .and_then(|r| r[0].as_text().map(str::to_string))
    else {
        return Err((404, "no such store".into()));
    };
    if tier == "free" {
        let count = tx
            .query(
                "SELECT count(*) FROM products WHERE store_id = $1 AND is_active",
                &[Value::Int32(store)],
            )
            .map_err(db)?;
        let n = count.rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0);
        if n >= FREE_PRODUCTS {
            return Err((
                402,
                format!(
                    "the Free plan lists up to {FREE_PRODUCTS} products; upgrade to Pro (Rs. 2,500/month) for more"
                ),
            ));
        }
    }
    let category_id = if category.is_empty() {
        Value::Null
    } else {
        let c = tx
            .query(
                "INSERT INTO categories (store_id, name, slug) VALUES ($1, $2, $3)
                 ON CONFLICT (store_id, slug) DO UPDATE SET name = categories.name RETURNING id",
                &[
                    Value::Int32(store),
                    Value::Text(category.into()),
                    Value::Text(slugify(category)),
                ],
            )
            .map_err(db)?;
        c.rows.first().map(|r| r[0].clone()).unwrap_or(Value::Null)
    };
    let base = slugify(title);
    let taken = tx
        .query("SELECT count(*) FROM products WHERE store_id = $1 AND (slug = $2 OR slug LIKE $2 || '-%')", &[Value::Int32(store), Value::Text(base.clone())])
        .map_err(db)?;
    let n = taken.rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0);
    let slug = if n == 0 {
        base
    } else {
        format!("{base}-{}", n + 1)
    };
    let inserted = tx
        .query(
            "INSERT INTO products (store_id, title, slug, price, category_id) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[Value::Int32(store), Value::Text(title.into()), Value::Text(slug), Value::Numeric(price.into()), category_id.clone()],
        )
        .map_err(db)?;
    if !matches!(category_id, Value::Null) {
        tx.execute(
            "UPDATE categories SET product_count = product_count + 1 WHERE id = $1",
            &[category_id],
        )
        .map_err(db)?;
    }
    Ok(inserted
        .rows
        .first()
        .and_then(|r| match r[0] {
            Value::Int32(i) => Some(i),
            _ => None,
        })
        .unwrap_or(0))
}

/// `POST /v1/stores/{slug}/products`.
pub fn add_product(
    store_slug: &str,
    title: &str,
    price: &str,
    category: &str,
) -> Result<i32, Refusal> {
    let tx = pg::begin().map_err(db)?;
    let rows = tx
        .query(
            "SELECT id FROM stores WHERE slug = $1",
            &[Value::Text(store_slug.into())],
        )
        .map_err(db)?;
    let Some(store) = rows.rows.first().and_then(|r| match r[0] {
        Value::Int32(i) => Some(i),
        _ => None,
    }) else {
        return Err((404, "no such store".into()));
    };
    let id = add_product_in(&tx, store, title, price, category)?;
    pg::Transaction::commit(tx).map_err(db)?;
    crate::pages::invalidate(store).map_err(|e| (503, e))?;
    Ok(id)
}

/// `PATCH /v1/products/{id}`: price, title, is_active.
pub fn update_product(
    id: i32,
    price: Option<&str>,
    title: Option<&str>,
    active: Option<bool>,
) -> Result<(), Refusal> {
    if let Some(p) = price
        && !p.parse::<f64>().is_ok_and(|p| (0.0..1e10).contains(&p))
    {
        return Err((400, format!("price {p:?} must be a number of rupees")));
    }
    let rows = pg::query(
        "UPDATE products SET price = coalesce($2::text::numeric, price), title = coalesce($3, title), is_active = coalesce($4, is_active)
         WHERE id = $1 RETURNING store_id",
        &[
            Value::Int32(id),
            price.map(|p| Value::Text(p.into())).unwrap_or(Value::Null),
            title.map(|t| Value::Text(t.into())).unwrap_or(Value::Null),
            active.map(Value::Boolean).unwrap_or(Value::Null),
        ],
    )
    .map_err(|e| match e {
        pg::Error::ConstraintViolation(c) => (400, c.message),
        other => db(other),
    })?;
    let Some(store) = rows.rows.first().and_then(|r| match r[0] {
        Value::Int32(i) => Some(i),
        _ => None,
    }) else {
        return Err((404, "no such product".into()));
    };
    crate::pages::invalidate(store).map_err(|e| (503, e))
}
