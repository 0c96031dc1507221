//! When a timer fires: the instants of a manifest [`Schedule`], in UTC.
//!
//! * `every`: multiples of the period since the Unix epoch, so every host of a
//!   cluster computes the same instants and can claim each one by its time.
//! * `cron`: five fields in the timer's IANA zone, through `croner`, whose DST
//!   rules are Vixie cron's: a fixed-time job (one minute, one hour) whose local
//!   time falls in a spring-forward gap runs at the first instant after the gap;
//!   in a fall-back overlap it runs once, at the first of the two instants.
//!   Wildcard and stepped hours run at every instant that matches.

use crate::config::manifest::Schedule;
use chrono::{DateTime, SubsecRound as _, TimeZone as _, Utc};

impl Schedule {
    /// The first firing strictly after `t`; `None` if there is none (a cron
    /// expression that never matches, e.g. 31 February).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(period) => {
                let period = period.as_millis().max(1) as i64;
                let ms = t.timestamp_millis();
                Utc.timestamp_millis_opt((ms.div_euclid(period) + 1) * period)
                    .single()
            }
            Schedule::Cron {
                expression,
                timezone,
            } => {
                let local = t.trunc_subsecs(0).with_timezone(&timezone.0);
                let next = expression
                    .cron
                    .find_next_occurrence(&local, false)
                    .ok()?
                    .with_timezone(&Utc);
                // Truncation can only move `t` back; never answer `t` itself or before.
                if next > t {
                    Some(next)
                } else {
                    self.next_after(next)
                }
            }
        }
    }

    /// The last firing at or before `t`, if any (within the last year for cron).
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(period) => {
                let period = period.as_millis().max(1) as i64;
                Utc.timestamp_millis_opt(t.timestamp_millis().div_euclid(period) * period)
                    .single()
            }
            Schedule::Cron {
                expression,
                timezone,
            } => {
                let local = t.trunc_subsecs(0).with_timezone(&timezone.0);
                Some(
                    expression
                        .cron
                        .find_previous_occurrence(&local, true)
                        .ok()?
                        .with_timezone(&Utc),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::manifest::{CronExpression, Schedule, TimeZoneName};
    use chrono::{DateTime, Datelike as _, Duration, NaiveDate, TimeZone as _, Timelike as _, Utc};
    use chrono_tz::Tz;

    fn cron(expression: &str, zone: &str) -> Schedule {
        Schedule::Cron {
            expression: CronExpression::try_from(expression.to_string()).unwrap(),
            timezone: TimeZoneName::try_from(zone.to_string()).unwrap(),
        }
    }

    /// Every firing in [from, to).
    fn firings(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from - Duration::seconds(1);
        while let Some(next) = schedule.next_after(t) {
            if next >= to {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    /// A daily job at 01:30 local in London over all of 2026: one firing a day,
    /// at 01:30 local; on 29 March (01:00 GMT → 02:00 BST) 01:30 does not exist
    /// and it runs at 02:00 BST, the first instant after the gap; on 25 October
    /// (02:00 BST → 01:00 GMT) 01:30 happens twice and it runs once, at the first.
    #[test]
    fn daily_cron_over_a_year_in_london_follows_dst() {
        let schedule = cron("30 1 * * *", "Europe/London");
        let london: Tz = "Europe/London".parse().unwrap();
        let all = firings(&schedule, utc(2026, 1, 1, 0, 0), utc(2027, 1, 1, 0, 0));
        assert_eq!(all.len(), 365, "one firing a day");
        let mut day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        for firing in &all {
            let local = firing.with_timezone(&london);
            assert_eq!(local.date_naive(), day, "{firing}");
            match (day.month(), day.day()) {
                (3, 29) => {
                    assert_eq!(
                        (local.hour(), local.minute()),
                        (2, 0),
                        "spring forward: {local}"
                    );
                    assert_eq!(*firing, utc(2026, 3, 29, 1, 0));
                }
                (10, 25) => {
                    assert_eq!((local.hour(), local.minute()), (1, 30));
                    assert_eq!(
                        *firing,
                        utc(2026, 10, 25, 0, 30),
                        "the first 01:30 (BST), not the second (GMT)"
                    );
                }
                _ => assert_eq!((local.hour(), local.minute()), (1, 30), "{local}"),
            }
            // Winter days are GMT (+0), summer days BST (+1).
            let summer = (NaiveDate::from_ymd_opt(2026, 3, 29).unwrap()
                ..NaiveDate::from_ymd_opt(2026, 10, 25).unwrap())
                .contains(&day);
            let offset = (local.naive_local() - firing.naive_utc()).num_hours();
            if !matches!((day.month(), day.day()), (3, 29)) {
                assert_eq!(
                    offset,
                    if summer || (day.month(), day.day()) == (10, 25) {
                        1
                    } else {
                        0
                    },
                    "{day}"
                );
            }
            day = day.succ_opt().unwrap();
        }
    }

    /// New York, 02:00 daily, weekdays only, 2026: DST starts 8 March (02:00 → 03:00)
    /// and ends 1 November (02:00 → 01:00).
    #[test]
    fn weekday_cron_at_two_in_new_york_over_a_year() {
        let schedule = cron("0 2 * * MON-FRI", "America/New_York");
        let ny: Tz = "America/New_York".parse().unwrap();
        let all = firings(&schedule, utc(2026, 1, 1, 0, 0), utc(2027, 1, 1, 0, 0));
        let weekdays = (0..365)
            .map(|d| NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Duration::days(d))
            .filter(|d| d.weekday().num_days_from_monday() < 5)
            .count();
        assert_eq!(all.len(), weekdays);
        for firing in &all {
            let local = firing.with_timezone(&ny);
            assert!(local.weekday().num_days_from_monday() < 5, "{local}");
            assert_eq!((local.hour(), local.minute()), (2, 0), "{local}");
        }
        // 8 March 2026 is a Sunday, 1 November too: check the Mondays after.
        assert!(
            all.contains(&utc(2026, 3, 6, 7, 0)),
            "Friday before, EST (-5)"
        );
        assert!(
            all.contains(&utc(2026, 3, 9, 6, 0)),
            "Monday after, EDT (-4)"
        );
        assert!(all.contains(&utc(2026, 10, 30, 6, 0)), "Friday before, EDT");
        assert!(all.contains(&utc(2026, 11, 2, 7, 0)), "Monday after, EST");
    }

    #[test]
    fn a_sunday_in_the_gap_runs_after_it_and_day_names_parse() {
        // 8 March 2026, 02:30 New York does not exist: it runs at 03:00 EDT.
        let schedule = cron("30 2 * * SUN", "America/New_York");
        let all = firings(&schedule, utc(2026, 3, 1, 0, 0), utc(2026, 3, 16, 0, 0));
        assert_eq!(
            all,
            vec![
                utc(2026, 3, 1, 7, 30),
                utc(2026, 3, 8, 7, 0),
                utc(2026, 3, 15, 6, 30)
            ]
        );
        // The contract's example: Sundays 23:00 UTC.
        let weekly = cron("0 23 * * SUN", "UTC");
        assert_eq!(
            weekly.next_after(utc(2026, 11, 18, 12, 0)),
            Some(utc(2026, 11, 22, 23, 0))
        );
        assert_eq!(
            weekly.last_at_or_before(utc(2026, 11, 22, 23, 0)),
            Some(utc(2026, 11, 22, 23, 0))
        );
        assert_eq!(
            weekly.last_at_or_before(utc(2026, 11, 22, 22, 59)),
            Some(utc(2026, 11, 15, 23, 0))
        );
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        let every = Schedule::Every(std::time::Duration::from_secs(5));
        let t = Utc.timestamp_millis_opt(1_000_002_500).unwrap();
        assert_eq!(
            every.next_after(t).unwrap().timestamp_millis(),
            1_000_005_000
        );
        assert_eq!(
            every.last_at_or_before(t).unwrap().timestamp_millis(),
            1_000_000_000
        );
        let on = Utc.timestamp_millis_opt(1_000_005_000).unwrap();
        assert_eq!(
            every.next_after(on).unwrap().timestamp_millis(),
            1_000_010_000,
            "strictly after"
        );
        assert_eq!(every.last_at_or_before(on), Some(on));
        // A cron instant is answered strictly after, even from a fraction past it.
        let daily = cron("0 0 * * *", "UTC");
        let just_after = utc(2026, 1, 1, 0, 0) + Duration::milliseconds(300);
        assert_eq!(daily.next_after(just_after), Some(utc(2026, 1, 2, 0, 0)));
        assert_eq!(
            daily.next_after(utc(2026, 1, 1, 0, 0) - Duration::milliseconds(1)),
            Some(utc(2026, 1, 1, 0, 0))
        );
    }
}
