//! A loaded app: its validated manifest, its pre-linked component, and the
//! per-app state every one of its instances shares (memory budget, concurrency
//! limit, metric handles). Instances are created per request from here.

use crate::{
    capabilities::{redis::{self, RedisApp}, wasi::WasiApp},
    config::Manifest,
    limits::{InstanceLimiter, MemoryBudget, Refusal},
    metrics::AppMetrics,
    runtime::Runtime,
    state::InstanceState,
    validate,
};
use anyhow::{Context as _, Result, bail};
use std::{sync::Arc, time::Instant};
use tokio::sync::Semaphore;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub struct App {
    pub name: Arc<str>,
    pub manifest: Manifest,
    /// SHA-256 of the component bytes.
    pub digest: String,
    /// Whether the compiled component came from the cache.
    pub compiled_from_cache: bool,
    pub pre: ProxyPre<InstanceState>,
    pub budget: Arc<MemoryBudget>,
    /// One permit per live instance (`max_concurrency`).
    pub concurrency: Arc<Semaphore>,
    pub metrics: AppMetrics,
    /// Memory one instance holds right after instantiation, measured at load.
    pub startup_memory: u64,
    wasi: WasiApp,
    /// The app's Redis, when its manifest has `[redis]`.
    pub redis: Option<Arc<RedisApp>>,
    /// The exported Redis message handler, when `[redis] channels` is set.
    pub redis_trigger: Option<redis::trigger::RedisTriggerPre<InstanceState>>,
}

impl App {
    /// Validates and compiles the manifest's component, resolves its secrets and
    /// checks that one instance can start within the app's limits.
    pub async fn load(runtime: &Runtime, manifest: Manifest) -> Result<App> {
        let path = manifest.component.clone();
        let bytes = std::fs::read(&path).with_context(|| {
            format!("{}: component: cannot read {}", manifest.source.display(), path.display())
        })?;
        validate::check_bytes(&path, &bytes)?;
        let compiled = runtime
            .cache
            .load(&runtime.engine, Arc::new(bytes))
            .await
            .with_context(|| path.display().to_string())?;
        let pre = validate::check_linkable(&path, &runtime.linker, &compiled.component)?;

        let mut env: Vec<(String, String)> = manifest.env.clone().into_iter().collect();
        for (name, source) in &manifest.secrets {
            let value = std::env::var(&source.env).map_err(|_| {
                anyhow::anyhow!(
                    "{}: secrets.{name}: host environment variable {} is not set",
                    manifest.source.display(),
                    source.env
                )
            })?;
            env.push((name.clone(), value));
        }

        let name: Arc<str> = manifest.name.as_str().into();
        let source = manifest.source.display().to_string();
        let imports_redis = compiled
            .component
            .component_type()
            .imports(&runtime.engine)
            .any(|(import, _)| import == redis::INTERFACE || import.starts_with("alorig:host/redis@"));
        let redis = match &manifest.redis {
            Some(config) => {
                let metrics = runtime.metrics.redis(&name);
                let app = RedisApp::new(&runtime.redis, &name, config, metrics).map_err(|e| anyhow::anyhow!("{source}: [redis]: {e}"))?;
                Some(Arc::new(app))
            }
            None if imports_redis => bail!("{source}: the component imports alorig:host/redis but the manifest has no [redis] section (db and prefix)"),
            None => None,
        };
        let redis_trigger = match manifest.redis.as_ref().filter(|r| !r.channels.is_empty()) {
            Some(_) => Some(redis::trigger::RedisTriggerPre::new(pre.instance_pre().clone()).map_err(|_| {
                anyhow::anyhow!("{source}: [redis] channels is set but the component does not export alorig:host/redis-handler (on-message)")
            })?),
            None => None,
        };
        let metrics = runtime.metrics.app(&name);
        let limit = manifest.resources.memory.bytes();
        metrics.memory_limit.set(limit as i64);
        let budget = Arc::new(MemoryBudget::new(limit, metrics.memory.clone(), metrics.memory_peak.clone()));
        let mut app = App {
            concurrency: Arc::new(Semaphore::new(manifest.resources.max_concurrency.get() as usize)),
            wasi: WasiApp::new(&name, env),
            name,
            digest: compiled.digest,
            compiled_from_cache: compiled.cached,
            pre,
            budget,
            metrics,
            startup_memory: 0,
            manifest,
            redis,
            redis_trigger,
        };
        app.startup_memory = app.probe().await?;
        Ok(app)
    }

    /// A fresh store for one instance, with the app's limiter and deadline.
    pub fn new_store(&self, started: Instant) -> Store<InstanceState> {
        let resources = &self.manifest.resources;
        let limiter = InstanceLimiter::new(self.budget.clone(), resources.instance_memory.bytes());
        let state = InstanceState::new(&self.name, limiter, &self.wasi, self.redis.as_ref(), &self.metrics.instances);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // Every epoch tick a computing guest yields to the scheduler, so it never
        // holds a worker thread; once its deadline has passed it is interrupted.
        // tokio's `yield_now` (not wasmtime's plain `Yield`, which re-queues the
        // task first in line) lets the I/O driver and other requests run first.
        let deadline = started + resources.request_timeout;
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
            }
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Instantiates once without calling the handler: proves that an instance
    /// starts within `instance_memory`, and measures what it takes.
    async fn probe(&self) -> Result<u64> {
        let mut store = self.new_store(Instant::now());
        let result = self.pre.instantiate_async(&mut store).await;
        let used = store.data().limiter.charged();
        let refusal = store.data().limiter.refusal();
        let source = self.manifest.source.display();
        match (result, refusal) {
            (Ok(_), _) => Ok(used),
            (Err(_), Some(Refusal::InstanceCeiling)) => bail!(
                "{source}: resources.instance_memory: {} is too small for one instance of this component to start",
                self.manifest.resources.instance_memory
            ),
            (Err(_), Some(Refusal::AppBudget)) => bail!(
                "{source}: resources.memory: {} is too small for one instance of this component to start",
                self.manifest.resources.memory
            ),
            (Err(err), None) => Err(anyhow::Error::from(err)).with_context(|| format!("{source}: the component fails to start")),
        }
    }
}
