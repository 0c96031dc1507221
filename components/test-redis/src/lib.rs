//! Test guest for `alorig:host/redis`. Routes (keys and channels hex-encoded in
//! the query as `k=`, so any bytes and the empty key can be sent; values are the
//! request body):
//!
//! * `/selftest` — every operation with values holding all 256 byte values;
//!   answers `ok` or 500 with what differed;
//! * `/set?k=`, `/get?k=`, `/del?k=`, `/exists?k=`, `/incr?k=`, `/hset?k=&f=`,
//!   `/hgetall?k=`, `/pipeline?k=` (set then get in one transaction),
//!   `/long?len=N` (set a key of N bytes), `/publish?k=`, `/lrange?k=`;
//! * `/bench?n=N&k=` — N GETs of one key, timed in the guest: `p50_ns p99_ns`.
//!
//! Errors become statuses: wrong-type 409, invalid 400, unavailable 503,
//! timeout 504, other 500 (body names the variant). Messages on subscribed
//! channels are appended to the list `received:<channel>`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "alorig:host/redis-subscriber",
});

use alorig::host::redis::{self, Command, Error, KeyTtl, Reply, SetCondition, SetOptions};
use guest_kit::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Guest;

const NO_OPTIONS: SetOptions = SetOptions {
    ttl_ms: None,
    condition: SetCondition::Always,
};

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn param_key(req: &IncomingRequest, name: &str) -> String {
    let raw = guest_kit::query_param(req, name).unwrap_or_default();
    String::from_utf8(hex(&raw)).unwrap_or_default()
}

fn fail(out: ResponseOutparam, err: Error) {
    let (status, text) = match err {
        Error::WrongType => (409, "wrong-type".to_string()),
        Error::Invalid(why) => (400, format!("invalid: {why}")),
        Error::Unavailable => (503, "unavailable".to_string()),
        Error::Timeout => (504, "timeout".to_string()),
        Error::Other(why) => (500, format!("other: {why}")),
    };
    guest_kit::respond(out, status, "text/plain", text.as_bytes());
}

fn answer(out: ResponseOutparam, result: Result<Vec<u8>, Error>) {
    match result {
        Ok(body) => guest_kit::respond(out, 200, "application/octet-stream", &body),
        Err(err) => fail(out, err),
    }
}

fn check(what: &str, ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what} differed"))
    }
}

