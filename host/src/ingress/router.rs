//! Picks the app for a request: by `Host` (exact, or `*.domain` wildcard) and the
//! longest path prefix, matched on whole path segments. On equal prefixes an
//! exact host beats a wildcard, and a longer wildcard beats a shorter one.

use crate::{app::App, config::manifest::HostPattern};
use anyhow::{Result, bail};
use std::{cmp::Reverse, collections::HashMap, sync::Arc};

struct Entry {
    prefix: String,
    app: Arc<App>,
    /// The route upgrades to WebSocket connections.
    websocket: bool,
}

#[derive(Default)]
pub struct Router {
    /// Routes by exact host, longest prefix first.
    exact: HashMap<String, Vec<Entry>>,
    /// (suffix with its leading dot, route), longest suffix first.
    wildcard: Vec<(String, Entry)>,
    apps: Vec<Arc<App>>,
}

/// Refuses two manifests claiming the same host and path (what [`Router::new`]
/// checks, before any app is compiled).
pub fn check_routes(manifests: &[&crate::config::Manifest]) -> Result<()> {
    let mut claimed: HashMap<(String, String), &str> = HashMap::new();
    for manifest in manifests {
        for route in &manifest.routes {
            let key = (route.host.to_string(), route.path.clone());
            if let Some(owner) = claimed.insert(key.clone(), manifest.name.as_str()) {
                bail!(
                    "route {}{} is claimed by both {owner} and {} (in {})",
                    key.0,
                    key.1,
                    manifest.name,
                    manifest.source.display()
                );
            }
        }
    }
    Ok(())
}

impl Router {
    /// Builds the table; two apps claiming the same host and path is an error.
    pub fn new(apps: Vec<Arc<App>>) -> Result<Self> {
        let mut router = Router::default();
        let mut claimed: HashMap<(String, String), Arc<str>> = HashMap::new();
        for app in &apps {
            for route in &app.manifest.routes {
                let key = (route.host.to_string(), route.path.clone());
                if let Some(owner) = claimed.insert(key.clone(), app.name.clone()) {
                    bail!(
                        "route {}{} is claimed by both {owner} and {} (in {})",
                        key.0,
                        key.1,
                        app.name,
                        app.manifest.source.display()
                    );
                }
                let entry = Entry {
                    prefix: route.path.clone(),
                    app: app.clone(),
                    websocket: route.websocket,
                };
                match &route.host {
                    HostPattern::Exact(host) => {
                        router.exact.entry(host.clone()).or_default().push(entry)
                    }
                    HostPattern::Wildcard(suffix) => router.wildcard.push((suffix.clone(), entry)),
                }
            }
        }
        for entries in router.exact.values_mut() {
            entries.sort_by_key(|e| Reverse(e.prefix.len()));
        }
        router
            .wildcard
            .sort_by_key(|(suffix, e)| Reverse((e.prefix.len(), suffix.len())));
        router.apps = apps;
        Ok(router)
    }

    pub fn apps(&self) -> &[Arc<App>] {
        &self.apps
    }

    /// The app serving `host` (lowercase, without port) and `path`.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<App>> {
        self.route_kind(host, path).map(|(app, _)| app)
    }

    /// Like [`Router::route`], with whether the route is `websocket = true`.
    pub fn route_kind(&self, host: &str, path: &str) -> Option<(&Arc<App>, bool)> {
        let exact = self
            .exact
            .get(host)
            .and_then(|entries| entries.iter().find(|e| prefix_matches(&e.prefix, path)));
        let wildcard = self
            .wildcard
            .iter()
            .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, entry)| entry)
            .find(|e| prefix_matches(&e.prefix, path));
        let entry = match (exact, wildcard) {
            (Some(e), Some(w)) if w.prefix.len() > e.prefix.len() => Some(w),
            (Some(e), _) => Some(e),
            (None, w) => w,
        };
        entry.map(|e| (&e.app, e.websocket))
    }
}

/// `/api` matches `/api` and `/api/x`, not `/apix`; `/` matches everything.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The request's host, lowercased and without a port.
pub fn request_host<B>(req: &http::Request<B>) -> Option<String> {
    let raw = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())?;
    // `name:port`, or `[v6]:port` for an IP literal.
    let host = match raw.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => raw.split(':').next().unwrap_or(raw),
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apix"));
    }

    #[test]
    fn hosts_lose_their_port_and_case() {
        let req = |host: &str| {
            http::Request::builder()
                .header("host", host)
                .body(())
                .unwrap()
        };
        assert_eq!(
            request_host(&req("API.Psydge.com:8080")).unwrap(),
            "api.psydge.com"
        );
        assert_eq!(
            request_host(&req("api.psydge.com")).unwrap(),
            "api.psydge.com"
        );
        assert_eq!(
            request_host(&req("api.psydge.com.")).unwrap(),
            "api.psydge.com"
        );
    }
}
