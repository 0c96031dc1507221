//! The cross-field checks of each section, in the order `Manifest::parse` runs
//! them: the raw `*Toml` values become the validated types, with defaults
//! applied and each error naming its field (`manifests/x.toml: routes[1].path:
//! …`). One function per section, so a capability's checks sit in one place.
//! Non-zero defaults are written `const { NonZeroU32::new(n).unwrap() }`:
//! checked when compiling, so parsing a manifest cannot panic on them.

use super::raw::{
    FilesToml, JobsToml, OneOrMany, OutboundToml, PostgresToml, RedisToml, ResourcesToml,
    RouteToml, StaticToml, TimerToml, WebSocketToml,
};
use super::{
    AllowedOrigin, AppName, ByteSize, DEFAULT_JOB_ATTEMPTS, DEFAULT_JOB_BACKOFF,
    DEFAULT_JOB_MAX_BACKOFF, DEFAULT_MAX_BODY, DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_PENDING,
    DEFAULT_MEMORY, DEFAULT_REQUEST_TIMEOUT, Files, HumanDuration, Jobs, MAX_CPU_WEIGHT,
    MAX_INSTANCE_MEMORY, MAX_WEBSOCKET_MESSAGE, MIN_FILES_QUOTA, OutboundHttp, Postgres, Redis,
    Resources, Route, Schedule, SecretSource, StaticSite, TimeZoneName, Timer, WebSocket,
};
use anyhow::{Result, bail};
use std::{collections::BTreeMap, num::NonZeroU32, path::Path, time::Duration};

/// Names a field in an error: `at("routes[0].path")` -> `manifests/x.toml: routes[0].path`.
pub(super) type At<'a> = &'a dyn Fn(&str) -> String;

pub(super) fn resources(raw: ResourcesToml, at: At) -> Result<Resources> {
    let memory = raw.memory.unwrap_or(DEFAULT_MEMORY);
    let instance_memory = raw
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
        .request_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    if request_timeout.is_zero() {
        bail!(
            "{}: must be more than zero",
            at("resources.request_timeout")
        );
    }
    let cpu_weight = raw.cpu_weight.unwrap_or(NonZeroU32::MIN);
    if cpu_weight.get() > MAX_CPU_WEIGHT {
        bail!(
            "{}: {cpu_weight} is more than {MAX_CPU_WEIGHT}",
            at("resources.cpu_weight")
        );
    }
    let cpu_time = raw.cpu_time.map(|d| d.0);
    if cpu_time.is_some_and(|d| d.is_zero()) {
        bail!("{}: must be more than zero", at("resources.cpu_time"));
    }
    Ok(Resources {
        memory,
        instance_memory,
        max_concurrency: raw
            .max_concurrency
            .unwrap_or(const { NonZeroU32::new(DEFAULT_MAX_CONCURRENCY).unwrap() }),
        request_timeout,
        max_body: raw.max_body.unwrap_or(DEFAULT_MAX_BODY),
        instance_reuse: raw.instance_reuse.unwrap_or(NonZeroU32::MIN),
        cpu_weight,
        cpu_time,
    })
}

pub(super) fn routes(raw: Vec<RouteToml>, at: At) -> Result<Vec<Route>> {
    let mut routes = Vec::new();
    for (i, route) in raw.into_iter().enumerate() {
        let path = route.path.unwrap_or_else(|| "/".to_string());
        // Written into the Caddyfile as it is: nothing that could end its
        // block or line (the fuzz target `manifest` checks it).
        if !path.starts_with('/')
            || path
                .contains(|c: char| "?#{}\"'\\".contains(c) || c.is_whitespace() || c.is_control())
        {
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
    Ok(routes)
}

/// `base` is the manifest's folder: a site's `root` is relative to it.
pub(super) fn static_sites(
    raw: OneOrMany<StaticToml>,
    base: &Path,
    at: At,
) -> Result<Vec<StaticSite>> {
    let mut static_sites: Vec<StaticSite> = Vec::new();
    for (i, site) in raw.0.into_iter().enumerate() {
        let field = |f: &str| at(&format!("static[{i}].{f}"));
        let path = site.path.unwrap_or_else(|| "/".to_string());
        if !path.starts_with('/')
            || path
                .contains(|c: char| "?#{}\"'\\".contains(c) || c.is_whitespace() || c.is_control())
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
    Ok(static_sites)
}

pub(super) fn postgres(raw: Option<PostgresToml>, at: At) -> Result<Option<Postgres>> {
    Ok(match raw {
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
                max_connections: pg
                    .max_connections
                    .unwrap_or(const { NonZeroU32::new(5).unwrap() }),
                statement_timeout: pg
                    .statement_timeout
                    .map(|d| d.0)
                    .unwrap_or(Duration::from_secs(10)),
            })
        }
    })
}

