//! Per-app memory budgets, enforced by the host itself.
//!
//! Every app has one [`MemoryBudget`]: an atomic counter of the bytes held by all
//! of its live instances, shared by them and read directly by `/metrics`. Each
//! instance's store carries an [`InstanceLimiter`] (a wasmtime resource limiter)
//! that charges every linear-memory and table growth to that counter and to the
//! instance's own ceiling, refuses growth past either (the guest's `memory.grow`
//! returns -1, which a Rust guest turns into a trap), and gives everything back
//! when the instance is dropped. Wasmtime's own `StoreLimits` caps each memory
//! separately, which cannot express "this app, all instances together".

use prometheus_client::metrics::gauge::Gauge;
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// Bytes charged per table element (a function reference is one pointer).
const TABLE_ELEMENT_BYTES: u64 = 8;

/// The aggregate memory budget of one app.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: AtomicU64,
    /// Bytes in use now: the gauge `alorig_app_memory_bytes` itself.
    used: Gauge,
    /// High-water mark: `alorig_app_memory_peak_bytes`.
    peak: Gauge,
}

impl MemoryBudget {
    pub fn new(limit: u64, used: Gauge, peak: Gauge) -> Self {
        Self { limit: AtomicU64::new(limit), used, peak }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn used(&self) -> u64 {
        self.used.get().max(0) as u64
    }

    pub fn peak(&self) -> u64 {
        self.peak.get().max(0) as u64
    }

    /// Charges `bytes` if they fit under the limit; lock-free.
    fn try_charge(&self, bytes: u64) -> bool {
        let limit = self.limit() as i64;
        let counter = self.used.inner();
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            let next = current.saturating_add(bytes as i64);
            if next > limit {
                return false;
            }
            match counter.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.peak.inner().fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    fn release(&self, bytes: u64) {
        self.used.dec_by(bytes as i64);
    }
}

/// Why a growth was refused, for telling a budget rejection from a guest that
/// outgrew its own ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The app's instances together would pass the app's `memory`.
    AppBudget,
    /// This instance would pass `instance_memory`.
    InstanceCeiling,
}

/// The resource limiter of one instance's store.
pub struct InstanceLimiter {
    budget: Arc<MemoryBudget>,
    ceiling: u64,
    /// Bytes this instance holds against the budget.
    charged: u64,
    /// The last approved growth, returned if wasmtime then fails to grow.
    last_growth: u64,
    refusal: Option<Refusal>,
}

impl InstanceLimiter {
    pub fn new(budget: Arc<MemoryBudget>, ceiling: u64) -> Self {
        Self { budget, ceiling, charged: 0, last_growth: 0, refusal: None }
    }

    /// The first growth this instance was refused, if any.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal
    }

    /// Bytes this instance holds now.
    pub fn charged(&self) -> u64 {
        self.charged
    }

    /// How much more this instance may grow now: the lesser of what is left
    /// under its own ceiling and under the app's budget. Host capabilities use
    /// it to refuse a result that could not fit, instead of letting the guest trap.
    pub fn headroom(&self) -> u64 {
        let own = self.ceiling.saturating_sub(self.charged);
        let app = self.budget.limit().saturating_sub(self.budget.used());
        own.min(app)
    }

    fn grow(&mut self, bytes: u64) -> bool {
        if self.charged.saturating_add(bytes) > self.ceiling {
            self.refusal.get_or_insert(Refusal::InstanceCeiling);
            return false;
        }
        if !self.budget.try_charge(bytes) {
            self.refusal.get_or_insert(Refusal::AppBudget);
            return false;
        }
        self.charged += bytes;
        self.last_growth = bytes;
        true
    }

    fn undo_last_growth(&mut self) {
        let bytes = std::mem::take(&mut self.last_growth);
        self.charged -= bytes;
        self.budget.release(bytes);
    }
}

impl wasmtime::ResourceLimiter for InstanceLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(desired.saturating_sub(current) as u64))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo_last_growth();
        Ok(())
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(desired.saturating_sub(current) as u64 * TABLE_ELEMENT_BYTES))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo_last_growth();
        Ok(())
    }
}

impl Drop for InstanceLimiter {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter as _;

    fn budget(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(limit, Gauge::default(), Gauge::default()))
    }

    #[test]
    fn instances_share_the_app_budget_and_release_it_on_drop() {
        let app = budget(100 << 20);
        let mut a = InstanceLimiter::new(app.clone(), 64 << 20);
        let mut b = InstanceLimiter::new(app.clone(), 64 << 20);
        assert!(a.memory_growing(0, 60 << 20, None).unwrap());
        assert!(!b.memory_growing(0, 60 << 20, None).unwrap(), "100 MiB budget holds only one 60 MiB instance");
        assert_eq!(b.refusal(), Some(Refusal::AppBudget));
        assert_eq!(app.used(), 60 << 20);
        drop(a);
        assert_eq!(app.used(), 0);
        assert!(b.memory_growing(0, 60 << 20, None).unwrap());
        assert_eq!(app.peak(), 60 << 20);
        drop(b);
        assert_eq!(app.used(), 0);
    }

    #[test]
    fn the_instance_ceiling_applies_before_the_budget() {
        let app = budget(1 << 30);
        let mut a = InstanceLimiter::new(app.clone(), 16 << 20);
        assert!(a.memory_growing(0, 10 << 20, None).unwrap());
        assert!(!a.memory_growing(10 << 20, 20 << 20, None).unwrap());
        assert_eq!(a.refusal(), Some(Refusal::InstanceCeiling));
        assert_eq!(app.used(), 10 << 20);
        assert_eq!(a.headroom(), 6 << 20);
    }

    #[test]
    fn a_failed_growth_is_given_back() {
        let app = budget(1 << 30);
        let mut a = InstanceLimiter::new(app.clone(), 1 << 30);
        assert!(a.table_growing(0, 1000, None).unwrap());
        a.table_grow_failed(wasmtime::Error::msg("no slot")).unwrap();
        assert_eq!(app.used(), 0);
        assert_eq!(a.charged(), 0);
    }
}
