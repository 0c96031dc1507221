//! `alorig:host/redis` (`wit/redis.wit`): Redis for guests, each app confined to
//! its manifest's `[redis] db` and `prefix`.
//!
//! Confinement is by construction, in two walls:
//!
//! 1. **The interface.** A guest never sends a raw command. Every operation is a
//!    typed function; the host builds each key as `prefix ++ guest_key` (plain
//!    bytes, so `..`, globs, CR/LF or another app's prefix inside a guest key are
//!    just more bytes under this app's prefix) and never hands guest bytes to
//!    Redis in a position where they are read as a pattern, a command or a
//!    database. Nothing keyspace-wide is offered: no KEYS, SCAN, RANDOMKEY,
//!    FLUSHDB, SELECT, CONFIG or scripts. No operation returns key names, except
//!    pub/sub channel names, which are stripped of the prefix.
//! 2. **Redis ACLs**, where the host may manage them (its `redis_url` user can run
//!    `ACL SETUSER`): before each (re)connection the host (re)creates the user
//!    `alorig-<app>` with a random password, allowed only keys `~<prefix>*` and
//!    channels `&<prefix>*`, and denied `@dangerous` (KEYS, FLUSHDB, FLUSHALL,
//!    SWAPDB, CONFIG, …), scripting, SCAN, RANDOMKEY, MOVE, COPY and PUBSUB —
//!    key patterns alone do not stop the keyspace-wide commands. The app's
//!    connection then authenticates as that user. SELECT stays allowed: Redis
//!    ACLs do not know databases, and the connection must SELECT the app's db
//!    when it connects; since guests cannot send raw commands, only host code
//!    could ever issue another SELECT. The user is re-created at every
//!    reconnection, so a Redis restarted without persistence (which forgets ACL
//!    users) is served again without restarting the host. When the host's user
//!    may not manage ACLs, the app connects with `redis_url` itself and the first
//!    wall stands alone (logged once as a warning).
//!
//! Connections: one multiplexed connection per app, shared by all its instances,
//! made lazily on first use and re-made after it breaks (a call that finds the
//! kept connection broken tries once more on a new one, see `metered`); while
//! Redis is down a call fails fast with `unavailable` and the host keeps serving
//! everything else.
//! Every call is bounded by [`CALL_TIMEOUT`] (`timeout` to the guest).
//!
//! Redis as a trigger: see [`subscribe`] (`redis/subscriber.rs`). Logs name the app, never keys or values.

use crate::{
    config::manifest,
    metrics::{RedisErrorReason, RedisMetrics},
};
use arc_swap::ArcSwapOption;
use redis::{FromRedisValue, Value, aio::MultiplexedConnection};
use std::{sync::Arc, time::Duration};
use wasmtime::component::{HasData, Linker};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alorig:host/redis-imports",
        imports: { default: async | trappable },
    });
}

mod command;
mod connector;
mod subscriber;

use command::{items, non_empty, pairs, parse_score, reply, score_arg};
use connector::{Connector, broken, classify, random_password};
pub use subscriber::subscribe;

pub mod trigger {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alorig:host/redis-trigger",
        exports: { default: async },
    });
}

use generated::alorig::host::redis::{self as wit, KeyTtl, Reply};
/// A guest's typed command and its errors (public for the `redis_keys` fuzz target).
pub use generated::alorig::host::redis::{Command, Error, SetCondition, SetOptions};

/// The fully qualified name a component imports the interface under.
pub const INTERFACE: &str = "alorig:host/redis@0.1.0";

/// Longest key a guest may name (without the prefix).
pub const MAX_KEY: usize = 1024;
/// Most keys, fields, members or commands in one call.
pub const MAX_ITEMS: usize = 10_000;
/// Bound on one call, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The operator's Redis (host config `redis_url`), shared by every app.
#[derive(Clone, Debug, Default)]
pub struct RedisHost {
    pub url: Option<String>,
}

/// One app's Redis: its prefix, its connection and its metric handles. Built
/// once in `App::load`, shared by all the app's instances.
pub struct RedisApp {
    app: Arc<str>,
    prefix: Box<[u8]>,
    pub channels: Vec<String>,
    metrics: RedisMetrics,
    connector: Connector,
}

