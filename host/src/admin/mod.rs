//! The admin listener (loopback by default). `/healthz`, `/metrics`, the
//! dashboard page `/` and its figures `/dashboard.json` need no token: they show
//! what `/metrics` already shows (names, memory, rates, versions), and in a
//! cluster every host's heartbeat row (name, address, apps, versions, memory),
//! nothing secret.
//! Everything under `/v1` needs `Authorization: Bearer <token>`, compared in
//! constant time — except `GET /v1/tls/allowed?domain=`, Caddy's on-demand TLS
//! question (200/404), which Caddy asks without credentials. Errors are `{"error": {"code": …, "message": …}}`.
//!
//! The deploy upload (`PUT /v1/apps/{app}`) is one body: the manifest's bytes,
//! then the component's, with `Alorig-Manifest-Length` saying where the manifest
//! ends. `Alorig-Manifest-Name` and `Alorig-Component-Name` (optional) name the
//! files in errors; `?approve_grants=true` approves wider grants. The body is
//! written to disk as it arrives ([`crate::deploy::upload`]) and refused with 413 past `max_upload`.

pub mod client;
pub mod history;
pub mod request;
pub mod token;

use crate::{
    capabilities::timers::{JobsError, JobsReport, TimersHost},
    deploy::{ApiError, Apps, Upload},
    ingress::invoke::{Response, host_response, plain},
    metrics::Metrics,
};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use request::{Api, Route};
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;

pub struct Admin {
    /// Apps loaded and caught up with the cluster's versions: `/healthz`
    /// answers 200, else 503 saying which.
    pub ready: crate::cluster::Readiness,
    pub metrics: Arc<Metrics>,
    pub apps: Arc<Apps>,
    pub token: String,
    pub max_upload: u64,
    /// Where uploads are written while they arrive.
    pub spool: crate::deploy::upload::Spool,
    /// The job store behind `GET /v1/apps/{app}/jobs`.
    pub timers: Arc<TimersHost>,
    /// Loads the new routes into Caddy after a deploy, rollback or remove (`[caddy] apply_on_deploy`).
    pub caddy: Option<Arc<crate::caddyfile::apply::Applier>>,
    /// The last hour of each app's figures, for the dashboard's charts.
    pub history: Arc<history::History>,
}

const DASHBOARD: &str = include_str!("dashboard.html");

/// A refused upload's body is read (and dropped) up to this much past the
/// limit, so the client sees the 413 instead of a reset connection.
const DRAIN_PAST_LIMIT: u64 = 64 << 20;

