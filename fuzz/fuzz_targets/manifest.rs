//! F1: any text as an app manifest. Oracle: no panic; an accepted manifest has
//! every duration and size within the host's bounds, no wildcard route over a
//! public suffix, no glob in its Redis prefix, route paths that are single
//! Caddyfile tokens, and renders a Caddyfile with balanced braces.
#![no_main]

use alorig_host::caddyfile::Options;
use alorig_host::config::{
    Manifest,
    manifest::HostPattern,
    units::{MAX_DURATION, MAX_SIZE},
};
use libfuzzer_sys::fuzz_target;
use std::{path::Path, sync::LazyLock};

fuzz_target!(|text: &str| {
    let Ok(m) = Manifest::parse(Path::new("fuzz/app.toml"), text) else {
        return;
    };
    let r = &m.resources;
    assert!(r.request_timeout <= MAX_DURATION && !r.request_timeout.is_zero());
    assert!(r.memory <= MAX_SIZE && r.max_body <= MAX_SIZE && r.instance_memory <= r.memory);
    for t in &m.timers {
        assert!(t.timeout <= MAX_DURATION && !t.timeout.is_zero());
        if let alorig_host::config::manifest::Schedule::Every(every) = t.schedule {
            assert!(every <= MAX_DURATION && !every.is_zero());
        }
    }
    assert!(m.jobs.backoff <= m.jobs.max_backoff && m.jobs.max_backoff <= MAX_DURATION);
    for route in &m.routes {
        if let HostPattern::Wildcard(suffix) = &route.host {
            assert!(
                psl_ok(&suffix[1..]),
                "wildcard over a public suffix accepted: {suffix}"
            );
        }
        assert!(route.path.starts_with('/'));
    }
    if let Some(redis) = &m.redis {
        // The prefix becomes the ACL key pattern `~<prefix>*`: no glob of its own.
        assert!(
            !redis.prefix.contains(['*', '?', '[', ']', '\\']),
            "{:?}",
            redis.prefix
        );
    }
    // Every route's path is one Caddyfile token: nothing in it can end the
    // site block or start a directive of the manifest author's.
    for route in &m.routes {
        assert!(
            !route.path.contains(|c: char| {
                "{}\"'\\#".contains(c) || c.is_whitespace() || c.is_control()
            }),
            "route path {:?} would be written into the Caddyfile as is",
            route.path
        );
    }
    let caddyfile = alorig_host::caddyfile::render(std::slice::from_ref(&m), &OPTIONS);
    assert_eq!(
        caddyfile.matches('{').count(),
        caddyfile.matches('}').count(),
        "{caddyfile}"
    );
});

static OPTIONS: LazyLock<Options> = LazyLock::new(|| Options {
    upstream: "127.0.0.1:8080".into(),
    http_port: None,
    caddy_admin: None,
    email: None,
    dns_challenge: None,
    ask: Some("http://127.0.0.1:9090/v1/tls/allowed".into()),
    upstreams: vec![],
});

/// The wildcard's domain is not itself a public suffix (the parser's rule,
/// checked again through the same list).
fn psl_ok(domain: &str) -> bool {
    HostPattern::try_from(format!("*.{domain}")).is_ok()
}
