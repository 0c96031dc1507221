//! The Timing Quality Score (seed, AstroTiming Layer 3): six factors with the
//! seed's weights — Hour Ruler Match 30, Day Ruler Harmony 15, Planetary
//! Dignity 15, Lunar Condition 15, Planetary Aspects 15, Retrograde Status 10
//! — and its bands (80–100 Excellent, 60–79 Good, 40–59 Neutral, 20–39
//! Unfavorable, 0–19 Avoid). The seed gives weights, not rules; each factor is
//! a fraction in [0, 1] times its weight, decided as follows:
//!
//! * **hour ruler match**: the hour's ruler is the activity's planet (the Al
//!   Saat map, [`activity_planet`]) → 1; else by the classical friendship of
//!   the ruler toward that planet: friend 0.5, neutral 0.25, enemy 0;
//! * **day ruler harmony**: day ruler = hour ruler → 1; friend 0.75, neutral 0.5, enemy 0.25;
//! * **dignity** of the hour ruler by sign: domicile 1, exaltation 0.85,
//!   peregrine 0.5, detriment 0.15, fall 0;
//! * **lunar condition**: half the Moon's phase (waxing 1, waning 0.5, within
//!   12° of the Sun 0), half its aspect to the hour ruler (trine, sextile or
//!   conjunction 1; none 0.5; square or opposition 0);
//! * **aspects** (orb 6°) of the hour ruler to the benefics Venus and Jupiter
//!   (+0.25 each harmonious or conjunct) and the malefics Mars and Saturn
//!   (−0.25 each square, opposition or conjunction), from 0.5, clamped;
//! * **retrograde**: the hour ruler or the activity's planet retrograde → 0, else 1.

use crate::planets::{self, aspect, longitude, retrograde};
use serde_json::{Value as Json, json};

pub const WEIGHTS: [(&str, f64); 6] = [
    ("hour_ruler_match", 30.0),
    ("day_ruler_harmony", 15.0),
    ("dignity", 15.0),
    ("lunar", 15.0),
    ("aspects", 15.0),
    ("retrograde", 10.0),
];

/// The activity words of the seed's Planet-Activity Mapping, to their planet.
const ACTIVITIES: [(&str, &[&str]); 7] = [
    (
        "Sun",
        &[
            "leadership",
            "health",
            "government",
            "recognition",
            "authority",
            "success",
        ],
    ),
    (
        "Moon",
        &["travel", "public", "social_media", "domestic", "emotional"],
    ),
    (
        "Mars",
        &["action", "competition", "courage", "sport", "bold_ventures"],
    ),
    (
        "Mercury",
        &[
            "writing",
            "commerce",
            "learning",
            "technology",
            "communication",
        ],
    ),
    (
        "Jupiter",
        &[
            "expansion",
            "business_expansion",
            "wealth",
            "education",
            "spiritual",
        ],
    ),
    (
        "Venus",
        &[
            "arts",
            "relationships",
            "love",
            "beauty",
            "social_gatherings",
        ],
    ),
    (
        "Saturn",
        &[
            "organization",
            "discipline",
            "long_term_projects",
            "boundaries",
            "endings",
        ],
    ),
];

pub fn activity_planet(activity: &str) -> Option<&'static str> {
    let activity = activity.to_ascii_lowercase();
    ACTIVITIES
        .iter()
        .find(|(_, words)| words.contains(&activity.as_str()))
        .map(|(planet, _)| *planet)
}

