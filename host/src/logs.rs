//! `alorig-host logs <app>`: each app's recent log lines, kept in the host. A
//! `tracing` layer copies every event tagged with an `app` field — the guest's
//! stdout and stderr (target `guest`), and what the host says about the app's
//! requests, jobs, timers and connections (traps, deadlines, refusals) — into a
//! bounded ring per app: at most [`LINES_PER_APP`] lines of at most
//! [`MAX_LINE`] bytes, so an app that logs without end costs a fixed amount
//! (about 8 MiB per app at worst, not charged to its budget). A removed
//! app's ring stays until the host restarts, so its last lines can still be
//! read: one ring per app name deployed since the start.
//!
//! The admin API serves them (`GET /v1/apps/{app}/logs?since=SECS&after=SEQ`);
//! `--follow` asks again for the lines after the last sequence number it saw.

use serde_json::{Value, json};
use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    sync::{LazyLock, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{Layer, layer::Context};

/// Lines kept per app (older ones are dropped first).
pub const LINES_PER_APP: usize = 2000;
/// Longer lines are cut here (a guest line is at most 16 KiB already).
pub const MAX_LINE: usize = 4096;

struct Line {
    seq: u64,
    unix_ms: u64,
    level: &'static str,
    /// `stdout`/`stderr` for the guest's own output, `host` for the host's lines.
    stream: String,
    text: String,
}

#[derive(Default)]
pub struct Logs {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    apps: HashMap<String, VecDeque<Line>>,
}

static LOGS: LazyLock<Logs> = LazyLock::new(Logs::default);

/// The host's log rings (one per process, like the `tracing` dispatcher).
pub fn global() -> &'static Logs {
    &LOGS
}

impl Logs {
    fn push(&self, app: String, level: &'static str, stream: String, mut text: String) {
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        // The line was formatted into a growing buffer (a cut 16 KiB guest line
        // keeps its 16 KiB or more of capacity): keep only its bytes, so that
        // the ring's bound holds in memory, not just in characters.
        text.shrink_to_fit();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.next_seq += 1;
        let seq = inner.next_seq;
        let ring = inner.apps.entry(app).or_default();
        if ring.len() >= LINES_PER_APP {
            ring.pop_front();
        }
        ring.push_back(Line {
            seq,
            unix_ms,
            level,
            stream,
            text,
        });
    }

    /// Whether the host has logged anything for `app`.
    pub fn knows(&self, app: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apps
            .contains_key(app)
    }

    /// The app's lines newer than `since_ms` (Unix ms) and after sequence `after`,
    /// and the sequence number to ask after next time.
    pub fn read(&self, app: &str, since_ms: u64, after: u64) -> Value {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // A sequence from before a restart of the host: everything is new.
        let after = if after > inner.next_seq { 0 } else { after };
        let lines: Vec<Value> = inner
            .apps
            .get(app)
            .map(|ring| {
                ring.iter()
                    .filter(|l| l.seq > after && l.unix_ms >= since_ms)
                    .map(|l| json!({"seq": l.seq, "unix_ms": l.unix_ms, "level": l.level, "stream": l.stream, "text": l.text}))
                    .collect()
            })
            .unwrap_or_default();
        let next = lines
            .last()
            .and_then(|l| l["seq"].as_u64())
            .unwrap_or(after);
        json!({"app": app, "lines": lines, "next": next})
    }
}

/// The `tracing` layer that fills [`global`].
pub struct LogLayer;

#[derive(Default)]
struct Fields {
    app: Option<String>,
    stream: Option<String>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "app" => self.app = Some(value.to_string()),
            "stream" => self.stream = Some(value.to_string()),
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "app" => self.app = Some(format!("{value:?}")),
            "stream" => self.stream = Some(format!("{value:?}")),
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(app) = fields.app else { return };
        let guest = event.metadata().target() == "guest";
        let stream = match fields.stream {
            Some(stream) if guest => stream,
            _ => "host".to_string(),
        };
        let text = if guest {
            fields.message
        } else {
            fields.message + &fields.rest
        };
        global().push(app, event.metadata().level().as_str(), stream, text);
    }
}

/// `10m`, `90s`, `2h`, `1d` → seconds (for `--since`).
pub fn parse_since(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_bounded_and_read_after_a_sequence() {
        let logs = Logs::default();
        for i in 0..LINES_PER_APP + 10 {
            logs.push("a".into(), "INFO", "stdout".into(), format!("line {i}"));
        }
        logs.push("b".into(), "WARN", "host".into(), "x".repeat(MAX_LINE * 2));
        let all = logs.read("a", 0, 0);
        let lines = all["lines"].as_array().unwrap();
        assert_eq!(lines.len(), LINES_PER_APP);
        assert_eq!(lines[0]["text"], "line 10");
        let next = all["next"].as_u64().unwrap();
        assert!(
            logs.read("a", 0, next)["lines"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        logs.push("a".into(), "INFO", "stderr".into(), "new".into());
        let newer = logs.read("a", 0, next);
        assert_eq!(newer["lines"][0]["text"], "new");
        assert!(
            logs.read("b", 0, 0)["lines"][0]["text"]
                .as_str()
                .unwrap()
                .len()
                <= MAX_LINE + 3
        );
        assert!(logs.knows("b") && !logs.knows("c"));
        // A cut line keeps only its bytes, not the buffer it was formatted in.
        let mut formatted = String::with_capacity(64 << 10);
        formatted.push_str(&"y".repeat(16 << 10));
        logs.push("b".into(), "INFO", "stdout".into(), formatted);
        let inner = logs.inner.lock().unwrap();
        let kept = &inner.apps["b"].back().unwrap().text;
        assert!(kept.capacity() <= MAX_LINE + 3, "{}", kept.capacity());
        drop(inner);
        assert_eq!(parse_since("10m"), Some(600));
        assert_eq!(parse_since("10"), None);
        assert_eq!(parse_since("3x"), None);
    }
}
