//! `/fetch?url=U` sends `GET U` through `wasi:http/outgoing-handler` and answers
//! `status=N bytes=M`, or `error=…` with the error the host gave. `/follow?url=U`
//! does the same but follows one redirect itself, as guests must (the host never
//! follows redirects for them). `/flood?url=U&n=N` sends N such requests one
//! after another as fast as the host lets it and answers `ok=A failed=B` and the
//! first error (a guest hammering its outbound grant).

use guest_kit::wasip2;
use std::io::Read as _;
use wasip2::http::{
    outgoing_handler,
    types::{Fields, IncomingRequest, OutgoingRequest, ResponseOutparam, Scheme},
};

struct Outbound;

fn fetch(url: &str) -> Result<(u16, Option<String>, usize), String> {
    let (scheme, rest) = url.split_once("://").ok_or("url needs a scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    request.set_scheme(Some(&scheme)).map_err(|_| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|_| "authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|_| "path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|_| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let body = response.consume().map_err(|_| "body taken twice")?;
    let mut bytes = Vec::new();
    let read = body
        .stream()
        .map_err(|_| "stream taken twice")?
        .read_to_end(&mut bytes);
    if let Err(err) = read {
        return Err(format!("body: {err}"));
    }
    Ok((status, location, bytes.len()))
}

impl wasip2::exports::http::incoming_handler::Guest for Outbound {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let url = guest_kit::query_param(&request, "url").unwrap_or_default();
        if guest_kit::path(&request) == "/flood" {
            let n: usize = guest_kit::query_param(&request, "n")
                .and_then(|n| n.parse().ok())
                .unwrap_or(100);
            let (mut ok, mut failed, mut first) = (0, 0, String::new());
            for _ in 0..n {
                match fetch(&url) {
                    Ok(_) => ok += 1,
                    Err(err) => {
                        failed += 1;
                        if first.is_empty() {
                            first = err;
                        }
                    }
                }
            }
            let text = format!("ok={ok} failed={failed} first_error={first}");
            guest_kit::respond(out, 200, "text/plain", text.as_bytes());
            return;
        }
        let mut result = fetch(&url);
        if guest_kit::path(&request) == "/follow"
            && let Ok((300..=399, Some(location), _)) = &result
        {
            result = fetch(&location.clone());
        }
        let text = match result {
            Ok((status, _, bytes)) => format!("status={status} bytes={bytes}"),
            Err(err) => format!("error={err}"),
        };
        guest_kit::respond(out, 200, "text/plain", text.as_bytes());
    }
}

wasip2::http::proxy::export!(Outbound with_types_in wasip2);
