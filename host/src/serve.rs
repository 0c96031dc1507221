//! Running a host: load the apps (`up`: the given manifests; `serve`: the versions
//! in force in the data dir), check they fit the host's memory budget, bind the
//! ingress and admin listeners, serve until SIGINT/SIGTERM, then drain.

use crate::{
    admin::Admin,
    app::App,
    capabilities::postgres::PostgresHost,
    config::{HostConfig, Manifest},
    deploy::{Apps, shared::Shared, store::Store},
    ingress::{
        Ingress,
        router::{self, Router},
    },
    runtime::Runtime,
};
use anyhow::{Result, bail};
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

/// Prints a line on stdout, ignoring a closed stdout (`serve | head -1`): the
/// host must keep serving whoever reads its output.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// How long in-flight requests may run on after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);

/// How long the host waits for its apps to load before it listens anyway:
/// apps that load quickly (compiled before, or small) are all serving from the
/// first connection, and a bad one stops `up` before anything listens; an app
/// still compiling past this (a Python one's first compile, 7–12 s) serves
/// when it is ready, and does not keep the others waiting.
const STARTUP_HOLD: Duration = Duration::from_secs(2);

/// Reads and checks `up`'s manifests before anything is compiled or listens:
/// budget, names, routes and PostgreSQL connections, each a one-line error.
pub async fn check_manifests(
    runtime: &Runtime,
    config: &HostConfig,
    manifests: &[PathBuf],
) -> Result<Vec<Manifest>> {
    let manifests = manifests
        .iter()
        .map(|p| Manifest::load(p))
        .collect::<Result<Vec<_>>>()?;
    crate::deploy::check_budget(config.memory_budget, &manifests)?;
    if let Some(postgres) = &runtime.postgres {
        postgres
            .check_connections(
                manifests
                    .iter()
                    .filter_map(|m| Some((m.name.as_str(), m.postgres.as_ref()?))),
            )
            .await?;
    }
    for (i, m) in manifests.iter().enumerate() {
        if let Some(other) = manifests[..i].iter().find(|o| o.name == m.name) {
            bail!(
                "{}: app name {} is already used by {}",
                m.source.display(),
                m.name,
                other.source.display()
            );
        }
    }
    router::check_routes(&manifests.iter().collect::<Vec<_>>())?;
    Ok(manifests)
}

/// Loads `up`'s apps side by side, each serving as soon as it is compiled (a
/// cached one at once, a Python one after its first compile); the first that
/// fails to load stops the whole set.
async fn load_fixed(runtime: &Runtime, apps: &Apps, manifests: Vec<Manifest>) -> Result<()> {
    use futures::stream::{FuturesUnordered, StreamExt as _};
    let mut loads: FuturesUnordered<_> = manifests
        .into_iter()
        .map(|manifest| async move {
            let started = Instant::now();
            App::load(runtime, manifest)
                .await
                .map(|app| (app, started.elapsed()))
        })
        .collect();
    while let Some(loaded) = loads.next().await {
        let (app, took) = loaded?;
        let app = Arc::new(app);
        app.activate();
        tracing::info!(
            app = %app.name,
            digest = &app.digest[..12],
            cached = app.compiled_from_cache,
            startup_memory = app.startup_memory,
            "loaded in {took:.0?}"
        );
        apps.add_fixed(app)?;
    }
    Ok(())
}

/// Where an app answers, with the curl that reaches it.
fn say_routes(app: &App, ingress_addr: std::net::SocketAddr) {
    for route in &app.manifest.routes {
        let host = route.host.to_string().replace('*', "any");
        say!(
            "  {:<16} http://{host}:{}{}   (curl -H 'Host: {host}' http://{ingress_addr}{})",
            app.name,
            ingress_addr.port(),
            route.path,
            route.path,
        );
    }
    if app.manifest.routes.is_empty() {
        say!(
            "  {:<16} (no [[routes]]: not reachable over HTTP)",
            app.name
        );
    }
}

