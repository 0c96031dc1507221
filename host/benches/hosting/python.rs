//! Section 8: the same HTML page (one PostgreSQL query, one Redis GET, a
//! template) from the Rust `page-bench` guest and the Python one
//! (`components/python/page-bench`, on the alorig SDK) on alorig-host, and from
//! Django under gunicorn with psycopg and redis-py (the seeds' stack today), on
//! the same data in the same run. Django, gunicorn, psycopg and redis-py are
//! pinned and installed by this section into `target/bench-venv`.

use super::{Load, wrk};
use crate::{
    harness::{Host, manifest, python_manifest, workspace_root},
    postgres_server::PgServer,
    redis_server::RedisServer,
};
use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const PINNED: [&str; 4] = [
    "Django==5.2.8",
    "gunicorn==27.0.1",
    "psycopg[binary]==3.3.9",
    "redis==8.1.0",
];
/// gunicorn's documented starting point: 2 × cores + 1 sync workers.
fn gunicorn_workers() -> usize {
    2 * std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        + 1
}
const PRODUCT: i32 = 42;

pub fn python_page(seconds: u32) {
    println!(
        "\n## 8. the same HTML page in Rust and Python on alorig-host, and Django under gunicorn (wrk, {seconds} s per row)\n"
    );
    let venv = bench_venv();
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let apps = [
        (
            "page",
            manifest(
                "page",
                "page-bench",
                "[resources]\nmax_concurrency = 1000\ninstance_reuse = 1000\n[[routes]]\nhost = \"page.localhost\"\n\
                 [postgres]\ndatabase = \"page_db\"\nmax_connections = 8\n[redis]\ndb = 3\nprefix = \"page:\"",
            ),
        ),
        (
            "pagepy",
            python_manifest(
                "pagepy",
                "page-bench",
                "[resources]\nmemory = \"1GiB\"\ninstance_memory = \"64MiB\"\nmax_concurrency = 64\ninstance_reuse = 1000\n\
                 [[routes]]\nhost = \"pagepy.localhost\"\n[postgres]\ndatabase = \"page_py_db\"\nmax_connections = 8\n\
                 [redis]\ndb = 3\nprefix = \"pagepy:\"",
            ),
        ),
    ];
    let host = Host::up_full(
        &apps,
        "",
        &[
            ("ALORIG_POSTGRES_URL", &pg.admin_url()),
            ("ALORIG_REDIS_URL", &redis.url()),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for app in ["page", "pagepy"] {
        let setup = runtime.block_on(host.request(
            "POST",
            &format!("{app}.localhost"),
            "/setup",
            Vec::new(),
        ));
        assert_eq!(setup.status, 200, "{app} setup: {}", setup.text());
    }
    let path = format!("/h/{PRODUCT}");
    let rust_body = runtime.block_on(host.get("page.localhost", &path)).text();
    let python_body = runtime.block_on(host.get("pagepy.localhost", &path)).text();
    assert_eq!(
        rust_body, python_body,
        "the Rust and Python components must render the same bytes"
    );

    let (mut gunicorn, django) = start_django(&venv, &pg, &redis.url());
    let django_body = runtime.block_on(get_body(django, &path));
    assert_eq!(django_body, rust_body, "Django must render the same bytes");

    println!(
        "All three read product {PRODUCT} from PostgreSQL and its stock from Redis (DB 3) and render the same {} bytes of HTML. \
         The host's apps reuse instances (`instance_reuse = 1000`); Django runs {} gunicorn sync workers ({}).\n",
        rust_body.len(),
        gunicorn_workers(),
        PINNED.join(", ")
    );
    println!(
        "| conns | server | req/s | p50 ms | p99 ms | errors | req/s vs Django | memory of the app |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---|");
    for connections in [1, 32] {
        let base = wrk(django, "django.localhost", &path, connections, seconds);
        let django_mem = tree_rss(gunicorn.id());
        let rust = wrk(host.ingress, "page.localhost", &path, connections, seconds);
        let python = wrk(
            host.ingress,
            "pagepy.localhost",
            &path,
            connections,
            seconds,
        );
        let peak = |app: &str| {
            runtime.block_on(host.metric("alorig_app_memory_peak_bytes", &format!("app=\"{app}\"")))
        };
        let instances = |app: &str| {
            runtime.block_on(host.metric("alorig_app_instances", &format!("app=\"{app}\"")))
        };
        row(
            connections,
            "Django 5.2 + gunicorn + psycopg + redis-py",
            &base,
            &base,
            &format!(
                "{:.1} MiB RSS (master + {} workers)",
                mib(django_mem),
                gunicorn_workers()
            ),
        );
        row(
            connections,
            "alorig-host, Rust page-bench",
            &rust,
            &base,
            &format!(
                "{:.1} MiB peak linear memory ({} live instances)",
                mib(peak("page") as u64),
                instances("page")
            ),
        );
        row(
            connections,
            "alorig-host, Python page-bench (alorig SDK)",
            &python,
            &base,
            &format!(
                "{:.1} MiB peak linear memory ({} live instances)",
                mib(peak("pagepy") as u64),
                instances("pagepy")
            ),
        );
    }
    let host_rss = runtime.block_on(host.metric("alorig_host_resident_memory_bytes", ""));
    println!(
        "\nThe host process (both apps, their instances, pools and the compiled code) was at {:.1} MiB RSS after the runs.",
        host_rss / 1048576.0
    );
    let _ = gunicorn.kill();
    let _ = gunicorn.wait();
}

fn row(connections: u32, name: &str, load: &Load, base: &Load, memory: &str) {
    println!(
        "| {connections} | {name} | {:.0} | {:.3} | {:.3} | {} | {:.2}× | {memory} |",
        load.rps,
        load.p50_ms,
        load.p99_ms,
        load.errors,
        load.rps / base.rps
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// `target/bench-venv` with the pinned packages (made once; PEP 668: a venv).
fn bench_venv() -> PathBuf {
    let venv = workspace_root().join("target/bench-venv");
    let stamp = venv.join("pinned.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(&PINNED.join("\n")) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 -m venv {} failed (apt-get install python3-venv)",
            venv.display()
        );
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(PINNED)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "installing {PINNED:?} into {} failed", venv.display());
        std::fs::write(&stamp, PINNED.join("\n")).unwrap();
    }
    venv
}

/// The Django project (files in `hosting/django/`) under gunicorn on a free port.
fn start_django(venv: &Path, pg: &PgServer, redis_url: &str) -> (Child, SocketAddr) {
    let project = tempfile::tempdir().unwrap().keep();
    let site = project.join("pagesite");
    std::fs::create_dir_all(site.join("templates")).unwrap();
    let files = [
        ("__init__.py", ""),
        ("settings.py", include_str!("django/settings.py")),
        ("urls.py", include_str!("django/urls.py")),
        ("wsgi.py", include_str!("django/wsgi.py")),
        ("templates/page.html", include_str!("django/page.html")),
    ];
    for (name, text) in files {
        std::fs::write(site.join(name), text).unwrap();
    }
    let url = pg.url_for("page_db");
    let rest = url.trim_start_matches("postgres://");
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, db) = rest.split_once('/').unwrap();
    let (dbhost, dbport) = hostport.split_once(':').unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(venv.join("bin/gunicorn"))
        .args([
            "--workers",
            &gunicorn_workers().to_string(),
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--chdir",
        ])
        .arg(&project)
        .args(["--log-level", "warning", "pagesite.wsgi"])
        .env("PAGE_DB_NAME", db.split('?').next().unwrap())
        .env("PAGE_DB_USER", user.split(':').next().unwrap())
        .env(
            "PAGE_DB_PASSWORD",
            user.split_once(':').map_or("", |(_, p)| p),
        )
        .env("PAGE_DB_HOST", dbhost)
        .env("PAGE_DB_PORT", dbport)
        .env("PAGE_REDIS_URL", format!("{redis_url}/3"))
        .stdout(Stdio::null())
        .spawn()
        .expect("starting gunicorn");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "gunicorn did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, addr)
}

/// RSS of a process and all its descendants (gunicorn's master and workers).
fn tree_rss(pid: u32) -> u64 {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    rss + children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(tree_rss)
        .sum::<u64>()
}

async fn get_body(addr: SocketAddr, path: &str) -> String {
    super::page::get_body(addr, path).await
}
