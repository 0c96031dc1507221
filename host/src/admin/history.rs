//! The last hour of each app's figures, for the dashboard's charts: a point
//! every [`EVERY`] (memory in use and its cap, request and error counters,
//! WebSocket connections), [`POINTS`] points per app, kept in the host so the
//! page needs no Prometheus and no external assets. Rates are the differences
//! between neighbouring points; the page gets the stored points plus one taken
//! at the moment it asks, so a fresh host already draws a line.

use crate::{deploy::Apps, metrics::Metrics};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub const EVERY: Duration = Duration::from_secs(10);
/// One hour of points.
pub const POINTS: usize = 360;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Point {
    unix_ms: u64,
    memory: u64,
    limit: u64,
    requests: u64,
    errors: u64,
    ws_connections: i64,
}

#[derive(Default)]
pub struct History {
    apps: Mutex<BTreeMap<String, VecDeque<Point>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl History {
    /// The figures of every app in force now, one point each.
    fn take(apps: &Apps, metrics: &Metrics) -> BTreeMap<String, Point> {
        let unix_ms = now_ms();
        apps.snapshot()
            .iter()
            .map(|(name, deployed)| {
                let app = &deployed.app;
                let live = app.metrics.live.sample();
                let ws_connections = if app.manifest.routes.iter().any(|r| r.websocket) {
                    metrics.websocket(name).connections.get()
                } else {
                    0
                };
                let point = Point {
                    unix_ms,
                    memory: app.budget.used(),
                    limit: app.manifest.resources.memory.bytes(),
                    requests: live.requests,
                    errors: live.errors,
                    ws_connections,
                };
                (name.clone(), point)
            })
            .collect()
    }

    pub fn sample(&self, apps: &Apps, metrics: &Metrics) {
        let points = Self::take(apps, metrics);
        let mut history = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        history.retain(|name, _| points.contains_key(name));
        for (name, point) in points {
            let ring = history.entry(name).or_default();
            // A new version's counters start again from zero: its history too.
            if ring
                .back()
                .is_some_and(|last| point.requests < last.requests)
            {
                ring.clear();
            }
            ring.push_back(point);
            while ring.len() > POINTS {
                ring.pop_front();
            }
        }
    }

    pub async fn sample_forever(self: Arc<Self>, apps: Arc<Apps>, metrics: Arc<Metrics>) {
        let mut every = tokio::time::interval(EVERY);
        loop {
            every.tick().await;
            self.sample(&apps, &metrics);
        }
    }

    /// Per app: the chart series (stored points and one taken now).
    pub fn series(&self, apps: &Apps, metrics: &Metrics) -> BTreeMap<String, Value> {
        let now = Self::take(apps, metrics);
        let history = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        now.into_iter()
            .map(|(name, latest)| {
                let mut points: Vec<Point> = history
                    .get(&name)
                    .map(|r| r.iter().copied().collect())
                    .unwrap_or_default();
                if points
                    .last()
                    .is_some_and(|last| latest.requests < last.requests)
                {
                    points.clear();
                }
                points.push(latest);
                (name, render(&points))
            })
            .collect()
    }
}

/// Arrays for the charts: time (s before now), memory, requests/s and errors/s
/// between points, WebSocket connections.
fn render(points: &[Point]) -> Value {
    let last = points.last().map(|p| p.unix_ms).unwrap_or(0);
    let ago: Vec<f64> = points
        .iter()
        .map(|p| (last.saturating_sub(p.unix_ms)) as f64 / 1000.0)
        .collect();
    let rate = |f: fn(&Point) -> u64| -> Vec<f64> {
        points
            .windows(2)
            .map(|w| {
                let secs = (w[1].unix_ms.saturating_sub(w[0].unix_ms)) as f64 / 1000.0;
                if secs <= 0.0 {
                    0.0
                } else {
                    f(&w[1]).saturating_sub(f(&w[0])) as f64 / secs
                }
            })
            .collect()
    };
    json!({
        "ago_seconds": ago,
        "memory_bytes": points.iter().map(|p| p.memory).collect::<Vec<_>>(),
        "memory_limit_bytes": points.last().map(|p| p.limit).unwrap_or(0),
        "requests_per_second": rate(|p| p.requests),
        "errors_per_second": rate(|p| p.errors),
        "ws_connections": points.iter().map(|p| p.ws_connections).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_neighbouring_points() {
        let p = |s: u64, requests: u64, errors: u64| Point {
            unix_ms: s * 1000,
            memory: s,
            limit: 100,
            requests,
            errors,
            ws_connections: 2,
        };
        let v = render(&[p(0, 0, 0), p(10, 100, 10), p(20, 100, 10)]);
        assert_eq!(v["ago_seconds"], json!([20.0, 10.0, 0.0]));
        assert_eq!(v["requests_per_second"], json!([10.0, 0.0]));
        assert_eq!(v["errors_per_second"], json!([1.0, 0.0]));
        assert_eq!(v["memory_bytes"], json!([0, 10, 20]));
        assert_eq!(v["memory_limit_bytes"], 100);
    }
}
