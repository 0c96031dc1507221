//! Alorig Site Builder's tenant sites on the host (seed 000 "Alorig Site
//! Builder"; versioned site definitions from 002 L449–456 and
//! `DeploymentRecord` from 002 L257). Payload CMS stays a Node process outside
//! the host (`cms.alorig.com`); this component is the Django side's job.
//!
//! * `{sub}.sites.alorig.com/{path}` — the site's live version, pre-rendered by
//!   its build; an unknown (or nested) subdomain is 404. Pages are cached in
//!   Redis under `html:{site}:{version}:{path}`: a publish changes the version,
//!   so nothing is ever invalidated or stale.
//! * `api.alorig.com/builder/…` (writes need `Bearer $API_TOKEN` when set):
//!   `POST /builder/tenants`, `POST /builder/sites`, `PUT /builder/sites/{id}/draft`
//!   (a new version), `POST /builder/sites/{id}/deploy` (a `site_build` job:
//!   `202 {"deployment"}`), `POST /builder/sites/{id}/rollback`,
//!   `GET /builder/sites/{id}`, `POST /builder/demo`.
//! * Job `site_build`: renders every page of the version, then in the same
//!   transaction records the deployment and switches `current_version` — a
//!   reader sees all of the old site or all of the new one, never a mix.

pub mod render;

use guest_kit::{postgres as pg, redis, timers, wasip2};
use pg::Value;
use serde_json::{Value as Json, json};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct SiteBuilder;

