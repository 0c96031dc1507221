//! Prometheus metrics (names fixed by CONTRACT.md), every app series labelled
//! `app`. Handles are resolved once per app when it is loaded ([`AppMetrics`]),
//! so recording on the request path is an atomic add, never a label lookup or a
//! string format.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppStatusLabel {
    pub app: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppReasonLabel {
    pub app: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppDestinationLabel {
    pub app: String,
    /// The allow-list entry the request matched, or `denied`.
    pub destination: String,
    pub outcome: &'static str,
}
/// 0.5 ms .. ~16 s: from a cached hello to a slow report.
pub(crate) const BUCKET_START: f64 = 0.0005;
pub(crate) const BUCKETS: usize = 16;

pub(crate) fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        BUCKET_START,
        2.0,
        BUCKETS as u16,
    ))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeployLabel {
    pub app: String,
    /// `ok`, or the error code that refused the deploy (`budget_exceeded`, …).
    pub result: String,
}

mod handles;
mod live;

use handles::TimerFamilies;
pub use handles::{
    AppOutcomeLabel, AppStateLabel, AppTimerLabel, FilesMetrics, PgMetrics, RedisMetrics,
    TimerMetrics, WsMetrics,
};
pub use live::{LiveCounters, LiveSample};

pub(crate) type HistogramFamily = Family<AppLabel, Histogram, fn() -> Histogram>;

/// All series of the host. One per process.
pub struct Metrics {
    registry: Registry,
    memory: Family<AppLabel, Gauge>,
    memory_peak: Family<AppLabel, Gauge>,
    memory_limit: Family<AppLabel, Gauge>,
    host_memory: Family<AppLabel, Gauge>,
    cpu: Family<AppLabel, Counter<f64, AtomicU64>>,
    /// Guest plus host bytes per app, checked against its limit (not exported).
    memory_charged: Family<AppLabel, Gauge>,
    instances: Family<AppLabel, Gauge>,
    requests: Family<AppStatusLabel, Counter>,
    duration: HistogramFamily,
    traps: Family<AppReasonLabel, Counter>,
    rejected: Family<AppReasonLabel, Counter>,
    outbound: Family<AppDestinationLabel, Counter>,
    redis_commands: Family<AppLabel, Counter>,
    redis_errors: Family<AppReasonLabel, Counter>,
    ws_connections: Family<AppLabel, Gauge>,
    ws_messages: Family<AppDirectionLabel, Counter>,
    ws_dropped: Family<AppReasonLabel, Counter>,
    host_budget: Gauge,
    host_rss: Gauge,
    files_bytes: Family<AppLabel, Gauge>,
    files_limit: Family<AppLabel, Gauge>,
    pg_connections: Family<AppLabel, Gauge>,
    pg_idle: Family<AppLabel, Gauge>,
    pg_pool_max: Family<AppLabel, Gauge>,
    pg_waits: Family<AppLabel, Counter>,
    pg_queries: Family<AppLabel, Counter>,
    pg_errors: Family<AppKindLabel, Counter>,
    /// Gauges read from their source at scrape time (pool sizes); an entry whose
    /// source is gone (the app was replaced) is dropped.
    on_scrape: Mutex<Vec<Weak<dyn Refresh>>>,
    version: Family<AppLabel, Gauge>,
    deploys: Family<DeployLabel, Counter>,
    rollbacks: Family<AppLabel, Counter>,
    timers: TimerFamilies,
    live: Mutex<HashMap<String, Arc<LiveCounters>>>,
    /// Encoding borrows the registry; a mutex keeps concurrent scrapes simple.
    encode_lock: Mutex<()>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppDirectionLabel {
    pub app: String,
    /// `in` (from clients) or `out` (to clients).
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppKindLabel {
    pub app: String,
    pub kind: &'static str,
}

/// Something that updates its gauges when `/metrics` is scraped.
pub trait Refresh: Send + Sync {
    fn refresh(&self);
}

/// Trap reasons (label `reason` of `alorig_app_traps_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapReason {
    MemoryLimit,
    Deadline,
    Trap,
}

impl TrapReason {
    fn label(self) -> &'static str {
        match self {
            TrapReason::MemoryLimit => "memory_limit",
            TrapReason::Deadline => "deadline",
            TrapReason::Trap => "trap",
        }
    }
}

