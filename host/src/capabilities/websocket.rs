//! WebSockets (`wit/websocket.wit`): the host holds the sockets, the app sees
//! events.
//!
//! A route with `websocket = true` upgrades in the ingress
//! (`ingress/websocket.rs` checks the handshake and answers HTTP); here
//! [`open`] checks the app's `[websocket] max_connections` (on this host, then,
//! with `max_connections_per = "cluster"` and Redis, across hosts: `leases.rs`),
//! registers the connection, then runs the app's `on-open` in a fresh instance *before* the
//! ingress answers 101 — an `error` refuses the connection. Each later message runs `on-message`, and the end
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
mod fanout;
pub mod hub;
mod leases;
mod routing;
mod wire;

use crate::{
    config::manifest::{self, Manifest},
    limits::MemoryBudget,
    metrics::{RejectReason, WsDropReason, WsMetrics},
    trigger::{Invoker, Outcome},
};
use hub::{Conn, Hub, Outgoing};
use std::{sync::Arc, time::Instant};
use tokio::sync::mpsc;
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
use trigger::{WebsocketTriggerPre, exports::alorig::host::websocket_handler::OpenRequest};

/// The fully qualified name a component imports the interface under.
pub const INTERFACE: &str = "alorig:host/websocket";
/// The export apps with a `websocket = true` route must have.
pub const HANDLER: &str = "alorig:host/websocket-handler";

/// Longest group name; group names are `[A-Za-z0-9_.:-]`.
pub const MAX_GROUP: usize = 100;

/// One app's WebSocket side: its limits, metric handles and the host's hub.
pub struct WebSocketApp {
    pub name: Arc<str>,
    pub limits: manifest::WebSocket,
    pub metrics: WsMetrics,
    pub hub: Arc<Hub>,
    /// The app's memory budget: queued outgoing messages are charged to it.
    pub budget: Arc<MemoryBudget>,
}

impl WebSocketApp {
    pub fn new(
        name: Arc<str>,
        limits: manifest::WebSocket,
        metrics: WsMetrics,
        hub: Arc<Hub>,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        Self {
            name,
            limits,
            metrics,
            hub,
            budget,
        }
    }

    pub fn load(ctx: &super::LoadContext<'_>) -> Self {
        Self::new(
            ctx.name.clone(),
            ctx.manifest.websocket.clone(),
            ctx.metrics.websocket(ctx.name),
            ctx.websocket.clone(),
            ctx.budget.clone(),
        )
    }

    /// The message as the protocol crate holds it, refused past `max_message`.
    fn outgoing(&self, message: Message) -> Result<tungstenite::Message, Error> {
        let len = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) => bytes.len(),
        };
        let max = self.limits.max_message.bytes();
        if len as u64 > max {
            return Err(Error::Invalid(format!(
                "a message of {len} bytes is more than [websocket] max_message ({max} bytes)"
            )));
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
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "a group name is 1 to {MAX_GROUP} characters of A-Z a-z 0-9 _ . : -"
        )))
    }
}

/// Close codes a guest may send: the registered ones an endpoint may use, and
/// the application range.
fn check_close(code: u16, reason: &str) -> Result<(), Error> {
    if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
        return Err(Error::Invalid(format!(
            "close code {code} is not one an endpoint may send (1000-1003, 1007-1011, 3000-4999)"
        )));
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

    pub fn view(&self) -> WebSocketView<'_> {
        WebSocketView { ctx: self }
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

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> WebSocketView<'_>,
) -> anyhow::Result<()> {
    wit::add_to_linker::<T, HasWebSocket>(linker, view)?;
    Ok(())
}

type R = wasmtime::Result<Result<(), Error>>;

