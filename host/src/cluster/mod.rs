//! Several hosts as one, on what the shared services give: the deployed
//! versions in PostgreSQL, followed through `LISTEN alorig_deploys` with a
//! catch-up read on every (re)connection ([`follow`]); a heartbeat row per host
//! ([`nodes`]) that `alorig-host status --cluster` reads; timers and jobs
//! leased in PostgreSQL (`capabilities::timers`); WebSocket groups over Redis
//! pub/sub (`capabilities::websocket`). No membership or consensus of its own:
//! a host knows the others only through their rows.
//!
//! Without `postgres_url` there is no cluster: the data dir holds the versions
//! and the host is ready as soon as it serves.

pub mod follow;
pub mod nodes;
pub mod status;

use crate::deploy::Apps;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// Whether this host has caught up with the cluster's versions (`/healthz`).
#[derive(Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Ready from the start (no cluster to catch up with), or not yet.
    pub fn new(ready: bool) -> Self {
        Self(Arc::new(AtomicBool::new(ready)))
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What this host tells the others about itself.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    /// Where its ingress answers.
    pub address: String,
}

/// Starts following the cluster and beating the heart, when `apps` keeps its
/// versions in PostgreSQL; answers the readiness `/healthz` reports.
pub fn start(apps: &Arc<Apps>, node: Node) -> Readiness {
    let Some(shared) = apps.shared().cloned() else {
        return Readiness::new(true);
    };
    let ready = Readiness::new(false);
    tokio::spawn(follow::follow(apps.clone(), shared.clone(), ready.clone()));
    tokio::spawn(nodes::heartbeat(apps.clone(), shared, node));
    ready
}
