//! The astronomy, pure and testable on any target: NOAA's solar calculator
//! (the equations of its published spreadsheet: the sun's apparent longitude,
//! declination and equation of time from the Julian century, refined at each
//! event's time as NOAA's calculator does) for sunrise and sunset, and the classical planetary hours: the daylight from sunrise to
//! sunset and the night from sunset to the next sunrise each cut into twelve
//! unequal hours, ruled in Chaldean order, the day's first hour by the planet
//! of its weekday.

/// Chaldean order, slowest to fastest.
pub const CHALDEAN: [&str; 7] = [
    "Saturn", "Jupiter", "Mars", "Sun", "Venus", "Mercury", "Moon",
];
/// The ruler of each weekday, Sunday first.
pub const DAY_RULERS: [&str; 7] = [
    "Sun", "Moon", "Mars", "Mercury", "Jupiter", "Venus", "Saturn",
];

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// "YYYY-MM-DD" of a day number.
pub fn date_text(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A day number from "YYYY-MM-DD".
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let y = parts.next()?.parse().ok()?;
    let m = parts
        .next()?
        .parse()
        .ok()
        .filter(|m| (1..=12).contains(m))?;
    let d = parts
        .next()?
        .parse()
        .ok()
        .filter(|d| (1..=31).contains(d))?;
    Some(days_from_civil(y, m, d))
}

/// 0 = Sunday.
pub fn weekday(days: i64) -> usize {
    (days + 4).rem_euclid(7) as usize
}

/// The sun's declination (radians) and the equation of time (minutes) at
/// Julian day `jd`: NOAA's solar calculator equations.
fn sun_at(jd: f64) -> (f64, f64) {
    let t = (jd - 2_451_545.0) / 36_525.0;
    let l0 = (280.46646 + t * (36_000.76983 + t * 0.0003032)).rem_euclid(360.0);
    let m = 357.52911 + t * (35_999.05029 - 0.0001537 * t);
    let e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t);
    let (mr, l0r) = (m.to_radians(), l0.to_radians());
    let center = mr.sin() * (1.914602 - t * (0.004817 + 0.000014 * t))
        + (2.0 * mr).sin() * (0.019993 - 0.000101 * t)
        + (3.0 * mr).sin() * 0.000289;
    let omega = (125.04 - 1934.136 * t).to_radians();
    let apparent = (l0 + center - 0.00569 - 0.00478 * omega.sin()).to_radians();
    let mean_obliquity =
        23.0 + (26.0 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60.0) / 60.0;
    let obliquity = (mean_obliquity + 0.00256 * omega.cos()).to_radians();
    let declination = (obliquity.sin() * apparent.sin()).asin();
    let y = (obliquity / 2.0).tan().powi(2);
    let equation_of_time = 4.0
        * (y * (2.0 * l0r).sin() - 2.0 * e * mr.sin() + 4.0 * e * y * mr.sin() * (2.0 * l0r).cos()
            - 0.5 * y * y * (4.0 * l0r).sin()
            - 1.25 * e * e * (2.0 * mr).sin())
        .to_degrees();
    (declination, equation_of_time)
}

/// cos of the hour angle at which the sun's upper limb touches the horizon
/// (90.833°: refraction at the horizon plus the sun's radius).
fn cos_hour_angle(lat: f64, declination: f64) -> f64 {
    let latr = lat.to_radians();
    90.833f64.to_radians().cos() / (latr.cos() * declination.cos()) - latr.tan() * declination.tan()
}

/// The Julian day of minute `minutes` (UTC) of day number `days`.
fn julian(days: i64, minutes: f64) -> f64 {
    days as f64 + 2_440_587.5 + minutes / 1440.0
}

/// What the sun does on the local day around the solar noon of UTC date `days`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sun {
    /// Sunrise and sunset, ms since the epoch.
    RiseSet(i64, i64),
    /// Midnight sun: up all day; the solar noon, ms.
    PolarDay(i64),
    /// Polar night: down all day; the solar noon, ms.
    PolarNight(i64),
}

