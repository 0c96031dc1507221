//! Outbound HTTP for guests (`wasi:http/outgoing-handler`): one request, its
//! whole answer. The host checks the destination against the manifest's
//! `[outbound_http] allowed_hosts`; a refusal comes back as an error here.

use std::io::{Read as _, Write as _};
use wasip2::http::{
    outgoing_handler,
    types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme},
};

/// Sends `method url` with these headers and body; answers (status, body).
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url}: the url needs a scheme"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields.append(name, value.as_bytes()).map_err(|e| format!("header {name}: {e:?}"))?;
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
        other => Scheme::Other(other.to_string()),
    };
    request.set_scheme(Some(&scheme)).map_err(|_| "scheme")?;
    request.set_authority(Some(authority)).map_err(|_| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|_| "path")?;
    let outgoing = request.body().map_err(|_| "request body taken twice")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{url}: {e:?}"))?;
    {
        let mut stream = outgoing.write().map_err(|_| "request stream taken twice")?;
        stream.write_all(body).map_err(|e| format!("{url}: writing the body: {e}"))?;
        stream.flush().map_err(|e| format!("{url}: writing the body: {e}"))?;
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| format!("{url}: {e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|_| "response taken twice")?
        .map_err(|e| format!("{url}: {e:?}"))?;
    let status = response.status();
    let incoming = response.consume().map_err(|_| "body taken twice")?;
    let mut bytes = Vec::new();
    incoming
        .stream()
        .map_err(|_| "stream taken twice")?
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{url}: reading the answer: {e}"))?;
    Ok((status, bytes))
}