/// Runs a host with exactly these apps (`up`, `Some`), or with the apps deployed
/// in its data dir (`serve`, `None`), which the admin API can then change.
pub async fn run(config: HostConfig, manifests: Option<Vec<PathBuf>>) -> Result<()> {
    let started = Instant::now();
    raise_open_files_limit();
    let mut runtime = Runtime::new(&config.data_dir, config.max_instances)?;
    if let Some(url) = &config.postgres_url {
        runtime.postgres = Some(Arc::new(
            PostgresHost::new(url, &config.data_dir, config.postgres_max_connections)?
                .with_cluster(config.cluster_key.as_ref(), &config.node_name),
        ));
    }
    runtime.redis.url = config.redis_url.clone();
    runtime.timers = Arc::new(crate::capabilities::timers::TimersHost::new(
        config.postgres_url.as_deref(),
    )?);
    if let Some(store) = runtime.timers.store()
        && let Err(err) = store.ready().await
    {
        tracing::warn!(
            fault = "dependency",
            "the job store (schema alorig_jobs) is not ready yet, retrying when used: {err}"
        );
    }
    runtime.websocket.set_redis_url(config.redis_url.clone());
    let runtime = Arc::new(runtime);
    runtime
        .metrics
        .set_host_budget(config.memory_budget.bytes());
    if config.header_read_timeout <= crate::caddyfile::UPSTREAM_KEEPALIVE {
        tracing::warn!(
            "header_read_timeout {:?} is not above the generated Caddyfile's upstream keepalive {:?}: behind that Caddy, a request may meet a connection the host is closing (502)",
            config.header_read_timeout,
            crate::caddyfile::UPSTREAM_KEEPALIVE
        );
    }
    let ingress = Arc::new(
        Ingress::new(
            Router::new(Vec::new())?,
            config.header_read_timeout,
            runtime.websocket.clone(),
        )
        .with_write_timeout(config.write_timeout),
    );
    ingress.set_trusted_proxies(config.trusted_proxies.clone());
    let store = manifests
        .is_none()
        .then(|| Store::new(&config.data_dir, config.keep_versions as usize));
    // `serve` with `postgres_url`: the versions every host shares.
    let shared = match (&manifests, &config.postgres_url) {
        (None, Some(url)) => Some(Arc::new(Shared::new(
            url,
            &config.node_name,
            config.keep_versions,
        )?)),
        _ => None,
    };
    let apps = Arc::new(
        Apps::new(
            runtime.clone(),
            ingress.clone(),
            store,
            config.memory_budget,
        )
        .with_shared(shared.clone()),
    );
    // `up`'s manifests are checked before anything listens: a bad one stops
    // the host at once, with its line.
    let fixed = match &manifests {
        Some(manifests) => Some(check_manifests(&runtime, &config, manifests).await?),
        None => None,
    };
    runtime.start();

    // The apps load side by side, each serving once loaded; the host listens
    // when all are, or after STARTUP_HOLD (then a request for one still
    // loading waits for it).
    let mut loading = {
        let (runtime, apps) = (runtime.clone(), apps.clone());
        tokio::spawn(async move {
            match fixed {
                Some(manifests) => load_fixed(&runtime, &apps, manifests).await,
                None => apps.restore().await.map(|count| {
                    tracing::info!("{count} deployed app(s) back in {:.0?}", started.elapsed());
                }),
            }
        })
    };
    let early = match tokio::time::timeout(STARTUP_HOLD, &mut loading).await {
        Ok(joined) => Some(joined.map_err(|err| anyhow::anyhow!("loading the apps: {err}"))??),
        Err(_still_loading) => None,
    };
    let token = crate::admin::token::ensure(config.admin_token.as_deref(), &config.data_dir)?;

    // Sockets from systemd (socket activation) survive restarts; else bind.
    let mut inherited = crate::systemd::Inherited::from_env()?;
    let ingress_listener = inherited
        .take_or_bind(config.listen, config.admin_listen, "listen")
        .await?;
    let admin_listener = inherited
        .take_or_bind(config.admin_listen, config.listen, "admin_listen")
        .await?;
    let ingress_addr = ingress_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let node = crate::cluster::Node {
        name: config.node_name.clone(),
        address: config
            .node_address
            .clone()
            .unwrap_or_else(|| ingress_addr.to_string()),
    };
    let ready = crate::cluster::Readiness::default();
    if early.is_some() {
        // Every app loaded before the host listens: ready from the first request.
        ingress.finish_loading();
        crate::cluster::start(&apps, node.clone(), &ready);
        ready.set_loaded();
    }
    say!(
        "alorig-host: ingress on http://{ingress_addr}, admin and /metrics on http://{admin_addr}"
    );
    if manifests.is_none() {
        say!(
            "  dashboard: http://{admin_addr}/   deploy: alorig-host deploy manifests/<app>.toml --admin http://{admin_addr}"
        );
    }

    let admin = Arc::new(Admin {
        ready: ready.clone(),
        metrics: runtime.metrics.clone(),
        apps: apps.clone(),
        token,
        max_upload: config.max_upload.bytes(),
        spool: crate::deploy::upload::Spool::new(&config.data_dir),
        timers: runtime.timers.clone(),
        history: Default::default(),
        caddy: (config.caddy.apply_on_deploy && manifests.is_none()).then(|| {
            let admin = config
                .caddy
                .admin
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:2019".into());
            let mut options = crate::caddyfile::Options::from_config(&config);
            options.upstream = ingress_addr.to_string();
            options.ask = Some(format!("http://{admin_addr}/v1/tls/allowed"));
            Arc::new(crate::caddyfile::apply::Applier::new(admin, options))
        }),
    });
    tokio::spawn(trim_idle_instances(ingress.clone()));
    tokio::spawn(
        admin
            .history
            .clone()
            .sample_forever(apps.clone(), runtime.metrics.clone()),
    );
    tokio::spawn(apps.clone().sample_forever());
    tokio::spawn(admin.clone().serve(admin_listener));

    // Once every app is loaded: where each answers, then the cluster is
    // followed, and the host is ready once caught up.
    let (load_failed, failed) = tokio::sync::oneshot::channel::<anyhow::Error>();
    {
        let (apps, ingress, ready) = (apps.clone(), ingress.clone(), ready.clone());
        tokio::spawn(async move {
            if early.is_none() {
                let loaded = loading
                    .await
                    .unwrap_or_else(|err| Err(anyhow::anyhow!("loading the apps: {err}")));
                ingress.finish_loading();
                if let Err(err) = loaded {
                    let _ = load_failed.send(err);
                    return;
                }
                crate::cluster::start(&apps, node, &ready);
                ready.set_loaded();
            }
            for app in ingress.router().apps() {
                say_routes(app, ingress_addr);
            }
            if admin.caddy.is_some() {
                // The deployed apps' routes, in case Caddy lost them (a no-op when unchanged).
                let _ = admin.apply_routes().await;
            }
            let count = ingress.router().apps().len();
            say!(
                "alorig-host: serving {count} app(s), loaded in {:.1?}",
                started.elapsed()
            );
            crate::systemd::ready(count);
        });
    }
    let stopped_by: Arc<std::sync::Mutex<Option<anyhow::Error>>> = Arc::default();
    let stop = {
        let stopped_by = stopped_by.clone();
        async move {
            tokio::select! {
                () = shutdown_signal() => {}
                Ok(err) = failed => {
                    crate::systemd::stopping();
                    *stopped_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                }
            }
        }
    };
    ingress.serve(ingress_listener, stop, DRAIN).await;
    leave(&runtime, shared.as_deref(), &config.node_name).await;
    if let Some(err) = stopped_by.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(err);
    }
    tracing::info!("stopped");
    Ok(())
}