pub fn activities() -> Json {
    ACTIVITIES
        .iter()
        .map(|(planet, words)| (planet.to_string(), json!(words)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[derive(PartialEq, Clone, Copy)]
enum Relation {
    Friend,
    Neutral,
    Enemy,
}

/// The classical (naisargika) friendship of `a` toward `b`.
fn relation(a: &str, b: &str) -> Relation {
    let (friends, enemies): (&[&str], &[&str]) = match a {
        "Sun" => (&["Moon", "Mars", "Jupiter"], &["Venus", "Saturn"]),
        "Moon" => (&["Sun", "Mercury"], &[]),
        "Mars" => (&["Sun", "Moon", "Jupiter"], &["Mercury"]),
        "Mercury" => (&["Sun", "Venus"], &["Moon"]),
        "Jupiter" => (&["Sun", "Moon", "Mars"], &["Mercury", "Venus"]),
        "Venus" => (&["Mercury", "Saturn"], &["Sun", "Moon"]),
        _ => (&["Mercury", "Venus"], &["Sun", "Moon", "Mars"]),
    };
    if friends.contains(&b) {
        Relation::Friend
    } else if enemies.contains(&b) {
        Relation::Enemy
    } else {
        Relation::Neutral
    }
}

/// (domicile signs, exaltation sign) of each planet; detriment and fall are opposite.
fn dignities(planet: &str) -> (&'static [usize], usize) {
    match planet {
        "Sun" => (&[4], 0),
        "Moon" => (&[3], 1),
        "Mercury" => (&[2, 5], 5),
        "Venus" => (&[1, 6], 11),
        "Mars" => (&[0, 7], 9),
        "Jupiter" => (&[8, 11], 3),
        _ => (&[9, 10], 6),
    }
}

/// The hour ruler's dignity in its sign: (name, fraction).
pub fn dignity(planet: &str, lon: f64) -> (&'static str, f64) {
    let sign = (lon.rem_euclid(360.0) / 30.0) as usize % 12;
    let (domiciles, exaltation) = dignities(planet);
    if domiciles.contains(&sign) {
        ("domicile", 1.0)
    } else if sign == exaltation {
        ("exaltation", 0.85)
    } else if domiciles.iter().any(|d| (d + 6) % 12 == sign) {
        ("detriment", 0.15)
    } else if (exaltation + 6) % 12 == sign {
        ("fall", 0.0)
    } else {
        ("peregrine", 0.5)
    }
}

/// Scores the moment `t_ms` in an hour ruled by `hour_ruler` on a day ruled by
/// `day_ruler`, for an activity of planet `key`: (score, band, breakdown).
pub fn score(t_ms: i64, hour_ruler: &str, day_ruler: &str, key: &str) -> (f64, &'static str, Json) {
    let ruler_lon = longitude(hour_ruler, t_ms);
    let (sun, moon) = (longitude("Sun", t_ms), longitude("Moon", t_ms));

    let hour_match = if hour_ruler == key {
        1.0
    } else {
        match relation(hour_ruler, key) {
            Relation::Friend => 0.5,
            Relation::Neutral => 0.25,
            Relation::Enemy => 0.0,
        }
    };
    let harmony = if day_ruler == hour_ruler {
        1.0
    } else {
        match relation(day_ruler, hour_ruler) {
            Relation::Friend => 0.75,
            Relation::Neutral => 0.5,
            Relation::Enemy => 0.25,
        }
    };
    let (dignity_name, dignity_part) = dignity(hour_ruler, ruler_lon);
    let elongation = (moon - sun).rem_euclid(360.0);
    let phase = if !(12.0..=348.0).contains(&elongation) {
        0.0
    } else if elongation < 180.0 {
        1.0
    } else {
        0.5
    };
    let moon_aspect = if hour_ruler == "Moon" {
        None
    } else {
        aspect(moon, ruler_lon, 6.0)
    };
    let moon_part = match moon_aspect {
        Some("trine" | "sextile" | "conjunction") => 1.0,
        Some(_) => 0.0,
        None => 0.5,
    };
    let lunar = 0.5 * phase + 0.5 * moon_part;
    let mut aspects_part: f64 = 0.5;
    let mut aspects_seen = Vec::new();
    for other in ["Venus", "Jupiter", "Mars", "Saturn"] {
        if other == hour_ruler {
            continue;
        }
        let Some(kind) = aspect(ruler_lon, longitude(other, t_ms), 6.0) else {
            continue;
        };
        let benefic = matches!(other, "Venus" | "Jupiter");
        let delta = match (benefic, kind) {
            (true, "trine" | "sextile" | "conjunction") => 0.25,
            (false, "square" | "opposition" | "conjunction") => -0.25,
            _ => 0.0,
        };
        aspects_part += delta;
        aspects_seen.push(json!({"planet": other, "aspect": kind}));
    }
    let aspects_part = aspects_part.clamp(0.0, 1.0);
    let ruler_retro = retrograde(hour_ruler, t_ms);
    let key_retro = retrograde(key, t_ms);
    let retro = if ruler_retro || key_retro { 0.0 } else { 1.0 };

    let parts = [
        hour_match,
        harmony,
        dignity_part,
        lunar,
        aspects_part,
        retro,
    ];
    let mut breakdown = serde_json::Map::new();
    let mut total = 0.0;
    for ((name, weight), part) in WEIGHTS.iter().zip(parts) {
        let points = (part * weight * 100.0).round() / 100.0;
        total += points;
        breakdown.insert(
            name.to_string(),
            json!({"weight": weight, "points": points}),
        );
    }
    let total = (total * 100.0).round() / 100.0;
    breakdown.insert(
        "details".into(),
        json!({
            "hour_ruler": hour_ruler, "day_ruler": day_ruler, "activity_planet": key,
            "hour_ruler_sign": planets::sign(ruler_lon), "dignity": dignity_name,
            "moon_sign": planets::sign(moon), "moon_elongation": (elongation * 10.0).round() / 10.0,
            "moon_aspect_to_ruler": moon_aspect, "aspects": aspects_seen,
            "hour_ruler_retrograde": ruler_retro, "activity_planet_retrograde": key_retro,
        }),
    );
    (total, band(total), Json::Object(breakdown))
}

pub fn band(score: f64) -> &'static str {
    match score {
        s if s >= 80.0 => "Excellent",
        s if s >= 60.0 => "Good",
        s if s >= 40.0 => "Neutral",
        s if s >= 20.0 => "Unfavorable",
        _ => "Avoid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::astro::{days_from_civil, planetary_day};

    #[test]
    fn the_weights_are_the_seeds() {
        assert_eq!(WEIGHTS.iter().map(|(_, w)| w).sum::<f64>(), 100.0);
        assert_eq!(activity_planet("commerce"), Some("Mercury"));
        assert_eq!(activity_planet("Travel"), Some("Moon"));
        assert_eq!(
            (band(80.0), band(79.99), band(40.0), band(19.0)),
            ("Excellent", "Good", "Neutral", "Avoid")
        );
    }

    /// Lahore, Wednesday 20 March 2024: the first hour after sunrise is
    /// Mercury's on Mercury's day; Mercury in Aries (peregrine), direct.
    #[test]
    fn commerce_in_mercurys_hour_on_a_wednesday() {
        let day = planetary_day(days_from_civil(2024, 3, 20), 31.5204, 74.3587).unwrap();
        assert_eq!((day.ruler, day.hours[0].planet), ("Mercury", "Mercury"));
        let t = (day.hours[0].start_ms + day.hours[0].end_ms) / 2;
        let (_, _, b) = score(t, "Mercury", "Mercury", "Mercury");
        assert_eq!(b["hour_ruler_match"]["points"], 30.0);
        assert_eq!(b["day_ruler_harmony"]["points"], 15.0);
        assert_eq!(b["details"]["hour_ruler_sign"], "Aries");
        assert_eq!(b["dignity"]["points"], 7.5, "peregrine");
        assert_eq!(b["retrograde"]["points"], 10.0);
    }

    /// 10 April 2024 (Mercury retrograde): a Mercury activity loses the factor.
    #[test]
    fn a_retrograde_key_planet_scores_zero() {
        let t = days_from_civil(2024, 4, 10) * 86_400_000 + 12 * 3_600_000;
        let (_, _, b) = score(t, "Sun", "Wednesday-ignored", "Mercury");
        assert_eq!(b["retrograde"]["points"], 0.0);
        assert_eq!(b["details"]["activity_planet_retrograde"], true);
    }
}
