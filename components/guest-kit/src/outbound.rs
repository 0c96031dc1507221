//! One outgoing HTTP request through `wasi:http/outgoing-handler`, whole body in
//! and out. The host decides whether the destination is allowed (the manifest's
//! `[outbound_http]`); a refusal comes back as an `Err` with the host's error code.

use std::io::{Read as _, Write as _};
use wasip2::http::{
    outgoing_handler,
    types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme},
};

/// A response: status and whole body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends `method url` with `headers` and `body`; answers the status and body.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url}: needs a scheme"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| format!("header {name}: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    request.set_method(&method).map_err(|_| "method")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("{url}: scheme {other} is not http or https")),
    };
    request.set_scheme(Some(&scheme)).map_err(|_| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|_| format!("{url}: bad authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|_| format!("{url}: bad path"))?;
    let outgoing = request.body().map_err(|_| "request body taken twice")?;
    if !body.is_empty() {
        let mut stream = outgoing.write().map_err(|_| "request stream taken twice")?;
        stream
            .write_all(body)
            .map_err(|e| format!("writing the request body: {e}"))?;
        stream
            .flush()
            .map_err(|e| format!("writing the request body: {e}"))?;
    }
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|_| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let incoming = response.consume().map_err(|_| "body taken twice")?;
    let mut bytes = Vec::new();
    incoming
        .stream()
        .map_err(|_| "stream taken twice")?
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the response body: {e}"))?;
    Ok(Response {
        status,
        body: bytes,
    })
}

/// [`send`], answering `(status, body)` for callers that destructure.
pub fn send_pair(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    send(method, url, headers, body).map(|r| (r.status, r.body))
}
