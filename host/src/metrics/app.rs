//! The app-level handles ([`AppMetrics`]: memory, CPU, requests, traps,
//! rejections, outbound calls), resolved once per app version by
//! [`Metrics::app`] so the request path records with an atomic add and never
//! formats a label.

use super::{
    AppDestinationLabel, AppLabel, AppReasonLabel, AppStatusLabel, BUCKET_START, BUCKETS,
    LiveCounters, Metrics, RejectReason, TrapReason,
};
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU64, Ordering},
};

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
}
