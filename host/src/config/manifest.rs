//! An app's manifest (`manifests/<app>.toml`, see CONTRACT.md): private `*Toml`
//! structs that mirror the file and reject unknown keys, turned once into a
//! validated [`Manifest`]. Field-level mistakes are caught during deserialization,
//! so their errors carry the file and line; cross-field checks name the field.

use super::{ByteSize, HumanDuration, toml_error};
use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

/// A validated app manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub name: AppName,
    /// The component file, resolved relative to the manifest's folder.
    pub component: PathBuf,
    pub resources: Resources,
    pub routes: Vec<Route>,
    /// Sites Caddy serves itself (`[[static]]`, or one `[static]` table).
    pub static_sites: Vec<StaticSite>,
    pub postgres: Option<Postgres>,
    pub redis: Option<Redis>,
    pub outbound_http: OutboundHttp,
    /// Limits for the app's WebSocket connections (routes with `websocket = true`).
    pub websocket: WebSocket,
    pub timers: Vec<Timer>,
    pub jobs: Jobs,
    /// Plain configuration the guest may read as environment variables.
    pub env: BTreeMap<String, String>,
    /// Names of host environment variables resolved at deploy time.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Where the manifest was read from, for error messages.
    pub source: PathBuf,
}

/// `[a-z0-9-]{1,32}`: safe in paths, metric labels, Redis prefixes and role names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct AppName(String);

impl AppName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        let valid = (1..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(AppName(name))
        } else {
            Err(format!(
                "app name {name:?} must be 1 to 32 characters of a-z, 0-9 and -"
            ))
        }
    }
}

impl std::fmt::Display for AppName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug)]
pub struct Resources {
    /// Aggregate cap over all live instances of the app.
    pub memory: ByteSize,
    /// Ceiling for one instance.
    pub instance_memory: ByteSize,
    pub max_concurrency: NonZeroU32,
    pub request_timeout: Duration,
    /// Request bodies past this get 413.
    pub max_body: ByteSize,
    /// Requests one instance may serve one after another; 1 means a fresh
    /// instance for every request.
    pub instance_reuse: NonZeroU32,
}

pub const DEFAULT_MEMORY: ByteSize = ByteSize::mib(128);
pub const DEFAULT_MAX_CONCURRENCY: u32 = 100;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BODY: ByteSize = ByteSize::mib(10);
/// Largest `[websocket] max_message`: a message is handed to one instance whole.
pub const MAX_WEBSOCKET_MESSAGE: ByteSize = ByteSize::mib(16);
/// A 32-bit linear memory cannot grow past 4 GiB, so neither can an instance.
pub const MAX_INSTANCE_MEMORY: ByteSize = ByteSize::gib(4);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub host: HostPattern,
    /// Path prefix, matched on whole segments; the longest wins.
    pub path: String,
    pub websocket: bool,
}

/// An exact host name, or `*.domain` matching any name below `domain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum HostPattern {
    Exact(String),
    /// The suffix including its leading dot: `.sites.alorig.com`.
    Wildcard(String),
}

impl TryFrom<String> for HostPattern {
    type Error = String;
    fn try_from(host: String) -> Result<Self, String> {
        let host = host.to_ascii_lowercase();
        let (pattern, name) = match host.strip_prefix("*.") {
            Some(rest) => (HostPattern::Wildcard(format!(".{rest}")), rest.to_string()),
            None => (HostPattern::Exact(host.clone()), host.clone()),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "route host {host:?} must be a host name like \"api.example.com\" or \"*.example.com\" (no scheme, port or path)"
            ));
        }
        Ok(pattern)
    }
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct StaticSite {
    pub host: HostPattern,
    /// The prefix Caddy serves these files under (`/` by default), stripped
    /// before the file is looked up in `root`.
    pub path: String,
    pub root: PathBuf,
    /// Clients allowed in (CIDRs); empty: everyone.
    pub allow_from: Vec<ipnet::IpNet>,
}