impl RedisApp {
    pub fn new(
        host: &RedisHost,
        app: &str,
        config: &manifest::Redis,
        metrics: RedisMetrics,
        budget: Arc<crate::limits::MemoryBudget>,
    ) -> anyhow::Result<Self> {
        use redis::IntoConnectionInfo as _;
        let url = host.url.as_deref().ok_or_else(|| {
            anyhow::anyhow!("the host has no redis_url (host.toml redis_url or ALORIG_REDIS_URL)")
        })?;
        let info = url
            .into_connection_info()
            .map_err(|e| anyhow::anyhow!("redis_url is not a Redis URL: {e}"))?;
        let settings = info.redis_settings().clone().set_db(config.db as i64);
        let admin = info.set_redis_settings(settings);
        let prefix = &config.prefix;
        let acl_rules = [
            "reset",
            "on",
            &format!("~{prefix}*"),
            &format!("&{prefix}*"),
            "+@all",
            "-@dangerous",
            "-@scripting",
            "-scan",
            "-randomkey",
            "-move",
            "-copy",
            "-pubsub",
            "-keys",
            "-flushdb",
            "-flushall",
            "-swapdb",
        ]
        .map(String::from)
        .to_vec();
        Ok(Self {
            app: app.into(),
            prefix: prefix.as_bytes().into(),
            channels: config.channels.clone(),
            metrics,
            connector: Connector {
                admin,
                user: format!("alorig-{app}"),
                password: random_password()?,
                acl_rules,
                current: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
                budget,
                relay: std::sync::OnceLock::new(),
                acl_warned: false.into(),
            },
        })
    }

    /// The app's Redis, when its manifest has `[redis]`.
    pub fn load(ctx: &super::LoadContext<'_>) -> Result<Option<Self>, super::LoadError> {
        let Some(config) = &ctx.manifest.redis else {
            return Ok(None);
        };
        Self::new(
            ctx.redis,
            ctx.name,
            config,
            ctx.metrics.redis(ctx.name),
            ctx.budget.clone(),
        )
        .map(Some)
        .map_err(|e| super::LoadError::operator(format!("{}: [redis]: {e}", ctx.source())))
    }

