//! Two (and more) apps on one host, picked by Host and by the longest path prefix.

use crate::harness::{Host, manifest};

#[tokio::test(flavor = "multi_thread")]
async fn apps_are_routed_by_host_and_longest_path_prefix() {
    let host = Host::up(&[
        (
            "hello",
            manifest(
                "hello",
                "hello",
                "[[routes]]\nhost = \"site.test\"\n[[routes]]\nhost = \"*.apps.test\"",
            ),
        ),
        (
            "echo",
            manifest(
                "echo",
                "test-echo",
                "[[routes]]\nhost = \"site.test\"\npath = \"/echo\"\n[[routes]]\nhost = \"special.apps.test\"\npath = \"/echo\"",
            ),
        ),
    ]);

    let hello = |r: &crate::harness::Reply| {
        r.status == 200 && r.text().starts_with("Hello from alorig-host")
    };
    let first = host.get("site.test", "/").await;
    assert!(hello(&first));
    assert_eq!(
        first.headers.get("content-length").unwrap(),
        "23",
        "a small finished body goes out in one piece"
    );
    assert!(
        hello(&host.get("SITE.test:8080", "/anything/else").await),
        "host matching ignores case and port"
    );
    assert!(
        hello(&host.get("site.test", "/echoes").await),
        "/echo must not match /echoes"
    );

    let echoed = host
        .request("POST", "site.test", "/echo", b"ping".to_vec())
        .await;
    assert_eq!((echoed.status, echoed.text().as_str()), (200, "ping"));
    let echoed = host
        .request("POST", "site.test", "/echo/deeper", b"pong".to_vec())
        .await;
    assert_eq!((echoed.status, echoed.text().as_str()), (200, "pong"));

    assert!(hello(&host.get("x.apps.test", "/").await), "wildcard host");
    assert!(
        hello(&host.get("a.b.apps.test", "/").await),
        "wildcard covers deeper names"
    );
    let echoed = host
        .request("POST", "special.apps.test", "/echo", b"w".to_vec())
        .await;
    assert_eq!(
        echoed.text(),
        "w",
        "an exact host with a longer prefix wins over the wildcard"
    );

    assert_eq!(
        host.get("apps.test", "/").await.status,
        404,
        "*.apps.test does not cover apps.test itself"
    );
    assert_eq!(host.get("other.test", "/").await.status, 404);
    assert_eq!(
        host.metric("alorig_app_requests_total", "app=\"hello\",status=\"200\"")
            .await,
        5.0
    );
    assert_eq!(
        host.metric("alorig_app_requests_total", "app=\"echo\",status=\"200\"")
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apps_claiming_the_same_route_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = crate::harness::write_files(
        dir.path(),
        &[
            (
                "a.toml",
                manifest("a", "hello", "[[routes]]\nhost = \"same.test\""),
            ),
            (
                "b.toml",
                manifest(
                    "b",
                    "hello",
                    "[[routes]]\nhost = \"same.test\"\npath = \"/\"",
                ),
            ),
            (
                "host.toml",
                "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n".to_string(),
            ),
        ],
    );
    let (code, _, stderr) =
        crate::harness::run_cli(&["up", &files[0], &files[1], "--config", &files[2]]);
    assert_ne!(code, 0);
    assert_eq!(
        stderr.trim().lines().last().unwrap(),
        format!(
            "error: route same.test/ is claimed by both a and b (in {})",
            files[1]
        )
    );
}
