//! Customers' own domains (`[custom_domains] enabled = true`): a request whose
//! `Host` no route claims may belong to an app that accepts tenant domains
//! (a Snapify shop on `silkhouse.pk`). The app is the authority on its tenants,
//! so the host asks it: `GET /.well-known/alorig/custom-domain` with that
//! `Host`, run like any request in a fresh instance; a 200 means "mine". The
//! answer is cached per name (known: 60 s, unknown: 10 s), so a store that
//! adds or drops its domain is seen within a minute without any host API.
//!
//! The same question answers Caddy's on-demand TLS (`GET /v1/tls/allowed?domain=`
//! on the admin listener), so a certificate is only ever requested for a name
//! some app serves.

use super::router::Router;
use crate::app::App;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The path an app with `[custom_domains]` answers (200 = the `Host` is one of its tenants).
pub const WELL_KNOWN: &str = "/.well-known/alorig/custom-domain";
const KNOWN_FOR: Duration = Duration::from_secs(60);
const UNKNOWN_FOR: Duration = Duration::from_secs(10);
/// Names remembered at once; past it the cache starts over (a flood of random
/// names costs one app request each, never unbounded memory).
const MAX_CACHED: usize = 10_000;

/// One remembered answer: the owning app (or none), and when it expires.
type Cached = (Option<Arc<str>>, Instant);

#[derive(Default)]
pub struct CustomDomains {
    /// name → its remembered answer
    cache: Mutex<HashMap<String, Cached>>,
}

impl CustomDomains {
    /// The app that claims `host` as a tenant domain, if any.
    pub async fn owner(&self, router: &Router, host: &str) -> Option<Arc<App>> {
        let candidates: Vec<&Arc<App>> = router
            .apps()
            .iter()
            .filter(|a| a.manifest.custom_domains)
            .collect();
        if candidates.is_empty() || host.is_empty() {
            return None;
        }
        let cached = self.cache.lock().ok().and_then(|c| c.get(host).cloned());
        if let Some((owner, until)) = cached
            && until > Instant::now()
        {
            return owner.and_then(|name| {
                candidates
                    .iter()
                    .find(|a| a.name == name)
                    .map(|a| (*a).clone())
            });
        }
        let mut found = None;
        for app in candidates {
            if ask(app, host).await {
                found = Some(app.clone());
                break;
            }
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            let until = Instant::now()
                + if found.is_some() {
                    KNOWN_FOR
                } else {
                    UNKNOWN_FOR
                };
            cache.insert(
                host.to_string(),
                (found.as_ref().map(|a| a.name.clone()), until),
            );
        }
        found
    }

    /// Whether Caddy may get a certificate for `domain`: a route's exact host,
    /// or a tenant domain an app claims.
    pub async fn allowed(&self, router: &Router, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return false;
        }
        let routed = router.apps().iter().any(|a| {
            a.manifest.routes.iter().any(|r| matches!(&r.host, crate::config::manifest::HostPattern::Exact(h) if *h == domain))
        });
        routed || self.owner(router, &domain).await.is_some()
    }
}

/// Runs the app's well-known request for `host`.
async fn ask(app: &Arc<App>, host: &str) -> bool {
    let Ok(request) = http::Request::get(WELL_KNOWN)
        .header(http::header::HOST, host)
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
    else {
        return false;
    };
    let response = super::invoke::invoke_boxed(app, request, Instant::now()).await;
    response.status() == 200
}
