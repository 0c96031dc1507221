//! Test guest for `alorig:host/postgres`. It runs what the test sends and
//! answers with a plain-text rendering of the rows or the error, so the tests
//! can drive any SQL through the host:
//!
//! * `POST /query` — body: the SQL on the first line, then one parameter per
//!   line (`int32:5`, `text:abc`, `null`, `int32[]:1,null,3`, …). Answer: a line
//!   of `name:type` columns, then one line per row in the same value syntax.
//! * `POST /execute` — the same body; answer `affected N`.
//! * `POST /script` — one step per line: `query SQL`, `exec SQL`, `begin`,
//!   `tx-query SQL`, `tx-exec SQL`, `commit`, `rollback`, `drop-tx`, `trap`.
//!   Answer: one line per step.
//! * `POST /bench?n=N` — body: SQL taking one int32 `$1`; runs it N times with
//!   `$1` = 1..100 and answers the latency of each call in nanoseconds.

use guest_kit::{postgres as pg, wasip2};
use pg::Value;
use std::fmt::Write as _;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct TestPostgres;

impl wasip2::exports::http::incoming_handler::Guest for TestPostgres {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = guest_kit::path(&request);
        let n: usize = guest_kit::query_param(&request, "n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(100);
        let body = String::from_utf8(guest_kit::read_body(&request)).unwrap_or_default();
        let answer = match path.as_str() {
            "/query" | "/execute" => {
                let mut lines = body.lines();
                let sql = lines.next().unwrap_or_default().to_string();
                let params: Result<Vec<Value>, String> = lines.map(parse_value).collect();
                match params {
                    Err(e) => format!("bad test input: {e}"),
                    Ok(params) if path == "/query" => match pg::query(&sql, &params) {
                        Ok(rows) => render_rows(&rows),
                        Err(e) => render_error(&e),
                    },
                    Ok(params) => match pg::execute(&sql, &params) {
                        Ok(n) => format!("affected {n}"),
                        Err(e) => render_error(&e),
                    },
                }
            }
            "/script" => script(&body),
            "/bench" => bench(body.trim(), n),
            _ => {
                guest_kit::respond(out, 404, "text/plain", b"not found\n");
                return;
            }
        };
        guest_kit::respond(out, 200, "text/plain", answer.as_bytes());
    }
}

fn script(body: &str) -> String {
    let mut out = String::new();
    let mut tx: Option<pg::Transaction> = None;
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let (step, sql) = line.split_once(' ').unwrap_or((line, ""));
        let result = match step {
            "query" => pg::query(sql, &[]).map(|r| render_rows(&r).replace('\n', " / ")),
            "exec" => pg::execute(sql, &[]).map(|n| format!("affected {n}")),
            "begin" => pg::begin().map(|t| {
                tx = Some(t);
                "begun".to_string()
            }),
            "tx-query" => tx
                .as_ref()
                .expect("begin first")
                .query(sql, &[])
                .map(|r| render_rows(&r).replace('\n', " / ")),
            "tx-exec" => tx
                .as_ref()
                .expect("begin first")
                .execute(sql, &[])
                .map(|n| format!("affected {n}")),
            "commit" => pg::Transaction::commit(tx.take().expect("begin first"))
                .map(|()| "committed".to_string()),
            "rollback" => pg::Transaction::rollback(tx.take().expect("begin first"))
                .map(|()| "rolled back".to_string()),
            "drop-tx" => {
                drop(tx.take());
                Ok("dropped".to_string())
            }
            "trap" => panic!("trapping on purpose with a transaction open"),
            other => Ok(format!("unknown step {other}")),
        };
        let _ = writeln!(out, "{}", result.unwrap_or_else(|e| render_error(&e)));
    }
    out
}

fn bench(sql: &str, n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let started = wasip2::clocks::monotonic_clock::now();
        let result = pg::query(sql, &[Value::Int32((i % 100) as i32 + 1)]);
        let took = wasip2::clocks::monotonic_clock::now() - started;
        if let Err(e) = result {
            return render_error(&e);
        }
        let _ = write!(out, "{took},");
    }
    out
}

fn render_error(e: &pg::Error) -> String {
    let (sqlstate, message) = e.parts();
    match e {
        pg::Error::ConstraintViolation(c) => {
            format!("error constraint {sqlstate} {}: {message}", c.constraint)
        }
        _ => format!("error {} {sqlstate}: {message}", e.kind()),
    }
}

