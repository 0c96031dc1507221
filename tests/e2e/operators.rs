//! What operators see: `apps`, `status` (and its JSON), `/metrics` with every
//! series of CONTRACT.md, and the dashboard page rendered by headless Chromium.

use crate::{
    deploy::{deploy_ok, echo_manifest},
    harness::{Host, metric_value},
};
use serde_json::Value;
use std::time::Duration;

/// Deploys echo (reusing instances, so an idle one keeps memory) and hello, and
/// leaves echo holding about 7 MiB.
async fn host_with_traffic() -> (Host, tempfile::TempDir, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = Host::serve(data.path(), "");
    let echo = dir.path().join("echo.toml");
    std::fs::write(
        &echo,
        echo_manifest(
            "echo",
            "echo.test",
            "1",
            "[resources]\nmemory = \"64MiB\"\ninstance_reuse = 100",
        ),
    )
    .unwrap();
    deploy_ok(&host, echo.to_str().unwrap(), &[]);
    let hello = dir.path().join("hello.toml");
    std::fs::write(
        &hello,
        format!(
            "name = \"hello\"\ncomponent = \"{}\"\n[[routes]]\nhost = \"hello.test\"\n",
            crate::harness::guest("hello").display()
        ),
    )
    .unwrap();
    deploy_ok(&host, hello.to_str().unwrap(), &[]);
    for _ in 0..50 {
        assert_eq!(host.get("hello.test", "/").await.status, 200);
    }
    // A trap ends its instance; the next one keeps 6 MiB while idle.
    assert_eq!(host.get("echo.test", "/panic").await.status, 500);
    assert_eq!(host.get("echo.test", "/hoard?mib=6").await.status, 200);
    // Let the once-a-second sampler see the traffic.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (host, data, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_apps_and_metrics_show_memory_rates_errors_and_versions() {
    let (host, _data, _dir) = host_with_traffic().await;

    let (code, out, err) = host.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("APP")
            && lines[0].contains("MEM USAGE / LIMIT")
            && lines[0].contains("P99"),
        "{out}"
    );
    let echo = lines.iter().find(|l| l.starts_with("echo")).unwrap();
    assert!(echo.contains("/ 64.0MiB"), "{echo}");

    let (code, out, err) = host.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let apps: Value = serde_json::from_str(&out).unwrap();
    let echo = &apps[0];
    assert_eq!(echo["name"], "echo");
    assert!(echo["memory_bytes"].as_u64().unwrap() >= 6 << 20, "{echo}");
    assert_eq!(echo["memory_limit_bytes"], 64u64 << 20);
    assert!(echo["memory_peak_bytes"].as_u64().unwrap() >= echo["memory_bytes"].as_u64().unwrap());
    assert_eq!(echo["errors_total"], 1);
    assert!(echo["error_rate"].as_f64().unwrap() > 0.0, "{echo}");
    let hello = &apps[1];
    assert!(
        hello["requests_per_second"].as_f64().unwrap() > 0.0,
        "{hello}"
    );
    assert!(hello["p99_seconds"].as_f64().unwrap() > 0.0, "{hello}");
    assert_eq!(hello["version"], 1);

    let (code, out, err) = host.cli(&["apps"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("echo") && out.contains("echo.test/") && out.contains("hello.test/"),
        "{out}"
    );

    let metrics = host.metrics().await;
    for series in [
        "alorig_app_memory_bytes{",
        "alorig_app_memory_peak_bytes{",
        "alorig_app_memory_limit_bytes{",
        "alorig_app_instances{",
        "alorig_app_requests_total{",
        "alorig_app_request_duration_seconds_bucket{",
        "alorig_app_traps_total{",
        "alorig_app_rejected_total{",
        "alorig_host_memory_budget_bytes ",
        "alorig_host_resident_memory_bytes ",
        "alorig_deploys_total{",
        "alorig_app_version{",
    ] {
        assert!(metrics.contains(series), "no {series} in /metrics");
    }
    assert_eq!(
        metric_value(&metrics, "alorig_app_memory_limit_bytes", "app=\"echo\""),
        (64u64 << 20) as f64
    );
    assert_eq!(
        metric_value(
            &metrics,
            "alorig_app_requests_total",
            "app=\"hello\",status=\"200\""
        ),
        50.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "alorig_deploys_total",
            "app=\"hello\",result=\"ok\""
        ),
        1.0
    );

    // The API answers only with the token.
    let reply = host.admin_request("GET", "/v1/apps", &[], Vec::new()).await;
    assert_eq!(reply.status, 401);
    let error: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    let reply = host
        .admin_request(
            "GET",
            "/v1/apps/echo",
            &[("authorization", format!("Bearer {}", host.token()))],
            Vec::new(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let detail: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(detail["versions"], serde_json::json!([1]));
    assert!(
        detail["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "route echo.test/"),
        "{detail}"
    );
}

/// The installed Chromium.
fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is needed for this test (deploy/quickstart.sh installs it)")
}

/// The dashboard of `host` as headless Chromium renders it (the DOM after its script ran).
fn rendered_dashboard(host: &Host, profile: &std::path::Path) -> String {
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=3000", "--dump-dom"])
        .arg(format!("http://{}/", host.admin))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("<tbody id=\"apps\">"),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The DOM's `<tr>` whose attribute `attr` is `value`.
fn dom_row(dom: &str, attr: &str, value: &str) -> String {
    let start = dom
        .find(&format!("{attr}=\"{value}\""))
        .unwrap_or_else(|| panic!("no row with {attr}={value}: {dom}"));
    let end = dom[start..].find("</tr>").unwrap() + start;
    dom[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_renders_apps_and_memory_bars_in_headless_chromium() {
    let (host, _data, _dir) = host_with_traffic().await;
    let browser = chromium();
    let profile = tempfile::tempdir().unwrap();
    let dom = rendered_dashboard(&host, profile.path());

    // Rows are built by the page's script, one per app, with a memory bar.
    let row = |app: &str| dom_row(&dom, "data-app", app);
    let echo = row("echo");
    let percent: f64 = echo
        .split("data-percent=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no memory bar in the echo row: {echo}"));
    assert!(
        percent > 9.0 && percent < 100.0,
        "echo holds about 7 of 64 MiB, the bar says {percent}%"
    );
    assert!(echo.contains("class=\"used\" style=\"width: "), "{echo}");
    assert!(echo.contains("/ 64.0 MiB"), "{echo}");
    assert!(echo.contains("v1 (kept: 1)"), "{echo}");
    let hello = row("hello");
    assert!(hello.contains("class=\"bar\""), "{hello}");
    assert!(dom.contains("2 app(s)"), "{dom}");

    // Charts of the last hour, drawn inline (SVG): memory against the cap, and
    // requests/errors — at least the point sampled at start and the one of now.
    for (app, text) in [("echo", &echo), ("hello", &hello)] {
        assert!(
            text.contains("<svg class=\"chart memory\""),
            "{app}: {text}"
        );
        assert!(text.contains("<line class=\"cap\""), "{app}: {text}");
        assert!(
            text.contains("<svg class=\"chart traffic\""),
            "{app}: {text}"
        );
        let points: u32 = text
            .split("class=\"mem\"")
            .nth(1)
            .and_then(|rest| rest.split("data-points=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no memory line for {app}: {text}"));
        assert!(points >= 2, "{app}: {points} point(s)");
        assert!(text.contains("class=\"rps\""), "{app}: {text}");
    }
    assert!(
        !dom.contains("<script src") && !dom.contains("<link"),
        "no external assets"
    );

    // A screenshot for people, in the test output.
    let out_dir = crate::harness::workspace_root().join("target/e2e-output");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=3000", "--window-size=1600,500"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{}/", host.admin))
        .output()
        .unwrap();
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn under_up_the_api_shows_the_apps_and_refuses_to_change_them() {
    let host = Host::up(&[("echo", echo_manifest("echo", "echo.test", "1", ""))]);
    let (code, out, err) = host.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("echo") && l.contains(" up ")),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.toml");
    std::fs::write(&path, echo_manifest("echo", "echo.test", "2", "")).unwrap();
    let (code, _, err) = host.cli(&["deploy", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("error: this host runs `alorig-host up`"),
        "{err}"
    );
    assert_eq!(host.get("echo.test", "/env/VERSION").await.text(), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn top_refreshes_the_status_table() {
    let data = tempfile::tempdir().unwrap();
    let host = Host::serve(data.path(), "");
    let dir = tempfile::tempdir().unwrap();
    let echo = dir.path().join("echo.toml");
    std::fs::write(&echo, echo_manifest("echo", "echo.test", "1", "")).unwrap();
    deploy_ok(&host, echo.to_str().unwrap(), &[]);
    let mut top = std::process::Command::new(crate::harness::host_binary())
        .args([
            "top",
            "--admin",
            &format!("http://{}", host.admin),
            "--token",
            &host.token(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = top.kill();
    let out = top.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.matches("MEM USAGE / LIMIT").count() >= 2,
        "top did not refresh: {text}"
    );
    assert!(text.contains("echo "), "{text}");
}

/// Two hosts sharing PostgreSQL and Redis: the dashboard of either shows both
/// hosts' rows — their apps, versions and memory, as `status --cluster` does —
/// in `/dashboard.json`, in the served HTML, and rendered by Chromium; a host
/// that is killed shows as gone.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_every_host_of_the_cluster() {
    use crate::{
        cluster::{node, wait_ready},
        postgres_server::PgServer,
        redis_server::RedisServer,
    };
    use std::time::Instant;
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = node(&pg, &redis, d1.path(), "host-1");
    let two = node(&pg, &redis, d2.path(), "host-2");
    wait_ready(&one).await;
    wait_ready(&two).await;
    let manifests = tempfile::tempdir().unwrap();
    let echo = manifests.path().join("echo.toml");
    std::fs::write(
        &echo,
        echo_manifest("echo", "echo.test", "1", "[resources]\nmemory = \"64MiB\""),
    )
    .unwrap();
    deploy_ok(&one, echo.to_str().unwrap(), &[]);

    // Until both heartbeats (every 2 s) carry echo v1.
    async fn figures(host: &Host) -> Value {
        let reply = host
            .admin_request("GET", "/dashboard.json", &[], Vec::new())
            .await;
        serde_json::from_str(&reply.text()).unwrap()
    }
    let echo_on = |figures: &Value, node: &str| -> Option<Value> {
        figures["cluster"]["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node_name"] == node)?["apps"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == "echo")
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen = figures(&two).await;
        if ["host-1", "host-2"]
            .iter()
            .all(|n| echo_on(&seen, n).is_some_and(|a| a["version"] == 1))
        {
            break seen;
        }
        assert!(Instant::now() < deadline, "{seen:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let nodes = seen["cluster"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{seen:#}");
    for n in nodes {
        assert_eq!(n["state"], "up", "{n}");
        assert_eq!(n["self"], n["node_name"] == "host-2", "{n}");
        let app = echo_on(&seen, n["node_name"].as_str().unwrap()).unwrap();
        assert_eq!(app["memory_limit_bytes"], 64 << 20, "{n}");
        assert!(app["memory_bytes"].as_u64().is_some(), "{n}");
        assert!(n["memory_budget_bytes"].as_u64().unwrap() > 0, "{n}");
    }
    assert_eq!(nodes[0]["address"], one.ingress.to_string());

    // The page as served carries the same figures, and Chromium draws a row
    // per host with its apps, versions and memory.
    let html = one.admin_request("GET", "/", &[], Vec::new()).await.text();
    assert!(
        html.contains("\"node_name\":\"host-2\"") && html.contains("id=\"nodes\""),
        "{html}"
    );
    let profile = tempfile::tempdir().unwrap();
    let dom = rendered_dashboard(&one, profile.path());
    for (name, this) in [("host-1", true), ("host-2", false)] {
        let row = dom_row(&dom, "data-node", name);
        assert!(row.contains("data-state=\"up\""), "{row}");
        assert_eq!(row.contains("(this host)"), this, "{row}");
        assert!(row.contains("echo v1 · "), "{row}");
        assert!(row.contains(" / 64.0 MiB"), "{row}");
        assert!(row.contains("resident "), "{row}");
    }
    assert!(
        !dom.contains("id=\"cluster\" hidden"),
        "the section is shown"
    );

    // A killed host shows as gone once its row is 10 s old.
    two.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = figures(&one).await;
        let state = seen["cluster"]["nodes"][1]["state"].clone();
        if state == "gone" {
            break;
        }
        assert!(Instant::now() < deadline, "{seen:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dom = rendered_dashboard(&one, profile.path());
    assert!(
        dom_row(&dom, "data-node", "host-2").contains("data-state=\"gone\""),
        "{dom}"
    );
}
