use super::*;

fn parse(text: &str) -> Result<Manifest> {
    Manifest::parse(Path::new("manifests/app.toml"), text)
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn contract_example_parses() {
    let m = parse(include_str!(
        "../../../tests/fixtures/contract-example.toml"
    ))
    .unwrap();
    assert_eq!(m.name.as_str(), "psydge");
    assert_eq!(
        m.component,
        Path::new("manifests/../target/wasm32-wasip2/release/psydge.wasm")
    );
    assert_eq!(m.resources.memory, ByteSize::mib(1750));
    assert_eq!(m.resources.instance_memory, ByteSize::mib(64));
    assert_eq!(m.resources.max_concurrency.get(), 256);
    assert_eq!(m.routes.len(), 2);
    assert!(m.routes[1].websocket);
    assert_eq!(m.redis.as_ref().unwrap().prefix, "psydge:");
    assert_eq!(m.timers.len(), 2);
    assert!(matches!(m.timers[1].schedule, Schedule::Every(d) if d == Duration::from_secs(5)));
    let files = m.files.as_ref().unwrap();
    assert_eq!((files.quota, files.read_only), (ByteSize::gib(2), false));
    assert_eq!(
        m.secrets["ANTHROPIC_API_KEY"].env,
        "PSYDGE_ANTHROPIC_API_KEY"
    );
}

#[test]
fn minimal_manifest_gets_defaults() {
    let m = parse("name = \"a\"\ncomponent = \"a.wasm\"\n").unwrap();
    assert_eq!(m.resources.memory, DEFAULT_MEMORY);
    assert_eq!(m.resources.instance_memory, DEFAULT_MEMORY);
    assert_eq!(m.resources.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert!(m.outbound_http.allowed.is_empty());
}

#[test]
fn every_bad_manifest_in_the_fixtures_gets_its_expected_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-manifests");
    let (mut checked, mut expectations) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "err") {
            expectations += 1;
        }
        if path.extension().is_some_and(|e| e == "toml") {
            let expected = std::fs::read_to_string(path.with_extension("err")).unwrap();
            let err = Manifest::load(&path).unwrap_err().to_string();
            let name = path.file_name().unwrap().to_string_lossy();
            let expected = expected
                .trim()
                .replace("{file}", &format!("{}/{name}", dir.display()));
            assert_eq!(err, expected, "fixture {name}");
            checked += 1;
        }
    }
    // Every expected error has its manifest, and none of the 19 fixtures went missing.
    assert_eq!(
        checked,
        expectations,
        "a .err without its .toml in {}",
        dir.display()
    );
    assert!(checked >= 19, "only {checked} fixtures found");
}

#[test]
fn names_hosts_and_prefixes_are_checked() {
    assert!(
        error("name = \"Psydge\"\ncomponent = \"a.wasm\"").contains("must be 1 to 32 characters")
    );
    let e = error("name = \"a\"\ncomponent = \"a.wasm\"\n[[routes]]\nhost = \"https://x.com\"");
    assert!(
        e.contains("app.toml:4:") && e.contains("must be a host name"),
        "{e}"
    );
    assert!(
        HostPattern::try_from("*.sites.alorig.com".to_string())
            .unwrap()
            .matches("a.sites.alorig.com")
    );
    assert!(
        !HostPattern::try_from("*.sites.alorig.com".to_string())
            .unwrap()
            .matches("sites.alorig.com")
    );
    for public in ["*.com", "*.co.uk", "*.test", "*.github.io", "*.localhost"] {
        let e = HostPattern::try_from(public.to_string()).unwrap_err();
        assert!(e.contains("is a public suffix"), "{public}: {e}");
    }
    assert!(HostPattern::try_from("*.example.co.uk".to_string()).is_ok());
    assert!(HostPattern::try_from("*.echo.test".to_string()).is_ok());
}

