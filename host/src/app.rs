//! A loaded app: its validated manifest, its pre-linked component, and the
//! per-app state every one of its instances shares (memory budget, concurrency
//! limit, metric handles). Instances are created per request from here.

use crate::{
    capabilities::{self, AppCapabilities, LoadContext, LoadError, redis, timers, websocket},
    config::Manifest,
    limits::{
        InstanceLimiter, MemoryBudget, Refusal,
        cpu::{self, AppCpu},
    },
    metrics::AppMetrics,
    runtime::Runtime,
    state::InstanceState,
    trigger::{Instances, Invoker},
    validate,
};
use anyhow::{Context as _, Result, bail};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{Notify, Semaphore};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

pub struct App {
    pub name: Arc<str>,
    pub manifest: Manifest,
    /// SHA-256 of the component bytes.
    pub digest: String,
    /// Whether the compiled component came from the cache.
    pub compiled_from_cache: bool,
    /// The component's WIT imports (`wasi:http/outgoing-handler@0.2.6`, …).
    pub imports: Vec<String>,
    /// Lines for the operator that did not stop the load ([`validate::warnings`]).
    pub warnings: Vec<String>,
    pub pre: ProxyPre<InstanceState>,
    pub budget: Arc<MemoryBudget>,
    /// One permit per live instance (`max_concurrency`).
    pub concurrency: Arc<Semaphore>,
    pub metrics: AppMetrics,
    /// The CPU its guests and requests use, and its share of the guest pool.
    pub cpu: Arc<AppCpu>,
    /// Memory one instance holds right after instantiation, measured at load.
    pub startup_memory: u64,
    /// Per-app capability state every instance borrows from.
    pub capabilities: AppCapabilities,
    /// Instances that finished a request cleanly and may take another
    /// (only with `instance_reuse` > 1), most recently used last.
    idle: Mutex<Vec<(Instance, Instant)>>,
    /// Instances that have answered and are finishing their call (maybe on the
    /// guest pool) before they are kept for reuse: the client's next request
    /// may arrive first, and waits for one rather than starting a fresh instance.
    pub finishing: Arc<Finishing>,
    /// How long one instance took to start, measured at load: the longest a
    /// request waits for a finishing one.
    startup_time: Duration,
    /// The exported Redis message handler, when `[redis] channels` is set.
    pub redis_trigger: Option<redis::trigger::RedisTriggerPre<InstanceState>>,
    /// The exported WebSocket handler, when a route has `websocket = true`.
    pub websocket_trigger: Option<websocket::trigger::WebsocketTriggerPre<InstanceState>>,
    /// The exported timer and job handlers the manifest and imports call for.
    pub timer_handlers: timers::Handlers<InstanceState>,
}

impl Instances<InstanceState> for App {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn request_timeout(&self) -> Duration {
        self.manifest.resources.request_timeout
    }

    fn concurrency(&self) -> &Arc<Semaphore> {
        &self.concurrency
    }

    fn metrics(&self) -> &AppMetrics {
        &self.metrics
    }

    fn cpu(&self) -> &Arc<AppCpu> {
        &self.cpu
    }

    fn new_store(&self, deadline: Instant) -> Store<InstanceState> {
        self.store_until(deadline)
    }

    fn refusal(&self, state: &InstanceState) -> Option<Refusal> {
        state.limiter.refusal()
    }

    fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }
}

/// A live instance of the app, between or during requests.
pub struct Instance {
    pub store: Store<InstanceState>,
    pub proxy: Proxy,
    /// Requests it has served so far.
    pub served: u32,
}

/// Epoch ticks a call computes on its ingress thread before its first yield
/// (and its move to the guest pool): one, so a burst of computing requests
/// holds the ingress for at most a millisecond each. A short call that happens
/// to straddle a tick moves too, which costs it a thread hand-off (~20 µs).
pub const FIRST_TICKS: u64 = 1;

/// The longest a request waits for an instance that has answered and is
/// finishing, rather than starting a fresh one.
pub const MAX_WAIT_FOR_FINISHING: Duration = Duration::from_millis(50);

/// Counts the instances that answered and have not yet been kept or dropped.
#[derive(Default)]
pub struct Finishing {
    count: AtomicUsize,
    released: Notify,
}

impl Finishing {
    /// Called when an instance answers; the returned mark, dropped once the
    /// instance is kept or dropped, wakes the requests waiting for one.
    pub fn answered(self: &Arc<Self>) -> FinishingMark {
        self.count.fetch_add(1, Ordering::AcqRel);
        FinishingMark(self.clone())
    }
}

