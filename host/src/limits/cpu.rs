//! Per-app CPU: what each app uses (`alorig_app_cpu_seconds_total`), and how
//! guests that compute share the machine, so one app spinning cannot starve
//! the others.
//!
//! * Every guest starts on the ingress thread that received its request: most
//!   finish within microseconds, and moving them would cost more than they do.
//! * A guest that has computed for [`MOVE_AFTER`] (one tick of CPU, not of
//!   waiting: a guest back from a slow PostgreSQL or Redis reply stays) moves
//!   to the **guest pool**: one thread per core at a lower OS priority (nice
//!   [`POOL_NICE`]); a free pool thread takes the next guest of the app furthest
//!   behind its weighted share ([`fair`]). The kernel preempts
//!   a pooled guest the moment an ingress thread has work, so a neighbour's
//!   short requests, `/healthz` and `/metrics` never queue behind it; an app
//!   alone still gets every core.
//! * CPU is read from the thread's CPU clock around each poll and charged to
//!   the app: the guest's own polls, and its connection's parsing and writing
//!   (nested polls are not counted twice). `[resources] cpu_time` ends a
//!   request that has used that much CPU, however long it waited.

pub mod fair;

use crate::metrics::LiveCounters;
use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

/// The guest pool's OS priority (0 is the ingress's; 19 the lowest). At 10 the
/// kernel gives a busy ingress thread about nine tenths of a contended core.
pub const POOL_NICE: i32 = 10;

/// CPU a guest call uses on its ingress thread before it moves to the pool.
/// Counted in CPU, not wall time: the epoch tick that notices it may come long
/// after the call started, when it waited on I/O.
pub const MOVE_AFTER: Duration = Duration::from_millis(1);

thread_local! {
    /// Set by the epoch callback when the guest polled on this thread reached a tick.
    static TICKED: Cell<bool> = const { Cell::new(false) };
    /// CPU nanoseconds already charged by measured polls nested in the current one.
    static NESTED_NS: Cell<u64> = const { Cell::new(0) };
    /// The request polled on this thread: its poll's start (thread CPU ns), the
    /// CPU it used before this poll, and its `cpu_time` in ns.
    static REQUEST: Cell<Option<(u64, u64, u64)>> = const { Cell::new(None) };
}

/// This thread's CPU time, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one timespec we own; this clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Runs `poll` (given the thread's CPU clock at its start), measuring this
/// thread's CPU; `charge` gets what nested measured polls did not already
/// take. Returns the CPU the whole poll used.
fn measured<R>(poll: impl FnOnce(u64) -> R, charge: impl FnOnce(u64)) -> (R, u64) {
    let outer = NESTED_NS.replace(0);
    let start = thread_cpu_ns();
    let out = poll(start);
    let used = thread_cpu_ns().saturating_sub(start);
    let nested = NESTED_NS.replace(outer.saturating_add(used));
    charge(used.saturating_sub(nested));
    (out, used)
}

/// Called by a store's epoch callback: notes the tick when the call has
/// computed for [`MOVE_AFTER`] (it then moves to the pool) and says whether the
/// request has used up its `cpu_time`.
pub fn tick() -> bool {
    let Some((start, before, limit)) = REQUEST.get() else {
        TICKED.set(true);
        return false;
    };
    let used = before.saturating_add(thread_cpu_ns().saturating_sub(start));
    if used >= MOVE_AFTER.as_nanos() as u64 {
        TICKED.set(true);
    }
    used > limit
}

/// The pool computing guests move to: one thread per core, each taking the
/// next guest from the fair run queue ([`fair`]). One per host.
pub struct GuestPool {
    threads: usize,
    /// `ALORIG_GUEST_POOL=off`: every guest stays on the ingress threads (CPU
    /// is still counted, fair sharing is not). For comparing, in the benchmark.
    off: bool,
    started: OnceLock<bool>,
    scheduler: Arc<fair::Scheduler>,
}

impl GuestPool {
    /// A pool with one thread per core; its threads start on first use.
    pub fn new() -> Arc<Self> {
        Self::build(std::env::var("ALORIG_GUEST_POOL").map_or(true, |v| v != "off"))
    }

