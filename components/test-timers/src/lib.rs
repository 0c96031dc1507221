//! Test guest for `alorig:host/timers`. Every timer firing and job run is
//! written to the table `runs` of the app's own database (when it exists), so
//! tests count what the handlers really did, not what the host says it did:
//! `kind` (timer/job), `name`, `job_id`, `attempt`, `scheduled_ms` (the firing's
//! instant), `started_ms` and `finished_ms` (guest wall clock).
//!
//! Routes:
//! * `POST /setup` — creates `runs`;
//! * `POST /enqueue?n=N&name=X&after_ms=D&key=K` — schedules N jobs with the
//!   request body as payload; answers their ids, one a line, or the error;
//! * `POST /enqueue-at?at_ms=T&name=X` — one job at an instant;
//! * `POST /cancel?id=I` — `true`/`false` or the error.
//!
//! Behaviour asked for by payload (jobs) or name prefix (timers): `fail` returns
//! an error, `trap` panics, `sleep:MS` sleeps that long first (timers: a name
//! starting `sleep-MS-`), `noop` returns at once without recording (benchmark).

use guest_kit::timers::{self, Job, When};
use guest_kit::{postgres as pg, wasip2};
use pg::Value;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Guest;

fn sleep_ms(ms: u64) {
    wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS runs (id bigserial PRIMARY KEY, kind text NOT NULL, name text NOT NULL,
    job_id bigint, attempt int, scheduled_ms bigint, started_ms bigint NOT NULL, finished_ms bigint)";

/// Records a run that has started; answers its row id. Creates `runs` when
/// it is missing (a timer may fire before the test's `/setup`).
fn started(
    kind: &str,
    name: &str,
    job: Option<(u64, u32)>,
    scheduled_ms: i64,
) -> Result<i64, String> {
    let (id, attempt) = job
        .map(|(id, a)| (Value::Int64(id as i64), Value::Int32(a as i32)))
        .unwrap_or((Value::Null, Value::Null));
    let params = [
        Value::Text(kind.into()),
        Value::Text(name.into()),
        id,
        attempt,
        Value::Int64(scheduled_ms),
        Value::Int64(guest_kit::now_ms()),
    ];
    let insert = "INSERT INTO runs (kind, name, job_id, attempt, scheduled_ms, started_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
    let rows = match pg::query(insert, &params) {
        Err(e) if e.parts().0 == "42P01" => {
            pg::execute(SCHEMA, &[]).map_err(|e| e.describe())?;
            pg::query(insert, &params)
        }
        other => other,
    }
    .map_err(|e| e.describe())?;
    rows.rows
        .first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .ok_or_else(|| "no id".to_string())
}

fn finished(row: i64) -> Result<(), String> {
    pg::execute(
        "UPDATE runs SET finished_ms = $1 WHERE id = $2",
        &[Value::Int64(guest_kit::now_ms()), Value::Int64(row)],
    )
    .map(|_| ())
    .map_err(|e| e.describe())
}

/// Does what `behaviour` asks: fail, trap, sleep, or nothing.
fn behave(behaviour: &str, attempt: u32) -> Result<(), String> {
    if behaviour == "fail" {
        return Err(format!("failed on purpose (attempt {attempt})"));
    }
    if behaviour == "trap" {
        panic!("trapped on purpose");
    }
    if let Some(ms) = behaviour
        .strip_prefix("sleep:")
        .and_then(|ms| ms.parse().ok())
    {
        sleep_ms(ms);
    }
    Ok(())
}

impl timers::TimerHandler for Guest {
    fn on_timer(name: String, scheduled_at_ms: u64) -> Result<(), String> {
        let row = started("timer", &name, None, scheduled_at_ms as i64)?;
        let behaviour = match name.strip_prefix("sleep-") {
            Some(rest) => format!("sleep:{}", rest.split('-').next().unwrap_or("0")),
            None => name.split('-').next().unwrap_or("").to_string(),
        };
        behave(&behaviour, 1)?;
        finished(row)
    }
}

impl timers::JobHandler for Guest {
    fn on_job(id: u64, name: String, payload: Vec<u8>, attempt: u32) -> Result<(), String> {
        let behaviour = String::from_utf8_lossy(&payload).into_owned();
        if behaviour == "noop" {
            return Ok(());
        }
        let row = started("job", &name, Some((id, attempt)), 0)?;
        behave(&behaviour, attempt)?;
        finished(row)
    }
}

fn param<T: std::str::FromStr>(req: &IncomingRequest, name: &str) -> Option<T> {
    guest_kit::query_param(req, name).and_then(|v| v.parse().ok())
}

fn error_text(err: timers::Error) -> String {
    match err {
        timers::Error::Invalid(why) => format!("invalid: {why}"),
        timers::Error::Unavailable => "unavailable".into(),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Guest {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = guest_kit::path(&req);
        let reply = match path.as_str() {
            "/setup" => pg::execute(SCHEMA, &[])
                .map(|_| "ready".to_string())
                .map_err(|e| e.describe()),
            "/enqueue" | "/enqueue-at" => {
                let payload = guest_kit::read_body(&req);
                let name: String = param(&req, "name").unwrap_or_else(|| "job".into());
                let key: Option<String> = param(&req, "key");
                let when = match param::<u64>(&req, "at_ms") {
                    Some(at) => When::AtMs(at),
                    None => When::AfterMs(param(&req, "after_ms").unwrap_or(0)),
                };
                let mut ids = String::new();
                let mut result = Ok(());
                for _ in 0..param::<u32>(&req, "n").unwrap_or(1) {
                    let job = Job {
                        name: name.clone(),
                        payload: payload.clone(),
                        when,
                        idempotency_key: key.clone(),
                    };
                    match timers::schedule(&job) {
                        Ok(id) => ids.push_str(&format!("{id}\n")),
                        Err(err) => {
                            result = Err(error_text(err));
                            break;
                        }
                    }
                }
                result.map(|()| ids)
            }
            "/cancel" => timers::cancel(param(&req, "id").unwrap_or(0))
                .map(|b| b.to_string())
                .map_err(error_text),
            _ => Err("no such route".into()),
        };
        match reply {
            Ok(body) => guest_kit::respond(out, 200, "text/plain", body.as_bytes()),
            Err(why) => guest_kit::respond(out, 500, "text/plain", why.as_bytes()),
        }
    }
}

timers::export!(Guest);
wasip2::http::proxy::export!(Guest with_types_in wasip2);
