//! The whole request path as end users take it: a real Caddy, configured by
//! `alorig-host caddyfile`, in front of the host: apps' domains, static sites
//! (SPA fallback, compression, prefixes, allow_from), WebSockets, the client's
//! address, and `caddyfile --apply` swapping routes in a running Caddy.

use crate::{
    deploy::echo_manifest,
    harness::{Host, manifest, run_cli},
};
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

pub struct Caddy(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start_caddy(caddyfile: &str, port: u16) -> Caddy {
    // No admin endpoint: parallel test runs must not fight over :2019.
    start_caddy_raw(&caddyfile.replacen("{\n", "{\n\tadmin off\n", 1), port)
}

fn start_caddy_raw(caddyfile: &str, port: u16) -> Caddy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, caddyfile).unwrap();
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting caddy (apt-get install caddy)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "caddy did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Caddy(child, dir)
}

/// A Caddy configured by `alorig-host caddyfile` for this one manifest, proxying
/// to `host`; the port it listens on (plain HTTP).
fn caddy_in_front(host: &Host, name: &str, manifest_text: &str) -> (Caddy, u16) {
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(manifests.path().join(format!("{name}.toml")), manifest_text).unwrap();
    let port = free_port();
    let (code, caddyfile, stderr) = run_cli(&[
        "caddyfile",
        "--manifests",
        manifests.path().to_str().unwrap(),
        "--upstream",
        &host.ingress.to_string(),
        "--http-port",
        &port.to_string(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    (start_caddy(&caddyfile, port), port)
}

fn get_via(port: u16, host: &str, path: &str) -> String {
    get_with(port, host, path, "")
}

/// A GET with extra header lines (each ending in \r\n); the raw answer, lossy text.
fn get_with(port: u16, host: &str, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of a response header in a raw answer.
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// Writes the manifests into a folder and runs `caddyfile` on it with `args`.
fn caddyfile(
    manifests: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in manifests {
        std::fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
    }
    let mut all = vec!["caddyfile", "--manifests", dir.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, out, err) = run_cli(&all);
    (code, out, err, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn end_users_reach_apps_and_static_files_through_caddy() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "<h1>frontend</h1>").unwrap();
    let hello = manifest(
        "hello",
        "hello",
        &format!(
            "[[routes]]\nhost = \"hello.test\"\n[[routes]]\nhost = \"shop.test\"\npath = \"/api\"\n[static]\nhost = \"shop.test\"\nroot = \"{}\"",
            site.path().display()
        ),
    );
    let host = Host::up(&[("hello", hello.clone())]);
    let (_caddy, port) = caddy_in_front(&host, "hello", &hello);

    let api = get_via(port, "hello.test", "/");
    assert!(
        api.starts_with("HTTP/1.1 200") && api.contains("Hello from alorig-host\n"),
        "{api}"
    );
    let shop_api = get_via(port, "shop.test", "/api/products");
    assert!(shop_api.contains("Hello from alorig-host\n"), "{shop_api}");
    let frontend = get_via(port, "shop.test", "/some/page");
    assert!(
        frontend.starts_with("HTTP/1.1 200") && frontend.contains("<h1>frontend</h1>"),
        "static files come from Caddy: {frontend}"
    );
    assert_eq!(
        host.metric("alorig_app_requests_total", "app=\"hello\",status=\"200\"")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_routes_upgrade_through_caddy() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};
    let (_, ws) = crate::websocket::ws_app("w", "");
    let host = Host::up(&[("w", ws.clone())]);
    let (_caddy, port) = caddy_in_front(&host, "w", &ws);

    let mut request = format!("ws://127.0.0.1:{port}/?group=g")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("host", "ws.test".parse().unwrap());
    let (mut client, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade through Caddy");
    client
        .send(Message::Text("through caddy".into()))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::Text("through caddy".into()));
    // A group message from the HTTP side reaches the client behind Caddy.
    let sent = host
        .request("POST", "api.test", "/broadcast?group=g", b"pushed".to_vec())
        .await;
    assert_eq!(sent.status, 200);
    let pushed = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pushed, Message::Text("pushed".into()));
}

/// TCP connections in /proc/net/tcp in `state` (hex, e.g. "06" TIME_WAIT) whose
/// (local port, remote port) pass `keep`.
fn tcp_sockets(state: &str, keep: impl Fn(u16, u16) -> bool) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
            .unwrap_or(0)
    };
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3 && f[3] == state && keep(port(f[1]), port(f[2]))
        })
        .count()
}

