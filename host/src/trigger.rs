//! Running an app's exported handler outside of HTTP — a Redis message, a timer
//! firing, a job, a WebSocket event — in a fresh instance, under the same rules
//! as a request: the app's concurrency permit, its memory budget, and a deadline
//! enforced both by epoch interruption (a computing guest) and a wall-clock
//! timeout (a guest blocked in a host call). Failures are classified like the
//! ingress does ([`classify`], shared with it) and counted in
//! `alorig_app_traps_total` / `alorig_app_rejected_total`.
//!
//! The seam between capabilities and apps: a capability's trigger half holds an
//! [`Invoker`] (or a [`WeakInvoker`]), never the app itself. `App` implements
//! [`Instances`]; a capability sees only "run this export, within this time".

use crate::{
    fault::Fault,
    limits::{
        MemoryBudget, Refusal,
        cpu::{self, AppCpu},
        host_memory::{HostCharge, NoRoom},
    },
    metrics::{AppMetrics, RejectReason, TrapReason},
};
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};
use tokio::sync::Semaphore;
use wasmtime::{Store, Trap};

/// How one guest call ended (a handler, a request, a WebSocket event).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The handler returned an error (its text, first line).
    Error(String),
    /// The instance ended: trap, memory refused, or the deadline (with why).
    Trapped(TrapReason, String),
    /// Never started: no concurrency permit before the deadline, or no room
    /// in the app's memory budget for one more instance.
    Rejected(RejectReason),
}

impl Outcome {
    /// The `outcome` label of the timer and job counters.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error(_) => "error",
            Outcome::Trapped(TrapReason::Deadline, _) => "timeout",
            Outcome::Trapped(TrapReason::MemoryLimit, _) => "memory_limit",
            Outcome::Trapped(TrapReason::Trap, _) => "trap",
            Outcome::Rejected(_) => "rejected",
        }
    }

    /// One line for logs and for a job's `last_error`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Error(text) => format!("handler error: {text}"),
            Outcome::Trapped(TrapReason::Deadline, _) => "timeout: the deadline passed".into(),
            Outcome::Trapped(TrapReason::MemoryLimit, why) => format!("memory limit: {why}"),
            Outcome::Trapped(TrapReason::Trap, why) => format!("trap: {why}"),
            Outcome::Rejected(RejectReason::Concurrency) => {
                "not started: the app stayed at max_concurrency".into()
            }
            Outcome::Rejected(RejectReason::MemoryBudget) => {
                "not started: the app is at its memory budget".into()
            }
        }
    }

    /// Whose fault a failed outcome is: the guest's, except a rejection (the
    /// app's limits are too tight for its load: the operator's).
    pub fn fault(&self) -> Fault {
        match self {
            Outcome::Rejected(_) => Fault::Operator,
            _ => Fault::Guest,
        }
    }

    /// Counts a failed outcome in the app's trap or rejection series.
    pub fn record(&self, metrics: &AppMetrics) {
        match self {
            Outcome::Trapped(reason, _) => metrics.trap(*reason),
            Outcome::Rejected(reason) => metrics.rejected(*reason),
            Outcome::Ok | Outcome::Error(_) => {}
        }
    }
}

/// Why an instance ended with an error, from the error and the limiter's record:
/// interrupted at its epoch deadline; refused memory (while `starting`, a full
/// app budget is a rejection, not a trap); or any other trap.
pub fn classify(error: &wasmtime::Error, refusal: Option<Refusal>, starting: bool) -> Outcome {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Outcome::Trapped(TrapReason::Deadline, "interrupted at its deadline".into());
    }
    let why = crate::traplog::describe(error);
    match (starting, refusal) {
        (true, Some(Refusal::AppBudget)) => Outcome::Rejected(RejectReason::MemoryBudget),
        (_, Some(_)) => Outcome::Trapped(TrapReason::MemoryLimit, why),
        (_, None) => Outcome::Trapped(TrapReason::Trap, why),
    }
}

/// The outcome of a call that passed its wall-clock deadline while blocked.
pub fn deadline_passed() -> Outcome {
    Outcome::Trapped(
        TrapReason::Deadline,
        "deadline passed while blocked in a host call".into(),
    )
}

/// Longest handler error the host keeps (in logs and the job store's
/// `last_error`): the guest chooses the text, so its size is bounded here.
pub const MAX_ERROR: usize = 1024;

/// The first line of a guest's error text, cut at [`MAX_ERROR`] bytes.
pub fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("");
    let mut cut = line.len().min(MAX_ERROR);
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    &line[..cut]
}

/// What a trigger needs from one version of an app, whatever its store holds.
pub trait Instances<T>: Send + Sync {
    /// The app's name, for logs.
    fn name(&self) -> &Arc<str>;
    /// The manifest's `request_timeout`.
    fn request_timeout(&self) -> Duration;
    /// One permit per live instance (`max_concurrency`).
    fn concurrency(&self) -> &Arc<Semaphore>;
    fn metrics(&self) -> &AppMetrics;
    /// The app's CPU account and share of the guest pool.
    fn cpu(&self) -> &Arc<AppCpu>;
    /// A fresh store with the app's limiter, interrupted at `deadline`.
    fn new_store(&self, deadline: Instant) -> Store<T>;
    /// Whether the store's limiter refused memory growth, and which limit.
    fn refusal(&self, state: &T) -> Option<Refusal>;
    /// The app's memory budget, which what the host holds for a trigger
    /// (a job's payload, a message) is charged to.
    fn budget(&self) -> &Arc<MemoryBudget>;
}

