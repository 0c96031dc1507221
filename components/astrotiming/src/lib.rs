//! AstroTiming's daily planetary cache (the seed's `precompute_daily_planetary_data`
//! Celery beat task, now a host timer) on the app's own PostgreSQL database:
//!
//! * timer `precompute_daily_planetary_data` (00:00 UTC, and once at deploy
//!   through `catch_up = "once"`): sunrise, sunset and the 24 planetary hours of
//!   the day for every saved location, into `planetary_cache`;
//! * timer `cleanup_old_queries` (weekly): forgets logged queries after 90 days
//!   and cached days after 30;
//! * job `compute-location`: `POST /locations` saves a place and schedules it,
//!   so a new location's day is cached at once, not at the next midnight;
//! * `GET /now?lat=&lon=` — the current planetary hour there (JSON; from the
//!   cache when the place is saved, computed otherwise); `GET /sun?lat=&lon=&date=`
//!   — sunrise and sunset; `GET /locations/{id}/today` — the cached day;
//! * the Developer API under `/v1/` ([`v1`]): the Timing Quality Score
//!   ([`tqs`], from planet positions, [`planets`]) and the forward search,
//!   behind API keys with daily limits ([`keys`]).

pub mod astro;
mod keys;
pub mod planets;
pub mod tqs;
mod v1;

use guest_kit::timers::{self, Job, When};
use guest_kit::{postgres as pg, wasip2};
use pg::Value;
use serde_json::{Value as Json, json};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct AstroTiming;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS locations (
        id serial PRIMARY KEY,
        name text NOT NULL,
        lat double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
        lon double precision NOT NULL CHECK (lon BETWEEN -180 AND 180))",
    "CREATE TABLE IF NOT EXISTS planetary_cache (
        location_id int NOT NULL REFERENCES locations(id) ON DELETE CASCADE,
        day date NOT NULL,
        sunrise_ms bigint NOT NULL,
        sunset_ms bigint NOT NULL,
        next_sunrise_ms bigint NOT NULL,
        ruler text NOT NULL,
        hours jsonb NOT NULL,
        computed_ms bigint NOT NULL,
        PRIMARY KEY (location_id, day))",
    "CREATE TABLE IF NOT EXISTS timing_queries (
        id bigserial PRIMARY KEY,
        lat double precision NOT NULL,
        lon double precision NOT NULL,
        asked_ms bigint NOT NULL,
        planet text NOT NULL)",
    // The TQS answers (seed: `TimingQuery (tqs_score, breakdown)`).
    "ALTER TABLE timing_queries ADD COLUMN IF NOT EXISTS activity text,
        ADD COLUMN IF NOT EXISTS tqs_score double precision, ADD COLUMN IF NOT EXISTS breakdown jsonb",
    // Last: its presence says the schema is complete.
    "CREATE INDEX IF NOT EXISTS timing_queries_asked ON timing_queries (asked_ms)",
];

const MS_PER_DAY: i64 = 86_400_000;

pub type Failure = (u16, String);

pub fn db(e: pg::Error) -> Failure {
    let status = if matches!(e, pg::Error::Unavailable(_) | pg::Error::Timeout(_)) {
        503
    } else {
        500
    };
    (status, e.describe())
}

/// Creates the tables on first use: a cheap check first (every request runs
/// in a fresh instance), then the DDL under an advisory lock, because
/// concurrent `CREATE TABLE IF NOT EXISTS` race in PostgreSQL's catalogs.
pub fn schema() -> Result<(), Failure> {
    let done = pg::query(
        "SELECT to_regclass('timing_queries_asked') IS NOT NULL",
        &[],
    )
    .map_err(db)?;
    if matches!(
        done.rows.first().and_then(|r| r.first()),
        Some(Value::Boolean(true))
    ) {
        return Ok(());
    }
    let tx = pg::begin().map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock(727003)", &[])
        .map_err(db)?;
    for statement in SCHEMA {
        tx.execute(statement, &[]).map_err(db)?;
    }
    pg::Transaction::commit(tx).map_err(db)
}

