//! Section 5: jobs through the durable queue on one host: `n` jobs enqueued by the
//! guest in one request (`alorig:host/timers.schedule`, one INSERT each), then
//! leased, run in a fresh instance and marked done; the clock runs from the
//! enqueue request to the last job done, as the job store sees it. Two
//! handlers: one returning at once (the queue's own cost) and one writing a
//! row into the app's database (a small real job). Last, the drain rate alone:
//! `n` jobs enqueued to come due together, timed from that instant to the last done.

use crate::{
    harness::{Host, manifest},
    postgres_server::PgServer,
};
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
    let host = Host::up_full(
        &[("bench", text)],
        "",
        &[("ALORIG_POSTGRES_URL", &pg.admin_url())],
    );
    let mut store = sqlx::PgConnection::connect(&pg.url_for("postgres"))
        .await
        .unwrap();
    assert_eq!(
        host.request("POST", "bench.test", "/setup", vec![])
            .await
            .status,
        200
    );
    println!("| handler | jobs | seconds | jobs/s | enqueue only |");
    println!("|---|---:|---:|---:|---:|");
    let mut done_before = 0i64;
    let runs = [
        ("warm-up (noop)", "noop", n / 10, false),
        ("returns at once", "noop", n, false),
        ("writes one row", "", n, false),
        ("returns at once, drain only", "noop", n, true),
    ];
    for (label, payload, count, drain) in runs {
        let mut started = Instant::now();
        let due = (std::time::SystemTime::now() + Duration::from_secs(5))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let at = if drain {
            format!("&at_ms={}", due.as_millis())
        } else {
            String::new()
        };
        let reply = host
            .request(
                "POST",
                "bench.test",
                &format!("/enqueue?n={count}&name=bench{at}"),
                payload.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let enqueued = started.elapsed();
        if drain {
            let wait = due.saturating_sub(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap(),
            );
            assert!(
                !wait.is_zero(),
                "enqueueing took longer than the 5 s head start"
            );
            tokio::time::sleep(wait).await;
            started = Instant::now();
        }
        let want = done_before + count as i64;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (done,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM alorig_jobs.jobs WHERE app = 'bench' AND state = 'done'",
            )
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
