//! F1: any text as an app manifest. Oracle: no panic; an accepted manifest has
//! every duration and size within the host's bounds, no wildcard route over a
//! public suffix, and renders a Caddyfile without panicking.
#![no_main]

use alorig_host::config::{
    Manifest,
    manifest::HostPattern,
    units::{MAX_DURATION, MAX_SIZE},
};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

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
    let _ = alorig_host::caddyfile::render(std::slice::from_ref(&m), "127.0.0.1:8080", None);
});

/// The wildcard's domain is not itself a public suffix (the parser's rule,
/// checked again through the same list).
fn psl_ok(domain: &str) -> bool {
    HostPattern::try_from(format!("*.{domain}")).is_ok()
}
