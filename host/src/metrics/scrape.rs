//! What happens when `/metrics` is scraped: gauges read from their source
//! ([`Refresh`], e.g. pool sizes) are refreshed, the host's RSS is read, and the
//! registry is rendered as Prometheus text. Kept apart from the registry so the
//! scrape-time work (the only place that locks) is in one small file.

use super::Metrics;
use prometheus_client::encoding::text::encode;
use std::sync::Weak;

/// Something that updates its gauges when `/metrics` is scraped.
pub trait Refresh: Send + Sync {
    fn refresh(&self);
}

impl Metrics {
    /// Refreshes `source`'s gauges at every scrape, for as long as it lives.
    pub fn on_scrape(&self, source: Weak<dyn Refresh>) {
        self.on_scrape
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
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