fn hours_json(day: &astro::PlanetaryDay) -> Json {
    Json::Array(
        day.hours
            .iter()
            .map(|h| json!({"hour": h.number, "planet": h.planet, "start_ms": h.start_ms, "end_ms": h.end_ms}))
            .collect(),
    )
}

/// Computes and stores one location's planetary day for UTC date `days`.
fn cache_day(location: i32, lat: f64, lon: f64, days: i64) -> Result<bool, Failure> {
    let Some(day) = astro::planetary_day(days, lat, lon) else {
        return Ok(false);
    };
    pg::execute(
        "INSERT INTO planetary_cache (location_id, day, sunrise_ms, sunset_ms, next_sunrise_ms, ruler, hours, computed_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (location_id, day) DO UPDATE SET sunrise_ms = EXCLUDED.sunrise_ms, sunset_ms = EXCLUDED.sunset_ms,
           next_sunrise_ms = EXCLUDED.next_sunrise_ms, ruler = EXCLUDED.ruler, hours = EXCLUDED.hours,
           computed_ms = EXCLUDED.computed_ms",
        &[
            Value::Int32(location),
            Value::Date(days as i32),
            Value::Int64(day.sunrise_ms),
            Value::Int64(day.sunset_ms),
            Value::Int64(day.next_sunrise_ms),
            Value::Text(day.ruler.into()),
            Value::Jsonb(hours_json(&day).to_string()),
            Value::Int64(guest_kit::now_ms()),
        ],
    )
    .map_err(db)?;
    Ok(true)
}

/// (id, lat, lon) of the saved locations, or of one.
fn locations(only: Option<i32>) -> Result<Vec<(i32, f64, f64)>, Failure> {
    let rows = match only {
        Some(id) => pg::query(
            "SELECT id, lat, lon FROM locations WHERE id = $1",
            &[Value::Int32(id)],
        ),
        None => pg::query("SELECT id, lat, lon FROM locations ORDER BY id", &[]),
    }
    .map_err(db)?;
    Ok(rows
        .rows
        .iter()
        .filter_map(|r| match (&r[0], &r[1], &r[2]) {
            (Value::Int32(id), Value::Float64(lat), Value::Float64(lon)) => Some((*id, *lat, *lon)),
            _ => None,
        })
        .collect())
}

/// The daily precomputation: for every saved location (or one), the planetary
/// day holding instant `t` and the one after. At 00:00 UTC the day holding the
/// instant is the one that began at the last sunrise: yesterday's west of about
/// 0°, today's in the far east; the next one covers the rest of the UTC day.
fn precompute(t: i64, only: Option<i32>) -> Result<usize, Failure> {
    schema()?;
    let mut cached = 0;
    for (id, lat, lon) in locations(only)? {
        let Some(day) = astro::day_at(t, lat, lon) else {
            continue;
        };
        for days in [day.days, day.days + 1] {
            cached += usize::from(cache_day(id, lat, lon, days)?);
        }
    }
    Ok(cached)
}

impl timers::TimerHandler for AstroTiming {
    fn on_timer(name: String, scheduled_at_ms: u64) -> Result<(), String> {
        let result = match name.as_str() {
            "precompute_daily_planetary_data" => {
                precompute(scheduled_at_ms as i64, None).map(|_| ())
            }
            "cleanup_old_queries" => schema().and_then(|()| {
                let cutoff_days = scheduled_at_ms as i64 / MS_PER_DAY - 30;
                pg::execute(
                    "DELETE FROM planetary_cache WHERE day < $1",
                    &[Value::Date(cutoff_days as i32)],
                )
                .map_err(db)?;
                pg::execute(
                    "DELETE FROM timing_queries WHERE asked_ms < $1",
                    &[Value::Int64(scheduled_at_ms as i64 - 90 * MS_PER_DAY)],
                )
                .map_err(db)?;
                Ok(())
            }),
            other => return Err(format!("no timer named {other}")),
        };
        result.map_err(|(_, why)| why)
    }
}

