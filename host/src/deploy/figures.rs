//! The figures of the apps in force, as `/v1/apps`, `status` and the dashboard
//! show them: one sample of each app's counters a second, and the rates
//! (requests/s, error rate, p99) over the last [`RATE_WINDOW`] seconds.

use super::{ApiError, Apps, Deployed, grants, not_found, routes};
use serde_json::{Value, json};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// Seconds of history behind requests/s, error rate and p99.
pub(super) const RATE_WINDOW: usize = 10;

impl Apps {
    /// Samples every app's counters; run once a second.
    pub fn sample(&self) {
        let now = Instant::now();
        let live = self.snapshot();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.retain(|name, _| live.contains_key(name));
        for (name, deployed) in &live {
            let ring = samples.entry(name.clone()).or_default();
            // Several calls within one tick (a deploy's baseline) keep one sample.
            if ring
                .back()
                .is_some_and(|(at, _)| now.duration_since(*at) < Duration::from_millis(500))
            {
                continue;
            }
            ring.push_back((now, deployed.app.metrics.live.sample()));
            while ring.len() > RATE_WINDOW + 1 {
                ring.pop_front();
            }
        }
    }

    pub async fn sample_forever(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            self.sample();
        }
    }

    /// The figures of one app, as `/v1/apps` and the dashboard show them.
    pub fn describe(&self, name: &str, deployed: &Deployed) -> Value {
        let app = &deployed.app;
        let now = app.metrics.live.sample();
        let (rps, error_rate, p99, cpu_percent) = {
            let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            match samples.get(name).and_then(|ring| ring.front()) {
                Some((at, first)) if at.elapsed() > Duration::from_millis(100) => {
                    let secs = at.elapsed().as_secs_f64();
                    let requests = now.requests.saturating_sub(first.requests);
                    let errors = now.errors.saturating_sub(first.errors);
                    let error_rate = if requests == 0 {
                        0.0
                    } else {
                        errors as f64 / requests as f64
                    };
                    // Of one core, like `docker stats`: 200 % is two cores busy.
                    let cpu = now.cpu_ns.saturating_sub(first.cpu_ns) as f64 / 1e9;
                    let cpu_percent = 100.0 * cpu / secs;
                    (
                        requests as f64 / secs,
                        error_rate,
                        now.p99_since(first),
                        cpu_percent,
                    )
                }
                _ => (0.0, 0.0, None, 0.0),
            }
        };
        let versions = self
            .store
            .as_ref()
            .and_then(|s| s.versions(name).ok())
            .unwrap_or_default();
        let resources = &app.manifest.resources;
        json!({
            "name": name,
            "version": deployed.version,
            "versions": versions,
            "deployed_at": deployed.since,
            "digest": app.digest,
            "routes": routes(app),
            "memory_bytes": app.budget.used(),
            "memory_peak_bytes": app.budget.peak(),
            "host_memory_bytes": app.budget.host_held(),
            "cpu_seconds_total": now.cpu_ns as f64 / 1e9,
            "cpu_percent": cpu_percent,
            "cpu_weight": resources.cpu_weight.get(),
            "memory_limit_bytes": resources.memory.bytes(),
            "files_bytes": app.capabilities.files.as_ref().map(|f| f.usage.bytes()),
            "files_limit_bytes": app.capabilities.files.as_ref().map(|f| f.quota),
            "instance_memory_bytes": resources.instance_memory.bytes(),
            "max_concurrency": resources.max_concurrency.get(),
            "request_timeout_seconds": resources.request_timeout.as_secs_f64(),
            "instances": app.metrics.instances.get(),
            "requests_total": now.requests,
            "errors_total": now.errors,
            "requests_per_second": rps,
            "error_rate": error_rate,
            "p99_seconds": p99.filter(|p| p.is_finite()),
            "grants": grants::all(app),
        })
    }

    pub fn list(&self) -> Value {
        let live = self.snapshot();
        Value::Array(
            live.iter()
                .map(|(name, d)| self.describe(name, d))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Result<Value, ApiError> {
        let deployed = self
            .live()
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))?;
        Ok(self.describe(name, &deployed))
    }
}
