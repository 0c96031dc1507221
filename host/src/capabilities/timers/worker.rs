//! The loops that run timers and jobs for one app version, and the host's
//! `LISTEN` connection that wakes them. Every loop holds only a `Weak` to its
//! app and stops when the app is gone or a newer version took its place; no
//! error ends a loop (a database outage is logged, waited out and retried).

use super::{
    TimersHost, backoff, job_trigger::JobTriggerPre, millis,
    store::{FiringClaim, JobStore},
    timer_trigger::TimerTriggerPre,
};
use crate::{app::App, config::manifest::{CatchUp, Timer}, state::InstanceState, trigger};
use chrono::Utc;
use std::{
    sync::{Arc, Weak, atomic::{AtomicBool, Ordering}},
    time::{Duration, Instant},
};
use tokio::sync::{Notify, Semaphore};

/// A lease outlasts its run's timeout by this much (the result's write included),
/// so a live host never loses a lease to another.
const LEASE_SLACK: Duration = Duration::from_secs(5);
/// Longest an idle worker sleeps before looking again (expired leases, delayed jobs).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Shortest wait of a worker that found nothing to lease.
const MIN_IDLE: Duration = Duration::from_millis(10);
/// Jobs of one app running at once on this host, at most (also bounded by the
/// app's `max_concurrency`).
const MAX_IN_FLIGHT: usize = 64;
/// Wait after the job store failed, before trying again.
const RETRY_STORE: Duration = Duration::from_secs(1);
/// A firing more than this late (the host was suspended, or busy) runs once
/// for the latest due instant instead of once per missed one.
const STALE: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// The app, if it is still the version in force.
fn current(app: &Weak<App>, generation: u64) -> Option<Arc<App>> {
    let app = app.upgrade()?;
    app.capabilities.timers.host.current(&app.name, generation).then_some(app)
}

