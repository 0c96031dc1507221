//! Outbound `wasi:http` for guests, default deny.
//!
//! A request leaves the host only when its scheme, host and port match an entry
//! of the app's `[outbound_http] allowed_hosts`. Every other request fails in the
//! guest with `HTTP-request-denied` (and a log line for the operator). Beyond the
//! name check, the host resolves the name itself and refuses loopback, private,
//! link-local and other non-public addresses unless the entry names an IP literal
//! or `localhost` (an operator pointing an app at a local service on purpose),
//! then connects to exactly the address it vetted (`https://*`, any host on
//! that scheme for customers' own sites, is never "local": its names must
//! all resolve to public addresses) — a name that re-resolves
//! elsewhere (DNS rebinding) cannot move the connection. Redirects are not
//! followed by the host: a guest that follows one makes a new request, checked
//! again. Per app: a timeout for connect plus response head, a concurrency limit,
//! and a cap on response body bytes.

use crate::{
    config::manifest::{AllowedOrigin, OutboundHttp as OutboundConfig},
    metrics::AppMetrics,
};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error, WasiBody, WasiHttpHooks};

/// What `[outbound_http]` grants: each allowed origin.
pub fn grants(manifest: &crate::config::Manifest) -> Vec<super::Grant> {
    let origin = |text: &str| super::Grant {
        key: format!("outbound {text}"),
        text: format!("outbound HTTP to {text}"),
        amount: None,
    };
    manifest
        .outbound_http
        .allowed
        .iter()
        .map(|h| origin(&h.text))
        .collect()
}

/// Per-app outbound state, built once when the app is loaded.
pub struct OutboundApp {
    app: Arc<str>,
    config: OutboundConfig,
    in_flight: Arc<Semaphore>,
    metrics: AppMetrics,
    tls: tokio_rustls::TlsConnector,
}

impl OutboundApp {
    pub fn new(app: Arc<str>, config: OutboundConfig, metrics: AppMetrics) -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            app,
            in_flight: Arc::new(Semaphore::new(config.max_concurrency.get() as usize)),
            config,
            metrics,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        }
    }

    pub fn load(ctx: &super::LoadContext<'_>) -> Self {
        Self::new(
            ctx.name.clone(),
            ctx.manifest.outbound_http.clone(),
            ctx.app_metrics.clone(),
        )
    }

    /// The allow-list entry covering this request, or why there is none.
    fn allowed(&self, uri: &http::Uri) -> Result<&AllowedOrigin, String> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        let host = uri
            .host()
            .ok_or("no host")?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        self.config
            .allowed
            .iter()
            .find(|origin| origin.covers(https, &normalize_ip(&host), port))
            .ok_or_else(|| {
                format!(
                    "{}://{host}:{port} is not in [outbound_http] allowed_hosts",
                    if https { "https" } else { "http" }
                )
            })
    }

    async fn send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let origin = match self.allowed(request.uri()) {
            Ok(origin) => origin.clone(),
            Err(why) => return Err(self.deny(&why)),
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.outbound(&origin.text, "error");
            return Err(Error::ConnectionLimitReached);
        };
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = request.uri().port_u16().unwrap_or(origin.port);
        let timeout = self.config.timeout;
        let result = tokio::time::timeout(timeout, async {
            let address = self.vet_address(&origin, &host, port).await?;
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .map_err(Error::Connect)?;
            let _ = stream.set_nodelay(true);
            *request.uri_mut() = http::Uri::builder()
                .path_and_query(
                    request
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/"),
                )
                .build()
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let response = if origin.https {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| Error::HttpRequestUriInvalid)?;
                let tls = self.tls.connect(name, stream).await.map_err(Error::Tls)?;
                exchange(tls, request).await?
            } else {
                exchange(stream, request).await?
            };
            Ok::<_, Error>(response)
        })
        .await
        .unwrap_or(Err(Error::ConnectionTimeout));
        match result {
            Ok(response) => {
                self.metrics.outbound(&origin.text, "ok");
                let limit = self.config.max_response.bytes();
                Ok(response.map(|body| {
                    CappedBody {
                        inner: body,
                        remaining: limit,
                        _permit: permit,
                    }
                    .boxed_unsync()
                }))
            }
            Err(err) => {
                self.metrics.outbound(&origin.text, "error");
                Err(err)
            }
        }
    }

    /// Resolves `host` and returns the address to connect to, refusing
    /// non-public addresses unless the allow-list entry is itself local.
    async fn vet_address(
        &self,
        origin: &AllowedOrigin,
        host: &str,
        port: u16,
    ) -> Result<SocketAddr, Error> {
        let explicitly_local = match &origin.host {
            crate::config::manifest::HostPattern::Exact(name) => {
                name == "localhost" || name.parse::<IpAddr>().is_ok()
            }
            crate::config::manifest::HostPattern::Wildcard(_) => false,
        };
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Error::DnsError {
                rcode: Some("lookup failed".into()),
                info_code: None,
            })?
            .collect();
        let first = *addresses.first().ok_or(Error::DestinationNotFound)?;
        if !explicitly_local && let Some(bad) = addresses.iter().find(|a| !is_public(a.ip())) {
            return Err(self.deny(&format!(
                "{host} resolves to the non-public address {}",
                bad.ip()
            )));
        }
        Ok(first)
    }

    fn deny(&self, why: &str) -> Error {
        tracing::warn!(app = %self.app, fault = "guest", "outbound HTTP refused: {why}");
        self.metrics.outbound("denied", "denied");
        Error::HttpRequestDenied
    }
}

/// One HTTP/1.1 request over an established connection.
async fn exchange<S>(
    stream: S,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender.send_request(request).await?;
    Ok(response.map(|body| body.map_err(Error::from).boxed_unsync()))
}

/// `::ffff:1.2.3.4` and `1.2.3.4` are the same destination.
fn normalize_ip(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| v6.to_string()),
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_string(),
    }
}

/// Whether an address is on the public internet (not loopback, private,
/// link-local — cloud metadata lives there —, CGNAT, unspecified, multicast…).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// A response body that fails once it passes the app's `max_response`, and
/// holds the app's outbound permit until it is done.
struct CappedBody {
    inner: WasiBody,
    remaining: u64,
    _permit: OwnedSemaphorePermit,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let len = data.len() as u64;
            if len > self.remaining {
                self.remaining = 0;
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(None))));
            }
            self.remaining -= len;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The per-instance `wasi:http` hooks.
pub struct OutboundHttp {
    app: Arc<OutboundApp>,
}

impl OutboundHttp {
    pub fn new(app: Arc<OutboundApp>) -> Self {
        Self { app }
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
)>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let app = self.app.clone();
        Box::new(async move {
            let response = app.send(request).await?;
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn mapped_addresses_match_their_ipv4_entry() {
        assert_eq!(normalize_ip("::ffff:127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize_ip("api.example.com"), "api.example.com");
    }
}
