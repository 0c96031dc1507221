//! Row 7: WebSockets — host memory per idle connection (RSS growth over 10,000
//! connections), and a broadcast: one `send-group` loop in the app to a group
//! of 1,000 clients, timed until every client has every message.

use crate::harness::{Host, allow_open_files, manifest};
use futures::StreamExt as _;
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const IDLE: usize = 10_000;
const MEMBERS: usize = 1_000;
/// Messages in the broadcast, each to every member.
const MESSAGES: usize = 200;

async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("host", "ws.bench".parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket upgrade")
        .0
}

/// Opens `n` connections, 50 at a time (below the app's max_concurrency for on-open).
async fn open(addr: SocketAddr, path: &'static str, n: usize) -> Vec<Ws> {
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let batch: Vec<_> = (0..50.min(n - all.len()))
            .map(|_| tokio::spawn(connect(addr, path)))
            .collect();
        for task in batch {
            all.push(task.await.unwrap());
        }
    }
    all
}

pub fn websocket() {
    println!("\n## 7. WebSockets: memory per idle connection, broadcast to a group of {MEMBERS}\n");
    let app = manifest(
        "wsb",
        "test-websocket",
        "[resources]\nmax_concurrency = 200\n[[routes]]\nhost = \"ws.bench\"\nwebsocket = true\n[[routes]]\nhost = \"api.bench\"\n\
         [websocket]\nmax_connections = 20000\nsend_queue = 1024",
    );
    allow_open_files(IDLE as u64 + MEMBERS as u64 + 1_000);
    let host = Host::up(&[("wsb", app)]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let rss = || async { host.metric("alorig_host_resident_memory_bytes", "").await };
        let _warm = open(host.ingress, "/", 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss().await;
        let idle = open(host.ingress, "/", IDLE).await;
        host.wait_metric("alorig_app_ws_connections", "app=\"wsb\"", (IDLE + 1) as f64).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss().await;
        drop(idle);
        host.wait_metric("alorig_app_ws_connections", "app=\"wsb\"", 1.0).await;

        let members = open(host.ingress, "/?group=bench", MEMBERS).await;
        let started = Instant::now();
        let readers: Vec<_> = members
            .into_iter()
            .map(|mut ws| {
                tokio::spawn(async move {
                    let mut got = 0;
                    while got < MESSAGES {
                        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                            Ok(Some(Ok(Message::Text(_)))) => got += 1,
                            Ok(Some(Ok(_))) => {}
                            _ => break,
                        }
                    }
                    got
                })
            })
            .collect();
        let sent = host.request("POST", "api.bench", &format!("/broadcast?group=bench&n={MESSAGES}"), vec![b'p'; 64]).await;
        assert_eq!(sent.status, 200, "broadcast: {}", sent.text());
        let mut delivered = 0;
        for reader in readers {
            delivered += reader.await.unwrap();
        }
        let took = started.elapsed().as_secs_f64();
        let dropped = host.metric("alorig_app_ws_dropped_total", "app=\"wsb\"").await;

        println!("| figure | alorig-host | note |");
        println!("|---|---:|---|");
        println!(
            "| host RSS per idle WebSocket | {:.2} KiB | RSS {:.1} → {:.1} MiB over {IDLE} connections (no instance held) |",
            (after - before) / IDLE as f64 / 1024.0,
            before / 1048576.0,
            after / 1048576.0
        );
        println!(
            "| broadcast to {MEMBERS} clients | {:.0} deliveries/s ({:.0} group messages/s) | {MESSAGES} × 64 B sent by one request's send-group loop; all {delivered} of {} delivered in {:.2} s; clients dropped: {dropped}; the 1,000 clients run on the same 2 cores |",
            delivered as f64 / took,
            MESSAGES as f64 / took,
            MESSAGES * MEMBERS,
            took
        );
    });
}