/// Fires one timer of one app version for as long as it is in force.
pub async fn timer_loop(weak: Weak<App>, trigger: TimerTriggerPre<InstanceState>, timer: Timer, generation: u64) {
    let running = Arc::new(AtomicBool::new(false));
    let mut after = Utc::now();
    if timer.catch_up == CatchUp::Once
        && let Some(app) = current(&weak, generation)
        && let Some(due) = timer.schedule.last_at_or_before(after)
    {
        let store = app.capabilities.timers.host.store.clone();
        let last = match &store {
            Some(store) => store.last_firing(&app.name, &timer.name).await,
            None => Ok(None),
        };
        match last {
            Ok(last) if last.is_none_or(|last| last < due) => {
                tracing::info!(app = %app.name, timer = %timer.name, scheduled_at = %due, "catching up a missed firing");
                fire(app, &trigger, &timer, due, &running).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(app = %app.name, timer = %timer.name, "cannot check for missed firings: {err}"),
        }
    }
    loop {
        let Some(mut next) = timer.schedule.next_after(after) else {
            tracing::warn!(timer = %timer.name, "the timer's schedule has no next firing; it stops");
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        let Some(app) = current(&weak, generation) else { return };
        let now = Utc::now();
        if now - next > STALE {
            next = timer.schedule.last_at_or_before(now).unwrap_or(next).max(next);
        }
        after = next;
        fire(app, &trigger, &timer, next, &running).await;
    }
}

/// Claims the firing at `scheduled_at` and, if this host runs it, runs it in
/// the background (the loop goes on to the next instant meanwhile).
async fn fire(app: Arc<App>, trigger: &TimerTriggerPre<InstanceState>, timer: &Timer, scheduled_at: chrono::DateTime<Utc>, running: &Arc<AtomicBool>) {
    let timers = &app.capabilities.timers;
    let lease = timer.timeout + LEASE_SLACK;
    let claim = match &timers.host.store {
        Some(store) => match store.claim_firing(&app.name, &timer.name, scheduled_at, timers.host.host_id(), lease).await {
            Ok(claim) => claim,
            Err(err) => {
                tracing::warn!(app = %app.name, timer = %timer.name, "firing not run: the job store is unavailable: {err}");
                timers.metrics.timer_run(&timer.name, "unavailable");
                return;
            }
        },
        None if running.load(Ordering::Acquire) => FiringClaim::Skip,
        None => FiringClaim::Run,
    };
    match claim {
        FiringClaim::Taken => {}
        FiringClaim::Skip => {
            timers.metrics.timer_run(&timer.name, "skipped");
            tracing::info!(app = %app.name, timer = %timer.name, "firing skipped: the previous one is still running");
        }
        FiringClaim::Run => {
            running.store(true, Ordering::Release);
            let (trigger, timer, running) = (trigger.clone(), timer.clone(), running.clone());
            tokio::spawn(async move {
                let name = timer.name.clone();
                let outcome = trigger::run(&app, Instant::now(), timer.timeout, move |store| {
                    Box::pin(async move {
                        let instance = trigger.instantiate_async(&mut *store).await?;
                        instance.alorig_host_timer_handler().call_on_timer(store, &name, millis(scheduled_at)).await
                    })
                })
                .await;
                running.store(false, Ordering::Release);
                let timers = &app.capabilities.timers;
                timers.metrics.timer_run(&timer.name, outcome.label());
                if outcome != trigger::Outcome::Ok {
                    crate::traplog::warn(&app.name, format_args!("timer {} firing failed ({}): {}", timer.name, outcome.label(), outcome.describe()));
                }
                if let Some(store) = &timers.host.store
                    && let Err(err) = store.finish_firing(&app.name, &timer.name, scheduled_at, outcome.label()).await
                {
                    tracing::warn!(app = %app.name, timer = %timer.name, "cannot record the firing's end: {err}");
                }
            });
        }
    }
}

/// Leases and runs the app's due jobs for as long as this version is in force.
pub async fn job_loop(weak: Weak<App>, trigger: JobTriggerPre<InstanceState>, store: Arc<JobStore>, wake: Arc<Notify>, generation: u64) {
    let slots = {
        let Some(app) = current(&weak, generation) else { return };
        Arc::new(Semaphore::new((app.manifest.resources.max_concurrency.get() as usize).min(MAX_IN_FLIGHT)))
    };
    let mut counted = Instant::now() - Duration::from_secs(60);
    loop {
        let Some(app) = current(&weak, generation) else { return };
        let timers = &app.capabilities.timers;
        if counted.elapsed() >= IDLE_POLL {
            counted = Instant::now();
            if let Ok(counts) = store.counts(&app.name).await {
                timers.metrics.set_queue(counts);
            }
        }
        // Only as many jobs as this host can start now.
        let Ok(first) = slots.clone().acquire_owned().await else { return };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let lease = timers.jobs.timeout + LEASE_SLACK;
        let claimed = match store.claim(&app.name, timers.host.host_id(), permits.len() as u32, lease).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(app = %app.name, "cannot lease jobs: {err}");
                drop(permits);
                drop(app);
                tokio::time::sleep(RETRY_STORE).await;
                continue;
            }
        };
        let (full, none) = (claimed.len() == permits.len(), claimed.is_empty());
        for job in claimed {
            let permit = permits.pop().expect("one permit per claimed job");
            tokio::spawn(run_job(app.clone(), trigger.clone(), store.clone(), job, permit));
        }
        drop(permits);
        if full {
            continue;
        }
        let next = store.next_due(&app.name).await.ok().flatten();
        drop(app);
        let mut wait = next.map(|t| (t - Utc::now()).to_std().unwrap_or_default()).unwrap_or(IDLE_POLL).min(IDLE_POLL);
        if none {
            // Due jobs another host is leasing right now: not a reason to spin.
            wait = wait.max(MIN_IDLE);
        }
        if !wait.is_zero() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Runs one leased job and records its end: done, retry later, or dead.
async fn run_job(app: Arc<App>, trigger: JobTriggerPre<InstanceState>, store: Arc<JobStore>, job: super::store::Claimed, _slot: tokio::sync::OwnedSemaphorePermit) {
    let started = Instant::now();
    let timers = &app.capabilities.timers;
    let host = timers.host.host_id();
    let jobs = &timers.jobs;
    let attempt = job.attempt.max(1) as u32;
    timers.metrics.job_latency.observe((Utc::now() - job.run_at).to_std().unwrap_or_default().as_secs_f64());
    let (error, retry_in) = if attempt > jobs.max_attempts.get() {
        // Leased again after its host died during the last allowed run.
        timers.metrics.job_run("lost");
        (Some("its host stopped during the last allowed attempt (lease expired)".to_string()), None)
    } else {
        let (id, name, payload) = (job.id as u64, job.name.clone(), job.payload);
        let outcome = trigger::run(&app, started, jobs.timeout, move |store| {
            Box::pin(async move {
                let instance = trigger.instantiate_async(&mut *store).await?;
                instance.alorig_host_job_handler().call_on_job(store, id, &name, &payload, attempt).await
            })
        })
        .await;
        timers.metrics.job_run(outcome.label());
        match outcome {
            trigger::Outcome::Ok => (None, None),
            failed => {
                let retry = (attempt < jobs.max_attempts.get()).then(|| backoff(jobs, attempt));
                (Some(failed.describe()), retry)
            }
        }
    };
    match store.finish(job.id, host, job.attempt, error.as_deref(), retry_in).await {
        Ok(Some(state)) if state == "dead" => {
            timers.metrics.dead_letters.inc();
            tracing::warn!(app = %app.name, job = job.id, name = %job.name, attempts = attempt, "job dead-lettered: {}", error.unwrap_or_default());
        }
        Ok(Some(_)) => {
            if let (Some(error), Some(retry_in)) = (error, retry_in) {
                tracing::info!(app = %app.name, job = job.id, attempt, "job failed, retrying in {retry_in:?}: {error}");
            }
        }
        Ok(None) => tracing::warn!(app = %app.name, job = job.id, "the job's lease passed before it finished; another run will count"),
        Err(err) => tracing::warn!(app = %app.name, job = job.id, "cannot record the job's end (it will run again after its lease): {err}"),
    }
}

/// `LISTEN alorig_jobs` for this host: wakes the worker of the app a new job
/// belongs to, whichever host enqueued it; and tidies the store now and then.
pub async fn listen(host: Weak<TimersHost>, store: Arc<JobStore>) {
    let mut tidied = Instant::now();
    loop {
        let listener = async {
            let pool = store.ready().await.map_err(|e| e.to_string())?;
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await.map_err(|e| e.to_string())?;
            listener.listen(super::store::CHANNEL).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!("cannot listen for new jobs (workers poll meanwhile): {err}");
                tokio::time::sleep(RETRY_STORE).await;
                continue;
            }
        };
        // Anything announced while not listening is found by this first look.
        if let Some(host) = host.upgrade() {
            host.wake(None);
        }
        loop {
            let notification = tokio::time::timeout(Duration::from_secs(60), listener.try_recv()).await;
            let Some(host) = host.upgrade() else { return };
            match notification {
                Ok(Ok(Some(notification))) => host.wake(Some(notification.payload())),
                Ok(Ok(None)) => host.wake(None), // reconnected: notifications may be lost
                Ok(Err(err)) => {
                    tracing::warn!("lost the job notifications connection: {err}");
                    break;
                }
                Err(_) => {}
            }
            if tidied.elapsed() > Duration::from_secs(600) {
                tidied = Instant::now();
                if let Err(err) = store.tidy().await {
                    tracing::warn!("cannot tidy the job store: {err}");
                }
            }
        }
    }
}
