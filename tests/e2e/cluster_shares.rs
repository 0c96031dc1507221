//! What an app is allowed in all, shared out among the hosts of a cluster:
//! `[websocket] max_connections` counted across two hosts through a real Redis
//! (and a SIGKILLed host's connections ceasing to count).

use crate::{
    harness::{Host, manifest},
    redis_server::RedisServer,
    websocket::Ws,
};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

/// Opens a WebSocket to `domain` on `host`'s ingress: the connection, or the
/// status the upgrade was refused with.
async fn open(host: &Host, domain: &str) -> Result<Ws, u16> {
    let mut request = format!("ws://{}/", host.ingress)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("host", domain.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("the upgrade to {domain} failed otherwise: {other}"),
    }
}

async fn accepted(host: &Host, domain: &str) -> Ws {
    open(host, domain)
        .await
        .unwrap_or_else(|status| panic!("{domain} refused with {status}:\n{}", host.log()))
}

async fn refused(host: &Host, domain: &str) -> u16 {
    match open(host, domain).await {
        Ok(_) => panic!("{domain} was accepted"),
        Err(status) => status,
    }
}

/// Polls until `host` accepts a connection to `domain`; the connection and how long it took.
async fn accepted_within(host: &Host, domain: &str, limit: Duration) -> (Ws, Duration) {
    let started = Instant::now();
    loop {
        if let Ok(ws) = open(host, domain).await {
            return (ws, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "{domain} still refused after {limit:?}:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ws_manifest(name: &str, domain: &str, websocket: &str) -> (String, String) {
    let text = manifest(
        name,
        "test-websocket",
        &format!("[[routes]]\nhost = \"{domain}\"\nwebsocket = true\n[websocket]\n{websocket}"),
    );
    (name.to_string(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_max_connections_holds_across_two_hosts_and_a_killed_hosts_connections_lapse() {
    let redis = RedisServer::start();
    let host_toml = format!("redis_url = \"{}\"", redis.url());
    // `c` counts across the cluster (the default), `h` on each host alone.
    let apps = [
        ws_manifest("c", "c.test", "max_connections = 3"),
        ws_manifest("h", "h.test", "max_connections = 1\nmax_connections_per = \"host\""),
    ];
    let apps: Vec<(&str, String)> = apps.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let one = Host::up_with(&apps, &host_toml);
    let two = Host::up_with(&apps, &host_toml);

    // 2 on one, 1 on two: the app's 3. Each host alone is below 3, yet both refuse.
    let mut c1 = accepted(&one, "c.test").await;
    let _c2 = accepted(&one, "c.test").await;
    let b1 = accepted(&two, "c.test").await;
    assert_eq!(refused(&two, "c.test").await, 503);
    assert_eq!(refused(&one, "c.test").await, 503);
    async fn dropped(host: &Host) -> f64 {
        host.metric(
            "alorig_app_ws_dropped_total",
            "app=\"c\",reason=\"max_connections\"",
        )
        .await
    }
    assert_eq!((dropped(&one).await, dropped(&two).await), (1.0, 1.0));

    // A connection closed on one gives its place to a client of two.
    c1.close(None).await.unwrap();
    drop(c1);
    let (b2, freed) = accepted_within(&two, "c.test", Duration::from_secs(5)).await;
    assert_eq!(refused(&one, "c.test").await, 503);
    eprintln!("a place freed on host one was taken on host two {freed:.2?} after the close");

    // Per host: one each, though that is 2 in the cluster.
    let _h1 = accepted(&one, "h.test").await;
    let _h2 = accepted(&two, "h.test").await;
    assert_eq!(refused(&one, "h.test").await, 503);

    // Host two dies holding 2 of the 3 places: they still count at first,
    // then lapse with their leases (10 s, renewed every 3 s).
    two.kill();
    drop((b1, b2));
    let killed = Instant::now();
    assert_eq!(refused(&one, "c.test").await, 503, "the places lapsed at once");
    let (_c3, _) = accepted_within(&one, "c.test", Duration::from_secs(20)).await;
    let lapsed = killed.elapsed();
    // The two leases were renewed together but taken at different times:
    // the second may lapse a little after the first.
    let (_c4, _) = accepted_within(&one, "c.test", Duration::from_secs(10)).await;
    assert_eq!(refused(&one, "c.test").await, 503);
    eprintln!(
        "host two SIGKILLed holding 2 of 3 connections: host one admits again {lapsed:.2?} after the kill, 2 more, then 503"
    );
    assert!(
        lapsed >= Duration::from_secs(5),
        "the dead host's connections stopped counting before their leases could lapse"
    );
}
