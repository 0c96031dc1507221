//! 5. Jobs through the durable queue on one host: `n` jobs enqueued by the
//! guest in one request (`alorig:host/timers.schedule`, one INSERT each), then
//! leased, run in a fresh instance and marked done; the clock runs from the
//! enqueue request to the last job done, as the job store sees it. Two
//! handlers: one returning at once (the queue's own cost) and one writing a
//! row into the app's database (a small real job).

#[path = "../../../tests/e2e/postgres_server.rs"]
mod postgres_server;

use crate::harness::{Host, manifest};
use postgres_server::PgServer;
use sqlx::Connection as _;
use std::time::{Duration, Instant};

pub async fn jobs_per_second(n: usize) {
    println!("\n## 5. jobs through the durable queue (enqueue → handler done), one host\n");
    let pg = PgServer::start();
    let text = manifest(
        "bench",
        "test-timers",
        "[postgres]\ndatabase = \"bench_db\"\nmax_connections = 16\n[resources]\nmax_concurrency = 64\n[[routes]]\nhost = \"bench.test\"",
    );
    let host = Host::up_full(&[("bench", text)], "", &[("ALORIG_POSTGRES_URL", &pg.admin_url())]);
    let mut store = sqlx::PgConnection::connect(&pg.url_for("postgres")).await.unwrap();
    assert_eq!(host.request("POST", "bench.test", "/setup", vec![]).await.status, 200);
    println!("| handler | jobs | seconds | jobs/s | enqueue only |");
    println!("|---|---:|---:|---:|---:|");
    let mut done_before = 0i64;
    for (label, payload, count) in [("warm-up (noop)", "noop", n / 10), ("returns at once", "noop", n), ("writes one row", "", n)] {
        let started = Instant::now();
        let reply = host.request("POST", "bench.test", &format!("/enqueue?n={count}&name=bench"), payload.as_bytes().to_vec()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let enqueued = started.elapsed();
        let want = done_before + count as i64;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (done,): (i64,) = sqlx::query_as("SELECT count(*) FROM alorig_jobs.jobs WHERE app = 'bench' AND state = 'done'")
                .fetch_one(&mut store)
                .await
                .unwrap();
            if done >= want {
                break;
            }
            assert!(Instant::now() < deadline, "only {done} of {want} jobs done");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done_before = want;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "| {label} | {count} | {seconds:.2} | {:.0} | {:.0} ms |",
            count as f64 / seconds,
            enqueued.as_secs_f64() * 1000.0
        );
    }
}
