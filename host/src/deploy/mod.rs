//! Deploys: the registry of the apps in force ([`Apps`]), each at one version.
//!
//! A deploy, a rollback and a removal run one at a time (the `deploying` lock),
//! and check everything against the *other* apps' versions in force before
//! touching the running one: manifest, budget, routes, secrets, the component
//! (parses, links, exports a handler, one instance starts) and, for a deploy,
//! whether it widens the app's grants. Only then is the version written to disk
//! ([`store`]) and the routing table swapped: new requests go to the new
//! version, in-flight ones finish on the `Arc<App>` they hold.
//!
//! Every version of an app charges the same memory gauges (see `App::from_file`),
//! so an old version's in-flight instances and the new version's count as one app.
//!
//! With `postgres_url`, the versions live in PostgreSQL ([`shared`]) for every
//! host sharing it: a deploy, rollback or removal is committed there first (and
//! announced), then applied here; the other hosts apply it when they hear of it
//! ([`sync`]). The data dir is then this host's cache of what PostgreSQL holds.

mod figures;
pub mod grants;
mod rollback;
pub mod shared;
pub mod store;
mod sync;
pub mod upload;

use crate::{
    app::App,
    capabilities::LoadError,
    config::{ByteSize, Manifest},
    fault::Fault,
    ingress::{
        Ingress,
        router::{self, Router},
    },
    metrics::LiveSample,
    runtime::Runtime,
};
use anyhow::bail;
use serde_json::{Value, json};
use shared::Shared;
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Instant, SystemTime, UNIX_EPOCH},
};
use store::Store;

/// The apps' memory caps must add up to no more than the host's budget.
pub fn check_budget(budget: ByteSize, manifests: &[Manifest]) -> anyhow::Result<()> {
    let total: u64 = manifests.iter().map(|m| m.resources.memory.bytes()).sum();
    if total > budget.bytes() {
        let each: Vec<String> = manifests
            .iter()
            .map(|m| format!("{} {}", m.name, m.resources.memory))
            .collect();
        bail!(
            "the apps' memory caps add up to {} ({}), more than the host's memory_budget of {budget}",
            ByteSize(total),
            each.join(", ")
        );
    }
    Ok(())
}

/// A load failure as the admin API answers it: a service the host depends on
/// being down is a 503 naming it (retry later; nothing is wrong with the app),
/// anything else `status` with `code`.
fn load_failed(status: u16, code: &'static str, err: anyhow::Error) -> ApiError {
    match err.downcast_ref::<LoadError>() {
        Some(LoadError {
            fault: Fault::Dependency,
            dependency,
            ..
        }) => {
            let service = dependency.unwrap_or("a service the host depends on");
            ApiError::from_anyhow(
                503,
                "dependency_unavailable",
                err.context(format!("{service} is unavailable")),
            )
        }
        _ => ApiError::from_anyhow(status, code, err),
    }
}

/// An app in force.
#[derive(Clone)]
pub struct Deployed {
    pub app: Arc<App>,
    /// 0 for apps given to `up` (not deployed, not stored).
    pub version: u32,
    /// Unix seconds.
    pub since: u64,
}

/// A refused or failed admin operation: HTTP status, a stable code, one line.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// For `grants_widened`: what the new version may reach that the live one cannot.
    pub grants: Vec<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            grants: Vec::new(),
        }
    }

    fn from_anyhow(status: u16, code: &'static str, err: anyhow::Error) -> Self {
        Self::new(status, code, format!("{err:#}").replace('\n', " "))
    }

    pub fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.grants.is_empty() {
            error["grants"] = json!(self.grants);
        }
        json!({ "error": error })
    }
}

/// A deploy's upload.
pub struct Upload {
    pub app: String,
    /// The manifest's file name on the deploying machine (names it in errors).
    pub manifest_name: String,
    pub manifest_text: String,
    /// The component's file name on the deploying machine (names it in errors).
    pub component_name: String,
    /// The component's bytes, in a file until the deploy reads them.
    pub component: upload::Spooled,
    /// The operator saw and approved wider grants (`deploy --yes`).
    pub approve_grants: bool,
}

