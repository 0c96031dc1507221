//! alorig-host runs many web apps as sandboxed WebAssembly components in one
//! process, each with a hard memory budget and only the capabilities its
//! manifest grants.
//!
//! ```text
//!  config ──> Runtime (engine · linker of capabilities · compile cache · metrics)
//!                │
//!  manifests ──> App (manifest · pre-linked component · memory budget · limits)
//!                │
//!  ingress ──> Router (host + longest path) ──> invoke: fresh (or reused) Store per request
//!                                                 │  InstanceLimiter charges the app's budget
//!                                                 │  epoch deadline + wall-clock timeout
//!                                                 └─ capabilities (AppCapabilities → InstanceState):
//!                                                    wasi · outbound_http · postgres · redis · timers · websocket
//!  triggers ──> Redis messages, timer firings, jobs ──> trigger::Invoker::run: a fresh Store,
//!               same limits (timers/jobs claimed in the host's PostgreSQL schema: one host runs each)
//!  websocket = true routes ──> ingress::websocket::upgrade (HTTP) ──> capabilities::websocket:
//!                              the host holds the socket, each event runs like a request
//!
//!  Layers (each imports only those below it; `host/tests/layers.rs` checks it):
//!  config · fault · limits · metrics → trigger → capabilities → state → validate · runtime
//!  → app → ingress → deploy → admin → serve → main
//!  admin ──> /healthz, /metrics, dashboard, /v1 deploy API ──> deploy::Apps
//!              (validate → compile → store version → swap the Router atomically)
//! ```

pub mod admin;
pub mod app;
pub mod backup;
pub mod caddyfile;
pub mod capabilities;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod fault;
pub mod ingress;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod runtime;
pub mod serve;
pub mod state;
pub mod systemd;
pub mod template;
pub mod traplog;
pub mod trigger;
pub mod validate;