    fn build(on: bool) -> Arc<Self> {
        Arc::new(Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            off: !on,
            started: OnceLock::new(),
            scheduler: fair::Scheduler::new(),
        })
    }

    /// Starts the pool's threads, once, inside the caller's tokio runtime (its
    /// timers and sockets serve the pooled guests). False if the pool is off or
    /// cannot start: guests then stay on the ingress threads.
    fn start(&self) -> bool {
        *self.started.get_or_init(|| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return false;
            };
            if self.off {
                return false;
            }
            for _ in 0..self.threads {
                let (scheduler, runtime) = (self.scheduler.clone(), runtime.clone());
                let spawned = std::thread::Builder::new()
                    .name("guest".into())
                    .spawn(move || pool_thread(&scheduler, &runtime));
                if let Err(err) = spawned {
                    tracing::warn!(fault = "host", "cannot start a guest pool thread: {err}");
                    return false;
                }
            }
            true
        })
    }

    /// An app version's account: its share of the pool and its CPU counters.
    pub fn app(
        self: &Arc<Self>,
        weight: u32,
        cpu_time: Option<Duration>,
        seconds: Counter<f64, AtomicU64>,
        live: Arc<LiveCounters>,
    ) -> Arc<AppCpu> {
        Arc::new(AppCpu {
            pool: self.clone(),
            share: self.scheduler.join(weight),
            cpu_time_ns: cpu_time.map_or(u64::MAX, |d| d.as_nanos().min(u64::MAX as u128) as u64),
            seconds,
            live,
        })
    }
}

/// A pool thread: polls the next guest of the app furthest behind, charges the
/// app's virtual time with the CPU the poll used, forever.
fn pool_thread(scheduler: &fair::Scheduler, runtime: &tokio::runtime::Handle) {
    lower_priority();
    let _runtime = runtime.enter();
    loop {
        let task = scheduler.next();
        let start = thread_cpu_ns();
        // A panic is a host bug in one guest's call: it ends that call (its
        // caller sees the call vanish), never the pool thread.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.poll()));
        if polled.is_err() {
            task.cancel();
        }
        scheduler.polled(task.app(), thread_cpu_ns().saturating_sub(start));
    }
}

/// Lowers the calling thread's scheduling priority to [`POOL_NICE`].
fn lower_priority() {
    // SAFETY: plain syscalls about the calling thread; failure leaves it at the
    // ingress's priority (fair sharing between apps still holds).
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, POOL_NICE);
    }
}

/// One app version's CPU: where its use is counted and its place in the pool.
pub struct AppCpu {
    pool: Arc<GuestPool>,
    share: fair::Share,
    /// `[resources] cpu_time` in ns (`u64::MAX`: none).
    cpu_time_ns: u64,
    seconds: Counter<f64, AtomicU64>,
    live: Arc<LiveCounters>,
}

impl AppCpu {
    fn charge(&self, ns: u64) {
        if ns == 0 {
            return;
        }
        self.live.cpu_ns.fetch_add(ns, Ordering::Relaxed);
        self.seconds.inc_by(ns as f64 / 1e9);
    }
}

/// A request's guest future and the CPU it has used.
struct Guest<F> {
    future: Pin<Box<F>>,
    cpu: Arc<AppCpu>,
    used: u64,
}

impl<F: Future> Guest<F> {
    fn poll_measured(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        let (future, cpu, before) = (&mut self.future, &self.cpu, self.used);
        let (out, used) = measured(
            |start| {
                let request = (start, before, cpu.cpu_time_ns);
                let outer = REQUEST.replace(Some(request));
                let out = future.as_mut().poll(cx);
                REQUEST.set(outer);
                out
            },
            |ns| cpu.charge(ns),
        );
        self.used = self.used.saturating_add(used);
        out
    }
}

