//! Every manifest in `manifests/` on one host at once (the seeds' eight
//! deployments and the demo apps, whichever have a component on this branch),
//! under the production `deploy/host.toml` memory budget: `status --json`
//! shows each app's memory against its cap, then a mixed load over each app's
//! main path for 60 s (`ALORIG_LOAD_SECS` to change) with no error, recording
//! the host's RSS and each app's memory idle, under load and at its peak — the
//! figures of deploy/README.md's "Memory per app, all eight on one host".

use crate::{
    harness::{Host, metric_value, workspace_root},
    postgres_server::PgServer,
    redis_server::RedisServer,
};
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// One deployable manifest: its name, text (component made absolute, test edits), first route host.
pub struct App {
    pub name: String,
    pub text: String,
    pub host: String,
}

fn value_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)?
            .trim_start()
            .strip_prefix('=')?
            .trim()
            .split('"')
            .nth(1)
    })
}

/// The manifests with a built component. Secrets get test values (64 hex digits
/// suit every one, the journal key included); Psydge's session window is open.
fn deployable() -> (Vec<App>, Vec<String>, BTreeMap<String, String>) {
    let dir = workspace_root().join("manifests");
    crate::harness::guest("hello"); // builds every guest crate once
    let mut apps = Vec::new();
    let mut skipped = Vec::new();
    let mut secrets = BTreeMap::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = value_of(&text, "name").unwrap().to_string();
        let component = dir.join(value_of(&text, "component").unwrap());
        if !component.exists() {
            skipped.push(format!("{name} (no {})", component.display()));
            continue;
        }
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with("component") {
                out.push_str(&format!("component = \"{}\"\n", component.display()));
            } else if line.starts_with("SESSIONS") {
                out.push_str("SESSIONS = \"UTC 00:00-24:00 daily\"\n");
            } else {
                out.push_str(line);
                out.push('\n');
            }
            if let Some(env) = line
                .split("env = \"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
            {
                secrets.insert(env.to_string(), "a1".repeat(32));
            }
        }
        let host = text
            .lines()
            .skip_while(|l| !l.starts_with("[[routes]]"))
            .find_map(|l| value_of(l, "host"))
            .unwrap_or("")
            .to_string();
        apps.push(App {
            name,
            text: out,
            host,
        });
    }
    (apps, skipped, secrets)
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1048576.0)
}

/// One request of the mixed load: each app's main page or API call, which must
/// answer 2xx.
pub struct MainRequest {
    pub method: &'static str,
    /// Where it goes when not to the app's first route (a tenant site).
    pub host: Option<&'static str>,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl MainRequest {
    fn get(path: impl Into<String>) -> Self {
        Self {
            method: "GET",
            host: None,
            path: path.into(),
            headers: vec![],
            body: vec![],
        }
    }

    fn bearer(mut self, token: &str) -> Self {
        self.headers
            .push(("authorization", format!("Bearer {token}")));
        self
    }
}

/// The `i`th request of the mixed load to `app`: its main paths, in turn.
pub fn main_request(app: &str, i: u64, tokens: &BTreeMap<&str, String>) -> MainRequest {
    let user = i % 8;
    match app {
        "psydge" if i.is_multiple_of(2) => MainRequest {
            method: "POST",
            body: br#"{"symbol":"EURUSD","risk_pct":0.5}"#.to_vec(),
            ..MainRequest::get(format!("/api/v1/trades/u{user}"))
        },
        "psydge" => MainRequest::get(format!("/api/v1/gate/u{user}")),
        "observer" if i.is_multiple_of(2) => MainRequest {
            method: "POST",
            body: format!(
                r#"{{"text":"Load entry {i}: the evening was long and quiet.","emotion_tag":"calm"}}"#
            )
            .into_bytes(),
            ..MainRequest::get("/api/v1/journal/")
        }
        .bearer(&tokens["observer"]),
        "observer" => MainRequest::get("/api/v1/observer/module/").bearer(&tokens["observer"]),
        "astrotiming" if i.is_multiple_of(2) => MainRequest::get(format!("/now?lat=51.5{user}&lon=-0.13")),
        "astrotiming" => {
            let mut tqs = MainRequest::get("/v1/tqs?activity=commerce&lat=31.52&lon=74.36");
            tqs.headers.push(("x-api-key", tokens["astrotiming"].clone()));
            tqs
        }
        // The storefront the demo data set up, and its search.
        "snapify" if i.is_multiple_of(2) => MainRequest::get("/silk-house"),
        "snapify" => MainRequest::get("/silk-house/search?q=dupata"),
        // A customer's published site, served by host.
        "sitebuilder" => MainRequest {
            host: Some("acme.sites.alorig.com"),
            ..MainRequest::get("/")
        },
        "igny8" | "igny8-staging" => MainRequest::get("/api/v1/system/status/"),
        "asms" if i.is_multiple_of(2) => MainRequest::get("/api/v1/schools").bearer("ho-admin-token"),
        "asms" => MainRequest::get("/api/v1/schools").bearer("gulberg-principal-token"),
        other => panic!("{other}: no main request in the mixed load; add one"),
    }
}

