//! F3: Redis key confinement. Any pipeline of the guest's typed commands (and
//! the calls that are not commands: PTTL, SISMEMBER, …) is turned into the
//! bytes the host would send, and those bytes are read back here with a RESP
//! parser of this file's own. Oracle: no panic; the bytes are whole RESP
//! commands and nothing else; each command name is one the host offers (no
//! KEYS, SCAN, FLUSHALL, SELECT, EVAL, CONFIG…); every key and channel position
//! holds exactly `prefix ++ the guest's key`; options are only the host's own
//! words (NX, XX, PX <ms>), and a score is always a number, so guest bytes never
//! become a flag; refusals (too long, too many, empty, NaN) are `invalid`.
#![no_main]

use alorig_host::{
    capabilities::redis::{
        Command, Error, MAX_ITEMS, MAX_KEY, RedisApp, RedisHost, SetCondition, SetOptions,
    },
    config::manifest,
    limits::MemoryBudget,
    metrics::Metrics,
};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

const PREFIX: &str = "app-a:";

static APP: LazyLock<RedisApp> = LazyLock::new(|| {
    let host = RedisHost {
        // Never connected to: only the commands are built.
        url: Some("redis://127.0.0.1:1".into()),
    };
    let config = manifest::Redis {
        db: 3,
        prefix: PREFIX.into(),
        channels: vec![],
    };
    let budget = Arc::new(MemoryBudget::new(
        1 << 20,
        Default::default(),
        Default::default(),
    ));
    RedisApp::new(
        &host,
        "app-a",
        &config,
        Metrics::new().redis("app-a"),
        budget,
    )
    .expect("the fuzz app's Redis")
});

/// A guest command, as arbitrary data (mirrors `wit/redis.wit`'s `command`).
#[derive(Arbitrary, Debug, Clone)]
enum Cmd {
    Get(String),
    Set(String, Vec<u8>, Option<u64>, u8),
    Del(Vec<String>),
    Exists(Vec<String>),
    IncrBy(String, i64),
    Expire(String, u64),
    Hget(String, String),
    Hset(String, Vec<(String, Vec<u8>)>),
    Hgetall(String),
    Hdel(String, Vec<String>),
    HincrBy(String, String, i64),
    Sadd(String, Vec<Vec<u8>>),
    Srem(String, Vec<Vec<u8>>),
    Smembers(String),
    Rpush(String, Vec<Vec<u8>>),
    Lpush(String, Vec<Vec<u8>>),
    Lrange(String, i64, i64),
    Zadd(String, Vec<(f64, Vec<u8>)>),
    Zrem(String, Vec<Vec<u8>>),
    Publish(String, Vec<u8>),
}

impl Cmd {
    fn to_command(&self) -> Command {
        match self.clone() {
            Cmd::Get(k) => Command::Get(k),
            Cmd::Set(k, v, ttl_ms, c) => Command::Set((
                k,
                v,
                SetOptions {
                    ttl_ms,
                    condition: match c % 3 {
                        0 => SetCondition::Always,
                        1 => SetCondition::IfAbsent,
                        _ => SetCondition::IfPresent,
                    },
                },
            )),
            Cmd::Del(k) => Command::Del(k),
            Cmd::Exists(k) => Command::Exists(k),
            Cmd::IncrBy(k, d) => Command::IncrBy((k, d)),
            Cmd::Expire(k, t) => Command::Expire((k, t)),
            Cmd::Hget(k, f) => Command::Hget((k, f)),
            Cmd::Hset(k, f) => Command::Hset((k, f)),
            Cmd::Hgetall(k) => Command::Hgetall(k),
            Cmd::Hdel(k, f) => Command::Hdel((k, f)),
            Cmd::HincrBy(k, f, d) => Command::HincrBy((k, f, d)),
            Cmd::Sadd(k, m) => Command::Sadd((k, m)),
            Cmd::Srem(k, m) => Command::Srem((k, m)),
            Cmd::Smembers(k) => Command::Smembers(k),
            Cmd::Rpush(k, m) => Command::Rpush((k, m)),
            Cmd::Lpush(k, m) => Command::Lpush((k, m)),
            Cmd::Lrange(k, a, b) => Command::Lrange((k, a, b)),
            Cmd::Zadd(k, m) => Command::Zadd((k, m)),
            Cmd::Zrem(k, m) => Command::Zrem((k, m)),
            Cmd::Publish(c, m) => Command::Publish((c, m)),
        }
    }

