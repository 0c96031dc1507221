//! Echoes the request body. `/env/NAME` answers the guest's view of environment
//! variable NAME instead, and `/env` the number of variables it can see, so tests
//! can check that only the manifest's `[env]` reaches the guest. `/files` answers
//! how many preopened directories the guest got (must be 0). `/connect?addr=A`
//! tries to open a TCP connection to A and answers what happened (must fail).
//! `/header/NAME` answers request header NAME as the guest got it (e.g. the client
//! address in X-Forwarded-For). For instance reuse: `/count` answers how many requests this instance has
//! served, `/panic` traps, `/hoard?mib=N` keeps N more MiB for the instance's life.
//! `/big?mib=N` answers N MiB (for clients that never read their response).
//! `/drain` reads the request body 64 KiB at a time, keeping none of it, and
//! answers its length (a body larger than the guest's memory flows through).
//! `/stream?mib=N` answers N MiB written 64 KiB at a time (a huge response the
//! guest never holds), and `/unread` answers at once without reading the
//! request body (for large uploads to a guest that ignores them).

use guest_kit::wasip2;
use std::io::Write as _;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Echo;

static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static HOARD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

impl wasip2::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = guest_kit::path(&request);
        let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if path == "/count" {
            guest_kit::respond(out, 200, "text/plain", served.to_string().as_bytes());
        } else if path == "/panic" {
            panic!("test-echo: trapping on purpose");
        } else if path == "/hoard" {
            let mib: usize = guest_kit::query_param(&request, "mib")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let mut block = vec![1u8; mib << 20];
            block[0] = 2;
            HOARD.lock().unwrap().push(block);
            guest_kit::respond(out, 200, "text/plain", served.to_string().as_bytes());
        } else if path == "/big" {
            let mib: usize = guest_kit::query_param(&request, "mib")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            guest_kit::respond(out, 200, "application/octet-stream", &vec![b'x'; mib << 20]);
        } else if path == "/drain" {
            let body = request.consume().expect("request body is consumed once");
            let mut len = 0usize;
            let read = {
                let mut stream = body.stream().expect("body stream is taken once");
                let mut chunk = vec![0u8; 64 << 10];
                loop {
                    match std::io::Read::read(&mut stream, &mut chunk) {
                        Ok(0) => break Ok(()),
                        Ok(n) => len += n,
                        Err(err) => break Err(err),
                    }
                }
            };
            match read {
                Ok(()) => {
                    wasip2::http::types::IncomingBody::finish(body);
                    guest_kit::respond(out, 200, "text/plain", len.to_string().as_bytes());
                }
                Err(err) => {
                    let text = format!("body after {len} bytes: {err}");
                    guest_kit::respond(out, 500, "text/plain", text.as_bytes());
                }
            }
        } else if path == "/stream" {
            let mib: usize = guest_kit::query_param(&request, "mib")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            stream(out, mib);
        } else if path == "/unread" {
            guest_kit::respond(out, 200, "text/plain", b"answered without reading the body");
        } else if let Some(name) = path.strip_prefix("/env/") {
            match std::env::var(name) {
                Ok(value) => guest_kit::respond(out, 200, "text/plain", value.as_bytes()),
                Err(_) => guest_kit::respond(out, 404, "text/plain", b"unset"),
            }
        } else if let Some(name) = path.strip_prefix("/header/") {
            // The request header as the guest sees it (comma-joined), 404 when absent.
            let values: Vec<String> = request
                .headers()
                .get(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            match values.is_empty() {
                true => guest_kit::respond(out, 404, "text/plain", b"absent"),
                false => guest_kit::respond(out, 200, "text/plain", values.join(",").as_bytes()),
            }
        } else if path == "/env" {
            let count = std::env::vars().count().to_string();
            guest_kit::respond(out, 200, "text/plain", count.as_bytes());
        } else if path == "/files" {
            let count = wasip2::filesystem::preopens::get_directories()
                .len()
                .to_string();
            guest_kit::respond(out, 200, "text/plain", count.as_bytes());
        } else if path == "/connect" {
            let addr = guest_kit::query_param(&request, "addr").unwrap_or_default();
            let result = match std::net::TcpStream::connect(addr.as_str()) {
                Ok(_) => "connected".to_string(),
                Err(err) => format!("refused: {err}"),
            };
            guest_kit::respond(out, 200, "text/plain", result.as_bytes());
        } else if path == "/log" {
            println!("hello from the guest's stdout");
            eprintln!("hello from the guest's stderr");
            guest_kit::respond(out, 200, "text/plain", b"logged");
        } else {
            let body = guest_kit::read_body(&request);
            guest_kit::respond(out, 200, "application/octet-stream", &body);
        }
    }
}

/// Answers `mib` MiB of `x`, one 64 KiB chunk after another from one buffer.
fn stream(out: ResponseOutparam, mib: usize) {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"application/octet-stream");
    let resp = OutgoingResponse::new(headers);
    let outgoing = resp.body().expect("response body is taken once");
    ResponseOutparam::set(out, Ok(resp));
    let mut body = outgoing.write().expect("body stream is taken once");
    let chunk = vec![b'x'; 64 << 10];
    for _ in 0..mib * 16 {
        // A client that went away ends the stream; nothing more to do.
        if body.write_all(&chunk).is_err() {
            return;
        }
    }
    let _ = body.flush();
    drop(body);
    let _ = OutgoingBody::finish(outgoing, None);
}

wasip2::http::proxy::export!(Echo with_types_in wasip2);