/// `app` names the example prefix in the error.
pub(super) fn redis(raw: Option<RedisToml>, app: &AppName, at: At) -> Result<Option<Redis>> {
    Ok(match raw {
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
                    app
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
    })
}

pub(super) fn outbound_http(raw: Option<OutboundToml>, at: At) -> Result<OutboundHttp> {
    let mut outbound_http = OutboundHttp::default();
    if let Some(raw) = raw {
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
    Ok(outbound_http)
}

/// `memory` is the app's cap: a full send queue of largest messages must fit in it.
pub(super) fn websocket(raw: Option<WebSocketToml>, memory: ByteSize, at: At) -> Result<WebSocket> {
    let mut websocket = WebSocket::default();
    if let Some(raw) = raw {
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
    if websocket.max_message.bytes() * u64::from(websocket.send_queue.get()) > memory.bytes() {
        bail!(
            "{}: send_queue × max_message ({} × {}) is more than the app's memory cap {}",
            at("websocket"),
            websocket.send_queue,
            websocket.max_message,
            memory
        );
    }
    Ok(websocket)
}

/// `request_timeout` is a timer's default timeout.
pub(super) fn timers(raw: Vec<TimerToml>, request_timeout: Duration, at: At) -> Result<Vec<Timer>> {
    let mut timers: Vec<Timer> = Vec::new();
    for (i, timer) in raw.into_iter().enumerate() {
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
    Ok(timers)
}

/// `request_timeout` is a job's default timeout.
pub(super) fn jobs(raw: JobsToml, request_timeout: Duration, at: At) -> Result<Jobs> {
    let backoff = positive(raw.backoff, DEFAULT_JOB_BACKOFF, || at("jobs.backoff"))?;
    let max_backoff = positive(
        raw.max_backoff,
        DEFAULT_JOB_MAX_BACKOFF.max(backoff),
        || at("jobs.max_backoff"),
    )?;
    if max_backoff < backoff {
        bail!("{}: must be at least jobs.backoff", at("jobs.max_backoff"));
    }
    Ok(Jobs {
        max_attempts: raw
            .max_attempts
            .unwrap_or(const { NonZeroU32::new(DEFAULT_JOB_ATTEMPTS).unwrap() }),
        backoff,
        max_backoff,
        timeout: positive(raw.timeout, request_timeout, || at("jobs.timeout"))?,
        max_pending: raw
            .max_pending
            .unwrap_or(const { NonZeroU32::new(DEFAULT_MAX_PENDING).unwrap() }),
    })
}

pub(super) fn files(raw: Option<FilesToml>, at: At) -> Result<Option<Files>> {
    Ok(match raw {
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
    })
}

/// Keys of `[env]` and `[secrets]`: valid names, and none in both.
pub(super) fn env(
    env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, SecretSource>,
    at: At,
) -> Result<()> {
    for key in env.keys().chain(secrets.keys()) {
        if key.is_empty() || key.contains(['=', '\0']) {
            bail!(
                "{}: {key:?} is not a valid environment variable name",
                at("env")
            );
        }
    }
    if let Some(key) = env.keys().find(|k| secrets.contains_key(*k)) {
        bail!(
            "{}: {key:?} is set in both [env] and [secrets]",
            at("secrets")
        );
    }
    Ok(())
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
pub(super) fn normalize_prefix(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}