    /// `prefix ++ key`, refusing keys past [`MAX_KEY`].
    fn key(&self, key: &str) -> Result<Vec<u8>, Error> {
        if key.len() > MAX_KEY {
            return Err(Error::Invalid(format!(
                "a key may be at most {MAX_KEY} bytes, this one has {}",
                key.len()
            )));
        }
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key.as_bytes());
        Ok(full)
    }

    fn keys(&self, keys: &[String]) -> Result<Vec<Vec<u8>>, Error> {
        if keys.is_empty() {
            return Err(Error::Invalid("at least one key is needed".into()));
        }
        items(keys.len())?;
        keys.iter().map(|k| self.key(k)).collect()
    }

    /// Runs one command on the app's connection, counting it and its errors.
    async fn run<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.metered(|mut conn| async move { cmd.query_async::<T>(&mut conn).await })
            .await
    }

    async fn run_pipeline(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>, Error> {
        self.metered(|mut conn| async move { pipe.query_async::<Vec<Value>>(&mut conn).await })
            .await
    }

    /// One call: counted, bounded by [`CALL_TIMEOUT`], and tried once more on a
    /// new connection when the kept one turns out to be broken (Redis restarted
    /// while the app was idle), so the first call after an outage does not fail.
    /// Like most Redis clients' retry on a network error this is at-least-once:
    /// a command in flight at the very moment its connection broke may have been
    /// applied and is applied again.
    async fn metered<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.metrics.commands.inc();
        let result = tokio::time::timeout(CALL_TIMEOUT, async {
            let (conn, fresh) = self.connector.connection(&self.app).await?;
            match op((*conn).clone()).await {
                Ok(value) => Ok(value),
                Err(err) if !fresh && broken(&err) => {
                    self.connector.forget(&conn);
                    let (conn, _) = self.connector.connection(&self.app).await?;
                    op((*conn).clone())
                        .await
                        .map_err(|e| self.connector.failed(&self.app, &conn, e))
                }
                Err(err) => Err(self.connector.failed(&self.app, &conn, err)),
            }
        })
        .await
        .unwrap_or(Err(Error::Timeout));
        if let Err(err) = &result {
            self.metrics.error(error_reason(err));
        }
        result
    }

    async fn call<T: FromRedisValue>(&self, command: Command) -> Result<T, Error> {
        let cmd = self.command(&command)?;
        self.run(&cmd).await
    }

    async fn call_key<T: FromRedisValue>(
        &self,
        name: &str,
        key: &str,
        rest: &[&[u8]],
    ) -> Result<T, Error> {
        self.run(&self.key_command(name, key, rest)?).await
    }

    /// `name`, the prefixed key, then `rest` (the calls that are not a [`Command`]).
    fn key_command(&self, name: &str, key: &str, rest: &[&[u8]]) -> Result<redis::Cmd, Error> {
        let mut cmd = redis::cmd(name);
        cmd.arg(self.key(key)?);
        for arg in rest {
            cmd.arg(*arg);
        }
        Ok(cmd)
    }

    async fn pipeline(&self, commands: Vec<Command>, atomic: bool) -> Result<Vec<Reply>, Error> {
        Ok(self
            .run_pipeline(&self.pipe(&commands, atomic)?)
            .await?
            .into_iter()
            .map(reply)
            .collect())
    }

    fn pipe(&self, commands: &[Command], atomic: bool) -> Result<redis::Pipeline, Error> {
        non_empty(commands.len())?;
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for command in commands {
            pipe.add_command(self.command(command)?);
        }
        Ok(pipe)
    }

    /// The bytes a pipeline of guest commands sends to Redis (`MULTI` … `EXEC`
    /// around it when atomic), or its refusal: what the `redis_keys` fuzz target
    /// (`fuzz/`) checks stays under the prefix.
    pub fn packed_pipeline(&self, commands: &[Command], atomic: bool) -> Result<Vec<u8>, Error> {
        Ok(self.pipe(commands, atomic)?.get_packed_pipeline())
    }

    /// The bytes one of the calls that are not a [`Command`] (`PTTL`, `SISMEMBER`,
    /// …) sends, for the same fuzz target.
    pub fn packed_key_command(
        &self,
        name: &'static str,
        key: &str,
        rest: &[&[u8]],
    ) -> Result<Vec<u8>, Error> {
        Ok(self.key_command(name, key, rest)?.get_packed_command())
    }

    /// The full channel name for a subscription, as Redis sees it.
    pub fn channel(&self, channel: &str) -> Vec<u8> {
        let mut full = self.prefix.to_vec();
        full.extend_from_slice(channel.as_bytes());
        full
    }

    /// A channel name as the guest sees it: the prefix stripped.
    pub fn strip_prefix<'a>(&self, channel: &'a [u8]) -> Option<&'a [u8]> {
        channel.strip_prefix(&*self.prefix)
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    /// A dedicated pub/sub connection, as the app's user where ACLs are managed.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, Error> {
        let info = self.connector.prepare(&self.app).await?;
        let client = redis::Client::open(info).map_err(|e| Error::Other(e.to_string()))?;
        let connect = client.get_async_pubsub();
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(err)) => Err(classify(&self.app, err)),
            Err(_) => Err(Error::Unavailable),
        }
    }
}

fn error_reason(err: &Error) -> RedisErrorReason {
    match err {
        Error::WrongType => RedisErrorReason::WrongType,
        Error::Unavailable => RedisErrorReason::Unavailable,
        Error::Timeout => RedisErrorReason::Timeout,
        Error::Invalid(_) => RedisErrorReason::Invalid,
        Error::Other(_) => RedisErrorReason::Other,
    }
}

/// What `[redis]` grants: the app's prefix in its db.
pub fn grants(manifest: &manifest::Manifest) -> Vec<super::Grant> {
    let prefix = |r: &manifest::Redis| super::Grant {
        key: format!("redis {} {}", r.db, r.prefix),
        text: format!("Redis prefix {} (db {})", r.prefix, r.db),
        amount: None,
    };
    manifest.redis.iter().map(prefix).collect()
}

