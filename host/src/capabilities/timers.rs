//! `alorig:host/timers` (`wit/timers.wit`): what Celery beat and Celery worker
//! did, inside the host.
//!
//! * **Timers** — the manifest's `[[timers]]` ([`schedule`] computes the
//!   instants). At each firing the host calls the app's exported
//!   `timer-handler.on-timer` in a fresh instance (see [`crate::trigger`]). A
//!   firing still running when the next is due makes the next one skipped and
//!   counted (`outcome="skipped"`). On start, `catch_up = "once"` runs the
//!   latest missed firing once; `skip` (the default) waits for the next.
//! * **Jobs** — one-shot jobs the guest schedules (`schedule`/`cancel`), kept
//!   in the host's PostgreSQL schema ([`store`]), leased by one host at a time,
//!   run by `job-handler.on-job`, retried with doubling backoff, dead-lettered
//!   after `[jobs] max_attempts` ([`worker`]).
//!
//! Durability and the cluster: with `postgres_url`, each timer firing and each
//! job run is claimed in the database, so hosts sharing it never run one
//! twice, and a host killed mid-job has the job run again elsewhere once its
//! lease expires. Without `postgres_url`, timers still fire — on this host
//! only, from memory (logged once as not durable) — and a component that
//! imports `alorig:host/timers` (to schedule jobs) is refused at load: jobs
//! that silently vanish at the next restart are not what an operator expects.
//!
//! Per app: one worker per app name ([`TimersHost::register`] gives each new
//! version a new generation; the loops of older versions end by themselves),
//! woken by `LISTEN alorig_jobs` when any host enqueues for the app.

pub mod schedule;
pub mod store;
mod worker;

use crate::{
    config::manifest::{self, Manifest},
    metrics::TimerMetrics,
    trigger::WeakInvoker,
};
use chrono::{DateTime, TimeZone as _, Utc};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use store::{JobStore, Scheduled};
use tokio::sync::Notify;
use wasmtime::component::{HasData, Linker};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alorig:host/timers-imports",
        imports: { default: async | trappable },
    });
}

pub mod timer_trigger {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alorig:host/timer-trigger",
        exports: { default: async },
    });
}

pub mod job_trigger {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alorig:host/job-trigger",
        exports: { default: async },
    });
}

use generated::alorig::host::timers::{self as wit, Error, Job, When};

/// The interface's name without its version, as components import it.
pub const INTERFACE: &str = "alorig:host/timers";

/// Longest job name, idempotency key and payload a guest may give.
pub const MAX_NAME: usize = 256;
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Furthest ahead a job may be scheduled (ten years).
const MAX_DELAY_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

/// The host's side: the job store (with `postgres_url`), this host's name in
/// leases, and the registered apps' generations and wakers.
pub struct TimersHost {
    store: Option<Arc<JobStore>>,
    host_id: String,
    apps: Mutex<HashMap<String, Registration>>,
    listening: AtomicBool,
    memory_only_warned: AtomicBool,
    /// Shutting down: no new job is leased.
    stopping: AtomicBool,
}

struct Registration {
    generation: u64,
    wake: Arc<Notify>,
}

impl TimersHost {
    /// `postgres_url`, when the host has one, holds the job store.
    pub fn new(postgres_url: Option<&str>) -> anyhow::Result<Self> {
        let store = postgres_url.map(JobStore::new).transpose()?.map(Arc::new);
        Ok(Self {
            store,
            host_id: host_id(),
            apps: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(false),
            memory_only_warned: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        })
    }

    pub fn store(&self) -> Option<&Arc<JobStore>> {
        self.store.as_ref()
    }

    /// This host's name in leases and firings: host name, process id, a random tag.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// What `GET /v1/apps/{app}/jobs` shows: counts, and the pending, running
    /// and dead jobs (the first 1000, running first, then by time).
    pub async fn jobs(&self, app: &str) -> Result<JobsReport, JobsError> {
        let store = self.store.as_ref().ok_or(JobsError::NoStore)?;
        let counts = store.counts(app).await.map_err(JobsError::Unavailable)?;
        let jobs = store
            .list(app, 1000)
            .await
            .map_err(JobsError::Unavailable)?;
        Ok(JobsReport { counts, jobs })
    }

