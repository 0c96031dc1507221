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

/// Whether this host is ready (`/healthz`): its apps loaded (`up`'s manifests,
/// or `serve`'s versions in force), and caught up with the cluster's versions.
#[derive(Clone, Default)]
pub struct Readiness(Arc<ReadinessFlags>);

#[derive(Default)]
struct ReadinessFlags {
    loaded: AtomicBool,
    caught_up: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.waiting_for().is_none()
    }

    /// What the host is still doing before it is ready, in a few words.
    pub fn waiting_for(&self) -> Option<&'static str> {
        if !self.0.loaded.load(Ordering::Acquire) {
            Some("loading its apps")
        } else if !self.0.caught_up.load(Ordering::Acquire) {
            Some("catching up with the cluster's versions")
        } else {
            None
        }
    }

    /// Every app the host starts with is loaded (or was left out, logged).
    pub fn set_loaded(&self) {
        self.0.loaded.store(true, Ordering::Release);
    }

    fn is_caught_up(&self) -> bool {
        self.0.caught_up.load(Ordering::Acquire)
    }

    fn set_caught_up(&self) {
        self.0.caught_up.store(true, Ordering::Release);
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
/// versions in PostgreSQL (after the host loaded the versions it had); `ready`
/// is caught up at once when there is no cluster.
pub fn start(apps: &Arc<Apps>, node: Node, ready: &Readiness) {
    let Some(shared) = apps.shared().cloned() else {
        ready.set_caught_up();
        return;
    };
    tokio::spawn(follow::follow(apps.clone(), shared.clone(), ready.clone()));
    tokio::spawn(nodes::heartbeat(apps.clone(), shared, node));
}
