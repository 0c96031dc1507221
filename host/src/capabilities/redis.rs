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
//! The app's connections go through a relay that charges replies to the app's
//! memory budget as they arrive and cuts one that does not fit
//! ([`super::redis_guard`]; the guest sees `invalid`).
//!
//! Redis as a trigger: see [`subscribe`]. Logs name the app, never keys or values.

use crate::{config::manifest, metrics::RedisMetrics, state::InstanceState};
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

pub mod trigger {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alorig:host/redis-trigger",
        exports: { default: async },
    });
}

use generated::alorig::host::redis::{self as wit, Command, Error, KeyTtl, Reply, SetCondition, SetOptions};

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

struct Connector {
    /// The operator's connection settings with the app's db.
    admin: redis::ConnectionInfo,
    /// `alorig-<app>` and its password, for the ACL wall.
    user: String,
    password: String,
    acl_rules: Vec<String>,
    current: ArcSwapOption<MultiplexedConnection>,
    connecting: tokio::sync::Mutex<()>,
    /// What the app's reply bytes are charged to.
    budget: Arc<crate::limits::MemoryBudget>,
    /// The relay the app's connections go through (none for TLS URLs),
    /// started with the first connection.
    relay: std::sync::OnceLock<Option<crate::limits::relay::Relay>>,
    acl_warned: std::sync::atomic::AtomicBool,
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
        let url = host.url.as_deref().ok_or_else(|| anyhow::anyhow!("the host has no redis_url (host.toml redis_url or ALORIG_REDIS_URL)"))?;
        let info = url.into_connection_info().map_err(|e| anyhow::anyhow!("redis_url is not a Redis URL: {e}"))?;
        let settings = info.redis_settings().clone().set_db(config.db as i64);
        let admin = info.set_redis_settings(settings);
        let prefix = &config.prefix;
        let acl_rules = [
            "reset", "on", &format!("~{prefix}*"), &format!("&{prefix}*"), "+@all", "-@dangerous", "-@scripting",
            "-scan", "-randomkey", "-move", "-copy", "-pubsub", "-keys", "-flushdb", "-flushall", "-swapdb",
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
                password: random_password(),
                acl_rules,
                current: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
                budget,
                relay: std::sync::OnceLock::new(),
                acl_warned: false.into(),
            },
        })
    }

    /// `prefix ++ key`, refusing keys past [`MAX_KEY`].
    fn key(&self, key: &str) -> Result<Vec<u8>, Error> {
        if key.len() > MAX_KEY {
            return Err(Error::Invalid(format!("a key may be at most {MAX_KEY} bytes, this one has {}", key.len())));
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
        self.metered(|mut conn| async move { cmd.query_async::<T>(&mut conn).await }).await
    }

    async fn run_pipeline(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>, Error> {
        self.metered(|mut conn| async move { pipe.query_async::<Vec<Value>>(&mut conn).await }).await
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
                    op((*conn).clone()).await.map_err(|e| self.connector.failed(&self.app, &conn, e))
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

    /// The command for one pipeline entry (and, through [`RedisApp::call`], for
    /// the single-command functions), with every key prefixed.
    fn command(&self, command: &Command) -> Result<redis::Cmd, Error> {
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
            Command::Sadd((key, members)) | Command::Srem((key, members)) | Command::Rpush((key, members))
            | Command::Lpush((key, members)) | Command::Zrem((key, members)) => {
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

    async fn call<T: FromRedisValue>(&self, command: Command) -> Result<T, Error> {
        let cmd = self.command(&command)?;
        self.run(&cmd).await
    }

    async fn call_key<T: FromRedisValue>(&self, name: &str, key: &str, rest: &[&[u8]]) -> Result<T, Error> {
        let mut cmd = redis::cmd(name);
        cmd.arg(self.key(key)?);
        for arg in rest {
            cmd.arg(*arg);
        }
        self.run(&cmd).await
    }

    async fn pipeline(&self, commands: Vec<Command>, atomic: bool) -> Result<Vec<Reply>, Error> {
        non_empty(commands.len())?;
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for command in &commands {
            pipe.add_command(self.command(command)?);
        }
        Ok(self.run_pipeline(&pipe).await?.into_iter().map(reply).collect())
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

impl Connector {
    /// The app's live connection, connecting first if there is none; `true`
    /// when it was made by this call.
    async fn connection(&self, app: &str) -> Result<(Arc<MultiplexedConnection>, bool), Error> {
        if let Some(conn) = self.current.load_full() {
            return Ok((conn, false));
        }
        // One connection attempt at a time; the others wait and share its result.
        let _turn = self.connecting.lock().await;
        if let Some(conn) = self.current.load_full() {
            return Ok((conn, false));
        }
        let info = self.prepare(app).await?;
        let client = redis::Client::open(info).map_err(|e| Error::Other(e.to_string()))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let conn = Arc::new(client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| classify(app, e))?);
        self.current.store(Some(conn.clone()));
        tracing::info!(app, "connected to Redis");
        Ok((conn, true))
    }

    /// Drops `conn` as the app's connection (unless another call already
    /// replaced it), so the next call reconnects.
    fn forget(&self, conn: &Arc<MultiplexedConnection>) {
        self.current.compare_and_swap(conn, None);
    }

    /// Where the app connects: as its ACL user, (re)created now, or else with the
    /// operator's URL.
    async fn prepare(&self, app: &str) -> Result<redis::ConnectionInfo, Error> {
        let admin = redis::Client::open(self.admin.clone()).map_err(|e| Error::Other(e.to_string()))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let mut conn = admin.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| classify(app, e))?;
        let mut setuser = redis::cmd("ACL");
        setuser.arg("SETUSER").arg(&self.user).arg(&self.acl_rules).arg(format!(">{}", self.password));
        if self.relay.get().is_none() {
            let started = relay(self.admin.addr(), self.budget.clone()).map_err(|e| {
                tracing::error!(app, "cannot start the Redis relay: {e:#}");
                Error::Unavailable
            })?;
            let _ = self.relay.set(started);
        }
        let through_relay = |info: redis::ConnectionInfo| match self.relay.get() {
            Some(Some(relay)) => info.set_addr(redis::ConnectionAddr::Unix(relay.socket().to_path_buf())),
            _ => info,
        };
        match setuser.query_async::<()>(&mut conn).await {
            Ok(()) => {
                let settings = self.admin.redis_settings().clone().set_username(&self.user).set_password(&self.password);
                Ok(through_relay(self.admin.clone().set_redis_settings(settings)))
            }
            Err(err) if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() => Err(classify(app, err)),
            Err(err) => {
                if !self.acl_warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(app, "Redis ACL users not managed (redis_url's user cannot run ACL SETUSER: {}); the app is confined by key prefixing alone", err.code().unwrap_or("error"));
                }
                Ok(through_relay(self.admin.clone()))
            }
        }
    }

    /// Turns a command's failure into the guest's error; drops the connection
    /// when it is broken, so the next call reconnects.
    fn failed(&self, app: &str, conn: &Arc<MultiplexedConnection>, err: redis::RedisError) -> Error {
        if broken(&err) {
            self.forget(conn);
        }
        classify(app, err)
    }
}

/// Starts the app's relay to the Redis at `addr` ([`super::redis_guard`]).
fn relay(addr: &redis::ConnectionAddr, budget: Arc<crate::limits::MemoryBudget>) -> anyhow::Result<Option<crate::limits::relay::Relay>> {
    use crate::limits::relay::{Relay, Upstream};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if !crate::limits::relay::enabled() {
        return Ok(None);
    }
    let upstream = match addr {
        redis::ConnectionAddr::Tcp(host, port) => Upstream::Tcp(host.clone(), *port),
        redis::ConnectionAddr::Unix(path) => Upstream::Unix(path.clone()),
        _ => return Ok(None),
    };
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let socket = crate::limits::relay::socket_dir(None).join(format!("redis-{n}")).join("socket");
    Ok(Some(Relay::start(socket, upstream, budget, super::redis_guard::RespFraming::default)?))
}

/// Whether the connection is unusable after this error.
fn broken(err: &redis::RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() || err.is_unrecoverable_error()
}

/// The guest's view of a Redis failure. The operator gets a log line for the
/// ones that are the host's or Redis's fault, never with keys or values.
fn classify(app: &str, err: redis::RedisError) -> Error {
    // Errors Redis answered, for one command or the first failing one of a
    // pipeline (named by its index).
    let pipeline = err.to_string().starts_with("Pipeline failure");
    if let Some(errors) = err.clone().into_server_errors()
        && let Some((index, first)) = errors.first()
        && first.kind() != Some(redis::ServerErrorKind::NoPerm)
    {
        if first.code() == "WRONGTYPE" {
            return Error::WrongType;
        }
        if first.code() == super::redis_guard::TOO_LARGE_CODE {
            return Error::Invalid(first.details().unwrap_or("the reply is too large").trim_start_matches("alorig-host: ").to_string());
        }
        let at = if pipeline { format!("command {index}: ") } else { String::new() };
        return Error::Other(format!("{at}{} {}", first.code(), first.details().unwrap_or("")).trim_end().to_string());
    }
    if err.is_timeout() {
        return Error::Timeout;
    }
    if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        tracing::warn!(app, "Redis unavailable: {}", err.kind_name());
        return Error::Unavailable;
    }
    match err.kind() {
        redis::ErrorKind::AuthenticationFailed => {
            tracing::error!(app, "Redis refused the app's credentials");
            Error::Unavailable
        }
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
            tracing::error!(app, "Redis ACL refused a command the host sent for the app");
            Error::Other("NOPERM: refused by the app's Redis ACL".into())
        }
        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) => Error::Unavailable,
        _ => Error::Other(match (err.code(), err.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => err.to_string(),
        }),
    }
}