impl timers::JobHandler for AstroTiming {
    fn on_job(_id: u64, name: String, payload: Vec<u8>, _attempt: u32) -> Result<(), String> {
        match name.as_str() {
            "compute-location" => {
                let id: i32 = String::from_utf8_lossy(&payload)
                    .parse()
                    .map_err(|_| "the payload is not a location id".to_string())?;
                precompute(guest_kit::now_ms(), Some(id))
                    .map(|_| ())
                    .map_err(|(_, why)| why)
            }
            other => Err(format!("no job named {other}")),
        }
    }
}

pub fn coordinates(req: &IncomingRequest) -> Result<(f64, f64), Failure> {
    let get = |name: &str| {
        guest_kit::query_param(req, name)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    match (get("lat"), get("lon")) {
        (Some(lat), Some(lon))
            if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
        {
            Ok((lat, lon))
        }
        _ => Err((
            400,
            "give lat (-90..90) and lon (-180..180) in degrees, east positive".into(),
        )),
    }
}

/// The saved location at exactly these coordinates, if any.
fn saved_at(lat: f64, lon: f64) -> Result<Option<i32>, Failure> {
    let rows = pg::query(
        "SELECT id FROM locations WHERE abs(lat - $1) < 1e-9 AND abs(lon - $2) < 1e-9 ORDER BY id LIMIT 1",
        &[Value::Float64(lat), Value::Float64(lon)],
    )
    .map_err(db)?;
    Ok(rows
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .map(|id| id as i32))
}

/// The cached day of a location holding instant `t`, if the timer or the job stored it.
fn cached_day(location: i32, t: i64) -> Result<Option<Json>, Failure> {
    let rows = pg::query(
        "SELECT day, sunrise_ms, sunset_ms, next_sunrise_ms, ruler, hours::text FROM planetary_cache
         WHERE location_id = $1 AND sunrise_ms <= $2 AND $2 < next_sunrise_ms",
        &[Value::Int32(location), Value::Int64(t)],
    )
    .map_err(db)?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let day = match row[0] {
        Value::Date(d) => i64::from(d),
        _ => return Ok(None),
    };
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let hours: Json = serde_json::from_str(row[5].as_text().unwrap_or("[]")).unwrap_or(Json::Null);
    Ok(Some(json!({
        "date": astro::date_text(day),
        "sunrise_ms": int(&row[1]),
        "sunset_ms": int(&row[2]),
        "next_sunrise_ms": int(&row[3]),
        "day_ruler": row[4].as_text().unwrap_or(""),
        "hours": hours,
    })))
}

fn current_hour(req: &IncomingRequest) -> Result<Json, Failure> {
    let (lat, lon) = coordinates(req)?;
    let t = guest_kit::query_param(req, "at_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(guest_kit::now_ms);
    schema()?;
    let location = saved_at(lat, lon)?;
    let (day, cached) = match location.map(|id| cached_day(id, t)).transpose()?.flatten() {
        Some(day) => (day, true),
        None => {
            let day = astro::day_at(t, lat, lon).ok_or((
                422,
                "the sun does not rise or set here around this date".to_string(),
            ))?;
            (
                json!({
                    "date": astro::date_text(day.days),
                    "sunrise_ms": day.sunrise_ms,
                    "sunset_ms": day.sunset_ms,
                    "next_sunrise_ms": day.next_sunrise_ms,
                    "day_ruler": day.ruler,
                    "hours": hours_json(&day),
                    "polar": day.polar,
                }),
                false,
            )
        }
    };
    let hour = day["hours"]
        .as_array()
        .and_then(|hours| {
            hours
                .iter()
                .find(|h| h["start_ms"].as_i64() <= Some(t) && Some(t) < h["end_ms"].as_i64())
        })
        .cloned()
        .ok_or((500, "no planetary hour holds this instant".to_string()))?;
    let planet = hour["planet"].as_str().unwrap_or("").to_string();
    pg::execute(
        "INSERT INTO timing_queries (lat, lon, asked_ms, planet) VALUES ($1, $2, $3, $4)",
        &[
            Value::Float64(lat),
            Value::Float64(lon),
            Value::Int64(guest_kit::now_ms()),
            Value::Text(planet.clone()),
        ],
    )
    .map_err(db)?;
    Ok(json!({
        "at_ms": t,
        "planet": planet,
        "hour": hour["hour"],
        "period": if hour["hour"].as_u64() <= Some(12) { "day" } else { "night" },
        "start_ms": hour["start_ms"],
        "end_ms": hour["end_ms"],
        "day_ruler": day["day_ruler"],
        "date": day["date"],
        "sunrise_ms": day["sunrise_ms"],
        "sunset_ms": day["sunset_ms"],
        "location_id": location,
        "cached": cached,
        "polar": day.get("polar").cloned().unwrap_or(Json::Null),
    }))
}

fn add_location(req: &IncomingRequest) -> Result<Json, Failure> {
    let (lat, lon) = coordinates(req)?;
    let name = guest_kit::query_param(req, "name").unwrap_or_else(|| "unnamed".into());
    schema()?;
    let rows = pg::query(
        "INSERT INTO locations (name, lat, lon) VALUES ($1, $2, $3) RETURNING id",
        &[Value::Text(name), Value::Float64(lat), Value::Float64(lon)],
    )
    .map_err(db)?;
    let id = rows
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .ok_or((500, "no id".to_string()))?;
    let job = Job {
        name: "compute-location".into(),
        payload: id.to_string().into_bytes(),
        when: When::AfterMs(0),
        idempotency_key: Some(format!("location-{id}")),
    };
    let job = timers::schedule(&job)
        .map_err(|e| (503, format!("cannot schedule the computation: {e:?}")))?;
    Ok(json!({"id": id, "job": job}))
}

fn handle(req: &IncomingRequest) -> Result<Json, Failure> {
    let path = guest_kit::path(req);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, ["now"]) => current_hour(req),
        (Method::Get, ["sun"]) => {
            let (lat, lon) = coordinates(req)?;
            let days = guest_kit::query_param(req, "date")
                .map(|d| astro::parse_date(&d).ok_or((400, "date must be YYYY-MM-DD".to_string())))
                .transpose()?
                .unwrap_or_else(|| guest_kit::now_ms() / MS_PER_DAY);
            Ok(match astro::sun(days, lat, lon) {
                astro::Sun::RiseSet(rise, set) => {
                    json!({"date": astro::date_text(days), "sunrise_ms": rise, "sunset_ms": set})
                }
                astro::Sun::PolarDay(noon) => {
                    json!({"date": astro::date_text(days), "sunrise_ms": null, "sunset_ms": null, "polar": "polar day", "solar_noon_ms": noon})
                }
                astro::Sun::PolarNight(noon) => {
                    json!({"date": astro::date_text(days), "sunrise_ms": null, "sunset_ms": null, "polar": "polar night", "solar_noon_ms": noon})
                }
            })
        }
        (Method::Get, ["v1", route @ ..]) | (Method::Post, ["v1", route @ ..]) => {
            v1::handle(req, route)
        }
        (Method::Post, ["locations"]) => add_location(req),
        (Method::Get, ["locations", id, "today"]) => {
            let id: i32 = id
                .parse()
                .map_err(|_| (404, "no such location".to_string()))?;
            schema()?;
            cached_day(id, guest_kit::now_ms())?.ok_or((404, "not cached yet".to_string()))
        }
        _ => Err((404, "not found".into())),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for AstroTiming {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        match handle(&req) {
            Ok(body) => {
                guest_kit::respond(out, 200, "application/json", body.to_string().as_bytes())
            }
            Err((status, why)) => guest_kit::respond(
                out,
                status,
                "application/json",
                json!({"error": why}).to_string().as_bytes(),
            ),
        }
    }
}

timers::export!(AstroTiming);
wasip2::http::proxy::export!(AstroTiming with_types_in wasip2);