/// Sunrise and sunset by NOAA's method (the sun's position at solar noon
/// first, then again at each event's estimated time until it settles, as
/// NOAA's calculator refines it), or the polar day or night.
pub fn sun(days: i64, lat: f64, lon: f64) -> Sun {
    let at = |minutes: f64| days * MS_PER_DAY + (minutes * 60_000.0).round() as i64;
    let (_, eq_noon) = sun_at(julian(days, 720.0 - 4.0 * lon));
    let noon_minutes = 720.0 - 4.0 * lon - eq_noon;
    let (declination, _) = sun_at(julian(days, noon_minutes));
    let cos_ha = cos_hour_angle(lat, declination);
    if cos_ha < -1.0 {
        return Sun::PolarDay(at(noon_minutes));
    }
    if cos_ha > 1.0 {
        return Sun::PolarNight(at(noon_minutes));
    }
    let event = |sign: f64| -> Option<f64> {
        let mut minutes = noon_minutes + sign * 4.0 * cos_ha.acos().to_degrees();
        for _ in 0..4 {
            let (declination, eq) = sun_at(julian(days, minutes));
            let cos_ha = cos_hour_angle(lat, declination);
            if !(-1.0..=1.0).contains(&cos_ha) {
                return None;
            }
            minutes = 720.0 - 4.0 * lon - eq + sign * 4.0 * cos_ha.acos().to_degrees();
        }
        Some(minutes)
    };
    match (event(-1.0), event(1.0)) {
        (Some(rise), Some(set)) => Sun::RiseSet(at(rise), at(set)),
        // A grazing day at the edge of the polar day or night: by the noon sun.
        _ if lat * declination.to_degrees() > 0.0 => Sun::PolarDay(at(noon_minutes)),
        _ => Sun::PolarNight(at(noon_minutes)),
    }
}

/// Sunrise and sunset (ms since the epoch, UTC) on the local day around the
/// solar noon of UTC date `days` at latitude `lat` and longitude `lon`
/// (degrees, east positive); None on a polar day or night.
pub fn sun_times(days: i64, lat: f64, lon: f64) -> Option<(i64, i64)> {
    match sun(days, lat, lon) {
        Sun::RiseSet(rise, set) => Some((rise, set)),
        _ => None,
    }
}

/// The bounds of the planetary daytime: sunrise and sunset, or — where the sun
/// neither rises nor sets that day (polar day or night) — six hours either
/// side of solar noon, so the hours there are equal hours of one hour each,
/// still ruled in Chaldean order. Also says which polar case applies.
pub fn day_bounds(days: i64, lat: f64, lon: f64) -> (i64, i64, Option<&'static str>) {
    const SIX_HOURS: i64 = 6 * 3_600_000;
    match sun(days, lat, lon) {
        Sun::RiseSet(rise, set) => (rise, set, None),
        Sun::PolarDay(noon) => (noon - SIX_HOURS, noon + SIX_HOURS, Some("polar day")),
        Sun::PolarNight(noon) => (noon - SIX_HOURS, noon + SIX_HOURS, Some("polar night")),
    }
}

/// One planetary hour.
#[derive(Clone, Debug, PartialEq)]
pub struct Hour {
    /// 1 to 24: 1-12 from sunrise, 13-24 from sunset.
    pub number: u32,
    pub planet: &'static str,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The planetary day beginning at sunrise on UTC date `days`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanetaryDay {
    pub days: i64,
    pub sunrise_ms: i64,
    pub sunset_ms: i64,
    pub next_sunrise_ms: i64,
    pub ruler: &'static str,
    pub hours: Vec<Hour>,
    /// `polar day` / `polar night` when the hours are equal hours (see [`day_bounds`]).
    pub polar: Option<&'static str>,
}