trait KindName {
    fn kind_name(&self) -> &'static str;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> &'static str {
        if self.is_timeout() {
            "timeout"
        } else if self.is_connection_refusal() {
            "connection refused"
        } else if self.is_connection_dropped() {
            "connection dropped"
        } else {
            "I/O error"
        }
    }
}

fn error_reason(err: &Error) -> usize {
    match err {
        Error::WrongType => 0,
        Error::Unavailable => 1,
        Error::Timeout => 2,
        Error::Invalid(_) => 3,
        Error::Other(_) => 4,
    }
}

/// Labels of `alorig_app_redis_errors_total`, in [`error_reason`]'s order.
pub const ERROR_REASONS: [&str; 5] = ["wrong_type", "unavailable", "timeout", "invalid", "other"];

fn items(count: usize) -> Result<(), Error> {
    if count > MAX_ITEMS {
        return Err(Error::Invalid(format!("at most {MAX_ITEMS} items per call, not {count}")));
    }
    Ok(())
}

fn non_empty(count: usize) -> Result<(), Error> {
    if count == 0 {
        return Err(Error::Invalid("the list may not be empty".into()));
    }
    items(count)
}

fn ttl_arg(ttl_ms: u64) -> Result<i64, Error> {
    match i64::try_from(ttl_ms) {
        Ok(ttl) if ttl > 0 => Ok(ttl),
        _ => Err(Error::Invalid(format!("a ttl must be between 1 and {} ms", i64::MAX))),
    }
}

