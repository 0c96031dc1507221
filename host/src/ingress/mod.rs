//! The ingress listener: HTTP/1.1 from Caddy (or a developer's curl), routed to
//! apps by host and path, each request run in a fresh instance.
//!
//! hyper is given a timer so `header_read_timeout` is live: a client that sends
//! nothing, or dribbles its headers, is cut off instead of holding a connection.

pub mod body;
pub mod domains;
pub mod forwarded;
pub mod invoke;
pub mod router;
pub mod strict;
pub mod websocket;
pub mod write_timeout;

use crate::{app::App, capabilities::websocket::hub::Hub, limits::cpu::ConnectionCpu};
use arc_swap::ArcSwap;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use router::Router;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::net::TcpListener;

/// The host config's default `write_timeout`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// At a shutdown, how long a connection that has not sent a request yet is
/// kept open for its first one.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// While the host is still loading its apps, how long a request for a host and
/// path no loaded app serves waits for one that does (a Python app compiles for
/// 7–12 s the first time) before it gets 503 with `Retry-After`.
pub const STARTING_WAIT: Duration = Duration::from_secs(60);

pub struct Ingress {
    router: ArcSwap<Router>,
    header_read_timeout: Duration,
    /// A connection whose client reads nothing for this long is dropped.
    write_timeout: Duration,
    /// The host's WebSocket connections, closed (1001) when the ingress stops.
    websockets: Arc<Hub>,
    /// Tenant domains of apps with `[custom_domains]`, as their apps answer.
    pub custom_domains: domains::CustomDomains,
    /// Peers whose `X-Forwarded-For` is believed (see [`forwarded`]); set once at start.
    trusted_proxies: std::sync::OnceLock<Vec<ipnet::IpNet>>,
    /// True while the host is loading the apps it starts with; every routing
    /// table change is sent, so a request for an app still loading waits for it
    /// (the ingress listens from the start: loaded apps serve meanwhile).
    loading: tokio::sync::watch::Sender<bool>,
}

impl Ingress {
    pub fn new(router: Router, header_read_timeout: Duration, websockets: Arc<Hub>) -> Self {
        Self {
            router: ArcSwap::from_pointee(router),
            header_read_timeout,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            websockets,
            custom_domains: Default::default(),
            trusted_proxies: Default::default(),
            loading: tokio::sync::watch::Sender::new(true),
        }
    }

    /// Sets the host config's `write_timeout`.
    pub fn with_write_timeout(mut self, write_timeout: Duration) -> Self {
        self.write_timeout = write_timeout;
        self
    }

    /// The peers (Caddy) whose `X-Forwarded-For`/`-Proto` the ingress believes.
    pub fn set_trusted_proxies(&self, trusted: Vec<ipnet::IpNet>) {
        let _ = self.trusted_proxies.set(trusted);
    }

    /// The routing table now in force.
    pub fn router(&self) -> Arc<Router> {
        self.router.load_full()
    }

    /// Swaps the routing table: new requests use it, in-flight ones finish on the
    /// apps they started with.
    pub fn set_router(&self, router: Router) {
        self.router.store(Arc::new(router));
        self.loading.send_modify(|_| {});
    }

    /// The host has loaded (or left out) every app it starts with: a request
    /// no app serves is answered 404 from now on, without waiting.
    pub fn finish_loading(&self) {
        self.loading.send_replace(false);
    }

    /// The app for `host` and `path` (and whether the route is a WebSocket
    /// one); while the host is loading its apps, waits for one to serve them.
    async fn route(
        &self,
        host: &str,
        path: &str,
        started: &mut Instant,
    ) -> Result<Option<(Arc<App>, bool)>, ()> {
        let found = || {
            self.router
                .load()
                .route_kind(host, path)
                .map(|(app, ws)| (app.clone(), ws))
        };
        if let Some(found) = found() {
            return Ok(Some(found));
        }
        let mut changes = self.loading.subscribe();
        let until = tokio::time::Instant::from_std(*started + STARTING_WAIT);
        // Marks the value seen before routing again: a change after this wakes us.
        while *changes.borrow_and_update() {
            if let Some(found) = found() {
                // Its app's request deadline counts from now, not from the wait.
                *started = Instant::now();
                return Ok(Some(found));
            }
            if tokio::time::timeout_at(until, changes.changed())
                .await
                .is_err()
            {
                return Err(());
            }
        }
        Ok(found())
    }

