//! Runs one request in a fresh instance of an app and turns every way that can
//! end into an HTTP answer and a metric:
//!
//! | what happened                                   | answer | metric                          |
//! |-------------------------------------------------|--------|---------------------------------|
//! | guest answered                                  | its own| requests_total{status}          |
//! | no permit (`max_concurrency` reached)           | 503    | rejected_total{concurrency}     |
//! | instance cannot start within the memory budget  | 503    | rejected_total{memory_budget}   |
//! | memory growth refused mid-request, then trapped | 500    | traps_total{memory_limit}       |
//! | deadline passed (computing or blocked)          | 504    | traps_total{deadline}           |
//! | any other trap                                  | 500    | traps_total{trap}               |
//! | request body past `max_body`                    | 413    | requests_total{413}             |
//! | request body with broken framing (bad chunk)    | 400    | requests_total{400}             |
//!
//! The instance is dropped (and its memory given back)
//! when the guest finishes, traps, or passes its deadline, whichever comes first
//! — unless the app allows `instance_reuse` and the request ended cleanly, in
//! which case it waits, idle, for the app's next request.
//! Nothing here can affect another request: a trap ends only its own store.

use super::body::LimitedBody;
use crate::{
    app::{App, FIRST_TICKS, FinishingMark, Instance},
    limits::{Refusal, cpu},
    metrics::{RejectReason, TrapReason},
    trigger::{self, Outcome},
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};
use wasmtime_wasi_http::{
    WasiHttpView as _,
    p2::{
        bindings::http::types::{ErrorCode, Scheme},
        body::HyperOutgoingBody,
    },
};

pub type Response = hyper::Response<HyperOutgoingBody>;

pub async fn invoke(app: &Arc<App>, req: hyper::Request<Incoming>, started: Instant) -> Response {
    invoke_boxed(app, req.map(BodyExt::boxed), started).await
}