fn score_arg(score: f64) -> Result<String, Error> {
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

fn bytes_of(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes,
        Value::SimpleString(text) => text.into_bytes(),
        Value::Okay => b"OK".to_vec(),
        Value::Int(n) => n.to_string().into_bytes(),
        Value::Double(d) => d.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

fn reply(value: Value) -> Reply {
    match value {
        Value::Nil => Reply::Nil,
        Value::Okay => Reply::Ok,
        Value::Int(n) => Reply::Integer(n),
        Value::Boolean(b) => Reply::Integer(b as i64),
        Value::Array(values) | Value::Set(values) => Reply::Array(values.into_iter().map(bytes_of).collect()),
        Value::Map(pairs) => Reply::Array(pairs.into_iter().flat_map(|(k, v)| [bytes_of(k), bytes_of(v)]).collect()),
        Value::SimpleString(text) if text == "OK" => Reply::Ok,
        other => Reply::Data(bytes_of(other)),
    }
}

fn pairs(flat: Vec<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    out
}

fn random_password() -> String {
    let mut bytes = [0u8; 24];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    hex::encode(bytes)
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
        self.app.as_deref().ok_or_else(|| Error::Invalid("this app has no [redis] in its manifest".into()))
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
pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
    wit::add_to_linker::<InstanceState, HasRedis>(linker, |state| RedisView { ctx: &state.redis })?;
    Ok(())
}

type R<T> = wasmtime::Result<Result<T, Error>>;

impl wit::Host for RedisView<'_> {
    async fn get(&mut self, key: String) -> R<Option<Vec<u8>>> {
        Ok(async { self.ctx.app()?.call(Command::Get(key)).await }.await)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, options: SetOptions) -> R<bool> {
        Ok(async {
            let done: Value = self.ctx.app()?.call(Command::Set((key, value, options))).await?;
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
            Ok(pairs(flat).into_iter().map(|(f, v)| (String::from_utf8_lossy(&f).into_owned(), v)).collect())
        }
        .await)
    }

    async fn hdel(&mut self, key: String, fields: Vec<String>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Hdel((key, fields))).await }.await)
    }

    async fn hincr_by(&mut self, key: String, field: String, delta: i64) -> R<i64> {
        Ok(async { self.ctx.app()?.call(Command::HincrBy((key, field, delta))).await }.await)
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
        Ok(async { self.ctx.app()?.call_key("SISMEMBER", &key, &[&member]).await }.await)
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
        Ok(async { self.ctx.app()?.call(Command::Lrange((key, start, stop))).await }.await)
    }

    async fn llen(&mut self, key: String) -> R<u64> {
        Ok(async { self.ctx.app()?.call_key("LLEN", &key, &[]).await }.await)
    }

    async fn zadd(&mut self, key: String, members: Vec<(f64, Vec<u8>)>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Zadd((key, members))).await }.await)
    }

    async fn zrange_by_score(&mut self, key: String, min: f64, max: f64, limit: Option<u32>) -> R<Vec<(Vec<u8>, f64)>> {
        Ok(async {
            let (min, max) = (score_arg(min)?, score_arg(max)?);
            let mut rest: Vec<&[u8]> = vec![min.as_bytes(), max.as_bytes(), b"WITHSCORES"];
            let limit = limit.map(|n| n.to_string());
            if let Some(limit) = &limit {
                rest.extend([b"LIMIT".as_slice(), b"0", limit.as_bytes()]);
            }
            let flat: Vec<Vec<u8>> = self.ctx.app()?.call_key("ZRANGEBYSCORE", &key, &rest).await?;
            pairs(flat)
                .into_iter()
                .map(|(member, score)| {
                    let score = std::str::from_utf8(&score).ok().and_then(parse_score);
                    score.map(|s| (member, s)).ok_or_else(|| Error::Other("Redis sent a score that is not a number".into()))
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
            let score: Option<String> = self.ctx.app()?.call_key("ZSCORE", &key, &[&member]).await?;
            Ok(score.as_deref().and_then(parse_score))
        }
        .await)
    }

    async fn zcard(&mut self, key: String) -> R<u64> {
        Ok(async { self.ctx.app()?.call_key("ZCARD", &key, &[]).await }.await)
    }

    async fn publish(&mut self, channel: String, message: Vec<u8>) -> R<u32> {
        Ok(async { self.ctx.app()?.call(Command::Publish((channel, message))).await }.await)
    }

    async fn pipeline(&mut self, commands: Vec<Command>, atomic: bool) -> R<Vec<Reply>> {
        Ok(async { self.ctx.app()?.pipeline(commands, atomic).await }.await)
    }
}

fn parse_score(text: &str) -> Option<f64> {
    match text {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// Redis as a trigger: for an app with `[redis] channels` (and the exported
/// `alorig:host/redis-handler`), keeps one subscription to `<prefix><channel>`
/// for each channel, and calls `on-message` in a fresh instance per message,
/// under the app's concurrency limit, memory budget and request timeout. A lost
/// subscription is re-made (with backoff) for as long as the app is loaded.
/// Pub/sub is fire-and-forget: messages published while the subscription is
/// down are not delivered.
pub fn subscribe(app: &Arc<crate::app::App>) {
    let (Some(redis), Some(trigger)) = (app.capabilities.redis.clone(), app.redis_trigger.clone()) else { return };
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        use futures::StreamExt as _;
        let mut delay = Duration::from_millis(100);
        while weak.strong_count() > 0 {
            if let Ok(mut pubsub) = redis.pubsub().await {
                let mut subscribed = true;
                for channel in &redis.channels {
                    if pubsub.subscribe(redis.channel(channel)).await.is_err() {
                        subscribed = false;
                        break;
                    }
                }
                if subscribed {
                    delay = Duration::from_millis(100);
                    tracing::info!(app = redis.app(), channels = redis.channels.len(), "subscribed to Redis channels");
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Some(app) = weak.upgrade() else { return };
                        let Some(channel) = redis.strip_prefix(message.get_channel_name().as_bytes()) else { continue };
                        let channel = String::from_utf8_lossy(channel).into_owned();
                        tokio::spawn(deliver(app, trigger.clone(), channel, message.get_payload_bytes().to_vec()));
                    }
                    tracing::warn!(app = redis.app(), "Redis subscription lost; subscribing again");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    });
}

/// Runs the app's `on-message` for one message in a fresh instance.
async fn deliver(app: Arc<crate::app::App>, trigger: trigger::RedisTriggerPre<InstanceState>, channel: String, message: Vec<u8>) {
    use crate::trigger::{self as run, Outcome};
    let timeout = app.manifest.resources.request_timeout;
    let outcome = run::run(&app, std::time::Instant::now(), timeout, move |store| {
        Box::pin(async move {
            let instance = trigger.instantiate_async(&mut *store).await?;
            instance.alorig_host_redis_handler().call_on_message(store, &channel, &message).await
        })
    })
    .await;
    if outcome != Outcome::Ok {
        tracing::warn!(app = %app.name, outcome = outcome.label(), "Redis message not handled: {}", outcome.describe());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> RedisApp {
        let host = RedisHost { url: Some("redis://127.0.0.1:1".into()) };
        let config = manifest::Redis { db: 3, prefix: "a:".into(), channels: vec![] };
        let budget = Arc::new(crate::limits::MemoryBudget::new(1 << 20, Default::default(), Default::default()));
        RedisApp::new(&host, "a", &config, crate::metrics::Metrics::new().redis("a"), budget).unwrap()
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
        let opts = SetOptions { ttl_ms: Some(5), condition: SetCondition::IfAbsent };
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
        assert!(matches!(app.command(&Command::Get("k".repeat(MAX_KEY + 1))), Err(Error::Invalid(_))));
        assert!(matches!(app.command(&Command::Del(vec![])), Err(Error::Invalid(_))));
        assert!(matches!(app.command(&Command::Del(vec![String::new(); MAX_ITEMS + 1])), Err(Error::Invalid(_))));
        assert!(matches!(app.command(&Command::Zadd(("z".into(), vec![(f64::NAN, vec![])]))), Err(Error::Invalid(_))));
        assert!(matches!(app.command(&Command::Expire(("z".into(), 0))), Err(Error::Invalid(_))));
        assert!(matches!(app.command(&Command::Expire(("z".into(), u64::MAX))), Err(Error::Invalid(_))));
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
}
