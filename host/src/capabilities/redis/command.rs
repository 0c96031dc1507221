//! The commands a guest's typed calls become: every key is `prefix ++ guest
//! key` (plain bytes), every count and argument bounded before anything reaches
//! Redis, and the replies turned back into the guest's types.

use super::{Command, Error, MAX_ITEMS, RedisApp, Reply, SetCondition};
use redis::Value;

impl RedisApp {
    /// The command for one pipeline entry (and, through [`RedisApp::call`], for
    /// the single-command functions), with every key prefixed.
    pub(super) fn command(&self, command: &Command) -> Result<redis::Cmd, Error> {
        let mut cmd;
        match command {
            Command::Get(key) => {
                cmd = redis::cmd("GET");
                cmd.arg(self.key(key)?);
            }
            Command::Set((key, value, options)) => {
                cmd = redis::cmd("SET");
                cmd.arg(self.key(key)?).arg(value.as_slice());
                match options.condition {
                    SetCondition::Always => {}
                    SetCondition::IfAbsent => {
                        cmd.arg("NX");
                    }
                    SetCondition::IfPresent => {
                        cmd.arg("XX");
                    }
                }
                if let Some(ttl) = options.ttl_ms {
                    cmd.arg("PX").arg(ttl_arg(ttl)?);
                }
            }
            Command::Del(keys) => {
                cmd = redis::cmd("DEL");
                cmd.arg(self.keys(keys)?);
            }
            Command::Exists(keys) => {
                cmd = redis::cmd("EXISTS");
                cmd.arg(self.keys(keys)?);
            }
            Command::IncrBy((key, delta)) => {
                cmd = redis::cmd("INCRBY");
                cmd.arg(self.key(key)?).arg(*delta);
            }
            Command::Expire((key, ttl)) => {
                cmd = redis::cmd("PEXPIRE");
                cmd.arg(self.key(key)?).arg(ttl_arg(*ttl)?);
            }
            Command::Hget((key, field)) => {
                cmd = redis::cmd("HGET");
                cmd.arg(self.key(key)?).arg(field.as_bytes());
            }
            Command::Hset((key, fields)) => {
                non_empty(fields.len())?;
                cmd = redis::cmd("HSET");
                cmd.arg(self.key(key)?);
                for (field, value) in fields {
                    cmd.arg(field.as_bytes()).arg(value.as_slice());
                }
            }
            Command::Hgetall(key) => {
                cmd = redis::cmd("HGETALL");
                cmd.arg(self.key(key)?);
            }
            Command::Hdel((key, fields)) => {
                non_empty(fields.len())?;
                cmd = redis::cmd("HDEL");
                cmd.arg(self.key(key)?);
                for field in fields {
                    cmd.arg(field.as_bytes());
                }
            }
            Command::HincrBy((key, field, delta)) => {
                cmd = redis::cmd("HINCRBY");
                cmd.arg(self.key(key)?).arg(field.as_bytes()).arg(*delta);
            }
            Command::Sadd((key, members))
            | Command::Srem((key, members))
            | Command::Rpush((key, members))
            | Command::Lpush((key, members))
            | Command::Zrem((key, members)) => {
                non_empty(members.len())?;
                cmd = redis::cmd(match command {
                    Command::Sadd(_) => "SADD",
                    Command::Srem(_) => "SREM",
                    Command::Rpush(_) => "RPUSH",
                    Command::Lpush(_) => "LPUSH",
                    _ => "ZREM",
                });
                cmd.arg(self.key(key)?);
                for member in members {
                    cmd.arg(member.as_slice());
                }
            }
            Command::Smembers(key) => {
                cmd = redis::cmd("SMEMBERS");
                cmd.arg(self.key(key)?);
            }
            Command::Lrange((key, start, stop)) => {
                cmd = redis::cmd("LRANGE");
                cmd.arg(self.key(key)?).arg(*start).arg(*stop);
            }
            Command::Zadd((key, members)) => {
                non_empty(members.len())?;
                cmd = redis::cmd("ZADD");
                cmd.arg(self.key(key)?);
                for (score, member) in members {
                    cmd.arg(score_arg(*score)?).arg(member.as_slice());
                }
            }
            Command::Publish((channel, message)) => {
                cmd = redis::cmd("PUBLISH");
                cmd.arg(self.key(channel)?).arg(message.as_slice());
            }
        }
        Ok(cmd)
    }
}

pub(super) fn items(count: usize) -> Result<(), Error> {
    if count > MAX_ITEMS {
        return Err(Error::Invalid(format!(
            "at most {MAX_ITEMS} items per call, not {count}"
        )));
    }
    Ok(())
}

pub(super) fn non_empty(count: usize) -> Result<(), Error> {
    if count == 0 {
        return Err(Error::Invalid("the list may not be empty".into()));
    }
    items(count)
}

pub(super) fn ttl_arg(ttl_ms: u64) -> Result<i64, Error> {
    match i64::try_from(ttl_ms) {
        Ok(ttl) if ttl > 0 => Ok(ttl),
        _ => Err(Error::Invalid(format!(
            "a ttl must be between 1 and {} ms",
            i64::MAX
        ))),
    }
}

pub(super) fn score_arg(score: f64) -> Result<String, Error> {
    if score.is_nan() {
        return Err(Error::Invalid("a score may not be NaN".into()));
    }
    Ok(if score == f64::INFINITY {
        "+inf".into()
    } else if score == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{score:?}")
    })
}

