//! Instance reuse, a per-app choice: fresh instances by default; with
//! `instance_reuse = N` an instance serves up to N requests one after another and
//! is recycled after N, after a trap, or when it grew past a quarter of the budget.

use crate::harness::{Host, manifest};

async fn counts(host: &Host, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(host.get("echo.test", "/count").await.text());
        // The instance goes back to the idle list just after its response is
        // delivered; a request sent in that instant gets a fresh one (correct,
        // but not the sequence asserted here). Give the release a moment.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_every_request_gets_a_fresh_instance() {
    let host = Host::up(&[(
        "echo",
        manifest("echo", "test-echo", "[[routes]]\nhost = \"echo.test\""),
    )]);
    assert_eq!(counts(&host, 4).await, ["1", "1", "1", "1"]);
    assert_eq!(
        host.wait_metric("alorig_app_instances", "app=\"echo\"", 0.0)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_instance_serves_n_requests_then_is_recycled() {
    let host = Host::up(&[(
        "echo",
        manifest(
            "echo",
            "test-echo",
            "[resources]\nmemory = \"64MiB\"\ninstance_reuse = 3\n[[routes]]\nhost = \"echo.test\"",
        ),
    )]);
    assert_eq!(counts(&host, 7).await, ["1", "2", "3", "1", "2", "3", "1"]);
    // An idle instance is live: it holds memory against the budget until trimmed.
    assert_eq!(
        host.metric("alorig_app_instances", "app=\"echo\"").await,
        1.0
    );
    assert!(host.metric("alorig_app_memory_bytes", "app=\"echo\"").await > 0.0);

    // A trap discards the instance: the next request starts afresh.
    assert_eq!(host.get("echo.test", "/count").await.text(), "2");
    assert_eq!(host.get("echo.test", "/panic").await.status, 500);
    assert_eq!(counts(&host, 2).await, ["1", "2"]);

    // Growing past a quarter of the 64 MiB budget gets it recycled after the request.
    assert_eq!(host.get("echo.test", "/hoard?mib=20").await.status, 200);
    assert_eq!(counts(&host, 1).await, ["1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_instances_give_their_memory_back_after_the_idle_timeout() {
    let host = Host::up(&[(
        "echo",
        manifest(
            "echo",
            "test-echo",
            "[resources]\ninstance_reuse = 100\n[[routes]]\nhost = \"echo.test\"",
        ),
    )]);
    assert_eq!(counts(&host, 2).await, ["1", "2"]);
    assert_eq!(
        host.metric("alorig_app_instances", "app=\"echo\"").await,
        1.0
    );
    // IDLE_TIMEOUT is 10 s; the sweeper runs every second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while host.metric("alorig_app_instances", "app=\"echo\"").await != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "idle instance never dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        host.metric("alorig_app_memory_bytes", "app=\"echo\"").await,
        0.0
    );
}
