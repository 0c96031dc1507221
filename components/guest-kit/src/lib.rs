//! Helpers for guest components written against plain `wasi:http` (no SDK), so the
//! reference and test guests stay a few lines each and are exactly what any
//! `wasi:http/proxy` component looks like to the host.

pub use wasip2;

pub mod files;
pub mod outbound;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "timers")]
pub mod timers;

use std::io::{Read as _, Write as _};
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Sends a complete response with the given status, content type and body.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    respond_with(out, status, &[("content-type", content_type)], body)
}

/// Sends a complete response with the given status, headers and body.
pub fn respond_with(out: ResponseOutparam, status: u16, header_list: &[(&str, &str)], body: &[u8]) {
    let headers = Fields::new();
    for (name, value) in header_list {
        let _ = headers.append(name, value.as_bytes());
    }
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let outgoing = resp.body().expect("response body is taken once");
    ResponseOutparam::set(out, Ok(resp));
    let mut stream = outgoing.write().expect("body stream is taken once");
    // `write_all` on the wasi stream splits large bodies into permitted chunks.
    stream.write_all(body).expect("write response body");
    stream.flush().expect("flush response body");
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("finish response body");
}

/// Reads the whole request body into memory.
pub fn read_body(req: &IncomingRequest) -> Vec<u8> {
    let body = req.consume().expect("request body is consumed once");
    let mut bytes = Vec::new();
    {
        let mut stream = body.stream().expect("body stream is taken once");
        stream.read_to_end(&mut bytes).expect("read request body");
    }
    IncomingBody::finish(body);
    bytes
}

/// The value of `name` in the request's query string, if present.
pub fn query_param(req: &IncomingRequest, name: &str) -> Option<String> {
    let path = req.path_with_query()?;
    let query = path.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// The request's path without its query string.
pub fn path(req: &IncomingRequest) -> String {
    let full = req.path_with_query().unwrap_or_else(|| "/".to_string());
    match full.split_once('?') {
        Some((path, _)) => path.to_string(),
        None => full,
    }
}

/// Wall-clock now, in milliseconds since 1970-01-01 00:00:00 UTC.
pub fn now_ms() -> i64 {
    let now = wasip2::clocks::wall_clock::now();
    now.seconds as i64 * 1000 + i64::from(now.nanoseconds / 1_000_000)
}

/// The request's host, lowercase and without a port: `wasi:http` gives the
/// `Host` header as the request's authority, not as a header.
pub fn host(req: &IncomingRequest) -> String {
    let authority = req
        .authority()
        .or_else(|| header(req, "host"))
        .unwrap_or_default();
    let name = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.split(':').next().unwrap_or(""),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The value of request header `name` (the first, as text), if present.
pub fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Decodes `%XX` and `+` of a query string value.
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
