//! The operator commands that talk to a running host's admin API: `deploy`,
//! `rollback`, `remove`, `apps`, `status`, `top`, `jobs` and `logs` (names fixed by CONTRACT.md).
//! Results go to stdout; a failure is one line on stderr (printed by `main`).

use crate::{
    admin::client::{ApiFailure, Body, Client},
    config::{ByteSize, HostConfig, Manifest},
};
use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, StreamBody};
use serde_json::{Value, json};
use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where the admin API is and how to authenticate.
pub struct Target {
    pub admin: String,
    pub token: Option<String>,
}

impl Target {
    /// `--token`, then `$ALORIG_ADMIN_TOKEN` (both via clap), then the token
    /// file in the default data dir.
    pub(crate) fn client(&self) -> Result<Client> {
        let token = match &self.token {
            Some(token) => Some(token.clone()),
            None => {
                let data_dir = HostConfig::load(None)
                    .map(|c| c.data_dir)
                    .unwrap_or_else(|_| PathBuf::from(".alorig"));
                crate::admin::token::read(&crate::admin::token::token_path(&data_dir))?
            }
        };
        Client::new(&self.admin, token)
    }
}

const CHUNK: usize = 256 * 1024;

pub async fn deploy(
    target: &Target,
    manifest_path: &Path,
    component: Option<PathBuf>,
    yes: bool,
) -> Result<()> {
    let started = Instant::now();
    let text = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("cannot read manifest {}", manifest_path.display()))?;
    let manifest = Manifest::parse(manifest_path, &text)?;
    let component_path = component.unwrap_or_else(|| manifest.component.clone());
    let wasm = std::fs::read(&component_path).with_context(|| {
        format!(
            "{}: component: cannot read {}",
            manifest_path.display(),
            component_path.display()
        )
    })?;
    let client = target.client()?;

    let total = (text.len() + wasm.len()) as u64;
    let progress = Progress::start(total);
    let mut chunks: Vec<Bytes> = vec![Bytes::from(text.clone())];
    let wasm = Bytes::from(wasm);
    chunks.extend(
        (0..wasm.len())
            .step_by(CHUNK)
            .map(|at| wasm.slice(at..(at + CHUNK).min(wasm.len()))),
    );
    let sent = progress.clone();
    let stream = futures::stream::iter(chunks).map(move |chunk| {
        sent.advance(chunk.len() as u64);
        Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk))
    });
    let body: Body = StreamBody::new(stream).boxed_unsync();
    let headers = [
        ("alorig-manifest-length", text.len().to_string()),
        ("alorig-manifest-name", manifest_path.display().to_string()),
        (
            "alorig-component-name",
            component_path.display().to_string(),
        ),
        ("content-length", total.to_string()),
    ];
    let query = if yes { "?approve_grants=true" } else { "" };
    let path = format!("/v1/apps/{}{query}", manifest.name);
    let result = client.send(http::Method::PUT, &path, &headers, body).await;
    progress.finish();
    let reply = match result {
        Ok(reply) => reply,
        Err(err) => {
            if let Some(failure) = err.downcast_ref::<ApiFailure>()
                && failure.code == "grants_widened"
            {
                println!(
                    "this version of {} may reach more than the live one:",
                    manifest.name
                );
                for grant in &failure.grants {
                    println!("  + {grant}");
                }
                return Err(anyhow!(
                    "deploy refused: it widens {}'s grants; check them above and deploy again with --yes to approve",
                    manifest.name
                ));
            }
            return Err(err);
        }
    };

    for warning in strings(&reply["warnings"]) {
        eprintln!("warning: {warning}");
    }
    let version = reply["version"].as_u64().unwrap_or(0);
    let compile = if reply["compiled_from_cache"].as_bool() == Some(true) {
        "compiled earlier: from the compile cache".to_string()
    } else {
        format!(
            "validated and compiled in {:.1}s",
            reply["compile_seconds"].as_f64().unwrap_or(0.0)
        )
    };
    println!(
        "deployed {} version {version}{} in {:.1}s ({compile})",
        manifest.name,
        match reply["previous_version"].as_u64() {
            Some(p) => format!(" (was {p})"),
            None => String::new(),
        },
        started.elapsed().as_secs_f64()
    );
    println!("  routes:     {}", join(&reply["routes"], "(none)"));
    println!(
        "  memory cap: {}",
        reply["memory_limit"].as_str().unwrap_or("?")
    );
    let added = strings(&reply["grants_added"]);
    if !added.is_empty() {
        println!("  approved wider grants: {}", added.join("; "));
    } else if reply["previous_version"].is_null() {
        println!(
            "  may reach:  {}",
            summarize_grants(&strings(&reply["grants"]))
        );
    }
    Ok(())
}

