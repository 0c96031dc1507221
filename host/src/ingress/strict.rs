//! What a request must look like before any app sees it, when no proxy has
//! cleaned it up (RFC 9112/9110): exactly one valid `Host`, a URL and a header
//! section of bounded size. Caddy already refuses most of this; the host must
//! not depend on being behind it.
//!
//! | request                                        | answer |
//! |------------------------------------------------|--------|
//! | no `Host`, two `Host`s, an invalid one          | 400    |
//! | (`a.test:99999`, `a.test...`, `a b`, `a.test:x`) |        |
//! | URL longer than [`MAX_URL_BYTES`]               | 414    |
//! | header fields past [`MAX_FIELD_BYTES`] in all   | 431    |
//!
//! hyper answers 431 itself for a head past [`MAX_HEAD_BYTES`], 400 for what it
//! cannot parse, and refuses smuggling shapes (`Content-Length` with
//! `Transfer-Encoding`, duplicate differing lengths, obs-fold). A bare LF as a line
//! end is accepted, as RFC 9112 §2.2 allows and as Caddy does: front and back
//! agree, which is what prevents smuggling.

use super::invoke::{Response, plain};

/// The request target; past it, 414.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Header names and values together; past it, 431.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// What hyper buffers for a request head: room for a too-long URL and too many
/// headers to be answered 414/431 here rather than cut off blind.
pub const MAX_HEAD_BYTES: usize = 2 * MAX_FIELD_BYTES + 2 * MAX_URL_BYTES;

/// The lowercase host (no port, no trailing dot) to route by, or the answer for
/// a request that must not reach any app.
// The Err is the response itself, sent as it is: boxing it would allocate on
// every refusal to save a copy on a path that copies a whole request head.
#[allow(clippy::result_large_err)]
pub fn check<B>(req: &http::Request<B>) -> Result<String, Response> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    if target > MAX_URL_BYTES {
        return Err(plain(414, "URL too long\n"));
    }
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if fields > MAX_FIELD_BYTES {
        return Err(plain(431, "request header fields too large\n"));
    }
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(plain(400, "a request needs exactly one Host header\n"));
    };
    // An absolute-form target names the host itself; `Host` must then agree.
    let host = host.to_str().ok().and_then(parse_authority);
    let Some(host) = host else {
        return Err(plain(400, "invalid Host header\n"));
    };
    if let Some(authority) = req.uri().authority()
        && parse_authority(authority.as_str()).as_deref() != Some(host.as_str())
    {
        return Err(plain(400, "the URL's host and the Host header differ\n"));
    }
    Ok(host)
}

/// `name[:port]` or `[v6]:port` → the lowercase name without its port or one
/// trailing dot; `None` for anything else.
pub fn parse_authority(raw: &str) -> Option<String> {
    let (name, port) = match raw.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            return valid_port(port).then(|| v6.to_ascii_lowercase());
        }
        None => match raw.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        },
    };
    if !valid_port(port) {
        return None;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (name.len() <= 253 && name.split('.').all(label_ok)).then(|| name.to_ascii_lowercase())
}

/// Absent, or 1 to 5 digits up to 65535.
fn valid_port(port: Option<&str>) -> bool {
    port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(build: http::request::Builder) -> u16 {
        match check(&build.body(()).unwrap()) {
            Ok(_) => 200,
            Err(response) => response.status().as_u16(),
        }
    }

    #[test]
    fn hosts_are_checked_before_routing() {
        for good in [
            "a.test",
            "A.Test:8080",
            "a.test.",
            "[::1]:80",
            "127.0.0.1",
            "x_y.test",
        ] {
            assert!(parse_authority(good).is_some(), "{good}");
        }
        assert_eq!(
            parse_authority("API.Psydge.com.:443").as_deref(),
            Some("api.psydge.com")
        );
        for bad in [
            "",
            "a.test:99999",
            "a.test...",
            "a..test",
            ".a.test",
            "a.test:",
            "a.test:x",
            "a b",
            "a.test:80:80",
            "[::1",
            "[zz]:80",
            "a/b",
            "a.test:+80",
            "a.test:080800",
        ] {
            assert!(parse_authority(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn one_host_a_bounded_url_and_bounded_headers() {
        let get = || http::Request::builder().uri("/");
        assert_eq!(status(get().header("host", "a.test")), 200);
        assert_eq!(status(get()), 400, "missing Host");
        assert_eq!(
            status(get().header("host", "a.test").header("host", "b.test")),
            400,
            "two Hosts"
        );
        assert_eq!(status(get().header("host", "a.test:99999")), 400);
        let long = format!("/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(
            status(
                http::Request::builder()
                    .uri(long.as_str())
                    .header("host", "a.test")
            ),
            414
        );
        let mut many = get().header("host", "a.test");
        for i in 0..100 {
            many = many.header(format!("x-{i}"), "v".repeat(1000));
        }
        assert_eq!(status(many), 431);
        let absolute = || http::Request::builder().uri("http://a.test/x");
        assert_eq!(status(absolute().header("host", "a.test")), 200);
        assert_eq!(
            status(absolute().header("host", "b.test")),
            400,
            "absolute-form and Host disagree"
        );
    }
}
