//! The loops that run timers and jobs for one app version, and the host's
//! `LISTEN` connection that wakes them. Every loop holds only a `Weak` to its
//! app and stops when the app is gone or a newer version took its place; no
//! error ends a loop (a database outage is logged, waited out and retried).

use super::{
    TimersApp, TimersHost, backoff,
    job_trigger::JobTriggerPre,
    millis,
    store::{FiringClaim, JobStore},
    timer_trigger::TimerTriggerPre,
};
use crate::{
    config::manifest::{CatchUp, Timer},
    metrics::RejectReason,
    trigger::{Invoker, Outcome, WeakInvoker},
};
use chrono::Utc;
use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
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

/// The app, if this version is still loaded and in force.
fn current<T>(timers: &TimersApp, app: &WeakInvoker<T>, generation: u64) -> Option<Invoker<T>> {
    let app = app.upgrade()?;
    timers.host.current(&timers.app, generation).then_some(app)
}

/// Fires one timer of one app version for as long as it is in force.
pub async fn timer_loop<T: Send + 'static>(
    timers: Arc<TimersApp>,
    weak: WeakInvoker<T>,
    trigger: TimerTriggerPre<T>,
    timer: Timer,
    generation: u64,
) {
    let running = Arc::new(AtomicBool::new(false));
    let mut after = Utc::now();
    if timer.catch_up == CatchUp::Once
        && let Some(app) = current(&timers, &weak, generation)
        && let Some(due) = timer.schedule.last_at_or_before(after)
    {
        let last = match &timers.host.store {
            Some(store) => store.last_firing(&timers.app, &timer.name).await,
            None => Ok(None),
        };
        match last {
            Ok(last) if last.is_none_or(|last| last < due) => {
                tracing::info!(app = %timers.app, timer = %timer.name, scheduled_at = %due, "catching up a missed firing");
                fire(&timers, app, &trigger, &timer, due, &running).await;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(app = %timers.app, fault = "dependency", timer = %timer.name, "cannot check for missed firings: {err}")
            }
        }
    }
    loop {
        let Some(mut next) = timer.schedule.next_after(after) else {
            tracing::warn!(app = %timers.app, fault = "operator", timer = %timer.name, "the timer's schedule has no next firing; it stops");
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        let Some(app) = current(&timers, &weak, generation) else {
            return;
        };
        let now = Utc::now();
        if now - next > STALE {
            next = timer
                .schedule
                .last_at_or_before(now)
                .unwrap_or(next)
                .max(next);
        }
        after = next;
        fire(&timers, app, &trigger, &timer, next, &running).await;
    }
}

/// Claims the firing at `scheduled_at` and, if this host runs it, runs it in
/// the background (the loop goes on to the next instant meanwhile).
async fn fire<T: Send + 'static>(
    timers: &Arc<TimersApp>,
    app: Invoker<T>,
    trigger: &TimerTriggerPre<T>,
    timer: &Timer,
    scheduled_at: chrono::DateTime<Utc>,
    running: &Arc<AtomicBool>,
) {
    let lease = timer.timeout + LEASE_SLACK;
    let claim = match &timers.host.store {
        Some(store) => match store
            .claim_firing(
                &timers.app,
                &timer.name,
                scheduled_at,
                timers.host.host_id(),
                lease,
            )
            .await
        {
            Ok(claim) => claim,
            Err(err) => {
                tracing::warn!(app = %timers.app, fault = "dependency", timer = %timer.name, "firing not run: the job store is unavailable: {err}");
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
            tracing::info!(app = %timers.app, timer = %timer.name, "firing skipped: the previous one is still running");
        }
        FiringClaim::Run => {
            running.store(true, Ordering::Release);
            let (timers, trigger, timer, running) = (
                timers.clone(),
                trigger.clone(),
                timer.clone(),
                running.clone(),
            );
            tokio::spawn(async move {
                let name = timer.name.clone();
                let outcome = app
                    .run(Instant::now(), timer.timeout, move |store| {
                        Box::pin(async move {
                            let instance = trigger.instantiate_async(&mut *store).await?;
                            instance
                                .alorig_host_timer_handler()
                                .call_on_timer(store, &name, millis(scheduled_at))
                                .await
                        })
                    })
                    .await;
                drop(app);
                running.store(false, Ordering::Release);
                timers.metrics.timer_run(&timer.name, outcome.label());
                if outcome != Outcome::Ok {
                    crate::traplog::warn(
                        &timers.app,
                        format_args!(
                            "timer {} firing failed ({}, fault {}): {}",
                            timer.name,
                            outcome.label(),
                            outcome.fault(),
                            outcome.describe()
                        ),
                    );
                }
                if let Some(store) = &timers.host.store
                    && let Err(err) = store
                        .finish_firing(&timers.app, &timer.name, scheduled_at, outcome.label())
                        .await
                {
                    tracing::warn!(app = %timers.app, fault = "dependency", timer = %timer.name, "cannot record the firing's end: {err}");
                }
            });
        }
    }
}

/// Leases and runs the app's due jobs for as long as this version is in force.
pub async fn job_loop<T: Send + 'static>(
    timers: Arc<TimersApp>,
    weak: WeakInvoker<T>,
    trigger: JobTriggerPre<T>,
    store: Arc<JobStore>,
    wake: Arc<Notify>,
    generation: u64,
) {
    let slots = Arc::new(Semaphore::new(timers.max_concurrency.min(MAX_IN_FLIGHT)));
    let mut counted = Instant::now() - Duration::from_secs(60);
    loop {
        let Some(app) = current(&timers, &weak, generation) else {
            return;
        };
        if counted.elapsed() >= IDLE_POLL {
            counted = Instant::now();
            if let Ok(counts) = store.counts(&timers.app).await {
                timers
                    .metrics
                    .set_queue(counts.pending, counts.running, counts.dead);
            }
        }
        // Only as many jobs as this host can start now.
        let Ok(first) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        if timers.host.stopping() {
            return;
        }
        let lease = timers.jobs.timeout + LEASE_SLACK;
        let claimed = match store
            .claim(
                &timers.app,
                timers.host.host_id(),
                permits.len() as u32,
                lease,
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(app = %timers.app, fault = "dependency", "cannot lease jobs: {err}");
                drop(permits);
                drop(app);
                tokio::time::sleep(RETRY_STORE).await;
                continue;
            }
        };
        let (full, none) = (claimed.len() == permits.len(), claimed.is_empty());
        for job in claimed {
            // The store honours the LIMIT; were it not to, an extra job simply
            // waits for its lease to pass and runs again later.
            let Some(permit) = permits.pop() else { break };
            tokio::spawn(run_job(
                timers.clone(),
                app.clone(),
                trigger.clone(),
                store.clone(),
                job,
                permit,
            ));
        }
        drop(permits);
        if full {
            continue;
        }
        let next = store.next_due(&timers.app).await.ok().flatten();
        drop(app);
        let mut wait = next
            .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(IDLE_POLL)
            .min(IDLE_POLL);
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
async fn run_job<T: Send + 'static>(
    timers: Arc<TimersApp>,
    app: Invoker<T>,
    trigger: JobTriggerPre<T>,
    store: Arc<JobStore>,
    job: super::store::Claimed,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let host = timers.host.host_id();
    let jobs = &timers.jobs;
    let attempt = job.attempt.max(1) as u32;
    timers.metrics.job_latency.observe(
        (Utc::now() - job.run_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64(),
    );
    let (error, retry_in) = if attempt > jobs.max_attempts.get() {
        // Leased again after its host died during the last allowed run.
        timers.metrics.job_run("lost");
        (
            Some("its host stopped during the last allowed attempt (lease expired)".to_string()),
            None,
        )
    } else {
        // The payload is held while the job runs: charged to the app's budget
        // first, like anything the host holds for it. No room is a rejection,
        // retried after the backoff like any failed attempt.
        let charge = app.charge(job.payload.len() + job.name.len());
        let (id, name, payload) = (job.id as u64, job.name.clone(), job.payload);
        let outcome = match &charge {
            Ok(_) => {
                app.run(started, jobs.timeout, move |store| {
                    Box::pin(async move {
                        let instance = trigger.instantiate_async(&mut *store).await?;
                        instance
                            .alorig_host_job_handler()
                            .call_on_job(store, id, &name, &payload, attempt)
                            .await
                    })
                })
                .await
            }
            Err(no_room) => {
                tracing::info!(app = %timers.app, fault = "guest", job = job.id, "job not started: its payload cannot be held: {no_room}");
                let outcome = Outcome::Rejected(RejectReason::MemoryBudget);
                outcome.record(app.metrics());
                outcome
            }
        };
        drop(charge);
        timers.metrics.job_run(outcome.label());
        match outcome {
            Outcome::Ok => (None, None),
            failed => {
                let retry = (attempt < jobs.max_attempts.get()).then(|| backoff(jobs, attempt));
                (Some(failed.describe()), retry)
            }
        }
    };
    match store
        .finish(job.id, host, job.attempt, error.as_deref(), retry_in)
        .await
    {
        Ok(Some(state)) if state == "dead" => {
            timers.metrics.dead_letters.inc();
            tracing::warn!(app = %timers.app, fault = "guest", job = job.id, name = %job.name, attempts = attempt, "job dead-lettered: {}", error.unwrap_or_default());
        }
        Ok(Some(_)) => {
            if let (Some(error), Some(retry_in)) = (error, retry_in) {
                tracing::info!(app = %timers.app, job = job.id, attempt, "job failed, retrying in {retry_in:?}: {error}");
            }
        }
        Ok(None) => {
            tracing::warn!(app = %timers.app, fault = "host", job = job.id, "the job's lease passed before it finished; another run will count")
        }
        Err(err) => {
            tracing::warn!(app = %timers.app, fault = "dependency", job = job.id, "cannot record the job's end (it will run again after its lease): {err}")
        }
    }
}

/// `LISTEN alorig_jobs` for this host: wakes the worker of the app a new job
/// belongs to, whichever host enqueued it; and tidies the store now and then.
pub async fn listen(host: Weak<TimersHost>, store: Arc<JobStore>) {
    let mut tidied = Instant::now();
    loop {
        let listener = async {
            let pool = store.ready().await.map_err(|e| e.to_string())?;
            let mut listener = sqlx::postgres::PgListener::connect_with(pool)
                .await
                .map_err(|e| e.to_string())?;
            listener
                .listen(super::store::CHANNEL)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(
                    fault = "dependency",
                    "cannot listen for new jobs (workers poll meanwhile): {err}"
                );
                tokio::time::sleep(RETRY_STORE).await;
                continue;
            }
        };
        // Anything announced while not listening is found by this first look.
        if let Some(host) = host.upgrade() {
            host.wake(None);
        }
        loop {
            let notification =
                tokio::time::timeout(Duration::from_secs(60), listener.try_recv()).await;
            let Some(host) = host.upgrade() else { return };
            match notification {
                Ok(Ok(Some(notification))) => host.wake(Some(notification.payload())),
                Ok(Ok(None)) => host.wake(None), // reconnected: notifications may be lost
                Ok(Err(err)) => {
                    tracing::warn!(
                        fault = "dependency",
                        "lost the job notifications connection: {err}"
                    );
                    break;
                }
                Err(_) => {}
            }
            if tidied.elapsed() > Duration::from_secs(600) {
                tidied = Instant::now();
                if let Err(err) = store.tidy().await {
                    tracing::warn!(fault = "dependency", "cannot tidy the job store: {err}");
                }
            }
        }
    }
}
