//! An app's manifest (`manifests/<app>.toml`, see CONTRACT.md): private `*Toml`
//! structs that mirror the file and reject unknown keys, turned once into a
//! validated [`Manifest`]. Field-level mistakes are caught during deserialization,
//! so their errors carry the file and line; cross-field checks name the field.
//!
//! This file holds the public types of the whole manifest and `parse`, which
//! runs the steps in order: `raw` (the file's shape, unknown keys refused),
//! `names` (app names and host patterns), `validate` (each section's
//! cross-field checks and defaults, one function per section) into the
//! section types of `sections`.

use super::{ByteSize, HumanDuration, toml_error};
use anyhow::{Context as _, Result};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

/// A validated app manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub name: AppName,
    /// The component file, resolved relative to the manifest's folder.
    pub component: PathBuf,
    pub resources: Resources,
    pub routes: Vec<Route>,
    /// Sites Caddy serves itself (`[[static]]`, or one `[static]` table).
    pub static_sites: Vec<StaticSite>,
    /// `[custom_domains] enabled`: requests for hosts no route claims are offered
    /// to the app (see `ingress::domains`).
    pub custom_domains: bool,
    pub postgres: Option<Postgres>,
    pub redis: Option<Redis>,
    pub outbound_http: OutboundHttp,
    /// Limits for the app's WebSocket connections (routes with `websocket = true`).
    pub websocket: WebSocket,
    pub timers: Vec<Timer>,
    pub jobs: Jobs,
    /// `[files]`: a private directory preopened as `/data`, with a quota.
    pub files: Option<Files>,
    /// Plain configuration the guest may read as environment variables.
    pub env: BTreeMap<String, String>,
    /// Names of host environment variables resolved at deploy time.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Where the manifest was read from, for error messages.
    pub source: PathBuf,
}

mod names;
mod raw;
mod sections;
mod validate;

pub use names::{AppName, HostPattern};
use raw::ManifestToml;
pub use sections::*;
#[cfg(test)]
use validate::normalize_prefix;

#[derive(Clone, Debug)]
pub struct Resources {
    /// Aggregate cap over all live instances of the app.
    pub memory: ByteSize,
    /// Ceiling for one instance.
    pub instance_memory: ByteSize,
    pub max_concurrency: NonZeroU32,
    pub request_timeout: Duration,
    /// Request bodies past this get 413.
    pub max_body: ByteSize,
    /// Requests one instance may serve one after another; 1 means a fresh
    /// instance for every request.
    pub instance_reuse: NonZeroU32,
    /// The app's share of the CPU against other apps when they compete.
    pub cpu_weight: NonZeroU32,
    /// CPU one request may use before it is ended (504), however long it waited.
    pub cpu_time: Option<Duration>,
}

/// Largest `cpu_weight`: a thousand to one is already "only when idle".
pub const MAX_CPU_WEIGHT: u32 = 1000;

pub const DEFAULT_MEMORY: ByteSize = ByteSize::mib(128);
pub const DEFAULT_MAX_CONCURRENCY: u32 = 100;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BODY: ByteSize = ByteSize::mib(10);
/// Largest `[websocket] max_message`: a message is handed to one instance whole.
pub const MAX_WEBSOCKET_MESSAGE: ByteSize = ByteSize::mib(16);
/// A 32-bit linear memory cannot grow past 4 GiB, so neither can an instance.
pub const MAX_INSTANCE_MEMORY: ByteSize = ByteSize::gib(4);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub host: HostPattern,
    /// Path prefix, matched on whole segments; the longest wins.
    pub path: String,
    pub websocket: bool,
}

#[derive(Clone, Debug)]
pub struct StaticSite {
    pub host: HostPattern,
    /// The prefix Caddy serves these files under (`/` by default), stripped
    /// before the file is looked up in `root`.
    pub path: String,
    pub root: PathBuf,
    /// Clients allowed in (CIDRs); empty: everyone.
    pub allow_from: Vec<ipnet::IpNet>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// The host environment variable holding the value.
    pub env: String,
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Validates manifest text; `path` names it in errors and anchors `component`.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest> {
        let raw: ManifestToml = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let at = |field: &str| format!("{}: {field}", path.display());
        let at: validate::At = &at;
        let base = path.parent().unwrap_or(Path::new("."));

        let resources = validate::resources(raw.resources, at)?;
        let routes = validate::routes(raw.routes, at)?;
        let static_sites = validate::static_sites(raw.static_sites, base, at)?;
        let postgres = validate::postgres(raw.postgres, at)?;
        let redis = validate::redis(raw.redis, &raw.name, at)?;
        let outbound_http = validate::outbound_http(raw.outbound_http, at)?;
        let websocket = validate::websocket(raw.websocket, resources.memory, at)?;
        let timers = validate::timers(raw.timers, resources.request_timeout, at)?;
        let jobs = validate::jobs(raw.jobs, resources.request_timeout, at)?;
        let files = validate::files(raw.files, at)?;
        validate::env(&raw.env, &raw.secrets, at)?;

        Ok(Manifest {
            component: base.join(&raw.component),
            name: raw.name,
            resources,
            routes,
            static_sites,
            custom_domains: raw.custom_domains.is_some_and(|c| c.enabled),
            postgres,
            redis,
            outbound_http,
            websocket,
            timers,
            jobs,
            files,
            env: raw.env,
            secrets: raw.secrets,
            source: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests;