    /// A graceful shutdown: leases no more jobs, and gives back the leases of
    /// the jobs still running here (they run again on another host, or on this
    /// one after its restart). Answers how many were given back.
    pub async fn release_leases(&self) -> Result<u64, store::StoreError> {
        self.stopping.store(true, Ordering::Release);
        let Some(store) = &self.store else {
            return Ok(0);
        };
        // A lease being taken right now is written before it is given back.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        store.release(&self.host_id).await
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// A new generation for `app` (a version going into force) and its waker.
    fn register(&self, app: &str) -> (u64, Arc<Notify>) {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let entry = apps.entry(app.to_string()).or_insert_with(|| Registration {
            generation: 0,
            wake: Arc::new(Notify::new()),
        });
        entry.generation += 1;
        (entry.generation, entry.wake.clone())
    }

    /// Whether `generation` is still the one in force for `app`.
    fn current(&self, app: &str, generation: u64) -> bool {
        self.apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .is_some_and(|r| r.generation == generation)
    }

    /// Wakes `app`'s worker (new jobs), or every worker (`None`: notifications may be lost).
    fn wake(&self, app: Option<&str>) {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        match app {
            Some(app) => apps.get(app).iter().for_each(|r| r.wake.notify_one()),
            None => apps.values().for_each(|r| r.wake.notify_one()),
        }
    }
}

fn host_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!(
        "{}:{}:{:04x}",
        name.trim(),
        std::process::id(),
        hasher.finish() & 0xffff
    )
}

/// Whether a component imports `alorig:host/timers` (at any version): it can schedule jobs.
pub fn imports_timers(imports: &[String]) -> bool {
    imports
        .iter()
        .any(|i| i.split('@').next() == Some(INTERFACE))
}

/// An app's jobs as the admin API shows them.
#[derive(Debug)]
pub struct JobsReport {
    pub counts: store::JobCounts,
    pub jobs: Vec<store::JobRow>,
}

/// Why the jobs cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("this host has no postgres_url, so it keeps no jobs")]
    NoStore,
    #[error("the job store cannot be reached: {0}")]
    Unavailable(store::StoreError),
}

/// One app's timers and jobs: built in `App::load`, shared by its instances.
pub struct TimersApp {
    app: Arc<str>,
    host: Arc<TimersHost>,
    timers: Vec<manifest::Timer>,
    jobs: manifest::Jobs,
    /// The app's `max_concurrency`: no more of its jobs run at once here.
    max_concurrency: usize,
    metrics: TimerMetrics,
}

/// The app's exported handlers the host calls: `timer-handler` when the
/// manifest has `[[timers]]`, `job-handler` when the component imports
/// `alorig:host/timers` (it can schedule jobs, so something must run them).
/// A handler exported but not needed is kept (jobs scheduled by an earlier version).
pub struct Handlers<T: 'static> {
    timer: Option<timer_trigger::TimerTriggerPre<T>>,
    job: Option<job_trigger::JobTriggerPre<T>>,
}

impl<T: Send + 'static> Handlers<T> {
    pub fn load(
        manifest: &Manifest,
        pre: &wasmtime::component::InstancePre<T>,
        imports: &[String],
    ) -> anyhow::Result<Self> {
        let source = manifest.source.display();
        let timer = timer_trigger::TimerTriggerPre::new(pre.clone()).ok();
        let job = job_trigger::JobTriggerPre::new(pre.clone()).ok();
        if timer.is_none() && !manifest.timers.is_empty() {
            anyhow::bail!(
                "{source}: [[timers]] is set but the component does not export alorig:host/timer-handler (on-timer) to run them"
            );
        }
        if job.is_none() && imports_timers(imports) {
            anyhow::bail!(
                "{source}: the component imports alorig:host/timers (it can schedule jobs) but does not export alorig:host/job-handler (on-job) to run them"
            );
        }
        Ok(Self { timer, job })
    }
}

