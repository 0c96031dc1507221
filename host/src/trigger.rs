//! Running an app's exported handler outside of HTTP — a Redis message, a timer
//! firing, a job — in a fresh instance, under the same rules as a request: the
//! app's concurrency permit, its memory budget, and a deadline enforced both by
//! epoch interruption (a computing guest) and a wall-clock timeout (a guest
//! blocked in a host call). Failures are classified like the ingress does and
//! counted in `alorig_app_traps_total` / `alorig_app_rejected_total`.

use crate::{
    app::App,
    metrics::{RejectReason, TrapReason},
    state::InstanceState,
};
use std::{future::Future, pin::Pin, time::{Duration, Instant}};
use wasmtime::{Store, Trap};

/// How one handler call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The handler returned an error (its text, first line).
    Error(String),
    /// The instance ended: trap, memory refused, or the deadline (with why).
    Trapped(TrapReason, String),
    /// No concurrency permit came free before the deadline: never started.
    Rejected,
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
            Outcome::Rejected => "rejected",
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
            Outcome::Rejected => "not started: the app stayed at max_concurrency".into(),
        }
    }
}

/// What a trigger calls on the fresh store: instantiate, call the export.
pub type Call<'a> = Pin<Box<dyn Future<Output = wasmtime::Result<Result<(), String>>> + Send + 'a>>;

/// Runs `call` in a fresh instance of `app`, within `timeout` of `started`
/// (time spent waiting for a permit counts).
pub async fn run<F>(app: &App, started: Instant, timeout: Duration, call: F) -> Outcome
where
    F: for<'a> FnOnce(&'a mut Store<InstanceState>) -> Call<'a>,
{
    let deadline = started + timeout;
    let permit = tokio::time::timeout_at(deadline.into(), app.concurrency.clone().acquire_owned()).await;
    let Ok(Ok(_permit)) = permit else {
        app.metrics.rejected(RejectReason::Concurrency);
        return Outcome::Rejected;
    };
    let mut store = app.new_store(started);
    store.data_mut().deadline = deadline;
    let result = tokio::time::timeout_at(deadline.into(), call(&mut store)).await;
    let refusal = store.data().limiter.refusal();
    drop(store); // gives the instance's memory back before anything else
    let outcome = match result {
        Ok(Ok(Ok(()))) => Outcome::Ok,
        Ok(Ok(Err(text))) => Outcome::Error(first_line(&text).to_string()),
        Ok(Err(err)) if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
            Outcome::Trapped(TrapReason::Deadline, "interrupted at its deadline".into())
        }
        Ok(Err(err)) => {
            let reason = if refusal.is_some() { TrapReason::MemoryLimit } else { TrapReason::Trap };
            Outcome::Trapped(reason, crate::traplog::describe(&err))
        }
        Err(_) => Outcome::Trapped(TrapReason::Deadline, "deadline passed while blocked in a host call".into()),
    };
    if let Outcome::Trapped(reason, _) = &outcome {
        app.metrics.trap(*reason);
    }
    outcome
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}
