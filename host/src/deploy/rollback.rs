//! Rollback and removal: putting a kept version back in force, and taking an
//! app out of service (on this host, and through PostgreSQL on every host).

use super::{ApiError, Apps, not_found, routes, shared_failed, store::Store};
use crate::{app::App, ingress::router::Router};
use serde_json::{Value, json};
use std::{sync::Arc, time::Instant};

impl Apps {
    /// Puts an earlier kept version back in force (by default the one before).
    pub async fn rollback(&self, name: &str, to: Option<u32>) -> Result<Value, ApiError> {
        let _one_at_a_time = self.deploying.lock().await;
        let started = Instant::now();
        let store = self.store()?;
        let current = self
            .live()
            .get(name)
            .map(|d| d.version)
            .ok_or_else(|| not_found(name))?;
        let versions = match &self.shared {
            Some(shared) => shared.versions(name).await.map_err(shared_failed)?,
            None => store
                .versions(name)
                .map_err(|e| ApiError::from_anyhow(500, "storage", e))?,
        };
        let target = match to {
            Some(v) if versions.contains(&v) => v,
            Some(v) => {
                return Err(ApiError::new(
                    404,
                    "version_not_found",
                    format!(
                        "{name} has no version {v}; kept versions: {}",
                        list(&versions)
                    ),
                ));
            }
            None => versions
                .iter()
                .rev()
                .copied()
                .find(|v| *v < current)
                .ok_or_else(|| {
                    ApiError::new(
                        409,
                        "no_earlier_version",
                        format!("{name} has no kept version before {current}"),
                    )
                })?,
        };
        if target == current {
            return Err(ApiError::new(
                409,
                "already_current",
                format!("{name} version {target} is already in force"),
            ));
        }
        if let Some(shared) = &self.shared {
            self.cache_version(store, shared, name, target, None)
                .await
                .map_err(shared_failed)?;
        }
        let (manifest, _) = store
            .manifest(name, target)
            .map_err(|e| ApiError::from_anyhow(500, "storage", e))?;
        self.check_fit(&manifest)?;
        let app = App::load(&self.runtime, manifest)
            .await
            .map_err(|e| ApiError::from_anyhow(422, "bad_component", e))?;
        let app = Arc::new(app);
        if let Some(shared) = &self.shared {
            shared
                .set_current(name, target)
                .await
                .map_err(shared_failed)?;
        }
        self.swap(app.clone(), target)?;
        self.runtime.metrics.rolled_back(name);
        tracing::info!(app = %name, from = current, to = target, "rolled back in {:.0?}", started.elapsed());
        Ok(json!({
            "app": name,
            "version": target,
            "previous_version": current,
            "routes": routes(&app),
            "memory_limit_bytes": app.manifest.resources.memory.bytes(),
            "seconds": started.elapsed().as_secs_f64(),
        }))
    }

    /// Stops routing to the app and deletes its versions; its `[files]`
    /// directory is kept unless `purge`.
    pub async fn remove(&self, name: &str, purge: bool) -> Result<Value, ApiError> {
        let _one_at_a_time = self.deploying.lock().await;
        let store = self.store()?;
        if !self.live().contains_key(name) {
            return Err(not_found(name));
        }
        if let Some(shared) = &self.shared {
            shared.remove(name).await.map_err(shared_failed)?;
        }
        self.remove_here(store, name, purge)
    }

    /// Removes the app from this host (its routes, its cached versions), and
    /// its `[files]` directory too if `purge`.
    pub(super) fn remove_here(
        &self,
        store: &Store,
        name: &str,
        purge: bool,
    ) -> Result<Value, ApiError> {
        {
            let mut live = self.live();
            let mut next = live.clone();
            let removed = next.remove(name).ok_or_else(|| not_found(name))?;
            let router = Router::new(next.values().map(|d| d.app.clone()).collect())
                .map_err(|e| ApiError::from_anyhow(500, "internal", e))?;
            store
                .remove(name)
                .map_err(|e| ApiError::from_anyhow(500, "storage", e))?;
            *live = next;
            self.ingress.set_router(router);
            removed.app.metrics.memory_limit.set(0);
            if let Some(files) = &removed.app.capabilities.files {
                files.deactivate();
            }
            // Its WebSockets would otherwise go on with the removed version.
            removed.app.capabilities.websocket.hub.close_all(
                Some(name),
                1001,
                "the app was removed",
            );
        }
        self.runtime.metrics.set_version(name, 0);
        let files_purged = purge
            && self.runtime.files.purge(name).map_err(|e| {
                ApiError::new(
                    500,
                    "storage",
                    format!("{name} was removed, but its files were not deleted: {e}"),
                )
            })?;
        tracing::info!(app = %name, files_purged, "removed");
        Ok(json!({ "app": name, "removed": true, "files_purged": files_purged }))
    }
}

fn list(versions: &[u32]) -> String {
    versions
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