/// [`invoke`] for a request the host makes itself (e.g. asking an app whether
/// it serves a custom domain).
pub async fn invoke_boxed(
    app: &Arc<App>,
    req: hyper::Request<BoxBody<Bytes, hyper::Error>>,
    started: Instant,
) -> Response {
    let response = run(app, req, started).await;
    app.metrics
        .request(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn run(
    app: &Arc<App>,
    req: hyper::Request<BoxBody<Bytes, hyper::Error>>,
    started: Instant,
) -> Response {
    let max_body = app.manifest.resources.max_body.bytes();
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return plain(413, "request body too large\n");
    }

    let Ok(permit) = app.concurrency.clone().try_acquire_owned() else {
        Outcome::Rejected(RejectReason::Concurrency).record(&app.metrics);
        return overloaded(AT_CAPACITY);
    };

    let (req, body_fault) = {
        let (parts, body) = req.into_parts();
        let (body, exceeded) = LimitedBody::new(body, max_body);
        (hyper::Request::from_parts(parts, body), exceeded)
    };

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let task_app = app.clone();
    let guest = async move {
        let _permit = permit;
        let app = task_app;
        let timeout = app
            .manifest
            .resources
            .request_timeout
            .saturating_sub(started.elapsed());
        // The call moves to the guest pool if it computes past a tick; the
        // deadline is kept here, on the ingress, so it holds whatever the pool does.
        let work = {
            let app = app.clone();
            async move {
                let mut slot = app.take_idle().await;
                let answered = Arc::new(OnceLock::new());
                let served = serve_request(&app, &mut slot, req, sender, started, &answered).await;
                // Kept for the next request right here, where the guest ended (in
                // the pool, maybe), not once this result is back on the ingress:
                // the client may already have sent its next request by then, and
                // waits for this one (`App::take_idle`) until `answered` drops.
                if served.is_ok()
                    && let Some(instance) = slot.take()
                {
                    app.release(instance);
                }
                drop(answered);
                (served, slot)
            }
        };
        let ended = tokio::time::timeout(timeout, cpu::run(&app.cpu, work)).await;
        let failure = match ended {
            Ok((Ok(()), _)) => return None,
            Err(_) => trigger::deadline_passed(),
            // A failed instance is never reused: dropping it gives its memory back.
            Ok((Err(failed), _)) => {
                trigger::classify(&failed.error, failed.refusal, failed.starting)
            }
        };
        failure.record(&app.metrics);
        if let Outcome::Trapped(reason, why) = &failure {
            crate::traplog::warn(
                &app.name,
                format_args!(
                    "guest instance ended ({reason:?}, fault {}): {why}",
                    failure.fault()
                ),
            );
        }
        Some(failure)
    };

    // The guest runs right here, in the connection's task: most guests finish
    // their whole response in one go, and then no task is spawned and no other
    // worker is woken. Only a guest still running when its response head is
    // ready (a streaming body) moves to a task of its own.
    let mut guest = Box::pin(guest);
    let mut receiver = receiver;
    let (answer, ended) = tokio::select! {
        biased;
        failure = &mut guest => (receiver.try_recv().map_err(|_| ()), Some(failure)),
        answer = &mut receiver => (answer.map_err(|_| ()), None),
    };
    let still_running = ended.is_none();
    let failure = match answer {
        Ok(answer) => {
            if still_running {
                tokio::spawn(guest);
            }
            if let Some(refused) = body_fault.response() {
                return refused;
            }
            return match answer {
                Ok(response) => super::body::coalesce(response).await,
                Err(code) => {
                    tracing::warn!(app = %app.name, fault = "guest", "guest answered with an error: {code:?}");
                    plain(500, "internal error\n")
                }
            };
        }
        // The guest ended without answering: how it ended says why.
        Err(()) => match ended {
            Some(failure) => failure,
            None => guest.await,
        },
    };
    if let Some(refused) = body_fault.response() {
        return refused;
    }
    match failure {
        Some(Outcome::Rejected(_)) => overloaded(AT_CAPACITY),
        Some(Outcome::Trapped(TrapReason::Deadline, _)) => plain(504, "request deadline passed\n"),
        Some(Outcome::Trapped(..) | Outcome::Ok | Outcome::Error(_)) => {
            plain(500, "internal error\n")
        }
        None => {
            tracing::warn!(app = %app.name, fault = "guest", "guest returned without setting a response");
            plain(500, "internal error\n")
        }
    }
}

type Sender = tokio::sync::oneshot::Sender<Result<Response, ErrorCode>>;

/// Set when the guest answers a request; holds the app's finishing mark while
/// a reusable instance is on its way back to the idle list.
type Answered = Arc<OnceLock<Option<FinishingMark>>>;

/// Why a guest ended with an error: the error, whether it happened while the
/// instance was still starting, and the limiter's record of a refused growth.
struct GuestError {
    error: wasmtime::Error,
    starting: bool,
    refusal: Option<Refusal>,
}

/// Runs one request on the instance in `slot`, instantiating a fresh one first
/// when the slot is empty.
async fn serve_request(
    app: &App,
    slot: &mut Option<Instance>,
    req: hyper::Request<LimitedBody>,
    sender: Sender,
    started: Instant,
    answered: &Answered,
) -> Result<(), GuestError> {
    if slot.is_none() {
        let mut store = app.new_store(started);
        match app.pre.instantiate_async(&mut store).await {
            Ok(proxy) => {
                *slot = Some(Instance {
                    store,
                    proxy,
                    served: 0,
                })
            }
            Err(error) => {
                let refusal = store.data().limiter.refusal();
                return Err(GuestError {
                    error,
                    starting: true,
                    refusal,
                });
            }
        }
    }
    let Some(instance) = slot.as_mut() else {
        return Ok(());
    }; // filled above
    let result = handle(app, instance, req, sender, started, answered).await;
    match result {
        Ok(true) => Ok(()),
        // Returned without answering: not reused (its outparam, and our
        // sender, would otherwise linger in its table).
        Ok(false) => {
            *slot = None;
            Ok(())
        }
        Err(error) => Err(GuestError {
            error,
            starting: false,
            refusal: instance.store.data().limiter.refusal(),
        }),
    }
}

/// Calls the instance's handler; true when the guest set a response.
async fn handle(
    app: &App,
    instance: &mut Instance,
    req: hyper::Request<LimitedBody>,
    sender: Sender,
    started: Instant,
    answered: &Answered,
) -> wasmtime::Result<bool> {
    let store = &mut instance.store;
    store.data_mut().deadline = started + app.manifest.resources.request_timeout;
    // A reused instance's epoch deadline is its last request's: start afresh.
    store.set_epoch_deadline(FIRST_TICKS);
    // Set before the answer goes out; an app that reuses instances counts it
    // as finishing until the request's `answered` drops.
    let flag = answered.clone();
    let finishing =
        (app.manifest.resources.instance_reuse.get() > 1).then(|| app.finishing.clone());
    let out = store
        .data_mut()
        .http()
        .new_response_outparam_from_callback(move |result| {
            let _ = flag.set(finishing.map(|f| f.answered()));
            let _ = sender.send(result);
        })?;
    let guest_req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)?;
    instance
        .proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, guest_req, out)
        .await?;
    Ok(answered.get().is_some())
}

/// A response the host itself gives.
pub fn plain(status: u16, text: &'static str) -> Response {
    host_response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

/// A whole response built by the host (here and on the admin listener). It
/// cannot fail: a status outside 100-999 would be a host bug, answered as 500
/// rather than panicking the connection's task; `content_type` is a literal.
pub fn host_response(status: u16, content_type: &'static str, body: Bytes) -> Response {
    let mut response = hyper::Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// The 503 text when the app's budget or concurrency has no room now.
pub const AT_CAPACITY: &str = "app is at its capacity, retry shortly\n";

/// 503 with `Retry-After`: the request was not started, and may be sent again.
pub fn overloaded(text: &'static str) -> Response {
    let mut response = plain(503, text);
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}