    /// Whether the host must refuse it before sending anything, by the WIT
    /// interface's documented bounds.
    fn must_refuse(&self) -> bool {
        let key = |k: &String| k.len() > MAX_KEY;
        let list = |n: usize| n == 0 || n > MAX_ITEMS;
        match self {
            Cmd::Get(k) | Cmd::Hgetall(k) | Cmd::Smembers(k) | Cmd::Publish(k, _) => key(k),
            Cmd::IncrBy(k, _) | Cmd::Hget(k, _) | Cmd::HincrBy(k, _, _) | Cmd::Lrange(k, _, _) => {
                key(k)
            }
            Cmd::Set(k, _, ttl, _) => key(k) || ttl.is_some_and(bad_ttl),
            Cmd::Expire(k, ttl) => key(k) || bad_ttl(*ttl),
            Cmd::Del(keys) | Cmd::Exists(keys) => list(keys.len()) || keys.iter().any(key),
            Cmd::Hset(k, f) => key(k) || list(f.len()),
            Cmd::Hdel(k, f) => key(k) || list(f.len()),
            Cmd::Sadd(k, m) | Cmd::Srem(k, m) | Cmd::Rpush(k, m) | Cmd::Lpush(k, m) => {
                key(k) || list(m.len())
            }
            Cmd::Zrem(k, m) => key(k) || list(m.len()),
            Cmd::Zadd(k, m) => key(k) || list(m.len()) || m.iter().any(|(s, _)| s.is_nan()),
        }
    }

    /// The guest keys (or channel) it names, in the order Redis sees them.
    fn keys(&self) -> Vec<&str> {
        match self {
            Cmd::Del(keys) | Cmd::Exists(keys) => keys.iter().map(String::as_str).collect(),
            Cmd::Get(k)
            | Cmd::Set(k, ..)
            | Cmd::IncrBy(k, _)
            | Cmd::Expire(k, _)
            | Cmd::Hget(k, _)
            | Cmd::Hset(k, _)
            | Cmd::Hgetall(k)
            | Cmd::Hdel(k, _)
            | Cmd::HincrBy(k, ..)
            | Cmd::Sadd(k, _)
            | Cmd::Srem(k, _)
            | Cmd::Smembers(k)
            | Cmd::Rpush(k, _)
            | Cmd::Lpush(k, _)
            | Cmd::Lrange(k, ..)
            | Cmd::Zadd(k, _)
            | Cmd::Zrem(k, _)
            | Cmd::Publish(k, _) => vec![k],
        }
    }
}

fn bad_ttl(ms: u64) -> bool {
    ms == 0 || ms > i64::MAX as u64
}

#[derive(Arbitrary, Debug)]
struct Input {
    pipeline: Vec<Cmd>,
    atomic: bool,
    /// A call that is not a pipeline command: (which, key, member).
    key_call: (u8, String, Vec<u8>),
}

/// The calls of `wit/redis.wit` that are not `command`s, with the arguments
/// after the key that the host sends for them.
const KEY_CALLS: &[&str] = &[
    "PTTL",
    "SISMEMBER",
    "SCARD",
    "LPOP",
    "RPOP",
    "LLEN",
    "ZSCORE",
    "ZCARD",
];