impl TimersApp {
    /// The app's side of the timers; a component that schedules jobs needs the
    /// host's job store (`offline`: `validate`, which reaches no service).
    pub fn new(
        host: Arc<TimersHost>,
        manifest: &Manifest,
        imports: &[String],
        offline: bool,
        metrics: TimerMetrics,
    ) -> anyhow::Result<Self> {
        if imports_timers(imports) && host.store.is_none() && !offline {
            anyhow::bail!(
                "{}: the component imports alorig:host/timers (durable jobs), which needs the host's postgres_url \
                 (host.toml postgres_url or ALORIG_POSTGRES_URL) for the job store",
                manifest.source.display()
            );
        }
        Ok(Self {
            app: manifest.name.as_str().into(),
            host,
            timers: manifest.timers.clone(),
            jobs: manifest.jobs.clone(),
            max_concurrency: manifest.resources.max_concurrency.get() as usize,
            metrics,
        })
    }

    pub fn load(ctx: &super::LoadContext<'_>) -> Result<Self, super::LoadError> {
        Self::new(
            ctx.timers.clone(),
            ctx.manifest,
            ctx.imports,
            ctx.offline,
            ctx.metrics.timers(ctx.name),
        )
        .map_err(|e| super::LoadError::operator(format!("{e:#}")))
    }

    /// Validates and stores one job; wakes this host's worker for it.
    async fn schedule(&self, job: Job) -> Result<u64, Error> {
        let store = self.host.store.as_ref().ok_or(Error::Unavailable)?;
        if job.name.is_empty() || job.name.len() > MAX_NAME {
            return Err(Error::Invalid(format!(
                "a job name must be 1 to {MAX_NAME} bytes"
            )));
        }
        if job.payload.len() > MAX_PAYLOAD {
            return Err(Error::Invalid(format!(
                "a payload may be at most {MAX_PAYLOAD} bytes, this one has {}",
                job.payload.len()
            )));
        }
        if job
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > MAX_NAME)
        {
            return Err(Error::Invalid(format!(
                "an idempotency key must be 1 to {MAX_NAME} bytes"
            )));
        }
        let now = Utc::now();
        let run_at = match job.when {
            When::AfterMs(ms) if ms <= MAX_DELAY_MS => {
                now + chrono::Duration::milliseconds(ms as i64)
            }
            When::AtMs(ms) if ms <= now.timestamp_millis() as u64 + MAX_DELAY_MS => Utc
                .timestamp_millis_opt(ms as i64)
                .single()
                .ok_or_else(|| Error::Invalid("at-ms is not an instant".into()))?,
            _ => {
                return Err(Error::Invalid(
                    "a job may be scheduled at most ten years ahead".into(),
                ));
            }
        };
        let scheduled = store
            .schedule(&self.app, &job.name, &job.payload, run_at, job.idempotency_key.as_deref(), self.jobs.max_pending.get())
            .await
            .map_err(|err| {
                tracing::warn!(app = %self.app, fault = "dependency", "cannot schedule a job: {err}");
                Error::Unavailable
            })?;
        match scheduled {
            Scheduled::New(id) => {
                self.host.wake(Some(&self.app));
                Ok(id as u64)
            }
            Scheduled::Existing(id) => Ok(id as u64),
            Scheduled::Full => Err(Error::Invalid(format!(
                "the app already has [jobs] max_pending = {} pending jobs",
                self.jobs.max_pending
            ))),
        }
    }

    async fn cancel(&self, id: u64) -> Result<bool, Error> {
        let store = self.host.store.as_ref().ok_or(Error::Unavailable)?;
        let Ok(id) = i64::try_from(id) else {
            return Ok(false);
        };
        store.cancel(&self.app, id).await.map_err(|err| {
            tracing::warn!(app = %self.app, fault = "dependency", "cannot cancel a job: {err}");
            Error::Unavailable
        })
    }
}

