//! Configuration, decoded at the edge: the operator's `host.toml` (with `ALORIG_*`
//! environment overrides) and the apps' manifests are separate types, each parsed
//! once into validated values; nothing past this module sees raw strings.

pub mod host;
pub mod manifest;
pub mod units;

pub use host::{ClusterKey, HostConfig};
pub use manifest::Manifest;
pub use units::{ByteSize, HumanDuration};

use std::path::Path;

/// Turns a TOML error into one line naming the file and line: `file:line: message`.
pub(crate) fn toml_error(path: &Path, source: &str, err: &toml::de::Error) -> anyhow::Error {
    let message = err.message().trim_end_matches('\n').replace('\n', " ");
    match err.span() {
        Some(span) => {
            let line = source[..span.start.min(source.len())].matches('\n').count() + 1;
            anyhow::anyhow!("{}:{line}: {message}", path.display())
        }
        None => anyhow::anyhow!("{}: {message}", path.display()),
    }
}