/// Every operation once, with binary values; `Err` names the first surprise.
fn selftest() -> Result<(), String> {
    let all: Vec<u8> = (0..=255u8).collect();
    let e = |err: Error| format!("{err:?}");
    let _ = redis::del(&[
        "s".into(),
        "n".into(),
        "h".into(),
        "set".into(),
        "l".into(),
        "z".into(),
        "t".into(),
    ]);

    // Strings.
    check("set", redis::set("s", &all, NO_OPTIONS).map_err(e)?)?;
    check("get", redis::get("s").map_err(e)? == Some(all.clone()))?;
    check("get missing", redis::get("missing").map_err(e)?.is_none())?;
    let nx = SetOptions {
        ttl_ms: None,
        condition: SetCondition::IfAbsent,
    };
    check("set nx on existing", !redis::set("s", b"x", nx).map_err(e)?)?;
    let xx = SetOptions {
        ttl_ms: Some(60_000),
        condition: SetCondition::IfPresent,
    };
    check("set xx missing", !redis::set("nope", b"x", xx).map_err(e)?)?;
    check(
        "set xx px",
        redis::set("t", b"", nx).map_err(e)? && redis::set("t", b"\0", xx).map_err(e)?,
    )?;
    check(
        "ttl",
        matches!(redis::ttl("t").map_err(e)?, KeyTtl::ExpiresInMs(ms) if ms > 50_000 && ms <= 60_000),
    )?;
    check(
        "ttl persistent",
        matches!(redis::ttl("s").map_err(e)?, KeyTtl::Persistent),
    )?;
    check(
        "ttl missing",
        matches!(redis::ttl("missing").map_err(e)?, KeyTtl::Missing),
    )?;
    check(
        "expire",
        redis::expire("s", 30_000).map_err(e)? && !redis::expire("missing", 1000).map_err(e)?,
    )?;
    check(
        "exists",
        redis::exists(&["s".into(), "t".into(), "missing".into(), "s".into()]).map_err(e)? == 3,
    )?;
    check(
        "incr",
        redis::incr("n").map_err(e)? == 1 && redis::incr_by("n", -5).map_err(e)? == -4,
    )?;
    check(
        "incr non-integer",
        matches!(redis::incr("s"), Err(Error::Other(_))),
    )?;

    // Hashes.
    let fields = vec![
        ("buffer_go".to_string(), all.clone()),
        ("".to_string(), b"".to_vec()),
        ("n".to_string(), b"7".to_vec()),
    ];
    check("hset", redis::hset("h", &fields).map_err(e)? == 3)?;
    check(
        "hget",
        redis::hget("h", "buffer_go").map_err(e)? == Some(all.clone()),
    )?;
    let mut got = redis::hgetall("h").map_err(e)?;
    got.sort();
    let mut want = fields.clone();
    want.sort();
    check("hgetall", got == want)?;
    check("hincrby", redis::hincr_by("h", "n", 3).map_err(e)? == 10)?;
    check(
        "hdel",
        redis::hdel("h", &["n".into(), "zz".into()]).map_err(e)? == 1,
    )?;
    check(
        "wrong type",
        matches!(redis::get("h"), Err(Error::WrongType)),
    )?;

    // Sets.
    check(
        "sadd",
        redis::sadd("set", &[all.clone(), b"a".to_vec(), b"a".to_vec()]).map_err(e)? == 2,
    )?;
    check(
        "sismember",
        redis::sismember("set", &all).map_err(e)? && !redis::sismember("set", b"b").map_err(e)?,
    )?;
    check("scard", redis::scard("set").map_err(e)? == 2)?;
    let mut members = redis::smembers("set").map_err(e)?;
    members.sort();
    check("smembers", members == vec![all.clone(), b"a".to_vec()])?;
    check(
        "srem",
        redis::srem("set", &[b"a".to_vec()]).map_err(e)? == 1,
    )?;

    // Lists.
    check(
        "rpush",
        redis::rpush("l", &[b"2".to_vec(), all.clone()]).map_err(e)? == 2,
    )?;
    check(
        "lpush",
        redis::lpush("l", &[b"1".to_vec()]).map_err(e)? == 3,
    )?;
    check(
        "lrange",
        redis::lrange("l", 0, -1).map_err(e)? == vec![b"1".to_vec(), b"2".to_vec(), all.clone()],
    )?;
    check("llen", redis::llen("l").map_err(e)? == 3)?;
    check("lpop", redis::lpop("l").map_err(e)? == Some(b"1".to_vec()))?;
    check("rpop", redis::rpop("l").map_err(e)? == Some(all.clone()))?;
    check("rpop empty", {
        redis::rpop("l").map_err(e)?;
        redis::rpop("l").map_err(e)?.is_none()
    })?;

    // Sorted sets.
    check(
        "zadd",
        redis::zadd(
            "z",
            &[
                (1.5, b"a".to_vec()),
                (-2.0, all.clone()),
                (10.0, b"c".to_vec()),
            ],
        )
        .map_err(e)?
            == 3,
    )?;
    check(
        "zrange",
        redis::zrange_by_score("z", f64::NEG_INFINITY, 2.0, None).map_err(e)?
            == vec![(all.clone(), -2.0), (b"a".to_vec(), 1.5)],
    )?;
    check(
        "zrange limit",
        redis::zrange_by_score("z", 0.0, f64::INFINITY, Some(1)).map_err(e)?
            == vec![(b"a".to_vec(), 1.5)],
    )?;
    check(
        "zscore",
        redis::zscore("z", b"c").map_err(e)? == Some(10.0)
            && redis::zscore("z", b"x").map_err(e)?.is_none(),
    )?;
    check(
        "zrem",
        redis::zrem("z", &[b"c".to_vec()]).map_err(e)? == 1 && redis::zcard("z").map_err(e)? == 2,
    )?;
    check(
        "zadd nan",
        matches!(
            redis::zadd("z", &[(f64::NAN, b"x".to_vec())]),
            Err(Error::Invalid(_))
        ),
    )?;

    // Pipelines and transactions.
    let replies = redis::pipeline(
        &[
            Command::Set(("p".into(), all.clone(), NO_OPTIONS)),
            Command::Get("p".into()),
            Command::IncrBy(("pn".into(), 2)),
            Command::Hgetall("h".into()),
            Command::Get("nothing".into()),
            Command::Del(vec!["p".into(), "pn".into()]),
        ],
        true,
    )
    .map_err(e)?;
    let want = vec![
        Reply::Ok,
        Reply::Data(all.clone()),
        Reply::Integer(2),
        Reply::Array(vec![
            b"buffer_go".to_vec(),
            all.clone(),
            b"".to_vec(),
            b"".to_vec(),
        ]),
        Reply::Nil,
        Reply::Integer(2),
    ];
    // A hash has no order: compare HGETALL's pairs as a set.
    let sorted = |replies: &[Reply]| -> Vec<Reply> {
        replies
            .iter()
            .map(|r| match r {
                Reply::Array(flat) => {
                    let mut pairs: Vec<&[Vec<u8>]> = flat.chunks(2).collect();
                    pairs.sort();
                    Reply::Array(pairs.concat())
                }
                other => other.clone(),
            })
            .collect()
    };
    if format!("{:?}", sorted(&replies)) != format!("{:?}", sorted(&want)) {
        return Err(format!("transaction: {replies:?}"));
    }
    check(
        "pipeline",
        redis::pipeline(&[Command::Get("s".into())], false)
            .map_err(e)?
            .len()
            == 1,
    )?;
    for atomic in [true, false] {
        match redis::pipeline(&[Command::Get("h".into())], atomic) {
            Err(Error::WrongType) => {}
            other => return Err(format!("pipeline error (atomic {atomic}): {other:?}")),
        }
    }
    check(
        "empty del",
        matches!(redis::del(&[]), Err(Error::Invalid(_))),
    )?;

    // Publish (nobody listens on this one).
    check("publish", redis::publish("nobody", &all).map_err(e)? == 0)?;
    redis::del(&[
        "s".into(),
        "n".into(),
        "h".into(),
        "set".into(),
        "l".into(),
        "z".into(),
        "t".into(),
    ])
    .map_err(e)?;
    Ok(())
}

