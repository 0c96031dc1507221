//! {{name}}: a Rust app on alorig-host, a standard `wasi:http/proxy` component.

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct App;

impl wasip2::exports::http::incoming_handler::Guest for App {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = match path.split('?').next().unwrap_or("/") {
            "/" => (200, "<h1>Hello from {{name}}</h1>\n".to_string()),
            other => (404, format!("not found: {other}\n")),
        };
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/html; charset=utf-8".to_vec())]).unwrap_or_else(|_| Fields::new());
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(outgoing) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = outgoing.write() {
            for chunk in body.as_bytes().chunks(4096) {
                let _ = stream.blocking_write_and_flush(chunk);
            }
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

wasip2::http::proxy::export!(App with_types_in wasip2);