const MIGRATIONS: &[&str] = &["CREATE TABLE tenants (
        id serial PRIMARY KEY,
        slug text UNIQUE NOT NULL CHECK (slug ~ '^[a-z0-9-]{2,40}$'),
        name text NOT NULL,
        plan text NOT NULL DEFAULT 'starter');
    CREATE TABLE sites (
        id serial PRIMARY KEY,
        tenant_id integer NOT NULL REFERENCES tenants(id),
        subdomain text UNIQUE NOT NULL CHECK (subdomain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
        title text NOT NULL,
        current_version integer);
    CREATE TABLE site_versions (
        site_id integer NOT NULL REFERENCES sites(id),
        version integer NOT NULL,
        site_json jsonb NOT NULL,
        pages jsonb NOT NULL,
        created_ms bigint NOT NULL,
        PRIMARY KEY (site_id, version));
    CREATE TABLE deployments (
        id bigserial PRIMARY KEY,
        site_id integer NOT NULL REFERENCES sites(id),
        version integer NOT NULL,
        kind text NOT NULL DEFAULT 'deploy',
        status text NOT NULL,
        job_id bigint,
        error text,
        created_ms bigint NOT NULL,
        deployed_at bigint);
    CREATE TABLE rendered_pages (
        site_id integer NOT NULL,
        version integer NOT NULL,
        path text NOT NULL,
        html text NOT NULL,
        PRIMARY KEY (site_id, version, path),
        FOREIGN KEY (site_id, version) REFERENCES site_versions(site_id, version))"];

type Answer = (u16, &'static str, String);

fn json_answer(status: u16, value: Json) -> Answer {
    (status, "application/json", format!("{value}\n"))
}

fn fail(status: u16, why: impl std::fmt::Display) -> Answer {
    json_answer(status, json!({"error": why.to_string()}))
}

fn db(e: pg::Error) -> Answer {
    match e {
        pg::Error::ConstraintViolation(c) => {
            fail(400, format!("refused by {}: {}", c.constraint, c.message))
        }
        pg::Error::Unavailable(_) | pg::Error::Timeout(_) => fail(503, e.describe()),
        other => fail(500, other.describe()),
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn first_id(rows: pg::RowSet) -> i64 {
    rows.rows.first().map(|r| int(&r[0])).unwrap_or(0)
}

fn sites_domain() -> String {
    std::env::var("SITES_DOMAIN")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "sites.alorig.com".into())
}

/// A tenant site's page.
fn serve_site(sub: &str, path: &str) -> Result<Answer, Answer> {
    let rows = pg::query(
        "SELECT id, current_version FROM sites WHERE subdomain = $1",
        &[Value::Text(sub.into())],
    )
    .map_err(db)?;
    let Some(row) = rows.rows.first() else {
        return Err((404, "text/plain", "no such site\n".into()));
    };
    let (site, version) = (int(&row[0]), int(&row[1]));
    if version == 0 {
        return Err((404, "text/plain", "this site is not published yet\n".into()));
    }
    let key = format!("html:{site}:{version}:{path}");
    if let Ok(Some(html)) = redis::get(&key) {
        return Ok((
            200,
            "text/html; charset=utf-8",
            String::from_utf8_lossy(&html).into_owned(),
        ));
    }
    let page = pg::query(
        "SELECT html FROM rendered_pages WHERE site_id = $1 AND version = $2 AND path = $3",
        &[
            Value::Int32(site as i32),
            Value::Int32(version as i32),
            Value::Text(path.into()),
        ],
    )
    .map_err(db)?;
    let Some(html) = page
        .rows
        .first()
        .and_then(|r| r[0].as_text())
        .map(str::to_string)
    else {
        return Err((404, "text/plain", "no such page\n".into()));
    };
    let _ = redis::set(&key, html.as_bytes(), redis::ttl(Some(3_600_000)));
    Ok((200, "text/html; charset=utf-8", html))
}

fn authorized(req: &IncomingRequest) -> bool {
    match std::env::var("API_TOKEN") {
        Ok(token) if !token.is_empty() => {
            guest_kit::header(req, "authorization").is_some_and(|h| h == format!("Bearer {token}"))
        }
        _ => true,
    }
}

fn body(req: &IncomingRequest) -> Result<Json, Answer> {
    serde_json::from_slice(&guest_kit::read_body(req))
        .map_err(|e| fail(400, format!("the body is not JSON: {e}")))
}

/// A new version of a site from `{title, pages}`; answers its number.
fn save_draft(site: i64, draft: &Json) -> Result<i64, Answer> {
    let pages = draft.get("pages").cloned().unwrap_or(Json::Null);
    render::check(&pages).map_err(|why| fail(400, why))?;
    let tx = pg::begin().map_err(db)?;
    let rows = tx
        .query(
            "SELECT title FROM sites WHERE id = $1 FOR UPDATE",
            &[Value::Int32(site as i32)],
        )
        .map_err(db)?;
    let Some(title) = rows
        .rows
        .first()
        .and_then(|r| r[0].as_text())
        .map(str::to_string)
    else {
        return Err(fail(404, "no such site"));
    };
    let title = draft
        .get("title")
        .and_then(Json::as_str)
        .unwrap_or(&title)
        .to_string();
    let next = first_id(
        tx.query(
            "SELECT coalesce(max(version), 0) + 1 FROM site_versions WHERE site_id = $1",
            &[Value::Int32(site as i32)],
        )
        .map_err(db)?,
    );
    tx.execute(
        "INSERT INTO site_versions (site_id, version, site_json, pages, created_ms) VALUES ($1, $2, $3, $4, $5)",
        &[Value::Int32(site as i32), Value::Int32(next as i32), Value::Jsonb(json!({"title": title}).to_string()),
          Value::Jsonb(pages.to_string()), Value::Int64(guest_kit::now_ms())],
    )
    .map_err(db)?;
    pg::Transaction::commit(tx).map_err(db)?;
    Ok(next)
}

/// Schedules the build of `version` (latest when `None`); answers the deployment id.
fn deploy(site: i64, version: Option<i64>) -> Result<Answer, Answer> {
    let latest = pg::query(
        "SELECT coalesce(max(version), 0) FROM site_versions WHERE site_id = $1",
        &[Value::Int32(site as i32)],
    )
    .map_err(db)?;
    let version = version.unwrap_or_else(|| first_id(latest));
    if version == 0 {
        return Err(fail(404, "no such site or version"));
    }
    let rows = pg::query(
        "INSERT INTO deployments (site_id, version, status, created_ms)
         SELECT site_id, version, 'queued', $3 FROM site_versions WHERE site_id = $1 AND version = $2 RETURNING id",
        &[Value::Int32(site as i32), Value::Int32(version as i32), Value::Int64(guest_kit::now_ms())],
    )
    .map_err(db)?;
    let Some(deployment) = rows.rows.first().map(|r| int(&r[0])) else {
        return Err(fail(404, "no such site or version"));
    };
    let job = timers::schedule(&timers::Job {
        name: "site_build".into(),
        payload: deployment.to_string().into_bytes(),
        when: timers::When::AfterMs(0),
        idempotency_key: Some(format!("build:{deployment}")),
    })
    .map_err(|e| fail(503, format!("scheduling the build: {e:?}")))?;
    pg::execute(
        "UPDATE deployments SET job_id = $1 WHERE id = $2",
        &[Value::Int64(job as i64), Value::Int64(deployment)],
    )
    .map_err(db)?;
    Ok(json_answer(
        202,
        json!({"deployment": deployment, "version": version, "job": job}),
    ))
}

/// The job: every page rendered, then the switch, in one transaction.
fn build(deployment: i64) -> Result<(), String> {
    let describe = |e: pg::Error| e.describe();
    let tx = pg::begin().map_err(describe)?;
    let rows = tx
        .query(
            "SELECT d.site_id, d.version, d.status, v.site_json, v.pages FROM deployments d
             JOIN site_versions v ON v.site_id = d.site_id AND v.version = d.version WHERE d.id = $1 FOR UPDATE OF d",
            &[Value::Int64(deployment)],
        )
        .map_err(describe)?;
    let Some(row) = rows.rows.first() else {
        return Err(format!("deployment {deployment} does not exist"));
    };
    if row[2].as_text() == Some("live") {
        return Ok(());
    }
    let (site, version) = (row[0].clone(), row[1].clone());
    let site_json: Json = row[3]
        .as_text()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let pages: Json = row[4]
        .as_text()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let title = site_json.get("title").and_then(Json::as_str).unwrap_or("");
    let nav: Vec<String> = pages
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for (path, blocks) in pages.as_object().into_iter().flatten() {
        tx.execute(
            "INSERT INTO rendered_pages (site_id, version, path, html) VALUES ($1, $2, $3, $4)
             ON CONFLICT (site_id, version, path) DO UPDATE SET html = EXCLUDED.html",
            &[
                site.clone(),
                version.clone(),
                Value::Text(path.clone()),
                Value::Text(render::page(title, &nav, blocks)),
            ],
        )
        .map_err(describe)?;
    }
    tx.execute(
        "UPDATE sites SET current_version = $2 WHERE id = $1",
        &[site, version],
    )
    .map_err(describe)?;
    tx.execute(
        "UPDATE deployments SET status = 'live', deployed_at = $2 WHERE id = $1",
        &[Value::Int64(deployment), Value::Int64(guest_kit::now_ms())],
    )
    .map_err(describe)?;
    pg::Transaction::commit(tx).map_err(describe)
}

/// Back to the version that was live before the current one (a recorded,
/// already-built deployment), in one statement.
fn rollback(site: i64) -> Result<Answer, Answer> {
    let tx = pg::begin().map_err(db)?;
    let rows = tx
        .query(
            "SELECT current_version FROM sites WHERE id = $1 FOR UPDATE",
            &[Value::Int32(site as i32)],
        )
        .map_err(db)?;
    let Some(current) = rows.rows.first().map(|r| int(&r[0])) else {
        return Err(fail(404, "no such site"));
    };
    let previous = tx
        .query(
            "SELECT version FROM deployments WHERE site_id = $1 AND status = 'live' AND version <> $2 ORDER BY deployed_at DESC, id DESC LIMIT 1",
            &[Value::Int32(site as i32), Value::Int32(current as i32)],
        )
        .map_err(db)?;
    let Some(to) = previous.rows.first().map(|r| int(&r[0])) else {
        return Err(fail(409, "no earlier live version to roll back to"));
    };
    tx.execute(
        "UPDATE sites SET current_version = $2 WHERE id = $1",
        &[Value::Int32(site as i32), Value::Int32(to as i32)],
    )
    .map_err(db)?;
    tx.execute(
        "INSERT INTO deployments (site_id, version, kind, status, created_ms, deployed_at) VALUES ($1, $2, 'rollback', 'live', $3, $3)",
        &[Value::Int32(site as i32), Value::Int32(to as i32), Value::Int64(guest_kit::now_ms())],
    )
    .map_err(db)?;
    pg::Transaction::commit(tx).map_err(db)?;
    Ok(json_answer(
        200,
        json!({"site": site, "version": to, "from": current}),
    ))
}

fn site_info(site: i64) -> Result<Answer, Answer> {
    let rows = pg::query(
        "SELECT subdomain, title, current_version FROM sites WHERE id = $1",
        &[Value::Int32(site as i32)],
    )
    .map_err(db)?;
    let Some(row) = rows.rows.first() else {
        return Err(fail(404, "no such site"));
    };
    let deployments = pg::query(
        "SELECT id, version, kind, status FROM deployments WHERE site_id = $1 ORDER BY id",
        &[Value::Int32(site as i32)],
    )
    .map_err(db)?;
    let list: Vec<Json> = deployments.rows.iter().map(|d| json!({"id": int(&d[0]), "version": int(&d[1]), "kind": d[2].as_text(), "status": d[3].as_text()})).collect();
    Ok(json_answer(
        200,
        json!({"id": site, "subdomain": row[0].as_text(), "title": row[1].as_text(), "current_version": row[2].as_i64(), "deployments": list}),
    ))
}

fn demo() -> Result<Answer, Answer> {
    for (slug, name, sub, blurb) in [
        ("acme", "Acme Bakery", "acme", "Fresh bread every morning."),
        ("beta", "Beta Studio", "beta", "Design for small brands."),
    ] {
        let exists = pg::query(
            "SELECT 1 FROM sites WHERE subdomain = $1",
            &[Value::Text(sub.into())],
        )
        .map_err(db)?;
        if !exists.rows.is_empty() {
            continue;
        }
        let tenant = first_id(pg::query(
            "INSERT INTO tenants (slug, name) VALUES ($1, $2) ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            &[Value::Text(slug.into()), Value::Text(name.into())],
        ).map_err(db)?);
        let site = first_id(
            pg::query(
                "INSERT INTO sites (tenant_id, subdomain, title) VALUES ($1, $2, $3) RETURNING id",
                &[
                    Value::Int32(tenant as i32),
                    Value::Text(sub.into()),
                    Value::Text(name.into()),
                ],
            )
            .map_err(db)?,
        );
        let pages = json!({
            "/": [{"type": "hero", "title": name, "subtitle": blurb}, {"type": "cta", "label": "Contact us", "href": "/contact"}],
            "/contact": [{"type": "text", "body": format!("Write to hello@{sub}.example")}],
        });
        save_draft(site, &json!({"pages": pages}))?;
        deploy(site, Some(1))?;
    }
    Ok(json_answer(200, json!({"demo": "ready"})))
}

fn api(req: &IncomingRequest, segments: &[&str]) -> Result<Answer, Answer> {
    let Some(("builder", rest)) = segments.split_first().map(|(f, r)| (*f, r)) else {
        return Err(fail(404, "not found"));
    };
    if !authorized(req) {
        return Err(fail(401, "missing or wrong API token"));
    }
    let id = |s: &str| s.parse::<i64>().map_err(|_| fail(404, "no such site"));
    match (req.method(), rest) {
        (Method::Post, ["tenants"]) => {
            let b = body(req)?;
            let rows = pg::query(
                "INSERT INTO tenants (slug, name) VALUES ($1, $2) RETURNING id",
                &[
                    Value::Text(b["slug"].as_str().unwrap_or("").into()),
                    Value::Text(b["name"].as_str().unwrap_or("").into()),
                ],
            )
            .map_err(db)?;
            Ok(json_answer(201, json!({"id": first_id(rows)})))
        }
        (Method::Post, ["sites"]) => {
            let b = body(req)?;
            let rows = pg::query(
                "INSERT INTO sites (tenant_id, subdomain, title) VALUES ($1, $2, $3) RETURNING id",
                &[
                    Value::Int32(b["tenant_id"].as_i64().unwrap_or(0) as i32),
                    Value::Text(b["subdomain"].as_str().unwrap_or("").into()),
                    Value::Text(b["title"].as_str().unwrap_or("").into()),
                ],
            )
            .map_err(db)?;
            Ok(json_answer(201, json!({"id": first_id(rows)})))
        }
        (Method::Put, ["sites", site, "draft"]) => {
            let version = save_draft(id(site)?, &body(req)?)?;
            Ok(json_answer(201, json!({"version": version})))
        }
        (Method::Post, ["sites", site, "deploy"]) => {
            let b: Json = serde_json::from_slice(&guest_kit::read_body(req)).unwrap_or_default();
            deploy(id(site)?, b["version"].as_i64())
        }
        (Method::Post, ["sites", site, "rollback"]) => rollback(id(site)?),
        (Method::Get, ["sites", site]) => site_info(id(site)?),
        (Method::Post, ["demo"]) => demo(),
        _ => Err(fail(404, "not found")),
    }
}

fn route(req: &IncomingRequest) -> Answer {
    if let Err(e) = pg::migrate("sitebuilder_migrations", MIGRATIONS) {
        return db(e);
    }
    let host = guest_kit::host(req);
    let path = guest_kit::path(req);
    let suffix = format!(".{}", sites_domain());
    let result = match host.strip_suffix(&suffix) {
        // One label only: `x.acme.sites.alorig.com` is nobody's site.
        Some(sub) if !sub.contains('.') && matches!(req.method(), Method::Get | Method::Head) => {
            serve_site(sub, &path)
        }
        Some(sub) if !sub.contains('.') => Err((405, "text/plain", "method not allowed\n".into())),
        Some(_) => Err((404, "text/plain", "no such site\n".into())),
        None => {
            let segments: Vec<&str> = path
                .trim_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .collect();
            api(req, &segments)
        }
    };
    result.unwrap_or_else(|e| e)
}

impl wasip2::exports::http::incoming_handler::Guest for SiteBuilder {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, content_type, body) = route(&request);
        guest_kit::respond(out, status, content_type, body.as_bytes());
    }
}

impl timers::TimerHandler for SiteBuilder {
    fn on_timer(name: String, _at: u64) -> Result<(), String> {
        Err(format!(
            "no timer named {name:?} (the seed's beat lists none)"
        ))
    }
}

impl timers::JobHandler for SiteBuilder {
    fn on_job(_id: u64, name: String, payload: Vec<u8>, _attempt: u32) -> Result<(), String> {
        pg::migrate("sitebuilder_migrations", MIGRATIONS).map_err(|e| e.describe())?;
        let arg: i64 = String::from_utf8_lossy(&payload)
            .parse()
            .map_err(|_| format!("job {name}: payload is not an id"))?;
        match name.as_str() {
            "site_build" => build(arg),
            other => Err(format!("no job named {other:?}")),
        }
    }
}

timers::export!(SiteBuilder);
wasip2::http::proxy::export!(SiteBuilder with_types_in wasip2);