    /// Routes and answers one request; the connection's own work is charged to
    /// the app it goes to (`cpu`).
    pub async fn handle(
        &self,
        req: hyper::Request<Incoming>,
        cpu: &ConnectionCpu,
    ) -> invoke::Response {
        let mut started = Instant::now();
        let host = match strict::check(&req) {
            Ok(host) => host,
            Err(refused) => return refused,
        };
        let Ok(mut app) = self.route(&host, req.uri().path(), &mut started).await else {
            return invoke::overloaded("the host is still loading its apps, retry shortly\n");
        };
        if app.is_none() {
            let router = self.router.load_full();
            app = self
                .custom_domains
                .owner(&router, &host)
                .await
                .map(|app| (app, false));
        }
        if let Some((app, _)) = &app {
            cpu.charge_to(&app.cpu);
        }
        match app {
            Some((app, true)) => websocket::upgrade(&app, req, started).await,
            Some((app, false)) => invoke::invoke(&app, req, started).await,
            None => invoke::plain(404, "no app serves this host and path\n"),
        }
    }

    /// Accepts connections until `shutdown` resolves, then lets open connections
    /// finish their in-flight requests (for at most `drain`). Connections that
    /// became WebSockets are no longer hyper's: they are asked to close (1001).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) {
        // hyper-util's GracefulShutdown does not take connections with upgrades:
        // each connection holds a receiver, and shutdown waits for them all to go.
        let (stopping, watch) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(fault = "host", "ingress accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let ingress = self.clone();
            let mut stop = watch.clone();
            let cpu = ConnectionCpu::default();
            let charged = cpu.clone();
            let first_request = Arc::new(tokio::sync::Notify::new());
            let requested = first_request.clone();
            let connection =
                http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(self.header_read_timeout)
                    .max_header_size(strict::MAX_HEAD_BYTES)
                    .serve_connection(
                        TokioIo::new(write_timeout::WriteTimeout::new(stream, self.write_timeout)),
                        service_fn(move |mut req: hyper::Request<Incoming>| {
                            requested.notify_one();
                            let ingress = ingress.clone();
                            let cpu = cpu.clone();
                            let trusted = ingress
                                .trusted_proxies
                                .get()
                                .map(Vec::as_slice)
                                .unwrap_or_default();
                            forwarded::apply(req.headers_mut(), peer.ip(), trusted);
                            async move {
                                Ok::<_, std::convert::Infallible>(ingress.handle(req, &cpu).await)
                            }
                        }),
                    )
                    .with_upgrades();
            tokio::spawn(charged.measure(async move {
                tokio::pin!(connection);
                let ended = tokio::select! {
                    ended = connection.as_mut() => ended,
                    () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
                        // A connection accepted just before the stop may not have
                        // sent its first request yet: closing it now would fail
                        // that request, which a client only retries on a reused
                        // connection. It gets a moment to arrive (as Go's server does).
                        let arrived = async {
                            let _ = tokio::time::timeout(FIRST_REQUEST_GRACE, first_request.notified()).await;
                        };
                        tokio::select! {
                            ended = connection.as_mut() => ended,
                            () = arrived => {
                                connection.as_mut().graceful_shutdown();
                                connection.await
                            }
                        }
                    }
                };
                if let Err(err) = ended {
                    tracing::debug!("ingress connection ended: {err}");
                }
            }));
        }
        drop(listener);
        drop(watch);
        let _ = stopping.send(true);
        self.websockets
            .close_all(None, 1001, "the host is shutting down");
        if tokio::time::timeout(drain, stopping.closed())
            .await
            .is_err()
        {
            tracing::warn!(
                fault = "guest",
                "connections still open after {drain:?}; closing them"
            );
        }
    }
}
