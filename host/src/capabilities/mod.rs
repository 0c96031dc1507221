//! Host capabilities: everything a guest can reach, each bound to its app.
//!
//! One module per capability. Adding a capability touches this short list:
//! 1. `wit/<cap>.wit` and one `import` line in the `alorig:host/app` world;
//! 2. `host/src/capabilities/<cap>.rs`: the per-app state built at load (`<Cap>App`),
//!    the per-instance state kept in the store (`<Cap>Ctx`), the generated `Host`
//!    trait implemented on a borrowed view, and `add_to_linker`;
//! 3. one line below, and one call in [`add_to_linker`];
//! 4. one field in [`AppCapabilities`] and one typed field in
//!    [`crate::state::InstanceState`];
//! 5. its manifest section in `config/manifest.rs`;
//! 6. a guest `components/test-<cap>-*` and its end-to-end test in `tests/`.
//!
//! Today: WASI (clocks, random, stdio as logs, env from the manifest; no files,
//! no sockets), `wasi:http` (incoming requests; outbound only to the manifest's
//! allow-list), `alorig:host/postgres` (the app's own database, for apps with
//! `[postgres]`), `alorig:host/redis` (the app's own Redis db and key prefix),
//! `alorig:host/timers` (manifest timers and durable one-shot jobs) and
//! `alorig:host/websocket` (connections held by the host, groups across hosts).

pub mod outbound_http;
pub mod postgres;
pub mod redis;
mod redis_guard;
pub mod timers;
pub mod wasi;
pub mod websocket;

use crate::state::InstanceState;
use std::sync::Arc;
use wasmtime::component::Linker;

/// Per-app capability state, built once when the app is loaded; every instance
/// of the app takes its per-instance state from here.
pub struct AppCapabilities {
    pub wasi: wasi::WasiApp,
    pub outbound: Arc<outbound_http::OutboundApp>,
    /// The app's database pool, when its manifest has `[postgres]`.
    pub postgres: Option<Arc<postgres::PostgresApp>>,
    /// The app's Redis db and prefix, when its manifest has `[redis]`.
    pub redis: Option<Arc<redis::RedisApp>>,
    /// The app's timers, its job handler and its side of the job store.
    pub timers: Arc<timers::TimersApp>,
    /// The app's WebSocket limits and the host's connections and groups.
    pub websocket: Arc<websocket::WebSocketApp>,
}

/// Links every capability the host offers. Components whose imports are not all
/// satisfied here are refused at validation, before they can serve.
pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    postgres::add_to_linker(linker)?;
    redis::add_to_linker(linker)?;
    timers::add_to_linker(linker)?;
    websocket::add_to_linker(linker)?;
    Ok(())
}