pub(super) fn bytes_of(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes,
        Value::SimpleString(text) => text.into_bytes(),
        Value::Okay => b"OK".to_vec(),
        Value::Int(n) => n.to_string().into_bytes(),
        Value::Double(d) => d.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

pub(super) fn reply(value: Value) -> Reply {
    match value {
        Value::Nil => Reply::Nil,
        Value::Okay => Reply::Ok,
        Value::Int(n) => Reply::Integer(n),
        Value::Boolean(b) => Reply::Integer(b as i64),
        Value::Array(values) | Value::Set(values) => {
            Reply::Array(values.into_iter().map(bytes_of).collect())
        }
        Value::Map(pairs) => Reply::Array(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [bytes_of(k), bytes_of(v)])
                .collect(),
        ),
        Value::SimpleString(text) if text == "OK" => Reply::Ok,
        other => Reply::Data(bytes_of(other)),
    }
}

pub(super) fn pairs(flat: Vec<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    out
}

pub(super) fn parse_score(text: &str) -> Option<f64> {
    match text {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_KEY, RedisHost, SetOptions};
    use super::*;
    use crate::config::manifest;
    use std::sync::Arc;

    fn app() -> RedisApp {
        let host = RedisHost {
            url: Some("redis://127.0.0.1:1".into()),
        };
        let config = manifest::Redis {
            db: 3,
            prefix: "a:".into(),
            channels: vec![],
        };
        let budget = Arc::new(crate::limits::MemoryBudget::new(
            1 << 20,
            Default::default(),
            Default::default(),
        ));
        RedisApp::new(
            &host,
            "a",
            &config,
            crate::metrics::Metrics::new().redis("a"),
            budget,
        )
        .unwrap()
    }

    fn args(cmd: &redis::Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => b"<cursor>".to_vec(),
            })
            .collect()
    }

    #[test]
    fn every_key_of_every_command_is_the_prefix_then_the_guest_bytes() {
        let app = app();
        let hostile = "../b:*\0\r\nFLUSHALL\r\n[a-z]?";
        let full = [b"a:".as_slice(), hostile.as_bytes()].concat();
        let k = || hostile.to_string();
        let v = || b"v".to_vec();
        let opts = SetOptions {
            ttl_ms: Some(5),
            condition: SetCondition::IfAbsent,
        };
        let commands = vec![
            Command::Get(k()),
            Command::Set((k(), v(), opts)),
            Command::Del(vec![k(), k()]),
            Command::Exists(vec![k()]),
            Command::IncrBy((k(), 1)),
            Command::Expire((k(), 5)),
            Command::Hget((k(), "f".into())),
            Command::Hset((k(), vec![("f".into(), v())])),
            Command::Hgetall(k()),
            Command::Hdel((k(), vec!["f".into()])),
            Command::HincrBy((k(), "f".into(), 1)),
            Command::Sadd((k(), vec![v()])),
            Command::Srem((k(), vec![v()])),
            Command::Smembers(k()),
            Command::Rpush((k(), vec![v()])),
            Command::Lpush((k(), vec![v()])),
            Command::Lrange((k(), 0, -1)),
            Command::Zadd((k(), vec![(1.0, v())])),
            Command::Zrem((k(), vec![v()])),
            Command::Publish((k(), v())),
        ];
        for command in &commands {
            let args = args(&app.command(command).unwrap());
            assert_eq!(args[1], full, "{command:?}");
            if let Command::Del(_) = command {
                assert_eq!(args[2], full);
            }
        }
        // The command name is the host's, never the guest's.
        assert_eq!(args(&app.command(&Command::Get(k())).unwrap())[0], b"GET");
    }

    #[test]
    fn out_of_bounds_arguments_are_refused_before_reaching_redis() {
        let app = app();
        assert!(app.command(&Command::Get("k".repeat(MAX_KEY))).is_ok());
        assert!(matches!(
            app.command(&Command::Get("k".repeat(MAX_KEY + 1))),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            app.command(&Command::Del(vec![])),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            app.command(&Command::Del(vec![String::new(); MAX_ITEMS + 1])),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            app.command(&Command::Zadd(("z".into(), vec![(f64::NAN, vec![])]))),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            app.command(&Command::Expire(("z".into(), 0))),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            app.command(&Command::Expire(("z".into(), u64::MAX))),
            Err(Error::Invalid(_))
        ));
        assert_eq!(score_arg(f64::INFINITY).unwrap(), "+inf");
        assert_eq!(parse_score("-inf"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn channels_are_prefixed_and_stripped() {
        let app = app();
        assert_eq!(app.channel("news"), b"a:news");
        assert_eq!(app.strip_prefix(b"a:news"), Some(b"news".as_slice()));
        assert_eq!(app.strip_prefix(b"b:news"), None);
    }

    /// The guest's calls, straight on the `Host` trait (no wasm): an app
    /// without `[redis]` gets `invalid`, an unreachable Redis `unavailable`
    /// (or `timeout`), and neither traps.
    #[tokio::test]
    async fn host_calls_answer_errors_the_guest_can_act_on() {
        use super::super::{RedisCtx, wit::Host as _};
        let none = RedisCtx::default();
        assert!(matches!(
            none.view().get("k".into()).await.unwrap(),
            Err(Error::Invalid(_))
        ));
        let down = Arc::new(app());
        let ctx = RedisCtx::new(Some(&down));
        let answer = ctx.view().get("k".into()).await.unwrap();
        assert!(
            matches!(answer, Err(Error::Unavailable | Error::Timeout)),
            "{answer:?}"
        );
        let too_long = ctx.view().get("k".repeat(MAX_KEY + 1)).await.unwrap();
        assert!(
            matches!(too_long, Err(Error::Invalid(_))),
            "checked before connecting: {too_long:?}"
        );
    }
}