/// After the drain: the job leases this host holds go back to the store (other
/// hosts run those jobs now, not after the lease), and its heartbeat row says
/// it stopped. Bounded: a PostgreSQL that does not answer does not hold the exit.
async fn leave(runtime: &Runtime, shared: Option<&Shared>, node: &str) {
    let work = async {
        match runtime.timers.release_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("gave back the leases of {n} running job(s)"),
            Err(err) => tracing::warn!(
                fault = "dependency",
                "cannot give back the job leases (they pass on their own): {err}"
            ),
        }
        if let Some(shared) = shared
            && let Err(err) = crate::cluster::nodes::stopped(shared, node).await
        {
            tracing::warn!(
                fault = "dependency",
                "cannot mark this host stopped: {err:#}"
            );
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .is_err()
    {
        tracing::warn!(
            fault = "dependency",
            "PostgreSQL did not answer within 5 s at shutdown"
        );
    }
}

/// Every WebSocket (and every request in flight) holds a file descriptor: the
/// soft limit (often 1024) goes up to the hard limit, which the operator sets.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!("open files limit raised to {:?}", limit.maximum),
            Err(err) => tracing::warn!(
                fault = "host",
                "cannot raise the open files limit ({:?}): {err}",
                limit.current
            ),
        }
    }
}

/// Gives the memory of long-idle reused instances back to their apps' budgets.
async fn trim_idle_instances(ingress: Arc<Ingress>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        for app in ingress.router().apps() {
            app.trim_idle();
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    crate::systemd::stopping();
    tracing::info!("shutting down: finishing in-flight requests");
}