/// The per-instance state: the app's Redis, if its manifest has `[redis]`.
#[derive(Default)]
pub struct RedisCtx {
    app: Option<Arc<RedisApp>>,
}

impl RedisCtx {
    pub fn new(app: Option<&Arc<RedisApp>>) -> Self {
        Self { app: app.cloned() }
    }

    fn app(&self) -> Result<&RedisApp, Error> {
        self.app
            .as_deref()
            .ok_or_else(|| Error::Invalid("this app has no [redis] in its manifest".into()))
    }

    pub fn view(&self) -> RedisView<'_> {
        RedisView { ctx: self }
    }
}

/// The borrowed view the generated `Host` trait is implemented on.
pub struct RedisView<'a> {
    ctx: &'a RedisCtx,
}

struct HasRedis;

impl HasData for HasRedis {
    type Data<'a> = RedisView<'a>;
}

/// Links `alorig:host/redis` for every app; [`RedisCtx`] answers `invalid` to
/// an app without `[redis]` (such components are refused at load anyway).
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> RedisView<'_>,
) -> anyhow::Result<()> {
    wit::add_to_linker::<T, HasRedis>(linker, view)?;
    Ok(())
}

type R<T> = wasmtime::Result<Result<T, Error>>;

impl wit::Host for RedisView<'_> {
    async fn get(&mut self, key: String) -> R<Option<Vec<u8>>> {
        Ok(async { self.ctx.app()?.call(Command::Get(key)).await }.await)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, options: SetOptions) -> R<bool> {
        Ok(async {
            let done: Value = self
                .ctx
                .app()?
                .call(Command::Set((key, value, options)))
                .await?;
            Ok(!matches!(done, Value::Nil))
        }
        .await)
    }

    async fn del(&mut self, keys: Vec<String>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Del(keys)).await }.await)
    }

    async fn exists(&mut self, keys: Vec<String>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Exists(keys)).await }.await)
    }

    async fn incr(&mut self, key: String) -> R<i64> {
        Ok(async { self.ctx.app()?.call(Command::IncrBy((key, 1))).await }.await)
    }

    async fn incr_by(&mut self, key: String, delta: i64) -> R<i64> {
        Ok(async { self.ctx.app()?.call(Command::IncrBy((key, delta))).await }.await)
    }

    async fn expire(&mut self, key: String, ttl_ms: u64) -> R<bool> {
        Ok(async { self.ctx.app()?.call(Command::Expire((key, ttl_ms))).await }.await)
    }

    async fn ttl(&mut self, key: String) -> R<KeyTtl> {
        Ok(async {
            let ms: i64 = self.ctx.app()?.call_key("PTTL", &key, &[]).await?;
            Ok(match ms {
                -2 => KeyTtl::Missing,
                ms if ms < 0 => KeyTtl::Persistent,
                ms => KeyTtl::ExpiresInMs(ms as u64),
            })
        }
        .await)
    }

    async fn hget(&mut self, key: String, field: String) -> R<Option<Vec<u8>>> {
        Ok(async { self.ctx.app()?.call(Command::Hget((key, field))).await }.await)
    }

    async fn hset(&mut self, key: String, fields: Vec<(String, Vec<u8>)>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Hset((key, fields))).await }.await)
    }

    async fn hgetall(&mut self, key: String) -> R<Vec<(String, Vec<u8>)>> {
        Ok(async {
            let flat: Vec<Vec<u8>> = self.ctx.app()?.call(Command::Hgetall(key)).await?;
            Ok(pairs(flat)
                .into_iter()
                .map(|(f, v)| (String::from_utf8_lossy(&f).into_owned(), v))
                .collect())
        }
        .await)
    }

    async fn hdel(&mut self, key: String, fields: Vec<String>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Hdel((key, fields))).await }.await)
    }

    async fn hincr_by(&mut self, key: String, field: String, delta: i64) -> R<i64> {
        Ok(async {
            self.ctx
                .app()?
                .call(Command::HincrBy((key, field, delta)))
                .await
        }
        .await)
    }

    async fn sadd(&mut self, key: String, members: Vec<Vec<u8>>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Sadd((key, members))).await }.await)
    }

    async fn srem(&mut self, key: String, members: Vec<Vec<u8>>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Srem((key, members))).await }.await)
    }

    async fn smembers(&mut self, key: String) -> R<Vec<Vec<u8>>> {
        Ok(async { self.ctx.app()?.call(Command::Smembers(key)).await }.await)
    }

    async fn sismember(&mut self, key: String, member: Vec<u8>) -> R<bool> {
        Ok(async {
            self.ctx
                .app()?
                .call_key("SISMEMBER", &key, &[&member])
                .await
        }
        .await)
    }

    async fn scard(&mut self, key: String) -> R<u64> {
        Ok(async { self.ctx.app()?.call_key("SCARD", &key, &[]).await }.await)
    }

    async fn lpush(&mut self, key: String, values: Vec<Vec<u8>>) -> R<u64> {
        Ok(async { self.ctx.app()?.call(Command::Lpush((key, values))).await }.await)
    }

    async fn rpush(&mut self, key: String, values: Vec<Vec<u8>>) -> R<u64> {
        Ok(async { self.ctx.app()?.call(Command::Rpush((key, values))).await }.await)
    }

    async fn lpop(&mut self, key: String) -> R<Option<Vec<u8>>> {
        Ok(async { self.ctx.app()?.call_key("LPOP", &key, &[]).await }.await)
    }

    async fn rpop(&mut self, key: String) -> R<Option<Vec<u8>>> {
        Ok(async { self.ctx.app()?.call_key("RPOP", &key, &[]).await }.await)
    }

    async fn lrange(&mut self, key: String, start: i64, stop: i64) -> R<Vec<Vec<u8>>> {
        Ok(async {
            self.ctx
                .app()?
                .call(Command::Lrange((key, start, stop)))
                .await
        }
        .await)
    }

    async fn llen(&mut self, key: String) -> R<u64> {
        Ok(async { self.ctx.app()?.call_key("LLEN", &key, &[]).await }.await)
    }

    async fn zadd(&mut self, key: String, members: Vec<(f64, Vec<u8>)>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Zadd((key, members))).await }.await)
    }

    async fn zrange_by_score(
        &mut self,
        key: String,
        min: f64,
        max: f64,
        limit: Option<u32>,
    ) -> R<Vec<(Vec<u8>, f64)>> {
        Ok(async {
            let (min, max) = (score_arg(min)?, score_arg(max)?);
            let mut rest: Vec<&[u8]> = vec![min.as_bytes(), max.as_bytes(), b"WITHSCORES"];
            let limit = limit.map(|n| n.to_string());
            if let Some(limit) = &limit {
                rest.extend([b"LIMIT".as_slice(), b"0", limit.as_bytes()]);
            }
            let flat: Vec<Vec<u8>> = self
                .ctx
                .app()?
                .call_key("ZRANGEBYSCORE", &key, &rest)
                .await?;
            pairs(flat)
                .into_iter()
                .map(|(member, score)| {
                    let score = std::str::from_utf8(&score).ok().and_then(parse_score);
                    score.map(|s| (member, s)).ok_or_else(|| {
                        Error::Other("Redis sent a score that is not a number".into())
                    })
                })
                .collect()
        }
        .await)
    }

    async fn zrem(&mut self, key: String, members: Vec<Vec<u8>>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Zrem((key, members))).await }.await)
    }

    async fn zscore(&mut self, key: String, member: Vec<u8>) -> R<Option<f64>> {
        Ok(async {
            let score: Option<String> =
                self.ctx.app()?.call_key("ZSCORE", &key, &[&member]).await?;
            Ok(score.as_deref().and_then(parse_score))
        }
        .await)
    }

    async fn zcard(&mut self, key: String) -> R<u64> {
        Ok(async { self.ctx.app()?.call_key("ZCARD", &key, &[]).await }.await)
    }

    async fn publish(&mut self, channel: String, message: Vec<u8>) -> R<u32> {
        Ok(async {
            self.ctx
                .app()?
                .call(Command::Publish((channel, message)))
                .await
        }
        .await)
    }

    async fn pipeline(&mut self, commands: Vec<Command>, atomic: bool) -> R<Vec<Reply>> {
        Ok(async { self.ctx.app()?.pipeline(commands, atomic).await }.await)
    }
}
