//! The CLI's side of the admin API (`deploy`, `rollback`, `remove`, `apps`,
//! `status`, `top`): plain HTTP/1.1 to `--admin`, bearer token, and the API's
//! JSON errors turned into one line.

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};
use hyper_util::client::legacy::{Client as HyperClient, connect::HttpConnector};
use serde_json::Value;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpConnector, Body>,
}

impl Client {
    pub fn new(admin: &str, token: Option<String>) -> Result<Self> {
        let base = admin.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            bail!(
                "--admin {admin}: must be an http:// URL (the admin listener is plain HTTP, loopback by default)"
            );
        }
        base.parse::<http::Uri>()
            .map_err(|e| anyhow!("--admin {admin}: not a URL: {e}"))?;
        let http = HyperClient::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Ok(Self { base, token, http })
    }

    pub fn empty() -> Body {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    pub fn json_body(value: &Value) -> Body {
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    /// Sends one request; a 4xx/5xx becomes an error with the API's message.
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Value> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(body).context("building the request")?;
        let resp = self.http.request(req).await.map_err(|e| {
            anyhow!(
                "cannot reach the admin API at {}: {} (is `alorig-host serve` running there? set --admin or ALORIG_ADMIN)",
                self.base,
                source_chain(&e)
            )
        })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the admin API's answer")?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        match value.pointer("/error/message").and_then(Value::as_str) {
            Some(message) => Err(ApiFailure {
                code: value
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                message: message.to_string(),
                grants: value
                    .pointer("/error/grants")
                    .and_then(Value::as_array)
                    .map(|g| {
                        g.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
            .into()),
            None => bail!("the admin API at {} answered {status}", self.base),
        }
    }
}

/// An error the admin API answered.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiFailure {
    pub code: String,
    pub message: String,
    pub grants: Vec<String>,
}

fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
