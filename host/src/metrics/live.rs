//! The dashboard's side of the metrics: plain per-app counters that `status`,
//! `top` and the dashboard turn into rates and a p99 (the Prometheus families
//! are write-only for us).

use super::{BUCKET_START, BUCKETS};
use std::sync::atomic::{AtomicU64, Ordering};

/// Plain counters of one app that `status`, `top` and the dashboard turn into
/// rates and a p99 (the Prometheus families are write-only for us). Shared by
/// every version of the app; two relaxed atomic adds per request.
#[derive(Debug, Default)]
pub struct LiveCounters {
    pub requests: AtomicU64,
    /// Answers with a 5xx status.
    pub errors: AtomicU64,
    /// CPU nanoseconds used (the guest's polls and its connections' work).
    pub cpu_ns: AtomicU64,
    /// Request durations in the histogram's buckets, plus one for +Inf.
    pub buckets: [AtomicU64; BUCKETS + 1],
}

/// A reading of [`LiveCounters`].
#[derive(Clone, Debug, Default)]
pub struct LiveSample {
    pub requests: u64,
    pub errors: u64,
    pub cpu_ns: u64,
    pub buckets: [u64; BUCKETS + 1],
}

impl LiveCounters {
    pub fn sample(&self) -> LiveSample {
        LiveSample {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            cpu_ns: self.cpu_ns.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

impl LiveSample {
    /// The upper bound (seconds) of the bucket holding the 99th percentile of
    /// the requests between `earlier` and `self`; None without requests.
    pub fn p99_since(&self, earlier: &LiveSample) -> Option<f64> {
        let counts: Vec<u64> = (0..=BUCKETS)
            .map(|i| self.buckets[i].saturating_sub(earlier.buckets[i]))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return Some(if i == BUCKETS {
                    f64::INFINITY
                } else {
                    BUCKET_START * 2f64.powi(i as i32)
                });
            }
        }
        None
    }
}
