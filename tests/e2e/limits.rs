//! Per-app memory budgets, deadlines and traps: a misbehaving app fails alone.

use crate::harness::{Host, manifest, percentiles};
use std::time::{Duration, Instant};

/// Sends `count` requests to `host_name` with `concurrency` in flight; returns
/// the statuses and latencies.
async fn load(
    host: &Host,
    host_name: &str,
    path: &str,
    count: usize,
    concurrency: usize,
) -> (Vec<u16>, Vec<Duration>) {
    let mut statuses = Vec::new();
    let mut latencies = Vec::new();
    for _ in 0..count / concurrency {
        let batch = (0..concurrency).map(|_| async {
            let started = Instant::now();
            let reply = host.get(host_name, path).await;
            (reply.status, started.elapsed())
        });
        for (status, latency) in futures::future::join_all(batch).await {
            statuses.push(status);
            latencies.push(latency);
        }
    }
    (statuses, latencies)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_past_its_budget_fails_alone_and_gives_its_memory_back() {
    let host = Host::up(&[
        (
            "greedy",
            manifest(
                "greedy",
                "test-alloc",
                "[resources]\nmemory = \"48MiB\"\ninstance_memory = \"40MiB\"\n[[routes]]\nhost = \"greedy.test\"",
            ),
        ),
        (
            "steady",
            manifest("steady", "hello", "[[routes]]\nhost = \"steady.test\""),
        ),
    ]);
    // Warm both apps, then measure the neighbour alone.
    assert_eq!(host.get("greedy.test", "/?mib=4").await.status, 200);
    let (statuses, baseline) = load(&host, "steady.test", "/", 400, 4).await;
    assert!(statuses.iter().all(|s| *s == 200));

    // The greedy app asks for more than it may have, many times at once, while the
    // neighbour keeps serving.
    let greedy = async {
        let mut statuses = Vec::new();
        for _ in 0..10 {
            let batch = (0..4).map(|_| host.get("greedy.test", "/?mib=30&hold_ms=50"));
            statuses.extend(
                futures::future::join_all(batch)
                    .await
                    .into_iter()
                    .map(|r| r.status),
            );
            statuses.push(host.get("greedy.test", "/?mib=100").await.status);
        }
        statuses
    };
    let ((steady_statuses, during), greedy_statuses) =
        tokio::join!(load(&host, "steady.test", "/", 400, 4), greedy);

    assert!(
        steady_statuses.iter().all(|s| *s == 200),
        "the neighbour must not see a single failure: {steady_statuses:?}"
    );
    assert!(
        greedy_statuses.iter().all(|s| [200, 500, 503].contains(s)),
        "{greedy_statuses:?}"
    );
    assert!(
        greedy_statuses.contains(&500),
        "growth past the budget ends the request with 500"
    );
    let (base_p50, base_p99) = percentiles(baseline);
    let (p50, p99) = percentiles(during);
    eprintln!(
        "neighbour latency: alone p50 {base_p50:.2} ms p99 {base_p99:.2} ms; beside the greedy app p50 {p50:.2} ms p99 {p99:.2} ms"
    );
    // Generous: the point is that the neighbour is not stalled behind the greedy
    // app (which shares the same two cores), not a benchmark.
    assert!(
        p99 < base_p99 * 10.0 + 50.0,
        "neighbour p99 went from {base_p99:.2} ms to {p99:.2} ms"
    );

    assert!(
        host.metric(
            "alorig_app_traps_total",
            "app=\"greedy\",reason=\"memory_limit\""
        )
        .await
            >= 10.0
    );
    assert_eq!(
        host.metric("alorig_app_traps_total", "app=\"steady\"")
            .await,
        0.0
    );
    // Nothing leaked: with no live instance the app holds no memory at all.
    assert_eq!(
        host.wait_metric("alorig_app_instances", "app=\"greedy\"", 0.0)
            .await,
        0.0
    );
    assert_eq!(
        host.wait_metric("alorig_app_memory_bytes", "app=\"greedy\"", 0.0)
            .await,
        0.0
    );
    assert!(
        host.metric("alorig_app_memory_peak_bytes", "app=\"greedy\"")
            .await
            <= (48 << 20) as f64
    );
    assert_eq!(
        host.metric("alorig_app_memory_limit_bytes", "app=\"greedy\"")
            .await,
        (48 << 20) as f64
    );
    // And it serves again.
    assert_eq!(host.get("greedy.test", "/?mib=4").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_cannot_start_within_the_budget_gets_503_with_retry_after() {
    let host = Host::up(&[(
        "full",
        manifest(
            "full",
            "test-alloc",
            "[resources]\nmemory = \"32MiB\"\n[[routes]]\nhost = \"full.test\"",
        ),
    )]);
    // One instance takes nearly the whole budget and holds it for a while ...
    let holder = host.get("full.test", "/?mib=30&hold_ms=1500");
    let second = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        host.get("full.test", "/").await
    };
    let (first, second) = tokio::join!(holder, second);
    // ... so the next one cannot even start.
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 503);
    assert_eq!(second.headers.get("retry-after").unwrap(), "1");
    assert_eq!(
        host.metric(
            "alorig_app_rejected_total",
            "app=\"full\",reason=\"memory_budget\""
        )
        .await,
        1.0
    );
    assert_eq!(
        host.wait_metric("alorig_app_memory_bytes", "app=\"full\"", 0.0)
            .await,
        0.0
    );
    assert_eq!(
        host.get("full.test", "/").await.status,
        200,
        "the budget is free again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrency_rejects_with_503() {
    let host = Host::up(&[(
        "narrow",
        manifest(
            "narrow",
            "test-alloc",
            "[resources]\nmax_concurrency = 1\n[[routes]]\nhost = \"narrow.test\"",
        ),
    )]);
    let (a, b) = tokio::join!(host.get("narrow.test", "/?hold_ms=800"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        host.get("narrow.test", "/").await
    });
    assert_eq!((a.status, b.status), (200, 503));
    assert!(b.headers.contains_key("retry-after"));
    assert_eq!(
        host.metric(
            "alorig_app_rejected_total",
            "app=\"narrow\",reason=\"concurrency\""
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn looping_guests_get_504_at_their_deadline_and_the_host_stays_responsive() {
    let host = Host::up(&[
        (
            "spin",
            manifest(
                "spin",
                "test-loop",
                "[resources]\nrequest_timeout = \"1500ms\"\n[[routes]]\nhost = \"spin.test\"",
            ),
        ),
        (
            "hello",
            manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\""),
        ),
    ]);
    // More computing guests than the host has worker threads, plus one blocked in
    // a host call (a one-hour sleep) that epochs cannot interrupt.
    let started = Instant::now();
    let host = &host;
    let loops =
        futures::future::join_all(["/", "/", "/", "/", "/?sleep=1"].map(|path| async move {
            let t = Instant::now();
            (host.get("spin.test", path).await.status, t.elapsed())
        }));
    let hello = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let t = Instant::now();
            assert_eq!(host.get("hello.test", "/").await.status, 200);
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worst
    };
    let (loops, hello_worst) = tokio::join!(loops, hello);
    for (status, took) in &loops {
        assert_eq!(*status, 504);
        assert!(
            *took >= Duration::from_millis(1400) && *took < Duration::from_millis(3000),
            "answered after {took:?}"
        );
    }
    eprintln!(
        "5 looping guests answered 504 within {:?}; slowest hello meanwhile {hello_worst:?}",
        started.elapsed()
    );
    assert!(
        hello_worst < Duration::from_millis(500),
        "hello waited {hello_worst:?} behind looping guests"
    );
    assert_eq!(
        host.metric("alorig_app_traps_total", "app=\"spin\",reason=\"deadline\"")
            .await,
        5.0
    );
    assert_eq!(
        host.metric("alorig_app_requests_total", "app=\"spin\",status=\"504\"")
            .await,
        5.0
    );
    assert_eq!(
        host.wait_metric("alorig_app_memory_bytes", "app=\"spin\"", 0.0)
            .await,
        0.0
    );
    assert_eq!(
        host.wait_metric("alorig_app_instances", "app=\"spin\"", 0.0)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_ends_only_its_own_request() {
    let host = Host::up(&[
        (
            "trap",
            manifest("trap", "test-trap", "[[routes]]\nhost = \"trap.test\""),
        ),
        (
            "hello",
            manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\""),
        ),
    ]);
    for _ in 0..50 {
        assert_eq!(host.get("trap.test", "/").await.status, 500);
        assert_eq!(host.get("hello.test", "/").await.status, 200);
    }
    // A trap after the response head was sent cuts the body short; the status
    // has already gone out.
    let late = host.get("trap.test", "/?after=1").await;
    assert_eq!(late.status, 200);
    // The late trap is counted when its instance ends, just after the response.
    assert_eq!(
        host.wait_metric(
            "alorig_app_traps_total",
            "app=\"trap\",reason=\"trap\"",
            51.0
        )
        .await,
        51.0
    );
    assert_eq!(
        host.metric("alorig_app_requests_total", "app=\"trap\",status=\"500\"")
            .await,
        50.0
    );
    assert_eq!(
        host.wait_metric("alorig_app_memory_bytes", "app=\"trap\"", 0.0)
            .await,
        0.0
    );
    assert!(
        host.log().contains("trapping on purpose") || host.log().contains("unreachable"),
        "the operator sees why"
    );
}
