//! WebSockets (`wit/websocket.wit`): the host holds the sockets, the app sees
//! events.
//!
//! A route with `websocket = true` upgrades in the ingress ([`upgrade`]): the
//! host checks the handshake (426 otherwise) and the app's `[websocket]
//! max_connections` (503), registers the connection, then runs the app's
//! `on-open` in a fresh instance *before* answering 101 — an `error` refuses
//! the connection with 403. Each later message runs `on-message`, and the end
//! of the connection `on-close`, each in a fresh instance like every trigger
//! (`crate::trigger`): the app's concurrency permit, memory budget and request
//! timeout, the same trap and rejection metrics. So an open connection costs no instance, only
//! its socket, a small task and a bounded queue (`connection.rs`).
//!
//! Guests act on connections by id through `alorig:host/websocket` (send,
//! close, join, leave, send-group), on this host or another (`hub.rs`).
//! Limits, per app: `max_connections`, `max_message` (a larger incoming message
//! closes the connection with 1009; a larger outgoing one is `invalid`),
//! `ping_interval` (a client that stops answering is dropped), `send_queue` and
//! `send_timeout` (a client that does not read is dropped, never buffered
//! without bound).

mod connection;
pub mod hub;

use crate::{
    app::App,
    config::manifest,
    ingress::invoke::{self, Response},
    metrics::{RejectReason, TrapReason, WsMetrics},
    state::InstanceState,
    trigger::Outcome,
};
use hub::Hub;
use std::{sync::Arc, time::Instant};
use tokio_tungstenite::tungstenite::{self, Bytes, Utf8Bytes};
use wasmtime::component::{HasData, Linker};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alorig:host/websocket-imports",
        imports: { default: async | trappable },
    });
}

pub mod trigger {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alorig:host/websocket-trigger",
        exports: { default: async },
        with: { "alorig:host/websocket": super::generated::alorig::host::websocket },
    });
}

use generated::alorig::host::websocket::{self as wit, Error, Message};
use trigger::exports::alorig::host::websocket_handler::OpenRequest;

/// The fully qualified name a component imports the interface under.
pub const INTERFACE: &str = "alorig:host/websocket";
/// The export apps with a `websocket = true` route must have.
pub const HANDLER: &str = "alorig:host/websocket-handler";

/// Labels of `alorig_app_ws_dropped_total`, indexed by the `DROP_*` constants.
pub const DROP_REASONS: [&str; 5] = ["max_connections", "message_too_large", "slow_consumer", "send_timeout", "ping_timeout"];
pub const DROP_MAX_CONNECTIONS: usize = 0;
pub const DROP_TOO_LARGE: usize = 1;
pub const DROP_SLOW_CONSUMER: usize = 2;
pub const DROP_SEND_TIMEOUT: usize = 3;
pub const DROP_PING_TIMEOUT: usize = 4;

/// Longest group name; group names are `[A-Za-z0-9_.:-]`.
pub const MAX_GROUP: usize = 100;

/// One app's WebSocket side: its limits, metric handles and the host's hub.
pub struct WebSocketApp {
    pub name: Arc<str>,
    pub limits: manifest::WebSocket,
    pub metrics: WsMetrics,
    pub hub: Arc<Hub>,
}

impl WebSocketApp {
    pub fn new(name: Arc<str>, limits: manifest::WebSocket, metrics: WsMetrics, hub: Arc<Hub>) -> Self {
        Self { name, limits, metrics, hub }
    }

    /// The message as the protocol crate holds it, refused past `max_message`.
    fn outgoing(&self, message: Message) -> Result<tungstenite::Message, Error> {
        let len = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) => bytes.len(),
        };
        let max = self.limits.max_message.bytes();
        if len as u64 > max {
            return Err(Error::Invalid(format!("a message of {len} bytes is more than [websocket] max_message ({max} bytes)")));
        }
        Ok(match message {
            Message::Text(text) => tungstenite::Message::Text(Utf8Bytes::from(text)),
            Message::Binary(bytes) => tungstenite::Message::Binary(Bytes::from(bytes)),
        })
    }
}

fn check_group(group: &str) -> Result<(), Error> {
    let valid = !group.is_empty()
        && group.len() <= MAX_GROUP
        && group.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!("a group name is 1 to {MAX_GROUP} characters of A-Z a-z 0-9 _ . : -")))
    }
}

/// Close codes a guest may send: the registered ones an endpoint may use, and
/// the application range.
fn check_close(code: u16, reason: &str) -> Result<(), Error> {
    if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
        return Err(Error::Invalid(format!("close code {code} is not one an endpoint may send (1000-1003, 1007-1011, 3000-4999)")));
    }
    if reason.len() > 123 {
        return Err(Error::Invalid("a close reason is at most 123 bytes".into()));
    }
    Ok(())
}