/// The planetary day that starts with the sunrise of date `days` at a place.
pub fn planetary_day(days: i64, lat: f64, lon: f64) -> Option<PlanetaryDay> {
    let (sunrise, sunset, polar) = day_bounds(days, lat, lon);
    let (next_sunrise, _, _) = day_bounds(days + 1, lat, lon);
    if !(sunrise < sunset && sunset < next_sunrise) {
        return None;
    }
    let ruler = DAY_RULERS[weekday(days)];
    let first = CHALDEAN
        .iter()
        .position(|p| *p == ruler)
        .expect("every day ruler is a Chaldean planet");
    let hours = (0..24)
        .map(|k| {
            let (from, to, i) = if k < 12 {
                (sunrise, sunset, k)
            } else {
                (sunset, next_sunrise, k - 12)
            };
            let length = (to - from) as f64 / 12.0;
            Hour {
                number: k as u32 + 1,
                planet: CHALDEAN[(first + k) % 7],
                start_ms: from + (length * i as f64).round() as i64,
                end_ms: if i == 11 {
                    to
                } else {
                    from + (length * (i + 1) as f64).round() as i64
                },
            }
        })
        .collect();
    Some(PlanetaryDay {
        days,
        sunrise_ms: sunrise,
        sunset_ms: sunset,
        next_sunrise_ms: next_sunrise,
        ruler,
        hours,
        polar,
    })
}

