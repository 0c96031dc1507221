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
    /// `[custom_domains] enabled`: requests for hosts no route claims are offered
    /// to the app (see `ingress::domains`).
    pub custom_domains: bool,
    pub postgres: Option<Postgres>,
    pub redis: Option<Redis>,
    pub outbound_http: OutboundHttp,
    /// Limits for the app's WebSocket connections (routes with `websocket = true`).
    pub websocket: WebSocket,
    pub timers: Vec<Timer>,
    pub jobs: Jobs,
    /// `[files]`: a private directory preopened as `/data`, with a quota.
    pub files: Option<Files>,
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
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
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
    /// The app's share of the CPU against other apps when they compete.
    pub cpu_weight: NonZeroU32,
    /// CPU one request may use before it is ended (504), however long it waited.
    pub cpu_time: Option<Duration>,
}

/// Largest `cpu_weight`: a thousand to one is already "only when idle".
pub const MAX_CPU_WEIGHT: u32 = 1000;

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
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "route host {host:?} must be a host name like \"api.example.com\" or \"*.example.com\" (no scheme, port or path)"
            ));
        }
        // `*.com` or `*.co.uk` would let one app claim every site under a public
        // suffix (the Public Suffix List, compiled in by `psl`).
        if matches!(pattern, HostPattern::Wildcard(_)) && psl::domain(name.as_bytes()).is_none() {
            return Err(format!(
                "route host {host:?}: a wildcard must be below a registrable domain (\"{name}\" is a public suffix), e.g. \"*.example.com\""
            ));
        }
        Ok(pattern)
    }
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
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

