//! The smallest useful app: 200 with a fixed body. Used by the quickstart and the
//! benchmarks, so it does no work beyond answering.

use guest_kit::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        guest_kit::respond(out, 200, "text/plain", b"Hello from alorig-host\n");
    }
}

wasip2::http::proxy::export!(Hello with_types_in wasip2);
