//! The HTTP side of a `websocket = true` route: the handshake (426 when the
//! request is not a WebSocket upgrade, 400 without a key), the answer to a
//! refused connection (503 at `max_connections` or capacity, 403 refused by
//! `on-open`, 500 trap, 504 deadline), the 101, and the request metric. What
//! happens to the connection after that is the capability's
//! (`capabilities/websocket.rs`).

use super::invoke::{self, AT_CAPACITY, Response, overloaded, plain};
use crate::{
    app::App,
    capabilities::websocket::{self, Handshake, Refused},
    metrics::TrapReason,
    trigger::Outcome,
};
use std::{sync::Arc, time::Instant};
use tokio_tungstenite::tungstenite;

/// Answers a request to a `websocket = true` route: 101 and a connection task,
/// or why not.
pub async fn upgrade(
    app: &Arc<App>,
    mut req: hyper::Request<hyper::body::Incoming>,
    started: Instant,
) -> Response {
    let response = match handshake_key(&req) {
        Err(response) => response,
        Ok(key) => match app.websocket_trigger.clone() {
            None => {
                tracing::warn!(app = %app.name, fault = "host", "a websocket route reached an app without a websocket-handler");
                plain(
                    500,
                    "internal error
",
                )
            }
            Some(trigger) => {
                let handshake = Handshake {
                    path: req.uri().path().to_string(),
                    query: req.uri().query().unwrap_or("").to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                        .collect(),
                };
                match websocket::open(
                    app.invoker(),
                    trigger,
                    app.capabilities.websocket.clone(),
                    handshake,
                )
                .await
                {
                    Ok(opened) => {
                        opened.serve(hyper::upgrade::on(&mut req));
                        switching(&key)
                    }
                    Err(refused) => refusal(refused),
                }
            }
        },
    };
    app.metrics
        .request(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

fn refusal(refused: Refused) -> Response {
    match refused {
        Refused::MaxConnections => {
            overloaded("the app is at its [websocket] max_connections, retry shortly\n")
        }
        Refused::Open(Outcome::Error(_)) => {
            plain(403, "the app refused this WebSocket connection\n")
        }
        // Memory refused while opening: most often the instance could not
        // start within the app's budget.
        Refused::Open(Outcome::Rejected(_) | Outcome::Trapped(TrapReason::MemoryLimit, _)) => {
            overloaded(AT_CAPACITY)
        }
        Refused::Open(Outcome::Trapped(TrapReason::Deadline, _)) => {
            plain(504, "request deadline passed\n")
        }
        Refused::Open(Outcome::Ok | Outcome::Trapped(TrapReason::Trap, _)) => {
            plain(500, "internal error\n")
        }
    }
}

/// The client's `Sec-WebSocket-Key` of a valid upgrade request, or the answer
/// to anything else.
#[allow(clippy::result_large_err)]
fn handshake_key<B>(req: &hyper::Request<B>) -> Result<String, Response> {
    let header = |name: http::HeaderName| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let has_token = |value: String, token: &str| {
        value
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let upgrade = req.method() == http::Method::GET
        && has_token(header(http::header::CONNECTION), "upgrade")
        && has_token(header(http::header::UPGRADE), "websocket");
    if !upgrade || header(http::header::SEC_WEBSOCKET_VERSION).trim() != "13" {
        let mut response = invoke::plain(
            426,
            "this route takes WebSocket connections only (GET with Upgrade: websocket, version 13)\n",
        );
        response.headers_mut().insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("websocket"),
        );
        response.headers_mut().insert(
            http::header::SEC_WEBSOCKET_VERSION,
            http::HeaderValue::from_static("13"),
        );
        return Err(response);
    }
    match req.headers().get(http::header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => {
            Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
        }
        _ => Err(invoke::plain(400, "Sec-WebSocket-Key is missing\n")),
    }
}

fn switching(accept: &str) -> Response {
    let mut response = invoke::plain(101, "");
    use http_body_util::BodyExt as _;
    *response.body_mut() = http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    let headers = response.headers_mut();
    headers.remove(http::header::CONTENT_TYPE);
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    // The accept key is base64, always a valid header value.
    if let Ok(accept) = http::HeaderValue::from_str(accept) {
        headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_websocket_upgrades_get_a_key() {
        let req = |headers: &[(&str, &str)]| {
            let mut builder = hyper::Request::get("/");
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            builder.body(()).unwrap()
        };
        let good = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            handshake_key(&req(&good)).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(handshake_key(&req(&good[..3])).unwrap_err().status(), 400);
        assert_eq!(handshake_key(&req(&[])).unwrap_err().status(), 426);
        assert_eq!(
            handshake_key(&req(&[
                good[0],
                good[1],
                ("sec-websocket-version", "8"),
                good[3]
            ]))
            .unwrap_err()
            .status(),
            426
        );
    }
}
