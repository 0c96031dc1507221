//! A rule's own schedule (`{"cron": "0 9 * * *", "timezone": "UTC"}`, 002 §5.2)
//! turned into slots: the instants in a window at which the rule is due, in its
//! own zone with its DST rules (through `croner` and `chrono-tz`, as the host's
//! own timers). A slot is the rule's unit of "runs once": the tick turns each
//! into a job keyed by `(rule, slot)`.

use chrono::{DateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde_json::Value as Json;

pub struct RuleSchedule {
    cron: croner::Cron,
    pub zone: Tz,
}

impl RuleSchedule {
    /// The schedule of a rule, or why it has none that can run.
    pub fn parse(schedule: &Json) -> Result<RuleSchedule, String> {
        let text = schedule
            .get("cron")
            .and_then(Json::as_str)
            .ok_or("schedule has no \"cron\"")?;
        if text.split_whitespace().count() != 5 {
            return Err(format!(
                "cron {text:?} must have 5 fields (minute hour day month weekday)"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| format!("cron {text:?}: {e}"))?;
        let zone_name = schedule
            .get("timezone")
            .and_then(Json::as_str)
            .unwrap_or("UTC");
        let zone: Tz = zone_name
            .parse()
            .map_err(|_| format!("timezone {zone_name:?} is not an IANA zone"))?;
        Ok(RuleSchedule { cron, zone })
    }

    /// The slots in `(after_ms, until_ms]`, oldest first (at most `limit`).
    /// A slot is a whole minute whatever the window's start: every tick, on
    /// every host, names the same slot with the same number.
    pub fn slots(&self, after_ms: i64, until_ms: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        // croner keeps the start's sub-second part; a whole second gives whole minutes.
        let Some(mut at) = Utc
            .timestamp_millis_opt(after_ms.div_euclid(1000) * 1000)
            .single()
        else {
            return out;
        };
        while out.len() < limit {
            let local = at.with_timezone(&self.zone);
            let Ok(next) = self.cron.find_next_occurrence(&local, false) else {
                break;
            };
            let next_ms = next.timestamp_millis().div_euclid(60_000) * 60_000;
            if next_ms <= after_ms {
                at = next.with_timezone(&Utc);
                continue;
            }
            if next_ms > until_ms {
                break;
            }
            out.push(next_ms);
            at = next.with_timezone(&Utc);
        }
        out
    }

    /// The calendar day of an instant in the rule's zone, as days since 1970-01-01
    /// (what `max_executions_per_day` counts by).
    pub fn day(&self, at_ms: i64) -> i32 {
        day_in(self.zone, at_ms)
    }
}

pub fn day_in(zone: Tz, at_ms: i64) -> i32 {
    let at: DateTime<Utc> = Utc.timestamp_millis_opt(at_ms).single().unwrap_or_default();
    let date = at.with_timezone(&zone).date_naive();
    (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_rule_in_karachi_has_one_slot_a_day_at_local_nine() {
        let s = RuleSchedule::parse(
            &serde_json::json!({"cron": "0 9 * * *", "timezone": "Asia/Karachi"}),
        )
        .unwrap();
        // 2026-03-01 00:00 UTC .. 2026-03-03 00:00 UTC: 09:00 PKT is 04:00 UTC.
        let from = Utc
            .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let slots = s.slots(from, from + 2 * 86_400_000, 10);
        assert_eq!(slots, vec![from + 4 * 3_600_000, from + 28 * 3_600_000]);
        assert_eq!(
            s.slots(slots[0], slots[0], 10),
            Vec::<i64>::new(),
            "the window's start is excluded"
        );
        assert_eq!(
            s.slots(slots[0] - 1, slots[0], 10),
            vec![slots[0]],
            "its end included"
        );
        assert_eq!(
            s.slots(from + 497, from + 86_400_000, 10),
            vec![slots[0]],
            "whole minutes from any start"
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(RuleSchedule::parse(&serde_json::json!({"cron": "0 9 * *"})).is_err());
        assert!(
            RuleSchedule::parse(&serde_json::json!({"cron": "0 9 * * *", "timezone": "Mars/Base"}))
                .is_err()
        );
    }
}
