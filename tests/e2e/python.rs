//! Guests from other toolchains and in Python: standard `wasi:http/proxy`
//! components (componentize-py's default world, the `wasip2` crate alone, the
//! Spin Rust SDK) load
//! with no `[outbound_http]` and get `HttpRequestDenied` at call time; the ASMS
//! reference app (Python on `sdk/python`) through real PostgreSQL and Redis;
//! instance reuse for Python apps; `alorig.files` over `[files]`; host memory
//! after deploying one.

use crate::{
    harness::{Host, guest, python_guest, python_manifest, run_cli, workspace_root},
    outbound::{ok_response, upstream},
    postgres_server::PgServer,
    redis_server::RedisServer,
};
use std::{sync::atomic::Ordering, time::Duration};

#[tokio::test(flavor = "multi_thread")]
async fn standard_components_load_without_outbound_http_and_their_requests_are_denied() {
    // A loopback upstream that would answer 200: a request reaching it is a leak.
    let (port, hits) = upstream(ok_response(2), Duration::ZERO);
    let apps = [
        ("py", python_guest("std-proxy"), "HttpRequestDenied"),
        (
            "rs",
            guest("test-std-wasip2"),
            "ErrorCode::HttpRequestDenied",
        ),
        (
            "spin",
            guest("test-std-spin"),
            "ErrorCode::HttpRequestDenied",
        ),
    ];
    let manifests: Vec<(&str, String)> = apps
        .iter()
        .map(|(name, wasm, _)| {
            (
                *name,
                format!(
                    "name = \"{name}\"\ncomponent = \"{}\"\n[[routes]]\nhost = \"{name}.test\"\n",
                    wasm.display()
                ),
            )
        })
        .collect();
    let host = Host::up(&manifests);
    for (name, wasm, denied) in &apps {
        // Loaded, with the one warning line (validate and deploy print the same).
        let warning = format!(
            "{}: imports wasi:http/outgoing-handler but {}/{name}.toml has no [outbound_http] allowed_hosts: every outgoing request will be refused (HttpRequestDenied)",
            wasm.display(),
            host.dir.path().display()
        );
        assert!(
            host.log().contains(&warning),
            "{name}: no warning in\n{}",
            host.log()
        );
        let reply = host.get(&format!("{name}.test"), "/").await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert!(
            reply.text().starts_with("hello from a plain"),
            "{}",
            reply.text()
        );
        let reply = host
            .get(
                &format!("{name}.test"),
                &format!("/fetch?url=http://127.0.0.1:{port}/"),
            )
            .await;
        assert_eq!(reply.text(), format!("error={denied}"), "{name}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a denied request reached the upstream"
    );
    assert_eq!(
        host.metric(
            "alorig_app_outbound_requests_total",
            "app=\"py\",outcome=\"denied\""
        )
        .await,
        1.0
    );
    assert_eq!(
        host.metric(
            "alorig_app_outbound_requests_total",
            "app=\"rs\",outcome=\"denied\""
        )
        .await,
        1.0
    );
    assert_eq!(
        host.metric(
            "alorig_app_outbound_requests_total",
            "app=\"spin\",outcome=\"denied\""
        )
        .await,
        1.0
    );
}

/// `requests` instances of the reuse guest: (instance id, served count) per reply.
async fn instances(host: &Host, requests: usize) -> Vec<(String, u32)> {
    let mut seen = Vec::new();
    for _ in 0..requests {
        let reply = host.get("reuse.test", "/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let text = reply.text();
        let (id, served) = text
            .trim()
            .split_once(" served=")
            .expect("instance=… served=…");
        seen.push((
            id.trim_start_matches("instance=").to_string(),
            served.parse().unwrap(),
        ));
    }
    seen
}

/// Checks what instance reuse promises over a run of sequential requests:
/// each instance's replies count 1, 2, 3, … in order (its state carries over)
/// and stop at `reuse` (recycled after it); and it returns how many instances
/// served all `reuse` requests. Which instance a request lands on is not
/// promised: one sent while the last instance is still finishing its call on a
/// busy machine may get a fresh instance (the host waits for a finishing one
/// only as long as starting a fresh one takes).
fn full_cycles(seen: &[(String, u32)], reuse: u32) -> usize {
    let mut last: std::collections::HashMap<&str, u32> = Default::default();
    for (id, served) in seen {
        let previous = last.insert(id.as_str(), *served).unwrap_or(0);
        assert_eq!(
            *served,
            previous + 1,
            "instance {id} skipped or repeated a count: {seen:?}"
        );
        assert!(
            *served <= reuse,
            "instance {id} served past instance_reuse: {seen:?}"
        );
    }
    last.values().filter(|served| **served == reuse).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_instances_keep_state_up_to_instance_reuse_and_are_recycled_after() {
    let extra = "[resources]\ninstance_reuse = 5\n[[routes]]\nhost = \"reuse.test\"\n[env]\nGREETING = \"salaam\"";
    let host = Host::up(&[("reuse", python_manifest("reuse", "py-reuse", extra))]);
    let seen = instances(&host, 30).await;
    let cycles = full_cycles(&seen, 5);
    println!(
        "30 sequential requests: {} instances, {cycles} served all 5",
        {
            let ids: std::collections::HashSet<_> = seen.iter().map(|(id, _)| id).collect();
            ids.len()
        }
    );
    // Reuse happens (state kept across requests) and recycling too, more than once.
    assert!(
        cycles >= 2,
        "fewer than two instances served their 5 requests: {seen:?}"
    );
    // The manifest's [env] reaches the SDK at run time (not the build machine's).
    let env = host.get("reuse.test", "/env").await.text();
    assert_eq!(env, r#"{"greeting": "salaam", "missing": "default"}"#);
    // Live Python instances kept between requests (one, or a few after a
    // fresh start as above): the memory of each.
    let live = host.metric("alorig_app_instances", "app=\"reuse\"").await;
    assert!(live >= 1.0, "no instance kept for reuse");
    let one = host
        .metric("alorig_app_memory_bytes", "app=\"reuse\"")
        .await
        / live;
    println!(
        "one reused Python instance: {:.1} MiB ({live} live)",
        one / 1048576.0
    );
    assert!(one > 4.0 * 1048576.0 && one < 64.0 * 1048576.0, "{one}");

    // Without reuse every request gets a fresh instance: nothing carries over.
    let fresh = Host::up(&[(
        "reuse",
        python_manifest("reuse", "py-reuse", "[[routes]]\nhost = \"reuse.test\""),
    )]);
    let seen = instances(&fresh, 3).await;
    assert!(seen.iter().all(|(_, n)| *n == 1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_apps_keep_files_in_their_own_directory_within_the_quota() {
    let extra = "[[routes]]\nhost = \"pyfiles.test\"\n[files]\nquota = \"256KiB\"";
    let host = Host::up(&[("pyfiles", python_manifest("pyfiles", "py-files", extra))]);
    let call = |method: &'static str, name: &str, body: &[u8]| {
        let path = format!("/file?name={name}");
        let body = body.to_vec();
        let host = &host;
        async move {
            let reply = host.request(method, "pyfiles.test", &path, body).await;
            (reply.status, reply.text())
        }
    };
    let own = host.data.join("files/pyfiles");

    // Written, appended and read back through the SDK; on disk in the app's directory.
    assert_eq!(call("PUT", "notes/a.txt", b"salaam").await.0, 201);
    assert_eq!(call("POST", "notes/a.txt", b" dunya").await.0, 200);
    assert_eq!(
        call("GET", "notes/a.txt", b"").await,
        (200, "salaam dunya".to_string())
    );
    assert_eq!(
        std::fs::read(own.join("notes/a.txt")).unwrap(),
        b"salaam dunya"
    );
    let listing = host.get("pyfiles.test", "/list?name=notes").await.text();
    assert_eq!(listing, r#"{"names": ["a.txt"], "exists": true}"#);
    assert_eq!(
        call("GET", "notes/missing.txt", b"").await,
        (404, "not-found\n".to_string())
    );

    // Out of /data: refused as not-permitted, nothing written outside.
    let before: Vec<_> = std::fs::read_dir(&host.data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for name in [
        "../escape.txt",
        "notes/../../escape.txt",
        "../../../../etc/passwd",
    ] {
        assert_eq!(
            call("PUT", name, b"out").await,
            (403, "not-permitted\n".to_string()),
            "{name}"
        );
        assert_eq!(call("GET", name, b"").await.0, 403, "{name}");
    }
    let after: Vec<_> = std::fs::read_dir(&host.data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        before, after,
        "an entry appeared beside the app's directory"
    );
    assert!(!host.data.join("escape.txt").exists() && !host.data.join("files/escape.txt").exists());

    // Past the quota: refused (wasi-libc turns the host's insufficient-space
    // on a stream write into EIO: `io`), and the count stays within it.
    let limit = host
        .metric("alorig_app_files_limit_bytes", "app=\"pyfiles\"")
        .await;
    assert_eq!(limit, 256.0 * 1024.0);
    let (status, kind) = call("PUT", "big.bin", &vec![7u8; 300 * 1024]).await;
    assert_eq!(status, 507, "{kind}");
    assert!(kind == "io\n" || kind == "quota-exceeded\n", "{kind}");
    let used = host
        .metric("alorig_app_files_bytes", "app=\"pyfiles\"")
        .await;
    assert!(used <= limit, "{used} bytes counted over the {limit} quota");

    // Deleting frees the bytes: the same file fits once the big one is gone.
    assert_eq!(call("DELETE", "big.bin", b"").await.0, 204);
    let freed = host
        .metric("alorig_app_files_bytes", "app=\"pyfiles\"")
        .await;
    assert!(freed < 64.0 * 1024.0, "{freed} bytes still counted");
    assert_eq!(call("PUT", "big.bin", &vec![7u8; 200 * 1024]).await.0, 201);
    assert_eq!(
        std::fs::metadata(own.join("big.bin")).unwrap().len(),
        200 * 1024
    );
}

/// The operator manifest `manifests/asms.toml`, pointed at the built component,
/// with `grade_calculations` firing every second so the test sees it run.
fn asms_manifest() -> String {
    let text = std::fs::read_to_string(workspace_root().join("manifests/asms.toml")).unwrap();
    let component = python_guest("asms");
    let mut out = String::new();
    let mut in_grades = false;
    for line in text.lines() {
        if line.starts_with("component") {
            out += &format!("component = \"{}\"\n", component.display());
        } else if line.starts_with("name") && line.contains("grade_calculations") {
            in_grades = true;
            out += line;
            out += "\nevery = \"1s\"\n";
        } else if in_grades && (line.starts_with("cron") || line.starts_with("timezone")) {
            continue;
        } else {
            out += line;
            out.push('\n');
        }
    }
    assert!(
        in_grades,
        "manifests/asms.toml has no grade_calculations timer"
    );
    out
}

async fn api(
    host: &Host,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value, String) {
    let reply = host
        .request_with(
            method,
            "api.schools.alorig.com",
            path,
            &[("authorization", format!("Bearer {token}"))],
            body.as_bytes().to_vec(),
        )
        .await;
    let text = reply.text();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (
        reply.status,
        json,
        reply
            .headers
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn asms_in_python_scopes_every_query_to_the_users_schools() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let host = Host::up_full(
        &[("asms", asms_manifest())],
        "",
        &[
            ("ALORIG_POSTGRES_URL", &pg.admin_url()),
            ("ALORIG_REDIS_URL", &redis.url()),
        ],
    );

    // The component applied its migrations (schema + the 5 pilot schools) itself.
    let health = host.get("api.schools.alorig.com", "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.text(), r#"{"ok": true, "migrations": 2}"#);
    // The SDK's world has no outgoing-handler when the manifest grants no [outbound_http].
    assert!(!host.log().contains("outgoing-handler"), "{}", host.log());

    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect()
    };
    let (status, schools, _) = api(&host, "ho-admin-token", "GET", "/api/v1/schools", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&schools),
        [1, 2, 3, 4, 5],
        "Head Office sees all five pilot schools"
    );
    let (_, schools, _) = api(&host, "sindh-admin-token", "GET", "/api/v1/schools", "").await;
    assert_eq!(
        ids(&schools),
        [4, 5],
        "a branch admin sees the branch's schools"
    );
    let (_, schools, _) = api(
        &host,
        "gulberg-principal-token",
        "GET",
        "/api/v1/schools",
        "",
    )
    .await;
    assert_eq!(ids(&schools), [1], "a principal sees their own school only");

    // Students: scoped lists; another school's student is 404 (its existence does not leak).
    let (_, list, _) = api(
        &host,
        "gulberg-principal-token",
        "GET",
        "/api/v1/students",
        "",
    )
    .await;
    assert_eq!(list["count"], 20);
    assert!(
        list["students"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["school_id"] == 1)
    );
    let gulberg: Vec<i64> = ids(&list["students"]);
    assert_eq!(
        gulberg[..3],
        [1, 2, 3],
        "the seed numbers students school by school"
    );
    let (_, list, _) = api(
        &host,
        "ho-admin-token",
        "GET",
        "/api/v1/students?school=4",
        "",
    )
    .await;
    assert_eq!(list["count"], 20);
    let clifton_student = list["students"][0]["id"].as_i64().unwrap();
    let (status, _, _) = api(
        &host,
        "gulberg-principal-token",
        "GET",
        &format!("/api/v1/students/{clifton_student}"),
        "",
    )
    .await;
    assert_eq!(
        status, 404,
        "a Gulberg principal may not see a Clifton student"
    );
    let (status, one, _) = api(
        &host,
        "clifton-principal-token",
        "GET",
        &format!("/api/v1/students/{clifton_student}"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["school_id"], 4);
    let (status, _, _) = api(&host, "not-a-token", "GET", "/api/v1/schools", "").await;
    assert_eq!(status, 401);

    // Attendance: one transaction; a student outside the school rolls all of it back.
    let register = |students: &[i64], status: &str| {
        let records: Vec<String> = students
            .iter()
            .map(|id| format!(r#"{{"student_id": {id}, "status": "{status}"}}"#))
            .collect();
        format!(
            r#"{{"date": "2026-03-02", "records": [{}]}}"#,
            records.join(",")
        )
    };
    let (status, _, _) = api(
        &host,
        "gulberg-teacher-token",
        "POST",
        "/api/v1/attendance",
        &register(&[gulberg[0], gulberg[1], clifton_student], "absent"),
    )
    .await;
    assert_eq!(status, 404);
    let (_, report, cache) = api(
        &host,
        "gulberg-teacher-token",
        "GET",
        "/api/v1/reports/attendance?date=2026-03-02",
        "",
    )
    .await;
    assert_eq!(
        report["schools"][0]["absent"], 0,
        "nothing of the refused register was kept"
    );
    assert_eq!(cache, "miss");
    // A status the CHECK constraint refuses: the WIT constraint-violation reaches Python as IntegrityError.
    let reply = host
        .request_with(
            "POST",
            "api.schools.alorig.com",
            "/api/v1/attendance",
            &[("authorization", "Bearer gulberg-teacher-token".to_string())],
            register(&gulberg[..1], "sick").into_bytes(),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .text()
            .contains("refused by attendance_records_status_check (23514)"),
        "{}",
        reply.text()
    );
    let (status, done, _) = api(
        &host,
        "gulberg-teacher-token",
        "POST",
        "/api/v1/attendance",
        &register(&gulberg[..3], "absent"),
    )
    .await;
    assert_eq!((status, done["recorded"].as_i64()), (201, Some(3)));
    let (status, _, _) = api(
        &host,
        "ho-admin-token",
        "POST",
        "/api/v1/attendance",
        &register(&[1], "present"),
    )
    .await;
    assert_eq!(status, 403, "the Head Office does not take registers");

    // The report (Redis-cached per scope): the principal sees their school, the HO all five.
    let (_, report, cache) = api(
        &host,
        "gulberg-principal-token",
        "GET",
        "/api/v1/reports/attendance?date=2026-03-02",
        "",
    )
    .await;
    assert_eq!(
        (
            report["schools"].as_array().unwrap().len(),
            report["schools"][0]["absent"].as_i64(),
            cache.as_str()
        ),
        (1, Some(3), "miss")
    );
    let (_, _, cache) = api(
        &host,
        "gulberg-principal-token",
        "GET",
        "/api/v1/reports/attendance?date=2026-03-02",
        "",
    )
    .await;
    assert_eq!(cache, "hit");
    let (_, report, _) = api(
        &host,
        "ho-admin-token",
        "GET",
        "/api/v1/reports/attendance?date=2026-03-02",
        "",
    )
    .await;
    assert_eq!(report["schools"].as_array().unwrap().len(), 5);

    // Keys and sessions live under the app's prefix in DB 7.
    let mut conn = redis.connection(7);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k.starts_with("asms:")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("asms:session:")),
        "{keys:?}"
    );

    // The grade_calculations timer (every second here) fills in every GPA.
    let mut gpa = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, one, _) = api(&host, "ho-admin-token", "GET", "/api/v1/students/1", "").await;
        gpa = one["gpa"].clone();
        if !gpa.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gpa: f64 = gpa
        .as_str()
        .unwrap_or_else(|| panic!("no GPA after 10 s; host log:\n{}", host.log()))
        .parse()
        .unwrap();
    assert!((0.0..=4.0).contains(&gpa), "{gpa}");
}

/// One line of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `RssFile`), in bytes.
fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/<pid>/status"));
    kib * 1024
}

/// After a Python app's deploy (its compile in a child process) and 20
/// requests, the host's resident memory is within 30 MB of before: its own
/// memory (anonymous pages: heap, stores) and the pages of compiled code it
/// maps from the cache file, which the host reads 4 KiB at a time as the app
/// runs them (`engine::map_lazily`) rather than in whole large folios.
#[tokio::test(flavor = "multi_thread")]
async fn host_memory_returns_within_30mb_after_deploying_a_python_app() {
    let data = tempfile::tempdir().unwrap();
    let host = Host::serve(data.path(), "");
    let before = |key| status_bytes(host.pid(), key);
    let (rss_before, anon_before, file_before) =
        (before("VmRSS"), before("RssAnon"), before("RssFile"));
    // A fresh data dir: the deploy compiles the ~18 MB Python component.
    let manifest = host.dir.path().join("pyapp.toml");
    std::fs::write(
        &manifest,
        python_manifest("pyapp", "py-reuse", "[[routes]]\nhost = \"reuse.test\""),
    )
    .unwrap();
    let (code, _, stderr) = host.cli(&["deploy", manifest.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    for _ in 0..20 {
        assert_eq!(host.get("reuse.test", "/").await.status, 200);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = |key| status_bytes(host.pid(), key);
    let (rss, anon, file) = (after("VmRSS"), after("RssAnon"), after("RssFile"));
    let compiled: u64 = std::fs::read_dir(data.path().join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "host RSS before deploy {:.1} MiB (anonymous {:.1}, file {:.1}), after deploy + 20 requests {:.1} MiB \
         (anonymous {:.1}, file {:.1}; the compiled component is {:.1} MiB)",
        mib(rss_before),
        mib(anon_before),
        mib(file_before),
        mib(rss),
        mib(anon),
        mib(file),
        mib(compiled)
    );
    const LIMIT: u64 = 30_000_000;
    assert!(
        rss <= rss_before + LIMIT,
        "host RSS grew from {:.1} MiB to {:.1} MiB after deploying a Python app (limit: +30 MB): \
         anonymous +{:.1} MiB, mapped files +{:.1} MiB",
        mib(rss_before),
        mib(rss),
        mib(anon.saturating_sub(anon_before)),
        mib(file.saturating_sub(file_before))
    );
}

/// Runs a command in `dir` to completion, panicking with its output on failure.
fn run_in(dir: &std::path::Path, program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_projects_build_and_serve_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_str().unwrap();
    for (name, lang) in [("pyshop", "python"), ("rsshop", "rust")] {
        let (code, stdout, stderr) = run_cli(&["new", name, "--lang", lang, "--dir", base]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("new ") && stdout.contains(name), "{stdout}");
        assert!(
            std::fs::read_to_string(dir.path().join(name).join("README.md"))
                .unwrap()
                .contains(&format!("alorig-host deploy {name}.toml"))
        );
    }
    let (code, _, stderr) = run_cli(&["new", "pyshop", "--lang", "python", "--dir", base]);
    assert_eq!(
        (
            code,
            crate::harness::one_error_line(&stderr).contains("already exists")
        ),
        (1, true)
    );

    // Build each as its README says. The Python one reuses the test run's pinned
    // venv (build.sh would make .venv with the same componentize-py version).
    python_guest("std-proxy");
    std::os::unix::fs::symlink(
        workspace_root().join("target/python-venv"),
        dir.path().join("pyshop/.venv"),
    )
    .unwrap();
    run_in(&dir.path().join("pyshop"), "bash", &["build.sh"]);
    run_in(
        &dir.path().join("rsshop"),
        &std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        &["build", "--release", "--target", "wasm32-wasip2", "--quiet"],
    );

    let manifests: Vec<(&str, String)> = ["pyshop", "rsshop"]
        .iter()
        .map(|name| {
            let path = dir.path().join(name).join(format!("{name}.toml"));
            let (code, stdout, stderr) = run_cli(&["validate", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{name}: {stderr}");
            assert!(stdout.contains("ok"), "{stdout}");
            // `up` reads the manifest where it is (its component path is relative to it).
            (
                *name,
                std::fs::read_to_string(&path).unwrap().replace(
                    "component = \"",
                    &format!("component = \"{}/", dir.path().join(name).display()),
                ),
            )
        })
        .collect();
    let host = Host::up(&manifests);
    for name in ["pyshop", "rsshop"] {
        let reply = host.get(&format!("{name}.localhost"), "/").await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.text(), format!("<h1>Hello from {name}</h1>\n"));
    }
    let reply = host
        .get("pyshop.localhost", "/api/hello/amna?lang=ur")
        .await;
    assert_eq!(reply.text(), r#"{"hello": "amna", "lang": "ur"}"#);
}

/// `up` listens at once and loads its apps side by side: a Rust app serves
/// while the Python one is still compiling (7–12 s the first time), a request
/// for the Python app waits for it instead of getting a 404, and `/healthz`
/// says the host is loading until every app serves.
#[tokio::test(flavor = "multi_thread")]
async fn up_serves_the_loaded_apps_while_a_python_app_still_compiles() {
    let host = Host::up_listening(&[
        (
            "py",
            python_manifest("py", "std-proxy", "[[routes]]\nhost = \"py.test\""),
        ),
        (
            "hello",
            crate::harness::manifest("hello", "hello", "[[routes]]\nhost = \"hello.test\""),
        ),
    ]);
    let serving = || host.log().contains("alorig-host: serving 2 app(s)");
    // The Python request is sent first and waits for its app.
    let python = host.get("py.test", "/");
    let early = async {
        let hello = loop {
            let reply = host.get("hello.test", "/").await;
            if reply.status == 200 {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let health = host.admin_request("GET", "/healthz", &[], Vec::new()).await;
        (hello, health, serving())
    };
    let (python, (hello, health, all_loaded)) = tokio::join!(python, early);
    assert!(
        !all_loaded,
        "the Python app was loaded before hello answered: {}",
        host.log()
    );
    assert_eq!(hello.status, 200);
    assert_eq!(
        (health.status, health.text()),
        (503, "loading its apps\n".to_string())
    );
    assert_eq!(python.status, 200, "{}", python.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !serving() {
        assert!(std::time::Instant::now() < deadline, "{}", host.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = host.admin_request("GET", "/healthz", &[], Vec::new()).await;
    assert_eq!(health.status, 200);
    // Loaded, an unknown host is a 404 at once.
    assert_eq!(host.get("nobody.test", "/").await.status, 404);
}
