//! The whole request path as end users take it: a real Caddy, configured by
//! `alorig-host caddyfile`, in front of the host.

use crate::harness::{Host, manifest, run_cli};
use std::{io::{Read as _, Write as _}, net::TcpStream, process::{Child, Command, Stdio}, time::{Duration, Instant}};

struct Caddy(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_caddy(caddyfile: &str, port: u16) -> Caddy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Caddyfile");
    // No admin endpoint: parallel test runs must not fight over :2019.
    std::fs::write(&path, caddyfile.replacen("{\n", "{\n\tadmin off\n", 1)).unwrap();
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
        assert!(Instant::now() < deadline, "caddy did not start listening on {port}");
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
        "--manifests", manifests.path().to_str().unwrap(),
        "--upstream", &host.ingress.to_string(),
        "--http-port", &port.to_string(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    (start_caddy(&caddyfile, port), port)
}

fn get_via(port: u16, host: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn end_users_reach_apps_and_static_files_through_caddy() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "<h1>frontend</h1>").unwrap();
    let hello = manifest(
        "hello",
        "hello",
        &format!("[[routes]]\nhost = \"hello.test\"\n[[routes]]\nhost = \"shop.test\"\npath = \"/api\"\n[static]\nhost = \"shop.test\"\nroot = \"{}\"", site.path().display()),
    );
    let host = Host::up(&[("hello", hello.clone())]);
    let (_caddy, port) = caddy_in_front(&host, "hello", &hello);

    let api = get_via(port, "hello.test", "/");
    assert!(api.starts_with("HTTP/1.1 200") && api.contains("Hello from alorig-host\n"), "{api}");
    let shop_api = get_via(port, "shop.test", "/api/products");
    assert!(shop_api.contains("Hello from alorig-host\n"), "{shop_api}");
    let frontend = get_via(port, "shop.test", "/some/page");
    assert!(frontend.starts_with("HTTP/1.1 200") && frontend.contains("<h1>frontend</h1>"), "static files come from Caddy: {frontend}");
    assert_eq!(host.metric("alorig_app_requests_total", "app=\"hello\",status=\"200\"").await, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_routes_upgrade_through_caddy() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};
    let (_, ws) = crate::websocket::ws_app("w", "");
    let host = Host::up(&[("w", ws.clone())]);
    let (_caddy, port) = caddy_in_front(&host, "w", &ws);

    let mut request = format!("ws://127.0.0.1:{port}/?group=g").into_client_request().unwrap();
    request.headers_mut().insert("host", "ws.test".parse().unwrap());
    let (mut client, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade through Caddy");
    client.send(Message::Text("through caddy".into())).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), client.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::Text("through caddy".into()));
    // A group message from the HTTP side reaches the client behind Caddy.
    let sent = host.request("POST", "api.test", "/broadcast?group=g", b"pushed".to_vec()).await;
    assert_eq!(sent.status, 200);
    let pushed = tokio::time::timeout(Duration::from_secs(10), client.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pushed, Message::Text("pushed".into()));
}

/// TCP connections in /proc/net/tcp in `state` (hex, e.g. "06" TIME_WAIT) whose
/// (local port, remote port) pass `keep`.
fn tcp_sockets(state: &str, keep: impl Fn(u16, u16) -> bool) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()).unwrap_or(0);
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
    let host_closed = tcp_sockets("06", |local, _| local == ingress) + tcp_sockets("08", |local, _| local == ingress);
    let still_open = tcp_sockets("01", |_, remote| remote == ingress);
    assert!(caddy_closed >= 1 && host_closed == 0 && still_open == 0,
        "Caddy must close idle upstream connections first: closed by Caddy {caddy_closed}, by the host {host_closed}, open {still_open}");
    let answer = get_via(port, "hello.test", "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "after the idle period: {answer}");
}