#[derive(Clone, Debug)]
pub struct Postgres {
    pub database: String,
    pub max_connections: NonZeroU32,
    pub statement_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Redis {
    pub db: u8,
    pub prefix: String,
    /// Channels (without the prefix) whose messages the host hands to the app's
    /// exported `alorig:host/redis-handler`.
    pub channels: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct OutboundHttp {
    /// Where the app may send requests; empty means no outbound HTTP at all.
    pub allowed: Vec<AllowedOrigin>,
    /// Connecting plus waiting for the response head.
    pub timeout: Duration,
    /// Outbound requests of the app in flight at once.
    pub max_concurrency: NonZeroU32,
    /// Response bodies past this are cut off with an error.
    pub max_response: ByteSize,
}

impl Default for OutboundHttp {
    fn default() -> Self {
        Self {
            allowed: Vec::new(),
            timeout: Duration::from_secs(30),
            max_concurrency: NonZeroU32::new(16).unwrap(),
            max_response: ByteSize::mib(16),
        }
    }
}

/// One `scheme://host[:port]` entry of `allowed_hosts`; the port defaults to the
/// scheme's. `*.example.com` matches names below example.com.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedOrigin {
    pub https: bool,
    pub host: HostPattern,
    pub port: u16,
    /// The entry as written, for metric labels and messages.
    pub text: String,
}

impl AllowedOrigin {
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail = || format!("{text:?} must be scheme://host[:port], e.g. \"https://api.example.com\"");
        let (https, rest) = match text.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(fail()),
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(fail());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
                (host, port.parse::<u16>().map_err(|_| fail())?)
            }
            _ => (rest, if https { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => HostPattern::Exact(ip.to_string()),
            Err(_) => HostPattern::try_from(host.to_string()).map_err(|_| fail())?,
        };
        Ok(Self { https, host, port, text: text.to_string() })
    }

    /// Whether a request to `scheme://host:port` is covered by this entry.
    pub fn covers(&self, https: bool, host: &str, port: u16) -> bool {
        self.https == https && self.port == port && self.host.matches(host)
    }
}

/// `[websocket]`: what one app's WebSocket connections may cost the host.
#[derive(Clone, Debug)]
pub struct WebSocket {
    /// Open connections of the app on this host; past it an upgrade gets 503.
    pub max_connections: NonZeroU32,
    /// Largest message (either way); a client sending more is closed with 1009.
    pub max_message: ByteSize,
    /// The host pings each client this often; one that has not answered (sent
    /// any frame) by the next ping is dropped.
    pub ping_interval: Duration,
    /// Messages waiting to be written to one client; a client that lets its
    /// queue fill up (it does not read) is dropped.
    pub send_queue: NonZeroU32,
    /// Longest a write to one client may stall before the client is dropped.
    pub send_timeout: Duration,
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            max_connections: NonZeroU32::new(10_000).unwrap(),
            max_message: ByteSize(64 * 1024),
            ping_interval: Duration::from_secs(30),
            send_queue: NonZeroU32::new(64).unwrap(),
            send_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Timer {
    pub name: String,
    pub schedule: Schedule,
    /// What to do on start about a firing missed while no host ran.
    pub catch_up: CatchUp,
    /// Bound on one firing (default: `resources.request_timeout`).
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub enum Schedule {
    /// Five cron fields, interpreted in `timezone` with its DST rules.
    Cron { expression: CronExpression, timezone: TimeZoneName },
    /// Every this long, on instants aligned to multiples of it since the Unix
    /// epoch, so every host computes the same firings.
    Every(Duration),
}

/// A cron expression of exactly five fields (minute hour day month weekday),
/// day and month names allowed, parsed once here.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct CronExpression {
    pub text: String,
    pub cron: croner::Cron,
}

impl TryFrom<String> for CronExpression {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        if fields != 5 {
            return Err(format!("cron {text:?} has {fields} fields; a cron expression has 5 (minute hour day month weekday)"));
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser.parse(&text).map_err(|e| {
            let why = e.to_string();
            let why = why.trim_start_matches("Component error: ").trim_end_matches('.');
            format!("cron {text:?} is not a valid cron expression ({why}; fields: minute hour day month weekday)")
        })?;
        Ok(CronExpression { text, cron })
    }
}

/// An IANA time zone name (`Europe/London`, `UTC`), with its DST rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TimeZoneName(pub chrono_tz::Tz);

impl TryFrom<String> for TimeZoneName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        name.parse::<chrono_tz::Tz>()
            .map(TimeZoneName)
            .map_err(|_| format!("timezone {name:?} is not an IANA time zone name (e.g. \"UTC\", \"Europe/London\")"))
    }
}

