//! Section 12: CPU fair share. App `spin` keeps 2, 20 and 60 requests spinning
//! (2 s deadline) while wrk loads its neighbour `hello`; the same run with the
//! guest pool off (`ALORIG_GUEST_POOL=off`, the host before it) is the
//! baseline. Then weights 3:1, an app alone with the pool on and off, and the
//! CPU counted per app against the process's CPU time.

use super::harness::{Host, manifest, metric_value};
use super::load::{Spinners, process_cpu_seconds, wrk};
use std::time::Duration;

fn spinner(name: &str, timeout: &str, extra: &str) -> String {
    manifest(
        name,
        "test-loop",
        &format!(
            "[resources]\nrequest_timeout = \"{timeout}\"\nmax_concurrency = 200\n{extra}\n[[routes]]\nhost = \"{name}.test\""
        ),
    )
}

fn host(pool: bool) -> Host {
    Host::up_full(
        &[
            ("spin", spinner("spin", "2s", "")),
            (
                "hello",
                manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\""),
            ),
            ("heavy", spinner("heavy", "30s", "cpu_weight = 3")),
            ("light", spinner("light", "30s", "")),
        ],
        "",
        &[("ALORIG_GUEST_POOL", if pool { "on" } else { "off" })],
    )
}

fn cpu_of(host: &Host, app: &str) -> f64 {
    let metrics = block_on(host.metrics());
    metric_value(
        &metrics,
        "alorig_app_cpu_seconds_total",
        &format!("app=\"{app}\""),
    )
}

fn all_cpu(host: &Host) -> f64 {
    block_on(host.metrics())
        .lines()
        .filter(|l| l.starts_with("alorig_app_cpu_seconds_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn cpu(seconds: u32) {
    println!(
        "\n## 12. CPU fair share: `hello` under wrk (16 connections, {seconds} s) while `spin` keeps N requests spinning to their 2 s deadline\n"
    );
    println!(
        "| spinning in `spin` | pool off: hello req/s | p99 | pool on: hello req/s | p99 | on: % of solo | on: p99 ÷ solo p99 | on: latest 504 past the deadline |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let off = host(false);
    let on = host(true);
    let mut solo = Vec::new();
    for h in [&off, &on] {
        wrk(h.ingress, "hello.test", "/", 16, 1);
        solo.push(wrk(h.ingress, "hello.test", "/", 16, seconds));
    }
    println!(
        "| 0 | {:.0} | {:.2} ms | {:.0} | {:.2} ms | 100 % | 1.0 | – |",
        solo[0].rps, solo[0].p99_ms, solo[1].rps, solo[1].p99_ms
    );
    for n in [2, 20, 60] {
        let mut row = Vec::new();
        let mut overshoot = Duration::ZERO;
        for h in [&off, &on] {
            let spinners = Spinners::start(h.ingress, "spin.test", "/", n);
            std::thread::sleep(Duration::from_millis(300));
            row.push(wrk(h.ingress, "hello.test", "/", 16, seconds));
            let answers = spinners.stop();
            overshoot = answers
                .iter()
                .filter(|(status, _)| *status == 504)
                .map(|(_, took)| took.saturating_sub(Duration::from_secs(2)))
                .max()
                .unwrap_or_default();
        }
        println!(
            "| {n} | {:.0} | {:.2} ms | {:.0} | {:.2} ms | {:.0} % | {:.1} | {:.0} ms |",
            row[0].rps,
            row[0].p99_ms,
            row[1].rps,
            row[1].p99_ms,
            100.0 * row[1].rps / solo[1].rps,
            row[1].p99_ms / solo[1].p99_ms.max(0.001),
            overshoot.as_secs_f64() * 1000.0
        );
    }

    println!(
        "\n| weights 3:1, 6 spinning requests each, {seconds} s | heavy CPU s | light CPU s | split |"
    );
    println!("|---|---:|---:|---:|");
    let heavy = Spinners::start(on.ingress, "heavy.test", "/", 6);
    let light = Spinners::start(on.ingress, "light.test", "/", 6);
    std::thread::sleep(Duration::from_millis(500));
    let before = (cpu_of(&on, "heavy"), cpu_of(&on, "light"));
    std::thread::sleep(Duration::from_secs(seconds.into()));
    let after = (cpu_of(&on, "heavy"), cpu_of(&on, "light"));
    drop((heavy, light)); // their requests end with the hosts
    let (h, l) = (after.0 - before.0, after.1 - before.1);
    println!("| pool on | {h:.2} | {l:.2} | {:.2} : 1 |", h / l);
    drop(on);
    drop(off);

    println!(
        "\n| an app alone: `spin` pages computing ~20 ms, 4 connections, {seconds} s | req/s | p99 | CPU % of one core |"
    );
    println!("|---|---:|---:|---:|");
    let mut alone = Vec::new();
    for pool in [false, true] {
        let h = host(pool);
        let (pid, before) = (h.pid(), process_cpu_seconds(h.pid()));
        let load = wrk(h.ingress, "spin.test", "/?iters=20000000", 4, seconds);
        let used = process_cpu_seconds(pid) - before;
        println!(
            "| pool {} | {:.1} | {:.1} ms | {:.0} % |",
            if pool { "on" } else { "off" },
            load.rps,
            load.p99_ms,
            100.0 * used / f64::from(seconds)
        );
        alone.push(load.rps);
    }
    println!("| ratio on ÷ off | {:.2} | | |", alone[1] / alone[0]);

    println!(
        "\n| mixed run: 4 spinning + hello under wrk, {seconds} s | apps' alorig_app_cpu_seconds_total | process CPU (/proc) | difference |"
    );
    println!("|---|---:|---:|---:|");
    let h = host(true);
    wrk(h.ingress, "hello.test", "/", 4, 1);
    let (apps_before, process_before) = (all_cpu(&h), process_cpu_seconds(h.pid()));
    let spinners = Spinners::start(h.ingress, "spin.test", "/", 4);
    wrk(h.ingress, "hello.test", "/", 8, seconds);
    spinners.stop();
    let apps = all_cpu(&h) - apps_before;
    let process = process_cpu_seconds(h.pid()) - process_before;
    println!(
        "| pool on | {apps:.2} s | {process:.2} s | {:+.1} % |",
        100.0 * (apps - process) / process
    );
}
