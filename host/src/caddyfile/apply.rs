//! Loading a generated Caddyfile into a running Caddy through its admin API
//! (`POST /load`, `Content-Type: text/caddyfile`). Caddy adapts and starts the
//! new config and only then stops the old one, so requests keep flowing; a
//! config it refuses leaves the previous one running, and the error comes back.
//!
//! [`Applier`] is the deploy hook (`[caddy] apply_on_deploy`): after a deploy,
//! rollback or remove it renders the Caddyfile for the apps now in force and
//! loads it when it differs from the one loaded last.

use super::Options;
use crate::config::Manifest;
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use std::time::Duration;

/// Loads `caddyfile` into the Caddy whose admin API is at `admin` (`http://127.0.0.1:2019`).
pub async fn load(admin: &str, caddyfile: &str) -> Result<()> {
    let base = admin.trim_end_matches('/');
    if !base.starts_with("http://") {
        bail!("caddy admin {admin}: must be an http:// URL like http://127.0.0.1:2019");
    }
    let req = http::Request::post(format!("{base}/load"))
        .header(http::header::CONTENT_TYPE, "text/caddyfile")
        .body(Full::new(Bytes::from(caddyfile.to_string())))
        .map_err(|e| anyhow!("caddy admin {admin}: {e}"))?;
    let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .map_err(|_| anyhow!("Caddy's admin API at {base} did not answer within 60s"))?
        .with_context(|| format!("cannot reach Caddy's admin API at {base} (is Caddy running with its admin endpoint there?)"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        bail!(
            "Caddy refused the new config ({status}), its previous config stays in force: {}",
            message.replace('\n', " ")
        );
    }
    Ok(())
}

/// Applies the routes of the apps in force to Caddy after each change.
pub struct Applier {
    admin: String,
    options: Options,
    last: tokio::sync::Mutex<Option<String>>,
}

impl Applier {
    pub fn new(admin: String, options: Options) -> Self {
        Self {
            admin,
            options,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Renders the Caddyfile for `manifests` and loads it if it changed. A
    /// failure is logged (and returned): the deploy itself has happened.
    pub async fn routes_changed(&self, manifests: &[Manifest]) -> Result<bool> {
        let text = super::render(manifests, &self.options);
        let mut last = self.last.lock().await;
        if last.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        match load(&self.admin, &text).await {
            Ok(()) => {
                tracing::info!("Caddy now has the routes of {} app(s)", manifests.len());
                *last = Some(text);
                Ok(true)
            }
            Err(err) => {
                tracing::warn!("{err:#}");
                Err(err)
            }
        }
    }
}
