//! What an app is allowed in all, shared out among the hosts of a cluster:
//! `[websocket] max_connections` counted across two hosts through a real Redis
//! (and a SIGKILLed host's connections ceasing to count), and each host's
//! PostgreSQL pool sized from the number of hosts up, against a real
//! PostgreSQL: 1, 2 and 3 hosts, then one killed and one stopped.

use crate::{
    cluster::{node, wait_ready},
    deploy::deploy_ok,
    harness::{Host, manifest},
    postgres_server::PgServer,
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
        ws_manifest(
            "h",
            "h.test",
            "max_connections = 1\nmax_connections_per = \"host\"",
        ),
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
    assert_eq!(
        refused(&one, "c.test").await,
        503,
        "the places lapsed at once"
    );
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

/// Each host's `alorig_app_pg_connections_max` for app `p`, in host order.
async fn pool_sizes(hosts: &[&Host]) -> Vec<u32> {
    let mut sizes = Vec::new();
    for host in hosts {
        sizes.push(
            host.metric("alorig_app_pg_connections_max", "app=\"p\"")
                .await as u32,
        );
    }
    sizes
}

/// Polls until the hosts' pool sizes are `want`; how long it took.
async fn pools_become(hosts: &[&Host], want: &[u32], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let seen = pool_sizes(hosts).await;
        if seen == want {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            let logs: Vec<String> = hosts.iter().map(|h| h.log()).collect();
            panic!(
                "after {limit:?} the pools are {seen:?}, not {want:?}:\n{}",
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sessions of the app's role on the server, read behind the hosts' back.
async fn sessions(admin: &sqlx::PgPool) -> i64 {
    sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM pg_stat_activity WHERE usename = 'alorig_p'")
        .fetch_one(admin)
        .await
        .unwrap()
        .0
}

/// Waits until the role has no session: every pool rebuilt at a new size
/// closed its old connections.
async fn no_sessions(admin: &sqlx::PgPool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = sessions(admin).await;
        if open == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} sessions left open by the old pools"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `n` one-second statements at once on each host; the most sessions
/// the app's role had on the server meanwhile.
async fn most_sessions_under_load(hosts: &[&Host], admin: &sqlx::PgPool, n: usize) -> i64 {
    let mut load = Vec::new();
    for host in hosts {
        for _ in 0..n {
            load.push(host.request(
                "POST",
                "p.test",
                "/query",
                b"SELECT 1 FROM pg_sleep(1)".to_vec(),
            ));
        }
    }
    let load = futures::future::join_all(load);
    tokio::pin!(load);
    let mut most = 0;
    let replies = loop {
        tokio::select! {
            replies = &mut load => break replies,
            () = tokio::time::sleep(Duration::from_millis(50)) => most = most.max(sessions(admin).await),
        }
    };
    for reply in replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    most
}

#[tokio::test(flavor = "multi_thread")]
async fn each_hosts_pool_is_its_share_of_max_connections_among_the_hosts_up() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let admin = sqlx::PgPool::connect(&pg.admin_url()).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let manifests = tempfile::tempdir().unwrap();
    let path = manifests.path().join("p.toml");
    std::fs::write(
        &path,
        manifest(
            "p",
            "test-postgres",
            "[postgres]\ndatabase = \"p_db\"\nmax_connections = 7\nstatement_timeout = \"10s\"\n\
             [resources]\nrequest_timeout = \"30s\"\n[[routes]]\nhost = \"p.test\"",
        ),
    )
    .unwrap();
    let limit = Duration::from_secs(30);

    let one = node(&pg, &redis, dirs[0].path(), "host-1");
    wait_ready(&one).await;
    deploy_ok(&one, path.to_str().unwrap(), &[]);
    pools_become(&[&one], &[7], limit).await;
    let alone = most_sessions_under_load(&[&one], &admin, 10).await;

    let two = node(&pg, &redis, dirs[1].path(), "host-2");
    wait_ready(&two).await;
    let took = pools_become(&[&one, &two], &[4, 3], limit).await;
    eprintln!("host 2 up: pools [4, 3] {took:.2?} after it was ready");
    no_sessions(&admin).await;
    let with_two = most_sessions_under_load(&[&one, &two], &admin, 10).await;

    let three = node(&pg, &redis, dirs[2].path(), "host-3");
    wait_ready(&three).await;
    let took = pools_become(&[&one, &two, &three], &[3, 2, 2], limit).await;
    eprintln!("host 3 up: pools [3, 2, 2] {took:.2?} after it was ready");
    no_sessions(&admin).await;
    let with_three = most_sessions_under_load(&[&one, &two, &three], &admin, 10).await;
    let (role_limit,): (i32,) =
        sqlx::query_as("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'alorig_p'")
            .fetch_one(&admin)
            .await
            .unwrap();
    eprintln!(
        "max_connections = 7: most sessions of the role under load with 1/2/3 hosts: {alone}/{with_two}/{with_three}; role CONNECTION LIMIT {role_limit}"
    );
    assert!(
        alone <= 7 && with_two <= 7 && with_three <= 7,
        "{alone}/{with_two}/{with_three}"
    );
    // Each pool was full under that load: the shares are used, not only set.
    assert!(
        alone >= 7 && with_two >= 7 && with_three >= 7,
        "{alone}/{with_two}/{with_three}"
    );
    assert_eq!(role_limit, 8);

    // SIGKILL: host 3's share comes back once its heartbeat row is 10 s old.
    three.kill();
    let took = pools_become(&[&one, &two], &[4, 3], limit).await;
    eprintln!("host 3 SIGKILLed: pools [4, 3] again {took:.2?} later");
    assert!(
        took >= Duration::from_secs(5),
        "{took:?}: before its row could age"
    );

    // A graceful stop marks host 2's row stopped: its share comes back at once.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(two.pid() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let took = pools_become(&[&one], &[7], limit).await;
    eprintln!("host 2 stopped: pool [7] {took:.2?} later");
    assert!(took < Duration::from_secs(8), "{took:?}");
    drop(two);
}