pub struct Apps {
    runtime: Arc<Runtime>,
    ingress: Arc<Ingress>,
    /// None under `up`: its apps come from manifests and cannot be changed.
    store: Option<Store>,
    budget: ByteSize,
    live: Mutex<BTreeMap<String, Deployed>>,
    deploying: tokio::sync::Mutex<()>,
    /// Last samples of each app's counters, one a second, for rates and p99.
    samples: Mutex<HashMap<String, VecDeque<(Instant, LiveSample)>>>,
    /// The versions every host shares (`serve` with `postgres_url`).
    shared: Option<Arc<Shared>>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Apps {
    /// The ingress whose routing table deploys replace.
    pub fn ingress(&self) -> &Arc<Ingress> {
        &self.ingress
    }

    pub fn new(
        runtime: Arc<Runtime>,
        ingress: Arc<Ingress>,
        store: Option<Store>,
        budget: ByteSize,
    ) -> Self {
        Self {
            runtime,
            ingress,
            store,
            budget,
            live: Mutex::new(BTreeMap::new()),
            deploying: tokio::sync::Mutex::new(()),
            samples: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// Keeps the versions in PostgreSQL, shared with every host there.
    pub fn with_shared(mut self, shared: Option<Arc<Shared>>) -> Self {
        self.shared = shared.filter(|_| self.store.is_some());
        self
    }

    fn live(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Deployed>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The apps in force now.
    pub fn snapshot(&self) -> BTreeMap<String, Deployed> {
        self.live().clone()
    }

    /// Serves one more of `up`'s apps, unversioned, as soon as it is loaded
    /// (the others' routes were checked against it before any was compiled).
    pub fn add_fixed(&self, app: Arc<App>) -> anyhow::Result<()> {
        let mut live = self.live();
        live.insert(
            app.name.to_string(),
            Deployed {
                app,
                version: 0,
                since: now_unix(),
            },
        );
        self.ingress
            .set_router(Router::new(live.values().map(|d| d.app.clone()).collect())?);
        drop(live);
        self.sample();
        Ok(())
    }

    /// Brings back every stored app at its version in force (`serve`), each
    /// serving as soon as it is loaded; deploys wait until all are. An app
    /// that no longer loads (a secret's variable is gone, …) is logged and left
    /// out; the others serve.
    pub async fn restore(&self) -> anyhow::Result<usize> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let _one_at_a_time = self.deploying.lock().await;
        store.clean()?;
        self.runtime.cache.clean_partial();
        for name in store.apps()? {
            let started = Instant::now();
            let result = async {
                let version = store.current(&name)?.unwrap_or(0);
                let (manifest, _) = store.manifest(&name, version)?;
                anyhow::Ok((version, App::load(&self.runtime, manifest).await?))
            }
            .await;
            let (version, app) = match result {
                Ok(loaded) => loaded,
                Err(err) => {
                    let fault = err
                        .downcast_ref::<LoadError>()
                        .map_or(Fault::Guest, |e| e.fault);
                    tracing::error!(app = %name, %fault, "not serving: {}", format!("{err:#}").replace('\n', " "));
                    continue;
                }
            };
            let app = Arc::new(app);
            let mut live = self.live();
            let mut manifests: Vec<Manifest> =
                live.values().map(|d| d.app.manifest.clone()).collect();
            manifests.push(app.manifest.clone());
            let refs: Vec<&Manifest> = manifests.iter().collect();
            if let Err(err) =
                check_budget(self.budget, &manifests).and_then(|()| router::check_routes(&refs))
            {
                tracing::error!(app = %name, fault = %Fault::Operator, "not serving: {err:#}");
                continue;
            }
            app.activate();
            self.runtime.metrics.set_version(&name, version);
            tracing::info!(app = %name, version, cached = app.compiled_from_cache, "restored in {:.0?}", started.elapsed());
            live.insert(
                name,
                Deployed {
                    app,
                    version,
                    since: now_unix(),
                },
            );
            self.ingress
                .set_router(Router::new(live.values().map(|d| d.app.clone()).collect())?);
        }
        self.sample();
        Ok(self.live().len())
    }

    fn store(&self) -> Result<&Store, ApiError> {
        self.store.as_ref().ok_or_else(|| {
            ApiError::new(409, "read_only", "this host runs `alorig-host up` with fixed manifests; deploy to a host started with `alorig-host serve`")
        })
    }

    /// The manifests in force for every app but `candidate`'s, plus `candidate`.
    fn with_others(&self, candidate: &Manifest) -> Vec<Manifest> {
        let mut manifests: Vec<Manifest> = self
            .live()
            .values()
            .filter(|d| d.app.name.as_ref() != candidate.name.as_str())
            .map(|d| d.app.manifest.clone())
            .collect();
        manifests.push(candidate.clone());
        manifests
    }

    /// The apps' PostgreSQL pools, `candidate`'s included, must fit the host's
    /// connection limit (`postgres_max_connections`).
    async fn check_postgres(&self, candidate: &Manifest) -> Result<(), ApiError> {
        let (Some(host), Some(_)) = (&self.runtime.postgres, &candidate.postgres) else {
            return Ok(());
        };
        let manifests = self.with_others(candidate);
        host.check_connections(
            manifests
                .iter()
                .filter_map(|m| Some((m.name.as_str(), m.postgres.as_ref()?))),
        )
        .await
        .map_err(|e| load_failed(422, "postgres_connections", e))
    }

    /// Checks the budget and routes of `candidate` against the other apps in force.
    fn check_fit(&self, candidate: &Manifest) -> Result<(), ApiError> {
        let manifests = self.with_others(candidate);
        check_budget(self.budget, &manifests)
            .map_err(|e| ApiError::from_anyhow(422, "budget_exceeded", e))?;
        let refs: Vec<&Manifest> = manifests.iter().collect();
        router::check_routes(&refs).map_err(|e| ApiError::from_anyhow(409, "route_collision", e))
    }

    /// Puts `app` in force at `version`: disk first, then the routing table.
    /// Called only under the `deploying` lock, so `live` cannot change between
    /// the snapshot and the swap; the version file is written (and fsynced)
    /// without holding `live`, which every admin read takes.
    fn swap(&self, app: Arc<App>, version: u32) -> Result<(), ApiError> {
        let name = app.name.to_string();
        let mut next = self.live().clone();
        next.insert(
            name.clone(),
            Deployed {
                app: app.clone(),
                version,
                since: now_unix(),
            },
        );
        let router = Router::new(next.values().map(|d| d.app.clone()).collect())
            .map_err(|e| ApiError::from_anyhow(409, "route_collision", e))?;
        if let Some(store) = &self.store {
            store
                .set_current(&name, version)
                .map_err(|e| ApiError::from_anyhow(500, "storage", e))?;
        }
        let mut live = self.live();
        *live = next;
        app.activate();
        self.ingress.set_router(router);
        self.runtime.metrics.set_version(&name, version);
        drop(live);
        // A baseline for the rates, so traffic right after the deploy counts.
        self.sample();
        Ok(())
    }

    /// Validates, compiles, stores and puts in force a new version.
    pub async fn deploy(&self, upload: Upload) -> Result<Value, ApiError> {
        let name = upload.app.clone();
        let result = self.deploy_locked(upload).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.code,
        };
        self.runtime.metrics.deployed(&name, outcome);
        result
    }

    async fn deploy_locked(&self, upload: Upload) -> Result<Value, ApiError> {
        let _one_at_a_time = self.deploying.lock().await;
        let started = Instant::now();
        let store = self.store()?;
        let source = PathBuf::from(&upload.manifest_name);
        let mut manifest = Manifest::parse(&source, &upload.manifest_text)
            .map_err(|e| ApiError::from_anyhow(400, "bad_manifest", e))?;
        if manifest.name.as_str() != upload.app {
            return Err(ApiError::new(
                400,
                "name_mismatch",
                format!(
                    "{}: name: the manifest is for app {}, not {}",
                    source.display(),
                    manifest.name,
                    upload.app
                ),
            ));
        }
        manifest.component = PathBuf::from(&upload.component_name);
        self.check_fit(&manifest)?;
        self.check_postgres(&manifest).await?;
        for (key, secret) in &manifest.secrets {
            if std::env::var_os(&secret.env).is_none() {
                return Err(ApiError::new(
                    422,
                    "secret_unresolvable",
                    format!(
                        "{}: secrets.{key}: host environment variable {} is not set",
                        source.display(),
                        secret.env
                    ),
                ));
            }
        }

        let spooled = upload.component;
        // The compiler reads the file; the version is stored by copying it.
        let app = App::from_file(&self.runtime, manifest, spooled.path())
            .await
            .map_err(|e| load_failed(422, "bad_component", e))?;
        let compiled_in = started.elapsed();

        let previous = self.live().get(&upload.app).cloned();
        let added = match &previous {
            Some(live) => grants::widened(&live.app, &app),
            None => Vec::new(),
        };
        if !added.is_empty() && !upload.approve_grants {
            let mut err = ApiError::new(
                409,
                "grants_widened",
                format!(
                    "version would widen what {} may reach ({}); deploy again with --yes (approve_grants=true) to approve",
                    upload.app,
                    added.join("; ")
                ),
            );
            err.grants = added;
            return Err(err);
        }

        let version = match &self.shared {
            // Committed and announced to every host before it is in force here.
            Some(shared) => shared
                .publish(
                    &upload.app,
                    &upload.manifest_text,
                    spooled.path(),
                    &app.digest,
                )
                .await
                .map_err(shared_failed)?,
            None => store
                .next_version(&upload.app)
                .map_err(|e| ApiError::from_anyhow(500, "storage", e))?,
        };
        // Writing and fsyncing a component takes a while: off the async workers.
        let (writer, name, text) = (
            store.clone(),
            upload.app.clone(),
            upload.manifest_text.clone(),
        );
        tokio::task::spawn_blocking(move || {
            writer.write_version_file(&name, version, &text, spooled.path())
        })
        .await
        .map_err(|e| ApiError::new(500, "storage", format!("the storage thread failed: {e}")))?
        .map_err(|e| ApiError::from_anyhow(500, "storage", e))?;
        let app = Arc::new(app);
        self.swap(app.clone(), version)?;
        if let Err(err) = store.prune(&upload.app, version) {
            tracing::warn!(app = %upload.app, fault = %Fault::Host, "cannot delete old versions: {err:#}");
        }
        tracing::info!(
            app = %upload.app, version, digest = &app.digest[..12], cached = app.compiled_from_cache,
            "deployed in {:.0?}", started.elapsed()
        );
        Ok(json!({
            "app": upload.app,
            "version": version,
            "previous_version": previous.map(|p| p.version),
            "routes": routes(&app),
            "memory_limit_bytes": app.manifest.resources.memory.bytes(),
            "memory_limit": app.manifest.resources.memory.to_string(),
            "digest": app.digest,
            "compiled_from_cache": app.compiled_from_cache,
            "compile_seconds": compiled_in.as_secs_f64(),
            "seconds": started.elapsed().as_secs_f64(),
            "grants": grants::all(&app),
            "grants_added": added,
            "warnings": app.warnings,
        }))
    }

    pub fn memory_budget(&self) -> u64 {
        self.budget.bytes()
    }
}

/// PostgreSQL failed to store or read the shared versions: nothing changed here.
fn shared_failed(err: anyhow::Error) -> ApiError {
    ApiError::from_anyhow(503, "dependency_unavailable", err)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("no app named {name} is deployed"))
}

fn routes(app: &App) -> Vec<String> {
    app.manifest
        .routes
        .iter()
        .map(|r| format!("{}{}", r.host, r.path))
        .collect()
}