impl wit::Host for WebSocketView<'_> {
    async fn send(&mut self, connection: String, message: Message) -> R {
        let app = &self.ctx.app;
        Ok(async {
            app.hub
                .send(&app.name, &connection, app.outgoing(message)?)
                .await
        }
        .await)
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
            app.hub
                .send_group(&app.name, &group, app.outgoing(message)?)
                .await
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

/// The handler an app with a `websocket = true` route must export, checked at load.
pub fn load_handler<T: Send + 'static>(
    manifest: &Manifest,
    pre: &wasmtime::component::InstancePre<T>,
) -> anyhow::Result<Option<WebsocketTriggerPre<T>>> {
    if !manifest.routes.iter().any(|r| r.websocket) {
        return Ok(None);
    }
    WebsocketTriggerPre::new(pre.clone()).map(Some).map_err(|_| {
        anyhow::anyhow!(
            "{}: does not export {HANDLER} (on-open, on-message, on-close), which the websocket = true route in {} needs",
            manifest.component.display(),
            manifest.source.display()
        )
    })
}

/// Runs one event in a fresh instance like every trigger (`crate::trigger`):
/// the app's concurrency permit, memory budget and request timeout, failures
/// counted in the trap and rejection metrics. Anything but `ok` is logged.
async fn run_event<T: Send + 'static>(
    app: &Invoker<T>,
    trigger: &WebsocketTriggerPre<T>,
    event: Event,
) -> Outcome {
    let what = event.name();
    let trigger = trigger.clone();
    let outcome = app
        .run(Instant::now(), app.request_timeout(), move |store| {
            Box::pin(async move {
                let instance = trigger.instantiate_async(&mut *store).await?;
                let handler = instance.alorig_host_websocket_handler();
                match event {
                    Event::Open(request) => handler.call_on_open(&mut *store, &request).await,
                    Event::Message(id, message) => {
                        handler.call_on_message(&mut *store, &id, &message).await
                    }
                    Event::Close(id, code) => {
                        handler.call_on_close(&mut *store, &id, code).await.map(Ok)
                    }
                }
            })
        })
        .await;
    match &outcome {
        Outcome::Ok => {}
        // The app's own answer (a refused connection, a message it did not take).
        Outcome::Error(_) => tracing::info!(app = %app.name(), "{what}: {}", outcome.describe()),
        _ => crate::traplog::warn(
            app.name(),
            format_args!(
                "{what} instance ended ({}, fault {}): {}",
                outcome.label(),
                outcome.fault(),
                outcome.describe()
            ),
        ),
    }
    outcome
}

/// Why a connection was not opened.
#[derive(Debug)]
pub enum Refused {
    /// The app is at its `[websocket] max_connections`: on this host, or
    /// (`max_connections_per = "cluster"`) on all hosts together.
    MaxConnections,
    /// `on-open` did not say yes: how it ended (an `error` is the app's refusal).
    Open(Outcome),
}

/// The handshake a client asked for, as `on-open` sees it.
pub struct Handshake {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A connection the app accepted, waiting for the HTTP upgrade to complete.
pub struct Opened<T: 'static> {
    app: Invoker<T>,
    trigger: WebsocketTriggerPre<T>,
    ws: Arc<WebSocketApp>,
    conn: Arc<Conn>,
    seq: u64,
    id: String,
    queue: mpsc::Receiver<Outgoing>,
}

impl<T: Send + 'static> Opened<T> {
    /// Serves the connection in a task of its own once hyper hands it over.
    pub fn serve(self, upgrade: hyper::upgrade::OnUpgrade) {
        let Opened {
            app,
            trigger,
            ws,
            conn,
            seq,
            id,
            queue,
        } = self;
        tokio::spawn(connection::serve(
            app, trigger, ws, conn, seq, id, queue, upgrade,
        ));
    }
}

