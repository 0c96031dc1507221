//! The guest pool's run queue, fair between apps: a pool thread that is free
//! takes the next runnable guest of the app that has had the least CPU for its
//! weight (`[resources] cpu_weight`), however many guests that app has queued —
//! the way CFS picks by virtual runtime. A guest is polled for one epoch tick at
//! most (it yields at every tick), and a guest waiting on PostgreSQL or Redis is
//! not in the queue at all, so the choice is made again every millisecond.
//!
//! Why not a tokio runtime for the pool: its threads pick tasks in the order
//! they were woken (and keep a woken task on the waking thread), so an app's
//! share would follow its number of requests, which is what this must prevent.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Wake, Waker},
};

/// Virtual nanoseconds are CPU nanoseconds times this, over the app's weight.
const WEIGHT_SCALE: u64 = 1024;

type Guest = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Scheduler {
    state: Mutex<State>,
    runnable: Condvar,
}

#[derive(Default)]
struct State {
    next_id: u64,
    apps: HashMap<u64, Entry>,
}

/// One app version's place in the queue.
struct Entry {
    weight: u64,
    /// CPU its guests used in the pool, in virtual nanoseconds.
    vtime: u64,
    /// Its guests being polled now.
    running: usize,
    queue: VecDeque<Arc<Task>>,
}

impl Scheduler {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            runnable: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an app version; its place is dropped with the [`Share`].
    pub fn join(self: &Arc<Self>, weight: u32) -> Share {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.apps.insert(
            id,
            Entry {
                weight: u64::from(weight.max(1)),
                vtime: 0,
                running: 0,
                queue: VecDeque::new(),
            },
        );
        Share {
            scheduler: self.clone(),
            id,
        }
    }

    /// Queues a runnable guest behind its app's others.
    fn push(&self, task: Arc<Task>) {
        let mut state = self.lock();
        let floor = state.floor();
        let Some(entry) = state.apps.get_mut(&task.app) else {
            return; // the app version is gone, and with it every guest of it
        };
        // An app that was idle starts level with the others: idling banks no credit.
        if entry.running == 0
            && entry.queue.is_empty()
            && let Some(floor) = floor
        {
            entry.vtime = entry.vtime.max(floor);
        }
        entry.queue.push_back(task);
        drop(state);
        self.runnable.notify_one();
    }