fn render_rows(rows: &pg::RowSet) -> String {
    let mut out = rows
        .columns
        .iter()
        .map(|c| format!("{}:{}", c.name, c.type_name))
        .collect::<Vec<_>>()
        .join(",");
    for row in &rows.rows {
        out.push('\n');
        out.push_str(&row.iter().map(render_value).collect::<Vec<_>>().join(" | "));
    }
    out
}

fn list<T>(kind: &str, items: &[Option<T>], f: impl Fn(&T) -> String) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|i| i.as_ref().map_or("null".to_string(), &f))
        .collect();
    format!("{kind}[]:{}", items.join(","))
}

fn render_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Boolean(b) => format!("bool:{b}"),
        Value::Int16(i) => format!("int16:{i}"),
        Value::Int32(i) => format!("int32:{i}"),
        Value::Int64(i) => format!("int64:{i}"),
        Value::Float32(f) => format!("float32:{f}"),
        Value::Float64(f) => format!("float64:{f}"),
        Value::Numeric(s) => format!("numeric:{s}"),
        Value::Text(s) => format!("text:{}", s.replace('\n', "\\n")),
        Value::Bytea(b) => format!(
            "bytea:{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
        Value::Json(s) => format!("json:{s}"),
        Value::Jsonb(s) => format!("jsonb:{s}"),
        Value::Uuid(s) => format!("uuid:{s}"),
        Value::Date(d) => format!("date:{d}"),
        Value::Timestamp(t) => format!("timestamp:{t}"),
        Value::Timestamptz(t) => format!("timestamptz:{t}"),
        Value::BooleanArray(a) => list("bool", a, |b| b.to_string()),
        Value::Int16Array(a) => list("int16", a, |i| i.to_string()),
        Value::Int32Array(a) => list("int32", a, |i| i.to_string()),
        Value::Int64Array(a) => list("int64", a, |i| i.to_string()),
        Value::Float32Array(a) => list("float32", a, |f| f.to_string()),
        Value::Float64Array(a) => list("float64", a, |f| f.to_string()),
        Value::TextArray(a) => list("text", a, |s| s.clone()),
        Value::UuidArray(a) => list("uuid", a, |s| s.clone()),
    }
}

fn parse_list<T>(
    payload: &str,
    f: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<Option<T>>, String> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    payload
        .split(',')
        .map(|item| {
            if item == "null" {
                Ok(None)
            } else {
                f(item).map(Some)
            }
        })
        .collect()
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

fn parse_value(line: &str) -> Result<Value, String> {
    if line == "null" {
        return Ok(Value::Null);
    }
    let (kind, payload) = line
        .split_once(':')
        .ok_or_else(|| format!("{line:?} is not kind:value"))?;
    let text = || payload.replace("\\n", "\n");
    Ok(match kind {
        "bool" => Value::Boolean(payload == "true"),
        "int16" => Value::Int16(num(payload)?),
        "int32" => Value::Int32(num(payload)?),
        "int64" => Value::Int64(num(payload)?),
        "float32" => Value::Float32(num(payload)?),
        "float64" => Value::Float64(num(payload)?),
        "numeric" => Value::Numeric(payload.into()),
        "text" => Value::Text(text()),
        "bytea" => Value::Bytea(
            (0..payload.len() / 2)
                .map(|i| {
                    u8::from_str_radix(&payload[2 * i..2 * i + 2], 16)
                        .map_err(|_| "bad hex".to_string())
                })
                .collect::<Result<_, _>>()?,
        ),
        "json" => Value::Json(payload.into()),
        "jsonb" => Value::Jsonb(payload.into()),
        "uuid" => Value::Uuid(payload.into()),
        "date" => Value::Date(num(payload)?),
        "timestamp" => Value::Timestamp(num(payload)?),
        "timestamptz" => Value::Timestamptz(num(payload)?),
        "bool[]" => Value::BooleanArray(parse_list(payload, |s| Ok(s == "true"))?),
        "int16[]" => Value::Int16Array(parse_list(payload, num)?),
        "int32[]" => Value::Int32Array(parse_list(payload, num)?),
        "int64[]" => Value::Int64Array(parse_list(payload, num)?),
        "float32[]" => Value::Float32Array(parse_list(payload, num)?),
        "float64[]" => Value::Float64Array(parse_list(payload, num)?),
        "text[]" => Value::TextArray(parse_list(payload, |s| Ok(s.to_string()))?),
        "uuid[]" => Value::UuidArray(parse_list(payload, |s| Ok(s.to_string()))?),
        other => return Err(format!("unknown kind {other}")),
    })
}

wasip2::http::proxy::export!(TestPostgres with_types_in wasip2);