/// Registers a connection and asks the app's `on-open` about it. Like an HTTP
/// request, a connection is not kept waiting for a permit: at `max_concurrency`
/// it is refused at once.
pub async fn open<T: Send + 'static>(
    app: Invoker<T>,
    trigger: WebsocketTriggerPre<T>,
    ws: Arc<WebSocketApp>,
    handshake: Handshake,
) -> Result<Opened<T>, Refused> {
    let max = i64::from(ws.limits.max_connections.get());
    // The gauge is the app's count on this host, across its versions.
    if ws.metrics.connections.inc() >= max {
        ws.metrics.connections.dec();
        ws.metrics.dropped(WsDropReason::MaxConnections);
        return Err(Refused::MaxConnections);
    }
    ws.hub.ready().await;
    let (id, seq, conn, queue) = ws.hub.open(
        ws.name.clone(),
        ws.metrics.clone(),
        ws.limits.send_queue.get() as usize,
        ws.budget.clone(),
    );
    if ws.limits.max_connections_per == manifest::LimitScope::Cluster
        && !ws
            .hub
            .lease(&ws.name, seq, ws.limits.max_connections.get())
            .await
    {
        ws.hub.remove(seq).await;
        ws.metrics.connections.dec();
        ws.metrics.dropped(WsDropReason::MaxConnections);
        return Err(Refused::MaxConnections);
    }
    let request = OpenRequest {
        connection: id.clone(),
        path: handshake.path,
        query: handshake.query,
        headers: handshake.headers,
    };
    let outcome = if app.has_capacity() {
        run_event(&app, &trigger, Event::Open(request)).await
    } else {
        let outcome = Outcome::Rejected(RejectReason::Concurrency);
        outcome.record(app.metrics());
        outcome
    };
    match outcome {
        Outcome::Ok => Ok(Opened {
            app,
            trigger,
            ws,
            conn,
            seq,
            id,
            queue,
        }),
        other => {
            ws.hub.remove(seq).await;
            ws.metrics.connections.dec();
            Err(Refused::Open(other))
        }
    }
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
            assert!(
                matches!(check_group(bad), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(check_close(1000, "bye").is_ok() && check_close(4000, "").is_ok());
        for bad in [0, 999, 1005, 1006, 1015, 2000, 5000] {
            assert!(check_close(bad, "").is_err(), "{bad}");
        }
        assert!(check_close(1000, &"x".repeat(124)).is_err());
    }

    /// The guest's calls, straight on the `Host` trait (no wasm): limits and
    /// names are checked before the hub is reached, an unknown id is `closed`.
    #[tokio::test]
    async fn host_calls_check_their_arguments_and_answer_closed_for_unknown_connections() {
        use wit::Host as _;
        let metrics = crate::metrics::Metrics::new();
        let manifest = crate::config::Manifest::parse(
            std::path::Path::new("a.toml"),
            "name = \"a\"\ncomponent = \"a.wasm\"\n[websocket]\nmax_message = \"1KiB\"\n",
        )
        .unwrap();
        let budget = Arc::new(MemoryBudget::new(
            1 << 20,
            prometheus_client::metrics::gauge::Gauge::default(),
            prometheus_client::metrics::gauge::Gauge::default(),
        ));
        let app = Arc::new(WebSocketApp::new(
            "a".into(),
            manifest.websocket.clone(),
            metrics.websocket("a"),
            Hub::new(),
            budget.clone(),
        ));
        let ctx = WebSocketCtx::new(app.clone());
        let mut view = ctx.view();
        let big = Message::Text("x".repeat(1025));
        assert!(matches!(
            view.send("nobody-1".into(), big).await.unwrap(),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            view.send("nobody-1".into(), Message::Text("hi".into()))
                .await
                .unwrap(),
            Err(Error::Closed)
        ));
        assert!(matches!(
            view.close("nobody-1".into(), 999, String::new())
                .await
                .unwrap(),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            view.join("nobody-1".into(), "bad group".into())
                .await
                .unwrap(),
            Err(Error::Invalid(_))
        ));
        // A connection of this host, of this app: messages reach its queue.
        let (id, _seq, _conn, mut queue) =
            app.hub
                .open("a".into(), metrics.websocket("a"), 4, budget.clone());
        assert!(
            view.send(id.clone(), Message::Text("hi".into()))
                .await
                .unwrap()
                .is_ok()
        );
        assert!(matches!(
            queue.recv().await,
            Some(hub::Outgoing::Message(..))
        ));
        // Another app's connection is as unknown as a closed one.
        let other = Arc::new(WebSocketApp::new(
            "b".into(),
            manifest.websocket.clone(),
            metrics.websocket("b"),
            app.hub.clone(),
            budget.clone(),
        ));
        let other_ctx = WebSocketCtx::new(other);
        assert!(matches!(
            other_ctx
                .view()
                .send(id, Message::Text("hi".into()))
                .await
                .unwrap(),
            Err(Error::Closed)
        ));
    }
}
