//! Section 9: what holding the host to the apps' budgets costs, and whether
//! memory goes back after a spike.
//!
//! * Accounting: the `page-bench` page (one PostgreSQL query, one Redis GET)
//!   with the replies relayed and charged (the host as shipped) vs connecting
//!   straight to the servers (`ALORIG_RELAY=off`, a baseline only).
//! * Allocator: host RSS idle, at the peak of a spike (8 concurrent queries of
//!   20 one-MB rows and 8 concurrent 16 MiB request bodies echoed back) and
//!   5 s after it, with glibc's defaults (`ALORIG_ALLOCATOR=default`) vs the
//!   host's tuning (`limits/allocator.rs`).

use super::{print_load_header, print_load_row, wrk};
use crate::{
    harness::{Host, manifest},
    postgres_server::PgServer,
    redis_server::RedisServer,
};
use std::time::Duration;

pub fn host_memory(seconds: u32) {
    println!(
        "\n## 9. host memory: the cost of charging replies to the app's budget; memory after spikes\n"
    );
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let page = |relay: &str| {
        let host = Host::up_full(
            &[(
                "page",
                manifest(
                    "page",
                    "page-bench",
                    "[resources]\nmax_concurrency = 1000\ninstance_reuse = 1000\n[[routes]]\nhost = \"page.localhost\"\n\
                     [postgres]\ndatabase = \"page_db\"\nmax_connections = 8\n[redis]\ndb = 3\nprefix = \"page:\"",
                ),
            )],
            "",
            &[
                ("ALORIG_POSTGRES_URL", &pg.admin_url()),
                ("ALORIG_REDIS_URL", &redis.url()),
                ("ALORIG_RELAY", relay),
            ],
        );
        let setup = runtime.block_on(host.request("POST", "page.localhost", "/setup", Vec::new()));
        assert_eq!(setup.status, 200, "page setup: {}", setup.text());
        host
    };
    println!(
        "The page of section 6; rows compare the host as shipped with the same host connecting straight to PostgreSQL and Redis.\n"
    );
    print_load_header();
    {
        let direct = page("off");
        let relayed = page("on");
        for connections in [1, 32] {
            let base = wrk(
                direct.ingress,
                "page.localhost",
                "/p/42",
                connections,
                seconds,
            );
            let ours = wrk(
                relayed.ingress,
                "page.localhost",
                "/p/42",
                connections,
                seconds,
            );
            print_load_row(
                connections,
                "direct to the servers (no accounting)",
                &base,
                &base,
                None,
            );
            print_load_row(
                connections,
                "through the relays (replies charged)",
                &ours,
                &base,
                None,
            );
        }
    }

    println!(
        "\n| allocator | idle RSS | peak RSS in the spike | RSS 5 s after | kept after the spike |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (label, mode) in [
        ("glibc, defaults", "default"),
        ("glibc, tuned (the host as shipped)", "tuned"),
    ] {
        let host = Host::up_full(
            &[
                (
                    "rows",
                    manifest(
                        "rows",
                        "test-postgres",
                        "[postgres]\ndatabase = \"rows_db\"\nmax_connections = 8\n[resources]\nmemory = \"2GiB\"\n\
                         instance_memory = \"256MiB\"\nmax_concurrency = 16\n[[routes]]\nhost = \"rows.localhost\"",
                    ),
                ),
                (
                    "echo",
                    manifest(
                        "echo",
                        "test-echo",
                        "[resources]\nmemory = \"2GiB\"\ninstance_memory = \"128MiB\"\nmax_concurrency = 16\nmax_body = \"64MiB\"\n\
                         [[routes]]\nhost = \"echo.localhost\"",
                    ),
                ),
            ],
            "",
            &[
                ("ALORIG_POSTGRES_URL", &pg.admin_url()),
                ("ALORIG_ALLOCATOR", mode),
            ],
        );
        let pid = host.pid();
        let (idle, peak, after) = runtime.block_on(async {
            let query = || {
                host.request(
                    "POST",
                    "rows.localhost",
                    "/query",
                    b"SELECT repeat('x', 1000000) FROM generate_series(1, 20)".to_vec(),
                )
            };
            assert_eq!(query().await.status, 200);
            assert_eq!(
                host.request("POST", "echo.localhost", "/", vec![1; 1 << 20])
                    .await
                    .status,
                200
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            let idle = rss(pid).0;
            std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
            for _ in 0..3 {
                let queries = futures::future::join_all((0..8).map(|_| query()));
                let bodies = futures::future::join_all(
                    (0..8).map(|_| host.request("POST", "echo.localhost", "/", vec![7; 16 << 20])),
                );
                let (queries, bodies) = tokio::join!(queries, bodies);
                assert!(queries.iter().chain(&bodies).all(|r| r.status == 200));
            }
            let peak = rss(pid).1;
            tokio::time::sleep(Duration::from_secs(5)).await;
            (idle, peak, rss(pid).0)
        });
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "| {label} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:+.1} MiB |",
            mib(idle),
            mib(peak),
            mib(after),
            mib(after) - mib(idle)
        );
    }
}

/// (VmRSS, VmHWM) of `pid` in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}