/// The planetary day holding instant `t` at a place (it began at the last sunrise).
pub fn day_at(t_ms: i64, lat: f64, lon: f64) -> Option<PlanetaryDay> {
    // The place's mean solar date, then step back if its sunrise is still to come.
    let solar = (t_ms as f64 + lon / 15.0 * 3_600_000.0) as i64;
    let days = solar.div_euclid(MS_PER_DAY);
    for d in [days, days - 1, days + 1] {
        let day = planetary_day(d, lat, lon)?;
        if day.sunrise_ms <= t_ms && t_ms < day.next_sunrise_ms {
            return Some(day);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc_minutes(ms: i64) -> i64 {
        ms.rem_euclid(MS_PER_DAY) / 60_000
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 6, 21), 19_895);
        assert_eq!(civil_from_days(19_895), (2024, 6, 21));
        assert_eq!(date_text(days_from_civil(2000, 2, 29)), "2000-02-29");
        assert_eq!(weekday(days_from_civil(2024, 6, 21)), 5, "a Friday");
    }

    /// Published times (timeanddate.com / NOAA): London, 21 June 2024, sunrise
    /// 04:43 BST (03:43 UTC), sunset 21:21 BST (20:21 UTC); New York, 21
    /// December 2024, sunrise 07:16 EST (12:16 UTC), sunset 16:32 EST (21:32 UTC).
    #[test]
    fn sunrise_and_sunset_match_published_times_within_two_minutes() {
        let (rise, set) = sun_times(days_from_civil(2024, 6, 21), 51.5074, -0.1278).unwrap();
        assert!(
            (utc_minutes(rise) - (3 * 60 + 43)).abs() <= 2,
            "{}",
            utc_minutes(rise)
        );
        assert!(
            (utc_minutes(set) - (20 * 60 + 21)).abs() <= 2,
            "{}",
            utc_minutes(set)
        );
        let (rise, set) = sun_times(days_from_civil(2024, 12, 21), 40.7128, -74.0060).unwrap();
        assert!(
            (utc_minutes(rise) - (12 * 60 + 16)).abs() <= 2,
            "{}",
            utc_minutes(rise)
        );
        assert!(
            (utc_minutes(set) - (21 * 60 + 32)).abs() <= 2,
            "{}",
            utc_minutes(set)
        );
        assert!(
            sun_times(days_from_civil(2024, 6, 21), 80.0, 0.0).is_none(),
            "midnight sun"
        );
    }

    #[test]
    fn hours_follow_the_chaldean_order_from_the_day_ruler() {
        // 23 June 2024 is a Sunday: the Sun rules the first hour.
        let day = planetary_day(days_from_civil(2024, 6, 23), 51.5074, -0.1278).unwrap();
        assert_eq!(day.ruler, "Sun");
        let planets: Vec<&str> = day.hours.iter().map(|h| h.planet).take(8).collect();
        assert_eq!(
            planets,
            [
                "Sun", "Venus", "Mercury", "Moon", "Saturn", "Jupiter", "Mars", "Sun"
            ]
        );
        // The 25th hour would be Monday's first: the Moon.
        assert_eq!(CHALDEAN[(3 + 24) % 7], "Moon");
        assert_eq!(day.hours[0].start_ms, day.sunrise_ms);
        assert_eq!(day.hours[11].end_ms, day.sunset_ms);
        assert_eq!(day.hours[12].start_ms, day.sunset_ms);
        assert_eq!(day.hours[23].end_ms, day.next_sunrise_ms);
        // London's midsummer day hours are long, its night hours short.
        assert!(
            day.hours[0].end_ms - day.hours[0].start_ms
                > day.hours[12].end_ms - day.hours[12].start_ms
        );
        let noon = days_from_civil(2024, 6, 23) * MS_PER_DAY + 12 * 3_600_000;
        assert_eq!(day_at(noon, 51.5074, -0.1278).unwrap().days, day.days);
        let before_dawn = days_from_civil(2024, 6, 24) * MS_PER_DAY + 2 * 3_600_000;
        assert_eq!(
            day_at(before_dawn, 51.5074, -0.1278).unwrap().days,
            day.days,
            "still Sunday's night"
        );
    }

    /// Sunrise and sunset against an almanac (PyEphem 4.2: USNO's convention,
    /// the sun's upper limb at −0°50′ with standard refraction, as NOAA's),
    /// for places from the equator to the Arctic, both solstices.
    #[test]
    fn sunrise_and_sunset_agree_with_an_almanac_within_thirty_seconds() {
        let places = [
            (
                "London",
                51.5074,
                -0.1278,
                (2024, 3, 20),
                "2024-03-20T06:02:18Z",
                "2024-03-20T18:14:21Z",
            ),
            (
                "London",
                51.5074,
                -0.1278,
                (2024, 6, 21),
                "2024-06-21T03:43:14Z",
                "2024-06-21T20:21:36Z",
            ),
            (
                "London",
                51.5074,
                -0.1278,
                (2024, 12, 21),
                "2024-12-21T08:03:57Z",
                "2024-12-21T15:53:39Z",
            ),
            (
                "New_York",
                40.7128,
                -74.0060,
                (2024, 6, 21),
                "2024-06-21T09:25:10Z",
                "2024-06-22T00:30:48Z",
            ),
            (
                "New_York",
                40.7128,
                -74.0060,
                (2024, 12, 21),
                "2024-12-21T12:16:47Z",
                "2024-12-21T21:32:03Z",
            ),
            (
                "Lahore",
                31.5204,
                74.3587,
                (2024, 6, 21),
                "2024-06-20T23:58:18Z",
                "2024-06-21T14:10:34Z",
            ),
            (
                "Sydney",
                -33.8688,
                151.2093,
                (2024, 6, 21),
                "2024-06-20T21:00:06Z",
                "2024-06-21T06:53:54Z",
            ),
            (
                "Sydney",
                -33.8688,
                151.2093,
                (2024, 12, 21),
                "2024-12-20T18:40:50Z",
                "2024-12-21T09:05:40Z",
            ),
            (
                "Reykjavik",
                64.1466,
                -21.9426,
                (2024, 6, 21),
                "2024-06-21T02:55:25Z",
                "2024-06-22T00:03:53Z",
            ),
            (
                "Reykjavik",
                64.1466,
                -21.9426,
                (2024, 12, 21),
                "2024-12-21T11:22:32Z",
                "2024-12-21T15:29:39Z",
            ),
            (
                "Tromso",
                69.6492,
                18.9553,
                (2024, 5, 15),
                "2024-05-14T23:38:08Z",
                "2024-05-15T21:54:38Z",
            ),
            (
                "Tromso",
                69.6492,
                18.9553,
                (2024, 1, 20),
                "2024-01-20T09:39:52Z",
                "2024-01-20T12:11:03Z",
            ),
            (
                "Anchorage",
                61.2181,
                -149.9003,
                (2024, 6, 21),
                "2024-06-21T12:20:28Z",
                "2024-06-22T07:42:40Z",
            ),
            (
                "Anchorage",
                61.2181,
                -149.9003,
                (2024, 12, 21),
                "2024-12-21T19:14:33Z",
                "2024-12-22T00:41:39Z",
            ),
            (
                "Quito",
                -0.1807,
                -78.4678,
                (2024, 3, 20),
                "2024-03-20T11:17:52Z",
                "2024-03-20T23:24:22Z",
            ),
            (
                "Ushuaia",
                -54.8019,
                -68.3030,
                (2024, 6, 21),
                "2024-06-21T12:59:00Z",
                "2024-06-21T20:11:22Z",
            ),
            (
                "Ushuaia",
                -54.8019,
                -68.3030,
                (2024, 12, 21),
                "2024-12-21T07:51:36Z",
                "2024-12-22T01:11:35Z",
            ),
            (
                "Honolulu",
                21.3069,
                -157.8583,
                (2024, 12, 21),
                "2024-12-21T17:04:49Z",
                "2024-12-22T03:55:05Z",
            ),
        ];
        let ms = |text: &str| {
            let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
            let day = parse_date(date).unwrap();
            let mut hms = time.split(':').map(|p| p.parse::<i64>().unwrap());
            let (h, m, s) = (
                hms.next().unwrap(),
                hms.next().unwrap(),
                hms.next().unwrap(),
            );
            day * MS_PER_DAY + (h * 3600 + m * 60 + s) * 1000
        };
        let mut worst = 0;
        for (place, lat, lon, (y, m, d), rise, set) in places {
            let (got_rise, got_set) = sun_times(days_from_civil(y, m, d), lat, lon)
                .unwrap_or_else(|| panic!("{place} {y}-{m}-{d}"));
            for (what, got, want) in [
                ("sunrise", got_rise, ms(rise)),
                ("sunset", got_set, ms(set)),
            ] {
                assert!(
                    (got - want).abs() <= 30_000,
                    "{place} {y}-{m}-{d} {what}: off by {} s",
                    (got - want) / 1000
                );
                worst = worst.max((got - want).abs());
            }
        }
        println!("worst difference: {} s", worst / 1000);
    }

    /// Tromsø (69.6° N): midnight sun at the June solstice, polar night at the
    /// December one (the almanac has no rising or setting); the planetary day
    /// then has twelve equal hours either side of solar noon.
    #[test]
    fn polar_days_and_nights_have_equal_hours_around_solar_noon() {
        let june = days_from_civil(2024, 6, 21);
        assert!(matches!(sun(june, 69.6492, 18.9553), Sun::PolarDay(_)));
        assert!(matches!(
            sun(days_from_civil(2024, 12, 21), 69.6492, 18.9553),
            Sun::PolarNight(_)
        ));
        let day = planetary_day(june, 69.6492, 18.9553).unwrap();
        assert_eq!(day.polar, Some("polar day"));
        let hour = day.hours[0].end_ms - day.hours[0].start_ms;
        assert!((hour - 3_600_000).abs() < 1000, "{hour}");
        // Solar noon at 18.96° E: about 12:00 − 76 min − the equation of time (−1.8 min).
        let noon = day.sunrise_ms + 6 * 3_600_000 - june * MS_PER_DAY;
        assert!(
            (noon - (10 * 3_600_000 + 46 * 60_000)).abs() < 90_000,
            "{noon}"
        );
        assert!(day_at(june * MS_PER_DAY + 11 * 3_600_000, 69.6492, 18.9553).is_some());
        // Svalbard too, and the Antarctic in its polar night.
        assert!(planetary_day(june, 78.22, 15.65).is_some());
        assert!(planetary_day(june, -77.85, 166.67).is_some());
    }
}