impl wasip2::exports::http::incoming_handler::Guest for Guest {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = guest_kit::path(&req);
        let key = param_key(&req, "k");
        match path.as_str() {
            "/selftest" => match selftest() {
                Ok(()) => guest_kit::respond(out, 200, "text/plain", b"ok"),
                Err(why) => guest_kit::respond(out, 500, "text/plain", why.as_bytes()),
            },
            "/set" => {
                let value = guest_kit::read_body(&req);
                answer(
                    out,
                    redis::set(&key, &value, NO_OPTIONS).map(|b| b.to_string().into_bytes()),
                )
            }
            "/get" => match redis::get(&key) {
                Ok(Some(value)) => guest_kit::respond(out, 200, "application/octet-stream", &value),
                Ok(None) => guest_kit::respond(out, 404, "text/plain", b"nil"),
                Err(err) => fail(out, err),
            },
            "/del" => answer(out, redis::del(&[key]).map(|n| n.to_string().into_bytes())),
            "/exists" => answer(
                out,
                redis::exists(&[key]).map(|n| n.to_string().into_bytes()),
            ),
            "/incr" => answer(out, redis::incr(&key).map(|n| n.to_string().into_bytes())),
            "/hset" => {
                let value = guest_kit::read_body(&req);
                let field = param_key(&req, "f");
                answer(
                    out,
                    redis::hset(&key, &[(field, value)]).map(|n| n.to_string().into_bytes()),
                )
            }
            "/hgetall" => answer(
                out,
                redis::hgetall(&key).map(|pairs| {
                    pairs
                        .into_iter()
                        .flat_map(|(f, v)| [f.into_bytes(), b"=".to_vec(), v, b"\n".to_vec()])
                        .flatten()
                        .collect()
                }),
            ),
            "/pipeline" => {
                let value = guest_kit::read_body(&req);
                let result = redis::pipeline(
                    &[
                        Command::Set((key.clone(), value, NO_OPTIONS)),
                        Command::Get(key),
                    ],
                    true,
                );
                answer(
                    out,
                    result.map(|replies| format!("{replies:?}").into_bytes()),
                )
            }
            "/long" => {
                let len: usize = guest_kit::query_param(&req, "len")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                answer(
                    out,
                    redis::set(&"k".repeat(len), b"long", NO_OPTIONS)
                        .map(|b| b.to_string().into_bytes()),
                )
            }
            "/publish" => {
                let value = guest_kit::read_body(&req);
                answer(
                    out,
                    redis::publish(&key, &value).map(|n| n.to_string().into_bytes()),
                )
            }
            "/lrange" => answer(
                out,
                redis::lrange(&key, 0, -1).map(|items| items.join(&b'\n')),
            ),
            "/bench" => {
                let n: usize = guest_kit::query_param(&req, "n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1000);
                let mut times = Vec::with_capacity(n);
                for _ in 0..n {
                    let started = wasip2::clocks::monotonic_clock::now();
                    if let Err(err) = redis::get(&key) {
                        return fail(out, err);
                    }
                    times.push(wasip2::clocks::monotonic_clock::now() - started);
                }
                times.sort();
                let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
                guest_kit::respond(
                    out,
                    200,
                    "text/plain",
                    format!("{} {}", at(0.5), at(0.99)).as_bytes(),
                );
            }
            _ => guest_kit::respond(out, 404, "text/plain", b"no such route"),
        }
    }
}

impl exports::alorig::host::redis_handler::Guest for Guest {
    fn on_message(channel: String, message: Vec<u8>) -> Result<(), String> {
        redis::rpush(&format!("received:{channel}"), &[message])
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }
}

export!(Guest);
wasip2::http::proxy::export!(Guest with_types_in wasip2);
