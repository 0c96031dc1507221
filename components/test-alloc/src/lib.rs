//! Allocates `?mib=N` MiB (default 1) and writes to every page, so the memory is
//! really grown and resident. `?hold_ms=M` keeps it for M ms before answering, so
//! tests can have several such instances alive at once.

use guest_kit::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Alloc;

impl wasip2::exports::http::incoming_handler::Guest for Alloc {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let mib: usize = guest_kit::query_param(&request, "mib")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let hold_ms: u64 = guest_kit::query_param(&request, "hold_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut block = vec![0u8; mib << 20];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        if hold_ms > 0 {
            wasip2::clocks::monotonic_clock::subscribe_duration(hold_ms * 1_000_000).block();
        }
        let touched: usize = block.iter().step_by(4096).map(|b| *b as usize).sum();
        let body = format!("allocated {mib} MiB ({touched} pages)\n");
        guest_kit::respond(out, 200, "text/plain", body.as_bytes());
    }
}

wasip2::http::proxy::export!(Alloc with_types_in wasip2);