/// An admin answer: never cached (versions and figures change under it).
fn respond(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = host_response(status, content_type, body.into());
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn json_response(status: u16, value: &Value) -> Response {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    respond(status, "application/json", text)
}

fn error(err: &ApiError) -> Response {
    json_response(err.status, &err.to_json())
}

impl Admin {
    async fn handle(&self, req: hyper::Request<Incoming>) -> Response {
        let path = req.uri().path().to_string();
        let api = match request::route(req.method(), &path) {
            Route::Healthz => {
                return match self.ready.waiting_for() {
                    None => plain(200, "ok\n"),
                    Some(doing) => respond(503, "text/plain; charset=utf-8", format!("{doing}\n")),
                };
            }
            Route::Metrics => {
                return respond(
                    200,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.metrics.encode(),
                );
            }
            Route::Dashboard => {
                return respond(200, "text/html; charset=utf-8", self.dashboard_page().await);
            }
            Route::DashboardFigures => {
                return json_response(200, &self.dashboard_figures().await);
            }
            // Caddy's on-demand TLS `ask`: it cannot send a token, and the answer
            // only says whether a name is served (loopback listener).
            Route::TlsAllowed => {
                let domain = req
                    .uri()
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("domain="))
                    .unwrap_or("");
                let ingress = self.apps.ingress();
                return if ingress
                    .custom_domains
                    .allowed(&ingress.router(), domain)
                    .await
                {
                    plain(200, "allowed\n")
                } else {
                    plain(404, "no app serves this domain\n")
                };
            }
            Route::NotFound => return plain(404, "not found\n"),
            Route::Api(api) => api,
        };
        if !request::authorized(req.headers(), &self.token) {
            return error(&ApiError::new(
                401,
                "unauthorized",
                "missing or wrong admin token (Authorization: Bearer …; see <data_dir>/admin.token)",
            ));
        }
        let rest = &path["/v1/".len()..];
        let method = req.method().clone();
        let result = match api {
            Api::ListApps => Ok((200, self.apps.list())),
            Api::Cluster => self.cluster().await.map(|v| (200, v)),
            Api::App(app) => self.apps.get(app).map(|v| (200, v)),
            Api::Deploy(app) => {
                let app = app.to_string();
                match self.read_upload(app.clone(), req).await {
                    Ok(upload) => {
                        let deployed = self.apps.deploy(upload).await.map(|v| (201, v));
                        // The charts start at the deploy, not at the next 10 s sample.
                        if deployed.is_ok() {
                            self.history.sample(&self.apps, &self.metrics);
                        }
                        deployed
                    }
                    Err(err) => {
                        self.metrics.deployed(&app, err.code);
                        Err(err)
                    }
                }
            }
            Api::Rollback(app) => match read_small_body(req).await {
                Ok(body) => match request::rollback_body(&body) {
                    Ok(to) => self.apps.rollback(app, to).await.map(|v| (200, v)),
                    Err(err) => Err(err),
                },
                Err(err) => Err(err),
            },
            Api::Jobs(app) => match self.apps.get(app) {
                Ok(_) => jobs_json(app, self.timers.jobs(app).await).map(|v| (200, v)),
                Err(err) => Err(err),
            },
            Api::Logs(app) => {
                let logs = crate::logs::global();
                if self.apps.get(app).is_err() && !logs.knows(app) {
                    Err(ApiError::new(
                        404,
                        "not_found",
                        format!("no app {app} and no log lines for it"),
                    ))
                } else {
                    let number = |key: &str| {
                        req.uri().query().unwrap_or("").split('&').find_map(|kv| {
                            kv.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok()
                        })
                    };
                    Ok((
                        200,
                        logs.read(
                            app,
                            number("since_ms").unwrap_or(0),
                            number("after").unwrap_or(0),
                        ),
                    ))
                }
            }
            Api::Remove(app) => {
                // `?purge=true`: its [files] directory goes too.
                let purge = req
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv == "purge=true" || kv == "purge=1"));
                self.apps.remove(app, purge).await.map(|v| (200, v))
            }
            Api::MethodNotAllowed => Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on /v1/{rest}"),
            )),
            Api::NotFound => Err(ApiError::new(
                404,
                "not_found",
                format!("no admin API route /v1/{rest}"),
            )),
        };
        match result {
            Ok((status, mut value)) => {
                if api.changes_routes()
                    && let Err(err) = self.apply_routes().await
                {
                    let warning = Value::String(format!("{err:#}"));
                    match value.get_mut("warnings").and_then(Value::as_array_mut) {
                        Some(warnings) => warnings.push(warning),
                        None => value["warnings"] = Value::Array(vec![warning]),
                    }
                }
                json_response(status, &value)
            }
            Err(err) => error(&err),
        }
    }

    /// Every host sharing this one's PostgreSQL, from their heartbeat rows.
    async fn cluster(&self) -> Result<Value, ApiError> {
        let Some(shared) = self.apps.shared() else {
            return Err(ApiError::new(
                409,
                "no_cluster",
                "this host keeps its versions in its data dir (no postgres_url): it is not part of a cluster",
            ));
        };
        crate::cluster::nodes::list(shared).await.map_err(|e| {
            ApiError::new(
                503,
                "dependency_unavailable",
                format!("PostgreSQL (postgres_url): cannot read the hosts' rows: {e:#}"),
            )
        })
    }

    /// Loads the routes of the apps now in force into Caddy, when configured to.
    pub async fn apply_routes(&self) -> anyhow::Result<()> {
        let Some(caddy) = &self.caddy else {
            return Ok(());
        };
        let manifests: Vec<crate::config::Manifest> = self
            .apps
            .snapshot()
            .values()
            .map(|d| d.app.manifest.clone())
            .collect();
        caddy.routes_changed(&manifests).await.map(|_| ())
    }

    async fn read_upload(
        &self,
        app: String,
        req: hyper::Request<Incoming>,
    ) -> Result<Upload, ApiError> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let manifest_len: usize = header("alorig-manifest-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ApiError::new(400, "bad_request", "the upload needs an Alorig-Manifest-Length header: the manifest's bytes come first in the body, then the component's"))?;
        let manifest_name = header("alorig-manifest-name").unwrap_or_else(|| format!("{app}.toml"));
        let component_name =
            header("alorig-component-name").unwrap_or_else(|| format!("{app}.wasm"));
        let approve_grants = req.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|kv| kv == "approve_grants=true" || kv == "approve_grants=1")
        });
        let limit = self.max_upload;
        let too_large = || {
            ApiError::new(
                413,
                "too_large",
                format!(
                    "the upload is larger than the host's max_upload of {}",
                    crate::config::ByteSize(limit)
                ),
            )
        };
        let declared = header("content-length").and_then(|v| v.parse::<u64>().ok());
        let mut body = req.into_body();
        if declared.is_some_and(|len| len > limit) {
            drain(&mut body, limit + DRAIN_PAST_LIMIT).await;
            return Err(too_large());
        }
        let (bytes, component) = match self
            .spool
            .receive(&mut body, manifest_len, limit, too_large)
            .await
        {
            Ok(received) => received,
            Err(err) => {
                if err.status == 413 {
                    drain(&mut body, DRAIN_PAST_LIMIT).await;
                }
                return Err(err);
            }
        };
        let manifest_text = String::from_utf8(bytes).map_err(|_| {
            ApiError::new(
                400,
                "bad_manifest",
                format!("{manifest_name}: is not UTF-8 text"),
            )
        })?;
        Ok(Upload {
            app,
            manifest_name,
            manifest_text,
            component_name,
            component,
            approve_grants,
        })
    }

    async fn dashboard_figures(&self) -> Value {
        let apps: Vec<Value> = self
            .apps
            .list()
            .as_array()
            .map(|apps| {
                apps.iter()
                    .map(|a| {
                        let mut a = a.clone();
                        if let Some(o) = a.as_object_mut() {
                            o.remove("grants");
                            o.remove("digest");
                        }
                        a
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut series = self.history.series(&self.apps, &self.metrics);
        let apps: Vec<Value> = apps
            .into_iter()
            .map(|mut a| {
                let name = a["name"].as_str().unwrap_or("").to_string();
                if let Some(history) = series.remove(&name) {
                    a["ws_connections"] = history["ws_connections"]
                        .as_array()
                        .and_then(|w| w.last().cloned())
                        .unwrap_or(json!(0));
                    a["history"] = history;
                }
                a
            })
            .collect();
        json!({
            "memory_budget_bytes": self.apps.memory_budget(),
            "resident_memory_bytes": crate::metrics::resident_memory_bytes(),
            "apps": apps,
            "cluster": self.dashboard_cluster().await,
        })
    }

    /// Every host's row (`GET /v1/cluster`'s, what `status --cluster` shows),
    /// `null` for a host on its own, or `{"error": …}` when PostgreSQL does
    /// not answer — the page still shows this host's own figures then.
    async fn dashboard_cluster(&self) -> Value {
        const WAIT: Duration = Duration::from_secs(2);
        let Some(shared) = self.apps.shared() else {
            return Value::Null;
        };
        match tokio::time::timeout(WAIT, crate::cluster::nodes::list(shared)).await {
            Ok(Ok(list)) => list,
            Ok(Err(err)) => {
                json!({ "error": format!("cannot read the hosts' rows from PostgreSQL: {err:#}") })
            }
            Err(_) => json!({ "error": format!("PostgreSQL did not answer within {WAIT:?}") }),
        }
    }

    /// The page, with the first figures embedded so it shows them before its
    /// first refresh (and without JavaScript fetches at all, in a DOM dump).
    async fn dashboard_page(&self) -> String {
        let figures =
            serde_json::to_string(&self.dashboard_figures().await).unwrap_or_else(|_| "{}".into());
        // `</` cannot appear inside the script element.
        DASHBOARD.replace("/*FIGURES*/null", &figures.replace("</", "<\\/"))
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

async fn drain(body: &mut Incoming, mut budget: u64) {
    while let Some(Ok(frame)) = body.frame().await {
        let len = frame.data_ref().map(|d| d.len() as u64).unwrap_or(0);
        if len > budget {
            return;
        }
        budget -= len;
    }
}

/// Renders the jobs report (or why there is none) for the admin API.
fn jobs_json(app: &str, report: Result<JobsReport, JobsError>) -> Result<Value, ApiError> {
    match report {
        Ok(JobsReport { counts, jobs }) => Ok(json!({"app": app, "counts": counts, "jobs": jobs})),
        Err(err @ JobsError::NoStore) => Err(ApiError::new(409, "no_job_store", err.to_string())),
        Err(err @ JobsError::Unavailable(_)) => {
            Err(ApiError::new(503, "job_store_unavailable", err.to_string()))
        }
    }
}

/// A small request body, read whole (the rollback body).
async fn read_small_body(req: hyper::Request<Incoming>) -> Result<Bytes, ApiError> {
    Ok(http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                400,
                "bad_request",
                "the request body is larger than 64KiB or was cut off",
            )
        })?
        .to_bytes())
}
