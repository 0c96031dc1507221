//! The gate: every check a trade attempt passes, on the seeds' Redis state
//! (keys shown without the app's `psydge:` prefix, which the host adds):
//!
//! | key                 | type   | TTL                 | content                                 |
//! |---------------------|--------|---------------------|-----------------------------------------|
//! | `gate:{user}`       | hash   | none                | the six buffers, `1` open / `0` closed  |
//! | `cooldown:{user}`   | string | the cooldown (4 h)  | set after a losing trade                |
//! | `session_r:{user}`  | string | end of trading day  | cumulative R, in hundredths             |
//! | `violations:{user}` | string | end of trading day  | blocked attempts this session           |
//! | `lock:{user}`       | string | end of trading day  | session lock (level 4, loss/profit lock) |
//!
//! The locked rules (seed: "Loss Lock (-2R daily), Profit Lock (+3R daily), 4hr
//! Cooldown, 1.0% risk per trade, London+NY sessions only") come from `[env]`;
//! the session windows and the day's end from the clock ([`crate::clock`]).

use crate::alorig::host::redis::{self, Command, Error, KeyTtl, Reply, SetCondition, SetOptions};
use crate::clock;

pub const BUFFERS: [&str; 6] = [
    "buffer_go",
    "buffer_whitelist",
    "buffer_session",
    "buffer_equity",
    "buffer_cooldown",
    "buffer_risk",
];

/// The seed's violation response levels, 1 to 4.
pub const LEVELS: [&str; 4] = ["Alert", "Overlay", "Blackout", "Session Lock"];

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Rules {
    pub loss_lock_centi_r: i64,
    pub profit_lock_centi_r: i64,
    pub cooldown_ms: u64,
    pub max_risk_pct: f64,
    pub symbols: Vec<String>,
    pub windows: Vec<clock::Window>,
    pub day_end: (chrono_tz::Tz, chrono::NaiveTime),
}

impl Rules {
    /// The rules from `[env]`; a bad `SESSIONS`/`DAY_END` is an error naming it.
    pub fn from_env() -> Result<Rules, String> {
        let windows = clock::parse_windows(
            &std::env::var("SESSIONS").unwrap_or_else(|_| clock::DEFAULT_SESSIONS.into()),
        )?;
        let day_end = clock::parse_day_end(
            &std::env::var("DAY_END").unwrap_or_else(|_| clock::DEFAULT_DAY_END.into()),
        )?;
        let symbols = std::env::var("SYMBOLS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_ascii_uppercase())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Rules {
            loss_lock_centi_r: (env("LOSS_LOCK_R", -2.0f64) * 100.0).round() as i64,
            profit_lock_centi_r: (env("PROFIT_LOCK_R", 3.0f64) * 100.0).round() as i64,
            cooldown_ms: env("COOLDOWN_MS", 4 * 3_600_000),
            max_risk_pct: env("MAX_RISK_PCT", 1.0),
            symbols,
            windows,
            day_end,
        })
    }

    /// Milliseconds from `now_ms` to the end of the trading day.
    pub fn ms_to_day_end(&self, now_ms: i64) -> u64 {
        (clock::next_day_end(self.day_end.0, self.day_end.1, now_ms) - now_ms).max(1) as u64
    }
}

/// Why the gate is closed: a violation code (the log's `violation_code`) and words.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub code: &'static str,
    pub text: String,
}

fn reason(code: &'static str, text: impl Into<String>) -> Reason {
    Reason {
        code,
        text: text.into(),
    }
}

/// The gate's state as read in one round trip, kept as the violation's snapshot.
pub struct State {
    pub buffers: Vec<(String, bool)>,
    pub locked: bool,
    pub session_r: i64,
    pub cooldown_left_ms: Option<u64>,
}

impl State {
    pub fn json(&self) -> serde_json::Value {
        let buffers: serde_json::Map<String, serde_json::Value> = self
            .buffers
            .iter()
            .map(|(n, open)| (n.clone(), serde_json::Value::Bool(*open)))
            .collect();
        serde_json::json!({
            "buffers": buffers,
            "locked": self.locked,
            "session_r": self.session_r as f64 / 100.0,
            "cooldown_left_ms": self.cooldown_left_ms,
        })
    }
}