/// One answered instance still finishing its call; see [`Finishing`].
pub struct FinishingMark(Arc<Finishing>);

impl Drop for FinishingMark {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_waiters();
    }
}

/// An idle instance is dropped after this long without a request, giving its
/// memory back to the app's budget.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

impl App {
    /// Validates and compiles the manifest's component, resolves its secrets and
    /// checks that one instance can start within the app's limits.
    pub async fn load(runtime: &Runtime, manifest: Manifest) -> Result<App> {
        let path = manifest.component.clone();
        Self::from_file(runtime, manifest, &path).await
    }

    /// Like [`App::load`], with the component in `file` (a deploy's upload);
    /// `manifest.component` only names it in errors. The component's bytes are
    /// read by the compiler, not held here.
    pub async fn from_file(
        runtime: &Runtime,
        manifest: Manifest,
        file: &std::path::Path,
    ) -> Result<App> {
        let path = manifest.component.clone();
        let mut header = Vec::with_capacity(8);
        std::fs::File::open(file)
            .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 8), &mut header))
            .with_context(|| {
                format!(
                    "{}: component: cannot read {}",
                    manifest.source.display(),
                    path.display()
                )
            })?;
        validate::check_bytes(&path, &header)?;
        let compiled = runtime
            .cache
            .load_file(&runtime.engine, file)
            .await
            .with_context(|| path.display().to_string())?;
        let imports: Vec<String> = compiled
            .component
            .component_type()
            .imports(&runtime.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        validate::check_granted(&path, &manifest, &imports)?;
        let warnings = validate::warnings(&path, &manifest, &imports);
        for warning in &warnings {
            tracing::warn!(app = %manifest.name, fault = "operator", "{warning}");
        }
        let pre = validate::check_linkable(&path, &runtime.linker, &compiled.component)?;
        capabilities::check_sections(&manifest, &imports)?;

        let mut env: Vec<(String, String)> = manifest.env.clone().into_iter().collect();
        for (name, source) in &manifest.secrets {
            let value = std::env::var(&source.env).map_err(|_| {
                LoadError::operator(format!(
                    "{}: secrets.{name}: host environment variable {} is not set",
                    manifest.source.display(),
                    source.env
                ))
            })?;
            env.push((name.clone(), value));
        }

        // The handlers the host calls, checked before any service is reached.
        let source = manifest.source.display().to_string();
        let redis_trigger = match manifest.redis.as_ref().filter(|r| !r.channels.is_empty()) {
            Some(_) => Some(redis::trigger::RedisTriggerPre::new(pre.instance_pre().clone()).map_err(|_| {
                anyhow::anyhow!("{source}: [redis] channels is set but the component does not export alorig:host/redis-handler (on-message)")
            })?),
            None => None,
        };
        let timer_handlers = timers::Handlers::load(&manifest, pre.instance_pre(), &imports)?;
        let websocket_trigger = websocket::load_handler(&manifest, pre.instance_pre())?;

        let name: Arc<str> = manifest.name.as_str().into();
        let metrics = runtime.metrics.app(&name);
        // Every version of an app charges the same gauges, so old and new
        // instances share one count of bytes in use; each checks its own cap.
        // `alorig_app_memory_limit_bytes` follows the version in force: see `activate`.
        let limit = manifest.resources.memory.bytes();
        // What the host holds for the app is charged to the same budget.
        let budget = Arc::new(
            MemoryBudget::new(limit, metrics.memory.clone(), metrics.memory_peak.clone())
                .with_host(metrics.host_memory.clone(), metrics.memory_charged.clone()),
        );
        let capabilities = AppCapabilities::load(&LoadContext {
            name: &name,
            manifest: &manifest,
            imports: &imports,
            env,
            offline: runtime.offline,
            metrics: &runtime.metrics,
            app_metrics: &metrics,
            postgres: runtime.postgres.as_ref(),
            redis: &runtime.redis,
            timers: &runtime.timers,
            websocket: &runtime.websocket,
            files: &runtime.files,
            budget: &budget,
        })
        .await?;
        let cpu = runtime.guest_pool.app(
            manifest.resources.cpu_weight.get(),
            manifest.resources.cpu_time,
            metrics.cpu_seconds.clone(),
            metrics.live.clone(),
        );
        let mut app = App {
            cpu,
            concurrency: Arc::new(Semaphore::new(
                manifest.resources.max_concurrency.get() as usize
            )),
            capabilities,
            name,
            digest: compiled.digest,
            compiled_from_cache: compiled.cached,
            imports,
            warnings,
            pre,
            budget,
            metrics,
            startup_memory: 0,
            idle: Mutex::new(Vec::new()),
            finishing: Arc::default(),
            startup_time: Duration::ZERO,
            manifest,
            redis_trigger,
            websocket_trigger,
            timer_handlers,
        };
        let probed = Instant::now();
        app.startup_memory = app.probe().await?;
        app.startup_time = probed.elapsed();
        Ok(app)
    }

    /// Marks this version as the one serving: its cap becomes the app's limit gauge.
    pub fn activate(self: &Arc<Self>) {
        self.metrics.memory_limit.set(self.budget.limit() as i64);
        if let Some(files) = &self.capabilities.files {
            files.activate();
        }
        let invoker = self.invoker();
        // Its Redis channels, if any, are delivered to it for as long as it lives.
        if let (Some(redis), Some(trigger)) = (&self.capabilities.redis, &self.redis_trigger) {
            redis::subscribe(redis.clone(), trigger.clone(), invoker.downgrade());
        }
        // Its timers fire, and its jobs run, for as long as it is the version in force.
        timers::start(
            &self.capabilities.timers,
            &self.timer_handlers,
            invoker.downgrade(),
        );
    }

    /// The handle the triggers run this version's exports through.
    pub fn invoker(self: &Arc<Self>) -> Invoker<InstanceState> {
        Invoker::new(self.clone())
    }

    /// A fresh store for one instance, with the app's limiter and deadline.
    pub fn new_store(&self, started: Instant) -> Store<InstanceState> {
        self.store_until(started + self.manifest.resources.request_timeout)
    }

    /// A fresh store for one instance, interrupted at `deadline`.
    fn store_until(&self, deadline: Instant) -> Store<InstanceState> {
        let resources = &self.manifest.resources;
        let limiter = InstanceLimiter::new(self.budget.clone(), resources.instance_memory.bytes());
        let state = InstanceState::new(
            limiter,
            &self.capabilities,
            &self.metrics.instances,
            deadline,
        );
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // Every epoch tick a computing guest yields to the scheduler, so it never
        // holds a worker thread (and, still computing, moves to the guest pool:
        // `cpu::tick`); once its deadline or its `cpu_time` has passed it is
        // interrupted. tokio's `yield_now` (not wasmtime's plain `Yield`, which
        // re-queues the task first in line) lets other tasks run first.
        store.epoch_deadline_callback(|store| {
            if cpu::tick() || Instant::now() >= store.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store.set_epoch_deadline(FIRST_TICKS);
        store
    }

    /// An idle instance ready for another request, if the app reuses them.
    /// When none is idle but one has answered and is finishing, waits for it
    /// as long as starting a fresh one would take (at most [`MAX_WAIT_FOR_FINISHING`]).
    pub async fn take_idle(&self) -> Option<Instance> {
        if self.manifest.resources.instance_reuse.get() <= 1 {
            return None;
        }
        let released = self.finishing.released.notified();
        let mut released = std::pin::pin!(released);
        released.as_mut().enable();
        if let Some(instance) = self.pop_idle() {
            return Some(instance);
        }
        if self.finishing.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let wait = self.startup_time.min(MAX_WAIT_FOR_FINISHING);
        let _ = tokio::time::timeout(wait, released).await;
        self.pop_idle()
    }

    fn pop_idle(&self) -> Option<Instance> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.pop().map(|(instance, _)| instance)
    }

    /// Keeps an instance that just served a request cleanly for the next one,
    /// unless it has served its `instance_reuse` requests, or grew past a
    /// quarter of the app's budget (so one bloated instance cannot sit on it).
    pub fn release(&self, mut instance: Instance) {
        instance.served += 1;
        let resources = &self.manifest.resources;
        let keep = instance.served < resources.instance_reuse.get()
            && instance.store.data().limiter.refusal().is_none()
            && instance.store.data().limiter.charged() <= self.budget.limit() / 4;
        if keep {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < resources.max_concurrency.get() as usize {
                idle.push((instance, Instant::now()));
            }
        }
    }

    /// Drops instances idle for longer than [`IDLE_TIMEOUT`].
    pub fn trim_idle(&self) {
        let expired: Vec<(Instance, Instant)> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let keep_from = idle
                .iter()
                .position(|(_, since)| since.elapsed() < IDLE_TIMEOUT)
                .unwrap_or(idle.len());
            idle.drain(..keep_from).collect()
        };
        drop(expired); // outside the lock: dropping a store gives its memory back
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
            (Err(err), None) => Err(anyhow::Error::from(err))
                .with_context(|| format!("{source}: the component fails to start")),
        }
    }
}
