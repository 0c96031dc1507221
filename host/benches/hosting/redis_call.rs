//! Section 13: one Redis GET through the host's `alorig:host/redis` call
//! (timed inside the guest, so the figure is the call's cost) against a native
//! `redis` crate GET on a multiplexed connection, same Redis, same run. The two
//! are measured in alternating rounds and compared on each side's best round.

use crate::{
    harness::{Host, manifest, percentiles},
    redis_server::RedisServer,
};
use ::redis::Commands as _;
use std::time::{Duration, Instant};

const N: usize = 2000;
const ROUNDS: usize = 5;

pub async fn redis_call() {
    println!("\n## 13. one Redis GET: through the host call vs the redis crate natively\n");
    let redis = RedisServer::start();
    let app = manifest(
        "a",
        "test-redis",
        "[[routes]]\nhost = \"a.test\"\n[redis]\ndb = 1\nprefix = \"a:\"",
    );
    let host = Host::up_with(&[("a", app)], &format!("redis_url = \"{}\"", redis.url()));
    let _: () = redis.connection(1).set("a:bench", vec![b'v'; 100]).unwrap();
    let url = format!("{}/1", redis.url());
    // The native client on a single-thread runtime of its own: measured faster
    // than on a multi-thread one, so the stricter baseline.
    let (jobs, job) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<Vec<Duration>>>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for reply in job {
            let _ = reply.send(runtime.block_on(native_gets(url.clone(), N)));
        }
    });
    let key = "bench"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let _ = host.get("a.test", &format!("/bench?n=500&k={key}")).await; // warm-up
    println!("| round | guest p50 ms | guest p99 ms | native p50 ms | native p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    let (mut guest, mut native) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (tx, rx) = std::sync::mpsc::channel();
        jobs.send(tx).unwrap();
        let (n50, n99) = percentiles(rx.recv().unwrap());
        let reply = host.get("a.test", &format!("/bench?n={N}&k={key}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let text = reply.text();
        let (p50, p99) = text.split_once(' ').unwrap();
        let (g50, g99) = (
            p50.parse::<f64>().unwrap() / 1e6,
            p99.parse::<f64>().unwrap() / 1e6,
        );
        println!("| {round} | {g50:.3} | {g99:.3} | {n50:.3} | {n99:.3} |");
        guest.push((g50, g99));
        native.push((n50, n99));
    }
    let best = |rounds: &[(f64, f64)]| {
        rounds
            .iter()
            .copied()
            .fold((f64::MAX, f64::MAX), |a, b| (a.0.min(b.0), a.1.min(b.1)))
    };
    let ((g50, g99), (n50, n99)) = (best(&guest), best(&native));
    println!(
        "\nBest of {ROUNDS} rounds of {N}: guest through the host p50 {g50:.3} ms, p99 {g99:.3} ms; \
         native p50 {n50:.3} ms, p99 {n99:.3} ms: **{:.2}x** at p50, {:.2}x at p99 (goal: 1.3x).",
        g50 / n50,
        g99 / n99
    );
}

/// `n` sequential GETs of `a:bench` with the `redis` crate (after a warm-up).
async fn native_gets(url: String, n: usize) -> Vec<Duration> {
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 500 {
        let started = Instant::now();
        let got: Vec<u8> = ::redis::cmd("GET")
            .arg("a:bench")
            .query_async(&mut conn)
            .await
            .unwrap();
        if i >= 500 {
            times.push(started.elapsed());
        }
        assert_eq!(got.len(), 100);
    }
    times
}