/// `catch_up` of a timer: on start, a firing missed while no host was running
/// is dropped (`skip`) or run once (`once`, however many were missed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    #[default]
    Skip,
    Once,
}

/// `[jobs]`: how the app's one-shot jobs are retried and bounded.
#[derive(Clone, Debug)]
pub struct Jobs {
    /// Runs before a job is dead-lettered (the first run included).
    pub max_attempts: NonZeroU32,
    /// Wait before the first retry; doubles after each failure, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Bound on one run (default: `resources.request_timeout`).
    pub timeout: Duration,
    /// Pending jobs the app may have at once; `schedule` past it is `invalid`.
    pub max_pending: NonZeroU32,
}

pub const DEFAULT_JOB_ATTEMPTS: u32 = 5;
pub const DEFAULT_JOB_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_JOB_MAX_BACKOFF: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_PENDING: u32 = 100_000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// The host environment variable holding the value.
    pub env: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestToml {
    name: AppName,
    component: PathBuf,
    #[serde(default)]
    resources: ResourcesToml,
    #[serde(default)]
    routes: Vec<RouteToml>,
    #[serde(rename = "static", default)]
    static_sites: OneOrMany<StaticToml>,
    postgres: Option<PostgresToml>,
    redis: Option<RedisToml>,
    outbound_http: Option<OutboundToml>,
    websocket: Option<WebSocketToml>,
    #[serde(default)]
    timers: Vec<TimerToml>,
    #[serde(default)]
    jobs: JobsToml,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, SecretSource>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResourcesToml {
    memory: Option<ByteSize>,
    instance_memory: Option<ByteSize>,
    max_concurrency: Option<NonZeroU32>,
    request_timeout: Option<HumanDuration>,
    max_body: Option<ByteSize>,
    instance_reuse: Option<NonZeroU32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteToml {
    host: HostPattern,
    path: Option<String>,
    #[serde(default)]
    websocket: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticToml {
    host: HostPattern,
    path: Option<String>,
    root: PathBuf,
    #[serde(default)]
    allow_from: Vec<Cidr>,
}

/// An address block like `203.0.113.0/24`; a bare address means just that one.
struct Cidr(ipnet::IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(Cidr)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an address block like \"203.0.113.0/24\" or an address")))
    }
}