/// The per-instance state: the app's WebSocket side.
pub struct WebSocketCtx {
    app: Arc<WebSocketApp>,
}

impl WebSocketCtx {
    pub fn new(app: Arc<WebSocketApp>) -> Self {
        Self { app }
    }
}

/// The borrowed view the generated `Host` trait is implemented on.
pub struct WebSocketView<'a> {
    ctx: &'a WebSocketCtx,
}

struct HasWebSocket;

impl HasData for HasWebSocket {
    type Data<'a> = WebSocketView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
    wit::add_to_linker::<InstanceState, HasWebSocket>(linker, |state| WebSocketView { ctx: &state.websocket })?;
    Ok(())
}

type R = wasmtime::Result<Result<(), Error>>;

impl wit::Host for WebSocketView<'_> {
    async fn send(&mut self, connection: String, message: Message) -> R {
        let app = &self.ctx.app;
        Ok(async { app.hub.send(&app.name, &connection, app.outgoing(message)?).await }.await)
    }

    async fn close(&mut self, connection: String, code: u16, reason: String) -> R {
        let app = &self.ctx.app;
        Ok(async {
            check_close(code, &reason)?;
            app.hub.close(&app.name, &connection, code, reason).await
        }
        .await)
    }

    async fn join(&mut self, connection: String, group: String) -> R {
        let app = &self.ctx.app;
        Ok(async {
            check_group(&group)?;
            app.hub.join(&app.name, &connection, &group).await
        }
        .await)
    }

    async fn leave(&mut self, connection: String, group: String) -> R {
        let app = &self.ctx.app;
        Ok(async {
            check_group(&group)?;
            app.hub.leave(&app.name, &connection, &group).await
        }
        .await)
    }

    async fn send_group(&mut self, group: String, message: Message) -> R {
        let app = &self.ctx.app;
        Ok(async {
            check_group(&group)?;
            app.hub.send_group(&app.name, &group, app.outgoing(message)?).await
        }
        .await)
    }
}

/// One event for the app's `websocket-handler`.
enum Event {
    Open(OpenRequest),
    Message(String, Message),
    Close(String, u16),
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Open(_) => "on-open",
            Event::Message(..) => "on-message",
            Event::Close(..) => "on-close",
        }
    }
}

/// Runs one event in a fresh instance like every trigger (`crate::trigger`):
/// the app's concurrency permit, memory budget and request timeout, failures
/// counted in the trap and rejection metrics. Anything but `ok` is logged.
async fn run_event(app: &Arc<App>, event: Event) -> Outcome {
    let Some(trigger) = app.websocket_trigger.clone() else {
        return Outcome::Trapped(TrapReason::Trap, "the app has no websocket-handler".into());
    };
    let what = event.name();
    let timeout = app.manifest.resources.request_timeout;
    let outcome = crate::trigger::run(app, Instant::now(), timeout, move |store| {
        Box::pin(async move {
            let instance = trigger.instantiate_async(&mut *store).await?;
            let handler = instance.alorig_host_websocket_handler();
            match event {
                Event::Open(request) => handler.call_on_open(&mut *store, &request).await,
                Event::Message(id, message) => handler.call_on_message(&mut *store, &id, &message).await,
                Event::Close(id, code) => handler.call_on_close(&mut *store, &id, code).await.map(Ok),
            }
        })
    })
    .await;
    match &outcome {
        Outcome::Ok => {}
        // The app's own answer (a refused connection, a message it did not take).
        Outcome::Error(_) => tracing::info!(app = %app.name, "{what}: {}", outcome.describe()),
        _ => crate::traplog::warn(&app.name, format_args!("{what} instance ended ({}): {}", outcome.label(), outcome.describe())),
    }
    outcome
}

