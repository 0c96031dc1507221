//! Never answers: spins in pure computation (no host calls), which only epoch
//! interruption can stop. `?sleep=1` instead blocks in a host call (a long
//! `wasi:clocks` sleep), which only the host's wall-clock timeout can stop.

use guest_kit::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Loop;

impl wasip2::exports::http::incoming_handler::Guest for Loop {
    fn handle(request: IncomingRequest, _out: ResponseOutparam) {
        if guest_kit::query_param(&request, "sleep").is_some() {
            wasip2::clocks::monotonic_clock::subscribe_duration(3_600 * 1_000_000_000).block();
        }
        let mut x: u64 = 1;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

wasip2::http::proxy::export!(Loop with_types_in wasip2);
