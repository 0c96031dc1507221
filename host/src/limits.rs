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
//!
//! The same budget also holds what the *host* keeps on the app's behalf
//! (result rows, replies, bodies, queues): see [`host_memory`]. Guest and host
//! bytes are charged to one counter, so together they never pass `memory`.

pub mod allocator;
pub mod cpu;
pub mod host_memory;
pub mod relay;

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
    /// Guest bytes in use now: the gauge `alorig_app_memory_bytes` itself.
    used: Gauge,
    /// High-water mark of guest bytes: `alorig_app_memory_peak_bytes`.
    peak: Gauge,
    /// Bytes the host holds for the app: `alorig_app_host_memory_bytes`.
    host: Gauge,
    /// Guest plus host bytes: the one counter checked against the limit
    /// (shared by every version of the app, like the gauges; not exported).
    total: Gauge,
}

impl MemoryBudget {
    /// A budget with its own host and total counters (tests, one-off loads).
    pub fn new(limit: u64, used: Gauge, peak: Gauge) -> Self {
        Self {
            limit: AtomicU64::new(limit),
            used,
            peak,
            host: Gauge::default(),
            total: Gauge::default(),
        }
    }

    /// Shares the host-held gauge and the guest+host counter with the app's
    /// other versions. Call before the budget is shared (right after `new`).
    pub fn with_host(mut self, host: Gauge, total: Gauge) -> Self {
        self.host = host;
        self.total = total;
        self
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

    /// Bytes the host holds for the app now (all versions).
    pub fn host_held(&self) -> u64 {
        self.host.get().max(0) as u64
    }

    /// What is left under the limit for guest and host bytes together.
    pub fn left(&self) -> u64 {
        self.limit().saturating_sub(self.total.get().max(0) as u64)
    }

    /// Reserves `bytes` of guest plus host memory if they fit; lock-free.
    fn reserve(&self, bytes: u64) -> bool {
        let limit = self.limit() as i64;
        let counter = self.total.inner();
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            let next = current.saturating_add(bytes as i64);
            if next > limit {
                return false;
            }
            match counter.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Charges `bytes` of guest memory if they fit under the limit.
    fn try_charge(&self, bytes: u64) -> bool {
        if !self.reserve(bytes) {
            return false;
        }
        let now = self.used.inc_by(bytes as i64) + bytes as i64;
        self.peak.inner().fetch_max(now, Ordering::Relaxed);
        true
    }

    fn release(&self, bytes: u64) {
        self.used.dec_by(bytes as i64);
        self.total.dec_by(bytes as i64);
    }

    /// Charges `bytes` the host is about to hold for the app, if they fit.
    /// Prefer [`host_memory::HostCharge`], which gives them back on drop.
    pub fn try_charge_host(&self, bytes: u64) -> bool {
        if !self.reserve(bytes) {
            return false;
        }
        self.host.inc_by(bytes as i64);
        true
    }

    /// Gives back host bytes charged with [`Self::try_charge_host`].
    pub fn release_host(&self, bytes: u64) {
        self.host.dec_by(bytes as i64);
        self.total.dec_by(bytes as i64);
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
        Self {
            budget,
            ceiling,
            charged: 0,
            last_growth: 0,
            refusal: None,
        }
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
        own.min(self.budget.left())
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
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(desired.saturating_sub(current) as u64))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo_last_growth();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
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
        assert!(
            !b.memory_growing(0, 60 << 20, None).unwrap(),
            "100 MiB budget holds only one 60 MiB instance"
        );
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
    fn host_bytes_and_guest_bytes_share_one_budget() {
        let app = budget(100 << 20);
        assert!(app.try_charge_host(70 << 20));
        let mut a = InstanceLimiter::new(app.clone(), 64 << 20);
        assert!(
            !a.memory_growing(0, 40 << 20, None).unwrap(),
            "70 MiB held by the host leave 30 MiB"
        );
        assert!(a.memory_growing(0, 30 << 20, None).unwrap());
        assert_eq!(a.headroom(), 0);
        assert!(!app.try_charge_host(1));
        assert_eq!((app.used(), app.host_held()), (30 << 20, 70 << 20));
        app.release_host(70 << 20);
        assert_eq!(app.left(), 70 << 20);
        drop(a);
        assert_eq!(app.left(), 100 << 20);
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
        a.table_grow_failed(wasmtime::Error::msg("no slot"))
            .unwrap();
        assert_eq!(app.used(), 0);
        assert_eq!(a.charged(), 0);
    }
}
