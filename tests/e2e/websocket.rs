//! WebSockets with a real client (tokio-tungstenite) against the real host:
//! echo, groups, two hosts sharing a real Redis, 10,000 idle connections and
//! what they cost, clients that never read, and every limit.

use crate::{
    harness::{Host, allow_open_files, manifest, validate_error},
    redis_server::RedisServer,
};
use futures::{SinkExt as _, StreamExt as _};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self, Message, client::IntoClientRequest as _, protocol::frame::coding::CloseCode,
    },
};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A manifest for the test guest, reachable as `ws.test` (WebSocket) and
/// `api.test` (HTTP), with extra `[websocket]` lines.
pub fn ws_app(name: &str, websocket: &str) -> (String, String) {
    let text = manifest(
        name,
        "test-websocket",
        &format!(
            "[[routes]]\nhost = \"ws.test\"\nwebsocket = true\n[[routes]]\nhost = \"api.test\"\n[websocket]\n{websocket}"
        ),
    );
    (name.to_string(), text)
}

fn up(apps: &[(String, String)], host_toml: &str) -> Host {
    let manifests: Vec<(&str, String)> =
        apps.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    Host::up_with(&manifests, host_toml)
}

/// Opens a WebSocket to `ws.test` on `addr`'s ingress with `path` (and query).
pub async fn try_connect(addr: std::net::SocketAddr, path: &str) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("host", "ws.test".parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

async fn connect(host: &Host, path: &str) -> Ws {
    try_connect(host.ingress, path)
        .await
        .expect("WebSocket upgrade")
}

/// The status an upgrade was refused with.
async fn refused(host: &Host, path: &str) -> u16 {
    match try_connect(host.ingress, path).await {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("the upgrade to {path} was accepted"),
        Err(other) => panic!("the upgrade to {path} failed otherwise: {other}"),
    }
}

/// The next data or close message (pings are answered by the client library).
pub async fn next(ws: &mut Ws) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

async fn text(ws: &mut Ws) -> String {
    match next(ws).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn say(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// Echoes a fresh token through `ws`: proves nothing else was waiting before it.
async fn nothing_else_arrived(ws: &mut Ws) {
    say(ws, "sentinel").await;
    assert_eq!(
        text(ws).await,
        "sentinel",
        "a message arrived that was not meant for this connection"
    );
}

/// The close code a connection ended with.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the end within 10 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_close_and_plain_http_on_a_websocket_route() {
    let host = up(&[ws_app("w", "")], "");
    let mut ws = connect(&host, "/chat").await;
    say(&mut ws, "hello").await;
    assert_eq!(text(&mut ws).await, "hello");
    let bytes: Vec<u8> = (0..=255u8).collect();
    ws.send(Message::Binary(bytes.clone().into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::Binary(bytes.into()));
    assert_eq!(
        host.wait_metric("alorig_app_ws_connections", "app=\"w\"", 1.0)
            .await,
        1.0
    );
    // The app closes it.
    say(&mut ws, "close").await;
    assert_eq!(close_code(&mut ws).await, Some(4000));
    assert_eq!(
        host.wait_metric("alorig_app_ws_connections", "app=\"w\"", 0.0)
            .await,
        0.0
    );
    assert_eq!(
        host.metric("alorig_app_ws_messages_total", "app=\"w\",direction=\"in\"")
            .await,
        3.0
    );
    assert_eq!(
        host.metric(
            "alorig_app_ws_messages_total",
            "app=\"w\",direction=\"out\""
        )
        .await,
        2.0
    );
    assert_eq!(
        host.metric("alorig_app_requests_total", "app=\"w\",status=\"101\"")
            .await,
        1.0
    );

    // A plain request to the route is told what it takes.
    let plain = host.get("ws.test", "/chat").await;
    assert_eq!(plain.status, 426, "{}", plain.text());
    assert_eq!(plain.headers["upgrade"], "websocket");
    // The client closing is seen too.
    let mut ws = connect(&host, "/").await;
    ws.close(None).await.unwrap();
    assert_eq!(
        host.wait_metric("alorig_app_ws_connections", "app=\"w\"", 0.0)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_message_reaches_exactly_its_members() {
    let other = manifest(
        "other",
        "test-websocket",
        "[[routes]]\nhost = \"ws-other.test\"\nwebsocket = true",
    );
    let host = up(&[ws_app("w", ""), ("other".to_string(), other)], "");
    let mut a = connect(&host, "/?group=g1").await;
    let mut b = connect(&host, "/?group=g1&group=g2").await;
    let mut c = connect(&host, "/").await;
    // Another app's group of the same name is another group.
    let mut other = {
        let mut request = format!("ws://{}/?group=g1", host.ingress)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("host", "ws-other.test".parse().unwrap());
        tokio_tungstenite::connect_async(request).await.unwrap().0
    };

    let sent = host
        .request("POST", "api.test", "/broadcast?group=g1", b"to g1".to_vec())
        .await;
    assert_eq!((sent.status, sent.text().as_str()), (200, "sent 1"));
    assert_eq!(text(&mut a).await, "to g1");
    assert_eq!(text(&mut b).await, "to g1");
    for ws in [&mut a, &mut b, &mut c, &mut other] {
        nothing_else_arrived(ws).await;
    }

    // From a connection's own message, to g2: only b.
    say(&mut c, "group:g2:to g2").await;
    assert_eq!(text(&mut b).await, "to g2");
    for ws in [&mut a, &mut b, &mut c] {
        nothing_else_arrived(ws).await;
    }

    // Leaving and joining change who gets the next one.
    say(&mut b, "leave:g1").await;
    assert_eq!(text(&mut b).await, "left:g1");
    say(&mut c, "join:g1").await;
    assert_eq!(text(&mut c).await, "joined:g1");
    host.request("POST", "api.test", "/broadcast?group=g1", b"again".to_vec())
        .await;
    assert_eq!(text(&mut a).await, "again");
    assert_eq!(text(&mut c).await, "again");
    for ws in [&mut a, &mut b, &mut c, &mut other] {
        nothing_else_arrived(ws).await;
    }

    // Group names are checked.
    say(&mut a, "join:bad group!").await;
    assert!(text(&mut a).await.starts_with("invalid: a group name is"));
    // A closed connection leaves its groups.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.metric("alorig_app_ws_connections", "app=\"w\"").await != 2.0 {
        assert!(
            Instant::now() < deadline,
            "the dropped connection was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.request("POST", "api.test", "/broadcast?group=g1", b"last".to_vec())
        .await;
    assert_eq!(text(&mut c).await, "last");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_sharing_redis_deliver_group_messages_and_sends_across() {
    let redis = RedisServer::start();
    let host_toml = format!("redis_url = \"{}\"", redis.url());
    let one = up(&[ws_app("w", "")], &host_toml);
    let two = up(&[ws_app("w", "")], &host_toml);
    let mut on_one = connect(&one, "/?group=room&hello=1").await;
    let id_one = text(&mut on_one)
        .await
        .strip_prefix("id:")
        .unwrap()
        .to_string();
    let mut on_two = connect(&two, "/?group=room&hello=1").await;
    let id_two = text(&mut on_two)
        .await
        .strip_prefix("id:")
        .unwrap()
        .to_string();
    let mut bystander = connect(&two, "/").await;
    assert_ne!(
        id_one.split('-').next(),
        id_two.split('-').next(),
        "ids name their host"
    );

    // From either host, every member gets it exactly once.
    for (from, body) in [(&one, "from one"), (&two, "from two")] {
        let sent = from
            .request(
                "POST",
                "api.test",
                "/broadcast?group=room",
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(sent.status, 200, "{}", sent.text());
        assert_eq!(text(&mut on_one).await, body);
        assert_eq!(text(&mut on_two).await, body);
        for ws in [&mut on_one, &mut on_two, &mut bystander] {
            nothing_else_arrived(ws).await;
        }
    }
    // A send to a connection on the other host goes through that host's channel.
    say(&mut bystander, &format!("to:{id_one}:hello over there")).await;
    assert_eq!(text(&mut bystander).await, "sent");
    assert_eq!(text(&mut on_one).await, "hello over there");
    // A join asked for on the other host takes effect there.
    say(&mut on_two, &format!("to:{id_one}:x")).await;
    assert_eq!(text(&mut on_two).await, "sent");
    assert_eq!(text(&mut on_one).await, "x");
    let sent = two
        .request(
            "POST",
            "api.test",
            &format!("/send?to={id_one}"),
            b"direct".to_vec(),
        )
        .await;
    assert_eq!(sent.status, 200);
    assert_eq!(text(&mut on_one).await, "direct");

    // Once the last member on host one leaves, host one stops listening, and
    // the group still works between the members left.
    on_one.close(None).await.unwrap();
    assert_eq!(
        one.wait_metric("alorig_app_ws_connections", "app=\"w\"", 0.0)
            .await,
        0.0
    );
    let sent = one
        .request(
            "POST",
            "api.test",
            &format!("/send?to={id_one}"),
            b"gone".to_vec(),
        )
        .await;
    assert_eq!(sent.status, 410, "a closed connection is `closed`");
    one.request(
        "POST",
        "api.test",
        "/broadcast?group=room",
        b"still".to_vec(),
    )
    .await;
    assert_eq!(text(&mut on_two).await, "still");
    let mut conn = redis.connection(0);
    let channels: Vec<String> = ::redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("alorig:ws:w:*")
        .query(&mut conn)
        .unwrap();
    let numsub: Vec<(String, u32)> = ::redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("alorig:ws:w:room")
        .query(&mut conn)
        .unwrap();
    assert_eq!(channels, vec!["alorig:ws:w:room".to_string()]);
    assert_eq!(
        numsub,
        vec![("alorig:ws:w:room".to_string(), 1)],
        "only host two still holds a member"
    );
}

/// Host RSS (from its own gauge).
async fn rss(host: &Host) -> f64 {
    host.metric("alorig_host_resident_memory_bytes", "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_idle_connections_cost_a_few_kib_each() {
    const N: usize = 10_000;
    // Our N client sockets, and the other tests running beside this one.
    allow_open_files(N as u64 + 2_000);
    let host = up(&[ws_app("w", "max_connections = 20000")], "");
    // Warm up: the first connection's one-time costs are not per connection.
    let mut first = connect(&host, "/?group=all").await;
    say(&mut first, "warm").await;
    assert_eq!(text(&mut first).await, "warm");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss(&host).await;
    let started = Instant::now();
    let addr = host.ingress;
    let mut clients = Vec::with_capacity(N);
    let mut batch = Vec::new();
    for i in 0..N {
        let path = if i % 10 == 0 { "/?group=all" } else { "/" };
        batch.push(tokio::spawn(async move { try_connect(addr, path).await }));
        // Below the app's max_concurrency (100): on-open runs are not refused.
        if batch.len() == 50 {
            for task in batch.drain(..) {
                clients.push(task.await.unwrap().expect("upgrade"));
            }
        }
    }
    for task in batch.drain(..) {
        clients.push(task.await.unwrap().expect("upgrade"));
    }
    let opened = started.elapsed();
    assert_eq!(
        host.wait_metric("alorig_app_ws_connections", "app=\"w\"", (N + 1) as f64)
            .await,
        (N + 1) as f64
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(&host).await;
    let per = (after - before) / N as f64;
    println!(
        "{N} idle WebSocket connections: host RSS {:.1} MiB -> {:.1} MiB, {:.2} KiB per connection (opened in {:.1?})",
        before / 1048576.0,
        after / 1048576.0,
        per / 1024.0,
        opened
    );
    assert!(
        per < 32.0 * 1024.0,
        "{per} bytes per idle connection is not 'a few KiB'"
    );
    assert_eq!(
        host.metric("alorig_app_instances", "app=\"w\"").await,
        0.0,
        "idle connections hold no instance"
    );
    // They are all alive: a group message reaches the 1,001 members.
    host.request("POST", "api.test", "/broadcast?group=all", b"all".to_vec())
        .await;
    assert_eq!(text(&mut first).await, "all");
    for client in clients.iter_mut().step_by(10) {
        assert_eq!(text(client).await, "all");
    }
    // "warm", then "all" to every member.
    assert_eq!(
        host.metric(
            "alorig_app_ws_messages_total",
            "app=\"w\",direction=\"out\""
        )
        .await,
        1.0 + (N / 10 + 1) as f64
    );
    drop(clients);
    assert_eq!(
        host.wait_metric("alorig_app_ws_connections", "app=\"w\"", 1.0)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_dropped_and_memory_stays_bounded() {
    let host = up(&[ws_app("w", "send_timeout = \"2s\"")], "");
    let mut reader = connect(&host, "/?group=flood").await;
    let mut stalled = connect(&host, "/?group=flood").await;
    nothing_else_arrived(&mut stalled).await;
    let before = rss(&host).await;
    // 32 KiB messages in bursts of 32 (the queue holds 64): a reading client
    // keeps up, one that never reads stops taking bytes once the socket
    // buffers are full.
    let body = vec![b'x'; 32 * 1024];
    let mut peak = before;
    let mut received = 0usize;
    for _ in 0..60 {
        let sent = host
            .request(
                "POST",
                "api.test",
                "/broadcast?group=flood&n=32",
                body.clone(),
            )
            .await;
        assert_eq!(sent.status, 200, "{}", sent.text());
        for _ in 0..32 {
            assert_eq!(text(&mut reader).await.len(), body.len());
            received += 1;
        }
        peak = peak.max(rss(&host).await);
    }
    let dropped = host
        .metric(
            "alorig_app_ws_dropped_total",
            "app=\"w\",reason=\"slow_consumer\"",
        )
        .await
        + host
            .metric(
                "alorig_app_ws_dropped_total",
                "app=\"w\",reason=\"send_timeout\"",
            )
            .await;
    assert_eq!(
        dropped, 1.0,
        "the client that never reads is dropped, the reader is not"
    );
    assert_eq!(
        host.wait_metric("alorig_app_ws_connections", "app=\"w\"", 1.0)
            .await,
        1.0
    );
    let grew = (peak - before) / 1048576.0;
    println!(
        "sent {received} × 32 KiB = {} MiB to each client; host RSS grew at most {grew:.1} MiB",
        received * 32 / 1024
    );
    assert!(
        grew < 48.0,
        "host RSS grew {grew:.1} MiB while a client did not read ({} MiB were sent)",
        received * 32 / 1024
    );
    nothing_else_arrived(&mut reader).await;
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let host = up(&[ws_app("w", "ping_interval = \"300ms\"")], "");
    let mut alive = connect(&host, "/").await;
    let _silent = connect(&host, "/").await; // never polled: never answers a ping
    let deadline = Instant::now() + Duration::from_secs(5);
    while host
        .metric(
            "alorig_app_ws_dropped_total",
            "app=\"w\",reason=\"ping_timeout\"",
        )
        .await
        < 1.0
    {
        // The live client reads (and so answers pings).
        say(&mut alive, "still here").await;
        assert_eq!(text(&mut alive).await, "still here");
        assert!(
            Instant::now() < deadline,
            "the silent client was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        host.wait_metric("alorig_app_ws_connections", "app=\"w\"", 1.0)
            .await,
        1.0
    );
    // A client that keeps reading (so answers pings) outlives many intervals.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        nothing_else_arrived(&mut alive).await;
    }
    assert_eq!(
        host.metric(
            "alorig_app_ws_dropped_total",
            "app=\"w\",reason=\"ping_timeout\""
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_answer_503_1009_and_invalid_and_a_refusal_403() {
    let host = up(
        &[ws_app("w", "max_connections = 2\nmax_message = \"1KiB\"")],
        "",
    );
    // on-open refuses.
    assert_eq!(refused(&host, "/?refuse=1").await, 403);
    let mut one = connect(&host, "/").await;
    let two = connect(&host, "/").await;
    assert_eq!(refused(&host, "/").await, 503);
    assert_eq!(
        host.metric(
            "alorig_app_ws_dropped_total",
            "app=\"w\",reason=\"max_connections\""
        )
        .await,
        1.0
    );
    drop(two);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        match try_connect(host.ingress, "/").await {
            Ok(ws) => break ws,
            Err(_) => assert!(Instant::now() < deadline, "a slot was not freed"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // An outgoing message past max_message is refused to the guest.
    say(&mut one, "big:2000").await;
    assert!(
        text(&mut one)
            .await
            .starts_with("invalid: a message of 2000 bytes is more than [websocket] max_message")
    );
    say(&mut one, "big:1000").await;
    assert_eq!(
        next(&mut one).await,
        Message::Binary(vec![b'x'; 1000].into())
    );
    // An incoming one closes the connection with 1009.
    again
        .send(Message::Text("y".repeat(2000).into()))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut again).await,
        Some(u16::from(CloseCode::Size))
    );
    assert_eq!(
        host.metric(
            "alorig_app_ws_dropped_total",
            "app=\"w\",reason=\"message_too_large\""
        )
        .await,
        1.0
    );
    nothing_else_arrived(&mut one).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_traps_in_on_message_does_not_disturb_other_connections() {
    let host = up(&[ws_app("w", "")], "");
    let mut trapper = connect(&host, "/").await;
    let mut others: Vec<Ws> = Vec::new();
    for _ in 0..3 {
        others.push(connect(&host, "/").await);
    }
    for _ in 0..5 {
        say(&mut trapper, "trap").await;
        for (i, other) in others.iter_mut().enumerate() {
            say(other, &format!("hi {i}")).await;
            assert_eq!(text(other).await, format!("hi {i}"));
        }
    }
    assert_eq!(
        host.wait_metric("alorig_app_traps_total", "app=\"w\",reason=\"trap\"", 5.0)
            .await,
        5.0
    );
    // The trapping one is still served.
    nothing_else_arrived(&mut trapper).await;
    assert_eq!(
        host.metric("alorig_app_ws_connections", "app=\"w\"").await,
        4.0
    );
    assert!(
        host.log().contains("on-message instance ended"),
        "{}",
        host.log()
    );
}

#[test]
fn a_websocket_route_needs_the_handler_export() {
    let (path, error) = validate_error(
        "ws",
        "hello",
        "[[routes]]\nhost = \"ws.test\"\nwebsocket = true",
    );
    assert!(
        error.starts_with("error: ") && error.lines().count() == 1,
        "{error}"
    );
    assert!(
        error.contains("does not export alorig:host/websocket-handler (on-open, on-message, on-close), which the websocket = true route in")
            && error.contains(&path.display().to_string()),
        "{error}"
    );
    // And importing alorig:host/websocket needs such a route.
    let (_, error) = validate_error("ws", "test-websocket", "[[routes]]\nhost = \"ws.test\"");
    assert!(
        error.contains(
            "imports alorig:host/websocket, which needs a [[routes]] entry with websocket = true"
        ),
        "{error}"
    );
    let (_, error) = validate_error(
        "ws",
        "test-websocket",
        "[[routes]]\nhost = \"ws.test\"\nwebsocket = true\n[websocket]\nmax_mesage = \"1KiB\"",
    );
    assert!(error.contains("unknown field `max_mesage`"), "{error}");
}

/// Deployed with `serve`: removing the app closes its connections (1001) rather
/// than leaving them on the removed version; its other routes are gone too.
#[tokio::test(flavor = "multi_thread")]
async fn removing_an_app_closes_its_websockets() {
    let data = tempfile::tempdir().unwrap();
    let host = Host::serve(data.path(), "");
    let (_, text) = ws_app("w", "");
    let path = data.path().join("w.toml");
    std::fs::write(&path, text).unwrap();
    crate::deploy::deploy_ok(&host, path.to_str().unwrap(), &[]);
    let mut ws = connect(&host, "/").await;
    nothing_else_arrived(&mut ws).await;
    let (code, _, stderr) = host.cli(&["remove", "w"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(close_code(&mut ws).await, Some(1001));
    assert_eq!(
        host.wait_metric("alorig_app_ws_connections", "app=\"w\"", 0.0)
            .await,
        0.0
    );
    assert_eq!(refused(&host, "/").await, 404);
}

/// Redis stopped and started again: each host keeps its own members served
/// (the guest hears `unavailable`), and the fan-out comes back by itself.
#[tokio::test(flavor = "multi_thread")]
async fn groups_outlive_a_redis_outage() {
    let mut redis = RedisServer::start();
    let host_toml = format!("redis_url = \"{}\"", redis.url());
    let one = up(&[ws_app("w", "")], &host_toml);
    let two = up(&[ws_app("w", "")], &host_toml);
    let mut a = connect(&one, "/?group=room").await;
    let mut b = connect(&two, "/?group=room").await;
    one.request(
        "POST",
        "api.test",
        "/broadcast?group=room",
        b"before".to_vec(),
    )
    .await;
    assert_eq!(
        (text(&mut a).await, text(&mut b).await),
        ("before".to_string(), "before".to_string())
    );

    redis.stop();
    let sent = one
        .request(
            "POST",
            "api.test",
            "/broadcast?group=room",
            b"during".to_vec(),
        )
        .await;
    assert_eq!((sent.status, sent.text().as_str()), (503, "unavailable"));
    assert_eq!(
        text(&mut a).await,
        "during",
        "local members are served without Redis"
    );
    // New connections and their joins still work on each host.
    let mut c = connect(&one, "/?hello=1").await;
    assert!(text(&mut c).await.starts_with("id:"));
    say(&mut c, "join:new-room").await;
    assert_eq!(
        text(&mut c).await,
        "unavailable",
        "a join that needs Redis is local only, and says so"
    );
    say(&mut c, "join:room").await;
    assert_eq!(
        text(&mut c).await,
        "joined:room",
        "this host already listens to room"
    );
    for ws in [&mut a, &mut b] {
        nothing_else_arrived(ws).await;
    }

    redis.restart();
    // Host two only listens: it must subscribe again by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let body = format!("after {attempt}");
        let sent = one
            .request(
                "POST",
                "api.test",
                "/broadcast?group=room",
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!(text(&mut a).await, body);
        assert_eq!(text(&mut c).await, body);
        if sent.status == 200
            && let Ok(Some(Ok(Message::Text(got)))) =
                tokio::time::timeout(Duration::from_millis(300), b.next()).await
        {
            assert!(got.starts_with("after "), "{got}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fan-out did not come back after Redis did"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Messages queued for clients that do not read are held by the host for the
/// app, so they count against its memory budget: a 16 MiB app sending 1 MiB
/// messages to six stalled clients (each in a group of its own, so nothing is
/// shared) is refused (`invalid`, 503 from the guest) once its queues hold
/// what the budget has left, although each queue (8 × 2 MiB) would take more;
/// the bytes come back when the clients go.
#[tokio::test(flavor = "multi_thread")]
async fn queued_messages_count_against_the_apps_memory_budget() {
    const BUDGET: f64 = (16u64 << 20) as f64;
    let text = manifest(
        "w",
        "test-websocket",
        "[resources]\nmemory = \"16MiB\"\nmax_body = \"2MiB\"\n\
         [[routes]]\nhost = \"ws.test\"\nwebsocket = true\n[[routes]]\nhost = \"api.test\"\n\
         [websocket]\nmax_message = \"2MiB\"\nsend_queue = 8\nsend_timeout = \"60s\"",
    );
    let host = up(&[("w".to_string(), text)], "");
    let mut stalled = Vec::new();
    for group in 0..6 {
        stalled.push(connect(&host, &format!("/?group=g{group}")).await);
    }
    let held = || host.metric("alorig_app_host_memory_bytes", "app=\"w\"");
    let body = vec![b'x'; 1 << 20];
    let (mut refusal, mut accepted, mut peak) = (None, 0, 0.0f64);
    // The kernel's socket buffers take several MiB per connection before the
    // host has to queue anything.
    for n in 0..240 {
        let path = format!("/broadcast?group=g{}&n=1", n % 6);
        let sent = host.request("POST", "api.test", &path, body.clone()).await;
        if sent.status != 200 {
            refusal = Some((sent.status, sent.text()));
            break;
        }
        accepted += 1;
        peak = peak.max(held().await);
        assert!(peak <= BUDGET, "host-held bytes past the budget: {peak}");
    }
    println!(
        "{accepted} messages of 1 MiB sent to 6 stalled clients; the host held at most {:.1} MiB \
         for the app; then {:?}",
        peak / 1048576.0,
        refusal.as_ref().map(|(s, t)| format!("{s} {t}"))
    );
    let (status, why) = refusal.expect("a send the budget cannot hold is refused");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("memory budget"), "{why}");
    assert_eq!(
        host.metric(
            "alorig_app_ws_dropped_total",
            "app=\"w\",reason=\"slow_consumer\""
        )
        .await,
        0.0,
        "no queue was full: the budget refused first"
    );
    // The clients go: their queues, and the charge, go with them.
    drop(stalled);
    for _ in 0..100 {
        if held().await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held().await, 0.0, "host-held bytes after the clients left");
}
