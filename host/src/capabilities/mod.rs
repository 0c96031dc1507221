//! Host capabilities: everything a guest can reach, each bound to its app.
//!
//! A leaf layer: a capability imports only `config/`, `fault`, `limits`,
//! `metrics`, `trigger` and other capabilities (checked by
//! `host/tests/layers.rs`). It never names the store's state or the app: its
//! `add_to_linker` takes a projection from any store state to its view
//! (wasmtime-wasi-config's shape), and its trigger half runs the app's exports
//! through a [`crate::trigger::Invoker`].
//!
//! Adding a capability touches exactly these files:
//! 1. `wit/<cap>.wit` and one `import` line in the `alorig:host/app` world;
//! 2. `host/src/capabilities/<cap>.rs` (split into `<cap>/*.rs` past ~600 lines):
//!    the per-app state (`<Cap>App`) with `load(&LoadContext) -> Result<_, LoadError>`
//!    (its manifest checks, saying whose fault a failure is), its `grants`
//!    for the deploy diff when it reaches outside the sandbox, the per-instance
//!    state (`<Cap>Ctx`) with `view()`, the generated `Host` trait implemented on
//!    the view, and `add_to_linker(linker, projection)`;
//! 3. this file: one `pub mod` line and one line in [`AppCapabilities`] and its
//!    `load`; in `load.rs` one row in `SECTIONS` if importing it needs a
//!    manifest section, and one line in `grants` if it grants reach;
//! 4. `host/src/state.rs`: one typed field in `InstanceState`, built in
//!    `InstanceState::new`, and one `add_to_linker` line with its projection;
//! 5. its manifest section: a type in `config/manifest/sections.rs`, its
//!    `*Toml` (and a field in `ManifestToml`) in `config/manifest/raw.rs`, its
//!    checks as one function in `config/manifest/validate.rs`, and a field in
//!    `Manifest` plus one line in `Manifest::parse` in `config/manifest.rs`;
//! 6. its metric family, if any: a handle struct and its `Metrics::<cap>`
//!    resolver in `metrics/handles.rs`, the family's registration in
//!    `metrics.rs`, and label enums for its reasons in `metrics/labels.rs`;
//! 7. host-wide state, if any (a connection to a service): a field in
//!    `runtime.rs` set from `config/host.rs`, and a field in [`LoadContext`];
//! 8. a guest `components/test-<cap>-*` and its end-to-end module in
//!    `tests/e2e/<cap>.rs` (listed in `tests/e2e/main.rs`).
//!
//! A capability over a standard WASI interface (files: `wasi:filesystem`) has
//! no WIT of its own (step 1) and shadows wasmtime-wasi's linking of that
//! interface in its `add_to_linker`.
//!
//! Today: WASI (clocks, random, stdio as logs, env from the manifest; no
//! sockets), `[files]` (a private directory as `/data` with a quota), `wasi:http` (incoming requests; outbound only to the manifest's
//! allow-list), `alorig:host/postgres` (the app's own database, for apps with
//! `[postgres]`), `alorig:host/redis` (the app's own Redis db and key prefix),
//! `alorig:host/timers` (manifest timers and durable one-shot jobs) and
//! `alorig:host/websocket` (connections held by the host, groups across hosts).

pub mod files;
pub mod outbound_http;
pub mod postgres;
pub mod redis;
mod redis_guard;
pub mod timers;
pub mod wasi;
pub mod websocket;

mod load;

pub use load::{Grant, LoadContext, LoadError, check_sections, grants};
use std::sync::Arc;

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
    /// The app's directory and quota, when its manifest has `[files]`.
    pub files: Option<Arc<files::FilesApp>>,
}

impl AppCapabilities {
    /// Builds every capability of one app version: one line per capability,
    /// each checking its own manifest section against the component and saying
    /// whose fault a failure is ([`LoadError`]).
    pub async fn load(ctx: &LoadContext<'_>) -> Result<Self, LoadError> {
        Ok(Self {
            wasi: wasi::WasiApp::load(ctx),
            outbound: Arc::new(outbound_http::OutboundApp::load(ctx)),
            postgres: postgres::PostgresApp::load(ctx).await?,
            redis: redis::RedisApp::load(ctx)?.map(Arc::new),
            timers: Arc::new(timers::TimersApp::load(ctx)?),
            websocket: Arc::new(websocket::WebSocketApp::load(ctx)),
            files: files::FilesApp::load(ctx).await?.map(Arc::new),
        })
    }
}
