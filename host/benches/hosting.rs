//! The benchmark suite. Every figure is printed next to a baseline measured in
//! the same run on the same machine, with the ratio:
//!
//! 1. `hello` through alorig-host vs a native hyper server giving the same bytes,
//!    and vs `wasmtime serve` on the same component (when `wasmtime` is on PATH),
//!    at 1, 32 and 256 connections, with wrk on loopback;
//! 2. instantiation: a fresh instance created and dropped, in isolation;
//! 3. memory density: host RSS idle with eight apps, and per live instance;
//! 4. deploy: cold compile and cached load of each component;
//! 5. jobs per second through the durable job queue (PostgreSQL), one host;
//! 6. a page doing one PostgreSQL query and one Redis GET vs the same page served
//!    natively (hyper + sqlx + redis);
//! 7. WebSockets: host memory per idle connection, a broadcast to 1,000 clients;
//! 8. the same HTML page (query + Redis GET + template) in Rust and Python on the
//!    host vs Django under gunicorn with psycopg and redis-py.
//! 9. host memory: the page through the accounting relays vs straight to the
//!    servers, and host RSS after spikes with glibc's defaults vs the tuning;
//! 10. the Alorig apps (Snapify, Site Builder, IGNY8) from their shipped
//!     manifests: guest memory idle and at peak under load against the cap, host
//!     RSS, req/s and p99 of each main page;
//! 11. `[files]`: 1 MiB and 4 KiB files written and read through the guest vs
//!     `std::fs` natively;
//! 12. CPU fair share: a neighbour's throughput while an app spins, with the
//!     guest pool off (the same run's baseline) and on; weights; an app alone;
//!     CPU counted per app vs the process's.
//! 13. one Redis GET through the host call vs the `redis` crate natively.
//!
//! Run: `./deploy/quickstart.sh bench` (or `cargo bench -p alorig-host --bench hosting`).
//! `--quick` shortens each load run; `--only throughput,instantiation,density,deploy,jobs,page,websocket,python,host-memory,apps,files,cpu,redis`
//! runs just those sections.

// A benchmark whose setup fails has nothing to measure: it stops at the unwrap.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../tests/e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../../tests/e2e/postgres_server.rs"]
mod postgres_server;
#[allow(dead_code)]
#[path = "../../tests/e2e/redis_server.rs"]
mod redis_server;
#[allow(dead_code)]
#[path = "../../tests/e2e/shipped_apps.rs"]
mod shipped_apps;
#[allow(dead_code)]
#[path = "../../tests/e2e/stub.rs"]
mod stub;

#[path = "../../tests/e2e/load.rs"]
mod load;
use load::{Load, wrk};

#[path = "hosting/page.rs"]
mod page;

#[path = "hosting/apps.rs"]
mod apps;
#[path = "hosting/cpu.rs"]
mod cpu;
#[path = "hosting/files.rs"]
mod files;
#[path = "hosting/host_memory.rs"]
mod host_memory;
#[path = "hosting/jobs.rs"]
mod jobs;
#[path = "hosting/python.rs"]
mod python;
#[path = "hosting/redis_call.rs"]
mod redis_call;
#[path = "hosting/websocket.rs"]
mod websocket;

use alorig_host::{app::App, config::Manifest, runtime::Runtime};
use harness::{Host, guest, manifest};
use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const HELLO_BODY: &[u8] = b"Hello from alorig-host\n";

fn print_load_header() {
    println!(
        "| conns | server | req/s | p50 ms | p99 ms | errors | req/s vs native | req/s vs wasmtime serve (same mode) | p99 vs wasmtime serve (same mode) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
}

/// One table row: `load`'s figures with its ratios to the native baseline and,
/// when given, to `wasmtime serve` in the same mode.
fn print_load_row(
    connections: u32,
    name: &str,
    load: &Load,
    native: &Load,
    vs_wasmtime: Option<&Load>,
) {
    let (rps_ratio, p99_ratio) = match vs_wasmtime {
        Some(w) => (
            format!("{:.2}×", load.rps / w.rps),
            format!("{:.2}×", load.p99_ms / w.p99_ms),
        ),
        None => ("–".into(), "–".into()),
    };
    println!(
        "| {connections} | {name} | {:.0} | {:.3} | {:.3} | {} | {:.2}× | {rps_ratio} | {p99_ratio} |",
        load.rps,
        load.p50_ms,
        load.p99_ms,
        load.errors,
        load.rps / native.rps
    );
}

/// A native hyper server answering the same bytes as `hello`.
fn start_native_hyper() -> SocketAddr {
    start_native(|| async {
        |_request| async {
            hyper::Response::builder()
                .header("content-type", "text/plain")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    HELLO_BODY,
                )))
                .unwrap()
        }
    })
}