/// Rejection reasons (label `reason` of `alorig_app_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    MemoryBudget,
    Concurrency,
}

impl RejectReason {
    fn label(self) -> &'static str {
        match self {
            RejectReason::MemoryBudget => "memory_budget",
            RejectReason::Concurrency => "concurrency",
        }
    }
}

/// Declares a label vocabulary: an enum whose variants index an array of
/// handles resolved once per app (so `errors[PgErrorKind::Timeout]` reads as
/// what it counts, and a new variant cannot be forgotten in the array).
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];

            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }
    };
}

labels! {
    /// Kinds of `alorig_app_pg_errors_total`.
    PgErrorKind {
        Constraint => "constraint",
        Unavailable => "unavailable",
        Timeout => "timeout",
        BadParameter => "bad_parameter",
        TooLarge => "too_large",
        Other => "other",
    }
}

labels! {
    /// Reasons of `alorig_app_redis_errors_total`.
    RedisErrorReason {
        WrongType => "wrong_type",
        Unavailable => "unavailable",
        Timeout => "timeout",
        Invalid => "invalid",
        Other => "other",
    }
}

labels! {
    /// Reasons of `alorig_app_ws_dropped_total`: why the host refused or dropped a connection.
    WsDropReason {
        MaxConnections => "max_connections",
        MessageTooLarge => "message_too_large",
        SlowConsumer => "slow_consumer",
        SendTimeout => "send_timeout",
        PingTimeout => "ping_timeout",
    }
}

/// Status codes whose counter is resolved once, on first use; others go through
/// the family each time.
const COMMON_STATUSES: [u16; 8] = [200, 201, 204, 404, 413, 500, 503, 504];

/// One app's metric handles.
#[derive(Clone)]
pub struct AppMetrics {
    app: String,
    pub memory: Gauge,
    pub memory_peak: Gauge,
    pub memory_limit: Gauge,
    /// `alorig_app_host_memory_bytes`.
    pub host_memory: Gauge,
    /// `alorig_app_cpu_seconds_total`.
    pub cpu_seconds: Counter<f64, AtomicU64>,
    /// Guest plus host bytes, the counter [`crate::limits::MemoryBudget`] checks.
    pub memory_charged: Gauge,
    pub instances: Gauge,
    requests_common: Arc<[OnceLock<Counter>; COMMON_STATUSES.len()]>,
    requests: Family<AppStatusLabel, Counter>,
    pub duration: Histogram,
    traps: [Counter; 3],
    rejected: [Counter; 2],
    outbound: Family<AppDestinationLabel, Counter>,
    pub live: Arc<LiveCounters>,
}

