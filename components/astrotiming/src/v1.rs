//! The Developer API (seed: "TQS scoring, forward search, bulk queries"),
//! every route behind an API key and its daily limit ([`crate::keys`]):
//!
//! * `GET /v1/tqs?activity=commerce&lat=&lon=[&at_ms=]` — the score of a moment
//!   (default now) with its factor breakdown and the planetary hour it is in;
//! * `GET /v1/search?activity=&lat=&lon=[&from_ms=][&days=7][&top=5]` — the
//!   forward search: every planetary hour of the next `days` (1–14) scored at
//!   its middle, the best `top` (1–20) returned, best first;
//! * `GET /v1/activities` — the activity words and their planets.
//!
//! Each TQS answer is logged in `timing_queries` with its score and breakdown.

use crate::{Failure, astro, keys, tqs};
use guest_kit::postgres::{self as pg, Value};
use guest_kit::wasip2::http::types::IncomingRequest;
use serde_json::{Value as Json, json};

fn number<T: std::str::FromStr>(req: &IncomingRequest, name: &str) -> Option<T> {
    guest_kit::query_param(req, name).and_then(|v| v.parse().ok())
}

fn activity(req: &IncomingRequest) -> Result<(String, &'static str), Failure> {
    let activity = guest_kit::query_param(req, "activity").ok_or((
        400,
        "give an activity (GET /v1/activities lists them)".to_string(),
    ))?;
    let planet = tqs::activity_planet(&activity).ok_or((
        400,
        format!("unknown activity {activity:?} (GET /v1/activities lists them)"),
    ))?;
    Ok((activity, planet))
}

fn log(
    lat: f64,
    lon: f64,
    planet: &str,
    activity: &str,
    score: f64,
    breakdown: &Json,
) -> Result<(), Failure> {
    pg::execute(
        "INSERT INTO timing_queries (lat, lon, asked_ms, planet, activity, tqs_score, breakdown) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Value::Float64(lat),
            Value::Float64(lon),
            Value::Int64(guest_kit::now_ms()),
            Value::Text(planet.into()),
            Value::Text(activity.into()),
            Value::Float64(score),
            Value::Jsonb(breakdown.to_string()),
        ],
    )
    .map_err(crate::db)?;
    Ok(())
}

fn hour_json(day: &astro::PlanetaryDay, hour: &astro::Hour) -> Json {
    json!({"hour": hour.number, "planet": hour.planet, "start_ms": hour.start_ms, "end_ms": hour.end_ms,
           "day_ruler": day.ruler, "date": astro::date_text(day.days), "polar": day.polar})
}

fn score_moment(req: &IncomingRequest) -> Result<Json, Failure> {
    let (activity, key) = activity(req)?;
    let (lat, lon) = crate::coordinates(req)?;
    let t = number(req, "at_ms").unwrap_or_else(guest_kit::now_ms);
    let day = astro::day_at(t, lat, lon)
        .ok_or((422, "no planetary day holds this instant here".to_string()))?;
    let hour = day
        .hours
        .iter()
        .find(|h| h.start_ms <= t && t < h.end_ms)
        .ok_or((500, "no planetary hour holds this instant".to_string()))?;
    let (score, band, breakdown) = tqs::score(t, hour.planet, day.ruler, key);
    crate::schema()?;
    log(lat, lon, hour.planet, &activity, score, &breakdown)?;
    Ok(
        json!({"at_ms": t, "activity": activity, "activity_planet": key, "score": score, "band": band,
              "breakdown": breakdown, "planetary_hour": hour_json(&day, hour)}),
    )
}

fn search(req: &IncomingRequest) -> Result<Json, Failure> {
    let (activity, key) = activity(req)?;
    let (lat, lon) = crate::coordinates(req)?;
    let from = number(req, "from_ms").unwrap_or_else(guest_kit::now_ms);
    let days: i64 = number(req, "days").unwrap_or(7);
    let top: usize = number(req, "top").unwrap_or(5);
    if !(1..=14).contains(&days) || !(1..=20).contains(&top) {
        return Err((400, "days must be 1..14 and top 1..20".into()));
    }
    let first = astro::day_at(from, lat, lon)
        .ok_or((422, "no planetary day holds this instant here".to_string()))?;
    let until = from + days * 86_400_000;
    let mut windows = Vec::new();
    for d in first.days..=first.days + days {
        let Some(day) = astro::planetary_day(d, lat, lon) else {
            continue;
        };
        for hour in &day.hours {
            let middle = (hour.start_ms + hour.end_ms) / 2;
            if middle < from || middle >= until {
                continue;
            }
            let (score, band, breakdown) = tqs::score(middle, hour.planet, day.ruler, key);
            windows.push((
                score,
                middle,
                json!({"score": score, "band": band, "scored_at_ms": middle,
                "planetary_hour": hour_json(&day, hour), "breakdown": breakdown}),
            ));
        }
    }
    let scanned = windows.len();
    windows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    windows.truncate(top);
    if let Some((score, _, best)) = windows.first() {
        crate::schema()?;
        log(
            lat,
            lon,
            best["planetary_hour"]["planet"].as_str().unwrap_or(""),
            &activity,
            *score,
            &best["breakdown"],
        )?;
    }
    Ok(
        json!({"activity": activity, "activity_planet": key, "from_ms": from, "days": days, "hours_scanned": scanned,
              "best": windows.into_iter().map(|(_, _, w)| w).collect::<Vec<_>>()}),
    )
}

/// The `/v1/…` routes: the key is checked (and counted) first.
pub fn handle(req: &IncomingRequest, route: &[&str]) -> Result<Json, Failure> {
    if route == ["keys"] {
        return keys::issue(req);
    }
    keys::admit(req)?;
    match route {
        ["tqs"] => score_moment(req),
        ["search"] => search(req),
        ["activities"] => Ok(tqs::activities()),
        _ => Err((404, "not found".into())),
    }
}
