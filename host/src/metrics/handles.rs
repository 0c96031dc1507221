//! The per-app handles of each capability's series (`alorig_app_pg_*`,
//! `alorig_app_redis_*`, `alorig_app_timer_*`/`job_*`, `alorig_app_ws_*`,
//! `alorig_app_files_*`),
//! resolved once per app version by [`super::Metrics`]; recording is an
//! atomic add on a handle, indexed by a named label enum, never a position.

use super::{
    AppLabel, HistogramFamily, PgErrorKind, RedisErrorReason, WsDropReason, duration_histogram,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// One app's Redis series: `alorig_app_redis_commands_total{app}` and
/// `alorig_app_redis_errors_total{app,reason}`.
#[derive(Clone)]
pub struct RedisMetrics {
    pub commands: Counter,
    pub(super) errors: [Counter; RedisErrorReason::ALL.len()],
}

impl RedisMetrics {
    /// Counts one failed call.
    pub fn error(&self, reason: RedisErrorReason) {
        self.errors[reason as usize].inc();
    }
}

/// One app's `[files]` series: `alorig_app_files_bytes{app}` (what its quota
/// counts now) and `alorig_app_files_limit_bytes{app}` (the quota in force).
#[derive(Clone)]
pub struct FilesMetrics {
    pub bytes: Gauge,
    pub limit: Gauge,
}

/// One app's PostgreSQL series (`alorig_app_pg_*`), resolved once.
#[derive(Clone)]
pub struct PgMetrics {
    pub connections: Gauge,
    pub idle: Gauge,
    /// This host's share of the app's `max_connections`.
    pub pool_max: Gauge,
    pub waits: Counter,
    pub queries: Counter,
    pub(super) errors: [Counter; PgErrorKind::ALL.len()],
}

impl PgMetrics {
    /// Counts one error returned to the guest.
    pub fn error(&self, kind: PgErrorKind) {
        self.errors[kind as usize].inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppTimerLabel {
    pub app: String,
    pub timer: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppOutcomeLabel {
    pub app: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppStateLabel {
    pub app: String,
    pub state: &'static str,
}

/// The timer and job series of every app.
pub(super) struct TimerFamilies {
    pub(super) timer_runs: Family<AppTimerLabel, Counter>,
    pub(super) job_runs: Family<AppOutcomeLabel, Counter>,
    pub(super) jobs: Family<AppStateLabel, Gauge>,
    pub(super) job_latency: HistogramFamily,
    pub(super) dead_letters: Family<AppLabel, Counter>,
}

impl TimerFamilies {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let f = TimerFamilies {
            timer_runs: Family::default(),
            job_runs: Family::default(),
            jobs: Family::default(),
            job_latency: Family::new_with_constructor(duration_histogram),
            dead_letters: Family::default(),
        };
        registry.register("alorig_app_timer_runs", "Timer firings, by timer and outcome (ok, error, trap, memory_limit, timeout, rejected, skipped, unavailable)", f.timer_runs.clone());
        registry.register("alorig_app_job_runs", "Job runs on this host, by outcome (ok, error, trap, memory_limit, timeout, rejected, lost)", f.job_runs.clone());
        registry.register(
            "alorig_app_jobs",
            "The app's jobs in the job store, by state (pending: the queue depth, running, dead)",
            f.jobs.clone(),
        );
        registry.register(
            "alorig_app_job_latency_seconds",
            "From a job's scheduled time to its start",
            f.job_latency.clone(),
        );
        registry.register(
            "alorig_app_job_dead_letters",
            "Jobs this host dead-lettered after their last attempt",
            f.dead_letters.clone(),
        );
        f
    }
}

/// One app's timer and job series.
#[derive(Clone)]
pub struct TimerMetrics {
    pub(super) app: String,
    pub(super) timer_runs: Family<AppTimerLabel, Counter>,
    pub(super) job_runs: Family<AppOutcomeLabel, Counter>,
    /// pending, running, dead.
    pub(super) queue: [Gauge; 3],
    pub job_latency: Histogram,
    pub dead_letters: Counter,
}

impl TimerMetrics {
    pub fn timer_run(&self, timer: &str, outcome: &'static str) {
        let label = AppTimerLabel {
            app: self.app.clone(),
            timer: timer.to_string(),
            outcome,
        };
        self.timer_runs.get_or_create(&label).inc();
    }

    pub fn job_run(&self, outcome: &'static str) {
        self.job_runs
            .get_or_create(&AppOutcomeLabel {
                app: self.app.clone(),
                outcome,
            })
            .inc();
    }

    /// From the job store's counts (done jobs are not shown).
    pub fn set_queue(&self, pending: i64, running: i64, dead: i64) {
        for (gauge, count) in self.queue.iter().zip([pending, running, dead]) {
            gauge.set(count);
        }
    }
}

/// One app's WebSocket series: `alorig_app_ws_connections{app}`,
/// `alorig_app_ws_messages_total{app,direction}` and
/// `alorig_app_ws_dropped_total{app,reason}`.
#[derive(Clone)]
pub struct WsMetrics {
    pub connections: Gauge,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub(super) dropped: [Counter; WsDropReason::ALL.len()],
}

impl WsMetrics {
    /// Counts one refused or dropped connection.
    pub fn dropped(&self, reason: WsDropReason) {
        self.dropped[reason as usize].inc();
    }
}