/// Puts the timers and the job worker of a version going into force to work
/// (from `App::activate`); those of the version before stop by themselves.
pub fn start<T: Send + 'static>(
    timers: &Arc<TimersApp>,
    handlers: &Handlers<T>,
    app: WeakInvoker<T>,
) {
    let host = timers.host.clone();
    let (generation, wake) = host.register(&timers.app);
    if let Some(trigger) = &handlers.timer {
        if host.store.is_none()
            && !timers.timers.is_empty()
            && !host.memory_only_warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(fault = %crate::fault::Fault::Operator, "timers fire on this host only and are not durable: the host has no postgres_url");
        }
        for timer in &timers.timers {
            tokio::spawn(worker::timer_loop(
                timers.clone(),
                app.clone(),
                trigger.clone(),
                timer.clone(),
                generation,
            ));
        }
    }
    if let (Some(trigger), Some(store)) = (&handlers.job, &host.store) {
        tokio::spawn(worker::job_loop(
            timers.clone(),
            app.clone(),
            trigger.clone(),
            store.clone(),
            wake,
            generation,
        ));
        if !host.listening.swap(true, Ordering::Relaxed) {
            tokio::spawn(worker::listen(Arc::downgrade(&host), store.clone()));
        }
    }
}

/// Per instance: the app's timers state.
pub struct TimersCtx {
    app: Arc<TimersApp>,
}

impl TimersCtx {
    pub fn new(app: Arc<TimersApp>) -> Self {
        Self { app }
    }

    pub fn view(&self) -> TimersView<'_> {
        TimersView { ctx: self }
    }
}

/// The borrowed view the generated `Host` trait is implemented on.
pub struct TimersView<'a> {
    ctx: &'a TimersCtx,
}

struct HasTimers;

impl HasData for HasTimers {
    type Data<'a> = TimersView<'a>;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> TimersView<'_>,
) -> anyhow::Result<()> {
    wit::add_to_linker::<T, HasTimers>(linker, view)?;
    Ok(())
}

impl wit::Host for TimersView<'_> {
    async fn schedule(&mut self, job: Job) -> wasmtime::Result<Result<u64, Error>> {
        Ok(self.ctx.app.schedule(job).await)
    }

    async fn cancel(&mut self, id: u64) -> wasmtime::Result<Result<bool, Error>> {
        Ok(self.ctx.app.cancel(id).await)
    }
}

/// The wait before retry `attempt + 1` after failed run `attempt` (from 1):
/// `backoff`, doubling each time, capped at `max_backoff`.
pub fn backoff(jobs: &manifest::Jobs, attempt: u32) -> Duration {
    let doubled = jobs.backoff.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX),
    );
    doubled.min(jobs.max_backoff)
}

/// A firing's instant as the guest gets it.
fn millis(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let jobs = manifest::Jobs {
            max_attempts: std::num::NonZeroU32::new(5).unwrap(),
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_pending: std::num::NonZeroU32::new(10).unwrap(),
        };
        let waits: Vec<u128> = (1..=6).map(|a| backoff(&jobs, a).as_millis()).collect();
        assert_eq!(waits, vec![200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff(&jobs, 100), Duration::from_secs(1), "no overflow");
    }

    /// The guest's calls, straight on the `Host` trait (no wasm): without a
    /// job store `schedule` and `cancel` answer `unavailable`, never trap.
    #[tokio::test]
    async fn without_a_job_store_schedule_and_cancel_are_unavailable() {
        use wit::Host as _;
        let manifest = Manifest::parse(
            std::path::Path::new("a.toml"),
            "name = \"a\"\ncomponent = \"a.wasm\"\n",
        )
        .unwrap();
        let host = Arc::new(TimersHost::new(None).unwrap());
        let metrics = crate::metrics::Metrics::new();
        let app = TimersApp::new(host, &manifest, &[], false, metrics.timers("a")).unwrap();
        let ctx = TimersCtx::new(Arc::new(app));
        let mut view = ctx.view();
        let job = Job {
            name: "report".into(),
            payload: vec![],
            when: When::AfterMs(10),
            idempotency_key: None,
        };
        assert!(matches!(
            view.schedule(job).await.unwrap(),
            Err(Error::Unavailable)
        ));
        assert!(matches!(
            view.cancel(1).await.unwrap(),
            Err(Error::Unavailable)
        ));
        // A component that schedules jobs is refused at load without a store.
        let imports = vec!["alorig:host/timers@0.1.0".to_string()];
        let host = Arc::new(TimersHost::new(None).unwrap());
        assert!(TimersApp::new(host, &manifest, &imports, false, metrics.timers("a")).is_err());
    }
}