/// What a trigger calls on the fresh store: instantiate, call the export.
pub type Call<'a> = Pin<Box<dyn Future<Output = wasmtime::Result<Result<(), String>>> + Send + 'a>>;

/// A handle on one app version that runs its exports: it keeps the version alive.
pub struct Invoker<T>(Arc<dyn Instances<T>>);

/// A handle that does not keep the version alive (a long-lived trigger loop).
pub struct WeakInvoker<T>(Weak<dyn Instances<T>>);

impl<T> Clone for Invoker<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Clone for WeakInvoker<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> WeakInvoker<T> {
    /// The version, if it is still loaded.
    pub fn upgrade(&self) -> Option<Invoker<T>> {
        self.0.upgrade().map(Invoker)
    }

    pub fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl<T: Send + 'static> Invoker<T> {
    pub fn new(app: Arc<dyn Instances<T>>) -> Self {
        Self(app)
    }

    pub fn downgrade(&self) -> WeakInvoker<T> {
        WeakInvoker(Arc::downgrade(&self.0))
    }

    pub fn name(&self) -> &Arc<str> {
        self.0.name()
    }

    pub fn request_timeout(&self) -> Duration {
        self.0.request_timeout()
    }

    pub fn metrics(&self) -> &AppMetrics {
        self.0.metrics()
    }

    /// Charges `bytes` the host holds for this trigger (its arguments) to the
    /// app's memory budget, given back when the charge is dropped.
    pub fn charge(&self, bytes: usize) -> Result<HostCharge, NoRoom> {
        let mut charge = HostCharge::new(self.0.budget().clone());
        charge.grow(bytes as u64)?;
        Ok(charge)
    }

    /// Whether a permit is free right now (a WebSocket open is not kept waiting).
    pub fn has_capacity(&self) -> bool {
        self.0.concurrency().available_permits() > 0
    }

    /// Runs `call` in a fresh instance, within `timeout` of `started` (time
    /// spent waiting for a permit counts).
    pub async fn run<F>(&self, started: Instant, timeout: Duration, call: F) -> Outcome
    where
        F: for<'a> FnOnce(&'a mut Store<T>) -> Call<'a> + Send + 'static,
    {
        let app = &self.0;
        let deadline = started + timeout;
        let permit =
            tokio::time::timeout_at(deadline.into(), app.concurrency().clone().acquire_owned())
                .await;
        let Ok(Ok(_permit)) = permit else {
            let outcome = Outcome::Rejected(RejectReason::Concurrency);
            outcome.record(app.metrics());
            return outcome;
        };
        let mut store = app.new_store(deadline);
        let work = async move {
            let result = call(&mut store).await;
            (result, store)
        };
        let ended = tokio::time::timeout_at(deadline.into(), cpu::run(app.cpu(), work)).await;
        let outcome = match ended {
            Ok((result, store)) => {
                let refusal = app.refusal(store.data());
                drop(store); // gives the instance's memory back before anything else
                match result {
                    Ok(Ok(())) => Outcome::Ok,
                    Ok(Err(text)) => Outcome::Error(first_line(&text).to_string()),
                    // A trigger's instance that cannot start is a trap, not a rejection.
                    Err(err) => classify(&err, refusal, false),
                }
            }
            Err(_) => deadline_passed(),
        };
        if let Outcome::Trapped(..) = &outcome {
            outcome.record(app.metrics());
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_instance_is_classified_by_its_error_and_the_limiter() {
        let interrupt = wasmtime::Error::from(Trap::Interrupt);
        assert!(matches!(
            classify(&interrupt, None, false),
            Outcome::Trapped(TrapReason::Deadline, _)
        ));
        let trap = wasmtime::Error::from(Trap::UnreachableCodeReached);
        assert!(matches!(
            classify(&trap, None, true),
            Outcome::Trapped(TrapReason::Trap, _)
        ));
        // No room in the app's budget to start: not started, not a trap.
        assert_eq!(
            classify(&trap, Some(Refusal::AppBudget), true),
            Outcome::Rejected(RejectReason::MemoryBudget)
        );
        assert!(matches!(
            classify(&trap, Some(Refusal::AppBudget), false),
            Outcome::Trapped(TrapReason::MemoryLimit, _)
        ));
        assert!(matches!(
            classify(&trap, Some(Refusal::InstanceCeiling), true),
            Outcome::Trapped(TrapReason::MemoryLimit, _)
        ));
        assert_eq!(
            Outcome::Rejected(RejectReason::Concurrency).label(),
            "rejected"
        );
        assert_eq!(
            Outcome::Rejected(RejectReason::Concurrency).fault(),
            Fault::Operator
        );
        assert_eq!(Outcome::Error("no".into()).fault(), Fault::Guest);
    }

    #[test]
    fn a_guest_error_is_kept_to_one_bounded_line() {
        assert_eq!(first_line("bad input\nat line 2"), "bad input");
        let long = "é".repeat(MAX_ERROR);
        let kept = first_line(&long);
        assert!(kept.len() <= MAX_ERROR && kept.len() > MAX_ERROR - 2);
        assert!(long.starts_with(kept));
    }
}
