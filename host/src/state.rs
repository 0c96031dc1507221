//! The state of one instance's `Store`: a hand-written struct with one typed
//! field per capability (no type-erased map), plus the memory limiter.

use crate::{
    capabilities::{
        AppCapabilities,
        files::{self, FilesCtx, FilesView},
        outbound_http::OutboundHttp,
        postgres::{self, PostgresCtx},
        redis::{self, RedisCtx},
        timers::{self, TimersCtx},
        websocket::{self, WebSocketCtx},
    },
    limits::InstanceLimiter,
};
use prometheus_client::metrics::gauge::Gauge;
use std::time::Instant;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub struct InstanceState {
    /// When the current request must end; read by the epoch callback, and
    /// moved forward each time a reused instance takes a new request.
    pub deadline: Instant,
    pub limiter: InstanceLimiter,
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub outbound_http: OutboundHttp,
    pub postgres: PostgresCtx,
    pub redis: RedisCtx,
    pub timers: TimersCtx,
    pub websocket: WebSocketCtx,
    pub files: FilesCtx,
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
    pub fn new(
        limiter: InstanceLimiter,
        capabilities: &AppCapabilities,
        instances: &Gauge,
        deadline: Instant,
    ) -> Self {
        instances.inc();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            deadline,
            limiter,
            table,
            wasi: capabilities.wasi.ctx(capabilities.files.as_deref()),
            http: WasiHttpCtx::new(),
            outbound_http: OutboundHttp::new(capabilities.outbound.clone()),
            postgres: PostgresCtx::new(capabilities.postgres.clone()),
            redis: RedisCtx::new(capabilities.redis.as_ref()),
            timers: TimersCtx::new(capabilities.timers.clone()),
            websocket: WebSocketCtx::new(capabilities.websocket.clone()),
            files: FilesCtx::new(capabilities.files.as_ref()),
            _live: LiveInstance(instances.clone()),
        }
    }
}

/// Links every capability the host offers, each with its projection from the
/// store's state (wasmtime-wasi-config's shape: the capability never names
/// this struct). Components whose imports are not all satisfied here are
/// refused at validation, before they can serve.
pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    postgres::add_to_linker(linker, |state| {
        let headroom = state.limiter.headroom();
        state.postgres.view(&mut state.table, headroom)
    })?;
    redis::add_to_linker(linker, |state| state.redis.view())?;
    timers::add_to_linker(linker, |state| state.timers.view())?;
    websocket::add_to_linker(linker, |state| state.websocket.view())?;
    files::add_to_linker(linker, |state| {
        FilesView::new(state.wasi.filesystem(), &mut state.table, &state.files)
    })?;
    Ok(())
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound_http,
        }
    }
}
