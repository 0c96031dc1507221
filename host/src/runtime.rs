//! What every app shares: the engine, the linker of host capabilities, the
//! compile cache and the metrics registry.

use crate::{
    capabilities::{
        self, files::FilesHost, postgres::PostgresHost, redis::RedisHost, timers::TimersHost,
    },
    engine::{self, CompileCache},
    limits::cpu::GuestPool,
    metrics::Metrics,
    state::{self, InstanceState},
};
use anyhow::Result;
use std::{path::Path, sync::Arc};
use wasmtime::{Engine, component::Linker};

pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<InstanceState>,
    pub cache: CompileCache,
    pub metrics: Arc<Metrics>,
    /// The cluster behind `postgres_url`, when the host has one.
    pub postgres: Option<Arc<PostgresHost>>,
    /// `validate`: check everything that needs no outside service (no database
    /// is created or reached).
    pub offline: bool,
    /// The operator's Redis; set from the host config before apps load.
    pub redis: RedisHost,
    /// Timers and the job store (durable with `postgres_url`).
    pub timers: Arc<TimersHost>,
    /// The host's WebSocket connections and groups (all apps).
    pub websocket: Arc<capabilities::websocket::hub::Hub>,
    /// The apps' `[files]` directories under the data dir, and their usage.
    pub files: FilesHost,
    /// Where guests that compute run, sharing the cores fairly between apps.
    pub guest_pool: Arc<GuestPool>,
}

impl Runtime {
    pub fn new(data_dir: &Path, max_instances: u32) -> Result<Self> {
        let engine = engine::build_engine(max_instances)?;
        let mut linker = Linker::new(&engine);
        state::add_to_linker(&mut linker)?;
        Ok(Self {
            engine,
            linker,
            cache: CompileCache::new(data_dir),
            metrics: Arc::new(Metrics::new()),
            postgres: None,
            offline: false,
            redis: RedisHost::default(),
            timers: Arc::new(TimersHost::new(None)?),
            websocket: capabilities::websocket::hub::Hub::new(),
            files: FilesHost::new(data_dir),
            guest_pool: GuestPool::new(),
        })
    }

    /// Starts the epoch ticker; call once when the runtime will serve.
    pub fn start(&self) {
        engine::start_epoch_ticker(&self.engine);
    }
}
