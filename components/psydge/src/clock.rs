//! Sessions from the clock. The seed's locked rule is "London+NY sessions only"
//! with no hours, and `session_r`/`lock` last until "End of day"/"End of
//! session". Decided here (and in `manifests/psydge.toml`'s `[env]`):
//!
//! * `SESSIONS`: the trading windows, `<IANA zone> HH:MM-HH:MM` separated by
//!   `;`, Monday to Friday in that zone (`… daily`: every day) — by default London 08:00–17:00 and
//!   New York 08:00–17:00, each in its own zone so DST moves them as it moves
//!   the markets;
//! * `DAY_END`: when the trading day ends, `<IANA zone> HH:MM` — by default
//!   17:00 New York, the forex day's roll-over, which is also when the NY
//!   session closes. The session's R, its violations count and the session
//!   lock all expire then, and the `session_end` timer fires then.

use chrono::{DateTime, Datelike as _, NaiveTime, TimeZone as _, Utc, Weekday};
use chrono_tz::Tz;

pub const DEFAULT_SESSIONS: &str = "Europe/London 08:00-17:00; America/New_York 08:00-17:00";
pub const DEFAULT_DAY_END: &str = "America/New_York 17:00";

/// One trading window in its own zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub zone: Tz,
    pub open: NaiveTime,
    pub close: NaiveTime,
    /// `daily` after the hours: weekends too (tests, crypto); else Monday to Friday.
    pub daily: bool,
}

fn time(text: &str) -> Result<NaiveTime, String> {
    if text == "24:00" {
        return Ok(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN));
    }
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| format!("{text:?} is not HH:MM"))
}

/// Parses `SESSIONS`: `Europe/London 08:00-17:00; America/New_York 08:00-17:00`.
pub fn parse_windows(text: &str) -> Result<Vec<Window>, String> {
    let mut windows = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (zone, hours) = part
            .split_once(' ')
            .ok_or_else(|| format!("SESSIONS: {part:?} is not `<zone> HH:MM-HH:MM`"))?;
        let zone: Tz = zone
            .parse()
            .map_err(|_| format!("SESSIONS: unknown time zone {zone:?}"))?;
        let (hours, daily) = match hours.trim().strip_suffix("daily") {
            Some(hours) => (hours.trim(), true),
            None => (hours.trim(), false),
        };
        let (open, close) = hours
            .split_once('-')
            .ok_or_else(|| format!("SESSIONS: {hours:?} is not HH:MM-HH:MM"))?;
        windows.push(Window {
            zone,
            open: time(open)?,
            close: time(close)?,
            daily,
        });
    }
    Ok(windows)
}

fn weekday(day: Weekday) -> bool {
    !matches!(day, Weekday::Sat | Weekday::Sun)
}

/// The window open at `now_ms`, if any (its zone's name).
pub fn open_window(windows: &[Window], now_ms: i64) -> Option<String> {
    let now = DateTime::<Utc>::from_timestamp_millis(now_ms)?;
    windows.iter().find_map(|w| {
        let local = now.with_timezone(&w.zone);
        let t = local.time();
        ((w.daily || weekday(local.weekday())) && w.open <= t && t < w.close)
            .then(|| w.zone.name().to_string())
    })
}

/// Parses `DAY_END`: `America/New_York 17:00`.
pub fn parse_day_end(text: &str) -> Result<(Tz, NaiveTime), String> {
    let (zone, at) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("DAY_END: {text:?} is not `<zone> HH:MM`"))?;
    let zone: Tz = zone
        .parse()
        .map_err(|_| format!("DAY_END: unknown time zone {zone:?}"))?;
    Ok((zone, time(at.trim())?))
}

/// The next end of the trading day after `now_ms`, in ms since the epoch.
pub fn next_day_end(zone: Tz, at: NaiveTime, now_ms: i64) -> i64 {
    let Some(now) = DateTime::<Utc>::from_timestamp_millis(now_ms) else {
        return now_ms + 86_400_000;
    };
    let local = now.with_timezone(&zone).date_naive();
    for offset in 0..3 {
        let Some(day) = local.checked_add_days(chrono::Days::new(offset)) else {
            break;
        };
        // In a DST gap the local time does not exist: take the instant after it.
        let end = zone
            .from_local_datetime(&day.and_time(at))
            .earliest()
            .or_else(|| {
                zone.from_local_datetime(&day.and_time(at + chrono::Duration::hours(1)))
                    .earliest()
            });
        if let Some(end) = end
            && end.timestamp_millis() > now_ms
        {
            return end.timestamp_millis();
        }
    }
    now_ms + 86_400_000
}

/// The trading day (its date where it ends) that holds `now_ms`, as `YYYY-MM-DD`.
pub fn trading_day(zone: Tz, at: NaiveTime, now_ms: i64) -> String {
    let end = next_day_end(zone, at, now_ms);
    DateTime::<Utc>::from_timestamp_millis(end)
        .map(|d| d.with_timezone(&zone).date_naive().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn london_and_new_york_windows_follow_their_own_dst() {
        let w = parse_windows(DEFAULT_SESSIONS).unwrap();
        // Summer: London 08:00 BST = 07:00 UTC.
        assert_eq!(
            open_window(&w, ms("2024-07-10T07:30:00Z")).as_deref(),
            Some("Europe/London")
        );
        assert_eq!(open_window(&w, ms("2024-07-10T06:30:00Z")), None);
        // 17:30 London = 12:30 NY (EDT): New York's window.
        assert_eq!(
            open_window(&w, ms("2024-07-10T16:30:00Z")).as_deref(),
            Some("America/New_York")
        );
        // 21:30 UTC = 17:30 EDT: closed. Saturday: closed.
        assert_eq!(open_window(&w, ms("2024-07-10T21:30:00Z")), None);
        assert_eq!(open_window(&w, ms("2024-07-13T10:00:00Z")), None);
        // March 2024: the US is on DST (10 March), the UK not yet (31 March).
        assert_eq!(
            open_window(&w, ms("2024-03-20T12:30:00Z")).as_deref(),
            Some("Europe/London")
        );
        let always = parse_windows("UTC 00:00-24:00 daily").unwrap();
        assert_eq!(
            open_window(&always, ms("2024-07-13T10:00:00Z")).as_deref(),
            Some("UTC")
        );
        assert!(
            parse_windows("Mars/Base 08:00-17:00")
                .unwrap_err()
                .contains("unknown time zone")
        );
    }

    #[test]
    fn the_trading_day_ends_at_five_pm_new_york() {
        let (zone, at) = parse_day_end(DEFAULT_DAY_END).unwrap();
        assert_eq!(
            next_day_end(zone, at, ms("2024-07-10T12:00:00Z")),
            ms("2024-07-10T21:00:00Z")
        );
        assert_eq!(
            next_day_end(zone, at, ms("2024-07-10T21:00:00Z")),
            ms("2024-07-11T21:00:00Z")
        );
        assert_eq!(
            next_day_end(zone, at, ms("2024-01-10T12:00:00Z")),
            ms("2024-01-10T22:00:00Z")
        );
        assert_eq!(
            trading_day(zone, at, ms("2024-07-10T22:00:00Z")),
            "2024-07-11"
        );
    }
}