// The capability sections' types (`[postgres]`, `[redis]`, `[outbound_http]`,
// `[websocket]`, `[[timers]]`, `[jobs]`, `[files]`) live in `manifest/sections.rs`.
mod sections;
pub use sections::*;

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
    custom_domains: Option<CustomDomainsToml>,
    postgres: Option<PostgresToml>,
    redis: Option<RedisToml>,
    outbound_http: Option<OutboundToml>,
    websocket: Option<WebSocketToml>,
    #[serde(default)]
    timers: Vec<TimerToml>,
    #[serde(default)]
    jobs: JobsToml,
    files: Option<FilesToml>,
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
    cpu_weight: Option<NonZeroU32>,
    cpu_time: Option<HumanDuration>,
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
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not an address block like \"203.0.113.0/24\" or an address"
                ))
            })
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
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|one| OneOrMany(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany)
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomDomainsToml {
    enabled: bool,
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
    max_connections_per: Option<LimitScope>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesToml {
    quota: ByteSize,
    #[serde(default)]
    read_only: bool,
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
            bail!(
                "{}: must be at least 1MiB, not {memory}",
                at("resources.memory")
            );
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
            bail!(
                "{}: must be more than zero",
                at("resources.request_timeout")
            );
        }
        let cpu_weight = raw.resources.cpu_weight.unwrap_or(NonZeroU32::MIN);
        if cpu_weight.get() > MAX_CPU_WEIGHT {
            bail!(
                "{}: {cpu_weight} is more than {MAX_CPU_WEIGHT}",
                at("resources.cpu_weight")
            );
        }
        let cpu_time = raw.resources.cpu_time.map(|d| d.0);
        if cpu_time.is_some_and(|d| d.is_zero()) {
            bail!("{}: must be more than zero", at("resources.cpu_time"));
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
            cpu_weight,
            cpu_time,
        };

        let mut routes = Vec::new();
        for (i, route) in raw.routes.into_iter().enumerate() {
            let path = route.path.unwrap_or_else(|| "/".to_string());
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                bail!(
                    "{}: {path:?} must be a path starting with /",
                    at(&format!("routes[{i}].path"))
                );
            }
            let route = Route {
                host: route.host,
                path: normalize_prefix(&path),
                websocket: route.websocket,
            };
            if routes.contains(&route) {
                bail!(
                    "{}: {} {} is listed twice",
                    at(&format!("routes[{i}]")),
                    route.host,
                    route.path
                );
            }
            routes.push(route);
        }

        let mut static_sites: Vec<StaticSite> = Vec::new();
        for (i, site) in raw.static_sites.0.into_iter().enumerate() {
            let field = |f: &str| at(&format!("static[{i}].{f}"));
            let path = site.path.unwrap_or_else(|| "/".to_string());
            if !path.starts_with('/')
                || path.contains(|c: char| {
                    "?#{}\"'\\".contains(c) || c.is_whitespace() || c.is_control()
                })
            {
                bail!("{}: {path:?} must be a path starting with /", field("path"));
            }
            let root = base.join(&site.root);
            let printable = root.to_str().is_some_and(|r| {
                !r.contains(|c: char| "{}\"'\\#".contains(c) || c.is_whitespace() || c.is_control())
            });
            if !printable {
                bail!(
                    "{}: {} must be a folder path without spaces, quotes, braces or #",
                    field("root"),
                    site.root.display()
                );
            }
            let site = StaticSite {
                host: site.host,
                path: normalize_prefix(&path),
                root,
                allow_from: site.allow_from.into_iter().map(|c| c.0).collect(),
            };
            if static_sites
                .iter()
                .any(|s| s.host == site.host && s.path == site.path)
            {
                bail!(
                    "{}: {} {} is listed twice",
                    at(&format!("static[{i}]")),
                    site.host,
                    site.path
                );
            }
            static_sites.push(site);
        }

        let postgres = match raw.postgres {
            None => None,
            Some(pg) => {
                let valid = !pg.database.is_empty()
                    && pg.database.len() <= 63
                    && pg
                        .database
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    bail!(
                        "{}: {:?} must be 1 to 63 characters of a-z, 0-9 and _",
                        at("postgres.database"),
                        pg.database
                    );
                }
                Some(Postgres {
                    database: pg.database,
                    max_connections: pg.max_connections.unwrap_or(NonZeroU32::new(5).unwrap()),
                    statement_timeout: pg
                        .statement_timeout
                        .map(|d| d.0)
                        .unwrap_or(Duration::from_secs(10)),
                })
            }
        };

        let redis = match raw.redis {
            None => None,
            Some(redis) => {
                if redis.db > 15 {
                    bail!(
                        "{}: {} is past Redis's default 16 databases (0-15)",
                        at("redis.db"),
                        redis.db
                    );
                }
                let valid = !redis.prefix.is_empty()
                    && redis.prefix.len() <= 64
                    && redis.prefix.ends_with(':')
                    && !redis.prefix.contains(['*', '?', '[', ']', '\\', ' ']);
                if !valid {
                    bail!(
                        "{}: {:?} must end with ':' and contain no glob characters (e.g. \"{}:\")",
                        at("redis.prefix"),
                        redis.prefix,
                        raw.name
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
                Some(Redis {
                    db: redis.db,
                    prefix: redis.prefix,
                    channels: redis.channels,
                })
            }
        };

        let mut outbound_http = OutboundHttp::default();
        if let Some(raw) = raw.outbound_http {
            for (i, pattern) in raw.allowed_hosts.iter().enumerate() {
                let origin = AllowedOrigin::parse(pattern).map_err(|e| {
                    anyhow::anyhow!("{}: {e}", at(&format!("outbound_http.allowed_hosts[{i}]")))
                })?;
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
            websocket.max_connections_per = raw.max_connections_per.unwrap_or_default();
            if let Some(size) = raw.max_message {
                if size.bytes() < 16 || size.bytes() > MAX_WEBSOCKET_MESSAGE.bytes() {
                    bail!(
                        "{}: {size} must be between 16 bytes and {MAX_WEBSOCKET_MESSAGE}",
                        at("websocket.max_message")
                    );
                }
                websocket.max_message = size;
            }
            for (name, value, slot) in [
                (
                    "ping_interval",
                    raw.ping_interval,
                    &mut websocket.ping_interval,
                ),
                (
                    "send_timeout",
                    raw.send_timeout,
                    &mut websocket.send_timeout,
                ),
            ] {
                if let Some(value) = value {
                    if value.0 < Duration::from_millis(10) {
                        bail!(
                            "{}: must be at least 10ms",
                            at(&format!("websocket.{name}"))
                        );
                    }
                    *slot = value.0;
                }
            }
            if let Some(n) = raw.send_queue {
                websocket.send_queue = n;
            }
        }
        if websocket.max_message.bytes() * u64::from(websocket.send_queue.get())
            > resources.memory.bytes()
        {
            bail!(
                "{}: send_queue × max_message ({} × {}) is more than the app's memory cap {}",
                at("websocket"),
                websocket.send_queue,
                websocket.max_message,
                resources.memory
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
                bail!(
                    "{}: {:?} must be a name of 1 to 128 characters, used once",
                    field("name"),
                    timer.name
                );
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
                _ => bail!(
                    "{}: give exactly one of `cron` or `every`",
                    at(&format!("timers[{i}]"))
                ),
            };
            let timeout = positive(timer.timeout, request_timeout, || field("timeout"))?;
            timers.push(Timer {
                name: timer.name,
                schedule,
                catch_up: timer.catch_up,
                timeout,
            });
        }

        let backoff = positive(raw.jobs.backoff, DEFAULT_JOB_BACKOFF, || at("jobs.backoff"))?;
        let max_backoff = positive(
            raw.jobs.max_backoff,
            DEFAULT_JOB_MAX_BACKOFF.max(backoff),
            || at("jobs.max_backoff"),
        )?;
        if max_backoff < backoff {
            bail!("{}: must be at least jobs.backoff", at("jobs.max_backoff"));
        }
        let jobs = Jobs {
            max_attempts: raw
                .jobs
                .max_attempts
                .unwrap_or(NonZeroU32::new(DEFAULT_JOB_ATTEMPTS).unwrap()),
            backoff,
            max_backoff,
            timeout: positive(raw.jobs.timeout, request_timeout, || at("jobs.timeout"))?,
            max_pending: raw
                .jobs
                .max_pending
                .unwrap_or(NonZeroU32::new(DEFAULT_MAX_PENDING).unwrap()),
        };

        let files = match raw.files {
            None => None,
            Some(files) if files.quota.bytes() < MIN_FILES_QUOTA.bytes() => bail!(
                "{}: {} is less than {MIN_FILES_QUOTA}",
                at("files.quota"),
                files.quota
            ),
            Some(files) => Some(Files {
                quota: files.quota,
                read_only: files.read_only,
            }),
        };

        for key in raw.env.keys().chain(raw.secrets.keys()) {
            if key.is_empty() || key.contains(['=', '\0']) {
                bail!(
                    "{}: {key:?} is not a valid environment variable name",
                    at("env")
                );
            }
        }
        if let Some(key) = raw.env.keys().find(|k| raw.secrets.contains_key(*k)) {
            bail!(
                "{}: {key:?} is set in both [env] and [secrets]",
                at("secrets")
            );
        }

        Ok(Manifest {
            component: base.join(&raw.component),
            name: raw.name,
            resources,
            routes,
            static_sites,
            custom_domains: raw.custom_domains.is_some_and(|c| c.enabled),
            postgres,
            redis,
            outbound_http,
            websocket,
            timers,
            jobs,
            files,
            env: raw.env,
            secrets: raw.secrets,
            source: path.to_path_buf(),
        })
    }
}

/// A duration that must be more than zero when given; `default` otherwise.
fn positive(
    value: Option<HumanDuration>,
    default: Duration,
    field: impl Fn() -> String,
) -> Result<Duration> {
    match value {
        Some(d) if d.0.is_zero() => bail!("{}: must be more than zero", field()),
        Some(d) => Ok(d.0),
        None => Ok(default),
    }
}

/// `/api/` and `/api` are the same prefix; `/` stays `/`.
fn normalize_prefix(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests;