/// How [`all_apps`] starts the host.
pub enum Start {
    /// `alorig-host up` with every manifest: fixed, unversioned.
    Up,
    /// `alorig-host serve`, then each manifest deployed through the CLI (so
    /// they can be deployed again).
    Serve,
}

/// Every deployable Alorig app on one host (plus `extra` manifests), with the
/// data each main path shows already set up. The host is the first field, so
/// it stops before the PostgreSQL and Redis it uses.
pub struct AllApps {
    pub host: Host,
    pub apps: Vec<App>,
    pub skipped: Vec<String>,
    pub tokens: BTreeMap<&'static str, String>,
    /// With [`Start::Serve`]: each app's manifest file, to deploy it again.
    pub manifest_files: BTreeMap<String, String>,
    pub pg: PgServer,
    pub redis: RedisServer,
    pub dir: tempfile::TempDir,
}

pub async fn all_apps(start: Start, extra: &[(&str, String)]) -> AllApps {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (apps, skipped, secrets) = deployable();
    let host_toml = std::fs::read_to_string(workspace_root().join("deploy/host.toml")).unwrap();
    let budget = value_of(&host_toml, "memory_budget").unwrap();
    let mut manifests: Vec<(&str, String)> = apps
        .iter()
        .map(|a| (a.name.as_str(), a.text.clone()))
        .collect();
    manifests.extend(extra.iter().cloned());
    let mut envs: Vec<(&str, &str)> = secrets
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let admin = pg.admin_url();
    envs.push(("ALORIG_POSTGRES_URL", &admin));
    let host_toml = format!(
        "memory_budget = \"{budget}\"\nredis_url = \"{}\"",
        redis.url()
    );
    let mut manifest_files = BTreeMap::new();
    let host = match start {
        Start::Up => Host::up_full(&manifests, &host_toml, &envs),
        Start::Serve => {
            let host = Host::serve_full(&dir.path().join("data"), &host_toml, &envs);
            for (name, text) in &manifests {
                let path = dir.path().join(format!("{name}.toml"));
                std::fs::write(&path, text).unwrap();
                let path = path.display().to_string();
                let (code, _, err) = host.cli(&["deploy", &path, "--yes"]);
                assert_eq!(code, 0, "deploying {name}: {err}");
                manifest_files.insert(name.to_string(), path);
            }
            host
        }
    };

    // Each app's data for its main path.
    let site = |name: &str| {
        apps.iter()
            .find(|a| a.name == name)
            .map(|a| a.host.clone())
            .unwrap()
    };
    // The data each main page shows: Snapify's demo store, Site Builder's demo
    // sites (published by a job).
    let secret = "a1".repeat(32);
    for (api, path) in [
        ("api.snapify.pk", "/v1/demo"),
        ("api.alorig.com", "/builder/demo"),
    ] {
        let reply = host
            .request_with(
                "POST",
                api,
                path,
                &[("authorization", format!("Bearer {secret}"))],
                vec![],
            )
            .await;
        assert_eq!(reply.status, 200, "{api}{path}: {}", reply.text());
    }
    let published = Instant::now() + Duration::from_secs(30);
    while host.get("acme.sites.alorig.com", "/").await.status != 200 {
        assert!(Instant::now() < published, "the demo site never went live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = "buffer_go=1\nbuffer_whitelist=1\nbuffer_session=1\nbuffer_equity=1\nbuffer_cooldown=1\nbuffer_risk=1\n";
    for u in 0..8 {
        assert_eq!(
            host.request(
                "PUT",
                &site("psydge"),
                &format!("/api/v1/gate/u{u}"),
                open.into()
            )
            .await
            .status,
            204
        );
    }
    let mut tokens = BTreeMap::new();
    let login = host
        .request(
            "POST",
            &site("observer"),
            "/api/v1/auth/anonymous-login",
            vec![],
        )
        .await;
    tokens.insert(
        "observer",
        serde_json::from_slice::<serde_json::Value>(&login.body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let auth = format!("Bearer {}", "a1".repeat(32));
    let key = host
        .request_with(
            "POST",
            &site("astrotiming"),
            "/v1/keys?tier=premium&rate_limit=100000000",
            &[("authorization", &auth)],
            vec![],
        )
        .await;
    assert_eq!(key.status, 200, "{}", key.text());
    tokens.insert(
        "astrotiming",
        serde_json::from_slice::<serde_json::Value>(&key.body).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string(),
    );

    AllApps {
        host,
        apps,
        skipped,
        tokens,
        manifest_files,
        pg,
        redis,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn all_alorig_apps_run_at_once_within_their_caps_under_a_mixed_load() {
    // Named, not `..`: the servers and the folder must live as long as the host.
    let AllApps {
        host,
        apps,
        skipped,
        tokens,
        manifest_files: _,
        pg: _pg,
        redis: _redis,
        dir: _dir,
    } = all_apps(Start::Up, &[]).await;
    for s in &skipped {
        eprintln!("not deployed: {s}");
    }
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    for mine in [
        "igny8",
        "igny8-staging",
        "psydge",
        "snapify",
        "sitebuilder",
        "observer",
        "astrotiming",
        "asms",
    ] {
        assert!(
            names.contains(&mine),
            "{mine} is not deployable: {skipped:?}"
        );
    }

    // status --json: every app, its memory against its cap.
    let (code, out, err) = host.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for app in &apps {
        assert!(
            listed.contains(&app.name.as_str()),
            "{} missing from status: {out}",
            app.name
        );
    }
    for a in status.as_array().unwrap() {
        let (used, cap) = (
            a["memory_bytes"].as_f64().unwrap(),
            a["memory_limit_bytes"].as_f64().unwrap(),
        );
        assert!(cap > 0.0 && used <= cap, "{}: {used} of {cap}", a["name"]);
    }

    let metrics = host.metrics().await;
    let idle: BTreeMap<String, f64> = apps
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                metric_value(
                    &metrics,
                    "alorig_app_memory_bytes",
                    &format!("app=\"{}\"", a.name),
                ),
            )
        })
        .collect();
    let idle_rss = metric_value(&metrics, "alorig_host_resident_memory_bytes", "");

    // The mixed load: 16 clients, each going round the apps' main paths.
    let seconds: u64 = std::env::var("ALORIG_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let until = Instant::now() + Duration::from_secs(seconds);
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sites: Vec<(String, String)> = apps
        .iter()
        .map(|a| (a.name.clone(), a.host.clone()))
        .collect();
    let host = Arc::new(host);
    let tokens = Arc::new(tokens);
    let mut clients = Vec::new();
    for client in 0..16u64 {
        let (host, sites, tokens, done, failed, failures) = (
            host.clone(),
            sites.clone(),
            tokens.clone(),
            done.clone(),
            failed.clone(),
            failures.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = client;
            while Instant::now() < until {
                let (name, route) = &sites[(i as usize) % sites.len()];
                let request = main_request(name, i / sites.len() as u64, &tokens);
                let (method, path) = (request.method, &request.path);
                let reply = host
                    .request_with(
                        method,
                        request.host.unwrap_or(route),
                        path,
                        &request.headers,
                        request.body,
                    )
                    .await;
                let ok = (200..300).contains(&reply.status);
                done.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let mut f = failures.lock().unwrap();
                    if f.len() < 10 {
                        f.push(format!(
                            "{name} {method} {path}: {} {}",
                            reply.status,
                            reply.text()
                        ));
                    }
                }
                i += 16;
            }
        }));
    }
    // Sample memory while it runs.
    let mut loaded: BTreeMap<String, f64> = BTreeMap::new();
    let mut peak_rss: f64 = idle_rss;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let metrics = host.metrics().await;
        peak_rss = peak_rss.max(metric_value(
            &metrics,
            "alorig_host_resident_memory_bytes",
            "",
        ));
        for a in &apps {
            let now = metric_value(
                &metrics,
                "alorig_app_memory_bytes",
                &format!("app=\"{}\"", a.name),
            );
            let seen = loaded.entry(a.name.clone()).or_default();
            *seen = seen.max(now);
        }
    }
    for c in clients {
        c.await.unwrap();
    }
    let (total, errors) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let metrics = host.metrics().await;
    println!("\n| app | cap | idle | under load (max sampled) | peak |\n|---|---:|---:|---:|---:|");
    for a in &apps {
        let label = format!("app=\"{}\"", a.name);
        let cap = metric_value(&metrics, "alorig_app_memory_limit_bytes", &label);
        let peak = metric_value(&metrics, "alorig_app_memory_peak_bytes", &label);
        println!(
            "| {} | {} | {} | {} | {} |",
            a.name,
            mib(cap),
            mib(idle[&a.name]),
            mib(loaded[&a.name]),
            mib(peak)
        );
        assert!(peak <= cap, "{}: peak {peak} over its cap {cap}", a.name);
    }
    println!(
        "\nhost RSS: idle {}, peak under load {}; {total} requests in {seconds} s ({:.0}/s), {errors} errors",
        mib(idle_rss),
        mib(peak_rss),
        total as f64 / seconds as f64
    );
    assert!(total > 0);
    assert_eq!(errors, 0, "failures: {:?}", failures.lock().unwrap());
}