/// The host closes an idle keep-alive connection after `header_read_timeout`
/// (10 s); Caddy used to keep its upstream connections 2 min, so a request could
/// meet a connection the host was closing (a 502). The generated Caddyfile now
/// has Caddy close first: the side that closes first is the one whose socket
/// lingers in TIME_WAIT.
#[tokio::test(flavor = "multi_thread")]
async fn caddy_closes_idle_upstream_connections_before_the_host_does() {
    let hello = manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\"");
    let host = Host::up(&[("hello", hello.clone())]);
    let (_caddy, port) = caddy_in_front(&host, "hello", &hello);
    let ingress = host.ingress.port();
    for _ in 0..3 {
        let answer = get_via(port, "hello.test", "/");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Past Caddy's keepalive (5 s), well before the host's 10 s.
    tokio::time::sleep(alorig_host::caddyfile::UPSTREAM_KEEPALIVE + Duration::from_secs(2)).await;
    let caddy_closed = tcp_sockets("06", |_, remote| remote == ingress);
    let host_closed = tcp_sockets("06", |local, _| local == ingress)
        + tcp_sockets("08", |local, _| local == ingress);
    let still_open = tcp_sockets("01", |_, remote| remote == ingress);
    assert!(
        caddy_closed >= 1 && host_closed == 0 && still_open == 0,
        "Caddy must close idle upstream connections first: closed by Caddy {caddy_closed}, by the host {host_closed}, open {still_open}"
    );
    let answer = get_via(port, "hello.test", "/");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "after the idle period: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apps_a_static_spa_and_allow_from_behind_caddy_and_the_client_address_reaches_the_guest()
 {
    let spa = tempfile::tempdir().unwrap();
    std::fs::write(spa.path().join("index.html"), "<h1>spa shell</h1>").unwrap();
    // Big and repetitive: worth compressing.
    std::fs::write(
        spa.path().join("app.js"),
        "console.log('alorig');\n".repeat(2000),
    )
    .unwrap();
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(docs.path().join("index.html"), "<h1>docs</h1>").unwrap();
    let private = tempfile::tempdir().unwrap();
    std::fs::write(private.path().join("index.html"), "<h1>builder</h1>").unwrap();

    let hello = manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\"");
    let echo = echo_manifest(
        "echo",
        "echo.test",
        "1",
        &format!(
            "[[static]]\nhost = \"spa.test\"\nroot = \"{}\"\n\
             [[static]]\nhost = \"spa.test\"\npath = \"/docs\"\nroot = \"{}\"\nallow_from = [\"127.0.0.0/8\"]\n\
             [[static]]\nhost = \"echo.test\"\npath = \"/builder\"\nroot = \"{}\"\nallow_from = [\"203.0.113.0/24\"]\n",
            spa.path().display(),
            docs.path().display(),
            private.path().display()
        ),
    );
    let host = Host::up_with(
        &[("hello", hello.clone()), ("echo", echo.clone())],
        "trusted_proxies = [\"127.0.0.1\"]",
    );
    let port = free_port();
    let (code, text, err, _dir) = caddyfile(
        &[("hello", &hello), ("echo", &echo)],
        &[
            "--upstream",
            &host.ingress.to_string(),
            "--http-port",
            &port.to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let _caddy = start_caddy(&text, port);

    // Each domain reaches its own component.
    let a = get_via(port, "hello.test", "/");
    assert!(
        a.starts_with("HTTP/1.1 200") && a.contains("Hello from alorig-host"),
        "{a}"
    );
    let b = get_via(port, "echo.test", "/env/VERSION");
    assert!(
        b.starts_with("HTTP/1.1 200") && body(&b).ends_with('1'),
        "{b}"
    );
    assert_eq!(header(&b, "x-content-type-options"), Some("nosniff"), "{b}");
    assert!(
        header(&b, "x-frame-options").is_some() && header(&b, "server").is_none(),
        "{b}"
    );

    // The SPA: files, and the shell for any other path; compressed when asked.
    let deep = get_via(port, "spa.test", "/orders/42/edit");
    assert!(
        deep.starts_with("HTTP/1.1 200") && deep.contains("<h1>spa shell</h1>"),
        "{deep}"
    );
    let plain = get_via(port, "spa.test", "/app.js");
    assert!(
        plain.contains("console.log('alorig');") && header(&plain, "content-encoding").is_none(),
        "{plain}"
    );
    let gzip = get_with(port, "spa.test", "/app.js", "Accept-Encoding: gzip\r\n");
    assert_eq!(header(&gzip, "content-encoding"), Some("gzip"), "{gzip}");
    assert!(
        gzip.len() < 4000,
        "2000 repeated lines compress: {} bytes",
        gzip.len()
    );
    let zstd = get_with(port, "spa.test", "/app.js", "Accept-Encoding: zstd\r\n");
    assert_eq!(header(&zstd, "content-encoding"), Some("zstd"), "{zstd}");

    // Prefixes: allowed from loopback, refused from everyone else.
    let docs = get_via(port, "spa.test", "/docs/intro");
    assert!(
        docs.starts_with("HTTP/1.1 200") && docs.contains("<h1>docs</h1>"),
        "{docs}"
    );
    let refused = get_via(port, "echo.test", "/builder/");
    assert!(
        refused.starts_with("HTTP/1.1 403") && !refused.contains("<h1>builder</h1>"),
        "{refused}"
    );
    let beside = get_via(port, "echo.test", "/builderx");
    assert!(
        beside.starts_with("HTTP/1.1 200"),
        "/builderx is the app's, not the prefix's: {beside}"
    );

    // The guest sees the client's address (Caddy's client: loopback), never what a client claims.
    let seen = get_with(
        port,
        "echo.test",
        "/header/x-forwarded-for",
        "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n",
    );
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(body(&seen), "127.0.0.1", "{seen}");
    let proto = get_via(port, "echo.test", "/header/x-forwarded-proto");
    assert_eq!(body(&proto), "http", "{proto}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_from_an_untrusted_peer_are_replaced_by_its_address() {
    // No trusted_proxies: whoever connects is the client.
    let host = Host::up(&[("echo", echo_manifest("echo", "echo.test", "1", ""))]);
    let mut stream = TcpStream::connect(host.ingress).unwrap();
    write!(
        stream,
        "GET /header/x-forwarded-for HTTP/1.1\r\nHost: echo.test\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(body(&answer), "127.0.0.1", "{answer}");
    let mut stream = TcpStream::connect(host.ingress).unwrap();
    write!(stream, "GET /header/x-forwarded-proto HTTP/1.1\r\nHost: echo.test\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 404"),
        "a claimed scheme is dropped: {answer}"
    );
}

/// Requests to `host` through Caddy, one after another on pooled connections,
/// until `stop`: (answered 200 with the right body, failed, retried). Like a
/// browser, a GET that meets a keep-alive connection the server closed just as
/// it was sent (no answer at all) is sent again once, and counted as retried.
async fn load(
    port: u16,
    host: &'static str,
    expect: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64, u64) {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let (mut ok, mut failed, mut retried) = (0, 0, 0);
    while !stop.load(Ordering::Relaxed) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let req = http::Request::get(format!("http://127.0.0.1:{port}/"))
                .header("host", host)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            match client.request(req).await {
                Ok(resp) if resp.status() == 200 => match resp.into_body().collect().await {
                    Ok(b) => match String::from_utf8_lossy(&b.to_bytes()).contains(expect) {
                        true => ok += 1,
                        false => failed += 1,
                    },
                    Err(_) => failed += 1,
                },
                Ok(_) => failed += 1,
                Err(err) if attempts == 1 && !err.is_connect() => {
                    eprintln!("retrying once: {err:?}");
                    retried += 1;
                    continue;
                }
                Err(_) => failed += 1,
            }
            break;
        }
    }
    (ok, failed, retried)
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_swaps_routes_in_a_running_caddy_under_load_and_a_refused_config_changes_nothing() {
    let hello = manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\"");
    let echo = echo_manifest("echo", "echo.test", "7", "");
    let host = Host::up(&[("hello", hello.clone()), ("echo", echo.clone())]);
    let port = free_port();
    let admin = format!("http://127.0.0.1:{}", free_port());
    let common = [
        "--upstream",
        &host.ingress.to_string(),
        "--http-port",
        &port.to_string(),
        "--caddy-admin",
        &admin,
    ];

    // Caddy starts knowing only hello.
    let (code, first, err, _d1) = caddyfile(&[("hello", &hello)], &common);
    assert_eq!(code, 0, "{err}");
    assert!(
        first.contains(&format!(
            "\tadmin {}\n",
            admin.trim_start_matches("http://")
        )),
        "{first}"
    );
    let _caddy = start_caddy_raw(&first, port);
    assert!(!get_via(port, "echo.test", "/env/VERSION").ends_with("\r\n\r\n7"));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(load(
                port,
                "hello.test",
                "Hello from alorig-host",
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;

    // Both apps now, loaded through Caddy's admin API while hello is under load.
    let (code, out, err, _d2) = caddyfile(
        &[("hello", &hello), ("echo", &echo)],
        &[&common[..], &["--apply"]].concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("now serves the routes of 2 app(s)"), "{out}");
    let swapped = Instant::now();
    let mut echoed = get_via(port, "echo.test", "/env/VERSION");
    while !body(&echoed).ends_with('7') && swapped.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        echoed = get_via(port, "echo.test", "/env/VERSION");
    }
    assert!(
        echoed.starts_with("HTTP/1.1 200") && body(&echoed) == "7",
        "{echoed}"
    );

    // A config Caddy refuses (a DNS provider this Caddy lacks) is an error; the old one stays.
    let wildcard = manifest("wild", "hello", "[[routes]]\nhost = \"*.wild.test\"");
    let broken_config = tempfile::tempdir().unwrap();
    let config_path = broken_config.path().join("host.toml");
    std::fs::write(&config_path, "[caddy]\ndns_challenge = \"nonexistent\"\n").unwrap();
    let (code, _out, err, _d3) = caddyfile(
        &[("hello", &hello), ("echo", &echo), ("wild", &wildcard)],
        &[
            "--upstream",
            &host.ingress.to_string(),
            "--caddy-admin",
            &admin,
            "--config",
            config_path.to_str().unwrap(),
            "--apply",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.starts_with("error: Caddy refused the new config")
            && err.contains("previous config stays"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut ok, mut failed, mut retried) = (0, 0, 0);
    for worker in workers {
        let (o, f, r) = worker.await.unwrap();
        ok += o;
        failed += f;
        retried += r;
    }
    eprintln!(
        "caddyfile --apply under load: {ok} requests answered, {failed} failed, {retried} sent again after Caddy closed an idle keep-alive connection"
    );
    assert!(ok > 100, "the load ran: {ok}");
    assert_eq!(failed, 0, "requests failed while Caddy swapped its config");
    assert!(body(&get_via(port, "echo.test", "/env/VERSION")) == "7");
    assert!(get_via(port, "hello.test", "/").contains("Hello from alorig-host"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_load_their_routes_into_caddy_when_asked_to() {
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    // A Caddy with nothing but its admin API, as after installing it.
    let _caddy = start_caddy_raw(
        &format!(
            "{{\n\tadmin {admin}\n\tauto_https off\n\thttp_port {port}\n}}\nhttp://:{port} {{\n\trespond \"empty\"\n}}\n"
        ),
        port,
    );
    let data = tempfile::tempdir().unwrap();
    let host = Host::serve(
        data.path(),
        &format!(
            "trusted_proxies = [\"127.0.0.1\"]\n[caddy]\nadmin = \"http://{admin}\"\napply_on_deploy = true\nhttp_port = {port}\n"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.toml");
    std::fs::write(&path, echo_manifest("echo", "echo.test", "3", "")).unwrap();
    let (code, out, err) = host.cli(&["deploy", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{out}{err}");
    let answer = get_via(port, "echo.test", "/env/VERSION");
    assert!(
        answer.starts_with("HTTP/1.1 200") && body(&answer) == "3",
        "{answer}"
    );
    assert!(
        host.log().contains("Caddy now has the routes of 1 app(s)"),
        "{}",
        host.log()
    );

    let (code, _, err) = host.cli(&["remove", "echo"]);
    assert_eq!(code, 0, "{err}");
    // No site left: Caddy stops answering for echo.test (or stops listening at all).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let gone = match TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => get_via(port, "echo.test", "/env/VERSION"),
            Err(_) => String::new(),
        };
        if !gone.starts_with("HTTP/1.1 200") || body(&gone) != "3" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "echo.test is still routed after remove: {gone}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The production host.toml and the seeds' apps give a Caddyfile that Caddy
/// accepts (bar the DNS provider, which Debian's Caddy is built without).
#[test]
fn the_production_caddyfile_for_the_seed_apps_is_one_caddy_accepts() {
    let root = crate::harness::workspace_root();
    let seeds = [
        "psydge",
        "snapify",
        "sitebuilder",
        "observer",
        "astrotiming",
        "asms",
        "igny8",
        "igny8-staging",
    ];
    let files: Vec<String> = seeds
        .iter()
        .map(|s| {
            root.join(format!("manifests/{s}.toml"))
                .display()
                .to_string()
        })
        .collect();
    let config = root.join("deploy/infra/host.toml");
    let mut args = vec!["caddyfile", "--config", config.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let (code, text, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        !text.contains(".localhost"),
        "no demo app in production: {text}"
    );
    assert!(
        text.contains(
            "*.sites.alorig.com {\n\t# needs a Caddy built with github.com/caddy-dns/cloudflare"
        ),
        "{text}"
    );
    assert!(
        text.contains("\tadmin 127.0.0.1:2019\n") && text.contains("\temail ops@alorig.com\n"),
        "{text}"
    );
    assert!(text.contains("Strict-Transport-Security"), "{text}");
    let dns = "\ttls {\n\t\tdns cloudflare {env.CLOUDFLARE_API_TOKEN}\n\t}\n";
    assert!(text.contains(dns));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, text.replace(dns, "")).unwrap();
    let out = Command::new("caddy")
        .args(["adapt", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "caddy adapt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains("\"encodings\"") && json.contains("\"zstd\"") && json.contains("\"gzip\""),
        "{json}"
    );
}
