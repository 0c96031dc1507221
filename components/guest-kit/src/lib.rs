//! Helpers for guest components written against plain `wasi:http` (no SDK), so the
//! reference and test guests stay a few lines each and are exactly what any
//! `wasi:http/proxy` component looks like to the host.

pub use wasip2;

pub mod outbound;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "timers")]
pub mod timers;

use std::io::{Read as _, Write as _};
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Sends a complete response with the given status, content type and body.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[content_type.as_bytes().to_vec()]);
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