pub async fn rollback(target: &Target, app: &str, to: Option<u32>) -> Result<()> {
    let client = target.client()?;
    let body = match to {
        Some(v) => json!({ "to": v }),
        None => json!({}),
    };
    let reply = client
        .send(
            http::Method::POST,
            &format!("/v1/apps/{app}/rollback"),
            &[],
            Client::json_body(&body),
        )
        .await?;
    println!(
        "{app}: version {} in force (was {}), in {:.0} ms",
        reply["version"],
        reply["previous_version"],
        reply["seconds"].as_f64().unwrap_or(0.0) * 1000.0
    );
    Ok(())
}

/// `remove <app> [--purge]`: its `[files]` directory is kept unless `purge`.
pub async fn remove(target: &Target, app: &str, purge: bool) -> Result<()> {
    let client = target.client()?;
    let query = if purge { "?purge=true" } else { "" };
    let reply = client
        .send(
            http::Method::DELETE,
            &format!("/v1/apps/{app}{query}"),
            &[],
            Client::empty(),
        )
        .await?;
    if reply["files_purged"].as_bool() == Some(true) {
        println!("{app}: removed, its files deleted");
    } else {
        println!("{app}: removed");
    }
    Ok(())
}

pub async fn apps(target: &Target, as_json: bool) -> Result<()> {
    let apps = target
        .client()?
        .send(http::Method::GET, "/v1/apps", &[], Client::empty())
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list(&apps)
        .iter()
        .map(|a| {
            vec![
                a["name"].as_str().unwrap_or("").to_string(),
                version(a),
                join(&a["versions"], "-"),
                size(&a["memory_limit_bytes"]),
                join(&a["routes"], "(none)"),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["APP", "VERSION", "KEPT", "MEMORY CAP", "ROUTES"], &rows)
    );
    Ok(())
}

/// The app's pending, running and dead jobs (dead ones with their last error).
pub async fn jobs(target: &Target, app: &str, as_json: bool) -> Result<()> {
    let path = format!("/v1/apps/{app}/jobs");
    let reply = target
        .client()?
        .send(http::Method::GET, &path, &[], Client::empty())
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let counts = &reply["counts"];
    println!(
        "{app}: {} pending, {} running, {} dead",
        counts["pending"].as_i64().unwrap_or(0),
        counts["running"].as_i64().unwrap_or(0),
        counts["dead"].as_i64().unwrap_or(0)
    );
    let rows: Vec<Vec<String>> = list(&reply["jobs"])
        .iter()
        .map(|j| {
            let text = |key: &str| j[key].as_str().unwrap_or("-").to_string();
            vec![
                j["id"].to_string(),
                text("name"),
                text("state"),
                j["attempts"].to_string(),
                text("run_at"),
                text("last_error"),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print!(
            "{}",
            table(
                &[
                    "ID",
                    "NAME",
                    "STATE",
                    "ATTEMPTS",
                    "RUN AT (UTC)",
                    "LAST ERROR"
                ],
                &rows
            )
        );
    }
    Ok(())
}

/// `logs <app> [--follow] [--since 10m]`: one line each, oldest first.
pub async fn logs(target: &Target, app: &str, follow: bool, since: Option<&str>) -> Result<()> {
    let since_secs =
        match since {
            Some(text) => Some(crate::logs::parse_since(text).ok_or_else(|| {
                anyhow!("--since {text}: give a duration like 90s, 10m, 2h or 1d")
            })?),
            None => None,
        };
    let client = target.client()?;
    let since_ms = since_secs.map(|s| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_millis() as u64).saturating_sub(s * 1000)
    });
    let mut after = 0u64;
    loop {
        let path = format!(
            "/v1/apps/{app}/logs?after={after}&since_ms={}",
            since_ms.unwrap_or(0)
        );
        let reply = client
            .send(http::Method::GET, &path, &[], Client::empty())
            .await?;
        let mut out = std::io::stdout().lock();
        for line in list(&reply["lines"]) {
            let when =
                chrono::DateTime::from_timestamp_millis(line["unix_ms"].as_i64().unwrap_or(0))
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .unwrap_or_default();
            let text = line["text"].as_str().unwrap_or("").replace('\n', " ");
            let stream = line["stream"].as_str().unwrap_or("");
            let level = line["level"].as_str().unwrap_or("");
            if stream == "host" {
                let _ = writeln!(out, "{when} host {level} {text}");
            } else {
                let _ = writeln!(out, "{when} {stream} {text}");
            }
        }
        let _ = out.flush();
        drop(out);
        after = reply["next"].as_u64().unwrap_or(after);
        if !follow {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub async fn status(target: &Target, as_json: bool) -> Result<()> {
    let client = target.client()?;
    let apps = client
        .send(http::Method::GET, "/v1/apps", &[], Client::empty())
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
    } else {
        print!("{}", status_table(&apps));
    }
    Ok(())
}

/// `status`, refreshed every second in place until Ctrl-C.
pub async fn top(target: &Target) -> Result<()> {
    let client = target.client()?;
    let tty = std::io::stdout().is_terminal();
    loop {
        let apps = client
            .send(http::Method::GET, "/v1/apps", &[], Client::empty())
            .await?;
        let mut out = std::io::stdout().lock();
        if tty {
            write!(out, "\x1b[H\x1b[2J")?;
        }
        write!(
            out,
            "alorig-host {}   (Ctrl-C to quit)\n\n{}",
            target.admin,
            status_table(&apps)
        )?;
        out.flush()?;
        drop(out);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The `docker stats`-like table.
pub fn status_table(apps: &Value) -> String {
    let rows: Vec<Vec<String>> = list(apps)
        .iter()
        .map(|a| {
            let used = a["memory_bytes"].as_f64().unwrap_or(0.0);
            let limit = a["memory_limit_bytes"].as_f64().unwrap_or(0.0);
            let percent = if limit > 0.0 {
                100.0 * used / limit
            } else {
                0.0
            };
            vec![
                a["name"].as_str().unwrap_or("").to_string(),
                version(a),
                format!("{:.1}%", a["cpu_percent"].as_f64().unwrap_or(0.0)),
                format!(
                    "{} / {}",
                    size(&a["memory_bytes"]),
                    size(&a["memory_limit_bytes"])
                ),
                format!("{percent:.1}%"),
                size(&a["memory_peak_bytes"]),
                size(&a["host_memory_bytes"]),
                match a["files_limit_bytes"].as_u64() {
                    Some(_) => format!(
                        "{} / {}",
                        size(&a["files_bytes"]),
                        size(&a["files_limit_bytes"])
                    ),
                    None => "-".into(),
                },
                a["instances"].to_string(),
                format!("{:.1}", a["requests_per_second"].as_f64().unwrap_or(0.0)),
                format!("{:.1}%", 100.0 * a["error_rate"].as_f64().unwrap_or(0.0)),
                match a["p99_seconds"].as_f64() {
                    Some(p) => format!("{:.1}ms", p * 1000.0),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    table(
        &[
            "APP",
            "VERSION",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "PEAK",
            "HOST-HELD",
            "FILES / QUOTA",
            "INSTANCES",
            "REQ/S",
            "ERRORS",
            "P99",
        ],
        &rows,
    )
}

/// Imports grouped by WIT package (`wasi:http, wasi:io`), then the other grants.
fn summarize_grants(grants: &[String]) -> String {
    let mut packages: Vec<&str> = grants
        .iter()
        .filter_map(|g| g.strip_prefix("import "))
        .map(|i| i.split(['/', '@']).next().unwrap_or(i))
        .collect();
    packages.sort_unstable();
    packages.dedup();
    let mut parts = Vec::new();
    if !packages.is_empty() {
        parts.push(format!("WIT imports from {}", packages.join(", ")));
    }
    parts.extend(grants.iter().filter(|g| !g.starts_with("import ")).cloned());
    parts.join("; ")
}

fn list(apps: &Value) -> Vec<Value> {
    apps.as_array().cloned().unwrap_or_default()
}

fn version(app: &Value) -> String {
    match app["version"].as_u64() {
        Some(0) | None => "up".into(),
        Some(v) => v.to_string(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn join(value: &Value, empty: &str) -> String {
    let items = strings(value);
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(", ")
    }
}

pub(crate) fn size(value: &Value) -> String {
    let bytes = value.as_u64().unwrap_or(0);
    if bytes == 0 {
        return "0B".into();
    }
    if bytes.is_multiple_of(1 << 20) || bytes >= 10 << 20 {
        format!("{:.1}MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        ByteSize(bytes).to_string()
    }
}

pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text: String = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("   ");
        text = text.trim_end().to_string();
        text.push('\n');
        text
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Upload then compile progress on stderr (indicatif draws nothing when stderr
/// is not a terminal): a byte bar while uploading, then a spinner while the host
/// validates and compiles.
#[derive(Clone)]
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn start(total: u64) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("uploading [{bar:30}] {bytes} / {total_bytes}")
                .expect("a valid template")
                .progress_chars("#> "),
        );
        Progress { bar }
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.bar.position() >= self.bar.length().unwrap_or(0) {
            self.bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} validating and compiling… {elapsed}",
                )
                .expect("a valid template"),
            );
            self.bar
                .enable_steady_tick(std::time::Duration::from_millis(100));
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