impl AppMetrics {
    pub fn request(&self, status: u16, seconds: f64) {
        let label = || AppStatusLabel {
            app: self.app.clone(),
            status,
        };
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                self.requests_common[i]
                    .get_or_init(|| self.requests.get_or_create_owned(&label()))
                    .inc();
            }
            None => {
                self.requests.get_or_create(&label()).inc();
            }
        }
        self.duration.observe(seconds);
        self.live.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.live.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = (0..BUCKETS)
            .find(|&i| seconds <= BUCKET_START * 2f64.powi(i as i32))
            .unwrap_or(BUCKETS);
        self.live.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn trap(&self, reason: TrapReason) {
        self.traps[reason as usize].inc();
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rejected[reason as usize].inc();
    }

    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].get()
    }

    /// One outbound HTTP request: `outcome` is `ok`, `denied` or `error`.
    pub fn outbound(&self, destination: &str, outcome: &'static str) {
        let label = AppDestinationLabel {
            app: self.app.clone(),
            destination: destination.to_string(),
            outcome,
        };
        self.outbound.get_or_create(&label).inc();
    }

    pub fn trap_count(&self, reason: TrapReason) -> u64 {
        self.traps[reason as usize].get()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let memory = Family::<AppLabel, Gauge>::default();
        let memory_peak = Family::<AppLabel, Gauge>::default();
        let memory_limit = Family::<AppLabel, Gauge>::default();
        let host_memory = Family::<AppLabel, Gauge>::default();
        let cpu = Family::<AppLabel, Counter<f64, AtomicU64>>::default();
        let instances = Family::<AppLabel, Gauge>::default();
        let requests = Family::<AppStatusLabel, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let traps = Family::<AppReasonLabel, Counter>::default();
        let rejected = Family::<AppReasonLabel, Counter>::default();
        let outbound = Family::<AppDestinationLabel, Counter>::default();
        let redis_commands = Family::<AppLabel, Counter>::default();
        let redis_errors = Family::<AppReasonLabel, Counter>::default();
        let ws_connections = Family::<AppLabel, Gauge>::default();
        let ws_messages = Family::<AppDirectionLabel, Counter>::default();
        let ws_dropped = Family::<AppReasonLabel, Counter>::default();
        let host_budget = Gauge::default();
        let host_rss = Gauge::default();
        let files_bytes = Family::<AppLabel, Gauge>::default();
        let files_limit = Family::<AppLabel, Gauge>::default();
        let pg_connections = Family::<AppLabel, Gauge>::default();
        let pg_idle = Family::<AppLabel, Gauge>::default();
        let pg_pool_max = Family::<AppLabel, Gauge>::default();
        let pg_waits = Family::<AppLabel, Counter>::default();
        let pg_queries = Family::<AppLabel, Counter>::default();
        let pg_errors = Family::<AppKindLabel, Counter>::default();
        let version = Family::<AppLabel, Gauge>::default();
        let deploys = Family::<DeployLabel, Counter>::default();
        let rollbacks = Family::<AppLabel, Counter>::default();
        registry.register(
            "alorig_app_memory_bytes",
            "Guest memory in use now, all live instances",
            memory.clone(),
        );
        registry.register(
            "alorig_app_memory_peak_bytes",
            "Highest guest memory in use since start",
            memory_peak.clone(),
        );
        registry.register(
            "alorig_app_memory_limit_bytes",
            "The manifest's memory cap",
            memory_limit.clone(),
        );
        registry.register(
            "alorig_app_host_memory_bytes",
            "Memory the host holds on the app's behalf (rows, replies, bodies, queues), charged to its budget",
            host_memory.clone(),
        );
        registry.register(
            "alorig_app_cpu_seconds",
            "CPU time used for the app: its guests and its requests' connections",
            cpu.clone(),
        );
        registry.register("alorig_app_instances", "Live instances", instances.clone());
        registry.register(
            "alorig_app_requests",
            "Requests answered, by HTTP status",
            requests.clone(),
        );
        registry.register(
            "alorig_app_request_duration_seconds",
            "Time to the response head",
            duration.clone(),
        );
        registry.register(
            "alorig_app_traps",
            "Instances ended by a trap, by reason",
            traps.clone(),
        );
        registry.register(
            "alorig_app_rejected",
            "Requests refused before starting, by reason",
            rejected.clone(),
        );
        registry.register(
            "alorig_app_outbound_requests",
            "Outbound HTTP requests, by allowed destination and outcome",
            outbound.clone(),
        );
        registry.register(
            "alorig_app_pg_connections",
            "PostgreSQL connections open in the app's pool",
            pg_connections.clone(),
        );
        registry.register(
            "alorig_app_pg_connections_idle",
            "Idle PostgreSQL connections in the app's pool",
            pg_idle.clone(),
        );
        registry.register(
            "alorig_app_pg_connections_max",
            "The app's pool size on this host: its share of postgres.max_connections among the hosts up",
            pg_pool_max.clone(),
        );
        registry.register(
            "alorig_app_pg_waits",
            "Statements that waited for a connection (pool at max_connections)",
            pg_waits.clone(),
        );
        registry.register(
            "alorig_app_pg_queries",
            "Statements and transaction steps run",
            pg_queries.clone(),
        );
        registry.register(
            "alorig_app_pg_errors",
            "PostgreSQL errors returned to the guest, by kind",
            pg_errors.clone(),
        );
        registry.register(
            "alorig_app_redis_commands",
            "Redis calls made by the app's guests (a pipeline counts once)",
            redis_commands.clone(),
        );
        registry.register(
            "alorig_app_redis_errors",
            "Redis calls that failed, by reason",
            redis_errors.clone(),
        );
        registry.register(
            "alorig_app_ws_connections",
            "Open WebSocket connections on this host",
            ws_connections.clone(),
        );
        registry.register(
            "alorig_app_ws_messages",
            "WebSocket messages, by direction (in: from clients, out: to clients)",
            ws_messages.clone(),
        );
        registry.register(
            "alorig_app_ws_dropped",
            "WebSocket connections refused or dropped by the host, by reason",
            ws_dropped.clone(),
        );
        registry.register(
            "alorig_app_files_bytes",
            "Bytes in the app's [files] directory, as its quota counts them",
            files_bytes.clone(),
        );
        registry.register(
            "alorig_app_files_limit_bytes",
            "The manifest's [files] quota",
            files_limit.clone(),
        );
        registry.register(
            "alorig_host_memory_budget_bytes",
            "The host's memory budget for all apps",
            host_budget.clone(),
        );
        registry.register(
            "alorig_host_resident_memory_bytes",
            "The host process's resident memory",
            host_rss.clone(),
        );
        registry.register(
            "alorig_app_version",
            "The app's version in force (0: removed)",
            version.clone(),
        );
        registry.register(
            "alorig_deploys",
            "Deploys, by result: ok or the error code that refused them",
            deploys.clone(),
        );
        registry.register("alorig_rollbacks", "Rollbacks done", rollbacks.clone());
        let timers = TimerFamilies::register(&mut registry);
        Self {
            timers,
            registry,
            version,
            deploys,
            rollbacks,
            live: Mutex::new(HashMap::new()),
            memory,
            memory_peak,
            memory_limit,
            host_memory,
            cpu,
            memory_charged: Family::default(),
            instances,
            requests,
            duration,
            traps,
            rejected,
            outbound,
            redis_commands,
            redis_errors,
            ws_connections,
            ws_messages,
            ws_dropped,
            host_budget,
            host_rss,
            files_bytes,
            files_limit,
            pg_connections,
            pg_idle,
            pg_pool_max,
            pg_waits,
            pg_queries,
            pg_errors,
            on_scrape: Mutex::new(Vec::new()),
            encode_lock: Mutex::new(()),
        }
    }

    /// Resolves (or re-uses, across versions of the app) its handles.
    pub fn app(&self, app: &str) -> AppMetrics {
        let label = AppLabel {
            app: app.to_string(),
        };
        let reason = |family: &Family<AppReasonLabel, Counter>, reason: &'static str| {
            family.get_or_create_owned(&AppReasonLabel {
                app: app.to_string(),
                reason,
            })
        };
        AppMetrics {
            app: app.to_string(),
            memory: self.memory.get_or_create_owned(&label),
            memory_peak: self.memory_peak.get_or_create_owned(&label),
            memory_limit: self.memory_limit.get_or_create_owned(&label),
            host_memory: self.host_memory.get_or_create_owned(&label),
            cpu_seconds: self.cpu.get_or_create_owned(&label),
            memory_charged: self.memory_charged.get_or_create_owned(&label),
            instances: self.instances.get_or_create_owned(&label),
            requests_common: Arc::new(Default::default()),
            requests: self.requests.clone(),
            duration: self.duration.get_or_create_owned(&label),
            traps: [
                TrapReason::MemoryLimit,
                TrapReason::Deadline,
                TrapReason::Trap,
            ]
            .map(|r| reason(&self.traps, r.label())),
            rejected: [RejectReason::MemoryBudget, RejectReason::Concurrency]
                .map(|r| reason(&self.rejected, r.label())),
            outbound: self.outbound.clone(),
            live: self
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(app.to_string())
                .or_default()
                .clone(),
        }
    }

    /// The app's `alorig_app_pg_*` handles.
    pub fn postgres(&self, app: &str) -> PgMetrics {
        let label = AppLabel {
            app: app.to_string(),
        };
        PgMetrics {
            connections: self.pg_connections.get_or_create_owned(&label),
            idle: self.pg_idle.get_or_create_owned(&label),
            pool_max: self.pg_pool_max.get_or_create_owned(&label),
            waits: self.pg_waits.get_or_create_owned(&label),
            queries: self.pg_queries.get_or_create_owned(&label),
            errors: PgErrorKind::ALL.map(|kind| {
                self.pg_errors.get_or_create_owned(&AppKindLabel {
                    app: app.to_string(),
                    kind: kind.label(),
                })
            }),
        }
    }

    /// Refreshes `source`'s gauges at every scrape, for as long as it lives.
    pub fn on_scrape(&self, source: Weak<dyn Refresh>) {
        self.on_scrape
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// Redis handles for an app with `[redis]` (apps without it get no series).
    pub fn redis(&self, app: &str) -> RedisMetrics {
        RedisMetrics {
            commands: self.redis_commands.get_or_create_owned(&AppLabel {
                app: app.to_string(),
            }),
            errors: RedisErrorReason::ALL.map(|reason| {
                self.redis_errors.get_or_create_owned(&AppReasonLabel {
                    app: app.to_string(),
                    reason: reason.label(),
                })
            }),
        }
    }

    /// The app's timer and job handles.
    pub fn timers(&self, app: &str) -> TimerMetrics {
        let f = &self.timers;
        let state = |state| {
            f.jobs.get_or_create_owned(&AppStateLabel {
                app: app.to_string(),
                state,
            })
        };
        let label = AppLabel {
            app: app.to_string(),
        };
        TimerMetrics {
            app: app.to_string(),
            timer_runs: f.timer_runs.clone(),
            job_runs: f.job_runs.clone(),
            queue: [state("pending"), state("running"), state("dead")],
            job_latency: f.job_latency.get_or_create_owned(&label),
            dead_letters: f.dead_letters.get_or_create_owned(&label),
        }
    }

    /// `[files]` handles for an app with a files directory.
    pub fn files(&self, app: &str) -> FilesMetrics {
        let label = AppLabel {
            app: app.to_string(),
        };
        FilesMetrics {
            bytes: self.files_bytes.get_or_create_owned(&label),
            limit: self.files_limit.get_or_create_owned(&label),
        }
    }

    /// WebSocket handles for an app (resolved once per app version).
    pub fn websocket(&self, app: &str) -> WsMetrics {
        let direction = |direction| {
            self.ws_messages.get_or_create_owned(&AppDirectionLabel {
                app: app.to_string(),
                direction,
            })
        };
        WsMetrics {
            connections: self.ws_connections.get_or_create_owned(&AppLabel {
                app: app.to_string(),
            }),
            messages_in: direction("in"),
            messages_out: direction("out"),
            dropped: WsDropReason::ALL.map(|reason| {
                self.ws_dropped.get_or_create_owned(&AppReasonLabel {
                    app: app.to_string(),
                    reason: reason.label(),
                })
            }),
        }
    }

    pub fn set_version(&self, app: &str, version: u32) {
        self.version
            .get_or_create(&AppLabel {
                app: app.to_string(),
            })
            .set(version as i64);
    }

    pub fn deployed(&self, app: &str, result: &str) {
        self.deploys
            .get_or_create(&DeployLabel {
                app: app.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn rolled_back(&self, app: &str) {
        self.rollbacks
            .get_or_create(&AppLabel {
                app: app.to_string(),
            })
            .inc();
    }

    pub fn set_host_budget(&self, bytes: u64) {
        self.host_budget.set(bytes as i64);
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        self.host_rss.set(resident_memory_bytes() as i64);
        self.on_scrape
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|source| match source.upgrade() {
                Some(source) => {
                    source.refresh();
                    true
                }
                None => false,
            });
        let _guard = self.encode_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's resident set size, from `/proc/self/statm` (0 elsewhere).
pub fn resident_memory_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
