//! Following the versions in PostgreSQL ([`super::shared`]): what another host
//! deployed, rolled back or removed is applied here, the same way a deploy is
//! (budget and routes checked, compiled from this host's cache, swapped), one
//! change at a time under the `deploying` lock.
//!
//! Apps this host serves that PostgreSQL has never heard of (a single host's
//! data dir, the first time it runs with a cluster) are put into PostgreSQL as
//! they are, so the other hosts serve them too; an app PostgreSQL says was
//! removed is removed here.

use super::{Apps, check_budget, router, shared::Shared, store::Store};
use crate::{app::App, config::Manifest, fault::Fault};
use anyhow::{Context as _, Result};
use std::{sync::Arc, time::Instant};

/// What one catch-up did.
#[derive(Debug, Default)]
pub struct CaughtUp {
    /// Apps now at PostgreSQL's version (deployed or rolled back elsewhere).
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Apps of this host's data dir put into PostgreSQL.
    pub imported: Vec<String>,
    /// Apps that could not be brought to PostgreSQL's version (logged).
    pub failed: Vec<String>,
}

impl Apps {
    /// The shared versions, when this host keeps its versions in PostgreSQL.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Brings this host to the versions in force in PostgreSQL. Fails only when
    /// PostgreSQL cannot be read; an app that does not load is logged, left at
    /// its version here, and tried again at the next catch-up.
    pub async fn catch_up(&self) -> Result<CaughtUp> {
        let (Some(shared), Some(store)) = (&self.shared, &self.store) else {
            return Ok(CaughtUp::default());
        };
        let _one_at_a_time = self.deploying.lock().await;
        let state = shared.state().await?;
        let mut done = CaughtUp::default();
        for (name, current) in &state {
            let here = self.live().get(name).cloned();
            match current {
                Some(current) => {
                    if here.as_ref().is_some_and(|d| {
                        d.version == current.version && d.app.digest == current.digest
                    }) {
                        continue;
                    }
                    let started = Instant::now();
                    match self.adopt(store, shared, name, current).await {
                        Ok(()) => {
                            tracing::info!(
                                app = %name, version = current.version,
                                from = here.map(|d| d.version),
                                "in force as elsewhere in the cluster after {:.0?}", started.elapsed()
                            );
                            done.changed.push(name.clone());
                        }
                        Err(err) => {
                            tracing::error!(
                                app = %name, version = current.version, fault = %Fault::Operator,
                                "cannot put the cluster's version in force here: {}",
                                format!("{err:#}").replace('\n', " ")
                            );
                            done.failed.push(name.clone());
                        }
                    }
                }
                None if here.is_some() => {
                    if let Err(err) = self.remove_here(store, name, false) {
                        tracing::error!(app = %name, fault = %Fault::Host, "cannot remove the app removed elsewhere: {}", err.message);
                        done.failed.push(name.clone());
                        continue;
                    }
                    done.removed.push(name.clone());
                }
                None => {}
            }
        }
        let unknown: Vec<(String, u32)> = self
            .live()
            .iter()
            .filter(|(name, d)| d.version > 0 && !state.contains_key(*name))
            .map(|(name, d)| (name.clone(), d.version))
            .collect();
        for (name, version) in unknown {
            match self.import(store, shared, &name, version).await {
                Ok(true) => {
                    tracing::info!(app = %name, version, "put into PostgreSQL for the other hosts");
                    done.imported.push(name);
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(app = %name, fault = %Fault::Dependency, "cannot put the app into PostgreSQL: {err:#}");
                    done.failed.push(name);
                }
            }
        }
        Ok(done)
    }

    /// Puts PostgreSQL's version of `name` in force here.
    async fn adopt(
        &self,
        store: &Store,
        shared: &Shared,
        name: &str,
        current: &super::shared::Current,
    ) -> Result<()> {
        self.cache_version(store, shared, name, current.version, Some(&current.digest))
            .await?;
        let (manifest, _) = store.manifest(name, current.version)?;
        let mut manifests: Vec<Manifest> = self
            .live()
            .values()
            .filter(|d| d.app.name.as_ref() != name)
            .map(|d| d.app.manifest.clone())
            .collect();
        manifests.push(manifest.clone());
        check_budget(self.budget, &manifests)?;
        router::check_routes(&manifests.iter().collect::<Vec<_>>())?;
        let app = Arc::new(App::load(&self.runtime, manifest).await?);
        self.swap(app, current.version)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        if let Err(err) = store.prune(name, current.version) {
            tracing::warn!(app = %name, fault = %Fault::Host, "cannot delete old versions: {err:#}");
        }
        Ok(())
    }

    /// Makes sure the data dir holds `version` of `name` as PostgreSQL has it
    /// (`digest`, when known, spares reading it from PostgreSQL).
    pub(super) async fn cache_version(
        &self,
        store: &Store,
        shared: &Shared,
        name: &str,
        version: u32,
        digest: Option<&str>,
    ) -> Result<()> {
        let here = {
            let (store, name) = (store.clone(), name.to_string());
            tokio::task::spawn_blocking(move || store.fingerprint(&name, version))
                .await
                .context("the storage thread failed")??
        };
        if let (Some((have, _)), Some(want)) = (&here, digest)
            && have == want
        {
            return Ok(());
        }
        let fetched = shared.fetch(name, version).await?;
        if here.is_some_and(|(have, text)| have == fetched.digest && text == fetched.manifest) {
            return Ok(());
        }
        let (store, name) = (store.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            store.write_version(&name, version, &fetched.manifest, &fetched.component)
        })
        .await
        .context("the storage thread failed")?
    }

    /// Puts this host's version of an app into PostgreSQL, unless PostgreSQL
    /// knows the app already.
    async fn import(
        &self,
        store: &Store,
        shared: &Shared,
        name: &str,
        version: u32,
    ) -> Result<bool> {
        let dir = store.version_dir(name, version);
        let manifest = tokio::fs::read_to_string(dir.join("manifest.toml"))
            .await
            .with_context(|| format!("cannot read {}", dir.display()))?;
        let component = tokio::fs::read(dir.join("component.wasm"))
            .await
            .with_context(|| format!("cannot read {}", dir.display()))?;
        let digest = {
            use sha2::{Digest as _, Sha256};
            hex::encode(Sha256::digest(&component))
        };
        shared
            .import(name, version, &manifest, &component, &digest)
            .await
    }
}
