//! The validated types of the manifest's capability sections, each next to
//! its defaults; `Manifest::parse` builds them from the `*Toml` structs.
//! Non-zero defaults are written `const { NonZeroU32::new(n).unwrap() }`:
//! checked when compiling, so parsing a manifest cannot panic on them.

use super::{ByteSize, Duration, HostPattern, NonZeroU32};
use serde::Deserialize;

#[derive(Clone, Debug)]
pub struct Postgres {
    pub database: String,
    pub max_connections: NonZeroU32,
    pub statement_timeout: Duration,
}

/// `[files]`: the app's private directory (`<data_dir>/files/<app>/`, `/data`
/// in the guest) and the most bytes it may hold.
#[derive(Clone, Debug)]
pub struct Files {
    pub quota: ByteSize,
    /// The guest may read what the operator put there, and change nothing.
    pub read_only: bool,
}

/// Smallest `[files] quota`: room for a few files and directories.
pub const MIN_FILES_QUOTA: ByteSize = ByteSize(64 << 10);

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
            max_concurrency: const { NonZeroU32::new(16).unwrap() },
            max_response: ByteSize::mib(16),
        }
    }
}

/// One `scheme://host[:port]` entry of `allowed_hosts`; the port defaults to the
/// scheme's. `*.example.com` matches names below example.com; `https://*` any
/// name (customers' own sites), whose addresses must still all be public.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedOrigin {
    pub https: bool,
    pub host: HostPattern,
    pub port: u16,
    /// `scheme://*`: any host, public addresses only (the host checks them after DNS).
    pub any_host: bool,
    /// The entry as written, for metric labels and messages.
    pub text: String,
}

impl AllowedOrigin {
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail =
            || format!("{text:?} must be scheme://host[:port], e.g. \"https://api.example.com\"");
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
        let any_host = host == "*";
        let host = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => HostPattern::Exact(ip.to_string()),
            Err(_) if any_host => HostPattern::Exact("*".to_string()),
            Err(_) => HostPattern::try_from(host.to_string()).map_err(|_| fail())?,
        };
        Ok(Self {
            https,
            host,
            port,
            any_host,
            text: text.to_string(),
        })
    }

    /// Whether a request to `scheme://host:port` is covered by this entry.
    pub fn covers(&self, https: bool, host: &str, port: u16) -> bool {
        self.https == https && self.port == port && (self.any_host || self.host.matches(host))
    }
}

/// `[websocket]`: what one app's WebSocket connections may cost the host.
#[derive(Clone, Debug)]
pub struct WebSocket {
    /// Open connections of the app; past it an upgrade gets 503.
    pub max_connections: NonZeroU32,
    /// Whether `max_connections` counts the app's connections on all hosts of
    /// the cluster together (through Redis) or on each host alone.
    pub max_connections_per: LimitScope,
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
            max_connections: const { NonZeroU32::new(10_000).unwrap() },
            max_connections_per: LimitScope::Cluster,
            max_message: ByteSize(64 * 1024),
            ping_interval: Duration::from_secs(30),
            send_queue: const { NonZeroU32::new(64).unwrap() },
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// `max_connections_per`: what a limit counts. `cluster` (the default): every
/// host sharing the host config's `redis_url` together, so adding a host does
/// not multiply the limit; a host without Redis is a cluster of one. `host`:
/// each host on its own (a bound on one machine's sockets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    #[default]
    Cluster,
    Host,
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

// Built once per timer at load and never moved on a hot path: boxing the
// cron expression would only add an indirection to every match on it.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Five cron fields, interpreted in `timezone` with its DST rules.
    Cron {
        expression: CronExpression,
        timezone: TimeZoneName,
    },
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
            return Err(format!(
                "cron {text:?} has {fields} fields; a cron expression has 5 (minute hour day month weekday)"
            ));
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