pub fn read_state(user: &str) -> Result<State, Error> {
    let replies = redis::pipeline(
        &[
            Command::Hgetall(format!("gate:{user}")),
            Command::Exists(vec![format!("lock:{user}")]),
            Command::Get(format!("session_r:{user}")),
        ],
        false,
    )?;
    let flat: Vec<Vec<u8>> = match replies.first() {
        Some(Reply::Array(flat)) => flat.clone(),
        _ => Vec::new(),
    };
    let buffers = BUFFERS
        .iter()
        .map(|name| {
            let open = flat
                .chunks(2)
                .any(|pair| pair[0] == name.as_bytes() && pair.get(1).is_some_and(|v| v == b"1"));
            (name.to_string(), open)
        })
        .collect();
    let locked = matches!(replies.get(1), Some(Reply::Integer(n)) if *n > 0);
    let session_r = match replies.get(2) {
        Some(Reply::Data(v)) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let cooldown_left_ms = match redis::ttl(&format!("cooldown:{user}"))? {
        KeyTtl::ExpiresInMs(ms) => Some(ms),
        _ => None,
    };
    Ok(State {
        buffers,
        locked,
        session_r,
        cooldown_left_ms,
    })
}

/// Every reason the gate is closed for this attempt (empty: open).
pub fn closed_because(
    state: &State,
    symbol: Option<&str>,
    risk_pct: f64,
    rules: &Rules,
    now_ms: i64,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    for (name, open) in &state.buffers {
        if !open {
            reasons.push(reason("BUFFER_CLOSED", format!("{name} closed")));
        }
    }
    if state.locked {
        reasons.push(reason("SESSION_LOCKED", "session locked"));
    }
    if state.session_r <= rules.loss_lock_centi_r {
        reasons.push(reason("LOSS_LOCK", "loss lock reached"));
    }
    if state.session_r >= rules.profit_lock_centi_r {
        reasons.push(reason("PROFIT_LOCK", "profit lock reached"));
    }
    if let Some(ms) = state.cooldown_left_ms {
        reasons.push(reason(
            "COOLDOWN_ACTIVE",
            format!("cooldown: {} s left", ms.div_ceil(1000)),
        ));
    }
    if clock::open_window(&rules.windows, now_ms).is_none() {
        reasons.push(reason(
            "OUTSIDE_SESSION",
            "outside the London and New York sessions",
        ));
    }
    if let Some(symbol) = symbol
        && !rules.symbols.is_empty()
        && !rules.symbols.iter().any(|s| s.eq_ignore_ascii_case(symbol))
    {
        reasons.push(reason(
            "SYMBOL_NOT_ALLOWED",
            format!("{symbol} is not on the whitelist"),
        ));
    }
    if !(risk_pct > 0.0 && risk_pct <= rules.max_risk_pct) {
        reasons.push(reason(
            "RISK_EXCEEDED",
            format!(
                "risk {risk_pct}% is not within (0, {}]%",
                rules.max_risk_pct
            ),
        ));
    }
    reasons
}

/// Records a closed trade's R: returns the session's R in hundredths. The
/// session's R, the cooldown and a loss/profit lock last to the day's end.
pub fn record_result(user: &str, r: f64, rules: &Rules, now_ms: i64) -> Result<i64, Error> {
    let centi = (r * 100.0).round() as i64;
    let to_day_end = rules.ms_to_day_end(now_ms);
    let mut commands = vec![
        Command::IncrBy((format!("session_r:{user}"), centi)),
        Command::Expire((format!("session_r:{user}"), to_day_end)),
    ];
    if centi < 0 {
        let ttl = SetOptions {
            ttl_ms: Some(rules.cooldown_ms),
            condition: SetCondition::Always,
        };
        commands.push(Command::Set((
            format!("cooldown:{user}"),
            b"1".to_vec(),
            ttl,
        )));
    }
    let replies = redis::pipeline(&commands, true)?;
    let total = match replies.first() {
        Some(Reply::Integer(n)) => *n,
        _ => 0,
    };
    if total <= rules.loss_lock_centi_r || total >= rules.profit_lock_centi_r {
        lock(user, to_day_end)?;
    }
    Ok(total)
}

pub fn lock(user: &str, ttl_ms: u64) -> Result<(), Error> {
    redis::set(
        &format!("lock:{user}"),
        b"1",
        SetOptions {
            ttl_ms: Some(ttl_ms),
            condition: SetCondition::Always,
        },
    )?;
    Ok(())
}

/// Counts a violation this session: its level, 1 to 4 (4 locks the session).
pub fn count_violation(user: &str, rules: &Rules, now_ms: i64) -> Result<usize, Error> {
    let to_day_end = rules.ms_to_day_end(now_ms);
    let key = format!("violations:{user}");
    let replies = redis::pipeline(
        &[
            Command::IncrBy((key.clone(), 1)),
            Command::Expire((key, to_day_end)),
        ],
        true,
    )?;
    let count = match replies.first() {
        Some(Reply::Integer(n)) => *n,
        _ => 1,
    };
    let level = count.clamp(1, 4) as usize;
    if level == 4 {
        lock(user, to_day_end)?;
    }
    Ok(level)
}
