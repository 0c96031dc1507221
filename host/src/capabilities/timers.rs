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
    state::InstanceState,
};
use chrono::{DateTime, TimeZone as _, Utc};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::{AtomicBool, Ordering}},
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
        })
    }

    pub fn store(&self) -> Option<&Arc<JobStore>> {
        self.store.as_ref()
    }

    /// This host's name in leases and firings: host name, process id, a random tag.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// `GET /v1/apps/{app}/jobs`: counts, and the pending, running and dead
    /// jobs (the first 1000, running first, then by time).
    pub async fn jobs(&self, app: &str) -> Result<serde_json::Value, crate::deploy::ApiError> {
        use crate::deploy::ApiError;
        let store = self.store.as_ref().ok_or_else(|| {
            ApiError::new(409, "no_job_store", "this host has no postgres_url, so it keeps no jobs")
        })?;
        let unavailable = |err: store::StoreError| ApiError::new(503, "job_store_unavailable", format!("the job store cannot be reached: {err}"));
        let [pending, running, dead, done] = store.counts(app).await.map_err(unavailable)?;
        let jobs = store.list(app, 1000).await.map_err(unavailable)?;
        Ok(serde_json::json!({
            "app": app,
            "counts": {"pending": pending, "running": running, "dead": dead, "done": done},
            "jobs": jobs,
        }))
    }

    /// A new generation for `app` (a version going into force) and its waker.
    fn register(&self, app: &str) -> (u64, Arc<Notify>) {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let entry = apps
            .entry(app.to_string())
            .or_insert_with(|| Registration { generation: 0, wake: Arc::new(Notify::new()) });
        entry.generation += 1;
        (entry.generation, entry.wake.clone())
    }

    /// Whether `generation` is still the one in force for `app`.
    fn current(&self, app: &str, generation: u64) -> bool {
        self.apps.lock().unwrap_or_else(|e| e.into_inner()).get(app).is_some_and(|r| r.generation == generation)
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
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{}:{}:{:04x}", name.trim(), std::process::id(), hasher.finish() & 0xffff)
}

/// Whether a component imports `alorig:host/timers` (at any version): it can schedule jobs.
pub fn imports_timers(imports: &[String]) -> bool {
    imports.iter().any(|i| i.split('@').next() == Some(INTERFACE))
}

/// One app's timers and jobs: built in `App::load`, shared by its instances.
pub struct TimersApp {
    app: Arc<str>,
    host: Arc<TimersHost>,
    timers: Vec<manifest::Timer>,
    jobs: manifest::Jobs,
    metrics: TimerMetrics,
    timer_trigger: Option<timer_trigger::TimerTriggerPre<InstanceState>>,
    job_trigger: Option<job_trigger::JobTriggerPre<InstanceState>>,
}

impl TimersApp {
    /// Checks that the component exports what the manifest and its imports
    /// need (see `validate::check_handlers`) and keeps the handlers' bindings.
    pub fn new(
        host: Arc<TimersHost>,
        manifest: &Manifest,
        pre: &wasmtime::component::InstancePre<InstanceState>,
        imports: &[String],
        offline: bool,
        metrics: TimerMetrics,
    ) -> anyhow::Result<Self> {
        let (timer_trigger, job_trigger) = crate::validate::check_handlers(manifest, pre, imports)?;
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
            metrics,
            timer_trigger,
            job_trigger,
        })
    }

    /// Validates and stores one job; wakes this host's worker for it.
    async fn schedule(&self, job: Job) -> Result<u64, Error> {
        let store = self.host.store.as_ref().ok_or(Error::Unavailable)?;
        if job.name.is_empty() || job.name.len() > MAX_NAME {
            return Err(Error::Invalid(format!("a job name must be 1 to {MAX_NAME} bytes")));
        }
        if job.payload.len() > MAX_PAYLOAD {
            return Err(Error::Invalid(format!("a payload may be at most {MAX_PAYLOAD} bytes, this one has {}", job.payload.len())));
        }
        if job.idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > MAX_NAME) {
            return Err(Error::Invalid(format!("an idempotency key must be 1 to {MAX_NAME} bytes")));
        }
        let now = Utc::now();
        let run_at = match job.when {
            When::AfterMs(ms) if ms <= MAX_DELAY_MS => now + chrono::Duration::milliseconds(ms as i64),
            When::AtMs(ms) if ms <= now.timestamp_millis() as u64 + MAX_DELAY_MS => {
                Utc.timestamp_millis_opt(ms as i64).single().ok_or_else(|| Error::Invalid("at-ms is not an instant".into()))?
            }
            _ => return Err(Error::Invalid("a job may be scheduled at most ten years ahead".into())),
        };
        let scheduled = store
            .schedule(&self.app, &job.name, &job.payload, run_at, job.idempotency_key.as_deref(), self.jobs.max_pending.get())
            .await
            .map_err(|err| {
                tracing::warn!(app = %self.app, "cannot schedule a job: {err}");
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
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        store.cancel(&self.app, id).await.map_err(|err| {
            tracing::warn!(app = %self.app, "cannot cancel a job: {err}");
            Error::Unavailable
        })
    }
}

/// Puts the timers and the job worker of a version going into force to work
/// (from `App::activate`); those of the version before stop by themselves.
pub fn start(app: &Arc<crate::app::App>) {
    let timers = &app.capabilities.timers;
    let host = timers.host.clone();
    let (generation, wake) = host.register(&app.name);
    if let Some(trigger) = &timers.timer_trigger {
        if host.store.is_none() && !timers.timers.is_empty() && !host.memory_only_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("timers fire on this host only and are not durable: the host has no postgres_url");
        }
        for timer in &timers.timers {
            tokio::spawn(worker::timer_loop(Arc::downgrade(app), trigger.clone(), timer.clone(), generation));
        }
    }
    if let (Some(trigger), Some(store)) = (&timers.job_trigger, &host.store) {
        tokio::spawn(worker::job_loop(Arc::downgrade(app), trigger.clone(), store.clone(), wake, generation));
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
}

/// The borrowed view the generated `Host` trait is implemented on.
pub struct TimersView<'a> {
    ctx: &'a TimersCtx,
}

struct HasTimers;

impl HasData for HasTimers {
    type Data<'a> = TimersView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
    wit::add_to_linker::<InstanceState, HasTimers>(linker, |state| TimersView { ctx: &state.timers })?;
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
    let doubled = jobs.backoff.saturating_mul(1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX));
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
}
