//! Prometheus metrics (names fixed by CONTRACT.md), every app series labelled
//! `app`. Handles are resolved once per app when it is loaded ([`AppMetrics`]),
//! so recording on the request path is an atomic add, never a label lookup or a
//! string format.
//!
//! This file is the registry: it declares and registers every family, once per
//! process, and records the host-level series (deploys, versions, budget). The
//! rest is split by who uses it:
//! - `labels`: the label sets and reason/kind vocabularies capabilities name;
//! - `app`: the app-level handles the request path records on;
//! - `handles`: each capability's per-app handles (`PgMetrics`, `WsMetrics`, …);
//! - `live`: the plain counters the dashboard and `status` read back;
//! - `scrape`: what `/metrics` does when scraped (refresh, render).

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak, atomic::AtomicU64},
};

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

mod app;
mod handles;
mod labels;
mod live;
mod scrape;

pub use app::AppMetrics;
use handles::TimerFamilies;
pub use handles::{
    AppOutcomeLabel, AppStateLabel, AppTimerLabel, FilesMetrics, PgMetrics, RedisMetrics,
    TimerMetrics, WsMetrics,
};
pub use labels::{
    AppDestinationLabel, AppDirectionLabel, AppKindLabel, AppLabel, AppReasonLabel, AppStatusLabel,
    DeployLabel, PgErrorKind, RedisErrorReason, RejectReason, TrapReason, WsDropReason,
};
pub use live::{LiveCounters, LiveSample};
pub use scrape::{Refresh, resident_memory_bytes};

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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
