//! Per-app CPU: an app spinning cannot starve its neighbour, `cpu_weight`
//! splits contended cores, deadlines and `cpu_time` hold under that load, and
//! the CPU counted per app adds up to the process's own CPU time. The figures
//! against the goals are printed by the benchmark (`--only cpu`).

use crate::harness::{Host, manifest, metric_value};
use crate::load::{Spinners, one_request, process_cpu_seconds, wrk};
use std::time::Duration;

/// An app of the looping guest: every request spins until its deadline.
fn spinner(name: &str, timeout: &str, extra: &str) -> (String, String) {
    (
        name.to_string(),
        manifest(
            name,
            "test-loop",
            &format!(
                "[resources]\nrequest_timeout = \"{timeout}\"\nmax_concurrency = 200\n{extra}\n[[routes]]\nhost = \"{name}.test\""
            ),
        ),
    )
}

fn up(apps: &[(String, String)]) -> Host {
    let apps: Vec<(&str, String)> = apps.iter().map(|(n, m)| (n.as_str(), m.clone())).collect();
    Host::up_full(&apps, "", &[])
}

/// Every app's `alorig_app_cpu_seconds_total`, summed, and the one of `app`.
async fn cpu_seconds(host: &Host, app: &str) -> (f64, f64) {
    let exposition = host.metrics().await;
    let total = exposition
        .lines()
        .filter(|l| l.starts_with("alorig_app_cpu_seconds_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    let one = metric_value(
        &exposition,
        "alorig_app_cpu_seconds_total",
        &format!("app=\"{app}\""),
    );
    (total, one)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_neighbour_keeps_most_of_its_throughput_while_another_app_spins() {
    let host = up(&[
        spinner("spin", "2s", ""),
        (
            "hello".into(),
            manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\""),
        ),
    ]);
    let addr = host.ingress;
    let (solo, contended, spun) = tokio::task::spawn_blocking(move || {
        wrk(addr, "hello.test", "/", 16, 1); // warm-up
        let solo = wrk(addr, "hello.test", "/", 16, 3);
        let spinners = Spinners::start(addr, "spin.test", "/", 20);
        std::thread::sleep(Duration::from_millis(300));
        let contended = wrk(addr, "hello.test", "/", 16, 3);
        (solo, contended, spinners.stop())
    })
    .await
    .unwrap();
    let ratio = contended.rps / solo.rps;
    eprintln!(
        "hello alone {:.0} req/s p50 {:.2} ms p99 {:.2} ms; beside 20 spinning requests {:.0} req/s ({:.0} %) p50 {:.2} ms p99 {:.2} ms",
        solo.rps,
        solo.p50_ms,
        solo.p99_ms,
        contended.rps,
        100.0 * ratio,
        contended.p50_ms,
        contended.p99_ms
    );
    assert_eq!(contended.errors, 0, "the neighbour got errors");
    // The goal is ≥ 50 % (the benchmark prints the figure); before the guest
    // pool it was 0.6 %. Asserted with room for a busy test machine.
    assert!(
        ratio >= 0.35,
        "the neighbour kept only {:.1} %",
        100.0 * ratio
    );
    assert!(!spun.is_empty() && spun.iter().all(|(status, _)| *status == 504));
    // The host's own endpoints answer at once meanwhile.
    let spinners = Spinners::start(addr, "spin.test", "/", 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let metrics = host.metrics().await;
    let took = started.elapsed();
    tokio::task::spawn_blocking(move || spinners.stop())
        .await
        .unwrap();
    assert!(metrics.contains("alorig_app_cpu_seconds_total"));
    assert!(took < Duration::from_millis(200), "/metrics took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deadlines_hold_under_60_spinning_requests() {
    let host = up(&[spinner("spin", "2s", "")]);
    let addr = host.ingress;
    let answers = tokio::task::spawn_blocking(move || {
        let request = "GET / HTTP/1.1\r\nHost: spin.test\r\nConnection: close\r\n\r\n";
        let clients: Vec<_> = (0..60)
            .map(|_| std::thread::spawn(move || one_request(addr, request)))
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let latest = answers.iter().map(|(_, took)| *took).max().unwrap();
    let earliest = answers.iter().map(|(_, took)| *took).min().unwrap();
    eprintln!("60 spinning requests, 2 s deadline: answered between {earliest:?} and {latest:?}");
    assert!(
        answers.iter().all(|(status, _)| *status == 504),
        "{answers:?}"
    );
    assert!(
        earliest >= Duration::from_millis(1990),
        "answered early: {earliest:?}"
    );
    assert!(
        // The goal, within 100 ms, is the benchmark's to show on a quiet
        // machine; here other tests share the two cores.
        latest <= Duration::from_millis(2250),
        "answered late: {latest:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_weights_split_contended_cores_three_to_one() {
    let host = up(&[
        spinner("heavy", "6s", "cpu_weight = 3"),
        spinner("light", "6s", ""),
    ]);
    let addr = host.ingress;
    let heavy = Spinners::start(addr, "heavy.test", "/", 6);
    let light = Spinners::start(addr, "light.test", "/", 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, heavy_before) = cpu_seconds(&host, "heavy").await;
    let (_, light_before) = cpu_seconds(&host, "light").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, heavy_after) = cpu_seconds(&host, "heavy").await;
    let (_, light_after) = cpu_seconds(&host, "light").await;
    tokio::task::spawn_blocking(move || (heavy.stop(), light.stop()))
        .await
        .unwrap();
    let (heavy, light) = (heavy_after - heavy_before, light_after - light_before);
    let split = heavy / light;
    eprintln!(
        "4 s of contention: heavy (weight 3) {heavy:.2} CPU s, light (weight 1) {light:.2} CPU s: {split:.2} : 1"
    );
    assert!(
        heavy + light > 1.0,
        "the apps hardly ran: {heavy} + {light} s"
    );
    assert!(
        (2.55..=3.45).contains(&split),
        "weights 3:1 split the CPU {split:.2}:1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_time_ends_a_request_on_cpu_used_not_on_wall_time() {
    let host = up(&[spinner("capped", "20s", "cpu_time = \"300ms\"")]);
    let started = std::time::Instant::now();
    let reply = host.get("capped.test", "/").await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(5),
        "ended after {took:?}, not at its 300 ms of CPU"
    );
    let (_, used) = cpu_seconds(&host, "capped").await;
    assert!((0.29..1.0).contains(&used), "counted {used} CPU s");
    assert_eq!(
        host.metric(
            "alorig_app_traps_total",
            "app=\"capped\",reason=\"deadline\""
        )
        .await,
        1.0
    );
    // Waiting is not CPU: a request blocked in a host call is ended by its
    // deadline, not by `cpu_time`.
    let host = up(&[spinner("waits", "1500ms", "cpu_time = \"100ms\"")]);
    let started = std::time::Instant::now();
    assert_eq!(host.get("waits.test", "/?sleep=1").await.status, 504);
    assert!(started.elapsed() >= Duration::from_millis(1490));
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_counted_per_app_adds_up_to_the_process_cpu_time() {
    let host = up(&[
        spinner("spin", "2s", ""),
        (
            "hello".into(),
            manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\""),
        ),
    ]);
    let (addr, pid) = (host.ingress, host.pid());
    wrk(addr, "hello.test", "/", 4, 1); // warm-up
    let (apps_before, _) = cpu_seconds(&host, "spin").await;
    let process_before = process_cpu_seconds(pid);
    let spinners = Spinners::start(addr, "spin.test", "/", 4);
    let load = tokio::task::spawn_blocking(move || wrk(addr, "hello.test", "/", 8, 4))
        .await
        .unwrap();
    let spun = tokio::task::spawn_blocking(move || spinners.stop())
        .await
        .unwrap();
    let process = process_cpu_seconds(pid) - process_before;
    let (apps_after, spin) = cpu_seconds(&host, "spin").await;
    let apps = apps_after - apps_before;
    eprintln!(
        "mixed run ({:.0} hello req/s, {} spinning answers): apps counted {apps:.2} CPU s, the process used {process:.2} CPU s ({:+.1} %)",
        load.rps,
        spun.len(),
        100.0 * (apps - process) / process
    );
    assert!(process > 1.0, "the run hardly used the CPU: {process} s");
    assert!(
        (apps - process).abs() <= 0.10 * process,
        "apps counted {apps:.2} s, the process used {process:.2} s"
    );
    // status shows the CPU column, from the same counters.
    let (code, out, _) = host.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("CPU %"), "{out}");
    let token = format!("Bearer {}", host.token());
    let apps = host
        .admin_request("GET", "/v1/apps", &[("authorization", token)], Vec::new())
        .await;
    assert!(
        apps.text().contains("\"cpu_seconds_total\""),
        "{}",
        apps.text()
    );
    assert!(spin > 0.5, "spin counted {spin} CPU s");
}
