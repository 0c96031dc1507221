//! The ingress listener: HTTP/1.1 from Caddy (or a developer's curl), routed to
//! apps by host and path, each request run in a fresh instance.
//!
//! hyper is given a timer so `header_read_timeout` is live: a client that sends
//! nothing, or dribbles its headers, is cut off instead of holding a connection.

pub mod body;
pub mod invoke;
pub mod router;

use crate::app::App;
use arc_swap::ArcSwap;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use router::Router;
use std::{sync::Arc, time::{Duration, Instant}};
use tokio::net::TcpListener;

/// Request line and headers together; past this a client gets 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;

pub struct Ingress {
    router: ArcSwap<Router>,
    header_read_timeout: Duration,
}

impl Ingress {
    pub fn new(router: Router, header_read_timeout: Duration) -> Self {
        Self { router: ArcSwap::from_pointee(router), header_read_timeout }
    }

    /// The routing table now in force.
    pub fn router(&self) -> Arc<Router> {
        self.router.load_full()
    }

    /// Swaps the routing table: new requests use it, in-flight ones finish on the
    /// apps they started with.
    pub fn set_router(&self, router: Router) {
        self.router.store(Arc::new(router));
    }

    pub async fn handle(&self, req: hyper::Request<Incoming>) -> invoke::Response {
        let started = Instant::now();
        let app: Option<Arc<App>> = {
            let router = self.router.load();
            router::request_host(&req).and_then(|host| router.route(&host, req.uri().path()).cloned())
        };
        match app {
            Some(app) => invoke::invoke(&app, req, started).await,
            None => invoke::plain(404, "no app serves this host and path\n"),
        }
    }

    /// Accepts connections until `shutdown` resolves, then lets open connections
    /// finish their in-flight requests (for at most `drain`).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>, drain: Duration) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, _peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("ingress accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let ingress = self.clone();
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_read_timeout)
                .max_header_size(MAX_HEADER_BYTES)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| {
                        let ingress = ingress.clone();
                        async move { Ok::<_, std::convert::Infallible>(ingress.handle(req).await) }
                    }),
                );
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!("ingress connection ended: {err}");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
            tracing::warn!("connections still open after {drain:?}; closing them");
        }
    }
}