/// A table or an array of tables (`[static]` or `[[static]]`), with the inner
/// table's own errors (and their lines) kept.
struct OneOrMany<T>(Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|one| OneOrMany(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresToml {
    database: String,
    max_connections: Option<NonZeroU32>,
    statement_timeout: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisToml {
    db: u8,
    prefix: String,
    #[serde(default)]
    channels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundToml {
    #[serde(default)]
    allowed_hosts: Vec<String>,
    timeout: Option<HumanDuration>,
    max_concurrency: Option<NonZeroU32>,
    max_response: Option<ByteSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebSocketToml {
    max_connections: Option<NonZeroU32>,
    max_message: Option<ByteSize>,
    ping_interval: Option<HumanDuration>,
    send_queue: Option<NonZeroU32>,
    send_timeout: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimerToml {
    name: String,
    cron: Option<CronExpression>,
    timezone: Option<TimeZoneName>,
    every: Option<HumanDuration>,
    #[serde(default)]
    catch_up: CatchUp,
    timeout: Option<HumanDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JobsToml {
    max_attempts: Option<NonZeroU32>,
    backoff: Option<HumanDuration>,
    max_backoff: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
    max_pending: Option<NonZeroU32>,
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Validates manifest text; `path` names it in errors and anchors `component`.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest> {
        let raw: ManifestToml = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let at = |field: &str| format!("{}: {field}", path.display());
        let base = path.parent().unwrap_or(Path::new("."));

        let memory = raw.resources.memory.unwrap_or(DEFAULT_MEMORY);
        let instance_memory = raw
            .resources
            .instance_memory
            .unwrap_or(memory)
            .min(MAX_INSTANCE_MEMORY);
        if memory.bytes() < 1 << 20 {
            bail!("{}: must be at least 1MiB, not {memory}", at("resources.memory"));
        }
        if instance_memory > memory {
            bail!(
                "{}: {instance_memory} is more than the app's whole memory cap {memory}",
                at("resources.instance_memory")
            );
        }
        let request_timeout = raw
            .resources
            .request_timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if request_timeout.is_zero() {
            bail!("{}: must be more than zero", at("resources.request_timeout"));
        }
        let resources = Resources {
            memory,
            instance_memory,
            max_concurrency: raw
                .resources
                .max_concurrency
                .unwrap_or(NonZeroU32::new(DEFAULT_MAX_CONCURRENCY).unwrap()),
            request_timeout,
            max_body: raw.resources.max_body.unwrap_or(DEFAULT_MAX_BODY),
            instance_reuse: raw.resources.instance_reuse.unwrap_or(NonZeroU32::MIN),
        };

        let mut routes = Vec::new();
        for (i, route) in raw.routes.into_iter().enumerate() {
            let path = route.path.unwrap_or_else(|| "/".to_string());
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                bail!("{}: {path:?} must be a path starting with /", at(&format!("routes[{i}].path")));
            }
            let route = Route { host: route.host, path: normalize_prefix(&path), websocket: route.websocket };
            if routes.contains(&route) {
                bail!("{}: {} {} is listed twice", at(&format!("routes[{i}]")), route.host, route.path);
            }
            routes.push(route);
        }

        let mut static_sites: Vec<StaticSite> = Vec::new();
        for (i, site) in raw.static_sites.0.into_iter().enumerate() {
            let field = |f: &str| at(&format!("static[{i}].{f}"));
            let path = site.path.unwrap_or_else(|| "/".to_string());
            if !path.starts_with('/') || path.contains(|c: char| "?#{}\"'\\".contains(c) || c.is_whitespace() || c.is_control()) {
                bail!("{}: {path:?} must be a path starting with /", field("path"));
            }
            let root = base.join(&site.root);
            let printable = root.to_str().is_some_and(|r| !r.contains(|c: char| "{}\"'\\#".contains(c) || c.is_whitespace() || c.is_control()));
            if !printable {
                bail!("{}: {} must be a folder path without spaces, quotes, braces or #", field("root"), site.root.display());
            }
            let site = StaticSite { host: site.host, path: normalize_prefix(&path), root, allow_from: site.allow_from.into_iter().map(|c| c.0).collect() };
            if static_sites.iter().any(|s| s.host == site.host && s.path == site.path) {
                bail!("{}: {} {} is listed twice", at(&format!("static[{i}]")), site.host, site.path);
            }
            static_sites.push(site);
        }

        let postgres = match raw.postgres {
            None => None,
            Some(pg) => {
                let valid = !pg.database.is_empty()
                    && pg.database.len() <= 63
                    && pg.database.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    bail!("{}: {:?} must be 1 to 63 characters of a-z, 0-9 and _", at("postgres.database"), pg.database);
                }
                Some(Postgres {
                    database: pg.database,
                    max_connections: pg.max_connections.unwrap_or(NonZeroU32::new(5).unwrap()),
                    statement_timeout: pg.statement_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
                })
            }
        };

        let redis = match raw.redis {
            None => None,
            Some(redis) => {
                if redis.db > 15 {
                    bail!("{}: {} is past Redis's default 16 databases (0-15)", at("redis.db"), redis.db);
                }
                let valid = !redis.prefix.is_empty()
                    && redis.prefix.len() <= 64
                    && redis.prefix.ends_with(':')
                    && !redis.prefix.contains(['*', '?', '[', ']', '\\', ' ']);
                if !valid {
                    bail!(
                        "{}: {:?} must end with ':' and contain no glob characters (e.g. \"{}:\")",
                        at("redis.prefix"), redis.prefix, raw.name
                    );
                }
                for (i, channel) in redis.channels.iter().enumerate() {
                    let valid = !channel.is_empty()
                        && channel.len() <= 256
                        && !channel.contains(['*', '?', '[', ']', '\\'])
                        && redis.channels[..i].iter().all(|c| c != channel);
                    if !valid {
                        bail!(
                            "{}: {channel:?} must be a channel name used once, without glob characters",
                            at(&format!("redis.channels[{i}]"))
                        );
                    }
                }
                Some(Redis { db: redis.db, prefix: redis.prefix, channels: redis.channels })
            }
        };

        let mut outbound_http = OutboundHttp::default();
        if let Some(raw) = raw.outbound_http {
            for (i, pattern) in raw.allowed_hosts.iter().enumerate() {
                let origin = AllowedOrigin::parse(pattern)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", at(&format!("outbound_http.allowed_hosts[{i}]"))))?;
                outbound_http.allowed.push(origin);
            }
            if let Some(timeout) = raw.timeout {
                outbound_http.timeout = timeout.0;
            }
            if let Some(n) = raw.max_concurrency {
                outbound_http.max_concurrency = n;
            }
            if let Some(size) = raw.max_response {
                outbound_http.max_response = size;
            }
        }

        let mut websocket = WebSocket::default();
        if let Some(raw) = raw.websocket {
            if let Some(n) = raw.max_connections {
                websocket.max_connections = n;
            }
            if let Some(size) = raw.max_message {
                if size.bytes() < 16 || size.bytes() > MAX_WEBSOCKET_MESSAGE.bytes() {
                    bail!("{}: {size} must be between 16 bytes and {MAX_WEBSOCKET_MESSAGE}", at("websocket.max_message"));
                }
                websocket.max_message = size;
            }
            for (name, value, slot) in [
                ("ping_interval", raw.ping_interval, &mut websocket.ping_interval),
                ("send_timeout", raw.send_timeout, &mut websocket.send_timeout),
            ] {
                if let Some(value) = value {
                    if value.0 < Duration::from_millis(10) {
                        bail!("{}: must be at least 10ms", at(&format!("websocket.{name}")));
                    }
                    *slot = value.0;
                }
            }
            if let Some(n) = raw.send_queue {
                websocket.send_queue = n;
            }
        }
        if websocket.max_message.bytes() * u64::from(websocket.send_queue.get()) > resources.memory.bytes() {
            bail!(
                "{}: send_queue × max_message ({} × {}) is more than the app's memory cap {}",
                at("websocket"), websocket.send_queue, websocket.max_message, resources.memory
            );
        }

        let mut timers: Vec<Timer> = Vec::new();
        for (i, timer) in raw.timers.into_iter().enumerate() {
            let field = |f: &str| at(&format!("timers[{i}].{f}"));
            let valid_name = !timer.name.is_empty()
                && timer.name.len() <= 128
                && !timer.name.contains(char::is_control)
                && !timers.iter().any(|t| t.name == timer.name);
            if !valid_name {
                bail!("{}: {:?} must be a name of 1 to 128 characters, used once", field("name"), timer.name);
            }
            let schedule = match (timer.cron, timer.every) {
                (Some(expression), None) => Schedule::Cron {
                    expression,
                    timezone: timer.timezone.unwrap_or(TimeZoneName(chrono_tz::Tz::UTC)),
                },
                (None, Some(every)) if !every.0.is_zero() => {
                    if timer.timezone.is_some() {
                        bail!("{}: only applies to cron timers", field("timezone"));
                    }
                    Schedule::Every(every.0)
                }
                (None, Some(_)) => bail!("{}: must be more than zero", field("every")),
                _ => bail!("{}: give exactly one of `cron` or `every`", at(&format!("timers[{i}]"))),
            };
            let timeout = positive(timer.timeout, request_timeout, || field("timeout"))?;
            timers.push(Timer { name: timer.name, schedule, catch_up: timer.catch_up, timeout });
        }

        let backoff = positive(raw.jobs.backoff, DEFAULT_JOB_BACKOFF, || at("jobs.backoff"))?;
        let max_backoff = positive(raw.jobs.max_backoff, DEFAULT_JOB_MAX_BACKOFF.max(backoff), || at("jobs.max_backoff"))?;
        if max_backoff < backoff {
            bail!("{}: must be at least jobs.backoff", at("jobs.max_backoff"));
        }
        let jobs = Jobs {
            max_attempts: raw.jobs.max_attempts.unwrap_or(NonZeroU32::new(DEFAULT_JOB_ATTEMPTS).unwrap()),
            backoff,
            max_backoff,
            timeout: positive(raw.jobs.timeout, request_timeout, || at("jobs.timeout"))?,
            max_pending: raw.jobs.max_pending.unwrap_or(NonZeroU32::new(DEFAULT_MAX_PENDING).unwrap()),
        };

        for key in raw.env.keys().chain(raw.secrets.keys()) {
            if key.is_empty() || key.contains(['=', '\0']) {
                bail!("{}: {key:?} is not a valid environment variable name", at("env"));
            }
        }
        if let Some(key) = raw.env.keys().find(|k| raw.secrets.contains_key(*k)) {
            bail!("{}: {key:?} is set in both [env] and [secrets]", at("secrets"));
        }

        Ok(Manifest {
            component: base.join(&raw.component),
            name: raw.name,
            resources,
            routes,
            static_sites,
            postgres,
            redis,
            outbound_http,
            websocket,
            timers,
            jobs,
            env: raw.env,
            secrets: raw.secrets,
            source: path.to_path_buf(),
        })
    }
}

/// A duration that must be more than zero when given; `default` otherwise.
fn positive(value: Option<HumanDuration>, default: Duration, field: impl Fn() -> String) -> Result<Duration> {
    match value {
        Some(d) if d.0.is_zero() => bail!("{}: must be more than zero", field()),
        Some(d) => Ok(d.0),
        None => Ok(default),
    }
}

/// `/api/` and `/api` are the same prefix; `/` stays `/`.
fn normalize_prefix(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(Path::new("manifests/app.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn contract_example_parses() {
        let m = parse(include_str!("../../tests/fixtures/contract-example.toml")).unwrap();
        assert_eq!(m.name.as_str(), "psydge");
        assert_eq!(m.component, Path::new("manifests/../target/wasm32-wasip2/release/psydge.wasm"));
        assert_eq!(m.resources.memory, ByteSize::mib(1750));
        assert_eq!(m.resources.instance_memory, ByteSize::mib(64));
        assert_eq!(m.resources.max_concurrency.get(), 256);
        assert_eq!(m.routes.len(), 2);
        assert!(m.routes[1].websocket);
        assert_eq!(m.redis.as_ref().unwrap().prefix, "psydge:");
        assert_eq!(m.timers.len(), 2);
        assert!(matches!(m.timers[1].schedule, Schedule::Every(d) if d == Duration::from_secs(5)));
        assert_eq!(m.secrets["ANTHROPIC_API_KEY"].env, "PSYDGE_ANTHROPIC_API_KEY");
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = parse("name = \"a\"\ncomponent = \"a.wasm\"\n").unwrap();
        assert_eq!(m.resources.memory, DEFAULT_MEMORY);
        assert_eq!(m.resources.instance_memory, DEFAULT_MEMORY);
        assert_eq!(m.resources.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(m.outbound_http.allowed.is_empty());
    }

    #[test]
    fn every_bad_manifest_in_the_fixtures_gets_its_expected_error() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-manifests");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let expected = std::fs::read_to_string(path.with_extension("err")).unwrap();
                let err = Manifest::load(&path).unwrap_err().to_string();
                let name = path.file_name().unwrap().to_string_lossy();
                let expected = expected.trim().replace("{file}", &format!("{}/{name}", dir.display()));
                assert_eq!(err, expected, "fixture {name}");
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} fixtures found");
    }

    #[test]
    fn names_hosts_and_prefixes_are_checked() {
        assert!(error("name = \"Psydge\"\ncomponent = \"a.wasm\"").contains("must be 1 to 32 characters"));
        let e = error("name = \"a\"\ncomponent = \"a.wasm\"\n[[routes]]\nhost = \"https://x.com\"");
        assert!(e.contains("app.toml:4:") && e.contains("must be a host name"), "{e}");
        assert!(HostPattern::try_from("*.sites.alorig.com".to_string()).unwrap().matches("a.sites.alorig.com"));
        assert!(!HostPattern::try_from("*.sites.alorig.com".to_string()).unwrap().matches("sites.alorig.com"));
    }

    #[test]
    fn allowed_origins_parse_with_default_ports_and_match_exactly() {
        let a = AllowedOrigin::parse("https://api.anthropic.com").unwrap();
        assert!(a.covers(true, "api.anthropic.com", 443));
        assert!(!a.covers(false, "api.anthropic.com", 80), "scheme matters");
        assert!(!a.covers(true, "api.anthropic.com", 8443), "port matters");
        assert!(!a.covers(true, "evil.api.anthropic.com", 443));
        let w = AllowedOrigin::parse("https://*.stripe.com").unwrap();
        assert!(w.covers(true, "api.stripe.com", 443) && !w.covers(true, "stripe.com", 443));
        let ip = AllowedOrigin::parse("http://127.0.0.1:9000").unwrap();
        assert!(ip.covers(false, "127.0.0.1", 9000) && !ip.covers(false, "localhost", 9000));
        let v6 = AllowedOrigin::parse("http://[::1]:9000").unwrap();
        assert!(v6.covers(false, "::1", 9000));
        for bad in ["api.openai.com", "ftp://x.com", "https://x.com/path", "https://u@x.com", "https://x.com:99999"] {
            assert!(AllowedOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn websocket_limits_have_defaults_and_take_the_manifest() {
        let m = parse("name = \"a\"\ncomponent = \"a.wasm\"\n").unwrap();
        assert_eq!(m.websocket.max_connections.get(), 10_000);
        assert_eq!(m.websocket.max_message, ByteSize(64 * 1024));
        let m = parse(
            "name = \"a\"\ncomponent = \"a.wasm\"\n[websocket]\nmax_connections = 5\nmax_message = \"1KiB\"\nping_interval = \"250ms\"\nsend_queue = 8\nsend_timeout = \"1s\"\n",
        )
        .unwrap();
        let ws = &m.websocket;
        assert_eq!((ws.max_connections.get(), ws.max_message, ws.send_queue.get()), (5, ByteSize(1024), 8));
        assert_eq!((ws.ping_interval, ws.send_timeout), (Duration::from_millis(250), Duration::from_secs(1)));
    }

    #[test]
    fn route_prefixes_are_normalized() {
        assert_eq!(normalize_prefix("/api/"), "/api");
        assert_eq!(normalize_prefix("/"), "/");
    }
}
