//! F4: the front door's Host/URL checks and the route host patterns.
//! Oracle: no panic; a request is routed by exactly one normalised host (no
//! port, no uppercase, no empty label); a wildcard only matches names strictly
//! below its domain; an exact pattern only its own name.
#![no_main]

use alorig_host::{config::manifest::HostPattern, ingress::strict};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    hosts: Vec<&'a [u8]>,
    target: &'a str,
    pattern: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let mut request = http::Request::builder().uri(input.target);
    for host in input.hosts.iter().take(4) {
        request = request.header(http::header::HOST, *host);
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let routed = strict::check(&request);
    if let Ok(host) = &routed {
        assert_eq!(
            request.headers().get_all(http::header::HOST).iter().count(),
            1
        );
        assert!(!host.is_empty() && !host.ends_with('.'), "{host:?}");
        assert_eq!(host, &host.to_ascii_lowercase());
        if !host.contains(':') {
            assert!(host.split('.').all(|label| !label.is_empty()), "{host:?}");
        }
    }
    if let Ok(pattern) = HostPattern::try_from(input.pattern.to_string())
        && let Ok(host) = routed
    {
        match &pattern {
            HostPattern::Exact(name) => assert_eq!(pattern.matches(&host), *name == host),
            HostPattern::Wildcard(suffix) => {
                if pattern.matches(&host) {
                    assert!(host.len() > suffix.len() && host.ends_with(suffix.as_str()));
                    assert!(
                        host[..host.len() - suffix.len()]
                            .split('.')
                            .all(|l| !l.is_empty()),
                        "{host:?} under {suffix:?}"
                    );
                }
            }
        }
    }
});