/// Runs one guest call (a request, a timer, a job…) of the app: on this thread
/// while it is short, in the guest pool once it computes past a tick.
pub async fn run<F>(cpu: &Arc<AppCpu>, future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut guest = Guest {
        future: Box::pin(future),
        cpu: cpu.clone(),
        used: 0,
    };
    let finished = std::future::poll_fn(|cx| {
        let outer = TICKED.replace(false);
        let out = guest.poll_measured(cx);
        let ticked = TICKED.replace(outer);
        match out {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if ticked => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    if let Some(out) = finished {
        return out;
    }
    if !cpu.pool.start() {
        return std::future::poll_fn(|cx| guest.poll_measured(cx)).await;
    }
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let task = cpu.share.spawn(Box::pin(async move {
        let out = std::future::poll_fn(|cx| guest.poll_measured(cx)).await;
        let _ = sender.send(out);
    }));
    Joined { task, receiver }.await
}

/// A pooled guest's result; dropping this (a deadline, a closed connection)
/// cancels the guest.
struct Joined<T> {
    task: Arc<fair::Task>,
    receiver: tokio::sync::oneshot::Receiver<T>,
}

impl<T> Future for Joined<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.receiver).poll(cx) {
            Poll::Ready(Ok(out)) => Poll::Ready(out),
            // The guest's call panicked in the pool (a host bug): end this one too.
            Poll::Ready(Err(_)) => std::panic::resume_unwind(Box::new(
                "a guest call ended without a result in the guest pool",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for Joined<T> {
    fn drop(&mut self) {
        self.task.cancel();
    }
}

/// Charges a connection's own work (reading, parsing, writing) to the app its
/// latest request went to.
#[derive(Clone, Default)]
pub struct ConnectionCpu(Arc<ArcSwapOption<AppCpu>>);

impl ConnectionCpu {
    /// The app the connection's work is charged to from now on.
    pub fn charge_to(&self, cpu: &Arc<AppCpu>) {
        let current = self.0.load();
        if !(*current).as_ref().is_some_and(|c| Arc::ptr_eq(c, cpu)) {
            self.0.store(Some(cpu.clone()));
        }
    }

    /// `connection`, measured.
    pub async fn measure<F: Future>(self, connection: F) -> F::Output {
        let mut connection = std::pin::pin!(connection);
        std::future::poll_fn(|cx| {
            measured(
                |_| connection.as_mut().poll(cx),
                |ns| {
                    if let Some(app) = &*self.0.load() {
                        app.charge(ns);
                    }
                },
            )
            .0
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(pool: &Arc<GuestPool>, cpu_time: Option<Duration>) -> Arc<AppCpu> {
        pool.app(
            1,
            cpu_time,
            Counter::default(),
            Arc::new(LiveCounters::default()),
        )
    }

    fn spin(for_ns: u64) {
        let start = thread_cpu_ns();
        while thread_cpu_ns() - start < for_ns {
            std::hint::spin_loop();
        }
    }

    #[tokio::test]
    async fn a_short_call_stays_on_its_thread_and_its_cpu_is_counted() {
        let pool = GuestPool::build(true);
        let cpu = account(&pool, None);
        let caller = std::thread::current().id();
        let ran_on = run(&cpu, async { std::thread::current().id() }).await;
        assert_eq!(ran_on, caller);
        run(&cpu, async { spin(2_000_000) }).await;
        let counted = cpu.live.cpu_ns.load(Ordering::Relaxed);
        assert!((2_000_000..20_000_000).contains(&counted), "{counted} ns");
        assert!(pool.started.get().is_none(), "no pool thread was started");
    }

    #[tokio::test]
    async fn a_call_that_ticks_moves_to_the_pool_and_finishes_there() {
        let pool = GuestPool::build(true);
        let cpu = account(&pool, None);
        let caller = std::thread::current().id();
        let (ran_on, name) = run(&cpu, async {
            spin(1_000_000);
            tick(); // what the epoch callback does at a tick
            tokio::task::yield_now().await;
            let thread = std::thread::current();
            (thread.id(), thread.name().map(str::to_owned))
        })
        .await;
        assert_ne!(ran_on, caller);
        assert_eq!(name.as_deref(), Some("guest"));
        assert!(cpu.live.cpu_ns.load(Ordering::Relaxed) >= 1_000_000);
    }

    #[tokio::test]
    async fn a_call_that_waited_across_a_tick_stays_on_its_thread() {
        let pool = GuestPool::build(true);
        let cpu = account(&pool, None);
        let caller = std::thread::current().id();
        let ran_on = run(&cpu, async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tick(); // the first tick after the wait: little CPU used
            tokio::task::yield_now().await;
            std::thread::current().id()
        })
        .await;
        assert_eq!(ran_on, caller);
        assert!(pool.started.get().is_none(), "no pool thread was started");
    }

    #[tokio::test]
    async fn cpu_time_is_used_up_by_cpu_not_by_waiting() {
        let pool = GuestPool::build(true);
        let cpu = account(&pool, Some(Duration::from_millis(5)));
        let over = run(&cpu, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let waited = tick();
            spin(6_000_000);
            (waited, tick())
        })
        .await;
        assert_eq!(over, (false, true));
    }

    #[tokio::test]
    async fn nested_measured_polls_are_not_counted_twice() {
        let pool = GuestPool::build(true);
        let outer = account(&pool, None);
        let inner = account(&pool, None);
        let connection = ConnectionCpu::default();
        connection.charge_to(&outer);
        let inner_cpu = inner.clone();
        connection
            .measure(async move {
                spin(1_000_000);
                run(&inner_cpu, async { spin(3_000_000) }).await;
            })
            .await;
        let outer_ns = outer.live.cpu_ns.load(Ordering::Relaxed);
        let inner_ns = inner.live.cpu_ns.load(Ordering::Relaxed);
        assert!((3_000_000..6_000_000).contains(&inner_ns), "{inner_ns}");
        assert!((1_000_000..3_000_000).contains(&outer_ns), "{outer_ns}");
    }
}
