//! `alorig:host/redis` against a real Redis the test starts: every operation with
//! binary values, apps kept apart by db and prefix however they name keys, an
//! outage and a recovery, the ACL wall, pub/sub delivery. The cost of a GET
//! through the host against a native one is the benchmark's section 13.

use crate::{
    harness::{Host, manifest},
    redis_server::RedisServer,
};
use ::redis::Commands as _;
use std::time::{Duration, Instant};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn redis_app(name: &str, db: u8, prefix: &str, extra: &str) -> (String, String) {
    let text = manifest(
        name,
        "test-redis",
        &format!(
            "[[routes]]\nhost = \"{name}.test\"\n[redis]\ndb = {db}\nprefix = \"{prefix}\"\n{extra}"
        ),
    );
    (name.to_string(), text)
}

fn up(redis: &RedisServer, apps: &[(String, String)]) -> Host {
    let manifests: Vec<(&str, String)> =
        apps.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    Host::up_with(&manifests, &format!("redis_url = \"{}\"", redis.url()))
}

/// Every key in database `db`, sorted.
fn keys(redis: &RedisServer, db: u8) -> Vec<Vec<u8>> {
    let mut conn = redis.connection(db);
    let mut keys: Vec<Vec<u8>> = ::redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_works_with_values_of_any_bytes() {
    let redis = RedisServer::start();
    let host = up(&redis, &[redis_app("a", 1, "a:", "")]);
    let reply = host.get("a.test", "/selftest").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    // A value with every byte, through set and get over HTTP too.
    let all: Vec<u8> = (0..=255u8).rev().collect();
    assert_eq!(
        host.request(
            "POST",
            "a.test",
            &format!("/set?k={}", hex(b"bin")),
            all.clone()
        )
        .await
        .status,
        200
    );
    assert_eq!(
        host.get("a.test", &format!("/get?k={}", hex(b"bin")))
            .await
            .body
            .to_vec(),
        all
    );
    assert_eq!(redis.connection(1).get::<_, Vec<u8>>("a:bin").unwrap(), all);

    assert!(
        host.metric("alorig_app_redis_commands_total", "app=\"a\"")
            .await
            >= 50.0
    );
    // The self-test provokes one wrong-type alone, one in a transaction and one in
    // a pipeline, and a few invalid calls.
    assert_eq!(
        host.metric(
            "alorig_app_redis_errors_total",
            "app=\"a\",reason=\"wrong_type\""
        )
        .await,
        3.0
    );
    assert!(
        host.metric(
            "alorig_app_redis_errors_total",
            "app=\"a\",reason=\"other\""
        )
        .await
            >= 1.0
    );
    assert_eq!(
        host.metric(
            "alorig_app_redis_errors_total",
            "app=\"a\",reason=\"unavailable\""
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_with_the_same_key_names_do_not_see_each_other() {
    let redis = RedisServer::start();
    // a and c share db 1 (told apart by prefix only); b has db 2.
    let host = up(
        &redis,
        &[
            redis_app("a", 1, "a:", ""),
            redis_app("b", 2, "b:", ""),
            redis_app("c", 1, "c:", ""),
        ],
    );
    for app in ["a", "b", "c"] {
        let reply = host
            .request(
                "POST",
                &format!("{app}.test"),
                &format!("/set?k={}", hex(b"x")),
                app.into(),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let reply = host
            .request(
                "POST",
                &format!("{app}.test"),
                &format!("/hset?k={}&f={}", hex(b"gate:1"), hex(b"go")),
                app.into(),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    for app in ["a", "b", "c"] {
        assert_eq!(
            host.get(&format!("{app}.test"), &format!("/get?k={}", hex(b"x")))
                .await
                .text(),
            app
        );
        assert_eq!(
            host.get(
                &format!("{app}.test"),
                &format!("/hgetall?k={}", hex(b"gate:1"))
            )
            .await
            .text(),
            format!("go={app}\n")
        );
    }
    assert_eq!(
        host.get("a.test", &format!("/del?k={}", hex(b"x")))
            .await
            .text(),
        "1"
    );
    assert_eq!(
        host.get("c.test", &format!("/get?k={}", hex(b"x")))
            .await
            .text(),
        "c"
    );
    assert_eq!(
        keys(&redis, 1),
        vec![b"a:gate:1".to_vec(), b"c:gate:1".to_vec(), b"c:x".to_vec()]
    );
    assert_eq!(keys(&redis, 2), vec![b"b:gate:1".to_vec(), b"b:x".to_vec()]);
    assert!(keys(&redis, 0).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_sequence_of_calls_reaches_outside_the_prefix_or_the_db() {
    let redis = RedisServer::start();
    // Things the attacker must not read, change or remove: in its own db outside
    // its prefix, a neighbour in the same db, and other dbs.
    let _: () = redis.connection(1).set("victim", "v").unwrap();
    let _: () = redis.connection(1).set("c:secret", "s").unwrap();
    let _: () = redis.connection(1).set("a", "bare").unwrap();
    let _: () = redis.connection(0).set("root", "r").unwrap();
    let _: () = redis.connection(2).set("a:x", "other db").unwrap();
    let host = up(
        &redis,
        &[redis_app("a", 1, "a:", ""), redis_app("c", 1, "c:", "")],
    );

    let attacks: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"..".to_vec(),
        b"../victim".to_vec(),
        b"../c:secret".to_vec(),
        b"c:secret".to_vec(),
        b"victim".to_vec(),
        b"*".to_vec(),
        b"?".to_vec(),
        b"[a-z]*".to_vec(),
        b"\\*".to_vec(),
        b"\0".to_vec(),
        b"\0victim".to_vec(),
        b"\r\n*1\r\n$8\r\nFLUSHALL\r\n".to_vec(),
        b" victim".to_vec(),
        b"a:".to_vec(),
        "\u{202e}victim".as_bytes().to_vec(),
        b"../../../../0/root".to_vec(),
    ];
    // Reads first: nothing outside the prefix is visible.
    for key in &attacks {
        let k = hex(key);
        assert_eq!(
            host.get("a.test", &format!("/get?k={k}")).await.status,
            404,
            "get {key:?}"
        );
        assert_eq!(
            host.get("a.test", &format!("/exists?k={k}")).await.text(),
            "0",
            "exists {key:?}"
        );
        assert_eq!(
            host.get("a.test", &format!("/del?k={k}")).await.text(),
            "0",
            "del {key:?}"
        );
        assert_eq!(
            host.get("a.test", &format!("/hgetall?k={k}")).await.text(),
            "",
            "hgetall {key:?}"
        );
    }
    // Then writes of every kind, each one landing under "a:".
    for key in &attacks {
        let k = hex(key);
        for path in [
            format!("/set?k={k}"),
            format!("/pipeline?k={k}"),
            format!("/publish?k={k}"),
        ] {
            let reply = host
                .request("POST", "a.test", &path, b"pwned".to_vec())
                .await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        }
        let reply = host
            .request(
                "POST",
                "a.test",
                &format!("/hset?k={}&f={k}", hex(&[b"h", key.as_slice()].concat())),
                b"pwned".to_vec(),
            )
            .await;
        assert_eq!(reply.status, 200, "hset {key:?}");
        assert_eq!(
            host.get("a.test", &format!("/get?k={k}")).await.text(),
            "pwned"
        );
    }
    // Very long keys: up to 1024 bytes are placed under the prefix, longer ones refused.
    assert_eq!(host.get("a.test", "/long?len=1024").await.status, 200);
    for len in [1025, 1 << 20] {
        let reply = host.get("a.test", &format!("/long?len={len}")).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert!(
            reply.text().contains("at most 1024 bytes"),
            "{}",
            reply.text()
        );
    }

    let db1 = keys(&redis, 1);
    let foreign: Vec<&Vec<u8>> = db1.iter().filter(|k| !k.starts_with(b"a:")).collect();
    assert_eq!(
        foreign,
        vec![&b"a".to_vec(), &b"c:secret".to_vec(), &b"victim".to_vec()]
    );
    assert_eq!(redis.connection(1).get::<_, String>("victim").unwrap(), "v");
    assert_eq!(
        redis.connection(1).get::<_, String>("c:secret").unwrap(),
        "s"
    );
    assert_eq!(redis.connection(1).get::<_, String>("a").unwrap(), "bare");
    assert!(db1.contains(&[b"a:".as_slice(), &[0], b"victim"].concat()));
    assert!(db1.contains(&b"a:../c:secret".to_vec()));
    assert!(db1.contains(&[b"a:".as_slice(), &[b'k'; 1024]].concat()));
    assert_eq!(keys(&redis, 0), vec![b"root".to_vec()]);
    assert_eq!(keys(&redis, 2), vec![b"a:x".to_vec()]);
    for db in 3..16 {
        assert!(keys(&redis, db).is_empty(), "db {db}");
    }
    // The neighbour in the same db still sees its own, untouched.
    assert_eq!(
        host.get("c.test", &format!("/get?k={}", hex(b"secret")))
            .await
            .text(),
        "s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_app_connects_as_its_own_acl_user() {
    let redis = RedisServer::start();
    let host = up(&redis, &[redis_app("a", 1, "a:", "")]);
    assert_eq!(
        host.request(
            "POST",
            "a.test",
            &format!("/set?k={}", hex(b"x")),
            b"1".to_vec()
        )
        .await
        .status,
        200
    );
    let mut admin = redis.connection(0);
    let clients: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut admin)
        .unwrap();
    assert!(
        clients
            .lines()
            .any(|l| l.contains("user=alorig-a") && l.contains("db=1")),
        "{clients}"
    );
    let dry = |args: &[&str]| -> String {
        let mut cmd = ::redis::cmd("ACL");
        cmd.arg("DRYRUN").arg("alorig-a").arg(args);
        match cmd.query::<String>(&mut redis.connection(0)) {
            Ok(ok) => ok,
            Err(err) => err.to_string(),
        }
    };
    assert_eq!(dry(&["GET", "a:x"]), "OK");
    assert_eq!(dry(&["PUBLISH", "a:news", "m"]), "OK");
    for denied in [
        &["GET", "b:x"][..],
        &["GET", "victim"],
        &["PUBLISH", "b:news", "m"],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["RANDOMKEY"],
        &["FLUSHDB"],
        &["FLUSHALL"],
        &["SWAPDB", "0", "1"],
        &["CONFIG", "GET", "*"],
        &["EVAL", "return 1", "0"],
        &["MOVE", "a:x", "2"],
    ] {
        let answer = dry(denied);
        assert!(
            answer.contains("no permissions") || answer.contains("NOPERM"),
            "{denied:?} was allowed: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_a_clear_error_and_back_works_without_restart() {
    let mut redis = RedisServer::start();
    let app = redis_app("a", 1, "a:", "");
    let host = Host::up_with(
        &[
            (app.0.as_str(), app.1.clone()),
            (
                "hello",
                manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\""),
            ),
        ],
        &format!("redis_url = \"{}\"", redis.url()),
    );
    let set_path = format!("/set?k={}", hex(b"x"));
    let set = || host.request("POST", "a.test", &set_path, b"1".to_vec());
    assert_eq!(set().await.status, 200);

    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let reply = set().await;
        assert_eq!((reply.status, reply.text().as_str()), (503, "unavailable"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(
            host.get("hello.test", "/").await.status,
            200,
            "the host keeps serving"
        );
    }
    assert!(
        host.metric(
            "alorig_app_redis_errors_total",
            "app=\"a\",reason=\"unavailable\""
        )
        .await
            >= 3.0
    );

    redis.restart();
    // The very first call after Redis is back succeeds: no host restart, no retry by the guest.
    let reply = set().await;
    assert_eq!(
        reply.status,
        200,
        "Redis is back but the app gets {}",
        reply.text()
    );
    assert_eq!(
        host.get("a.test", &format!("/get?k={}", hex(b"x")))
            .await
            .text(),
        "1"
    );
    // A restart while the app is idle, holding a connection that is now broken.
    redis.stop();
    redis.restart();
    assert_eq!(
        host.get("a.test", &format!("/get?k={}", hex(b"x")))
            .await
            .status,
        404,
        "a new, empty Redis"
    );
    assert!(!host.log().contains("\"1\""), "no values in the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_messages_on_declared_channels_reach_the_handler() {
    let mut redis = RedisServer::start();
    let host = up(
        &redis,
        &[
            redis_app("a", 1, "a:", "channels = [\"news\", \"gate\"]"),
            redis_app("b", 2, "b:", ""),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host.log().contains("subscribed to Redis channels") {
        assert!(Instant::now() < deadline, "no subscription: {}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message: Vec<u8> = (0..=255u8).collect();
    // Published by a native client on the full channel name, by the app itself,
    // and, not to be delivered, by another app on its own "news".
    let mut native = redis.connection(0);
    assert_eq!(
        native
            .publish::<_, _, i64>("a:news", message.clone())
            .unwrap(),
        1
    );
    assert_eq!(
        host.request(
            "POST",
            "a.test",
            &format!("/publish?k={}", hex(b"gate")),
            b"from a".to_vec()
        )
        .await
        .text(),
        "1"
    );
    assert_eq!(
        host.request(
            "POST",
            "b.test",
            &format!("/publish?k={}", hex(b"news")),
            b"from b".to_vec()
        )
        .await
        .text(),
        "0"
    );
    assert_eq!(native.publish::<_, _, i64>("news", "bare").unwrap(), 0);

    let paths = [b"news".as_slice(), b"gate"]
        .map(|c| format!("/lrange?k={}", hex(&[b"received:".as_slice(), c].concat())));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (news, gate) = (
            host.get("a.test", &paths[0]).await.body.to_vec(),
            host.get("a.test", &paths[1]).await.body.to_vec(),
        );
        if news == message && gate == b"from a" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivered so far: news {news:?}, gate {gate:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Redis restarts (forgetting everything): the host subscribes again by itself.
    redis.stop();
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut native = redis.connection(0);
    loop {
        if native.publish::<_, _, i64>("a:news", "again").unwrap() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no subscription after Redis came back: {}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.get("a.test", &paths[0]).await.body.as_ref() != b"again" {
        assert!(
            Instant::now() < deadline,
            "the message after the restart was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_component_importing_redis_without_a_redis_section_is_refused_at_load() {
    let (_, stderr) = crate::harness::validate_error("nored", "test-redis", "");
    assert!(
        stderr.contains("nored.toml: the component imports alorig:host/redis but the manifest has no [redis] section"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