/// A native hyper server on its own multi-threaded runtime, answering every
/// request with `handler`, which `setup` builds inside that runtime (pools and
/// connections belong to it). Answers the address it listens on.
fn start_native<S, SetupFuture, H, HandlerFuture>(setup: S) -> SocketAddr
where
    S: FnOnce() -> SetupFuture + Send + 'static,
    SetupFuture: Future<Output = H>,
    H: Fn(hyper::Request<hyper::body::Incoming>) -> HandlerFuture + Clone + Send + Sync + 'static,
    HandlerFuture:
        Future<Output = hyper::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let handler = setup().await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let answer = handler(request);
                        async move { Ok::<_, std::convert::Infallible>(answer.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

/// `wasmtime serve` on the same component, if wasmtime is installed.
fn start_wasmtime_serve(component: &Path, reuse: Option<u32>) -> Option<(Child, SocketAddr)> {
    let version = Command::new("wasmtime").arg("--version").output().ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut command = Command::new("wasmtime");
    command.args(["serve", "-Scli", "--addr", &addr.to_string()]);
    if let Some(n) = reuse {
        command.arg(format!("--max-instance-reuse-count={n}"));
    }
    let child = command
        .arg(component)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if reuse.is_none() {
        println!(
            "baseline: {}",
            String::from_utf8_lossy(&version.stdout).trim()
        );
    }
    Some((child, addr))
}

fn throughput(seconds: u32) {
    println!(
        "\n## 1. hello: requests/s and latency (wrk, {seconds} s per row, loopback, load generator on the same 2 cores)\n"
    );
    let native = start_native_hyper();
    let hello = guest("hello");
    let route = "max_concurrency = 1000\n[[routes]]\nhost = \"hello.localhost\"";
    let host = Host::up(&[(
        "hello",
        manifest("hello", "hello", &format!("[resources]\n{route}")),
    )]);
    let host_reuse = Host::up(&[(
        "hello",
        manifest(
            "hello",
            "hello",
            &format!("[resources]\ninstance_reuse = 1000\n{route}"),
        ),
    )]);
    let wasmtime = start_wasmtime_serve(&hello, None);
    let wasmtime_reuse = start_wasmtime_serve(&hello, Some(1000));
    if wasmtime.is_none() {
        println!(
            "(wasmtime serve: skipped, `wasmtime` is not installed: cargo install wasmtime-cli --version 48.0.8)"
        );
    }
    println!(
        "Fresh = a new instance per request; reuse = up to 1000 requests per instance (alorig `instance_reuse`, wasmtime `--max-instance-reuse-count`).\n"
    );
    print_load_header();
    for connections in [1, 32, 256] {
        let base = wrk(native, "hello.localhost", "/", connections, seconds);
        print_load_row(connections, "native hyper", &base, &base, None);
        for (mode, ours_addr, theirs) in [
            ("fresh", host.ingress, &wasmtime),
            ("reuse", host_reuse.ingress, &wasmtime_reuse),
        ] {
            let theirs = theirs
                .as_ref()
                .map(|(_, addr)| wrk(*addr, "hello.localhost", "/", connections, seconds));
            let ours = wrk(ours_addr, "hello.localhost", "/", connections, seconds);
            if let Some(w) = &theirs {
                print_load_row(
                    connections,
                    &format!("wasmtime serve, {mode}"),
                    w,
                    &base,
                    Some(w),
                );
            }
            print_load_row(
                connections,
                &format!("alorig-host, {mode}"),
                &ours,
                &base,
                theirs.as_ref(),
            );
        }
    }
    for (mut child, _) in [wasmtime, wasmtime_reuse].into_iter().flatten() {
        let _ = child.kill();
    }
}

async fn instantiation(iterations: u32) {
    println!(
        "\n## 2. instantiation: a fresh instance of `hello`, created and dropped ({iterations} times, one thread)\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(dir.path(), 100).unwrap();
    let path = dir.path().join("hello.toml");
    std::fs::write(&path, manifest("hello", "hello", "")).unwrap();
    let app = App::load(&runtime, Manifest::load(&path).unwrap())
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations {
        let started = Instant::now();
        let mut store = app.new_store(started);
        app.pre.instantiate_async(&mut store).await.unwrap();
        drop(store);
        samples.push(started.elapsed());
    }
    let (p50, p99) = harness::percentiles(samples);
    println!(
        "| per-request instance (new store + instantiate + drop) | p50 {:.1} µs | p99 {:.1} µs |",
        p50 * 1000.0,
        p99 * 1000.0
    );
    println!("|---|---:|---:|");
}

async fn density() {
    println!("\n## 3. memory density\n");
    let names: Vec<String> = (1..=8).map(|i| format!("app{i}")).collect();
    let manifests: Vec<(&str, String)> = names
        .iter()
        .map(|n| (n.as_str(), manifest(n, "test-alloc", &format!("[resources]\nmemory = \"1GiB\"\nmax_concurrency = 500\n[[routes]]\nhost = \"{n}.localhost\""))))
        .collect();
    let host = Host::up(&manifests);
    for name in &names {
        host.get(&format!("{name}.localhost"), "/?mib=0").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = host.metric("alorig_host_resident_memory_bytes", "").await;
    let live = 200;
    let holders = futures::future::join_all((0..live).map(|i| {
        let host_name = format!("app{}.localhost", i % 8 + 1);
        let host = &host;
        async move { host.get(&host_name, "/?mib=0&hold_ms=2000").await }
    }));
    let sample = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        (
            host.metric("alorig_host_resident_memory_bytes", "").await,
            host.metric("alorig_app_instances", "").await,
            host.metric("alorig_app_memory_bytes", "").await,
        )
    };
    let (_, (busy, instances, guest_memory)) = tokio::join!(holders, sample);
    let mib = |b: f64| b / (1u64 << 20) as f64;
    println!("| figure | alorig-host | baseline |");
    println!("|---|---:|---:|");
    println!(
        "| host RSS, 8 apps deployed, idle | {:.1} MiB | Docker budget for the seeds' 8 app deployments: ~8,200 MiB (ratio {:.0}×) |",
        mib(idle),
        8200.0 / mib(idle)
    );
    println!(
        "| RSS per live instance ({instances:.0} live, guest memory {:.1} MiB) | {:.0} KiB | guest linear memory per instance {:.0} KiB |",
        mib(guest_memory),
        (busy - idle) / instances.max(1.0) / 1024.0,
        guest_memory / instances.max(1.0) / 1024.0
    );
}

async fn deploy_times() {
    println!(
        "\n## 4. deploy: compile of each reference component, cold vs from the compile cache; restart to serving\n"
    );
    println!("| component | size | cold compile | cached load | ratio |");
    println!("|---|---:|---:|---:|---:|");
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(dir.path(), 100).unwrap();
    for name in ["hello", "store", "psydge", "page-bench", "test-echo"] {
        let bytes = std::sync::Arc::new(std::fs::read(guest(name)).unwrap());
        let started = Instant::now();
        let cold = runtime
            .cache
            .load(&runtime.engine, bytes.clone())
            .await
            .unwrap();
        let cold_time = started.elapsed();
        let started = Instant::now();
        let cached = runtime
            .cache
            .load(&runtime.engine, bytes.clone())
            .await
            .unwrap();
        let cached_time = started.elapsed();
        assert!(!cold.cached && cached.cached);
        println!(
            "| {name} | {} KiB | {:.1} ms | {:.1} ms | {:.0}× |",
            bytes.len() / 1024,
            cold_time.as_secs_f64() * 1000.0,
            cached_time.as_secs_f64() * 1000.0,
            cold_time.as_secs_f64() / cached_time.as_secs_f64()
        );
    }

    // Restart to serving: eight apps deployed through the admin API, the host
    // killed, then timed from process start until every app answers.
    let data = tempfile::tempdir().unwrap();
    let names: Vec<String> = (1..=8).map(|i| format!("app{i}")).collect();
    {
        let host = Host::serve(data.path(), "");
        for (i, name) in names.iter().enumerate() {
            let guest_name = ["hello", "test-echo", "test-alloc"][i % 3];
            let text = manifest(
                name,
                guest_name,
                &format!("[[routes]]\nhost = \"{name}.localhost\""),
            );
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, text).unwrap();
            let (code, _, err) = host.cli(&["deploy", path.to_str().unwrap()]);
            assert_eq!(code, 0, "deploy {name}: {err}");
        }
        host.kill();
    }
    let started = Instant::now();
    let host = Host::serve(data.path(), "");
    for name in &names {
        while host
            .try_get(&format!("{name}.localhost"), "/")
            .await
            .map(|r| r.status)
            .unwrap_or(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    println!(
        "\n| restart to serving: 8 deployed apps, process start until every app answers | {:.0} ms |",
        started.elapsed().as_secs_f64() * 1000.0
    );
    println!("|---|---:|");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only page,deploy`: run just those sections (names as below).
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_string).collect());
    let run = |section: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == section));
    println!("# alorig-host benchmarks");
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model()
    );
    let seconds = if quick { 2 } else { 8 };
    if run("throughput") {
        throughput(seconds);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        if run("instantiation") {
            instantiation(if quick { 2_000 } else { 20_000 }).await;
        }
        if run("density") {
            density().await;
        }
        if run("deploy") {
            deploy_times().await;
        }
        if run("jobs") {
            jobs::jobs_per_second(if quick { 500 } else { 2_000 }).await;
        }
    });
    drop(runtime);
    if run("page") {
        page::page(seconds);
    }
    if run("websocket") {
        websocket::websocket();
    }
    if run("python") {
        python::python_page(seconds);
    }
    if run("host-memory") {
        host_memory::host_memory(seconds);
    }
    if run("apps") {
        apps::apps(seconds);
    }
    if run("files") {
        files::files();
    }
    if run("cpu") {
        cpu::cpu(seconds);
    }
    if run("redis") {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(redis_call::redis_call());
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
