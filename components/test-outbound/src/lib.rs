//! `/fetch?url=U` sends `GET U` through `wasi:http/outgoing-handler` and answers
//! `status=N bytes=M`, or `error=…` with the error the host gave. `/follow?url=U`
//! does the same but follows one redirect itself, as guests must (the host never
//! follows redirects for them). `/drain?url=U` reads the response body 64 KiB
//! at a time and keeps none of it (a body larger than the guest's memory flows
//! through the host), answering the same.
//! `/flood?url=U&n=N` sends N such requests one
//! after another as fast as the host lets it and answers `ok=A failed=B` and the
//! first error (a guest hammering its outbound grant).

use guest_kit::wasip2;
use std::io::Read as _;
use wasip2::http::{
    outgoing_handler,
    types::{Fields, IncomingRequest, OutgoingRequest, ResponseOutparam, Scheme},
};

struct Outbound;

fn fetch(url: &str, hold: bool) -> Result<(u16, Option<String>, usize), String> {
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
    let mut stream = body.stream().map_err(|_| "stream taken twice")?;
    let len = if hold {
        let mut bytes = Vec::new();
        stream
            .read_to_end(&mut bytes)
            .map_err(|err| format!("body: {err}"))?;
        bytes.len()
    } else {
        let mut chunk = vec![0u8; 64 << 10];
        let mut len = 0;
        loop {
            match std::io::Read::read(&mut stream, &mut chunk) {
                Ok(0) => break len,
                Ok(n) => len += n,
                Err(err) => return Err(format!("body after {len} bytes: {err}")),
            }
        }
    };
    Ok((status, location, len))
}

impl wasip2::exports::http::incoming_handler::Guest for Outbound {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let url = guest_kit::query_param(&request, "url").unwrap_or_default();
        let path = guest_kit::path(&request);
        if path == "/flood" {
            let n: usize = guest_kit::query_param(&request, "n")
                .and_then(|n| n.parse().ok())
                .unwrap_or(100);
            let (mut ok, mut failed, mut first) = (0, 0, String::new());
            for _ in 0..n {
                match fetch(&url, false) {
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
        let hold = path != "/drain";
        let mut result = fetch(&url, hold);
        if path == "/follow"
            && let Ok((300..=399, Some(location), _)) = &result
        {
            result = fetch(&location.clone(), hold);
        }
        let text = match result {
            Ok((status, _, bytes)) => format!("status={status} bytes={bytes}"),
            Err(err) => format!("error={err}"),
        };
        guest_kit::respond(out, 200, "text/plain", text.as_bytes());
    }
}

wasip2::http::proxy::export!(Outbound with_types_in wasip2);