fuzz_target!(|input: Input| {
    let app = &*APP;
    let commands: Vec<Command> = input.pipeline.iter().map(Cmd::to_command).collect();
    let refused = input.pipeline.is_empty()
        || input.pipeline.len() > MAX_ITEMS
        || input.pipeline.iter().any(Cmd::must_refuse);
    match app.packed_pipeline(&commands, input.atomic) {
        Err(err) => {
            assert!(matches!(err, Error::Invalid(_)), "{err:?}");
            assert!(refused, "refused a valid pipeline: {:?}", input.pipeline);
        }
        Ok(bytes) => {
            assert!(!refused, "sent a pipeline to refuse: {:?}", input.pipeline);
            let mut sent = parse_commands(&bytes);
            if input.atomic {
                assert_eq!(sent.first().map(|c| c[0].as_slice()), Some(&b"MULTI"[..]));
                assert_eq!(sent.last().map(|c| c[0].as_slice()), Some(&b"EXEC"[..]));
                assert!(sent.first().unwrap().len() == 1 && sent.last().unwrap().len() == 1);
                sent = sent[1..sent.len() - 1].to_vec();
            }
            assert_eq!(sent.len(), input.pipeline.len());
            for (cmd, args) in input.pipeline.iter().zip(&sent) {
                check_command(cmd, args);
            }
        }
    }

    let (which, key, member) = &input.key_call;
    let name = KEY_CALLS[*which as usize % KEY_CALLS.len()];
    let rest: Vec<&[u8]> = match name {
        "SISMEMBER" | "ZSCORE" => vec![member.as_slice()],
        _ => vec![],
    };
    match app.packed_key_command(name, key, &rest) {
        Err(err) => {
            assert!(matches!(err, Error::Invalid(_)));
            assert!(key.len() > MAX_KEY);
        }
        Ok(bytes) => {
            let sent = parse_commands(&bytes);
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0][0], name.as_bytes());
            assert_eq!(sent[0][1], full(key));
            assert_eq!(sent[0].len(), 2 + rest.len());
        }
    }

    // Pub/sub channels: prefixed on the way in, stripped on the way out.
    let channel = app.channel(key);
    assert_eq!(channel, full(key));
    assert_eq!(app.strip_prefix(&channel), Some(key.as_bytes()));
    assert_eq!(
        app.strip_prefix(member),
        member.strip_prefix(PREFIX.as_bytes())
    );
});

fn full(key: &str) -> Vec<u8> {
    [PREFIX.as_bytes(), key.as_bytes()].concat()
}

