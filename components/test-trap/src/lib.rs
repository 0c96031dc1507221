//! Traps on every request (a Rust panic compiles to `unreachable`). With `?after=1`
//! it first sends the response headers, so the trap happens mid-body.

use guest_kit::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Trap;

impl wasip2::exports::http::incoming_handler::Guest for Trap {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if guest_kit::query_param(&request, "after").is_some() {
            guest_kit::respond(out, 200, "text/plain", b"about to trap\n");
        }
        panic!("test-trap: trapping on purpose");
    }
}

wasip2::http::proxy::export!(Trap with_types_in wasip2);
