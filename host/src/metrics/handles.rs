//! The per-app handles of each capability's series (`alorig_app_pg_*`,
//! `alorig_app_redis_*`, `alorig_app_timer_*`/`job_*`, `alorig_app_ws_*`,
//! `alorig_app_files_*`),
//! and the [`Metrics`] methods that resolve them, once per app version (each
//! capability asks for its own when its app is loaded); recording is an
//! atomic add on a handle, indexed by a named label enum, never a position.

use super::{
    AppDirectionLabel, AppKindLabel, AppLabel, AppReasonLabel, HistogramFamily, Metrics,
    PgErrorKind, RedisErrorReason, WsDropReason, duration_histogram,
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

impl Metrics {
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
}
