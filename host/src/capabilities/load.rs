//! What every capability's load step shares: the context it reads (the app's
//! manifest and imports, the host-side state of each capability), the error it
//! answers with (whose fault: the component, the manifest or host config, an
//! outside service, the host), the "imports X but the manifest has no [x]"
//! check, and the grants a deploy compares between versions.

use super::{
    files::FilesHost, postgres::PostgresHost, redis::RedisHost, timers::TimersHost,
    websocket::hub::Hub,
};
use crate::{
    config::Manifest,
    fault::Fault,
    metrics::{AppMetrics, Metrics},
};
use std::sync::Arc;

/// Why a capability of an app could not be set up at load.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    pub fault: Fault,
    /// For [`Fault::Dependency`]: the service that failed (`PostgreSQL`, `Redis`).
    pub dependency: Option<&'static str>,
    /// One line, naming the file and field where that helps.
    pub message: String,
}

impl LoadError {
    pub fn guest(message: impl Into<String>) -> Self {
        Self {
            fault: Fault::Guest,
            dependency: None,
            message: message.into(),
        }
    }

    pub fn operator(message: impl Into<String>) -> Self {
        Self {
            fault: Fault::Operator,
            dependency: None,
            message: message.into(),
        }
    }

    pub fn dependency(service: &'static str, message: impl Into<String>) -> Self {
        Self {
            fault: Fault::Dependency,
            dependency: Some(service),
            message: message.into(),
        }
    }

    pub fn host(message: impl Into<String>) -> Self {
        Self {
            fault: Fault::Host,
            dependency: None,
            message: message.into(),
        }
    }
}

/// What a capability's `load` reads: the app version being loaded and the
/// host-side state of every capability.
pub struct LoadContext<'a> {
    pub name: &'a Arc<str>,
    pub manifest: &'a Manifest,
    /// The component's WIT imports (`alorig:host/redis@0.1.0`, …).
    pub imports: &'a [String],
    /// The manifest's `[env]` plus the resolved `[secrets]`.
    pub env: Vec<(String, String)>,
    /// `validate`: check everything that needs no outside service.
    pub offline: bool,
    pub metrics: &'a Metrics,
    pub app_metrics: &'a AppMetrics,
    pub postgres: Option<&'a Arc<PostgresHost>>,
    pub redis: &'a RedisHost,
    pub timers: &'a Arc<TimersHost>,
    pub websocket: &'a Arc<Hub>,
    /// App directories and their usage (`[files]`).
    pub files: &'a FilesHost,
    /// The app's memory budget: what the host holds for it is charged there too.
    pub budget: &'a Arc<crate::limits::MemoryBudget>,
}

impl LoadContext<'_> {
    /// The manifest's file, for messages.
    pub fn source(&self) -> String {
        self.manifest.source.display().to_string()
    }

    /// Whether the component imports `interface` (any version).
    pub fn imports(&self, interface: &str) -> bool {
        imports(self.imports, interface)
    }
}

fn imports(imports: &[String], interface: &str) -> bool {
    imports
        .iter()
        .any(|i| i.split('@').next() == Some(interface))
}

/// An interface that works only with a manifest section: (interface, the
/// section, whether the manifest has it).
type SectionCheck = (&'static str, &'static str, fn(&Manifest) -> bool);

/// Interfaces that work only with a manifest section.
const SECTIONS: &[SectionCheck] = &[
    ("alorig:host/postgres", "[postgres] section", |m| {
        m.postgres.is_some()
    }),
    (
        "alorig:host/redis",
        "[redis] section (db and prefix)",
        |m| m.redis.is_some(),
    ),
];

/// A component that imports a capability its manifest does not configure is
/// refused at load, not at its first call.
pub fn check_sections(manifest: &Manifest, component_imports: &[String]) -> Result<(), LoadError> {
    for (interface, section, present) in SECTIONS {
        if imports(component_imports, interface) && !present(manifest) {
            return Err(LoadError::guest(format!(
                "{}: the component imports {interface} but the manifest has no {section}",
                manifest.source.display()
            )));
        }
    }
    Ok(())
}

/// One thing an app version may reach, for the deploy diff: `key` compares
/// versions (a key the live version lacks is a wider grant), `text` is what
/// the operator reads, `amount` a size it allows (a files quota): the same key
/// with a larger amount is a wider grant too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key: String,
    pub text: String,
    pub amount: Option<u64>,
}

impl Grant {
    /// Whether `old` already allowed all of this grant.
    pub fn covered_by(&self, old: &Grant) -> bool {
        old.key == self.key
            && match (self.amount, old.amount) {
                (Some(new), Some(old)) => new <= old,
                _ => true,
            }
    }
}

/// Everything the manifest's capability sections grant: one line per
/// capability that reaches outside the sandbox.
pub fn grants(manifest: &Manifest) -> Vec<Grant> {
    let mut grants = super::outbound_http::grants(manifest);
    grants.extend(super::postgres::grants(manifest));
    grants.extend(super::redis::grants(manifest));
    grants.extend(super::files::grants(manifest));
    grants
}