/// The arguments of one command as sent, checked against what the guest asked.
fn check_command(cmd: &Cmd, args: &[Vec<u8>]) {
    let name = std::str::from_utf8(&args[0]).expect("an ASCII command name");
    let (expected_name, key_positions): (&str, Vec<usize>) = match cmd {
        Cmd::Get(_) => ("GET", vec![1]),
        Cmd::Set(..) => ("SET", vec![1]),
        Cmd::Del(k) => ("DEL", (1..=k.len()).collect()),
        Cmd::Exists(k) => ("EXISTS", (1..=k.len()).collect()),
        Cmd::IncrBy(..) => ("INCRBY", vec![1]),
        Cmd::Expire(..) => ("PEXPIRE", vec![1]),
        Cmd::Hget(..) => ("HGET", vec![1]),
        Cmd::Hset(..) => ("HSET", vec![1]),
        Cmd::Hgetall(_) => ("HGETALL", vec![1]),
        Cmd::Hdel(..) => ("HDEL", vec![1]),
        Cmd::HincrBy(..) => ("HINCRBY", vec![1]),
        Cmd::Sadd(..) => ("SADD", vec![1]),
        Cmd::Srem(..) => ("SREM", vec![1]),
        Cmd::Smembers(_) => ("SMEMBERS", vec![1]),
        Cmd::Rpush(..) => ("RPUSH", vec![1]),
        Cmd::Lpush(..) => ("LPUSH", vec![1]),
        Cmd::Lrange(..) => ("LRANGE", vec![1]),
        Cmd::Zadd(..) => ("ZADD", vec![1]),
        Cmd::Zrem(..) => ("ZREM", vec![1]),
        Cmd::Publish(..) => ("PUBLISH", vec![1]),
    };
    assert_eq!(name, expected_name);
    for (position, key) in key_positions.iter().zip(cmd.keys()) {
        assert_eq!(args[*position], full(key), "{name} argument {position}");
    }
    let int = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
    };
    // The rest of the arguments, by shape: nothing the guest sends lands where
    // Redis reads a keyword.
    match cmd {
        Cmd::Set(_, v, ttl, c) => {
            assert_eq!(&args[2], v);
            let mut options: Vec<&[u8]> = Vec::new();
            match c % 3 {
                1 => options.push(b"NX"),
                2 => options.push(b"XX"),
                _ => {}
            }
            let ttl_text = ttl.map(|t| t.to_string());
            if let Some(t) = &ttl_text {
                options.extend([b"PX".as_slice(), t.as_bytes()]);
            }
            let sent: Vec<&[u8]> = args[3..].iter().map(Vec::as_slice).collect();
            assert_eq!(sent, options);
        }
        Cmd::Del(k) | Cmd::Exists(k) => assert_eq!(args.len(), 1 + k.len()),
        Cmd::IncrBy(_, d) => assert_eq!((args.len(), int(&args[2])), (3, Some(*d))),
        Cmd::Expire(_, t) => assert_eq!((args.len(), int(&args[2])), (3, Some(*t as i64))),
        Cmd::Hget(_, f) => assert_eq!((args.len(), args[2].as_slice()), (3, f.as_bytes())),
        Cmd::Hset(_, fields) => {
            assert_eq!(args.len(), 2 + 2 * fields.len());
            for (i, (f, v)) in fields.iter().enumerate() {
                assert_eq!(args[2 + 2 * i], f.as_bytes());
                assert_eq!(&args[3 + 2 * i], v);
            }
        }
        Cmd::Hdel(_, fields) => {
            assert_eq!(args.len(), 2 + fields.len());
            for (i, f) in fields.iter().enumerate() {
                assert_eq!(args[2 + i], f.as_bytes());
            }
        }
        Cmd::HincrBy(_, f, d) => {
            assert_eq!(args.len(), 4);
            assert_eq!(args[2], f.as_bytes());
            assert_eq!(int(&args[3]), Some(*d));
        }
        Cmd::Sadd(_, m)
        | Cmd::Srem(_, m)
        | Cmd::Rpush(_, m)
        | Cmd::Lpush(_, m)
        | Cmd::Zrem(_, m) => {
            assert_eq!(&args[2..], m.as_slice());
        }
        Cmd::Lrange(_, a, b) => {
            assert_eq!(args.len(), 4);
            assert_eq!((int(&args[2]), int(&args[3])), (Some(*a), Some(*b)));
        }
        Cmd::Zadd(_, members) => {
            assert_eq!(args.len(), 2 + 2 * members.len());
            for (i, (score, member)) in members.iter().enumerate() {
                let text = std::str::from_utf8(&args[2 + 2 * i]).expect("a score is text");
                let parsed = match text {
                    "+inf" => f64::INFINITY,
                    "-inf" => f64::NEG_INFINITY,
                    t => t.parse::<f64>().unwrap_or_else(|_| panic!("score {t:?}")),
                };
                assert_eq!(parsed.to_bits(), score.to_bits(), "{text}");
                assert_eq!(&args[3 + 2 * i], member);
            }
        }
        Cmd::Publish(_, m) => assert_eq!((args.len(), &args[2]), (3, m)),
        Cmd::Get(_) | Cmd::Hgetall(_) | Cmd::Smembers(_) => assert_eq!(args.len(), 2),
    }
}

/// Whole RESP commands (arrays of bulk strings), the only thing the bytes may hold.
fn parse_commands(mut bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    fn line<'a>(bytes: &mut &'a [u8], tag: u8) -> usize {
        assert_eq!(
            bytes.first(),
            Some(&tag),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        let end = bytes.windows(2).position(|w| w == b"\r\n").expect("CRLF");
        let n = std::str::from_utf8(&bytes[1..end])
            .unwrap()
            .parse()
            .unwrap();
        *bytes = &bytes[end + 2..];
        n
    }
    let mut commands = Vec::new();
    while !bytes.is_empty() {
        let count = line(&mut bytes, b'*');
        assert!(count >= 1);
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            let len = line(&mut bytes, b'$');
            args.push(bytes[..len].to_vec());
            assert_eq!(&bytes[len..len + 2], b"\r\n");
            bytes = &bytes[len + 2..];
        }
        commands.push(args);
    }
    commands
}
