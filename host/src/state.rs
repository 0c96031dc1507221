//! The state of one instance's `Store`: a hand-written struct with one typed
//! field per capability (no type-erased map), plus the memory limiter.

use crate::{capabilities::{outbound_http::OutboundHttp, redis::{RedisApp, RedisCtx}, wasi::WasiApp}, limits::InstanceLimiter};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub struct InstanceState {
    pub limiter: InstanceLimiter,
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub outbound_http: OutboundHttp,
    pub redis: RedisCtx,
    _live: LiveInstance,
}

/// Counts the instance in `alorig_app_instances` for exactly as long as it lives.
struct LiveInstance(Gauge);

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Largest number of resources (streams, fields, …) one instance may hold open.
const MAX_RESOURCES: usize = 10_000;

impl InstanceState {
    pub fn new(app: &Arc<str>, limiter: InstanceLimiter, wasi: &WasiApp, redis: Option<&Arc<RedisApp>>, instances: &Gauge) -> Self {
        instances.inc();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            limiter,
            table,
            wasi: wasi.ctx(),
            http: WasiHttpCtx::new(),
            outbound_http: OutboundHttp::new(app.clone()),
            redis: RedisCtx::new(redis),
            _live: LiveInstance(instances.clone()),
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound_http }
    }
}
