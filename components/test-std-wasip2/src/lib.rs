//! What a Rust developer writes from the `wasip2` crate's docs alone: the
//! standard `wasi:http/proxy` world, which imports `wasi:http/outgoing-handler`.
//! `/` answers 200; `/fetch?url=U` sends `GET U` and answers `status=N` or
//! `error=<ErrorCode>` as the host returned it.

use wasip2::http::{
    outgoing_handler,
    types::{
        Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
        Scheme,
    },
};

struct Std;

fn fetch(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let pending = match outgoing_handler::handle(request, None) {
        Ok(pending) => pending,
        Err(code) => return format!("error={code:?}"),
    };
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => format!("status={}", response.status()),
        Some(Ok(Err(code))) => format!("error={code:?}"),
        _ => "error=no response".to_string(),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Std {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let text = if path == "/fetch" {
            let url = query.strip_prefix("url=").unwrap_or("http://127.0.0.1:9/");
            fetch(url)
        } else {
            "hello from a plain wasip2 component\n".to_string()
        };
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("a new body has a stream");
        let _ = stream.blocking_write_and_flush(text.as_bytes());
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(Std with_types_in wasip2);
