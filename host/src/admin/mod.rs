//! The admin listener (loopback by default): `/healthz` and `/metrics` need no
//! token; the deploy API under `/v1` arrives with deploys.

use crate::{ingress::invoke::{Response, plain}, metrics::Metrics};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;

pub struct Admin {
    pub metrics: Arc<Metrics>,
}

impl Admin {
    async fn handle(&self, req: hyper::Request<Incoming>) -> Response {
        match (req.method(), req.uri().path()) {
            (&http::Method::GET, "/healthz") => plain(200, "ok\n"),
            (&http::Method::GET, "/metrics") => hyper::Response::builder()
                .header(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")
                .body(Full::new(Bytes::from(self.metrics.encode())).map_err(|never| match never {}).boxed_unsync())
                .expect("static response parts are valid"),
            _ => plain(404, "not found\n"),
        }
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}
