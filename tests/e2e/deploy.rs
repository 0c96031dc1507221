//! Deploys through the admin API and the CLI against a real `serve`: swaps and
//! rollbacks under continuous load, every refusal reason leaving the old version
//! serving, restarts, and SIGKILL in the middle of deploys.

use crate::harness::{Host, guest, one_error_line};
use serde_json::Value;
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The echo guest as app `name`, answering `/env/VERSION` with `version`.
pub fn echo_manifest(name: &str, host: &str, version: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ncomponent = \"{}\"\n{extra}\n[[routes]]\nhost = \"{host}\"\n[env]\nVERSION = \"{version}\"\n",
        guest("test-echo").display()
    )
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Runs `deploy` with the CLI, asserting success; returns its stdout.
pub fn deploy_ok(host: &Host, manifest_path: &str, extra: &[&str]) -> String {
    let mut args = vec!["deploy", manifest_path];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = host.cli(&args);
    assert_eq!(code, 0, "deploy failed: {stderr}");
    stdout
}

/// Requests sent continuously from several tasks until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(host: &Arc<Host>, tasks: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..tasks)
            .map(|_| {
                let (host, stop, failed) = (host.clone(), stop.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match host.try_get("echo.test", "/env/VERSION").await {
                            Ok(reply) if reply.status == 200 => seen.push(reply.text()),
                            Ok(reply) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                seen.push(format!("status {}: {}", reply.status, reply.text()));
                            }
                            Err(err) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                seen.push(format!("error: {err}"));
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        Load {
            stop,
            failed,
            tasks,
        }
    }

    /// Stops the load; every answer in the order each task saw them.
    async fn finish(self) -> (u64, Vec<Vec<String>>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.push(task.await.unwrap());
        }
        (self.failed.load(Ordering::Relaxed), all)
    }
}