    /// The next guest to poll: the first of the app furthest behind. Blocks
    /// while nothing is runnable.
    pub fn next(&self) -> Arc<Task> {
        let mut state = self.lock();
        loop {
            let furthest_behind = state
                .apps
                .iter_mut()
                .filter(|(_, e)| !e.queue.is_empty())
                .min_by_key(|(_, e)| e.vtime)
                .map(|(_, e)| e);
            if let Some(entry) = furthest_behind
                && let Some(task) = entry.queue.pop_front()
            {
                entry.running += 1;
                return task;
            }
            state = self.runnable.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A guest of `app` was polled, using `cpu_ns`.
    pub fn polled(&self, app: u64, cpu_ns: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.apps.get_mut(&app) {
            entry.running = entry.running.saturating_sub(1);
            entry.vtime = entry
                .vtime
                .saturating_add(cpu_ns.saturating_mul(WEIGHT_SCALE) / entry.weight);
        }
    }
}

impl State {
    /// The lowest virtual time among apps that run or wait.
    fn floor(&self) -> Option<u64> {
        self.apps
            .values()
            .filter(|e| e.running > 0 || !e.queue.is_empty())
            .map(|e| e.vtime)
            .min()
    }
}

/// An app version's handle on the scheduler.
pub struct Share {
    scheduler: Arc<Scheduler>,
    id: u64,
}

impl Share {
    /// Hands a guest to the pool; it is queued at once.
    pub fn spawn(&self, guest: Guest) -> Arc<Task> {
        let task = Arc::new(Task {
            app: self.id,
            scheduler: self.scheduler.clone(),
            guest: Mutex::new(Some(guest)),
            queued: AtomicBool::new(true),
            cancelled: AtomicBool::new(false),
        });
        self.scheduler.push(task.clone());
        task
    }

    #[cfg(test)]
    fn vtime(&self) -> u64 {
        self.scheduler.lock().apps[&self.id].vtime
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.scheduler.lock().apps.remove(&self.id);
    }
}

/// A guest in the pool: queued when woken, polled by a pool thread.
pub struct Task {
    app: u64,
    scheduler: Arc<Scheduler>,
    guest: Mutex<Option<Guest>>,
    queued: AtomicBool,
    cancelled: AtomicBool,
}

impl Task {
    /// Polls the guest once (on a pool thread); its CPU is the caller's to measure.
    pub fn poll(self: &Arc<Self>) {
        self.queued.store(false, Ordering::Release);
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let mut guest = self.guest.lock().unwrap_or_else(|e| e.into_inner());
        let finished = match guest.as_mut() {
            Some(future) => future.as_mut().poll(&mut cx).is_ready(),
            None => false,
        };
        if finished || self.cancelled.load(Ordering::Acquire) {
            *guest = None;
        }
    }

    /// Which app version it belongs to (for [`Scheduler::polled`]).
    pub fn app(&self) -> u64 {
        self.app
    }

    /// Drops the guest (its caller gave up: a deadline, a closed connection):
    /// now if no pool thread is polling it, else right after that poll.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        if let Ok(mut guest) = self.guest.try_lock() {
            let dropped = guest.take();
            drop(guest);
            drop(dropped); // gives the instance's memory back
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) && !self.cancelled.load(Ordering::Acquire) {
            self.scheduler.push(self.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A guest that is runnable again after every poll (one that computes),
    /// counting its polls.
    fn computing(polls: Arc<AtomicU32>) -> Guest {
        Box::pin(std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            cx.waker().wake_by_ref();
            std::task::Poll::<()>::Pending
        }))
    }

    #[test]
    fn the_pool_polls_apps_in_proportion_to_their_weights_not_their_guests() {
        let scheduler = Scheduler::new();
        let (heavy, light) = (scheduler.join(3), scheduler.join(1));
        let (heavy_polls, light_polls) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        // The light app has four times as many guests.
        let _heavy = [heavy.spawn(computing(heavy_polls.clone()))];
        let _light: Vec<_> = (0..4)
            .map(|_| light.spawn(computing(light_polls.clone())))
            .collect();
        for _ in 0..800 {
            let task = scheduler.next();
            task.poll();
            scheduler.polled(task.app(), 1_000_000); // each poll: 1 ms of CPU
        }
        let split = f64::from(heavy_polls.load(Ordering::Relaxed))
            / f64::from(light_polls.load(Ordering::Relaxed));
        assert!((2.9..=3.1).contains(&split), "split {split}");
    }

    #[test]
    fn an_app_back_from_idle_starts_level_not_with_banked_credit() {
        let scheduler = Scheduler::new();
        let (busy, idle) = (scheduler.join(1), scheduler.join(1));
        let _busy = busy.spawn(computing(Arc::default()));
        for _ in 0..10 {
            let task = scheduler.next();
            task.poll();
            scheduler.polled(task.app(), 1_000_000);
        }
        let _back = idle.spawn(computing(Arc::default()));
        assert_eq!(idle.vtime(), busy.vtime());
    }

    #[test]
    fn a_cancelled_guest_is_dropped_and_never_polled_again() {
        let scheduler = Scheduler::new();
        let app = scheduler.join(1);
        let polls = Arc::new(AtomicU32::new(0));
        let task = app.spawn(computing(polls.clone()));
        task.cancel();
        assert!(task.guest.lock().unwrap().is_none());
        let next = scheduler.next(); // it was queued before the cancel
        next.poll();
        assert_eq!(polls.load(Ordering::Relaxed), 0);
    }
}
