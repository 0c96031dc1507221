//! Outbound `wasi:http` for guests. Default deny: a guest may build requests, but
//! sending one fails with `HTTP-request-denied` (and a log line for the operator)
//! unless the destination is in the app's `[outbound_http] allowed_hosts`.
//! Until allow-listed sending lands, every destination is refused.

use std::sync::Arc;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

/// The per-instance `wasi:http` hooks.
pub struct OutboundHttp {
    app: Arc<str>,
}

impl OutboundHttp {
    pub fn new(app: Arc<str>) -> Self {
        Self { app }
    }
}

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        tracing::warn!(app = %self.app, destination = %request.uri().authority().map(|a| a.as_str()).unwrap_or(""),
            "outbound HTTP refused: destination not in [outbound_http] allowed_hosts");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