/// Each task saw `from` answers, then `to` answers, and never `from` again.
fn switched_once(seen: &[Vec<String>], from: &str, to: &str) {
    for answers in seen {
        let first_new = answers
            .iter()
            .position(|a| a == to)
            .expect("the new version never answered");
        assert!(
            answers[..first_new].iter().all(|a| a == from),
            "before the swap: {:?}",
            &answers[..first_new]
        );
        assert!(
            answers[first_new..].iter().all(|a| a == to),
            "an old answer after the new one"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_and_rollbacks_swap_under_load_with_zero_failed_requests() {
    let data = tempfile::tempdir().unwrap();
    let host = Arc::new(Host::serve(data.path(), ""));
    let dir = tempfile::tempdir().unwrap();
    let v1 = write(
        dir.path(),
        "echo.toml",
        &echo_manifest("echo", "echo.test", "1", ""),
    );
    let out = deploy_ok(&host, &v1, &[]);
    assert!(out.contains("deployed echo version 1"), "{out}");
    assert!(
        out.contains("routes:     echo.test/") && out.contains("memory cap: 128MiB"),
        "{out}"
    );
    assert_eq!(host.get("echo.test", "/env/VERSION").await.text(), "1");

    // Deploy version 2 while requests keep coming.
    let load = Load::start(&host, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2 = write(
        dir.path(),
        "echo.toml",
        &echo_manifest("echo", "echo.test", "2", ""),
    );
    let h = host.clone();
    let out = tokio::task::spawn_blocking(move || deploy_ok(&h, &v2, &[]))
        .await
        .unwrap();
    assert!(out.contains("deployed echo version 2 (was 1)"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failed, seen) = load.finish().await;
    let total: usize = seen.iter().map(Vec::len).sum();
    assert_eq!(
        failed,
        0,
        "failed requests across the swap: {:?}",
        seen.iter()
            .flatten()
            .filter(|a| *a != "1" && *a != "2")
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(total > 50, "the load generator sent only {total} requests");
    switched_once(&seen, "1", "2");

    // Roll back to version 1 the same way.
    let load = Load::start(&host, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let h = host.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || h.cli(&["rollback", "echo"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("echo: version 1 in force (was 2)"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failed, seen) = load.finish().await;
    assert_eq!(failed, 0);
    switched_once(&seen, "2", "1");

    // And forward again to a chosen version.
    let (code, _, err) = host.cli(&["rollback", "echo", "--to", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(host.get("echo.test", "/env/VERSION").await.text(), "2");
    let (code, _, err) = host.cli(&["rollback", "echo", "--to", "9"]);
    assert_ne!(code, 0);
    assert_eq!(
        one_error_line(&err),
        "error: echo has no version 9; kept versions: 1, 2"
    );

    let metrics = host.metrics().await;
    assert_eq!(
        crate::harness::metric_value(
            &metrics,
            "alorig_deploys_total",
            "app=\"echo\",result=\"ok\""
        ),
        2.0
    );
    assert_eq!(
        crate::harness::metric_value(&metrics, "alorig_rollbacks_total", "app=\"echo\""),
        2.0
    );
    assert_eq!(
        crate::harness::metric_value(&metrics, "alorig_app_version", "app=\"echo\""),
        2.0
    );
}

/// PUTs a deploy through the raw API; (status, JSON answer).
pub async fn put(
    host: &Host,
    app: &str,
    manifest: &str,
    component: &[u8],
    token: &str,
) -> (u16, Value) {
    let mut body = manifest.as_bytes().to_vec();
    body.extend_from_slice(component);
    let reply = host
        .admin_request(
            "PUT",
            &format!("/v1/apps/{app}"),
            &[
                ("authorization", format!("Bearer {token}")),
                ("alorig-manifest-length", manifest.len().to_string()),
                ("alorig-manifest-name", format!("{app}.toml")),
            ],
            body,
        )
        .await;
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refused_deploy_names_its_reason_and_the_old_version_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let host = Host::serve(
        data.path(),
        "memory_budget = \"512MiB\"\nmax_upload = \"4MiB\"",
    );
    let token = host.token();
    let echo = std::fs::read(guest("test-echo")).unwrap();
    let good = echo_manifest("echo", "echo.test", "1", "");
    let (status, reply) = put(&host, "echo", &good, &echo, &token).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["version"], 1);
    let (status, reply) = put(
        &host,
        "other",
        &echo_manifest("other", "other.test", "1", ""),
        &echo,
        &token,
    )
    .await;
    assert_eq!(status, 201, "{reply}");

    let foreign =
        wat::parse_str(r#"(component (import "acme:nope/thing" (instance (export "f" (func)))))"#)
            .unwrap();
    let ungranted =
        wat::parse_str(r#"(component (import "alorig:host/websocket@0.1.0" (instance)))"#).unwrap();
    let big = vec![0u8; 5 << 20];
    // (reason, manifest, component, token, status, code, part of the message)
    type Case<'a> = (&'a str, String, Vec<u8>, String, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bad TOML",
            "name = \"echo\"\ncomponent = \n".into(),
            echo.clone(),
            token.clone(),
            400,
            "bad_manifest",
            "echo.toml:2:",
        ),
        (
            "unknown key",
            good.replace("[env]", "colour = \"red\"\n[env]"),
            echo.clone(),
            token.clone(),
            400,
            "bad_manifest",
            "unknown field `colour`",
        ),
        (
            "not a component",
            good.clone(),
            b"this is not wasm".to_vec(),
            token.clone(),
            422,
            "bad_component",
            "not a WebAssembly component",
        ),
        (
            "core module",
            good.clone(),
            b"\0asm\x01\0\0\0".to_vec(),
            token.clone(),
            422,
            "bad_component",
            "is a core WebAssembly module",
        ),
        (
            "missing import",
            good.clone(),
            foreign,
            token.clone(),
            422,
            "bad_component",
            "imports something alorig-host does not provide",
        ),
        (
            "import not granted",
            good.clone(),
            ungranted,
            token.clone(),
            422,
            "bad_component",
            "echo.wasm: imports alorig:host/websocket, which needs a [[routes]] entry with websocket = true in echo.toml",
        ),
        (
            "route collision",
            echo_manifest("echo", "other.test", "1", ""),
            echo.clone(),
            token.clone(),
            409,
            "route_collision",
            "route other.test/ is claimed by both other and echo",
        ),
        (
            "budget exceeded",
            echo_manifest("echo", "echo.test", "1", "[resources]\nmemory = \"400MiB\""),
            echo.clone(),
            token.clone(),
            422,
            "budget_exceeded",
            "the apps' memory caps add up to 528MiB (other 128MiB, echo 400MiB), more than the host's memory_budget of 512MiB",
        ),
        (
            "missing secret",
            good.replace(
                "[env]",
                "[secrets]\nKEY = { env = \"ALORIG_TEST_UNSET_VARIABLE\" }\n[env]",
            ),
            echo.clone(),
            token.clone(),
            422,
            "secret_unresolvable",
            "secrets.KEY: host environment variable ALORIG_TEST_UNSET_VARIABLE is not set",
        ),
        (
            "name mismatch",
            echo_manifest("other", "echo.test", "1", ""),
            echo.clone(),
            token.clone(),
            400,
            "name_mismatch",
            "the manifest is for app other, not echo",
        ),
        (
            "bad token",
            good.clone(),
            echo.clone(),
            "wrong".into(),
            401,
            "unauthorized",
            "missing or wrong admin token",
        ),
        (
            "body too large",
            good.clone(),
            big,
            token.clone(),
            413,
            "too_large",
            "larger than the host's max_upload of 4MiB",
        ),
        (
            "wider grants",
            echo_manifest(
                "echo",
                "echo.test",
                "1",
                "[outbound_http]\nallowed_hosts = [\"https://example.com\"]",
            ),
            echo.clone(),
            token.clone(),
            409,
            "grants_widened",
            "outbound HTTP to https://example.com",
        ),
    ];
    for (reason, manifest, component, token, status, code, message) in cases {
        let (got, reply) = put(&host, "echo", &manifest, &component, &token).await;
        assert_eq!(
            (got, reply["error"]["code"].as_str().unwrap_or("")),
            (status, code),
            "{reason}: {reply}"
        );
        let text = reply["error"]["message"].as_str().unwrap();
        assert!(
            text.contains(message) && !text.contains('\n'),
            "{reason}: {text}"
        );
        assert_eq!(
            host.get("echo.test", "/env/VERSION").await.text(),
            "1",
            "{reason}: the old version stopped serving"
        );
    }
    assert_eq!(
        std::fs::read_to_string(data.path().join("apps/echo/current"))
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        std::fs::read_dir(data.path().join("apps/echo"))
            .unwrap()
            .count(),
        2,
        "a refused deploy left something in the data dir"
    );
    let metrics = host.metrics().await;
    assert_eq!(
        crate::harness::metric_value(
            &metrics,
            "alorig_deploys_total",
            "app=\"echo\",result=\"budget_exceeded\""
        ),
        1.0
    );

    // The CLI says the same in one line, with a non-zero exit.
    let dir = tempfile::tempdir().unwrap();
    let over = write(
        dir.path(),
        "echo.toml",
        &echo_manifest("echo", "echo.test", "1", "[resources]\nmemory = \"400MiB\""),
    );
    let (code, _, err) = host.cli(&["deploy", &over]);
    assert_ne!(code, 0);
    assert!(
        one_error_line(&err).contains("more than the host's memory_budget of 512MiB"),
        "{err}"
    );
    let (code, _, err) = host.cli(&["deploy", &over, "--token", "wrong"]);
    assert_ne!(code, 0);
    assert!(
        one_error_line(&err).contains("missing or wrong admin token"),
        "{err}"
    );
    let wider = write(
        dir.path(),
        "echo.toml",
        &echo_manifest(
            "echo",
            "echo.test",
            "2",
            "[outbound_http]\nallowed_hosts = [\"https://example.com\"]",
        ),
    );
    let (code, out, err) = host.cli(&["deploy", &wider]);
    assert_ne!(code, 0);
    assert!(
        out.contains("  + outbound HTTP to https://example.com"),
        "{out}"
    );
    assert!(
        one_error_line(&err).contains("deploy again with --yes"),
        "{err}"
    );
    assert_eq!(host.get("echo.test", "/env/VERSION").await.text(), "1");
    let out = deploy_ok(&host, &wider, &["--yes"]);
    assert!(
        out.contains("approved wider grants: outbound HTTP to https://example.com"),
        "{out}"
    );
    assert_eq!(host.get("echo.test", "/env/VERSION").await.text(), "2");

    // Removing an app frees its routes.
    let (code, _, err) = host.cli(&["remove", "other"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(host.get("other.test", "/").await.status, 404);
    assert!(!data.path().join("apps/other").exists());
    let (code, _, err) = host.cli(&["remove", "other"]);
    assert_ne!(code, 0);
    assert_eq!(
        one_error_line(&err),
        "error: no app named other is deployed"
    );
    let (code, _, err) = host.cli(&["apps", "--admin", "http://127.0.0.1:1"]);
    assert_ne!(code, 0);
    assert!(
        one_error_line(&err).contains("cannot reach the admin API at http://127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_host_serves_the_same_apps_and_versions_from_the_compile_cache() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let host = Host::serve(data.path(), "keep_versions = 2");
        for version in ["1", "2", "3"] {
            deploy_ok(
                &host,
                &write(
                    dir.path(),
                    "echo.toml",
                    &echo_manifest("echo", "echo.test", version, ""),
                ),
                &[],
            );
        }
        let hello = format!(
            "name = \"hello\"\ncomponent = \"{}\"\n[[routes]]\nhost = \"hello.test\"\n",
            guest("hello").display()
        );
        deploy_ok(&host, &write(dir.path(), "hello.toml", &hello), &[]);
        host.kill();
    }
    let started = Instant::now();
    let host = Host::serve(data.path(), "keep_versions = 2");
    let mut serving_after = Duration::ZERO;
    for (route, path, expected) in [
        ("echo.test", "/env/VERSION", "3"),
        ("hello.test", "/", "Hello from alorig-host\n"),
    ] {
        loop {
            let reply = host.try_get(route, path).await;
            if let Some(reply) = reply.ok().filter(|r| r.status == 200) {
                assert_eq!(reply.text(), expected);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{route} not back: {}",
                host.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        serving_after = started.elapsed();
    }
    println!("restart to serving both apps: {serving_after:.0?}");
    assert!(
        serving_after < Duration::from_secs(1),
        "restart to serving took {serving_after:?}"
    );
    let log = host.log();
    assert!(
        log.contains("app=echo version=3 cached=true")
            && log.contains("app=hello version=1 cached=true"),
        "{log}"
    );
    let (code, out, err) = host.cli(&["apps", "--json"]);
    assert_eq!(code, 0, "{err}");
    let apps: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(apps[0]["name"], "echo");
    assert_eq!(apps[0]["version"], 3);
    assert_eq!(
        apps[0]["versions"],
        serde_json::json!([2, 3]),
        "keep_versions = 2 keeps the last two"
    );
    assert_eq!(apps[1]["name"], "hello");
    let (code, _, err) = host.cli(&["rollback", "echo"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(host.get("echo.test", "/env/VERSION").await.text(), "2");
    let (code, _, err) = host.cli(&["rollback", "echo"]);
    assert_ne!(code, 0);
    assert_eq!(
        one_error_line(&err),
        "error: echo has no kept version before 2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_deploys_always_leaves_the_old_or_the_new_version_in_force() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::serve(data.path(), "");
    deploy_ok(
        &host,
        &write(
            dir.path(),
            "echo.toml",
            &echo_manifest("echo", "echo.test", "r0", ""),
        ),
        &[],
    );
    let mut serving = "r0".to_string();
    // Kill delays from a pseudo-random sequence, spread over a deploy's length
    // (CLI start, upload, validation, write, swap).
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut outcomes = Vec::new();
    for round in 1..=8 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis((seed >> 33) % 500);
        let marker = format!("r{round}");
        // A component no one compiled yet, so the kill can land in the compile too.
        let component = dir.path().join(format!("{marker}.wasm"));
        std::fs::write(
            &component,
            with_custom_section(&std::fs::read(guest("test-echo")).unwrap(), &marker),
        )
        .unwrap();
        let manifest = write(
            dir.path(),
            "echo.toml",
            &echo_manifest("echo", "echo.test", &marker, "").replace(
                &format!("component = \"{}\"", guest("test-echo").display()),
                &format!("component = \"{}\"", component.display()),
            ),
        );
        let (admin, token) = (format!("http://{}", host.admin), host.token());
        let cli = std::thread::spawn(move || {
            std::process::Command::new(crate::harness::host_binary())
                .args(["deploy", &manifest, "--admin", &admin, "--token", &token])
                .output()
                .unwrap()
        });
        std::thread::sleep(delay);
        host.kill();
        let deployed = cli.join().unwrap().status.success();

        host = Host::serve(data.path(), "");
        let answer = host.get("echo.test", "/env/VERSION").await.text();
        assert!(
            answer == serving || answer == marker,
            "round {round}: serving {answer:?}, was {serving:?}; {}",
            host.log()
        );
        if deployed {
            assert_eq!(
                answer, marker,
                "round {round}: the CLI said deployed but the old version came back"
            );
        }
        // What `current` names on disk is what serves, and is complete.
        let current = std::fs::read_to_string(data.path().join("apps/echo/current")).unwrap();
        let stored = data.path().join("apps/echo").join(current.trim());
        let stored_manifest = std::fs::read_to_string(stored.join("manifest.toml")).unwrap();
        assert!(
            stored_manifest.contains(&format!("VERSION = \"{answer}\"")),
            "round {round}: {stored_manifest}"
        );
        let expected = match answer.as_str() {
            "r0" => std::fs::read(guest("test-echo")).unwrap(),
            marker => std::fs::read(dir.path().join(format!("{marker}.wasm"))).unwrap(),
        };
        assert!(
            std::fs::read(stored.join("component.wasm")).unwrap() == expected,
            "round {round}: the stored component is not the deployed one"
        );
        let leftovers: Vec<_> = std::fs::read_dir(data.path().join("apps/echo"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
        let partial_compiles: Vec<_> = std::fs::read_dir(data.path().join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(
            partial_compiles.is_empty(),
            "round {round}: {partial_compiles:?}"
        );
        outcomes.push((delay.as_millis() as u64, deployed, answer == marker));
        serving = answer;
    }
    println!("SIGKILL rounds (kill after ms, CLI succeeded, new version in force): {outcomes:?}");
}

/// The component with a custom section appended: same code, a new content hash.
fn with_custom_section(component: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let mut payload = Vec::new();
    leb("alorig-test".len(), &mut payload);
    payload.extend_from_slice(b"alorig-test");
    payload.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_in_flight_request_finishes_on_the_old_version_while_new_ones_reach_the_new_component() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(Host::serve(data.path(), ""));
    let alloc = format!(
        "name = \"swap\"\ncomponent = \"{}\"\n[resources]\nmemory = \"64MiB\"\n[[routes]]\nhost = \"swap.test\"\n",
        guest("test-alloc").display()
    );
    deploy_ok(&host, &write(dir.path(), "swap.toml", &alloc), &[]);
    let h = host.clone();
    let slow = tokio::spawn(async move { h.get("swap.test", "/?mib=8&hold_ms=1500").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The old version's instance holds its memory in the app's one budget.
    assert!(host.metric("alorig_app_memory_bytes", "app=\"swap\"").await >= (8u64 << 20) as f64);

    let echo = echo_manifest("swap", "swap.test", "2", "[resources]\nmemory = \"64MiB\"");
    let out = deploy_ok(&host, &write(dir.path(), "swap.toml", &echo), &["--yes"]);
    assert!(out.contains("deployed swap version 2 (was 1)"), "{out}");
    assert_eq!(
        host.get("swap.test", "/env/VERSION").await.text(),
        "2",
        "new requests reach the new component"
    );
    assert!(
        !slow.is_finished(),
        "the slow request should still be running on version 1"
    );
    let slow = slow.await.unwrap();
    assert_eq!(
        (slow.status, slow.text()),
        (200, "allocated 8 MiB (2048 pages)\n".to_string())
    );
    assert_eq!(
        host.wait_metric("alorig_app_memory_bytes", "app=\"swap\"", 0.0)
            .await,
        0.0,
        "the old instance gave its memory back"
    );
}