/// Answers a request to a `websocket = true` route: 101 and a connection task,
/// or why not (426 not an upgrade, 503 at max_connections or capacity, 403
/// refused by `on-open`, 500 trap, 504 deadline).
pub async fn upgrade(app: &Arc<App>, mut req: hyper::Request<hyper::body::Incoming>, started: Instant) -> Response {
    let response = match handshake_key(&req) {
        Err(response) => response,
        Ok(key) => {
            let ws = app.capabilities.websocket.clone();
            let max = i64::from(ws.limits.max_connections.get());
            // The gauge is the app's count on this host, across its versions.
            if ws.metrics.connections.inc() >= max {
                ws.metrics.connections.dec();
                ws.metrics.dropped(DROP_MAX_CONNECTIONS);
                invoke::overloaded("the app is at its [websocket] max_connections, retry shortly\n")
            } else {
                ws.hub.ready().await;
                let (id, seq, conn, queue) = ws.hub.open(ws.name.clone(), ws.metrics.clone(), ws.limits.send_queue.get() as usize);
                let request = OpenRequest {
                    connection: id.clone(),
                    path: req.uri().path().to_string(),
                    query: req.uri().query().unwrap_or("").to_string(),
                    headers: req.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec())).collect(),
                };
                // Like an HTTP request, a connection is not kept waiting for a
                // permit: at max_concurrency it gets 503 at once.
                let outcome = if app.concurrency.available_permits() == 0 {
                    app.metrics.rejected(RejectReason::Concurrency);
                    Outcome::Rejected
                } else {
                    run_event(app, Event::Open(request)).await
                };
                match outcome {
                    Outcome::Ok => {
                        let upgraded = hyper::upgrade::on(&mut req);
                        tokio::spawn(connection::serve(app.clone(), ws, conn, seq, id, queue, upgraded));
                        switching(&key)
                    }
                    other => {
                        ws.hub.remove(seq).await;
                        ws.metrics.connections.dec();
                        match other {
                            Outcome::Error(_) => invoke::plain(403, "the app refused this WebSocket connection\n"),
                            // Memory refused while opening: most often the instance
                            // could not start within the app's budget.
                            Outcome::Rejected | Outcome::Trapped(TrapReason::MemoryLimit, _) => {
                                invoke::overloaded(invoke::AT_CAPACITY)
                            }
                            Outcome::Trapped(TrapReason::Deadline, _) => invoke::plain(504, "request deadline passed\n"),
                            Outcome::Ok | Outcome::Trapped(TrapReason::Trap, _) => invoke::plain(500, "internal error\n"),
                        }
                    }
                }
            }
        }
    };
    app.metrics.request(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The client's `Sec-WebSocket-Key` of a valid upgrade request, or the answer
/// to anything else.
#[allow(clippy::result_large_err)]
fn handshake_key<B>(req: &hyper::Request<B>) -> Result<String, Response> {
    let header = |name: http::HeaderName| req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let has_token = |value: String, token: &str| value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token));
    let upgrade = req.method() == http::Method::GET
        && has_token(header(http::header::CONNECTION), "upgrade")
        && has_token(header(http::header::UPGRADE), "websocket");
    if !upgrade || header(http::header::SEC_WEBSOCKET_VERSION).trim() != "13" {
        let mut response = invoke::plain(426, "this route takes WebSocket connections only (GET with Upgrade: websocket, version 13)\n");
        response.headers_mut().insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        response.headers_mut().insert(http::header::SEC_WEBSOCKET_VERSION, http::HeaderValue::from_static("13"));
        return Err(response);
    }
    match req.headers().get(http::header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => Ok(tungstenite::handshake::derive_accept_key(key.as_bytes())),
        _ => Err(invoke::plain(400, "Sec-WebSocket-Key is missing\n")),
    }
}

fn switching(accept: &str) -> Response {
    let mut response = invoke::plain(101, "");
    use http_body_util::BodyExt as _;
    *response.body_mut() = http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync();
    let headers = response.headers_mut();
    headers.remove(http::header::CONTENT_TYPE);
    headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
    headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
    headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, http::HeaderValue::from_str(accept).expect("base64 is a valid header value"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_and_close_codes_are_checked() {
        for good in ["user:42", "prices", "a.b-c_d", &"g".repeat(MAX_GROUP)] {
            assert!(check_group(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a*", "ünï", "a\nb", &"g".repeat(MAX_GROUP + 1)] {
            assert!(matches!(check_group(bad), Err(Error::Invalid(_))), "{bad:?}");
        }
        assert!(check_close(1000, "bye").is_ok() && check_close(4000, "").is_ok());
        for bad in [0, 999, 1005, 1006, 1015, 2000, 5000] {
            assert!(check_close(bad, "").is_err(), "{bad}");
        }
        assert!(check_close(1000, &"x".repeat(124)).is_err());
    }

    #[test]
    fn only_websocket_upgrades_get_a_key() {
        let req = |headers: &[(&str, &str)]| {
            let mut builder = hyper::Request::get("/");
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            builder.body(()).unwrap()
        };
        let good = [("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket"), ("sec-websocket-version", "13"), ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")];
        assert_eq!(handshake_key(&req(&good)).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(handshake_key(&req(&good[..3])).unwrap_err().status(), 400);
        assert_eq!(handshake_key(&req(&[])).unwrap_err().status(), 426);
        assert_eq!(handshake_key(&req(&[good[0], good[1], ("sec-websocket-version", "8"), good[3]])).unwrap_err().status(), 426);
    }
}
