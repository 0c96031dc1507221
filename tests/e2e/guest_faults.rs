//! The guest-fault suite (`RELIABILITY.md`; plan R01, R03, R06–R09, R12): a
//! purpose-built bad guest, app A, does one thing wrong while a healthy
//! neighbour, app B, serves a steady load from a few clients. One driver,
//! [`beside_neighbour`], runs each fault and reports A's answers and how long
//! they took, B's errors and its p50/p99 alone and during the fault, and the
//! host's resident memory (VmRSS of `/proc/<pid>/status`) before, at its peak
//! and after.
//!
//! What is asserted is definite: A's statuses, B's errors (0), the host alive
//! and without a panic, its RSS back within a stated bound, A's memory back to 0.
//! Timings are printed, never asserted beyond "answered at all": on two shared
//! cores running the whole suite in parallel a p99 says more about the machine
//! than about the host; speed is the benchmark's business (`BENCHMARKS.md`).
//!
//! The front door's 10,000 idle HTTP connections are here too: the same
//! neighbour load, measured while they are held open.

use crate::{
    harness::{Host, allow_open_files, manifest, percentiles},
    outbound::{ok_response, upstream},
    postgres_server::PgServer,
    redis_server::RedisServer,
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use std::{
    collections::BTreeMap,
    future::Future,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

const MIB: u64 = 1 << 20;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

/// One request to the host's ingress.
#[derive(Clone)]
pub struct Req {
    method: &'static str,
    host: String,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// Text a good answer's body contains (guests that answer errors with 200).
    expect: Option<&'static str>,
}

impl Req {
    pub fn get(host: &str, path: &str) -> Req {
        Req {
            method: "GET",
            host: host.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            expect: None,
        }
    }

    pub fn post(host: &str, path: &str, body: impl Into<Bytes>) -> Req {
        Req {
            method: "POST",
            body: body.into(),
            ..Req::get(host, path)
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Req {
        self.headers.push((name, value));
        self
    }

    pub fn with_method(self, method: &'static str) -> Req {
        Req { method, ..self }
    }

    pub fn expecting(self, text: &'static str) -> Req {
        Req {
            expect: Some(text),
            ..self
        }
    }
}

/// One of A's answers: its status (0: no answer at all), how long it took,
/// how many body bytes came (read and dropped as they arrived) and the first
/// 4 KiB of them as text.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub took: Duration,
    pub bytes: u64,
    pub text: String,
}

/// Sends `req`: (status, body length, the body's first 4 KiB), or why it failed.
pub async fn send(
    client: &Client,
    addr: SocketAddr,
    req: &Req,
) -> Result<(u16, u64, Vec<u8>), String> {
    let mut request = http::Request::builder()
        .method(req.method)
        .uri(format!("http://{addr}{}", req.path))
        .header("host", &req.host);
    for (name, value) in &req.headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Full::new(req.body.clone()))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let (mut bytes, mut start) = (0, Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{status}, then the body broke: {e}"))?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
            let room = 4096usize.saturating_sub(start.len());
            start.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok((status, bytes, start))
}

/// A's side: `count` requests `make(i)`, `concurrency` of them in flight.
pub async fn fire(
    host: &Host,
    count: usize,
    concurrency: usize,
    make: impl Fn(usize) -> Req,
) -> Vec<Answer> {
    use futures::StreamExt as _;
    let client = client();
    let (client, addr) = (&client, host.ingress);
    futures::stream::iter((0..count).map(make))
        .map(|req| async move {
            let started = Instant::now();
            let (status, bytes, start) = send(client, addr, &req).await.unwrap_or_default();
            Answer {
                status,
                took: started.elapsed(),
                bytes,
                text: String::from_utf8_lossy(&start).into_owned(),
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// B's side: `clients` clients, each sending `req` again 2 ms after its last
/// answer, at least `min` times each, then until `stop` is set, at most `max`
/// times each. (successful latencies, failures as text)
pub async fn steady(
    host: &Host,
    req: &Req,
    clients: usize,
    (min, max): (usize, usize),
    stop: &AtomicBool,
) -> (Vec<Duration>, Vec<String>) {
    let client = client();
    let one = || async {
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for i in 0..max {
            if i >= min && stop.load(Ordering::Relaxed) {
                break;
            }
            let started = Instant::now();
            match send(&client, host.ingress, req).await {
                Ok((200..=299, _, body))
                    if req
                        .expect
                        .is_none_or(|e| String::from_utf8_lossy(&body).contains(e)) =>
                {
                    ok.push(started.elapsed())
                }
                Ok((status, _, body)) => failed.push(format!(
                    "status {status}: {}",
                    String::from_utf8_lossy(&body)
                )),
                Err(err) => failed.push(err),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (ok, failed)
    };
    let all = futures::future::join_all((0..clients).map(|_| one())).await;
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for (o, f) in all {
        ok.extend(o);
        failed.extend(f);
    }
    (ok, failed)
}

/// A process's resident memory now and at its peak since [`reset_peak`], in bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Sets the peak (`VmHWM`) back to the resident size now.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The process's open file descriptors (sockets included).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Alive: the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

/// A panic of the host itself in its log (a guest's own panic messages, which
/// the host relays as `guest:` lines, do not count).
pub fn host_panicked(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("panicked") && !l.contains(" guest: "))
}

/// What one fault did, as the driver measured it.
pub struct Figures {
    pub fault: String,
    pub answers: Vec<Answer>,
    pub neighbour_requests: usize,
    pub neighbour_errors: Vec<String>,
    /// The neighbour's (p50, p99) in ms, alone and during the fault.
    pub alone: (f64, f64),
    pub during: (f64, f64),
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
}

impl Figures {
    /// A's statuses: how many answers had each.
    pub fn statuses(&self) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for a in &self.answers {
            *counts.entry(a.status).or_default() += 1;
        }
        counts
    }

    fn times(&self) -> (Duration, Duration) {
        let mut t: Vec<Duration> = self.answers.iter().map(|a| a.took).collect();
        t.sort();
        (t[t.len() / 2], t[t.len() - 1])
    }

    /// Every answer had one of `expected`.
    pub fn assert_statuses(&self, expected: &[u16]) {
        assert!(!self.answers.is_empty());
        assert!(
            self.answers.iter().all(|a| expected.contains(&a.status)),
            "{}: A's answers {:?}, expected only {expected:?}",
            self.fault,
            self.statuses()
        );
    }

    /// The checks every fault shares: the neighbour saw no error, the host is
    /// alive and did not panic, and its RSS came back to within `bound` bytes
    /// of where it was before the fault.
    pub fn assert_contained(&self, host: &Host, bound: u64) {
        assert!(
            self.neighbour_errors.is_empty(),
            "{}: the neighbour failed {} of {} requests: {:?}",
            self.fault,
            self.neighbour_errors.len(),
            self.neighbour_requests,
            &self.neighbour_errors[..self.neighbour_errors.len().min(5)]
        );
        assert!(alive(host.pid()), "{}: the host died", self.fault);
        assert!(
            !host_panicked(&host.log()),
            "{}: the host panicked:\n{}",
            self.fault,
            host.log()
        );
        assert!(
            self.rss_after <= self.rss_before + bound,
            "{}: host RSS {:.1} MiB before, {:.1} MiB after (bound +{:.0} MiB)",
            self.fault,
            mib(self.rss_before),
            mib(self.rss_after),
            mib(bound)
        );
    }

    fn print(&self) {
        let (median, max) = self.times();
        println!(
            "guest fault | {} | A: {:?} in {:.0} ms median, {:.0} ms max | neighbour: {} requests, {} errors, p50/p99 alone {:.1}/{:.1} ms, during {:.1}/{:.1} ms | host RSS {:.1} -> peak {:.1} -> {:.1} MiB",
            self.fault,
            self.statuses(),
            median.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0,
            self.neighbour_requests,
            self.neighbour_errors.len(),
            self.alone.0,
            self.alone.1,
            self.during.0,
            self.during.1,
            mib(self.rss_before),
            mib(self.rss_peak),
            mib(self.rss_after),
        );
    }
}

/// The neighbour's clients, and its requests per client alone (the baseline)
/// and during a fault (at least, at most).
const CLIENTS: usize = 3;
const ALONE: usize = 100;
const DURING: (usize, usize) = (30, 3_000);

/// Runs `attack` (A's requests) while `neighbour` is under steady load, after
/// measuring that load alone; RSS "after" is read once it has fallen back to
/// within `bound` of "before" or 10 s have passed. Prints the figures.
pub async fn beside_neighbour(
    fault: &str,
    host: &Host,
    neighbour: &Req,
    bound: u64,
    attack: impl Future<Output = Vec<Answer>>,
) -> Figures {
    let pid = host.pid();
    let done = AtomicBool::new(true);
    // Warm-up (first instances, connections), then the neighbour alone.
    let (_, failed) = steady(host, neighbour, CLIENTS, (10, 10), &done).await;
    assert!(
        failed.is_empty(),
        "the neighbour fails on its own: {failed:?}"
    );
    let (alone, failed) = steady(host, neighbour, CLIENTS, (ALONE, ALONE), &done).await;
    assert!(
        failed.is_empty(),
        "the neighbour fails on its own: {failed:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_before, _) = rss(pid);
    reset_peak(pid);

    let stop = AtomicBool::new(false);
    let ((during, neighbour_errors), answers) =
        tokio::join!(steady(host, neighbour, CLIENTS, DURING, &stop), async {
            let answers = attack.await;
            stop.store(true, Ordering::Relaxed);
            answers
        });
    let (_, rss_peak) = rss(pid);
    let settled = Instant::now() + Duration::from_secs(10);
    let rss_after = loop {
        let (now, _) = rss(pid);
        if now <= rss_before + bound || Instant::now() > settled {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let figures = Figures {
        fault: fault.to_string(),
        answers,
        neighbour_requests: during.len() + neighbour_errors.len(),
        neighbour_errors,
        alone: percentiles(alone),
        during: if during.is_empty() {
            (0.0, 0.0)
        } else {
            percentiles(during)
        },
        rss_before,
        rss_peak: rss_peak.max(rss_before),
        rss_after,
    };
    figures.print();
    figures
}

/// A's memory and live instances are back to 0.
async fn gave_everything_back(host: &Host, app: &str) {
    let label = format!("app=\"{app}\"");
    assert_eq!(
        host.wait_metric("alorig_app_instances", &label, 0.0).await,
        0.0,
        "{app} still has live instances"
    );
    assert_eq!(
        host.wait_metric("alorig_app_memory_bytes", &label, 0.0)
            .await,
        0.0,
        "{app} still holds memory"
    );
}

/// The healthy neighbour most faults run beside.
fn calm() -> (&'static str, String) {
    (
        "calm",
        manifest("calm", "hello", "[[routes]]\nhost = \"calm.test\""),
    )
}

fn calm_req() -> Req {
    Req::get("calm.test", "/")
}

/// A host running fault app `name` (guest `guest`, manifest `extra`) beside [`calm`].
fn beside_calm(name: &str, guest: &str, extra: &str) -> Host {
    Host::up(&[(name, app(name, guest, extra)), calm()])
}

/// Every answer came at the deadline `at` or a little after (never before;
/// "a little" is generous: seconds, on a loaded machine).
fn answered_at_deadline(figures: &Figures, at: Duration) {
    for a in &figures.answers {
        assert!(
            a.took >= at.mul_f64(0.93) && a.took < at + Duration::from_secs(8),
            "{}: answered after {:?}",
            figures.fault,
            a.took
        );
    }
}

/// Waits (up to 10 s) for the process's open fds to fall to `before + slack`; the count then.
async fn fds_settle(pid: u32, before: usize, slack: usize) -> usize {
    let settled = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > before + slack && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    open_fds(pid)
}

fn app(name: &str, guest: &str, extra: &str) -> String {
    manifest(
        name,
        guest,
        &format!("{extra}\n[[routes]]\nhost = \"{name}.test\""),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_fails_alone_and_gives_its_memory_back() {
    let host = beside_calm(
        "hog",
        "test-alloc",
        "[resources]\nmemory = \"48MiB\"\ninstance_memory = \"40MiB\"",
    );
    assert_eq!(host.get("hog.test", "/?mib=4").await.status, 200);
    // 40 requests, 4 at once, each for 100 MiB against a 40 MiB instance cap
    // (and a 48 MiB app budget the four share).
    let figures = beside_neighbour(
        "memory hog (100 MiB asked, 40 MiB instance cap)",
        &host,
        &calm_req(),
        16 * MIB,
        fire(&host, 40, 4, |_| Req::get("hog.test", "/?mib=100")),
    )
    .await;
    // 500: growth past the cap ends the request; 503: no room to even start.
    figures.assert_statuses(&[500, 503]);
    assert!(figures.statuses().contains_key(&500));
    figures.assert_contained(&host, 16 * MIB);
    gave_everything_back(&host, "hog").await;
    assert!(
        host.metric("alorig_app_memory_peak_bytes", "app=\"hog\"")
            .await
            <= (48 << 20) as f64
    );
    assert_eq!(
        host.get("hog.test", "/?mib=4").await.status,
        200,
        "serves again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_loops_get_504_at_the_deadline_beside_a_serving_neighbour() {
    let host = beside_calm(
        "spin",
        "test-loop",
        "[resources]\nrequest_timeout = \"1500ms\"",
    );
    let figures = beside_neighbour(
        "CPU loop (4 at once, 1.5 s deadline)",
        &host,
        &calm_req(),
        16 * MIB,
        fire(&host, 8, 4, |_| Req::get("spin.test", "/")),
    )
    .await;
    figures.assert_statuses(&[504]);
    answered_at_deadline(&figures, Duration::from_millis(1500));
    figures.assert_contained(&host, 16 * MIB);
    assert_eq!(
        host.metric("alorig_app_traps_total", "app=\"spin\",reason=\"deadline\"")
            .await,
        8.0
    );
    gave_everything_back(&host, "spin").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_is_a_500_and_the_host_survives() {
    let host = beside_calm("deep", "test-trap", "");
    let figures = beside_neighbour(
        "deep recursion (wasm stack overflow)",
        &host,
        &calm_req(),
        16 * MIB,
        fire(&host, 40, 4, |_| Req::get("deep.test", "/?kind=recurse")),
    )
    .await;
    figures.assert_statuses(&[500]);
    figures.assert_contained(&host, 16 * MIB);
    assert!(
        host.log().contains("call stack exhausted"),
        "the operator sees a stack overflow: {}",
        host.log()
    );
    assert_eq!(
        host.metric("alorig_app_traps_total", "app=\"deep\"").await,
        40.0
    );
    gave_everything_back(&host, "deep").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storm_of_1200_traps_leaves_nothing_behind() {
    let host = beside_calm("storm", "test-trap", "");
    // Three kinds in turn: unreachable (a panic), an out-of-bounds load, a stack overflow.
    let kinds = ["/", "/?kind=oob", "/?kind=recurse"];
    let figures = beside_neighbour(
        "trap storm (1,200: unreachable, out of bounds, stack overflow)",
        &host,
        &calm_req(),
        16 * MIB,
        fire(&host, 1200, 8, |i| Req::get("storm.test", kinds[i % 3])),
    )
    .await;
    figures.assert_statuses(&[500]);
    figures.assert_contained(&host, 16 * MIB);
    assert_eq!(
        host.metric("alorig_app_traps_total", "app=\"storm\"").await,
        1200.0
    );
    gave_everything_back(&host, "storm").await;
    // The trap log stays a few lines per 10 s window, not 1,200.
    let lines = host
        .log()
        .lines()
        .filter(|l| l.contains("storm") && l.contains("WARN"))
        .count();
    println!("trap storm: {lines} WARN lines for 1,200 traps");
    assert!(lines < 60, "{lines} WARN lines for 1,200 traps");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_query_flood_ends_at_its_deadline_and_spares_the_neighbours_database() {
    let pg = PgServer::start();
    // statement_timeout also bounds the wait for a pooled connection: longer
    // than the flooder's deadline, so the deadline is what ends it.
    let pg_app = |name: &str, timeout: &str| {
        app(
            name,
            "test-postgres",
            &format!(
                "[postgres]\ndatabase = \"{name}_db\"\nmax_connections = 4\nstatement_timeout = \"5s\"\n\
                 [resources]\nrequest_timeout = \"{timeout}\""
            ),
        )
    };
    let host = Host::up_full(
        &[
            ("flood", pg_app("flood", "2s")),
            ("calmpg", pg_app("calmpg", "30s")),
        ],
        "",
        &[("ALORIG_POSTGRES_URL", &pg.admin_url())],
    );
    let neighbour = Req::post("calmpg.test", "/query", "SELECT 1 AS one").expecting("int32:1");
    // Eight guests, each querying as fast as it can through a pool of 4, until
    // the 2 s deadline ends it.
    let figures = beside_neighbour(
        "PostgreSQL flood (8 guests, pool of 4, until the 2 s deadline)",
        &host,
        &neighbour,
        16 * MIB,
        fire(&host, 8, 8, |_| {
            Req::post("flood.test", "/bench?n=100000000", "SELECT $1::int4")
        }),
    )
    .await;
    figures.assert_statuses(&[504]);
    figures.assert_contained(&host, 16 * MIB);
    gave_everything_back(&host, "flood").await;
    // The cut-off queries gave their connections back: the flooder queries again.
    let again = host
        .request("POST", "flood.test", "/query", b"SELECT 2 AS two".to_vec())
        .await;
    let text = again.text();
    assert_eq!(
        (again.status, text.lines().nth(1)),
        (200, Some("int32:2")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_call_flood_ends_at_its_deadline_and_spares_the_neighbour() {
    let redis = RedisServer::start();
    let redis_app = |name: &str, db: u8, timeout: &str| {
        app(
            name,
            "test-redis",
            &format!(
                "[redis]\ndb = {db}\nprefix = \"{name}:\"\n[resources]\nrequest_timeout = \"{timeout}\""
            ),
        )
    };
    let host = Host::up_with(
        &[
            ("flood", redis_app("flood", 1, "2s")),
            ("calmkv", redis_app("calmkv", 2, "30s")),
        ],
        &format!("redis_url = \"{}\"", redis.url()),
    );
    // The neighbour reads one key ("k" hex-encoded) that exists.
    assert_eq!(
        host.request("POST", "calmkv.test", "/set?k=6b", b"v".to_vec())
            .await
            .status,
        200
    );
    let figures = beside_neighbour(
        "Redis flood (4 guests, GETs until the 2 s deadline)",
        &host,
        &Req::get("calmkv.test", "/get?k=6b"),
        16 * MIB,
        fire(&host, 4, 4, |_| {
            Req::get("flood.test", "/bench?n=500000&k=6b")
        }),
    )
    .await;
    figures.assert_statuses(&[504]);
    figures.assert_contained(&host, 16 * MIB);
    gave_everything_back(&host, "flood").await;
    assert_eq!(
        host.get("flood.test", "/get?k=6b").await.status,
        404,
        "serves again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outbound_flood_stays_within_its_grant_and_leaves_no_sockets() {
    let (port, accepted) = upstream(ok_response(64), Duration::ZERO);
    let host = beside_calm(
        "flood",
        "test-outbound",
        &format!("[outbound_http]\nallowed_hosts = [\"http://127.0.0.1:{port}\"]"),
    );
    let fds_before = open_fds(host.pid());
    // 8 guests × 200 requests, one after another as fast as each can: a bounded
    // count, so the loopback's ephemeral ports are not the thing measured.
    let url = format!("http://127.0.0.1:{port}/");
    let figures = beside_neighbour(
        "outbound flood (8 guests x 200 requests to a loopback stub)",
        &host,
        &calm_req(),
        16 * MIB,
        fire(&host, 8, 8, |_| {
            Req::get("flood.test", &format!("/flood?url={url}&n=200"))
        }),
    )
    .await;
    figures.assert_statuses(&[200]);
    for a in &figures.answers {
        assert!(a.text.starts_with("ok=200 failed=0"), "{}", a.text);
    }
    figures.assert_contained(&host, 16 * MIB);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1600,
        "every request reached the stub once"
    );
    gave_everything_back(&host, "flood").await;
    let fds_after = fds_settle(host.pid(), fds_before, 16).await;
    println!("outbound flood: host fds {fds_before} before, {fds_after} after");
    assert!(
        fds_after <= fds_before + 16,
        "host fds {fds_before} -> {fds_after}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_flood_stops_at_max_pending_and_the_neighbours_job_still_runs() {
    use sqlx::Connection as _;
    let pg = PgServer::start();
    let timers_app = |name: &str, extra: &str| {
        app(
            name,
            "test-timers",
            &format!("[postgres]\ndatabase = \"{name}_db\"\nmax_connections = 4\n{extra}"),
        )
    };
    let host = Host::up_full(
        &[
            ("jobs", timers_app("jobs", "[jobs]\nmax_pending = 500")),
            ("calmjob", timers_app("calmjob", "")),
            calm(),
        ],
        "",
        &[("ALORIG_POSTGRES_URL", &pg.admin_url())],
    );
    assert_eq!(
        host.request("POST", "calmjob.test", "/setup", vec![])
            .await
            .status,
        200
    );
    // Four guests each scheduling jobs as fast as they can, 100,000 asked,
    // until the app's max_pending refuses more (or, when scheduling slows
    // under the contention, the request's deadline ends one first). The jobs
    // are due in ten minutes, so the queue fills whatever the worker's pace:
    // no-op jobs due at once were drained as fast as four guests scheduled
    // them on a quicker machine, and max_pending was never reached.
    let figures = beside_neighbour(
        "job flood (4 guests scheduling until max_pending = 500)",
        &host,
        &calm_req(),
        32 * MIB,
        fire(&host, 4, 4, |_| {
            Req::post("jobs.test", "/enqueue?n=100000&after_ms=600000", "noop")
        }),
    )
    .await;
    figures.assert_statuses(&[500, 504]);
    for a in figures.answers.iter().filter(|a| a.status == 500) {
        assert!(a.text.contains("max_pending"), "{}", a.text);
    }
    assert!(
        figures.statuses().contains_key(&500),
        "max_pending never refused"
    );
    // The limit held under four schedulers at once: exactly 500 are pending.
    let mut jobs_db = sqlx::PgConnection::connect(&pg.admin_url()).await.unwrap();
    let (pending,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM alorig_jobs.jobs WHERE app = 'jobs' AND state = 'pending'",
    )
    .fetch_one(&mut jobs_db)
    .await
    .unwrap();
    assert_eq!(pending, 500, "pending jobs of the flooding app");
    // Another app's job, scheduled behind A's 500 pending, still runs.
    let scheduled = Instant::now();
    let ids = host
        .request("POST", "calmjob.test", "/enqueue?n=1", vec![])
        .await;
    assert_eq!(ids.status, 200, "{}", ids.text());
    let mut db = sqlx::PgConnection::connect(&pg.url_for("calmjob_db"))
        .await
        .unwrap();
    let ran = loop {
        let (runs,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM runs WHERE kind = 'job' AND finished_ms IS NOT NULL",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if runs == 1 {
            break scheduled.elapsed();
        }
        assert!(
            scheduled.elapsed() < Duration::from_secs(120),
            "the neighbour's job never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("job flood: the neighbour's job ran {ran:.1?} after it was scheduled, behind A's 500");
    figures.assert_contained(&host, 32 * MIB);
}

/// A listener that accepts and never answers; counts connections accepted and
/// connections the other side has closed.
pub fn sink() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, c) = (accepted.clone(), closed.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            std::thread::spawn(move || {
                // Read (and ignore) the request; the peer closing is a 0-byte read.
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, accepted, closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_call_that_never_returns_is_504_at_the_deadline_and_its_socket_is_closed() {
    let (port, accepted, closed) = sink();
    // The outbound timeout (30 s) is longer than the request's: the request's
    // deadline must end the wait.
    let host = beside_calm(
        "stuck",
        "test-outbound",
        &format!(
            "[outbound_http]\nallowed_hosts = [\"http://127.0.0.1:{port}\"]\ntimeout = \"30s\"\n\
             [resources]\nrequest_timeout = \"1500ms\""
        ),
    );
    let fds_before = open_fds(host.pid());
    let url = format!("http://127.0.0.1:{port}/");
    let figures = beside_neighbour(
        "slow host call (outbound to a sink that never answers, 1.5 s deadline)",
        &host,
        &calm_req(),
        16 * MIB,
        fire(&host, 8, 4, |_| {
            Req::get("stuck.test", &format!("/fetch?url={url}"))
        }),
    )
    .await;
    figures.assert_statuses(&[504]);
    answered_at_deadline(&figures, Duration::from_millis(1500));
    figures.assert_contained(&host, 16 * MIB);
    assert_eq!(accepted.load(Ordering::SeqCst), 8);
    // The abandoned calls' sockets are closed, not left to the sink.
    let settled = Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::SeqCst) < 8 && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        closed.load(Ordering::SeqCst),
        8,
        "sockets left open to the sink"
    );
    gave_everything_back(&host, "stuck").await;
    let fds_after = fds_settle(host.pid(), fds_before, 16).await;
    println!(
        "slow host call: host fds {fds_before} before, {fds_after} after; sink saw 8 of 8 closed"
    );
    assert!(
        fds_after <= fds_before + 16,
        "host fds {fds_before} -> {fds_after}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_responses_stream_without_the_host_holding_them() {
    let host = beside_calm(
        "huge",
        "test-echo",
        "[resources]\nmemory = \"32MiB\"\ninstance_memory = \"32MiB\"",
    );
    // Two clients each read 256 MiB the guest writes 64 KiB at a time: the host
    // relays it, so its RSS must not grow with the size.
    let figures = beside_neighbour(
        "huge response (2 x 256 MiB streamed, 32 MiB app)",
        &host,
        &calm_req(),
        32 * MIB,
        fire(&host, 2, 2, |_| Req::get("huge.test", "/stream?mib=256")),
    )
    .await;
    figures.assert_statuses(&[200]);
    for a in &figures.answers {
        assert_eq!(a.bytes, 256 * MIB, "the whole body arrived");
    }
    figures.assert_contained(&host, 32 * MIB);
    let grew = figures.rss_peak.saturating_sub(figures.rss_before);
    assert!(
        grew < 128 * MIB,
        "the host's RSS rose {:.1} MiB relaying 512 MiB",
        mib(grew)
    );
    // One that must be held whole to be sent (64 MiB in a 32 MiB app) fails alone.
    assert_eq!(host.get("huge.test", "/big?mib=64").await.status, 500);
    gave_everything_back(&host, "huge").await;
}

/// A POST of `len` bytes on its own connection, written by a thread while the
/// answer is awaited: the status line's code and when it came (0: none).
pub fn upload_unread(addr: SocketAddr, host: &str, path: &str, len: usize) -> (u16, Duration) {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (0, Duration::ZERO);
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let started = Instant::now();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'u'; 1 << 20];
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            // The host may stop reading once the guest has answered: a write
            // error here is that, not a failure.
            if writer.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    let mut status = [0u8; 12];
    let answer = match stream.read_exact(&mut status) {
        Ok(()) => std::str::from_utf8(&status[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    };
    let took = started.elapsed();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    (answer, took)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_never_reads_a_large_upload_answers_and_the_host_does_not_hold_it() {
    let host = beside_calm("deaf", "test-echo", "[resources]\nmax_body = \"512MiB\"");
    let addr = host.ingress;
    // Four 128 MiB uploads, two at a time, to a route that answers without reading.
    let attack = async {
        let mut answers = Vec::new();
        for _ in 0..2 {
            let pair = (0..2).map(|_| {
                tokio::task::spawn_blocking(move || {
                    upload_unread(addr, "deaf.test", "/unread", 128 << 20)
                })
            });
            for done in futures::future::join_all(pair).await {
                let (status, took) = done.unwrap();
                answers.push(Answer {
                    status,
                    took,
                    bytes: 0,
                    text: String::new(),
                });
            }
        }
        answers
    };
    let figures = beside_neighbour(
        "guest never reads its request body (4 x 128 MiB uploads)",
        &host,
        &calm_req(),
        32 * MIB,
        attack,
    )
    .await;
    figures.assert_statuses(&[200]);
    figures.assert_contained(&host, 32 * MIB);
    let grew = figures.rss_peak.saturating_sub(figures.rss_before);
    assert!(
        grew < 128 * MIB,
        "the host's RSS rose {:.1} MiB for 512 MiB of unread uploads",
        mib(grew)
    );
    gave_everything_back(&host, "deaf").await;
}

/// Raises this process's open-files limit, soft and hard, to `want` (which
/// needs root, as the tests run here); failing that, the soft limit to the
/// hard one, which must leave room for `needed`.
fn open_files_for(want: u64, needed: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|c| c >= want) {
        return;
    }
    let raised = Rlimit {
        current: Some(want),
        maximum: limit.maximum.map(|m| m.max(want)),
    };
    if setrlimit(Resource::Nofile, raised).is_err() {
        allow_open_files(needed);
    }
}

/// Reads one small HTTP/1.1 response (headers and a `Content-Length` body) off
/// `stream`, leaving the connection open: its status, 0 if it broke.
async fn read_small_response(stream: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            }
        }
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return 0,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_idle_http_connections_are_held_and_the_neighbour_keeps_serving() {
    use tokio::io::AsyncWriteExt as _;
    const N: usize = 10_000;
    // Our N sockets, and the other tests running beside this one (the
    // WebSocket test holds 10,000 of its own in this same process).
    open_files_for(32_768, N as u64 + 4_000);
    // The default header_read_timeout (10 s) would start closing the silent
    // ones while the rest are still opening: the test holds them for longer.
    let host = Host::up_with(&[calm()], "header_read_timeout = \"120s\"");
    let pid = host.pid();
    let stop = AtomicBool::new(true);
    let neighbour = calm_req();
    steady(&host, &neighbour, CLIENTS, (10, 10), &stop).await;
    let (alone, failed) = steady(&host, &neighbour, CLIENTS, (ALONE, ALONE), &stop).await;
    assert!(failed.is_empty(), "{failed:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_before, _) = rss(pid);
    let fds_before = open_fds(pid);

    // Half are silent TCP connections (sent nothing yet), half idle keep-alive
    // connections after one request each; opened 200 at a time.
    let started = Instant::now();
    let addr = host.ingress;
    let request = b"GET / HTTP/1.1\r\nHost: calm.test\r\n\r\n";
    let mut held: Vec<tokio::net::TcpStream> = Vec::with_capacity(N);
    while held.len() < N {
        let batch = (held.len()..(held.len() + 200).min(N)).map(|i| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            if i % 2 == 1 {
                stream.write_all(request).await.expect("write");
                assert_eq!(read_small_response(&mut stream).await, 200);
            }
            stream
        });
        held.extend(futures::future::join_all(batch).await);
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_held, _) = rss(pid);
    let fds_held = open_fds(pid);

    // The neighbour, while they are all held.
    let (during, failed) = steady(&host, &neighbour, CLIENTS, (ALONE, ALONE), &stop).await;
    // Every 25th of them (silent and keep-alive alike) still works: a request on it gets its answer.
    let mut answered = 0;
    for stream in held.iter_mut().step_by(25) {
        stream.write_all(request).await.expect("write");
        if read_small_response(stream).await == 200 {
            answered += 1;
        }
    }
    let per = rss_held.saturating_sub(rss_before) as f64 / N as f64;
    let during_count = during.len();
    let ((a50, a99), (d50, d99)) = (percentiles(alone), percentiles(during));
    println!(
        "idle connections | {N} (half silent, half keep-alive after a request), opened in {opened:.1?} | host RSS {:.1} -> {:.1} MiB, {:.2} KiB per connection | host fds {fds_before} -> {fds_held} | neighbour: {} requests, {} errors, p50/p99 alone {a50:.1}/{a99:.1} ms, while held {d50:.1}/{d99:.1} ms | {answered} of {} sampled connections (silent and keep-alive) answered",
        mib(rss_before),
        mib(rss_held),
        per / 1024.0,
        during_count + failed.len(),
        failed.len(),
        N / 25
    );
    assert!(
        failed.is_empty(),
        "the neighbour failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(
        fds_held >= fds_before + N - 100,
        "the host holds {fds_held} fds (was {fds_before}): connections were dropped"
    );
    assert_eq!(answered, N / 25, "held connections stopped answering");
    assert!(
        per < 64.0 * 1024.0,
        "{:.1} KiB per idle connection",
        per / 1024.0
    );
    assert!(alive(pid) && !host_panicked(&host.log()));

    // Closed by the client: the host lets every one go.
    drop(held);
    let fds_after = fds_settle(pid, fds_before, 50).await;
    println!("idle connections | closed: host fds {fds_after} (was {fds_before})");
    assert!(
        fds_after <= fds_before + 50,
        "host fds {fds_before} -> {fds_after}"
    );
}