#[test]
fn allowed_origins_parse_with_default_ports_and_match_exactly() {
    let a = AllowedOrigin::parse("https://api.anthropic.com").unwrap();
    assert!(a.covers(true, "api.anthropic.com", 443));
    assert!(!a.covers(false, "api.anthropic.com", 80), "scheme matters");
    assert!(!a.covers(true, "api.anthropic.com", 8443), "port matters");
    assert!(!a.covers(true, "evil.api.anthropic.com", 443));
    let w = AllowedOrigin::parse("https://*.stripe.com").unwrap();
    assert!(w.covers(true, "api.stripe.com", 443) && !w.covers(true, "stripe.com", 443));
    let ip = AllowedOrigin::parse("http://127.0.0.1:9000").unwrap();
    assert!(ip.covers(false, "127.0.0.1", 9000) && !ip.covers(false, "localhost", 9000));
    let v6 = AllowedOrigin::parse("http://[::1]:9000").unwrap();
    assert!(v6.covers(false, "::1", 9000));
    let any = AllowedOrigin::parse("https://*").unwrap();
    assert!(
        any.any_host
            && any.covers(true, "blog.customer.pk", 443)
            && any.covers(true, "1.1.1.1", 443)
    );
    assert!(
        !any.covers(false, "blog.customer.pk", 80) && !any.covers(true, "blog.customer.pk", 8443),
        "scheme and port still matter"
    );
    for bad in [
        "api.openai.com",
        "ftp://x.com",
        "https://x.com/path",
        "https://u@x.com",
        "https://x.com:99999",
        "https://*x.com",
        "https://**",
    ] {
        assert!(AllowedOrigin::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn websocket_limits_have_defaults_and_take_the_manifest() {
    let m = parse("name = \"a\"\ncomponent = \"a.wasm\"\n").unwrap();
    assert_eq!(m.websocket.max_connections.get(), 10_000);
    assert_eq!(m.websocket.max_message, ByteSize(64 * 1024));
    assert_eq!(m.websocket.max_connections_per, LimitScope::Cluster);
    let per_host = parse(
        "name = \"a\"\ncomponent = \"a.wasm\"\n[websocket]\nmax_connections_per = \"host\"\n",
    )
    .unwrap();
    assert_eq!(per_host.websocket.max_connections_per, LimitScope::Host);
    let m = parse(
        "name = \"a\"\ncomponent = \"a.wasm\"\n[websocket]\nmax_connections = 5\nmax_message = \"1KiB\"\nping_interval = \"250ms\"\nsend_queue = 8\nsend_timeout = \"1s\"\n",
    )
    .unwrap();
    let ws = &m.websocket;
    assert_eq!(
        (
            ws.max_connections.get(),
            ws.max_message,
            ws.send_queue.get()
        ),
        (5, ByteSize(1024), 8)
    );
    assert_eq!(
        (ws.ping_interval, ws.send_timeout),
        (Duration::from_millis(250), Duration::from_secs(1))
    );
}

#[test]
fn route_prefixes_are_normalized() {
    assert_eq!(normalize_prefix("/api/"), "/api");
    assert_eq!(normalize_prefix("/"), "/");
}

/// Found with the `manifest` fuzz target's oracle: a route path is written into
/// the Caddyfile as it is, so a newline, brace or blank in it could close the
/// app's site block and open one of the manifest author's (here, a public site
/// proxying to the host's admin listener). Refused like a static site's path.
#[test]
fn route_paths_cannot_write_caddyfile_syntax() {
    for path in [
        "/a{",
        "/a}",
        "/a\\n}\\nevil.test\\t{\\nreverse_proxy\\t127.0.0.1:9090\\n}",
        "/a\\tb",
        "/a\\\"b",
        "/a'b",
        "/a\\\\b",
        "/a\\u0000",
    ] {
        let text = format!(
            "name = \"a\"\ncomponent = \"a.wasm\"\n[[routes]]\nhost = \"a.test\"\npath = \"{path}\"\n"
        );
        let err = parse(&text).expect_err(path).to_string();
        assert!(
            err.contains("must be a path starting with /"),
            "{path}: {err}"
        );
    }
    assert!(parse("name = \"a\"\ncomponent = \"a.wasm\"\n[[routes]]\nhost = \"a.test\"\npath = \"/api/v1-x_y.z~\"\n").is_ok());
}
